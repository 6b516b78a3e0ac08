/*
 * aggregator_dict.h: the two hash tables of the hot path.
 *
 *  - ag_intern_t maps a dimension value (URL, category, country ...) to a
 *    small id, once per event and dimension; the strings live in chunks that
 *    never move, so an id's string pointer stays valid while the table lives.
 *  - ag_counts_t maps an id to a count inside one pane (window x partition),
 *    and remembers which entries changed since the last Redis flush.
 *
 * Both are open-addressing tables with linear probing written here on
 * purpose: the aggregator does ~15 lookups per event (5 dimensions x 3 window
 * sizes) and uthash's per-entry malloc and chained buckets cost about 3x as
 * much per lookup (bench/aggregator.sh prints the events/s this gives).
 * Neither allocates per event: tables grow by doubling.
 */
#ifndef AGGREGATOR_DICT_H
#define AGGREGATOR_DICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"

#define AG_ID_NONE UINT32_MAX

/* ------------------------------------------------------------- interning */

typedef struct ag_intern_slot {
    uint64_t hash;
    const char *s; /* the string (also in strs[id]): one cache miss less */
    uint32_t len;
    uint32_t id; /* AG_ID_NONE: empty */
} ag_intern_slot_t;

typedef struct ag_intern_str {
    const char *s;
    uint32_t len;
} ag_intern_str_t;

typedef struct ag_intern {
    ag_intern_slot_t *slots;
    uint32_t mask;        /* slots - 1 (a power of two) */
    uint32_t count;       /* strings interned */
    ag_intern_str_t *strs; /* id -> string */
    uint32_t strs_cap;
    char **chunks;        /* string storage, never moved */
    size_t n_chunks, chunks_cap;
    size_t chunk_used, chunk_size;
    size_t bytes;         /* string bytes held */
} ag_intern_t;

void ag_intern_init(ag_intern_t *t);
void ag_intern_free(ag_intern_t *t); /* no-op on a zeroed or freed table */

/* Id of s[0..n), interning a copy when new. AG_ID_NONE on allocation failure. */
uint32_t ag_intern_id(ag_intern_t *t, const char *s, size_t n);

/* The same in two steps, so that a caller can start the memory loads of
 * several lookups before waiting for any (the hot path is memory-bound):
 * h = ag_intern_hash(s, n); ag_intern_prefetch(t, h); ... ag_intern_id_h(). */
uint64_t ag_intern_hash(const char *s, size_t n);
uint32_t ag_intern_id_h(ag_intern_t *t, const char *s, size_t n, uint64_t h);
static inline void ag_intern_prefetch(const ag_intern_t *t, uint64_t h)
{
    if (t->slots)
        __builtin_prefetch(&t->slots[(uint32_t)h & t->mask]);
}

/* The string of an id (NUL-terminated, owned by the table). */
static inline const char *ag_intern_str(const ag_intern_t *t, uint32_t id)
{
    return t->strs[id].s;
}
static inline uint32_t ag_intern_len(const ag_intern_t *t, uint32_t id)
{
    return t->strs[id].len;
}

/* ---------------------------------------------------------------- counts */

#define AG_DIRTY_REDIS 1u /* changed since the last ag_counts_clean() */
#define AG_DIRTY_FOLD 2u  /* changed since the last ag_counts_fold() */

typedef struct ag_count_slot {
    uint32_t id;    /* AG_ID_NONE: empty */
    uint32_t dirty; /* AG_DIRTY_* bits */
    int64_t count;
    int64_t folded; /* part of count already folded into the coarser panes */
} ag_count_slot_t;

typedef struct ag_counts {
    ag_count_slot_t *slots;
    uint32_t mask;
    uint32_t len;
    uint32_t *dirty_list; /* slot indexes with AG_DIRTY_REDIS, n_dirty of them */
    uint32_t n_dirty, dirty_cap;
    uint32_t *fold_list;  /* slot indexes with AG_DIRTY_FOLD (track_fold only) */
    uint32_t n_fold;
    bool track_fold;
} ag_counts_t;

void ag_counts_init(ag_counts_t *c);
void ag_counts_free(ag_counts_t *c);

/* Sizes an EMPTY table for about n entries (no regrowth until then). */
cm_err_t ag_counts_reserve(ag_counts_t *c, uint32_t n);

/* Adds delta to id's count (creating it). CM_OK or CM_ERR_NOMEM. */
cm_err_t ag_counts_add(ag_counts_t *c, uint32_t id, int64_t delta);
/* Sets id's count (creating it). */
cm_err_t ag_counts_set(ag_counts_t *c, uint32_t id, int64_t value);
/*
 * Compaction support: builds in *out a copy of c whose ids are map[old id]
 * (counts, folded parts and changed-marks kept). c is not changed; out is
 * owned by the caller (ag_counts_free). CM_OK or CM_ERR_NOMEM.
 */
cm_err_t ag_counts_remapped(const ag_counts_t *c, const uint32_t *map, ag_counts_t *out);

/* Starts loading the slot of id (see ag_intern_prefetch). */
static inline void ag_counts_prefetch(const ag_counts_t *c, uint32_t id)
{
    if (c->slots)
        __builtin_prefetch(&c->slots[(id * 2654435761u) & c->mask]);
}

/* id's count, 0 when absent. */
int64_t ag_counts_get(const ag_counts_t *c, uint32_t id);
/* Forgets which entries changed (for Redis). */
void ag_counts_clean(ag_counts_t *c);
/*
 * Folding (track_fold tables only): calls fn(id, delta, ud) for every entry
 * whose count moved since the last fold, with the difference, and records
 * it as folded. Stops at and returns the first error of fn.
 */
cm_err_t ag_counts_fold(ag_counts_t *c, cm_err_t (*fn)(uint32_t id, int64_t delta, void *ud),
                        void *ud);
/* Marks every entry changed (a full rewrite). */
cm_err_t ag_counts_mark_all(ag_counts_t *c);

/* Iteration over the slots: for (i = 0; i <= c->mask; i++) if used... */
static inline bool ag_counts_used(const ag_counts_t *c, uint32_t i)
{
    return c->slots && c->slots[i].id != AG_ID_NONE;
}

/*
 * Drops the strings of t that none of the n tables tables[] uses any more:
 * builds a new table with the used strings only and remaps the ids of every
 * table. All or nothing: on CM_ERR_NOMEM nothing changed. Worth it when
 * t->count is well above the number of ids in use (ag_intern_garbage()).
 */
cm_err_t ag_intern_compact(ag_intern_t *t, ag_counts_t *const *tables, size_t n);

/* True when t holds more than 64k strings and over twice `in_use`. */
static inline bool ag_intern_garbage(const ag_intern_t *t, size_t in_use)
{
    return t->count > 65536 && t->count > 2 * in_use;
}

/* ---------------------------------------------------------------- top-K */

typedef struct ag_topk_item {
    const char *key;
    int64_t count;
} ag_topk_item_t;

/*
 * Puts the k items of largest count first in items[0..k), ordered by count
 * descending then key ascending (bytewise), so equal counts have one
 * deterministic order. Returns min(k, n). O(n log k) with a heap; items is
 * reordered in place.
 */
size_t ag_topk_select(ag_topk_item_t *items, size_t n, size_t k);

/* The order of ag_topk_select: < 0 when a ranks before b. */
int ag_topk_cmp(const ag_topk_item_t *a, const ag_topk_item_t *b);

#endif
