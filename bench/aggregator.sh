#!/usr/bin/env bash
# aggregator benchmark (run by scripts/bench.sh, or alone):
#   STACK_ENV=.run/ag-dev/stack.env bench/aggregator.sh
# Without STACK_ENV it starts a stack of its own in .run/bench-ag and stops it.
#
# Writes $BENCH_OUT/aggregator.json:
#  1. per core, no I/O (bench/aggregator_micro.c): Avro decode + windows
#     (1 min, 5 min, 1 h; 5 dimensions; HLL; dedupe) + the per-commit work,
#     in events per CPU-second of one thread; and the heap held per pane
#     (one window of one partition);
#  2. the service on real Kafka and Redis: one replica reads $BENCH_RAW_TOPIC
#     from the start (the topic the physical limit was measured on; alone: a
#     topic of its own, AG_BENCH_EVENTS events, default 2 000 000, cs-kperf
#     fill). BENCH_RUNS runs (default 3), each a fresh process, group, output
#     topics and Redis prefix; a run ends when aggregator_events_total
#     reaches the topic's size. Per run: wall seconds, CPU seconds of the
#     process (/proc utime + stime, every thread: librdkafka, the merger,
#     the Redis writer), its VmHWM just before it is stopped, Redis commands,
#     panes held. The first run is profiled with perf.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. "$ROOT/bench/_lib.sh"
BUILD=${BUILD:-build}
BIN_DIR=${BIN_DIR:-$ROOT/$BUILD/bin}
BENCH_OUT=${BENCH_OUT:-$ROOT/bench/out}
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

tag=$(date +%s)-$$
RAW=${BENCH_RAW_TOPIC:-}
if [ -z "$RAW" ]; then
    RAW=bench.ag.raw.$tag
    "$BIN_DIR/cs-admin" create-topics -b "$KAFKA_BOOTSTRAP" "$RAW:12" >/dev/null
    echo "aggregator bench: filling $RAW with ${AG_BENCH_EVENTS:-2000000} events" >&2
    "$BIN_DIR/cs-kperf" fill -b "$KAFKA_BOOTSTRAP" -t "$RAW" -n "${AG_BENCH_EVENTS:-2000000}" \
        -u 100000 -s 7 >/dev/null
fi
N=$("$BIN_DIR/cs-admin" offsets -b "$KAFKA_BOOTSTRAP" "$RAW" | awk '{s += $3 - $2} END {print s}')

port=""
metrics() { curl -sf "http://127.0.0.1:$port/metrics"; }
metric_sum() { # sum of every sample of a metric family in file $2
    awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2} END {printf "%.0f\n", s}' "$2"
}

