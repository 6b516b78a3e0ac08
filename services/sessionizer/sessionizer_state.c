/*
 * sessionizer_state.c: per-partition session store and the event-time rules
 * (contract in sessionizer_state.h).
 *
 * Layout, chosen for the <= 256 bytes per open session target and for no
 * malloc on the per-event path:
 *  - users and sessions sit in chunked pools (4096 elements per chunk) and
 *    refer to each other by 32-bit ids; a user's sessions form a list sorted
 *    by start (nearly always one element);
 *  - the user table is open addressing over user ids (4 bytes per slot), the
 *    full hash is compared in the user record;
 *  - URLs, device types and countries are interned once per partition and
 *    refcounted, a session holds 4-byte ids;
 *  - timers: one per user with pending work (emission or release), in a
 *    binary min-heap keyed by event time. Entries are never removed: a user
 *    whose timer moves earlier gets a new entry and the old one is skipped
 *    when it pops (user->timer no longer matches); a timer that moves later
 *    is left in place, fires early and re-arms. Sessions are extended by
 *    most events, so this keeps the per-event cost at zero heap operations.
 */
#include "sessionizer_state.h"

#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_avro.h"
#include "cm_watermark.h"

/* ------------------------------------------------------------------ pools */

static void pool_init(sz_pool_t *p, uint32_t elsize, uint32_t link_off)
{
    memset(p, 0, sizeof(*p));
    p->elsize = elsize;
    p->link_off = link_off;
    p->free = SZ_NIL;
}

static void pool_destroy(sz_pool_t *p)
{
    for (uint32_t i = 0; i < p->nchunks; i++)
        free(p->chunks[i]);
    free(p->chunks);
    memset(p, 0, sizeof(*p));
}

/* A zeroed element, or SZ_NIL on no memory. */
static uint32_t pool_alloc(sz_pool_t *p)
{
    uint32_t id;
    if (p->free != SZ_NIL) {
        id = p->free;
        memcpy(&p->free, (char *)sz_pool_at(p, id) + p->link_off, sizeof(uint32_t));
    } else {
        if (p->used == SZ_NIL - 1)
            return SZ_NIL;
        if ((p->used >> SZ_CHUNK_SHIFT) >= p->nchunks) {
            if (p->nchunks == p->chunks_cap) {
                uint32_t cap = p->chunks_cap ? p->chunks_cap * 2 : 8;
                char **c = realloc(p->chunks, cap * sizeof(*c));
                if (!c)
                    return SZ_NIL;
                p->chunks = c;
                p->chunks_cap = cap;
            }
            char *chunk = malloc((size_t)SZ_CHUNK * p->elsize);
            if (!chunk)
                return SZ_NIL;
            p->chunks[p->nchunks++] = chunk;
        }
        id = p->used++;
    }
    memset(sz_pool_at(p, id), 0, p->elsize);
    p->live++;
    return id;
}

static void pool_free(sz_pool_t *p, uint32_t id)
{
    memcpy((char *)sz_pool_at(p, id) + p->link_off, &p->free, sizeof(uint32_t));
    p->free = id;
    p->live--;
}

static size_t pool_bytes(const sz_pool_t *p)
{
    return (size_t)p->nchunks * SZ_CHUNK * p->elsize + p->chunks_cap * sizeof(char *);
}

/* ---------------------------------------------------------------- strings */

static cm_err_t strtab_grow(sz_strtab_t *t)
{
    uint32_t cap = t->slot_cap ? t->slot_cap * 2 : 256;
    uint32_t *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return CM_ERR_NOMEM;
    for (uint32_t i = 0; i < t->slot_cap; i++) {
        uint32_t id = t->slots[i];
        if (!id)
            continue;
        uint32_t j = (uint32_t)t->strs[id]->h & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = id;
    }
    free(t->slots);
    t->slots = slots;
    t->slot_cap = cap;
    return CM_OK;
}

