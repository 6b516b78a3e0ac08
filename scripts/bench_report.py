"""Turns bench/out/*.json into bench/report.md and bench/report.json.

    bench_report.py OUT_DIR REPORT.md REPORT.json

Inputs (written by scripts/bench.sh and the bench/<stage> scripts):
  kafka_limit.json   the physical limit: cs-kperf fill, consume_runs, produce_runs
                     (and the topic, its partitions and users)
  run.json           the run: start, durations, runs per figure, machine
  <stage>.json       one per stage; the uniform part is "summary":
                       {"unit", "limit": "consume"|"produce"|null, "target_per_core",
                        "input", "runs": [{"events", "wall_s", "cpu_s", "peak_rss_bytes"}, ...],
                        optional "peak_rss_bytes" (one process for all runs),
                        optional "limit_runs" (a limit measured by the stage itself)}
  pipeline.json      the whole pipeline (its parameters, rate search, sustained run,
                     latency)
  profiles/*.json    perf profiles (bench/_profile.sh)

Every number in the report comes from these files: nothing measured, no
target and no setting is written here. The figures are derived here and
nowhere else: per run events/s = events / wall_s, per core = events / cpu_s;
a repeated figure is the median of its runs with min-max beside it; ratio =
stage figure / limit figure (both medians). A file that is missing is named
as missing, never filled in.
"""
import json
import os
import platform
import statistics
import sys
import time

out_dir, md_path, json_path = sys.argv[1:4]

results = {}
for name in sorted(os.listdir(out_dir)):
    if name.endswith(".json"):
        with open(os.path.join(out_dir, name)) as f:
            try:
                results[name[:-5]] = json.load(f)
            except ValueError as e:
                results[name[:-5]] = {"error": f"unreadable: {e}"}
profiles = {}
pdir = os.path.join(out_dir, "profiles")
if os.path.isdir(pdir):
    for name in sorted(os.listdir(pdir)):
        if name.endswith(".json"):
            try:
                with open(os.path.join(pdir, name)) as f:
                    profiles[name[:-5]] = json.load(f)
            except ValueError:
                pass

limit = results.pop("kafka_limit", {})
run = results.pop("run", {})
pipeline = results.pop("pipeline", None)
if pipeline is not None and not isinstance(pipeline, dict):
    pipeline = None

# key -> (label, executable, profile name)
STAGES = [("gateway", "ingest-gateway (batched)", "ingest-gateway", "gateway"),
          ("sessionizer", "sessionizer", "sessionizer", "sessionizer"),
          ("aggregator", "aggregator", "aggregator", "aggregator"),
          ("lake_writer", "lake-writer (events_raw)", "lake-writer", "lake-writer"),
          ("dashboard", "dashboard-ws", "dashboard-ws", "dashboard")]
LABEL = {k: lab for k, lab, _, _ in STAGES}
EXE = {k: exe for k, _, exe, _ in STAGES}
PROF = {k: p for k, _, _, p in STAGES}


# ------------------------------------------------------------------ helpers
def fmt(v, digits=0):
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and digits == 0 and v.is_integer():
        v = int(v)
    if isinstance(v, float) and digits == 0 and abs(v) < 100:
        return f"{v:,.2f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, (int, float)):
        return f"{v:,.{digits}f}"
    return str(v)


def runs_txt(n, what="run"):
    return f"{fmt(n)} {what}" + ("" if n == 1 else "s")


def mib(b):
    return None if b is None else b / 1048576


def first(*vals):
    return next((v for v in vals if v is not None), None)


def doc(key):
    d = results.get(key)
    return d if isinstance(d, dict) else {}


