/*
 * dashboard_snapshot.c: db_data_t -> JSON fragments -> messages.
 *
 * The reader thread builds one model per read of Redis; the server thread
 * sends its snapshot to new clients and asks it for updates. A model never
 * changes after db_model_build() returns, so both threads read it without a
 * lock; only the reference counts are atomic.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cm_buf.h"
#include "dashboard_snapshot.h"

const char *const db_dim_names[DB_N_DIMS] = {"url", "category", "device_type", "country",
                                             "event_type"};
const char *const db_dim_json_names[DB_N_DIMS] = {"top_urls", "category", "device_type",
                                                  "country", "event_type"};

/* ---------------------------------------------------------------- data */

void db_data_clear(db_data_t *d)
{
    if (!d)
        return;
    free(d->windows);
    for (int i = 0; i < DB_N_DIMS; i++) {
        for (size_t j = 0; j < d->n_dims[i]; j++)
            free(d->dims[i][j].key);
        free(d->dims[i]);
    }
    memset(d, 0, sizeof(*d));
}

cm_err_t db_data_copy(db_data_t *dst, const db_data_t *src)
{
    *dst = *src;
    dst->windows = NULL;
    memset(dst->dims, 0, sizeof(dst->dims));
    memset(dst->n_dims, 0, sizeof(dst->n_dims));
    if (src->n_windows) {
        dst->windows = malloc(src->n_windows * sizeof(*dst->windows));
        if (!dst->windows)
            goto fail;
        memcpy(dst->windows, src->windows, src->n_windows * sizeof(*dst->windows));
    }
    for (int i = 0; i < DB_N_DIMS; i++) {
        if (!src->n_dims[i])
            continue;
        dst->dims[i] = calloc(src->n_dims[i], sizeof(db_count_t));
        if (!dst->dims[i])
            goto fail;
        for (size_t j = 0; j < src->n_dims[i]; j++) {
            dst->dims[i][j].n = src->dims[i][j].n;
            dst->dims[i][j].key = strdup(src->dims[i][j].key ? src->dims[i][j].key : "");
            if (!dst->dims[i][j].key)
                goto fail;
            dst->n_dims[i] = j + 1;
        }
    }
    return CM_OK;
fail:
    db_data_clear(dst);
    return CM_ERR_NOMEM;
}

static int count_cmp(const void *a, const void *b)
{
    const db_count_t *x = a, *y = b;
    if (x->n != y->n)
        return x->n > y->n ? -1 : 1;
    return strcmp(x->key ? x->key : "", y->key ? y->key : "");
}

size_t db_counts_top(db_count_t *c, size_t n, size_t top_n)
{
    if (n > 1)
        qsort(c, n, sizeof(*c), count_cmp);
    if (n <= top_n)
        return n;
    for (size_t i = top_n; i < n; i++) {
        free(c[i].key);
        c[i].key = NULL;
    }
    return top_n;
}

/* ------------------------------------------------------------ messages */

db_msg_t *db_msg_new(const void *data, size_t len)
{
    db_msg_t *m = malloc(sizeof(*m) + DB_MSG_PRE + len + 1);
    if (!m)
        return NULL;
    atomic_init(&m->refs, 1);
    m->kind = DB_MSG_OTHER;
    m->len = len;
    memset(m->buf, 0, DB_MSG_PRE);
    if (len)
        memcpy(m->buf + DB_MSG_PRE, data, len);
    m->buf[DB_MSG_PRE + len] = '\0';
    return m;
}

