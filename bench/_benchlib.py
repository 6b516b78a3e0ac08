"""Helpers of the Python stage scripts (bench/*.py). Not a stage itself:
scripts/bench.sh skips bench files whose name starts with "_".

CPU and memory of a service are always taken the same way (as in bench/_lib.sh):
CPU seconds = utime + stime of /proc/<pid>/stat (every thread of the process),
peak RSS = VmHWM of /proc/<pid>/status, read just before the process is stopped.
"""
import json
import os
import socket
import subprocess
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.environ.get("BIN_DIR", os.path.join(ROOT, "build", "bin"))
OUT = os.environ.get("BENCH_OUT", os.path.join(ROOT, "bench", "out"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """CPU seconds (user + system, every thread) of a running process."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TCK


def thread_cpu(pid):
    """{tid: (thread name, CPU seconds)} of a running process."""
    out = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
            parts = tail.split()
            out[tid] = (head.split("(", 1)[1], (int(parts[11]) + int(parts[12])) / TCK)
        except (OSError, IndexError, ValueError):
            pass
    return out


def thread_cpu_delta(before, after):
    """CPU seconds between two thread_cpu() snapshots, summed by thread name
    with its digits dropped (kafka-request-handler-3 -> kafka-request-handler-)."""
    import re
    out = {}
    for tid, (name, c1) in after.items():
        c0 = before.get(tid, (name, 0.0))[1]
        key = re.sub(r"[0-9]+", "", name).strip() or name
        out[key] = out.get(key, 0.0) + c1 - c0
    return dict(sorted(((k, round(v, 2)) for k, v in out.items() if v >= 0.01),
                       key=lambda kv: -kv[1]))


def _status_kib(pid, field):
    """A kB field of /proc/<pid>/status, in bytes (None when absent)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def proc_hwm(pid):
    """Peak resident set (VmHWM) of a running process, bytes."""
    return _status_kib(pid, "VmHWM")


def proc_rss(pid):
    return _status_kib(pid, "VmRSS")


def machine_cpu():
    """(busy, steal) jiffies of the whole machine since boot (/proc/stat):
    busy = user + nice + system + irq + softirq; steal = time the hypervisor
    gave to someone else."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]] + [0] * 8
    return v[0] + v[1] + v[2] + v[5] + v[6], v[7]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.strip().split("=", 1)
                env[k] = v
    return env


def metrics_text(port, timeout=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        return r.read().decode()


def metric_sum(text, name, label=None):
    """Sum of the samples of metric `name` (optionally only those whose labels
    contain `label`, e.g. 'topic="x"')."""
    s = 0.0
    found = False
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        key, _, val = line.rpartition(" ")
        base = key.split("{", 1)[0]
        if base != name:
            continue
        if label and label not in key:
            continue
        try:
            s += float(val)
            found = True
        except ValueError:
            pass
    return s if found else None


def profile(*args):
    """bench/_profile.sh start NAME PIDS | stop NAME."""
    subprocess.run(["bash", os.path.join(HERE, "_profile.sh"), *map(str, args)], check=False)


def write_json(name, doc):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name + ".json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    return path
