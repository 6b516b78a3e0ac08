/*
 * cm_kafka_producer.c: the idempotent, never-blocking producer.
 *
 * Delivery reports are served by one thread of ours (rd_kafka_poll in a
 * loop) so that a caller such as the HTTP gateway never waits on Kafka. The
 * same thread probes the brokers with a metadata request while they are
 * considered down, which gives /readyz its answer.
 */
#include "cm_kafka_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm_log.h"
#include "cm_time.h"

struct cm_producer {
    rd_kafka_t *rk;
    cm_delivery_fn *on_delivery;
    void *cb_opaque;
    bool manual_poll;
    pthread_t thread;
    bool thread_started;
    int stop;               /* atomic: the poll thread ends */
    int ready;              /* atomic bool */
    int fatal;              /* atomic bool */
    int64_t next_probe;     /* poll thread only: mono ms */
    cm_producer_stats_t st; /* counters updated atomically */
};

static void producer_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    cm_producer_t *p = opaque;
    (void)rk;
    if (m->err) {
        CM_ATOMIC_ADD(&p->st.failed, 1);
    } else {
        CM_ATOMIC_ADD(&p->st.delivered, 1);
        CM_ATOMIC_STORE(&p->ready, 1);
    }
    if (p->on_delivery)
        p->on_delivery(m->_private, m->err ? CM_ERR_KAFKA : CM_OK,
                       m->err ? rd_kafka_err2str(m->err) : "", m->err ? -1 : m->partition,
                       m->err ? -1 : m->offset, p->cb_opaque);
}

static void producer_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    cm_producer_t *p = opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        CM_ATOMIC_STORE(&p->ready, 0);
    if (err == RD_KAFKA_RESP_ERR__FATAL)
        CM_ATOMIC_STORE(&p->fatal, 1);
    cm_kafka_log_error(rk, err, reason);
}

/* A metadata request answered by any broker means "reachable". Only run
 * while not ready: it blocks delivery reports for up to its timeout. */
static void producer_probe(cm_producer_t *p)
{
    int64_t now = cm_mono_ms();
    if (CM_ATOMIC_LOAD(&p->ready) || now < p->next_probe)
        return;
    p->next_probe = now + 1000;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(p->rk, 0, NULL, &md, 500);
    if (!err) {
        if (md->broker_cnt > 0) {
            if (!CM_ATOMIC_LOAD(&p->ready))
                cm_log_info("kafka brokers reachable", "client", "%s", rd_kafka_name(p->rk),
                            "brokers", "%d", md->broker_cnt, NULL);
            CM_ATOMIC_STORE(&p->ready, 1);
        }
        rd_kafka_metadata_destroy(md);
    }
}

static void *producer_thread(void *arg)
{
    cm_producer_t *p = arg;
    while (!CM_ATOMIC_LOAD(&p->stop)) {
        rd_kafka_poll(p->rk, 100);
        producer_probe(p);
    }
    return NULL;
}

cm_producer_t *cm_producer_new(const cm_producer_opts_t *o, char *errstr, size_t errstr_size)
{
    char linger[32], qmsgs[32], qkb[32], dto[32];
    if (!o) {
        snprintf(errstr, errstr_size, "kafka producer: no options");
        return NULL;
    }
    cm_producer_t *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(errstr, errstr_size, "kafka producer: out of memory");
        return NULL;
    }
    p->on_delivery = o->on_delivery;
    p->cb_opaque = o->cb_opaque;
    p->manual_poll = o->manual_poll;
    snprintf(linger, sizeof(linger), "%d", o->linger_ms > 0 ? o->linger_ms : 5);
    snprintf(qmsgs, sizeof(qmsgs), "%d", o->queue_max_msgs > 0 ? o->queue_max_msgs : 100000);
    snprintf(qkb, sizeof(qkb), "%d", o->queue_max_kbytes > 0 ? o->queue_max_kbytes : 262144);
    snprintf(dto, sizeof(dto), "%d", o->delivery_timeout_ms > 0 ? o->delivery_timeout_ms : 120000);
    const cm_kprop_t defaults[] = {
        {"acks", "all"},
        {"compression.type", "lz4"},
        {"linger.ms", linger},
        {"batch.size", "1048576"},
        {"queue.buffering.max.messages", qmsgs},
        {"queue.buffering.max.kbytes", qkb},
        {"delivery.timeout.ms", dto},
        /* Java's default partitioner: murmur2 of the key, so JVM clients and
         * ours put a key in the same partition. */
        {"partitioner", "murmur2_random"},
        {NULL, NULL},
    };
    const cm_kprop_t forced[] = {{"enable.idempotence", "true"}, {NULL, NULL}};
    rd_kafka_conf_t *conf = cm_kafka_conf_build(o->bootstrap, o->client_id, defaults, o->pt, forced,
                                                errstr, errstr_size);
    if (!conf)
        goto fail;
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, producer_dr_cb);
    rd_kafka_conf_set_error_cb(conf, producer_error_cb);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size);
    if (!p->rk) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    if (!p->manual_poll) {
        if (pthread_create(&p->thread, NULL, producer_thread, p) != 0) {
            snprintf(errstr, errstr_size, "kafka producer: cannot start the poll thread");
            goto fail;
        }
        p->thread_started = true;
    }
    return p;