def stats(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    r = lambda x: round(x) if abs(x) >= 100 else round(x, 3)  # noqa: E731
    return {"median": r(statistics.median(vals)), "min": r(min(vals)), "max": r(max(vals)),
            "n": len(vals)}


def spread(st, digits=0, scale=1.0):
    if not st:
        return "—"
    m = fmt(st["median"] * scale, digits)
    if st["n"] == 1 or st["min"] == st["max"]:
        return m
    return f"{m} ({fmt(st['min'] * scale, digits)}–{fmt(st['max'] * scale, digits)})"


def limit_stats(runs):
    if not runs:
        return None
    return {"rate": stats([r["rate"] for r in runs]),
            "per_cpu": stats([r["rate_per_cpu_second"] for r in runs]),
            "records": runs[0]["records"], "n": len(runs),
            "cpu_s": stats([r["cpu_seconds"] for r in runs])}


def uniform(key):
    """The uniform figures of one stage, or None."""
    s = doc(key).get("summary")
    if not s or not s.get("runs"):
        return None
    runs = s["runs"]
    u = {"unit": s.get("unit", "events"), "n": len(runs),
         "events": stats([r["events"] for r in runs]),
         "wall_s": stats([r["wall_s"] for r in runs]),
         "cpu_s": stats([r["cpu_s"] for r in runs]),
         "per_s": stats([r["events"] / r["wall_s"] for r in runs if r["wall_s"]]),
         "per_core": stats([r["events"] / r["cpu_s"] for r in runs if r["cpu_s"]]),
         "peak_rss": stats([s["peak_rss_bytes"]] if s.get("peak_rss_bytes")
                           else [r.get("peak_rss_bytes") for r in runs]),
         "target": s.get("target_per_core"), "input": s.get("input"),
         "limit_kind": s.get("limit")}
    lim = None
    if s.get("limit_runs"):
        lim = limit_stats(s["limit_runs"])
        u["limit_what"] = s.get("limit_note", "bare librdkafka produce")
    elif s.get("limit") == "consume":
        lim = limit_stats(limit.get("consume_runs"))
        u["limit_what"] = "bare librdkafka consume of the same topic"
    elif s.get("limit") == "produce":
        lim = limit_stats(limit.get("produce_runs"))
        u["limit_what"] = f"bare librdkafka produce of {limit.get('topic', 'the raw topic')}'s records"
    u["limit"] = lim
    if lim and u["per_core"] and u["per_s"]:
        u["ratio_core"] = u["per_core"]["median"] / lim["per_cpu"]["median"]
        u["ratio_wall"] = u["per_s"]["median"] / lim["rate"]["median"]
    return u


uni = {k: uniform(k) for k, *_ in STAGES}
gw, sz, ag, lw, db = (doc(k) for k in ("gateway", "sessionizer", "aggregator", "lake_writer",
                                         "dashboard"))
cores = first(run.get("cores"), (pipeline or {}).get("cores"), gw.get("cores"),
              sz.get("machine_cores"), os.cpu_count())
machine = run.get("machine") or platform.machine()
fill = limit.get("fill") or {}
topic = limit.get("topic") or first(*(u["input"] for u in uni.values() if u and u["limit_kind"] == "consume"))
params = (pipeline or {}).get("params") or {}
derived = {}

# which stages should be there: those the run started, else all of them
expected = list((run.get("stage_seconds") or {}).keys()) or [k for k, *_ in STAGES] + ["pipeline"]
missing = [k for k in expected if (k == "pipeline" and pipeline is None)
           or (k != "pipeline" and (k not in results or "error" in doc(k)))]

# ------------------------------------------------------------------ header
took = run.get("seconds_to_report")
lines = ["# Benchmark report", ""]
kafka = f"Kafka {run['kafka_version']}" if run.get("kafka_version") else "Kafka"
if run:
    budget = run.get("budget_seconds")
    lines.append(
        f"Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(run.get('started') or 0))} on {cores} "
        f"cores ({machine}), one {kafka} broker and one Redis on loopback on the same machine; "
        f"`make bench` took {fmt(took / 60 if took else None, 1)} min to this report"
        + (f" (budget {fmt(budget / 60, 1)} min)" if budget else "")
        + ". Every figure below was measured in this run.")
else:
    lines.append(f"**Incomplete run**: `{os.path.join(os.path.basename(out_dir), 'run.json')}` is "
                 "missing, so `make bench` did not finish; the figures below come from the stage "
                 f"files that were written ({cores} cores, {machine}).")
if missing:
    lines += ["", "**Missing** (the stage failed, was not run or did not finish; see the output "
              "of `make bench`): " + ", ".join(f"`{m}`" for m in missing) + "."]
lines.append("")

# ------------------------------------------------------------------ method
runs_per_figure = first(run.get("bench_runs"),
                        max((u["n"] for k, u in uni.items() if u and k != "dashboard"), default=None))
freqs = sorted({p.get("freq_hz") for p in profiles.values() if p.get("freq_hz")})
freq_txt = f" at {'/'.join(str(f) for f in freqs)} Hz" if freqs else ""
inp = [f"- **Input.** The consuming stages (sessionizer, aggregator, lake-writer) read the same "
       f"topic `{topic or '—'}` ({fmt(fill.get('records'))} Avro events"
       + (f" of {fmt(limit['users'])} users" if limit.get("users") else "")
       + (f", {limit['partitions']} partitions" if limit.get("partitions") else "")
       + ", written once by `cs-kperf fill`) from its start, each run with a fresh process, "
       "consumer group and output topics (the lake-writer: a fresh warehouse)."]
if uni.get("gateway"):
    inp.append(f"The gateway takes {uni['gateway']['input']}, after a warm-up.")
if uni.get("dashboard"):
    inp.append(f"dashboard-ws serves {uni['dashboard']['input']} (`bench/dashboard.mjs`).")
single = []
if db:
    single.append(f"the dashboard (one {fmt(db.get('seconds'))} s run, {fmt(db.get('changes'))} "
                  f"changes to {fmt(db.get('clients'))} clients)")
if sz.get("inproc"):
    single.append("the sessionizer's in-process figure")
if ag.get("micro_events_per_cpu_second_median"):
    single.append("the aggregator's in-process figure (best and median of "
                  + (f"{ag['micro_runs']} runs" if ag.get("micro_runs") else "its runs")
                  + " inside the program)")
if pipeline:
    single.append("the pipeline's rate search, its sustained run and the latency runs (their steps "
                  "and numbers of markers are given)")
warm = ["the gateway (POSTs before the measured runs)"]
if params.get("warmup_rate"):
    warm.append(f"the pipeline ({fmt(params['warmup_seconds'])} s at {fmt(params['warmup_rate'])} "
                "events/s after the services start)")
elif pipeline:
    warm.append("the pipeline")
lines += ["## Method", "",
          " ".join(inp),
          "- **Physical limit**, measured in the same run on the same broker before the stages: a "
          f"bare librdkafka consumer reading `{topic or '—'}` (the limit of a consuming stage) and a bare "
          "librdkafka producer (acks=all, idempotent, lz4, as the services) writing the same records "
          "again (the limit of a producing stage; for the gateway, the records it wrote itself). "
          "`build/bin/cs-kperf`.",
          "- **Per core** = events (rows, deliveries) / CPU seconds of the service process "
          "(utime + stime from `/proc/<pid>/stat`, every thread: librdkafka's, HTTP workers, "
          "Redis writer); the limit's per core = records / CPU seconds of cs-kperf. **Peak RSS** = "
          "`VmHWM` of `/proc/<pid>/status` read just before the process is stopped (the gateway: one "
          "process for all its runs). **Wall** rate = events / seconds from the start of the "
          "process, start-up and group join included, to the end of the work: the sessionizer's "
          "committed offsets reach the end of the topic; the aggregator's event counter reaches the "
          "topic's size; the lake-writer's Iceberg snapshot holds every row (which includes waiting "
          "for its last roll); for the gateway the load generator's elapsed time, for dashboard-ws "
          "the measured window.",
          "- **Ratio** = stage / limit, on the medians: *per core* compares the CPU cost per "
          "event of the service with the CPU cost per record of bare librdkafka; *wall* compares "
          "rates. On a shared machine a ratio measured within one run weighs more than the "
          "absolute numbers, which move with whatever else runs.",
          f"- **Runs.** Warm-up: {', '.join(warm)}; the consuming stages run no warm-up, each run "
          "being a fresh process on a broker that already served their input to the limit runs. "
          f"Then {runs_txt(runs_per_figure, 'measured run')} of each stage figure and of each limit; a "
          "figure is the median, with the spread (min–max) in brackets. "
          + (f"Single runs: {'; '.join(single)}. " if single else "")
          + f"The first measured run of each stage (dashboard-ws: its measured window; the pipeline: "
          f"its sustained run) is sampled by `perf`{freq_txt} (flat profile, no call graphs).",
          "- Benchmarks are not tests: nothing here fails `make test`.", ""]

# ------------------------------------------------------------------ stage table
lines += ["## Stages against the physical limit", "",
          "| stage | unit | runs | per s (wall) | CPU s | **per s per core** | peak RSS MiB | "
          "physical limit per s (wall) | limit per s per core | **ratio per core** | ratio wall |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
for key, label, *_ in STAGES:
    u = uni.get(key)
    if not u:
        lines.append(f"| {label} | — | — | missing (stage failed or not run) | — | — | — | — | — | — | — |")
        continue
    lim = u["limit"]
    lines.append(
        f"| {label} | {u['unit']} | {u['n']} | {spread(u['per_s'])} | {spread(u['cpu_s'], 2)} | "
        f"**{spread(u['per_core'])}** | {spread(u['peak_rss'], 1, 1 / 1048576)} | "
        + (f"{spread(lim['rate'])} | {spread(lim['per_cpu'])} | **{u['ratio_core']:.2f}** | "
           f"{u['ratio_wall']:.2f} |" if lim and "ratio_core" in u
           else "— (no Kafka in its path) | — | — | — |" if not u["limit_kind"]
           else "— (limit missing) | — | — | — |"))
lines.append("")
for key, label, *_ in STAGES:
    u = uni.get(key)
    if u and u.get("limit"):
        lines.append(f"- {label}: limit = {u['limit_what']} ({fmt(u['limit']['records'])} records, "
                     f"{runs_txt(u['limit']['n'])}); input: {u['input']}.")
    elif u:
        lines.append(f"- {label}: input: {u['input']}.")
lines.append("")

# ------------------------------------------------------------------ targets
targets = []
short_stages = []


def target_row(what, target_txt, value, ok, value_txt=None):
    status = "missing" if ok is None else ("met" if ok else "short")
    targets.append({"what": what, "target": target_txt, "measured": value, "status": status})
    lines.append(f"| {what} | {target_txt or '—'} | {value_txt or fmt(value)} | "
                 f"{'—' if ok is None else ('met' if ok else '**short**')} |")


lines += ["## Targets", "", "| what | target | measured | status |", "|---|---|---|---|"]
for key, what in (("gateway", "gateway, batched events/s per core"),
                  ("sessionizer", "sessionizer events/s per core (service on Kafka)"),
                  ("aggregator", "aggregator events/s per core (service on Kafka + Redis)"),
                  ("lake_writer", "lake-writer rows/s per core")):
    u = uni.get(key)
    if not u or not u.get("target") or not u.get("per_core"):
        target_row(what, f"≥ {u['target']:,}" if u and u.get("target") else None, None, None,
                   "missing")
        continue
    v = u["per_core"]["median"]
    ok = v >= u["target"]
    if not ok:
        short_stages.append(key)
    target_row(what, f"≥ {u['target']:,}", round(v), ok)
sz_target = (uni.get("sessionizer") or {}).get("target")
if sz.get("inproc") and sz_target:
    v = sz["inproc"]["events_per_s_per_core"]
    target_row("sessionizer, in-process (decode + sessionize + encode, no Kafka; one run)",
               f"≥ {sz_target:,}", round(v), v >= sz_target)
ag_target = (uni.get("aggregator") or {}).get("target")
if ag.get("micro_events_per_cpu_second_median") and ag_target:
    v = ag["micro_events_per_cpu_second_median"]
    n_micro = f"median of {ag['micro_runs']}" if ag.get("micro_runs") else "median of its runs"
    target_row(f"aggregator, in-process (decode + windows + commit work, no I/O; {n_micro})",
               f"≥ {ag_target:,}", v, v >= ag_target)
if pipeline:
    pt, lt = pipeline.get("target_events_per_s"), pipeline.get("target_latency_p99_ms")
    v = pipeline.get("sustained_events_per_s")
    secs = (pipeline.get("sustained_run") or {}).get("seconds") or params.get("sustain_seconds")
    target_row(f"whole pipeline, events/s sustained {fmt(secs)} s on {pipeline.get('cores', cores)} "
               "cores (broker included)",
               f"≥ {pt:,}" if pt else None, v, (bool(v) and v >= pt) if pt else None,
               fmt(v) if v else "none held")
    if pt and (not v or v < pt):
        short_stages.append("pipeline")
    lat = pipeline.get("latency") or {}
    p99 = (lat.get("websocket_ms") or {}).get("p99")
    target_row(f"event → dashboard p99, pushed on the WebSocket (at {fmt(lat.get('rate'))} events/s)",
               f"≤ {lt:,} ms" if lt else None, p99,
               (p99 is not None and p99 <= lt) if lt else None,
               f"{fmt(p99)} ms" if p99 is not None else "not measured")
    if lt and (p99 is None or p99 > lt):
        short_stages.append("latency")
else:
    target_row("whole pipeline, events/s sustained (broker included)", None, None, None,
               "missing (no pipeline.json)")
    target_row("event → dashboard p99, pushed on the WebSocket", None, None, None,
               "missing (no pipeline.json)")
if db.get("delay_ms") and db.get("target_delay_p99_ms"):
    v, t = db["delay_ms"]["p99"], db["target_delay_p99_ms"]
    target_row(f"dashboard: Redis change → {fmt(db.get('clients'))} clients, p99", f"≤ {t:,} ms", v,
               v <= t, f"{fmt(v)} ms")
lines.append("")

# ------------------------------------------------------------------ pipeline
lines += ["## Whole pipeline", ""]
if not pipeline:
    lines += ["Not measured in this run: `pipeline.json` is missing (the stage failed, was not "
              "run or did not finish).", ""]
else:
    pc = pipeline.get("cores", cores)
    load = (f"{fmt(params['batch'])} events per POST, {fmt(params['concurrency'])} connections"
            if params.get("batch") else "POSTs of several events over many connections")
    if params.get("hold_fraction") is not None:
        hold = (f"the load generator delivered ≥ {params['hold_fraction']:.0%} of the rate without "
                "failures and, over the second half of the step, every consumer's lag stayed "
                f"≤ {fmt(params['lag_max_s'])} s of input and grew by ≤ {fmt(params['lag_growth_s'])} "
                "s of input")
    else:
        hold = ("the load generator delivered the rate without failures and, over the second half "
                "of the step, every consumer's lag stayed bounded (the thresholds are those of "
                "`bench/pipeline.py`)")
    lines += [f"All five services, the broker, Redis and `cs-loadgen` on the same {pc} cores "
              f"(`bench/pipeline.py`): live event time, {load}, each service with its defaults. A "
              f"step *holds* when {hold}. Lag = raw end offsets − the sessionizer's and aggregator's "
              "committed offsets, − the lake-writer's records read, sampled every second (a small "
              "negative lake-writer lag is a record read between the two readings). "
              + (f"Probe: unthrottled, {fmt(pipeline['probe_events_per_s'])} events/s taken by the "
                 "gateway." if pipeline.get("probe_events_per_s")
                 else f"No rate search: the rate was fixed at {fmt(params['fixed_rate'])} events/s "
                 "(`PIPELINE_RATE`)." if params.get("fixed_rate") else "No probe."), "",
              "| step | requested/s | sent/s | seconds | held | max lag s (sess / aggr / lake) | "
              "lag growth s | busy cores (steal) | why not |",
              "|---|---|---|---|---|---|---|---|---|"]
    for s in pipeline.get("steps", []):
        lg = s.get("lag", {})
        g = lambda c, k: fmt((lg.get(c) or {}).get(k))  # noqa: E731
        lines.append(
            f"| {s['label']} | {fmt(s['rate']) if s['rate'] else 'max'} | {fmt(s['events_per_s'])} | "
            f"{fmt(s['seconds'])} | {fmt(s['held'])} | {g('sessionizer', 'max_lag_s')} / "
            f"{g('aggregator', 'max_lag_s')} / {g('lake-writer', 'max_lag_s')} | "
            f"{g('sessionizer', 'growth_s')} / {g('aggregator', 'growth_s')} / "
            f"{g('lake-writer', 'growth_s')} | {fmt(s.get('machine_busy_cores'))} "
            f"({fmt(s.get('machine_steal_cores'))}) | {s.get('why_not') or ''} |")
    lines.append("")
    sus = pipeline.get("sustained_run") or {}
    if sus:
        v = pipeline.get("sustained_events_per_s")
        lines += [f"**Sustained: {fmt(v) + ' events/s' if v else 'no rate held'}** "
                  f"({fmt(sus.get('seconds'))} s at {fmt(sus.get('rate'))} requested, "
                  f"{fmt(sus.get('events_per_s'))} sent, HTTP p50 {fmt(sus.get('http_p50_ms'))} ms "
                  f"p99 {fmt(sus.get('http_p99_ms'))} ms). Where the CPU went during that run:", "",
                  "| process | CPU s | cores | µs per event |", "|---|---|---|---|"]
        secs = sus.get("cpu_window_s") or sus.get("seconds") or 1
        ev = max(1, sus.get("events") or 0)
        cpu = sus.get("cpu_s", {})
        for name, c in sorted(cpu.items(), key=lambda x: -x[1]):
            lines.append(f"| {name} | {fmt(c)} | {c / secs:.2f} | {c * 1e6 / ev:.1f} |")
        if sus.get("machine_busy_cores") is not None:
            lines.append(f"| machine busy (all processes; steal not counted) | "
                         f"{fmt(sus['machine_busy_cores'] * secs)} | "
                         f"{fmt(sus['machine_busy_cores'])} | |")
        ours = sum(c for n, c in cpu.items() if not n.startswith("other processes"))
        if ours:
            us = ours * 1e6 / ev
            derived["cpu_us_per_event_own_processes"] = round(us, 1)
            derived["events_per_s_on_own_cores"] = round(pc * 1e6 / us)
            lines += ["", f"The pipeline's own processes (services, broker, Redis, load generator, "
                      f"this benchmark) used {us:.0f} µs of CPU per event, {ours / secs:.2f} of the "
                      f"{pc} cores; the rest of the busy time went to other processes on the "
                      f"machine. At that cost, {pc} cores of its own would carry about "
                      f"{derived['events_per_s_on_own_cores']:,} events/s (derived from the CPU "
                      "figures, not measured)."]
        bt = sus.get("broker_cpu_s_by_thread")
        if bt:
            tot = sum(bt.values()) or 1
            top = sorted(bt.items(), key=lambda kv: -kv[1])[:8]
            lines += ["", "The broker's CPU by thread (JVM thread names, digits dropped): "
                      + ", ".join(f"{k} {x / tot:.0%}" for k, x in top) + "."]
        lines.append("")
    se = pipeline.get("services_end") or {}
    sm = pipeline.get("service_metrics_end") or {}
    if se:
        lines.append("Peak RSS at the end of the pipeline run (VmHWM): " + ", ".join(
            f"{k} {mib(x['peak_rss_bytes']):.0f} MiB" for k, x in sorted(se.items())
            if x.get("peak_rss_bytes")) + ".")
    if sm.get("sessionizer_open_sessions"):
        lines.append(f"Open sessions at the end: {fmt(sm['sessionizer_open_sessions'])} "
                     f"({fmt(sm.get('sessionizer_state_bytes_per_open_session'), 0)} B each, "
                     "sessionizer_state_bytes_per_open_session); aggregator panes open "
                     f"{fmt(sm.get('aggregator_open_panes'))}, kept {fmt(sm.get('aggregator_kept_panes'))}.")
    lines.append("")

    lat = pipeline.get("latency") or {}
    lines += ["## Event → dashboard latency", ""]
    if not lat:
        lines += ["Not measured: the pipeline stage stopped before its latency run.", ""]
    else:
        poll = f" (polled every {fmt(params['redis_poll_ms'])} ms)" if params.get("redis_poll_ms") else ""
        lines += [f"At {fmt(lat.get('rate'))} events/s ({lat.get('rate_note', '')}), "
                  f"{fmt(lat.get('markers'))} marker events, one every {fmt(lat.get('marker_every_ms'))} ms, "
                  "event time taken at the sender just before the POST. *Visible in Redis*: the "
                  f"marker's URL appears in its 1-minute window's url hash{poll}. "
                  "*Pushed on the WebSocket*: the first `/ws` message whose summary counts the "
                  "marker. Background load during the markers: "
                  f"{fmt((lat.get('load') or {}).get('events_per_s'))} events/s sent, "
                  f"held: {fmt((lat.get('load') or {}).get('held'))}.", "",
                  "| load | moment | markers seen | p50 ms | p90 ms | p99 ms | max ms |",
                  "|---|---|---|---|---|---|---|"]
        light = pipeline.get("latency_light")
        for run_ in (lat, light):
            if not run_:
                continue
            for k, label in (("accepted_ms", "accepted by the gateway (202: in Kafka)"),
                             ("redis_ms", "visible in Redis"),
                             ("websocket_ms", "**pushed on the WebSocket**")):
                x = run_.get(k) or {}
                lines.append(f"| {fmt(run_.get('rate'))}/s ({fmt(run_.get('machine_busy_cores'))} cores busy) | "
                             f"{label} | {fmt(x.get('n'))} | {fmt(x.get('p50'))} | {fmt(x.get('p90'))} | "
                             f"{fmt(x.get('p99'))} | {fmt(x.get('max'))} |")
        n_ws = (lat.get("websocket_ms") or {}).get("n") or 0
        rank = n_ws - int(0.99 * n_ws) if n_ws else None
        note = ""
        if rank:
            nth = {1: "highest", 2: "second-highest", 3: "third-highest"}.get(rank, f"{rank}th-highest")
            note = f"With {n_ws} markers seen, p99 is the {nth} sample. "
        lines += ["", note + "Between the moments: Kafka → Redis is the aggregator (fetch, windows, "
                  "its Redis flush every `AGGREGATOR_FLUSH_INTERVAL`); Redis → WebSocket is "
                  "dashboard-ws (its note-driven read at most every `DASHBOARD_REFRESH_INTERVAL`, then "
                  "at most one message per client every `DASHBOARD_CLIENT_INTERVAL`; defaults in "
                  "docs/performance.md)."]
        if light:
            lines[-1] += (f" The run at {light.get('rate_note', 'a lower rate')} shows how much of the "
                          "delay is these intervals rather than waiting for CPU; the machine's busy "
                          "cores (every process on it) are given beside each run.")
        lines.append("")

# ----------------------------------------------------- dashboard read, 1 h
dr = doc("dashboard_read")
if dr and "error" not in dr:
    lines += ["## Dashboard read with a full hour", "",
              f"dashboard-ws on {fmt(dr.get('windows'))} one-minute windows of "
              f"{fmt(dr.get('partitions'))} partitions each ({dr.get('hll_encoding')} HyperLogLogs of "
              f"{fmt(dr.get('users_per_hll'))} users), one aggregator note for the current window "
              f"every 250 ms for {fmt(dr.get('seconds'))} s (`bench/dashboard_read.py`): "
              f"{fmt(dr.get('reads'))} reads, **{fmt(dr.get('read_ms_mean'))} ms per read** "
              f"(dashboard_redis_read_seconds), Redis CPU {fmt(dr.get('redis_cpu_ms_per_read'))} ms "
              f"and dashboard-ws CPU {fmt(dr.get('dashboard_cpu_ms_per_read'))} ms per read.", ""]

# ------------------------------------------------------------------ memory
lines += ["## Memory", ""]
if sz.get("inproc"):
    i = sz["inproc"]
    lines.append(f"- sessionizer: **{fmt(i['bytes_per_open_session'], 1)} bytes per open session** at "
                 f"{fmt(i['open_sessions'])} open sessions (state incl. each session's dedupe entry; "
                 f"{fmt(i['bytes_per_open_session_without_dedupe'], 1)} without it; RSS growth "
                 f"{fmt(i['rss_growth_bytes_per_open_session'], 1)} B per session), "
                 "`bench/sessionizer_bench.c`.")
    kr = sz.get("kafka_runs") or []
    if kr and kr[0].get("state_bytes_per_open_session"):
        lines.append(f"- sessionizer service after reading {uni['sessionizer']['input'] if uni.get('sessionizer') else 'its input'}: "
                     f"{fmt(kr[0]['open_sessions'])} open sessions, "
                     f"{fmt(kr[0]['state_bytes_per_open_session'], 0)} B per open session "
                     "(its gauge, first run; includes the dedupe entry of every event still within "
                     "bound + lateness).")
else:
    lines.append("- sessionizer: missing.")
if ag.get("memory"):
    m = ag["memory"]
    held = m["panes_open"] + m["panes_kept"]
    win = first(m.get("bytes_per_window_all_partitions"), m.get("bytes_per_1min_window_12_partitions"))
    parts = m.get("partitions") or (round(win / m["bytes_per_pane"]) if win and m["bytes_per_pane"] else None)
    span = f" over {fmt(m['event_time_s'] / 60)} min of event time" if m.get("event_time_s") else ""
    lines.append(f"- aggregator: **{fmt(m['bytes_per_pane'])} bytes of heap per pane** (one window of one "
                 "partition: HyperLogLog, dimension tables, interned strings)"
                 + (f", i.e. **{fmt(mib(win), 1)} MiB per open window** over its {parts} partitions"
                    if win else "")
                 + f"; measured on {fmt(held)} panes held ({fmt(m['panes_open'])} open, "
                 f"{fmt(m['panes_kept'])} closed and kept for Redis; {fmt(m['panes_1min'])} 1-min, "
                 f"{fmt(m['panes_5min'])} 5-min, {fmt(m['panes_1h'])} 1-h) after "
                 f"{fmt(ag.get('micro_events'))} events{span}; dedupe sets "
                 f"({fmt(mib(m['dedupe_bytes']), 1)} MiB) not counted, `bench/aggregator_micro.c`.")
    kr = ag.get("kafka_runs") or []
    if kr:
        r = kr[0]
        lines.append(f"- aggregator service after reading {uni['aggregator']['input'] if uni.get('aggregator') else 'its input'}: "
                     f"{fmt(r['open_panes'])} open + {fmt(r['kept_panes'])} kept panes, RSS "
                     f"{fmt(mib(r['rss_bytes_end']), 0)} MiB ({fmt(r.get('rss_bytes_per_pane_held'))} B "
                     "of RSS per pane held, librdkafka buffers and dedupe sets included; first run).")
else:
    lines.append("- aggregator: missing.")
lines.append("- peak RSS of every service: the stage table above"
             + (" and the pipeline run's." if pipeline else "."))
lines.append("")

# ------------------------------------------------------------------ physical limit
lines += ["## Physical limit (bare librdkafka, same broker, this run)", ""]
if not limit:
    lines += ["Missing: `kafka_limit.json` was not written.", ""]
else:
    lines += ["| what | runs | records | records/s | CPU s | records per CPU-second |",
              "|---|---|---|---|---|---|"]
    t = topic or "the raw topic"
    if fill:
        lines.append(f"| fill {t} (cs-kperf: encode + produce) | 1 | {fmt(fill['records'])} | "
                     f"{fmt(fill['rate'])} | {fmt(fill['cpu_seconds'])} | "
                     f"{fmt(fill['rate_per_cpu_second'])} |")
    for label, runs_ in ((f"consume {t}", limit.get("consume_runs")),
                         (f"produce {t}'s records", limit.get("produce_runs")),
                         ("produce the gateway's records", (gw.get("summary") or {}).get("limit_runs"))):
        st = limit_stats(runs_)
        if st:
            lines.append(f"| {label} | {st['n']} | {fmt(st['records'])} | {spread(st['rate'])} | "
                         f"{spread(st['cpu_s'], 2)} | {spread(st['per_cpu'])} |")
    lines.append("")

# ------------------------------------------------------------------ profiles
lines += ["## Where the time goes", "",
          f"Flat perf profiles{freq_txt} of the service process during its first measured run; "
          "share of that process's samples, by thread name, library and function. Stages short "
          "of their target come first."]
order = [k for k, *_ in STAGES if k in short_stages] + [k for k, *_ in STAGES if k not in short_stages]
for key in order:
    p = profiles.get(PROF[key])
    status = "short of its target" if key in short_stages else "target met or none"
    if not p:
        if key in short_stages or key in results:
            lines += ["", f"### {LABEL[key]} ({status})", "",
                      "No profile (perf missing or not permitted on this machine)."]
        continue
    lines += ["", f"### {LABEL[key]} ({status}; {fmt(p.get('samples'))} samples over "
              f"{fmt(p.get('seconds'))} s)", "", "| % | thread | library | function |", "|---|---|---|---|"]
    for pct, comm, dso, sym in p.get("symbols", [])[:12]:
        lines.append(f"| {pct:.1f} | {comm} | {dso} | `{sym}` |")
    libs = ", ".join(f"{d} {pct:.0f} %" for pct, d in p.get("libraries", [])[:8])
    lines += ["", f"By library: {libs}."]
    thr = p.get("threads") or []
    if thr:
        rdk = sum(pct for pct, t in thr if t.startswith("rdk:"))
        lines.append("By thread: " + ", ".join(f"{t} {pct:.0f} %" for pct, t in thr[:5])
                     + f" (librdkafka's threads rdk:* together {rdk:.0f} %).")
    if key in short_stages:
        syms = p.get("symbols", [])
        own = [(pct, sym) for pct, comm, dso, sym in syms if dso == EXE[key]]
        lines.append("**Top costs**: " + ", ".join(f"`{sym}` ({dso}) {pct:.1f} %"
                                                    for pct, comm, dso, sym in syms[:5])
                     + "; in its own code: "
                     + (", ".join(f"`{sym}` {pct:.1f} %" for pct, sym in own[:5]) or "—")
                     + " (% of the process's samples).")
pp = profiles.get("pipeline")
if pipeline and pp and pp.get("processes"):
    status = "short of its target" if "pipeline" in short_stages else "target met"
    lines += ["", f"### Whole pipeline, sustained run ({status}; {fmt(pp.get('samples'))} samples over "
              f"{fmt(pp.get('seconds'))} s of the five services)", "",
              "| service | share of samples | top functions (% of the service) |", "|---|---|---|"]
    for name, x in sorted(pp["processes"].items(), key=lambda kv: -(kv[1].get("pct_of_samples") or 0)):
        top = "; ".join(f"`{sym}` ({dso}) {pct:.0f}" for pct, dso, sym in x.get("symbols", [])[:5])
        lines.append(f"| {name} | {fmt(x.get('pct_of_samples'))} % | {top} |")
elif "pipeline" in short_stages:
    lines += ["", "### Whole pipeline", "", "No profile of the sustained run."]
lines.append("")

# ------------------------------------------------------------------ details
lines += ["## Stage details", "", "Every other figure each stage wrote, as measured.", ""]
for stage, r in results.items():
    lines += [f"### {stage}", ""]
    if isinstance(r, dict):
        for k, v in r.items():
            if k == "summary" or k.startswith("reference_"):
                continue
            if isinstance(v, (dict, list)):
                v = json.dumps(v)
                if len(v) > 600:
                    v = v[:600] + " …"
            lines.append(f"- {k}: {fmt(v)}")
    lines.append("")
if run:
    lines += ["## Run", "",
              f"Set-up (dependencies, build, broker and Redis) {fmt(run.get('setup_seconds'))} s, "
              f"fill and physical limit {fmt(run.get('limit_seconds'))} s, stages: "
              + ", ".join(f"{k} {fmt(x)} s" for k, x in (run.get("stage_seconds") or {}).items())
              + f"; total to the report {fmt(took)} s.", ""]

with open(md_path, "w") as f:
    f.write("\n".join(lines) + "\n")

report = {"stages": {}, "targets": targets, "kafka_limit": limit, "run": run,
          "pipeline": pipeline, "derived": derived, "missing": missing, "profiles": profiles,
          "details": results}
for key, *_ in STAGES:
    u = uni.get(key)
    if u:
        report["stages"][key] = {
            "unit": u["unit"], "runs": u["n"], "per_s": u["per_s"], "cpu_s": u["cpu_s"],
            "per_s_per_core": u["per_core"], "peak_rss_bytes": u["peak_rss"],
            "limit": u["limit"] and {"what": u["limit_what"], "per_s": u["limit"]["rate"],
                                     "per_s_per_core": u["limit"]["per_cpu"]},
            "ratio_per_core": u.get("ratio_core"), "ratio_wall": u.get("ratio_wall"),
            "target_per_core": u["target"]}
with open(json_path, "w") as f:
    json.dump(report, f, indent=2)
