"""lake-writer against a real Kafka broker, checked by independent readers.

- pyiceberg loads every table from its metadata, lists the snapshots and plans
  files for a partition filter (pruning must show);
- fastavro reads every data file the plan lists; the rows must equal what was
  produced to Kafka, exactly once;
- Iceberg's Java library (iceberg-core + iceberg-data from Maven Central, see
  iceberg-java/) reads every row of every table, when Maven can fetch it;
- the writer is killed with SIGKILL at random points (>= 5 times) while input
  flows: still exactly once, and no orphan data file is left;
- the S3 option against moto's S3 server (a real HTTP server, not a stub).
"""
import datetime
import decimal
import glob
import io
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

from conftest import ROOT, bin_path, create_topics, free_port, http_get

fastavro = pytest.importorskip("fastavro")
confluent_kafka = pytest.importorskip("confluent_kafka")

SCHEMAS = os.path.join(ROOT, "schemas")
JAVA_DIR = os.path.join(os.path.dirname(__file__), "iceberg-java")
TABLES = ["events_raw", "sessions", "metrics_1min", "metrics_5min", "metrics_hourly",
          "late_events"]
BASE_MS = 1705314600000  # 2024-01-15T10:30:00Z


def load_schema(name):
    with open(os.path.join(SCHEMAS, name)) as f:
        return fastavro.parse_schema(json.load(f))


EVENT = load_schema("event.avsc")
SESSION = load_schema("session.avsc")
WINDOW = load_schema("window_result.avsc")


def frame(schema, schema_id, rec):
    b = io.BytesIO()
    b.write(b"\x00" + struct.pack(">I", schema_id))
    fastavro.schemaless_writer(b, schema, rec)
    return b.getvalue()



def make_event(i, prefix, spread_s=3 * 86400):
    ts = BASE_MS + (i * 7919 % spread_s) * 1000  # spread over three days by default
    ev = {"event_id": f"{prefix}-{i}", "timestamp": ts, "received_at": ts + 3,
          "user_id": f"u{i % 97}", "event_type": "purchase" if i % 5 == 0 else "page_view",
          "page_url": f"https://shop.test/p/{i % 13}", "session_id": None, "referrer": None,
          "user_agent": "Mozilla/5.0", "ip_address": "10.0.0.0",
          "geo": {"country": "DE", "city": "Berlin"} if i % 2 else None,
          "device": {"type": "mobile", "os": "iOS"} if i % 3 else None,
          "is_bot": i % 11 == 0, "metadata": None}
    if i % 5 == 0:
        ev["metadata"] = {"product_id": f"sku{i % 7}", "category": "shoes", "quantity": 1 + i % 3,
                          "price": decimal.Decimal(f"{i % 100}.25")}
    return ev


def make_session(i):
    start = BASE_MS + i * 60000
    return {"session_id": f"s{i}", "user_id": f"u{i % 50}", "start": start, "end": start + 5000,
            "duration_ms": 5000, "event_count": 3, "page_views": 2, "entry_url": "/a",
            "exit_url": "/b", "device_type": "desktop", "country": "FR", "converted": i % 4 == 0,
            "revenue": decimal.Decimal("12.500000"), "revision": i % 2, "tombstone": False}


