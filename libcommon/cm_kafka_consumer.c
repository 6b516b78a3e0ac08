/*
 * cm_kafka_consumer.c: a group consumer whose offsets the app manages (the
 * lake-writer keeps them in its table snapshots and seeks on assignment).
 */
#include "cm_kafka_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_time.h"

struct cm_consumer {
    rd_kafka_t *rk;
    cm_rebalance_fn *on_rebalance;
    void *opaque;
    int assigned; /* atomic */
    int64_t lag;  /* atomic; cm_kafka_lag() */
    int64_t lag_at;
    bool ever_assigned;
    cm_offset_guard_t guard; /* drops records delivered twice (librdkafka #4637) */
};

/*
 * Keeps the assigned-partition count from the rebalance events themselves:
 * rd_kafka_assignment() inside the rebalance callback that
 * rd_kafka_consumer_close() triggers can deadlock in librdkafka 2.0.2.
 */
static void update_assigned(cm_consumer_t *c, rd_kafka_resp_err_t err,
                            const rd_kafka_topic_partition_list_t *parts, bool coop)
{
    int cur = CM_ATOMIC_LOAD(&c->assigned);
    int n = parts ? parts->cnt : 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
        cur = coop ? cur + n : n;
    else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        cur = coop ? (cur > n ? cur - n : 0) : 0;
    else
        cur = 0;
    CM_ATOMIC_STORE(&c->assigned, cur);
}

static void consumer_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                  rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    cm_consumer_t *c = opaque;
    bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;

    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        cm_kafka_log_parts("partitions assigned", parts);
        c->ever_assigned = true;
        if (c->on_rebalance)
            c->on_rebalance(c, CM_REBALANCE_ASSIGN, parts, c->opaque);
        for (int i = 0; i < parts->cnt; i++)
            cm_guard_set(&c->guard, parts->elems[i].topic, parts->elems[i].partition,
                         parts->elems[i].offset);
        if (coop)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, parts);
        break;
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS: {
        bool lost = rd_kafka_assignment_lost(rk);
        cm_kafka_log_parts(lost ? "partitions lost" : "partitions revoked", parts);
        if (c->on_rebalance)
            c->on_rebalance(c, lost ? CM_REBALANCE_LOST : CM_REBALANCE_REVOKE, parts, c->opaque);
        if (coop)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, NULL);
        cm_guard_remove(&c->guard, parts);
        break;
    }
    default:
        cm_log_error("kafka rebalance failed", "error", "%s", rd_kafka_err2name(err), NULL);
        aerr = rd_kafka_assign(rk, NULL);
        break;
    }
    if (error) {
        cm_log_error("kafka assign failed", "error", "%s", rd_kafka_error_string(error), NULL);
        rd_kafka_error_destroy(error);
    } else if (aerr) {
        cm_log_error("kafka assign failed", "error", "%s", rd_kafka_err2str(aerr), NULL);
    }
    update_assigned(c, err, parts, coop);
}

static rd_kafka_topic_partition_list_t *topic_list(const char *const *topics, size_t n)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, topics[i], RD_KAFKA_PARTITION_UA);
    return l;
}

cm_consumer_t *cm_consumer_new(const cm_consumer_opts_t *o, char *errstr, size_t errstr_size)
{
    if (!o || !o->group_id || !*o->group_id || !o->topics || o->topic_count == 0) {
        snprintf(errstr, errstr_size, "kafka consumer: a group id and topics are required");
        return NULL;
    }
    for (size_t i = 0; i < o->topic_count; i++) {
        if (!o->topics[i] || !*o->topics[i]) {
            snprintf(errstr, errstr_size, "kafka consumer: empty topic name");
            return NULL;
        }
    }
    cm_consumer_t *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(errstr, errstr_size, "kafka consumer: out of memory");
        return NULL;
    }
    c->lag = -1;
    c->on_rebalance = o->on_rebalance;
    c->opaque = o->opaque;
    cm_guard_init(&c->guard);
    const cm_kprop_t defaults[] = {
        {"partition.assignment.strategy", "cooperative-sticky"},
        {"auto.offset.reset", o->auto_offset_reset ? o->auto_offset_reset : "earliest"},
        {"enable.auto.offset.store", "false"},
        {NULL, NULL},
    };
    const cm_kprop_t forced[] = {
        {"group.id", o->group_id},
        {"enable.auto.commit", "false"},
        {"isolation.level", "read_committed"},
        {NULL, NULL},
    };
    rd_kafka_conf_t *conf = cm_kafka_conf_build(o->bootstrap, o->client_id, defaults, o->pt, forced,
                                                errstr, errstr_size);
    if (!conf)
        goto fail;
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, consumer_rebalance_cb);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errstr_size);
    if (!c->rk) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd_kafka_poll_set_consumer(c->rk);
    rd_kafka_topic_partition_list_t *sub = topic_list(o->topics, o->topic_count);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(c->rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (err) {
        snprintf(errstr, errstr_size, "kafka consumer: subscribe: %s", rd_kafka_err2str(err));
        goto fail;
    }
    return c;
fail:
    cm_consumer_destroy(c);
    return NULL;
}

