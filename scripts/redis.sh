#!/usr/bin/env bash
# Installs (from Debian packages, when missing) and runs a real redis-server on a loopback port
# for the queue's tests, the benchmarks and CI.
#
#   scripts/redis.sh start [--name NAME] [--port PORT] [--owner PID]
#                                                        start an instance (or reuse a running
#                                                        one of that name), wait for PING; with
#                                                        --owner, stop it when PID exits
#   scripts/redis.sh stop [NAME]                         stop one instance (or every one)
#   scripts/redis.sh restart [NAME]                      stop, then start on the same port
#                                                        with the same data
#   scripts/redis.sh env                                 print the env file
#
# Each instance keeps its state under target/redis/<name>/: redis.pid, redis.log, data/
# (append-only file, fsync every second, so a restart keeps the queue), and its password:
# every instance requires one (`requirepass`, generated at its first start, kept in
# `password` and `redis.conf`, both mode 0600, never on a command line). `env` in
# target/redis/ (mode 0600) holds the default instance's variables, the password in the URL:
#   AGENT_RUNTIMES_REDIS_URL=redis://default:PASSWORD@127.0.0.1:PORT (`default`: the ACL user)   AGENT_RUNTIMES_REDIS_PID=...
# Use it with: set -a; . target/redis/env; set +a
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_DIR="${AGENT_RUNTIMES_REDIS_STATE_DIR:-$ROOT/target/redis}"

log() { printf 'redis.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

ensure_installed() {
    if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
        return
    fi
    log "installing redis-server with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    command -v redis-server >/dev/null || die "apt-get did not install redis-server"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Whether $1 is the pid of a running redis-server.
is_redis() {
    [[ -n "${1:-}" && -r "/proc/$1/cmdline" ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q redis-server
}

# The URL of an instance, with its password.
url_of() {
    local dir="$STATE_DIR/$1"
    printf 'redis://default:%s@127.0.0.1:%s\n' "$(cat "$dir/password")" "$(cat "$dir/port")"
}

# The instance's password: generated once (URL-safe characters), kept mode 0600.
ensure_password() {
    local dir=$1
    if [[ ! -s "$dir/password" ]]; then
        (umask 077; head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$dir/password")
    fi
    (umask 077; printf 'requirepass %s\n' "$(cat "$dir/password")" >"$dir/redis.conf")
}

write_env() {
    local dir="$STATE_DIR/default"
    if [[ -f "$dir/port" && -f "$dir/redis.pid" && -s "$dir/password" ]] && is_redis "$(cat "$dir/redis.pid")"; then
        (umask 077; printf 'AGENT_RUNTIMES_REDIS_URL=%s\nAGENT_RUNTIMES_REDIS_PID=%s\n' \
            "$(url_of default)" "$(cat "$dir/redis.pid")" >"$STATE_DIR/env.tmp")
        mv "$STATE_DIR/env.tmp" "$STATE_DIR/env"
    else
        rm -f "$STATE_DIR/env"
    fi
}

# With an owner process id: the instance is stopped when that process exits, so a test suite
# leaves nothing running. The watcher has its own session, no terminal, and none of the
# caller's pipes (the caller reads this script's output to its end).
watch_owner() {
    local owner=$1 name=$2
    [[ -n "$owner" ]] || return 0
    [[ "$owner" =~ ^[0-9]+$ ]] || die "--owner takes a process id"
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 0.5; done; "$2" stop "$3"' \
        redis-owner "$owner" "$0" "$name" </dev/null >/dev/null 2>&1 &
    log "instance '$name' stops when process $owner exits"
}

start_redis() {
    local name=default port="" owner=""
    while [[ $# -gt 0 ]]; do
        case $1 in
            --name) name=${2:?--name needs a value}; shift 2 ;;
            --port) port=${2:?--port needs a value}; shift 2 ;;
            --owner) owner=${2:?--owner needs a process id}; shift 2 ;;
            *) die "unknown start option: $1" ;;
        esac
    done
    [[ "$name" =~ ^[a-z0-9_-]+$ ]] || die "instance names are [a-z0-9_-]+"
    ensure_installed
    local dir="$STATE_DIR/$name"
    mkdir -p "$dir/data"
    if [[ -f "$dir/redis.pid" ]] && is_redis "$(cat "$dir/redis.pid")"; then
        if [[ -s "$dir/password" ]] && REDISCLI_AUTH="$(cat "$dir/password")" \
            redis-cli -h 127.0.0.1 -p "$(cat "$dir/port")" ping 2>/dev/null | grep -q PONG; then
            log "instance '$name' already runs on port $(cat "$dir/port") (pid $(cat "$dir/redis.pid"))"
            write_env
            watch_owner "$owner" "$name"
            url_of "$name"
            return
        fi
        # Started by an older version of this script, without a password: start it again.
        log "instance '$name' runs without its password: restarting it with one"
        stop_one "$name"
    fi
    ensure_password "$dir"
    if [[ -z "$port" ]]; then
        if [[ -f "$dir/port" ]]; then port=$(cat "$dir/port"); else port=$(free_port); fi
    fi
    # No config file: everything on the command line. Loopback only, no protected-mode
    # surprises, persistence by append-only file so a restart keeps jobs and results.
    redis-server "$dir/redis.conf" --bind 127.0.0.1 --port "$port" --daemonize yes \
        --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir/data" \
        --appendonly yes --appendfsync everysec --save "" \
        --maxmemory-policy noeviction >/dev/null
    echo "$port" >"$dir/port"
    local deadline=$((SECONDS + 20))
    until REDISCLI_AUTH="$(cat "$dir/password")" redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; do
        ((SECONDS < deadline)) || { tail -20 "$dir/redis.log" >&2; die "redis-server did not answer PING within 20 s"; }
        sleep 0.05
    done
    # The pid file is written by the daemon itself; wait for it.
    until [[ -s "$dir/redis.pid" ]]; do
        ((SECONDS < deadline)) || die "redis-server wrote no pid file"
        sleep 0.05
    done
    write_env
    watch_owner "$owner" "$name"
    log "instance '$name' ready on port $port, password required (pid $(cat "$dir/redis.pid"))"
    url_of "$name"
}

stop_one() {
    local name=$1 dir="$STATE_DIR/$1"
    if [[ -f "$dir/redis.pid" ]]; then
        local pid
        pid=$(cat "$dir/redis.pid")
        if is_redis "$pid"; then
            # SIGTERM: redis flushes its append-only file and exits.
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.05
            done
            kill -9 "$pid" 2>/dev/null || true
            log "stopped instance '$name' (pid $pid)"
        fi
        rm -f "$dir/redis.pid"
    fi
}

stop_redis() {
    [[ -d "$STATE_DIR" ]] || return 0
    if [[ $# -gt 0 ]]; then
        stop_one "$1"
    else
        local dir
        for dir in "$STATE_DIR"/*/; do
            [[ -d "$dir" ]] && stop_one "$(basename "$dir")"
        done
    fi
    write_env
}

case ${1:-} in
    start) shift; start_redis "$@" ;;
    stop) shift; stop_redis "$@" ;;
    restart) shift; name=${1:-default}; stop_redis "$name"; start_redis --name "$name" ;;
    env) cat "$STATE_DIR/env" 2>/dev/null || true ;;
    *)
        sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
