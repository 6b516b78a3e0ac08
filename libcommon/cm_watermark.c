/*
 * cm_watermark.c: per-partition and service watermarks (contract in the
 * header).
 *
 * Partitions live in a dense array (`parts`, what get() walks) and a direct
 * index from key to position + 1 (`index`, what observe() uses): the hot path
 * is two loads and a compare. Removal moves the last element into the hole.
 */
#include "cm_watermark.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct wm_part {
    int32_t key;
    int64_t max_event; /* CM_WATERMARK_NONE: no event yet */
    int64_t last_seen; /* processing time of the last record (monotonic ms) */
} wm_part_t;

struct cm_watermark {
    int64_t bound;
    int64_t idle_timeout;
    wm_part_t *parts;
    size_t n, cap;
    uint32_t *index; /* key -> position + 1, 0: absent */
    size_t index_len;
    int64_t hold; /* highest service watermark returned since the last add/remove */
};

cm_watermark_t *cm_watermark_new(int64_t bound_ms, int64_t idle_timeout_ms, char *errstr,
                                 size_t errstr_size)
{
    if (bound_ms < 0 || idle_timeout_ms < 0) {
        snprintf(errstr, errstr_size, "watermark: bound and idle timeout must be >= 0");
        return NULL;
    }
    cm_watermark_t *wm = calloc(1, sizeof(*wm));
    if (!wm) {
        snprintf(errstr, errstr_size, "watermark: out of memory");
        return NULL;
    }
    wm->bound = bound_ms;
    wm->idle_timeout = idle_timeout_ms;
    wm->hold = CM_WATERMARK_NONE;
    return wm;
}

void cm_watermark_destroy(cm_watermark_t *wm)
{
    if (!wm)
        return;
    free(wm->parts);
    free(wm->index);
    free(wm);
}

int64_t cm_watermark_bound(const cm_watermark_t *wm) { return wm->bound; }
int64_t cm_watermark_idle_timeout(const cm_watermark_t *wm) { return wm->idle_timeout; }

static wm_part_t *wm_find(const cm_watermark_t *wm, int32_t key)
{
    if (key < 0 || (size_t)key >= wm->index_len)
        return NULL;
    uint32_t pos = wm->index[key];
    return pos ? &wm->parts[pos - 1] : NULL;
}

/* Saturating max_event - bound: an event time near INT64_MIN must not wrap. */
static int64_t wm_of(const cm_watermark_t *wm, const wm_part_t *p)
{
    if (p->max_event == CM_WATERMARK_NONE)
        return CM_WATERMARK_NONE;
    if (p->max_event < CM_WATERMARK_NONE + wm->bound + 1)
        return CM_WATERMARK_NONE;
    return p->max_event - wm->bound;
}

static bool wm_idle(const cm_watermark_t *wm, const wm_part_t *p, int64_t now_ms)
{
    return wm->idle_timeout > 0 && now_ms - p->last_seen >= wm->idle_timeout;
}

cm_err_t cm_watermark_add(cm_watermark_t *wm, int32_t key, int64_t max_event_ms,
                          int64_t now_ms)
{
    if (key < 0 || key > CM_WATERMARK_MAX_KEY)
        return CM_ERR_INVALID;
    wm_part_t *p = wm_find(wm, key);
    if (!p) {
        if ((size_t)key >= wm->index_len) {
            size_t len = wm->index_len ? wm->index_len : 16;
            while (len <= (size_t)key)
                len *= 2;
            uint32_t *ix = realloc(wm->index, len * sizeof(*ix));
            if (!ix)
                return CM_ERR_NOMEM;
            memset(ix + wm->index_len, 0, (len - wm->index_len) * sizeof(*ix));
            wm->index = ix;
            wm->index_len = len;
        }
        if (wm->n == wm->cap) {
            size_t cap = wm->cap ? wm->cap * 2 : 8;
            wm_part_t *np = realloc(wm->parts, cap * sizeof(*np));
            if (!np)
                return CM_ERR_NOMEM;
            wm->parts = np;
            wm->cap = cap;
        }
        p = &wm->parts[wm->n++];
        wm->index[key] = (uint32_t)wm->n;
    }
    p->key = key;
    p->max_event = max_event_ms;
    p->last_seen = now_ms;
    wm->hold = CM_WATERMARK_NONE;
    return CM_OK;
}

void cm_watermark_remove(cm_watermark_t *wm, int32_t key)
{
    wm_part_t *p = wm_find(wm, key);
    if (!p)
        return;
    size_t pos = (size_t)(p - wm->parts);
    wm->index[key] = 0;
    if (pos != wm->n - 1) {
        wm->parts[pos] = wm->parts[wm->n - 1];
        wm->index[wm->parts[pos].key] = (uint32_t)pos + 1;
    }
    wm->n--;
    wm->hold = CM_WATERMARK_NONE;
}

void cm_watermark_clear(cm_watermark_t *wm)
{
    for (size_t i = 0; i < wm->n; i++)
        wm->index[wm->parts[i].key] = 0;
    wm->n = 0;
    wm->hold = CM_WATERMARK_NONE;
}

bool cm_watermark_has(const cm_watermark_t *wm, int32_t key) { return wm_find(wm, key) != NULL; }
size_t cm_watermark_count(const cm_watermark_t *wm) { return wm->n; }

int64_t cm_watermark_observe(cm_watermark_t *wm, int32_t key, int64_t event_ms, int64_t now_ms)
{
    wm_part_t *p = wm_find(wm, key);
    if (!p)
        return CM_WATERMARK_NONE;
    if (event_ms > p->max_event)
        p->max_event = event_ms;
    p->last_seen = now_ms;
    return wm_of(wm, p);
}

void cm_watermark_touch(cm_watermark_t *wm, int32_t key, int64_t now_ms)
{
    wm_part_t *p = wm_find(wm, key);
    if (p)
        p->last_seen = now_ms;
}

int64_t cm_watermark_partition(const cm_watermark_t *wm, int32_t key)
{
    const wm_part_t *p = wm_find(wm, key);
    return p ? wm_of(wm, p) : CM_WATERMARK_NONE;
}

int64_t cm_watermark_max_event(const cm_watermark_t *wm, int32_t key)
{
    const wm_part_t *p = wm_find(wm, key);
    return p ? p->max_event : CM_WATERMARK_NONE;
}

bool cm_watermark_is_idle(const cm_watermark_t *wm, int32_t key, int64_t now_ms)
{
    const wm_part_t *p = wm_find(wm, key);
    return p ? wm_idle(wm, p, now_ms) : false;
}

int64_t cm_watermark_get(cm_watermark_t *wm, int64_t now_ms)
{
    if (wm->n == 0)
        return CM_WATERMARK_NONE;
    int64_t min_active = INT64_MAX, max_all = CM_WATERMARK_NONE;
    bool any_active = false;
    for (size_t i = 0; i < wm->n; i++) {
        const wm_part_t *p = &wm->parts[i];
        int64_t w = wm_of(wm, p);
        if (w > max_all)
            max_all = w;
        if (!wm_idle(wm, p, now_ms)) {
            any_active = true;
            if (w < min_active)
                min_active = w;
        }
    }
    int64_t v = any_active ? min_active : max_all;
    if (v > wm->hold)
        wm->hold = v;
    return wm->hold;
}

void cm_watermark_foreach(const cm_watermark_t *wm,
                          void (*fn)(int32_t key, int64_t max_event_ms, void *ud), void *ud)
{
    for (size_t i = 0; i < wm->n; i++)
        fn(wm->parts[i].key, wm->parts[i].max_event, ud);
}
