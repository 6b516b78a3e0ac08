/*
 * cm_dedupe.h: the event_id dedupe set of one input partition (SPEC §3: "an
 * event_id seen again within (bound + lateness) of its first copy is counted
 * once").
 *
 * An entry is (h, t): h = cm_dedupe_hash(event_id), t = the event time of the
 * first copy. The entry is alive while  watermark <= t + horizon  (horizon =
 * bound + lateness for SPEC §3) and dropped once  watermark > t + horizon.
 * "Alive" is decided from the watermark passed to each call, not from when
 * the memory is reclaimed, so the answers are a pure function of the
 * sequence of calls: the same input gives the same answers after a restore,
 * whatever the table's size or history.
 *
 * Compactness: only the 64-bit hash of an id is stored (16 bytes per entry
 * with its time; ~24 bytes per entry with the table's free space). Two
 * different ids with the same hash make the second one a false duplicate:
 * with n live entries one lookup collides with probability n / 2^64, i.e.
 * with 10^6 live entries about one false duplicate per 1.8 * 10^13 events
 * (over 5 years at 100 000 events/s). The hash is not keyed: whoever can pick
 * event ids could aim at collisions only with ids of the same partition that
 * he can see, which the gateway's clients cannot.
 *
 * The table: open addressing, linear probing, power-of-two capacity, load
 * <= 0.7, expired entries reclaimed in place (backward-shift deletion) when
 * the table fills, growth by doubling up to max_entries. A hand-written table
 * rather than uthash: ~34 bytes per entry with the table's slack instead of
 * ~136 plus malloc overhead (uthash's handle is 56 bytes), no malloc per
 * insert, and twice the insert rate at 2 M entries (1.6 vs 0.8 M/s on the
 * 2-core dev VM; tests/unit/test_dedupe.c prints both with CM_DEDUPE_BENCH=1).
 *
 * Bounded memory: past max_entries live entries the oldest quarter (by event
 * time) is evicted; a duplicate of an evicted id then counts twice. Evictions
 * are counted (cm_dedupe_stats) so that a too-small cap shows on /metrics.
 *
 * State for a changelog: cm_dedupe_serialize() writes every live entry,
 * cm_dedupe_load() merges such bytes back; with the journal on,
 * cm_dedupe_journal_take() gives just the entries inserted since the last
 * take (for delta records written once per transaction). Format (all
 * big-endian):  u8 version (1), u32 count, count x (u64 hash, i64 event_ms).
 *
 * Not thread-safe: one set per partition, owned by the processing thread.
 */
#ifndef CM_DEDUPE_H
#define CM_DEDUPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_buf.h"
#include "cm_err.h"

typedef struct cm_dedupe cm_dedupe_t;

#define CM_DEDUPE_FORMAT_VERSION 1
#define CM_DEDUPE_HEADER_SIZE 5  /* version + count */
#define CM_DEDUPE_ENTRY_SIZE 16  /* hash + event time */
#define CM_DEDUPE_DEFAULT_MAX_ENTRIES (4u * 1024 * 1024)

/*
 * The 64-bit id hash, never 0: FNV-1a 64 over the bytes, then the MurmurHash3
 * fmix64 finaliser (FNV alone mixes the high bits poorly, and the table uses
 * the low ones), 0 mapped to 1. Stable forever: it is stored in changelogs,
 * and other programs (tests' references) may recompute it:
 *   h = 0xcbf29ce484222325; for b in bytes: h = ((h ^ b) * 0x100000001b3) mod 2^64
 *   h ^= h >> 33; h *= 0xff51afd7ed558ccd; h ^= h >> 33;
 *   h *= 0xc4ceb9fe1a85ec53; h ^= h >> 33;  if h == 0: h = 1
 */
uint64_t cm_dedupe_hash(const void *id, size_t len);