uint32_t sz_str_intern(sz_strtab_t *t, const char *s, size_t len)
{
    if (len > UINT32_MAX)
        return 0;
    uint64_t h = cm_dedupe_hash(s, len);
    if (t->slot_cap) {
        uint32_t mask = t->slot_cap - 1, i = (uint32_t)h & mask;
        for (uint32_t id; (id = t->slots[i]); i = (i + 1) & mask) {
            sz_str_t *e = t->strs[id];
            if (e->h == h && e->len == len && memcmp(e->s, s, len) == 0) {
                e->ref++;
                return id;
            }
        }
    }
    if ((t->count + 1) * 10 > (uint64_t)t->slot_cap * 7 && strtab_grow(t))
        return 0;
    uint32_t id;
    if (t->nfree) {
        id = t->free_ids[--t->nfree];
    } else {
        if (t->n == 0)
            t->n = 1; /* id 0 means "none" */
        if (t->n >= t->cap) {
            uint32_t cap = t->cap ? t->cap * 2 : 256;
            sz_str_t **strs = realloc(t->strs, cap * sizeof(*strs));
            if (!strs)
                return 0;
            t->strs = strs;
            t->cap = cap;
        }
        id = t->n++;
    }
    sz_str_t *e = malloc(sizeof(*e) + len + 1);
    if (!e) {
        if (t->nfree < t->free_cap)
            t->free_ids[t->nfree++] = id;
        return 0;
    }
    e->h = h;
    e->ref = 1;
    e->len = (uint32_t)len;
    memcpy(e->s, s, len);
    e->s[len] = '\0';
    t->strs[id] = e;
    t->bytes += malloc_usable_size(e);
    uint32_t mask = t->slot_cap - 1, i = (uint32_t)h & mask;
    while (t->slots[i])
        i = (i + 1) & mask;
    t->slots[i] = id;
    t->count++;
    return id;
}

void sz_str_release(sz_strtab_t *t, uint32_t id)
{
    if (!id)
        return;
    sz_str_t *e = t->strs[id];
    if (--e->ref)
        return;
    uint32_t mask = t->slot_cap - 1, i = (uint32_t)e->h & mask;
    while (t->slots[i] != id)
        i = (i + 1) & mask;
    /* backward-shift deletion */
    for (uint32_t j = i;;) {
        j = (j + 1) & mask;
        uint32_t other = t->slots[j];
        if (!other)
            break;
        uint32_t home = (uint32_t)t->strs[other]->h & mask;
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            t->slots[i] = other;
            i = j;
        }
    }
    t->slots[i] = 0;
    t->count--;
    t->bytes -= malloc_usable_size(e);
    free(e);
    t->strs[id] = NULL;
    if (t->nfree == t->free_cap) {
        uint32_t cap = t->free_cap ? t->free_cap * 2 : 256;
        uint32_t *f = realloc(t->free_ids, cap * sizeof(*f));
        if (!f)
            return; /* the id is leaked, not the memory */
        t->free_ids = f;
        t->free_cap = cap;
    }
    t->free_ids[t->nfree++] = id;
}

static void strtab_destroy(sz_strtab_t *t)
{
    for (uint32_t i = 1; i < t->n; i++)
        free(t->strs[i]);
    free(t->strs);
    free(t->free_ids);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

static size_t strtab_bytes(const sz_strtab_t *t)
{
    return t->bytes + (size_t)t->cap * sizeof(sz_str_t *) + (size_t)t->free_cap * 4 +
           (size_t)t->slot_cap * 4;
}

/* Points *field at the interned copy of s, if it differs from the current one. */
static cm_err_t str_set(sz_strtab_t *t, uint32_t *field, const char *s)
{
    if (!s) {
        sz_str_release(t, *field);
        *field = 0;
        return CM_OK;
    }
    size_t len = strlen(s);
    const sz_str_t *cur = sz_str_get(t, *field);
    if (cur && cur->len == len && memcmp(cur->s, s, len) == 0)
        return CM_OK;
    uint32_t id = sz_str_intern(t, s, len);
    if (!id)
        return CM_ERR_NOMEM;
    sz_str_release(t, *field);
    *field = id;
    return CM_OK;
}

static void str_copy(sz_strtab_t *t, uint32_t *dst, uint32_t src)
{
    if (*dst == src)
        return;
    if (src)
        t->strs[src]->ref++;
    sz_str_release(t, *dst);
    *dst = src;
}

/* ------------------------------------------------------------------ timers */

static cm_err_t heap_push(sz_part_t *p, int64_t at, uint32_t user)
{
    if (p->heap_n == p->heap_cap) {
        uint32_t cap = p->heap_cap ? p->heap_cap * 2 : 1024;
        sz_timer_t *h = realloc(p->heap, cap * sizeof(*h));
        if (!h)
            return CM_ERR_NOMEM;
        p->heap = h;
        p->heap_cap = cap;
    }
    uint32_t i = p->heap_n++;
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (p->heap[parent].at <= at)
            break;
        p->heap[i] = p->heap[parent];
        i = parent;
    }
    p->heap[i].at = at;
    p->heap[i].user = user;
    p->heap[i].pad = 0;
    return CM_OK;
}

