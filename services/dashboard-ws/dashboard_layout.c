/*
 * dashboard_layout.c: the aggregator's Redis layout -> db_data_t (see the
 * header for the keys).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "cm_hll.h"
#include "cm_log.h"
#include "dashboard_layout.h"

#define KEY_MAX 512

/* The totals fields of a source's hash, in db_window_t order. */
static const char *const total_names[] = {"events",   "page_views",     "purchases",
                                          "revenue_micros", "sessions", "session_ms_sum",
                                          "bounces",  "conversions"};
#define N_TOTALS 8

typedef struct wcache {
    int64_t start;
    bool valid; /* read at least once */
    bool dirty;
    db_window_t w;
    char **srcs; /* source ids */
    size_t n_srcs;
    db_count_t *dims[DB_N_DIMS]; /* every value of the window, summed over sources */
    size_t n_dims[DB_N_DIMS];
    cm_hll_t *users; /* union of the raw sources' HyperLogLogs; NULL without any */
} wcache_t;

struct db_layout {
    char *prefix;
    char channel[KEY_MAX];
    size_t history, top_n;
    bool anchor_data;
    wcache_t *cache; /* sorted by start, the current range only */
    size_t n_cache;
    bool all_dirty;
    size_t last_reads;
    size_t last_bad_hlls; /* u keys of the last read that were no HyperLogLog */
    size_t bad_hlls_logged;
    cm_hll_t scratch;
};

/* A running sum keyed by string (uthash). */
typedef struct acc {
    UT_hash_handle hh;
    int64_t n;
    size_t len;
    char key[];
} acc_t;

static void acc_free(acc_t **head)
{
    acc_t *e, *tmp;
    HASH_ITER(hh, *head, e, tmp)
    {
        HASH_DEL(*head, e);
        free(e);
    }
}

/* Adds n to key; CM_ERR_TOO_LARGE past `cap` entries, CM_ERR_NOMEM. */
static cm_err_t acc_add(acc_t **head, size_t *count, size_t cap, const char *key, size_t len,
                        int64_t n)
{
    acc_t *e = NULL;
    HASH_FIND(hh, *head, key, len, e);
    if (e) {
        e->n += n;
        return CM_OK;
    }
    if (*count >= cap)
        return CM_ERR_TOO_LARGE;
    e = malloc(sizeof(*e) + len + 1);
    if (!e)
        return CM_ERR_NOMEM;
    memcpy(e->key, key, len);
    e->key[len] = '\0';
    e->len = len;
    e->n = n;
    HASH_ADD_KEYPTR(hh, *head, e->key, len, e);
    (*count)++;
    return CM_OK;
}

/* Moves the sums into an array (the hash is emptied). */
static cm_err_t acc_to_counts(acc_t **head, db_count_t **out, size_t *n_out)
{
    size_t n = HASH_COUNT(*head), i = 0;
    *out = NULL;
    *n_out = 0;
    if (!n)
        return CM_OK;
    db_count_t *c = calloc(n, sizeof(*c));
    if (!c) {
        acc_free(head);
        return CM_ERR_NOMEM;
    }
    acc_t *e, *tmp;
    HASH_ITER(hh, *head, e, tmp)
    {
        c[i].key = strdup(e->key);
        c[i].n = e->n;
        if (!c[i].key) {
            for (size_t j = 0; j < i; j++)
                free(c[j].key);
            free(c);
            acc_free(head);
            return CM_ERR_NOMEM;
        }
        i++;
        HASH_DEL(*head, e);
        free(e);
    }
    *out = c;
    *n_out = n;
    return CM_OK;
}

static void wcache_clear(wcache_t *w)
{
    free(w->users);
    w->users = NULL;
    for (size_t i = 0; i < w->n_srcs; i++)
        free(w->srcs[i]);
    free(w->srcs);
    w->srcs = NULL;
    w->n_srcs = 0;
    for (int d = 0; d < DB_N_DIMS; d++) {
        for (size_t i = 0; i < w->n_dims[d]; i++)
            free(w->dims[d][i].key);
        free(w->dims[d]);
        w->dims[d] = NULL;
        w->n_dims[d] = 0;
    }
}

db_layout_t *db_layout_new(const char *prefix, size_t history_windows, size_t top_n,
                           bool anchor_data)
{
    db_layout_t *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->prefix = strdup(prefix ? prefix : "");
    if (!l->prefix) {
        free(l);
        return NULL;
    }
    snprintf(l->channel, sizeof(l->channel), "%s:updates", l->prefix);
    l->history = history_windows ? history_windows : 60;
    l->top_n = top_n ? top_n : 10;
    l->anchor_data = anchor_data;
    l->all_dirty = true;
    return l;
}

