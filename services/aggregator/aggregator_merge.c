/*
 * aggregator_merge.c: pane and heartbeat records, and the merger (header).
 */
#include "aggregator_merge.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------ varint codec */

static cm_err_t put_u(cm_buf_t *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        uint8_t c = v & 0x7f;
        v >>= 7;
        tmp[n++] = c | (v ? 0x80 : 0);
    } while (v);
    return cm_buf_append(b, tmp, n);
}

static cm_err_t put_s(cm_buf_t *b, int64_t v)
{
    return put_u(b, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

typedef struct rd {
    const uint8_t *p, *end;
    bool bad;
} rd_t;

static uint64_t get_u(rd_t *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) {
            r->bad = true;
            return 0;
        }
        uint8_t c = *r->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            return v;
    }
    r->bad = true;
    return 0;
}

static int64_t get_s(rd_t *r)
{
    uint64_t u = get_u(r);
    return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

static const uint8_t *get_bytes(rd_t *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    return p;
}

/* ----------------------------------------------------------- encoders */

cm_err_t ag_pane_encode(const ag_source_t *s, const ag_pane_t *p, cm_buf_t *out)
{
    size_t mark = out->len;
    cm_err_t err = cm_buf_append(out, "P\x02", 2); /* v2: + late */
    err = err ? err : put_u(out, (uint64_t)ag_window_sizes[p->size_idx]);
    err = err ? err : put_s(out, p->start_ms);
    err = err ? err : put_u(out, (uint64_t)s->key);
    err = err ? err : put_u(out, p->final);
    for (int i = 0; !err && i < AG_TOTAL_FIELDS; i++)
        err = put_s(out, *ag_totals_field((ag_totals_t *)&p->t, i));
    if (!err) {
        if (!p->hll) {
            err = put_u(out, 0);
        } else {
            size_t nz = cm_hll_nonzero(p->hll);
            if (nz * 4 < CM_HLL_REGISTERS) {
                err = put_u(out, 1);
                err = err ? err : put_u(out, nz);
                for (uint32_t i = 0; !err && i < CM_HLL_REGISTERS; i++) {
                    if (p->hll->reg[i]) {
                        err = put_u(out, i);
                        err = err ? err : put_u(out, p->hll->reg[i]);
                    }
                }
            } else {
                err = put_u(out, 2);
                err = err ? err : cm_buf_append(out, p->hll->reg, CM_HLL_REGISTERS);
            }
        }
    }
    for (int d = 0; !err && d < AG_N_DIMS; d++) {
        const ag_counts_t *c = &p->dims[d];
        err = put_u(out, c->len);
        for (uint32_t i = 0; !err && c->slots && i <= c->mask; i++) {
            if (!ag_counts_used(c, i))
                continue;
            uint32_t id = c->slots[i].id;
            err = put_u(out, ag_intern_len(&s->intern[d], id));
            err = err ? err
                      : cm_buf_append(out, ag_intern_str(&s->intern[d], id),
                                      ag_intern_len(&s->intern[d], id));
            err = err ? err : put_s(out, c->slots[i].count);
        }
    }
    if (err)
        out->len = mark;
    return err;
}

cm_err_t ag_pane_chunk(const ag_source_t *s, const ag_pane_t *p, const uint8_t *rec, size_t len,
                       uint32_t i, uint32_t n, cm_buf_t *out)
{
    size_t mark = out->len;
    size_t a = (size_t)i * AG_PANE_CHUNK, b = a + AG_PANE_CHUNK < len ? a + AG_PANE_CHUNK : len;
    cm_err_t err = a < len ? cm_buf_append(out, "Q\x01", 2) : CM_ERR_INVALID;
    err = err ? err : put_u(out, (uint64_t)s->key);
    err = err ? err : put_u(out, (uint64_t)ag_window_sizes[p->size_idx]);
    err = err ? err : put_s(out, p->start_ms);
    err = err ? err : put_u(out, i);
    err = err ? err : put_u(out, n);
    err = err ? err : cm_buf_append(out, rec + a, b - a);
    if (err)
        out->len = mark;
    return err;
}

cm_err_t ag_heartbeat_encode(int32_t src_key, int64_t wm, bool idle, int32_t n_partitions,
                             cm_buf_t *out)
{
    size_t mark = out->len;
    cm_err_t err = cm_buf_append(out, "H\x01", 2);
    err = err ? err : put_u(out, (uint64_t)src_key);
    err = err ? err : put_s(out, wm);
    err = err ? err : put_u(out, idle);
    err = err ? err : put_u(out, (uint64_t)n_partitions);
    if (err)
        out->len = mark;
    return err;
}

/* ------------------------------------------------------------- merger */

typedef struct mpane {
    int32_t src;
    int64_t offset;
    ag_totals_t t;
    cm_hll_t *hll;
    ag_counts_t dims[AG_N_DIMS];
} mpane_t;

typedef struct mwin {
    int size_idx;
    int64_t start, end;
    mpane_t *panes;
    size_t n, cap;
    int32_t revision; /* last emitted; -1: none */
    bool changed;     /* content differs from what was emitted */
} mwin_t;

typedef struct msrc {
    int32_t key;
    int64_t wm;
    bool idle;
    int32_t nparts;
    bool stale; /* restored from a checkpoint, no fresh heartbeat yet */
    int64_t idle_since; /* processing time its heartbeats started saying idle */
} msrc_t;

struct ag_merger {
    int64_t lateness, grace;
    int64_t drop; /* windows with end + lateness <= drop are gone */
    ag_intern_t intern;
    mwin_t **win;
    size_t n_win, win_cap;
    msrc_t *src;
    size_t n_src, src_cap;
    int64_t hold;
    uint64_t late_panes, results;
    /* scratch for building results */
    ag_counts_t sc[AG_N_DIMS];
    cm_hll_t sc_hll;
    ag_topk_item_t *items;
    size_t items_cap;
    cm_window_result_t res[1 + AG_N_DIMS];
    /* a pane arriving in chunks (one at a time per source; see header) */
    struct {
        int32_t src;
        int64_t size, start, first_offset;
        uint32_t next, n;
        cm_buf_t buf;
    } *asm_;
    size_t n_asm;
};

static void mpane_clear(mpane_t *p)
{
    free(p->hll);
    p->hll = NULL;
    for (int d = 0; d < AG_N_DIMS; d++)
        ag_counts_free(&p->dims[d]);
}

static void mwin_free(mwin_t *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++)
        mpane_clear(&w->panes[i]);
    free(w->panes);
    free(w);
}