static sz_timer_t heap_pop(sz_part_t *p)
{
    sz_timer_t top = p->heap[0], last = p->heap[--p->heap_n];
    uint32_t i = 0, n = p->heap_n;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && p->heap[c + 1].at < p->heap[c].at)
            c++;
        if (last.at <= p->heap[c].at)
            break;
        p->heap[i] = p->heap[c];
        i = c;
    }
    if (n)
        p->heap[i] = last;
    return top;
}

/* ------------------------------------------------------------------ users */

static cm_err_t utab_grow(sz_part_t *p)
{
    uint32_t cap = p->utab_cap ? p->utab_cap * 2 : 1024;
    uint32_t *t = calloc(cap, sizeof(*t));
    if (!t)
        return CM_ERR_NOMEM;
    for (uint32_t i = 0; i < p->utab_cap; i++) {
        uint32_t v = p->utab[i];
        if (!v)
            continue;
        uint32_t j = (uint32_t)sz_user_at(p, v - 1)->h & (cap - 1);
        while (t[j])
            j = (j + 1) & (cap - 1);
        t[j] = v;
    }
    free(p->utab);
    p->utab = t;
    p->utab_cap = cap;
    return CM_OK;
}

uint32_t sz_user_find(const sz_part_t *p, const char *uid, size_t len, uint64_t h)
{
    if (!p->utab_cap)
        return SZ_NIL;
    uint32_t mask = p->utab_cap - 1, i = (uint32_t)h & mask;
    for (uint32_t v; (v = p->utab[i]); i = (i + 1) & mask) {
        const sz_user_t *u = sz_user_at(p, v - 1);
        if (u->h == h && u->uid_len == len && memcmp(u->uid, uid, len) == 0)
            return v - 1;
    }
    return SZ_NIL;
}

uint32_t sz_user_get(sz_part_t *p, const char *uid, size_t len, uint64_t h)
{
    uint32_t idx = sz_user_find(p, uid, len, h);
    if (idx != SZ_NIL)
        return idx;
    if ((uint64_t)(p->nusers + 1) * 10 > (uint64_t)p->utab_cap * 7 && utab_grow(p))
        return SZ_NIL;
    char *copy = malloc(len + 1);
    if (!copy)
        return SZ_NIL;
    idx = pool_alloc(&p->users);
    if (idx == SZ_NIL) {
        free(copy);
        return SZ_NIL;
    }
    memcpy(copy, uid, len);
    copy[len] = '\0';
    sz_user_t *u = sz_user_at(p, idx);
    u->h = h;
    u->uid = copy;
    u->uid_len = (uint32_t)len;
    u->sess = SZ_NIL;
    u->dirty_next = SZ_NIL;
    u->timer = INT64_MAX;
    u->final_end = INT64_MIN;
    p->uid_bytes += malloc_usable_size(copy);
    uint32_t mask = p->utab_cap - 1, i = (uint32_t)h & mask;
    while (p->utab[i])
        i = (i + 1) & mask;
    p->utab[i] = idx + 1;
    p->nusers++;
    return idx;
}

static void sess_release(sz_part_t *p, uint32_t sidx)
{
    sz_sess_t *s = sz_sess_at(p, sidx);
    sz_str_release(&p->strs, s->entry_url);
    sz_str_release(&p->strs, s->exit_url);
    sz_str_release(&p->strs, s->device);
    sz_str_release(&p->strs, s->country);
    pool_free(&p->sessions, sidx);
    p->open_sessions--;
}

