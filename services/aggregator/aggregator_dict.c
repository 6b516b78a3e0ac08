/*
 * aggregator_dict.c: interning, per-pane counts and exact top-K selection.
 */
#include "aggregator_dict.h"

#include <stdlib.h>
#include <string.h>

#include "cm_hll.h"

#define INTERN_CHUNK (64 * 1024)

void ag_intern_init(ag_intern_t *t)
{
    memset(t, 0, sizeof(*t));
}

void ag_intern_free(ag_intern_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_chunks; i++)
        free(t->chunks[i]);
    free(t->chunks);
    free(t->slots);
    free(t->strs);
    memset(t, 0, sizeof(*t));
}

static cm_err_t intern_grow(ag_intern_t *t)
{
    uint32_t ncap = t->slots ? (t->mask + 1) * 2 : 256;
    ag_intern_slot_t *ns = malloc(sizeof(*ns) * ncap);
    if (!ns)
        return CM_ERR_NOMEM;
    for (uint32_t i = 0; i < ncap; i++)
        ns[i].id = AG_ID_NONE;
    uint32_t nmask = ncap - 1;
    if (t->slots) {
        for (uint32_t i = 0; i <= t->mask; i++) {
            if (t->slots[i].id == AG_ID_NONE)
                continue;
            uint32_t j = (uint32_t)t->slots[i].hash & nmask;
            while (ns[j].id != AG_ID_NONE)
                j = (j + 1) & nmask;
            ns[j] = t->slots[i];
        }
        free(t->slots);
    }
    t->slots = ns;
    t->mask = nmask;
    return CM_OK;
}

static char *intern_store(ag_intern_t *t, const char *s, size_t n)
{
    if (!t->n_chunks || t->chunk_used + n + 1 > t->chunk_size) {
        size_t size = n + 1 > INTERN_CHUNK ? n + 1 : INTERN_CHUNK;
        if (t->n_chunks == t->chunks_cap) {
            size_t nc = t->chunks_cap ? t->chunks_cap * 2 : 16;
            char **cc = realloc(t->chunks, nc * sizeof(*cc));
            if (!cc)
                return NULL;
            t->chunks = cc;
            t->chunks_cap = nc;
        }
        char *c = malloc(size);
        if (!c)
            return NULL;
        t->chunks[t->n_chunks++] = c;
        t->chunk_used = 0;
        t->chunk_size = size;
    }
    char *dst = t->chunks[t->n_chunks - 1] + t->chunk_used;
    memcpy(dst, s, n);
    dst[n] = 0;
    t->chunk_used += n + 1;
    t->bytes += n + 1;
    return dst;
}

uint64_t ag_intern_hash(const char *s, size_t n)
{
    return cm_murmur64a(s, n, 0x5bd1e995ULL);
}

uint32_t ag_intern_id(ag_intern_t *t, const char *s, size_t n)
{
    return ag_intern_id_h(t, s, n, ag_intern_hash(s, n));
}

uint32_t ag_intern_id_h(ag_intern_t *t, const char *s, size_t n, uint64_t h)
{
    if (!t->slots || (t->count + 1) * 4 > (t->mask + 1) * 3) {
        if (intern_grow(t))
            return AG_ID_NONE;
    }
    uint32_t j = (uint32_t)h & t->mask;
    for (;;) {
        ag_intern_slot_t *sl = &t->slots[j];
        if (sl->id == AG_ID_NONE)
            break;
        if (sl->hash == h && sl->len == n && memcmp(sl->s, s, n) == 0)
            return sl->id;
        j = (j + 1) & t->mask;
    }
    if (t->count == t->strs_cap) {
        uint32_t nc = t->strs_cap ? t->strs_cap * 2 : 256;
        ag_intern_str_t *ns = realloc(t->strs, sizeof(*ns) * nc);
        if (!ns)
            return AG_ID_NONE;
        t->strs = ns;
        t->strs_cap = nc;
    }
    char *copy = intern_store(t, s, n);
    if (!copy)
        return AG_ID_NONE;
    uint32_t id = t->count++;
    t->strs[id].s = copy;
    t->strs[id].len = (uint32_t)n;
    t->slots[j].hash = h;
    t->slots[j].s = copy;
    t->slots[j].len = (uint32_t)n;
    t->slots[j].id = id;
    return id;
}

/* ---------------------------------------------------------------- counts */

void ag_counts_init(ag_counts_t *c)
{
    memset(c, 0, sizeof(*c));
}

void ag_counts_free(ag_counts_t *c)
{
    if (!c)
        return;
    free(c->slots);
    free(c->dirty_list);
    free(c->fold_list);
    bool tf = c->track_fold;
    memset(c, 0, sizeof(*c));
    c->track_fold = tf;
}

static inline uint32_t id_hash(uint32_t id)
{
    return id * 2654435761u;
}

static cm_err_t counts_alloc(ag_counts_t *c, uint32_t ncap);

