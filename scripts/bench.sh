#!/usr/bin/env bash
# Runs the criterion benches of runtime-benches, then prints bench-report's tables, with the
# load average before and after the whole run (each bench binary also records its own, which
# bench-report prints). Wall-clock figures mean something only on a quiet machine: stop other
# builds first and wait for the 1-minute load to fall below 1 (this script says when it is not).
#
#   scripts/bench.sh                  every bench (several minutes)
#   scripts/bench.sh turns discovery  only these (names of benches/benches/*.rs)
#   COUNT=1 scripts/bench.sh ...      also print callgrind's instruction counts (scripts/turn-cost.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
load() { cut -d' ' -f1-3 /proc/loadavg; }
started=$(load)
echo "load average (1, 5, 15 min) at the start: $started"
if awk -v l="${started%% *}" 'BEGIN { exit !(l >= 1) }'; then
    echo "warning: the 1-minute load is $( echo "$started" | cut -d' ' -f1 ) (≥ 1): something else is running; figures will be noisy" >&2
fi
date -u +"started %Y-%m-%d %H:%M:%S UTC"
if [[ $# -eq 0 ]]; then
    cargo bench -p runtime-benches
else
    for bench in "$@"; do
        cargo bench -p runtime-benches --bench "$bench"
    done
fi
cargo run --release -q -p runtime-benches --bin bench-report
if [[ ${COUNT:-0} == 1 ]]; then
    scripts/turn-cost.sh
fi
date -u +"ended %Y-%m-%d %H:%M:%S UTC"
echo "load average (1, 5, 15 min) at the start: $started"
echo "load average (1, 5, 15 min) at the end:   $(load)"