/* Frees the user record (no sessions left; not on the dirty list). */
static void user_free(sz_part_t *p, uint32_t uidx)
{
    sz_user_t *u = sz_user_at(p, uidx);
    uint32_t mask = p->utab_cap - 1, i = (uint32_t)u->h & mask;
    while (p->utab[i] != uidx + 1)
        i = (i + 1) & mask;
    for (uint32_t j = i;;) {
        j = (j + 1) & mask;
        uint32_t v = p->utab[j];
        if (!v)
            break;
        uint32_t home = (uint32_t)sz_user_at(p, v - 1)->h & mask;
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            p->utab[i] = v;
            i = j;
        }
    }
    p->utab[i] = 0;
    p->nusers--;
    p->uid_bytes -= malloc_usable_size(u->uid);
    free(u->uid);
    /* h == 0 marks a free user for every scan and for stale heap entries */
    memset(u, 0, sizeof(*u));
    pool_free(&p->users, uidx);
}

void sz_user_drop(sz_part_t *p, uint32_t uidx)
{
    sz_user_t *u = sz_user_at(p, uidx);
    for (uint32_t s = u->sess, next; s != SZ_NIL; s = next) {
        next = sz_sess_at(p, s)->next;
        sess_release(p, s);
    }
    u->sess = SZ_NIL;
    if (u->flags & SZ_U_DIRTY) {
        /* unlink from the dirty list */
        uint32_t *pp = &p->dirty_head;
        while (*pp != uidx)
            pp = &sz_user_at(p, *pp)->dirty_next;
        *pp = u->dirty_next;
    }
    user_free(p, uidx);
}

void sz_user_mark_dirty(sz_part_t *p, uint32_t uidx)
{
    sz_user_t *u = sz_user_at(p, uidx);
    if (u->flags & SZ_U_DIRTY)
        return;
    u->flags |= SZ_U_DIRTY;
    u->dirty_next = p->dirty_head;
    p->dirty_head = uidx;
}

uint32_t sz_sess_new(sz_part_t *p)
{
    uint32_t sidx = pool_alloc(&p->sessions);
    if (sidx == SZ_NIL)
        return SZ_NIL;
    sz_sess_t *s = sz_sess_at(p, sidx);
    s->revision = -1;
    s->next = SZ_NIL;
    p->open_sessions++;
    return sidx;
}

/* Unlinks sidx from the user's list. */
static void user_unlink_sess(sz_part_t *p, sz_user_t *u, uint32_t sidx)
{
    uint32_t *pp = &u->sess;
    while (*pp != sidx)
        pp = &sz_sess_at(p, *pp)->next;
    *pp = sz_sess_at(p, sidx)->next;
}

void sz_user_insert_sess(sz_part_t *p, sz_user_t *u, uint32_t sidx)
{
    sz_sess_t *s = sz_sess_at(p, sidx);
    uint32_t *pp = &u->sess;
    while (*pp != SZ_NIL && sz_sess_at(p, *pp)->start <= s->start)
        pp = &sz_sess_at(p, *pp)->next;
    s->next = *pp;
    *pp = sidx;
}

static int64_t sat_add(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    return a + b;
}

static int64_t marker_due(const sz_part_t *p, const sz_user_t *u);

/* When the session next needs attention (at the partition watermark). */
static int64_t sess_due(const sz_part_t *p, const sz_sess_t *s)
{
    int64_t close = sat_add(s->end, p->prm.gap_ms);
    return (s->flags & SZ_S_CHANGED) ? close : sat_add(close, p->prm.lateness_ms);
}

/* When the final_end marker of a user without sessions can go. */
static int64_t marker_due(const sz_part_t *p, const sz_user_t *u)
{
    return sat_add(sat_add(u->final_end, 2 * p->prm.gap_ms), p->prm.lateness_ms);
}

bool sz_user_expired(const sz_part_t *p, const sz_user_t *u, int64_t wm)
{
    return u->sess == SZ_NIL && (u->final_end == INT64_MIN || marker_due(p, u) <= wm);
}

cm_err_t sz_user_arm(sz_part_t *p, uint32_t uidx)
{
    sz_user_t *u = sz_user_at(p, uidx);
    int64_t due = INT64_MAX;
    for (uint32_t s = u->sess; s != SZ_NIL; s = sz_sess_at(p, s)->next) {
        int64_t d = sess_due(p, sz_sess_at(p, s));
        if (d < due)
            due = d;
    }
    if (u->sess == SZ_NIL && u->final_end != INT64_MIN)
        due = marker_due(p, u);
    if (due == INT64_MAX || due >= u->timer)
        return CM_OK;
    u->timer = due;
    return heap_push(p, due, uidx);
}

