#!/usr/bin/env bash
# The load gate's false-alarm and detection rates per threshold model, against the built atlas
# binary, on synthetic k6 --summary-export runs at the seed's numbers (lognormal latency, median
# 268 ms; 0.93% errors; 3,000 requests per run; 10% run-to-run noise; a history of 20 runs).
# See bench/history_sim.rs for the model of a run.
#
#   bench/history_sim.sh                          # 2000 no-change trials, 1000 +30% trials
#   NULL_TRIALS=500 REG_TRIALS=500 NOISE=0.15 bench/history_sim.sh
#   PROFILE=dev bench/history_sim.sh              # debug builds: no release build of every
#                                                 # dependency (same gate logic, same figures)
#
# Every trial runs `atlas baseline compare` once per configuration (7 processes per trial).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
DIR=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
cargo build --profile "$PROFILE" --bin atlas --example history_sim >&2
# copies, so a rebuild during the run cannot swap the binaries under it
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp "${ATLAS:-target/$DIR/atlas}" "$WORK/atlas"
cp "target/$DIR/examples/history_sim" "$WORK/history_sim"
ATLAS="$WORK/atlas" "$WORK/history_sim"