fail:
    cm_producer_destroy(p, 0);
    return NULL;
}

cm_err_t cm_producer_send(cm_producer_t *p, const cm_kafka_msg_t *m, void *msg_opaque)
{
    rd_kafka_vu_t vus[CM_KAFKA_VUS_CAP];
    if (!p)
        return CM_ERR_INVALID;
    int n = cm_kafka_msg_vus(m, msg_opaque, vus, CM_KAFKA_VUS_CAP);
    if (n < 0)
        return CM_ERR_INVALID;
    rd_kafka_error_t *error = rd_kafka_produceva(p->rk, vus, (size_t)n);
    if (!error) {
        CM_ATOMIC_ADD(&p->st.queued, 1);
        return CM_OK;
    }
    rd_kafka_resp_err_t err = rd_kafka_error_code(error);
    bool fatal = rd_kafka_error_is_fatal(error);
    rd_kafka_error_destroy(error);
    switch (err) {
    case RD_KAFKA_RESP_ERR__QUEUE_FULL: CM_ATOMIC_ADD(&p->st.queue_full, 1); return CM_ERR_RETRY;
    case RD_KAFKA_RESP_ERR__FATAL: CM_ATOMIC_STORE(&p->fatal, 1); return CM_ERR_FATAL;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR__CONFLICT: return CM_ERR_INVALID;
    default: return fatal ? CM_ERR_FATAL : CM_ERR_KAFKA;
    }
}

cm_err_t cm_producer_produce(cm_producer_t *p, const char *topic, const void *key, size_t key_len,
                             const void *value, size_t value_len, const cm_kafka_header_t *headers,
                             size_t header_count, void *msg_opaque)
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
    return cm_producer_send(p, &m, msg_opaque);
}

int cm_producer_poll(cm_producer_t *p, int timeout_ms)
{
    if (!p || !p->manual_poll)
        return 0;
    int n = rd_kafka_poll(p->rk, timeout_ms);
    producer_probe(p);
    return n;
}

cm_err_t cm_producer_flush(cm_producer_t *p, int timeout_ms)
{
    if (!p)
        return CM_OK;
    if (p->manual_poll)
        return rd_kafka_flush(p->rk, timeout_ms) ? CM_ERR_TIMEOUT : CM_OK;
    /* Wait for the poll thread to drain the queue instead of polling here:
     * delivery callbacks then always run on that one thread. */
    int64_t deadline = cm_mono_ms() + timeout_ms;
    while (rd_kafka_outq_len(p->rk) > 0) {
        if (cm_mono_ms() >= deadline)
            return CM_ERR_TIMEOUT;
        usleep(2000);
    }
    return CM_OK;
}

int cm_producer_queue_len(const cm_producer_t *p)
{
    return p ? rd_kafka_outq_len(p->rk) : 0;
}

bool cm_producer_ready(const cm_producer_t *p)
{
    return p && CM_ATOMIC_LOAD(&p->ready) && !CM_ATOMIC_LOAD(&p->fatal);
}

void cm_producer_get_stats(const cm_producer_t *p, cm_producer_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!p)
        return;
    out->queued = CM_ATOMIC_LOAD(&p->st.queued);
    out->delivered = CM_ATOMIC_LOAD(&p->st.delivered);
    out->failed = CM_ATOMIC_LOAD(&p->st.failed);
    out->queue_full = CM_ATOMIC_LOAD(&p->st.queue_full);
    out->queue_len = cm_producer_queue_len(p);
    out->ready = cm_producer_ready(p);
}

rd_kafka_t *cm_producer_handle(cm_producer_t *p)
{
    return p ? p->rk : NULL;
}

void cm_producer_destroy(cm_producer_t *p, int timeout_ms)
{
    if (!p)
        return;
    if (p->rk) {
        if (cm_producer_flush(p, timeout_ms > 0 ? timeout_ms : 0) != CM_OK) {
            /* Whatever is left gets a failed delivery report, so every
             * accepted record is still reported exactly once. */
            int left = rd_kafka_outq_len(p->rk);
            cm_log_warn("kafka producer closing with records undelivered", "records", "%d", left,
                        NULL);
            rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            cm_producer_flush(p, 2000);
        }
    }
    if (p->thread_started) {
        CM_ATOMIC_STORE(&p->stop, 1);
        pthread_join(p->thread, NULL);
    }
    if (p->rk) {
        if (p->manual_poll)
            rd_kafka_poll(p->rk, 0);
        rd_kafka_destroy(p->rk);
    }
    free(p);
}
