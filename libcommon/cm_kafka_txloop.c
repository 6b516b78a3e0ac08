/*
 * cm_kafka_txloop.c: the transactional consume-transform-produce loop.
 *
 * The shape follows librdkafka's examples/transactions.c (KIP-447: one
 * transactional producer per instance, input offsets sent with the consumer's
 * group metadata), with these choices of ours:
 *  - a transaction is begun lazily, at the first record or output, so an
 *    idle loop commits nothing;
 *  - the offsets sent are those of the records processed in the transaction
 *    (the next offset per partition), not the consumer's position, so a
 *    partition assigned but not yet read is never touched;
 *  - on assignment the committed offsets are fetched before the app's
 *    on_assign: with isolation.level=read_committed librdkafka asks for
 *    *stable* offsets, which waits for a previous owner's open transaction
 *    to end, so state restored in on_assign matches the input position.
 *
 * Error rules (rd_kafka_error_t of the transactional calls): fatal -> stop
 * with CM_ERR_FATAL; txn_requires_abort -> abort, rewind every assigned
 * partition to its committed offset, on_abort; retriable -> call again.
 */
#include "cm_kafka_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cm_log.h"
#include "cm_time.h"

const double cm_txloop_lat_bounds_ms[CM_TXLOOP_LAT_BUCKETS - 1] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500,
};

/* Per call of a transactional API; retriable errors are retried after it. */
#define TXN_OP_TIMEOUT_MS 10000
/* rd_kafka_committed may wait for another member's open transaction. */
#define COMMITTED_TIMEOUT_MS 60000

typedef enum txn_act {
    ACT_RETRY,
    ACT_ABORT,
    ACT_FATAL,
} txn_act_t;

struct cm_txloop {
    cm_txloop_callbacks_t cb;
    void *opaque;
    char *txn_id;
    char **topics;
    size_t topic_count;
    int commit_interval_ms;
    int commit_max_msgs;
    int tick_interval_ms;
    int shutdown_timeout_ms;
    volatile sig_atomic_t *stop_flag;
    bool (*should_stop)(void *opaque);
    int64_t reset_offset; /* where a partition without commit starts */
    int64_t lag_at;       /* when st.consumer_lag was last refreshed */

    rd_kafka_t *consumer;
    rd_kafka_t *producer;
    rd_kafka_t *restorer;          /* created at the first cm_txloop_restore */
    rd_kafka_conf_t *restore_conf; /* until then */

    /* The open transaction. */
    bool txn_open;
    bool txn_doomed; /* a produce said the transaction must be aborted */
    int64_t txn_start_ms;
    int txn_msgs;
    int txn_dr_failed;                            /* delivery failures seen in it (logged once) */
    rd_kafka_topic_partition_list_t *txn_offsets; /* next offset per input partition */
    cm_offset_guard_t guard; /* next offset to process per assigned partition */

    cm_err_t pending; /* set inside callbacks: cm_txloop_run returns it */
    bool fatal;       /* the producer is unusable */
    bool closing;
    int64_t deadline_ms; /* mono; retries stop here (shutdown), else INT64_MAX */
    bool ran;
    bool ever_assigned;
    bool joined; /* had a group member id when closed */
    int stop;    /* atomic: cm_txloop_stop */

    cm_txloop_stats_t st; /* counters updated atomically */
};

static bool stop_requested(cm_txloop_t *l)
{
    return CM_ATOMIC_LOAD(&l->stop) || (l->stop_flag && *l->stop_flag) ||
           (l->should_stop && l->should_stop(l->opaque));
}

static void set_pending(cm_txloop_t *l, cm_err_t err)
{
    if (!l->pending)
        l->pending = err;
    if (err == CM_ERR_FATAL)
        l->fatal = true;
}

/* The timeout of one transactional call: bounded by the shutdown deadline. */
static int op_timeout(cm_txloop_t *l)
{
    if (!l->closing && stop_requested(l)) {
        l->closing = true;
        l->deadline_ms = cm_mono_ms() + l->shutdown_timeout_ms;
    }
    if (l->deadline_ms == INT64_MAX)
        return TXN_OP_TIMEOUT_MS;
    int64_t left = l->deadline_ms - cm_mono_ms();
    if (left < 100)
        left = 100;
    return left < TXN_OP_TIMEOUT_MS ? (int)left : TXN_OP_TIMEOUT_MS;
}

static bool past_deadline(const cm_txloop_t *l)
{
    return cm_mono_ms() >= l->deadline_ms;
}

/* Classifies (and destroys) an error of a transactional call. */
static txn_act_t classify(cm_txloop_t *l, const char *what, rd_kafka_error_t *error)
{
    txn_act_t act;
    if (rd_kafka_error_is_fatal(error))
        act = ACT_FATAL;
    else if (rd_kafka_error_txn_requires_abort(error))
        act = ACT_ABORT;
    else if (rd_kafka_error_is_retriable(error))
        act = ACT_RETRY;
    else
        act = ACT_FATAL;
    cm_log(act == ACT_FATAL ? CM_LOG_ERROR : CM_LOG_WARN, "kafka transaction error", "call", "%s",
           what, "error", "%s", rd_kafka_error_name(error), "reason", "%s",
           rd_kafka_error_string(error), "action", "%s",
           act == ACT_FATAL   ? "fatal"
           : act == ACT_ABORT ? "abort"
                              : "retry",
           NULL);
    rd_kafka_error_destroy(error);
    if (act == ACT_FATAL)
        set_pending(l, CM_ERR_FATAL);
    return act;
}