for run in $(seq 1 "$BENCH_RUNS"); do
    id=$tag-$run
    "$BIN_DIR/cs-admin" create-topics -b "$KAFKA_BOOTSTRAP" "bench.ag.metrics.$id:3" \
        "bench.ag.late.$id:3" "bench.ag.changelog.$id:12:compact" "bench.ag.panes.$id:1" >/dev/null
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    echo "aggregator bench: run $run/$BENCH_RUNS, one replica reads $N events of $RAW" >&2
    start=$(date +%s.%N)
    KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP REDIS_HOST=$REDIS_HOST REDIS_PORT=$REDIS_PORT \
        TOPIC_RAW=$RAW TOPIC_SESSIONS=- TOPIC_METRICS=bench.ag.metrics.$id TOPIC_LATE=bench.ag.late.$id \
        AGGREGATOR_CHANGELOG_TOPIC=bench.ag.changelog.$id AGGREGATOR_PANES_TOPIC=bench.ag.panes.$id \
        AGGREGATOR_GROUP_ID=bench-ag-$id AGGREGATOR_INSTANCE_ID=bench-$id \
        AGGREGATOR_REDIS_PREFIX=bench:$id AGGREGATOR_ADMIN_ADDR=127.0.0.1 AGGREGATOR_ADMIN_PORT=$port \
        AGGREGATOR_LOG_LEVEL=warn "$BIN_DIR/aggregator" 2>"$work/aggregator-$run.log" &
    ag_pid=$!
    [ "$run" = 1 ] && profile start aggregator "$ag_pid"
    done_n=0
    deadline=$(( $(date +%s) + 600 ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        sleep 0.1
        kill -0 "$ag_pid" 2>/dev/null || { tail -20 "$work/aggregator-$run.log" >&2; exit 1; }
        metrics >"$work/m.txt" 2>/dev/null || continue
        done_n=$(metric_sum aggregator_events_total "$work/m.txt")
        [ "${done_n:-0}" -ge "$N" ] && break
    done
    end=$(date +%s.%N)
    cpu=$(proc_cpu "$ag_pid")
    [ "$run" = 1 ] && profile stop aggregator
    [ "${done_n:-0}" -ge "$N" ] || { echo "aggregator bench: only $done_n of $N events in time" >&2; exit 1; }
    sleep 1 # one more flush and commit
    metrics >"$work/metrics-$run.txt"
    hwm=$(proc_hwm "$ag_pid")
    kill -TERM "$ag_pid"
    wait "$ag_pid" || true
    ag_pid=""
    f=$work/metrics-$run.txt
    printf '{"events": %d, "wall_s": %.3f, "cpu_s": %.3f, "peak_rss_bytes": %d, "redis_commands": %s, "redis_flushes": %s, "window_results": %s, "transactions": %s, "open_panes": %s, "kept_panes": %s, "rss_bytes_end": %s}\n' \
        "$N" "$(echo "$end - $start" | bc -l)" "$cpu" "$hwm" \
        "$(metric_sum aggregator_redis_commands_total "$f")" \
        "$(metric_sum aggregator_redis_write_seconds_count "$f")" \
        "$(metric_sum aggregator_window_results_total "$f")" \
        "$(metric_sum aggregator_transactions_total "$f")" \
        "$(metric_sum aggregator_open_panes "$f")" "$(metric_sum aggregator_kept_panes "$f")" \
        "$(metric_sum process_resident_memory_bytes "$f")" >"$work/run-$run.json"
    cat "$work/run-$run.json" >&2
done

python3 - "$work" "$BENCH_OUT/aggregator.json" "$RAW" <<'PY'
import glob, json, os, statistics, sys
work, out, topic = sys.argv[1:]
micro = json.load(open(os.path.join(work, "micro.json")))
runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(work, "run-*.json")))]
for r in runs:
    r["events_per_s"] = round(r["events"] / r["wall_s"])
    r["events_per_cpu_s"] = round(r["events"] / r["cpu_s"])
    r["redis_commands_per_s"] = round(r["redis_commands"] / r["wall_s"])
    held = r["open_panes"] + r["kept_panes"]
    r["rss_bytes_per_pane_held"] = round(r["rss_bytes_end"] / held) if held else None
res = {
    "summary": {"unit": "events", "limit": "consume", "target_per_core": 500000,
                "input": topic, "runs": runs},
    "micro_events": micro["events"],
    "micro_events_per_cpu_second": round(micro["pipeline_per_s"]),
    "micro_events_per_cpu_second_median": round(micro["pipeline_median_per_s"]),
    "micro_aggregate_ns_per_event": micro["aggregate_ns_per_event"],
    "micro_ns_per_event": micro["pipeline_ns_per_event"],
    "micro_decode_per_cpu_second": round(micro["decode_per_s"]),
    "micro_runs": micro["runs"],
    "memory": {k: micro[k] for k in ("state_heap_bytes", "dedupe_bytes", "panes_open", "panes_kept",
                                      "panes_1min", "panes_5min", "panes_1h", "bytes_per_pane",
                                      "partitions", "event_time_s")},
    "kafka_runs": runs,
}
res["memory"]["bytes_per_window_all_partitions"] = micro["bytes_per_pane"] * micro["partitions"]
json.dump(res, open(out, "w"), indent=1)
med = statistics.median(r["events_per_cpu_s"] for r in runs)
print(f"aggregator, per core (no I/O): {res['micro_events_per_cpu_second']:,} events/s best of {micro['runs']}, "
      f"{res['micro_events_per_cpu_second_median']:,} median; {micro['bytes_per_pane']:,.0f} B heap per pane held")
print(f"aggregator on Kafka + Redis: median {med:,.0f} events per CPU-second over {len(runs)} runs -> {out}")
PY
