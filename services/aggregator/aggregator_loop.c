/*
 * aggregator_loop.c: the source loop, the merge loop, restore by replay,
 * internal topics, metrics (header and README.md).
 */
#include "aggregator_loop.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aggregator_merge.h"
#include "aggregator_redis.h"
#include "aggregator_window.h"
#include "cm_admin.h"
#include "cm_avro.h"
#include "cm_kafka.h"
#include "cm_log.h"
#include "cm_metrics.h"
#include "cm_registry.h"
#include "cm_signal.h"
#include "cm_time.h"

#define KEY_MAX 160

typedef struct ag_mslot {
    int32_t q;
    ag_merger_t *m;
    cm_buf_t last_cp; /* signature part of the last checkpoint written */
    int64_t next_offset;
} ag_mslot_t;

struct ag_app {
    const ag_config_t *cfg;
    const cm_passthrough_t *pt;
    bool sessions_on;
    char instance[128];
    cm_metrics_t *metrics;
    cm_admin_t *admin;
    cm_registry_t *reg;
    uint32_t wr_schema_id;
    int32_t n_raw, n_ses, n_panes, n_cl;

    /* source loop */
    cm_txloop_t *src_loop;
    ag_state_t *st;
    ag_redis_t *redis;
    rd_kafka_t *src_replayer;
    cm_event_t ev;
    cm_session_t ses;
    cm_buf_t buf, mbuf_src;
    int64_t last_hb_ms, last_flush_ms;
    bool restoring;

    /* merge loop */
    cm_txloop_t *merge_loop;
    rd_kafka_t *merge_replayer;
    ag_mslot_t *slots;
    size_t n_slots;
    cm_buf_t mbuf;
    char mkey[KEY_MAX];

    /* metrics */
    cm_counter_t *c_events[4]; /* applied, late, duplicate, undecodable */
    cm_counter_t *c_sessions[4];
    cm_counter_t *c_panes_out, *c_heartbeats, *c_results, *c_replayed, *c_checkpoints;
    cm_counter_t *c_merge_bad, *c_results_dropped;
    cm_gauge_t *g_wm, *g_open, *g_closed, *g_merge_wm, *g_merge_windows, *g_lag_ms;
    cm_histogram_t *h_restore;
};

/* ------------------------------------------------------------ helpers */

static bool is_raw(const ag_app_t *a, const rd_kafka_message_t *m)
{
    return strcmp(rd_kafka_topic_name(m->rkt), a->cfg->topic_raw) == 0;
}

static int32_t cl_part(const ag_app_t *a, int kind, int32_t p)
{
    (void)kind;
    return p % a->n_cl;
}

static void src_ck_key(char *buf, size_t n, int kind, int32_t p)
{
    snprintf(buf, n, "%s/%d", kind == AG_SRC_RAW ? "raw" : kind == AG_SRC_SESSIONS ? "ses"
                                                                                    : "merge",
             (int)p);
}

static int32_t pane_part(const ag_app_t *a, const ag_pane_t *p)
{
    uint64_t n = (uint64_t)(p->start_ms / ag_window_sizes[p->size_idx]) * 3 + (uint64_t)p->size_idx;
    return (int32_t)(n % (uint64_t)a->n_panes);
}