/*
 * horizon_ms >= 0: how long past its event time an entry lives (see top).
 * max_entries >= 16: cap of live entries (0: CM_DEDUPE_DEFAULT_MAX_ENTRIES).
 * Returns NULL and fills errstr on a bad argument or no memory. The caller
 * owns the result (cm_dedupe_destroy).
 */
cm_dedupe_t *cm_dedupe_new(int64_t horizon_ms, size_t max_entries, char *errstr,
                           size_t errstr_size);
void cm_dedupe_destroy(cm_dedupe_t *d); /* NULL: no-op */

/* Forgets every entry (and the journal); keeps the memory. */
void cm_dedupe_clear(cm_dedupe_t *d);

/*
 * Test-and-insert, the hot path. `h` from cm_dedupe_hash(); `event_ms` the
 * event's time; `watermark_ms` the partition's watermark now
 * (CM_WATERMARK_NONE allowed). Returns true when this is the first copy
 * (an entry is made, or an expired one is replaced with (h, event_ms)), false
 * for a duplicate of an alive entry (nothing changes). Never fails: when
 * memory cannot grow the set evicts (counted) instead.
 */
bool cm_dedupe_insert(cm_dedupe_t *d, uint64_t h, int64_t event_ms, int64_t watermark_ms);

/* Lookup only: whether an alive entry for h exists at watermark_ms. */
bool cm_dedupe_contains(const cm_dedupe_t *d, uint64_t h, int64_t watermark_ms);

/*
 * Reclaims the memory of every entry expired at watermark_ms. Optional (the
 * set does it by itself when it fills); returns the number removed. O(capacity).
 */
size_t cm_dedupe_expire(cm_dedupe_t *d, int64_t watermark_ms);

typedef struct cm_dedupe_stats {
    size_t entries;      /* stored (alive or not yet reclaimed) */
    size_t capacity;     /* slots */
    size_t bytes;        /* memory held by the set */
    uint64_t inserts;    /* first copies */
    uint64_t duplicates; /* duplicates found */
    uint64_t evictions;  /* alive entries dropped to stay under max_entries */
} cm_dedupe_stats_t;

void cm_dedupe_get_stats(const cm_dedupe_t *d, cm_dedupe_stats_t *out);
size_t cm_dedupe_count(const cm_dedupe_t *d);

/*
 * APPENDS every entry alive at watermark_ms to out, in the format above.
 * CM_OK, CM_ERR_TOO_LARGE (out's cap; out->len is back to what it was) or
 * CM_ERR_NOMEM.
 */
cm_err_t cm_dedupe_serialize(const cm_dedupe_t *d, int64_t watermark_ms, cm_buf_t *out);

/*
 * Merges serialized entries (borrowed) into the set, in order: an entry for a
 * hash already present replaces it (a later record is newer). Entries expired
 * at watermark_ms are skipped. Loaded entries do not go to the journal.
 * CM_OK or CM_ERR_PARSE (bad version or length; the set then holds the
 * entries before the bad spot).
 */
cm_err_t cm_dedupe_load(cm_dedupe_t *d, const void *data, size_t len, int64_t watermark_ms);

/*
 * Journal of inserts, off by default. When on, every first copy (insert
 * returning true) is also appended to the journal. take() APPENDS the journal
 * to out in the format above (nothing when empty: returns CM_OK with
 * *count = 0), stores the number of entries in *count and the highest event
 * time among them in *max_event_ms (CM_WATERMARK_NONE-like INT64_MIN when
 * empty), then empties the journal. discard() empties it without writing
 * (abort). Either pointer may be NULL.
 */
void cm_dedupe_journal_enable(cm_dedupe_t *d, bool on);
size_t cm_dedupe_journal_len(const cm_dedupe_t *d);
cm_err_t cm_dedupe_journal_take(cm_dedupe_t *d, cm_buf_t *out, size_t *count,
                                int64_t *max_event_ms);
void cm_dedupe_journal_discard(cm_dedupe_t *d);

#endif
