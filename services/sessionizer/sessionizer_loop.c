/*
 * sessionizer_loop.c: the Kafka side of the sessionizer (see the header).
 *
 * Exactly-once: every input record is processed inside the txloop's open
 * transaction; the session records, the late records, the changelog records
 * of the state it changed (written in before_commit, once per touched user)
 * and the input offsets commit or abort together. On assign the state of a
 * partition is rebuilt from its changelog partition before any of its input
 * is processed; on abort every partition is rebuilt the same way; on revoke
 * the state is dropped. All decisions are made on the partition's own
 * watermark, so replaying a partition from its committed offset with its
 * committed state gives the same records, whichever instance does it.
 */
#include "sessionizer_loop.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm_avro.h"
#include "cm_buf.h"
#include "cm_event.h"
#include "cm_kafka.h"
#include "cm_log.h"
#include "cm_registry.h"
#include "cm_signal.h"
#include "cm_time.h"
#include "cm_watermark.h"
#include "sessionizer_changelog.h"
#include "sessionizer_state.h"

struct sz_app {
    const sz_config_t *cfg;
    cm_txloop_t *loop;
    cm_registry_t *reg;
    cm_watermark_t *wm;
    sz_params_t prm;
    uint32_t session_schema_id;
    char txid[256];

    sz_part_t **parts; /* by partition number; NULL: not assigned */
    size_t nparts;

    cm_event_t ev;
    cm_buf_t enc;     /* one session record */
    cm_buf_t scratch; /* one changelog value */
    int32_t cur_partition;
    cm_err_t emit_err;

    _Atomic bool restored; /* every assigned partition restored */
    int64_t last_gauges_ms;

    /* metrics */
    cm_metrics_t *m;
    cm_counter_t *events_in, *sessions_out, *tombstones, *duplicates, *changelog_records;
    cm_counter_t *late_late, *late_undecodable, *late_invalid, *restored_records;
    cm_gauge_t *open_sessions, *state_bytes, *state_users, *wm_lag, *bytes_per_session;
    cm_gauge_t *assigned;
};

/* ----------------------------------------------------------------- helpers */

static sz_part_t *part_of(sz_app_t *app, int32_t p)
{
    return p >= 0 && (size_t)p < app->nparts ? app->parts[p] : NULL;
}

static cm_err_t parts_reserve(sz_app_t *app, int32_t p)
{
    if ((size_t)p < app->nparts)
        return CM_OK;
    size_t n = app->nparts ? app->nparts : 16;
    while (n <= (size_t)p)
        n *= 2;
    sz_part_t **np = realloc(app->parts, n * sizeof(*np));
    if (!np)
        return CM_ERR_NOMEM;
    memset(np + app->nparts, 0, (n - app->nparts) * sizeof(*np));
    app->parts = np;
    app->nparts = n;
    return CM_OK;
}

static cm_err_t send_late(sz_app_t *app, const rd_kafka_message_t *msg, const char *reason)
{
    cm_kafka_header_t h = {"reason", reason, strlen(reason)};
    cm_kafka_msg_t m = {
        .topic = app->cfg->topic_late,
        .partition = CM_KAFKA_PARTITION_ANY,
        .key = msg->key,
        .key_len = msg->key_len,
        /* a NULL value would be a tombstone: forward an empty record instead */
        .value = msg->payload ? msg->payload : "",
        .value_len = msg->len,
        .headers = &h,
        .header_count = 1,
    };
    return cm_txloop_send(app->loop, &m);
}

static cm_err_t emit_session(const cm_session_t *s, void *ud)
{
    sz_app_t *app = ud;
    cm_buf_reset(&app->enc);
    cm_err_t err = cm_avro_encode_session(s, app->session_schema_id, &app->enc);
    if (err) {
        cm_log_error("cannot encode a session", "session_id", "%s", s->session_id, "error", "%s",
                     cm_err_str(err), NULL);
        return err;
    }
    cm_kafka_msg_t m = {
        .topic = app->cfg->topic_sessions,
        .partition = CM_KAFKA_PARTITION_ANY,
        .key = s->user_id,
        .key_len = strlen(s->user_id),
        .value = app->enc.data,
        .value_len = app->enc.len,
        /* The record timestamp stays the produce time. Event time would
         * hand the record to the broker's time retention: sessions of
         * replayed or backfilled days older than retention.ms were deleted
         * within minutes of being written. Event time is in the value. */
    };
    err = cm_txloop_send(app->loop, &m);
    if (!err) {
        cm_counter_inc(app->sessions_out);
        if (s->tombstone)
            cm_counter_inc(app->tombstones);
    }
    return err;
}