static void txn_reset(cm_txloop_t *l)
{
    l->txn_open = false;
    l->txn_doomed = false;
    l->txn_msgs = 0;
    l->txn_dr_failed = 0;
    rd_kafka_topic_partition_list_destroy(l->txn_offsets);
    l->txn_offsets = rd_kafka_topic_partition_list_new(16);
}

/*
 * Keeps the assigned-partition count from the rebalance events themselves.
 * rd_kafka_assignment() is not called here: inside the rebalance callback
 * that rd_kafka_consumer_close() triggers, librdkafka 2.0.2 can deadlock on
 * it (seen as a consumer that never finishes closing after SIGTERM).
 */
static void update_assigned(cm_txloop_t *l, rd_kafka_resp_err_t err,
                            const rd_kafka_topic_partition_list_t *parts, bool coop)
{
    int cur = CM_ATOMIC_LOAD(&l->st.assigned_partitions);
    int n = parts ? parts->cnt : 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
        cur = coop ? cur + n : n;
    else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        cur = coop ? (cur > n ? cur - n : 0) : 0;
    else
        cur = 0;
    CM_ATOMIC_STORE(&l->st.assigned_partitions, cur);
}

/*
 * Moves every assigned partition back to its committed offset (the start of
 * the aborted transaction) and tells the app. Seeking also drops the records
 * fetched ahead, so nothing of the aborted transaction is seen twice.
 */
static void rewind_and_notify(cm_txloop_t *l)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    rd_kafka_resp_err_t err = rd_kafka_assignment(l->consumer, &a);
    if (err) {
        cm_log_error("kafka rewind: no assignment", "error", "%s", rd_kafka_err2str(err), NULL);
        set_pending(l, CM_ERR_FATAL);
        return;
    }
    if (a->cnt > 0) {
        err = rd_kafka_committed(l->consumer, a, COMMITTED_TIMEOUT_MS);
        if (err) {
            cm_log_error("kafka rewind: committed offsets unavailable", "error", "%s",
                         rd_kafka_err2str(err), NULL);
            set_pending(l, CM_ERR_FATAL);
            goto out;
        }
        for (int i = 0; i < a->cnt; i++)
            if (a->elems[i].offset < 0)
                a->elems[i].offset = l->reset_offset;
        rd_kafka_error_t *error = rd_kafka_seek_partitions(l->consumer, a, TXN_OP_TIMEOUT_MS);
        if (error) {
            cm_log_error("kafka rewind: seek failed", "error", "%s", rd_kafka_error_string(error),
                         NULL);
            rd_kafka_error_destroy(error);
            set_pending(l, CM_ERR_FATAL);
            goto out;
        }
        for (int i = 0; i < a->cnt; i++) {
            if (a->elems[i].err) {
                cm_log_error("kafka rewind: seek failed", "topic", "%s", a->elems[i].topic,
                             "partition", "%d", (int)a->elems[i].partition, "error", "%s",
                             rd_kafka_err2str(a->elems[i].err), NULL);
                set_pending(l, CM_ERR_FATAL);
                goto out;
            }
        }
    }
    for (int i = 0; i < a->cnt; i++)
        cm_guard_set(&l->guard, a->elems[i].topic, a->elems[i].partition, a->elems[i].offset);
    cm_kafka_log_parts("kafka input rewound to committed offsets", a);
    if (l->cb.on_abort)
        l->cb.on_abort(l, a, l->opaque);
out:
    rd_kafka_topic_partition_list_destroy(a);
}

/* Aborts the open transaction; then, if rewind, rewinds and calls on_abort.
 * Returns false when the producer is unusable (pending is set). */
static bool txn_abort(cm_txloop_t *l, bool rewind)
{
    if (l->fatal)
        return false;
    if (l->txn_open) {
        for (;;) {
            rd_kafka_error_t *error = rd_kafka_abort_transaction(l->producer, op_timeout(l));
            if (!error)
                break;
            txn_act_t act = classify(l, "abort_transaction", error);
            if (act == ACT_RETRY && !past_deadline(l))
                continue;
            set_pending(l, CM_ERR_FATAL);
            txn_reset(l);
            return false;
        }
        CM_ATOMIC_ADD(&l->st.aborts, 1);
        cm_log_warn("kafka transaction aborted", "records", "%d", l->txn_msgs, NULL);
    }
    txn_reset(l);
    if (rewind)
        rewind_and_notify(l);
    return !l->fatal;
}