/* ------------------------------------------------------------- partition */

sz_part_t *sz_part_new(int32_t partition, const sz_params_t *prm, char *errstr,
                       size_t errstr_size)
{
    if (prm->gap_ms <= 0 || prm->lateness_ms < 0 || prm->bound_ms < 0) {
        snprintf(errstr, errstr_size, "sessionizer: gap must be > 0, bound and lateness >= 0");
        return NULL;
    }
    sz_part_t *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(errstr, errstr_size, "sessionizer: out of memory");
        return NULL;
    }
    p->partition = partition;
    p->prm = *prm;
    p->max_event = CM_WATERMARK_NONE;
    p->dirty_head = SZ_NIL;
    p->emitted_upto = CM_WATERMARK_NONE;
    pool_init(&p->users, sizeof(sz_user_t), offsetof(sz_user_t, dirty_next));
    pool_init(&p->sessions, sizeof(sz_sess_t), offsetof(sz_sess_t, next));
    p->dedupe = cm_dedupe_new(prm->bound_ms + prm->lateness_ms, prm->dedupe_max, errstr,
                              errstr_size);
    if (!p->dedupe) {
        sz_part_destroy(p);
        return NULL;
    }
    cm_dedupe_journal_enable(p->dedupe, true);
    return p;
}

void sz_part_destroy(sz_part_t *p)
{
    if (!p)
        return;
    for (uint32_t i = 0; i < p->users.used; i++) {
        sz_user_t *u = sz_user_at(p, i);
        if (u->h)
            free(u->uid);
    }
    pool_destroy(&p->users);
    pool_destroy(&p->sessions);
    strtab_destroy(&p->strs);
    free(p->utab);
    free(p->heap);
    free(p->deltas);
    cm_dedupe_destroy(p->dedupe);
    free(p);
}

int64_t sz_part_watermark(const sz_part_t *p)
{
    if (p->max_event == CM_WATERMARK_NONE || p->max_event < CM_WATERMARK_NONE + p->prm.bound_ms + 1)
        return CM_WATERMARK_NONE;
    return p->max_event - p->prm.bound_ms;
}

uint32_t sz_part_open_sessions(const sz_part_t *p) { return p->open_sessions; }
uint32_t sz_part_users(const sz_part_t *p) { return p->nusers; }

size_t sz_part_bytes(const sz_part_t *p)
{
    cm_dedupe_stats_t ds;
    cm_dedupe_get_stats(p->dedupe, &ds);
    return sizeof(*p) + pool_bytes(&p->users) + pool_bytes(&p->sessions) +
           (size_t)p->utab_cap * 4 + (size_t)p->heap_cap * sizeof(sz_timer_t) +
           strtab_bytes(&p->strs) + p->uid_bytes + ds.bytes +
           p->deltas_cap * sizeof(sz_delta_t);
}

static const char hexd[] = "0123456789abcdef";

void sz_session_id(uint64_t user_h, uint64_t first_idh, char out[SZ_SID_LEN + 1])
{
    for (int i = 0; i < 16; i++) {
        out[i] = hexd[(user_h >> (60 - 4 * i)) & 15];
        out[16 + i] = hexd[(first_idh >> (60 - 4 * i)) & 15];
    }
    out[SZ_SID_LEN] = '\0';
}

void sz_part_fill_session(const sz_part_t *p, const sz_user_t *u, const sz_sess_t *s,
                          uint64_t first_idh, char *id_buf, cm_session_t *out)
{
    const sz_str_t *x;
    sz_session_id(u->h, first_idh, id_buf);
    out->session_id = id_buf;
    out->user_id = u->uid;
    out->start_ms = s->start;
    out->end_ms = s->end;
    out->duration_ms = s->end - s->start;
    out->event_count = s->events;
    out->page_views = s->page_views;
    out->entry_url = (x = sz_str_get(&p->strs, s->entry_url)) ? x->s : NULL;
    out->exit_url = (x = sz_str_get(&p->strs, s->exit_url)) ? x->s : NULL;
    out->device_type = (x = sz_str_get(&p->strs, s->device)) ? x->s : NULL;
    out->country = (x = sz_str_get(&p->strs, s->country)) ? x->s : NULL;
    out->converted = (s->flags & SZ_S_CONVERTED) != 0;
    out->revenue_micros = s->revenue;
    out->revision = s->revision;
    out->tombstone = false;
}

