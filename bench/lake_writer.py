#!/usr/bin/env python3
"""lake-writer benchmark (run by scripts/bench.sh, or alone):

    STACK_ENV=.run/lw-dev/stack.env .cache/venv/bin/python bench/lake_writer.py

Without STACK_ENV it starts a stack of its own in .run/bench-lw and stops it.
Input: $BENCH_RAW_TOPIC (pre-filled by scripts/bench.sh with $BENCH_EVENTS
events: the topic the physical limit was measured on), else a topic of its
own filled by cs-kperf (LW_BENCH_EVENTS, default 1000000). For each run the
writer reads the whole topic into events_raw on a fresh local warehouse; the
run ends when the committed snapshot holds every row. BENCH_RUNS runs
(default 3) of the default configuration (the first one profiled with perf),
then one with LAKE_AVRO_CODEC=deflate. Figures:
  rows_per_s         rows / wall seconds (start of the process to the commit
                     that holds the last row; includes start-up and one
                     LAKE_ROLL_AGE of waiting for the last commit)
  rows_per_cpu_s     rows / CPU seconds of the writer process (/proc utime +
                     stime, every thread: librdkafka's too) = rows/s per core
  peak_rss_bytes     VmHWM of the process just before it is stopped
  commit_p50_ms ...  commit latency, files per commit, bytes per row
Writes $BENCH_OUT/lake_writer.json (default bench/out).
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _benchlib as bl  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.environ.get("BIN_DIR", os.path.join(ROOT, "build", "bin"))
OUT = os.environ.get("BENCH_OUT", os.path.join(ROOT, "bench", "out"))
TCK = os.sysconf("SC_CLK_TCK")


def total_records(tdir):
    mds = glob.glob(os.path.join(tdir, "metadata", "v*.metadata.json"))
    if not mds:
        return 0
    path = max(mds, key=lambda p: int(os.path.basename(p)[1:].split(".")[0]))
    try:
        with open(path) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return 0
    for s in m.get("snapshots", []):
        if s["snapshot-id"] == m.get("current-snapshot-id"):
            return int(s["summary"]["total-records"])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TCK


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def hist_quantile(text, name, q):
    """Quantile (upper bucket bound) of a Prometheus histogram in the text."""
    buckets = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = re.search(r'[{,]le="([^"]+)"', line).group(1)
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    if not buckets or buckets[-1][1] == 0:
        return None
    buckets.sort()
    total = buckets[-1][1]
    for le, c in buckets:
        if c >= q * total:
            return le
    return None


def metric_value(text, prefix):
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return None


def run(stack, topic, n, label, prof=False, **env_extra):
    wh = tempfile.mkdtemp(prefix="lw-bench-")
    port = bl.free_port()
    env = dict(os.environ)
    env.update({"KAFKA_BOOTSTRAP": stack["KAFKA_BOOTSTRAP"], "TOPIC_RAW": topic,
                "LAKE_TABLES": "events_raw", "LAKE_WAREHOUSE": wh, "LAKE_ADMIN_PORT": str(port),
                "LAKE_ADMIN_ADDR": "127.0.0.1", "LAKE_GROUP_ID": f"lw-bench-{os.getpid()}-{label}",
                "LAKE_INSTANCE_ID": f"bench-{label}", "LAKE_ROLL_AGE": "2s",
                "LAKE_LOG_LEVEL": "warn"})
    env.update(env_extra)
    log = open(os.path.join(tempfile.gettempdir(), f"lw-bench-{os.getpid()}-{label}.log"), "wb")
    t0 = time.time()
    p = subprocess.Popen([os.path.join(BIN, "lake-writer")], env=env, stdout=log, stderr=log)
    if prof:
        bl.profile("start", "lake-writer", p.pid)
    try:
        while total_records(os.path.join(wh, "events_raw")) < n:
            if p.poll() is not None:
                raise SystemExit(f"lake-writer exited {p.returncode} (log {log.name})")
            if time.time() - t0 > 600:
                raise SystemExit("lake-writer did not finish in 600 s")
            time.sleep(0.05)
        wall = time.time() - t0
        cpu = cpu_seconds(p.pid)
        if prof:
            bl.profile("stop", "lake-writer")
        text = metrics(port)
        hwm = bl.proc_hwm(p.pid)
    finally:
        p.terminate()
        p.wait(15)
    size = sum(os.path.getsize(f) for f in
               glob.glob(os.path.join(wh, "events_raw", "data", "**", "*.avro"), recursive=True))
    files = len(glob.glob(os.path.join(wh, "events_raw", "data", "**", "*.avro"), recursive=True))
    shutil.rmtree(wh, ignore_errors=True)
    log.close()
    os.unlink(log.name)  # kept only when the run fails (its path is in the error)
    commits = metric_value(text, 'lake_commits_total{table="events_raw"}')
    res = {"config": label, "events": n, "rows": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
           "peak_rss_bytes": hwm,
           "rows_per_s": round(n / wall), "rows_per_cpu_s": round(n / cpu),
           "commits": commits, "data_files": files, "data_bytes": size,
           "bytes_per_row": round(size / n, 1),
           "commit_p50_ms": (hist_quantile(text, "lake_commit_seconds", 0.5) or 0) * 1000,
           "commit_p99_ms": (hist_quantile(text, "lake_commit_seconds", 0.99) or 0) * 1000,
           "env": env_extra}
    print(f"lake-writer [{label}]: {n} rows in {wall:.2f} s = {n / wall:,.0f} rows/s; "
          f"{cpu:.2f} CPU s = {n / cpu:,.0f} rows per CPU-second (per core); "
          f"{files} files, {size / n:.0f} B/row, commits {commits:.0f}, "
          f"commit p50 <= {res['commit_p50_ms']:.0f} ms p99 <= {res['commit_p99_ms']:.0f} ms",
          flush=True)
    return res


def main():
    own = None
    if os.environ.get("STACK_ENV"):
        stack = bl.read_env(os.environ["STACK_ENV"])
    else:
        own = os.path.join(ROOT, ".run", "bench-lw")
        subprocess.run([os.path.join(ROOT, "scripts", "stack.sh"), "start", own], check=True)
        stack = bl.read_env(os.path.join(own, "stack.env"))
    try:
        topic = os.environ.get("BENCH_RAW_TOPIC")
        if topic:
            n = int(os.environ.get("BENCH_EVENTS", "2000000"))
        else:
            n = int(os.environ.get("LW_BENCH_EVENTS", "1000000"))
            topic = f"lwbench.raw.{os.getpid()}"
            subprocess.run([os.path.join(BIN, "cs-admin"), "create-topics", "-b",
                            stack["KAFKA_BOOTSTRAP"], f"{topic}:12"], check=True)
            fill = subprocess.run([os.path.join(BIN, "cs-kperf"), "fill", "-b",
                                   stack["KAFKA_BOOTSTRAP"], "-t", topic, "-n", str(n), "-u",
                                   "100000", "-s", "7"], check=True, capture_output=True,
                                  text=True)
            print("filled:", fill.stdout.strip(), flush=True)
        runs = [run(stack, topic, n, f"default-{i + 1}", prof=(i == 0))  # codec null, fsync on
                for i in range(bl.RUNS)]
        deflate = run(stack, topic, n, "deflate", LAKE_AVRO_CODEC="deflate")
        os.makedirs(OUT, exist_ok=True)
        doc = {"stage": "lake-writer",
               "summary": {"unit": "rows", "limit": "consume", "target_per_core": 300000,
                           "input": topic, "runs": runs},
               "deflate_run": deflate,
               "runs": runs}
        with open(os.path.join(OUT, "lake_writer.json"), "w") as f:
            json.dump(doc, f, indent=1)
        print("wrote", os.path.join(OUT, "lake_writer.json"))
    finally:
        if own:
            subprocess.run([os.path.join(ROOT, "scripts", "stack.sh"), "stop", own], check=False)


if __name__ == "__main__":
    sys.exit(main())