void db_layout_destroy(db_layout_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n_cache; i++)
        wcache_clear(&l->cache[i]);
    free(l->cache);
    free(l->prefix);
    free(l);
}

const char *db_layout_channel(const db_layout_t *l) { return l->channel; }

size_t db_layout_last_reads(const db_layout_t *l) { return l->last_reads; }

size_t db_layout_last_bad_hlls(const db_layout_t *l) { return l->last_bad_hlls; }

void db_layout_invalidate(db_layout_t *l) { l->all_dirty = true; }

static wcache_t *cache_find(db_layout_t *l, int64_t start)
{
    size_t lo = 0, hi = l->n_cache;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (l->cache[mid].start < start)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < l->n_cache && l->cache[lo].start == start ? &l->cache[lo] : NULL;
}

cm_err_t db_layout_note(db_layout_t *l, const char *msg, size_t len, int64_t *ts)
{
    *ts = 0;
    json_error_t jerr;
    json_t *root = json_loadb(msg, len, 0, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        l->all_dirty = true;
        return CM_ERR_PARSE;
    }
    json_t *t = json_object_get(root, "ts");
    if (json_is_integer(t))
        *ts = (int64_t)json_integer_value(t);
    json_t *wins = json_object_get(root, "windows");
    /* the aggregator lists at most 64 windows per note: a full list may
     * have left some out */
    if (json_is_true(json_object_get(root, "full")) || !json_is_array(wins) ||
        json_array_size(wins) >= 64) {
        cm_err_t err = json_is_array(wins) ? CM_OK : CM_ERR_PARSE;
        l->all_dirty = true;
        json_decref(root);
        return err;
    }
    size_t i;
    json_t *w;
    json_array_foreach(wins, i, w)
    {
        json_t *size = json_array_get(w, 0), *start = json_array_get(w, 1);
        if (!json_is_integer(size) || !json_is_integer(start)) {
            l->all_dirty = true;
            continue;
        }
        if (json_integer_value(size) != DB_WINDOW_MS)
            continue;
        wcache_t *c = cache_find(l, (int64_t)json_integer_value(start));
        if (c)
            c->dirty = true;
        /* a window not cached is read anyway once it is in the range */
    }
    json_decref(root);
    return CM_OK;
}

/* ------------------------------------------------------------- reading */

static int64_t floor_to(int64_t t, int64_t size)
{
    int64_t r = t % size;
    return r < 0 ? t - r - size : t - r;
}

static bool parse_i64(const char *s, size_t len, int64_t *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* Moves the cache to the range [from, from + n*W): windows out of it are
 * freed, new ones added unread. */
static cm_err_t cache_set_range(db_layout_t *l, int64_t from, size_t n)
{
    wcache_t *nc = calloc(n, sizeof(*nc));
    if (!nc)
        return CM_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        int64_t start = from + (int64_t)i * DB_WINDOW_MS;
        wcache_t *old = cache_find(l, start);
        if (old) {
            nc[i] = *old;
            memset(old, 0, sizeof(*old));
            old->start = INT64_MIN; /* moved */
        } else {
            nc[i].start = start;
        }
    }
    for (size_t i = 0; i < l->n_cache; i++)
        wcache_clear(&l->cache[i]);
    free(l->cache);
    l->cache = nc;
    l->n_cache = n;
    return CM_OK;
}

static cm_err_t io_error(redisContext *c, char *errstr, size_t n, const char *what)
{
    snprintf(errstr, n, "redis %s: %s", what, c->err ? c->errstr : "no reply");
    return CM_ERR_IO;
}

/* Reads one pending reply; errors (IO or an error reply) as CM_ERR_IO. */
static cm_err_t get_reply(redisContext *c, redisReply **rep, char *errstr, size_t n)
{
    *rep = NULL;
    if (redisGetReply(c, (void **)rep) != REDIS_OK || !*rep)
        return io_error(c, errstr, n, "read");
    if ((*rep)->type == REDIS_REPLY_ERROR) {
        snprintf(errstr, n, "redis error reply: %s", (*rep)->str);
        freeReplyObject(*rep);
        *rep = NULL;
        return CM_ERR_IO;
    }
    return CM_OK;
}

/* Drains `pending` replies after a failure so the connection stays in step
 * (the caller drops it on IO errors anyway). */
