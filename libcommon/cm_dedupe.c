/*
 * cm_dedupe.c: the event_id dedupe set (contract in the header).
 *
 * Slots are {hash, event time}; hash 0 marks an empty slot (cm_dedupe_hash
 * never returns 0). Linear probing keeps a lookup in one or two cache lines.
 * Deletion is backward-shift (no tombstones), so a long run of inserts and
 * expiries never degrades probe lengths.
 *
 * When the table reaches its load limit: first reclaim expired entries (at
 * the highest watermark seen so far), then grow if still more than half full,
 * and when growing is not allowed (max_entries) or fails, evict the oldest
 * quarter of the entries by event time.
 */
#include "cm_dedupe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct dd_slot {
    uint64_t h;
    int64_t t;
} dd_slot_t;

struct cm_dedupe {
    dd_slot_t *slots;
    size_t cap;   /* power of two */
    size_t count; /* occupied slots */
    size_t limit; /* count that triggers reclaim/grow: 70% of cap */
    size_t max_entries;
    int64_t horizon;
    int64_t last_wm; /* highest watermark passed in, for reclaim */
    uint64_t inserts, duplicates, evictions;
    bool journal_on;
    dd_slot_t *journal;
    size_t jlen, jcap;
};

uint64_t cm_dedupe_hash(const void *id, size_t len)
{
    const uint8_t *p = id;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h ? h : 1;
}

static bool dd_alive(const cm_dedupe_t *d, int64_t t, int64_t wm)
{
    /* wm > t + horizon, without overflow for t near INT64_MAX */
    return !(t <= INT64_MAX - d->horizon && wm > t + d->horizon);
}

static cm_err_t dd_alloc(cm_dedupe_t *d, size_t cap)
{
    dd_slot_t *s = calloc(cap, sizeof(*s));
    if (!s)
        return CM_ERR_NOMEM;
    d->slots = s;
    d->cap = cap;
    d->limit = cap / 10 * 7;
    return CM_OK;
}

cm_dedupe_t *cm_dedupe_new(int64_t horizon_ms, size_t max_entries, char *errstr,
                           size_t errstr_size)
{
    if (horizon_ms < 0 || (max_entries && max_entries < 16)) {
        snprintf(errstr, errstr_size, "dedupe: horizon must be >= 0 and max_entries >= 16");
        return NULL;
    }
    cm_dedupe_t *d = calloc(1, sizeof(*d));
    if (!d || dd_alloc(d, 1024)) {
        free(d);
        snprintf(errstr, errstr_size, "dedupe: out of memory");
        return NULL;
    }
    d->horizon = horizon_ms;
    d->max_entries = max_entries ? max_entries : CM_DEDUPE_DEFAULT_MAX_ENTRIES;
    d->last_wm = INT64_MIN;
    return d;
}

void cm_dedupe_destroy(cm_dedupe_t *d)
{
    if (!d)
        return;
    free(d->slots);
    free(d->journal);
    free(d);
}

void cm_dedupe_clear(cm_dedupe_t *d)
{
    memset(d->slots, 0, d->cap * sizeof(*d->slots));
    d->count = 0;
    d->jlen = 0;
    d->last_wm = INT64_MIN;
}

/* Removes slot i by backward shift: later members of its cluster whose home
 * is not in (i, j] move into the hole. */
static void dd_delete_at(cm_dedupe_t *d, size_t i)
{
    size_t mask = d->cap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!d->slots[j].h)
            break;
        size_t home = d->slots[j].h & mask;
        /* Can the entry at j move to i? Only if its home is not cyclically
         * within (i, j]. */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            d->slots[i] = d->slots[j];
            i = j;
        }
    }
    d->slots[i].h = 0;
    d->slots[i].t = 0;
    d->count--;
}

/* Deletes every slot for which drop(t) holds. Starts the scan just after an
 * empty slot so that no cluster wraps around the start; a slot that receives a
 * shifted entry is examined again. */
static size_t dd_sweep(cm_dedupe_t *d, bool (*drop)(const cm_dedupe_t *, int64_t, int64_t),
                       int64_t arg)
{
    if (d->count == 0)
        return 0;
    size_t mask = d->cap - 1, start = 0, removed = 0;
    while (d->slots[start].h)
        start++; /* count < cap, so an empty slot exists */
    for (size_t k = 1; k <= d->cap; k++) {
        size_t i = (start + k) & mask;
        while (d->slots[i].h && drop(d, d->slots[i].t, arg)) {
            dd_delete_at(d, i);
            removed++;
        }
    }
    return removed;
}

