/*
 * aggregator_window.c: panes per source partition, event and session
 * accounting, lateness, dedupe and finality (rules in the header).
 */
#include "aggregator_window.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

const int64_t ag_window_sizes[AG_N_SIZES] = {60000, 300000, 3600000};
const char *const ag_dim_names[AG_N_DIMS] = {CM_DIM_URL, CM_DIM_CATEGORY, CM_DIM_DEVICE_TYPE,
                                             CM_DIM_COUNTRY, CM_DIM_EVENT_TYPE};
const char *const ag_total_names[AG_TOTAL_FIELDS] = {
    "events",   "page_views",     "purchases", "revenue_micros",
    "sessions", "session_ms_sum", "bounces",   "conversions", "late"};

/* What a session contributes, remembered to replace it on a revision. */
struct ag_session_entry {
    char *id;
    int64_t end_ms;
    int64_t duration_ms;
    int32_t revision;
    bool bounce, converted;
    bool counted; /* false for a tombstone: nothing to subtract */
    UT_hash_handle hh;
};

/* ------------------------------------------------------------- lifecycle */

static void pane_free(ag_pane_t *p)
{
    if (!p)
        return;
    free(p->hll);
    for (int d = 0; d < AG_N_DIMS; d++)
        ag_counts_free(&p->dims[d]);
    free(p);
}

static void source_free(ag_source_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_open; i++)
        pane_free(s->open[i]);
    for (size_t i = 0; i < s->n_closed; i++)
        pane_free(s->closed[i]);
    free(s->open);
    free(s->closed);
    for (int d = 0; d < AG_N_DIMS; d++)
        ag_intern_free(&s->intern[d]);
    cm_buf_free(&s->ck_last);
    cm_dedupe_destroy(s->dedupe);
    ag_session_entry_t *e, *tmp;
    HASH_ITER(hh, s->sessions, e, tmp)
    {
        HASH_DEL(s->sessions, e);
        free(e->id);
        free(e);
    }
    free(s);
}

ag_state_t *ag_state_new(const ag_window_opts_t *o, char *errstr, size_t errstr_size)
{
    if (o->bound_ms < 0 || o->lateness_ms < 0 || o->idle_ms < 0) {
        snprintf(errstr, errstr_size, "window options: negative duration");
        return NULL;
    }
    ag_state_t *st = calloc(1, sizeof(*st));
    if (!st) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    st->o = *o;
    st->wm = cm_watermark_new(o->bound_ms, o->idle_ms, errstr, errstr_size);
    if (!st->wm) {
        ag_state_destroy(st);
        return NULL;
    }
    return st;
}

void ag_state_destroy(ag_state_t *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n_src; i++)
        source_free(st->src[i]);
    free(st->src);
    cm_watermark_destroy(st->wm);
    free(st);
}

ag_source_t *ag_state_find(ag_state_t *st, ag_src_kind_t kind, int32_t partition)
{
    int32_t key = ag_src_key(kind, partition);
    for (size_t i = 0; i < st->n_src; i++)
        if (st->src[i] && st->src[i]->key == key)
            return st->src[i];
    return NULL;
}

ag_source_t *ag_state_source(ag_state_t *st, ag_src_kind_t kind, int32_t partition,
                             int64_t max_event, int64_t now_ms)
{
    ag_source_t *s = ag_state_find(st, kind, partition);
    if (s)
        return s;
    if (st->n_src == st->src_cap) {
        size_t nc = st->src_cap ? st->src_cap * 2 : 16;
        ag_source_t **ns = realloc(st->src, nc * sizeof(*ns));
        if (!ns)
            return NULL;
        st->src = ns;
        st->src_cap = nc;
    }
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->kind = kind;
    s->partition = partition;
    s->key = ag_src_key(kind, partition);
    for (int d = 0; d < AG_N_DIMS; d++)
        ag_intern_init(&s->intern[d]);
    cm_buf_init(&s->ck_last, 0);
    if (kind == AG_SRC_RAW) {
        char err[128];
        /* horizon: a copy that is not late finds its entry (header) */
        int64_t horizon = st->o.bound_ms + st->o.lateness_ms + ag_window_sizes[0];
        s->dedupe = cm_dedupe_new(horizon, st->o.dedupe_max, err, sizeof(err));
        if (!s->dedupe) {
            source_free(s);
            return NULL;
        }
    }
    if (cm_watermark_add(st->wm, s->key, max_event, now_ms)) {
        source_free(s);
        return NULL;
    }
    st->src[st->n_src++] = s;
    return s;
}

