#!/usr/bin/env bash
# Writes the sources of a published release, exactly as they were at its commit, into a
# folder, for the compatibility builds (tests/src/compat.rs) and for anyone who wants to build
# a plugin against an older release:
#
#   scripts/freeze-release.sh VERSION COMMIT DEST
#
# The commit is the release's identity (tests/releases/releases.txt lists them); the script
# checks that the runtime-api of that tree has VERSION. It needs the repository's history: a
# shallow clone fails with a message (fetch with `git fetch --unshallow`).
set -euo pipefail

if (($# != 3)); then
    echo "usage: $0 VERSION COMMIT DEST" >&2
    exit 2
fi
version=$1 commit=$2 dest=$3
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if ! git -C "$root" cat-file -e "$commit^{commit}" 2>/dev/null; then
    echo "freeze-release.sh: commit $commit of release $version is not in this clone's history" \
        "(a shallow clone? run \`git fetch --unshallow\`)" >&2
    exit 1
fi

rm -rf "$dest"
mkdir -p "$dest"
git -C "$root" archive --format=tar "$commit" | tar -x -C "$dest"

# The release's runtime-api version: its own, or the workspace's it inherits.
found=$(sed -n 's/^version = "\(.*\)"/\1/p' "$dest/runtime-api/Cargo.toml" | head -n1)
if [[ -z $found ]]; then
    found=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$dest/Cargo.toml" | head -n1)
fi
if [[ $found != "$version" ]]; then
    echo "freeze-release.sh: commit $commit has runtime-api $found, not $version" >&2
    exit 1
fi
echo "$dest: runtime-api $version from commit $commit"