static rd_kafka_t *replayer_new(ag_app_t *a, const char *what)
{
    char errstr[512];
    rd_kafka_conf_t *conf = cm_kafka_conf_new(a->cfg->bootstrap, a->pt, errstr, sizeof(errstr));
    if (!conf) {
        cm_log_error("replay consumer", "error", "%s", errstr, NULL);
        return NULL;
    }
    char gid[256];
    snprintf(gid, sizeof(gid), "%s.replay.%s", a->cfg->group_id, what);
    const char *kv[][2] = {{"group.id", gid},
                           {"enable.auto.commit", "false"},
                           {"enable.partition.eof", "true"},
                           {"isolation.level", "read_committed"},
                           {"auto.offset.reset", "earliest"}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], errstr, sizeof(errstr))) {
            cm_log_error("replay consumer", "error", "%s", errstr, NULL);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        cm_log_error("replay consumer", "error", "%s", errstr, NULL);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

typedef cm_err_t replay_fn(ag_app_t *a, const rd_kafka_message_t *m);

/*
 * Reads topic/partition from offset `from` up to `to` (exclusive) with a
 * read_committed consumer and calls fn for each record. Stops at the first
 * record at or past `to`, or at the partition's end.
 */
static cm_err_t replay(ag_app_t *a, rd_kafka_t *rk, const char *topic, int32_t partition,
                       int64_t from, int64_t to, replay_fn *fn, long *count)
{
    *count = 0;
    if (from >= to)
        return CM_OK;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = from;
    rd_kafka_resp_err_t err = rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err)
        return CM_ERR_KAFKA;
    int64_t deadline = cm_mono_ms() + a->cfg->restore_timeout_ms;
    cm_err_t rc = CM_OK;
    for (;;) {
        if (cm_mono_ms() > deadline) {
            rc = CM_ERR_TIMEOUT;
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (m->err) {
            rd_kafka_resp_err_t e = m->err;
            rd_kafka_message_destroy(m);
            if (e == RD_KAFKA_RESP_ERR__PARTITION_EOF)
                break;
            cm_log_warn("replay consume error", "error", "%s", rd_kafka_err2name(e), NULL);
            if (e == RD_KAFKA_RESP_ERR__FATAL) {
                rc = CM_ERR_KAFKA;
                break;
            }
            continue;
        }
        if (m->offset >= to) {
            rd_kafka_message_destroy(m);
            break;
        }
        int64_t off = m->offset;
        rc = fn(a, m);
        (*count)++;
        rd_kafka_message_destroy(m);
        if (rc || off + 1 >= to)
            break;
    }
    rd_kafka_assign(rk, NULL);
    if (a->c_replayed)
        cm_counter_add(a->c_replayed, (uint64_t)*count);
    return rc;
}

/* The newest changelog value of `key` (copied into out; out->len 0: none). */
typedef struct ck_find {
    const char *key;
    cm_buf_t *out;
    bool found;
} ck_find_t;

static cm_err_t ck_find_fn(const rd_kafka_message_t *m, void *ud)
{
    ck_find_t *f = ud;
    size_t kl = strlen(f->key);
    if (m->key_len != kl || memcmp(m->key, f->key, kl) != 0)
        return CM_OK;
    cm_buf_reset(f->out);
    f->found = m->payload != NULL;
    if (m->payload)
        return cm_buf_append(f->out, m->payload, m->len);
    return CM_OK;
}

static cm_err_t read_checkpoint(ag_app_t *a, cm_txloop_t *l, const char *key, int32_t part,
                                cm_buf_t *out, bool *found)
{
    ck_find_t f = {key, out, false};
    cm_buf_reset(out);
    cm_err_t err = cm_txloop_restore(l, a->cfg->topic_changelog, part, ck_find_fn, &f,
                                     (int)a->cfg->restore_timeout_ms);
    *found = f.found;
    return err;
}

/* ------------------------------------------------------- source loop */

static cm_err_t send_late(ag_app_t *a, cm_txloop_t *l, const rd_kafka_message_t *m,
                          const char *reason)
{
    cm_kafka_header_t h[2] = {{"reason", reason, strlen(reason)},
                              {"source", "aggregator", 10}};
    cm_kafka_msg_t out = {.topic = a->cfg->topic_late,
                          .partition = CM_KAFKA_PARTITION_ANY,
                          .key = m->key,
                          .key_len = m->key_len,
                          .value = m->payload ? m->payload : "",
                          .value_len = m->payload ? m->len : 0,
                          .headers = h,
                          .header_count = 2};
    cm_err_t err = cm_txloop_send(l, &out);
    return err == CM_ERR_INVALID ? CM_OK : err;
}

/* Applies one input record; outputs only when l != NULL (not replaying). */
static cm_err_t src_apply(ag_app_t *a, cm_txloop_t *l, const rd_kafka_message_t *m)
{
    bool raw = is_raw(a, m);
    ag_source_t *s = ag_state_find(a->st, raw ? AG_SRC_RAW : AG_SRC_SESSIONS, m->partition);
    if (!s || m->offset < s->next_offset)
        return CM_OK;
    int64_t now = cm_mono_ms();
    cm_avro_error_t aerr;
    ag_result_t res;
    cm_err_t err;
    if (raw) {
        err = m->payload ? cm_avro_decode_event(a->reg, m->payload, m->len, &a->ev, NULL, &aerr)
                         : CM_ERR_PARSE;
        if (err == CM_ERR_IO)
            return CM_ERR_RETRY;
        if (err == CM_ERR_NOMEM)
            return err;
        if (err) {
            if ((err = ag_source_skip(a->st, s, m->offset, now)))
                return err;
            cm_counter_inc(a->c_events[3]);
            return l ? send_late(a, l, m, "undecodable") : CM_OK;
        }
        err = ag_source_event(a->st, s, &a->ev, m->offset, now, &res);
        if (err)
            return err;
        cm_counter_inc(a->c_events[res == AG_APPLIED ? 0 : res == AG_LATE ? 1 : 2]);
        if (res == AG_LATE && l)
            return send_late(a, l, m, "late");
        return CM_OK;
    }
    err = m->payload
              ? cm_avro_decode_session(a->reg, m->payload, m->len, &a->ses, NULL, &aerr)
              : CM_ERR_PARSE;
    if (err == CM_ERR_IO)
        return CM_ERR_RETRY;
    if (err == CM_ERR_NOMEM)
        return err;
    if (err) {
        if ((err = ag_source_skip(a->st, s, m->offset, now)))
            return err;
        cm_counter_inc(a->c_sessions[3]);
        return CM_OK;
    }
    err = ag_source_session(a->st, s, &a->ses, m->offset, now, &res);
    if (err)
        return err;
    cm_counter_inc(a->c_sessions[res == AG_APPLIED ? 0 : res == AG_LATE ? 1 : 2]);
    return CM_OK;
}

static cm_err_t src_replay_fn(ag_app_t *a, const rd_kafka_message_t *m)
{
    return src_apply(a, NULL, m);
}

static cm_err_t src_process(cm_txloop_t *l, const rd_kafka_message_t *m, void *ud)
{
    return src_apply(ud, l, m);
}

/* Rebuilds the state of one source as of `committed` (see header). */
static cm_err_t restore_source(ag_app_t *a, cm_txloop_t *l, ag_src_kind_t kind, int32_t p,
                               int64_t committed)
{
    int64_t t0 = cm_mono_us();
    ag_source_t *old = ag_state_find(a->st, kind, p);
    if (old)
        ag_state_drop(a->st, old);
    char key[KEY_MAX];
    src_ck_key(key, sizeof(key), kind, p);
    cm_buf_t cp;
    cm_buf_init(&cp, 4096);
    bool found = false;
    cm_err_t err = read_checkpoint(a, l, key, cl_part(a, kind, p), &cp, &found);
    int64_t from = committed, max_ev = CM_WATERMARK_NONE, wm_then = CM_WATERMARK_NONE;
    int64_t(*keep)[2] = NULL;
    size_t n_keep = 0;
    if (!err && found) {
        /* "<offset> <max event> [<k>:<start> ...] @<watermark>" */
        char *txt = (char *)cm_buf_cstr(&cp), *save = NULL;
        size_t cap = 1;
        for (const char *q = txt; *q; q++)
            cap += *q == ' ';
        keep = calloc(cap, sizeof(*keep));
        int field = 0;
        bool ok = keep != NULL, have_wm = false;
        for (char *tok = strtok_r(txt, " ", &save); ok && tok; tok = strtok_r(NULL, " ", &save)) {
            char *colon = strchr(tok, ':');
            if (field == 0)
                from = strtoll(tok, NULL, 10);
            else if (field == 1)
                max_ev = strtoll(tok, NULL, 10);
            else if (tok[0] == '@') {
                wm_then = strtoll(tok + 1, NULL, 10);
                have_wm = true;
            }
            else if (colon) {
                keep[n_keep][0] = strtoll(tok, NULL, 10);
                keep[n_keep][1] = strtoll(colon + 1, NULL, 10);
                n_keep++;
            }
            field++;
        }
        if (!ok || field < 3 || !have_wm) {
            cm_log_warn("bad checkpoint ignored", "key", "%s", key, NULL);
            from = committed;
            max_ev = wm_then = CM_WATERMARK_NONE;
            found = false;
        }
    }
    cm_buf_free(&cp);
    if (err) {
        free(keep);
        return err;
    }
    if (committed < 0) { /* nothing committed: start from scratch */
        from = committed;
        max_ev = CM_WATERMARK_NONE;
        found = false;
    }
    if (from > committed)
        from = committed;
    ag_source_t *s = ag_state_source(a->st, kind, p, max_ev, cm_mono_ms());
    if (!s) {
        free(keep);
        return CM_ERR_NOMEM;
    }
    s->next_offset = from > 0 ? from : 0;
    long n = 0;
    if (found && committed > from) {
        const char *topic = kind == AG_SRC_RAW ? a->cfg->topic_raw : a->cfg->topic_sessions;
        a->restoring = true;
        err = replay(a, a->src_replayer, topic, p, from, committed, src_replay_fn, &n);
        a->restoring = false;
        if (err) {
            cm_log_error("replay failed", "topic", "%s", topic, "partition", "%d", (int)p,
                         "error", "%s", cm_err_str(err), NULL);
            free(keep);
            return err;
        }
    }
    if (committed >= 0)
        s->next_offset = committed;
    ag_source_restored(a->st, s);
    if (found && committed > from)
        ag_source_forget_closed(a->st, s, wm_then, (const int64_t(*)[2])keep, n_keep);
    free(keep);
    double secs = (double)(cm_mono_us() - t0) / 1e6;
    cm_histogram_observe(a->h_restore, secs);
    cm_log_info("partition restored", "kind", "%s", kind == AG_SRC_RAW ? "raw" : "sessions",
                "partition", "%d", (int)p, "committed", "%ld", (long)committed, "replay_from",
                "%ld", (long)from, "replayed", "%ld", n, "open_panes", "%ld", (long)s->n_open,
                "seconds", "%f", secs, NULL);
    return CM_OK;
}

static cm_err_t src_on_assign(cm_txloop_t *l, const rd_kafka_topic_partition_list_t *parts,
                              void *ud)
{
    ag_app_t *a = ud;
    for (int i = 0; i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &parts->elems[i];
        ag_src_kind_t kind =
            strcmp(tp->topic, a->cfg->topic_raw) == 0 ? AG_SRC_RAW : AG_SRC_SESSIONS;
        cm_err_t err = restore_source(a, l, kind, tp->partition, tp->offset);
        if (err)
            return err;
    }
    ag_redis_force_full(a->redis);
    return CM_OK;
}

static void src_on_revoke(cm_txloop_t *l, const rd_kafka_topic_partition_list_t *parts,
                          bool lost, void *ud)
{
    ag_app_t *a = ud;
    for (int i = 0; i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &parts->elems[i];
        ag_src_kind_t kind =
            strcmp(tp->topic, a->cfg->topic_raw) == 0 ? AG_SRC_RAW : AG_SRC_SESSIONS;
        ag_source_t *s = ag_state_find(a->st, kind, tp->partition);
        if (s)
            ag_state_drop(a->st, s);
    }
    cm_log_info("partitions revoked", "count", "%d", parts->cnt, "lost", "%b", (int)lost, NULL);
}

static void src_on_abort(cm_txloop_t *l, const rd_kafka_topic_partition_list_t *parts, void *ud)
{
    ag_app_t *a = ud;
    cm_log_warn("transaction aborted: restoring every partition", NULL);
    for (int i = 0; i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &parts->elems[i];
        ag_src_kind_t kind =
            strcmp(tp->topic, a->cfg->topic_raw) == 0 ? AG_SRC_RAW : AG_SRC_SESSIONS;
        if (restore_source(a, l, kind, tp->partition, tp->offset)) {
            cm_log_error("restore after abort failed: stopping", NULL);
            cm_signal_request_stop();
            return;
        }
    }
    ag_redis_force_full(a->redis);
}

/* Sends the changed panes that the merger needs: final ones, and every
 * changed one of an idle source (the merger stops waiting for it). */
static cm_err_t send_panes(ag_app_t *a, cm_txloop_t *l)
{
    int64_t now = cm_mono_ms();
    char key[KEY_MAX];
    for (size_t i = 0; i < a->st->n_src; i++) {
        ag_source_t *s = a->st->src[i];
        bool idle = cm_watermark_is_idle(a->st->wm, s->key, now);
        cm_err_t ferr = ag_source_fold(a->st, s);
        if (ferr)
            return ferr;
        for (size_t j = 0; j < s->n_open; j++) {
            ag_pane_t *p = s->open[j];
            if (!p->changed || !(p->final || idle))
                continue;
            cm_buf_reset(&a->buf);
            cm_err_t err = ag_pane_encode(s, p, &a->buf);
            if (err)
                return err;
            snprintf(key, sizeof(key), "p/%lld/%lld/%d",
                     (long long)ag_window_sizes[p->size_idx], (long long)p->start_ms,
                     (int)s->key);
            cm_kafka_msg_t m = {.topic = a->cfg->topic_panes,
                                .partition = pane_part(a, p),
                                .key = key,
                                .key_len = strlen(key),
                                .value = a->buf.data,
                                .value_len = a->buf.len};
            if (a->buf.len <= AG_PANE_CHUNK) {
                err = cm_txloop_send(l, &m);
            } else { /* too big for one Kafka message: chunks */
                uint32_t n = (uint32_t)((a->buf.len + AG_PANE_CHUNK - 1) / AG_PANE_CHUNK);
                for (uint32_t c = 0; !err && c < n; c++) {
                    cm_buf_reset(&a->mbuf_src);
                    err = ag_pane_chunk(s, p, a->buf.data, a->buf.len, c, n, &a->mbuf_src);
                    m.value = a->mbuf_src.data;
                    m.value_len = a->mbuf_src.len;
                    err = err ? err : cm_txloop_send(l, &m);
                }
            }
            if (err)
                return err;
            p->changed = false;
            cm_counter_inc(a->c_panes_out);
        }
        ag_source_advance(a->st, s);
    }
    return CM_OK;
}

static cm_err_t send_heartbeats(ag_app_t *a, cm_txloop_t *l)
{
    int64_t now = cm_mono_ms();
    char key[KEY_MAX];
    for (size_t i = 0; i < a->st->n_src; i++) {
        ag_source_t *s = a->st->src[i];
        bool idle = cm_watermark_is_idle(a->st->wm, s->key, now);
        cm_buf_reset(&a->buf);
        cm_err_t err = ag_heartbeat_encode(s->key, ag_source_wm(a->st, s), idle,
                                           s->kind == AG_SRC_RAW ? a->n_raw : a->n_ses, &a->buf);
        if (err)
            return err;
        snprintf(key, sizeof(key), "h/%d", (int)s->key);
        for (int32_t q = 0; q < a->n_panes; q++) {
            cm_kafka_msg_t m = {.topic = a->cfg->topic_panes,
                                .partition = q,
                                .key = key,
                                .key_len = strlen(key),
                                .value = a->buf.data,
                                .value_len = a->buf.len};
            err = cm_txloop_send(l, &m);
            if (err)
                return err;
        }
        cm_counter_inc(a->c_heartbeats);
    }
    return CM_OK;
}

/*
 * Checkpoint of a source, as text: "<replay offset> <max event before it>
 * [<size index>:<start> ...] @<watermark>": the closed panes listed are those
 * Redis has not got yet (kept after the replay), the watermark is the
 * source's at this commit (see ag_source_forget_closed). Written only when
 * the part before '@' changed, so about once per window per partition.
 */
static cm_err_t checkpoint_text(ag_app_t *a, ag_source_t *s, cm_buf_t *out, size_t *sig)
{
    int64_t off, mx;
    ag_source_checkpoint(a->st, s, &off, &mx);
    cm_buf_reset(out);
    cm_err_t err = cm_buf_printf(out, "%lld %lld", (long long)off, (long long)mx);
    for (size_t i = 0; !err && i < s->n_closed; i++)
        if (ag_pane_redis_dirty(a->st, s->closed[i]))
            err = cm_buf_printf(out, " %d:%lld", s->closed[i]->size_idx,
                                (long long)s->closed[i]->start_ms);
    *sig = out->len;
    return err ? err : cm_buf_printf(out, " @%lld", (long long)ag_source_wm(a->st, s));
}

static cm_err_t write_checkpoints(ag_app_t *a, cm_txloop_t *l)
{
    char key[KEY_MAX];
    for (size_t i = 0; i < a->st->n_src; i++) {
        ag_source_t *s = a->st->src[i];
        size_t sig = 0;
        cm_err_t err = checkpoint_text(a, s, &a->buf, &sig);
        if (err)
            return err;
        if (sig == s->ck_last.len && memcmp(a->buf.data, s->ck_last.data, sig) == 0)
            continue;
        src_ck_key(key, sizeof(key), s->kind, s->partition);
        cm_kafka_msg_t m = {.topic = a->cfg->topic_changelog,
                            .partition = cl_part(a, s->kind, s->partition),
                            .key = key,
                            .key_len = strlen(key),
                            .value = a->buf.data,
                            .value_len = a->buf.len};
        if ((err = cm_txloop_send(l, &m)))
            return err;
        cm_buf_reset(&s->ck_last);
        if ((err = cm_buf_append(&s->ck_last, a->buf.data, sig)))
            return err;
        cm_counter_inc(a->c_checkpoints);
    }
    return CM_OK;
}

static void update_gauges(ag_app_t *a)
{
    size_t open = 0, closed = 0;
    for (size_t i = 0; i < a->st->n_src; i++) {
        open += a->st->src[i]->n_open;
        closed += a->st->src[i]->n_closed;
    }
    cm_gauge_set_int(a->g_open, (int64_t)open);
    cm_gauge_set_int(a->g_closed, (int64_t)closed);
    int64_t wm = cm_watermark_get(a->st->wm, cm_mono_ms());
    if (wm != CM_WATERMARK_NONE) {
        cm_gauge_set_int(a->g_wm, wm);
        cm_gauge_set_int(a->g_lag_ms, cm_now_ms() - wm);
    }
}

static cm_err_t src_before_commit(cm_txloop_t *l, void *ud)
{
    ag_app_t *a = ud;
    cm_err_t err = send_panes(a, l);
    if (err)
        return err;
    /* Redis first: what this commit closes is then in Redis already, so the
     * checkpoint need not keep it for a replay (see ag_source_checkpoint) */
    a->last_flush_ms = cm_mono_ms();
    ag_redis_flush(a->redis, a->st, cm_now_ms());
    return write_checkpoints(a, l);
}

static void src_tick(cm_txloop_t *l, int64_t now_ms, void *ud)
{
    ag_app_t *a = ud;
    int64_t mono = cm_mono_ms();
    if (mono - a->last_hb_ms >= a->cfg->heartbeat_interval_ms && a->st->n_src > 0) {
        a->last_hb_ms = mono;
        if (send_panes(a, l) || send_heartbeats(a, l))
            cm_log_warn("heartbeat not sent", NULL);
    }
    if (mono - a->last_flush_ms >= a->cfg->flush_interval_ms) {
        a->last_flush_ms = mono;
        ag_redis_flush(a->redis, a->st, now_ms);
        update_gauges(a);
    }
}

/* -------------------------------------------------------- merge loop */

static ag_mslot_t *slot_find(ag_app_t *a, int32_t q)
{
    for (size_t i = 0; i < a->n_slots; i++)
        if (a->slots[i].q == q)
            return &a->slots[i];
    return NULL;
}

static void slot_drop(ag_app_t *a, int32_t q)
{
    for (size_t i = 0; i < a->n_slots; i++) {
        if (a->slots[i].q == q) {
            ag_merger_destroy(a->slots[i].m);
            cm_buf_free(&a->slots[i].last_cp);
            a->slots[i] = a->slots[--a->n_slots];
            return;
        }
    }
}

typedef struct emit_ctx {
    ag_app_t *a;
    cm_txloop_t *l;
} emit_ctx_t;

static cm_err_t emit_result(const cm_window_result_t *r, void *ud)
{
    emit_ctx_t *e = ud;
    ag_app_t *a = e->a;
    cm_buf_reset(&a->mbuf);
    cm_err_t err = cm_avro_encode_window_result(r, a->wr_schema_id, &a->mbuf);
    if (err) {
        cm_log_error("window result not encodable", "error", "%s", cm_err_str(err), NULL);
        return err == CM_ERR_NOMEM ? err : CM_OK;
    }
    snprintf(a->mkey, sizeof(a->mkey), "%lld/%lld/%s", (long long)r->window_size_ms,
             (long long)r->window_start_ms, r->dimension);
    err = cm_txloop_produce(e->l, a->cfg->topic_metrics, a->mkey, strlen(a->mkey), a->mbuf.data,
                            a->mbuf.len, NULL, 0);
    if (err == CM_ERR_INVALID) {
        /* refused locally (too large for the topic's message size): the
         * transaction is not harmed; the window's other records go on */
        cm_log_error("window result not produced", "key", "%s", a->mkey, "bytes", "%ld",
                     (long)a->mbuf.len, NULL);
        cm_counter_inc(a->c_results_dropped);
        return CM_OK;
    }
    if (!err)
        cm_counter_inc(a->c_results);
    return err;
}

static cm_err_t merge_replay_fn(ag_app_t *a, const rd_kafka_message_t *m)
{
    ag_mslot_t *s = slot_find(a, m->partition);
    if (!s || !m->payload)
        return CM_OK;
    cm_err_t err = ag_merger_apply(s->m, m->payload, m->len, m->offset, true, 0);
    return err == CM_ERR_PARSE ? CM_OK : err;
}

static cm_err_t restore_merger(ag_app_t *a, cm_txloop_t *l, int32_t q, int64_t committed)
{
    slot_drop(a, q);
    ag_mslot_t *ns = realloc(a->slots, (a->n_slots + 1) * sizeof(*ns));
    if (!ns)
        return CM_ERR_NOMEM;
    a->slots = ns;
    ag_mslot_t *s = &a->slots[a->n_slots];
    memset(s, 0, sizeof(*s));
    s->q = q;
    cm_buf_init(&s->last_cp, 0);
    if (!(s->m = ag_merger_new(a->cfg->lateness_ms, a->cfg->merge_grace_ms)))
        return CM_ERR_NOMEM;
    a->n_slots++;
    char key[KEY_MAX];
    src_ck_key(key, sizeof(key), 2, q);
    cm_buf_t cp;
    cm_buf_init(&cp, 0);
    bool found = false;
    cm_err_t err = read_checkpoint(a, l, key, q % a->n_cl, &cp, &found);
    int64_t from = committed;
    long n = 0;
    if (!err && found && committed >= 0 && !ag_merger_load_checkpoint(cp.data, cp.len, &from)) {
        if (from < committed)
            err = replay(a, a->merge_replayer, a->cfg->topic_panes, q, from, committed,
                         merge_replay_fn, &n);
        if (!err)
            err = ag_merger_finish_restore(s->m, cp.data, cp.len);
    } else if (!err) {
        found = false;
        err = ag_merger_finish_restore(s->m, NULL, 0);
    }
    if (!err && found) {
        size_t sig = 0;
        cm_buf_t tmp;
        cm_buf_init(&tmp, 0);
        if (!ag_merger_checkpoint(s->m, committed, &tmp, &sig))
            cm_buf_append(&s->last_cp, tmp.data, sig);
        cm_buf_free(&tmp);
    }
    cm_buf_free(&cp);
    s->next_offset = committed;
    ag_merger_stats_t ms;
    ag_merger_get_stats(s->m, &ms);
    cm_log_info("merger restored", "partition", "%d", (int)q, "committed", "%ld",
                (long)committed, "checkpoint", "%b", (int)found, "replayed", "%ld", n,
                "windows", "%ld", (long)ms.windows, "result", "%s", cm_err_str(err), NULL);
    return err;
}

static cm_err_t merge_process(cm_txloop_t *l, const rd_kafka_message_t *m, void *ud)
{
    ag_app_t *a = ud;
    ag_mslot_t *s = slot_find(a, m->partition);
    if (!s || !m->payload)
        return CM_OK;
    s->next_offset = m->offset + 1;
    cm_err_t err = ag_merger_apply(s->m, m->payload, m->len, m->offset, false, cm_mono_ms());
    if (err == CM_ERR_PARSE) {
        cm_counter_inc(a->c_merge_bad);
        return CM_OK;
    }
    if (err)
        return err;
    emit_ctx_t e = {a, l};
    return ag_merger_flush(s->m, emit_result, &e, cm_mono_ms());
}

static cm_err_t merge_before_commit(cm_txloop_t *l, void *ud)
{
    ag_app_t *a = ud;
    emit_ctx_t e = {a, l};
    char key[KEY_MAX];
    for (size_t i = 0; i < a->n_slots; i++) {
        ag_mslot_t *s = &a->slots[i];
        cm_err_t err = ag_merger_flush(s->m, emit_result, &e, cm_mono_ms());
        if (err)
            return err;
        cm_buf_reset(&a->mbuf);
        size_t sig = 0;
        if ((err = ag_merger_checkpoint(s->m, s->next_offset, &a->mbuf, &sig)))
            return err;
        if (sig == s->last_cp.len && memcmp(a->mbuf.data, s->last_cp.data, sig) == 0)
            continue;
        src_ck_key(key, sizeof(key), 2, s->q);
        cm_kafka_msg_t m = {.topic = a->cfg->topic_changelog,
                            .partition = s->q % a->n_cl,
                            .key = key,
                            .key_len = strlen(key),
                            .value = a->mbuf.data,
                            .value_len = a->mbuf.len};
        if ((err = cm_txloop_send(l, &m)))
            return err;
        cm_buf_reset(&s->last_cp);
        cm_buf_append(&s->last_cp, a->mbuf.data, sig);
        cm_counter_inc(a->c_checkpoints);
    }
    return CM_OK;
}

static cm_err_t merge_on_assign(cm_txloop_t *l, const rd_kafka_topic_partition_list_t *parts,
                                void *ud)
{
    ag_app_t *a = ud;
    for (int i = 0; i < parts->cnt; i++) {
        cm_err_t err = restore_merger(a, l, parts->elems[i].partition, parts->elems[i].offset);
        if (err)
            return err;
    }
    return CM_OK;
}

static void merge_on_revoke(cm_txloop_t *l, const rd_kafka_topic_partition_list_t *parts,
                            bool lost, void *ud)
{
    ag_app_t *a = ud;
    for (int i = 0; i < parts->cnt; i++)
        slot_drop(a, parts->elems[i].partition);
}

static void merge_on_abort(cm_txloop_t *l, const rd_kafka_topic_partition_list_t *parts,
                           void *ud)
{
    ag_app_t *a = ud;
    for (int i = 0; i < parts->cnt; i++) {
        if (restore_merger(a, l, parts->elems[i].partition, parts->elems[i].offset)) {
            cm_log_error("merger restore after abort failed: stopping", NULL);
            cm_signal_request_stop();
            return;
        }
    }
}

static void merge_tick(cm_txloop_t *l, int64_t now_ms, void *ud)
{
    ag_app_t *a = ud;
    int64_t wm = INT64_MIN;
    size_t windows = 0;
    for (size_t i = 0; i < a->n_slots; i++) {
        ag_merger_stats_t ms;
        ag_merger_get_stats(a->slots[i].m, &ms);
        windows += ms.windows;
        if (ms.watermark > wm)
            wm = ms.watermark;
    }
    cm_gauge_set_int(a->g_merge_windows, (int64_t)windows);
    if (wm != INT64_MIN)
        cm_gauge_set_int(a->g_merge_wm, wm);
}

/* ---------------------------------------------------------- topics */

static int32_t topic_partitions(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int32_t n = -1;
    if (t && !rd_kafka_metadata(rk, 0, t, &md, 10000)) {
        if (md->topic_cnt == 1 && !md->topics[0].err)
            n = md->topics[0].partition_cnt;
        rd_kafka_metadata_destroy(md);
    }
    if (t)
        rd_kafka_topic_destroy(t);
    return n;
}

/* Partitions of a topic just created: metadata may take a moment to show it. */
static int32_t wait_partitions(rd_kafka_t *rk, const char *topic)
{
    int32_t n = -1;
    for (int i = 0; i < 100 && n <= 0; i++) {
        if ((n = topic_partitions(rk, topic)) <= 0)
            usleep(100 * 1000);
    }
    return n;
}

/* An input or output topic at start-up: a broker just started (or a topic
 * just created by a deployment script) can take seconds to show it in
 * metadata. Waits up to AG_TOPIC_WAIT_MS, saying so once. */
#define AG_TOPIC_WAIT_MS 30000
static int32_t wait_topic(rd_kafka_t *rk, const char *topic)
{
    int64_t deadline = cm_mono_ms() + AG_TOPIC_WAIT_MS;
    bool said = false;
    for (;;) {
        int32_t n = topic_partitions(rk, topic);
        if (n > 0 || cm_mono_ms() >= deadline || cm_signal_stop_requested())
            return n;
        if (!said) {
            cm_log_warn("waiting for a topic", "topic", "%s", topic, "seconds", "%d",
                        AG_TOPIC_WAIT_MS / 1000, NULL);
            said = true;
        }
        cm_signal_wait(500);
    }
}

static bool create_topic(rd_kafka_t *rk, const char *name, int parts, bool compact,
                         char *errstr, size_t n)
{
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(name, parts, -1, errstr, n);
    if (!nt)
        return false;
    if (compact) {
        rd_kafka_NewTopic_set_config(nt, "cleanup.policy", "compact");
        rd_kafka_NewTopic_set_config(nt, "segment.ms", "600000");
        rd_kafka_NewTopic_set_config(nt, "min.cleanable.dirty.ratio", "0.1");
    } else {
        rd_kafka_NewTopic_set_config(nt, "retention.ms", "259200000"); /* 3 days */
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 20000);
    bool ok = false;
    if (!ev) {
        snprintf(errstr, n, "create topic %s: timed out", name);
    } else {
        const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
        size_t cnt = 0;
        const rd_kafka_topic_result_t **tr = res ? rd_kafka_CreateTopics_result_topics(res, &cnt)
                                                 : NULL;
        rd_kafka_resp_err_t e = rd_kafka_event_error(ev);
        if (!e && cnt == 1)
            e = rd_kafka_topic_result_error(tr[0]);
        ok = !e || e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS;
        if (!ok)
            snprintf(errstr, n, "create topic %s: %s", name, rd_kafka_err2str(e));
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    return ok;
}

static bool setup_topics(ag_app_t *a, char *errstr, size_t n)
{
    rd_kafka_conf_t *conf = cm_kafka_conf_new(a->cfg->bootstrap, a->pt, errstr, n);
    if (!conf)
        return false;
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, n);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return false;
    }
    bool ok = false;
    a->n_raw = wait_topic(rk, a->cfg->topic_raw);
    if (a->n_raw <= 0) {
        snprintf(errstr, n, "topic %s not found within 30 s (or Kafka unreachable)", a->cfg->topic_raw);
        goto out;
    }
    a->n_ses = 0;
    if (a->sessions_on && (a->n_ses = wait_topic(rk, a->cfg->topic_sessions)) <= 0) {
        snprintf(errstr, n, "topic %s not found", a->cfg->topic_sessions);
        goto out;
    }
    /* outputs: a record for a missing topic would wait in the producer until
     * its transaction times out, again and again */
    const char *outs[2] = {a->cfg->topic_metrics, a->cfg->topic_late};
    for (int i = 0; i < 2; i++) {
        if (wait_topic(rk, outs[i]) <= 0) {
            snprintf(errstr, n, "topic %s not found", outs[i]);
            goto out;
        }
    }
    int32_t want_cl = a->n_raw > a->n_ses ? a->n_raw : a->n_ses;
    a->n_cl = topic_partitions(rk, a->cfg->topic_changelog);
    if (a->n_cl <= 0 && a->cfg->create_topics) {
        if (!create_topic(rk, a->cfg->topic_changelog, want_cl, true, errstr, n))
            goto out;
        a->n_cl = wait_partitions(rk, a->cfg->topic_changelog);
        cm_log_info("topic created", "topic", "%s", a->cfg->topic_changelog, "partitions", "%d",
                    (int)a->n_cl, NULL);
    }
    a->n_panes = topic_partitions(rk, a->cfg->topic_panes);
    if (a->n_panes <= 0 && a->cfg->create_topics) {
        if (!create_topic(rk, a->cfg->topic_panes, (int)a->cfg->panes_partitions, false, errstr,
                          n))
            goto out;
        a->n_panes = wait_partitions(rk, a->cfg->topic_panes);
        cm_log_info("topic created", "topic", "%s", a->cfg->topic_panes, "partitions", "%d",
                    (int)a->n_panes, NULL);
    }
    if (a->n_cl <= 0 || a->n_panes <= 0) {
        snprintf(errstr, n, "internal topics %s / %s missing", a->cfg->topic_changelog,
                 a->cfg->topic_panes);
        goto out;
    }
    ok = true;
out:
    rd_kafka_destroy(rk);
    return ok;
}