void ag_state_drop(ag_state_t *st, ag_source_t *s)
{
    for (size_t i = 0; i < st->n_src; i++) {
        if (st->src[i] == s) {
            st->src[i] = st->src[--st->n_src];
            break;
        }
    }
    cm_watermark_remove(st->wm, s->key);
    source_free(s);
}

int64_t ag_source_wm(const ag_state_t *st, const ag_source_t *s)
{
    return cm_watermark_partition(st->wm, s->key);
}

int64_t ag_source_max_event(const ag_state_t *st, const ag_source_t *s)
{
    return cm_watermark_max_event(st->wm, s->key);
}

/* ------------------------------------------------------------------ panes */

ag_pane_t *ag_source_pane(ag_source_t *s, int size_idx, int64_t start_ms)
{
    for (size_t i = 0; i < s->n_open; i++)
        if (s->open[i]->size_idx == size_idx && s->open[i]->start_ms == start_ms)
            return s->open[i];
    for (size_t i = 0; i < s->n_closed; i++)
        if (s->closed[i]->size_idx == size_idx && s->closed[i]->start_ms == start_ms)
            return s->closed[i];
    return NULL;
}

static ag_pane_t *pane_get(ag_state_t *st, ag_source_t *s, int size_idx, int64_t start,
                           int64_t offset, int64_t max_before)
{
    ag_pane_t *p = s->last[size_idx];
    if (p && p->start_ms == start)
        return p;
    for (size_t i = 0; i < s->n_open; i++) {
        p = s->open[i];
        if (p->size_idx == size_idx && p->start_ms == start) {
            s->last[size_idx] = p;
            return p;
        }
    }
    if (s->n_open == s->open_cap) {
        size_t nc = s->open_cap ? s->open_cap * 2 : 16;
        ag_pane_t **np = realloc(s->open, nc * sizeof(*np));
        if (!np)
            return NULL;
        s->open = np;
        s->open_cap = nc;
    }
    p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    if (s->kind == AG_SRC_RAW) {
        p->hll = calloc(1, sizeof(*p->hll));
        if (!p->hll) {
            free(p);
            return NULL;
        }
    }
    p->size_idx = size_idx;
    p->start_ms = start;
    p->end_ms = start + ag_window_sizes[size_idx];
    p->first_offset = offset;
    p->max_event_before = max_before;
    /* the previous pane of this size tells how many values to expect */
    ag_pane_t *prev = s->last[size_idx];
    for (int d = 0; d < AG_N_DIMS; d++) {
        ag_counts_init(&p->dims[d]);
        p->dims[d].track_fold = s->kind == AG_SRC_RAW && size_idx == 0;
        if (prev)
            (void)ag_counts_reserve(&p->dims[d], prev->dims[d].len); /* a hint only */
    }
    s->open[s->n_open++] = p;
    s->last[size_idx] = p;
    st->panes_created++;
    if (p->end_ms < s->next_check)
        s->next_check = p->end_ms; /* its finality is the next thing to check */
    return p;
}

static bool push_closed(ag_source_t *s, ag_pane_t *p)
{
    if (s->n_closed == s->closed_cap) {
        size_t nc = s->closed_cap ? s->closed_cap * 2 : 16;
        ag_pane_t **np = realloc(s->closed, nc * sizeof(*np));
        if (!np)
            return false;
        s->closed = np;
        s->closed_cap = nc;
    }
    s->closed[s->n_closed++] = p;
    return true;
}

/* Releases the strings no pane uses any more (URLs of windows gone), so a
 * long-running partition does not keep every value it ever saw. */
static void source_compact(ag_source_t *s)
{
    size_t n = s->n_open + s->n_closed;
    for (int d = 0; d < AG_N_DIMS; d++) {
        size_t in_use = 0;
        for (size_t i = 0; i < n; i++)
            in_use += (i < s->n_open ? s->open[i] : s->closed[i - s->n_open])->dims[d].len;
        if (!ag_intern_garbage(&s->intern[d], in_use))
            continue;
        ag_counts_t **tables = malloc(sizeof(*tables) * (n ? n : 1));
        if (!tables)
            return;
        for (size_t i = 0; i < n; i++)
            tables[i] = &(i < s->n_open ? s->open[i] : s->closed[i - s->n_open])->dims[d];
        (void)ag_intern_compact(&s->intern[d], tables, n); /* else: next time */
        free(tables);
    }
}

