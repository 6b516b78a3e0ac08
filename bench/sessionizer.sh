#!/usr/bin/env bash
# sessionizer benchmark (run by scripts/bench.sh, or alone):
#   STACK_ENV=.run/sz-dev/stack.env bench/sessionizer.sh
# Without STACK_ENV it starts a stack of its own in .run/bench-sz and stops it.
#
# Writes $BENCH_OUT/sessionizer.json:
#  1. in-process (no network): decode + sessionize + encode per core, and
#     bytes per open session at 1 000 000 open sessions (bench/sessionizer_bench.c);
#  2. the service on the real broker (exactly-once transactions, changelog
#     and all) reading $BENCH_RAW_TOPIC from the start -- the topic the
#     physical limit was measured on (scripts/bench.sh fills it with
#     cs-kperf) -- or, alone, a topic of its own filled the same way
#     (SZ_BENCH_EVENTS, default 1000000). BENCH_RUNS runs (default 3), each a
#     fresh process, group and output topics; a run ends when the group's
#     committed offsets reach the end of the topic. Per run: wall seconds
#     (start of the process to that moment), CPU seconds of the process
#     (/proc utime + stime, every thread), its VmHWM just before it is
#     stopped, and its state gauges. The first run is profiled with perf.
# In-process size: SZ_BENCH_INPROC_EVENTS (default 3000000).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. "$ROOT/bench/_lib.sh"
BIN_DIR=${BIN_DIR:-$ROOT/build/bin}
BENCH_OUT=${BENCH_OUT:-$ROOT/bench/out}
mkdir -p "$BENCH_OUT"
N_INPROC=${SZ_BENCH_INPROC_EVENTS:-3000000}
PY=${PY:-$ROOT/.cache/venv/bin/python}
work=$(mktemp -d)
own_stack=""
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    [ -n "$own_stack" ] && "$ROOT/scripts/stack.sh" stop "$own_stack" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

make -s build/bin/sessionizer build/bin/cs-kperf build/bin/cs-admin build/lib/libsessionizer.a \
    build/lib/libcommon.a
CFLAGS="-O2 -g -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -fno-strict-aliasing -D_GNU_SOURCE -Ilibcommon $(pkg-config --cflags jansson avro-c rdkafka)"
# shellcheck disable=SC2086
cc $CFLAGS -o build/sessionizer_bench bench/sessionizer_bench.c build/lib/libsessionizer.a \
    build/lib/libcommon.a $(pkg-config --libs rdkafka jansson avro-c libcurl) -lpthread -lm
echo "== sessionizer in-process ($N_INPROC events, 1 core; 1M open sessions)"
build/sessionizer_bench "$N_INPROC" 1000000 >"$work/inproc.json"
cat "$work/inproc.json"

if [ -z "${STACK_ENV:-}" ]; then
    own_stack=$ROOT/.run/bench-sz
    "$ROOT/scripts/stack.sh" start "$own_stack" >&2
    STACK_ENV=$own_stack/stack.env
fi
BOOT=$(sed -n 's/^KAFKA_BOOTSTRAP=//p' "$STACK_ENV")
tag=bench$$$(date +%s)
raw=${BENCH_RAW_TOPIC:-}
if [ -z "$raw" ]; then
    raw=sz-bench-raw-$tag
    "$BIN_DIR/cs-admin" create-topics -b "$BOOT" "$raw:12" >/dev/null
    echo "== filling $raw with ${SZ_BENCH_EVENTS:-1000000} events (cs-kperf)"
    "$BIN_DIR/cs-kperf" fill -b "$BOOT" -t "$raw" -n "${SZ_BENCH_EVENTS:-1000000}" -u 100000 -s 7 >/dev/null
fi
N=$("$BIN_DIR/cs-admin" offsets -b "$BOOT" "$raw" | awk '{s += $3 - $2} END {print s}')