/* ------------------------------------------------------------ metrics */

static bool ready_fn(void *ud, char *reason, size_t size)
{
    ag_app_t *a = ud;
    if (!cm_txloop_ready(a->src_loop)) {
        snprintf(reason, size, "no input partition assigned");
        return false;
    }
    if (!ag_redis_up(a->redis)) {
        snprintf(reason, size, "redis unreachable");
        return false;
    }
    return true;
}

#define TXSTAT(name, field)                                                                  \
    static double name(void *ud)                                                             \
    {                                                                                        \
        cm_txloop_stats_t s;                                                                 \
        cm_txloop_get_stats(ud, &s);                                                         \
        return (double)s.field;                                                              \
    }
TXSTAT(tx_commits, commits)
TXSTAT(tx_aborts, aborts)
TXSTAT(tx_in, msgs_in)
TXSTAT(tx_out, msgs_produced)
TXSTAT(tx_rebalances, rebalances)
TXSTAT(tx_assigned, assigned_partitions)
TXSTAT(tx_lag, consumer_lag)
static double tx_lat_avg(void *ud)
{
    cm_txloop_stats_t s;
    cm_txloop_get_stats(ud, &s);
    return s.commit_lat_count ? (double)s.commit_lat_us_sum / (double)s.commit_lat_count / 1e6
                              : 0.0;
}