static void record_latency(cm_txloop_t *l, int64_t us)
{
    CM_ATOMIC_ADD(&l->st.commit_lat_count, 1);
    CM_ATOMIC_ADD(&l->st.commit_lat_us_sum, (uint64_t)us);
    if ((uint64_t)us > CM_ATOMIC_LOAD(&l->st.commit_lat_us_max))
        CM_ATOMIC_STORE(&l->st.commit_lat_us_max, (uint64_t)us);
    int b = 0;
    while (b < CM_TXLOOP_LAT_BUCKETS - 1 && (double)us / 1000.0 > cm_txloop_lat_bounds_ms[b])
        b++;
    CM_ATOMIC_ADD(&l->st.commit_lat_bucket[b], 1);
}

/*
 * Commits the open transaction with the offsets of what it processed. On an
 * abortable error the transaction is aborted and the input rewound. Returns
 * true when committed (or nothing was open).
 */
static bool txn_commit(cm_txloop_t *l)
{
    if (!l->txn_open || l->fatal)
        return !l->fatal;
    int64_t t0 = cm_mono_us();
    if (l->cb.before_commit) {
        cm_err_t err = l->cb.before_commit(l, l->opaque);
        if (err) {
            if (err != CM_ERR_RETRY)
                set_pending(l, err);
            txn_abort(l, true);
            return false;
        }
    }
    if (l->txn_doomed) {
        txn_abort(l, true);
        return false;
    }
    if (l->txn_offsets->cnt > 0) {
        rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(l->consumer);
        if (!cgmd) {
            cm_log_error("kafka commit: no consumer group metadata", NULL);
            set_pending(l, CM_ERR_FATAL);
            return false;
        }
        for (;;) {
            rd_kafka_error_t *error = rd_kafka_send_offsets_to_transaction(
                l->producer, l->txn_offsets, cgmd, op_timeout(l));
            if (!error)
                break;
            txn_act_t act = classify(l, "send_offsets_to_transaction", error);
            if (act == ACT_RETRY && !past_deadline(l))
                continue;
            rd_kafka_consumer_group_metadata_destroy(cgmd);
            if (act != ACT_FATAL)
                txn_abort(l, true);
            return false;
        }
        rd_kafka_consumer_group_metadata_destroy(cgmd);
    }
    for (;;) {
        rd_kafka_error_t *error = rd_kafka_commit_transaction(l->producer, op_timeout(l));
        if (!error)
            break;
        txn_act_t act = classify(l, "commit_transaction", error);
        if (act == ACT_RETRY && !past_deadline(l))
            continue;
        if (act == ACT_ABORT) {
            txn_abort(l, true);
        } else if (act == ACT_RETRY) {
            /* Out of time while shutting down: the broker ends the
             * transaction (timeout, or fencing by our next start). */
            cm_log_error("kafka commit did not finish before the shutdown deadline", NULL);
            set_pending(l, CM_ERR_TIMEOUT);
            txn_reset(l);
        }
        return false;
    }
    record_latency(l, cm_mono_us() - t0);
    CM_ATOMIC_ADD(&l->st.commits, 1);
    txn_reset(l);
    return true;
}

static bool txn_ensure(cm_txloop_t *l)
{
    if (l->txn_open)
        return true;
    if (l->fatal)
        return false;
    rd_kafka_error_t *error = rd_kafka_begin_transaction(l->producer);
    if (error) {
        classify(l, "begin_transaction", error);
        /* begin only fails on state errors: never worth going on. */
        set_pending(l, CM_ERR_FATAL);
        return false;
    }
    l->txn_open = true;
    l->txn_start_ms = cm_mono_ms();
    l->txn_msgs = 0;
    return true;
}

/* ------------------------------------------------------------------------ */

static void on_assign(cm_txloop_t *l, rd_kafka_topic_partition_list_t *parts, bool coop)
{
    cm_kafka_log_parts("partitions assigned", parts);
    /* Stable committed offsets first (see the file comment). */
    rd_kafka_resp_err_t err = rd_kafka_committed(l->consumer, parts, COMMITTED_TIMEOUT_MS);
    if (err) {
        cm_log_error("kafka committed offsets unavailable", "error", "%s", rd_kafka_err2str(err),
                     NULL);
        set_pending(l, CM_ERR_FATAL);
    } else {
        /* A partition-level error leaves that partition to librdkafka's own
         * (equally stable) offset lookup at assignment. */
        for (int i = 0; i < parts->cnt; i++) {
            if (parts->elems[i].err) {
                cm_log_warn("kafka committed offset unavailable", "topic", "%s",
                            parts->elems[i].topic, "partition", "%d",
                            (int)parts->elems[i].partition, "error", "%s",
                            rd_kafka_err2str(parts->elems[i].err), NULL);
                parts->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
                parts->elems[i].err = RD_KAFKA_RESP_ERR_NO_ERROR;
            }
        }
    }
    for (int i = 0; !err && i < parts->cnt; i++)
        cm_guard_set(&l->guard, parts->elems[i].topic, parts->elems[i].partition,
                     parts->elems[i].offset);
    if (!err && l->cb.on_assign) {
        cm_err_t aerr = l->cb.on_assign(l, parts, l->opaque);
        if (aerr) {
            cm_log_error("on_assign failed", "error", "%s", cm_err_str(aerr), NULL);
            set_pending(l, aerr);
        }
    }
    if (err) {
        /* Let librdkafka fetch the offsets itself; we stop anyway. */
        for (int i = 0; i < parts->cnt; i++)
            parts->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
    }
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (coop)
        error = rd_kafka_incremental_assign(l->consumer, parts);
    else
        aerr = rd_kafka_assign(l->consumer, parts);
    if (error || aerr) {
        cm_log_error("kafka assign failed", "error", "%s",
                     error ? rd_kafka_error_string(error) : rd_kafka_err2str(aerr), NULL);
        if (error)
            rd_kafka_error_destroy(error);
        set_pending(l, CM_ERR_FATAL);
    }
}

