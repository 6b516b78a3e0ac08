/*
 * lake_loop.c: consumer loop of the lake-writer (see lake_loop.h).
 */
#include "lake_loop.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm_avro.h"
#include "cm_kafka.h"
#include "cm_log.h"
#include "cm_registry.h"
#include "cm_signal.h"
#include "cm_time.h"
#include "lake_avrofile.h"
#include "lake_storage.h"
#include "lake_table.h"

#define LW_MAX_TABLES 8
#define LW_MAX_TOPICS 4
#define LW_POLL_MS 100
#define LW_COMMIT_RETRY_MS 1000

typedef struct lw_topic {
    const char *name;
    lw_source_t source;
    lw_table_t *tables[LW_MAX_TABLES]; /* the tables fed by this topic */
    size_t n_tables;
    cm_counter_t *undecodable;
    cm_counter_t *records;
} lw_topic_t;

typedef struct lw_tmetrics {
    cm_counter_t *rows;
    cm_counter_t *write_errors;
    cm_histogram_t *commit_seconds;
    cm_histogram_t *files_per_commit;
    uint64_t seen_commits;
} lw_tmetrics_t;

struct lw_loop {
    const lw_config_t *cfg;
    cm_metrics_t *reg;
    lw_storage_t *st;
    cm_registry_t *registry;
    cm_consumer_t *consumer;
    lw_table_t *tables[LW_MAX_TABLES];
    lw_tmetrics_t tm[LW_MAX_TABLES];
    size_t n_tables;
    lw_topic_t topics[LW_MAX_TOPICS];
    size_t n_topics;
    bool need_reseek;
    bool stalled;           /* a commit failed: stop reading until it succeeds */
    int64_t retry_at_ms;
    _Atomic int assigned;
    cm_event_t ev;
    cm_session_t session;
    cm_window_result_t window;
    uint64_t undecodable_logged;
};

/* ---------------------------------------------------------------- metrics */

#define STAT_FN(field)                                                                 \
    static double stat_##field(void *ud)                                               \
    {                                                                                  \
        lw_table_stats_t s;                                                            \
        lw_table_get_stats(ud, &s);                                                    \
        return (double)s.field;                                                        \
    }
STAT_FN(rows_committed)
STAT_FN(bytes)
STAT_FN(commits)
STAT_FN(commit_conflicts)
STAT_FN(commit_failures)
STAT_FN(files_committed)
STAT_FN(version)

static double storage_errors(void *ud)
{
    lw_storage_stats_t s;
    lw_storage_get_stats(ud, &s);
    return (double)s.errors;
}

static double storage_bytes(void *ud)
{
    lw_storage_stats_t s;
    lw_storage_get_stats(ud, &s);
    return (double)s.bytes_out;
}

static double stat_lag(void *ud)
{
    return (double)cm_consumer_lag(((lw_loop_t *)ud)->consumer);
}

