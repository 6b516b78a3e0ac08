"""Exactly-once of the transactional loop (libcommon/cm_kafka_txloop.c), driven
through cs-replay against a real broker: kill -9 at random moments, restart,
and the read_committed output still holds every input record exactly once, in
per-key order.

    .cache/venv/bin/python -m pytest tests/integration/test_exactly_once.py
"""
import collections
import os
import random
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING, KafkaError

from conftest import bin_path, create_topics

PARTITIONS = 6
# The broker's minimum; a killed member's partitions wait this long before a
# restarted instance gets them.
SESSION_TIMEOUT_MS = "6000"


def produce_input(bootstrap, topic, n, keys):
    """n records, key user-<i % keys>, value '<key>:<i>', headers seq and reason."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                  "linger.ms": 20, "compression.type": "lz4"})
    for i in range(n):
        key = f"user-{i % keys}"
        while True:
            try:
                p.produce(topic, key=key, value=f"{key}:{i}".encode(),
                          headers=[("seq", str(i).encode()), ("reason", b"invalid")])
                break
            except BufferError:
                p.poll(0.2)
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(60) == 0, "input not fully produced"


def end_offsets(bootstrap, topic):
    """Sum of the high watermarks (uncommitted data and markers included)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "eo-probe"})
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                   for p in range(PARTITIONS))
    finally:
        c.close()


def read_committed(bootstrap, topic, timeout=90):
    """Every committed record of topic, in per-partition offset order."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "eo-check",
                  "isolation.level": "read_committed", "enable.partition.eof": True,
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    out, eof = [], set()
    deadline = time.time() + timeout
    try:
        while len(eof) < PARTITIONS:
            assert time.time() < deadline, f"output not read to its end in {timeout}s"
            for m in c.consume(1000, timeout=1.0):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                        continue
                    raise AssertionError(f"consume error: {m.error()}")
                eof.discard(m.partition())
                out.append(m)
    finally:
        c.close()
    return out


def check_exactly_once(records, n, keys):
    """No loss, no duplicate, per-key order, key/headers carried over."""
    seen = collections.Counter()
    last = {}
    bad_order = 0
    for m in records:
        key = m.key().decode()
        k, i = m.value().decode().rsplit(":", 1)
        i = int(i)
        assert k == key, f"key {key} carries value of {k}"
        hdrs = dict(m.headers() or [])
        assert hdrs.get("seq") == str(i).encode(), f"header seq lost on {i}"
        assert "reason" not in hdrs, "--strip-header reason was not applied"
        seen[i] += 1
        if key in last and last[key] >= i:
            bad_order += 1
        last[key] = i
    dups = sum(c - 1 for c in seen.values() if c > 1)
    lost = n - len(seen)
    extra = [i for i in seen if not 0 <= i < n]
    assert not extra, f"unknown records in output: {extra[:10]}"
    assert (lost, dups, bad_order) == (0, 0, 0), \
        f"lost={lost} duplicates={dups} out-of-order={bad_order} of {n}"
    return len(records)


def replay(procs, stack, src, dst, group, txn_id, idle=None, rate=None):
    args = ["--from", src, "--to", dst, "--group", group, "--transactional-id", txn_id,
            "--strip-header", "reason"]
    if idle:
        args += ["--exit-when-idle", str(idle)]
    if rate:
        args += ["--max-rate", str(rate)]
    env = {"KAFKA_BOOTSTRAP": stack["KAFKA_BOOTSTRAP"], "RDKAFKA_SESSION_TIMEOUT_MS":
           SESSION_TIMEOUT_MS, "CS_REPLAY_LOG_LEVEL": "info"}
    return procs("cs-replay", env, args)


def wait_progress(proc, bootstrap, topic, target, timeout=90):
    """Waits until the output's end offsets pass target (the copy is running).
    proc: one Proc or a list (fails when all of them exited)."""
    ps = proc if isinstance(proc, list) else [proc]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(p.p.poll() is not None for p in ps):
            raise AssertionError(f"cs-replay exited early ({ps[0].p.returncode}): {ps[0].tail()}")
        if end_offsets(bootstrap, topic) >= target:
            return
        time.sleep(0.02)
    raise AssertionError(f"no progress to {target} in {timeout}s: {ps[0].tail()}")


def wait_committed(bootstrap, group, topic, n, procs_, timeout):
    """Waits until the group's committed offsets cover all n input records
    (the input has no transaction markers: committed == end offsets)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "isolation.level": "read_committed"})
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            parts = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)],
                                timeout=10)
            if sum(max(tp.offset, 0) for tp in parts) >= n:
                return
            for p in procs_:
                if p.p.poll() is not None:
                    raise AssertionError(f"cs-replay exited ({p.p.returncode}): {p.tail()}")
            time.sleep(0.5)
    finally:
        c.close()
    raise AssertionError(f"group {group} did not commit {n} records in {timeout}s")


def wait_log(proc, text, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in proc.tail(10**7):
            return
        if proc.p.poll() is not None:
            raise AssertionError(f"cs-replay exited ({proc.p.returncode}): {proc.tail()}")
        time.sleep(0.1)
    raise AssertionError(f"no '{text}' in {timeout}s: {proc.tail()}")


def wait_exit(proc, timeout):
    try:
        return proc.p.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"cs-replay did not finish in {timeout}s: {proc.tail()}")


