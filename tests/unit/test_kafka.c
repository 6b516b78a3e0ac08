/*
 * test_kafka.c: cm_kafka against librdkafka's in-process mock cluster (no
 * network beyond loopback listeners of this process).
 *
 * The mock cluster of librdkafka 2.0 accepts transactions but neither stores
 * transactional offset commits nor writes commit/abort markers, so these
 * tests check what the loop does (calls, rewinds, counters, outputs), not
 * read_committed visibility; tests/integration/test_exactly_once.py does
 * that against a real broker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "cm_kafka.h"
#include "cm_kafka_int.h"
#include "cm_log.h"
#include "cm_time.h"

/* Kafka protocol ApiKeys (rdkafka_protocol.h is not installed). */
#define API_OFFSET_FETCH 9
#define API_END_TXN 26
#define API_TXN_OFFSET_COMMIT 28

typedef struct mock {
    rd_kafka_t *rk; /* owns the cluster */
    rd_kafka_mock_cluster_t *mc;
    char bootstrap[256];
} mock_t;

static int mock_setup(void **state)
{
    char errstr[256];
    mock_t *m = calloc(1, sizeof(*m));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "test.mock.num.brokers", "1", errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    rd_kafka_conf_set(conf, "log_level", "2", errstr, sizeof(errstr));
    m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    assert_non_null(m->rk);
    m->mc = rd_kafka_handle_mock_cluster(m->rk);
    assert_non_null(m->mc);
    snprintf(m->bootstrap, sizeof(m->bootstrap), "%s", rd_kafka_mock_cluster_bootstraps(m->mc));
    *state = m;
    return 0;
}

static int mock_teardown(void **state)
{
    mock_t *m = *state;
    rd_kafka_destroy(m->rk);
    free(m);
    return 0;
}