ag_merger_t *ag_merger_new(int64_t lateness_ms, int64_t grace_ms)
{
    ag_merger_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->lateness = lateness_ms;
    m->grace = grace_ms;
    m->hold = INT64_MIN;
    m->drop = INT64_MIN;
    ag_intern_init(&m->intern);
    for (int i = 0; i < 1 + AG_N_DIMS; i++)
        cm_window_result_init(&m->res[i]);
    return m;
}

void ag_merger_destroy(ag_merger_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_win; i++)
        mwin_free(m->win[i]);
    free(m->win);
    free(m->src);
    ag_intern_free(&m->intern);
    for (int d = 0; d < AG_N_DIMS; d++)
        ag_counts_free(&m->sc[d]);
    free(m->items);
    for (int i = 0; i < 1 + AG_N_DIMS; i++)
        cm_window_result_free(&m->res[i]);
    for (size_t i = 0; i < m->n_asm; i++)
        cm_buf_free(&m->asm_[i].buf);
    free(m->asm_);
    free(m);
}

static int size_index(int64_t size_ms)
{
    for (int k = 0; k < AG_N_SIZES; k++)
        if (ag_window_sizes[k] == size_ms)
            return k;
    return -1;
}

static mwin_t *win_find(ag_merger_t *m, int size_idx, int64_t start)
{
    for (size_t i = 0; i < m->n_win; i++)
        if (m->win[i]->size_idx == size_idx && m->win[i]->start == start)
            return m->win[i];
    return NULL;
}

static mwin_t *win_add(ag_merger_t *m, int size_idx, int64_t start)
{
    if (m->n_win == m->win_cap) {
        size_t nc = m->win_cap ? m->win_cap * 2 : 32;
        mwin_t **nw = realloc(m->win, nc * sizeof(*nw));
        if (!nw)
            return NULL;
        m->win = nw;
        m->win_cap = nc;
    }
    mwin_t *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->size_idx = size_idx;
    w->start = start;
    w->end = start + ag_window_sizes[size_idx];
    w->revision = -1;
    m->win[m->n_win++] = w;
    return w;
}