cm_err_t cm_consumer_poll(cm_consumer_t *c, int timeout_ms, rd_kafka_message_t **out)
{
    *out = NULL;
    if (!c)
        return CM_ERR_INVALID;
    int64_t now = cm_mono_ms();
    if (now - c->lag_at >= CM_KAFKA_LAG_INTERVAL_MS) {
        c->lag_at = now;
        CM_ATOMIC_STORE(&c->lag, cm_kafka_lag(c->rk));
    }
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout_ms);
    if (!m)
        return CM_OK;
    if (!m->err) {
        if (!cm_guard_accept(&c->guard, m)) {
            rd_kafka_message_destroy(m); /* already delivered once */
            return CM_OK;
        }
        *out = m;
        return CM_OK;
    }
    rd_kafka_resp_err_t err = m->err;
    if (err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
        cm_log_warn("kafka consume error", "error", "%s", rd_kafka_err2name(err), "reason", "%s",
                    rd_kafka_message_errstr(m), "topic", "%s",
                    m->rkt ? rd_kafka_topic_name(m->rkt) : "", NULL);
    rd_kafka_message_destroy(m);
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        cm_kafka_log_error(c->rk, err, NULL);
        return CM_ERR_FATAL;
    }
    return CM_OK;
}

cm_err_t cm_consumer_commit(cm_consumer_t *c, const rd_kafka_topic_partition_list_t *offsets,
                            bool async)
{
    if (!c || !offsets)
        return CM_ERR_INVALID;
    rd_kafka_resp_err_t err = rd_kafka_commit(c->rk, offsets, async ? 1 : 0);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        cm_log_warn("kafka commit failed", "error", "%s", rd_kafka_err2str(err), NULL);
        return err == RD_KAFKA_RESP_ERR__FATAL ? CM_ERR_FATAL : CM_ERR_KAFKA;
    }
    return CM_OK;
}

cm_err_t cm_consumer_seek(cm_consumer_t *c, const char *topic, int32_t partition, int64_t offset,
                          int timeout_ms)
{
    if (!c || !topic)
        return CM_ERR_INVALID;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = offset;
    rd_kafka_error_t *error = rd_kafka_seek_partitions(c->rk, l, timeout_ms);
    cm_err_t rc = CM_OK;
    if (error) {
        cm_log_warn("kafka seek failed", "error", "%s", rd_kafka_error_string(error), NULL);
        rd_kafka_error_destroy(error);
        rc = CM_ERR_KAFKA;
    } else if (l->elems[0].err) {
        cm_log_warn("kafka seek failed", "topic", "%s", topic, "partition", "%d", (int)partition,
                    "error", "%s", rd_kafka_err2str(l->elems[0].err), NULL);
        rc = CM_ERR_KAFKA;
    } else {
        cm_guard_set(&c->guard, topic, partition, offset);
    }
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

int cm_consumer_assigned_count(const cm_consumer_t *c)
{
    return c ? CM_ATOMIC_LOAD(&c->assigned) : 0;
}

int64_t cm_consumer_lag(const cm_consumer_t *c)
{
    return c ? CM_ATOMIC_LOAD(&c->lag) : -1;
}

rd_kafka_t *cm_consumer_handle(cm_consumer_t *c)
{
    return c ? c->rk : NULL;
}

void cm_consumer_destroy(cm_consumer_t *c)
{
    if (!c)
        return;
    if (c->rk) {
        bool joined = cm_kafka_consumer_joined(c->rk);
        rd_kafka_consumer_close(c->rk);
        cm_kafka_consumer_destroy(c->rk, joined, c->ever_assigned);
    }
    cm_guard_free(&c->guard);
    free(c);
}
