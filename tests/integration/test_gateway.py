"""ingest-gateway against the real broker: every response code of the API,
what reaches Kafka (exactly the accepted events, once each, decoding to the
enriched event with an independent Avro reader), and bad input that must
never crash it.

Each test produces to a topic of its own (gwtest.<unique>) so that what is in
it is exactly what that test sent.
"""
import gzip
import io
import json
import os
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import fastavro
import pytest
from confluent_kafka import Consumer, TopicPartition

from conftest import ROOT, bin_path, create_topics, free_port, http_get

SCHEMA = fastavro.parse_schema(json.load(open(os.path.join(ROOT, "schemas", "event.avsc"))))
KEY = "test-key-1"



def now_ms():
    return int(time.time() * 1000)


def event(eid=None, user="u1", etype="click", **kw):
    ev = {"event_id": eid or uuid.uuid4().hex, "timestamp": now_ms() - 1000, "user_id": user,
          "event_type": etype}
    if etype == "page_view":
        ev["page_url"] = "https://shop.example.com/"
    ev.update(kw)
    return ev


class Gateway:
    def __init__(self, procs, stack, topic, **env):
        self.port = free_port()
        base = {"KAFKA_BOOTSTRAP": stack["KAFKA_BOOTSTRAP"], "GATEWAY_PORT": self.port,
                "GATEWAY_ADDR": "127.0.0.1", "GATEWAY_TOPIC": topic,
                "GATEWAY_WRITE_KEYS": f"tests:{KEY},other:second-key",
                "GATEWAY_LOG_LEVEL": "info"}
        base.update(env)
        self.proc = procs("ingest-gateway", base)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, want=200):
        self.proc.wait_http(self.url + "/readyz", want=want, timeout=30)
        return self

    def post(self, body, headers=None, key=KEY, path="/v1/events", timeout=30):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        h = {"Content-Type": "application/json"}
        if key:
            h["Authorization"] = f"Bearer {key}"
        h.update(headers or {})
        req = urllib.request.Request(self.url + path, data=body, headers=h, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                js = json.loads(raw) if raw else {}
            except ValueError:
                js = {"raw": raw.decode(errors="replace")}
            return e.code, dict(e.headers), js

    def alive(self):
        assert self.proc.p.poll() is None, self.proc.tail()
        code, _ = http_get(self.url + "/healthz")
        assert code == 200

    def metrics(self):
        code, text = http_get(self.url + "/metrics")
        assert code == 200
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, val = line.rpartition(" ")
                out[name] = float(val)
        return out


def raw_http(port, data, read_timeout=5.0):
    """Sends raw bytes; returns what the server answered before closing (or timing out)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
    try:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        s.close()


def consume_all(stack, topic, expect=None, idle=3.0, timeout=60):
    """Every record of the topic: [(key, value bytes, partition)]."""
    c = Consumer({"bootstrap.servers": stack["KAFKA_BOOTSTRAP"], "group.id": "gwtest-" + uuid.uuid4().hex,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    md = c.list_topics(topic, timeout=10)
    parts = [TopicPartition(topic, p, 0) for p in md.topics[topic].partitions]
    c.assign(parts)
    out = []
    deadline = time.time() + timeout
    last = time.time()
    while time.time() < deadline:
        m = c.poll(0.2)
        if m is None:
            if (expect is None or len(out) >= expect) and time.time() - last > idle:
                break
            continue
        if m.error():
            continue
        out.append((m.key(), m.value(), m.partition()))
        last = time.time()
    c.close()
    return out


def decode(value):
    assert value[0] == 0, "magic byte"
    schema_id = struct.unpack(">I", value[1:5])[0]
    assert schema_id == 1
    return fastavro.schemaless_reader(io.BytesIO(value[5:]), SCHEMA)


@pytest.fixture
def topic(stack, unique):
    name = f"gwtest.{unique}"
    create_topics(stack, f"{name}:4")
    return name


# --------------------------------------------------------------- accepted


def test_accepts_and_produces_enriched_avro(stack, procs, topic):
    gw = Gateway(procs, stack, topic).wait_ready()
    ua_iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) Mobile/15E148 Safari/604.1"
    single = event(user="alice", etype="page_view", user_agent=ua_iphone, referrer="https://g.co/",
                   geo={"country": "DE", "city": "Berlin"}, session_id="s1", unknown_top=1)
    code, _, body = gw.post(single)
    assert (code, body) == (202, {"accepted": 1})

    batch = [event(user=f"u{i}", etype="product_view", ip_address="198.51.100.77",
                   metadata={"product_id": f"p{i}", "category": "books"}) for i in range(5)]
    batch.append(event(user="bob", etype="purchase", timestamp="2024-01-15T10:30:00.250+01:00",
                       metadata={"product_id": "p9", "price": 12.5, "quantity": 2},
                       ip_address="2001:db8:1:2:3:4:5:6", user_agent="Googlebot/2.1"))
    batch[-1]["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S.250Z", time.gmtime(time.time() - 60))
    code, _, body = gw.post(batch)
    assert (code, body) == (202, {"accepted": 6})

    nd = [event(user="carol") for _ in range(3)]
    code, _, body = gw.post("\n".join(json.dumps(e) for e in nd) + "\n",
                            headers={"Content-Type": "application/x-ndjson"})
    assert (code, body) == (202, {"accepted": 3})

    gz = [event(user="dave") for _ in range(4)]
    code, _, body = gw.post(gzip.compress(json.dumps(gz).encode()),
                            headers={"Content-Encoding": "gzip"})
    assert (code, body) == (202, {"accepted": 4})

    sent = {e["event_id"]: e for e in [single] + batch + nd + gz}
    recs = consume_all(stack, topic, expect=len(sent))
    ids = [decode(v)["event_id"] for _, v, _ in recs]
    assert sorted(ids) == sorted(sent), "every accepted event exactly once"
    t_now = now_ms()
    for key, value, _ in recs:
        ev = decode(value)
        src = sent[ev["event_id"]]
        assert key.decode() == src["user_id"]
        assert ev["user_id"] == src["user_id"] and ev["event_type"] == src["event_type"]
        assert abs(ev["received_at"].timestamp() * 1000 - t_now) < 120000
        # no full IP address reaches Kafka: peer 127.0.0.1 -> 127.0.0.0
        ip = ev["ip_address"]
        if "ip_address" not in src:
            assert ip == "127.0.0.0"
        elif ":" in src["ip_address"]:
            assert ip == "2001:db8:1::"
        else:
            assert ip == "198.51.100.0"
    by_id = {decode(v)["event_id"]: decode(v) for _, v, _ in recs}
    a = by_id[single["event_id"]]
    assert a["device"] == {"type": "mobile", "os": "iOS"} and a["is_bot"] is False
    assert a["geo"] == {"country": "DE", "city": "Berlin"} and a["session_id"] == "s1"
    assert a["page_url"] == "https://shop.example.com/" and a["referrer"] == "https://g.co/"
    assert a["timestamp"].timestamp() * 1000 == single["timestamp"]
    p = by_id[batch[-1]["event_id"]]
    assert p["is_bot"] is True and p["device"]["type"] == "bot"
    assert str(p["metadata"]["price"]) in ("12.500000", "12.5") and p["metadata"]["quantity"] == 2
    m = gw.metrics()
    assert m['gateway_requests_total{status="202"}'] == 4
    assert m["gateway_events_accepted_total"] == len(sent)
    assert m["gateway_unknown_fields_total"] == 1
    assert "gateway_producer_queue_depth" in m and m["gateway_kafka_ready"] == 1
    assert m["gateway_request_duration_seconds_count"] >= 4
    assert m["gateway_produce_duration_seconds_count"] == 4


def test_partial_batch_and_400(stack, procs, topic):
    gw = Gateway(procs, stack, topic, GATEWAY_MAX_ERRORS="2").wait_ready()
    good = [event(), event(user="u2")]
    bad = [{"event_id": "x"}, event(etype="page_view", page_url=None),
           event(etype="bogus"), event(timestamp="2999-01-01T00:00:00Z")]
    bad[1].pop("page_url")
    code, _, body = gw.post([bad[0], good[0], bad[1], bad[2], good[1], bad[3]])
    assert code == 202
    assert body["accepted"] == 2 and body["rejected"] == 4
    assert len(body["errors"]) == 2 and body["errors_truncated"] is True
    assert body["errors"][0]["index"] == 0 and body["errors"][0]["field"]
    assert body["errors"][1]["index"] == 2 and body["errors"][1]["field"] == "page_url"
    assert all("error" in e for e in body["errors"])

    code, _, body = gw.post([bad[2], bad[3]])
    assert code == 400 and body["accepted"] == 0 and body["rejected"] == 2
    code, _, body = gw.post("{not json")
    assert code == 400 and "error" in body
    code, _, body = gw.post("[]")
    assert code == 400
    code, _, body = gw.post("42")
    assert code == 400

    recs = consume_all(stack, topic, expect=2)
    assert sorted(decode(v)["event_id"] for _, v, _ in recs) == sorted(e["event_id"] for e in good)
    m = gw.metrics()
    assert m['gateway_requests_total{status="400"}'] == 4
    assert m['gateway_events_rejected_total{reason="future_timestamp"}'] == 2
    assert m['gateway_events_rejected_total{reason="missing_field"}'] >= 2


# ------------------------------------------------------------ refusals


def test_auth_401_and_key_forms(stack, procs, topic):
    gw = Gateway(procs, stack, topic).wait_ready()
    code, _, body = gw.post(event(), key=None)
    assert code == 401 and "missing" in body["error"]
    code, _, _ = gw.post(event(), key="wrong")
    assert code == 401
    code, _, _ = gw.post(event(), key=None, headers={"X-Write-Key": "second-key"})
    assert code == 202
    code, _, _ = gw.post(event(), key=None, path=f"/v1/events?write_key={KEY}")
    assert code == 202
    code, _, _ = gw.post(event(), key=None, headers={"Authorization": "Basic abc"})
    assert code == 401
    assert len(consume_all(stack, topic, expect=2)) == 2


def test_auth_off(stack, procs, topic):
    gw = Gateway(procs, stack, topic, GATEWAY_AUTH="off", GATEWAY_WRITE_KEYS="").wait_ready()
    code, _, _ = gw.post(event(), key=None)
    assert code == 202
    assert "OFF" in gw.proc.tail()


def test_bad_config_exits_2(stack, procs):
    for env in ({"GATEWAY_WRITE_KEYS": ""}, {"GATEWAY_PORT": "99999"},
                {"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/99", "GATEWAY_AUTH": "off"},
                {"GATEWAY_CORS_ORIGINS": "nohost", "GATEWAY_AUTH": "off"}):
        full = dict(os.environ)
        full.update({"KAFKA_BOOTSTRAP": stack["KAFKA_BOOTSTRAP"]})
        full.update(env)
        r = subprocess.run([bin_path("ingest-gateway")], env=full, capture_output=True, timeout=20)
        assert r.returncode == 2, (env, r.stderr)
        assert len(r.stderr.decode().strip().splitlines()) == 1


def test_413_too_large(stack, procs, topic):
    gw = Gateway(procs, stack, topic, GATEWAY_MAX_REQUEST_BYTES="64KiB").wait_ready()
    big = [event(user="u", referrer="x" * 1000) for _ in range(100)]  # ~110 KiB
    code, _, body = gw.post(big)
    assert code == 413
    # a gzip bomb: small on the wire, 10 MiB inflated
    bomb = gzip.compress(b"[" + b" " * (10 << 20) + b"]")
    assert len(bomb) < 64 * 1024
    code, _, body = gw.post(bomb, headers={"Content-Encoding": "gzip"})
    assert code == 413
    # 10 000 elements: over the 1000 events of a request
    code, _, body = gw.post("[" + ",".join(["{}"] * 10000) + "]")
    assert code == 413
    # one event over 32 KiB inside an accepted request
    code, _, body = gw.post([event(referrer="y" * 40000), event()])
    assert code == 202 and body["accepted"] == 1 and body["errors"][0]["reason"] == "too_large"
    gw.alive()


def test_429_rate_limit(stack, procs, topic):
    gw = Gateway(procs, stack, topic, GATEWAY_RATE_LIMIT="5", GATEWAY_RATE_BURST="10").wait_ready()
    code, _, _ = gw.post([event() for _ in range(8)])
    assert code == 202
    code, headers, body = gw.post([event() for _ in range(8)])
    assert code == 429
    assert int(headers["Retry-After"]) >= 1 and body["retry_after"] >= 1
    # the other key has its own bucket
    code, _, _ = gw.post([event() for _ in range(8)], key="second-key")
    assert code == 202
    assert len(consume_all(stack, topic, expect=16)) == 16


def test_503_kafka_unreachable(stack, procs, topic):
    gw = Gateway(procs, stack, topic, KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    gw.wait_ready(want=503)
    code, body = http_get(gw.url + "/readyz")
    assert code == 503 and "kafka" in body
    code, headers, body = gw.post([event(), event()])
    assert code == 503 and int(headers["Retry-After"]) >= 1 and body["accepted"] == 0
    gw.alive()


def test_503_when_delivery_fails_and_queue_full(stack, procs, unique):
    # A topic that does not exist (no auto-creation): deliveries wait in the
    # producer queue until the delivery timeout, then fail.
    gw = Gateway(procs, stack, f"gwtest.missing.{unique}", GATEWAY_DELIVERY_TIMEOUT="4s",
                 GATEWAY_QUEUE_MAX_MESSAGES="1000").wait_ready()
    first = {}
    t = threading.Thread(target=lambda: first.update(r=gw.post([event() for _ in range(1000)])))
    t0 = time.time()
    t.start()
    deadline = time.time() + 3
    while time.time() < deadline and gw.metrics().get("gateway_producer_queue_depth", 0) < 1000:
        time.sleep(0.05)
    # the queue is full: refused at once, nothing produced
    code, headers, body = gw.post([event(), event()])
    assert code == 503 and "queue full" in body["error"] and "Retry-After" in headers
    assert body["accepted"] == 0
    t.join(30)
    code, headers, body = first["r"]
    assert code == 503, body
    assert body["accepted"] == 0 and body["not_stored"] == 1000 and "Retry-After" in headers
    assert time.time() - t0 < 20
    m = gw.metrics()
    assert m["gateway_events_not_stored_total"] == 1002
    assert m['gateway_requests_total{status="503"}'] == 2
    gw.alive()


def test_methods_paths_and_encodings(stack, procs, topic):
    gw = Gateway(procs, stack, topic).wait_ready()
    code, _ = http_get(gw.url + "/v1/events")
    assert code == 405
    code, _ = http_get(gw.url + "/nope")
    assert code == 404
    code, _, _ = gw.post(event(), headers={"Content-Encoding": "br"})
    assert code == 415


def test_cors(stack, procs, topic):
    gw = Gateway(procs, stack, topic, GATEWAY_CORS_ORIGINS="https://shop.example.com,https://*.example.org").wait_ready()
    req = urllib.request.Request(gw.url + "/v1/events", method="OPTIONS", headers={
        "Origin": "https://a.example.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "https://a.example.org"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    code, headers, _ = gw.post(event(), headers={"Origin": "https://shop.example.com"})
    assert code == 202 and headers["Access-Control-Allow-Origin"] == "https://shop.example.com"
    code, _, body = gw.post(event(), headers={"Origin": "https://evil.io"})
    assert code == 403
    req = urllib.request.Request(gw.url + "/v1/events", method="OPTIONS",
                                 headers={"Origin": "https://evil.io"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 403
    assert len(consume_all(stack, topic, expect=1)) == 1


# --------------------------------------------------------- enrichment


@pytest.mark.parametrize("anonymize", ["on", "off"])
def test_forwarded_for_and_anonymize(stack, procs, topic, anonymize):
    gw = Gateway(procs, stack, topic, GATEWAY_ANONYMIZE=anonymize,
                 GATEWAY_TRUSTED_PROXIES="127.0.0.0/8").wait_ready()
    e1, e2, e3 = event(), event(), event(ip_address="192.0.2.200")
    assert gw.post(e1, headers={"X-Forwarded-For": "1.1.1.1, 203.0.113.9"})[0] == 202
    assert gw.post(e2)[0] == 202
    assert gw.post(e3, headers={"X-Forwarded-For": "203.0.113.9"})[0] == 202
    got = {decode(v)["event_id"]: decode(v)["ip_address"] for _, v, _ in consume_all(stack, topic, expect=3)}
    if anonymize == "on":
        assert got == {e1["event_id"]: "203.0.113.0", e2["event_id"]: "127.0.0.0",
                       e3["event_id"]: "192.0.2.0"}
    else:
        assert got == {e1["event_id"]: "203.0.113.9", e2["event_id"]: "127.0.0.1",
                       e3["event_id"]: "192.0.2.200"}


def test_untrusted_forwarded_for_is_ignored(stack, procs, topic):
    gw = Gateway(procs, stack, topic).wait_ready()
    e = event()
    assert gw.post(e, headers={"X-Forwarded-For": "203.0.113.9"})[0] == 202
    (_, v, _), = consume_all(stack, topic, expect=1)
    assert decode(v)["ip_address"] == "127.0.0.0"


# ---------------------------------------------------------- bad input


def test_bad_input_never_crashes(stack, procs, topic):
    gw = Gateway(procs, stack, topic, GATEWAY_READ_TIMEOUT="2s").wait_ready()
    # deep nesting, as a body and inside an event
    code, _, _ = gw.post("[" * 200000 + "]" * 200000)
    assert code == 400
    code, _, body = gw.post([event(metadata={"a": json.loads("[" * 40 + "]" * 40)})])
    assert code == 400 and body["errors"][0]["reason"] == "too_deep"
    # invalid UTF-8
    raw = json.dumps(event(user="\u00e9"), ensure_ascii=False).encode().replace(b"\xc3\xa9", b"\xc3\x28")
    assert b"\xc3\x28" in raw
    code, _, body = gw.post(raw)
    assert code == 400 and body["errors"][0]["reason"] == "invalid_json"
    code, _, _ = gw.post(b"\xff\xfe\x00garbage")
    assert code == 400
    # truncated gzip
    z = gzip.compress(json.dumps([event() for _ in range(50)]).encode())
    code, _, body = gw.post(z[: len(z) // 2], headers={"Content-Encoding": "gzip"})
    assert code == 400 and "gzip" in body["error"]
    code, _, _ = gw.post(b"plain text", headers={"Content-Encoding": "gzip"})
    assert code == 400
    # oversize announced and not announced (chunked)
    code, _, _ = gw.post(b"x" * (2 << 20))
    assert code == 413
    resp = raw_http(gw.port, (f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n").encode()
                    + b"".join(b"10000\r\n" + b"[" * 0x10000 + b"\r\n" for _ in range(20)) + b"0\r\n\r\n")
    assert resp == b"" or b" 413 " in resp.split(b"\r\n")[0]
    # duplicate Content-Length
    body = json.dumps(event()).encode()
    resp = raw_http(gw.port, (f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                              f"Content-Length: {len(body)}\r\nContent-Length: 5\r\n\r\n").encode() + body)
    assert resp == b"" or resp.split(b"\r\n")[0].split()[1] == b"400", resp[:200]
    # a slow body: the connection is closed after the read timeout
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    s.sendall((f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
               "Content-Length: 1000\r\n\r\n{\"event_id\":").encode())
    t0 = time.time()
    assert s.recv(1000) == b""  # closed by the server
    assert 1 <= time.time() - t0 < 8
    s.close()
    # garbage request line and headers
    raw_http(gw.port, b"\x00\x01\x02 / HTTP/1.1\r\n\r\n", read_timeout=2)
    raw_http(gw.port, b"POST /v1/events HTTP/1.1\r\nContent-Length: -5\r\n\r\n", read_timeout=2)
    raw_http(gw.port, b"POST /v1/events HTTP/1.1\r\n" + b"X: " + b"a" * 200000 + b"\r\n\r\n", read_timeout=2)
    gw.alive()
    assert consume_all(stack, topic, idle=1) == []


# -------------------------------------------------------- the loadgen


def test_loadgen_stream_reaches_kafka_exactly(stack, procs, topic, tmp_path):
    gw = Gateway(procs, stack, topic).wait_ready()
    out, summary = tmp_path / "stream.ndjson", tmp_path / "summary.json"
    r = subprocess.run([bin_path("cs-loadgen"), "--url", gw.url + "/v1/events", "--key", KEY,
                        "--count", "3000", "--batch", "50", "--concurrency", "4", "--users", "300",
                        "--dup", "0.03", "--ooo", "0.03", "--late", "0.03", "--invalid", "0.05",
                        "--seed", "42", "--out", str(out), "--summary", str(summary),
                        "--progress", "0", "--gzip"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    s = json.load(open(summary))
    assert s["events"] == 3000 and s["accepted"] == s["expected_accepted"]
    assert s["rejected"] == s["expected_rejected"] == s["by_kind"]["invalid"] > 0
    lines = [json.loads(line) for line in open(out)]
    assert len(lines) == 3000 and [ln["_lg"]["seq"] for ln in lines] == list(range(3000))
    want = sorted(ln["event_id"] for ln in lines if ln["_lg"]["kind"] != "invalid")
    recs = consume_all(stack, topic, expect=len(want))
    got = sorted(decode(v)["event_id"] for _, v, _ in recs)
    assert got == want  # duplicates appear as often as they were sent
    # the same seed gives the same stream
    out2 = tmp_path / "again.ndjson"
    r = subprocess.run([bin_path("cs-loadgen"), "--url", gw.url + "/v1/events", "--key", KEY,
                        "--count", "3000", "--batch", "7", "--concurrency", "9", "--users", "300",
                        "--dup", "0.03", "--ooo", "0.03", "--late", "0.03", "--invalid", "0.05",
                        "--seed", "42", "--start", str(s["start_ms"]), "--out", str(out2),
                        "--progress", "0"], capture_output=True, timeout=120)
    assert r.returncode == 0
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "_lg"} for x in open(p)]
    assert strip(out) == strip(out2)


def test_sigterm_exits_0(stack, procs, topic):
    gw = Gateway(procs, stack, topic).wait_ready()
    assert gw.post([event() for _ in range(10)])[0] == 202
    t0 = time.time()
    assert gw.proc.term(timeout=10) == 0
    assert time.time() - t0 < 10


def test_sigterm_answers_waiting_requests(stack, procs, unique):
    # deliveries that cannot complete (no such topic): SIGTERM must still
    # answer the waiting request (503, nothing reported accepted) and exit 0
    gw = Gateway(procs, stack, f"gwtest.missing.{unique}", GATEWAY_DELIVERY_TIMEOUT="60s",
                 GATEWAY_SHUTDOWN_TIMEOUT="2s").wait_ready()
    res = {}
    t = threading.Thread(target=lambda: res.update(r=gw.post([event(), event()])))
    t.start()
    deadline = time.time() + 5
    while time.time() < deadline and gw.metrics().get("gateway_producer_queue_depth", 0) < 2:
        time.sleep(0.05)
    t0 = time.time()
    assert gw.proc.term(timeout=10) == 0
    assert time.time() - t0 < 10
    t.join(10)
    code, headers, body = res["r"]
    assert code == 503 and body["accepted"] == 0 and "Retry-After" in headers