static cm_err_t put_changelog(const void *key, size_t klen, const void *val, size_t vlen,
                              void *ud)
{
    sz_app_t *app = ud;
    cm_kafka_msg_t m = {
        .topic = app->cfg->topic_changelog,
        .partition = app->cur_partition,
        .key = key,
        .key_len = klen,
        .value = val,
        .value_len = vlen,
    };
    cm_err_t err = cm_txloop_send(app->loop, &m);
    if (!err)
        cm_counter_inc(app->changelog_records);
    return err;
}

/* ----------------------------------------------------------- callbacks */

static bool event_valid(const cm_event_t *ev)
{
    return ev->user_id && ev->user_id[0] && ev->event_id && ev->event_id[0] && ev->ts_ms >= 0 &&
           ev->ts_ms <= CM_TS_MAX_MS;
}

static cm_err_t on_process(cm_txloop_t *loop, const rd_kafka_message_t *msg, void *opaque)
{
    sz_app_t *app = opaque;
    sz_part_t *part = part_of(app, msg->partition);
    if (!part) {
        cm_log_error("record of a partition without state", "partition", "%d",
                     (int)msg->partition, NULL);
        return CM_ERR_RETRY;
    }
    cm_counter_inc(app->events_in);
    int64_t now = cm_mono_ms();
    cm_avro_error_t aerr;
    cm_err_t err = msg->payload ? cm_avro_decode_event(app->reg, msg->payload, msg->len,
                                                       &app->ev, NULL, &aerr)
                                : CM_ERR_PARSE;
    if (err == CM_ERR_IO || err == CM_ERR_NOMEM)
        return CM_ERR_RETRY; /* registry unreachable: not the record's fault */
    if (err) {
        cm_watermark_touch(app->wm, msg->partition, now);
        cm_counter_inc(app->late_undecodable);
        return send_late(app, msg, "undecodable");
    }
    if (!event_valid(&app->ev)) {
        cm_watermark_touch(app->wm, msg->partition, now);
        cm_counter_inc(app->late_invalid);
        return send_late(app, msg, "invalid");
    }
    cm_watermark_observe(app->wm, msg->partition, app->ev.ts_ms, now);
    sz_verdict_t verdict;
    app->emit_err = CM_OK;
    err = sz_part_add_event(part, &app->ev, &verdict, emit_session, app);
    if (err)
        return err == CM_ERR_NOMEM ? CM_ERR_FATAL : CM_ERR_RETRY;
    switch (verdict) {
    case SZ_LATE:
        cm_counter_inc(app->late_late);
        return send_late(app, msg, "late");
    case SZ_DUPLICATE:
        cm_counter_inc(app->duplicates);
        break;
    case SZ_ACCEPTED:
        break;
    }
    (void)loop;
    return CM_OK;
}

static void update_gauges(sz_app_t *app, int64_t now_wall)
{
    size_t open = 0, users = 0, bytes = 0;
    int nassigned = 0;
    for (size_t i = 0; i < app->nparts; i++) {
        sz_part_t *p = app->parts[i];
        if (!p)
            continue;
        nassigned++;
        open += sz_part_open_sessions(p);
        users += sz_part_users(p);
        bytes += sz_part_bytes(p);
    }
    cm_gauge_set_int(app->open_sessions, (int64_t)open);
    cm_gauge_set_int(app->state_users, (int64_t)users);
    cm_gauge_set_int(app->state_bytes, (int64_t)bytes);
    cm_gauge_set(app->bytes_per_session, open ? (double)bytes / (double)open : 0);
    cm_gauge_set_int(app->assigned, nassigned);
    int64_t w = cm_watermark_get(app->wm, cm_mono_ms());
    cm_gauge_set(app->wm_lag, w == CM_WATERMARK_NONE ? 0 : (double)(now_wall - w) / 1000.0);
}

static cm_err_t on_before_commit(cm_txloop_t *loop, void *opaque)
{
    sz_app_t *app = opaque;
    (void)loop;
    for (size_t i = 0; i < app->nparts; i++) {
        sz_part_t *p = app->parts[i];
        if (!p)
            continue;
        app->cur_partition = (int32_t)i;
        cm_err_t err = sz_changelog_flush(p, &app->scratch, put_changelog, app);
        if (err) {
            cm_log_warn("changelog flush failed", "partition", "%d", (int)i, "error", "%s",
                        cm_err_str(err), NULL);
            return err == CM_ERR_FATAL ? err : CM_ERR_RETRY;
        }
    }
    return CM_OK;
}

