#!/usr/bin/env bash
# The performance issue's before-and-after in one quiet run, with the Python peers beside it:
# the criterion benches of an earlier commit (built in a worktree of its own, with its own
# target folder) and of this checkout, one after the other, then PraisonAI's registry and
# `importlib.metadata` on the same machine, with the load average before and after each part.
#
#   scripts/bench-before-after.sh COMMIT [bench ...]   default benches: turns streaming
#                                                      concurrency discovery memory isolation resolve
#
# Builds first (both sides, release), then waits until the 1-minute load is below 1 (at most
# 10 minutes; it says so and goes on when it is not), then measures. Stop other builds first.
# BEFORE_TREE and BEFORE_TARGET name an existing worktree of COMMIT and its target folder.
set -euo pipefail
cd "$(dirname "$0")/.."
before="${1:?usage: scripts/bench-before-after.sh COMMIT [bench ...]}"
shift
benches=("$@")
[ ${#benches[@]} -eq 0 ] && benches=(turns streaming concurrency discovery memory isolation resolve)
root="$(pwd)"
tree="${BEFORE_TREE:-$root/target/bench-before/tree}"
before_target="${BEFORE_TARGET:-$root/target/bench-before/target}"
load() { cut -d' ' -f1-3 /proc/loadavg; }

echo "== building both sides (release)"
if [ ! -d "$tree" ]; then
    git worktree add --detach "$tree" "$before" >/dev/null
else
    git -C "$tree" checkout --quiet --detach "$before"
fi
build() { # DIR TARGET
    for bench in "${benches[@]}"; do
        if [ -f "$1/benches/benches/$bench.rs" ]; then
            (cd "$1" && CARGO_TARGET_DIR="$2" cargo bench -q -p runtime-benches --bench "$bench" --no-run)
        fi
    done
    (cd "$1" && CARGO_TARGET_DIR="$2" cargo build -q --release -p echo-runtime -p runtime-benches -p runtime-loader)
}
build "$tree" "$before_target"
build "$root" "${CARGO_TARGET_DIR:-$root/target}"

echo "== waiting for a quiet machine (1-minute load below 1)"
for _ in $(seq 120); do
    awk -v l="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN { exit !(l < 1) }' && break
    sleep 5
done
echo "load average (1, 5, 15 min): $(load)"

run() { # LABEL DIR TARGET
    echo "== $1: $(git -C "$2" log --oneline -1)"
    echo "load at the start: $(load)"
    date -u +"started %H:%M:%S UTC"
    for bench in "${benches[@]}"; do
        if [ -f "$2/benches/benches/$bench.rs" ]; then
            (cd "$2" && CARGO_TARGET_DIR="$3" cargo bench -q -p runtime-benches --bench "$bench")
        else
            echo "($bench: no such bench at this commit)"
        fi
    done
    (cd "$2" && CARGO_TARGET_DIR="$3" cargo run --release -q -p runtime-benches --bin bench-report)
    date -u +"ended %H:%M:%S UTC"
    echo "load at the end: $(load)"
}
run before "$tree" "$before_target"
run after "$root" "${CARGO_TARGET_DIR:-$root/target}"

echo "== Python peers (load at the start: $(load))"
python3 --version
python3 scripts/python-entry-points.py
if [ -x python/.venv/bin/python ] && python/.venv/bin/python -c "import agent_runtimes, praisonaiagents" 2>/dev/null; then
    python/.venv/bin/python python/bench/turn_cost.py --echo "${CARGO_TARGET_DIR:-$root/target}/release/libecho_runtime.so" -n 3000
else
    echo "PraisonAI: python/.venv lacks agent_runtimes or praisonaiagents (run bash python/ci.sh once)"
fi
echo "load at the end: $(load)"
