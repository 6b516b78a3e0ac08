#include "cm_records.h"

#include <stdlib.h>
#include <string.h>

void cm_session_init(cm_session_t *s)
{
    memset(s, 0, sizeof(*s));
    cm_buf_init(&s->arena, CM_RECORD_MAX_BYTES);
}

void cm_session_reset(cm_session_t *s)
{
    cm_buf_t arena = s->arena;
    memset(s, 0, sizeof(*s));
    s->arena = arena;
    cm_buf_reset(&s->arena);
}

void cm_session_free(cm_session_t *s)
{
    if (!s)
        return;
    cm_buf_free(&s->arena);
    cm_session_init(s);
}

void cm_window_result_init(cm_window_result_t *w)
{
    memset(w, 0, sizeof(*w));
    cm_buf_init(&w->arena, CM_RECORD_MAX_BYTES);
}

void cm_window_result_reset(cm_window_result_t *w)
{
    cm_window_result_t keep = *w;
    memset(w, 0, sizeof(*w));
    w->counts = keep.counts;
    w->counts_cap = keep.counts_cap;
    w->top_urls = keep.top_urls;
    w->top_urls_cap = keep.top_urls_cap;
    w->arena = keep.arena;
    cm_buf_reset(&w->arena);
}

void cm_window_result_free(cm_window_result_t *w)
{
    if (!w)
        return;
    free(w->counts);
    free(w->top_urls);
    cm_buf_free(&w->arena);
    cm_window_result_init(w);
}

static cm_err_t kv_push(cm_kv_count_t **arr, size_t *n, size_t *cap, const char *key,
                        int64_t count)
{
    if (!key)
        return CM_ERR_INVALID;
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        if (ncap > SIZE_MAX / sizeof(**arr))
            return CM_ERR_NOMEM;
        cm_kv_count_t *p = realloc(*arr, ncap * sizeof(**arr));
        if (!p)
            return CM_ERR_NOMEM;
        *arr = p;
        *cap = ncap;
    }
    (*arr)[*n].key = key;
    (*arr)[*n].count = count;
    (*n)++;
    return CM_OK;
}

cm_err_t cm_window_result_add_count(cm_window_result_t *w, const char *key, int64_t count)
{
    return kv_push(&w->counts, &w->n_counts, &w->counts_cap, key, count);
}

cm_err_t cm_window_result_add_top_url(cm_window_result_t *w, const char *url, int64_t count)
{
    return kv_push(&w->top_urls, &w->n_top_urls, &w->top_urls_cap, url, count);
}