static void register_metrics(lw_loop_t *l)
{
    static const double files_b[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
    static const double secs_b[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                    0.25,  0.5,    1,     2.5,  5,     10};
    cm_metrics_t *r = l->reg;
    for (size_t i = 0; i < l->n_tables; i++) {
        lw_table_t *t = l->tables[i];
        const char *n = lw_table_def(t)->name;
        l->tm[i].rows = cm_metrics_counter(r, "lake_rows_written_total",
                                           "rows appended to data files (committed or not)",
                                           "table", n, NULL);
        l->tm[i].write_errors = cm_metrics_counter(
            r, "lake_write_errors_total",
            "rows that could not be written to a data file (disk full...): the batch is "
            "dropped and read again",
            "table", n, NULL);
        cm_metrics_counter_fn(r, "lake_rows_committed_total", "rows in committed snapshots",
                              stat_rows_committed, t, "table", n, NULL);
        cm_metrics_counter_fn(r, "lake_bytes_committed_total",
                              "data file bytes in committed snapshots", stat_bytes, t, "table",
                              n, NULL);
        cm_metrics_counter_fn(r, "lake_commits_total", "snapshots committed", stat_commits, t,
                              "table", n, NULL);
        cm_metrics_counter_fn(r, "lake_commit_conflicts_total",
                              "commits that met a newer metadata version and were rebased",
                              stat_commit_conflicts, t, "table", n, NULL);
        cm_metrics_counter_fn(r, "lake_commit_failures_total",
                              "commits that failed (retried)", stat_commit_failures, t,
                              "table", n, NULL);
        cm_metrics_counter_fn(r, "lake_files_committed_total", "data files committed",
                              stat_files_committed, t, "table", n, NULL);
        cm_metrics_gauge_fn(r, "lake_metadata_version", "current vN.metadata.json",
                            stat_version, t, "table", n, NULL);
        l->tm[i].commit_seconds = cm_metrics_histogram(
            r, "lake_commit_seconds", "latency of a commit (close files to metadata published)",
            secs_b, sizeof(secs_b) / sizeof(secs_b[0]), "table", n, NULL);
        l->tm[i].files_per_commit =
            cm_metrics_histogram(r, "lake_files_per_commit", "data files added by a commit",
                                 files_b, sizeof(files_b) / sizeof(files_b[0]), "table", n, NULL);
    }
    cm_metrics_gauge_fn(r, "lake_consumer_lag_records",
                        "input records not yet read (end offsets - positions; -1: not yet known)",
                        stat_lag, l, NULL);
    for (size_t i = 0; i < l->n_topics; i++) {
        l->topics[i].undecodable =
            cm_metrics_counter(r, "lake_undecodable_total",
                               "records that could not be decoded (skipped; late: kept raw)",
                               "topic", l->topics[i].name, NULL);
        l->topics[i].records = cm_metrics_counter(r, "lake_records_total",
                                                  "Kafka records consumed", "topic",
                                                  l->topics[i].name, NULL);
    }
    cm_metrics_counter_fn(r, "lake_storage_errors_total", "failed storage operations",
                          storage_errors, l->st, NULL);
    cm_metrics_counter_fn(r, "lake_storage_bytes_written_total", "bytes written to storage",
                          storage_bytes, l->st, NULL);
}

/* After a commit: histograms and the committed offsets per partition. */
typedef struct {
    lw_loop_t *l;
    const char *table, *topic;
} off_ud_t;

static void set_offset_gauge(int32_t p, int64_t off, void *ud)
{
    off_ud_t *o = ud;
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", p);
    cm_gauge_t *g = cm_metrics_gauge(o->l->reg, "lake_committed_offset",
                                     "next Kafka offset recorded by the current snapshot",
                                     "table", o->table, "topic", o->topic, "partition", ps, NULL);
    cm_gauge_set_int(g, off);
}

static void after_commit(lw_loop_t *l, size_t i)
{
    lw_table_stats_t s;
    lw_table_get_stats(l->tables[i], &s);
    if (s.commits == l->tm[i].seen_commits)
        return;
    l->tm[i].seen_commits = s.commits;
    cm_histogram_observe(l->tm[i].commit_seconds, s.last_commit_seconds);
    cm_histogram_observe(l->tm[i].files_per_commit, (double)s.last_commit_files);
    const lw_table_def_t *d = lw_table_def(l->tables[i]);
    off_ud_t o = {l, d->name, NULL};
    for (size_t k = 0; k < l->n_topics; k++)
        for (size_t j = 0; j < l->topics[k].n_tables; j++)
            if (l->topics[k].tables[j] == l->tables[i])
                o.topic = l->topics[k].name;
    if (o.topic)
        lw_table_foreach_committed(l->tables[i], set_offset_gauge, &o);
}

/* ------------------------------------------------------------------ setup */

static lw_topic_t *topic_of(lw_loop_t *l, const char *name)
{
    for (size_t i = 0; i < l->n_topics; i++)
        if (strcmp(l->topics[i].name, name) == 0)
            return &l->topics[i];
    return NULL;
}

static const char *source_topic(const lw_config_t *cfg, lw_source_t s)
{
    switch (s) {
    case LW_SRC_EVENTS: return cfg->topic_raw;
    case LW_SRC_SESSIONS: return cfg->topic_sessions;
    case LW_SRC_METRICS: return cfg->topic_metrics;
    case LW_SRC_LATE: return cfg->topic_late;
    }
    return NULL;
}

/* The smallest offset any table of the topic still needs; -1: from the start. */
static int64_t start_offset(const lw_topic_t *tp, int32_t p)
{
    int64_t min = INT64_MAX;
    for (size_t j = 0; j < tp->n_tables; j++) {
        int64_t v = lw_table_pos(tp->tables[j], p);
        if (v < 0)
            return -1;
        if (v < min)
            min = v;
    }
    return min == INT64_MAX ? -1 : min;
}

static void on_rebalance(cm_consumer_t *c, cm_rebalance_kind_t kind,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    lw_loop_t *l = opaque;
    char err[512];
    bool touched[LW_MAX_TOPICS] = {false};
    for (int i = 0; i < parts->cnt; i++) {
        lw_topic_t *tp = topic_of(l, parts->elems[i].topic);
        if (tp)
            touched[tp - l->topics] = true;
    }
    if (kind == CM_REBALANCE_ASSIGN) {
        for (size_t k = 0; k < l->n_topics; k++) {
            if (!touched[k])
                continue;
            for (size_t j = 0; j < l->topics[k].n_tables; j++) {
                lw_table_t *t = l->topics[k].tables[j];
                if (lw_table_refresh(t, err, sizeof(err)))
                    cm_log_warn("table refresh failed", "table", "%s", lw_table_def(t)->name,
                                "error", "%s", err, NULL);
            }
        }
        for (int i = 0; i < parts->cnt; i++) {
            lw_topic_t *tp = topic_of(l, parts->elems[i].topic);
            if (!tp)
                continue;
            int64_t off = start_offset(tp, parts->elems[i].partition);
            parts->elems[i].offset = off < 0 ? RD_KAFKA_OFFSET_BEGINNING : off;
            cm_log_info("partition start", "topic", "%s", tp->name, "partition", "%d",
                        (int)parts->elems[i].partition, "offset", "%ld", (long)off, NULL);
        }
        atomic_fetch_add(&l->assigned, parts->cnt);
        return;
    }
    /* Revoked: commit what the tables of those topics hold, so that the next
     * owner starts after it. Lost (or a failed commit): another member may
     * own them already: throw the batch away and read the rest again. */
    for (size_t k = 0; k < l->n_topics; k++) {
        if (!touched[k])
            continue;
        for (size_t j = 0; j < l->topics[k].n_tables; j++) {
            lw_table_t *t = l->topics[k].tables[j];
            cm_err_t e = CM_ERR_RETRY;
            if (kind == CM_REBALANCE_REVOKE)
                e = lw_table_commit(t, err, sizeof(err));
            if (e) {
                if (e != CM_ERR_RETRY)
                    cm_log_warn("commit on revoke failed, batch dropped", "table", "%s",
                                lw_table_def(t)->name, "error", "%s", err, NULL);
                lw_table_abort(t);
                l->need_reseek = true;
            }
        }
    }
    atomic_fetch_sub(&l->assigned, parts->cnt);
    (void)c;
}

lw_loop_t *lw_loop_new(const lw_config_t *cfg, const cm_passthrough_t *pt, cm_metrics_t *reg,
                       char *errstr, size_t errstr_size)
{
    lw_loop_t *l = calloc(1, sizeof(*l));
    if (!l) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    l->cfg = cfg;
    l->reg = reg;
    cm_event_init(&l->ev);
    cm_session_init(&l->session);
    cm_window_result_init(&l->window);
    lw_storage_opts_t so = {.warehouse = cfg->warehouse,
                            .staging = cfg->staging,
                            .fsync = cfg->fsync,
                            .endpoint = cfg->s3_endpoint,
                            .region = cfg->s3_region,
                            .access_key = cfg->s3_access_key,
                            .secret_key = cfg->s3_secret_key,
                            .path_style = cfg->s3_path_style,
                            .timeout_ms = (long)cfg->s3_timeout_ms};
    l->st = lw_storage_new(&so, errstr, errstr_size);
    if (!l->st)
        goto fail;
    l->registry = cm_registry_new(cfg->registry_url, errstr, errstr_size);
    if (!l->registry)
        goto fail;
    const lw_table_def_t *defs[LW_MAX_TABLES];
    int n = lw_config_table_list(cfg->tables, defs, LW_MAX_TABLES);
    if (n <= 0) {
        snprintf(errstr, errstr_size, "LAKE_TABLES=%s: bad table list", cfg->tables);
        goto fail;
    }
    int codec = strcmp(cfg->codec, "deflate") == 0 ? LW_CODEC_DEFLATE : LW_CODEC_NULL;
    int mcodec = strcmp(cfg->manifest_codec, "deflate") == 0 ? LW_CODEC_DEFLATE : LW_CODEC_NULL;
    for (int i = 0; i < n; i++) {
        const char *topic = source_topic(cfg, defs[i]->source);
        lw_table_opts_t to = {.topic = topic,
                              .instance = cfg->instance,
                              .roll_bytes = cfg->roll_bytes,
                              .roll_age_ms = cfg->roll_age_ms,
                              .max_open_files = (int)cfg->max_open_files,
                              .codec = codec,
                              .manifest_codec = mcodec};
        char terr[512];
        lw_table_t *t = lw_table_open(defs[i], l->st, &to, terr, sizeof(terr));
        if (!t) {
            snprintf(errstr, errstr_size, "table %s: %s", defs[i]->name, terr);
            goto fail;
        }
        l->tables[l->n_tables++] = t;
        lw_topic_t *tp = topic_of(l, topic);
        if (!tp) {
            tp = &l->topics[l->n_topics++];
            tp->name = topic;
            tp->source = defs[i]->source;
        }
        tp->tables[tp->n_tables++] = t;
    }
    register_metrics(l);
    const char *names[LW_MAX_TOPICS];
    for (size_t i = 0; i < l->n_topics; i++)
        names[i] = l->topics[i].name;
    /* Static membership (group.instance.id = LAKE_INSTANCE_ID): a writer
     * restarted after a crash takes its partitions back at once instead of
     * waiting for the dead member's session to time out. A pass-through
     * RDKAFKA_GROUP_INSTANCE_ID wins. */
    size_t npt = pt ? pt->count : 0;
    cm_kv_t *items = calloc(npt + 2, sizeof(*items));
    if (!items) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < npt; i++)
        items[i] = pt->items[i];
    cm_passthrough_t pt2 = {items, npt};
    if (!pt || !cm_passthrough_get(pt, "group.instance.id"))
        items[pt2.count++] = (cm_kv_t){"group.instance.id", (char *)cfg->instance};
    /* A static member does not leave the group on close: its partitions move
     * to the others only when its session times out. 10 s (not librdkafka's
     * 45 s) bounds that pause after a scale-down. */
    if (!pt || !cm_passthrough_get(pt, "session.timeout.ms"))
        items[pt2.count++] = (cm_kv_t){"session.timeout.ms", "10000"};
    cm_consumer_opts_t co = {.bootstrap = cfg->bootstrap,
                             .pt = &pt2,
                             .group_id = cfg->group_id,
                             .topics = names,
                             .topic_count = l->n_topics,
                             .client_id = cfg->instance,
                             .auto_offset_reset = "earliest",
                             .on_rebalance = on_rebalance,
                             .opaque = l};
    l->consumer = cm_consumer_new(&co, errstr, errstr_size);
    free(items);
    if (!l->consumer)
        goto fail;
    return l;
fail:
    lw_loop_destroy(l);
    return NULL;
}

