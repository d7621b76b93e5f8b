#!/usr/bin/env bash
# Runs the sandbox tests (tests/src/sandbox.rs: the process level's escape attempts, grants and
# denials) again as the unprivileged test user of scripts/test-user.sh, so the sandbox is proven
# for a host without root as well as for root (CI runs everything else as root).
#
#   scripts/unprivileged-tests.sh [FILTER]    as root; FILTER defaults to `sandbox::`
#
# The user cannot run cargo in this checkout's target folder, so the builds are made first, as
# root: the workspace (cargo's JSON messages are kept in target/unprivileged/built.json, which
# dev-support reads instead of running cargo: DEV_SUPPORT_BUILT) and the integration-test binary.
# The user gets a private HOME of its own; its tests' temporary folders are under /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
filter="${1:-sandbox::}"

if [ "$(id -u)" != 0 ]; then
    echo "scripts/unprivileged-tests.sh: run it as root (it runs the tests as the test user)" >&2
    exit 1
fi
user="${AGENT_RUNTIMES_TEST_USER:-agentrt-test}"
scripts/test-user.sh >/dev/null

target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target/unprivileged"
built="$(realpath "$target/unprivileged")/built.json"
cargo build --workspace --quiet --message-format=json-render-diagnostics > "$built"
binary=$(cargo test -p integration-tests --no-run --quiet --message-format=json \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "integration" and m["profile"]["test"]:
        print(m["executable"])')
if [ -z "$binary" ]; then
    echo "scripts/unprivileged-tests.sh: cargo built no integration-test binary" >&2
    exit 1
fi

as_user() { setpriv --reuid="$user" --regid="$user" --clear-groups "$@"; }
# The user reads the builds (every folder on the way must be searchable, the files readable).
chmod a+r "$built"
for file in "$(realpath .)/Cargo.toml" "$binary" "$built"; do
    if ! as_user test -r "$file"; then
        echo "scripts/unprivileged-tests.sh: $user cannot read $file; make the folders on its way searchable (chmod o+x) and it readable, or clone elsewhere" >&2
        exit 1
    fi
done
# The sandbox needs unprivileged user namespaces for this user (Ubuntu's AppArmor may refuse
# them to unprivileged users while root has them).
if ! as_user unshare --user --map-root-user true; then
    echo "scripts/unprivileged-tests.sh: $user cannot create a user namespace: see kernel.apparmor_restrict_unprivileged_userns and user.max_user_namespaces" >&2
    exit 1
fi
home="$(mktemp -d /tmp/agentrt-test-home.XXXXXX)"
trap 'rm -rf "$home"' EXIT
chown "$user:" "$home"

echo "running $(basename "$binary") $filter as $user (uid $(id -u "$user"))"
as_user --reset-env \
    env HOME="$home" PATH="$PATH" DEV_SUPPORT_BUILT="$built" \
    "$binary" "$filter" --test-threads=1
