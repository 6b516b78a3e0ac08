/*
 * cm_kafka.c: configuration and the pieces every Kafka client of libcommon
 * shares (logging, record building). The clients are in cm_kafka_producer.c,
 * cm_kafka_consumer.c and cm_kafka_txloop.c.
 */
#include "cm_kafka_int.h"

#include <stdio.h>
#include <string.h>

#include "cm_log.h"

/* librdkafka logs with syslog levels (0 emerg .. 7 debug). */
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    cm_log_level_t lvl = level <= 3   ? CM_LOG_ERROR
                         : level == 4 ? CM_LOG_WARN
                         : level <= 6 ? CM_LOG_INFO
                                      : CM_LOG_DEBUG;
    /* The pass-through goes to every client of a service; librdkafka's note
     * that a consumer property is ignored by a producer is expected noise. */
    if (fac && strcmp(fac, "CONFWARN") == 0 && buf && strstr(buf, "will be ignored by this"))
        lvl = CM_LOG_DEBUG;
    cm_log(lvl, "kafka log", "client", "%s", rk ? rd_kafka_name(rk) : "", "fac", "%s",
           fac ? fac : "", "detail", "%s", buf ? buf : "", NULL);
}

void cm_kafka_log_error(rd_kafka_t *rk, int err, const char *reason)
{
    /* Most error events are transient (a broker connection dropped) and
     * librdkafka retries by itself: a warning. Fatal ones are errors. */
    cm_log_level_t lvl = err == RD_KAFKA_RESP_ERR__FATAL ? CM_LOG_ERROR : CM_LOG_WARN;
    if (err == RD_KAFKA_RESP_ERR__FATAL && rk) {
        char fstr[512];
        rd_kafka_resp_err_t ferr = rd_kafka_fatal_error(rk, fstr, sizeof(fstr));
        cm_log(lvl, "kafka fatal error", "client", "%s", rd_kafka_name(rk), "error", "%s",
               rd_kafka_err2name(ferr), "reason", "%s", fstr, NULL);
        return;
    }
    cm_log(lvl, "kafka error", "client", "%s", rk ? rd_kafka_name(rk) : "", "error", "%s",
           rd_kafka_err2name((rd_kafka_resp_err_t)err), "reason", "%s", reason ? reason : "", NULL);
}

static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    cm_kafka_log_error(rk, err, reason);
}

static bool set_prop(rd_kafka_conf_t *conf, const char *key, const char *value, char *errstr,
                     size_t errstr_size)
{
    char why[512];
    if (rd_kafka_conf_set(conf, key, value, why, sizeof(why)) == RD_KAFKA_CONF_OK)
        return true;
    /* The value is left out on purpose: it may be a password. */
    snprintf(errstr, errstr_size, "kafka property \"%s\": %s", key, why);
    return false;
}

static bool is_forced(const cm_kprop_t *forced, const char *key)
{
    for (const cm_kprop_t *f = forced; f && f->key; f++)
        if (strcmp(f->key, key) == 0)
            return true;
    return false;
}

rd_kafka_conf_t *cm_kafka_conf_build(const char *bootstrap, const char *client_id,
                                     const cm_kprop_t *defaults, const cm_passthrough_t *pt,
                                     const cm_kprop_t *forced, char *errstr, size_t errstr_size)
{
    if (!bootstrap || !*bootstrap) {
        snprintf(errstr, errstr_size, "kafka: no bootstrap servers given");
        return NULL;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!set_prop(conf, "bootstrap.servers", bootstrap, errstr, errstr_size) ||
        !set_prop(conf, "client.id", client_id && *client_id ? client_id : "clickstream", errstr,
                  errstr_size))
        goto fail;
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
    for (const cm_kprop_t *d = defaults; d && d->key; d++)
        if (!set_prop(conf, d->key, d->value, errstr, errstr_size))
            goto fail;
    for (size_t i = 0; pt && i < pt->count; i++) {
        const cm_kv_t *kv = &pt->items[i];
        if (!kv->key || !kv->value)
            continue;
        if (is_forced(forced, kv->key)) {
            cm_log_warn("kafka property overridden", "property", "%s", kv->key, "reason", "%s",
                        "this client cannot work without its own value", NULL);
            continue;
        }
        if (!set_prop(conf, kv->key, kv->value, errstr, errstr_size))
            goto fail;
    }
    for (const cm_kprop_t *f = forced; f && f->key; f++)
        if (!set_prop(conf, f->key, f->value, errstr, errstr_size))
            goto fail;
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_conf_t *cm_kafka_conf_new(const char *bootstrap, const cm_passthrough_t *pt, char *errstr,
                                   size_t errstr_size)
{
    return cm_kafka_conf_build(bootstrap, NULL, NULL, pt, NULL, errstr, errstr_size);
}

int cm_kafka_msg_vus(const cm_kafka_msg_t *m, void *msg_opaque, rd_kafka_vu_t *vus, size_t cap)
{
    size_t n = 0;
    if (!m || !m->topic || !*m->topic || m->header_count > CM_KAFKA_MAX_HEADERS ||
        (m->header_count && !m->headers) || cap < m->header_count + 8)
        return -1;
    vus[n].vtype = RD_KAFKA_VTYPE_TOPIC;
    vus[n++].u.cstr = m->topic;
    vus[n].vtype = RD_KAFKA_VTYPE_PARTITION;
    vus[n++].u.i32 = m->partition < 0 ? RD_KAFKA_PARTITION_UA : m->partition;
    /* Copied: the caller's buffers may die as soon as produce returns. */
    vus[n].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
    vus[n++].u.i = RD_KAFKA_MSG_F_COPY;
    if (m->key) {
        vus[n].vtype = RD_KAFKA_VTYPE_KEY;
        vus[n].u.mem.ptr = (void *)m->key;
        vus[n++].u.mem.size = m->key_len;
    }
    if (m->value) {
        vus[n].vtype = RD_KAFKA_VTYPE_VALUE;
        vus[n].u.mem.ptr = (void *)m->value;
        vus[n++].u.mem.size = m->value_len;
    }
    if (m->timestamp_ms > 0) {
        vus[n].vtype = RD_KAFKA_VTYPE_TIMESTAMP;
        vus[n++].u.i64 = m->timestamp_ms;
    }
    for (size_t i = 0; i < m->header_count; i++) {
        const cm_kafka_header_t *h = &m->headers[i];
        if (!h->name || !*h->name)
            return -1;
        vus[n].vtype = RD_KAFKA_VTYPE_HEADER;
        vus[n].u.header.name = h->name;
        vus[n].u.header.val = h->value;
        vus[n++].u.header.size = h->value ? (ssize_t)h->len : 0;
    }
    vus[n].vtype = RD_KAFKA_VTYPE_OPAQUE;
    vus[n++].u.ptr = msg_opaque;
    return (int)n;
}

void cm_kafka_log_parts(const char *msg, const rd_kafka_topic_partition_list_t *parts)
{
    char buf[1024];
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; parts && i < parts->cnt && off < sizeof(buf) - 1; i++) {
        int n = snprintf(buf + off, sizeof(buf) - off, "%s%s[%d]", i ? "," : "",
                         parts->elems[i].topic, (int)parts->elems[i].partition);
        if (n < 0)
            break;
        off += (size_t)n;
    }
    if (off >= sizeof(buf))
        off = sizeof(buf) - 1;
    buf[off] = '\0';
    cm_log_info(msg, "count", "%d", parts ? parts->cnt : 0, "partitions", "%s", buf, NULL);
}