typedef struct fold_ctx {
    ag_pane_t *parent[AG_N_SIZES - 1];
    int d;
} fold_ctx_t;

static cm_err_t fold_count(uint32_t id, int64_t delta, void *ud)
{
    fold_ctx_t *f = ud;
    for (int k = 0; k < AG_N_SIZES - 1; k++) {
        cm_err_t err = ag_counts_add(&f->parent[k]->dims[f->d], id, delta);
        if (err)
            return err;
    }
    return CM_OK;
}

cm_err_t ag_source_fold(ag_state_t *st, ag_source_t *s)
{
    if (s->kind != AG_SRC_RAW)
        return CM_OK;
    for (size_t i = 0; i < s->n_open; i++) {
        ag_pane_t *p = s->open[i];
        if (p->size_idx != 0 || !p->unfolded)
            continue;
        fold_ctx_t f;
        for (int k = 1; k < AG_N_SIZES; k++) {
            int64_t start = ag_window_start(p->start_ms, ag_window_sizes[k]);
            ag_pane_t *q = pane_get(st, s, k, start, p->first_offset, p->max_event_before);
            if (!q)
                return CM_ERR_NOMEM;
            p = s->open[i]; /* pane_get may have grown s->open */
            if (p->first_offset < q->first_offset) {
                /* the replay point of a coarse pane is its earliest minute's */
                q->first_offset = p->first_offset;
                q->max_event_before = p->max_event_before;
            }
            for (int x = 0; x < AG_TOTAL_FIELDS; x++) {
                int64_t delta = *ag_totals_field(&p->t, x) - *ag_totals_field(&p->folded, x);
                *ag_totals_field(&q->t, x) += delta;
            }
            if (p->hll_unfolded) {
                cm_hll_merge(q->hll, p->hll);
                q->redis_hll_dirty = true;
            }
            q->redis_totals_dirty = true;
            q->changed = true;
            f.parent[k - 1] = q;
        }
        for (f.d = 0; f.d < AG_N_DIMS; f.d++) {
            cm_err_t err = ag_counts_fold(&p->dims[f.d], fold_count, &f);
            if (err)
                return err;
        }
        p->folded = p->t;
        p->unfolded = p->hll_unfolded = false;
    }
    return CM_OK;
}

void ag_source_advance(ag_state_t *st, ag_source_t *s)
{
    /* no memory for a coarse pane: retried at the next fold, nothing lost */
    (void)ag_source_fold(st, s);
    int64_t wm = ag_source_wm(st, s);
    s->next_check = INT64_MIN; /* until computed below: check on every change */
    if (wm == CM_WATERMARK_NONE)
        return;
    int64_t late = st->o.lateness_ms;
    size_t j = 0;
    for (size_t i = 0; i < s->n_open; i++) {
        ag_pane_t *p = s->open[i];
        if (!p->final && p->end_ms <= wm) {
            p->final = true;
            p->changed = true; /* the merger learns it is final */
        }
        if (p->end_ms + late <= wm) {
            p->closed = true;
            if (s->last[p->size_idx] == p)
                s->last[p->size_idx] = NULL;
            /* A closed pane with unsent changes stays in the open list until
             * they are sent (ag_loop clears `changed`), so the merger gets it. */
            if (!p->changed) {
                /* kept for a Redis rebuild, or until Redis got it */
                if ((st->o.keep_closed_ms[p->size_idx] > 0 || ag_pane_redis_dirty(st, p)) &&
                    push_closed(s, p))
                    continue;
                pane_free(p);
                st->panes_dropped++;
                continue;
            }
        }
        s->open[j++] = p;
    }
    s->n_open = j;

    /* Closed panes past their keep time go, unless Redis still has to get
     * their last change (then the next advance after a flush frees them). */
    size_t max_held = st->o.max_held ? st->o.max_held : 10000, held = 0;
    j = 0;
    for (size_t i = 0; i < s->n_closed; i++) {
        ag_pane_t *p = s->closed[i];
        if (p->end_ms + st->o.keep_closed_ms[p->size_idx] <= wm) {
            bool dirty = ag_pane_redis_dirty(st, p);
            if (dirty && held < max_held) {
                held++;
                s->closed[j++] = p;
                continue;
            }
            if (dirty)
                st->panes_dropped_dirty++;
            pane_free(p);
            st->panes_dropped++;
            continue;
        }
        s->closed[j++] = p;
    }
    s->n_closed = j;
    /* The next watermark at which something above would change: events only
     * call this function again once the watermark gets there. */
    int64_t next = INT64_MAX;
    for (size_t i = 0; i < s->n_open; i++) {
        const ag_pane_t *p = s->open[i];
        int64_t t = p->final ? p->end_ms + late : p->end_ms;
        if (p->closed)
            continue; /* waits for its changes to be sent, which advances */
        if (t < next)
            next = t;
    }
    for (size_t i = 0; i < s->n_closed; i++) {
        const ag_pane_t *p = s->closed[i];
        int64_t t = p->end_ms + st->o.keep_closed_ms[p->size_idx];
        if (t <= wm)
            continue; /* held for Redis: the flush advances */
        if (t < next)
            next = t;
    }
    s->next_check = next;
    source_compact(s);
}

