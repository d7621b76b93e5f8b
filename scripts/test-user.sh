#!/usr/bin/env bash
# Creates the unprivileged user the plugin-folder trust tests (tests/src/trust.rs) need: "another
# user" who owns a plugin folder or swaps one after discovery; and the user for whom a mode-000
# file is unreadable (tests/src/hostile.rs: root reads any file). The tests run as root (here and
# in CI) and chown temporary folders to this user, or run commands as it.
#
#   scripts/test-user.sh        create `agentrt-test` if missing (needs root), print its uid
#
# Idempotent. The user has no home folder, no password and no login shell.
set -euo pipefail

name="${AGENT_RUNTIMES_TEST_USER:-agentrt-test}"

if ! id -u "$name" >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "scripts/test-user.sh: creating the user $name needs root" >&2
        exit 1
    fi
    useradd --system --no-create-home --shell /usr/sbin/nologin "$name"
fi
echo "$name uid $(id -u "$name") gid $(id -g "$name")"
