#!/usr/bin/env bash
# aggregator benchmark (run by scripts/bench.sh, or alone):
#   STACK_ENV=.run/ag-dev/stack.env bench/aggregator.sh
# Without STACK_ENV it starts a stack of its own in .run/bench-ag and stops it.
#
# Two measurements, written to $BENCH_OUT/aggregator.json:
#  1. per core, no I/O (bench/aggregator_micro.c): Avro decode + windows
#     (1 min, 5 min, 1 h; 5 dimensions; HLL; dedupe) + the per-commit work,
#     in events per CPU-second of one thread;
#  2. end to end on real Kafka and Redis: AG_BENCH_EVENTS (default 2 000 000)
#     events of 100 000 users on a 12-partition topic (cs-kperf fill), one
#     aggregator replica reading them from the start: events/s (wall), events
#     per CPU-second of the whole process (all its threads: librdkafka, the
#     merger, Redis), Redis commands and commands/s.
# For scale: Flink's Nexmark q5 (windowed) runs at about 22 000 events/s per
# core.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}
BIN_DIR=${BIN_DIR:-$ROOT/$BUILD/bin}
BENCH_OUT=${BENCH_OUT:-$ROOT/bench/out}
N=${AG_BENCH_EVENTS:-2000000}
N_MICRO=${AG_BENCH_MICRO_EVENTS:-2000000}
mkdir -p "$BENCH_OUT"
work=$(mktemp -d)
own_stack=""
ag_pid=""
cleanup() {
    [ -n "$ag_pid" ] && kill "$ag_pid" 2>/dev/null && wait "$ag_pid" 2>/dev/null || true
    [ -n "$own_stack" ] && "$ROOT/scripts/stack.sh" stop "$own_stack" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

make -s -C "$ROOT" "$BUILD/bin/aggregator" "$BUILD/bin/cs-kperf" "$BUILD/bin/cs-admin" \
    "$BUILD/lib/libaggregator.a" "$BUILD/lib/libcommon.a" >&2
micro=$ROOT/$BUILD/bench/aggregator_micro
mkdir -p "$(dirname "$micro")"
cc -O2 -std=gnu11 -D_GNU_SOURCE -Ilibcommon bench/aggregator_micro.c \
    "$ROOT/$BUILD/lib/libaggregator.a" "$ROOT/$BUILD/lib/libcommon.a" \
    $(pkg-config --libs jansson avro-c zlib rdkafka hiredis libmicrohttpd libcurl) \
    -lpthread -lm -o "$micro"
echo "aggregator bench: per core, $N_MICRO events, no I/O" >&2
"$micro" "$N_MICRO" 12 >"$work/micro.json"

if [ -z "${STACK_ENV:-}" ]; then
    own_stack=$ROOT/.run/bench-ag
    "$ROOT/scripts/stack.sh" start "$own_stack" >&2
    STACK_ENV=$own_stack/stack.env
fi
set -a; . "$STACK_ENV"; set +a

id=$(date +%s)-$$
RAW=bench.ag.raw.$id
"$BIN_DIR/cs-admin" create-topics -b "$KAFKA_BOOTSTRAP" "$RAW:12" "bench.ag.metrics.$id:3" \
    "bench.ag.late.$id:3" "bench.ag.changelog.$id:12:compact" "bench.ag.panes.$id:1" >/dev/null
echo "aggregator bench: filling $RAW with $N events" >&2
"$BIN_DIR/cs-kperf" fill -b "$KAFKA_BOOTSTRAP" -t "$RAW" -n "$N" -u 100000 >"$work/fill.json"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
metric_sum() { # sum of every sample of a metric family
    curl -sf "http://127.0.0.1:$port/metrics" |
        awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2} END {printf "%.0f\n", s}'
}

echo "aggregator bench: one replica reads them" >&2
start=$(date +%s.%N)
KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP REDIS_HOST=$REDIS_HOST REDIS_PORT=$REDIS_PORT \
    TOPIC_RAW=$RAW TOPIC_SESSIONS=- TOPIC_METRICS=bench.ag.metrics.$id TOPIC_LATE=bench.ag.late.$id \
    AGGREGATOR_CHANGELOG_TOPIC=bench.ag.changelog.$id AGGREGATOR_PANES_TOPIC=bench.ag.panes.$id \
    AGGREGATOR_GROUP_ID=bench-ag-$id AGGREGATOR_INSTANCE_ID=bench-$id \
    AGGREGATOR_REDIS_PREFIX=bench:$id AGGREGATOR_ADMIN_PORT=$port AGGREGATOR_LOG_LEVEL=warn \
    "$BIN_DIR/aggregator" 2>"$work/aggregator.log" &
