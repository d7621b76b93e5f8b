#!/usr/bin/env bash
# Instructions counted by callgrind (the same on a busy machine as on an idle one): each
# subject runs N = 0 and N = 20,000 after one warm-up, and the difference divided by N is the
# cost of one unit.
#
#   scripts/turn-cost.sh     one turn: plugin (inline), threads, in_process, direct;
#                            one delta: stream_plugin (inline), stream_direct;
#                            one listing of 100 plugins with a fresh registry: list_100
#
# Needs valgrind (Debian package `valgrind`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p echo-runtime
cargo build --release -q -p runtime-benches --example turn_cost --example list_cost
folder=$(mktemp -d)
trap 'rm -rf "$folder"' EXIT
cp target/release/libecho_runtime.so "$folder/"
collected() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '%-14s %12s  %s\n' subject instructions per
for subject in plugin threads in_process direct stream_plugin stream_direct; do
    unit=turn
    [[ $subject == stream_* ]] && unit=delta
    count=$(
        base=$(collected target/release/examples/turn_cost "$subject" 0 "$folder")
        many=$(collected target/release/examples/turn_cost "$subject" 20000 "$folder")
        echo $(((many - base) / 20000))
    )
    printf '%-14s %12d  %s\n' "$subject" "$count" "$unit"
done
# Listings are slower: 10 of them.
base=$(collected target/release/examples/list_cost 0 target/release/libecho_runtime.so)
many=$(collected target/release/examples/list_cost 10 target/release/libecho_runtime.so)
printf '%-14s %12d  %s\n' list_100 $(((many - base) / 10)) 'listing of 100 plugins'