void ag_source_forget_closed(ag_state_t *st, ag_source_t *s, int64_t wm_then,
                             const int64_t (*keep)[2], size_t n_keep)
{
    if (wm_then == CM_WATERMARK_NONE)
        return;
    size_t j = 0;
    for (size_t i = 0; i < s->n_closed; i++) {
        ag_pane_t *p = s->closed[i];
        bool kept = p->end_ms + st->o.lateness_ms > wm_then;
        for (size_t k = 0; !kept && k < n_keep; k++)
            kept = keep[k][0] == p->size_idx && keep[k][1] == p->start_ms;
        if (kept) {
            s->closed[j++] = p;
            continue;
        }
        pane_free(p);
        st->panes_dropped++;
    }
    s->n_closed = j;
}

bool ag_pane_redis_dirty(const ag_state_t *st, const ag_pane_t *p)
{
    if (p->redis_full || p->redis_totals_dirty || p->redis_hll_dirty ||
        p->redis_gen > st->redis_acked)
        return true;
    for (int d = 0; d < AG_N_DIMS; d++)
        if (p->dims[d].n_dirty)
            return true;
    return false;
}

void ag_source_restored(ag_state_t *st, ag_source_t *s)
{
    for (size_t i = 0; i < s->n_open; i++) {
        ag_pane_t *p = s->open[i];
        if (p->final)
            p->changed = false;
        p->redis_full = true;
    }
    ag_source_advance(st, s);
}

void ag_source_checkpoint(const ag_state_t *st, const ag_source_t *s, int64_t *offset,
                          int64_t *max_event)
{
    *offset = s->next_offset;
    *max_event = ag_source_max_event(st, s);
    for (size_t i = 0; i < s->n_open + s->n_closed; i++) {
        const ag_pane_t *p = i < s->n_open ? s->open[i] : s->closed[i - s->n_open];
        /* a closed pane Redis has not got yet must come back after a crash */
        if (i >= s->n_open && !ag_pane_redis_dirty(st, p))
            continue;
        if (p->first_offset < *offset) {
            *offset = p->first_offset;
            *max_event = p->max_event_before;
        }
    }
}

/* ----------------------------------------------------------------- events */

static inline bool is_late(const ag_state_t *st, int64_t ts, int64_t wm)
{
    if (wm == CM_WATERMARK_NONE)
        return false;
    int64_t end1 = ag_window_start(ts, ag_window_sizes[0]) + ag_window_sizes[0];
    return end1 + st->o.lateness_ms <= wm;
}

static int64_t revenue_of(const cm_event_t *ev)
{
    if (ev->type != CM_EV_PURCHASE || !ev->has_price)
        return 0;
    __int128 r = (__int128)ev->price_micros * (ev->quantity > 0 ? ev->quantity : 1);
    return r > INT64_MAX ? INT64_MAX : (int64_t)r;
}