void lw_loop_destroy(lw_loop_t *l)
{
    if (!l)
        return;
    if (l->reg)
        cm_metrics_unbind(l->reg, l); /* the lag gauge reads the consumer */
    cm_consumer_destroy(l->consumer);
    if (l->reg)
        for (size_t i = 0; i < l->n_tables; i++)
            cm_metrics_unbind(l->reg, l->tables[i]);
    if (l->reg && l->st)
        cm_metrics_unbind(l->reg, l->st);
    for (size_t i = 0; i < l->n_tables; i++)
        lw_table_destroy(l->tables[i]);
    cm_registry_destroy(l->registry);
    lw_storage_destroy(l->st);
    cm_event_free(&l->ev);
    cm_session_free(&l->session);
    cm_window_result_free(&l->window);
    free(l);
}

bool lw_loop_ready(void *ud, char *reason, size_t size)
{
    lw_loop_t *l = ud;
    if (atomic_load(&l->assigned) > 0)
        return true;
    snprintf(reason, size, "no partition assigned");
    return false;
}

/* --------------------------------------------------------------- records */

static void undecodable(lw_loop_t *l, lw_topic_t *tp, const rd_kafka_message_t *m,
                        const cm_avro_error_t *e)
{
    cm_counter_inc(tp->undecodable);
    if (l->undecodable_logged++ < 100 || l->undecodable_logged % 10000 == 0)
        cm_log_warn("undecodable record", "topic", "%s", tp->name, "partition", "%d",
                    (int)m->partition, "offset", "%ld", (long)m->offset, "reason", "%s",
                    e->reason ? e->reason : "?", "error", "%s", e->message, NULL);
}

