#!/usr/bin/env bash
# `make up`: the whole pipeline on this machine. Installs what is missing,
# builds, starts Kafka and Redis, every service that exists, and the load
# generator at a modest rate; prints where to look. Idempotent: what already
# runs is left running. `make down` stops all of it.
#
# Ports (override through the environment): Kafka 9092, Redis 6380,
# gateway 8080, sessionizer 9102, aggregator 9103, lake-writer 9104,
# dashboard 3000. LOADGEN_RATE (events/s, default 200), LOADGEN=off to skip it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

RUN=$ROOT/.run/up
mkdir -p "$RUN/pids" "$RUN/logs"
"$ROOT/scripts/deps.sh" --no-python
say "building"
make -s -j"$(nproc 2>/dev/null || echo 2)" all

KAFKA_PORT=${KAFKA_PORT:-9092} KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093} \
    REDIS_PORT=${REDIS_PORT:-6380} "$ROOT/scripts/stack.sh" start "$RUN/stack"
set -a
. "$RUN/stack/stack.env"
set +a
export LOG_LEVEL=${LOG_LEVEL:-info}
export LAKE_WAREHOUSE=${LAKE_WAREHOUSE:-$RUN/warehouse}

# start_service NAME [ENV=VALUE ...]: starts build/bin/NAME once.
start_service() {
    local name=$1
    shift
    [ -x "$ROOT/build/bin/$name" ] || return 0
    if pid_alive "$RUN/pids/$name.pid"; then
        say "$name already running (pid $(cat "$RUN/pids/$name.pid"))"
        return 0
    fi
    start_bg "$RUN/pids/$name.pid" "$RUN/logs/$name.log" env "$@" "$ROOT/build/bin/$name"
    say "started $name (pid $(cat "$RUN/pids/$name.pid"), log $RUN/logs/$name.log)"
}

start_service ingest-gateway GATEWAY_AUTH=off
start_service sessionizer
start_service aggregator
start_service lake-writer
start_service dashboard-ws

if [ "${LOADGEN:-on}" != off ] && [ -x "$ROOT/build/bin/cs-loadgen" ] && [ -x "$ROOT/build/bin/ingest-gateway" ]; then
    wait_port 127.0.0.1 "${GATEWAY_PORT:-8080}" 20 || die "the gateway did not open :${GATEWAY_PORT:-8080}; see $RUN/logs/ingest-gateway.log"
    if ! pid_alive "$RUN/pids/cs-loadgen.pid"; then
        # Live event time: the simulated clock starts 20 s ago, and with
        # 1500 simulated users per event/s it advances a little slower than
        # the wall clock (a shop's users come back every ~2.5 h), so events
        # stay near "now" and never run into the gateway's future limit.
        rate=${LOADGEN_RATE:-200}
        start_bg "$RUN/pids/cs-loadgen.pid" "$RUN/logs/cs-loadgen.log" "$ROOT/build/bin/cs-loadgen" \
            --url "http://127.0.0.1:${GATEWAY_PORT:-8080}/v1/events" --rate "$rate" \
            --duration 86400 --users $((rate * 1500)) --start $(( $(date +%s) * 1000 - 20000 )) \
            --dup 0.01 --ooo 0.02 --late 0.002 --invalid 0.005 --progress 10
        say "started the load generator at ${LOADGEN_RATE:-200} events/s"
    fi
fi

cat <<MSG

The pipeline is up (auth is off for local use: any client may post events).
  dashboard     http://localhost:${DASHBOARD_PORT:-3000}
  ingest        curl -X POST http://localhost:${GATEWAY_PORT:-8080}/v1/events -d '{...}'
  metrics       :8080/metrics (gateway), :9102 (sessionizer), :9103 (aggregator),
                :9104 (lake-writer), :3000/metrics (dashboard)
  Kafka         $KAFKA_BOOTSTRAP        Redis  127.0.0.1:$REDIS_PORT
  lake          $LAKE_WAREHOUSE
  logs          $RUN/logs/
Stop everything with: make down
MSG
