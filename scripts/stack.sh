#!/usr/bin/env bash
# Starts or stops the infrastructure of one run: a single-node KRaft Kafka
# broker (the real Apache Kafka jars) and a Redis server, each on loopback, on
# ports of their own, with all state under one directory.
#
#   scripts/stack.sh start DIR   writes DIR/stack.env (KAFKA_BOOTSTRAP, REDIS_HOST,
#                                REDIS_PORT) and creates the topics of SPEC §2
#   scripts/stack.sh stop DIR    stops both (by pid file) and keeps DIR
#   scripts/stack.sh status DIR
#   scripts/stack.sh restart-kafka DIR   stops the broker (SIGTERM, its controlled
#                                shutdown) and starts it again on the same ports and data
#   scripts/stack.sh stop-redis DIR / start-redis DIR   stops / starts Redis alone,
#                                on the same port (it keeps nothing: it comes back empty)
#
# Ports: KAFKA_PORT / KAFKA_CONTROLLER_PORT / REDIS_PORT from the environment,
# otherwise free ones are picked. Idempotent: start on a running stack reuses it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|status|restart-kafka|stop-redis|start-redis DIR" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

RAW_PARTITIONS=${RAW_PARTITIONS:-12}
SESSIONS_PARTITIONS=${SESSIONS_PARTITIONS:-12}
METRICS_PARTITIONS=${METRICS_PARTITIONS:-3}
LATE_PARTITIONS=${LATE_PARTITIONS:-3}

kafka_start() {
    local kdir=$dir/kafka
    mkdir -p "$kdir/data"
    if pid_alive "$kdir/kafka.pid"; then
        return 0
    fi
    local port=${KAFKA_PORT:-$(free_port)}
    local cport=${KAFKA_CONTROLLER_PORT:-$(free_port)}
    while [ "$cport" = "$port" ]; do cport=$(free_port); done
    if [ -f "$kdir/ports" ]; then read -r port cport <"$kdir/ports"; fi
    echo "$port $cport" >"$kdir/ports"
    cat >"$kdir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$kdir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=12
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.segment.bytes=268435456
PROPS
    cat >"$kdir/log4j.properties" <<'PROPS'
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
PROPS
    local cp="$KAFKA_LIBS/*"
    local jopts=(-Xms256m -Xmx${KAFKA_HEAP:-768m} -XX:+UseG1GC -Djava.awt.headless=true
                 -Dlog4j.configuration=file:$kdir/log4j.properties)
    if [ ! -f "$kdir/data/meta.properties" ]; then
        java "${jopts[@]}" -cp "$cp" kafka.tools.StorageTool format \
            -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" \
            -c "$kdir/server.properties" >"$kdir/format.log" 2>&1 ||
            die "kafka storage format failed: $(tail -3 "$kdir/format.log")"
    fi
    start_bg "$kdir/kafka.pid" "$kdir/kafka.log" java "${jopts[@]}" -cp "$cp" kafka.Kafka "$kdir/server.properties"
    if ! wait_port 127.0.0.1 "$port" 60; then
        tail -20 "$kdir/kafka.log" >&2
        die "Kafka did not open 127.0.0.1:$port"
    fi
    "$ROOT/build/bin/cs-admin" wait -b "127.0.0.1:$port" -t 60 || die "Kafka not ready"
}

redis_start() {
    local rdir=$dir/redis
    mkdir -p "$rdir"
    if pid_alive "$rdir/redis.pid"; then
        return 0
    fi
    local port=${REDIS_PORT:-$(free_port)}
    if [ -f "$rdir/port" ]; then port=$(cat "$rdir/port"); fi
    echo "$port" >"$rdir/port"
    start_bg "$rdir/redis.pid" "$rdir/redis.log" redis-server --bind 127.0.0.1 --port "$port" \
        --dir "$rdir" --save "" --appendonly no --daemonize no --protected-mode yes
    wait_port 127.0.0.1 "$port" 20 || die "Redis did not open 127.0.0.1:$port"
}

case "$cmd" in
start)
    [ -x "$ROOT/build/bin/cs-admin" ] || make -C "$ROOT" -s build/bin/cs-admin
    [ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ] || "$ROOT/scripts/deps.sh" --no-python
    kafka_start
    redis_start
    read -r kport _ <"$dir/kafka/ports"
    "$ROOT/build/bin/cs-admin" create-topics -b "127.0.0.1:$kport" \
        "clickstream.raw:$RAW_PARTITIONS" "clickstream.sessions:$SESSIONS_PARTITIONS" \
        "clickstream.metrics:$METRICS_PARTITIONS" "clickstream.late:$LATE_PARTITIONS"
    cat >"$dir/stack.env" <<ENV
KAFKA_BOOTSTRAP=127.0.0.1:$kport
REDIS_HOST=127.0.0.1
REDIS_PORT=$(cat "$dir/redis/port")
STACK_DIR=$dir
ENV
    say "stack up: Kafka 127.0.0.1:$kport, Redis 127.0.0.1:$(cat "$dir/redis/port") ($dir)"
    ;;
stop)
    stop_pid "$dir/redis/redis.pid" 10
    stop_pid "$dir/kafka/kafka.pid" 30
    ;;
status)
    pid_alive "$dir/kafka/kafka.pid" && echo "kafka: running" || echo "kafka: stopped"
    pid_alive "$dir/redis/redis.pid" && echo "redis: running" || echo "redis: stopped"
    ;;
restart-kafka)
    [ -f "$dir/kafka/ports" ] || die "no broker was started in $dir"
    stop_pid "$dir/kafka/kafka.pid" 30
    kafka_start
    say "kafka restarted ($dir)"
    ;;
stop-redis)
    stop_pid "$dir/redis/redis.pid" 10
    ;;
start-redis)
    [ -f "$dir/redis/port" ] || die "no Redis was started in $dir"
    redis_start
    ;;
*)
    echo "usage: $0 start|stop|status|restart-kafka|stop-redis|start-redis DIR" >&2
    exit 2
    ;;
esac
