/*
 * aggregator_redis.c: the Redis writer (contract in the header).
 */
#include "aggregator_redis.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "cm_log.h"
#include "cm_time.h"

#define MAX_PAIRS 512     /* field/value pairs per HSET */
#define KEY_MAX 512

struct ag_redis {
    char *host, *prefix, *replica;
    int port;
    int64_t timeout_ms, retry_ms;
    int64_t ttl_s[AG_N_SIZES];
    int64_t coarse_dims_ms, last_coarse_ms;
    bool coarse_due; /* this batch writes the open coarse windows' dimensions */
    /* builder side (the source loop's thread) */
    cm_buf_t batch;  /* commands of the batch being built (RESP) */
    int n_cmds;      /* in batch */
    uint64_t gen;    /* id of the last batch built */
    const char *argv[2 + 2 * MAX_PAIRS];
    size_t argvlen[2 + 2 * MAX_PAIRS];
    char num[2 * MAX_PAIRS][24];
    uint8_t hll[CM_HLL_REDIS_SIZE];
    cm_buf_t note;
    /* shared with the writer thread (mutex) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool thread_started, stop;
    cm_buf_t inflight; /* handed to the writer; len 0: none */
    int inflight_cmds;
    uint64_t inflight_gen;
    /* atomics */
    _Atomic bool up, need_full;
    _Atomic uint64_t acked; /* last batch written and answered */
    _Atomic uint64_t flushes, commands, errors, full_rewrites, bytes;
    /* writer thread only */
    redisContext *c;
    /* metrics */
    cm_histogram_t *lat;
    cm_counter_t *m_cmds, *m_errs, *m_full;
    cm_gauge_t *m_up;
};

static void *writer_main(void *ud);

ag_redis_t *ag_redis_new(const ag_redis_opts_t *o, char *errstr, size_t errstr_size)
{
    if (!o->host || !o->prefix || strlen(o->prefix) > 128 || o->port <= 0) {
        snprintf(errstr, errstr_size, "redis: bad host, port or prefix");
        return NULL;
    }
    ag_redis_t *r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    cm_buf_init(&r->batch, 0);
    cm_buf_init(&r->inflight, 0);
    cm_buf_init(&r->note, 64 * 1024);
    r->host = strdup(o->host);
    r->prefix = strdup(o->prefix);
    r->replica = strdup(o->replica ? o->replica : "");
    if (!r->host || !r->prefix || !r->replica) {
        ag_redis_destroy(r);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    r->port = o->port;
    r->timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 1000;
    r->retry_ms = o->retry_ms > 0 ? o->retry_ms : 1000;
    for (int k = 0; k < AG_N_SIZES; k++)
        r->ttl_s[k] = o->ttl_s[k] > 0 ? o->ttl_s[k] : 3600;
    r->coarse_dims_ms = o->coarse_dims_ms;
    r->last_coarse_ms = INT64_MIN / 2;
    atomic_store(&r->need_full, true);
    if (o->metrics) {
        static const double b[] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                   0.025,  0.05,  0.1,    0.25,  1};
        r->lat = cm_metrics_histogram(o->metrics, "aggregator_redis_write_seconds",
                                      "latency of one pipelined Redis flush", b,
                                      sizeof(b) / sizeof(b[0]), NULL);
        r->m_cmds = cm_metrics_counter(o->metrics, "aggregator_redis_commands_total",
                                       "Redis commands sent", NULL);
        r->m_errs = cm_metrics_counter(o->metrics, "aggregator_redis_errors_total",
                                       "failed Redis flushes and error replies", NULL);
        r->m_full = cm_metrics_counter(o->metrics, "aggregator_redis_full_rewrites_total",
                                       "rewrites of every pane (reconnect, Redis emptied)",
                                       NULL);
        r->m_up = cm_metrics_gauge(o->metrics, "aggregator_redis_up",
                                   "1 when the last Redis flush succeeded", NULL);
    }
    if (pthread_create(&r->thread, NULL, writer_main, r) != 0) {
        ag_redis_destroy(r);
        snprintf(errstr, errstr_size, "redis: cannot start the writer thread");
        return NULL;
    }
    r->thread_started = true;
    return r;
}

