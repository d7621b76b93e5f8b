#!/usr/bin/env bash
# Builds the agent_runtimes wheel with maturin, installs it into a fresh virtual environment,
# builds the echo and hostile plugins and the process-level worker, and runs the pytest suite against the
# installed wheel. Run from anywhere: `bash python/ci.sh`. Everything goes under python/
# (.venv for the build tools, .venv-test for the wheel, target/ for cargo).
#
# Environment: PYTHON (default python3, 3.9 or newer); AGENT_RUNTIMES_WHEEL_RELEASE=1 builds a
# release wheel; LLAMA_SERVER_URL set (scripts/llama-server.sh start) also runs the tests
# marked `llama` against that server.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
python="${PYTHON:-python3}"
export CARGO_TARGET_DIR="$here/target"

step() { printf '\n== %s\n' "$*"; }

step "build tools (python/.venv: $(sed -n 's/^\([a-z-]*\)==.*/\1/p' "$here/requirements-dev.txt" | tr '\n' ' '))"
if [ ! -x "$here/.venv/bin/python" ]; then
    "$python" -m venv "$here/.venv"
fi
"$here/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements-dev.txt"

step "wheel (maturin build)"
rm -rf "$here/target/wheels"
profile=()
[ "${AGENT_RUNTIMES_WHEEL_RELEASE:-0}" = 1 ] && profile=(--release)
(cd "$here" && "$here/.venv/bin/maturin" build "${profile[@]}" --interpreter "$here/.venv/bin/python" --out "$here/target/wheels")
wheel="$(ls "$here"/target/wheels/agent_runtimes-*.whl)"
echo "built $wheel"

step "fresh virtual environment with the wheel (python/.venv-test)"
rm -rf "$here/.venv-test"
"$python" -m venv "$here/.venv-test"
"$here/.venv-test/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$here/requirements-dev.txt" "$wheel"

step "echo and hostile plugins, runtimes-worker"
(cd "$repo" && cargo build -p echo-runtime -p hostile-plugin && cargo build -p runtime-loader --bin runtimes-worker)
export AGENT_RUNTIMES_WORKER="$CARGO_TARGET_DIR/debug/runtimes-worker"
export AGENT_RUNTIMES_TEST_ECHO="$CARGO_TARGET_DIR/debug/libecho_runtime.so"
export AGENT_RUNTIMES_TEST_HOSTILE="$CARGO_TARGET_DIR/debug/libhostile_plugin.so"
export AGENT_RUNTIMES_TEST_WHEEL=1

step "pytest (against the installed wheel)"
markers="not llama"
if [ -n "${LLAMA_SERVER_URL:-}" ]; then
    markers="llama or not llama"
    (cd "$repo" && cargo build -p llm-runtimes)
fi
# From tests/, so that the source folder python/agent_runtimes is not what gets imported.
cd "$here/tests"
"$here/.venv-test/bin/python" -m pytest -p no:cacheprovider -c "$here/pyproject.toml" --rootdir "$here" -m "$markers" .