static void register_loop_metrics(ag_app_t *a, cm_txloop_t *l, const char *name)
{
    cm_metrics_counter_fn(a->metrics, "aggregator_transactions_total",
                          "Kafka transactions committed", tx_commits, l, "loop", name, NULL);
    cm_metrics_counter_fn(a->metrics, "aggregator_transaction_aborts_total",
                          "Kafka transactions aborted", tx_aborts, l, "loop", name, NULL);
    cm_metrics_counter_fn(a->metrics, "aggregator_records_in_total",
                          "input records processed", tx_in, l, "loop", name, NULL);
    cm_metrics_counter_fn(a->metrics, "aggregator_records_out_total",
                          "records produced in transactions", tx_out, l, "loop", name, NULL);
    cm_metrics_counter_fn(a->metrics, "aggregator_rebalances_total", "assign + revoke events",
                          tx_rebalances, l, "loop", name, NULL);
    cm_metrics_gauge_fn(a->metrics, "aggregator_assigned_partitions",
                        "input partitions assigned", tx_assigned, l, "loop", name, NULL);
    cm_metrics_gauge_fn(a->metrics, "aggregator_consumer_lag_records",
                        "input records not yet read (end offsets - positions; -1: not yet known)",
                        tx_lag, l, "loop", name, NULL);
    cm_metrics_gauge_fn(a->metrics, "aggregator_commit_seconds_avg",
                        "average Kafka commit latency", tx_lat_avg, l, "loop", name, NULL);
}

