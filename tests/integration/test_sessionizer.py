"""The sessionizer against a real broker: a generated click stream (out of
order within the bound, late within lateness, very late, duplicates,
undecodable records) is produced at a steady pace while the service runs; the
read_committed sessions topic must hold exactly the sessions that the
independent batch reference (reference/sessions_ref.py) computes from what
the raw topic holds, each (session_id, revision) exactly once with no
revision missing, and the late topic exactly the reference's late events.
Then the same with kill -9 several times during the run, and with 1 -> 3 -> 1
instances in one consumer group.

    STACK_ENV=.run/sz-dev/stack.env .cache/venv/bin/python -m pytest \
        tests/integration/test_sessionizer.py
"""
import datetime
import decimal
import io
import json
import os
import random
import struct
import threading
import time

import fastavro
from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING

from conftest import ROOT, create_topics, free_port, http_get
from reference.sessions_ref import GAP_MS, LATENESS_MS, BOUND_MS, reference

RAW_PARTITIONS = 4
T0 = 1_700_000_000_000
MIN = 60_000

with open(os.path.join(ROOT, "schemas", "event.avsc")) as f:
    EVENT_SCHEMA = fastavro.parse_schema(json.load(f))
with open(os.path.join(ROOT, "schemas", "session.avsc")) as f:
    SESSION_SCHEMA = fastavro.parse_schema(json.load(f))

URLS = [f"https://shop.example.com/p/{i}" for i in range(40)] + ["https://shop.example.com/"]
TYPES = ["page_view"] * 12 + ["product_view", "product_view", "add_to_cart", "click",
                              "custom:scroll", "purchase"]


def encode_event(ev):
    meta = None
    if ev.get("price_micros") is not None or ev.get("quantity") is not None:
        price = ev.get("price_micros")
        meta = {"product_id": "sku-1", "category": "shoes", "quantity": ev.get("quantity"),
                "price": None if price is None else
                decimal.Decimal(price).scaleb(-6).quantize(decimal.Decimal("0.000001"))}
    rec = {
        "event_id": ev["event_id"], "timestamp": ev["timestamp"],
        "received_at": ev["timestamp"] + 50, "user_id": ev["user_id"],
        "event_type": ev["event_type"], "page_url": ev.get("page_url"),
        "session_id": None, "referrer": None, "user_agent": "test", "ip_address": "10.0.0.0",
        "geo": {"country": ev["country"], "city": None} if ev.get("country") else None,
        "device": {"type": ev["device_type"], "os": None} if ev.get("device_type") else None,
        "is_bot": False, "metadata": meta,
    }
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, EVENT_SCHEMA, rec)
    return b"\x00" + struct.pack(">I", 1) + buf.getvalue()


def generate(seed, users=150, hours=5):
    """[(key, value bytes, event dict or None)] in arrival (production) order."""
    rnd = random.Random(seed)
    items = []  # (arrival, seq, key, event or None)
    seq = 0
    end = T0 + hours * 60 * MIN
    for u in range(users):
        user = f"user-{seed}-{u:04d}"
        device = rnd.choice(["desktop", "mobile", "tablet", None])
        country = rnd.choice(["DE", "FR", "US", None])
        t = T0 + rnd.randint(0, 60 * MIN)
        n = 0
        while t < end:
            for _ in range(rnd.randint(1, 12)):
                etype = rnd.choice(TYPES)
                ev = {"event_id": f"{user}-e{n}", "user_id": user, "timestamp": t,
                      "event_type": etype, "device_type": device, "country": country}
                n += 1
                if etype == "page_view" or rnd.random() < 0.3:
                    ev["page_url"] = rnd.choice(URLS)
                if etype == "purchase":
                    ev["price_micros"] = rnd.randint(1, 50_000) * 10_000
                    ev["quantity"] = rnd.choice([None, 1, 2, 3])
                r = rnd.random()
                if r < 0.04:
                    arrival = t + rnd.randint(60_000, 4 * MIN)       # late, within lateness
                elif r < 0.05:
                    ev["timestamp"] = t - 3 * 60 * MIN               # very late
                    arrival = t
                else:
                    arrival = t + rnd.randint(0, 8_000)               # within the bound
                items.append((arrival, seq, user, ev)); seq += 1
                if rnd.random() < 0.02:                               # duplicate, soon
                    items.append((arrival + rnd.randint(0, 20_000), seq, user, ev)); seq += 1
                if rnd.random() < 0.005:                              # duplicate, past horizon
                    items.append((arrival + 10 * MIN, seq, user, ev)); seq += 1
                step = rnd.choice([rnd.randint(5_000, 12 * MIN), GAP_MS, GAP_MS + 1])
                t += step
            t += rnd.randint(GAP_MS + 1, 3 * 60 * MIN)
        if u % 10 == 0:                                               # garbage
            items.append((T0 + rnd.randint(0, hours * 60 * MIN), seq, user, None)); seq += 1
    items.sort(key=lambda x: (x[0], x[1]))
    out = []
    for _, _, user, ev in items:
        out.append((user, encode_event(ev) if ev else b"\x07garbage", ev))
    # One event per partition far ahead: every partition's watermark passes
    # the end of every generated session.
    for p in range(RAW_PARTITIONS):
        ev = {"event_id": f"flush-{seed}-{p}", "user_id": f"flush-{seed}-{p}",
              "timestamp": end + 24 * 60 * MIN, "event_type": "click"}
        out.append((ev["user_id"], encode_event(ev), ev, p))
    return out


