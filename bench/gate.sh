#!/usr/bin/env bash
# Access-gate benchmark: what `atlas gate` adds in front of an app, measured with `atlas load` on
# loopback against bench/server.rs (a minimal single-threaded keep-alive server).
#
#   bench/gate.sh                       # 3 rounds; latency at 2000 req/s, throughput at 50 VUs
#   ROUNDS=5 DURATION=10 RATE=2000 bench/gate.sh
#   BEFORE=/tmp/atlas-old bench/gate.sh # also an older build's gate, in the same rounds
#
# Placement (2-core machine): the generator and the app server share CPU $GEN_CPU in every
# measurement; the gate runs alone on CPU $GATE_CPU (its default single-threaded runtime; an
# older build gets TOKIO_WORKER_THREADS=1), i.e. "the gate on one core". Direct and gated runs
# alternate within each round, so drift hits all of them.
#   latency:    open model, --rate $RATE, 20 connections: p50/p99 direct vs through the gate
#   throughput: closed model, --vus $CONNS at full speed: req/s direct vs through the gate
# Modes: public (forward only) and signed-link with the run-scoped bypass header (HMAC verify on
# every request: what Atlas's own load test pays).
# Needs: taskset, python3.
# On a machine shared with other jobs (builds), `NICE=-15 setsid bench/gate.sh` (root) runs every
# measured process at that niceness, in a session (autogroup) of that niceness: with the kernel's
# autogroup scheduling a process's nice only counts inside its session, so both are set. The
# scheduler then gives the measured processes their cores over background work, and the figures
# approach a quiet machine's. GATE_CPU=0 GEN_CPU=1 swaps the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
RATE=${RATE:-2000}
CONNS=${CONNS:-50}
GEN_CPU=${GEN_CPU:-0}
GATE_CPU=${GATE_CPU:-1}
SRV_PORT=${SRV_PORT:-18090}
GATE_PORT=${GATE_PORT:-18091}
SIGNED_PORT=${SIGNED_PORT:-18092}

[ -n "${SKIP_BUILD:-}" ] || cargo build --release --bin atlas --example bench_server >&2
ATLAS=${ATLAS:-$PWD/target/release/atlas}
SERVER=${SERVER:-$PWD/target/release/examples/bench_server}
BEFORE=${BEFORE:-}
OLD_PORT=${OLD_PORT:-18093}
OLD_SIGNED_PORT=${OLD_SIGNED_PORT:-18094}
NICE=${NICE:-}
if [ -n "$NICE" ] && [ -w /proc/self/autogroup ]; then
  echo "$NICE" >/proc/self/autogroup || echo "bench/gate.sh: cannot set the autogroup's nice" >&2
fi
# Runs a measured process on its core (and at NICE): always called in a subshell or with `&`, so
# `exec` keeps `$!` the process itself (its CPU time is read from /proc).
on() {
  local cpu=$1
  shift
  if [ -n "$NICE" ]; then exec nice -n "$NICE" taskset -c "$cpu" "$@"; else exec taskset -c "$cpu" "$@"; fi
}
WORK=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT

on "$GEN_CPU" "$SERVER" "$SRV_PORT" & PIDS+=($!)
declare -A CPU_PID=([direct]=$!)
# A bench-only key (not a secret: nothing else uses it).
export ATLAS_GATE_KEY=$(printf 'b%.0s' $(seq 64))
TOKIO_WORKER_THREADS=1 on "$GATE_CPU" "$ATLAS" gate serve --listen "127.0.0.1:$GATE_PORT" \
  --upstream "127.0.0.1:$SRV_PORT" --mode public --preview bench >/dev/null & PIDS+=($!)
CPU_PID[public]=$!
TOKIO_WORKER_THREADS=1 on "$GATE_CPU" "$ATLAS" gate serve --listen "127.0.0.1:$SIGNED_PORT" \
  --upstream "127.0.0.1:$SRV_PORT" --mode signed-link --preview bench --run bench-run >/dev/null & PIDS+=($!)
CPU_PID[signed]=$!
if [ -n "$BEFORE" ]; then
  TOKIO_WORKER_THREADS=1 on "$GATE_CPU" "$BEFORE" gate serve --listen "127.0.0.1:$OLD_PORT" \
    --upstream "127.0.0.1:$SRV_PORT" --mode public --preview bench >/dev/null & PIDS+=($!)
  CPU_PID[public-before]=$!
  TOKIO_WORKER_THREADS=1 on "$GATE_CPU" "$BEFORE" gate serve --listen "127.0.0.1:$OLD_SIGNED_PORT" \
    --upstream "127.0.0.1:$SRV_PORT" --mode signed-link --preview bench --run bench-run >/dev/null & PIDS+=($!)
  CPU_PID[signed-before]=$!
fi
sleep 0.5
BYPASS=$("$ATLAS" gate mint --kind bypass --preview bench --run bench-run --ttl 2h)

# Atlas's own traffic carries the bypass header; direct and public runs send it too (ignored),
# so every request is byte for byte the same size.
cat >"$WORK/atlas.toml" <<EOF
[[load.requests]]
path = "/"
headers = { "x-atlas-bypass" = "$BYPASS" }
EOF

# one LABEL URL MODEL -> "req/s p50_ms p99_ms errors"
one() {
  local url=$1; shift
  (cd "$WORK" && on "$GEN_CPU" "$ATLAS" load --target "$url" "$@" \
    --duration "${DURATION}s" --warmup 1s --out "$WORK/s.json" >/dev/null 2>"$WORK/err") || {
    cat "$WORK/err" >&2; return 1; }
  python3 - "$WORK/s.json" "$DURATION" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); m = s["metrics"]; d = float(sys.argv[2])
t = m["http_req_duration"]
print(f'{m["http_reqs"]["total"]/d:.0f} {t.get("med", 0):.3f} {t.get("p99", 0):.3f} {m["errors"]["rate"]:.4f}')
PY
}

declare -A URL=([direct]="http://127.0.0.1:$SRV_PORT" [public]="http://127.0.0.1:$GATE_PORT" [signed]="http://127.0.0.1:$SIGNED_PORT"
  [public-before]="http://127.0.0.1:$OLD_PORT" [signed-before]="http://127.0.0.1:$OLD_SIGNED_PORT")
PATHS="direct public signed"
[ -z "$BEFORE" ] || PATHS="direct public-before public signed-before signed"
# CPU time (user + system, clock ticks) a process has used: with it, the CPU one proxied request
# costs the gate, which a shared machine's contention hardly changes (unlike req/s).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
echo "| round | path | latency req/s | p50 ms | p99 ms | errors | throughput req/s | errors | CPU us/req (server or gate) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for round in $(seq 1 "$ROUNDS"); do
  for path in $PATHS; do
    read -r lr p50 p99 le < <(one "${URL[$path]}" --rate "$RATE" --connections 20)
    t0=$(ticks "${CPU_PID[$path]}")
    read -r tr _ _ te < <(one "${URL[$path]}" --vus "$CONNS")
    t1=$(ticks "${CPU_PID[$path]}")
    # The 1 s warm-up ran at about the same rate: count its requests too.
    cpu=$(python3 -c "print(f'{($t1 - $t0) / $HZ * 1e6 / max(1, $tr * ($DURATION + 1)):.1f}')")
    echo "| $round | $path | $lr | $p50 | $p99 | $le | $tr | $te | $cpu |"
  done
done
