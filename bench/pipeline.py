#!/usr/bin/env python3
"""Whole-pipeline benchmark (run by scripts/bench.sh, or alone):

    STACK_ENV=.run/dev/stack.env .cache/venv/bin/python bench/pipeline.py

Without STACK_ENV it starts a stack of its own in .run/bench-pl and stops it.

All five services run together on this machine, beside the Kafka broker and
Redis, fed by cs-loadgen through the gateway (write key, POSTs of 100 events,
32 connections, live event time: the simulated clock starts 5 s before now
and moves about as fast as the wall clock), on topics of their own. Each
service runs with its defaults (ports, topics, group ids, Redis prefix and
warehouse aside); DASHBOARD_TOP_N=100 so that the marker events (below) are
listed in the WebSocket messages.

1. Highest sustained input rate. A short unthrottled probe (PIPELINE_PROBE_SECONDS,
   10) gives the rate the gateway takes with everything else running; then
   steps of PIPELINE_STEP_SECONDS (18) at fixed rates: half the probe rate,
   then a bisection between the highest rate that held and the lowest that
   did not (3 steps). A step holds when cs-loadgen delivered >= 97 % of the
   rate with no failed request and, over the second half of the step, the
   lag of every consumer stayed <= 5 s of input and grew by <= 1 s of input.
   Lag: end offsets of the raw topic - committed offsets of the sessionizer's
   and the aggregator's consumer groups; for the lake-writer (which commits
   to Iceberg every LAKE_ROLL_AGE, not to Kafka) end offsets - records read
   (lake_records_total). Sampled every second. Between steps the consumers
   drain their backlog. The best rate then runs PIPELINE_SUSTAIN_SECONDS
   (60); if it does not hold, once more at 90 % of it.
2. Event -> dashboard latency at PIPELINE_LATENCY_RATE (50 000 events/s) or
   the sustained rate if lower: while that load runs, a marker event is
   POSTed every 250 ms for PIPELINE_LATENCY_SECONDS (30) s: user
   "bench-marker", event time = the wall clock when it is sent (taken at
   the sender), page_url unique per marker, event_type custom:bm<run><NN>
   (NN = marker number mod 40). Accepted: the gateway's 202 (it answers
   once Kafka has the event). Visible in Redis: the marker's URL is a field
   of its 1-minute window's url hash (aggregator layout), polled every
   10 ms. Pushed on the WebSocket: the first message of a /ws client whose
   summary.event_type count of the marker's type reaches the number of
   markers of that type sent so far. Latency = that moment - the event
   time. Then, time budget permitting, the same for 20 s at a quarter of
   that rate (light load).
   With BENCH_DEADLINE (set by scripts/bench.sh from its time budget) the
   rate search stops early and the second 60 s run is skipped when they
   would not fit.
3. During the sustained run: CPU seconds of every process (services, broker,
   Redis, cs-loadgen, this script) from /proc, the machine's total busy
   time, a perf profile of the five services, and each service's VmHWM
   at the end.

Writes $BENCH_OUT/pipeline.json.
"""
import base64
import http.client
import json
import os
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _benchlib as bl  # noqa: E402

import redis  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402

PARTS = 12
PROBE_S = float(os.environ.get("PIPELINE_PROBE_SECONDS", "10"))
STEP_S = float(os.environ.get("PIPELINE_STEP_SECONDS", "18"))
BISECT = int(os.environ.get("PIPELINE_BISECT_STEPS", "3"))
SUSTAIN_S = float(os.environ.get("PIPELINE_SUSTAIN_SECONDS", "60"))
LAT_RATE = int(os.environ.get("PIPELINE_LATENCY_RATE", "50000"))
LAT_S = float(os.environ.get("PIPELINE_LATENCY_SECONDS", "30"))
FIXED_RATE = int(os.environ.get("PIPELINE_RATE", "0"))  # skip the search
DEADLINE = float(os.environ.get("BENCH_DEADLINE", "0"))  # epoch s: make bench's time budget
LAG_MAX_S = 5.0
LAG_GROWTH_S = 1.0
HOLD_FRACTION = 0.97
MARKER_EVERY_S = 0.25
MARKER_SLOTS = 40
REDIS_POLL_S = 0.01
LIGHT_FRACTION = 0.25
BATCH = 100
CONCURRENCY = 32
WARMUP_RATE, WARMUP_S = 5000, 8
KEY = "bench-key"
SERVICES = ("ingest-gateway", "sessionizer", "aggregator", "lake-writer", "dashboard-ws")