static void on_tick(cm_txloop_t *loop, int64_t now_ms, void *opaque)
{
    sz_app_t *app = opaque;
    (void)loop;
    /* the SPEC §3 idle rule: a service watermark above a partition's own
     * (its input stopped) closes that partition's sessions */
    int64_t w = cm_watermark_get(app->wm, cm_mono_ms());
    if (w != CM_WATERMARK_NONE) {
        for (size_t i = 0; i < app->nparts; i++) {
            if (!app->parts[i])
                continue;
            cm_err_t err = sz_part_emit_upto(app->parts[i], w, emit_session, app);
            if (err)
                cm_log_warn("idle emission failed", "error", "%s", cm_err_str(err), NULL);
        }
    }
    if (now_ms - app->last_gauges_ms >= 500) {
        app->last_gauges_ms = now_ms;
        update_gauges(app, now_ms);
    }
}

typedef struct restore_ctx {
    sz_part_t *part;
    sz_app_t *app;
    uint64_t n;
} restore_ctx_t;

static cm_err_t restore_record(const rd_kafka_message_t *msg, void *opaque)
{
    restore_ctx_t *rc = opaque;
    rc->n++;
    cm_err_t err = sz_changelog_apply(rc->part, msg->key, msg->key_len, msg->payload, msg->len);
    if (err)
        cm_log_error("unreadable changelog record", "partition", "%d", (int)msg->partition,
                     "offset", "%ld", (long)msg->offset, "error", "%s", cm_err_str(err), NULL);
    return err;
}

/* Rebuilds the state of partition p from its changelog partition, once. */
static cm_err_t part_restore_once(sz_app_t *app, int32_t p)
{
    char errstr[256];
    cm_err_t err = parts_reserve(app, p);
    if (err)
        return err;
    sz_part_destroy(app->parts[p]);
    app->parts[p] = NULL;
    sz_part_t *part = sz_part_new(p, &app->prm, errstr, sizeof(errstr));
    if (!part) {
        cm_log_error("cannot create partition state", "error", "%s", errstr, NULL);
        return CM_ERR_NOMEM;
    }
    int64_t t0 = cm_mono_ms();
    restore_ctx_t rc = {part, app, 0};
    err = cm_txloop_restore(app->loop, app->cfg->topic_changelog, p, restore_record, &rc,
                            (int)app->cfg->restore_timeout_ms);
    if (!err)
        err = sz_changelog_restore_done(part);
    if (err) {
        cm_log_error("restore failed", "partition", "%d", (int)p, "error", "%s", cm_err_str(err),
                     NULL);
        sz_part_destroy(part);
        return err;
    }
    cm_counter_add(app->restored_records, rc.n);
    app->parts[p] = part;
    err = cm_watermark_add(app->wm, p, part->max_event, cm_mono_ms());
    cm_log_info("partition restored", "partition", "%d", (int)p, "records", "%ld", (long)rc.n,
                "open_sessions", "%ld", (long)sz_part_open_sessions(part), "watermark", "%ld",
                (long)sz_part_watermark(part), "ms", "%ld", (long)(cm_mono_ms() - t0), NULL);
    return err;
}

/* Same, riding out transient broker errors (a leader moving, a topic just
 * created) for up to ~20 s; a record that cannot be read stops at once. */
static cm_err_t part_restore(sz_app_t *app, int32_t p)
{
    cm_err_t err = CM_OK;
    for (int attempt = 0; attempt < 40; attempt++) {
        err = part_restore_once(app, p);
        if (err != CM_ERR_KAFKA && err != CM_ERR_TIMEOUT)
            return err;
        if (cm_signal_stop_requested())
            return err;
        usleep(500 * 1000);
    }
    return err;
}

static cm_err_t on_assign(cm_txloop_t *loop, const rd_kafka_topic_partition_list_t *parts,
                          void *opaque)
{
    sz_app_t *app = opaque;
    (void)loop;
    atomic_store(&app->restored, false);
    for (int i = 0; i < parts->cnt; i++) {
        cm_err_t err = part_restore(app, parts->elems[i].partition);
        if (err)
            return err;
    }
    atomic_store(&app->restored, true);
    update_gauges(app, cm_now_ms());
    return CM_OK;
}