ag_pid=$!
done_n=0
deadline=$(( $(date +%s) + 600 ))
while [ "$(date +%s)" -lt "$deadline" ]; do
    sleep 0.2
    kill -0 "$ag_pid" 2>/dev/null || { tail -20 "$work/aggregator.log" >&2; exit 1; }
    done_n=$(metric_sum aggregator_events_total 2>/dev/null || true)
    [ "${done_n:-0}" -ge "$N" ] && break
done
end=$(date +%s.%N)
cpu=$(cpu_ticks "$ag_pid")
sleep 1 # one more flush and commit
redis_cmds=$(metric_sum aggregator_redis_commands_total)
redis_flushes=$(curl -sf "http://127.0.0.1:$port/metrics" |
    awk '$1 == "aggregator_redis_write_seconds_count" {print $2}')
results=$(metric_sum aggregator_window_results_total)
commits=$(metric_sum aggregator_transactions_total)
kill -TERM "$ag_pid"
wait "$ag_pid" || true
ag_pid=""
[ "${done_n:-0}" -ge "$N" ] || { echo "aggregator bench: only $done_n of $N events in time" >&2; exit 1; }

python3 - "$work" "$BENCH_OUT/aggregator.json" "$N" "$start" "$end" "$cpu" "$TCK" \
    "$redis_cmds" "${redis_flushes:-0}" "$results" "$commits" <<'PY'
import json, os, sys
work, out, n, start, end, cpu, tck, cmds, flushes, results, commits = sys.argv[1:]
n, wall = int(n), float(end) - float(start)
cpu_s = int(cpu) / int(tck)
micro = json.load(open(os.path.join(work, "micro.json")))
fill = json.load(open(os.path.join(work, "fill.json")))
res = {
    "micro_events": micro["events"],
    "micro_events_per_cpu_second": round(micro["pipeline_per_s"]),
    "micro_events_per_cpu_second_median": round(micro["pipeline_median_per_s"]),
    "micro_aggregate_ns_per_event": micro["aggregate_ns_per_event"],
    "micro_ns_per_event": micro["pipeline_ns_per_event"],
    "micro_decode_per_cpu_second": round(micro["decode_per_s"]),
    "e2e_events": n,
    "e2e_seconds": round(wall, 2),
    "e2e_events_per_s": round(n / wall),
    "e2e_cpu_seconds": round(cpu_s, 2),
    "e2e_events_per_cpu_second": round(n / cpu_s) if cpu_s else None,
    "e2e_redis_commands": int(float(cmds)),
    "e2e_redis_commands_per_s": round(float(cmds) / wall),
    "e2e_redis_flushes": int(float(flushes)),
    "e2e_window_results": int(float(results)),
    "e2e_transactions": int(float(commits)),
    "fill": fill,
    "reference_flink_nexmark_q5_events_per_core_s": 22000,
}
json.dump(res, open(out, "w"), indent=1)
print(f"aggregator, per core (no I/O): {res['micro_events_per_cpu_second']:,} events/s best of 3, "
      f"{res['micro_events_per_cpu_second_median']:,} median ({res['micro_ns_per_event']} ns/event, of which "
      f"windows {res['micro_aggregate_ns_per_event']} ns; Avro decode alone {res['micro_decode_per_cpu_second']:,}/s)")
print(f"aggregator, end to end (Kafka + Redis, 1 replica): {res['e2e_events_per_s']:,} events/s wall, "
      f"{res['e2e_events_per_cpu_second']:,} events per CPU-second (all threads)")
print(f"aggregator, Redis: {res['e2e_redis_commands']:,} commands, "
      f"{res['e2e_redis_commands_per_s']:,}/s, in {res['e2e_redis_flushes']} pipelined flushes")
print(f"(Flink Nexmark q5: ~22,000 events/s per core) -> {out}")
PY
