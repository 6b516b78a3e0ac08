"""End to end under faults: the whole pipeline of test_e2e.py (gateway,
sessionizer, aggregator, lake-writer; every sink compared with the
references, see e2e_lib.py) while faults are injected during the load:

  * kill -9 of each stateful service (sessionizer, aggregator, lake-writer)
    at random moments, each restarted after the kill;
  * a restart of the Kafka broker (a broker of its own, scripts/stack.sh
    restart-kafka, so the shared one is not disturbed);
  * Redis stopped for 60 s and flushed (FLUSHALL) when it comes back: the
    aggregator rebuilds it;
  * 2-3 replicas of the sessionizer and of the aggregator, scaled up and
    down during the run;
  * the lake-writer's disk full, then freed (the warehouse on a small tmpfs
    of its own; needs root for the mount).

Every variant has a fixed seed (stream and fault instants), printed at the
start; E2E_FAULT_SEED overrides it. The results must still equal the
references. test_long_run is `make e2e-long` (scripts/e2e-long.sh): at least
a million events and every fault, many times; it writes bench/e2e-report.md.
"""
import os
import random
import time

import pytest

from conftest import ROOT
from e2e_lib import Faults, Load, Pipeline, SmallDisk, Stack, judge, log, report, verify

EVENTS = int(os.environ.get("E2E_FAULT_EVENTS", "3000"))


def seed_of(default):
    s = int(os.environ.get("E2E_FAULT_SEED", default))
    log(f"seed {s}")
    return s


@pytest.fixture(scope="module")
def own_stack():
    """Kafka and Redis of this module's own: the broker restart and the
    FLUSHALL must not disturb the other tests."""
    s = Stack(os.path.join(ROOT, ".run", f"e2e-faults-{os.getpid()}"))
    yield s
    s.close()


def spread(rnd, n, lo, hi):
    """n instants in [lo, hi], one in each of n equal slots."""
    step = (hi - lo) / n
    return [lo + i * step + rnd.uniform(0.15, 0.85) * step for i in range(n)]


def run_variant(name, stack_env, workdir, seed, plan, rate, count=EVENTS, users=400,
                start=(1, 1, 1), private=None, disk=None,
                timeout=180, gap_ms=600000, pipe_kw=None):
    t0 = time.time()
    rnd = random.Random(seed)
    pipe = Pipeline(stack_env, f"{name}-{seed}-{os.getpid()}", workdir,
                    warehouse=disk.dir if disk else None, **(pipe_kw or {}))
    try:
        pipe.start_all(*start)
        load = Load(pipe, count, seed, users=users, gap_ms=gap_ms, rate=rate)
        faults = Faults(pipe, rnd, stack=private, disk=disk)
        load.begin()
        faults.run(plan(rnd, count / rate), load)
        load.finish(timeout=3600)
        load.post_idle_tail()
        load.post_flush()
        log(f"faults injected: {faults.injected}")
        diffs, stats = verify(pipe, load, timeout, faults)
        stats["seconds"] = round(time.time() - t0)
        log(f"stats: {stats}")
        return pipe, load, faults, diffs, stats
    finally:
        pipe.close()


def test_kill9_stateful_services(stack, tmp_path):
    seed = seed_of(81)

    def plan(rnd, d):
        out = []
        for kind in ("sessionizer", "aggregator", "lake-writer"):
            out += [(t, "kill", (kind,)) for t in spread(rnd, 2, 0.1 * d, 0.9 * d)]
        return out

    _, _, faults, diffs, _ = run_variant("kill9", stack, tmp_path, seed, plan, rate=200)
    assert sum(faults.kills.values()) == 6, faults.injected
    judge(diffs, f"kill -9 of every stateful service, seed {seed}")


def test_kafka_broker_restart(own_stack, tmp_path):
    seed = seed_of(82)

    def plan(rnd, d):
        return [(rnd.uniform(0.25 * d, 0.45 * d), "kafka_restart", ())]

    pipe, load, faults, diffs, _ = run_variant("kafka", own_stack.env, tmp_path, seed, plan,
                                               rate=200, private=own_stack)
    assert any("Kafka" in f for _, f in faults.injected), faults.injected
    judge(diffs, f"Kafka broker restart, seed {seed}")


def test_redis_down_60s_and_flushed(own_stack, tmp_path):
    seed = seed_of(83)

    def plan(rnd, d):
        return [(rnd.uniform(2, 4), "redis_down", (60,))]

    # 75 s of load over ~50 min of event time: the windows written before
    # the outage are still within the hour the aggregator keeps them, so it
    # must rewrite every one of them.
    pipe, load, faults, diffs, _ = run_variant("redis", own_stack.env, tmp_path, seed, plan,
                                               rate=EVENTS / 75, users=300, private=own_stack)
    assert faults.redis_back_at is not None, faults.injected
    assert faults.redis_rewrites >= 1, "the aggregator never rewrote Redis"
    judge(diffs, f"Redis down 60 s then flushed, seed {seed}")


def test_replicas_with_scale_changes(stack, tmp_path):
    seed = seed_of(84)

    def plan(rnd, d):
        t = spread(rnd, 4, 0.1 * d, 0.9 * d)
        return [(t[0], "scale", ("sessionizer", 3)), (t[1], "scale", ("aggregator", 3)),
                (t[2], "scale", ("sessionizer", 2)), (t[3], "scale", ("aggregator", 2))]

    _, _, faults, diffs, _ = run_variant("scale", stack, tmp_path, seed, plan, rate=200,
                                         start=(2, 2, 1))
    assert len(faults.injected) == 4, faults.injected
    judge(diffs, f"2-3 replicas with scale changes, seed {seed}")