static void drain(redisContext *c, size_t pending)
{
    while (pending-- && !c->err) {
        void *r = NULL;
        if (redisGetReply(c, &r) != REDIS_OK)
            return;
        freeReplyObject(r);
    }
}

static cm_err_t read_anchor(db_layout_t *l, redisContext *c, int64_t *newest, char *errstr,
                            size_t n)
{
    char key[KEY_MAX];
    snprintf(key, sizeof(key), "%s:win:%d", l->prefix, DB_WINDOW_MS);
    redisReply *rep = redisCommand(c, "ZREVRANGE %s 0 0", key);
    if (!rep)
        return io_error(c, errstr, n, "ZREVRANGE");
    cm_err_t err = CM_OK;
    *newest = INT64_MIN;
    if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(errstr, n, "redis error reply: %s", rep->str);
        err = CM_ERR_IO;
    } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 &&
               rep->element[0]->type == REDIS_REPLY_STRING) {
        int64_t v;
        if (parse_i64(rep->element[0]->str, rep->element[0]->len, &v))
            *newest = v;
    }
    freeReplyObject(rep);
    return err;
}

/* The window's sum of one HGETALL reply into acc. */
static cm_err_t sum_hash(redisReply *rep, acc_t **acc, size_t *count)
{
    if (rep->type != REDIS_REPLY_ARRAY)
        return CM_OK;
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        redisReply *k = rep->element[i], *v = rep->element[i + 1];
        int64_t n;
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            !parse_i64(v->str, v->len, &n))
            continue;
        cm_err_t err = acc_add(acc, count, DB_MAX_DIM_ENTRIES, k->str, k->len, n);
        if (err == CM_ERR_TOO_LARGE)
            return CM_OK; /* keep what fits: a cap, not a failure */
        if (err)
            return err;
    }
    return CM_OK;
}

static void sum_totals(redisReply *rep, db_window_t *w, bool *late_seen)
{
    if (rep->type != REDIS_REPLY_ARRAY)
        return;
    int64_t *f[N_TOTALS] = {&w->events,   &w->page_views,     &w->purchases, &w->revenue_micros,
                            &w->sessions, &w->session_ms_sum, &w->bounces,   &w->conversions};
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        redisReply *k = rep->element[i], *v = rep->element[i + 1];
        int64_t n;
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            !parse_i64(v->str, v->len, &n))
            continue;
        for (int j = 0; j < N_TOTALS; j++)
            if (strcmp(k->str, total_names[j]) == 0) {
                *f[j] += n;
                break;
            }
        if (strcmp(k->str, "late") == 0) {
            w->late = (w->late < 0 ? 0 : w->late) + n;
            *late_seen = true;
        }
    }
}

/* Round 1: the sources of every window to read. */
static cm_err_t read_sources(db_layout_t *l, redisContext *c, wcache_t **todo, size_t n_todo,
                             char *errstr, size_t n)
{
    char key[KEY_MAX];
    for (size_t i = 0; i < n_todo; i++) {
        snprintf(key, sizeof(key), "%s:w:%d:%lld:src", l->prefix, DB_WINDOW_MS,
                 (long long)todo[i]->start);
        if (redisAppendCommand(c, "SMEMBERS %s", key) != REDIS_OK)
            return io_error(c, errstr, n, "SMEMBERS");
    }
    for (size_t i = 0; i < n_todo; i++) {
        redisReply *rep;
        cm_err_t err = get_reply(c, &rep, errstr, n);
        if (err) {
            drain(c, n_todo - i - 1);
            return err;
        }
        wcache_t *w = todo[i];
        wcache_clear(w);
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements) {
            size_t m = rep->elements < DB_MAX_SOURCES ? rep->elements : DB_MAX_SOURCES;
            w->srcs = calloc(m, sizeof(char *));
            if (!w->srcs) {
                freeReplyObject(rep);
                drain(c, n_todo - i - 1);
                snprintf(errstr, n, "out of memory");
                return CM_ERR_NOMEM;
            }
            for (size_t j = 0; j < m; j++) {
                redisReply *e = rep->element[j];
                /* a source id goes into key names: only short plain ones */
                if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len > 32 ||
                    strpbrk(e->str, ": \r\n"))
                    continue;
                if (!(w->srcs[w->n_srcs] = strdup(e->str)))
                    break;
                w->n_srcs++;
            }
        }
        freeReplyObject(rep);
    }
    return CM_OK;
}