static cm_err_t append(lw_loop_t *l, lw_table_t *t, const lw_row_t *row)
{
    cm_err_t err = lw_table_append(t, row);
    if (err) {
        cm_log_error("cannot write a row", "table", "%s", lw_table_def(t)->name, "error", "%s",
                     cm_err_str(err), NULL);
        for (size_t i = 0; i < l->n_tables; i++)
            if (l->tables[i] == t)
                cm_counter_inc(l->tm[i].write_errors);
        return err;
    }
    for (size_t i = 0; i < l->n_tables; i++)
        if (l->tables[i] == t)
            cm_counter_inc(l->tm[i].rows);
    return CM_OK;
}

static cm_err_t handle(lw_loop_t *l, const rd_kafka_message_t *m)
{
    lw_topic_t *tp = topic_of(l, rd_kafka_topic_name(m->rkt));
    if (!tp)
        return CM_OK;
    cm_counter_inc(tp->records);
    int32_t p = m->partition;
    int64_t o = m->offset;
    bool wanted = false;
    for (size_t j = 0; j < tp->n_tables; j++)
        wanted |= lw_table_wants(tp->tables[j], p, o);
    if (!wanted)
        return CM_OK; /* a re-read of what every table has */
    cm_avro_error_t e = {0};
    lw_row_t row = {.partition = p, .offset = o};
    switch (tp->source) {
    case LW_SRC_EVENTS: {
        lw_table_t *t = tp->tables[0];
        if (cm_avro_decode_event(l->registry, m->payload, m->len, &l->ev, NULL, &e)) {
            undecodable(l, tp, m, &e);
            lw_table_cover(t, p, o);
            return CM_OK;
        }
        row.ev = &l->ev;
        return append(l, t, &row);
    }
    case LW_SRC_SESSIONS: {
        lw_table_t *t = tp->tables[0];
        if (cm_avro_decode_session(l->registry, m->payload, m->len, &l->session, NULL, &e)) {
            undecodable(l, tp, m, &e);
            lw_table_cover(t, p, o);
            return CM_OK;
        }
        row.session = &l->session;
        return append(l, t, &row);
    }
    case LW_SRC_METRICS: {
        bool ok = cm_avro_decode_window_result(l->registry, m->payload, m->len, &l->window,
                                               NULL, &e) == CM_OK;
        if (!ok)
            undecodable(l, tp, m, &e);
        row.window = &l->window;
        for (size_t j = 0; j < tp->n_tables; j++) {
            lw_table_t *t = tp->tables[j];
            if (!lw_table_wants(t, p, o))
                continue;
            if (ok && lw_table_def(t)->window_size_ms == l->window.window_size_ms) {
                cm_err_t err = append(l, t, &row);
                if (err)
                    return err;
            } else {
                lw_table_cover(t, p, o);
            }
        }
        return CM_OK;
    }
    case LW_SRC_LATE: {
        lw_table_t *t = tp->tables[0];
        char reason[64] = "";
        rd_kafka_headers_t *hdrs = NULL;
        const void *hv;
        size_t hl;
        if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            rd_kafka_header_get_last(hdrs, "reason", &hv, &hl) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            hv) {
            size_t n = hl < sizeof(reason) - 1 ? hl : sizeof(reason) - 1;
            memcpy(reason, hv, n);
            reason[n] = 0;
        }
        row.reason = reason[0] ? reason : NULL;
        if (cm_avro_decode_event(l->registry, m->payload, m->len, &l->ev, NULL, &e) == CM_OK) {
            row.ev = &l->ev;
        } else {
            cm_counter_inc(tp->undecodable);
            row.raw = m->payload ? m->payload : "";
            row.raw_len = m->payload ? m->len : 0;
        }
        return append(l, t, &row);
    }
    }
    return CM_OK;
}

