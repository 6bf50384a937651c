#!/bin/sh
# How long the data models take locally for the example app (issue 15): for each model, ROUNDS
# previews are created (`atlas preview up --local`, a new branch each) and destroyed; the step
# lines atlas prints give the branch step (copy, and for `anonymized` the column checks and the
# masking transaction) and the seed step. Prints one line per round and the medians.
#
#     ROUNDS=5 bench/data_models.sh
#
# Uses the debug build (`cargo build -p atlas -p kitchen` first); PostgreSQL from Debian's
# packages, started by atlas in a temporary state directory per model.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=${ROUNDS:-5}
atlas="$root/target/debug/atlas"
kitchen="$root/target/debug/kitchen"
[ -x "$atlas" ] && [ -x "$kitchen" ] || { echo "build first: cargo build -p atlas -p kitchen" >&2; exit 2; }

median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }

for model in database-branch anonymized seeded; do
  dir=$(mktemp -d)
  extra=""
  case $model in
    anonymized) extra='
[[database.masking]]
table = "users"
column = "email"
function = "anon.fake_email()"

[[database.masking]]
table = "users"
column = "name"
function = "anon.partial(name, 1, '"'"'***'"'"', 0)"

[[database.masking]]
table = "users"
column = "phone"
function = "anon.random_phone('"'"'+00 '"'"')"' ;;
  esac
  seed=""
  [ "$model" = seeded ] && seed='seed = "psql -X -q -v ON_ERROR_STOP=1 -d \"$DATABASE_URL\" -c \"INSERT INTO users (email, name) VALUES ('"'"'seed@seeded.test'"'"', '"'"'Seed'"'"')\""'
  cat > "$dir/atlas.toml" <<TOML
[app]
name = "kitchen"
readiness_timeout = "30s"

[database]
parent = "main"
migrations = "sh $root/examples/kitchen/migrate.sh"
data_model = "$model"
$seed

[load]
enabled = false

[local]
command = "exec $kitchen"
state_dir = "state"
$extra
TOML
  : > "$dir/branch.ms"; : > "$dir/seed.ms"
  i=1
  while [ "$i" -le "$rounds" ]; do
    out=$(cd "$dir" && "$atlas" preview up --local --pr "$i" --sha 0123456789abcdef0123456789abcdef01234567 --branch bench 2>&1) || { echo "$out" >&2; exit 1; }
    b=$(echo "$out" | sed -n 's/.*✓ database branch:.*(\([0-9]*\) ms)$/\1/p')
    s=$(echo "$out" | sed -n 's/.*✓ seed:.*(\([0-9]*\) ms)$/\1/p')
    echo "$b" >> "$dir/branch.ms"; [ -n "$s" ] && echo "$s" >> "$dir/seed.ms"
    echo "$model round $i: branch ${b} ms${s:+, seed $s ms}"
    (cd "$dir" && "$atlas" preview down --local --pr "$i" --sha 0123456789abcdef0123456789abcdef01234567 >/dev/null 2>&1)
    i=$((i + 1))
  done
  echo "$model median: branch $(median < "$dir/branch.ms") ms, seed $(median < "$dir/seed.ms") ms"
  rm -rf "$dir"
done