static inline int64_t sat_add(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

/* A raw record that goes to the late topic: counted in the 1-minute pane of
 * the source's newest event (header, ag_totals_t). That pane is open (its
 * end is above the newest event, the watermark below it), so the count
 * reaches Redis, the merger and the coarser panes like any other change.
 * Before the source's first event there is no such window: counted in
 * /metrics only. */
static cm_err_t count_late(ag_state_t *st, ag_source_t *s, int64_t offset, int64_t max_event)
{
    if (s->kind != AG_SRC_RAW || max_event == CM_WATERMARK_NONE)
        return CM_OK;
    ag_pane_t *p = pane_get(st, s, 0, ag_window_start(max_event, ag_window_sizes[0]), offset,
                            max_event);
    if (!p)
        return CM_ERR_NOMEM;
    p->t.late++;
    p->redis_totals_dirty = true;
    p->changed = true;
    p->unfolded = true;
    return CM_OK;
}

cm_err_t ag_source_event(ag_state_t *st, ag_source_t *s, const cm_event_t *ev, int64_t offset,
                         int64_t now_ms, ag_result_t *res)
{
    int64_t ts = ev->ts_ms;
    int64_t wm = ag_source_wm(st, s);
    int64_t max_before = ag_source_max_event(st, s);
    s->next_offset = offset + 1;

    if (is_late(st, ts, wm)) {
        cm_watermark_touch(st->wm, s->key, now_ms);
        s->n_late++;
        *res = AG_LATE;
        return count_late(st, s, offset, max_before);
    }
    /* Memory-bound: start every load we can (intern slots, the HLL
     * register, then the count slots) before waiting on any, and let the
     * dedupe lookup overlap them. Interning a duplicate's strings is
     * harmless (an id never counted). */
    const char *vals[AG_N_DIMS] = {ev->page_url, ev->category, ev->device_type, ev->geo_country,
                                   ev->event_type};
    size_t lens[AG_N_DIMS];
    uint64_t hs[AG_N_DIMS];
    for (int d = 0; d < AG_N_DIMS; d++) {
        lens[d] = vals[d] ? strlen(vals[d]) : 0;
        if (lens[d]) {
            hs[d] = ag_intern_hash(vals[d], lens[d]);
            ag_intern_prefetch(&s->intern[d], hs[d]);
        }
    }
    uint64_t uh = cm_hll_hash(ev->user_id, strlen(ev->user_id));
    ag_pane_t *p = pane_get(st, s, 0, ag_window_start(ts, ag_window_sizes[0]), offset, max_before);
    if (!p)
        return CM_ERR_NOMEM;
    __builtin_prefetch(&p->hll->reg[uh & (CM_HLL_REGISTERS - 1)], 1);
    uint32_t ids[AG_N_DIMS];
    for (int d = 0; d < AG_N_DIMS; d++) {
        ids[d] = AG_ID_NONE;
        if (lens[d]) {
            ids[d] = ag_intern_id_h(&s->intern[d], vals[d], lens[d], hs[d]);
            if (ids[d] == AG_ID_NONE)
                return CM_ERR_NOMEM;
            ag_counts_prefetch(&p->dims[d], ids[d]);
        }
    }
    uint64_t h = cm_dedupe_hash(ev->event_id, strlen(ev->event_id));
    if (!cm_dedupe_insert(s->dedupe, h, ts, wm)) {
        cm_watermark_touch(st->wm, s->key, now_ms);
        s->n_dup++;
        *res = AG_DUPLICATE;
        return CM_OK;
    }
    int64_t rev = revenue_of(ev);
    int pv = ev->type == CM_EV_PAGE_VIEW, pu = ev->type == CM_EV_PURCHASE;

    /* the 1-minute pane only: the coarser ones get it by ag_source_fold() */
    p->t.events++;
    p->t.page_views += pv;
    p->t.purchases += pu;
    p->t.revenue_micros = sat_add(p->t.revenue_micros, rev);
    if (cm_hll_add_hash(p->hll, uh))
        p->redis_hll_dirty = p->hll_unfolded = true;
    for (int d = 0; d < AG_N_DIMS; d++)
        if (ids[d] != AG_ID_NONE && ag_counts_add(&p->dims[d], ids[d], 1))
            return CM_ERR_NOMEM;
    p->redis_totals_dirty = true;
    p->changed = true;
    p->unfolded = true;
    int64_t old_wm = wm;
    wm = cm_watermark_observe(st->wm, s->key, ts, now_ms);
    s->n_applied++;
    if (wm != old_wm && wm >= s->next_check)
        ag_source_advance(st, s);
    *res = AG_APPLIED;
    return CM_OK;
}

cm_err_t ag_source_skip(ag_state_t *st, ag_source_t *s, int64_t offset, int64_t now_ms)
{
    s->next_offset = offset + 1;
    cm_watermark_touch(st->wm, s->key, now_ms);
    return count_late(st, s, offset, ag_source_max_event(st, s));
}

/* --------------------------------------------------------------- sessions */

/* Adds (sign = +1) or removes (-1) a session's contribution at end_ms. */
static cm_err_t session_apply(ag_state_t *st, ag_source_t *s, int64_t end_ms, int64_t dur,
                              bool bounce, bool converted, int sign, int64_t offset,
                              int64_t max_before)
{
    for (int k = 0; k < AG_N_SIZES; k++) {
        int64_t start = ag_window_start(end_ms, ag_window_sizes[k]);
        ag_pane_t *p = pane_get(st, s, k, start, offset, max_before);
        if (!p)
            return CM_ERR_NOMEM;
        p->t.sessions += sign;
        p->t.session_ms_sum += sign * dur;
        p->t.bounces += sign * (int64_t)bounce;
        p->t.conversions += sign * (int64_t)converted;
        p->redis_totals_dirty = true;
        p->changed = true;
    }
    return CM_OK;
}

cm_err_t ag_source_session(ag_state_t *st, ag_source_t *s, const cm_session_t *ses,
                           int64_t offset, int64_t now_ms, ag_result_t *res)
{
    int64_t wm = ag_source_wm(st, s);
    int64_t max_before = ag_source_max_event(st, s);
    s->next_offset = offset + 1;
    cm_err_t err = CM_OK;
    *res = AG_IGNORED;

    ag_session_entry_t *e = NULL;
    HASH_FIND_STR(s->sessions, ses->session_id, e);
    if (e && ses->revision <= e->revision)
        goto touch; /* a replay or a stale revision */
    if (e && is_late(st, e->end_ms, wm)) {
        /* its earlier revision's window is closed, and final: that revision
         * stays counted there, this one counts where it ends, as a new
         * session (entries of closed windows are forgotten below anyway, so
         * a replay after a restart decides the same) */
        HASH_DEL(s->sessions, e);
        free(e->id);
        free(e);
        e = NULL;
    }
    if (!ses->tombstone && is_late(st, ses->end_ms, wm)) {
        *res = AG_LATE;
        s->n_late++;
        goto touch;
    }
    if (e && e->counted) {
        err = session_apply(st, s, e->end_ms, e->duration_ms, e->bounce, e->converted, -1,
                            offset, max_before);
        if (err)
            return err;
        e->counted = false;
    }
    if (!e) {
        e = calloc(1, sizeof(*e));
        if (!e || !(e->id = strdup(ses->session_id))) {
            free(e);
            return CM_ERR_NOMEM;
        }
        HASH_ADD_KEYPTR(hh, s->sessions, e->id, strlen(e->id), e);
    }
    e->revision = ses->revision;
    if (ses->end_ms > e->end_ms)
        e->end_ms = ses->end_ms; /* for its expiry */
    if (ses->tombstone) {
        /* kept (not counted) until its window closes, so that an older
         * revision replayed later is recognised */
        *res = AG_APPLIED;
        s->n_applied++;
        goto touch;
    }
    e->end_ms = ses->end_ms;
    e->duration_ms = ses->duration_ms;
    e->bounce = ses->page_views == 1;
    e->converted = ses->converted;
    err = session_apply(st, s, e->end_ms, e->duration_ms, e->bounce, e->converted, +1, offset,
                        max_before);
    if (err)
        return err;
    e->counted = true;
    s->n_applied++;
    *res = AG_APPLIED;
    int64_t old_wm = wm;
    wm = cm_watermark_observe(st->wm, s->key, ses->end_ms, now_ms);
    if (wm != old_wm)
        ag_source_advance(st, s);
    if (wm != old_wm && (old_wm == CM_WATERMARK_NONE ||
                         ag_window_start(wm - st->o.lateness_ms, ag_window_sizes[0]) !=
                             ag_window_start(old_wm - st->o.lateness_ms, ag_window_sizes[0]))) {
        /* forget sessions that can no longer be revised (lateness is judged
         * per 1-min window, so once per minute of watermark is enough) */
        ag_session_entry_t *x, *tmp;
        HASH_ITER(hh, s->sessions, x, tmp)
        {
            if (is_late(st, x->end_ms, wm)) {
                HASH_DEL(s->sessions, x);
                free(x->id);
                free(x);
            }
        }
    }
    return CM_OK;
touch:
    cm_watermark_touch(st->wm, s->key, now_ms);
    return CM_OK;
}