static msrc_t *src_get(ag_merger_t *m, int32_t key)
{
    for (size_t i = 0; i < m->n_src; i++)
        if (m->src[i].key == key)
            return &m->src[i];
    if (m->n_src == m->src_cap) {
        size_t nc = m->src_cap ? m->src_cap * 2 : 32;
        msrc_t *ns = realloc(m->src, nc * sizeof(*ns));
        if (!ns)
            return NULL;
        m->src = ns;
        m->src_cap = nc;
    }
    msrc_t *s = &m->src[m->n_src++];
    s->key = key;
    s->wm = INT64_MIN;
    s->idle = false;
    s->nparts = 0;
    s->stale = false;
    s->idle_since = 0;
    return s;
}

static cm_err_t apply_pane(ag_merger_t *m, rd_t *r, int version, int64_t offset, bool replay)
{
    int64_t size_ms = (int64_t)get_u(r);
    int64_t start = get_s(r);
    int32_t src = (int32_t)get_u(r);
    (void)get_u(r); /* final: the merger decides by its own watermark */
    ag_totals_t t = {0};
    int nf = version == 1 ? AG_TOTAL_FIELDS - 1 : AG_TOTAL_FIELDS; /* v1: no late */
    for (int i = 0; i < nf; i++)
        *ag_totals_field(&t, i) = get_s(r);
    int k = size_index(size_ms);
    if (r->bad || k < 0 || ag_window_start(start, size_ms) != start)
        return CM_ERR_PARSE;

    mwin_t *w = win_find(m, k, start);
    if (!w) {
        if (m->drop != INT64_MIN && start + size_ms + m->lateness <= m->drop) {
            m->late_panes++;
            return CM_OK;
        }
        if (!(w = win_add(m, k, start)))
            return CM_ERR_NOMEM;
    }
    mpane_t *p = NULL;
    for (size_t i = 0; i < w->n; i++)
        if (w->panes[i].src == src)
            p = &w->panes[i];
    if (!p) {
        if (w->n == w->cap) {
            size_t nc = w->cap ? w->cap * 2 : 8;
            mpane_t *np = realloc(w->panes, nc * sizeof(*np));
            if (!np)
                return CM_ERR_NOMEM;
            w->panes = np;
            w->cap = nc;
        }
        p = &w->panes[w->n++];
        memset(p, 0, sizeof(*p));
        p->src = src;
    } else {
        mpane_clear(p);
    }
    p->offset = offset;
    p->t = t;
    uint64_t hk = get_u(r);
    if (hk == 1 || hk == 2) {
        if (!(p->hll = calloc(1, sizeof(*p->hll))))
            return CM_ERR_NOMEM;
        if (hk == 1) {
            uint64_t n = get_u(r);
            for (uint64_t i = 0; i < n && !r->bad; i++) {
                uint64_t idx = get_u(r), v = get_u(r);
                if (idx >= CM_HLL_REGISTERS || v > CM_HLL_Q + 1)
                    r->bad = true;
                else
                    p->hll->reg[idx] = (uint8_t)v;
            }
        } else {
            const uint8_t *b = get_bytes(r, CM_HLL_REGISTERS);
            if (b)
                memcpy(p->hll->reg, b, CM_HLL_REGISTERS);
        }
    } else if (hk != 0) {
        r->bad = true;
    }
    for (int d = 0; d < AG_N_DIMS && !r->bad; d++) {
        ag_counts_init(&p->dims[d]);
        uint64_t n = get_u(r);
        for (uint64_t i = 0; i < n && !r->bad; i++) {
            uint64_t len = get_u(r);
            const uint8_t *s = get_bytes(r, len);
            int64_t c = get_s(r);
            if (r->bad)
                break;
            uint32_t id = ag_intern_id(&m->intern, (const char *)s, len);
            if (id == AG_ID_NONE || ag_counts_add(&p->dims[d], id, c))
                return CM_ERR_NOMEM;
        }
    }
    if (r->bad) {
        /* keep the window consistent: a broken record counts as an empty pane */
        mpane_clear(p);
        memset(&p->t, 0, sizeof(p->t));
        return CM_ERR_PARSE;
    }
    if (!replay)
        w->changed = true;
    return CM_OK;
}

