"""The aggregator against a real Kafka broker and Redis, checked against an
independent batch reference (reference/windows_ref.py):

- exact counts for every window (1 min, 5 min, 1 h) and every dimension,
  unique users within the HyperLogLog error, exact top 100 URLs, on the
  metrics topic (latest revision of each key) AND in Redis (merged reader);
- each metrics key's revisions are 0, 1, 2, ... with no repeat (exactly once);
- late events on the late topic exactly once, with reason=late;
- the same with kill -9 in the middle of the run, and with 2 replicas;
- Redis down: not ready, then back (empty) with the windows rewritten.
"""
import decimal
import io
import json
import os
import random
import struct
import subprocess
import sys
import time
import zlib

import fastavro
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import ROOT, create_topics, free_port, http_get

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "reference"))
import windows_ref  # noqa: E402

SCHEMAS = os.path.join(ROOT, "schemas")
LUA = os.path.join(ROOT, "services", "aggregator", "aggregator_read.lua")
T0 = 1700002800000  # a whole hour (UTC)
N_RAW, N_SES = 4, 2


def _schema(name):
    with open(os.path.join(SCHEMAS, name)) as f:
        return fastavro.parse_schema(json.load(f))


EVENT_SCHEMA = _schema("event.avsc")
SESSION_SCHEMA = _schema("session.avsc")
RESULT_SCHEMA = _schema("window_result.avsc")


def frame(schema_id, schema, rec):
    b = io.BytesIO()
    b.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(b, schema, rec)
    return b.getvalue()



# ------------------------------------------------------------------ data

URLS = [f"https://shop.example/p/{i}" for i in range(400)]
CATS = ["shoes", "books", "toys", "garden", "music", "food"]
DEVICES = ["desktop", "mobile", "tablet", "bot", "other"]
COUNTRIES = ["DE", "FR", "US", "GB", "JP", "BR", "IN"]
TYPES = ["page_view"] * 6 + ["product_view"] * 2 + ["add_to_cart", "click", "purchase",
                                                    "custom:scroll"]


def gen_stream(seed, minutes=14, n_users=1500, per_min=1800, sentinel_ms=3 * 3600000):
    """Deterministic events and sessions, per partition, in production
    order, with out-of-order events, duplicates, late events (some within
    lateness after the window was final: revisions), revisions and
    tombstones of sessions. Returns (raw, sessions, t_end)."""
    rnd = random.Random(seed)
    raw = [[] for _ in range(N_RAW)]
    ses = [[] for _ in range(N_SES)]
    users = [f"user-{seed}-{i}" for i in range(n_users)]
    part = lambda u, n: zlib.crc32(u.encode()) % n  # noqa: E731
    n = minutes * per_min
    t_end = T0 + minutes * 60000
    sent = []
    for i in range(n):
        base = T0 + i * (minutes * 60000) // n
        u = users[int(rnd.paretovariate(1.2) * 7) % n_users]
        r = rnd.random()
        if r < 0.01 and sent:
            ev = dict(rnd.choice(sent[-200:]))  # a duplicate, same partition
        else:
            ts = base + rnd.randint(-15000, 2000)
            if r > 0.992:
                ts = base - rnd.randint(6 * 60000, 9 * 60000)  # very late
            elif r > 0.98:
                ts = base - rnd.randint(70000, 240000)  # late but within lateness
            et = rnd.choice(TYPES)
            md = None
            if et in ("product_view", "add_to_cart", "purchase") or rnd.random() < 0.2:
                md = {"product_id": f"prod-{rnd.randint(1, 50)}",
                      "category": rnd.choice(CATS) if rnd.random() < 0.9 else None,
                      "quantity": rnd.choice([None, 1, 2, 3]),
                      "price": None}
                if et == "purchase":
                    md["price"] = decimal.Decimal(f"{rnd.randint(1, 50000)}.{rnd.randint(0, 99):02d}")
            url = None
            if et == "page_view" or rnd.random() < 0.5:
                url = URLS[min(int(rnd.paretovariate(0.9)) - 1, len(URLS) - 1)]
            ev = {
                "event_id": f"ev-{seed}-{i}",
                "timestamp": ts,
                "received_at": base,
                "user_id": u,
                "event_type": et,
                "page_url": url,
                "session_id": None, "referrer": None, "user_agent": None,
                "ip_address": "10.0.0.0",
                "geo": {"country": rnd.choice(COUNTRIES), "city": None} if rnd.random() < 0.9 else None,
                "device": {"type": rnd.choice(DEVICES), "os": None} if rnd.random() < 0.95 else None,
                "is_bot": False,
                "metadata": md,
            }
            sent.append(ev)
        raw[part(ev["user_id"], N_RAW)].append(ev)
    # sessions: ends spread over the run, some revised, some tombstoned
    for j in range(900):
        end = T0 + j * (minutes * 60000) // 900 + rnd.randint(-8000, 0)
        u = users[rnd.randrange(n_users)]
        dur = rnd.randint(0, 1800000)
        s = {"session_id": f"s-{seed}-{j}", "user_id": u, "start": end - dur, "end": end,
             "duration_ms": dur, "event_count": rnd.randint(1, 30),
             "page_views": rnd.choice([1, 1, 2, 3, 5]), "entry_url": None, "exit_url": None,
             "device_type": None, "country": None, "converted": rnd.random() < 0.2,
             "revenue": decimal.Decimal("0"), "revision": 0, "tombstone": False}
        p = part(u, N_SES)
        ses[p].append(s)
        if rnd.random() < 0.1:
            r1 = dict(s, revision=1, end=end + rnd.randint(0, 90000), page_views=s["page_views"] + 1)
            r1["duration_ms"] = r1["end"] - r1["start"]
            ses[p].append(r1)
            if rnd.random() < 0.3:
                ses[p].append(dict(r1))  # a replayed copy of the revision
        elif rnd.random() < 0.03:
            ses[p].append(dict(s, revision=1, tombstone=True))
    # sentinels: push every partition's watermark far ahead
    for p in range(N_RAW):
        raw[p].append({"event_id": f"sentinel-{seed}-{p}", "timestamp": t_end + sentinel_ms,
                       "received_at": t_end, "user_id": f"sentinel-{p}", "event_type": "click",
                       "page_url": None, "session_id": None, "referrer": None, "user_agent": None,
                       "ip_address": None, "geo": None, "device": None, "is_bot": False,
                       "metadata": None})
    for p in range(N_SES):
        e = t_end + sentinel_ms
        ses[p].append({"session_id": f"sentinel-s-{seed}-{p}", "user_id": f"sentinel-{p}",
                       "start": e, "end": e, "duration_ms": 0, "event_count": 1,
                       "page_views": 1, "entry_url": None, "exit_url": None,
                       "device_type": None, "country": None, "converted": False,
                       "revenue": decimal.Decimal("0"), "revision": 0, "tombstone": False})
    return raw, ses, t_end


