"""The whole pipeline end to end, shared by test_e2e.py, test_e2e_faults.py
and `make e2e-long`.

cs-loadgen posts a reproducible stream (duplicates, out-of-order, late and
invalid events) to the real ingest gateway; the sessionizer, the aggregator
and the lake-writer run on what lands in Kafka, as real processes, possibly
several of each, killed and restarted, while the broker restarts, Redis goes
away or the warehouse disk fills. Afterwards every sink is compared with the
independent references of reference/, computed from what the raw topic
holds (itself compared with what the generator sent):

  raw topic        every valid event sent, exactly once per send, unchanged
  sessions topic   exactly once per (session_id, revision); the final
                   revisions equal reference/sessions_ref.py
  late topic       the sessionizer's and the aggregator's late events, each
                   exactly as often as its reference says
  metrics topic    latest revision of every (size, start, dimension) equal to
                   reference/windows_ref.py, revisions 0, 1, 2... once each
  Redis            every window read with aggregator_read.lua equal to
                   reference/windows_ref.py
  lake             each Iceberg table (read with pyiceberg + fastavro) holds
                   its topic's records exactly once, unchanged, and its final
                   values equal the references

unique_users is compared within the HyperLogLog error; everything else
exactly. A comparison yields a Diff (counts of missing / extra / different
entries with a few examples); nothing is asserted until every sink has been
compared, so a failure shows the whole picture.
"""
import datetime
import decimal
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter, defaultdict

import fastavro
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING

from conftest import (ARTIFACTS, ROOT, Proc, bin_path, create_topics, free_port, http_get,
                      read_env)
from reference import sessions_ref
from test_aggregator import LUA, decode_result
from test_lake_writer import current_metadata, pyiceberg_rows, total_records
from test_sessionizer import EVENT_SCHEMA, FIELDS, decode_session

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "reference"))
import windows_ref  # noqa: E402  (the module test_aggregator uses)

HOUR = 3_600_000
DAY = 24 * HOUR
SIZES = windows_ref.SIZES
DIMS = windows_ref.DIMS
KEEP_MS = {60000: HOUR, 300000: 6 * HOUR, 3600000: 48 * HOUR}  # SPEC §6
LAKE_TABLES = {"events_raw": "raw", "sessions": "sessions", "metrics_1min": "metrics",
               "metrics_5min": "metrics", "metrics_hourly": "metrics", "late_events": "late"}
METRICS_TABLE = {60000: "metrics_1min", 300000: "metrics_5min", 3600000: "metrics_hourly"}
STACK_SH = os.path.join(ROOT, "scripts", "stack.sh")


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


# ------------------------------------------------------------ partitioning

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


def post(url, events, attempts=60):
    """POSTs a JSON array; retries 503 (broker away) for a while."""
    body = json.dumps(events).encode()
    for i in range(attempts):
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=40) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code != 503 or i == attempts - 1:
                return e.code, json.loads(e.read() or b"{}")
        except OSError:
            if i == attempts - 1:
                raise
        time.sleep(1)


# ---------------------------------------------------------------- decoding

def ms(v):
    if isinstance(v, datetime.datetime):
        return (v - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)) \
            // datetime.timedelta(milliseconds=1)
    return v


def sent_ms(ts):
    """An event time as the generator sent it (epoch ms or RFC 3339) in ms;
    None when it is neither."""
    if isinstance(ts, int):
        return ts
    if isinstance(ts, str):
        try:
            dt = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            return None
        return ms(dt)
    return None


def micros(d):
    return None if d is None else int((decimal.Decimal(d) * 1000000).to_integral_value())


_DECODED = {}


def decode_event(value):
    """A raw or late record's event (fastavro), None when undecodable;
    decoded once per distinct value (the big topics are read several times)."""
    if not value or len(value) < 5 or value[0] != 0:
        return None
    ev = _DECODED.get(value)
    if ev is None:
        try:
            ev = fastavro.schemaless_reader(io.BytesIO(value[5:]), EVENT_SCHEMA)
        except Exception:
            return None
        _DECODED[value] = ev
    return ev


def ref_event(ev):
    """A decoded raw event as reference/sessions_ref.py wants it."""
    md = ev.get("metadata") or {}
    return {
        "event_id": ev["event_id"], "timestamp": ms(ev["timestamp"]), "user_id": ev["user_id"],
        "event_type": ev["event_type"], "page_url": ev.get("page_url"),
        "price_micros": micros(md.get("price")), "quantity": md.get("quantity"),
        "device_type": (ev.get("device") or {}).get("type"),
        "country": (ev.get("geo") or {}).get("country"),
    }


def win_event(ev):
    """A decoded raw event as reference/windows_ref.py wants it."""
    e = dict(ev, timestamp=ms(ev["timestamp"]))
    md = e.get("metadata")
    if md and md.get("price") is not None:
        e["metadata"] = dict(md, price=str(md["price"]))
    return e


def event_row(ev):
    """Every column of an event (raw topic record or events_raw row)."""
    geo, dev, md = ev.get("geo") or {}, ev.get("device") or {}, ev.get("metadata") or {}
    return (ev.get("event_id"), ms(ev.get("timestamp")), ms(ev.get("received_at")),
            ev.get("user_id"), ev.get("event_type"), ev.get("page_url"), ev.get("session_id"),
            ev.get("referrer"), ev.get("user_agent"), ev.get("ip_address"), geo.get("country"),
            geo.get("city"), dev.get("type"), dev.get("os"), ev.get("is_bot"),
            md.get("product_id"), md.get("category"), md.get("quantity"),
            micros(md.get("price")))


SESSION_COLS = FIELDS + ["revision", "tombstone"]


def session_row(r):
    """A sessions topic record (decode_session) or a sessions table row."""
    r = dict(r)
    r["start"], r["end"] = ms(r["start"]), ms(r["end"])
    if "revenue" in r:
        r["revenue_micros"] = micros(r.pop("revenue"))
    return tuple(r[f] for f in SESSION_COLS)


def result_row(r):
    """A metrics topic record (decode_result) or a metrics_* table row."""
    return {
        "size": r["window_size_ms"], "start": ms(r["window_start"]), "dim": r["dimension"],
        "revision": r["revision"], "final": r["final"], "events": r["events"],
        "page_views": r["page_views"], "purchases": r["purchases"],
        "revenue_micros": micros(r["revenue"]), "unique_users": r["unique_users"],
        "counts": dict(r["counts"] or {}),
        "top_urls": [(u["url"], u["count"]) for u in (r["top_urls"] or [])],
        "sessions_closed": r["sessions_closed"], "avg_session_ms": r["avg_session_ms"],
        "bounce_rate": r["bounce_rate"], "conversion_rate": r["conversion_rate"],
    }


def late_row(event_id, reason, raw_value=None):
    return (event_id, reason, raw_value)


# ----------------------------------------------------------------- reading