static cm_err_t apply_chunk(ag_merger_t *m, rd_t *r, int64_t offset, bool replay,
                           int64_t now_ms)
{
    int32_t src = (int32_t)get_u(r);
    int64_t size = (int64_t)get_u(r), start = get_s(r);
    uint32_t i = (uint32_t)get_u(r), n = (uint32_t)get_u(r);
    if (r->bad || n == 0 || i >= n || n > 4096)
        return CM_ERR_PARSE;
    size_t k = 0;
    while (k < m->n_asm && m->asm_[k].src != src)
        k++;
    if (k == m->n_asm) {
        void *na = realloc(m->asm_, (m->n_asm + 1) * sizeof(*m->asm_));
        if (!na)
            return CM_ERR_NOMEM;
        m->asm_ = na;
        memset(&m->asm_[k], 0, sizeof(m->asm_[k]));
        m->asm_[k].src = src;
        cm_buf_init(&m->asm_[k].buf, 0);
        m->n_asm++;
    }
    typeof(m->asm_[0]) *a = &m->asm_[k];
    if (i == 0) { /* a new pane starts (an unfinished one was aborted) */
        cm_buf_reset(&a->buf);
        a->size = size;
        a->start = start;
        a->n = n;
        a->next = 0;
        a->first_offset = offset;
    }
    if (i != a->next || n != a->n || size != a->size || start != a->start)
        return CM_ERR_PARSE; /* out of sequence: dropped until the next chunk 0 */
    if (cm_buf_append(&a->buf, r->p, (size_t)(r->end - r->p)))
        return CM_ERR_NOMEM;
    if (++a->next < a->n)
        return CM_OK;
    a->next = 0;
    cm_err_t err = ag_merger_apply(m, a->buf.data, a->buf.len, a->first_offset, replay, now_ms);
    cm_buf_reset(&a->buf);
    return err;
}

cm_err_t ag_merger_apply(ag_merger_t *m, const void *data, size_t len, int64_t offset,
                         bool replay, int64_t now_ms)
{
    rd_t r = {data, (const uint8_t *)data + len, false};
    const uint8_t *h = get_bytes(&r, 2);
    if (!h)
        return CM_ERR_PARSE;
    if (h[0] == 'P' && (h[1] == 1 || h[1] == 2))
        return apply_pane(m, &r, h[1], offset, replay);
    if (h[1] != 1)
        return CM_ERR_PARSE;
    if (h[0] == 'Q')
        return apply_chunk(m, &r, offset, replay, now_ms);
    if (h[0] != 'H')
        return CM_ERR_PARSE;
    int32_t key = (int32_t)get_u(&r);
    int64_t wm = get_s(&r);
    bool idle = get_u(&r) != 0;
    int32_t nparts = (int32_t)get_u(&r);
    if (r.bad)
        return CM_ERR_PARSE;
    if (replay)
        return CM_OK;
    msrc_t *s = src_get(m, key);
    if (!s)
        return CM_ERR_NOMEM;
    if (idle && !s->idle)
        s->idle_since = now_ms;
    s->wm = wm;
    s->idle = idle;
    s->nparts = nparts;
    s->stale = false;
    return CM_OK;
}

/* The merged watermark of the sources as they are now (header). */
static int64_t merged_wm(const ag_merger_t *m)
{
    if (!m->n_src)
        return INT64_MIN;
    int32_t expected[2] = {0, 0}, known[2] = {0, 0};
    for (size_t i = 0; i < m->n_src; i++) {
        if (m->src[i].stale)
            return INT64_MIN; /* after a restore: wait for every source's news */
        int kind = (m->src[i].key >> 16) & 1;
        known[kind]++;
        if (m->src[i].nparts > expected[kind])
            expected[kind] = m->src[i].nparts;
    }
    if (known[0] < expected[0] || known[1] < expected[1])
        return INT64_MIN; /* a partition nobody has reported on yet */
    int64_t min_active = INT64_MAX, max_all = INT64_MIN;
    bool any_active = false;
    for (size_t i = 0; i < m->n_src; i++) {
        const msrc_t *s = &m->src[i];
        if (s->wm > max_all)
            max_all = s->wm;
        if (!s->idle) {
            any_active = true;
            if (s->wm < min_active)
                min_active = s->wm;
        }
    }
    return any_active ? min_active : max_all;
}