def produce(bootstrap, topic, items, pace_s):
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                  "linger.ms": 5, "partitioner": "murmur2_random"})
    step = max(1, len(items) // 50)
    for i, it in enumerate(items):
        kw = {"partition": it[3]} if len(it) > 3 else {}
        p.produce(topic, key=it[0].encode(), value=it[1], **kw)
        if i % step == 0:
            p.poll(0)
            time.sleep(pace_s / 50)
    assert p.flush(60) == 0


def record_times(bootstrap, topic, partitions):
    """(low watermarks, Kafka timestamps of every record) of a topic."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"times-{topic}",
                  "isolation.level": "read_committed", "enable.partition.eof": True,
                  "enable.auto.commit": False})
    lows = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0]
            for p in range(partitions)]
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    times, eof = [], set()
    deadline = time.time() + 60
    while len(eof) < partitions and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:
                eof.add(m.partition())
            continue
        times.append(m.timestamp()[1])
    c.close()
    return lows, times


def read_all(bootstrap, topic, partitions, timeout=60):
    """Every committed record: [(partition, offset, key, value, headers)]."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}",
                  "isolation.level": "read_committed", "enable.partition.eof": True,
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out, eof = [], set()
    deadline = time.time() + timeout
    while len(eof) < partitions and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                eof.add(m.partition())
            continue
        out.append((m.partition(), m.offset(), m.key(), m.value(), m.headers() or []))
    c.close()
    assert len(eof) == partitions, f"{topic}: no EOF on every partition"
    return out


def wait_caught_up(bootstrap, group, topic, partitions, timeout, procs_alive=()):
    """Until the group's committed offsets reach the end of the input."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            for p in procs_alive:
                assert p.p.poll() is None, f"sessionizer exited: {p.tail()}"
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            ends = [c.get_watermark_offsets(tp, timeout=5)[1] for tp in tps]
            done = c.committed(tps, timeout=5)
            if all(d.offset >= e for d, e in zip(done, ends)):
                return
            time.sleep(0.5)
    finally:
        c.close()
    raise AssertionError("the sessionizer did not consume the whole input in time")


def ms(v):
    if isinstance(v, datetime.datetime):
        return (v - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)) \
            // datetime.timedelta(milliseconds=1)
    return v


def decode_session(value):
    assert value[0] == 0
    r = fastavro.schemaless_reader(io.BytesIO(value[5:]), SESSION_SCHEMA)
    r["start"], r["end"] = ms(r["start"]), ms(r["end"])
    r["revenue_micros"] = int(r.pop("revenue") * 10**6)
    return r


FIELDS = ["session_id", "user_id", "start", "end", "duration_ms", "event_count", "page_views",
          "entry_url", "exit_url", "device_type", "country", "converted", "revenue_micros"]


def final_sessions(recs):
    """The last revision of every session that is not a tombstone, after
    checking that each (session_id, revision) came once and none is missing."""
    seen, last = set(), {}
    for r in recs:
        k = (r["session_id"], r["revision"])
        assert k not in seen, f"session record twice: {k}"
        seen.add(k)
        if r["session_id"] not in last or r["revision"] > last[r["session_id"]]["revision"]:
            last[r["session_id"]] = r
    for sid, r in last.items():  # no revision lost
        revs = sorted(rv for s, rv in seen if s == sid)
        assert revs == list(range(len(revs))), f"{sid}: revisions {revs}"
    return {sid: {f: r[f] for f in FIELDS} for sid, r in last.items() if not r["tombstone"]}


def check_outputs(stack, t, raw_items_by_value):
    """Compares the run's outputs with the reference; returns the reference."""
    bs = stack["KAFKA_BOOTSTRAP"]
    raw = read_all(bs, t["raw"], RAW_PARTITIONS)
    parts = {}
    for p, _, _, value, _ in sorted(raw, key=lambda r: (r[0], r[1])):
        parts.setdefault(p, []).append(raw_items_by_value.get(value))
    ref = reference(parts)
    flush_users = {f"flush-{t['seed']}-{p}" for p in range(RAW_PARTITIONS)}
    want = {sid: s for sid, s in ref["sessions"].items() if s["user_id"] not in flush_users}

    # Sessions closed by the idle rule (SPEC §3: a partition silent for the
    # idle timeout, 30 s, stops holding the watermark back) are emitted from
    # the timer, after the input offsets are committed: wait past that
    # timeout for them before comparing. Equality is still required.
    deadline = time.time() + 45
    while True:
        all_recs = [decode_session(r[3]) for r in read_all(bs, t["sessions"], 3)]
        got = final_sessions(all_recs)
        if set(want) <= set(got) or time.time() > deadline:
            break
        time.sleep(2)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing or extra:
        user_part = {}
        for p, _, key, _, _ in raw:
            user_part[key.decode() if key else None] = p
        print(f"flush events at {ref.get('flush_ts')}")
        for sid in missing[:10]:
            s = want[sid]
            print(f"missing {sid} user {s['user_id']} partition {user_part.get(s['user_id'])} "
                  f"start {s['start']} end {s['end']} events {s['event_count']}")
            for r in all_recs:
                if r["user_id"] == s["user_id"]:
                    print(f"  out {r['session_id']} rev {r['revision']} tomb {r['tombstone']} "
                          f"start {r['start']} end {r['end']} events {r['event_count']}")
        for sid in extra[:10]:
            s = got[sid]
            print(f"extra {sid} user {s['user_id']} start {s['start']} end {s['end']} "
                  f"events {s['event_count']}")
    assert not missing and not extra, \
        f"missing {len(missing)} {missing[:3]}, extra {len(extra)} {extra[:3]}"
    for sid in want:
        assert got[sid] == {f: want[sid][f] for f in FIELDS}, sid

    # Session records carry their produce time, not the session's event
    # time: a record stamped with a day older than the topic's retention.ms
    # is deleted by the broker's next retention check (the generated days
    # are in 2023). Nothing may have been deleted.
    lows, times = record_times(bs, t["sessions"], 3)
    assert lows == [0, 0, 0], f"records deleted from the sessions topic: low watermarks {lows}"
    assert min(times) >= t["started_ms"] - 5000, \
        f"a session record is stamped {min(times)}, before the test started ({t['started_ms']})"

    late = read_all(bs, t["late"], 1)
    reasons = {}
    late_ids = set()
    for _, _, _, value, headers in late:
        reason = dict(headers).get("reason", b"").decode()
        reasons[reason] = reasons.get(reason, 0) + 1
        if reason == "late":
            late_ids.add(raw_items_by_value[value]["event_id"])
    assert late_ids == ref["late"]
    assert reasons.get("undecodable", 0) == ref["undecodable"]
    assert len(want) > 300 and len(ref["late"]) >= 5 and ref["duplicates"] >= 5
    ref["late_records"] = len(late)
    return ref



def setup_topics(stack, unique, seed):
    t = {"raw": f"sz-raw-{unique}", "sessions": f"sz-sessions-{unique}",
         "late": f"sz-late-{unique}", "changelog": f"sz-changelog-{unique}",
         "group": f"sz-group-{unique}", "seed": seed, "started_ms": int(time.time() * 1000)}
    create_topics(stack, f"{t['raw']}:{RAW_PARTITIONS}", f"{t['sessions']}:3", f"{t['late']}:1")
    return t


def env_for(stack, t, txid):
    return {"KAFKA_BOOTSTRAP": stack["KAFKA_BOOTSTRAP"], "TOPIC_RAW": t["raw"],
            "TOPIC_SESSIONS": t["sessions"], "TOPIC_LATE": t["late"],
            "SESSIONIZER_CHANGELOG_TOPIC": t["changelog"], "SESSIONIZER_GROUP_ID": t["group"],
            "SESSIONIZER_TRANSACTIONAL_ID": txid, "ADMIN_PORT": str(free_port()),
            "ADMIN_ADDR": "127.0.0.1", "RDKAFKA_SESSION_TIMEOUT_MS": "6000",
            "LOG_LEVEL": "info"}


def start_stream(stack, t, pace_s):
    items = generate(t["seed"])
    by_value = {it[1]: it[2] for it in items}
    th = threading.Thread(target=produce, args=(stack["KAFKA_BOOTSTRAP"], t["raw"], items,
                                                pace_s), daemon=True)
    th.start()
    return th, by_value


def metric(port, name):
    code, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_sessions_equal_reference(stack, procs, unique):
    t = setup_topics(stack, unique, seed=1)
    env = env_for(stack, t, f"sz-{unique}")
    p = procs("sessionizer", env)
    port = env["ADMIN_PORT"]
    p.wait_http(f"http://127.0.0.1:{port}/healthz")
    th, by_value = start_stream(stack, t, pace_s=3)
    p.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60)
    th.join()
    wait_caught_up(stack["KAFKA_BOOTSTRAP"], t["group"], t["raw"], RAW_PARTITIONS, 90, [p])
    ref = check_outputs(stack, t, by_value)
    assert metric(port, "sessionizer_late_total") == ref["late_records"]
    assert metric(port, "sessionizer_duplicates_total") == ref["duplicates"]
    assert metric(port, "sessionizer_state_bytes") > 0
    # caught up: nothing left to read (the figure is refreshed each second)
    deadline = time.time() + 5
    while metric(port, "sessionizer_consumer_lag_records") != 0 and time.time() < deadline:
        time.sleep(0.2)
    assert metric(port, "sessionizer_consumer_lag_records") == 0
    assert p.term() == 0