static void register_metrics(ag_app_t *a)
{
    const char *res[4] = {"applied", "late", "duplicate", "undecodable"};
    const char *sres[4] = {"applied", "late", "ignored", "undecodable"};
    for (int i = 0; i < 4; i++) {
        a->c_events[i] = cm_metrics_counter(a->metrics, "aggregator_events_total",
                                            "events by outcome", "result", res[i], NULL);
        a->c_sessions[i] = cm_metrics_counter(a->metrics, "aggregator_sessions_total",
                                              "session records by outcome", "result", sres[i],
                                              NULL);
    }
    a->c_panes_out = cm_metrics_counter(a->metrics, "aggregator_panes_sent_total",
                                        "pane records sent to the merger", NULL);
    a->c_heartbeats = cm_metrics_counter(a->metrics, "aggregator_heartbeats_total",
                                         "watermark heartbeats sent (per source)", NULL);
    a->c_results = cm_metrics_counter(a->metrics, "aggregator_window_results_total",
                                      "WindowResult records produced to the metrics topic",
                                      NULL);
    a->c_results_dropped = cm_metrics_counter(
        a->metrics, "aggregator_window_results_dropped_total",
        "WindowResult records Kafka refused (larger than the message size)", NULL);
    a->c_replayed = cm_metrics_counter(a->metrics, "aggregator_replayed_records_total",
                                       "records re-read to restore state", NULL);
    a->c_checkpoints = cm_metrics_counter(a->metrics, "aggregator_checkpoints_total",
                                          "checkpoint records written", NULL);
    a->c_merge_bad = cm_metrics_counter(a->metrics, "aggregator_merge_bad_records_total",
                                        "unreadable records on the panes topic", NULL);
    a->g_wm = cm_metrics_gauge(a->metrics, "aggregator_watermark_ms",
                               "service watermark (event time, ms)", NULL);
    a->g_lag_ms = cm_metrics_gauge(a->metrics, "aggregator_watermark_lag_ms",
                                   "wall clock minus the service watermark", NULL);
    a->g_open = cm_metrics_gauge(a->metrics, "aggregator_open_panes",
                                 "panes (window x partition) still open", NULL);
    a->g_closed = cm_metrics_gauge(a->metrics, "aggregator_kept_panes",
                                   "closed panes kept for a Redis rebuild", NULL);
    a->g_merge_wm = cm_metrics_gauge(a->metrics, "aggregator_merge_watermark_ms",
                                     "the merger's watermark (event time, ms)", NULL);
    a->g_merge_windows = cm_metrics_gauge(a->metrics, "aggregator_merge_windows",
                                          "windows held by the merger", NULL);
    a->h_restore = cm_metrics_histogram(a->metrics, "aggregator_restore_seconds",
                                        "time to restore one partition", NULL, 0, NULL);
}