def log(msg):
    print(f"pipeline: {msg}", flush=True)


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))], 1)


def round_rate(r):
    return int(max(1000, round(r / 1000.0) * 1000))


def time_left():
    return DEADLINE - time.time() if DEADLINE else float("inf")


# what must still fit after the search: the 60 s run and its drain, the
# latency run, stopping the services
RESERVE_S = SUSTAIN_S + 20 + LAT_S + 25 + 15


# --------------------------------------------------------------- WebSocket
class WsClient(threading.Thread):
    """A minimal RFC 6455 client: reads text messages, timestamps each one
    when its last byte arrived and hands it to on_message(t, text)."""

    def __init__(self, port, on_message):
        super().__init__(daemon=True)
        self.port, self.on_message = port, on_message
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = self.sock.recv(65536)
            if not d:
                raise OSError("WebSocket handshake: connection closed")
            buf += d
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise OSError("WebSocket handshake refused: " + head.split(b"\r\n", 1)[0].decode())
        self.sock.settimeout(None)
        self.messages = 0
        self.closed = False

    def _need(self, n):
        while len(self.buf) < n:
            d = self.sock.recv(1 << 20)
            if not d:
                raise EOFError
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def run(self):
        parts = []
        try:
            while True:
                b0, b1 = self._need(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", self._need(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", self._need(8))[0]
                mask = self._need(4) if b1 & 0x80 else None
                payload = self._need(n)
                if mask:
                    payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
                op = b0 & 0x0F
                if op == 8:
                    break
                if op == 9:  # ping -> pong (masked, as a client must)
                    m = os.urandom(4)
                    body = bytes(c ^ m[i % 4] for i, c in enumerate(payload))
                    self.sock.sendall(bytes([0x8A, 0x80 | len(body)]) + m + body)
                    continue
                if op in (0, 1, 2):
                    parts.append(payload)
                    if b0 & 0x80:
                        t = time.time()
                        self.messages += 1
                        self.on_message(t, b"".join(parts))
                        parts = []
        except (EOFError, OSError):
            pass
        self.closed = True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- pipeline