def ref_input(raw, ses):
    def conv(ev):
        if ev is None:
            return None
        e = dict(ev)
        if e.get("metadata") and e["metadata"].get("price") is not None:
            e["metadata"] = dict(e["metadata"], price=str(e["metadata"]["price"]))
        return e
    return [[conv(e) for e in p] for p in raw], ses


# ---------------------------------------------------------------- kafka

def produce(stack, topic, parts, kind, lo=0.0, hi=1.0, garbage=False):
    """Produces the slice [lo, hi) of every partition's list."""
    p = Producer({"bootstrap.servers": stack["KAFKA_BOOTSTRAP"], "enable.idempotence": True,
                  "linger.ms": 20})
    schema_id, schema = (1, EVENT_SCHEMA) if kind == "event" else (2, SESSION_SCHEMA)
    for i, recs in enumerate(parts):
        a, b = int(len(recs) * lo), int(len(recs) * hi)
        if garbage and i == 0:
            p.produce(topic, key=b"junk", value=b"\x00\x00\x00\x00\x01garbage", partition=i)
        for r in recs[a:b]:
            if r is None:  # an undecodable record in the middle of the stream
                p.produce(topic, key=b"junk", value=b"\x00\x00\x00\x00\x01bad", partition=i)
                continue
            p.produce(topic, key=r["user_id"].encode(), value=frame(schema_id, schema, r),
                      partition=i)
            p.poll(0)
    assert p.flush(30) == 0