static void drop_part(sz_app_t *app, int32_t p)
{
    sz_part_t *part = part_of(app, p);
    if (!part)
        return;
    sz_part_destroy(part);
    app->parts[p] = NULL;
    cm_watermark_remove(app->wm, p);
}

static void on_revoke(cm_txloop_t *loop, const rd_kafka_topic_partition_list_t *parts,
                      bool lost, void *opaque)
{
    sz_app_t *app = opaque;
    (void)loop;
    for (int i = 0; i < parts->cnt; i++) {
        drop_part(app, parts->elems[i].partition);
        cm_log_info("partition revoked", "partition", "%d", (int)parts->elems[i].partition,
                    "lost", "%b", (int)lost, NULL);
    }
    update_gauges(app, cm_now_ms());
}

static void on_abort(cm_txloop_t *loop, const rd_kafka_topic_partition_list_t *parts,
                     void *opaque)
{
    sz_app_t *app = opaque;
    (void)loop;
    /* throw away every uncommitted change: rebuild from the changelog */
    atomic_store(&app->restored, false);
    for (size_t i = 0; i < app->nparts; i++)
        drop_part(app, (int32_t)i);
    for (int i = 0; i < parts->cnt; i++) {
        if (part_restore(app, parts->elems[i].partition)) {
            cm_log_error("restore after abort failed: stopping", NULL);
            cm_txloop_stop(app->loop);
            return;
        }
    }
    atomic_store(&app->restored, true);
}

static bool should_stop(void *opaque)
{
    (void)opaque;
    return cm_signal_stop_requested();
}

/* ------------------------------------------------------ changelog topic */

/* Partition count of `topic`, or -1 (errstr filled). With need_leaders, a
 * partition without a leader yet counts as missing (0 is returned). */
static int topic_partitions(rd_kafka_t *rk, const char *topic, bool need_leaders, char *errstr,
                            size_t size)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int n = -1;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    if (err) {
        snprintf(errstr, size, "metadata of %s: %s", topic, rd_kafka_err2str(err));
    } else if (md->topic_cnt != 1 || md->topics[0].err) {
        snprintf(errstr, size, "topic %s: %s", topic,
                 md->topic_cnt ? rd_kafka_err2str(md->topics[0].err) : "not found");
    } else {
        n = md->topics[0].partition_cnt;
        for (int i = 0; need_leaders && i < md->topics[0].partition_cnt; i++)
            if (md->topics[0].partitions[i].leader < 0)
                n = 0;
    }
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return n;
}