bool cm_kafka_consumer_joined(rd_kafka_t *rk)
{
    char *id = rk ? rd_kafka_memberid(rk) : NULL;
    bool joined = id && *id;
    if (id)
        rd_kafka_mem_free(rk, id);
    return joined;
}

void cm_kafka_consumer_destroy(rd_kafka_t *rk, bool joined, bool ever_assigned)
{
    if (!rk)
        return;
    if (joined && !ever_assigned && rd_kafka_version() < 0x020300ff) {
        cm_log_debug("kafka consumer handle left undestroyed (librdkafka #4312)", NULL);
        return;
    }
    rd_kafka_destroy(rk);
}

int64_t cm_kafka_lag(rd_kafka_t *rk)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    if (!rk || rd_kafka_assignment(rk, &a) || !a)
        return -1;
    int64_t lag = 0;
    if (a->cnt > 0 && !rd_kafka_position(rk, a)) {
        for (int i = 0; i < a->cnt; i++) {
            int64_t lo = -1, hi = -1, pos = a->elems[i].offset;
            if (pos < 0 || rd_kafka_get_watermark_offsets(rk, a->elems[i].topic,
                                                          a->elems[i].partition, &lo, &hi))
                continue;
            if (hi > pos)
                lag += hi - pos;
        }
    }
    rd_kafka_topic_partition_list_destroy(a);
    return lag;
}

void cm_guard_init(cm_offset_guard_t *g)
{
    g->next = rd_kafka_topic_partition_list_new(16);
    g->skipped = 0;
}

void cm_guard_free(cm_offset_guard_t *g)
{
    if (g->next)
        rd_kafka_topic_partition_list_destroy(g->next);
    g->next = NULL;
}

void cm_guard_set(cm_offset_guard_t *g, const char *topic, int32_t partition, int64_t offset)
{
    rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_find(g->next, topic, partition);
    if (!tp)
        tp = rd_kafka_topic_partition_list_add(g->next, topic, partition);
    tp->offset = offset < 0 ? -1 : offset;
}

void cm_guard_remove(cm_offset_guard_t *g, const rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; parts && i < parts->cnt; i++)
        rd_kafka_topic_partition_list_del(g->next, parts->elems[i].topic,
                                          parts->elems[i].partition);
}

bool cm_guard_accept(cm_offset_guard_t *g, const rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    rd_kafka_topic_partition_t *tp =
        rd_kafka_topic_partition_list_find(g->next, topic, m->partition);
    if (tp && tp->offset >= 0 && m->offset < tp->offset) {
        if (g->skipped++ == 0 || g->skipped % 10000 == 0)
            cm_log_warn("kafka record delivered again: dropped", "topic", "%s", topic, "partition",
                        "%d", (int)m->partition, "offset", "%ld", (long)m->offset, "expected",
                        "%ld", (long)tp->offset, "dropped_total", "%ld", (long)g->skipped, NULL);
        return false;
    }
    if (!tp)
        tp = rd_kafka_topic_partition_list_add(g->next, topic, m->partition);
    tp->offset = m->offset + 1;
    return true;
}