static void on_revoke(cm_txloop_t *l, rd_kafka_topic_partition_list_t *parts, bool coop)
{
    bool lost = rd_kafka_assignment_lost(l->consumer);
    bool aborted = false;
    cm_kafka_log_parts(lost ? "partitions lost" : "partitions revoked", parts);
    if (l->txn_open && !l->fatal) {
        if (lost) {
            /* Another member may own them already: nothing of ours may reach
             * the output for them. */
            aborted = true;
            txn_abort(l, false);
        } else {
            txn_commit(l);
        }
    }
    if (l->cb.on_revoke)
        l->cb.on_revoke(l, parts, lost, l->opaque);
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (coop)
        error = rd_kafka_incremental_unassign(l->consumer, parts);
    else
        aerr = rd_kafka_assign(l->consumer, NULL);
    if (error || aerr) {
        cm_log_error("kafka unassign failed", "error", "%s",
                     error ? rd_kafka_error_string(error) : rd_kafka_err2str(aerr), NULL);
        if (error)
            rd_kafka_error_destroy(error);
        set_pending(l, CM_ERR_FATAL);
    }
    cm_guard_remove(&l->guard, parts);
    /* The partitions that stay had their share of the aborted transaction. */
    if (aborted && !l->fatal)
        rewind_and_notify(l);
}

static void txloop_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    cm_txloop_t *l = opaque;
    bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    CM_ATOMIC_ADD(&l->st.rebalances, 1);
    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        l->ever_assigned = true;
        on_assign(l, parts, coop);
        break;
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS: on_revoke(l, parts, coop); break;
    default:
        cm_log_error("kafka rebalance failed", "error", "%s", rd_kafka_err2name(err), NULL);
        if (l->txn_open)
            txn_abort(l, false);
        rd_kafka_assign(rk, NULL);
        set_pending(l, CM_ERR_KAFKA);
        break;
    }
    update_assigned(l, err, parts, coop);
}

static void txloop_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    cm_txloop_t *l = opaque;
    (void)rk;
    /* A failed record makes the transaction abortable; librdkafka reports
     * that at commit. Records purged by an abort are expected: not logged.
     * Other failures: one line per transaction, for the operator. */
    if (!m->err || m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
        m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)
        return;
    if (l->txn_dr_failed++ == 0)
        cm_log_warn("kafka transactional delivery failed", "topic", "%s",
                    m->rkt ? rd_kafka_topic_name(m->rkt) : "", "error", "%s",
                    rd_kafka_err2name(m->err), NULL);
}

/* ------------------------------------------------------------------------ */

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