for run in $(seq 1 "$BENCH_RUNS"); do
    id=$tag-$run
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$BIN_DIR/cs-admin" create-topics -b "$BOOT" "sz-bench-sessions-$id:12" "sz-bench-late-$id:3" >/dev/null
    echo "== run $run/$BENCH_RUNS: the sessionizer reads $N events of $raw"
    t0=$(date +%s.%N)
    KAFKA_BOOTSTRAP=$BOOT TOPIC_RAW=$raw TOPIC_SESSIONS=sz-bench-sessions-$id \
        TOPIC_LATE=sz-bench-late-$id SESSIONIZER_CHANGELOG_TOPIC=sz-bench-changelog-$id \
        SESSIONIZER_GROUP_ID=sz-bench-$id SESSIONIZER_TRANSACTIONAL_ID=sz-bench-$id \
        ADMIN_ADDR=127.0.0.1 ADMIN_PORT=$port LOG_LEVEL=warn \
        "$BIN_DIR/sessionizer" 2>"$work/sessionizer-$run.log" &
    pid=$!
    [ "$run" = 1 ] && profile start sessionizer "$pid"
    if ! "$PY" - "$BOOT" "$raw" "sz-bench-$id" "$pid" <<'PYEOF'; then
import os, sys, time
from confluent_kafka import Consumer, TopicPartition
boot, topic, group, pid = sys.argv[1:]
c = Consumer({"bootstrap.servers": boot, "group.id": group, "log_level": 3})
md = c.list_topics(topic, timeout=10)
tps = [TopicPartition(topic, p) for p in md.topics[topic].partitions]
ends = [c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
deadline = time.time() + 600
while time.time() < deadline:
    if not os.path.exists(f"/proc/{pid}"):
        sys.exit("the sessionizer exited")
    done = c.committed(tps, timeout=10)
    if all(d.offset >= e for d, e in zip(done, ends)):
        break
    time.sleep(0.1)
else:
    sys.exit("sessionizer did not catch up in 600 s")
c.close()
PYEOF
        tail -20 "$work/sessionizer-$run.log" >&2
        exit 1
    fi
    t1=$(date +%s.%N)
    cpu=$(proc_cpu "$pid")
    [ "$run" = 1 ] && profile stop sessionizer
    curl -sf "http://127.0.0.1:$port/metrics" >"$work/metrics-$run.txt" || true
    hwm=$(proc_hwm "$pid")
    kill -TERM "$pid"
    wait "$pid" || true
    pid=""
    wall=$(echo "$t1 - $t0" | bc -l)
    m() { awk -v m="$1" '$1 == m {v = $2} END {print (v == "" ? "null" : v)}' "$work/metrics-$run.txt"; }
    printf '{"events": %d, "wall_s": %.3f, "cpu_s": %.3f, "peak_rss_bytes": %d, "open_sessions": %s, "state_bytes": %s, "state_bytes_per_open_session": %s, "commits": %s}\n' \
        "$N" "$wall" "$cpu" "$hwm" "$(m sessionizer_open_sessions)" "$(m sessionizer_state_bytes)" \
        "$(m sessionizer_state_bytes_per_open_session)" "$(m sessionizer_transaction_commits_total)" \
        >"$work/run-$run.json"
    cat "$work/run-$run.json"
done

python3 - "$work" "$BENCH_OUT/sessionizer.json" "$raw" <<'PY'
import glob, json, os, statistics, sys
work, out, topic = sys.argv[1:]
inproc = json.load(open(os.path.join(work, "inproc.json")))
runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(work, "run-*.json")))]
for r in runs:
    r["events_per_s"] = round(r["events"] / r["wall_s"])
    r["events_per_cpu_s"] = round(r["events"] / r["cpu_s"])
doc = {
    "summary": {"unit": "events", "limit": "consume", "target_per_core": 400000,
                "input": topic, "runs": runs},
    "inproc": inproc,
    "kafka_runs": runs,
    "machine_cores": os.cpu_count(),
}
json.dump(doc, open(out, "w"), indent=1)
med = statistics.median(r["events_per_cpu_s"] for r in runs)
print(f"sessionizer on Kafka: median {med:,.0f} events per CPU-second over {len(runs)} runs; "
      f"in-process {inproc['events_per_s_per_core']:,.0f}/s per core, "
      f"{inproc['bytes_per_open_session']} B per open session at 1M -> {out}")
PY