/* Min watermark over every source, idle or not: below it no source can
 * still send a change for a window (INT64_MIN: none known). A source that has
 * not seen an event yet may still send any window, so it holds every drop
 * back, like one that is behind, until it has been idle for `grace`. */
static int64_t min_all_wm(const ag_merger_t *m, int64_t now_ms)
{
    int64_t w = INT64_MAX;
    for (size_t i = 0; i < m->n_src; i++) {
        const msrc_t *s = &m->src[i];
        if (s->stale)
            return INT64_MIN;
        if (s->idle && m->grace >= 0 && now_ms - s->idle_since >= m->grace)
            continue; /* idle for good, it seems: stop keeping windows for it */
        if (s->wm == INT64_MIN)
            return INT64_MIN;
        if (s->wm < w)
            w = s->wm;
    }
    return w == INT64_MAX ? INT64_MIN : w;
}

static int win_cmp(const void *a, const void *b)
{
    const mwin_t *x = *(mwin_t *const *)a, *y = *(mwin_t *const *)b;
    if (x->size_idx != y->size_idx)
        return x->size_idx - y->size_idx;
    return x->start < y->start ? -1 : x->start > y->start;
}

cm_err_t ag_merger_result(ag_merger_t *m, int64_t size_ms, int64_t start_ms, int32_t revision,
                          bool final, cm_window_result_t r[1 + AG_N_DIMS])
{
    int k = size_index(size_ms);
    mwin_t *w = k < 0 ? NULL : win_find(m, k, start_ms);
    if (!w)
        return CM_ERR_NOT_FOUND;
    ag_totals_t t = {0};
    bool any_hll = false;
    memset(&m->sc_hll, 0, sizeof(m->sc_hll));
    for (int d = 0; d < AG_N_DIMS; d++) {
        ag_counts_free(&m->sc[d]);
        ag_counts_init(&m->sc[d]);
    }
    for (size_t i = 0; i < w->n; i++) {
        mpane_t *p = &w->panes[i];
        for (int f = 0; f < AG_TOTAL_FIELDS; f++)
            *ag_totals_field(&t, f) += *ag_totals_field(&p->t, f);
        if (p->hll) {
            cm_hll_merge(&m->sc_hll, p->hll);
            any_hll = true;
        }
        for (int d = 0; d < AG_N_DIMS; d++) {
            ag_counts_t *c = &p->dims[d];
            for (uint32_t j = 0; c->slots && j <= c->mask; j++)
                if (ag_counts_used(c, j) && ag_counts_add(&m->sc[d], c->slots[j].id,
                                                          c->slots[j].count))
                    return CM_ERR_NOMEM;
        }
    }
    for (int i = 0; i < 1 + AG_N_DIMS; i++) {
        cm_window_result_t *x = &r[i];
        cm_window_result_reset(x);
        x->window_size_ms = size_ms;
        x->window_start_ms = start_ms;
        x->window_end_ms = start_ms + size_ms;
        x->dimension = i == 0 ? CM_DIM_TOTAL : ag_dim_names[i - 1];
        x->revision = revision;
        x->final = final;
        x->events = t.events;
        x->page_views = t.page_views;
        x->purchases = t.purchases;
        x->revenue_micros = t.revenue_micros;
        x->unique_users = any_hll ? (int64_t)cm_hll_count(&m->sc_hll) : 0;
        x->sessions_closed = t.sessions;
        x->avg_session_ms = t.sessions ? (double)t.session_ms_sum / (double)t.sessions : 0.0;
        x->bounce_rate = t.sessions ? (double)t.bounces / (double)t.sessions : 0.0;
        x->conversion_rate = t.sessions ? (double)t.conversions / (double)t.sessions : 0.0;
    }
    for (int d = 0; d < AG_N_DIMS; d++) {
        ag_counts_t *c = &m->sc[d];
        for (uint32_t j = 0; c->slots && j <= c->mask; j++)
            if (ag_counts_used(c, j) && c->slots[j].count != 0 &&
                cm_window_result_add_count(&r[1 + d], ag_intern_str(&m->intern, c->slots[j].id),
                                           c->slots[j].count))
                return CM_ERR_NOMEM;
    }
    /* top URLs: exact, from the merged url counts */
    ag_counts_t *u = &m->sc[AG_DIM_URL];
    if (m->items_cap < u->len) {
        ag_topk_item_t *ni = realloc(m->items, u->len * sizeof(*ni));
        if (!ni)
            return CM_ERR_NOMEM;
        m->items = ni;
        m->items_cap = u->len;
    }
    size_t n = 0;
    for (uint32_t j = 0; u->slots && j <= u->mask; j++) {
        if (ag_counts_used(u, j) && u->slots[j].count > 0) {
            m->items[n].key = ag_intern_str(&m->intern, u->slots[j].id);
            m->items[n].count = u->slots[j].count;
            n++;
        }
    }
    size_t top = ag_topk_select(m->items, n, AG_TOP_URLS);
    for (size_t i = 0; i < top; i++)
        if (cm_window_result_add_top_url(&r[0], m->items[i].key, m->items[i].count))
            return CM_ERR_NOMEM;
    return CM_OK;
}