cm_txloop_t *cm_txloop_new(const cm_txloop_opts_t *o, char *errstr, size_t errstr_size)
{
    char group_restore[512], ttimeout[32], stimeout[32];
    if (!o || !o->group_id || !*o->group_id || !o->topics || o->topic_count == 0 ||
        !o->transactional_id || !*o->transactional_id || !o->cb.process) {
        snprintf(errstr, errstr_size,
                 "kafka txloop: group id, topics, transactional id and process are required");
        return NULL;
    }
    cm_txloop_t *l = calloc(1, sizeof(*l));
    if (!l) {
        snprintf(errstr, errstr_size, "kafka txloop: out of memory");
        return NULL;
    }
    l->st.consumer_lag = -1;
    l->cb = o->cb;
    l->opaque = o->opaque;
    l->commit_interval_ms = o->commit_interval_ms > 0 ? o->commit_interval_ms : 100;
    l->commit_max_msgs = o->commit_max_msgs > 0 ? o->commit_max_msgs : 10000;
    l->tick_interval_ms = o->tick_interval_ms > 0 ? o->tick_interval_ms : 100;
    l->shutdown_timeout_ms = o->shutdown_timeout_ms > 0 ? o->shutdown_timeout_ms : 5000;
    l->stop_flag = o->stop_flag;
    l->should_stop = o->should_stop;
    l->deadline_ms = INT64_MAX;
    l->txn_offsets = rd_kafka_topic_partition_list_new(16);
    cm_guard_init(&l->guard);
    l->txn_id = xstrdup(o->transactional_id);
    l->topics = calloc(o->topic_count, sizeof(char *));
    if (!l->txn_id || !l->topics)
        goto nomem;
    l->topic_count = o->topic_count;
    for (size_t i = 0; i < o->topic_count; i++) {
        if (!o->topics[i] || !*o->topics[i]) {
            snprintf(errstr, errstr_size, "kafka txloop: empty topic name");
            goto fail;
        }
        if (!(l->topics[i] = strdup(o->topics[i])))
            goto nomem;
    }
    const char *reset = cm_passthrough_get(o->pt, "auto.offset.reset");
    l->reset_offset = reset && (!strcasecmp(reset, "latest") || !strcasecmp(reset, "largest") ||
                                !strcasecmp(reset, "end"))
                          ? RD_KAFKA_OFFSET_END
                          : RD_KAFKA_OFFSET_BEGINNING;

    /* The consumer. */
    snprintf(stimeout, sizeof(stimeout), "%d",
             o->session_timeout_ms > 0 ? o->session_timeout_ms : 10000);
    const cm_kprop_t c_defaults[] = {
        {"partition.assignment.strategy", "cooperative-sticky"},
        {"auto.offset.reset", "earliest"},
        {"session.timeout.ms", stimeout},
        {"enable.auto.offset.store", "false"},
        {NULL, NULL},
    };
    const cm_kprop_t c_forced[] = {
        {"group.id", o->group_id},
        {"enable.auto.commit", "false"},
        {"isolation.level", "read_committed"},
        {"enable.partition.eof", "false"},
        {NULL, NULL},
    };
    rd_kafka_conf_t *conf = cm_kafka_conf_build(o->bootstrap, o->client_id, c_defaults, o->pt,
                                                c_forced, errstr, errstr_size);
    if (!conf)
        goto fail;
    rd_kafka_conf_set_opaque(conf, l);
    rd_kafka_conf_set_rebalance_cb(conf, txloop_rebalance_cb);
    l->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errstr_size);
    if (!l->consumer) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd_kafka_poll_set_consumer(l->consumer);

    /* The restore consumer: never subscribes, never commits. */
    snprintf(group_restore, sizeof(group_restore), "%s.restore", o->group_id);
    /* A restore ends on the partition-EOF event, which comes with the fetch
     * that finds nothing more: a short broker wait makes that fetch quick. */
    const cm_kprop_t r_defaults[] = {
        {"auto.offset.reset", "earliest"},
        {"fetch.wait.max.ms", "50"},
        {NULL, NULL},
    };
    const cm_kprop_t r_forced[] = {
        {"group.id", group_restore},
        {"enable.auto.commit", "false"},
        {"isolation.level", "read_committed"},
        {"enable.partition.eof", "true"},
        {NULL, NULL},
    };
    l->restore_conf = cm_kafka_conf_build(o->bootstrap, o->client_id, r_defaults, o->pt, r_forced,
                                          errstr, errstr_size);
    if (!l->restore_conf)
        goto fail;

    /* The transactional producer. */
    snprintf(ttimeout, sizeof(ttimeout), "%d",
             o->transaction_timeout_ms > 0 ? o->transaction_timeout_ms : 30000);
    const cm_kprop_t p_defaults[] = {
        {"acks", "all"},
        {"compression.type", "lz4"},
        {"linger.ms", "5"},
        {"batch.size", "1048576"},
        {"partitioner", "murmur2_random"},
        {"transaction.timeout.ms", ttimeout},
        {NULL, NULL},
    };
    const cm_kprop_t p_forced[] = {
        {"transactional.id", o->transactional_id},
        {"enable.idempotence", "true"},
        /* Only for cm_txloop_restore's watermark query: the true HW. */
        {"isolation.level", "read_uncommitted"},
        {NULL, NULL},
    };
    conf = cm_kafka_conf_build(o->bootstrap, o->client_id, p_defaults, o->pt, p_forced, errstr,
                               errstr_size);
    if (!conf)
        goto fail;
    rd_kafka_conf_set_opaque(conf, l);
    rd_kafka_conf_set_dr_msg_cb(conf, txloop_dr_cb);
    l->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size);
    if (!l->producer) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    /* Fences an older instance with our id and ends its open transaction. */
    int64_t deadline = cm_mono_ms() + 30000;
    for (;;) {
        rd_kafka_error_t *error = rd_kafka_init_transactions(l->producer, 10000);
        if (!error)
            break;
        bool retry = rd_kafka_error_is_retriable(error) && cm_mono_ms() < deadline;
        snprintf(errstr, errstr_size, "kafka init_transactions: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        if (!retry)
            goto fail;
        cm_log_warn("kafka init_transactions retry", "reason", "%s", errstr, NULL);
    }
    cm_log_info("kafka transactional loop ready", "transactional_id", "%s", l->txn_id, "group",
                "%s", o->group_id, NULL);
    return l;
nomem:
    snprintf(errstr, errstr_size, "kafka txloop: out of memory");
fail:
    l->fatal = true; /* nothing to abort in destroy */
    cm_txloop_destroy(l);
    return NULL;
}