static cm_err_t counts_grow(ag_counts_t *c)
{
    return counts_alloc(c, c->slots ? (c->mask + 1) * 2 : 16);
}

cm_err_t ag_counts_reserve(ag_counts_t *c, uint32_t n)
{
    if (c->slots || n <= 12)
        return CM_OK;
    uint32_t cap = 16;
    while (cap < (uint64_t)n * 4 / 3 + 1 && cap < (1u << 30))
        cap *= 2;
    return counts_alloc(c, cap);
}

static cm_err_t counts_alloc(ag_counts_t *c, uint32_t ncap)
{
    ag_count_slot_t *ns = malloc(sizeof(*ns) * ncap);
    if (!ns)
        return CM_ERR_NOMEM;
    for (uint32_t i = 0; i < ncap; i++) {
        ns[i].id = AG_ID_NONE;
        ns[i].dirty = 0;
        ns[i].count = 0;
        ns[i].folded = 0;
    }
    uint32_t nmask = ncap - 1;
    uint32_t n_dirty = 0, n_fold = 0;
    uint32_t *nd = malloc(sizeof(*nd) * ncap);
    uint32_t *nf = c->track_fold ? malloc(sizeof(*nf) * ncap) : NULL;
    if (!nd || (c->track_fold && !nf)) {
        free(ns);
        free(nd);
        free(nf);
        return CM_ERR_NOMEM;
    }
    if (c->slots) {
        for (uint32_t i = 0; i <= c->mask; i++) {
            if (c->slots[i].id == AG_ID_NONE)
                continue;
            uint32_t j = id_hash(c->slots[i].id) & nmask;
            while (ns[j].id != AG_ID_NONE)
                j = (j + 1) & nmask;
            ns[j] = c->slots[i];
            if (ns[j].dirty & AG_DIRTY_REDIS)
                nd[n_dirty++] = j;
            if (ns[j].dirty & AG_DIRTY_FOLD)
                nf[n_fold++] = j;
        }
        free(c->slots);
    }
    free(c->dirty_list);
    free(c->fold_list);
    c->slots = ns;
    c->mask = nmask;
    c->dirty_list = nd;
    c->fold_list = nf;
    c->dirty_cap = ncap;
    c->n_dirty = n_dirty;
    c->n_fold = n_fold;
    return CM_OK;
}

static inline ag_count_slot_t *counts_slot(ag_counts_t *c, uint32_t id, cm_err_t *err)
{
    if (!c->slots || (c->len + 1) * 4 > (c->mask + 1) * 3) {
        if ((*err = counts_grow(c)))
            return NULL;
    }
    uint32_t j = id_hash(id) & c->mask;
    for (;;) {
        ag_count_slot_t *s = &c->slots[j];
        if (s->id == id)
            break;
        if (s->id == AG_ID_NONE) {
            s->id = id;
            s->count = 0;
            c->len++;
            break;
        }
        j = (j + 1) & c->mask;
    }
    ag_count_slot_t *s = &c->slots[j];
    if (!(s->dirty & AG_DIRTY_REDIS)) {
        s->dirty |= AG_DIRTY_REDIS;
        c->dirty_list[c->n_dirty++] = j; /* dirty_cap = slots: always room */
    }
    if (c->track_fold && !(s->dirty & AG_DIRTY_FOLD)) {
        s->dirty |= AG_DIRTY_FOLD;
        c->fold_list[c->n_fold++] = j;
    }
    return s;
}

cm_err_t ag_counts_add(ag_counts_t *c, uint32_t id, int64_t delta)
{
    cm_err_t err = CM_OK;
    ag_count_slot_t *s = counts_slot(c, id, &err);
    if (!s)
        return err;
    s->count += delta;
    return CM_OK;
}

cm_err_t ag_counts_set(ag_counts_t *c, uint32_t id, int64_t value)
{
    cm_err_t err = CM_OK;
    ag_count_slot_t *s = counts_slot(c, id, &err);
    if (!s)
        return err;
    s->count = value;
    return CM_OK;
}

int64_t ag_counts_get(const ag_counts_t *c, uint32_t id)
{
    if (!c->slots)
        return 0;
    uint32_t j = id_hash(id) & c->mask;
    for (;;) {
        const ag_count_slot_t *s = &c->slots[j];
        if (s->id == id)
            return s->count;
        if (s->id == AG_ID_NONE)
            return 0;
        j = (j + 1) & c->mask;
    }
}

void ag_counts_clean(ag_counts_t *c)
{
    for (uint32_t i = 0; i < c->n_dirty; i++)
        c->slots[c->dirty_list[i]].dirty &= ~AG_DIRTY_REDIS;
    c->n_dirty = 0;
}

