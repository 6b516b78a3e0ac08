#!/usr/bin/env bash
# ingest-gateway benchmark (run by scripts/bench.sh, or alone):
#   STACK_ENV=.run/gw-dev/stack.env bench/gateway.sh
# Without STACK_ENV it starts a stack of its own in .run/bench-gw and stops it.
#
# Measurements, written to $BENCH_OUT/gateway.json:
#  1. batched: BENCH_RUNS runs (default 3, after a warm-up) of POSTs of 100
#     events (cs-loadgen, 16 connections) -> events/s and events per
#     CPU-second of the gateway process ("per core": /proc utime + stime
#     over the run, every thread), p50/p99; the first run is profiled with
#     perf; VmHWM of the process just before it is stopped;
#  2. the physical limit for the same messages: cs-kperf produce of what the
#     gateway wrote (its topic) to another topic, bare librdkafka, BENCH_RUNS
#     times;
#  3. single: one event per POST (64 connections) -> requests/s, requests
#     per gateway CPU-second, p50/p99;
#  4. where the time goes: per-event microseconds of split / JSON parse /
#     validation / the whole body pipeline (bench/gateway_micro.c, no HTTP,
#     no Kafka).
# Sizes: GW_BENCH_BATCHED (events per run, default 400000), GW_BENCH_SINGLE
# (requests, default 100000).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. "$ROOT/bench/_lib.sh"
BIN_DIR=${BIN_DIR:-$ROOT/build/bin}
BENCH_OUT=${BENCH_OUT:-$ROOT/bench/out}
mkdir -p "$BENCH_OUT"
work=$(mktemp -d)
own_stack=""
gw_pid=""
cleanup() {
    [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null || true
    [ -n "$own_stack" ] && "$ROOT/scripts/stack.sh" stop "$own_stack" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
if [ -z "${STACK_ENV:-}" ]; then
    own_stack=$ROOT/.run/bench-gw
    "$ROOT/scripts/stack.sh" start "$own_stack" >&2
    STACK_ENV=$own_stack/stack.env
fi
set -a; . "$STACK_ENV"; set +a

N_BATCHED=${GW_BENCH_BATCHED:-400000}
N_SINGLE=${GW_BENCH_SINGLE:-100000}
TOPIC=bench.gateway.$$
"$BIN_DIR/cs-admin" create-topics -b "$KAFKA_BOOTSTRAP" "$TOPIC:12" "$TOPIC.copy:12" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
KEY=bench-key

GATEWAY_PORT=$port GATEWAY_ADDR=127.0.0.1 GATEWAY_TOPIC=$TOPIC GATEWAY_WRITE_KEYS="bench:$KEY" \
    GATEWAY_LOG_LEVEL=warn "$BIN_DIR/ingest-gateway" 2>"$work/gateway.log" &
gw_pid=$!
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$work/gateway.log" >&2; exit 1; }

# run NAME ARGS...: one cs-loadgen run; the gateway's CPU seconds over it go
# to $work/NAME.cpu, the loadgen summary to $work/NAME.json
run() {
    local name=$1
    shift
    local before after
    before=$(proc_cpu "$gw_pid")
    "$BIN_DIR/cs-loadgen" --url "http://127.0.0.1:$port/v1/events" --key "$KEY" --progress 0 \
        --summary "$work/$name.json" "$@" >"$work/$name.txt"
    after=$(proc_cpu "$gw_pid")
    echo "$after - $before" | bc -l >"$work/$name.cpu"
}

echo "gateway bench: warm-up" >&2
run warmup --count 50000 --batch 100 --concurrency 16 --seed 99

for r in $(seq 1 "$BENCH_RUNS"); do
    echo "gateway bench: batched run $r/$BENCH_RUNS, $N_BATCHED events in POSTs of 100" >&2
    [ "$r" = 1 ] && profile start gateway "$gw_pid"
    run "batched-$r" --count "$N_BATCHED" --batch 100 --concurrency 16 --seed "$r" --users 100000
    [ "$r" = 1 ] && profile stop gateway
done

echo "gateway bench: physical limit, bare librdkafka producing the gateway's own records" >&2
for r in $(seq 1 "$BENCH_RUNS"); do
    "$BIN_DIR/cs-kperf" produce -b "$KAFKA_BOOTSTRAP" -t "$TOPIC" --to "$TOPIC.copy" \
        -n "$N_BATCHED" >"$work/limit-$r.json"
done

echo "gateway bench: single events, $N_SINGLE requests" >&2
run single --count "$N_SINGLE" --batch 1 --concurrency 64 --seed 2 --users 100000

echo "gateway bench: per-event cost without HTTP and Kafka" >&2
micro=$BIN_DIR/../bench/gateway_micro
mkdir -p "$(dirname "$micro")"
cc -O2 -std=gnu11 -D_GNU_SOURCE -Ilibcommon -Iservices/ingest-gateway -Itools/cs-loadgen \
    bench/gateway_micro.c "$BIN_DIR/../lib/libingest-gateway.a" "$BIN_DIR/../lib/libcs-loadgen.a" \
    "$BIN_DIR/../lib/libcommon.a" $(pkg-config --libs jansson avro-c zlib rdkafka libmicrohttpd libcurl) \
    -lpthread -lm -o "$micro"
"$micro" 40 >"$work/micro.json"
hwm=$(proc_hwm "$gw_pid")

python3 - "$work" "$BENCH_OUT/gateway.json" "$hwm" "$BENCH_RUNS" <<'PY'
import json, os, statistics, sys
work, out, hwm, nruns = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def load(n):
    s = json.load(open(os.path.join(work, n + ".json")))
    s["gateway_cpu_seconds"] = round(float(open(os.path.join(work, n + ".cpu")).read()), 3)
    return s
bs = [load(f"batched-{r}") for r in range(1, nruns + 1)]
s = load("single")
micro = json.load(open(os.path.join(work, "micro.json")))
limits = [json.load(open(os.path.join(work, f"limit-{r}.json"))) for r in range(1, nruns + 1)]
runs = [{"events": b["accepted"], "wall_s": b["elapsed_s"], "cpu_s": b["gateway_cpu_seconds"],
         "events_per_s": round(b["accepted"] / b["elapsed_s"]),
         "events_per_cpu_s": round(b["accepted"] / b["gateway_cpu_seconds"]),
         "p50_ms": b["latency_ms"]["p50"], "p99_ms": b["latency_ms"]["p99"],
         "failed_events": b["failed_events"]} for b in bs]
med = sorted(runs, key=lambda r: r["events_per_cpu_s"])[len(runs) // 2]
b = bs[runs.index(med)]
prof = {}
try:
    prof = json.load(open(os.path.join(os.environ.get("BENCH_OUT", "bench/out"), "profiles", "gateway.json")))
except (OSError, ValueError):
    pass
dso = {name: pct for pct, name in prof.get("libraries", [])}
res = {
    "summary": {"unit": "events", "limit": "produce", "target_per_core": 150000,
                "input": "cs-loadgen POSTs of 100 events, 16 connections",
                "runs": runs, "peak_rss_bytes": hwm,
                "limit_runs": limits,
                "limit_note": "cs-kperf produce of the gateway's own output records"},
    "batched_events": b["events"],
    "batched_events_per_s": round(b["events_per_s"]),
    "batched_events_per_cpu_second": round(b["accepted"] / b["gateway_cpu_seconds"]) if b["gateway_cpu_seconds"] else None,
    "batched_gateway_cpu_seconds": b["gateway_cpu_seconds"],
    "batched_p50_ms": b["latency_ms"]["p50"],
    "batched_p99_ms": b["latency_ms"]["p99"],
    "batched_failed_events": b["failed_events"],
    "single_requests": s["attempts"],
    "single_requests_per_s": round(s["requests_per_s"]),
    "single_requests_per_cpu_second": round(s["accepted"] / s["gateway_cpu_seconds"]) if s["gateway_cpu_seconds"] else None,
    "single_gateway_cpu_seconds": s["gateway_cpu_seconds"],
    "single_p50_ms": s["latency_ms"]["p50"],
    "single_p99_ms": s["latency_ms"]["p99"],
    "single_failed_events": s["failed_events"],
    "target_events_per_cpu_second": 150000,
    "target_single_requests_per_s": 30000,
    "event_bytes": micro["event_bytes"],
    "per_event_us_split": micro["split_us"],
    "per_event_us_json_parse": micro["parse_us"],
    "per_event_us_validate": micro["validate_us"],
    "per_event_us_body_pipeline": micro["process_us"],
    "gateway_cpu_by_library_pct": dso,
    "peak_rss_bytes": hwm,
    "cores": os.cpu_count(),
}
json.dump(res, open(out, "w"), indent=1)
print(f"gateway batched (100/POST), median of {nruns}: {res['batched_events_per_s']:,} events/s wall, "
      f"{res['batched_events_per_cpu_second']:,} events per gateway CPU-second (target 150,000), "
      f"p50 {res['batched_p50_ms']:.1f} ms p99 {res['batched_p99_ms']:.1f} ms")
print(f"gateway single events: {res['single_requests_per_s']:,} requests/s wall, "
      f"{res['single_requests_per_cpu_second']:,} requests per gateway CPU-second (target 30,000), "
      f"p50 {res['single_p50_ms']:.1f} ms p99 {res['single_p99_ms']:.1f} ms")
print(f"per event, no HTTP/Kafka: split {micro['split_us']:.2f} us, JSON parse {micro['parse_us']:.2f} us, "
      f"validation {micro['validate_us']:.2f} us, whole body pipeline (+enrich, Avro) {micro['process_us']:.2f} us")
if dso:
    print("gateway CPU by library (batched run): " + ", ".join(f"{k} {v:.0f}%" for k, v in dso.items()))
PY