static cm_err_t emit_one(sz_part_t *p, const sz_user_t *u, const sz_sess_t *s,
                         uint64_t first_idh, int32_t revision, bool tombstone,
                         sz_emit_fn *emit, void *ud)
{
    char id[SZ_SID_LEN + 1];
    cm_session_t rec;
    memset(&rec, 0, sizeof(rec));
    sz_part_fill_session(p, u, s, first_idh, id, &rec);
    rec.revision = revision;
    rec.tombstone = tombstone;
    p->c.sessions_out++;
    if (tombstone)
        p->c.tombstones++;
    return emit ? emit(&rec, ud) : CM_OK;
}

/* Emits a changed session (see the header for the id-change rule). */
static cm_err_t sess_emit(sz_part_t *p, uint32_t uidx, sz_sess_t *s, sz_emit_fn *emit,
                          void *ud)
{
    const sz_user_t *u = sz_user_at(p, uidx);
    int32_t rev = s->revision + 1;
    cm_err_t err = CM_OK;
    s->flags &= ~SZ_S_CHANGED;
    if (s->emitted_first_idh && s->emitted_first_idh != s->first_idh)
        err = emit_one(p, u, s, s->emitted_first_idh, rev, true, emit, ud);
    if (!err)
        err = emit_one(p, u, s, s->first_idh, rev, false, emit, ud);
    s->revision = rev;
    s->emitted_first_idh = s->first_idh;
    sz_user_mark_dirty(p, uidx);
    return err;
}

/*
 * The user's timer fired at partition watermark wm: emit what is closed,
 * release what is past its lateness, re-arm or free the user.
 */
static cm_err_t user_service(sz_part_t *p, uint32_t uidx, int64_t wm, sz_emit_fn *emit,
                             void *ud)
{
    sz_user_t *u = sz_user_at(p, uidx);
    cm_err_t err = CM_OK, e;
    u->timer = INT64_MAX;
    for (uint32_t sidx = u->sess, next; sidx != SZ_NIL; sidx = next) {
        sz_sess_t *s = sz_sess_at(p, sidx);
        next = s->next;
        int64_t close = sat_add(s->end, p->prm.gap_ms);
        if ((s->flags & SZ_S_CHANGED) && close <= wm && (e = sess_emit(p, uidx, s, emit, ud)))
            err = err ? err : e;
        if (sat_add(close, p->prm.lateness_ms) <= wm) {
            if (s->end > u->final_end)
                u->final_end = s->end;
            user_unlink_sess(p, u, sidx);
            sess_release(p, sidx);
            p->c.released++;
            sz_user_mark_dirty(p, uidx);
        }
    }
    if (sz_user_expired(p, u, wm)) {
        /* Forgotten now (final_end cleared, so that the next event of this
         * user sees no past, whenever the next flush runs); a user with a
         * changelog record keeps its key until the flush writes the
         * tombstone, any other goes at once. */
        u->final_end = INT64_MIN;
        if (u->flags & SZ_U_LOGGED)
            sz_user_mark_dirty(p, uidx);
        else
            sz_user_drop(p, uidx);
        return err;
    }
    e = sz_user_arm(p, uidx);
    return err ? err : e;
}

static cm_err_t run_timers(sz_part_t *p, sz_emit_fn *emit, void *ud)
{
    int64_t wm = sz_part_watermark(p);
    cm_err_t err = CM_OK;
    while (p->heap_n && p->heap[0].at <= wm) {
        sz_timer_t t = heap_pop(p);
        if (t.user >= p->users.used)
            continue;
        sz_user_t *u = sz_user_at(p, t.user);
        if (!u->h || u->timer != t.at)
            continue; /* stale entry */
        cm_err_t e = user_service(p, t.user, wm, emit, ud);
        err = err ? err : e;
    }
    return err;
}