def read_topic(bootstrap, topic, timeout=300):
    """Every committed record: [(partition, offset, key, value, headers)],
    ordered by partition then offset."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e2e-read-{uuid.uuid4().hex[:8]}",
                  "isolation.level": "read_committed", "enable.partition.eof": True,
                  "enable.auto.commit": False, "fetch.max.bytes": 52428800})
    try:
        n = len(c.list_topics(topic, timeout=30).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(n)])
        out, eof = [], set()
        deadline = time.time() + timeout
        while len(eof) < n:
            if time.time() > deadline:
                raise AssertionError(f"{topic}: no end of partition seen on "
                                     f"{sorted(set(range(n)) - eof)} within {timeout}s")
            for m in c.consume(2000, 0.5):
                if m.error():
                    if m.error().code() == -191:  # _PARTITION_EOF
                        eof.add(m.partition())
                    continue
                out.append((m.partition(), m.offset(), m.key(), m.value(), m.headers() or []))
    finally:
        c.close()
    out.sort(key=lambda r: (r[0], r[1]))
    return out


def end_offsets(bootstrap, *topics):
    """The end offsets of a topic's partitions (a tuple of lists for several)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e2e-end-{uuid.uuid4().hex[:8]}"})
    try:
        out = []
        for topic in topics:
            n = len(c.list_topics(topic, timeout=30).topics[topic].partitions)
            out.append([c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                        for p in range(n)])
        return out[0] if len(out) == 1 else tuple(map(tuple, out))
    finally:
        c.close()