def consume_all(stack, topic, idle_s=2.0, timeout=30):
    c = Consumer({"bootstrap.servers": stack["KAFKA_BOOTSTRAP"], "group.id": "t-" + topic + str(time.time()),
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    out, last, deadline = [], time.time(), time.time() + timeout
    while time.time() < deadline and time.time() - last < idle_s:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        out.append(m)
        last = time.time()
    c.close()
    return out


def decode_result(v):
    assert v[0] == 0 and struct.unpack(">I", v[1:5])[0] == 3
    return fastavro.schemaless_reader(io.BytesIO(v[5:]), RESULT_SCHEMA)


# ------------------------------------------------------------ service

def start_agg(procs, stack, t, instance, redis_port=None, **extra):
    port = free_port()
    env = {
        "KAFKA_BOOTSTRAP": stack["KAFKA_BOOTSTRAP"],
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_port or stack["REDIS_PORT"]),
        "TOPIC_RAW": t["raw"], "TOPIC_SESSIONS": t["ses"], "TOPIC_METRICS": t["metrics"],
        "TOPIC_LATE": t["late"], "AGGREGATOR_CHANGELOG_TOPIC": t["changelog"],
        "AGGREGATOR_PANES_TOPIC": t["panes"], "AGGREGATOR_GROUP_ID": t["group"],
        "AGGREGATOR_INSTANCE_ID": instance, "AGGREGATOR_REDIS_PREFIX": t["prefix"],
        "AGGREGATOR_ADMIN_PORT": str(port), "AGGREGATOR_IDLE_TIMEOUT": "3s",
        "AGGREGATOR_REDIS_RETRY": "200ms", "LOG_LEVEL": "info",
    }
    env.update(extra)
    p = procs("aggregator", env)
    p.admin = f"http://127.0.0.1:{port}"
    p.wait_http(p.admin + "/healthz", timeout=30)
    return p


def topics_for(stack, unique):
    t = {k: f"ag.{k}.{unique}" for k in ("raw", "ses", "metrics", "late", "changelog", "panes")}
    t["group"] = f"ag-{unique}"
    t["prefix"] = f"t:{unique}"
    create_topics(stack, f"{t['raw']}:{N_RAW}", f"{t['ses']}:{N_SES}", f"{t['metrics']}:2",
                  f"{t['late']}:1", f"{t['changelog']}:{N_RAW}:compact", f"{t['panes']}:1")
    return t


def expected_windows(W, t_end):
    return {k: w for k, w in W.items() if k[1] + k[0] <= t_end + 3600000 and k[1] < t_end + 3600000}


def wait_results(stack, t, want, timeout=90):
    """Latest record per key once every expected key is there; also checks
    that each key's revisions are 0, 1, 2, ... (no duplicate)."""
    deadline = time.time() + timeout
    c = Consumer({"bootstrap.servers": stack["KAFKA_BOOTSTRAP"], "group.id": f"t-{time.time()}",
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                  "enable.auto.commit": False})
    c.subscribe([t["metrics"]])
    latest, revs = {}, {}
    need = {f"{s}/{st}/{d}" for (s, st) in want for d in ("total",) + windows_ref.DIMS}
    quiet_since = None
    while time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            k = m.key().decode()
            r = decode_result(m.value())
            revs.setdefault(k, []).append(r["revision"])
            latest[k] = r
            quiet_since = None
            continue
        if need <= set(latest):
            quiet_since = quiet_since or time.time()
            if time.time() - quiet_since > 3:
                break
    c.close()
    missing = need - set(latest)
    assert not missing, f"{len(missing)} results missing, e.g. {sorted(missing)[:5]}"
    for k, rs in revs.items():
        assert rs == list(range(len(rs))), f"{k}: revisions {rs} (duplicate or gap)"
    return latest


def check_result(key, got, w, exact_users_tol=0.025):
    exp = w.result()
    for f in ("events", "page_views", "purchases", "sessions_closed"):
        assert got[f] == exp[f], f"{key} {f}: {got[f]} != {exp[f]}"
    rev = got["revenue"]
    rev_micros = int(rev * 1000000) if isinstance(rev, decimal.Decimal) else int(rev)
    assert rev_micros == exp["revenue_micros"], f"{key} revenue {rev} != {exp['revenue_micros']}"
    n = exp["unique_users"]
    assert abs(got["unique_users"] - n) <= max(1, exact_users_tol * n), \
        f"{key} unique_users {got['unique_users']} vs exact {n}"
    for f in ("avg_session_ms", "bounce_rate", "conversion_rate"):
        assert abs(got[f] - exp[f]) < 1e-6, f"{key} {f}: {got[f]} != {exp[f]}"


def check_metrics(latest, W):
    for (size, start), w in W.items():
        base = f"{size}/{start}"
        tot = latest[f"{base}/total"]
        assert tot["final"] is True
        check_result(base, tot, w)
        exp = w.result()
        assert [(u["url"], u["count"]) for u in tot["top_urls"]] == exp["top_urls"], \
            f"{base}: top urls differ"
        for d in windows_ref.DIMS:
            got = latest[f"{base}/{d}"]["counts"]
            assert got == exp["counts"][d], f"{base}/{d}: counts differ"


def check_redis(rport, prefix, W, only_size=60000):
    r = redis.Redis(host="127.0.0.1", port=int(rport))
    with open(LUA) as f:
        lua = r.register_script(f.read())
    n = 0
    for (size, start), w in W.items():
        if size != only_size:
            continue
        got = json.loads(lua(args=[prefix, size, start, 100]))
        exp = w.result()
        for f in ("events", "page_views", "purchases", "sessions_closed", "revenue_micros",
                  "late"):
            assert got[f] == exp[f], f"redis {size}/{start} {f}: {got[f]} != {exp[f]}"
        nu = exp["unique_users"]
        assert abs(got["unique_users"] - nu) <= max(1, 0.025 * nu)
        tops = [(x["url"], x["count"]) for x in (got["top_urls"] or [])]
        assert tops == exp["top_urls"], f"redis {size}/{start}: top urls differ"
        for d in windows_ref.DIMS:
            assert (got["counts"].get(d) or {}) == exp["counts"][d], f"redis {size}/{start}/{d}"
        n += 1
    assert n > 0
    return n


def late_records(stack, t):
    msgs = consume_all(stack, t["late"], idle_s=2)
    out = {}
    for m in msgs:
        h = dict(m.headers() or [])
        out.setdefault(h.get("reason", b"").decode(), []).append(m)
    return out


def run_scenario(stack, procs, unique, mode):
    t = topics_for(stack, unique)
    raw, ses, t_end = gen_stream(seed={"plain": 1, "kill9": 2, "replicas": 3}[mode])
    raw[1].insert(int(len(raw[1]) * 0.6), None)
    W, stats = windows_ref.compute(*ref_input(raw, ses))
    want = expected_windows(W, t_end)

    produce(stack, t["ses"], ses, "session", 0, 0.5)
    produce(stack, t["raw"], raw, "event", 0, 0.5, garbage=True)
    aggs = [start_agg(procs, stack, t, f"{unique}-a")]
    if mode == "replicas":
        aggs.append(start_agg(procs, stack, t, f"{unique}-b"))
    time.sleep(3)
    produce(stack, t["raw"], raw, "event", 0.5, 0.8)
    produce(stack, t["ses"], ses, "session", 0.5, 0.8)
    if mode == "kill9":
        time.sleep(0.3)
        aggs[0].kill9()
        aggs[0] = start_agg(procs, stack, t, f"{unique}-a")
    produce(stack, t["raw"], raw, "event", 0.8, 1.0)
    produce(stack, t["ses"], ses, "session", 0.8, 1.0)

    latest = wait_results(stack, t, want)
    check_metrics(latest, want)
    check_redis(stack["REDIS_PORT"], t["prefix"], want)
    late = late_records(stack, t)
    assert len(late.get("late", [])) == stats["late"], \
        f"late topic has {len(late.get('late', []))}, reference {stats['late']}"
    assert len(late.get("undecodable", [])) == 1 + stats["undecodable"]
    for a in aggs:
        code, body = http_get(a.admin + "/metrics")
        assert code == 200 and "aggregator_redis_write_seconds" in body
        assert a.term(timeout=10) == 0, a.tail()  # SPEC §8: exit 0 within 10 s
    return stats


def test_windows_exact(stack, procs, unique):
    stats = run_scenario(stack, procs, unique, "plain")
    assert stats["late"] > 0 and stats["duplicate"] > 0


def test_windows_exact_kill9(stack, procs, unique):
    run_scenario(stack, procs, unique, "kill9")


def test_windows_exact_two_replicas(stack, procs, unique):
    run_scenario(stack, procs, unique, "replicas")


def test_redis_down_and_back_empty(stack, procs, unique, tmp_path):
    """Redis stops: /readyz says not ready; Redis comes back EMPTY: every
    window kept in memory is rewritten (the open ones from state, the closed
    ones from the copies kept for their TTL)."""
    rport = free_port()

    def redis_up():
        p = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                redis.Redis(port=rport).ping()
                return p
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("redis did not start")

    rs = redis_up()
    try:
        t = topics_for(stack, unique)
        # the sentinels move the watermark 20 min on: the 1-min windows are
        # closed but still within the hour they are kept for
        raw, ses, t_end = gen_stream(seed=7, minutes=4, per_min=1000, sentinel_ms=20 * 60000)
        W, _ = windows_ref.compute(*ref_input(raw, ses))
        want = {k: w for k, w in W.items() if k[0] == 60000 and k[1] < t_end}
        produce(stack, t["ses"], ses, "session")
        produce(stack, t["raw"], raw, "event")
        a = start_agg(procs, stack, t, f"{unique}-a", redis_port=rport)
        a.wait_http(a.admin + "/readyz", timeout=30)
        wait_results(stack, t, want)
        check_redis(rport, t["prefix"], want)
        rs.kill()
        rs.wait()
        a.wait_http(a.admin + "/readyz", want=503, timeout=10)
        rs = redis_up()  # empty
        a.wait_http(a.admin + "/readyz", timeout=15)
        deadline = time.time() + 10
        while True:
            try:
                check_redis(rport, t["prefix"], want)
                break
            except AssertionError:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        assert a.term(timeout=10) == 0
    finally:
        rs.kill()
        rs.wait()
