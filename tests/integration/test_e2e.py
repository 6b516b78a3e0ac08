"""End to end, short variant: the load generator posts a reproducible stream
(duplicates, out-of-order, late and invalid events) through the real ingest
gateway into Kafka; the sessionizer, the aggregator and the lake-writer run
on what lands there. Then every sink is compared with a reference computed
independently of the services (e2e_lib.py):

  * the raw topic holds every valid event the generator sent, exactly once
    per send, decoded by fastavro and equal to what was sent (the generator's
    own NDJSON record of the stream), and no invalid one;
  * the sessions topic's final revisions equal the batch reference of
    reference/sessions_ref.py over what the raw topic holds;
  * the metrics topic (latest revision of every window and dimension) and
    Redis (read with aggregator_read.lua) equal reference/windows_ref.py,
    unique users within the HyperLogLog error;
  * the late topic holds exactly the late events of both references;
  * the Iceberg tables hold their topics' records exactly once (events_raw,
    sessions, metrics_1min / 5min / hourly, late_events), and their final
    values equal the references.

The stream straddles a UTC midnight. After it, an idle tail posts events to
3 of the 12 raw partitions only, for longer than the services' idle
timeouts: the others go idle and the watermarks move on without them. A
last "flush" event per raw partition, hours after the stream in event time,
wakes them and moves every partition's watermark far enough that all
sessions and windows are final, so the comparison covers all of them.

E2E_EVENTS sets the size, E2E_SEED the stream. E2E_MUTATE_GW, E2E_MUTATE_SZ,
E2E_MUTATE_AG and E2E_MUTATE_LW (JSON objects of environment variables)
change a service's settings, and E2E_MUTATE_REDIS=1 changes one count in
Redis after the run: each must make the test fail, e.g.

    E2E_MUTATE_GW='{"GATEWAY_ANONYMIZE": "off"}'          raw topic
    E2E_MUTATE_SZ='{"SESSIONIZER_GAP": "29m"}'             sessions, late
    E2E_MUTATE_AG='{"AGGREGATOR_ALLOWED_LATENESS": "4m"}'  metrics, Redis, late
    E2E_MUTATE_LW='{"LAKE_TABLES": "events_raw,sessions"}' lake The fault variants are test_e2e_faults.py, the
long run `make e2e-long`.
"""
import json
import os
import time

import pytest
import redis

from e2e_lib import Load, Pipeline, judge, log, sent_ms, verify

COUNT = int(os.environ.get("E2E_EVENTS", "20000"))
SEED = int(os.environ.get("E2E_SEED", "20261122"))
MUTATE = {"ingest-gateway": json.loads(os.environ.get("E2E_MUTATE_GW", "{}")),
          "sessionizer": json.loads(os.environ.get("E2E_MUTATE_SZ", "{}")),
          "aggregator": json.loads(os.environ.get("E2E_MUTATE_AG", "{}")),
          "lake-writer": json.loads(os.environ.get("E2E_MUTATE_LW", "{}"))}
MUTATE_REDIS = os.environ.get("E2E_MUTATE_REDIS")


@pytest.fixture
def pipeline(stack, unique, tmp_path):
    p = Pipeline(stack, unique, tmp_path, mutate=MUTATE)
    yield p
    p.close()


def tamper_redis(pipe, load):
    """One count of the stream's first 1-minute window, one partition."""
    r = redis.Redis(host="127.0.0.1", port=int(pipe.stack["REDIS_PORT"]))
    start = min(sent_ms(e["timestamp"]) or load.max_ts for e in load.sent)
    start -= start % 60000
    for _ in range(100):
        srcs = sorted(r.smembers(f"{pipe.prefix}:w:60000:{start}:src"))
        if srcs:
            key = f"{pipe.prefix}:w:60000:{start}:t:{srcs[0].decode()}"
            r.hincrby(key, "events", 1)
            log(f"E2E_MUTATE_REDIS: events + 1 in {key}")
            return
        start += 60000
    raise AssertionError("no window in Redis to change")


def test_pipeline_equals_reference(pipeline):
    log(f"seed {SEED}, {COUNT} events")
    pipeline.start_all()
    load = Load(pipeline, COUNT, SEED)
    load.begin()
    load.finish(timeout=900)
    assert len(load.days()) >= 2, f"the stream does not cross a UTC midnight: {load.days()}"
    stream_end = load.max_ts
    load.post_idle_tail()
    # 9 of the 12 raw partitions are idle: the aggregator's merged watermark
    # must have moved past the stream without them
    deadline = time.time() + 30
    while pipeline.metric("aggregator", "aggregator_merge_watermark_ms") <= stream_end:
        assert time.time() < deadline, "idle partitions hold the merged watermark back"
        time.sleep(0.5)
    load.post_flush()
    diffs, stats = verify(pipeline, load, tamper=(lambda: tamper_redis(pipeline, load))
                          if MUTATE_REDIS else None)
    log(f"stats: {stats}")

    # The gateway's own counters agree with what the generator saw.
    valid = sum(1 for e in load.sent if e["_lg"]["kind"] != "invalid") + len(load.tail) + \
        len(load.flush)
    accepted = pipeline.gateway_metric("gateway_events_accepted_total")
    judge(diffs, f"end to end, seed {SEED}, {COUNT} events")
    assert accepted == valid, (accepted, valid, load.summary_json)
    assert stats["sessions_ref"] > 500 and stats["windows_ref"] > 100, stats
    assert stats["late_sessionizer_ref"] > 0 and stats["late_aggregator_ref"] > 0, stats
    bad = pipeline.terminate_all()  # SPEC §8: SIGTERM, exit 0 within 10 s
    assert not bad, bad