static bool dd_drop_expired(const cm_dedupe_t *d, int64_t t, int64_t wm)
{
    return !dd_alive(d, t, wm);
}

static bool dd_drop_older(const cm_dedupe_t *d, int64_t t, int64_t cut)
{
    (void)d;
    return t < cut;
}

static void dd_insert_slot(dd_slot_t *slots, size_t mask, uint64_t h, int64_t t)
{
    size_t i = h & mask;
    while (slots[i].h)
        i = (i + 1) & mask;
    slots[i].h = h;
    slots[i].t = t;
}

static cm_err_t dd_resize(cm_dedupe_t *d, size_t cap)
{
    dd_slot_t *old = d->slots;
    size_t old_cap = d->cap;
    if (dd_alloc(d, cap)) {
        d->slots = old;
        d->cap = old_cap;
        d->limit = old_cap / 10 * 7;
        return CM_ERR_NOMEM;
    }
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].h)
            dd_insert_slot(d->slots, cap - 1, old[i].h, old[i].t);
    free(old);
    return CM_OK;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Drops about the oldest quarter of the entries (by event time). */
static void dd_evict(cm_dedupe_t *d)
{
    /* The cut is the 25th percentile of a sample: exact order is not needed. */
    int64_t sample[257];
    size_t n = 0, step = d->cap / 256 ? d->cap / 256 : 1;
    for (size_t i = 0; i < d->cap && n < 257; i += step)
        if (d->slots[i].h)
            sample[n++] = d->slots[i].t;
    if (n == 0)
        return;
    qsort(sample, n, sizeof(sample[0]), cmp_i64);
    int64_t cut = sample[n / 4];
    if (cut == sample[0])
        cut = sample[0] + 1; /* make progress even when many share one time */
    size_t before = d->count;
    dd_sweep(d, dd_drop_older, cut);
    d->evictions += before - d->count;
}

/* Makes room for one more entry; see top of file. */
static void dd_make_room(cm_dedupe_t *d)
{
    dd_sweep(d, dd_drop_expired, d->last_wm);
    if (d->count <= d->cap / 2 && d->count < d->max_entries)
        return;
    if (d->cap / 2 < d->max_entries && dd_resize(d, d->cap * 2) == CM_OK)
        return;
    dd_evict(d);
}

static void dd_journal_add(cm_dedupe_t *d, uint64_t h, int64_t t)
{
    if (d->jlen == d->jcap) {
        size_t cap = d->jcap ? d->jcap * 2 : 1024;
        dd_slot_t *j = realloc(d->journal, cap * sizeof(*j));
        if (!j)
            return; /* a journal entry lost only makes a restore dedupe less */
        d->journal = j;
        d->jcap = cap;
    }
    d->journal[d->jlen].h = h;
    d->journal[d->jlen].t = t;
    d->jlen++;
}

/* Sets (h, t) without the journal; returns false when h was alive. */
static bool dd_put(cm_dedupe_t *d, uint64_t h, int64_t t, int64_t wm, bool replace_alive)
{
    if (wm > d->last_wm)
        d->last_wm = wm;
    size_t mask = d->cap - 1, i = h & mask;
    for (;;) {
        dd_slot_t *s = &d->slots[i];
        if (s->h == h) {
            if (dd_alive(d, s->t, wm) && !replace_alive)
                return false;
            s->t = t;
            return true;
        }
        if (!s->h)
            break;
        i = (i + 1) & mask;
    }
    if (d->count + 1 > d->limit || d->count >= d->max_entries) {
        dd_make_room(d);
        mask = d->cap - 1;
        i = h & mask;
        while (d->slots[i].h)
            i = (i + 1) & mask;
    }
    d->slots[i].h = h;
    d->slots[i].t = t;
    d->count++;
    return true;
}

bool cm_dedupe_insert(cm_dedupe_t *d, uint64_t h, int64_t event_ms, int64_t watermark_ms)
{
    if (!h)
        h = 1;
    if (!dd_put(d, h, event_ms, watermark_ms, false)) {
        d->duplicates++;
        return false;
    }
    d->inserts++;
    if (d->journal_on)
        dd_journal_add(d, h, event_ms);
    return true;
}

bool cm_dedupe_contains(const cm_dedupe_t *d, uint64_t h, int64_t watermark_ms)
{
    if (!h)
        h = 1;
    size_t mask = d->cap - 1, i = h & mask;
    while (d->slots[i].h) {
        if (d->slots[i].h == h)
            return dd_alive(d, d->slots[i].t, watermark_ms);
        i = (i + 1) & mask;
    }
    return false;
}

