#!/usr/bin/env bash
# Benchmark of the sessionizer; prints the figures and writes
# bench/out/sessionizer.json.
#  1. in-process (no network): decode + sessionize + encode per core, and
#     bytes per open session at 1 000 000 open sessions (bench/sessionizer_bench.c);
#  2. end to end: the sessionizer consuming a pre-filled raw topic on the real
#     broker (exactly-once transactions, changelog and all): events per second
#     of wall time and per CPU-second of the sessionizer process.
# Uses STACK_ENV's broker when set, else starts one in .run/bench-sz (stopped
# at the end). BENCH_EVENTS (default 3000000 in-process, 400000 end to end).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=bench/out
mkdir -p "$OUT"
N_INPROC=${BENCH_EVENTS:-3000000}
N_E2E=${BENCH_E2E_EVENTS:-400000}
PY=${PY:-$ROOT/.cache/venv/bin/python}

make -s build/bin/sessionizer build/lib/libsessionizer.a build/lib/libcommon.a
CFLAGS="-O2 -g -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -fno-strict-aliasing -D_GNU_SOURCE -Ilibcommon $(pkg-config --cflags jansson avro-c rdkafka)"
# shellcheck disable=SC2086
cc $CFLAGS -o build/sessionizer_bench bench/sessionizer_bench.c build/lib/libsessionizer.a \
    build/lib/libcommon.a $(pkg-config --libs rdkafka jansson avro-c libcurl) -lpthread -lm
echo "== sessionizer in-process ($N_INPROC events, 1 core; 1M open sessions)"
inproc=$(build/sessionizer_bench "$N_INPROC" 1000000)
echo "$inproc"

stackdir=""
if [ -z "${STACK_ENV:-}" ]; then
    stackdir=$ROOT/.run/bench-sz
    scripts/stack.sh start "$stackdir" >/dev/null
    STACK_ENV=$stackdir/stack.env
    trap 'scripts/stack.sh stop "$stackdir" >/dev/null 2>&1 || true' EXIT
fi
BOOT=$(sed -n 's/^KAFKA_BOOTSTRAP=//p' "$STACK_ENV")
tag=bench$$$(date +%s)
raw=sz-bench-raw-$tag
build/bin/cs-admin create-topics -b "$BOOT" "$raw:4" "sz-bench-sessions-$tag:4" "sz-bench-late-$tag:1"
echo "== filling $raw with $N_E2E events"
"$PY" - "$BOOT" "$raw" "$N_E2E" <<'PYEOF'
import io, json, struct, sys
import fastavro
from confluent_kafka import Producer
boot, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
schema = fastavro.parse_schema(json.load(open("schemas/event.avsc")))
p = Producer({"bootstrap.servers": boot, "linger.ms": 50, "batch.size": 1000000,
              "compression.type": "lz4", "partitioner": "murmur2_random",
              "queue.buffering.max.messages": 1000000})
T0 = 1_700_000_000_000
for i in range(n):
    user = f"user-{(i // 10) % 200000}"
    rec = {"event_id": f"e-{i}", "timestamp": T0 + i * 2, "received_at": T0 + i * 2 + 20,
           "user_id": user, "event_type": "page_view",
           "page_url": f"https://shop.example.com/product/{(i * 7919) % 1000}",
           "session_id": None, "referrer": None, "user_agent": None, "ip_address": None,
           "geo": {"country": "DE", "city": None}, "device": {"type": "mobile", "os": None},
           "is_bot": False, "metadata": None}
    b = io.BytesIO()
    fastavro.schemaless_writer(b, schema, rec)
    while True:
        try:
            p.produce(topic, key=user.encode(), value=b"\0" + struct.pack(">I", 1) + b.getvalue())
            break
        except BufferError:
            p.poll(0.1)
    if i % 10000 == 0:
        p.poll(0)
assert p.flush(120) == 0
PYEOF

echo "== sessionizer consuming it"
export KAFKA_BOOTSTRAP=$BOOT TOPIC_RAW=$raw TOPIC_SESSIONS=sz-bench-sessions-$tag \
    TOPIC_LATE=sz-bench-late-$tag SESSIONIZER_CHANGELOG_TOPIC=sz-bench-changelog-$tag \
    SESSIONIZER_GROUP_ID=sz-bench-$tag SESSIONIZER_TRANSACTIONAL_ID=sz-bench-$tag \
    ADMIN_PORT=0 LOG_LEVEL=warn
t0=$(date +%s.%N)
build/bin/sessionizer 2>"$OUT/sessionizer-bench.log" &
pid=$!
"$PY" - "$BOOT" "$raw" "sz-bench-$tag" <<'PYEOF'
import sys, time
from confluent_kafka import Consumer, TopicPartition
boot, topic, group = sys.argv[1:]
c = Consumer({"bootstrap.servers": boot, "group.id": group})
tps = [TopicPartition(topic, p) for p in range(4)]
ends = [c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
deadline = time.time() + 600
while time.time() < deadline:
    done = c.committed(tps, timeout=10)
    if all(d.offset >= e for d, e in zip(done, ends)):
        break
    time.sleep(0.2)
else:
    sys.exit("sessionizer did not catch up in 600 s")
c.close()
PYEOF
t1=$(date +%s.%N)
ticks=$(awk '{print $14 + $15}' /proc/$pid/stat)
hz=$(getconf CLK_TCK)
kill -TERM $pid
wait $pid || true
wall=$(echo "$t1 - $t0" | bc -l)
cpu=$(echo "$ticks / $hz" | bc -l)
e2e=$(printf '{"events": %d, "wall_s": %.2f, "cpu_s": %.2f, "events_per_s": %.0f, "events_per_cpu_s": %.0f}' \
    "$N_E2E" "$wall" "$cpu" "$(echo "$N_E2E / $wall" | bc -l)" "$(echo "$N_E2E / $cpu" | bc -l)")
echo "$e2e"
printf '{"inproc": %s, "kafka": %s, "machine_cores": %d}\n' "$inproc" "$e2e" "$(nproc)" \
    >"$OUT/sessionizer.json"
echo "wrote $OUT/sessionizer.json"