/* Round 2: totals, dimensions and unique users of each window to read. */
static cm_err_t read_values(db_layout_t *l, redisContext *c, wcache_t **todo, size_t n_todo,
                            char *errstr, size_t n)
{
    char key[KEY_MAX];
    size_t pending = 0;
    cm_err_t err = CM_OK;
    for (size_t i = 0; i < n_todo; i++) {
        wcache_t *w = todo[i];
        for (size_t s = 0; s < w->n_srcs; s++) {
            const char *sid = w->srcs[s];
            snprintf(key, sizeof(key), "%s:w:%d:%lld:t:%s", l->prefix, DB_WINDOW_MS,
                     (long long)w->start, sid);
            redisAppendCommand(c, "HGETALL %s", key);
            pending++;
            for (int d = 0; d < DB_N_DIMS; d++) {
                snprintf(key, sizeof(key), "%s:w:%d:%lld:d:%s:%s", l->prefix, DB_WINDOW_MS,
                         (long long)w->start, db_dim_names[d], sid);
                redisAppendCommand(c, "HGETALL %s", key);
                pending++;
            }
        }
        /* the raw sources' HyperLogLogs, merged here (not by PFCOUNT): the
         * hour's union is then counted without asking Redis to merge 60
         * windows x every partition on each read */
        for (size_t s = 0; s < w->n_srcs; s++) {
            if (w->srcs[s][0] != 'r')
                continue;
            snprintf(key, sizeof(key), "%s:w:%d:%lld:u:%s", l->prefix, DB_WINDOW_MS,
                     (long long)w->start, w->srcs[s]);
            redisAppendCommand(c, "GET %s", key);
            pending++;
        }
    }

    for (size_t i = 0; i < n_todo; i++) {
        wcache_t *w = todo[i];
        int64_t start = w->start;
        memset(&w->w, 0, sizeof(w->w));
        w->w.start_ms = start;
        w->w.late = -1;
        w->w.present = w->n_srcs > 0;
        bool late_seen = false, has_raw = false;
        acc_t *acc[DB_N_DIMS] = {0};
        size_t counts[DB_N_DIMS] = {0};
        for (size_t s = 0; s < w->n_srcs; s++) {
            redisReply *rep;
            if ((err = get_reply(c, &rep, errstr, n)))
                goto fail_window;
            pending--;
            sum_totals(rep, &w->w, &late_seen);
            freeReplyObject(rep);
            for (int d = 0; d < DB_N_DIMS; d++) {
                if ((err = get_reply(c, &rep, errstr, n)))
                    goto fail_window;
                pending--;
                err = sum_hash(rep, &acc[d], &counts[d]);
                freeReplyObject(rep);
                if (err) {
                    snprintf(errstr, n, "out of memory");
                    goto fail_window;
                }
            }
            if (w->srcs[s][0] == 'r')
                has_raw = true;
        }
        if (has_raw && !(w->users = calloc(1, sizeof(*w->users)))) {
            err = CM_ERR_NOMEM;
            snprintf(errstr, n, "out of memory");
            goto fail_window;
        }
        for (size_t s = 0; s < w->n_srcs; s++) {
            if (w->srcs[s][0] != 'r')
                continue;
            redisReply *rep;
            if ((err = get_reply(c, &rep, errstr, n)))
                goto fail_window;
            pending--;
            if (rep->type == REDIS_REPLY_STRING) {
                if (cm_hll_from_redis(&l->scratch, (const uint8_t *)rep->str, rep->len) == 0)
                    cm_hll_merge(w->users, &l->scratch);
                else if (++l->last_bad_hlls && l->bad_hlls_logged++ < 10)
                    cm_log_warn("not a HyperLogLog: its users are not counted", "window",
                                "%lld", (long long)w->start, "source", "%s", w->srcs[s],
                                NULL);
            }
            freeReplyObject(rep);
        }
        if (w->users)
            w->w.unique_users = (int64_t)cm_hll_count(w->users);
        for (int d = 0; d < DB_N_DIMS; d++)
            if ((err = acc_to_counts(&acc[d], &w->dims[d], &w->n_dims[d]))) {
                snprintf(errstr, n, "out of memory");
                goto fail_window;
            }
        w->valid = true;
        w->dirty = false;
        continue;
    fail_window:
        for (int d = 0; d < DB_N_DIMS; d++)
            acc_free(&acc[d]);
        goto out;
    }
out:
    if (err)
        drain(c, pending);
    return err;
}

/* The hour's distinct users: the union of every window's HyperLogLog,
 * counted as PFCOUNT over all of their keys would count it. */
