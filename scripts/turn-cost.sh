#!/usr/bin/env bash
# Instructions per echo turn, counted by callgrind (the same on a busy machine as on an idle
# one): each subject runs N = 0 and N = 20,000 turns after one warm-up turn, and the difference
# divided by N is the cost of one turn.
#
#   scripts/turn-cost.sh            the subjects: plugin (inline), threads, in_process, direct
#
# Needs valgrind (Debian package `valgrind`).
set -euo pipefail
cd "$(dirname "$0")/.."
turns=20000
cargo build --release -q -p echo-runtime
cargo build --release -q -p runtime-benches --example turn_cost
folder=$(mktemp -d)
trap 'rm -rf "$folder"' EXIT
cp target/release/libecho_runtime.so "$folder/"
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/turn_cost "$1" "$2" "$folder" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '%-11s %14s\n' subject 'instructions per turn'
for subject in plugin threads in_process direct; do
    base=$(count "$subject" 0)
    many=$(count "$subject" "$turns")
    printf '%-11s %14d\n' "$subject" $(( (many - base) / turns ))
done