def wait_topics(bootstrap, topics, timeout=60):
    """Until the broker's metadata shows every partition of the topics with
    a leader (a topic just created may not be there yet)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e2e-md-{uuid.uuid4().hex[:8]}"})
    try:
        deadline = time.time() + timeout
        while True:
            md = c.list_topics(timeout=10).topics
            if all(t in md and md[t].error is None and md[t].partitions and
                   all(p.leader >= 0 for p in md[t].partitions.values()) for t in topics):
                return
            if time.time() > deadline:
                raise AssertionError(f"topics {topics} not ready in {timeout}s")
            time.sleep(0.2)
    finally:
        c.close()


def group_caught_up(bootstrap, group, topic):
    """True when the group's committed offsets reach the end of the topic."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        n = len(c.list_topics(topic, timeout=30).topics[topic].partitions)
        tps = [TopicPartition(topic, p) for p in range(n)]
        ends = [c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
        done = c.committed(tps, timeout=10)
        return all(d.offset >= e for d, e in zip(done, ends))
    finally:
        c.close()


def headers_of(rec):
    return {k: (v.decode() if v is not None else None) for k, v in rec[4]}


# ------------------------------------------------------------------- diffs

class Diff:
    """The differences of one sink against its reference: categories
    ('missing', 'extra', 'different', ...) with a count and a few examples."""

    def __init__(self, name, checked=0):
        self.name = name
        self.checked = checked
        self.cats = {}
        self.notes = []

    def add(self, cat, example, keep=5):
        n, ex = self.cats.get(cat, (0, []))
        if len(ex) < keep:
            ex.append(example)
        self.cats[cat] = (n + 1, ex)

    def note(self, text):
        self.notes.append(text)

    @property
    def ok(self):
        return not self.cats

    def count(self, cat=None):
        return sum(n for c, (n, _) in self.cats.items() if cat is None or c == cat)

    def summary(self, examples=3):
        head = f"{self.name}: " + ("equal" if self.ok else ", ".join(
            f"{n} {c}" for c, (n, _) in sorted(self.cats.items())))
        head += f" ({self.checked} compared)"
        lines = [head] + [f"    note: {t}" for t in self.notes]
        for c, (n, ex) in sorted(self.cats.items()):
            for e in ex[:examples]:
                lines.append(f"    {c}: {short(e)}")
        return "\n".join(lines)


def short(x, n=400):
    s = repr(x) if not isinstance(x, str) else x
    return s if len(s) <= n else s[:n] + "..."


def field_diff(got, want, fields=None):
    """'f: got != want' for the fields that differ."""
    if isinstance(got, tuple):
        names = fields or [str(i) for i in range(len(got))]
        return "; ".join(f"{f}: {g!r} != {w!r}" for f, g, w in zip(names, got, want) if g != w)
    keys = fields or sorted(set(got) | set(want))
    return "; ".join(f"{k}: {short(got.get(k), 120)} != {short(want.get(k), 120)}"
                     for k in keys if got.get(k) != want.get(k))


def compare_multisets(diff, got, want, what=lambda k: k):
    """got, want: Counters. Adds missing / extra entries to diff."""
    for k, n in want.items():
        if got.get(k, 0) < n:
            diff.add("missing", f"{what(k)} x{n - got.get(k, 0)}")
    for k, n in got.items():
        if n > want.get(k, 0):
            diff.add("extra", f"{what(k)} x{n - want.get(k, 0)}")


def report(diffs, title):
    text = [f"== {title}"] + [d.summary() for d in diffs]
    bad = [d for d in diffs if not d.ok]
    text.append(f"== {len(bad)} of {len(diffs)} comparisons show differences" if bad
                else f"== all {len(diffs)} comparisons equal")
    out = "\n".join(text)
    print(out, flush=True)
    return out


# --------------------------------------------------------------- reference

class Reference:
    """The references over what the raw topic holds (and, for the session
    figures of the windows, over what the sessions topic holds: the
    aggregator's input, itself compared with the sessions reference)."""

    def __init__(self, raw_records, flush_ids, stream_max_ts):
        parts, wparts = defaultdict(list), defaultdict(list)
        for p, _, _, value, _ in raw_records:
            ev = decode_event(value)
            parts[p].append(ref_event(ev) if ev else None)
            wparts[p].append(win_event(ev) if ev else None)
        t0 = time.time()
        self.sessions = sessions_ref.reference(dict(parts))
        self.final = {sid: s for sid, s in self.sessions["sessions"].items()
                      if s["user_id"] not in flush_ids}
        t1 = time.time()
        self.w_raw, self.w_raw_stats = windows_ref.compute([wparts[p] for p in sorted(wparts)], [])
        log(f"reference: {len(self.final)} sessions ({t1 - t0:.1f}s), "
            f"{len(self.w_raw)} windows ({time.time() - t1:.1f}s)")
        self.max_ts = stream_max_ts
        self._ses_key = None
        self.windows = None
        self.w_ses_stats = None

    def late_want(self):
        """Counter of (event_id, reason, source) the late topic must hold."""
        want = Counter()
        for eid, n in self.sessions["late_counts"].items():
            want[(eid, "late", None)] += n
        for eid in self.w_raw_stats["late_ids"]:
            want[(eid, "late", "aggregator")] += 1
        return want

    def with_sessions(self, ses_records):
        """The windows given the sessions topic content (offset order per
        partition); recomputed only when that content changed."""
        key = (len(ses_records), ses_records[-1][:2] if ses_records else None)
        if key == self._ses_key:
            return self.windows
        parts = defaultdict(list)
        for p, _, _, value, _ in ses_records:
            parts[p].append(decode_session(value))
        w_ses, self.w_ses_stats = windows_ref.compute([], [parts[p] for p in sorted(parts)])
        merged = {}
        for k in set(self.w_raw) | set(w_ses):
            if k[1] > self.max_ts:
                continue  # the flush events' windows: never final, not compared
            merged[k] = merge_windows(self.w_raw.get(k), w_ses.get(k))
        self.windows = merged
        self._ses_key = key
        return merged


def merge_windows(a, b):
    w = windows_ref.Window()
    for x in (a, b):
        if x is None:
            continue
        w.events += x.events
        w.page_views += x.page_views
        w.purchases += x.purchases
        w.revenue_micros += x.revenue_micros
        w.users |= x.users
        for d in DIMS:
            for k, v in x.counts[d].items():
                w.counts[d][k] += v
        w.sessions += x.sessions
        w.session_ms_sum += x.session_ms_sum
        w.bounces += x.bounces
        w.conversions += x.conversions
        w.late += x.late
    return w


def is_empty(w, late=False):
    return w.events == 0 and w.sessions == 0 and (not late or w.late == 0)


# ------------------------------------------------------------- comparisons

def compare_raw(sent, raw_records, flush, allowed_extra=0):
    """The raw topic against what the generator sent (its --out record):
    every valid event exactly once per send (plus at most allowed_extra
    copies left by requests answered 503 and sent again), nothing invalid,
    fields as sent, IP anonymised, partitioned by user_id."""
    d = Diff("raw topic vs generated stream", len(raw_records))
    n_parts = 1 + max((r[0] for r in raw_records), default=0)
    got, decoded = Counter(), {}
    for p, off, key, value, _ in raw_records:
        if not value or value[0] != 0 or int.from_bytes(value[1:5], "big") != 1:
            d.add("bad framing", (p, off))
            continue
        ev = decode_event(value)
        if ev is None:
            d.add("undecodable", (p, off))
            continue
        if key is None or key.decode() != ev["user_id"]:
            d.add("wrong key", (p, off, key, ev["user_id"]))
        got[ev["event_id"]] += 1
        decoded[ev["event_id"]] = (p, ev)
    want = Counter(e["event_id"] for e in sent if e["_lg"]["kind"] != "invalid")
    want.update(f["event_id"] for f in flush)
    for k, n in want.items():
        if got.get(k, 0) < n:
            d.add("missing", f"{k} x{n - got.get(k, 0)}")
    extra = {k: n - want.get(k, 0) for k, n in got.items() if n > want.get(k, 0)}
    invalid = {e["event_id"] for e in sent if e["_lg"]["kind"] == "invalid"
               and isinstance(e.get("event_id"), str)} - set(want)
    for k, n in extra.items():
        if k in invalid:
            d.add("invalid event stored", k)
        elif k not in want:
            d.add("extra", f"{k} x{n}")
    resent = sum(n for k, n in extra.items() if k in want)
    if resent > allowed_extra:
        for k, n in list((k, n) for k, n in extra.items() if k in want)[:5]:
            d.add("extra copy", f"{k} x{n}")
        d.note(f"{resent} extra copies, at most {allowed_extra} allowed")
    elif resent:
        d.note(f"{resent} copies of events whose request was answered 503 and sent again "
               f"(allowed: {allowed_extra})")
    by_id = {e["event_id"]: e for e in sent if e["_lg"]["kind"] != "invalid"}
    by_id.update({f["event_id"]: f for f in flush})
    for eid, (p, ev) in decoded.items():
        s = by_id.get(eid)
        if s is None:
            continue
        if partition_of(ev["user_id"], n_parts) != p:
            d.add("wrong partition", (eid, p))
        bad = []
        for f in ("user_id", "event_type", "page_url"):
            if ev.get(f) != s.get(f):
                bad.append(f"{f}: {ev.get(f)!r} != {s.get(f)!r}")
        if ms(ev["timestamp"]) != sent_ms(s["timestamp"]):
            bad.append(f"timestamp: {ms(ev['timestamp'])} != {s['timestamp']}")
        ip = ev.get("ip_address")
        if ip is not None and not (ip.endswith(".0") or ip.endswith("::")):
            bad.append(f"ip not anonymised: {ip}")
        if bad:
            d.add("different", f"{eid}: " + "; ".join(bad))
    return d


def check_session_records(d, recs):
    """Exactly once per (session_id, revision), revisions consecutive; a
    session whose first revision is r > 0 is one whose id changed (a late
    event before its first event), announced by a tombstone of the user's
    old id with revision r (sessionizer README, "session_id"). Returns the
    final sessions {session_id: row dict} (tombstones dropped)."""
    seen, last, tombs = Counter(), {}, set()
    for r in recs:
        k = (r["session_id"], r["revision"])
        seen[k] += 1
        if seen[k] == 2:
            d.add("duplicate record", k)
        if r["tombstone"]:
            tombs.add((r["user_id"], r["revision"]))
        cur = last.get(r["session_id"])
        if cur is None or r["revision"] > cur["revision"]:
            last[r["session_id"]] = r
    revs = defaultdict(list)
    for sid, rv in seen:
        revs[sid].append(rv)
    for sid, rs in revs.items():
        rs.sort()
        if rs != list(range(rs[0], rs[0] + len(rs))) or (
                rs[0] > 0 and (last[sid]["user_id"], rs[0]) not in tombs):
            d.add("revision gap", f"{sid}: revisions {rs}")
    return {sid: {f: r[f] for f in FIELDS} for sid, r in last.items() if not r["tombstone"]}


def compare_sessions(name, final, ref):
    d = Diff(name, len(ref.final))
    for sid in sorted(set(ref.final) - set(final)):
        s = ref.final[sid]
        d.add("missing", f"{sid} user {s['user_id']} start {s['start']} end {s['end']} "
                         f"events {s['event_count']}")
    for sid in sorted(set(final) - set(ref.final)):
        s = final[sid]
        d.add("extra", f"{sid} user {s['user_id']} start {s['start']} end {s['end']}")
    for sid in sorted(set(final) & set(ref.final)):
        want = {f: ref.final[sid][f] for f in FIELDS}
        if final[sid] != want:
            d.add("different", f"{sid}: {field_diff(final[sid], want, FIELDS)}")
    return d


def sessions_topic_diff(records, ref):
    d0 = Diff("sessions topic records")
    recs = []
    for p, off, _, value, _ in records:
        try:
            recs.append(decode_session(value))
        except Exception:
            d0.add("undecodable", (p, off))
    final = check_session_records(d0, recs)
    d = compare_sessions("sessions topic vs reference", final, ref)
    d.cats.update(d0.cats)
    return d


def late_key(rec):
    h = headers_of(rec)
    ev = decode_event(rec[3])
    return (ev["event_id"] if ev else None, h.get("reason"), h.get("source"))


def late_topic_diff(records, ref):
    d = Diff("late topic vs references", len(records))
    got = Counter(late_key(r) for r in records)
    compare_multisets(d, got, ref.late_want(),
                      lambda k: f"{k[0]} reason={k[1]} from {k[2] or 'sessionizer'}")
    return d


def murmur64a(key, seed=0xadc83b19):
    """MurmurHash64A, the hash of Redis' HyperLogLog (PFADD)."""
    m, r, mask = 0xc6a4a7935bd1e995, 47, (1 << 64) - 1
    h = (seed ^ (len(key) * m)) & mask
    n = len(key) // 8
    for i in range(n):
        k = int.from_bytes(key[i * 8:i * 8 + 8], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h ^= k
        h = (h * m) & mask
    rem = len(key) & 7
    if rem:
        for i in range(rem - 1, -1, -1):
            h ^= key[n * 8 + i] << (8 * i)
        h = (h * m) & mask
    h ^= h >> r
    h = (h * m) & mask
    h ^= h >> r
    return h


_REGISTER = {}


def hll_collisions(w):
    """Users of the window that share a HyperLogLog register (2^14, Redis'
    hash) with another: no HLL can tell them apart, so the estimate of a
    small set is low by about that many."""
    regs = set()
    for u in w.users:
        i = _REGISTER.get(u)
        if i is None:
            i = _REGISTER[u] = murmur64a(u.encode()) & 16383
        regs.add(i)
    return len(w.users) - len(regs)


SESSION_FIELDS = ("sessions_closed", "avg_session_ms", "bounce_rate", "conversion_rate")
def compare_result(d, key, got, w, dim, late=False, cat="different"):
    """One window result (normalized) against the reference window."""
    exp = w.result()
    bad, ses_bad = [], []
    if dim == "total":
        for f in ("events", "page_views", "purchases", "revenue_micros") + (
                ("late",) if late else ()):
            if got[f] != exp[f]:
                bad.append(f"{f}: {got[f]} != {exp[f]}")
        n = exp["unique_users"]
        if abs(got["unique_users"] - n) > max(1, 0.025 * n) + hll_collisions(w):
            bad.append(f"unique_users {got['unique_users']} vs exact {n} (beyond HLL error)")
        for f in SESSION_FIELDS:
            if abs(got[f] - exp[f]) > 1e-6 * max(1.0, abs(exp[f])):
                ses_bad.append(f"{f}: {got[f]} != {exp[f]}")
        if got["top_urls"] != exp["top_urls"]:
            bad.append(f"top_urls differ: {short(got['top_urls'], 160)} != "
                       f"{short(exp['top_urls'], 160)}")
    else:
        want = exp["counts"][dim]
        if got["counts"] != want:
            diffk = sorted(k for k in set(got["counts"]) | set(want)
                           if got["counts"].get(k) != want.get(k))
            bad.append(f"{len(diffk)} counts differ, e.g. " + ", ".join(
                f"{k!r}: {got['counts'].get(k)} != {want.get(k)}" for k in diffk[:3]))
    if bad or ses_bad:
        d.add(cat, f"{key}: " + "; ".join(bad + ses_bad))
        return cat
    return None


def compare_windows(name, latest, windows, revs, max_start):
    """latest: {(size, start, dim): normalized result}, windows: the reference
    (windows starting after max_start, those of the flush events, are not
    compared). A result of a window the reference does not have must be
    empty (a window whose only session moved away)."""
    d = Diff(name, len(windows))
    extra = {(k[0], k[1]) for k in latest if (k[0], k[1]) not in windows and k[1] <= max_start}
    for (size, start) in sorted(set(windows) | extra):
        w = windows.get((size, start))
        for dim in ("total",) + DIMS:
            k = (size, start, dim)
            got = latest.get(k)
            if w is None:
                if got is not None:
                    compare_result(d, f"{size}/{start}/{dim}", got, windows_ref.Window(), dim,
                                   cat="extra")
                continue
            if got is None:
                if not is_empty(w):
                    d.add("missing", f"{size}/{start}/{dim} (events {w.events}, "
                          f"sessions {w.sessions})")
                continue
            if not got["final"]:
                d.add("not final", f"{size}/{start}/{dim} revision {got['revision']}")
            compare_result(d, f"{size}/{start}/{dim}", got, w, dim)
    for k, rs in sorted(revs.items()):
        if k[1] > max_start:
            continue
        if sorted(rs) != list(range(len(rs))) or len(set(rs)) != len(rs):
            d.add("revisions", f"{k[0]}/{k[1]}/{k[2]}: revisions {rs[:10]} (repeat or gap)")
    return d


def latest_results(rows):
    """rows: normalized results in production order per partition. Returns
    (latest by key, revisions by key)."""
    latest, revs = {}, defaultdict(list)
    for r in rows:
        k = (r["size"], r["start"], r["dim"])
        revs[k].append(r["revision"])
        if k not in latest or r["revision"] > latest[k]["revision"]:
            latest[k] = r
    return latest, revs


def metrics_topic_diff(records, windows, max_start):
    rows, bad_keys = [], []
    for p, off, key, value, _ in records:
        r = result_row(decode_result(value))
        if key is None or key.decode() != f"{r['size']}/{r['start']}/{r['dim']}":
            bad_keys.append((p, off, key))
        rows.append(r)
    latest, revs = latest_results(rows)
    d = compare_windows("metrics topic vs window reference", latest, windows, revs, max_start)
    for k in bad_keys:
        d.add("wrong key", k)
    return d


def redis_diff(rport, prefix, windows, max_start, cut=None):
    """Every reference window through aggregator_read.lua, and every other
    window Redis lists up to max_start (which must be empty). cut: {size:
    start} below which a window is not required (dropped by a flush)."""
    import redis
    r = redis.Redis(host="127.0.0.1", port=int(rport))
    with open(LUA) as f:
        lua = r.register_script(f.read())
    d = Diff("Redis (aggregator_read.lua) vs window reference")
    listed = set()
    for size in SIZES:
        for m in r.zrangebyscore(f"{prefix}:win:{size}", "-inf", max_start):
            listed.add((size, int(m)))
    skipped = 0
    for (size, start) in sorted(set(windows) | listed):
        w = windows.get((size, start))
        if cut and start < cut.get(size, -1 << 62):
            skipped += 1
            continue
        d.checked += 1
        got = json.loads(lua(args=[prefix, size, start, 100]))
        if w is None:
            w, cat = windows_ref.Window(), "extra"
        else:
            cat = "different"
            if not got["sources"] and not is_empty(w, late=True):
                d.add("missing", f"{size}/{start} (events {w.events}, sessions {w.sessions})")
                continue
        g = {"events": got["events"], "page_views": got["page_views"],
             "purchases": got["purchases"], "revenue_micros": got["revenue_micros"],
             "sessions_closed": got["sessions_closed"], "unique_users": got["unique_users"],
             "avg_session_ms": got["avg_session_ms"], "bounce_rate": got["bounce_rate"],
             "conversion_rate": got["conversion_rate"], "late": got["late"],
             "top_urls": [(x["url"], x["count"]) for x in (got["top_urls"] or [])]}
        compare_result(d, f"{size}/{start}/total", g, w, "total", late=True, cat=cat)
        for dim in DIMS:
            cnt = got["counts"].get(dim) or {}
            if isinstance(cnt, list):  # cjson encodes an empty table as []
                cnt = {}
            compare_result(d, f"{size}/{start}/{dim}", {"counts": cnt}, w, dim, cat=cat)
    if skipped:
        d.note(f"{skipped} windows older than the Redis flush horizon not required")
    return d


# ------------------------------------------------------------------- lake

def lake_tables(warehouse):
    """{table: (rows, tasks)} for every table with a snapshot."""
    out = {}
    for t in LAKE_TABLES:
        md, _ = current_metadata(os.path.join(warehouse, t))
        if md is None:
            out[t] = ([], [])
            continue
        _, tasks, rows = pyiceberg_rows(md)
        out[t] = (rows, tasks)
    return out


def lake_counts(warehouse):
    out = {}
    for t in LAKE_TABLES:
        _, meta = current_metadata(os.path.join(warehouse, t))
        out[t] = total_records(meta) if meta else 0
    return out


def topic_counts(topics):
    """Rows each table must hold, from the topics' records."""
    want = {"events_raw": len(topics["raw"]), "sessions": len(topics["sessions"]),
            "late_events": len(topics["late"])}
    sizes = Counter(decode_result(r[3])["window_size_ms"] for r in topics["metrics"])
    for size, t in METRICS_TABLE.items():
        want[t] = sizes.get(size, 0)
    return want


def compare_keyed(d, got, want, label):
    """got, want: {(partition, offset): row}; rows exactly once, unchanged."""
    for k in sorted(set(want) - set(got)):
        d.add("missing", f"{label} {k}: {short(want[k], 200)}")
    for k in sorted(set(got) - set(want)):
        d.add("extra", f"{label} {k}: {short(got[k], 200)}")
    for k in sorted(set(got) & set(want)):
        if got[k] != want[k]:
            d.add("different", f"{label} {k}: {field_diff(got[k], want[k])}")


def keyed_rows(d, rows, fn):
    out = {}
    for r in rows:
        k = (r["kafka_partition"], r["kafka_offset"])
        if k in out:
            d.add("duplicate row", k)
        out[k] = fn(r)
    return out


def orphans(warehouse, table, tasks):
    listed = {t.file.file_path[len("file://"):] for t in tasks}
    on_disk = set()
    for dirpath, _, files in os.walk(os.path.join(warehouse, table, "data")):
        on_disk.update(os.path.join(dirpath, f) for f in files if f.endswith(".avro"))
    return sorted(on_disk - listed), sorted(listed - on_disk)


def lake_diff(warehouse, topics, ref, windows):
    """Each table against its topic (exactly once, unchanged), then its final
    values against the references."""
    tables = lake_tables(warehouse)
    diffs = []

    d = Diff("lake events_raw vs raw topic", len(topics["raw"]))
    want = {}
    for p, o, _, v, _ in topics["raw"]:
        ev = decode_event(v)
        if ev is not None:
            want[(p, o)] = event_row(ev)
    got = keyed_rows(d, tables["events_raw"][0], event_row)
    compare_keyed(d, got, want, "raw")
    diffs.append(d)

    d = Diff("lake sessions vs sessions topic", len(topics["sessions"]))
    want = {(p, o): session_row(decode_session(v)) for p, o, _, v, _ in topics["sessions"]}
    got = keyed_rows(d, tables["sessions"][0], session_row)
    compare_keyed(d, got, want, "sessions")
    diffs.append(d)
    d0 = Diff("lake sessions")
    final = check_session_records(d0, [dict(zip(SESSION_COLS, r)) for r in got.values()])
    d = compare_sessions("lake sessions (final) vs reference", final, ref)
    d.cats.update(d0.cats)
    diffs.append(d)

    by_size = defaultdict(dict)
    for p, o, _, v, _ in topics["metrics"]:
        r = result_row(decode_result(v))
        by_size[r["size"]][(p, o)] = r
    for size, table in METRICS_TABLE.items():
        d = Diff(f"lake {table} vs metrics topic", len(by_size[size]))
        got = keyed_rows(d, tables[table][0], result_row)
        compare_keyed(d, got, by_size[size], "metrics")
        for k, r in got.items():
            if r["size"] != size:
                d.add("wrong table", f"{k} size {r['size']}")
        diffs.append(d)
        rows = [got[k] for k in sorted(got)]
        latest, revs = latest_results(rows)
        wins = {k: w for k, w in windows.items() if k[0] == size}
        diffs.append(compare_windows(f"lake {table} (latest revisions) vs window reference",
                                     latest, wins, revs, ref.max_ts))

    d = Diff("lake late_events vs late topic", len(topics["late"]))
    want = {}
    for p, o, _, v, h in topics["late"]:
        ev = decode_event(v)
        reason = headers_of((p, o, None, v, h)).get("reason")
        want[(p, o)] = late_row(ev["event_id"] if ev else None, reason, None if ev else v)
    got = keyed_rows(d, tables["late_events"][0],
                     lambda r: late_row(r.get("event_id"), r.get("reason"), r.get("raw_value")))
    compare_keyed(d, got, want, "late")
    diffs.append(d)

    d = Diff("lake data files (orphans)", sum(len(t[1]) for t in tables.values()))
    for t, (_, tasks) in tables.items():
        extra, lost = orphans(warehouse, t, tasks)
        for f in extra:
            d.add("file in no snapshot", f"{t}: {f}")
        for f in lost:
            d.add("listed file missing", f"{t}: {f}")
    diffs.append(d)
    return diffs


# -------------------------------------------------------------- processes

class Service:
    def __init__(self, kind, idx, env, url):
        self.kind, self.idx, self.env, self.url = kind, idx, env, url
        self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.p.poll() is None


class Pipeline:
    """The topics of one run and its processes (gateway, sessionizers,
    aggregators, lake-writers); every instance keeps its identity
    (transactional / instance id, admin port) across restarts."""

    def __init__(self, stack, name, workdir, raw_partitions=12, sessions_partitions=3,
                 metrics_partitions=2, late_partitions=2, warehouse=None, mutate=None,
                 lake_roll_age="1s"):
        self.stack = stack
        self.bs = stack["KAFKA_BOOTSTRAP"]
        self.name = name
        self.dir = str(workdir)
        self.raw_partitions = raw_partitions
        self.warehouse = warehouse or os.path.join(self.dir, "warehouse")
        self.mutate = mutate or {}
        self.lake_roll_age = lake_roll_age
        self.t = {k: f"e2e.{k}.{name}" for k in ("raw", "sessions", "metrics", "late")}
        self.prefix = f"e2e:{name}"
        create_topics(stack, f"{self.t['raw']}:{raw_partitions}",
                      f"{self.t['sessions']}:{sessions_partitions}",
                      f"{self.t['metrics']}:{metrics_partitions}",
                      f"{self.t['late']}:{late_partitions}")
        wait_topics(self.bs, list(self.t.values()))
        self.services = {"sessionizer": {}, "aggregator": {}, "lake-writer": {}}
        self.gateway = None
        self.dead = []  # logs of killed / stopped instances
        self.log_dir = os.path.join(ARTIFACTS, f"e2e-{name}")
        os.makedirs(self.log_dir, exist_ok=True)
        self.restarts = []  # (time, kind, idx)

    # --- environment of each service (docs/configuration.md)
    def _topics_env(self):
        return {"TOPIC_RAW": self.t["raw"], "TOPIC_SESSIONS": self.t["sessions"],
                "TOPIC_METRICS": self.t["metrics"], "TOPIC_LATE": self.t["late"]}

    def _env(self, kind, idx):
        n = self.name
        base = {"KAFKA_BOOTSTRAP": self.bs, **self._topics_env()}
        if kind == "sessionizer":
            port = free_port()
            base.update({"SESSIONIZER_CHANGELOG_TOPIC": f"e2e.sz-changelog.{n}",
                         "SESSIONIZER_GROUP_ID": f"e2e-sz-{n}",
                         "SESSIONIZER_TRANSACTIONAL_ID": f"e2e-sz-{n}-{idx}",
                         "ADMIN_ADDR": "127.0.0.1", "ADMIN_PORT": port,
                         "SESSIONIZER_IDLE_TIMEOUT": "3s",
                         "RDKAFKA_SESSION_TIMEOUT_MS": "6000", "LOG_LEVEL": "info"})
            base.update(self.mutate.get("sessionizer", {}))
        elif kind == "aggregator":
            port = free_port()
            base.update({"REDIS_HOST": "127.0.0.1", "REDIS_PORT": self.stack["REDIS_PORT"],
                         "AGGREGATOR_CHANGELOG_TOPIC": f"e2e.ag-changelog.{n}",
                         "AGGREGATOR_PANES_TOPIC": f"e2e.ag-panes.{n}",
                         "AGGREGATOR_GROUP_ID": f"e2e-ag-{n}",
                         "AGGREGATOR_INSTANCE_ID": f"e2e-ag-{n}-{idx}",
                         "AGGREGATOR_REDIS_PREFIX": self.prefix,
                         "AGGREGATOR_ADMIN_ADDR": "127.0.0.1", "AGGREGATOR_ADMIN_PORT": port,
                         "AGGREGATOR_IDLE_TIMEOUT": "3s", "AGGREGATOR_REDIS_RETRY": "200ms",
                         "RDKAFKA_SESSION_TIMEOUT_MS": "6000", "AGGREGATOR_LOG_LEVEL": "info"})
            base.update(self.mutate.get("aggregator", {}))
        else:
            port = free_port()
            base.update({"LAKE_WAREHOUSE": self.warehouse, "LAKE_ADMIN_ADDR": "127.0.0.1",
                         "LAKE_ADMIN_PORT": port, "LAKE_GROUP_ID": f"e2e-lw-{n}",
                         "LAKE_INSTANCE_ID": f"e2e-lw-{n}-{idx}", "LAKE_ROLL_AGE": self.lake_roll_age,
                         "LAKE_FSYNC": "false", "LAKE_LOG_LEVEL": "info"})
            base.update(self.mutate.get("lake-writer", {}))
        return base, f"http://127.0.0.1:{port}"

    def _spawn(self, s):
        s.proc = Proc(s.kind, s.env, log_dir=self.log_dir)
        s.proc.wait_http(s.url + "/healthz", timeout=60)

    def start(self, kind, idx=None):
        svc = self.services[kind]
        if idx is None:
            idx = 0
            while idx in svc and svc[idx].alive():
                idx += 1
        s = svc.get(idx)
        if s is None:
            env, url = self._env(kind, idx)
            s = svc[idx] = Service(kind, idx, env, url)
        self._spawn(s)
        return s

    def start_gateway(self):
        port = free_port()
        env = {"KAFKA_BOOTSTRAP": self.bs, "GATEWAY_ADDR": "127.0.0.1", "GATEWAY_PORT": port,
               "GATEWAY_AUTH": "off", "GATEWAY_TOPIC": self.t["raw"]}
        env.update(self.mutate.get("ingest-gateway", {}))
        self.gateway = Proc("ingest-gateway", env, log_dir=self.log_dir)
        self.gw_base = f"http://127.0.0.1:{port}"
        self.gateway.wait_http(self.gw_base + "/readyz", timeout=60)
        self.gw_url = self.gw_base + "/v1/events"

    def start_all(self, sessionizers=1, aggregators=1, writers=1):
        self.start_gateway()
        for _ in range(sessionizers):
            self.start("sessionizer")
        for _ in range(aggregators):
            self.start("aggregator")
        for _ in range(writers):
            self.start("lake-writer")

    def running(self, kind):
        return [s for s in self.services[kind].values() if s.alive()]

    def kill9(self, kind, idx):
        s = self.services[kind][idx]
        s.proc.kill9()
        self.dead.append(s.proc)
        s.proc = None

    def restart(self, kind, idx):
        self.restarts.append((time.time(), kind, idx))
        self._spawn(self.services[kind][idx])

    def stop(self, kind, idx, timeout=15):
        """SIGTERM (a scale-down); returns the exit code."""
        s = self.services[kind][idx]
        rc = s.proc.term(timeout)
        self.dead.append(s.proc)
        s.proc = None
        return rc

    def check_alive(self):
        for kind, svc in self.services.items():
            for s in svc.values():
                if s.proc is not None and s.proc.p.poll() is not None:
                    raise AssertionError(f"{kind} {s.idx} exited with {s.proc.p.returncode}: "
                                         f"{s.proc.tail()}")
        if self.gateway is not None and self.gateway.p.poll() is not None:
            raise AssertionError(f"gateway exited: {self.gateway.tail()}")

    def metric(self, kind, name, idx=None):
        total = 0.0
        for s in self.services[kind].values():
            if s.proc is None or (idx is not None and s.idx != idx):
                continue
            try:
                code, body = http_get(s.url + "/metrics")
            except OSError:
                continue
            if code != 200:
                continue
            for line in body.splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def gateway_metric(self, name):
        code, body = http_get(self.gw_base + "/metrics")
        assert code == 200
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                   if line.startswith(name + " ") or line.startswith(name + "{"))

    def terminate_all(self):
        """SIGTERM every running service (SPEC §8: exit 0 within 10 s); returns
        the ones that did not."""
        bad = []

        def term(proc, what):
            try:
                rc = proc.term(timeout=12)
            except AssertionError as e:
                rc = str(e)
            if rc != 0:
                bad.append(f"{what}: exit {rc}: {proc.tail(1500)}")

        for kind, svc in self.services.items():
            for s in svc.values():
                if s.proc is not None and s.proc.p.poll() is None:
                    term(s.proc, f"{kind} {s.idx}")
        if self.gateway is not None:
            term(self.gateway, "gateway")
        return bad

    def close(self):
        for svc in self.services.values():
            for s in svc.values():
                if s.proc is not None:
                    s.proc.kill9()
                    s.proc.log.close()
        for p in self.dead:
            p.log.close()
        if self.gateway is not None:
            self.gateway.kill9()
            self.gateway.log.close()


# --------------------------------------------------------------- the load

class Load:
    """cs-loadgen posting one reproducible stream through the gateway, in the
    background. The stream straddles a UTC midnight (its middle is the last
    midnight that lets it end 3 h before now, so that the idle tail and the
    flush events after it are still in the gateway's past): sessions, windows
    and the lake's day partitions cross a day boundary."""

    def __init__(self, pipe, count, seed, users=400, gap_ms=600000, rate=0, dup=0.02,
                 ooo=0.05, late=0.01, invalid=0.02, concurrency=4, batch=50):
        self.pipe, self.count, self.seed = pipe, count, seed
        self.args = [bin_path("cs-loadgen"), "--count", str(count), "--users", str(users),
                     "--seed", str(seed), "--dup", str(dup), "--ooo", str(ooo),
                     "--late", str(late), "--invalid", str(invalid)]
        if gap_ms is not None:
            self.args += ["--gap-ms", str(gap_ms)]
        span = int(subprocess.run(self.args + ["--print-span"], capture_output=True, text=True,
                                  check=True).stdout.strip())
        end_by = int(time.time() * 1000) - 3 * HOUR
        midnight = (end_by - span // 2) // DAY * DAY
        self.start_ms = midnight - span // 2
        self.out = os.path.join(pipe.dir, "stream.ndjson")
        self.summary = os.path.join(pipe.dir, "summary.json")
        self.args += ["--start", str(self.start_ms), "--url", pipe.gw_url, "--out", self.out,
                      "--progress", "0", "--concurrency", str(concurrency), "--batch", str(batch),
                      "--summary", self.summary, "--retries", "200", "--timeout", "60"]
        if rate:
            self.args += ["--rate", str(rate)]
        self.proc = None
        self.sent = None
        self.flush = None
        self.tail = []

    def begin(self):
        self.log = open(os.path.join(self.pipe.dir, "loadgen.log"), "wb")
        self.t0 = time.time()
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def finish(self, timeout=3600):
        rc = self.proc.wait(timeout)
        self.log.close()
        self.duration = time.time() - self.t0
        with open(os.path.join(self.pipe.dir, "loadgen.log")) as f:
            tail = f.read()[-3000:]
        assert rc == 0, f"cs-loadgen exit {rc}: {tail}"
        with open(self.out) as f:
            self.sent = [json.loads(line) for line in f]
        assert len(self.sent) == self.count, (len(self.sent), self.count)
        kinds = Counter(e["_lg"]["kind"] for e in self.sent)
        assert all(kinds[k] > 0 for k in ("ok", "dup", "ooo", "late", "invalid")), kinds
        self.max_ts = max(sent_ms(e["timestamp"]) or 0 for e in self.sent
                          if e["_lg"]["kind"] != "invalid")
        with open(self.summary) as f:
            self.summary_json = json.load(f)
        log(f"load: {self.count} events posted in {self.duration:.0f}s, {dict(kinds)}, "
            f"retries {self.summary_json.get('retries')}")

    def days(self):
        """The UTC days the stream's valid events fall on."""
        return sorted({sent_ms(e["timestamp"]) // DAY for e in self.sent
                       if e["_lg"]["kind"] != "invalid" and sent_ms(e["timestamp"])})

    def post_idle_tail(self, active=3, seconds=8.0, step_ms=20000):
        """After the stream, events on the first `active` raw partitions only,
        for `seconds` of processing time (beyond the services' idle
        timeouts) and 20 s of event time per request: the other partitions
        go idle, the watermarks move on without them, the windows and
        sessions of the stream are emitted meanwhile; the flush that follows
        wakes them up. Compared like the stream (their users are not flush
        users)."""
        n = self.pipe.raw_partitions
        users, i = {}, 0
        while len(users) < active:
            u = f"idle-{self.seed}-{i}"
            p = partition_of(u, n)
            if p < active:
                users.setdefault(p, u)
            i += 1
        steps = max(1, int(seconds / 0.25))
        t = self.max_ts
        for k in range(steps):
            t += step_ms
            batch = [{"event_id": f"idle-{self.seed}-{k}-{p}", "user_id": u,
                      "event_type": "page_view", "page_url": f"https://shop.example/idle/{k % 7}",
                      "timestamp": t} for p, u in sorted(users.items())]
            code, body = post(self.pipe.gw_url, batch)
            assert code == 202 and body["accepted"] == len(batch), (code, body)
            self.tail += batch
            time.sleep(seconds / steps)
        self.max_ts = t
        log(f"idle tail: {len(self.tail)} events on partitions {sorted(users)} of {n} "
            f"over {seconds:.0f}s, event time up to {t}")

    def post_flush(self):
        """One event per raw partition 2 h after the stream: every partition's
        watermark passes the end of every session and window of the stream."""
        n = self.pipe.raw_partitions
        self.flush = [{"event_id": f"flush-{self.seed}-{i}", "user_id": u, "event_type": "click",
                       "timestamp": self.max_ts + 2 * HOUR}
                      for i, u in enumerate(flush_users(n))]
        code, body = post(self.pipe.gw_url, self.flush)
        assert code == 202 and body["accepted"] == n, (code, body)

    def stop(self):
        if self.running():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# ----------------------------------------------------------- verification

def verify(pipe, load, timeout=180, faults=None, check_redis=True, tamper=None):
    """Compares every sink with its reference, waiting (up to timeout per
    stage) for the pipeline to settle. Returns (diffs, stats). tamper():
    called once the windows have settled, before they are compared again
    (to check that the comparison sees a change)."""
    bs = pipe.bs
    t0 = time.time()
    _DECODED.clear()
    raw = read_topic(bs, pipe.t["raw"])
    allowed_extra = int(pipe.gateway_metric("gateway_events_not_stored_total"))
    d_raw = compare_raw(load.sent, raw, load.tail + load.flush, allowed_extra)
    redis_cut = redis_cut_after_flush(raw, faults) if faults is not None else None
    flush_ids = {f["user_id"] for f in load.flush}
    ref = Reference(raw, flush_ids, load.max_ts)
    stats = {"raw_records": len(raw), "sessions_ref": len(ref.final),
             "late_sessionizer_ref": sum(ref.sessions["late_counts"].values()),
             "late_aggregator_ref": len(ref.w_raw_stats["late_ids"]),
             "duplicates_ref": ref.sessions["duplicates"]}

    # The sessionizer: its group reaches the end of raw, then its outputs
    # settle (timer-emitted sessions come after the offsets, see
    # test_sessionizer.check_outputs).
    deadline = time.time() + timeout
    while time.time() < deadline:
        pipe.check_alive()
        if group_caught_up(bs, f"e2e-sz-{pipe.name}", pipe.t["raw"]):
            break
        time.sleep(1)
    else:
        log("sessionizer group not caught up on raw before the deadline")

    def stage_sessions():
        return [sessions_topic_diff(read_topic(bs, pipe.t["sessions"]), ref)]

    def outputs():
        return end_offsets(bs, *(pipe.t[k] for k in ("sessions", "metrics", "late")))

    t1 = time.time()
    d_ses = settle(stage_sessions, timeout, outputs, quiet=40)
    t2 = time.time()

    def stage_windows():
        pipe.check_alive()
        ses = read_topic(bs, pipe.t["sessions"])
        windows = ref.with_sessions(ses)
        out = [metrics_topic_diff(read_topic(bs, pipe.t["metrics"]), windows, ref.max_ts),
               late_topic_diff(read_topic(bs, pipe.t["late"]), ref)]
        if check_redis:
            out.append(redis_diff(pipe.stack["REDIS_PORT"], pipe.prefix, windows, ref.max_ts,
                                  redis_cut))
        return out

    d_win = settle(stage_windows, timeout, outputs, quiet=20, pause=1)
    if tamper is not None:
        tamper()
        d_win = stage_windows()
    t3 = time.time()
    stats["windows_ref"] = len(ref.windows)
    stats["session_revisions_as_new_ref"] = ref.w_ses_stats["revisions_as_new"]
    stats["sessions_records"] = len(read_topic(bs, pipe.t["sessions"]))

    topics = {k: read_topic(bs, pipe.t[k]) for k in ("raw", "sessions", "metrics", "late")}
    want = topic_counts(topics)
    deadline = time.time() + timeout
    last, since = None, time.time()
    while time.time() < deadline:
        pipe.check_alive()
        got = lake_counts(pipe.warehouse)
        if all(got[t] >= want[t] for t in want):
            break
        if got != last:
            last, since = got, time.time()
        elif time.time() - since > 30:
            break
        time.sleep(1)
    if not all(got[t] >= want[t] for t in want):
        log(f"lake row counts {got} did not reach {want}")
    stats["lake_rows"] = want

    def stage_lake():
        tp = {k: read_topic(bs, pipe.t[k]) for k in ("raw", "sessions", "metrics", "late")}
        return lake_diff(pipe.warehouse, tp, ref, ref.with_sessions(tp["sessions"]))

    t4 = time.time()
    d_lake = settle(stage_lake, 60, lambda: lake_counts(pipe.warehouse), quiet=15, pause=3)
    t5 = time.time()
    _DECODED.clear()
    stats["verify_seconds"] = round(t5 - t0, 1)
    log(f"comparison: raw + references {t1 - t0:.0f}s, sessions {t2 - t1:.0f}s, "
        f"windows {t3 - t2:.0f}s, lake rows {t4 - t3:.0f}s, lake {t5 - t4:.0f}s")
    return [d_raw] + d_ses + d_win + d_lake, stats


def settle(fn, timeout, progress=None, quiet=20, pause=2):
    """fn() -> [Diff], repeated until all are equal, or until timeout, or
    until progress() (a fingerprint of the outputs) has not changed for
    quiet seconds: the pipeline has settled and the differences are final."""
    deadline = time.time() + timeout
    last, since = None, time.time()
    while True:
        fp = progress() if progress else None
        diffs = fn()
        if all(d.ok for d in diffs) or time.time() > deadline:
            return diffs
        if progress is not None:
            if fp != last:
                last, since = fp, time.time()
            elif time.time() - since > quiet:
                return diffs
        time.sleep(pause)


def judge(diffs, title):
    """Prints the comparison; fails on any difference."""
    import pytest
    text = report(diffs, title)
    if all(d.ok for d in diffs):
        return text
    pytest.fail(text, pytrace=False)


# ------------------------------------------------------------------ faults

class Stack:
    """A Kafka broker and Redis of their own (scripts/stack.sh in a directory
    of its own), for the faults that would disturb the shared stack."""

    def __init__(self, d):
        self.dir = d
        subprocess.run([STACK_SH, "start", d], check=True)
        self.env = read_env(os.path.join(d, "stack.env"))

    def restart_kafka(self):
        subprocess.run([STACK_SH, "restart-kafka", self.dir], check=True)

    def stop_redis(self):
        subprocess.run([STACK_SH, "stop-redis", self.dir], check=True)

    def start_redis(self):
        subprocess.run([STACK_SH, "start-redis", self.dir], check=True)
        import redis
        r = redis.Redis(host="127.0.0.1", port=int(self.env["REDIS_PORT"]))
        for _ in range(100):
            try:
                r.flushall()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("Redis did not come back")

    def close(self):
        subprocess.run([STACK_SH, "stop", self.dir], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class SmallDisk:
    """A tmpfs of its own for the warehouse (root only), filled and freed on
    demand."""

    def __init__(self, size="64m"):
        self.dir = tempfile.mkdtemp(prefix="e2e-disk-")
        self.mounted = False
        if os.geteuid() != 0:
            self.why = "not root: cannot mount a small file system for the warehouse"
            return
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                            self.dir], capture_output=True, text=True)
        if r.returncode != 0:
            self.why = f"mount tmpfs failed: {r.stderr.strip()}"
            return
        self.mounted = True
        self.filler = os.path.join(self.dir, "filler")

    def fill(self):
        """Writes a file until the file system is full (ENOSPC)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            chunk = b"\0" * (1 << 20)
            while len(chunk) >= 512:
                try:
                    os.write(fd, chunk)
                except OSError:
                    chunk = chunk[:len(chunk) // 2]
        finally:
            os.close(fd)
        st = os.statvfs(self.dir)
        return st.f_bavail * st.f_frsize

    def free(self):
        os.unlink(self.filler)

    def close(self):
        if self.mounted:
            subprocess.run(["umount", "-l", self.dir], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class Faults:
    """Runs a fault plan while the load is posted: [(second, action, args)],
    actions may schedule follow-ups. Records what was injected."""

    def __init__(self, pipe, rnd, stack=None, disk=None):
        self.pipe, self.rnd, self.stack, self.disk = pipe, rnd, stack, disk
        self.injected = []
        self.kills = Counter()
        self.redis_back_at = None
        self.agg_restart_max_ts = []
        self.disk_errors = None
        self.redis_rewrites = 0

    def record(self, text):
        log("fault:", text)
        self.injected.append((round(time.time() - self.t0, 1), text))

    def run(self, plan, load, extra_time=0):
        self.t0 = time.time()
        queue = sorted(plan, key=lambda x: x[0])
        while queue:
            at, action, args = queue[0]
            now = time.time() - self.t0
            if now < at:
                time.sleep(min(0.2, at - now))
                continue
            queue.pop(0)
            follow = getattr(self, "do_" + action)(*args)
            for f in follow or []:
                queue.append((time.time() - self.t0 + f[0], f[1], f[2]))
            queue.sort(key=lambda x: x[0])
        return self.injected

    # --- actions
    def do_kill(self, kind, idx=None):
        live = self.pipe.running(kind)
        if not live:
            return []
        s = self.rnd.choice(live) if idx is None else self.pipe.services[kind][idx]
        if kind == "aggregator":
            self.agg_moved()
        self.pipe.kill9(kind, s.idx)
        self.kills[kind] += 1
        self.record(f"kill -9 {kind} #{s.idx}")
        return [(self.rnd.uniform(0.2, 2.0), "restart", (kind, s.idx))]

    def do_restart(self, kind, idx):
        self.pipe.restart(kind, idx)
        self.record(f"restarted {kind} #{idx}")

    def agg_moved(self):
        """Aggregator partitions about to move (kill, scale): the new owner
        holds only the windows still open (see redis_cut_after_flush)."""
        self.agg_restart_max_ts.append((time.time(), end_offsets(self.pipe.bs,
                                                                 self.pipe.t["raw"])))

    def do_scale(self, kind, n):
        live = self.pipe.running(kind)
        if kind == "aggregator" and len(live) != n:
            self.agg_moved()
        while len(live) < n:
            s = self.pipe.start(kind)
            live.append(s)
        stopped = []
        while len(live) > n:
            s = live.pop()
            rc = self.pipe.stop(kind, s.idx)
            stopped.append(f"#{s.idx} exit {rc}")
            assert rc == 0, f"{kind} #{s.idx} exit {rc} on SIGTERM"
        self.record(f"scale {kind} to {n} (running: {sorted(x.idx for x in live)}"
                    + (f"; stopped {', '.join(stopped)}" if stopped else "") + ")")

    def do_kafka_restart(self):
        t = time.time()
        self.stack.restart_kafka()
        self.record(f"Kafka broker restarted (down and up in {time.time() - t:.0f}s)")

    def do_redis_down(self, seconds):
        self.stack.stop_redis()
        self.record(f"Redis stopped for {seconds}s")
        return [(seconds, "redis_up", ())]

    def do_redis_up(self):
        self.stack.start_redis()
        self.record("Redis started again, FLUSHALL")
        deadline = time.time() + 60
        while time.time() < deadline:
            oks = []
            for s in self.pipe.running("aggregator"):
                try:
                    oks.append(http_get(s.url + "/readyz")[0] == 200)
                except OSError:
                    oks.append(False)
            if oks and all(oks):
                break
            time.sleep(0.2)
        self.redis_back_at = end_offsets(self.pipe.bs, self.pipe.t["raw"])
        self.redis_back_time = time.time()
        time.sleep(2)
        self.redis_rewrites = self.pipe.metric("aggregator",
                                               "aggregator_redis_full_rewrites_total")
        self.record(f"aggregator ready again, Redis rewritten in full "
                    f"{self.redis_rewrites:.0f} time(s) so far")

    def do_disk_fill(self, seconds):
        left = self.disk.fill()
        self.record(f"warehouse file system filled ({left} bytes left) for {seconds}s")
        return [(seconds, "disk_free", ())]

    def do_disk_free(self):
        errs = sum(self.pipe.metric("lake-writer", m) for m in (
            "lake_write_errors_total", "lake_storage_errors_total", "lake_commit_failures_total"))
        self.disk.free()
        self.record(f"warehouse space freed (lake-writer write and storage errors + commit failures "
                    f"so far: {errs:.0f})")
        self.disk_errors = errs


def max_ts_below(raw_records, ends):
    """The highest event time among the raw records below the given end
    offsets (per partition)."""
    best = None
    for p, off, _, value, _ in raw_records:
        if off < ends[p]:
            ev = decode_event(value)
            if ev is not None:
                t = ms(ev["timestamp"])
                best = t if best is None else max(best, t)
    return best


def redis_cut_after_flush(raw_records, faults):
    """Windows Redis must hold after a FLUSHALL: the aggregator rewrites what
    it has in memory, i.e. the windows still open and the closed windows
    kept for their Redis TTL (event time, README "Redis restarted empty"),
    but only those closed since its last restart. So a window is required
    when it starts after every bound below."""
    if faults.redis_back_at is None:
        return None
    top = max_ts_below(raw_records, faults.redis_back_at) or 0
    cut = {size: top - KEEP_MS[size] + size + 60000 for size in SIZES}
    for when, ends in faults.agg_restart_max_ts:
        if when > faults.redis_back_time:
            continue
        t = max_ts_below(raw_records, ends)
        if t is not None:
            cut = {size: max(c, t) for size, c in cut.items()}
    return cut