cm_err_t ag_counts_remapped(const ag_counts_t *c, const uint32_t *map, ag_counts_t *out)
{
    ag_counts_init(out);
    out->track_fold = c->track_fold;
    if (!c->slots)
        return CM_OK;
    if (counts_alloc(out, c->mask + 1))
        return CM_ERR_NOMEM;
    for (uint32_t i = 0; i <= c->mask; i++) {
        const ag_count_slot_t *s = &c->slots[i];
        if (s->id == AG_ID_NONE)
            continue;
        uint32_t id = map[s->id];
        uint32_t j = id_hash(id) & out->mask;
        while (out->slots[j].id != AG_ID_NONE)
            j = (j + 1) & out->mask;
        out->slots[j] = *s;
        out->slots[j].id = id;
        out->len++;
        if (s->dirty & AG_DIRTY_REDIS)
            out->dirty_list[out->n_dirty++] = j;
        if (s->dirty & AG_DIRTY_FOLD)
            out->fold_list[out->n_fold++] = j;
    }
    return CM_OK;
}

cm_err_t ag_counts_fold(ag_counts_t *c, cm_err_t (*fn)(uint32_t id, int64_t delta, void *ud),
                        void *ud)
{
    while (c->n_fold > 0) {
        ag_count_slot_t *s = &c->slots[c->fold_list[c->n_fold - 1]];
        int64_t delta = s->count - s->folded;
        if (delta) {
            cm_err_t err = fn(s->id, delta, ud);
            if (err)
                return err;
            s->folded = s->count;
        }
        s->dirty &= ~AG_DIRTY_FOLD;
        c->n_fold--;
    }
    return CM_OK;
}

cm_err_t ag_counts_mark_all(ag_counts_t *c)
{
    if (!c->slots)
        return CM_OK;
    for (uint32_t i = 0; i <= c->mask; i++) {
        if (c->slots[i].id != AG_ID_NONE && !(c->slots[i].dirty & AG_DIRTY_REDIS)) {
            c->slots[i].dirty |= AG_DIRTY_REDIS;
            c->dirty_list[c->n_dirty++] = i;
        }
    }
    return CM_OK;
}

cm_err_t ag_intern_compact(ag_intern_t *t, ag_counts_t *const *tables, size_t n)
{
    cm_err_t err = CM_ERR_NOMEM;
    ag_intern_t nt;
    ag_intern_init(&nt);
    uint32_t *map = malloc(sizeof(*map) * (t->count ? t->count : 1));
    ag_counts_t *out = calloc(n ? n : 1, sizeof(*out));
    size_t done = 0;
    if (!map || !out)
        goto out;
    for (uint32_t i = 0; i < t->count; i++)
        map[i] = AG_ID_NONE;
    for (size_t k = 0; k < n; k++) {
        const ag_counts_t *c = tables[k];
        for (uint32_t i = 0; c->slots && i <= c->mask; i++) {
            uint32_t id = c->slots[i].id;
            if (id == AG_ID_NONE || map[id] != AG_ID_NONE)
                continue;
            map[id] = ag_intern_id(&nt, t->strs[id].s, t->strs[id].len);
            if (map[id] == AG_ID_NONE)
                goto out;
        }
    }
    for (done = 0; done < n; done++)
        if (ag_counts_remapped(tables[done], map, &out[done]))
            goto out;
    for (size_t k = 0; k < n; k++) { /* commit */
        ag_counts_free(tables[k]);
        *tables[k] = out[k];
    }
    done = 0;
    ag_intern_free(t);
    *t = nt;
    ag_intern_init(&nt);
    err = CM_OK;
out:
    for (size_t k = 0; k < done; k++)
        ag_counts_free(&out[k]);
    free(out);
    free(map);
    ag_intern_free(&nt);
    return err;
}

/* ----------------------------------------------------------------- top-K */

int ag_topk_cmp(const ag_topk_item_t *a, const ag_topk_item_t *b)
{
    if (a->count != b->count)
        return a->count > b->count ? -1 : 1;
    return strcmp(a->key, b->key);
}

/* A max-heap on "ranks worse": the root is the worst of the kept items. */
static void heap_down(ag_topk_item_t *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && ag_topk_cmp(&h[l], &h[w]) > 0)
            w = l;
        if (r < n && ag_topk_cmp(&h[r], &h[w]) > 0)
            w = r;
        if (w == i)
            return;
        ag_topk_item_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static int topk_qcmp(const void *a, const void *b)
{
    return ag_topk_cmp(a, b);
}

size_t ag_topk_select(ag_topk_item_t *items, size_t n, size_t k)
{
    if (k == 0)
        return 0;
    if (n <= k) {
        qsort(items, n, sizeof(*items), topk_qcmp);
        return n;
    }
    for (size_t i = k / 2 + 1; i-- > 0;)
        heap_down(items, k, i);
    for (size_t i = k; i < n; i++) {
        if (ag_topk_cmp(&items[i], &items[0]) < 0) {
            ag_topk_item_t t = items[0];
            items[0] = items[i];
            items[i] = t;
            heap_down(items, k, 0);
        }
    }
    qsort(items, k, sizeof(*items), topk_qcmp);
    return k;
}