void ag_redis_destroy(ag_redis_t *r)
{
    if (!r)
        return;
    if (r->thread_started) {
        pthread_mutex_lock(&r->mu);
        r->stop = true;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    if (r->c)
        redisFree(r->c);
    free(r->host);
    free(r->prefix);
    free(r->replica);
    cm_buf_free(&r->batch);
    cm_buf_free(&r->inflight);
    cm_buf_free(&r->note);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void ag_redis_force_full(ag_redis_t *r)
{
    atomic_store(&r->need_full, true);
}

bool ag_redis_up(const ag_redis_t *r)
{
    return atomic_load(&r->up);
}

void ag_redis_get_stats(const ag_redis_t *r, ag_redis_stats_t *out)
{
    out->flushes = atomic_load(&r->flushes);
    out->commands = atomic_load(&r->commands);
    out->errors = atomic_load(&r->errors);
    out->full_rewrites = atomic_load(&r->full_rewrites);
    out->bytes = atomic_load(&r->bytes);
}

static void set_up(ag_redis_t *r, bool up)
{
    atomic_store(&r->up, up);
    if (r->m_up)
        cm_gauge_set(r->m_up, up ? 1 : 0);
}

static void count_error(ag_redis_t *r)
{
    atomic_fetch_add(&r->errors, 1);
    if (r->m_errs)
        cm_counter_inc(r->m_errs);
}

/* ------------------------------------------------------- writer thread */

static void drop_conn(ag_redis_t *r, const char *why)
{
    if (r->c) {
        cm_log_warn("redis connection lost", "error", "%s", why, NULL);
        redisFree(r->c);
        r->c = NULL;
    }
    set_up(r, false);
    atomic_store(&r->need_full, true); /* what was in flight may be lost */
    count_error(r);
}

static bool writer_connect(ag_redis_t *r)
{
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(r->host, r->port, tv);
    if (!c || c->err) {
        if (c) {
            cm_log_warn("redis connect failed", "host", "%s", r->host, "port", "%d", r->port,
                        "error", "%s", c->errstr, NULL);
            redisFree(c);
        }
        set_up(r, false);
        count_error(r);
        return false;
    }
    redisSetTimeout(c, tv);
    r->c = c;
    atomic_store(&r->need_full, true); /* we cannot know what Redis kept meanwhile */
    set_up(r, true);
    cm_log_info("redis connected", "host", "%s", r->host, "port", "%d", r->port, NULL);
    return true;
}

/* Writes one batch: EXISTS <prefix>:alive first (a missing key means Redis
 * lost its data: the next batch is a full rewrite), then the commands. */
static bool writer_send(ag_redis_t *r, const cm_buf_t *b, int n_cmds)
{
    char alive[KEY_MAX];
    snprintf(alive, sizeof(alive), "%s:alive", r->prefix);
    redisAppendCommand(r->c, "EXISTS %s", alive);
    redisAppendFormattedCommand(r->c, (const char *)b->data, b->len);
    int errs = 0;
    for (int i = 0; i < n_cmds + 1; i++) {
        redisReply *rep = NULL;
        if (redisGetReply(r->c, (void **)&rep) != REDIS_OK || !rep) {
            drop_conn(r, r->c && r->c->errstr[0] ? r->c->errstr : "no reply");
            return false;
        }
        if (i == 0 && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0)
            atomic_store(&r->need_full, true);
        if (rep->type == REDIS_REPLY_ERROR) {
            if (errs++ == 0)
                cm_log_warn("redis error reply", "error", "%s", rep->str, NULL);
            count_error(r);
        }
        freeReplyObject(rep);
    }
    return true;
}

static void *writer_main(void *ud)
{
    ag_redis_t *r = ud;
    int64_t last_attempt = INT64_MIN / 2;
    pthread_mutex_lock(&r->mu);
    while (!r->stop || r->inflight.len > 0) {
        if (!r->c) {
            /* (re)connect, at most every retry_ms; a batch waiting then is
             * dropped: the builder rewrites everything after a reconnect */
            int64_t now = cm_mono_ms();
            if (now - last_attempt >= r->retry_ms) {
                last_attempt = now;
                pthread_mutex_unlock(&r->mu);
                writer_connect(r);
                pthread_mutex_lock(&r->mu);
            }
            if (!r->c) {
                if (r->inflight.len) {
                    cm_buf_reset(&r->inflight);
                    pthread_cond_broadcast(&r->cv);
                }
                if (r->stop)
                    break;
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                int64_t ns = ts.tv_nsec + (r->retry_ms % 1000) * 1000000;
                ts.tv_sec += r->retry_ms / 1000 + ns / 1000000000;
                ts.tv_nsec = ns % 1000000000;
                pthread_cond_timedwait(&r->cv, &r->mu, &ts);
                continue;
            }
        }
        if (!r->inflight.len) {
            if (r->stop)
                break;
            /* nothing to write for a second: PING, so that /readyz learns
             * about a Redis gone away even when the stream is quiet */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) != 0 && !r->inflight.len &&
                !r->stop) {
                pthread_mutex_unlock(&r->mu);
                redisReply *rep = redisCommand(r->c, "PING");
                if (!rep)
                    drop_conn(r, r->c->errstr[0] ? r->c->errstr : "no reply");
                else
                    freeReplyObject(rep);
                pthread_mutex_lock(&r->mu);
            }
            continue;
        }
        int n = r->inflight_cmds;
        uint64_t gen = r->inflight_gen;
        pthread_mutex_unlock(&r->mu);
        int64_t t0 = cm_mono_us();
        bool ok = writer_send(r, &r->inflight, n);
        if (ok) {
            atomic_store(&r->acked, gen);
            atomic_fetch_add(&r->flushes, 1);
            if (r->lat)
                cm_histogram_observe(r->lat, (double)(cm_mono_us() - t0) / 1e6);
        }
        pthread_mutex_lock(&r->mu);
        cm_buf_reset(&r->inflight);
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ------------------------------------------------------ batch building */

/* Formats one command (r->argv) into the batch. */
static void append(ag_redis_t *r, int argc)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, r->argv, r->argvlen);
    if (len < 0 || !cmd)
        return;
    if (cm_buf_append(&r->batch, cmd, (size_t)len) == CM_OK) {
        r->n_cmds++;
        atomic_fetch_add(&r->commands, 1);
        atomic_fetch_add(&r->bytes, (uint64_t)len);
        if (r->m_cmds)
            cm_counter_inc(r->m_cmds);
    }
    free(cmd);
}

