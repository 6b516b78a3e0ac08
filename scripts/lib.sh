# Shared shell functions of the project's scripts. Source it; do not run it.
# Every process we start is tracked by a pid file and stopped by that pid,
# never by process name, so that nothing else on the machine is touched.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${CLICKSTREAM_CACHE:-$ROOT/.cache}
KAFKA_VERSION=3.9.1
KAFKA_LIBS=$CACHE/kafka-$KAFKA_VERSION/libs

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# free_port: prints a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
    python3 - <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

# wait_port HOST PORT SECONDS: true once something accepts TCP there.
wait_port() {
    local host=$1 port=$2 secs=$3 i
    for ((i = 0; i < secs * 10; i++)); do
        (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# pid_alive FILE: true if FILE names a running process.
pid_alive() {
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# stop_pid FILE [SECONDS]: SIGTERM, wait, then SIGKILL; removes FILE.
stop_pid() {
    local f=$1 secs=${2:-15} pid i
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < secs * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$f"
}

# start_bg PIDFILE LOGFILE CMD...: starts CMD in its own session, records its pid.
start_bg() {
    local pidf=$1 log=$2
    shift 2
    setsid "$@" >>"$log" 2>&1 </dev/null &
    echo $! >"$pidf"
}