/* ---------------------------------------------------------- lifecycle */

static bool should_stop(void *ud)
{
    (void)ud;
    return cm_signal_stop_requested();
}

ag_app_t *ag_app_new(const ag_config_t *cfg, const cm_passthrough_t *pt, bool *config_error,
                     char *errstr, size_t errstr_size)
{
    *config_error = false;
    ag_app_t *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    a->cfg = cfg;
    a->pt = pt;
    a->sessions_on = cfg->topic_sessions && cfg->topic_sessions[0] &&
                     strcmp(cfg->topic_sessions, "-") != 0;
    cm_event_init(&a->ev);
    cm_session_init(&a->ses);
    cm_buf_init(&a->buf, 64 * 1024 * 1024);
    cm_buf_init(&a->mbuf_src, 2 * AG_PANE_CHUNK);
    cm_buf_init(&a->mbuf, 64 * 1024 * 1024);
    if (cfg->instance_id && cfg->instance_id[0]) {
        snprintf(a->instance, sizeof(a->instance), "%s", cfg->instance_id);
    } else if (gethostname(a->instance, sizeof(a->instance) - 1) != 0) {
        snprintf(a->instance, sizeof(a->instance), "aggregator");
    }
    if (!(a->metrics = cm_metrics_new())) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    cm_metrics_register_process(a->metrics);
    register_metrics(a);
    if (!(a->reg = cm_registry_new(cfg->registry_url, errstr, errstr_size))) {
        *config_error = true;
        goto fail;
    }
    char subject[300];
    if (cm_registry_subject(cfg->topic_metrics, subject, sizeof(subject)) ||
        cm_registry_id(a->reg, subject, CM_SCHEMA_WINDOW_RESULT, &a->wr_schema_id, errstr,
                       errstr_size))
        goto fail;

    ag_window_opts_t wo = {.bound_ms = cfg->bound_ms,
                           .lateness_ms = cfg->lateness_ms,
                           .idle_ms = cfg->idle_ms,
                           .dedupe_max = (size_t)cfg->dedupe_max};
    const int64_t keep[AG_N_SIZES] = {3600000LL, 6 * 3600000LL, 48 * 3600000LL};
    for (int k = 0; k < AG_N_SIZES; k++)
        wo.keep_closed_ms[k] = cfg->keep_closed ? keep[k] : 0;
    if (!(a->st = ag_state_new(&wo, errstr, errstr_size)))
        goto fail;

    ag_redis_opts_t ro = {.host = cfg->redis_host,
                          .port = (int)cfg->redis_port,
                          .prefix = cfg->redis_prefix,
                          .replica = a->instance,
                          .connect_timeout_ms = cfg->redis_timeout_ms,
                          .retry_ms = cfg->redis_retry_ms,
                          .ttl_s = {3600, 6 * 3600, 48 * 3600},
                          .coarse_dims_ms = cfg->coarse_flush_ms,
                          .metrics = a->metrics};
    if (!(a->redis = ag_redis_new(&ro, errstr, errstr_size))) {
        *config_error = true;
        goto fail;
    }
    if (!setup_topics(a, errstr, errstr_size))
        goto fail;
    if (!(a->src_replayer = replayer_new(a, "src")) ||
        !(a->merge_replayer = replayer_new(a, "merge"))) {
        snprintf(errstr, errstr_size, "cannot create the replay consumers");
        goto fail;
    }

    const char *topics[2] = {cfg->topic_raw, cfg->topic_sessions};
    char txid[300], gid[300];
    snprintf(txid, sizeof(txid), "%s-%s-src", cfg->group_id, a->instance);
    cm_txloop_opts_t so = {
        .bootstrap = cfg->bootstrap,
        .pt = pt,
        .group_id = cfg->group_id,
        .topics = topics,
        .topic_count = a->sessions_on ? 2 : 1,
        .transactional_id = txid,
        .client_id = "aggregator",
        .commit_interval_ms = (int)cfg->commit_interval_ms,
        .commit_max_msgs = 50000,
        .tick_interval_ms = 50,
        .should_stop = should_stop,
        .cb = {.process = src_process,
               .on_assign = src_on_assign,
               .on_revoke = src_on_revoke,
               .on_abort = src_on_abort,
               .before_commit = src_before_commit,
               .tick = src_tick},
        .opaque = a,
    };
    if (!(a->src_loop = cm_txloop_new(&so, errstr, errstr_size)))
        goto fail;
    register_loop_metrics(a, a->src_loop, "source");

    if (cfg->merger) {
        const char *mtopics[1] = {cfg->topic_panes};
        snprintf(txid, sizeof(txid), "%s-%s-merge", cfg->group_id, a->instance);
        snprintf(gid, sizeof(gid), "%s.merge", cfg->group_id);
        cm_txloop_opts_t mo = {
            .bootstrap = cfg->bootstrap,
            .pt = pt,
            .group_id = gid,
            .topics = mtopics,
            .topic_count = 1,
            .transactional_id = txid,
            .client_id = "aggregator-merge",
            .commit_interval_ms = (int)cfg->commit_interval_ms,
            .tick_interval_ms = 200,
            .should_stop = should_stop,
            .cb = {.process = merge_process,
                   .on_assign = merge_on_assign,
                   .on_revoke = merge_on_revoke,
                   .on_abort = merge_on_abort,
                   .before_commit = merge_before_commit,
                   .tick = merge_tick},
            .opaque = a,
        };
        if (!(a->merge_loop = cm_txloop_new(&mo, errstr, errstr_size)))
            goto fail;
        register_loop_metrics(a, a->merge_loop, "merge");
    }

    if (!(a->admin = cm_admin_start(cfg->common.admin_addr, (int)cfg->common.admin_port,
                                    a->metrics, errstr, errstr_size))) {
        *config_error = false;
        goto fail;
    }
    cm_admin_set_ready_fn(a->admin, ready_fn, a);
    return a;
fail:
    ag_app_destroy(a);
    return NULL;
}