static void cmd3(ag_redis_t *r, const char *a, const char *b, const char *c)
{
    r->argv[0] = a;
    r->argvlen[0] = strlen(a);
    r->argv[1] = b;
    r->argvlen[1] = strlen(b);
    int n = 2;
    if (c) {
        r->argv[2] = c;
        r->argvlen[2] = strlen(c);
        n = 3;
    }
    append(r, n);
}

static void cmd_expire(ag_redis_t *r, const char *key, int64_t ttl)
{
    char t[24];
    snprintf(t, sizeof(t), "%lld", (long long)ttl);
    cmd3(r, "EXPIRE", key, t);
}

static const char *src_id(const ag_source_t *s, char *buf, size_t n)
{
    snprintf(buf, n, "%c%d", s->kind == AG_SRC_RAW ? 'r' : 's', (int)s->partition);
    return buf;
}

/* Appends the HSETs of one dimension of a pane: the dirty entries, or all. */
static void write_dim(ag_redis_t *r, const ag_source_t *s, ag_pane_t *p, int d, const char *key,
                      int64_t ttl)
{
    ag_counts_t *c = &p->dims[d];
    if (!c->slots)
        return;
    if (p->redis_full)
        ag_counts_mark_all(c);
    if (!c->n_dirty)
        return;
    int n = 0;
    for (uint32_t i = 0; i < c->n_dirty; i++) {
        ag_count_slot_t *sl = &c->slots[c->dirty_list[i]];
        r->argv[2 + 2 * n] = ag_intern_str(&s->intern[d], sl->id);
        r->argvlen[2 + 2 * n] = ag_intern_len(&s->intern[d], sl->id);
        int len = snprintf(r->num[n], sizeof(r->num[n]), "%lld", (long long)sl->count);
        r->argv[3 + 2 * n] = r->num[n];
        r->argvlen[3 + 2 * n] = (size_t)len;
        if (++n == MAX_PAIRS || i + 1 == c->n_dirty) {
            r->argv[0] = "HSET";
            r->argvlen[0] = 4;
            r->argv[1] = key;
            r->argvlen[1] = strlen(key);
            append(r, 2 + 2 * n);
            n = 0;
        }
    }
    cmd_expire(r, key, ttl);
}

/* Whether this batch writes p's dimension hashes: always for 1-min windows,
 * closed windows and full rewrites; for open 5-min and 1-h windows, whose
 * hashes hold many entries touched again and again, every coarse_dims_ms. */
static bool dims_now(const ag_redis_t *r, const ag_pane_t *p)
{
    return p->size_idx == 0 || p->closed || p->redis_full || r->coarse_due;
}

static void pane_clean(const ag_redis_t *r, ag_pane_t *p)
{
    bool dims = dims_now(r, p);
    p->redis_full = p->redis_totals_dirty = p->redis_hll_dirty = false;
    for (int d = 0; dims && d < AG_N_DIMS; d++)
        ag_counts_clean(&p->dims[d]);
}