cm_err_t sz_part_emit_upto(sz_part_t *p, int64_t w, sz_emit_fn *emit, void *ud)
{
    if (w <= sz_part_watermark(p) || w <= p->emitted_upto)
        return CM_OK;
    p->emitted_upto = w;
    cm_err_t err = CM_OK;
    for (uint32_t i = 0; i < p->users.used; i++) {
        sz_user_t *u = sz_user_at(p, i);
        if (!u->h)
            continue;
        bool any = false;
        for (uint32_t sidx = u->sess; sidx != SZ_NIL; sidx = sz_sess_at(p, sidx)->next) {
            sz_sess_t *s = sz_sess_at(p, sidx);
            if ((s->flags & SZ_S_CHANGED) && sat_add(s->end, p->prm.gap_ms) <= w) {
                cm_err_t e = sess_emit(p, i, s, emit, ud);
                err = err ? err : e;
                any = true;
            }
        }
        if (any) {
            /* its timer may now be for a release further away: re-arm */
            u->timer = INT64_MAX;
            cm_err_t e = sz_user_arm(p, i);
            err = err ? err : e;
        }
    }
    return err;
}

/* (t1, h1) < (t2, h2): the order of events in a session. */
static bool ev_before(int64_t t1, uint64_t h1, int64_t t2, uint64_t h2)
{
    return t1 < t2 || (t1 == t2 && h1 < h2);
}

static int64_t revenue_add(int64_t acc, int64_t add)
{
    if (add > CM_DECIMAL_MAX_MICROS - acc)
        return CM_DECIMAL_MAX_MICROS; /* saturate at decimal(18,6) */
    return acc + add;
}

/* Adds one event to a session (which may be empty: a new one). */
static cm_err_t sess_add_event(sz_part_t *p, sz_sess_t *s, const cm_event_t *ev, uint64_t idh)
{
    int64_t t = ev->ts_ms;
    cm_err_t err;
    if (s->events == 0 || ev_before(t, idh, s->start, s->first_idh)) {
        if ((err = str_set(&p->strs, &s->device, ev->device_type)) ||
            (err = str_set(&p->strs, &s->country, ev->geo_country)))
            return err;
        s->start = t;
        s->first_idh = idh;
    }
    if (s->events == 0 || t > s->end)
        s->end = t;
    if (ev->page_url) {
        if (!s->entry_url || ev_before(t, idh, s->entry_ts, s->entry_idh)) {
            if ((err = str_set(&p->strs, &s->entry_url, ev->page_url)))
                return err;
            s->entry_ts = t;
            s->entry_idh = idh;
        }
        if (!s->exit_url || ev_before(s->exit_ts, s->exit_idh, t, idh)) {
            if ((err = str_set(&p->strs, &s->exit_url, ev->page_url)))
                return err;
            s->exit_ts = t;
            s->exit_idh = idh;
        }
    }
    s->events++;
    if (ev->type == CM_EV_PAGE_VIEW)
        s->page_views++;
    if (ev->type == CM_EV_PURCHASE) {
        s->flags |= SZ_S_CONVERTED;
        if (ev->has_price && ev->price_micros > 0) {
            __int128 r = (__int128)ev->price_micros * (ev->quantity > 0 ? ev->quantity : 1);
            s->revenue = revenue_add(s->revenue, r > CM_DECIMAL_MAX_MICROS
                                                     ? CM_DECIMAL_MAX_MICROS
                                                     : (int64_t)r);
        }
    }
    s->flags |= SZ_S_CHANGED;
    return CM_OK;
}

/* Merges session b into a (a keeps its revision and emitted id). */
static void sess_merge(sz_part_t *p, sz_sess_t *a, const sz_sess_t *b)
{
    if (ev_before(b->start, b->first_idh, a->start, a->first_idh)) {
        a->start = b->start;
        a->first_idh = b->first_idh;
        str_copy(&p->strs, &a->device, b->device);
        str_copy(&p->strs, &a->country, b->country);
    }
    if (b->end > a->end)
        a->end = b->end;
    if (b->entry_url && (!a->entry_url || ev_before(b->entry_ts, b->entry_idh, a->entry_ts,
                                                    a->entry_idh))) {
        str_copy(&p->strs, &a->entry_url, b->entry_url);
        a->entry_ts = b->entry_ts;
        a->entry_idh = b->entry_idh;
    }
    if (b->exit_url &&
        (!a->exit_url || ev_before(a->exit_ts, a->exit_idh, b->exit_ts, b->exit_idh))) {
        str_copy(&p->strs, &a->exit_url, b->exit_url);
        a->exit_ts = b->exit_ts;
        a->exit_idh = b->exit_idh;
    }
    a->events += b->events;
    a->page_views += b->page_views;
    a->revenue = revenue_add(a->revenue, b->revenue);
    a->flags |= (b->flags & SZ_S_CONVERTED) | SZ_S_CHANGED;
}

