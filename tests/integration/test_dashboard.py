"""dashboard-ws against a real Redis: the aggregator's key layout
(services/aggregator/README.md) is written here by hand, the expected figures
are computed here from what was written (and from Redis' own PFCOUNT), and
the service's REST snapshot and WebSocket stream must agree.

Run alone: .cache/venv/bin/python -m pytest tests/integration/test_dashboard.py
"""
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest
import redis

from conftest import bin_path, free_port, http_get

W = 60000



def minute(t_ms=None):
    t = int(time.time() * 1000) if t_ms is None else t_ms
    return t - t % W


# ------------------------------------------------------- the Redis layout

def write_pane(r, prefix, start, sid, totals, dims=None, users=None):
    """One source's pane of a 1-minute window, as the aggregator writes it."""
    base = f"{prefix}:w:{W}:{start}"
    p = r.pipeline()
    p.zadd(f"{prefix}:win:{W}", {str(start): start})
    p.sadd(base + ":src", sid)
    fields = {k: 0 for k in ("events", "page_views", "purchases", "revenue_micros", "sessions",
                             "session_ms_sum", "bounces", "conversions")}
    fields.update(totals)
    fields.update({"final": 0, "wm": 0})
    p.hset(f"{base}:t:{sid}", mapping=fields)
    for dim, counts in (dims or {}).items():
        p.hset(f"{base}:d:{dim}:{sid}", mapping=counts)
    if users:
        p.pfadd(f"{base}:u:{sid}", *users)
    for k in (base + ":src", f"{base}:t:{sid}"):
        p.expire(k, 3600)
    p.execute()


def note(r, prefix, windows, full=False):
    r.publish(f"{prefix}:updates", json.dumps(
        {"ts": int(time.time() * 1000), "replica": "test", "full": full,
         "windows": [[W, s] for s in windows]}))