static void write_pane(ag_redis_t *r, ag_state_t *st, const ag_source_t *s, ag_pane_t *p,
                       const char *sid)
{
    int64_t size = ag_window_sizes[p->size_idx];
    int64_t ttl = r->ttl_s[p->size_idx];
    char base[KEY_MAX / 2], key[KEY_MAX], start[24];
    snprintf(start, sizeof(start), "%lld", (long long)p->start_ms);
    snprintf(base, sizeof(base), "%s:w:%lld:%lld", r->prefix, (long long)size,
             (long long)p->start_ms);

    snprintf(key, sizeof(key), "%s:win:%lld", r->prefix, (long long)size);
    r->argv[0] = "ZADD";
    r->argv[1] = key;
    r->argv[2] = start;
    r->argv[3] = start;
    for (int i = 0; i < 4; i++)
        r->argvlen[i] = strlen(r->argv[i]);
    append(r, 4);
    cmd_expire(r, key, r->ttl_s[AG_N_SIZES - 1]);

    snprintf(key, sizeof(key), "%s:src", base);
    cmd3(r, "SADD", key, sid);
    cmd_expire(r, key, ttl);

    if (p->redis_full || p->redis_totals_dirty) {
        snprintf(key, sizeof(key), "%s:t:%s", base, sid);
        r->argv[0] = "HSET";
        r->argv[1] = key;
        int n = 0;
        for (int i = 0; i < AG_TOTAL_FIELDS; i++) {
            r->argv[2 + 2 * n] = ag_total_names[i];
            snprintf(r->num[n], sizeof(r->num[n]), "%lld",
                     (long long)*ag_totals_field(&p->t, i));
            r->argv[3 + 2 * n] = r->num[n];
            n++;
        }
        r->argv[2 + 2 * n] = "final";
        snprintf(r->num[n], sizeof(r->num[n]), "%d", p->final ? 1 : 0);
        r->argv[3 + 2 * n] = r->num[n];
        n++;
        r->argv[2 + 2 * n] = "wm";
        snprintf(r->num[n], sizeof(r->num[n]), "%lld", (long long)ag_source_wm(st, s));
        r->argv[3 + 2 * n] = r->num[n];
        n++;
        for (int i = 0; i < 2 + 2 * n; i++)
            r->argvlen[i] = strlen(r->argv[i]);
        append(r, 2 + 2 * n);
        cmd_expire(r, key, ttl);
    }
    for (int d = 0; dims_now(r, p) && d < AG_N_DIMS; d++) {
        snprintf(key, sizeof(key), "%s:d:%s:%s", base, ag_dim_names[d], sid);
        write_dim(r, s, p, d, key, ttl);
    }
    if (p->hll && (p->redis_full || p->redis_hll_dirty)) {
        snprintf(key, sizeof(key), "%s:u:%s", base, sid);
        cm_hll_to_redis(p->hll, r->hll);
        char t[24];
        snprintf(t, sizeof(t), "%lld", (long long)ttl);
        r->argv[0] = "SET";
        r->argvlen[0] = 3;
        r->argv[1] = key;
        r->argvlen[1] = strlen(key);
        r->argv[2] = (const char *)r->hll;
        r->argvlen[2] = CM_HLL_REDIS_SIZE;
        r->argv[3] = "EX";
        r->argvlen[3] = 2;
        r->argv[4] = t;
        r->argvlen[4] = strlen(t);
        append(r, 5);
    }
}

static void mark_all_full(ag_state_t *st)
{
    for (size_t i = 0; i < st->n_src; i++) {
        ag_source_t *s = st->src[i];
        for (size_t j = 0; j < s->n_open; j++)
            s->open[j]->redis_full = true;
        for (size_t j = 0; j < s->n_closed; j++)
            s->closed[j]->redis_full = true;
    }
}