def make_window(i):
    size = [60000, 300000, 3600000][i % 3]
    start = BASE_MS - BASE_MS % size + (i // 3) * size
    return {"window_size_ms": size, "window_start": start, "window_end": start + size,
            "dimension": "total" if i % 2 else "url", "revision": 0, "final": True,
            "events": 10 + i, "page_views": 5, "purchases": 1, "revenue": decimal.Decimal("3.5"),
            "unique_users": 4, "counts": {} if i % 2 else {"/a": 3, "/b": i},
            "top_urls": [{"url": "/a", "count": 3}] if i % 2 else [], "sessions_closed": 2,
            "avg_session_ms": 1234.5, "bounce_rate": 0.25, "conversion_rate": 0.5}


class Topics:
    def __init__(self, stack, unique, parts=(3, 2, 2, 1)):
        self.raw = f"lw.raw.{unique}"
        self.sessions = f"lw.sessions.{unique}"
        self.metrics = f"lw.metrics.{unique}"
        self.late = f"lw.late.{unique}"
        create_topics(stack, f"{self.raw}:{parts[0]}", f"{self.sessions}:{parts[1]}",
                      f"{self.metrics}:{parts[2]}", f"{self.late}:{parts[3]}")

    def env(self):
        return {"TOPIC_RAW": self.raw, "TOPIC_SESSIONS": self.sessions,
                "TOPIC_METRICS": self.metrics, "TOPIC_LATE": self.late}


def producer(stack, transactional=False):
    conf = {"bootstrap.servers": stack["KAFKA_BOOTSTRAP"], "linger.ms": 5,
            "enable.idempotence": True}
    if transactional:
        conf["transactional.id"] = f"lw-test-{uuid.uuid4().hex[:8]}"
    return confluent_kafka.Producer(conf)


def produce_all(p, topic, values, key=lambda i: None, headers=None):
    for i, v in enumerate(values):
        while True:
            try:
                p.produce(topic, value=v, key=key(i), headers=headers(i) if headers else None)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(30) == 0


def writer_env(stack, topics, warehouse, port, **extra):
    env = {"KAFKA_BOOTSTRAP": stack["KAFKA_BOOTSTRAP"], "LAKE_WAREHOUSE": warehouse,
           "LAKE_ADMIN_PORT": port, "LAKE_ADMIN_ADDR": "127.0.0.1",
           "LAKE_GROUP_ID": f"lw-{uuid.uuid4().hex[:8]}", "LAKE_ROLL_AGE": "1s",
           "LAKE_FSYNC": "false", "LAKE_LOG_LEVEL": "info"}
    env.update(topics.env())
    env.update({k: str(v) for k, v in extra.items()})
    return env


def current_metadata(tdir):
    mds = glob.glob(os.path.join(tdir, "metadata", "v*.metadata.json"))
    if not mds:
        return None, None
    path = max(mds, key=lambda p: int(os.path.basename(p)[1:].split(".")[0]))
    with open(path) as f:
        return path, json.load(f)


def total_records(meta):
    cur = meta.get("current-snapshot-id")
    for s in meta.get("snapshots", []):
        if s["snapshot-id"] == cur:
            return int(s["summary"]["total-records"])
    return 0


def wait_rows(warehouse, want, timeout=60, proc=None):
    deadline = time.time() + timeout
    got = {}
    while time.time() < deadline:
        got = {}
        for t in want:
            _, meta = current_metadata(os.path.join(warehouse, t))
            got[t] = total_records(meta) if meta else 0
        if all(got[t] >= want[t] for t in want):
            return got
        if proc is not None and proc.p.poll() is not None:
            raise AssertionError(f"lake-writer exited {proc.p.returncode}: {proc.tail()}")
        time.sleep(0.2)
    raise AssertionError(f"rows {got} != {want} after {timeout}s"
                         + (f": {proc.tail()}" if proc else ""))


def pyiceberg_rows(metadata_path, row_filter=None, snapshot_id=None):
    """Plans with pyiceberg; reads every planned data file with fastavro."""
    from pyiceberg.table import StaticTable
    t = StaticTable.from_metadata(metadata_path)
    kw = {}
    if row_filter is not None:
        kw["row_filter"] = row_filter
    if snapshot_id is not None:
        kw["snapshot_id"] = snapshot_id
    scan = t.scan(**kw)
    tasks = list(scan.plan_files())
    rows = []
    for task in tasks:
        path = task.file.file_path
        assert path.startswith("file://"), path
        with open(path[len("file://"):], "rb") as f:
            r = fastavro.reader(f)
            # The header must carry the exact schema with Iceberg field ids.
            sch = json.loads(r.metadata["avro.schema"])
            assert all("field-id" in fld for fld in sch["fields"])
            got = list(r)
        assert len(got) == task.file.record_count
        rows.extend(got)
    return t, tasks, rows


@pytest.fixture
def warehouse():
    d = tempfile.mkdtemp(prefix="lw-wh-")
    yield d
    if os.environ.get("LW_KEEP"):
        print("kept warehouse", d)
    else:
        shutil.rmtree(d, ignore_errors=True)


def java_reader():
    """Returns the command that runs the Java reader, or None (skip)."""
    script = os.path.join(JAVA_DIR, "run.sh")
    if shutil.which("mvn") is None or shutil.which("java") is None:
        return None
    r = subprocess.run([script, "--build"], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        print("java reader unavailable:", r.stdout[-2000:], r.stderr[-2000:])
        return None
    return [script]


def test_all_tables_exactly_once(stack, unique, procs, warehouse):
    topics = Topics(stack, unique)
    n_ev, n_ses, n_win, n_late = 3000, 120, 90, 40
    events = [make_event(i, unique) for i in range(n_ev)]
    p = producer(stack)
    produce_all(p, topics.raw, [frame(EVENT, 1, e) for e in events],
                key=lambda i: events[i]["user_id"].encode())
    produce_all(p, topics.sessions, [frame(SESSION, 2, make_session(i)) for i in range(n_ses)],
                key=lambda i: f"u{i}".encode())
    produce_all(p, topics.metrics, [frame(WINDOW, 3, make_window(i)) for i in range(n_win)])
    late_vals = [frame(EVENT, 1, make_event(10000 + i, unique)) if i % 8 else b"\x07garbage"
                 for i in range(n_late)]
    produce_all(p, topics.late, late_vals,
                headers=lambda i: [("reason", b"late" if i % 8 else b"undecodable")])
    # One undecodable record on raw: covered, not a row.
    produce_all(p, topics.raw, [b"\x00\x00\x00\x00\x01\xff"])

    port = free_port()
    w = procs("lake-writer", writer_env(stack, topics, warehouse, port))
    w.wait_http(f"http://127.0.0.1:{port}/healthz")
    want = {"events_raw": n_ev, "sessions": n_ses, "metrics_1min": n_win // 3,
            "metrics_5min": n_win // 3, "metrics_hourly": n_win // 3, "late_events": n_late}
    wait_rows(warehouse, want, timeout=60, proc=w)
    w.wait_http(f"http://127.0.0.1:{port}/readyz")

    code, text = http_get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    for needle in ['lake_rows_committed_total{table="events_raw"} 3000',
                   'lake_commit_seconds_count{table="events_raw"}',
                   'lake_files_per_commit_bucket{table="sessions"',
                   'lake_committed_offset{table="events_raw",topic="' + topics.raw
                   + '",partition="0"}',
                   'lake_bytes_committed_total{table="late_events"}',
                   'lake_undecodable_total{topic="' + topics.raw + '"} 1']:
        assert needle in text, needle
    assert w.term() == 0

    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan
    # events_raw: all rows once, equal to what was produced.
    md, _ = current_metadata(os.path.join(warehouse, "events_raw"))
    t, tasks, rows = pyiceberg_rows(md)
    assert len(t.snapshots()) >= 1
    assert t.format_version == 2
    assert [f.name for f in t.spec().fields] == ["timestamp_day", "timestamp_hour"]
    assert len(rows) == n_ev
    by_id = {r["event_id"]: r for r in rows}
    assert len(by_id) == n_ev
    for e in events[:200]:
        r = by_id[e["event_id"]]
        assert int(r["timestamp"].timestamp() * 1000) == e["timestamp"]
        assert r["timestamp"].tzinfo is not None
        assert r["user_id"] == e["user_id"] and r["is_bot"] == e["is_bot"]
        if e["metadata"]:
            assert r["metadata"]["price"] == e["metadata"]["price"]
            assert r["metadata"]["quantity"] == e["metadata"]["quantity"]
        assert (r["geo"] is None) == (e["geo"] is None)
    assert len({(r["kafka_partition"], r["kafka_offset"]) for r in rows}) == n_ev

    # Partition pruning: one hour of one day plans fewer files, all of that hour.
    hour = datetime.datetime(2024, 1, 16, 12, tzinfo=datetime.timezone.utc)
    flt = And(GreaterThanOrEqual("timestamp", hour.isoformat()),
              LessThan("timestamp", (hour + datetime.timedelta(hours=1)).isoformat()))
    _, ptasks, prows = pyiceberg_rows(md, row_filter=flt)
    assert 0 < len(ptasks) < len(tasks), (len(ptasks), len(tasks))
    expect = [e for e in events
              if hour.timestamp() * 1000 <= e["timestamp"] < hour.timestamp() * 1000 + 3600000]
    assert {r["event_id"] for r in prows} == {e["event_id"] for e in expect}

    # The other tables.
    md, _ = current_metadata(os.path.join(warehouse, "sessions"))
    t, tasks, rows = pyiceberg_rows(md)
    assert sorted(r["session_id"] for r in rows) == sorted(f"s{i}" for i in range(n_ses))
    assert all(r["revenue"] == decimal.Decimal("12.500000") for r in rows)
    for name, size in (("metrics_1min", 60000), ("metrics_5min", 300000),
                       ("metrics_hourly", 3600000)):
        md, _ = current_metadata(os.path.join(warehouse, name))
        t, tasks, rows = pyiceberg_rows(md)
        want_w = [make_window(i) for i in range(n_win) if make_window(i)["window_size_ms"] == size]
        assert len(rows) == len(want_w)
        assert all(r["window_size_ms"] == size for r in rows)
        assert sorted(r["events"] for r in rows) == sorted(x["events"] for x in want_w)
        assert any(r["counts"] for r in rows) and any(r["top_urls"] for r in rows)
    md, _ = current_metadata(os.path.join(warehouse, "late_events"))
    t, tasks, rows = pyiceberg_rows(md)
    assert len(rows) == n_late
    bad = [r for r in rows if r["reason"] == "undecodable"]
    assert len(bad) == n_late // 8 and all(r["raw_value"] == b"\x07garbage" for r in bad)
    assert {r["event_id"] for r in rows if r["event_id"]} == \
        {f"{unique}-{10000 + i}" for i in range(n_late) if i % 8}

    # version-hint.text: the bare number.
    with open(os.path.join(warehouse, "events_raw", "metadata", "version-hint.text")) as f:
        hint = f.read()
    assert hint.isdigit()

    # Iceberg's Java library reads every row of every table.
    cmd = java_reader()
    if cmd is None:
        pytest.skip("Maven could not provide iceberg-core/iceberg-data: Java check skipped")
    want_java = dict(want)
    r = subprocess.run(cmd + [warehouse] + TABLES, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    counts = {}
    for line in r.stdout.splitlines():
        if line.startswith("TABLE "):
            _, name, n = line.split()
            counts[name] = int(n)
    assert counts == want_java, r.stdout


def test_kill9_exactly_once(stack, unique, procs, warehouse):
    """SIGKILL at random points while input flows; rows stay exactly once."""
    topics = Topics(stack, unique, parts=(4, 1, 1, 1))
    rnd = random.Random(int(unique, 16))
    p = producer(stack)
    total = 0
    stop = threading.Event()

    def feed():
        nonlocal total
        i = 0
        # Input keeps flowing until the kill plan is over (capped), so that
        # every writer of the plan, however slow the machine, has rows to
        # commit and so reaches its crash point.
        while not stop.is_set() and i < 200000:
            # Live traffic: the events of a run fall in an hour or two.
            batch = [make_event(j, unique, spread_s=5400) for j in range(i, i + 500)]
            produce_all(p, topics.raw, [frame(EVENT, 1, e) for e in batch],
                        key=lambda k: batch[k]["user_id"].encode())
            i += len(batch)
            total = i
            time.sleep(0.25)

    th = threading.Thread(target=feed)
    th.start()
    port = free_port()
    env = writer_env(stack, topics, warehouse, port, LAKE_ROLL_AGE="300ms",
                     LAKE_TABLES="events_raw", LAKE_FSYNC="true", LAKE_ROLL_SIZE="64KiB")
    kills = 0
    # Random instants, and the instants between the steps of a commit
    # (LAKE_CRASH_AT makes the writer SIGKILL itself there).
    plan = [None, "list-written", None, "before-hint", None, "files-closed", None,
            "published"]
    try:
        for point in plan:
            if point is None:
                w = procs("lake-writer", env)
                time.sleep(rnd.uniform(0.8, 3.0))
                w.kill9()
            else:
                w = procs("lake-writer", dict(env, LAKE_CRASH_AT=point))
                w.p.wait(60)
                assert w.p.returncode == -signal.SIGKILL, (point, w.tail())
            kills += 1
    finally:
        stop.set()
        th.join()
    assert kills == len(plan)
    w = procs("lake-writer", env)
    w.wait_http(f"http://127.0.0.1:{port}/healthz")
    wait_rows(warehouse, {"events_raw": total}, timeout=90, proc=w)
    assert w.term() == 0

    md, meta = current_metadata(os.path.join(warehouse, "events_raw"))
    t, tasks, rows = pyiceberg_rows(md)
    ids = [r["event_id"] for r in rows]
    assert len(ids) == total, (len(ids), total)
    assert len(set(ids)) == total
    assert set(ids) == {f"{unique}-{i}" for i in range(total)}
    # Every snapshot stays readable (time travel), row counts grow.
    sizes = []
    for s in t.snapshots()[:: max(1, len(t.snapshots()) // 5)]:
        _, _, srows = pyiceberg_rows(md, snapshot_id=s.snapshot_id)
        sizes.append(len(srows))
        assert len(srows) == int(s.summary["total-records"])
    assert sizes == sorted(sizes)
    # No orphan: every data file on disk is in the current snapshot.
    listed = {task.file.file_path[len("file://"):] for task in tasks}
    on_disk = set(glob.glob(os.path.join(warehouse, "events_raw", "data", "**", "*.avro"),
                            recursive=True))
    assert on_disk == listed, (len(on_disk - listed), len(listed - on_disk))
    assert not glob.glob(os.path.join(warehouse, "events_raw", "lw-journal", "*"))


def test_two_writers_share_partitions(stack, unique, procs, warehouse):
    """Two writers in one group split the partitions and commit to the same
    tables (concurrent commits are rebased); one stops, the other takes its
    partitions over from the snapshot offsets: still exactly once."""
    topics = Topics(stack, unique, parts=(4, 1, 1, 1))
    p = producer(stack)
    group = f"lw-{unique}"
    envs = [writer_env(stack, topics, warehouse, free_port(), LAKE_TABLES="events_raw",
                       LAKE_ROLL_AGE="200ms", LAKE_GROUP_ID=group,
                       LAKE_INSTANCE_ID=f"w{k}") for k in range(2)]
    a = procs("lake-writer", envs[0])
    b = procs("lake-writer", envs[1])
    # Both hold partitions (cooperative rebalancing takes two rounds).
    a.wait_http(f"http://127.0.0.1:{envs[0]['LAKE_ADMIN_PORT']}/readyz")
    b.wait_http(f"http://127.0.0.1:{envs[1]['LAKE_ADMIN_PORT']}/readyz")
    n = 0
    for k in range(6):
        batch = [make_event(n + i, unique, spread_s=3600) for i in range(1500)]
        produce_all(p, topics.raw, [frame(EVENT, 1, e) for e in batch],
                    key=lambda i: batch[i]["user_id"].encode())
        n += len(batch)
        if k == 3:
            assert b.term() == 0
        time.sleep(0.5)
    wait_rows(warehouse, {"events_raw": n}, timeout=90, proc=a)
    assert a.term() == 0
    md, meta = current_metadata(os.path.join(warehouse, "events_raw"))
    _, _, rows = pyiceberg_rows(md)
    ids = [r["event_id"] for r in rows]
    assert len(ids) == n and len(set(ids)) == n
    writers = {s["summary"].get("lake.writer") for s in meta["snapshots"]}
    assert writers == {"w0", "w1"}, writers


def test_fenced_consumer_starts_over(stack, unique, procs, warehouse):
    """A static member fenced by the broker (FENCED_INSTANCE_ID, a fatal
    consumer error: here another consumer joins with the writer's
    group.instance.id, as the broker sees it after a coordinator restart)
    starts over from the table snapshots instead of exiting: still running,
    a restart counted, every row exactly once."""
    topics = Topics(stack, unique, parts=(2, 1, 1, 1))
    p = producer(stack)
    group = f"lw-{unique}"
    port = free_port()
    env = writer_env(stack, topics, warehouse, port, LAKE_TABLES="events_raw",
                     LAKE_ROLL_AGE="200ms", LAKE_GROUP_ID=group, LAKE_INSTANCE_ID="fenced-w")
    w = procs("lake-writer", env)
    w.wait_http(f"http://127.0.0.1:{port}/readyz")
    first = [make_event(i, unique, spread_s=3600) for i in range(2000)]
    produce_all(p, topics.raw, [frame(EVENT, 1, e) for e in first],
                key=lambda i: first[i]["user_id"].encode())
    wait_rows(warehouse, {"events_raw": len(first)}, timeout=60, proc=w)

    intruder = confluent_kafka.Consumer({
        "bootstrap.servers": stack["KAFKA_BOOTSTRAP"], "group.id": group,
        "group.instance.id": "fenced-w", "session.timeout.ms": 10000,
        "partition.assignment.strategy": "cooperative-sticky", "enable.auto.commit": False,
        "error_cb": lambda e: None})
    intruder.subscribe([topics.raw])
    deadline = time.time() + 30
    restarts = 0.0
    while time.time() < deadline and restarts < 1:
        intruder.poll(0.2)
        _, body = http_get(f"http://127.0.0.1:{port}/metrics")
        for line in body.splitlines():
            if line.startswith("lake_consumer_restarts_total "):
                restarts = float(line.split()[1])
    try:
        intruder.close()
    except confluent_kafka.KafkaException:
        pass  # fenced in its turn by the writer's rejoin
    assert restarts >= 1, f"the writer was never fenced and restarted: {w.tail()}"

    second = [make_event(len(first) + i, unique, spread_s=3600) for i in range(2000)]
    produce_all(p, topics.raw, [frame(EVENT, 1, e) for e in second],
                key=lambda i: second[i]["user_id"].encode())
    n = len(first) + len(second)
    wait_rows(warehouse, {"events_raw": n}, timeout=90, proc=w)
    assert w.p.poll() is None
    md, _ = current_metadata(os.path.join(warehouse, "events_raw"))
    _, _, rows = pyiceberg_rows(md)
    ids = [r["event_id"] for r in rows]
    assert len(ids) == n and len(set(ids)) == n, (len(ids), len(set(ids)), n)
    assert w.term() == 0


def test_expire_snapshots_is_explicit(stack, unique, procs, warehouse):
    topics = Topics(stack, unique, parts=(1, 1, 1, 1))
    p = producer(stack)
    port = free_port()
    env = writer_env(stack, topics, warehouse, port, LAKE_TABLES="events_raw",
                     LAKE_ROLL_AGE="200ms")
    w = procs("lake-writer", env)
    for k in range(3):
        produce_all(p, topics.raw, [frame(EVENT, 1, make_event(k * 100 + i, unique))
                                    for i in range(100)])
        wait_rows(warehouse, {"events_raw": (k + 1) * 100}, proc=w)
    assert w.term() == 0
    md, meta = current_metadata(os.path.join(warehouse, "events_raw"))
    snaps = meta["snapshots"]
    assert len(snaps) >= 3
    # Time travel: the first snapshot still reads its 100 rows.
    _, _, rows = pyiceberg_rows(md, snapshot_id=snaps[0]["snapshot-id"])
    assert len(rows) == int(snaps[0]["summary"]["total-records"])
    env2 = {"LAKE_WAREHOUSE": warehouse, "PATH": os.environ.get("PATH", "")}
    r = subprocess.run([bin_path("lake-writer"), "expire-snapshots", "events_raw",
                        "--older-than", "0", "--retain-last", "1"],
                       env=env2, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    md2, meta2 = current_metadata(os.path.join(warehouse, "events_raw"))
    assert len(meta2["snapshots"]) == 1
    _, _, rows = pyiceberg_rows(md2)
    assert len(rows) == 300


def moto_server(port):
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    if not os.path.exists(exe):
        pytest.fail("moto[server] not installed (tests/requirements.txt; scripts/deps.sh installs it)")
    log = open(os.path.join(tempfile.gettempdir(), f"moto-{port}.log"), "wb")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("moto_server did not start")


def test_s3_warehouse(stack, unique, procs):
    boto3 = pytest.importorskip("boto3")
    s3port = free_port()
    moto = moto_server(s3port)
    try:
        endpoint = f"http://127.0.0.1:{s3port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="lwkey",
                          aws_secret_access_key="lwsecret", region_name="us-east-1")
        s3.create_bucket(Bucket="lake")
        topics = Topics(stack, unique, parts=(2, 1, 1, 1))
        events = [make_event(i, unique) for i in range(500)]
        p = producer(stack)
        produce_all(p, topics.raw, [frame(EVENT, 1, e) for e in events],
                    key=lambda i: events[i]["user_id"].encode())
        produce_all(p, topics.sessions, [frame(SESSION, 2, make_session(i)) for i in range(20)])
        port = free_port()
        staging = tempfile.mkdtemp(prefix="lw-stg-")
        env = writer_env(stack, topics, "s3://lake/wh", port, LAKE_S3_ENDPOINT=endpoint,
                         LAKE_S3_ACCESS_KEY="lwkey", LAKE_S3_SECRET_KEY="lwsecret",
                         LAKE_STAGING_DIR=staging, LAKE_TABLES="events_raw,sessions")
        w = procs("lake-writer", env)

        def s3_total(table):
            try:
                hint = s3.get_object(Bucket="lake",
                                     Key=f"wh/{table}/metadata/version-hint.text")["Body"].read()
                n = int(hint)
                while True:
                    try:
                        s3.head_object(Bucket="lake", Key=f"wh/{table}/metadata/v{n + 1}.metadata.json")
                        n += 1
                    except Exception:
                        break
                body = s3.get_object(Bucket="lake",
                                     Key=f"wh/{table}/metadata/v{n}.metadata.json")["Body"].read()
                return n, json.loads(body)
            except Exception:
                return 0, None

        deadline = time.time() + 60
        while time.time() < deadline:
            n, meta = s3_total("events_raw")
            n2, meta2 = s3_total("sessions")
            if meta and meta2 and total_records(meta) >= 500 and total_records(meta2) >= 20:
                break
            if w.p.poll() is not None:
                raise AssertionError(w.tail())
            time.sleep(0.3)
        else:
            raise AssertionError(f"S3 tables not complete: {w.tail()}")
        assert w.term() == 0
        # The server honours the conditional PUT the commit relies on: a
        # version that exists cannot be written again.
        from botocore.exceptions import ClientError
        with pytest.raises(ClientError) as ei:
            s3.put_object(Bucket="lake", Key=f"wh/events_raw/metadata/v{n}.metadata.json",
                          Body=b"{}", IfNoneMatch="*")
        assert ei.value.response["Error"]["Code"] == "PreconditionFailed"
        from pyiceberg.table import StaticTable
        props = {"s3.endpoint": endpoint, "s3.access-key-id": "lwkey",
                 "s3.secret-access-key": "lwsecret", "s3.region": "us-east-1"}
        t = StaticTable.from_metadata(f"s3://lake/wh/events_raw/metadata/v{n}.metadata.json",
                                      properties=props)
        tasks = list(t.scan().plan_files())
        ids = []
        for task in tasks:
            assert task.file.file_path.startswith("s3://lake/wh/events_raw/data/")
            key = task.file.file_path[len("s3://lake/"):]
            body = s3.get_object(Bucket="lake", Key=key)["Body"].read()
            ids.extend(r["event_id"] for r in fastavro.reader(io.BytesIO(body)))
        assert sorted(ids) == sorted(e["event_id"] for e in events)
        assert not os.listdir(staging)
    finally:
        moto.kill()
        moto.wait()


def test_help_and_bad_config():
    r = subprocess.run([bin_path("lake-writer"), "--help"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0 and "LAKE_WAREHOUSE" in r.stdout and "LAKE_ROLL_AGE" in r.stdout
    for env in ({"LAKE_TABLES": "events_raw,nope"}, {"LAKE_ROLL_AGE": "soon"},
                {"LAKE_WAREHOUSE": "s3://bucket/wh"}):
        r = subprocess.run([bin_path("lake-writer")], capture_output=True, text=True, timeout=10,
                           env=dict(os.environ, **env))
        assert r.returncode == 2, (env, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = subprocess.run([bin_path("lake-writer"), "expire-snapshots"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2