/* Releases the strings of windows gone (see ag_intern_compact). */
static void merger_compact(ag_merger_t *m)
{
    size_t in_use = 0, n = 0;
    for (size_t i = 0; i < m->n_win; i++)
        for (size_t j = 0; j < m->win[i]->n; j++)
            for (int d = 0; d < AG_N_DIMS; d++, n++)
                in_use += m->win[i]->panes[j].dims[d].len;
    if (!ag_intern_garbage(&m->intern, in_use))
        return;
    ag_counts_t **tables = malloc(sizeof(*tables) * (n ? n : 1));
    if (!tables)
        return;
    n = 0;
    for (size_t i = 0; i < m->n_win; i++)
        for (size_t j = 0; j < m->win[i]->n; j++)
            for (int d = 0; d < AG_N_DIMS; d++)
                tables[n++] = &m->win[i]->panes[j].dims[d];
    (void)ag_intern_compact(&m->intern, tables, n); /* else: next time */
    free(tables);
}

cm_err_t ag_merger_flush(ag_merger_t *m, ag_emit_fn *fn, void *ud, int64_t now_ms)
{
    int64_t w = merged_wm(m);
    if (w != INT64_MIN && w > m->hold)
        m->hold = w;
    if (m->hold == INT64_MIN)
        return CM_OK;
    if (m->n_win > 1) /* m->win is NULL before the first window */
        qsort(m->win, m->n_win, sizeof(*m->win), win_cmp);
    for (size_t i = 0; i < m->n_win; i++) {
        mwin_t *x = m->win[i];
        if (x->end > m->hold || (x->revision >= 0 && !x->changed))
            continue;
        int32_t rev = x->revision + 1;
        cm_err_t err = ag_merger_result(m, ag_window_sizes[x->size_idx], x->start, rev, true,
                                        m->res);
        for (int d = 0; !err && d < 1 + AG_N_DIMS; d++)
            err = fn(&m->res[d], ud);
        if (err)
            return err;
        m->results += 1 + AG_N_DIMS;
        x->revision = rev;
        x->changed = false;
    }
    /* Drop a window once no source can change it any more: every source
     * (idle ones too, unless idle for `grace` of processing time) is past
     * end + lateness. */
    int64_t d = min_all_wm(m, now_ms);
    if (d > m->drop)
        m->drop = d;
    size_t j = 0;
    for (size_t i = 0; i < m->n_win; i++) {
        mwin_t *x = m->win[i];
        if (m->drop != INT64_MIN && x->end + m->lateness <= m->drop && !x->changed &&
            x->revision >= 0) {
            mwin_free(x);
            continue;
        }
        m->win[j++] = x;
    }
    m->n_win = j;
    merger_compact(m);
    return CM_OK;
}

/* --------------------------------------------------------- checkpoint */