/* n records "k<i % keys>" -> "<i>" into topic, spread by key. */
static void mock_produce(mock_t *m, const char *topic, int n, int keys)
{
    /* Learn the new topic now rather than at the next metadata refresh. */
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(m->rk, topic, NULL);
    assert_int_equal(rd_kafka_metadata(m->rk, 0, rkt, &md, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    for (int i = 0; i < n; i++) {
        char k[32], v[32];
        snprintf(k, sizeof(k), "k%d", i % keys);
        snprintf(v, sizeof(v), "%d", i);
        assert_int_equal(
            rd_kafka_producev(m->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(k, strlen(k)),
                              RD_KAFKA_V_VALUE(v, strlen(v)),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
            RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    assert_int_equal(rd_kafka_flush(m->rk, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* ------------------------------------------------------------- config */

static void test_conf_bad_property(void **state)
{
    (void)state;
    char errstr[256] = "";
    cm_kv_t kv[] = {{"no.such.property", "1"}};
    cm_passthrough_t pt = {kv, 1};
    assert_null(cm_kafka_conf_new("127.0.0.1:9092", &pt, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "no.such.property"));
    assert_null(strchr(errstr, '\n'));

    cm_kv_t bad_value[] = {{"sasl.mechanisms", "PLAIN"}, {"acks", "banana"}};
    cm_passthrough_t pt2 = {bad_value, 2};
    assert_null(cm_kafka_conf_new("127.0.0.1:9092", &pt2, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "\"acks\""));

    assert_null(cm_kafka_conf_new("", NULL, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "bootstrap"));

    /* A bad property stops every constructor with the same line. */
    cm_producer_opts_t po = {.bootstrap = "127.0.0.1:9092", .pt = &pt};
    assert_null(cm_producer_new(&po, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "no.such.property"));
}

static void test_conf_passthrough_applied(void **state)
{
    (void)state;
    char errstr[256], val[256];
    size_t sz = sizeof(val);
    cm_kv_t kv[] = {{"socket.timeout.ms", "12345"}, {"security.protocol", "plaintext"}};
    cm_passthrough_t pt = {kv, 2};
    rd_kafka_conf_t *conf = cm_kafka_conf_new("h1:1,h2:2", &pt, errstr, sizeof(errstr));
    assert_non_null(conf);
    assert_int_equal(rd_kafka_conf_get(conf, "socket.timeout.ms", val, &sz), RD_KAFKA_CONF_OK);
    assert_string_equal(val, "12345");
    sz = sizeof(val);
    assert_int_equal(rd_kafka_conf_get(conf, "bootstrap.servers", val, &sz), RD_KAFKA_CONF_OK);
    assert_string_equal(val, "h1:1,h2:2");
    rd_kafka_conf_destroy(conf);
}

static void test_producer_forced_and_defaults(void **state)
{
    mock_t *m = *state;
    char errstr[256], val[64];
    size_t sz = sizeof(val);
    /* Idempotence cannot be switched off; linger can be tuned. */
    cm_kv_t kv[] = {{"enable.idempotence", "false"}, {"linger.ms", "7"}};
    cm_passthrough_t pt = {kv, 2};
    cm_producer_opts_t po = {.bootstrap = m->bootstrap, .pt = &pt};
    cm_producer_t *p = cm_producer_new(&po, errstr, sizeof(errstr));
    assert_non_null(p);
    const rd_kafka_conf_t *conf = rd_kafka_conf(cm_producer_handle(p));
    assert_int_equal(rd_kafka_conf_get(conf, "enable.idempotence", val, &sz), RD_KAFKA_CONF_OK);
    assert_string_equal(val, "true");
    sz = sizeof(val);
    assert_int_equal(rd_kafka_conf_get(conf, "linger.ms", val, &sz), RD_KAFKA_CONF_OK);
    assert_string_equal(val, "7");
    sz = sizeof(val);
    assert_int_equal(rd_kafka_conf_get(conf, "compression.type", val, &sz), RD_KAFKA_CONF_OK);
    assert_string_equal(val, "lz4");
    cm_producer_destroy(p, 1000);
}

/* ----------------------------------------------------------- producer */

typedef struct dr_count {
    int ok, failed;
    int last_partition;
    intptr_t opaque_sum;
} dr_count_t;

static void count_dr(void *msg_opaque, cm_err_t err, const char *errmsg, int32_t partition,
                     int64_t offset, void *cb_opaque)
{
    dr_count_t *c = cb_opaque;
    (void)errmsg, (void)offset;
    if (err)
        __atomic_fetch_add(&c->failed, 1, __ATOMIC_SEQ_CST);
    else
        __atomic_fetch_add(&c->ok, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&c->last_partition, partition, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&c->opaque_sum, (intptr_t)msg_opaque, __ATOMIC_SEQ_CST);
}

static void test_producer_queue_full(void **state)
{
    mock_t *m = *state;
    char errstr[256];
    dr_count_t dc = {0};
    rd_kafka_mock_topic_create(m->mc, "qf", 2, 1);
    /* A long linger keeps everything in the local queue. */
    cm_producer_opts_t po = {.bootstrap = m->bootstrap,
                             .on_delivery = count_dr,
                             .cb_opaque = &dc,
                             .linger_ms = 60000,
                             .queue_max_msgs = 10};
    cm_producer_t *p = cm_producer_new(&po, errstr, sizeof(errstr));
    assert_non_null(p);
    for (intptr_t i = 1; i <= 10; i++)
        assert_int_equal(cm_producer_produce(p, "qf", "k", 1, "v", 1, NULL, 0, (void *)i), CM_OK);
    int64_t t0 = cm_mono_ms();
    assert_int_equal(cm_producer_produce(p, "qf", "k", 1, "v", 1, NULL, 0, (void *)99),
                     CM_ERR_RETRY);
    assert_true(cm_mono_ms() - t0 < 100); /* never blocks */
    assert_int_equal(cm_producer_queue_len(p), 10);
    cm_producer_stats_t st;
    cm_producer_get_stats(p, &st);
    assert_int_equal(st.queued, 10);
    assert_int_equal(st.queue_full, 1);
    assert_int_equal(cm_producer_flush(p, 50), CM_ERR_TIMEOUT);
    /* Destroy without time: the queued records are purged, and each still
     * gets exactly one (failed) delivery report. */
    cm_producer_destroy(p, 0);
    assert_int_equal(dc.ok + dc.failed, 10);
    assert_int_equal(dc.opaque_sum, 55);
}

static void test_producer_delivery_headers_and_ready(void **state)
{
    mock_t *m = *state;
    char errstr[256];
    dr_count_t dc = {0};
    rd_kafka_mock_topic_create(m->mc, "dlq", 3, 1);
    cm_producer_opts_t po = {.bootstrap = m->bootstrap, .on_delivery = count_dr, .cb_opaque = &dc};
    cm_producer_t *p = cm_producer_new(&po, errstr, sizeof(errstr));
    assert_non_null(p);
    cm_kafka_header_t h[] = {{"reason", "late", 4}, {"empty", NULL, 0}};
    for (intptr_t i = 1; i <= 100; i++)
        assert_int_equal(cm_producer_produce(p, "dlq", "user-1", 6, "{}", 2, h, 2, (void *)i),
                         CM_OK);
    assert_int_equal(cm_producer_flush(p, 10000), CM_OK);
    assert_int_equal(dc.ok, 100);
    assert_int_equal(dc.failed, 0);
    assert_int_equal(dc.opaque_sum, 5050);
    assert_true(cm_producer_ready(p));
    /* Bad records are refused at once, without a callback. */
    cm_kafka_msg_t bad = {.topic = NULL};
    assert_int_equal(cm_producer_send(p, &bad, NULL), CM_ERR_INVALID);
    cm_kafka_header_t noname[] = {{NULL, "x", 1}};
    cm_kafka_msg_t bad2 = {.topic = "dlq", .headers = noname, .header_count = 1};
    assert_int_equal(cm_producer_send(p, &bad2, NULL), CM_ERR_INVALID);
    cm_kafka_msg_t badp = {.topic = "dlq", .partition = 77, .value = "x", .value_len = 1};
    assert_int_equal(cm_producer_send(p, &badp, NULL), CM_ERR_INVALID);

    /* Brokers down -> not ready; back up -> ready again (probe). */
    rd_kafka_mock_broker_set_down(m->mc, 1);
    int64_t deadline = cm_mono_ms() + 8000;
    while (cm_producer_ready(p) && cm_mono_ms() < deadline)
        usleep(20000);
    assert_false(cm_producer_ready(p));
    rd_kafka_mock_broker_set_up(m->mc, 1);
    deadline = cm_mono_ms() + 8000;
    while (!cm_producer_ready(p) && cm_mono_ms() < deadline)
        usleep(20000);
    assert_true(cm_producer_ready(p));
    cm_producer_destroy(p, 5000);
}

static void test_offset_guard_drops_redeliveries(void **state)
{
    mock_t *m = *state;
    cm_offset_guard_t g;
    cm_guard_init(&g);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(m->rk, "g", NULL);
    rd_kafka_message_t msg = {.rkt = rkt, .partition = 0};
    /* Unknown start: the first record sets the expectation. */
    msg.offset = 7;
    assert_true(cm_guard_accept(&g, &msg));
    msg.offset = 8;
    assert_true(cm_guard_accept(&g, &msg));
    /* A stale fetch hands out 7 and 8 again: dropped; 9 goes on. */
    msg.offset = 7;
    assert_false(cm_guard_accept(&g, &msg));
    msg.offset = 8;
    assert_false(cm_guard_accept(&g, &msg));
    msg.offset = 9;
    assert_true(cm_guard_accept(&g, &msg));
    /* Gaps (aborted records, compaction) are fine. */
    msg.offset = 20;
    assert_true(cm_guard_accept(&g, &msg));
    assert_int_equal(g.skipped, 2);
    /* A deliberate rewind resets the expectation; a logical offset clears it. */
    cm_guard_set(&g, "g", 0, 3);
    msg.offset = 3;
    assert_true(cm_guard_accept(&g, &msg));
    cm_guard_set(&g, "g", 0, RD_KAFKA_OFFSET_BEGINNING);
    msg.offset = 0;
    assert_true(cm_guard_accept(&g, &msg));
    /* Other partitions are independent; a revoked one is forgotten. */
    msg.partition = 1;
    msg.offset = 0;
    assert_true(cm_guard_accept(&g, &msg));
    rd_kafka_topic_partition_list_t *rv = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(rv, "g", 0);
    cm_guard_remove(&g, rv);
    rd_kafka_topic_partition_list_destroy(rv);
    msg.partition = 0;
    msg.offset = 0;
    assert_true(cm_guard_accept(&g, &msg));
    rd_kafka_topic_destroy(rkt);
    cm_guard_free(&g);
}

/* ----------------------------------------------------------- consumer */

typedef struct hook {
    int assigns, revokes;
    int64_t start_at;
} hook_t;

static void start_hook(cm_consumer_t *c, cm_rebalance_kind_t kind,
                       rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    hook_t *h = opaque;
    (void)c;
    if (kind == CM_REBALANCE_ASSIGN) {
        h->assigns++;
        for (int i = 0; i < parts->cnt; i++)
            parts->elems[i].offset = h->start_at;
    } else {
        h->revokes++;
    }
}

static void test_consumer_hook_chooses_start(void **state)
{
    mock_t *m = *state;
    char errstr[256];
    rd_kafka_mock_topic_create(m->mc, "lake", 1, 1);
    cm_producer_opts_t po = {.bootstrap = m->bootstrap};
    cm_producer_t *p = cm_producer_new(&po, errstr, sizeof(errstr));
    assert_non_null(p);
    cm_kafka_header_t hd[] = {{"reason", "late", 4}, {"empty", NULL, 0}};
    for (int i = 0; i < 50; i++)
        assert_int_equal(cm_producer_produce(p, "lake", "user-1", 6, "{}", 2, hd, 2, NULL), CM_OK);
    cm_producer_destroy(p, 5000);
    hook_t h = {.start_at = 30};
    const char *topics[] = {"lake"};
    cm_consumer_opts_t co = {.bootstrap = m->bootstrap,
                             .group_id = "g-lake",
                             .topics = topics,
                             .topic_count = 1,
                             .on_rebalance = start_hook,
                             .opaque = &h};
    cm_consumer_t *c = cm_consumer_new(&co, errstr, sizeof(errstr));
    assert_non_null(c);
    int got = 0;
    int64_t first = -1;
    int64_t deadline = cm_mono_ms() + 10000;
    while (got < 20 && cm_mono_ms() < deadline) {
        rd_kafka_message_t *msg = NULL;
        assert_int_equal(cm_consumer_poll(c, 100, &msg), CM_OK);
        if (!msg)
            continue;
        if (first < 0)
            first = msg->offset;
        /* Key and both headers arrived as produced. */
        rd_kafka_headers_t *hdrs = NULL;
        const void *v = NULL;
        size_t vs = 0;
        assert_int_equal(rd_kafka_message_headers(msg, &hdrs), RD_KAFKA_RESP_ERR_NO_ERROR);
        assert_int_equal(rd_kafka_header_get_last(hdrs, "reason", &v, &vs),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        assert_int_equal(vs, 4);
        assert_memory_equal(v, "late", 4);
        assert_int_equal(rd_kafka_header_get_last(hdrs, "empty", &v, &vs),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        assert_null(v);
        assert_int_equal(msg->key_len, 6);
        got++;
        rd_kafka_message_destroy(msg);
    }
    assert_int_equal(got, 20);
    assert_int_equal(first, 30);
    /* Read 30..49 of 50: nothing left to read. */
    assert_int_equal(cm_kafka_lag(cm_consumer_handle(c)), 0);
    assert_int_equal(h.assigns, 1);
    assert_int_equal(cm_consumer_assigned_count(c), 1);
    /* Manual commit, then a seek back works on the assigned partition. */
    rd_kafka_topic_partition_list_t *off = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(off, "lake", 0)->offset = 50;
    assert_int_equal(cm_consumer_commit(c, off, false), CM_OK);
    rd_kafka_topic_partition_list_destroy(off);
    assert_int_equal(cm_consumer_seek(c, "lake", 0, 10, 5000), CM_OK);
    rd_kafka_message_t *msg = NULL;
    deadline = cm_mono_ms() + 5000;
    while (!msg && cm_mono_ms() < deadline)
        assert_int_equal(cm_consumer_poll(c, 100, &msg), CM_OK);
    assert_non_null(msg);
    assert_int_equal(msg->offset, 10);
    rd_kafka_message_destroy(msg);
    /* Back at 11 of 50: 39 records behind. */
    assert_int_equal(cm_kafka_lag(cm_consumer_handle(c)), 39);
    cm_consumer_destroy(c);
    assert_int_equal(h.revokes, 1);
}

/* ------------------------------------------------------------- txloop */

typedef struct app {
    const char *out;
    int target;             /* stop once this many records were processed */
    int target_after_abort; /* else: stop once this many were processed after an abort */
    int processed;
    int since_abort;
    int assigns, revokes, aborts, before_commits, ticks;
    bool processed_before_assign;
    int64_t first_offset_after_abort[4];
    int restored;          /* records seen by cm_txloop_restore */
    const char *changelog; /* restored in on_assign when set */
    int stop_after_ticks;  /* 0: off */
    bool tick_output;      /* each tick produces one record to out */
    volatile sig_atomic_t stop;
} app_t;

static cm_err_t app_process(cm_txloop_t *loop, const rd_kafka_message_t *msg, void *opaque)
{
    app_t *a = opaque;
    if (a->assigns == 0)
        a->processed_before_assign = true;
    if (a->aborts > 0 && msg->partition < 4 && a->first_offset_after_abort[msg->partition] < 0)
        a->first_offset_after_abort[msg->partition] = msg->offset;
    a->processed++;
    a->since_abort++;
    if (a->target_after_abort ? a->aborts > 0 && a->since_abort >= a->target_after_abort
                              : a->processed >= a->target)
        a->stop = 1;
    return cm_txloop_produce(loop, a->out, msg->key, msg->key_len, msg->payload, msg->len, NULL, 0);
}

static cm_err_t count_restore(const rd_kafka_message_t *msg, void *opaque)
{
    (void)msg;
    ((app_t *)opaque)->restored++;
    return CM_OK;
}

static cm_err_t app_assign(cm_txloop_t *loop, const rd_kafka_topic_partition_list_t *parts,
                           void *opaque)
{
    app_t *a = opaque;
    a->assigns++;
    if (a->changelog)
        for (int i = 0; i < parts->cnt; i++)
            assert_int_equal(cm_txloop_restore(loop, a->changelog, parts->elems[i].partition,
                                               count_restore, a, 5000),
                             CM_OK);
    return CM_OK;
}

static void app_revoke(cm_txloop_t *loop, const rd_kafka_topic_partition_list_t *parts, bool lost,
                       void *opaque)
{
    (void)loop, (void)parts, (void)lost;
    ((app_t *)opaque)->revokes++;
}

static void app_abort(cm_txloop_t *loop, const rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    app_t *a = opaque;
    (void)loop;
    a->aborts++;
    a->since_abort = 0;
    /* The state would be dropped here; the count restarts from the rewind. */
    for (int i = 0; i < 4; i++)
        a->first_offset_after_abort[i] = -1;
    assert_true(parts->cnt > 0);
}

static cm_err_t app_before_commit(cm_txloop_t *loop, void *opaque)
{
    (void)loop;
    ((app_t *)opaque)->before_commits++;
    return CM_OK;
}

static void app_tick(cm_txloop_t *loop, int64_t now_ms, void *opaque)
{
    app_t *a = opaque;
    assert_true(now_ms > 1600000000000LL);
    a->ticks++;
    if (a->tick_output)
        assert_int_equal(cm_txloop_produce(loop, a->out, "t", 1, "tick", 4, NULL, 0), CM_OK);
    if (a->stop_after_ticks && a->ticks >= a->stop_after_ticks)
        a->stop = 1;
}

static cm_txloop_t *app_loop(mock_t *m, app_t *a, const char *in, const char *txn_id)
{
    char errstr[256];
    static const char *topics[1];
    topics[0] = in;
    /* TEST_KAFKA_DEBUG=fetch,cgrp turns librdkafka's debug log on. */
    static cm_kv_t dbg[1];
    static cm_passthrough_t pt;
    dbg[0] = (cm_kv_t){"debug", getenv("TEST_KAFKA_DEBUG")};
    pt = (cm_passthrough_t){dbg, dbg[0].value ? 1 : 0};
    cm_txloop_opts_t o = {
        .bootstrap = m->bootstrap,
        .pt = &pt,
        .group_id = txn_id,
        .topics = topics,
        .topic_count = 1,
        .transactional_id = txn_id,
        .commit_interval_ms = 50,
        .session_timeout_ms = 6000,
        .stop_flag = &a->stop,
        .cb = {.process = app_process,
               .on_assign = app_assign,
               .on_revoke = app_revoke,
               .on_abort = app_abort,
               .before_commit = app_before_commit,
               .tick = app_tick},
        .opaque = a,
    };
    cm_txloop_t *loop = cm_txloop_new(&o, errstr, sizeof(errstr));
    if (!loop)
        fail_msg("cm_txloop_new: %s", errstr);
    return loop;
}

static void test_txloop_copies_and_commits(void **state)
{
    mock_t *m = *state;
    rd_kafka_mock_topic_create(m->mc, "in1", 2, 1);
    rd_kafka_mock_topic_create(m->mc, "out1", 2, 1);
    rd_kafka_mock_topic_create(m->mc, "state1", 2, 1);
    mock_produce(m, "in1", 200, 10);
    mock_produce(m, "state1", 30, 7);
    /* Retriable EndTxn errors are retried by librdkafka: no abort. */
    rd_kafka_mock_push_request_errors(m->mc, API_END_TXN, 2,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                                      RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS);
    app_t a = {.out = "out1", .target = 200, .changelog = "state1"};
    cm_txloop_t *loop = app_loop(m, &a, "in1", "tx-copy");
    assert_int_equal(cm_txloop_run(loop), CM_OK);
    cm_txloop_stats_t st;
    cm_txloop_get_stats(loop, &st);
    assert_int_equal(st.msgs_in, 200);
    assert_int_equal(st.msgs_produced, 200);
    assert_true(st.commits >= 1);
    assert_int_equal(st.aborts, 0);
    assert_int_equal(st.commit_lat_count, st.commits);
    assert_false(st.running);
    assert_false(a.processed_before_assign);
    assert_int_equal(a.assigns, 1);
    assert_int_equal(a.revokes, 1);
    assert_int_equal(a.restored, 30); /* both changelog partitions, in on_assign */
    assert_true(a.before_commits >= (int)st.commits);
    cm_txloop_destroy(loop);
    /* The last records were committed at stop: 200 in the output. */
    int64_t lo, hi, total = 0;
    for (int p = 0; p < 2; p++) {
        assert_int_equal(rd_kafka_query_watermark_offsets(m->rk, "out1", p, &lo, &hi, 5000),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        total += hi;
    }
    assert_int_equal(total, 200);
}

static void test_txloop_abortable_commit_rewinds(void **state)
{
    mock_t *m = *state;
    rd_kafka_mock_topic_create(m->mc, "in2", 2, 1);
    rd_kafka_mock_topic_create(m->mc, "out2", 2, 1);
    mock_produce(m, "in2", 100, 10);
    /* The first transactional offset commit fails as if a rebalance had
     * fenced the generation: abortable. */
    rd_kafka_mock_push_request_errors(m->mc, API_TXN_OFFSET_COMMIT, 1,
                                      RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION);
    /* A previous owner's transaction still open: the stable offset fetch of
     * the assignment waits it out (librdkafka retries) instead of failing. */
    rd_kafka_mock_push_request_errors(m->mc, API_OFFSET_FETCH, 2,
                                      RD_KAFKA_RESP_ERR_UNSTABLE_OFFSET_COMMIT,
                                      RD_KAFKA_RESP_ERR_UNSTABLE_OFFSET_COMMIT);
    app_t a = {.out = "out2", .target_after_abort = 100};
    for (int i = 0; i < 4; i++)
        a.first_offset_after_abort[i] = -1;
    cm_txloop_t *loop = app_loop(m, &a, "in2", "tx-abort");
    assert_int_equal(cm_txloop_run(loop), CM_OK);
    cm_txloop_stats_t st;
    cm_txloop_get_stats(loop, &st);
    assert_int_equal(st.aborts, 1);
    assert_int_equal(a.aborts, 1);
    assert_true(st.commits >= 1);
    /* Rewound to the committed offsets (none yet: the start) and read again. */
    assert_int_equal(a.first_offset_after_abort[0], 0);
    assert_int_equal(a.first_offset_after_abort[1], 0);
    assert_int_equal(a.since_abort, 100); /* everything once more after the rewind */
    assert_int_equal(st.msgs_in, (uint64_t)a.processed);
    cm_txloop_destroy(loop);
}

static void test_txloop_tick_output_fenced_is_fatal(void **state)
{
    mock_t *m = *state;
    rd_kafka_mock_topic_create(m->mc, "in3", 1, 1);
    rd_kafka_mock_topic_create(m->mc, "out3", 1, 1);
    /* The output of a tick opens a transaction; its commit finds the
     * producer fenced: fatal, run returns CM_ERR_FATAL at once. */
    rd_kafka_mock_push_request_errors(m->mc, API_END_TXN, 1, RD_KAFKA_RESP_ERR_PRODUCER_FENCED);
    app_t a = {.out = "out3", .target = 1000, .tick_output = true, .stop_after_ticks = 100};
    cm_txloop_t *loop = app_loop(m, &a, "in3", "tx-fatal");
    int64_t t0 = cm_mono_ms();
    assert_int_equal(cm_txloop_run(loop), CM_ERR_FATAL);
    assert_true(cm_mono_ms() - t0 < 5000);
    assert_true(a.ticks < 100);
    cm_txloop_stats_t st;
    cm_txloop_get_stats(loop, &st);
    assert_int_equal(st.commits, 0);
    assert_true(st.msgs_produced >= 1);
    cm_txloop_destroy(loop);
}

static void test_txloop_ticks_when_idle_and_stops(void **state)
{
    mock_t *m = *state;
    rd_kafka_mock_topic_create(m->mc, "in4", 1, 1);
    app_t a = {.out = "out4", .target = 1000, .stop_after_ticks = 10};
    cm_txloop_t *loop = app_loop(m, &a, "in4", "tx-idle");
    int64_t t0 = cm_mono_ms();
    assert_int_equal(cm_txloop_run(loop), CM_OK);
    int64_t took = cm_mono_ms() - t0;
    assert_int_equal(a.ticks, 10);
    assert_true(took >= 900 && took < 6000);
    cm_txloop_stats_t st;
    cm_txloop_get_stats(loop, &st);
    assert_int_equal(st.commits, 0); /* nothing to commit: no empty transactions */
    assert_int_equal(a.processed, 0);
    cm_txloop_destroy(loop);
}

static void test_txloop_bad_options(void **state)
{
    mock_t *m = *state;
    char errstr[256];
    const char *topics[] = {"x"};
    cm_txloop_opts_t o = {
        .bootstrap = m->bootstrap, .group_id = "g", .topics = topics, .topic_count = 1};
    assert_null(cm_txloop_new(&o, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "transactional id"));
    cm_kv_t kv[] = {{"bogus.prop", "1"}};
    cm_passthrough_t pt = {kv, 1};
    o.transactional_id = "t";
    o.cb.process = app_process;
    o.pt = &pt;
    assert_null(cm_txloop_new(&o, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "bogus.prop"));
    cm_txloop_destroy(NULL);
    cm_producer_destroy(NULL, 0);
    cm_consumer_destroy(NULL);
}

int main(void)
{
    /* TEST_KAFKA_LOG=info shows the loop's own log lines. */
    int lvl = getenv("TEST_KAFKA_LOG") ? cm_log_level_parse(getenv("TEST_KAFKA_LOG")) : -1;
    cm_log_init("test_kafka", lvl < 0 ? CM_LOG_ERROR : (cm_log_level_t)lvl);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conf_bad_property),
        cmocka_unit_test(test_conf_passthrough_applied),
        cmocka_unit_test_setup_teardown(test_producer_forced_and_defaults, mock_setup,
                                        mock_teardown),
        cmocka_unit_test_setup_teardown(test_producer_queue_full, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_producer_delivery_headers_and_ready, mock_setup,
                                        mock_teardown),
        cmocka_unit_test_setup_teardown(test_offset_guard_drops_redeliveries, mock_setup,
                                        mock_teardown),
        cmocka_unit_test_setup_teardown(test_consumer_hook_chooses_start, mock_setup,
                                        mock_teardown),
        cmocka_unit_test_setup_teardown(test_txloop_copies_and_commits, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_txloop_abortable_commit_rewinds, mock_setup,
                                        mock_teardown),
        cmocka_unit_test_setup_teardown(test_txloop_tick_output_fenced_is_fatal, mock_setup,
                                        mock_teardown),
        cmocka_unit_test_setup_teardown(test_txloop_ticks_when_idle_and_stops, mock_setup,
                                        mock_teardown),
        cmocka_unit_test_setup_teardown(test_txloop_bad_options, mock_setup, mock_teardown),
    };
    /* TEST_KAFKA_FILTER=test_txloop_* runs a subset. */
    if (getenv("TEST_KAFKA_FILTER"))
        cmocka_set_test_filter(getenv("TEST_KAFKA_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