static cm_err_t ensure_changelog(sz_app_t *app, char *errstr, size_t size)
{
    rd_kafka_t *rk = cm_txloop_producer(app->loop);
    int raw = topic_partitions(rk, app->cfg->topic_raw, false, errstr, size);
    if (raw <= 0)
        return CM_ERR_KAFKA;
    char e2[256];
    int have = topic_partitions(rk, app->cfg->topic_changelog, false, e2, sizeof(e2));
    if (have > 0) {
        if (have != raw) {
            snprintf(errstr, size,
                     "changelog topic %s has %d partitions, %s has %d: they must be equal",
                     app->cfg->topic_changelog, have, app->cfg->topic_raw, raw);
            return CM_ERR_INVALID;
        }
        return CM_OK;
    }
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(app->cfg->topic_changelog, raw,
                                                    (int)app->cfg->changelog_replication, e2,
                                                    sizeof(e2));
    if (!nt) {
        snprintf(errstr, size, "changelog topic: %s", e2);
        return CM_ERR_INVALID;
    }
    rd_kafka_NewTopic_set_config(nt, "cleanup.policy", "compact");
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(opts, 15000, e2, sizeof(e2));
    rd_kafka_CreateTopics(rk, &nt, 1, opts, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 20000);
    cm_err_t err = CM_OK;
    if (!ev) {
        snprintf(errstr, size, "creating %s: no answer", app->cfg->topic_changelog);
        err = CM_ERR_TIMEOUT;
    } else {
        size_t cnt = 0;
        const rd_kafka_topic_result_t **res =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
        rd_kafka_resp_err_t terr = cnt ? rd_kafka_topic_result_error(res[0])
                                       : rd_kafka_event_error(ev);
        if (terr && terr != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            snprintf(errstr, size, "creating %s: %s", app->cfg->topic_changelog,
                     rd_kafka_err2str(terr));
            err = CM_ERR_KAFKA;
        } else {
            cm_log_info("changelog topic created", "topic", "%s", app->cfg->topic_changelog,
                        "partitions", "%d", raw, NULL);
        }
        /* a restore right after creation needs every partition to have a leader */
        int64_t deadline = cm_mono_ms() + 30000;
        while (!err && topic_partitions(rk, app->cfg->topic_changelog, true, e2, sizeof(e2)) != raw) {
            if (cm_mono_ms() > deadline) {
                snprintf(errstr, size, "changelog topic %s: no leaders after 30 s",
                         app->cfg->topic_changelog);
                err = CM_ERR_TIMEOUT;
            }
            usleep(100 * 1000);
        }
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    return err;
}

/* ------------------------------------------------------------ metrics */

static double txstat(void *ud, int which)
{
    cm_txloop_stats_t st;
    cm_txloop_get_stats(((sz_app_t *)ud)->loop, &st);
    switch (which) {
    case 0: return (double)st.commits;
    case 1: return (double)st.commit_lat_us_sum / 1e6;
    case 2: return (double)st.commit_lat_us_max / 1e6;
    case 3: return (double)st.aborts;
    case 4: return (double)st.consumer_lag;
    default: return (double)st.rebalances;
    }
}
static double tx_commits(void *ud) { return txstat(ud, 0); }
static double tx_lat_sum(void *ud) { return txstat(ud, 1); }
static double tx_lat_max(void *ud) { return txstat(ud, 2); }
static double tx_aborts(void *ud) { return txstat(ud, 3); }
static double tx_lag(void *ud) { return txstat(ud, 4); }
static double tx_rebalances(void *ud) { return txstat(ud, 5); }

static void metrics_init(sz_app_t *app)
{
    cm_metrics_t *m = app->m;
    app->events_in = cm_metrics_counter(m, "sessionizer_events_in_total",
                                        "input records read (re-reads after an abort included)",
                                        NULL);
    app->sessions_out = cm_metrics_counter(m, "sessionizer_sessions_out_total",
                                           "session records produced (tombstones included)",
                                           NULL);
    app->tombstones = cm_metrics_counter(m, "sessionizer_session_tombstones_total",
                                         "tombstone session records (merges, id changes)", NULL);
    app->duplicates = cm_metrics_counter(m, "sessionizer_duplicates_total",
                                         "events dropped as duplicates of an event_id", NULL);
    const char *help = "input records sent to the late topic, by reason";
    app->late_late = cm_metrics_counter(m, "sessionizer_late_total", help, "reason", "late", NULL);
    app->late_undecodable =
        cm_metrics_counter(m, "sessionizer_late_total", help, "reason", "undecodable", NULL);
    app->late_invalid =
        cm_metrics_counter(m, "sessionizer_late_total", help, "reason", "invalid", NULL);
    app->changelog_records = cm_metrics_counter(m, "sessionizer_changelog_records_total",
                                                "state records written to the changelog", NULL);
    app->restored_records = cm_metrics_counter(
        m, "sessionizer_restored_records_total", "changelog records read while restoring", NULL);
    app->open_sessions = cm_metrics_gauge(m, "sessionizer_open_sessions",
                                          "sessions held in memory (open or within lateness)",
                                          NULL);
    app->state_users =
        cm_metrics_gauge(m, "sessionizer_state_users", "users held in memory", NULL);
    app->state_bytes = cm_metrics_gauge(
        m, "sessionizer_state_bytes",
        "memory held by the session state (pools, tables, strings, dedupe sets)", NULL);
    app->bytes_per_session = cm_metrics_gauge(m, "sessionizer_state_bytes_per_open_session",
                                              "state bytes / open sessions", NULL);
    app->wm_lag = cm_metrics_gauge(m, "sessionizer_watermark_lag_seconds",
                                   "wall clock minus the service watermark", NULL);
    app->assigned =
        cm_metrics_gauge(m, "sessionizer_assigned_partitions", "input partitions owned", NULL);
    cm_metrics_counter_fn(m, "sessionizer_transaction_commits_total", "transactions committed",
                          tx_commits, app, NULL);
    cm_metrics_counter_fn(m, "sessionizer_transaction_aborts_total", "transactions aborted",
                          tx_aborts, app, NULL);
    cm_metrics_counter_fn(m, "sessionizer_transaction_commit_seconds_sum",
                          "total time spent committing transactions", tx_lat_sum, app, NULL);
    cm_metrics_gauge_fn(m, "sessionizer_transaction_commit_seconds_max",
                        "slowest transaction commit so far", tx_lat_max, app, NULL);
    cm_metrics_counter_fn(m, "sessionizer_rebalances_total", "assign and revoke events",
                          tx_rebalances, app, NULL);
    cm_metrics_gauge_fn(m, "sessionizer_consumer_lag_records",
                        "input records not yet read (end offsets - positions; -1: not yet known)",
                        tx_lag, app, NULL);
}

/* ---------------------------------------------------------------- app */

bool sz_app_ready(void *ud, char *reason, size_t size)
{
    sz_app_t *app = ud;
    if (!cm_txloop_ready(app->loop)) {
        snprintf(reason, size, "no partition assigned yet");
        return false;
    }
    if (!atomic_load(&app->restored)) {
        snprintf(reason, size, "restoring state");
        return false;
    }
    return true;
}

sz_app_t *sz_app_new(const sz_config_t *cfg, const cm_passthrough_t *pt, cm_metrics_t *reg,
                     char *errstr, size_t errstr_size)
{
    sz_app_t *app = calloc(1, sizeof(*app));
    if (!app) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    app->cfg = cfg;
    app->m = reg;
    app->prm = (sz_params_t){.gap_ms = cfg->gap_ms,
                             .bound_ms = cfg->bound_ms,
                             .lateness_ms = cfg->lateness_ms,
                             .dedupe_max = (size_t)cfg->dedupe_max};
    cm_event_init(&app->ev);
    cm_buf_init(&app->enc, CM_RECORD_MAX_BYTES);
    cm_buf_init(&app->scratch, 64 * 1024 * 1024);
    metrics_init(app);

    char subject[300];
    if (!(app->reg = cm_registry_new(cfg->registry_url, errstr, errstr_size)))
        goto fail;
    if (cm_registry_subject(cfg->topic_sessions, subject, sizeof(subject)) ||
        cm_registry_id(app->reg, subject, CM_SCHEMA_SESSION, &app->session_schema_id, errstr,
                       errstr_size))
        goto fail;
    if (!(app->wm = cm_watermark_new(cfg->bound_ms, cfg->idle_timeout_ms, errstr, errstr_size)))
        goto fail;
    if (cfg->transactional_id) {
        snprintf(app->txid, sizeof(app->txid), "%s", cfg->transactional_id);
    } else {
        char host[200] = "localhost";
        gethostname(host, sizeof(host) - 1);
        snprintf(app->txid, sizeof(app->txid), "clickstream-sessionizer-%s", host);
    }
    const char *topics[1] = {cfg->topic_raw};
    cm_txloop_opts_t o = {
        .bootstrap = cfg->bootstrap,
        .pt = pt,
        .group_id = cfg->group_id,
        .topics = topics,
        .topic_count = 1,
        .transactional_id = app->txid,
        .client_id = SZ_SERVICE,
        .commit_interval_ms = (int)cfg->commit_interval_ms,
        .commit_max_msgs = (int)cfg->commit_max_events,
        .tick_interval_ms = 100,
        .transaction_timeout_ms = (int)cfg->transaction_timeout_ms,
        .should_stop = should_stop,
        .cb = {.process = on_process,
               .on_assign = on_assign,
               .on_revoke = on_revoke,
               .on_abort = on_abort,
               .before_commit = on_before_commit,
               .tick = on_tick},
        .opaque = app,
    };
    if (!(app->loop = cm_txloop_new(&o, errstr, errstr_size)))
        goto fail;
    if (ensure_changelog(app, errstr, errstr_size))
        goto fail;
    return app;
fail:
    sz_app_destroy(app);
    return NULL;
}

cm_err_t sz_app_run(sz_app_t *app)
{
    cm_log_info("running", "transactional_id", "%s", app->txid, "group", "%s",
                app->cfg->group_id, NULL);
    return cm_txloop_run(app->loop);
}

void sz_app_destroy(sz_app_t *app)
{
    if (!app)
        return;
    if (app->m)
        cm_metrics_unbind(app->m, app);
    cm_txloop_destroy(app->loop);
    for (size_t i = 0; i < app->nparts; i++)
        sz_part_destroy(app->parts[i]);
    free(app->parts);
    cm_watermark_destroy(app->wm);
    cm_registry_destroy(app->reg);
    cm_event_free(&app->ev);
    cm_buf_free(&app->enc);
    cm_buf_free(&app->scratch);
    free(app);
}