cm_err_t ag_merger_checkpoint(const ag_merger_t *m, int64_t next_offset, cm_buf_t *out,
                              size_t *sig_len)
{
    int64_t from = next_offset;
    for (size_t i = 0; i < m->n_win; i++)
        for (size_t j = 0; j < m->win[i]->n; j++)
            if (m->win[i]->panes[j].offset < from)
                from = m->win[i]->panes[j].offset;
    size_t mark = out->len;
    cm_err_t err = cm_buf_append(out, "C\x01", 2);
    err = err ? err : put_s(out, from);
    err = err ? err : put_u(out, m->n_win);
    for (size_t i = 0; !err && i < m->n_win; i++) {
        err = put_u(out, (uint64_t)m->win[i]->size_idx);
        err = err ? err : put_s(out, m->win[i]->start);
        err = err ? err : put_s(out, m->win[i]->revision);
    }
    if (sig_len)
        *sig_len = out->len - mark;
    err = err ? err : put_s(out, m->hold);
    err = err ? err : put_s(out, m->drop);
    err = err ? err : put_u(out, m->n_src);
    for (size_t i = 0; !err && i < m->n_src; i++) {
        err = put_u(out, (uint64_t)m->src[i].key);
        err = err ? err : put_s(out, m->src[i].wm);
        err = err ? err : put_u(out, m->src[i].idle);
        err = err ? err : put_u(out, (uint64_t)m->src[i].nparts);
    }
    if (err)
        out->len = mark;
    return err;
}

cm_err_t ag_merger_load_checkpoint(const void *data, size_t len, int64_t *replay_from)
{
    rd_t r = {data, (const uint8_t *)data + len, false};
    const uint8_t *h = get_bytes(&r, 2);
    if (!h || h[0] != 'C' || h[1] != 1)
        return CM_ERR_PARSE;
    *replay_from = get_s(&r);
    return r.bad ? CM_ERR_PARSE : CM_OK;
}

cm_err_t ag_merger_finish_restore(ag_merger_t *m, const void *data, size_t len)
{
    for (size_t i = 0; i < m->n_win; i++)
        m->win[i]->changed = true; /* "not listed in the checkpoint" until seen below */
    if (!data) {
        for (size_t i = 0; i < m->n_win; i++)
            m->win[i]->changed = false;
        return CM_OK;
    }
    rd_t r = {data, (const uint8_t *)data + len, false};
    const uint8_t *h = get_bytes(&r, 2);
    if (!h || h[0] != 'C' || h[1] != 1)
        return CM_ERR_PARSE;
    (void)get_s(&r);
    uint64_t nw = get_u(&r);
    for (uint64_t i = 0; i < nw && !r.bad; i++) {
        int k = (int)get_u(&r);
        int64_t start = get_s(&r);
        int32_t rev = (int32_t)get_s(&r);
        if (r.bad || k < 0 || k >= AG_N_SIZES) {
            r.bad = true;
            break;
        }
        mwin_t *w = win_find(m, k, start);
        if (!w && !(w = win_add(m, k, start)))
            return CM_ERR_NOMEM;
        w->revision = rev;
        w->changed = false;
    }
    m->hold = get_s(&r);
    m->drop = get_s(&r);
    uint64_t ns = get_u(&r);
    for (uint64_t i = 0; i < ns && !r.bad; i++) {
        int32_t key = (int32_t)get_u(&r);
        int64_t wm = get_s(&r);
        bool idle = get_u(&r) != 0;
        int32_t np = (int32_t)get_u(&r);
        msrc_t *s = r.bad ? NULL : src_get(m, key);
        if (s) {
            s->wm = wm;
            s->idle = idle;
            s->nparts = np;
            s->stale = true;
            s->idle_since = 0;
        }
    }
    if (r.bad)
        return CM_ERR_PARSE;
    /* a window not in the checkpoint had been dropped before the commit */
    size_t j = 0;
    for (size_t i = 0; i < m->n_win; i++) {
        if (m->win[i]->changed) {
            mwin_free(m->win[i]);
            continue;
        }
        m->win[j++] = m->win[i];
    }
    m->n_win = j;
    return CM_OK;
}

void ag_merger_get_stats(const ag_merger_t *m, ag_merger_stats_t *out)
{
    out->watermark = m->hold;
    out->windows = m->n_win;
    out->sources = m->n_src;
    out->late_panes = m->late_panes;
    out->results = m->results;
}