static int64_t range_users(db_layout_t *l)
{
    bool any = false;
    for (size_t i = 0; i < l->n_cache; i++) {
        const wcache_t *w = &l->cache[i];
        if (!w->valid || !w->users)
            continue;
        if (!any)
            memcpy(&l->scratch, w->users, sizeof(l->scratch));
        else
            cm_hll_merge(&l->scratch, w->users);
        any = true;
    }
    return any ? (int64_t)cm_hll_count(&l->scratch) : 0;
}

/* The breakdowns of the range: per-window counts summed, top_n kept. */
static cm_err_t range_dims(db_layout_t *l, db_data_t *out)
{
    for (int d = 0; d < DB_N_DIMS; d++) {
        acc_t *acc = NULL;
        size_t count = 0;
        for (size_t i = 0; i < l->n_cache; i++)
            for (size_t j = 0; j < l->cache[i].n_dims[d]; j++) {
                const db_count_t *e = &l->cache[i].dims[d][j];
                cm_err_t err =
                    acc_add(&acc, &count, SIZE_MAX, e->key, strlen(e->key), e->n);
                if (err) {
                    acc_free(&acc);
                    return err;
                }
            }
        cm_err_t err = acc_to_counts(&acc, &out->dims[d], &out->n_dims[d]);
        if (err)
            return err;
        /* zero or negative counts are not worth a row */
        size_t k = 0;
        for (size_t j = 0; j < out->n_dims[d]; j++) {
            if (out->dims[d][j].n > 0)
                out->dims[d][k++] = out->dims[d][j];
            else
                free(out->dims[d][j].key);
        }
        out->n_dims[d] = db_counts_top(out->dims[d], k, l->top_n);
    }
    return CM_OK;
}

cm_err_t db_layout_read(db_layout_t *l, redisContext *c, int64_t now_ms, db_data_t *out,
                        char *errstr, size_t errstr_size)
{
    db_data_clear(out);
    l->last_reads = 0;
    l->last_bad_hlls = 0;
    int64_t to = floor_to(now_ms, DB_WINDOW_MS) + DB_WINDOW_MS;
    cm_err_t err;
    if (l->anchor_data) {
        int64_t newest;
        if ((err = read_anchor(l, c, &newest, errstr, errstr_size)))
            return err;
        if (newest != INT64_MIN)
            to = floor_to(newest, DB_WINDOW_MS) + DB_WINDOW_MS;
    }
    int64_t from = to - (int64_t)l->history * DB_WINDOW_MS;
    if ((err = cache_set_range(l, from, l->history))) {
        snprintf(errstr, errstr_size, "out of memory");
        return err;
    }
    wcache_t **todo = calloc(l->n_cache, sizeof(*todo));
    if (!todo) {
        snprintf(errstr, errstr_size, "out of memory");
        return CM_ERR_NOMEM;
    }
    size_t n_todo = 0;
    for (size_t i = 0; i < l->n_cache; i++)
        if (l->all_dirty || l->cache[i].dirty || !l->cache[i].valid)
            todo[n_todo++] = &l->cache[i];
    if (n_todo) {
        err = read_sources(l, c, todo, n_todo, errstr, errstr_size);
        if (!err)
            err = read_values(l, c, todo, n_todo, errstr, errstr_size);
        if (err) {
            /* what was half read must be read again */
            for (size_t i = 0; i < n_todo; i++)
                todo[i]->valid = false;
            free(todo);
            return err;
        }
    }
    free(todo);
    l->all_dirty = false;
    l->last_reads = n_todo;

    int64_t users = range_users(l);

    out->window_ms = DB_WINDOW_MS;
    out->from_ms = from;
    out->to_ms = to;
    out->n_windows = l->n_cache;
    out->windows = calloc(l->n_cache, sizeof(*out->windows));
    if (!out->windows) {
        snprintf(errstr, errstr_size, "out of memory");
        return CM_ERR_NOMEM;
    }
    for (size_t i = 0; i < l->n_cache; i++) {
        out->windows[i] = l->cache[i].w;
        out->windows[i].start_ms = l->cache[i].start;
        if (!l->cache[i].valid) {
            memset(&out->windows[i], 0, sizeof(out->windows[i]));
            out->windows[i].start_ms = l->cache[i].start;
            out->windows[i].late = -1;
        }
    }
    out->unique_users = users;
    if ((err = range_dims(l, out))) {
        snprintf(errstr, errstr_size, "out of memory");
        db_data_clear(out);
        return err;
    }
    out->redis_ok = true;
    return CM_OK;
}