cm_err_t sz_part_add_event(sz_part_t *p, const cm_event_t *ev, sz_verdict_t *verdict,
                           sz_emit_fn *emit, void *ud)
{
    const int64_t gap = p->prm.gap_ms, late = p->prm.lateness_ms, t = ev->ts_ms;
    cm_err_t err = CM_OK;
    p->c.events++;
    bool advanced = false;
    if (t > p->max_event) {
        p->max_event = t;
        p->meta_dirty = true;
        advanced = true;
    }
    int64_t wm = sz_part_watermark(p);
    size_t ulen = strlen(ev->user_id);
    uint64_t uh = cm_dedupe_hash(ev->user_id, ulen);
    uint32_t uidx = sz_user_find(p, ev->user_id, ulen, uh);

    /* the live sessions this event reaches (at most two: live sessions are
     * more than a gap apart) */
    uint32_t joined[4];
    int nj = 0;
    bool touches_final = false;
    if (uidx != SZ_NIL) {
        const sz_user_t *u = sz_user_at(p, uidx);
        for (uint32_t sidx = u->sess; sidx != SZ_NIL && nj < 4;) {
            const sz_sess_t *s = sz_sess_at(p, sidx);
            if (s->start - gap <= t && t <= sat_add(s->end, gap)) {
                if (sat_add(sat_add(s->end, gap), late) > wm)
                    joined[nj++] = sidx;
                else
                    touches_final = true; /* final, not yet released */
            }
            sidx = s->next;
        }
        if (u->final_end != INT64_MIN && t <= sat_add(u->final_end, gap))
            touches_final = true;
    }
    if (touches_final || (nj == 0 && sat_add(sat_add(t, gap), late) <= wm)) {
        *verdict = SZ_LATE;
        p->c.late++;
        goto timers;
    }
    uint64_t idh = cm_dedupe_hash(ev->event_id, strlen(ev->event_id));
    if (!cm_dedupe_insert(p->dedupe, idh, t, wm)) {
        *verdict = SZ_DUPLICATE;
        p->c.duplicates++;
        goto timers;
    }
    if (uidx == SZ_NIL && (uidx = sz_user_get(p, ev->user_id, ulen, uh)) == SZ_NIL)
        return CM_ERR_NOMEM;
    sz_user_t *u = sz_user_at(p, uidx);
    uint32_t target;
    if (nj == 0) {
        if ((target = sz_sess_new(p)) == SZ_NIL)
            return CM_ERR_NOMEM;
    } else {
        /* joined[] is in start order: merge into the earliest */
        target = joined[0];
        user_unlink_sess(p, u, target);
        for (int k = 1; k < nj; k++) {
            sz_sess_t *b = sz_sess_at(p, joined[k]);
            if (b->revision >= 0 && b->emitted_first_idh) {
                cm_err_t e = emit_one(p, u, b, b->emitted_first_idh, b->revision + 1, true,
                                      emit, ud);
                err = err ? err : e;
            }
            sess_merge(p, sz_sess_at(p, target), b);
            user_unlink_sess(p, u, joined[k]);
            sess_release(p, joined[k]);
            p->c.merges++;
        }
    }
    cm_err_t e = sess_add_event(p, sz_sess_at(p, target), ev, idh);
    sz_user_insert_sess(p, u, target);
    if (e)
        return e;
    *verdict = SZ_ACCEPTED;
    p->c.accepted++;
    sz_user_mark_dirty(p, uidx);
    /* a session closed already (late event within lateness): emit at once */
    if (sat_add(sz_sess_at(p, target)->end, gap) <= wm) {
        e = sess_emit(p, uidx, sz_sess_at(p, target), emit, ud);
        err = err ? err : e;
    }
    e = sz_user_arm(p, uidx);
    err = err ? err : e;
timers:
    if (advanced) {
        e = run_timers(p, emit, ud);
        err = err ? err : e;
    }
    return err;
}