/* ---------------------------------------------------------------- running */

static void reseek(lw_loop_t *l)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    rd_kafka_t *rk = cm_consumer_handle(l->consumer);
    if (rd_kafka_assignment(rk, &a) || !a)
        return;
    for (int i = 0; i < a->cnt; i++) {
        lw_topic_t *tp = topic_of(l, a->elems[i].topic);
        if (!tp)
            continue;
        int64_t off = start_offset(tp, a->elems[i].partition);
        cm_consumer_seek(l->consumer, tp->name, a->elems[i].partition,
                         off < 0 ? RD_KAFKA_OFFSET_BEGINNING : off, 5000);
        cm_log_info("partition rewound", "topic", "%s", tp->name, "partition", "%d",
                    (int)a->elems[i].partition, "offset", "%ld", (long)off, NULL);
    }
    rd_kafka_topic_partition_list_destroy(a);
    l->need_reseek = false;
}

/* Group offsets for lag monitoring: per assigned partition, the smallest
 * committed offset of its tables. Never used to decide where to start. */
static void commit_group_offsets(lw_loop_t *l)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(cm_consumer_handle(l->consumer), &a) || !a)
        return;
    rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_new(a->cnt);
    for (int i = 0; i < a->cnt; i++) {
        lw_topic_t *tp = topic_of(l, a->elems[i].topic);
        if (!tp)
            continue;
        int64_t min = INT64_MAX;
        for (size_t j = 0; j < tp->n_tables; j++) {
            int64_t v = lw_table_committed(tp->tables[j], a->elems[i].partition);
            if (v < min)
                min = v;
        }
        if (min > 0 && min != INT64_MAX)
            rd_kafka_topic_partition_list_add(c, tp->name, a->elems[i].partition)->offset = min;
    }
    if (c->cnt)
        cm_consumer_commit(l->consumer, c, true);
    rd_kafka_topic_partition_list_destroy(c);
    rd_kafka_topic_partition_list_destroy(a);
}