def test_kill9_restart_exactly_once(stack, procs, unique):
    """200 000 records; 5 kill -9 (one at a random instant of the start, four at
    random points of the copy), restart after each; then run to the end."""
    b = stack["KAFKA_BOOTSTRAP"]
    n, keys = 200_000, 1000
    src, dst = f"eo.in.{unique}", f"eo.out.{unique}"
    create_topics(stack, f"{src}:{PARTITIONS}", f"{dst}:{PARTITIONS}")
    produce_input(b, src, n, keys)
    group = f"eo-{unique}"
    rnd = random.Random(unique)

    p = replay(procs, stack, src, dst, group, f"eo-tx-{unique}")
    time.sleep(rnd.uniform(0.3, 2.5))  # during init / group join
    p.kill9()
    kills = 1
    for lo, hi in [(0.05, 0.2), (0.25, 0.45), (0.5, 0.7), (0.75, 0.95)]:
        p = replay(procs, stack, src, dst, group, f"eo-tx-{unique}")
        wait_progress(p, b, dst, int(n * rnd.uniform(lo, hi)))
        time.sleep(rnd.uniform(0, 0.15))
        p.kill9()
        kills += 1
    assert kills >= 3

    p = replay(procs, stack, src, dst, group, f"eo-tx-{unique}", idle=5)
    assert wait_exit(p, 180) == 0, p.tail()
    got = check_exactly_once(read_committed(b, dst), n, keys)
    assert got == n
    # The kills really cut transactions: aborted data sits in the log.
    log_end = end_offsets(b, dst)
    assert log_end > n + PARTITIONS
    print(f"\nkill9: {n} records, {kills} kills, {got} read back exactly once; "
          f"output log end {log_end} (aborted records + markers: {log_end - n})")


def test_two_instances_rebalance_exactly_once(stack, procs, unique):
    """Two instances in one group, each throttled so that the copy outlasts
    the rebalances: one of them (at random) is killed and restarted three
    times, which moves partitions both ways (cooperative revoke = commit of
    the survivor's open transaction, assign = stable offset fetch)."""
    b = stack["KAFKA_BOOTSTRAP"]
    n, keys = 100_000, 500
    src, dst = f"eo2.in.{unique}", f"eo2.out.{unique}"
    create_topics(stack, f"{src}:{PARTITIONS}", f"{dst}:{PARTITIONS}")
    produce_input(b, src, n, keys)
    group = f"eo2-{unique}"
    rnd = random.Random(unique)
    ids = [f"eo2-tx-a-{unique}", f"eo2-tx-b-{unique}"]

    def start(i):
        return replay(procs, stack, src, dst, group, ids[i], rate=2500)

    ps = [start(0), start(1)]
    for p in ps:
        wait_log(p, "partitions assigned")
    all_procs = list(ps)
    for lo, hi in [(0.15, 0.3), (0.4, 0.55), (0.65, 0.8)]:
        victim = rnd.randrange(2)
        wait_progress(ps, b, dst, int(n * rnd.uniform(lo, hi)))
        ps[victim].kill9()
        ps[victim] = start(victim)
        all_procs.append(ps[victim])
    # Instances sharing a group do not stop on idle: wait until the group has
    # committed the whole input, then SIGTERM both.
    wait_committed(b, group, src, n, ps, timeout=240)
    for p in ps:
        assert p.term(timeout=10) == 0, p.tail()
    check_exactly_once(read_committed(b, dst), n, keys)
    logs = "".join(p.tail(10**7) for p in all_procs)
    # Partitions really moved between live members.
    revokes = logs.count('"msg":"partitions revoked"')
    assert revokes >= 2
    print(f"\ntwo instances: {n} records, 3 kills, {len(all_procs)} processes, "
          f"{revokes} revocations, {logs.count('kafka transaction aborted')} aborts "
          f"(by the survivors), {logs.count('kafka record delivered again')} re-deliveries "
          f"dropped, exactly once")


def test_sigterm_exits_zero_within_10s(stack, procs, unique):
    """SIGTERM in the middle of the copy: exit 0 within 10 s, the open
    transaction committed; a second run finishes the copy exactly once."""
    b = stack["KAFKA_BOOTSTRAP"]
    n, keys = 100_000, 100
    src, dst = f"eot.in.{unique}", f"eot.out.{unique}"
    create_topics(stack, f"{src}:{PARTITIONS}", f"{dst}:{PARTITIONS}")
    produce_input(b, src, n, keys)
    group = f"eot-{unique}"
    p = replay(procs, stack, src, dst, group, f"eot-tx-{unique}")
    wait_progress(p, b, dst, n // 4)
    t0 = time.time()
    rc = p.term(timeout=10)
    took = time.time() - t0
    assert rc == 0, p.tail()
    assert took < 10
    assert "kafka transactional loop stopped" in p.tail(20000)
    # Idle (nothing assigned yet is fine too): SIGTERM still exits 0.
    p = replay(procs, stack, src, dst, group, f"eot-tx-{unique}", idle=5)
    assert wait_exit(p, 120) == 0, p.tail()
    check_exactly_once(read_committed(b, dst), n, keys)
    p = replay(procs, stack, src, dst, group, f"eot-tx-{unique}")
    time.sleep(3)
    t0 = time.time()
    assert p.term(timeout=10) == 0, p.tail()
    assert time.time() - t0 < 10


def test_cli_usage_errors():
    exe = bin_path("cs-replay")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "--from" in r.stdout and "KAFKA_BOOTSTRAP" in r.stdout
    r = subprocess.run([exe, "--bogus"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--bogus" in r.stderr
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP"}
    r = subprocess.run([exe, "--from", "a", "--to", "b"], capture_output=True, text=True,
                       timeout=10, env=env)
    assert r.returncode == 2 and "KAFKA_BOOTSTRAP" in r.stderr
    env.update(KAFKA_BOOTSTRAP="127.0.0.1:1", RDKAFKA_NO_SUCH_PROPERTY="x")
    r = subprocess.run([exe, "--from", "a", "--to", "b"], capture_output=True, text=True,
                       timeout=10, env=env)
    assert r.returncode == 2 and 'no.such.property' in r.stderr
