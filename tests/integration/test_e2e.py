"""End to end, short variant: the load generator posts a reproducible stream
(duplicates, out-of-order, late and invalid events) through the real ingest
gateway into Kafka; the sessionizer runs on what lands there. Then every
sink is compared with a reference computed independently of the services:

  * the raw topic holds every valid event the generator sent, exactly once
    per send, decoded by fastavro and equal to what was sent (the generator's
    own NDJSON record of the stream), and no invalid one;
  * the sessions topic's final revisions equal the batch reference of
    reference/sessions_ref.py over what the raw topic holds;
  * the late topic holds exactly the reference's late events.

A last "flush" event per raw partition, hours after the stream in event
time, moves every partition's watermark far enough that all sessions of the
stream are final, so the comparison covers all of them.

The long variant with faults is `make e2e-long` (scripts/e2e-long.sh).
"""
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections import Counter

import pytest

from conftest import bin_path, create_topics, http_get
from reference.sessions_ref import reference
from test_sessionizer import FIELDS, decode_session, final_sessions, read_all, wait_caught_up
from test_sessionizer import EVENT_SCHEMA  # noqa: F401  (same schema file)

import fastavro
import io

RAW_PARTITIONS = 12
COUNT = int(os.environ.get("E2E_EVENTS", "20000"))
SEED = int(os.environ.get("E2E_SEED", "20261122"))
HOUR = 3_600_000
MUT = json.loads(os.environ.get("E2E_MUTATE_SZ", "{}"))  # fault injection for checking the test itself


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def murmur2(data: bytes) -> int:
    """Kafka's Java partitioner hash (librdkafka's murmur2_random agrees)."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    i = 0
    while length - i >= 4:
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
        i += 4
    rest = length - i
    if rest == 3:
        h ^= data[i + 2] << 16
    if rest >= 2:
        h ^= data[i + 1] << 8
    if rest >= 1:
        h ^= data[i]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_of(key: str, n: int) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % n


def flush_users(n):
    """One user id per partition."""
    users, i = {}, 0
    while len(users) < n:
        u = f"flush-{i}"
        users.setdefault(partition_of(u, n), u)
        i += 1
    return [users[p] for p in range(n)]


def post(url, events):
    req = urllib.request.Request(url, data=json.dumps(events).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read())


def raw_dict(ev):
    """A fastavro-decoded raw event as the reference wants it."""
    md = ev.get("metadata") or {}
    price = md.get("price")
    return {
        "event_id": ev["event_id"],
        "timestamp": int(ev["timestamp"].timestamp() * 1000 + 0.5)
        if hasattr(ev["timestamp"], "timestamp") else ev["timestamp"],
        "user_id": ev["user_id"],
        "event_type": ev["event_type"],
        "page_url": ev.get("page_url"),
        "price_micros": None if price is None else int(price * 10**6),
        "quantity": md.get("quantity"),
        "device_type": (ev.get("device") or {}).get("type"),
        "country": (ev.get("geo") or {}).get("country"),
    }


@pytest.fixture
def e2e(stack, procs, unique, tmp_path):
    t = {"raw": f"e2e-raw-{unique}", "sessions": f"e2e-sessions-{unique}",
         "late": f"e2e-late-{unique}", "group": f"e2e-sz-{unique}"}
    create_topics(stack, f"{t['raw']}:{RAW_PARTITIONS}", f"{t['sessions']}:3", f"{t['late']}:1")
    bs = stack["KAFKA_BOOTSTRAP"]
    gw_port = free_port()
    gw = procs("ingest-gateway", {"KAFKA_BOOTSTRAP": bs, "GATEWAY_ADDR": "127.0.0.1",
                                  "GATEWAY_PORT": gw_port, "GATEWAY_AUTH": "off",
                                  "GATEWAY_TOPIC": t["raw"]})
    gw.wait_http(f"http://127.0.0.1:{gw_port}/readyz", timeout=60)
    sz_port = free_port()
    sz = procs("sessionizer", {"KAFKA_BOOTSTRAP": bs, "TOPIC_RAW": t["raw"],
                               "TOPIC_SESSIONS": t["sessions"], "TOPIC_LATE": t["late"],
                               "SESSIONIZER_CHANGELOG_TOPIC": f"e2e-sz-changelog-{unique}",
                               "SESSIONIZER_GROUP_ID": t["group"],
                               "SESSIONIZER_TRANSACTIONAL_ID": f"e2e-sz-{unique}",
                               "ADMIN_ADDR": "127.0.0.1", "ADMIN_PORT": sz_port, **MUT})
    sz.wait_http(f"http://127.0.0.1:{sz_port}/readyz", timeout=90)
    t.update(gw=gw, sz=sz, gw_url=f"http://127.0.0.1:{gw_port}/v1/events", dir=tmp_path)
    return t


def test_pipeline_equals_reference(stack, e2e):
    bs = stack["KAFKA_BOOTSTRAP"]
    lg = [bin_path("cs-loadgen"), "--count", str(COUNT), "--users", "400", "--seed", str(SEED),
          "--gap-ms", "600000", "--dup", "0.02", "--ooo", "0.05", "--late", "0.01",
          "--invalid", "0.02"]
    span = int(subprocess.run(lg + ["--print-span"], capture_output=True, text=True,
                              check=True).stdout.strip())
    # The stream ends 3 h before now, so that the flush events (2 h after
    # it) are still in the gateway's past.
    start = int(time.time() * 1000) - span - 3 * HOUR
    out = e2e["dir"] / "stream.ndjson"
    r = subprocess.run(lg + ["--start", str(start), "--url", e2e["gw_url"], "--out", str(out),
                             "--progress", "0", "--concurrency", "4", "--batch", "50",
                             "--summary", str(e2e["dir"] / "summary.json")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    sent = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(sent) == COUNT
    kinds = Counter(e["_lg"]["kind"] for e in sent)
    assert all(kinds[k] > 0 for k in ("ok", "dup", "ooo", "late", "invalid")), kinds

    max_ts = max(e["timestamp"] for e in sent if e["_lg"]["kind"] != "invalid"
                 and isinstance(e.get("timestamp"), int))
    flush = [{"event_id": f"flush-{SEED}-{i}", "user_id": u, "event_type": "click",
              "timestamp": max_ts + 2 * HOUR} for i, u in enumerate(flush_users(RAW_PARTITIONS))]
    code, body = post(e2e["gw_url"], flush)
    assert code == 202 and body["accepted"] == RAW_PARTITIONS, body

    # 1. The raw topic: every valid send exactly once, nothing invalid.
    raw = read_all(bs, e2e["raw"], RAW_PARTITIONS)
    decoded = {}
    for p, off, key, value, _ in raw:
        assert value[0] == 0 and int.from_bytes(value[1:5], "big") == 1
        ev = fastavro.schemaless_reader(io.BytesIO(value[5:]), EVENT_SCHEMA)
        assert key.decode() == ev["user_id"]
        assert partition_of(ev["user_id"], RAW_PARTITIONS) == p
        decoded[(p, off)] = ev
    got_ids = Counter(ev["event_id"] for ev in decoded.values())
    want_ids = Counter(e["event_id"] for e in sent if e["_lg"]["kind"] != "invalid")
    want_ids.update(f["event_id"] for f in flush)
    assert got_ids == want_ids, (
        f"raw differs: missing {list((want_ids - got_ids).items())[:5]}, "
        f"extra {list((got_ids - want_ids).items())[:5]}")
    by_id = {e["event_id"]: e for e in sent if e["_lg"]["kind"] != "invalid"}
    for ev in decoded.values():
        s = by_id.get(ev["event_id"])
        if s is None:
            continue
        assert ev["user_id"] == s["user_id"] and ev["event_type"] == s["event_type"]
        ts = raw_dict(ev)["timestamp"]
        assert ts == s["timestamp"] or isinstance(s["timestamp"], str), (ev, s)
        assert ev.get("page_url") == s.get("page_url")
        ip = ev.get("ip_address")
        assert ip is None or ip.endswith(".0") or ip.endswith("::"), ip  # anonymised

    # 2. Sessions and late events against the batch reference over raw.
    wait_caught_up(bs, e2e["group"], e2e["raw"], RAW_PARTITIONS, 180, [e2e["sz"]])
    parts = {}
    for (p, off) in sorted(decoded):
        parts.setdefault(p, []).append(raw_dict(decoded[(p, off)]))
    ref = reference(parts)
    flush_ids = set(flush_users(RAW_PARTITIONS))
    want = {sid: s for sid, s in ref["sessions"].items() if s["user_id"] not in flush_ids}
    got = final_sessions(decode_session(r[3]) for r in read_all(bs, e2e["sessions"], 3))
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, (
        f"sessions differ: {len(missing)} missing {missing[:3]}, {len(extra)} extra {extra[:3]}")
    diffs = [sid for sid in want if got[sid] != {f: want[sid][f] for f in FIELDS}]
    assert not diffs, f"{len(diffs)} sessions differ, e.g. {got[diffs[0]]} vs {want[diffs[0]]}"
    assert len(want) > 500, len(want)

    late_ids = set()
    for _, _, _, value, headers in read_all(bs, e2e["late"], 1):
        if dict(headers).get("reason", b"").decode() == "late":
            ev = fastavro.schemaless_reader(io.BytesIO(value[5:]), EVENT_SCHEMA)
            late_ids.add(ev["event_id"])
    assert late_ids == ref["late"], (
        f"late differs: {len(ref['late'] - late_ids)} missing, {len(late_ids - ref['late'])} extra")

    # The gateway's own counters agree with what the generator saw.
    summary = json.loads((e2e["dir"] / "summary.json").read_text())
    code, metrics = http_get(e2e["gw_url"].replace("/v1/events", "/metrics"))
    assert code == 200
    accepted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith("gateway_events_accepted_total"))
    assert accepted == sum(want_ids.values()), (accepted, summary)