/* Commits the tables that are due (all with force). */
static void commit_due(lw_loop_t *l, bool force)
{
    int64_t now = cm_mono_ms();
    bool any = false, failed = false;
    for (size_t i = 0; i < l->n_tables; i++) {
        lw_table_t *t = l->tables[i];
        if (!(force ? lw_table_batch_rows(t) > 0 : lw_table_due(t, now)) && !l->stalled)
            continue;
        char err[512];
        cm_err_t e = lw_table_commit(t, err, sizeof(err));
        if (e == CM_ERR_RETRY) {
            l->need_reseek = true;
        } else if (e) {
            cm_log_error("commit failed, will retry", "table", "%s", lw_table_def(t)->name,
                         "error", "%s", err, NULL);
            failed = true;
            /* The batch may have been dropped (a data file lost): read from
             * the tables' positions again once storage is back. */
            l->need_reseek = true;
        } else {
            after_commit(l, i);
            any = true;
        }
    }
    l->stalled = failed;
    if (failed)
        l->retry_at_ms = now + LW_COMMIT_RETRY_MS;
    if (any)
        commit_group_offsets(l);
}

cm_err_t lw_loop_run(lw_loop_t *l)
{
    cm_err_t err = CM_OK;
    int64_t last_check = 0;
    unsigned since_check = 0;
    while (!cm_signal_stop_requested()) {
        if (l->stalled) {
            /* Storage trouble: hold the input until the batch is in. */
            if (cm_mono_ms() >= l->retry_at_ms)
                commit_due(l, false);
            else
                cm_signal_wait(100);
            continue;
        }
        rd_kafka_message_t *m = NULL;
        err = cm_consumer_poll(l->consumer, LW_POLL_MS, &m);
        if (err == CM_ERR_FATAL)
            break;
        err = CM_OK;
        if (l->need_reseek) {
            /* A rebalance (or an overlap) threw a batch away: what this poll
             * returned may be past the rewound position. Drop it; it is read
             * again after the seek. */
            if (m)
                rd_kafka_message_destroy(m);
            m = NULL;
            reseek(l);
        }
        if (m) {
            err = handle(l, m);
            rd_kafka_message_destroy(m);
            if (err) {
                /* A write failed (disk full, ...): drop the batch, read again. */
                for (size_t i = 0; i < l->n_tables; i++)
                    lw_table_abort(l->tables[i]);
                l->need_reseek = true;
                l->stalled = true;
                l->retry_at_ms = cm_mono_ms() + LW_COMMIT_RETRY_MS;
                err = CM_OK;
            }
        }
        /* The age check costs a clock read: once per 1024 records, or when
         * the input is idle. */
        if (!m || ++since_check >= 1024) {
            since_check = 0;
            int64_t now = cm_mono_ms();
            if (!m || now - last_check >= 50) {
                last_check = now;
                commit_due(l, false);
            }
        }
    }
    if (err == CM_OK) {
        cm_log_info("final commit", NULL);
        commit_due(l, true);
        /* Leave the assignment here, inside poll, rather than inside
         * rd_kafka_consumer_close(): librdkafka 2.0.2 can deadlock when the
         * revoke callback of a close asks for rd_kafka_assignment() (seen
         * here about 1 stop in 10). Records polled meanwhile are dropped:
         * they are past what was just committed and are read again. */
        rd_kafka_unsubscribe(cm_consumer_handle(l->consumer));
        int64_t deadline = cm_mono_ms() + 5000;
        while (cm_consumer_assigned_count(l->consumer) > 0 && cm_mono_ms() < deadline) {
            rd_kafka_message_t *m = NULL;
            if (cm_consumer_poll(l->consumer, 100, &m) == CM_ERR_FATAL)
                break;
            if (m)
                rd_kafka_message_destroy(m);
        }
    }
    return err;
}
