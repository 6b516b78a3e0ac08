#!/usr/bin/env bash
# Flat CPU profile of running processes, for the report's "top costs".
#
#   bench/_profile.sh start NAME PID[,PID...]   perf record -F $BENCH_PERF_FREQ (499 Hz,
#                                               no call graphs: ~0.5 % overhead)
#   bench/_profile.sh stop NAME                 stops it and writes
#                                               $BENCH_OUT/profiles/NAME.json
#
# NAME.json: {"samples": n, "seconds": s, "freq_hz": f, "symbols": [[pct, thread, dso, symbol], ...],
# "libraries": [[pct, dso], ...], "threads": [[pct, thread name], ...]},
# percentages of the samples of the profiled processes (every thread); with
# several PIDs also "processes": {name: {"pct_of_samples", "symbols": [[pct,
# dso, symbol], ...] (% of that process)}}. Without a usable perf both
# commands do nothing.
set -uo pipefail
cmd=${1:-}
name=${2:-}
BENCH_OUT=${BENCH_OUT:-$(cd "$(dirname "$0")" && pwd)/out}
dir=$BENCH_OUT/profiles
[ -n "$cmd" ] && [ -n "$name" ] || { echo "usage: $0 start NAME PIDS | stop NAME" >&2; exit 2; }
command -v perf >/dev/null 2>&1 || exit 0
mkdir -p "$dir"

case "$cmd" in
start)
    pids=${3:?PIDS}
    rm -f "$dir/$name.data"
    : >"$dir/$name.pids"
    for p in ${pids//,/ }; do
        echo "$p $(cat "/proc/$p/comm" 2>/dev/null || echo "?")" >>"$dir/$name.pids"
    done
    echo "${BENCH_PERF_FREQ:-499}" >"$dir/$name.freq"
    setsid perf record -q -F "${BENCH_PERF_FREQ:-499}" -o "$dir/$name.data" -p "$pids" \
        >"$dir/$name.perf.log" 2>&1 </dev/null &
    echo $! >"$dir/$name.perfpid"
    ;;
stop)
    [ -f "$dir/$name.perfpid" ] || exit 0
    pid=$(cat "$dir/$name.perfpid")
    rm -f "$dir/$name.perfpid"
    kill -INT "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    [ -s "$dir/$name.data" ] || exit 0
    perf report -i "$dir/$name.data" --no-children -q --sort comm,dso,sym --percent-limit 0.3 \
        2>/dev/null >"$dir/$name.sym.txt"
    perf report -i "$dir/$name.data" --no-children -q --sort dso 2>/dev/null >"$dir/$name.dso.txt"
    perf report -i "$dir/$name.data" --no-children -q --sort comm 2>/dev/null >"$dir/$name.comm.txt"
    perf report -i "$dir/$name.data" --header-only 2>/dev/null >"$dir/$name.head.txt"
    perf script -i "$dir/$name.data" -F pid 2>/dev/null | sort | uniq -c >"$dir/$name.count.txt"
    if [ "$(wc -l <"$dir/$name.pids")" -gt 1 ]; then
        while read -r p _; do
            perf report -i "$dir/$name.data" --no-children -q --pid="$p" --percentage relative \
                --sort dso,sym --percent-limit 1 2>/dev/null >"$dir/$name.pid-$p.txt"
        done <"$dir/$name.pids"
    fi
    python3 - "$dir" "$name" <<'PY'
import json, os, re, sys
d, name = sys.argv[1:3]
def rows(path):
    out = []
    for line in open(path, errors="replace"):
        parts = line.split()
        if parts and parts[0].endswith("%"):
            out.append([float(parts[0][:-1])] + parts[1:])
    return out
syms = []
for r in rows(os.path.join(d, name + ".sym.txt")):
    # pct comm dso [.] symbol...
    if len(r) >= 5:
        syms.append([r[0], r[1], r[2], " ".join(r[4:])])
libs = [[r[0], " ".join(r[1:])] for r in rows(os.path.join(d, name + ".dso.txt"))]
threads = [[r[0], " ".join(r[1:])] for r in rows(os.path.join(d, name + ".comm.txt"))]
secs = None
m = re.search(r"sample duration :\s+([0-9.]+) ms", open(os.path.join(d, name + ".head.txt")).read())
if m:
    secs = round(float(m.group(1)) / 1000, 1)
per_pid = {}
for line in open(os.path.join(d, name + ".count.txt")):
    c, p = line.split()
    per_pid[p] = int(c)
n = sum(per_pid.values())
freq = None
try:
    freq = int(open(os.path.join(d, name + ".freq")).read().strip())
except (OSError, ValueError):
    pass
doc = {"samples": n, "seconds": secs, "freq_hz": freq, "symbols": syms[:25], "libraries": libs[:12],
       "threads": threads[:12]}
procs = [line.split(None, 1) for line in open(os.path.join(d, name + ".pids")) if line.strip()]
if len(procs) > 1:
    doc["processes"] = {}
    for p, comm in procs:
        rows_p = []
        f = os.path.join(d, f"{name}.pid-{p}.txt")
        if os.path.exists(f):
            for r in rows(f):
                if len(r) >= 4:
                    rows_p.append([r[0], r[1], " ".join(r[3:])])
            os.remove(f)
        doc["processes"][comm.strip()] = {
            "pct_of_samples": round(100.0 * per_pid.get(p, 0) / n, 1) if n else None,
            "symbols": rows_p[:12]}
json.dump(doc, open(os.path.join(d, name + ".json"), "w"), indent=1)
PY
    rm -f "$dir/$name.data" "$dir/$name.sym.txt" "$dir/$name.dso.txt" "$dir/$name.comm.txt" "$dir/$name.head.txt" \
        "$dir/$name.count.txt" "$dir/$name.perf.log" "$dir/$name.pids" "$dir/$name.freq"
    ;;
*)
    echo "usage: $0 start NAME PIDS | stop NAME" >&2
    exit 2
    ;;
esac