def seed(r, prefix, starts):
    """Two raw sources and one sessions source in each window; returns what
    the dashboard must show, computed from the same numbers."""
    exp = {"windows": {}, "urls": {}, "device_type": {}, "country": {}, "sessions": 0,
           "session_ms": 0, "bounces": 0, "conversions": 0, "revenue": 0, "events": 0}
    for i, s in enumerate(starts):
        ev = 0
        for p in range(2):
            e = 100 + 10 * i + p
            urls = {"/": 5 + i, f"/p/{p}": 3, "/checkout": 1 + p}
            dev = {"mobile": 2 + p, "desktop": 4}
            ctry = {"DE": 3, "US": 1 + i}
            write_pane(r, prefix, s, f"r{p}",
                       {"events": e, "page_views": e // 2, "purchases": 2,
                        "revenue_micros": 2 * 12_500_000},
                       {"url": urls, "device_type": dev, "country": ctry,
                        "category": {"books": 1}, "event_type": {"page_view": e // 2}},
                       users=[f"u{p}-{j}" for j in range(20 + i)] + ["shared"])
            ev += e
            for k, v in urls.items():
                exp["urls"][k] = exp["urls"].get(k, 0) + v
            for k, v in dev.items():
                exp["device_type"][k] = exp["device_type"].get(k, 0) + v
            for k, v in ctry.items():
                exp["country"][k] = exp["country"].get(k, 0) + v
            exp["revenue"] += 2 * 12_500_000
        write_pane(r, prefix, s, "s0", {"sessions": 10, "session_ms_sum": 10 * 90_000,
                                        "bounces": 3, "conversions": 1})
        exp["sessions"] += 10
        exp["session_ms"] += 10 * 90_000
        exp["bounces"] += 3
        exp["conversions"] += 1
        exp["events"] += ev
        exp["windows"][s] = ev
    return exp


# --------------------------------------------------- a small WS client

class WS:
    """Just enough of RFC 6455 for a test: handshake, text frames, close."""

    def __init__(self, port, path="/ws", headers=None, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
        for k, v in (headers or {}).items():
            req += f"{k}: {v}\r\n"
        self.s.sendall((req + "\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            d = self.s.recv(4096)
            if not d:
                raise ConnectionError("closed during the handshake")
            self.buf += d
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ")[1])
        if self.status != 101:
            raise ConnectionError(f"handshake answered {self.status}")

    def _read(self, n):
        while len(self.buf) < n:
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("closed")
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout=10):
        """The next text message as JSON (pings are answered, skipped)."""
        self.s.settimeout(timeout)
        msg = b""
        while True:
            b0, b1 = self._read(2)
            op, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            if op == 0x8:
                raise ConnectionError("server closed")
            if op == 0x9:
                self._send(0xA, payload)
                continue
            if op in (0x1, 0x0):
                msg += payload
                if b0 & 0x80:
                    return json.loads(msg)

    def _send(self, op, payload):
        mask = os.urandom(4)
        hdr = bytes([0x80 | op, 0x80 | len(payload)]) + mask
        self.s.sendall(hdr + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def close(self):
        try:
            self._send(0x8, b"")
        except OSError:
            pass
        self.s.close()


def ws_refused(port, path="/ws", headers=None):
    try:
        w = WS(port, path, headers, timeout=5)
    except (ConnectionError, OSError):
        return True
    w.close()
    return False


# ------------------------------------------------------------ fixtures

@pytest.fixture
def rds(stack):
    return redis.Redis(host=stack["REDIS_HOST"], port=int(stack["REDIS_PORT"]))


def start_dashboard(procs, stack, prefix, port, **extra):
    env = {"REDIS_HOST": stack["REDIS_HOST"], "REDIS_PORT": stack["REDIS_PORT"],
           "DASHBOARD_PORT": port, "DASHBOARD_ADDR": "127.0.0.1",
           "DASHBOARD_REDIS_PREFIX": prefix, "DASHBOARD_POLL_INTERVAL": "1s",
           "DASHBOARD_RETRY_INTERVAL": "200ms", "LOG_LEVEL": "info"}
    env.update({k: str(v) for k, v in extra.items()})
    p = procs("dashboard-ws", env)
    p.wait_http(f"http://127.0.0.1:{port}/healthz")
    return p


def snapshot(port, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/snapshot", headers=headers or {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def wait_for(fn, timeout=10, what="condition"):
    """fn() until it is truthy; an HTTP error (503 before the first read)
    counts as not yet."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except urllib.error.HTTPError as e:
            last = e  # not yet; kept for the message
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


# --------------------------------------------------------------- tests

def test_snapshot_agrees_with_redis(stack, procs, rds, unique):
    prefix = f"t:{unique}"
    cur = minute()
    starts = [cur - 2 * W, cur - W, cur]
    exp = seed(rds, prefix, starts)
    port = free_port()
    start_dashboard(procs, stack, prefix, port)

    def full():
        s = snapshot(port)
        return s if s["summary"]["events"] == exp["events"] else None
    snap = wait_for(full, what="the seeded events")
    assert snap["type"] == "snapshot" and snap["window_ms"] == W
    assert snap["to"] == cur + W and snap["from"] == cur + W - 60 * W
    assert len(snap["series"]) == 60
    by_t = {w["t"]: w for w in snap["series"]}
    for s, ev in exp["windows"].items():
        assert by_t[s]["events"] == ev
        keys = [f"{prefix}:w:{W}:{s}:u:r{p}" for p in range(2)]
        assert by_t[s]["unique_users"] == rds.pfcount(*keys)
        assert by_t[s]["sessions"] == 10
    sm = snap["summary"]
    all_keys = [f"{prefix}:w:{W}:{s}:u:r{p}" for s in starts for p in range(2)]
    assert sm["unique_users"] == rds.pfcount(*all_keys)
    assert sm["revenue_micros"] == exp["revenue"]
    assert sm["sessions"] == exp["sessions"]
    assert sm["avg_session_ms"] == exp["session_ms"] // exp["sessions"]
    assert sm["bounce_rate"] == pytest.approx(exp["bounces"] / exp["sessions"])
    assert sm["conversion_rate"] == pytest.approx(exp["conversions"] / exp["sessions"])
    assert sm["current"]["t"] == cur - W
    assert sm["current"]["events_per_s"] == pytest.approx(exp["windows"][cur - W] / 60)
    top = sorted(exp["urls"].items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert [tuple(x) for x in sm["top_urls"]] == top
    assert dict(map(tuple, sm["device_type"])) == exp["device_type"]
    assert dict(map(tuple, sm["country"])) == exp["country"]
    assert snap["status"]["redis"] == "ok" and snap["status"]["stale"] is False
    code, _ = http_get(f"http://127.0.0.1:{port}/readyz")
    assert code == 200


def test_unique_users_equal_pfcount(stack, procs, rds, unique):
    """dashboard-ws merges the windows' HyperLogLogs itself: its counts must be
    the very numbers Redis' PFCOUNT gives, for sparse (small) and dense (large)
    HLLs, overlapping sources, a window whose users are all already counted,
    and a u key that is not a HyperLogLog (skipped, the rest still counted)."""
    prefix = f"t:{unique}"
    cur = minute()
    starts = [cur - 3 * W, cur - 2 * W, cur - W, cur]
    sizes = {starts[0]: (3, 0), starts[1]: (1500, 1400), starts[2]: (40_000, 25_000),
             starts[3]: (200, 0)}
    for s, (a, b) in sizes.items():
        write_pane(rds, prefix, s, "r0", {"events": 1}, users=[f"a{j}" for j in range(a)])
        if b:
            # overlaps r0 by half
            write_pane(rds, prefix, s, "r1", {"events": 1},
                       users=[f"a{j}" for j in range(a // 2, a // 2 + b)])
    # the last window: users all seen in the first one; plus a broken u key
    write_pane(rds, prefix, starts[3], "r1", {"events": 1}, users=["a0", "a1"])
    write_pane(rds, prefix, starts[3], "r2", {"events": 1})
    rds.set(f"{prefix}:w:{W}:{starts[3]}:u:r2", b"HYLL-but-not-really")
    encodings = {rds.execute_command("GETRANGE", f"{prefix}:w:{W}:{s}:u:r0", 4, 4)
                 for s in starts}
    assert encodings == {b"\x00", b"\x01"}, encodings  # dense and sparse both seen
    port = free_port()
    start_dashboard(procs, stack, prefix, port)
    snap = wait_for(lambda: (lambda x: x if x["summary"]["events"] == 8 else None)(snapshot(port)),
                    what="the seeded windows")
    by_t = {w["t"]: w for w in snap["series"]}
    good = lambda s: [f"{prefix}:w:{W}:{s}:u:r{p}" for p in range(2)]  # noqa: E731
    for s in starts:
        assert by_t[s]["unique_users"] == rds.pfcount(*good(s)), s
    # dense: an estimate of the 45,000 distinct users of r0 and r1
    assert abs(by_t[starts[2]]["unique_users"] - 45_000) < 0.03 * 45_000
    all_keys = [k for s in starts for k in good(s)]
    assert snap["summary"]["unique_users"] == rds.pfcount(*all_keys)
    code, body = http_get(f"http://127.0.0.1:{port}/metrics")
    bad = [ln for ln in body.splitlines() if ln.startswith("dashboard_bad_hll_total ")]
    assert code == 200 and bad and float(bad[0].split()[1]) >= 1, bad


def test_websocket_snapshot_then_coalesced_updates(stack, procs, rds, unique):
    prefix = f"t:{unique}"
    cur = minute()
    seed(rds, prefix, [cur - W, cur])
    port = free_port()
    start_dashboard(procs, stack, prefix, port, DASHBOARD_CLIENT_INTERVAL="1s")
    wait_for(lambda: snapshot(port)["summary"]["events"] > 0, what="data")
    ws = WS(port)
    snap = ws.recv()
    assert snap["type"] == "snapshot"
    seq = snap["seq"]
    # five changes in quick succession reach the client as few messages
    for k in range(1, 6):
        write_pane(rds, prefix, cur, "r0", {"events": 1000 + k})
        note(rds, prefix, [cur])
        time.sleep(0.1)
    got, last = [], None
    deadline = time.time() + 10
    while time.time() < deadline:
        m = ws.recv()
        assert m["type"] == "update"
        assert m["base"] == seq, "an update applies to the state the client holds"
        seq = m["seq"]
        got.append(m)
        w = [x for x in m["series"] if x["t"] == cur]
        if w:
            last = w[0]["events"]
        if last == 1005 + 111:  # r0 now 1005, r1 still 111 (seed: 100 + 10*1 + 1)
            break
    assert last == 1116
    assert len(got) < 5, "changes within the client interval are coalesced"
    # only the window that changed travels
    assert all(x["t"] == cur for m in got for x in m["series"])
    ws.close()
    code, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    for name in ("dashboard_clients", 'dashboard_messages_sent_total{type="update"}',
                 "dashboard_updates_coalesced_total", "dashboard_updates_dropped_total"):
        assert name in body
    coalesced = [l for l in body.splitlines() if l.startswith("dashboard_updates_coalesced_total ")]
    assert float(coalesced[0].split()[1]) >= 1


def test_token_and_origin(stack, procs, rds, unique):
    prefix = f"t:{unique}"
    seed(rds, prefix, [minute()])
    port = free_port()
    start_dashboard(procs, stack, prefix, port, DASHBOARD_READ_TOKEN="let-me-in")
    base = f"http://127.0.0.1:{port}"
    assert http_get(base + "/")[0] == 401
    assert http_get(base + "/api/snapshot")[0] == 401
    assert http_get(base + "/api/snapshot?token=wrong")[0] == 401
    with urllib.request.urlopen(base + "/?token=let-me-in", timeout=5) as resp:
        assert resp.status == 200
        cookie = resp.headers["Set-Cookie"]
        assert "dashboard_token=let-me-in" in cookie and "HttpOnly" in cookie
        assert "content-security-policy" in {k.lower() for k in resp.headers}
    wait_for(lambda: http_get(base + "/api/snapshot?token=let-me-in")[0] == 200, what="data")
    assert snapshot(port, {"Authorization": "Bearer let-me-in"})["type"] == "snapshot"
    # admin endpoints stay open (Prometheus, probes)
    assert http_get(base + "/healthz")[0] == 200
    assert http_get(base + "/metrics")[0] == 200
    # the WebSocket: token by query or by the page's cookie; Origin checked
    assert ws_refused(port)
    assert ws_refused(port, "/ws?token=nope")
    own = {"Origin": f"http://127.0.0.1:{port}"}
    w = WS(port, "/ws?token=let-me-in", own)
    assert w.recv()["type"] == "snapshot"
    w.close()
    w = WS(port, "/ws", {"Cookie": "dashboard_token=let-me-in", **own})
    assert w.recv()["type"] == "snapshot"
    w.close()
    assert ws_refused(port, "/ws?token=let-me-in", {"Origin": "http://evil.example"})
    assert ws_refused(port, "/elsewhere?token=let-me-in")
    code, body = http_get(base + "/metrics")
    assert 'dashboard_ws_refused_total{reason="origin"} 1' in body
    assert 'dashboard_ws_refused_total{reason="token"} 2' in body


def test_allowed_origins_list(stack, procs, rds, unique):
    prefix = f"t:{unique}"
    port = free_port()
    start_dashboard(procs, stack, prefix, port,
                    DASHBOARD_ALLOWED_ORIGINS="https://wall.example.com")
    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, what="ready")
    w = WS(port, "/ws", {"Origin": "https://wall.example.com"})
    assert w.recv()["type"] == "snapshot"
    w.close()
    assert ws_refused(port, "/ws", {"Origin": f"http://127.0.0.1:{port}"})


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed")
def test_redis_down_marks_stale_and_recovers(procs, unique):
    """A Redis of our own, stopped and started again under the service."""
    rport = free_port()
    d = tempfile.mkdtemp(prefix="db-redis-")

    def redis_up():
        p = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", d],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = redis.Redis(host="127.0.0.1", port=rport)
        wait_for(lambda: _ping(r), what="redis up")
        return p, r

    srv, r = redis_up()
    try:
        prefix = f"t:{unique}"
        exp = seed(r, prefix, [minute()])
        port = free_port()
        start_dashboard(procs, {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(rport)}, prefix,
                        port)
        wait_for(lambda: snapshot(port)["summary"]["events"] == exp["events"], what="data")
        ws = WS(port)
        assert ws.recv()["status"]["stale"] is False
        srv.terminate()
        srv.wait(10)
        m = ws.recv(timeout=15)
        while not m["status"]["stale"]:
            m = ws.recv(timeout=15)
        assert m["status"]["redis"] == "down" and m["status"]["stale_since"]
        # the last figures stay on the page, marked stale
        assert m["summary"]["events"] == exp["events"]
        assert http_get(f"http://127.0.0.1:{port}/readyz")[0] == 503
        srv, r = redis_up()
        seed(r, prefix, [minute()])
        m = ws.recv(timeout=15)
        while m["status"]["stale"]:
            m = ws.recv(timeout=15)
        assert m["status"]["redis"] == "ok"
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, what="ready")
        ws.close()
    finally:
        srv.terminate()
        srv.wait(10)
        shutil.rmtree(d, ignore_errors=True)


def _ping(r):
    try:
        return r.ping()
    except redis.exceptions.ConnectionError:
        return False


def test_page_served_and_config_errors(stack, procs, rds, unique):
    port = free_port()
    p = start_dashboard(procs, stack, f"t:{unique}", port)
    base = f"http://127.0.0.1:{port}"
    for path, ctype in (("/", "text/html"), ("/app.js", "text/javascript"),
                        ("/style.css", "text/css")):
        with urllib.request.urlopen(base + path, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith(ctype)
            body = resp.read()
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "services",
                               "dashboard-ws", "web", "index.html" if path == "/" else path[1:]),
                  "rb") as f:
            assert body == f.read(), "the built-in page is the one in web/"
    assert http_get(base + "/nope")[0] == 404
    assert http_get(base + "/../../etc/passwd")[0] in (400, 403, 404)
    assert p.term() == 0

    out = subprocess.run([bin_path("dashboard-ws"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "DASHBOARD_READ_TOKEN" in out.stdout
    bad = subprocess.run([bin_path("dashboard-ws")], capture_output=True, text=True,
                         env={**os.environ, "DASHBOARD_PORT": "70000"})
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "DASHBOARD_PORT" in bad.stderr
    bad = subprocess.run([bin_path("dashboard-ws")], capture_output=True, text=True,
                         env={**os.environ, "DASHBOARD_ALLOWED_ORIGINS": "not-an-origin",
                              "DASHBOARD_PORT": str(free_port())})
    assert bad.returncode == 2 and "DASHBOARD_ALLOWED_ORIGINS" in bad.stderr
