#!/usr/bin/env bash
# Generates the seed corpora in fuzz/corpus/<target>/ from a freshly built echo plugin.
# Nothing it writes is committed (see .gitignore). Usage: fuzz/seed.sh [--clean]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

if [[ "${1:-}" == "--clean" ]]; then
    rm -rf "$here/corpus/manifest" "$here/corpus/library_scanner"
fi

# The real library, built by the main workspace (the fuzz crate has its own workspace).
(cd "$root" && cargo build --quiet -p echo-runtime) ||
    echo "seed.sh: building echo-runtime failed; using the library already built, if any" >&2
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')" ||
    target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$(uname -s)" in
    Darwin) lib="$target_dir/debug/libecho_runtime.dylib" ;;
    MINGW* | MSYS* | CYGWIN*) lib="$target_dir/debug/echo_runtime.dll" ;;
    *) lib="$target_dir/debug/libecho_runtime.so" ;;
esac

[[ -f "$lib" ]] || { echo "seed.sh: no $lib" >&2; exit 1; }
python3 "$here/make_seeds.py" "$lib" "$here/corpus"
