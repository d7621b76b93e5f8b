#!/usr/bin/env bash
# Installs the reference MCP servers the agent runtime's tests drive, from the npm registry, at
# the versions pinned in scripts/mcp-servers/package-lock.json:
#   @modelcontextprotocol/server-filesystem, @modelcontextprotocol/server-everything
# into scripts/mcp-servers/node_modules (git-ignored). Needs node >= 18 and npm (Debian's
# `nodejs` and `npm` packages; installed with apt-get when missing).
#
#   scripts/mcp-servers.sh          install (a no-op when the lock is already installed)
#   scripts/mcp-servers.sh paths    print the entry point of each server
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR="$ROOT/scripts/mcp-servers"
log() { printf 'mcp-servers.sh: %s\n' "$*" >&2; }

entry() { printf '%s/node_modules/@modelcontextprotocol/%s/dist/index.js\n' "$DIR" "$1"; }

if [[ "${1:-install}" == paths ]]; then
    entry server-filesystem
    entry server-everything
    exit 0
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    log "installing nodejs and npm with apt-get"
    apt-get update -qq
    apt-get install -y -qq nodejs npm >/dev/null
fi

# `npm ci` installs exactly the lock; its marker file, newer than the lock, means it did.
if [[ "$DIR/node_modules/.package-lock.json" -nt "$DIR/package-lock.json" ]] \
    && [[ -f "$(entry server-filesystem)" && -f "$(entry server-everything)" ]]; then
    log "already installed"
else
    log "installing the pinned MCP servers with npm ci"
    (cd "$DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
for server in server-filesystem server-everything; do
    [[ -f "$(entry "$server")" ]] || { log "error: $(entry "$server") is missing after the install"; exit 1; }
done
log "ready: $(entry server-filesystem), $(entry server-everything)"