static void handle_message(cm_txloop_t *l, rd_kafka_message_t *m)
{
    if (m->err) {
        if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
            cm_kafka_log_error(l->consumer, m->err, NULL);
            set_pending(l, CM_ERR_FATAL);
        } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            cm_log_warn("kafka consume error", "error", "%s", rd_kafka_err2name(m->err), "reason",
                        "%s", rd_kafka_message_errstr(m), NULL);
        }
        return;
    }
    /* Exactly-once also needs the input read once: a record the consumer
     * hands out again (librdkafka #4637) must not be processed again. */
    if (!cm_guard_accept(&l->guard, m)) {
        CM_ATOMIC_STORE(&l->st.redelivered_skipped, l->guard.skipped);
        return;
    }
    if (!txn_ensure(l))
        return;
    cm_err_t err = l->cb.process(l, m, l->opaque);
    const char *topic = rd_kafka_topic_name(m->rkt);
    rd_kafka_topic_partition_t *tp =
        rd_kafka_topic_partition_list_find(l->txn_offsets, topic, m->partition);
    if (!tp)
        tp = rd_kafka_topic_partition_list_add(l->txn_offsets, topic, m->partition);
    tp->offset = m->offset + 1;
    l->txn_msgs++;
    CM_ATOMIC_ADD(&l->st.msgs_in, 1);
    if (err == CM_ERR_RETRY) {
        txn_abort(l, true);
    } else if (err) {
        cm_log_error("process failed", "error", "%s", cm_err_str(err), "topic", "%s", topic,
                     "partition", "%d", (int)m->partition, "offset", "%ld", (long)m->offset, NULL);
        set_pending(l, err);
    }
}

static int poll_timeout(const cm_txloop_t *l, int64_t now, int64_t next_tick)
{
    int64_t t = next_tick - now;
    if (l->txn_open) {
        int64_t c = l->txn_start_ms + l->commit_interval_ms - now;
        if (c < t)
            t = c;
    }
    if (t > 100)
        t = 100;
    return t < 0 ? 0 : (int)t;
}