class Pipeline:
    def __init__(self, stack):
        self.stack = stack
        self.boot = stack["KAFKA_BOOTSTRAP"]
        self.id = f"{int(time.time())}-{os.getpid()}"
        t = f"bench.pl.{self.id}"
        self.topics = {"raw": t + ".raw", "sessions": t + ".sessions", "metrics": t + ".metrics",
                       "late": t + ".late"}
        self.prefix = f"bench:pl:{self.id}"
        self.work = tempfile.mkdtemp(prefix="cs-bench-pl-")
        self.procs = {}
        self.ports = {}
        self.infra = {}
        sd = stack.get("STACK_DIR")
        for name, f in (("kafka", "kafka/kafka.pid"), ("redis", "redis/redis.pid")):
            try:
                self.infra[name] = int(open(os.path.join(sd, f)).read().strip())
            except (OSError, ValueError, TypeError):
                pass

    # ---- services
    def start(self):
        bl_admin = os.path.join(bl.BIN, "cs-admin")
        subprocess.run([bl_admin, "create-topics", "-b", self.boot,
                        f"{self.topics['raw']}:{PARTS}", f"{self.topics['sessions']}:{PARTS}",
                        f"{self.topics['metrics']}:3", f"{self.topics['late']}:3"], check=True)
        common = {"KAFKA_BOOTSTRAP": self.boot, "TOPIC_RAW": self.topics["raw"],
                  "TOPIC_SESSIONS": self.topics["sessions"], "TOPIC_METRICS": self.topics["metrics"],
                  "TOPIC_LATE": self.topics["late"], "REDIS_HOST": self.stack["REDIS_HOST"],
                  "REDIS_PORT": self.stack["REDIS_PORT"]}
        for s in SERVICES:
            self.ports[s] = bl.free_port()
        g = f"bench-pl-{self.id}"
        env = {
            "ingest-gateway": {"GATEWAY_ADDR": "127.0.0.1", "GATEWAY_PORT": self.ports["ingest-gateway"],
                               "GATEWAY_TOPIC": self.topics["raw"], "GATEWAY_WRITE_KEYS": f"bench:{KEY}",
                               "GATEWAY_LOG_LEVEL": "warn"},
            "sessionizer": {"ADMIN_ADDR": "127.0.0.1", "ADMIN_PORT": self.ports["sessionizer"],
                            "SESSIONIZER_CHANGELOG_TOPIC": f"bench.pl.{self.id}.sessionizer.changelog",
                            "SESSIONIZER_GROUP_ID": g + "-sz", "SESSIONIZER_TRANSACTIONAL_ID": g + "-sz",
                            "LOG_LEVEL": "warn"},
            "aggregator": {"AGGREGATOR_ADMIN_ADDR": "127.0.0.1", "AGGREGATOR_ADMIN_PORT": self.ports["aggregator"],
                           "AGGREGATOR_CHANGELOG_TOPIC": f"bench.pl.{self.id}.aggregator.changelog",
                           "AGGREGATOR_PANES_TOPIC": f"bench.pl.{self.id}.aggregator.panes",
                           "AGGREGATOR_GROUP_ID": g + "-ag", "AGGREGATOR_INSTANCE_ID": g + "-ag",
                           "AGGREGATOR_REDIS_PREFIX": self.prefix, "AGGREGATOR_LOG_LEVEL": "warn"},
            "lake-writer": {"LAKE_ADMIN_ADDR": "127.0.0.1", "LAKE_ADMIN_PORT": self.ports["lake-writer"],
                            "LAKE_WAREHOUSE": os.path.join(self.work, "warehouse"),
                            "LAKE_GROUP_ID": g + "-lw", "LAKE_INSTANCE_ID": g + "-lw",
                            "LAKE_LOG_LEVEL": "warn"},
            "dashboard-ws": {"DASHBOARD_ADDR": "127.0.0.1", "DASHBOARD_PORT": self.ports["dashboard-ws"],
                             "DASHBOARD_REDIS_PREFIX": self.prefix, "DASHBOARD_TOP_N": "100",
                             "LOG_LEVEL": "warn"},
        }
        self.group_sz, self.group_ag = g + "-sz", g + "-ag"
        for s in SERVICES:
            e = dict(os.environ)
            e.update(common)
            e.update({k: str(v) for k, v in env[s].items()})
            logf = open(os.path.join(self.work, s + ".log"), "wb")
            self.procs[s] = subprocess.Popen([os.path.join(bl.BIN, s)], env=e, stdout=logf,
                                             stderr=logf)
        deadline = time.time() + 90
        for s in SERVICES:
            while True:
                if self.procs[s].poll() is not None:
                    raise SystemExit(f"{s} exited {self.procs[s].returncode}: "
                                     + self.tail(s))
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[s]}/readyz",
                                                timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.time() > deadline:
                    raise SystemExit(f"{s} not ready in 90 s: " + self.tail(s))
                time.sleep(0.2)
        log("all five services ready")
        self.tps = [TopicPartition(self.topics["raw"], p) for p in range(PARTS)]
        self.kc = {n: Consumer({"bootstrap.servers": self.boot, "group.id": grp,
                                "enable.auto.commit": False, "log_level": 3})
                   for n, grp in (("sessionizer", self.group_sz), ("aggregator", self.group_ag))}
        self.redis = redis.Redis(host=self.stack["REDIS_HOST"], port=int(self.stack["REDIS_PORT"]))

    def tail(self, s, n=5):
        try:
            return " | ".join(open(os.path.join(self.work, s + ".log"), errors="replace")
                              .read().strip().splitlines()[-n:])
        except OSError:
            return ""

    def pids(self):
        p = {s: self.procs[s].pid for s in SERVICES}
        p.update(self.infra)
        return p

    def check_alive(self):
        for s in SERVICES:
            if self.procs[s].poll() is not None:
                raise SystemExit(f"{s} exited {self.procs[s].returncode}: " + self.tail(s))

    def stop(self):
        out = {}
        for s in SERVICES:
            p = self.procs.get(s)
            if p and p.poll() is None:
                try:
                    out[s] = {"peak_rss_bytes": bl.proc_hwm(p.pid), "cpu_s": round(bl.proc_cpu(p.pid), 2)}
                except OSError:
                    pass
                p.terminate()
        for s in SERVICES:
            p = self.procs.get(s)
            if p:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for c in getattr(self, "kc", {}).values():
            c.close()
        return out

    def cleanup(self):
        keep = os.environ.get("PIPELINE_KEEP_LOGS")
        if keep:
            os.makedirs(keep, exist_ok=True)
            for s in SERVICES:
                try:
                    shutil.copy(os.path.join(self.work, s + ".log"), keep)
                except OSError:
                    pass
        shutil.rmtree(self.work, ignore_errors=True)

    # ---- lag
    def lags(self):
        """Records behind the end of the raw topic, per consumer."""
        c = self.kc["sessionizer"]
        end = 0
        for tp in self.tps:
            end += c.get_watermark_offsets(tp, timeout=5, cached=False)[1]
        out = {"end": end}
        for n, k in self.kc.items():
            done = sum(max(0, x.offset) for x in k.committed(self.tps, timeout=5))
            out[n] = end - done
        try:
            text = bl.metrics_text(self.ports["lake-writer"])
            read = bl.metric_sum(text, "lake_records_total", f'topic="{self.topics["raw"]}"') or 0
        except OSError:
            read = 0
        out["lake-writer"] = end - int(read)
        return out

    def drain(self, rate, limit_s=45):
        t0 = time.time()
        bound = max(20000, rate)
        while time.time() - t0 < limit_s:
            self.check_alive()
            lg = self.lags()
            if all(lg[c] <= bound for c in ("sessionizer", "aggregator", "lake-writer")):
                break
            time.sleep(1)
        return round(time.time() - t0, 1)

    # ---- one load step
    def step(self, rate, secs, label, seed, profile=False, during=None):
        users = max(200000, 60 * (rate if rate else 150000))
        summ = os.path.join(self.work, f"lg-{label}.json")
        cmd = [os.path.join(bl.BIN, "cs-loadgen"),
               "--url", f"http://127.0.0.1:{self.ports['ingest-gateway']}/v1/events", "--key", KEY,
               "--rate", str(rate), "--duration", str(secs), "--batch", str(BATCH),
               "--concurrency", str(CONCURRENCY),
               "--users", str(users), "--think-ms", "2000", "--gap-ms", "300000",
               "--start", str(int(time.time() * 1000) - 5000), "--seed", str(seed),
               "--dup", "0.01", "--ooo", "0.02", "--late", "0.002", "--invalid", "0.005",
               "--progress", "0", "--summary", summ]
        pids = self.pids()
        cpu0 = {n: bl.proc_cpu(p) for n, p in pids.items()}
        self_cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        m0 = bl.machine_cpu()
        w0 = time.time()
        if profile:
            bl.profile("start", "pipeline", ",".join(str(self.procs[s].pid) for s in SERVICES))
            broker0 = bl.thread_cpu(self.infra["kafka"]) if "kafka" in self.infra else None
        lgp = subprocess.Popen(cmd, stdout=open(os.path.join(self.work, f"lg-{label}.txt"), "w"),
                               stderr=subprocess.STDOUT)
        t0 = time.time()
        samples = []
        ru = None
        status = 0
        stopper = None
        if during:
            stopper = during(t0)
        while True:
            pid, status, ru = os.wait4(lgp.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(max(0.0, 1.0 - (time.time() - t0) % 1.0))
            pid, status, ru = os.wait4(lgp.pid, os.WNOHANG)
            if pid:
                break
            self.check_alive()
            samples.append((round(time.time() - t0, 2), self.lags()))
        lgp.returncode = os.waitstatus_to_exitcode(status)
        if stopper:
            stopper()
        m1 = bl.machine_cpu()
        w1 = time.time()
        cpu1 = {n: bl.proc_cpu(p) for n, p in pids.items()}
        self_cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        broker_threads = None
        if profile:
            bl.profile("stop", "pipeline")
            if broker0 is not None:
                broker_threads = bl.thread_cpu_delta(broker0, bl.thread_cpu(self.infra["kafka"]))
        try:
            s = json.load(open(summ))
        except (OSError, ValueError):
            raise SystemExit(f"cs-loadgen gave no summary (exit {lgp.returncode}): "
                             + open(os.path.join(self.work, f"lg-{label}.txt")).read()[-500:])
        el = s["elapsed_s"] or 1e-9
        sent = s["events"] / el
        cpu = {n: round(cpu1[n] - cpu0[n], 2) for n in pids}
        cpu["cs-loadgen"] = round(ru.ru_utime + ru.ru_stime, 2)
        cpu["bench (this script)"] = round((self_cpu1.ru_utime - self_cpu0.ru_utime)
                                           + (self_cpu1.ru_stime - self_cpu0.ru_stime), 2)
        busy = (m1[0] - m0[0]) / bl.TCK
        cpu["other processes on the machine"] = round(max(0.0, busy - sum(cpu.values())), 2)
        steal = (m1[1] - m0[1]) / bl.TCK
        res = {"label": label, "rate": rate, "seconds": round(el, 1), "events": s["events"],
               "accepted": s["accepted"], "events_per_s": round(sent),
               "accepted_per_s": round(s["accepted"] / el), "failed_events": s["failed_events"],
               "retries": s["retries"], "http_p50_ms": s["latency_ms"]["p50"],
               "http_p99_ms": s["latency_ms"]["p99"], "cpu_s": cpu,
               "cpu_window_s": round(w1 - w0, 1),
               "machine_busy_cores": round(busy / (w1 - w0), 2),
               "machine_steal_cores": round(steal / (w1 - w0), 2)}
        if broker_threads:
            res["broker_cpu_s_by_thread"] = broker_threads
        # lag over the second half
        half = [x for x in samples if x[0] >= el / 2] or samples[-1:]
        base = max(sent, 1.0)
        verdicts = {}
        for c in ("sessionizer", "aggregator", "lake-writer"):
            vals = [x[1][c] for x in half]
            if not vals:
                verdicts[c] = {"max_lag_s": None, "growth_s": None}
                continue
            k = max(1, len(vals) // 3)
            growth = statistics.mean(vals[-k:]) - statistics.mean(vals[:k])
            verdicts[c] = {"max_lag_s": round(max(vals) / base, 2),
                           "end_lag_s": round(vals[-1] / base, 2),
                           "growth_s": round(growth / base, 2)}
        res["lag"] = verdicts
        ok_rate = rate == 0 or sent >= HOLD_FRACTION * rate
        ok_lag = all(v["max_lag_s"] is not None and v["max_lag_s"] <= LAG_MAX_S
                     and v["growth_s"] <= LAG_GROWTH_S for v in verdicts.values())
        res["held"] = bool(ok_rate and ok_lag and s["failed_events"] == 0)
        why = []
        if not ok_rate:
            why.append(f"sent {sent:,.0f}/s < {HOLD_FRACTION:.0%} of {rate:,}")
        if s["failed_events"]:
            why.append(f"{s['failed_events']} failed events")
        for c, v in verdicts.items():
            if v["max_lag_s"] is None or v["max_lag_s"] > LAG_MAX_S or v["growth_s"] > LAG_GROWTH_S:
                why.append(f"{c} lag max {v['max_lag_s']} s growth {v['growth_s']} s")
        res["why_not"] = "; ".join(why)
        res["lag_samples"] = [[t, x["sessionizer"], x["aggregator"], x["lake-writer"]]
                              for t, x in samples]
        log(f"{label}: rate {rate or 'max'} -> sent {sent:,.0f}/s, accepted {s['accepted']:,}, "
            f"lag max s/a/l {verdicts['sessionizer']['max_lag_s']}/{verdicts['aggregator']['max_lag_s']}/"
            f"{verdicts['lake-writer']['max_lag_s']} s, machine {res['machine_busy_cores']} cores busy: "
            + ("held" if res["held"] else "not held (" + res["why_not"] + ")"))
        return res

    # ---- latency markers
    def latency(self, rate, secs, label="latency", tag="a"):
        sent = {}       # k -> event time (s)
        acked = {}      # k -> 202 received (the gateway answers once Kafka acknowledged)
        redis_seen = {}
        ws_seen = {}
        lock = threading.Lock()
        part = [None]
        url = lambda k: f"https://bench.example/marker/{self.id}/{label}/{k}"  # noqa: E731
        etype = lambda k: f"custom:bm{tag}{k % MARKER_SLOTS:02d}"  # noqa: E731

        def window_key(k, src):
            ts = int(sent[k] * 1000)
            return f"{self.prefix}:w:60000:{ts - ts % 60000}:d:url:{src}"

        def on_ws(t, data):
            try:
                m = json.loads(data)
            except ValueError:
                return
            counts = dict((k, n) for k, n in (m.get("summary") or {}).get("event_type", []))
            with lock:
                for k in list(sent):
                    if k in ws_seen:
                        continue
                    need = k // MARKER_SLOTS + 1
                    if counts.get(etype(k), 0) >= need:
                        ws_seen[k] = t

        ws = WsClient(self.ports["dashboard-ws"], on_ws)
        ws.start()
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["ingest-gateway"], timeout=10)

        def send(k):
            t = time.time()
            ts = int(t * 1000)
            body = json.dumps({"event_id": f"bm-{self.id}-{label}-{k}", "timestamp": ts,
                               "user_id": "bench-marker", "event_type": etype(k),
                               "page_url": url(k)})
            with lock:
                sent[k] = ts / 1000.0
            conn.request("POST", "/v1/events", body=body,
                         headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            with lock:
                acked[k] = time.time()
            if r.status != 202:
                raise SystemExit(f"marker refused: {r.status}")

        stop = threading.Event()

        def poll_redis():
            while not stop.is_set():
                with lock:
                    todo = [k for k in sent if k not in redis_seen]
                if todo:
                    if part[0] is None:
                        pipe = self.redis.pipeline(transaction=False)
                        for p in range(PARTS):
                            pipe.hexists(window_key(todo[0], f"r{p}"), url(todo[0]))
                        res = pipe.execute()
                        t = time.time()
                        for p, r in enumerate(res):
                            if r:
                                part[0] = p
                                with lock:
                                    redis_seen[todo[0]] = t
                    else:
                        pipe = self.redis.pipeline(transaction=False)
                        for k in todo:
                            pipe.hexists(window_key(k, f"r{part[0]}"), url(k))
                        res = pipe.execute()
                        t = time.time()
                        with lock:
                            for k, r in zip(todo, res):
                                if r:
                                    redis_seen[k] = t
                stop.wait(REDIS_POLL_S)

        poller = threading.Thread(target=poll_redis, daemon=True)
        poller.start()
        n_markers = int(secs / MARKER_EVERY_S)
        result = {}

        def during(t0):
            def run():
                # marker 0 finds the marker user's partition; not counted
                send(0)
                time.sleep(4)
                for k in range(1, n_markers + 1):
                    due = t0 + 5 + k * MARKER_EVERY_S
                    time.sleep(max(0.0, due - time.time()))
                    send(k)
            th = threading.Thread(target=run, daemon=True)
            th.start()

            def finish():
                th.join(30)
                time.sleep(3)  # the last ones arrive
            return finish

        step = self.step(rate, secs + 8, label, 7, during=during)
        stop.set()
        poller.join(5)
        ws.close()
        conn.close()
        ks = [k for k in sent if k > 0]
        ack = [(acked[k] - sent[k]) * 1000 for k in ks if k in acked]
        red = [(redis_seen[k] - sent[k]) * 1000 for k in ks if k in redis_seen]
        wsl = [(ws_seen[k] - sent[k]) * 1000 for k in ks if k in ws_seen]
        dist = lambda v: {"n": len(v), "p50": pct(v, 0.5), "p90": pct(v, 0.9),  # noqa: E731
                          "p99": pct(v, 0.99), "max": round(max(v), 1) if v else None}
        result = {
            "rate": rate, "load": {k: step[k] for k in ("events_per_s", "accepted", "failed_events",
                                                         "http_p50_ms", "http_p99_ms", "lag", "held")},
            "markers": len(ks), "marker_every_ms": int(MARKER_EVERY_S * 1000),
            "accepted_ms": dist(ack), "redis_ms": dist(red), "websocket_ms": dist(wsl),
            "machine_busy_cores": step["machine_busy_cores"],
            "ws_messages": ws.messages,
            "raw_partition_of_marker_user": part[0],
        }
        log(f"latency at {rate:,}/s: {len(ks)} markers; accepted (202) p50 "
            f"{result['accepted_ms']['p50']} ms p99 {result['accepted_ms']['p99']} ms; visible in Redis p50 "
            f"{result['redis_ms']['p50']} ms p99 {result['redis_ms']['p99']} ms; pushed on the "
            f"WebSocket p50 {result['websocket_ms']['p50']} ms p99 {result['websocket_ms']['p99']} ms")
        return result

    def service_metrics(self):
        out = {}
        try:
            t = bl.metrics_text(self.ports["sessionizer"])
            out["sessionizer_open_sessions"] = bl.metric_sum(t, "sessionizer_open_sessions")
            out["sessionizer_state_bytes"] = bl.metric_sum(t, "sessionizer_state_bytes")
            out["sessionizer_state_bytes_per_open_session"] = bl.metric_sum(
                t, "sessionizer_state_bytes_per_open_session")
            out["sessionizer_commits"] = bl.metric_sum(t, "sessionizer_transaction_commits_total")
            t = bl.metrics_text(self.ports["aggregator"])
            out["aggregator_open_panes"] = bl.metric_sum(t, "aggregator_open_panes")
            out["aggregator_kept_panes"] = bl.metric_sum(t, "aggregator_kept_panes")
            out["aggregator_rss_bytes"] = bl.metric_sum(t, "process_resident_memory_bytes")
            out["aggregator_transactions"] = bl.metric_sum(t, "aggregator_transactions_total")
            t = bl.metrics_text(self.ports["lake-writer"])
            out["lake_commits"] = bl.metric_sum(t, "lake_commits_total")
            out["lake_rows_committed"] = bl.metric_sum(t, "lake_rows_committed_total")
            t = bl.metrics_text(self.ports["dashboard-ws"])
            for k in ("dashboard_redis_reads_total", "dashboard_redis_read_seconds_sum",
                      "dashboard_notes_total", "dashboard_messages_sent_total"):
                out[k] = bl.metric_sum(t, k)
        except OSError:
            pass
        return out


def search(pl):
    steps = []
    seed = [100]

    def run(rate, secs, label):
        seed[0] += 1
        r = pl.step(rate, secs, label, seed[0])
        steps.append(r)
        r["drain_s"] = pl.drain(max(rate, r["events_per_s"]))
        return r

    if FIXED_RATE:
        return FIXED_RATE, steps, None
    probe = run(0, PROBE_S, "probe")
    top = round_rate(probe["accepted_per_s"])
    lo, hi = 0, top
    r = round_rate(top * 0.5)
    while True:  # first a rate that holds, going down by 40 %
        x = run(r, STEP_S, f"step-{r}")
        if x["held"]:
            lo = r
            break
        hi = r
        if r <= 4000 or time_left() < STEP_S + 20 + RESERVE_S:
            break
        r = round_rate(r * 0.6)
    for _ in range(BISECT):
        if not lo or hi - lo <= max(2000, 0.04 * hi):
            break
        if time_left() < STEP_S + 20 + RESERVE_S:
            log("rate search cut short by the time budget (BENCH_DEADLINE)")
            break
        r = round_rate((lo + hi) / 2)
        if r in (lo, hi):
            break
        x = run(r, STEP_S, f"step-{r}")
        if x["held"]:
            lo = r
        else:
            hi = r
    return lo, steps, top


def main():
    own = None
    if os.environ.get("STACK_ENV"):
        stack = bl.read_env(os.environ["STACK_ENV"])
    else:
        own = os.path.join(bl.ROOT, ".run", "bench-pl")
        subprocess.run([os.path.join(bl.ROOT, "scripts", "stack.sh"), "start", own], check=True)
        stack = bl.read_env(os.path.join(own, "stack.env"))
    pl = Pipeline(stack)
    t_start = time.time()
    doc = {"stage": "pipeline", "cores": os.cpu_count(), "target_events_per_s": 100000,
           "target_latency_p99_ms": 500,
           "params": {"batch": BATCH, "concurrency": CONCURRENCY, "warmup_rate": WARMUP_RATE,
                      "warmup_seconds": WARMUP_S, "probe_seconds": PROBE_S,
                      "step_seconds": STEP_S, "bisect_steps": BISECT,
                      "sustain_seconds": SUSTAIN_S, "hold_fraction": HOLD_FRACTION,
                      "lag_max_s": LAG_MAX_S, "lag_growth_s": LAG_GROWTH_S,
                      "latency_target_rate": LAT_RATE, "latency_seconds": LAT_S,
                      "marker_every_ms": int(MARKER_EVERY_S * 1000),
                      "redis_poll_ms": int(REDIS_POLL_S * 1000),
                      "light_fraction": LIGHT_FRACTION, "fixed_rate": FIXED_RATE or None}}
    try:
        pl.start()
        log(f"warm-up: {WARMUP_S} s at {WARMUP_RATE:,} events/s")
        pl.step(WARMUP_RATE, WARMUP_S, "warmup", 99)
        best, steps, probe = search(pl)
        doc["probe_events_per_s"] = probe
        sustain = None
        if best:
            for attempt in range(2):
                log(f"sustained run: {SUSTAIN_S:.0f} s at {best:,} events/s")
                sustain = pl.step(best, SUSTAIN_S, f"sustain-{best}", 500 + attempt, profile=True)
                sustain["drain_s"] = pl.drain(best)
                steps.append(sustain)
                if sustain["held"] or attempt:
                    break
                if time_left() < SUSTAIN_S + 20 + LAT_S + 25 + 15:
                    log("no time left in the budget for a second 60 s run")
                    break
                best = round_rate(best * 0.9)
        doc["steps"] = steps
        doc["sustained_events_per_s"] = best if sustain and sustain["held"] else None
        doc["sustained_run"] = {k: v for k, v in (sustain or {}).items() if k != "lag_samples"}
        doc["sustained_lag_samples"] = (sustain or {}).get("lag_samples")
        lat_rate = LAT_RATE if doc["sustained_events_per_s"] and doc["sustained_events_per_s"] >= LAT_RATE \
            else (doc["sustained_events_per_s"] or best or 5000)
        log(f"latency: markers every {MARKER_EVERY_S * 1000:.0f} ms for {LAT_S:.0f} s at {lat_rate:,} events/s")
        doc["latency"] = pl.latency(lat_rate, LAT_S)
        doc["latency"]["rate_note"] = (
            "the target rate" if lat_rate == LAT_RATE
            else f"the highest sustained rate, below {LAT_RATE:,} events/s" if doc["sustained_events_per_s"]
            else "the last rate tried; none held for 60 s")
        low = round_rate(lat_rate * LIGHT_FRACTION)
        if time_left() > LAT_S * 2 / 3 + 30:
            log(f"latency under light load: {low:,} events/s")
            pl.drain(lat_rate)
            doc["latency_light"] = pl.latency(low, LAT_S * 2 / 3, "latency-light", "b")
            doc["latency_light"]["rate_note"] = f"{LIGHT_FRACTION:.0%} of the latency run's rate"
        doc["service_metrics_end"] = pl.service_metrics()
    finally:
        doc["services_end"] = pl.stop()
        pl.cleanup()
        if own:
            subprocess.run([os.path.join(bl.ROOT, "scripts", "stack.sh"), "stop", own], check=False)
    doc["seconds"] = round(time.time() - t_start, 1)
    path = bl.write_json("pipeline", doc)
    log(f"sustained {doc['sustained_events_per_s']} events/s on {os.cpu_count()} cores; wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