size_t cm_dedupe_expire(cm_dedupe_t *d, int64_t watermark_ms)
{
    if (watermark_ms > d->last_wm)
        d->last_wm = watermark_ms;
    return dd_sweep(d, dd_drop_expired, watermark_ms);
}

void cm_dedupe_get_stats(const cm_dedupe_t *d, cm_dedupe_stats_t *out)
{
    out->entries = d->count;
    out->capacity = d->cap;
    out->bytes = sizeof(*d) + d->cap * sizeof(dd_slot_t) + d->jcap * sizeof(dd_slot_t);
    out->inserts = d->inserts;
    out->duplicates = d->duplicates;
    out->evictions = d->evictions;
}

size_t cm_dedupe_count(const cm_dedupe_t *d) { return d->count; }

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* Appends header + the `n` slots of `src` that pass the filter. */
static cm_err_t dd_write(const cm_dedupe_t *d, const dd_slot_t *src, size_t n, bool all,
                         int64_t wm, cm_buf_t *out)
{
    size_t live = 0;
    for (size_t i = 0; i < n; i++)
        if (src[i].h && (all || dd_alive(d, src[i].t, wm)))
            live++;
    if (live > UINT32_MAX)
        return CM_ERR_TOO_LARGE;
    size_t old_len = out->len;
    cm_err_t err = cm_buf_reserve(out, CM_DEDUPE_HEADER_SIZE + live * CM_DEDUPE_ENTRY_SIZE);
    if (err)
        return err;
    uint8_t *p = out->data + out->len;
    p[0] = CM_DEDUPE_FORMAT_VERSION;
    p[1] = (uint8_t)(live >> 24);
    p[2] = (uint8_t)(live >> 16);
    p[3] = (uint8_t)(live >> 8);
    p[4] = (uint8_t)live;
    p += CM_DEDUPE_HEADER_SIZE;
    for (size_t i = 0; i < n; i++) {
        if (!src[i].h || !(all || dd_alive(d, src[i].t, wm)))
            continue;
        put_be64(p, src[i].h);
        put_be64(p + 8, (uint64_t)src[i].t);
        p += CM_DEDUPE_ENTRY_SIZE;
    }
    out->len = old_len + CM_DEDUPE_HEADER_SIZE + live * CM_DEDUPE_ENTRY_SIZE;
    return CM_OK;
}

cm_err_t cm_dedupe_serialize(const cm_dedupe_t *d, int64_t watermark_ms, cm_buf_t *out)
{
    return dd_write(d, d->slots, d->cap, false, watermark_ms, out);
}

cm_err_t cm_dedupe_load(cm_dedupe_t *d, const void *data, size_t len, int64_t watermark_ms)
{
    const uint8_t *p = data;
    if (len < CM_DEDUPE_HEADER_SIZE || p[0] != CM_DEDUPE_FORMAT_VERSION)
        return CM_ERR_PARSE;
    uint32_t n = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
    if ((len - CM_DEDUPE_HEADER_SIZE) / CM_DEDUPE_ENTRY_SIZE != n ||
        (len - CM_DEDUPE_HEADER_SIZE) % CM_DEDUPE_ENTRY_SIZE)
        return CM_ERR_PARSE;
    p += CM_DEDUPE_HEADER_SIZE;
    for (uint32_t i = 0; i < n; i++, p += CM_DEDUPE_ENTRY_SIZE) {
        uint64_t h = get_be64(p);
        int64_t t = (int64_t)get_be64(p + 8);
        if (!h || !dd_alive(d, t, watermark_ms))
            continue;
        dd_put(d, h, t, watermark_ms, true);
    }
    return CM_OK;
}

void cm_dedupe_journal_enable(cm_dedupe_t *d, bool on)
{
    d->journal_on = on;
    if (!on)
        d->jlen = 0;
}

size_t cm_dedupe_journal_len(const cm_dedupe_t *d) { return d->jlen; }

cm_err_t cm_dedupe_journal_take(cm_dedupe_t *d, cm_buf_t *out, size_t *count,
                                int64_t *max_event_ms)
{
    int64_t mx = INT64_MIN;
    for (size_t i = 0; i < d->jlen; i++)
        if (d->journal[i].t > mx)
            mx = d->journal[i].t;
    if (count)
        *count = d->jlen;
    if (max_event_ms)
        *max_event_ms = mx;
    if (d->jlen == 0)
        return CM_OK;
    cm_err_t err = dd_write(d, d->journal, d->jlen, true, 0, out);
    if (err)
        return err;
    d->jlen = 0;
    return CM_OK;
}

void cm_dedupe_journal_discard(cm_dedupe_t *d) { d->jlen = 0; }