cm_err_t cm_txloop_run(cm_txloop_t *l)
{
    if (!l || l->ran)
        return CM_ERR_INVALID;
    l->ran = true;
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new((int)l->topic_count);
    for (size_t i = 0; i < l->topic_count; i++)
        rd_kafka_topic_partition_list_add(sub, l->topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t serr = rd_kafka_subscribe(l->consumer, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (serr) {
        cm_log_error("kafka subscribe failed", "error", "%s", rd_kafka_err2str(serr), NULL);
        return CM_ERR_KAFKA;
    }
    CM_ATOMIC_STORE(&l->st.running, true);
    int64_t next_tick = cm_mono_ms() + l->tick_interval_ms;
    while (!l->pending && !stop_requested(l)) {
        int64_t now = cm_mono_ms();
        rd_kafka_message_t *m =
            rd_kafka_consumer_poll(l->consumer, poll_timeout(l, now, next_tick));
        if (m) {
            handle_message(l, m);
            rd_kafka_message_destroy(m);
        }
        rd_kafka_poll(l->producer, 0);
        if (l->pending)
            break;
        now = cm_mono_ms();
        if (now >= next_tick) {
            next_tick = now + l->tick_interval_ms;
            if (l->cb.tick)
                l->cb.tick(l, cm_now_ms(), l->opaque);
            if (l->pending)
                break;
        }
        if (now - l->lag_at >= CM_KAFKA_LAG_INTERVAL_MS) {
            l->lag_at = now;
            CM_ATOMIC_STORE(&l->st.consumer_lag, cm_kafka_lag(l->consumer));
        }
        if (l->txn_open &&
            (l->txn_msgs >= l->commit_max_msgs || now - l->txn_start_ms >= l->commit_interval_ms))
            txn_commit(l);
    }

    /* Shutdown: end the open transaction, then leave the group. */
    if (!l->closing) {
        l->closing = true;
        l->deadline_ms = cm_mono_ms() + l->shutdown_timeout_ms;
    }
    if (l->txn_open && !l->fatal) {
        if (l->pending)
            txn_abort(l, false);
        else
            txn_commit(l);
    }
    cm_err_t rc = l->pending;
    CM_ATOMIC_STORE(&l->st.running, false);
    l->joined = cm_kafka_consumer_joined(l->consumer);
    rd_kafka_resp_err_t cerr = rd_kafka_consumer_close(l->consumer);
    if (cerr)
        cm_log_warn("kafka consumer close", "error", "%s", rd_kafka_err2str(cerr), NULL);
    cm_txloop_stats_t st;
    cm_txloop_get_stats(l, &st);
    cm_log_info("kafka transactional loop stopped", "records_in", "%ld", (long)st.msgs_in,
                "records_out", "%ld", (long)st.msgs_produced, "commits", "%ld", (long)st.commits,
                "aborts", "%ld", (long)st.aborts, "result", "%s", cm_err_str(rc), NULL);
    /* An error raised while closing (e.g. a failed final commit) counts too. */
    return rc ? rc : l->pending;
}

cm_err_t cm_txloop_send(cm_txloop_t *l, const cm_kafka_msg_t *m)
{
    rd_kafka_vu_t vus[CM_KAFKA_VUS_CAP];
    if (!l)
        return CM_ERR_INVALID;
    int n = cm_kafka_msg_vus(m, NULL, vus, CM_KAFKA_VUS_CAP);
    if (n < 0)
        return CM_ERR_INVALID;
    if (l->txn_doomed)
        return CM_ERR_RETRY;
    if (!txn_ensure(l))
        return CM_ERR_FATAL;
    int64_t full_since = 0;
    for (;;) {
        rd_kafka_error_t *error = rd_kafka_produceva(l->producer, vus, (size_t)n);
        if (!error)
            break;
        if (rd_kafka_error_code(error) == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            /* The loop is the only producer of this handle: serving it is
             * all it takes to make room (records time out at the latest
             * after transaction.timeout.ms). A stop does not wait that long. */
            rd_kafka_error_destroy(error);
            int64_t now = cm_mono_ms();
            if (!full_since)
                full_since = now;
            if (stop_requested(l) && now - full_since > l->shutdown_timeout_ms) {
                l->txn_doomed = true;
                return CM_ERR_RETRY;
            }
            rd_kafka_poll(l->producer, 50);
            continue;
        }
        bool fatal = rd_kafka_error_is_fatal(error);
        bool abortable = rd_kafka_error_txn_requires_abort(error);
        rd_kafka_resp_err_t code = rd_kafka_error_code(error);
        cm_log_warn("kafka transactional produce failed", "topic", "%s", m->topic, "error", "%s",
                    rd_kafka_error_name(error), "reason", "%s", rd_kafka_error_string(error), NULL);
        rd_kafka_error_destroy(error);
        if (fatal) {
            set_pending(l, CM_ERR_FATAL);
            return CM_ERR_FATAL;
        }
        if (abortable) {
            l->txn_doomed = true;
            return CM_ERR_RETRY;
        }
        if (code == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ||
            code == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
            code == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC || code == RD_KAFKA_RESP_ERR__INVALID_ARG)
            return CM_ERR_INVALID;
        /* Anything else (e.g. a state error): this transaction cannot be
         * trusted any more. */
        l->txn_doomed = true;
        return CM_ERR_RETRY;
    }
    CM_ATOMIC_ADD(&l->st.msgs_produced, 1);
    return CM_OK;
}

cm_err_t cm_txloop_produce(cm_txloop_t *l, const char *topic, const void *key, size_t key_len,
                           const void *value, size_t value_len, const cm_kafka_header_t *headers,
                           size_t header_count)
{
    cm_kafka_msg_t m = {
        .topic = topic,
        .partition = CM_KAFKA_PARTITION_ANY,
        .key = key,
        .key_len = key_len,
        .value = value,
        .value_len = value_len,
        .headers = headers,
        .header_count = header_count,
    };
    return cm_txloop_send(l, &m);
}

cm_err_t cm_txloop_restore(cm_txloop_t *l, const char *topic, int32_t partition, cm_record_fn *fn,
                           void *opaque, int timeout_ms)
{
    char errstr[512];
    if (!l || !topic || !fn || partition < 0)
        return CM_ERR_INVALID;
    if (!l->restorer) {
        if (!l->restore_conf)
            return CM_ERR_INVALID;
        l->restorer = rd_kafka_new(RD_KAFKA_CONSUMER, l->restore_conf, errstr, sizeof(errstr));
        if (!l->restorer) {
            cm_log_error("kafka restore consumer", "error", "%s", errstr, NULL);
            return CM_ERR_KAFKA;
        }
        l->restore_conf = NULL; /* owned by the handle now */
        rd_kafka_poll_set_consumer(l->restorer);
    }
    int64_t deadline = cm_mono_ms() + (timeout_ms > 0 ? timeout_ms : 60000);
    int64_t lo = 0, hw = 0, lso = 0;
    /*
     * Read to the high watermark as of now, not just to the last stable
     * offset: a transaction of the previous owner can have its input offsets
     * marked committed (our stable offset fetch is done) a moment before its
     * marker reaches this changelog partition. So first wait until every
     * transaction below today's high watermark is decided (LSO >= HW), then
     * read to the end. The producer handle reads watermarks uncommitted (HW),
     * the restore consumer committed (LSO).
     */
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(l->producer, topic, partition, &lo,
                                                               &hw, (int)(deadline - cm_mono_ms()));
    while (!err && hw > lo) {
        err = rd_kafka_query_watermark_offsets(l->restorer, topic, partition, &lo, &lso,
                                               (int)(deadline - cm_mono_ms()));
        if (err || lso >= hw)
            break;
        if (cm_mono_ms() >= deadline) {
            err = RD_KAFKA_RESP_ERR__TIMED_OUT;
            break;
        }
        usleep(50 * 1000);
    }
    if (err) {
        cm_log_error("kafka restore: end offsets unavailable", "topic", "%s", topic, "partition",
                     "%d", (int)partition, "error", "%s", rd_kafka_err2str(err), NULL);
        return err == RD_KAFKA_RESP_ERR__TIMED_OUT ? CM_ERR_TIMEOUT : CM_ERR_KAFKA;
    }
    if (hw <= lo)
        return CM_OK;
    rd_kafka_topic_partition_list_t *a = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(a, topic, partition)->offset = RD_KAFKA_OFFSET_BEGINNING;
    err = rd_kafka_assign(l->restorer, a);
    rd_kafka_topic_partition_list_destroy(a);
    if (err)
        return CM_ERR_KAFKA;
    cm_err_t rc = CM_OK;
    long records = 0;
    for (;;) {
        if (cm_mono_ms() >= deadline) {
            rc = CM_ERR_TIMEOUT;
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(l->restorer, 100);
        if (!m)
            continue;
        bool mine =
            m->rkt && m->partition == partition && strcmp(rd_kafka_topic_name(m->rkt), topic) == 0;
        if (m->err) {
            rd_kafka_resp_err_t merr = m->err;
            if (merr != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                cm_log_warn("kafka restore consume error", "error", "%s", rd_kafka_err2name(merr),
                            "reason", "%s", rd_kafka_message_errstr(m), NULL);
            rd_kafka_message_destroy(m);
            if (merr == RD_KAFKA_RESP_ERR__PARTITION_EOF && mine)
                break;
            if (merr == RD_KAFKA_RESP_ERR__FATAL) {
                rc = CM_ERR_KAFKA;
                break;
            }
            continue;
        }
        if (mine) {
            records++;
            rc = fn(m, opaque);
        }
        rd_kafka_message_destroy(m);
        if (rc)
            break;
    }
    rd_kafka_assign(l->restorer, NULL);
    cm_log_info("state restored", "topic", "%s", topic, "partition", "%d", (int)partition,
                "records", "%ld", records, "result", "%s", cm_err_str(rc), NULL);
    return rc;
}

void cm_txloop_stop(cm_txloop_t *l)
{
    if (l)
        CM_ATOMIC_STORE(&l->stop, 1);
}

void cm_txloop_get_stats(const cm_txloop_t *l, cm_txloop_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!l)
        return;
    out->msgs_in = CM_ATOMIC_LOAD(&l->st.msgs_in);
    out->msgs_produced = CM_ATOMIC_LOAD(&l->st.msgs_produced);
    out->commits = CM_ATOMIC_LOAD(&l->st.commits);
    out->aborts = CM_ATOMIC_LOAD(&l->st.aborts);
    out->rebalances = CM_ATOMIC_LOAD(&l->st.rebalances);
    out->commit_lat_count = CM_ATOMIC_LOAD(&l->st.commit_lat_count);
    out->commit_lat_us_sum = CM_ATOMIC_LOAD(&l->st.commit_lat_us_sum);
    out->commit_lat_us_max = CM_ATOMIC_LOAD(&l->st.commit_lat_us_max);
    for (int i = 0; i < CM_TXLOOP_LAT_BUCKETS; i++)
        out->commit_lat_bucket[i] = CM_ATOMIC_LOAD(&l->st.commit_lat_bucket[i]);
    out->redelivered_skipped = CM_ATOMIC_LOAD(&l->st.redelivered_skipped);
    out->assigned_partitions = CM_ATOMIC_LOAD(&l->st.assigned_partitions);
    out->consumer_lag = CM_ATOMIC_LOAD(&l->st.consumer_lag);
    out->running = CM_ATOMIC_LOAD(&l->st.running);
}

bool cm_txloop_ready(const cm_txloop_t *l)
{
    return l && CM_ATOMIC_LOAD(&l->st.running) && CM_ATOMIC_LOAD(&l->st.assigned_partitions) > 0;
}

rd_kafka_t *cm_txloop_consumer(cm_txloop_t *l)
{
    return l ? l->consumer : NULL;
}
rd_kafka_t *cm_txloop_producer(cm_txloop_t *l)
{
    return l ? l->producer : NULL;
}

void cm_txloop_destroy(cm_txloop_t *l)
{
    if (!l)
        return;
    if (l->producer && l->txn_open && !l->fatal) {
        rd_kafka_error_t *error = rd_kafka_abort_transaction(l->producer, 2000);
        if (error)
            rd_kafka_error_destroy(error);
    }
    if (l->consumer) {
        if (!l->ran)
            rd_kafka_consumer_close(l->consumer); /* never subscribed: never joined */
        cm_kafka_consumer_destroy(l->consumer, l->joined, l->ever_assigned);
    }
    if (l->restorer) {
        rd_kafka_consumer_close(l->restorer);
        rd_kafka_destroy(l->restorer);
    }
    if (l->restore_conf)
        rd_kafka_conf_destroy(l->restore_conf);
    if (l->producer)
        rd_kafka_destroy(l->producer);
    if (l->txn_offsets)
        rd_kafka_topic_partition_list_destroy(l->txn_offsets);
    cm_guard_free(&l->guard);
    for (size_t i = 0; l->topics && i < l->topic_count; i++)
        free(l->topics[i]);
    free(l->topics);
    free(l->txn_id);
    free(l);
}
