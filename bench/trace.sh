#!/usr/bin/env bash
# What the per-request `traceparent` costs the load generator: CPU per request of `atlas load`
# built from $BEFORE (default: the last commit without trace context, see below) and from the
# working tree, on loopback against bench/server.rs, rounds alternating so drift hits both.
#
#   bench/trace.sh                        # 5 rounds of 10 s, 50 VUs (closed model, full speed)
#   BEFORE=<rev> AFTER=<rev> ROUNDS=3 DURATION=5 bench/trace.sh   # AFTER: a commit, not the tree
#   OLD_BIN=... NEW_BIN=... SERVER_BIN=... bench/trace.sh          # binaries of an earlier run
#
# CPU per request is the generator's user+sys (from /usr/bin/time) over every request it sent.
# The generator runs on CPU $GEN_CPU, the server alone on $SRV_CPU.
# Needs: git, taskset, /usr/bin/time, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
PORT=${PORT:-18085}
GEN_CPU=${GEN_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
# the parent of the commit that added src/trace.rs: the generator without trace context.
BEFORE=${BEFORE:-$(git log --diff-filter=A --format=%H -1 -- src/trace.rs 2>/dev/null)^}
[ "$BEFORE" != "^" ] || BEFORE=HEAD

SRC=$(mktemp -d)
NEWSRC=$PWD
WORK=$(mktemp -d)
trap 'kill ${SRV:-} 2>/dev/null; rm -rf "$SRC" "$WORK"' EXIT
git archive "$BEFORE" | tar -x -C "$SRC"
if [ -n "${AFTER:-}" ]; then
  NEWSRC=$WORK/after
  mkdir "$NEWSRC"
  git archive "$AFTER" | tar -x -C "$NEWSRC"
fi
# both trees build into one target dir of their own: the dependencies are compiled once.
# OLD_BIN, NEW_BIN and SERVER_BIN reuse binaries built by an earlier run.
export CARGO_TARGET_DIR=$PWD/target/bench-trace
if [ -z "${OLD_BIN:-}" ]; then
  cargo build --release --locked --bin atlas --manifest-path "$SRC/Cargo.toml" >&2
  cp "$CARGO_TARGET_DIR/release/atlas" "$WORK/atlas-before"
fi
if [ -z "${NEW_BIN:-}" ] || [ -z "${SERVER_BIN:-}" ]; then
  cargo build --release --locked --bin atlas --example bench_server --manifest-path "$NEWSRC/Cargo.toml" >&2
fi
OLD=${OLD_BIN:-$WORK/atlas-before}
NEW=${NEW_BIN:-$CARGO_TARGET_DIR/release/atlas}
SERVER=${SERVER_BIN:-$CARGO_TARGET_DIR/release/examples/bench_server}

taskset -c "$SRV_CPU" "$SERVER" "$PORT" &
SRV=$!
sleep 0.5
URL="http://127.0.0.1:$PORT/"

# run BINARY -> "requests user_s sys_s"
run() {
  (cd "$WORK" && /usr/bin/time -f "%U %S" -o "$WORK/time" taskset -c "$GEN_CPU" \
    "$1" load --target "$URL" --vus "$CONNS" --duration "${DURATION}s" --warmup 0s \
    --out "$WORK/summary.json" 2>"$WORK/err" >/dev/null)
  n=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["metrics"]["http_reqs"]["total"])' "$WORK/summary.json")
  echo "$n $(tail -1 "$WORK/time")"
}

if [ -n "${AFTER:-}" ]; then after=$(git rev-parse --short "$AFTER"); else after="the working tree of $(git rev-parse --short HEAD)"; fi
echo "before: $(git rev-parse --short "$BEFORE"), after: $after"
echo
echo "| build | round | requests | req/s | CPU us/request |"
echo "| --- | --- | --- | --- | --- |"
: >"$WORK/all"
for round in $(seq 1 "$ROUNDS"); do
  for build in before after; do
    bin=$OLD
    [ "$build" = after ] && bin=$NEW
    read -r n u s < <(run "$bin")
    us=$(python3 -c "print(f'{($u+$s)*1e6/max($n,1):.2f}')")
    echo "$build $us" >>"$WORK/all"
    echo "| $build | $round | $n | $(python3 -c "print(f'{$n/$DURATION:.0f}')") | $us |"
  done
done
echo
python3 - "$WORK/all" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {b: statistics.median(float(u) for k, u in rows if k == b) for b in ("before", "after")}
print(f"median CPU per request: before {med['before']:.2f} us, after {med['after']:.2f} us "
      f"({(med['after'] / med['before'] - 1) * 100:+.1f}%)")
PY