db_msg_t *db_msg_ref(db_msg_t *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void db_msg_unref(db_msg_t *m)
{
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        free(m);
}

/* --------------------------------------------------------------- model */

/* Dumps and frees j; NULL on no memory. */
static char *dump(json_t *j)
{
    if (!j)
        return NULL;
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    return s;
}

static json_t *window_json(const db_window_t *w)
{
    json_t *o = json_pack("{sI sI sI sI sI sI sI sI sI}", "t", (json_int_t)w->start_ms,
                          "events", (json_int_t)w->events, "page_views",
                          (json_int_t)w->page_views, "purchases", (json_int_t)w->purchases,
                          "revenue_micros", (json_int_t)w->revenue_micros, "sessions",
                          (json_int_t)w->sessions, "session_ms", (json_int_t)w->session_ms_sum,
                          "bounces", (json_int_t)w->bounces, "conversions",
                          (json_int_t)w->conversions);
    if (!o)
        return NULL;
    if (json_object_set_new(o, "unique_users", w->unique_users < 0
                                                   ? json_null()
                                                   : json_integer(w->unique_users)) ||
        json_object_set_new(o, "late", w->late < 0 ? json_null() : json_integer(w->late))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static double ratio(int64_t a, int64_t b) { return b > 0 ? (double)a / (double)b : 0.0; }

/* The panel: totals of the range, derived rates, the last complete minute
 * and the breakdowns. */
static json_t *summary_json(const db_data_t *d)
{
    int64_t ev = 0, pv = 0, pu = 0, rev = 0, ses = 0, ses_ms = 0, bo = 0, conv = 0, late = 0;
    int64_t ses_windows = 0;
    bool late_known = false;
    for (size_t i = 0; i < d->n_windows; i++) {
        const db_window_t *w = &d->windows[i];
        ev += w->events;
        pv += w->page_views;
        pu += w->purchases;
        rev += w->revenue_micros;
        ses += w->sessions;
        ses_ms += w->session_ms_sum;
        bo += w->bounces;
        conv += w->conversions;
        if (w->sessions > 0)
            ses_windows++;
        if (w->late >= 0) {
            late += w->late;
            late_known = true;
        }
    }
    /* The last complete minute: the window before the newest, which is
     * still filling. */
    const db_window_t *cur = NULL;
    if (d->n_windows >= 2)
        cur = &d->windows[d->n_windows - 2];
    else if (d->n_windows == 1)
        cur = &d->windows[0];
    double minutes = d->window_ms > 0 ? (double)d->window_ms / 60000.0 : 1.0;

    json_t *o = json_object();
    json_t *c = cur ? json_pack("{sI sf sI sI sI sI}", "t", (json_int_t)cur->start_ms,
                                "events_per_s",
                                (double)cur->events / ((double)d->window_ms / 1000.0),
                                "events", (json_int_t)cur->events, "page_views",
                                (json_int_t)cur->page_views, "sessions",
                                (json_int_t)cur->sessions, "purchases",
                                (json_int_t)cur->purchases)
                    : json_null();
    if (!o || !c)
        goto fail;
    if (cur)
        json_object_set_new(c, "unique_users", cur->unique_users < 0
                                                   ? json_null()
                                                   : json_integer(cur->unique_users));
    json_object_set_new(o, "events", json_integer(ev));
    json_object_set_new(o, "page_views", json_integer(pv));
    json_object_set_new(o, "purchases", json_integer(pu));
    json_object_set_new(o, "revenue_micros", json_integer(rev));
    json_object_set_new(o, "unique_users",
                        d->unique_users < 0 ? json_null() : json_integer(d->unique_users));
    json_object_set_new(o, "sessions", json_integer(ses));
    json_object_set_new(o, "sessions_per_min",
                        json_real(ses_windows ? (double)ses / (double)ses_windows / minutes
                                              : 0.0));
    json_object_set_new(o, "avg_session_ms", json_integer(ses ? ses_ms / ses : 0));
    json_object_set_new(o, "bounce_rate", json_real(ratio(bo, ses)));
    json_object_set_new(o, "conversion_rate", json_real(ratio(conv, ses)));
    json_object_set_new(o, "late", late_known ? json_integer(late) : json_null());
    json_object_set_new(o, "late_rate", late_known ? json_real(ratio(late, ev + late))
                                                   : json_null());
    json_object_set_new(o, "current", c);
    c = NULL;
    for (int i = 0; i < DB_N_DIMS; i++) {
        json_t *a = json_array();
        if (!a)
            goto fail;
        for (size_t j = 0; j < d->n_dims[i]; j++)
            json_array_append_new(a, json_pack("[sI]", d->dims[i][j].key ? d->dims[i][j].key : "",
                                               (json_int_t)d->dims[i][j].n));
        json_object_set_new(o, db_dim_json_names[i], a);
    }
    return o;
fail:
    json_decref(o);
    json_decref(c);
    return NULL;
}

static json_t *status_json(const db_data_t *d)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "redis", json_string(d->redis_ok ? "ok" : "down"));
    json_object_set_new(o, "stale", json_boolean(!d->redis_ok));
    json_object_set_new(o, "error", d->redis_ok ? json_null() : json_string(d->error));
    json_object_set_new(o, "stale_since",
                        d->stale_since_ms ? json_integer(d->stale_since_ms) : json_null());
    json_object_set_new(o, "last_change",
                        d->last_change_ms ? json_integer(d->last_change_ms) : json_null());
    return o;
}

static char *head_text(const db_data_t *d, uint64_t seq, const char *status)
{
    cm_buf_t b;
    cm_buf_init(&b, 0);
    if (cm_buf_printf(&b, "\"seq\":%llu,\"window_ms\":%lld,\"from\":%lld,\"to\":%lld,\"status\":%s",
                      (unsigned long long)seq, (long long)d->window_ms, (long long)d->from_ms,
                      (long long)d->to_ms, status)) {
        cm_buf_free(&b);
        return NULL;
    }
    cm_buf_cstr(&b);
    return (char *)b.data; /* ownership moves to the caller */
}

/* {"type":T,["base":B,]<head>,"series":[...],"summary":S}: every window
 * (all) or those changed after model `base`. */
static db_msg_t *compose(const db_model_t *m, const char *type, uint64_t base, bool all)
{
    cm_buf_t b;
    cm_buf_init(&b, 0);
    size_t need = strlen(m->head) + strlen(m->summary) + 96;
    for (size_t i = 0; i < m->n; i++)
        need += m->frag_len[i] + 1;
    db_msg_t *msg = NULL;
    cm_err_t err = cm_buf_reserve(&b, need);
    if (!err && all)
        err = cm_buf_printf(&b, "{\"type\":\"%s\",%s,\"series\":[", type, m->head);
    else if (!err)
        err = cm_buf_printf(&b, "{\"type\":\"%s\",\"base\":%llu,%s,\"series\":[", type,
                            (unsigned long long)base, m->head);
    bool first = true;
    for (size_t i = 0; !err && i < m->n; i++) {
        if (!all && m->changed[i] <= base)
            continue;
        if (!first)
            err = cm_buf_putc(&b, ',');
        if (!err)
            err = cm_buf_append(&b, m->frags[i], m->frag_len[i]);
        first = false;
    }
    if (!err)
        err = cm_buf_append_str(&b, "],\"summary\":");
    if (!err)
        err = cm_buf_append_str(&b, m->summary);
    if (!err)
        err = cm_buf_putc(&b, '}');
    if (!err)
        msg = db_msg_new(b.data, b.len);
    if (msg)
        msg->kind = all ? DB_MSG_SNAPSHOT : DB_MSG_UPDATE;
    cm_buf_free(&b);
    return msg;
}

db_model_t *db_model_build(const db_data_t *d, const db_model_t *prev, uint64_t seq)
{
    db_model_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    atomic_init(&m->refs, 1);
    m->seq = seq;
    m->from_ms = d->from_ms;
    m->to_ms = d->to_ms;
    m->window_ms = d->window_ms;
    m->stale = !d->redis_ok;
    m->n = d->n_windows;
    if (m->n) {
        m->starts = calloc(m->n, sizeof(*m->starts));
        m->frags = calloc(m->n, sizeof(*m->frags));
        m->frag_len = calloc(m->n, sizeof(*m->frag_len));
        m->changed = calloc(m->n, sizeof(*m->changed));
        if (!m->starts || !m->frags || !m->frag_len || !m->changed)
            goto fail;
    }
    /* Windows are sorted by start in both models: one merge walk. */
    size_t pj = 0;
    for (size_t i = 0; i < m->n; i++) {
        const db_window_t *w = &d->windows[i];
        m->starts[i] = w->start_ms;
        m->frags[i] = dump(window_json(w));
        if (!m->frags[i])
            goto fail;
        m->frag_len[i] = strlen(m->frags[i]);
        m->changed[i] = seq;
        while (prev && pj < prev->n && prev->starts[pj] < w->start_ms)
            pj++;
        if (prev && pj < prev->n && prev->starts[pj] == w->start_ms &&
            prev->frag_len[pj] == m->frag_len[i] &&
            memcmp(prev->frags[pj], m->frags[i], m->frag_len[i]) == 0)
            m->changed[i] = prev->changed[pj];
    }
    m->status = dump(status_json(d));
    m->summary = dump(summary_json(d));
    if (!m->status || !m->summary)
        goto fail;
    m->head = head_text(d, seq, m->status);
    if (!m->head)
        goto fail;
    m->snapshot = compose(m, "snapshot", 0, true);
    if (!m->snapshot)
        goto fail;
    return m;
fail:
    db_model_unref(m);
    return NULL;
}

db_model_t *db_model_ref(db_model_t *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void db_model_unref(db_model_t *m)
{
    if (!m || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; m->frags && i < m->n; i++)
        free(m->frags[i]);
    free(m->frags);
    free(m->frag_len);
    free(m->starts);
    free(m->changed);
    free(m->head);
    free(m->status);
    free(m->summary);
    db_msg_unref(m->snapshot);
    free(m);
}

db_msg_t *db_model_update(const db_model_t *m, uint64_t base)
{
    if (base >= m->seq)
        return NULL;
    return compose(m, "update", base, false);
}

bool db_model_same(const db_model_t *a, const db_model_t *b)
{
    if (a->from_ms != b->from_ms || a->to_ms != b->to_ms || a->window_ms != b->window_ms ||
        a->n != b->n || strcmp(a->status, b->status) != 0 || strcmp(a->summary, b->summary) != 0)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (a->starts[i] != b->starts[i] || a->frag_len[i] != b->frag_len[i] ||
            memcmp(a->frags[i], b->frags[i], a->frag_len[i]) != 0)
            return false;
    return true;
}