static void *merge_thread(void *ud)
{
    ag_app_t *a = ud;
    cm_err_t err = cm_txloop_run(a->merge_loop);
    if (err) {
        cm_log_error("merge loop stopped", "error", "%s", cm_err_str(err), NULL);
        cm_signal_request_stop();
    }
    return (void *)(intptr_t)err;
}

cm_err_t ag_app_run(ag_app_t *a)
{
    pthread_t th;
    bool started = false;
    if (a->merge_loop) {
        if (pthread_create(&th, NULL, merge_thread, a) != 0)
            return CM_ERR_IO;
        started = true;
    }
    cm_log_info("running", "raw_partitions", "%d", (int)a->n_raw, "sessions_partitions", "%d",
                (int)a->n_ses, "panes_partitions", "%d", (int)a->n_panes, "admin_port", "%d",
                cm_admin_port(a->admin), "instance", "%s", a->instance, NULL);
    cm_err_t err = cm_txloop_run(a->src_loop);
    if (err) {
        cm_log_error("source loop stopped", "error", "%s", cm_err_str(err), NULL);
        cm_signal_request_stop();
    }
    /* a last Redis write of what was committed at the stop */
    if (!err) {
        ag_redis_drain(a->redis, 2000);
        ag_redis_flush(a->redis, a->st, cm_now_ms());
        ag_redis_drain(a->redis, 2000);
    }
    if (started) {
        void *r = NULL;
        pthread_join(th, &r);
        if (!err)
            err = (cm_err_t)(intptr_t)r;
    }
    return err;
}

void ag_app_destroy(ag_app_t *a)
{
    if (!a)
        return;
    cm_admin_stop(a->admin);
    cm_txloop_destroy(a->src_loop);
    cm_txloop_destroy(a->merge_loop);
    if (a->src_replayer) {
        rd_kafka_consumer_close(a->src_replayer);
        rd_kafka_destroy(a->src_replayer);
    }
    if (a->merge_replayer) {
        rd_kafka_consumer_close(a->merge_replayer);
        rd_kafka_destroy(a->merge_replayer);
    }
    for (size_t i = 0; i < a->n_slots; i++) {
        ag_merger_destroy(a->slots[i].m);
        cm_buf_free(&a->slots[i].last_cp);
    }
    free(a->slots);
    ag_redis_destroy(a->redis);
    ag_state_destroy(a->st);
    cm_registry_destroy(a->reg);
    cm_event_free(&a->ev);
    cm_session_free(&a->ses);
    cm_buf_free(&a->buf);
    cm_buf_free(&a->mbuf_src);
    cm_buf_free(&a->mbuf);
    cm_metrics_destroy(a->metrics);
    free(a);
}
