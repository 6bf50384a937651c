#!/usr/bin/env bash
# Generator benchmark: atlas load vs wrk vs oha, on loopback, against bench/server.rs (a minimal
# single-threaded keep-alive server pinned to the other core). For each tool and round: requests
# per second, generator CPU per request (user+sys from /usr/bin/time) and peak RSS. Then atlas's
# peak RSS for a short and a long run (flat memory check).
#
#   bench/run.sh                 # 5 rounds of 10 s, 50 connections
#   ROUNDS=3 DURATION=5 MEM_SHORT=3 MEM_LONG=120 bench/run.sh
#
# Needs: taskset, /usr/bin/time, wrk (apt-get install wrk), oha (cargo install oha --locked;
# OHA=/path/to/oha if not on PATH), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
PORT=${PORT:-18080}
GEN_CPU=${GEN_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
MEM_SHORT=${MEM_SHORT:-3}
MEM_LONG=${MEM_LONG:-60}
OHA=${OHA:-$(command -v oha || echo /tmp/oha-root/bin/oha)}

cargo build --release --bin atlas --example bench_server >&2
ATLAS=$PWD/target/release/atlas
SERVER=$PWD/target/release/examples/bench_server
WORK=$(mktemp -d)
taskset -c "$SRV_CPU" "$SERVER" "$PORT" &
SRV=$!
trap 'kill $SRV 2>/dev/null; rm -rf "$WORK"' EXIT
sleep 0.5
URL="http://127.0.0.1:$PORT/"

# run TOOL DURATION -> prints "requests user_s sys_s maxrss_kb"
run() {
  local tool=$1 secs=$2 n
  case $tool in
    atlas)
      (cd "$WORK" && /usr/bin/time -f "%U %S %M" -o "$WORK/time" taskset -c "$GEN_CPU" \
        "$ATLAS" load --target "$URL" --vus "$CONNS" --duration "${secs}s" --warmup 0s \
        --out "$WORK/summary.json" 2>"$WORK/err" >/dev/null)
      n=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["metrics"]["http_reqs"]["total"])' "$WORK/summary.json")
      ;;
    wrk)
      /usr/bin/time -f "%U %S %M" -o "$WORK/time" taskset -c "$GEN_CPU" \
        wrk -t1 -c"$CONNS" -d"${secs}s" "$URL" >"$WORK/out" 2>"$WORK/err"
      n=$(grep -oE '^ *[0-9]+ requests in' "$WORK/out" | grep -oE '[0-9]+')
      ;;
    oha)
      /usr/bin/time -f "%U %S %M" -o "$WORK/time" taskset -c "$GEN_CPU" \
        "$OHA" --no-tui --output-format json -c "$CONNS" -z "${secs}s" "$URL" >"$WORK/out" 2>"$WORK/err"
      n=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(sum(s["statusCodeDistribution"].values()))' "$WORK/out")
      ;;
  esac
  echo "$n $(cat "$WORK/time" | tail -1)"
}

TOOLS="atlas wrk"
if [ -x "$OHA" ]; then TOOLS="atlas wrk oha"; else echo "oha not found at $OHA: skipped" >&2; fi

echo "| tool | round | requests | req/s | CPU us/request | peak RSS MB |"
echo "| --- | --- | --- | --- | --- | --- |"
for round in $(seq 1 "$ROUNDS"); do
  for tool in $TOOLS; do
    read -r n u s m < <(run "$tool" "$DURATION")
    python3 - "$tool" "$round" "$n" "$u" "$s" "$m" "$DURATION" <<'PY'
import sys
tool, rnd, n, u, s, m, d = sys.argv[1:]
n, u, s, m, d = int(n), float(u), float(s), int(m), float(d)
print(f"| {tool} | {rnd} | {n} | {n/d:.0f} | {(u+s)*1e6/max(n,1):.2f} | {m/1024:.1f} |")
PY
  done
done

echo
echo "| atlas run | seconds | requests | peak RSS MB |"
echo "| --- | --- | --- | --- |"
for secs in "$MEM_SHORT" "$MEM_LONG"; do
  read -r n u s m < <(run atlas "$secs")
  echo "| memory | $secs | $n | $(python3 -c "print(f'{$m/1024:.1f}')") |"
done