def test_lake_disk_full_then_freed(stack, tmp_path):
    seed = seed_of(85)
    disk = SmallDisk("64m")
    if not disk.mounted:
        disk.close()
        pytest.skip(f"no small file system for the warehouse: {disk.why}")
    try:
        def plan(rnd, d):
            return [(rnd.uniform(0.2 * d, 0.4 * d), "disk_fill", (10,))]

        _, _, faults, diffs, _ = run_variant("disk", stack, tmp_path, seed, plan, rate=200,
                                             disk=disk)
        assert faults.disk_errors > 0, "the lake-writer never hit the full disk"
        judge(diffs, f"lake-writer disk full then freed, seed {seed}")
    finally:
        disk.close()


# ----------------------------------------------------------------- long run

LONG = os.environ.get("E2E_LONG") == "1"


def long_plan(rnd, d):
    """Every fault, spread over the load: 4 kills of each stateful service,
    scale changes of the sessionizer and the aggregator (2 -> 3 -> 2), a
    broker restart, Redis down 60 s then flushed, the lake's disk full for 60 s."""
    plan = []
    for kind in ("sessionizer", "aggregator", "lake-writer"):
        plan += [(t, "kill", (kind,)) for t in spread(rnd, 4, 0.05 * d, 0.95 * d)]
    t = spread(rnd, 4, 0.1 * d, 0.9 * d)
    plan += [(t[0], "scale", ("sessionizer", 3)), (t[1], "scale", ("aggregator", 3)),
             (t[2], "scale", ("sessionizer", 2)), (t[3], "scale", ("aggregator", 2))]
    plan.append((rnd.uniform(0.3 * d, 0.4 * d), "kafka_restart", ()))
    plan.append((rnd.uniform(0.5 * d, 0.6 * d), "redis_down", (60,)))
    plan.append((rnd.uniform(0.7 * d, 0.8 * d), "disk_fill", (60,)))
    return plan


@pytest.mark.skipif(not LONG, reason="the long run: make e2e-long")
def test_long_run(tmp_path):
    count = int(os.environ.get("E2E_EVENTS", "1000000"))
    rate = float(os.environ.get("E2E_LONG_RATE", "2000"))
    seed = seed_of(int(os.environ.get("E2E_SEED", "90")))
    report_path = os.environ.get("E2E_REPORT", os.path.join(ROOT, "bench", "e2e-report.md"))
    t0 = time.time()
    stack = Stack(os.path.join(ROOT, ".run", f"e2e-long-{os.getpid()}"))
    disk = SmallDisk(os.environ.get("E2E_LONG_DISK", "3g"))
    result = None
    try:
        pipe, load, faults, diffs, stats = run_variant(
            "long", stack.env, tmp_path, seed, long_plan, rate=rate, count=count, users=20000,
            gap_ms=None, start=(2, 2, 1), private=stack, disk=disk if disk.mounted else None,
            timeout=900, pipe_kw={"lake_roll_age": "10s"})
        text = report(diffs, f"long run, seed {seed}, {count} events")
        ndiff = sum(d.count() for d in diffs)
        result = "equal to the references" if all(d.ok for d in diffs) else (
            f"DIFFERENCES: {ndiff}")
        write_long_report(report_path, count, seed, rate, load, faults, stats, diffs, text,
                          result, time.time() - t0, disk)
        judge(diffs, f"long run, seed {seed}, {count} events")
    finally:
        disk.close()
        stack.close()


def write_long_report(path, count, seed, rate, load, faults, stats, diffs, text, result,
                      seconds, disk):
    kills = sum(faults.kills.values())
    lines = [
        "# End-to-end long run",
        "",
        f"`make e2e-long` (scripts/e2e-long.sh, tests/integration/test_e2e_faults.py::"
        f"test_long_run), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| | |",
        "|---|---|",
        f"| events generated | {count} (seed {seed}; {load.summary_json.get('accepted')} "
        f"accepted by the gateway, {count - int(load.summary_json.get('accepted', 0))} invalid "
        f"refused) |",
        f"| records in the raw topic | {stats['raw_records']} |",
        f"| load | cs-loadgen at {rate:g} events/s, posted in {load.duration:.0f} s, "
        f"{load.summary_json.get('retries')} retried requests |",
        f"| sessions (reference) | {stats['sessions_ref']} |",
        f"| windows (reference) | {stats['windows_ref']} |",
        f"| late events (reference) | sessionizer {stats['late_sessionizer_ref']}, "
        f"aggregator {stats['late_aggregator_ref']} |",
        f"| kill -9 | {kills} ({', '.join(f'{k} {n}' for k, n in sorted(faults.kills.items()))}) |",
        f"| faults injected in all | {len(faults.injected)} |",
        f"| warehouse | {'tmpfs ' + disk.dir if disk.mounted else 'local directory (disk-full fault skipped: ' + disk.why + ')'} |",
        f"| result | {result} |",
        f"| duration | {seconds:.0f} s (comparison {stats['verify_seconds']} s) |",
        "",
        "## Faults, in order (seconds after the load started)",
        "",
    ]
    lines += [f"- {t:7.1f} s: {f}" for t, f in faults.injected]
    lines += ["", "## Comparisons", "", "```", text, "```", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    log(f"report written to {path}")
