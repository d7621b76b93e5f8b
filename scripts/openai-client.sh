#!/usr/bin/env bash
# Drives `runtimes serve` with the official `openai` Python package (issue 14): builds the
# `runtimes` binary and the echo and fixture plugins, makes a venv under target/ with the
# pinned requirements of scripts/openai-client/, starts a server on a free loopback port with
# an API key, runs scripts/openai-client/client.py against it, then stops the server with
# SIGTERM and checks that it exits cleanly.
#
#   scripts/openai-client.sh            exit 0 when every check passed
#
# Needs python3 with the venv module and access to PyPI (first run only: the venv is kept in
# target/openai-client-venv and rebuilt when requirements.txt changes).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VENV="$TARGET/openai-client-venv"
REQUIREMENTS="$ROOT/scripts/openai-client/requirements.txt"
PYTHON=${PYTHON:-python3}

log() { printf 'openai-client.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/openai-client.XXXXXX")
SERVER_PID=
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

log "building runtimes and the plugins"
cargo build --quiet --manifest-path "$ROOT/Cargo.toml" -p runtimes-cli -p echo-runtime -p fixture-plugin
BIN="$TARGET/debug"

if [[ ! -x "$VENV/bin/python" ]] || ! cmp -s "$REQUIREMENTS" "$VENV/requirements.txt"; then
    log "making the venv in $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    cp "$REQUIREMENTS" "$VENV/requirements.txt"
fi

PLUGINS="$SCRATCH/plugins"
mkdir -m 0700 "$PLUGINS"
install -m 0755 "$BIN/libecho_runtime.so" "$PLUGINS/libecho.so"
install -m 0755 "$BIN/libfixture_plugin.so" "$PLUGINS/libfixture.so"

export OPENAI_CLIENT_TEST_KEY="key-$$-$RANDOM"
mkfifo "$SCRATCH/stdout"
env -u AGENT_RUNTIMES_PATH XDG_DATA_HOME="$SCRATCH/data" \
    "$BIN/runtimes" --plugin-dir "$PLUGINS" serve --addr 127.0.0.1:0 \
    --api-key-env OPENAI_CLIENT_TEST_KEY >"$SCRATCH/stdout" 2>"$SCRATCH/stderr" &
SERVER_PID=$!
exec 3<"$SCRATCH/stdout"
URL=
while IFS= read -r -t 60 line <&3; do
    if [[ "$line" == "listening on "* ]]; then
        URL=${line#listening on }
        break
    fi
done
[[ -n "$URL" ]] || { cat "$SCRATCH/stderr" >&2; die "the server did not start"; }
log "server at $URL"

"$VENV/bin/python" "$ROOT/scripts/openai-client/client.py" \
    --base-url "$URL/v1" --api-key "$OPENAI_CLIENT_TEST_KEY" ||
    { cat "$SCRATCH/stderr" >&2; die "the openai client checks failed"; }

kill -TERM "$SERVER_PID"
status=0
wait "$SERVER_PID" || status=$?
SERVER_PID=
exec 3<&-
[[ $status -eq 0 ]] || { cat "$SCRATCH/stderr" >&2; die "the server exited with $status after SIGTERM"; }
log "the server stopped cleanly; all checks passed"