def test_kill9_during_run(stack, procs, unique):
    t = setup_topics(stack, unique, seed=2)
    env = env_for(stack, t, f"sz-{unique}")
    rnd = random.Random(7)
    p = procs("sessionizer", env)
    th, by_value = start_stream(stack, t, pace_s=12)
    for _ in range(3):
        time.sleep(rnd.uniform(1.5, 4.0))
        p.kill9()
        p = procs("sessionizer", env)  # same transactional id: fences the dead one
    th.join()
    wait_caught_up(stack["KAFKA_BOOTSTRAP"], t["group"], t["raw"], RAW_PARTITIONS, 120, [p])
    check_outputs(stack, t, by_value)
    assert p.term() == 0


def test_scale_1_3_1(stack, procs, unique):
    t = setup_topics(stack, unique, seed=3)
    a = procs("sessionizer", env_for(stack, t, f"sz-{unique}-a"))
    th, by_value = start_stream(stack, t, pace_s=12)
    time.sleep(3)
    b = procs("sessionizer", env_for(stack, t, f"sz-{unique}-b"))
    c = procs("sessionizer", env_for(stack, t, f"sz-{unique}-c"))
    time.sleep(5)
    assert b.term() == 0
    assert c.term() == 0
    th.join()
    wait_caught_up(stack["KAFKA_BOOTSTRAP"], t["group"], t["raw"], RAW_PARTITIONS, 120, [a])
    check_outputs(stack, t, by_value)
    assert a.term() == 0