cm_err_t ag_redis_flush(ag_redis_t *r, ag_state_t *st, int64_t wall_ms)
{
    st->redis_acked = atomic_load(&r->acked);
    pthread_mutex_lock(&r->mu);
    bool busy = r->inflight.len > 0;
    pthread_mutex_unlock(&r->mu);
    if (!atomic_load(&r->up))
        return CM_ERR_IO; /* the writer reconnects; the panes stay dirty */
    if (busy)
        return CM_OK; /* the changes wait for the next flush (coalesced) */
    for (size_t i = 0; i < st->n_src; i++)
        if (ag_source_fold(st, st->src[i]))
            return CM_ERR_NOMEM;
    int64_t now = cm_mono_ms();
    r->coarse_due = now - r->last_coarse_ms >= r->coarse_dims_ms;
    if (r->coarse_due)
        r->last_coarse_ms = now;
    bool full = atomic_exchange(&r->need_full, false);
    if (full) {
        mark_all_full(st);
        atomic_fetch_add(&r->full_rewrites, 1);
        if (r->m_full)
            cm_counter_inc(r->m_full);
    }
    uint64_t gen = r->gen + 1;
    cm_buf_reset(&r->batch);
    r->n_cmds = 0;
    cm_buf_reset(&r->note);
    cm_buf_printf(&r->note, "{\"ts\":%lld,\"replica\":\"%s\",\"full\":%s,\"windows\":[",
                  (long long)wall_ms, r->replica, full ? "true" : "false");
    int n_written = 0;
    char sid[16];
    for (size_t i = 0; i < st->n_src; i++) {
        ag_source_t *s = st->src[i];
        src_id(s, sid, sizeof(sid));
        for (int list = 0; list < 2; list++) {
            size_t n = list ? s->n_closed : s->n_open;
            ag_pane_t **panes = list ? s->closed : s->open;
            for (size_t j = 0; j < n; j++) {
                ag_pane_t *p = panes[j];
                if (!(p->redis_full || p->redis_totals_dirty || p->redis_hll_dirty ||
                      ag_pane_redis_dirty(st, p)))
                    continue;
                bool unsent = p->redis_full || p->redis_totals_dirty || p->redis_hll_dirty;
                for (int d = 0; !unsent && dims_now(r, p) && d < AG_N_DIMS; d++)
                    unsent = p->dims[d].n_dirty > 0;
                if (!unsent)
                    continue; /* only waiting for the ack of its batch */
                write_pane(r, st, s, p, sid);
                pane_clean(r, p);
                p->redis_gen = gen;
                if (n_written < 64)
                    cm_buf_printf(&r->note, "%s[%lld,%lld]", n_written ? "," : "",
                                  (long long)ag_window_sizes[p->size_idx],
                                  (long long)p->start_ms);
                n_written++;
            }
        }
    }
    if (full) {
        char alive[KEY_MAX];
        snprintf(alive, sizeof(alive), "%s:alive", r->prefix);
        cmd3(r, "SET", alive, "1");
    }
    if (n_written || full) {
        cm_buf_printf(&r->note, "]}");
        char ch[KEY_MAX];
        snprintf(ch, sizeof(ch), "%s:updates", r->prefix);
        cmd3(r, "PUBLISH", ch, cm_buf_cstr(&r->note));
    }
    for (size_t i = 0; i < st->n_src; i++)
        ag_source_advance(st, st->src[i]); /* frees what waited for an ack */
    if (!r->n_cmds)
        return CM_OK;
    r->gen = gen;
    pthread_mutex_lock(&r->mu);
    /* hand the batch over: swap the buffers, no copy */
    cm_buf_t tmp = r->inflight;
    r->inflight = r->batch;
    r->batch = tmp;
    r->inflight_cmds = r->n_cmds;
    r->inflight_gen = gen;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return CM_OK;
}

bool ag_redis_drain(ag_redis_t *r, int64_t timeout_ms)
{
    int64_t deadline = cm_mono_ms() + timeout_ms;
    pthread_mutex_lock(&r->mu);
    while (r->inflight.len > 0 && cm_mono_ms() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    bool idle = r->inflight.len == 0;
    pthread_mutex_unlock(&r->mu);
    return idle;
}

cm_err_t ag_redis_read_window(const char *host, int port, const char *prefix, int64_t size_ms,
                              int64_t start_ms, int top_n, char **json, char *errstr,
                              size_t errstr_size)
{
    *json = NULL;
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err) {
        snprintf(errstr, errstr_size, "redis connect: %s", c ? c->errstr : "no memory");
        if (c)
            redisFree(c);
        return CM_ERR_IO;
    }
    char size[24], start[24], top[24];
    snprintf(size, sizeof(size), "%lld", (long long)size_ms);
    snprintf(start, sizeof(start), "%lld", (long long)start_ms);
    snprintf(top, sizeof(top), "%d", top_n);
    redisReply *rep = redisCommand(c, "EVAL %s 0 %s %s %s %s", ag_redis_read_lua, prefix, size,
                                   start, top);
    cm_err_t err = CM_OK;
    if (!rep) {
        snprintf(errstr, errstr_size, "redis: %s", c->errstr);
        err = CM_ERR_IO;
    } else if (rep->type != REDIS_REPLY_STRING) {
        snprintf(errstr, errstr_size, "redis: %s",
                 rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        err = CM_ERR_IO;
    } else if (!(*json = strdup(rep->str))) {
        err = CM_ERR_NOMEM;
    }
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return err;
}
