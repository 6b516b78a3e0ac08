#!/usr/bin/env python3
"""dashboard-ws's read of Redis with a full hour of history (run by
scripts/bench.sh, or alone against a stack):

    STACK_ENV=.run/dev/stack.env .cache/venv/bin/python bench/dashboard_read.py

The pipeline benchmark runs for minutes, so the dashboard there reads a few
windows; a dashboard left open reads DASHBOARD_HISTORY_MINUTES (60) of them.
This seeds Redis with 60 one-minute windows in the aggregator's layout, each
with DR_PARTITIONS (12) raw sources (a dense HyperLogLog of DR_USERS (4,000)
users, totals, five dimension hashes) and one sessions source, starts
dashboard-ws on it and sends the aggregator's note for the current window
every 250 ms for DR_SECONDS (20): each note is one read of the changed
window plus the hour's summary. Measured over those reads: dashboard-ws's
own read time (dashboard_redis_read_seconds, sum / count), Redis' CPU time
(INFO cpu, used_cpu_user + used_cpu_sys; nothing else uses this Redis
meanwhile in `make bench`) and dashboard-ws's CPU time, each per read.
DASHBOARD_BIN picks another dashboard-ws binary (to compare two builds).

Writes $BENCH_OUT/dashboard_read.json.
"""
import json
import os
import subprocess
import sys
import time
import urllib.request

import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _benchlib as bl  # noqa: E402

W = 60_000
PARTS = int(os.environ.get("DR_PARTITIONS", "12"))
USERS = int(os.environ.get("DR_USERS", "4000"))
SECONDS = float(os.environ.get("DR_SECONDS", "20"))
HISTORY = 60
DIMS = {"url": 50, "device_type": 3, "country": 20, "category": 8, "event_type": 5}


def log(msg):
    print(f"dashboard-read: {msg}", file=sys.stderr, flush=True)


def seed(r, prefix, starts):
    for wi, s in enumerate(starts):
        base = f"{prefix}:w:{W}:{s}"
        p = r.pipeline(transaction=False)
        p.zadd(f"{prefix}:win:{W}", {str(s): s})
        for src in [f"r{i}" for i in range(PARTS)] + ["s0"]:
            p.sadd(base + ":src", src)
            t = {"events": 1000, "page_views": 500, "purchases": 5, "revenue_micros": 5_000_000,
                 "sessions": 0, "session_ms_sum": 0, "bounces": 0, "conversions": 0,
                 "final": 0, "wm": 0}
            if src == "s0":
                t.update(sessions=100, session_ms_sum=100 * 90_000, bounces=30, conversions=3)
            p.hset(f"{base}:t:{src}", mapping=t)
            if src[0] != "r":
                continue
            for d, n in DIMS.items():
                p.hset(f"{base}:d:{d}:{src}", mapping={f"{d}-{k}": k + 1 for k in range(n)})
        p.execute()
        for i in range(PARTS):
            # users drawn so that windows and partitions overlap, as real ones do
            users = [f"u{(wi * 997 + i * 131 + j * 7) % 200_000}" for j in range(USERS)]
            r.pfadd(f"{base}:u:r{i}", *users)


def metric(port, name):
    return bl.metric_sum(bl.metrics_text(port), name) or 0.0


def redis_cpu(r):
    c = r.info("cpu")
    return float(c["used_cpu_user"]) + float(c["used_cpu_sys"])


def main():
    stack = bl.read_env(os.environ["STACK_ENV"])
    r = redis.Redis(host=stack["REDIS_HOST"], port=int(stack["REDIS_PORT"]))
    prefix = f"bench.dr.{os.getpid()}"
    now = int(time.time() * 1000)
    cur = now - now % W
    starts = [cur - (HISTORY - 1 - i) * W for i in range(HISTORY)]
    t0 = time.time()
    seed(r, prefix, starts)
    log(f"seeded {HISTORY} windows x {PARTS} partitions ({USERS:,} users each) "
        f"in {time.time() - t0:.1f} s")
    enc = r.execute_command("GETRANGE", f"{prefix}:w:{W}:{cur}:u:r0", 4, 4)
    port = bl.free_port()
    binary = os.environ.get("DASHBOARD_BIN", os.path.join(bl.BIN, "dashboard-ws"))
    env = dict(os.environ, REDIS_HOST=stack["REDIS_HOST"], REDIS_PORT=stack["REDIS_PORT"],
               DASHBOARD_ADDR="127.0.0.1", DASHBOARD_PORT=str(port),
               DASHBOARD_REDIS_PREFIX=prefix, LOG_LEVEL="warn")
    proc = subprocess.Popen([binary], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as x:
                    if x.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit("dashboard-ws not ready")
            time.sleep(0.1)
        time.sleep(1)  # the first (full) read is not one of the measured ones
        reads0 = metric(port, "dashboard_redis_reads_total")
        secs0 = metric(port, "dashboard_redis_read_seconds_sum")
        rcpu0, dcpu0 = redis_cpu(r), bl.proc_cpu(proc.pid)
        end = time.time() + SECONDS
        while time.time() < end:
            r.publish(f"{prefix}:updates", json.dumps(
                {"ts": int(time.time() * 1000), "replica": "bench", "full": False,
                 "windows": [[W, cur]]}))
            time.sleep(0.25)
        time.sleep(0.5)
        reads = metric(port, "dashboard_redis_reads_total") - reads0
        secs = metric(port, "dashboard_redis_read_seconds_sum") - secs0
        rcpu, dcpu = redis_cpu(r) - rcpu0, bl.proc_cpu(proc.pid) - dcpu0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/snapshot", timeout=5) as x:
            users = json.loads(x.read())["summary"]["unique_users"]
    finally:
        proc.terminate()
        proc.wait(10)
        keys = list(r.scan_iter(f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            r.delete(*keys[i:i + 500])
    if not reads:
        raise SystemExit("no reads measured")
    doc = {"stage": "dashboard_read", "windows": HISTORY, "partitions": PARTS,
           "users_per_hll": USERS, "hll_encoding": "dense" if enc == b"\x00" else "sparse",
           "seconds": SECONDS, "reads": int(reads),
           "read_ms_mean": round(secs / reads * 1000, 2),
           "redis_cpu_ms_per_read": round(rcpu / reads * 1000, 2),
           "dashboard_cpu_ms_per_read": round(dcpu / reads * 1000, 2),
           "hour_unique_users": users, "binary": binary}
    log(f"{int(reads)} reads: {doc['read_ms_mean']} ms each (dashboard-ws's clock), Redis CPU "
        f"{doc['redis_cpu_ms_per_read']} ms and dashboard-ws CPU "
        f"{doc['dashboard_cpu_ms_per_read']} ms per read; the hour's users {users:,}")
    bl.write_json("dashboard_read", doc)


if __name__ == "__main__":
    main()
