/*
 * sessionizer_state.h: the sessions of ONE input partition, without Kafka:
 * the per-user session store, the event-time rules of SPEC §3/§4, the dedupe
 * set, and the bookkeeping the changelog needs (sessionizer_changelog.c).
 *
 * Rules (README.md "Semantics" says the same in prose; the Python reference
 * of the integration test mirrors them):
 *  - wm = partition watermark = highest event time seen on the partition -
 *    bound. Every decision below uses it, so the output is a function of the
 *    partition's records alone (crash, restart and rebalance change nothing).
 *  - Two events of a user are in one session iff no gap between consecutive
 *    events exceeds `gap` (a gap of exactly `gap` joins).
 *  - A session is "live" while end + gap + lateness > wm (end = time of its
 *    last event); after that it is final and leaves memory. The user keeps
 *    `final_end` (8 bytes) for one more gap, until final_end + 2 gap +
 *    lateness <= wm, because until then an event could still touch it.
 *  - An event "touches" a session s when s.start - gap <= t <= s.end + gap.
 *    It is LATE when it touches a final session, or when it touches no
 *    session and t + gap + lateness <= wm (a session of it alone would be past
 *    its lateness). Otherwise it joins every session it touches (bridging
 *    several merges them), or starts a new one. So accepted events never come
 *    within a gap of a final session, and the sessions are exactly the batch
 *    sessionization of the accepted events.
 *  - Duplicates: after the late check, the event_id goes through the dedupe
 *    set (horizon bound + lateness): a copy seen again is dropped (counted).
 *  - A session is emitted (revision 0, then +1 per emission) once wm >= end +
 *    gap and it changed since its last emission. A session updated after it
 *    was emitted is emitted again at the same rule (at once if still closed).
 *  - session_id = 32 hex chars: hash(user_id) then hash(event_id of the
 *    earliest event) (cm_dedupe_hash, order by (time, event_id hash)). A merge
 *    keeps the earliest event, so the earlier session's id. An absorbed
 *    session that was emitted is emitted again as a tombstone (own id,
 *    revision + 1), at once. When the earliest event changes (a late event
 *    before the start), the next emission first sends a tombstone for the old
 *    id, then the session under its new id, both with revision + 1.
 *  - Idle streams: sz_part_emit_upto(w) with a service watermark w above the
 *    partition's own emits closed sessions early (SPEC §3 idle rule); only
 *    emission uses it, never lateness or release.
 *
 * Memory: users, sessions and timers live in chunked pools indexed by 32-bit
 * ids (no per-event malloc; one malloc per new user id string and per new
 * distinct URL/device/country string, refcounted). sz_part_bytes() counts it.
 *
 * Not thread-safe; one sz_part_t per assigned input partition.
 */
#ifndef SESSIONIZER_STATE_H
#define SESSIONIZER_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_dedupe.h"
#include "cm_err.h"
#include "cm_event.h"
#include "cm_records.h"

#define SZ_NIL UINT32_MAX
#define SZ_SID_LEN 32 /* hex chars of a session_id */

typedef struct sz_params {
    int64_t gap_ms;          /* 30 min */
    int64_t bound_ms;        /* 10 s */
    int64_t lateness_ms;     /* 5 min */
    size_t dedupe_max;       /* cap of dedupe entries per partition (0: default) */
} sz_params_t;

/* Chunked pool of fixed-size elements: stable 32-bit ids, no realloc slack. */
#define SZ_CHUNK_SHIFT 12
#define SZ_CHUNK (1u << SZ_CHUNK_SHIFT)
typedef struct sz_pool {
    char **chunks;
    uint32_t nchunks, chunks_cap;
    uint32_t used;   /* ids handed out so far (high water) */
    uint32_t live;   /* allocated now */
    uint32_t free;   /* head of the free list (SZ_NIL: empty) */
    uint32_t elsize;
    uint32_t link_off; /* where a free element keeps the next free id: a field
                        * that means nothing once freed (never the liveness
                        * flag, e.g. sz_user_t.h) */
} sz_pool_t;

static inline void *sz_pool_at(const sz_pool_t *p, uint32_t id)
{
    return p->chunks[id >> SZ_CHUNK_SHIFT] + (size_t)(id & (SZ_CHUNK - 1)) * p->elsize;
}

/* Session flags */
#define SZ_S_CONVERTED 0x01
#define SZ_S_CHANGED 0x02 /* to be emitted */

typedef struct sz_sess {
    int64_t start, end;         /* event time of the earliest / latest event */
    uint64_t first_idh;         /* event_id hash of the earliest event */
    uint64_t emitted_first_idh; /* first_idh the last emission was made under; 0: none */
    int64_t entry_ts, exit_ts;  /* (time, id hash) of the events that gave the urls */
    uint64_t entry_idh, exit_idh;
    int64_t revenue; /* micros */
    uint32_t entry_url, exit_url, device, country; /* string ids, 0: none */
    uint32_t events, page_views;
    int32_t revision; /* last emitted; -1: never */
    uint32_t next;    /* next session of the user (by start), SZ_NIL */
    uint32_t flags;
} sz_sess_t;

/* User flags */
#define SZ_U_DIRTY 0x01  /* changed since the last changelog flush */
#define SZ_U_LOGGED 0x02 /* has a (non-tombstone) record in the changelog */

typedef struct sz_user {
    uint64_t h;      /* cm_dedupe_hash(user_id) */
    char *uid;       /* NUL-terminated, owned */
    uint32_t sess;   /* first session (earliest start), SZ_NIL: none */
    uint32_t dirty_next;
    int64_t timer;   /* when the user's timer is armed (INT64_MAX: not armed) */
    int64_t final_end; /* latest end of the user's released (final) sessions;
                        * INT64_MIN: none */
    uint32_t uid_len;
    uint32_t flags;
} sz_user_t;

typedef struct sz_timer {
    int64_t at;
    uint32_t user;
    uint32_t pad;
} sz_timer_t;

/* Interned strings (URLs, device types, countries), refcounted. */
typedef struct sz_str {
    uint64_t h;
    uint32_t ref;
    uint32_t len;
    char s[];
} sz_str_t;

typedef struct sz_strtab {
    sz_str_t **strs; /* id -> string; id 0 unused */
    uint32_t n, cap; /* ids used (high water), allocated */
    uint32_t *free_ids;
    uint32_t nfree, free_cap;
    uint32_t *slots; /* open addressing: string ids, 0 empty */
    uint32_t slot_cap, count;
    size_t bytes; /* malloc'd string bytes */
} sz_strtab_t;

/* A dedupe delta record still in the changelog (tombstoned once expired). */
typedef struct sz_delta {
    uint64_t seq;
    int64_t max_ts;
} sz_delta_t;

typedef struct sz_counters {
    uint64_t events;      /* records given to sz_part_add_event */
    uint64_t accepted;
    uint64_t duplicates;
    uint64_t late;
    uint64_t sessions_out; /* records emitted, tombstones included */
    uint64_t tombstones;
    uint64_t merges;
    uint64_t released;     /* sessions that left memory */
} sz_counters_t;

typedef struct sz_part {
    int32_t partition;
    sz_params_t prm;
    int64_t max_event; /* CM_WATERMARK_NONE: none */

    sz_pool_t users, sessions;
    uint32_t *utab; /* user table: slot = user id + 1, 0 empty */
    uint32_t utab_cap, nusers;
    sz_timer_t *heap;
    uint32_t heap_n, heap_cap;
    sz_strtab_t strs;
    size_t uid_bytes;
    uint32_t dirty_head; /* users to write to the changelog */
    uint32_t open_sessions;

    cm_dedupe_t *dedupe;
    sz_delta_t *deltas;
    size_t ndeltas, deltas_cap;
    uint64_t next_seq;
    bool meta_dirty;

    int64_t emitted_upto; /* highest watermark sz_part_emit_upto() scanned with */
    sz_counters_t c;
} sz_part_t;

/* What became of one event. */
typedef enum sz_verdict {
    SZ_ACCEPTED = 0,
    SZ_DUPLICATE,
    SZ_LATE,
} sz_verdict_t;

/*
 * Called for every session record to emit. `s` and its strings are borrowed
 * for the call. A non-OK return is handed back to the caller of the function
 * that emitted (the state has already moved on: such an error must abort the
 * transaction, whose on_abort rebuilds the state from the changelog).
 */
typedef cm_err_t sz_emit_fn(const cm_session_t *s, void *ud);

/* NULL + errstr on bad parameters (gap, lateness > 0, bound >= 0) or no memory. */
sz_part_t *sz_part_new(int32_t partition, const sz_params_t *prm, char *errstr,
                       size_t errstr_size);
void sz_part_destroy(sz_part_t *p); /* NULL: no-op */

/*
 * One decoded event of this partition (borrowed). Returns its verdict in
 * *verdict; emissions it causes (tombstones of merged sessions, sessions
 * closed by the watermark it raised) go through emit. Returns CM_OK, or the
 * emit callback's error, or CM_ERR_NOMEM (then the event is not applied and
 * the transaction must be aborted).
 */
cm_err_t sz_part_add_event(sz_part_t *p, const cm_event_t *ev, sz_verdict_t *verdict,
                           sz_emit_fn *emit, void *ud);

/* The partition's watermark (max event - bound) or CM_WATERMARK_NONE. */
int64_t sz_part_watermark(const sz_part_t *p);

/*
 * Emits the changed sessions whose end + gap <= w, for a service watermark w
 * above the partition's own (idle rule). O(users) when it does work; a no-op
 * unless w is above both the partition watermark and the last w scanned.
 */
cm_err_t sz_part_emit_upto(sz_part_t *p, int64_t w, sz_emit_fn *emit, void *ud);

/* Sessions in memory, users in memory, bytes held (pools, tables, strings,
 * dedupe set). */
uint32_t sz_part_open_sessions(const sz_part_t *p);
uint32_t sz_part_users(const sz_part_t *p);
size_t sz_part_bytes(const sz_part_t *p);

/* Fills a cm_session_t (strings borrowed from p) for session `sid` of user
 * `uid`, with `id_buf` (>= SZ_SID_LEN + 1) for the session_id. For the
 * changelog and tests. */
void sz_part_fill_session(const sz_part_t *p, const sz_user_t *u, const sz_sess_t *s,
                          uint64_t first_idh, char *id_buf, cm_session_t *out);

/* session_id text of (user hash, earliest event id hash). */
void sz_session_id(uint64_t user_h, uint64_t first_idh, char out[SZ_SID_LEN + 1]);

/* ---- used by sessionizer_changelog.c ---- */

/* Finds a user by id; SZ_NIL when absent. */
uint32_t sz_user_find(const sz_part_t *p, const char *uid, size_t len, uint64_t h);
/* Finds or makes the user; SZ_NIL on no memory. */
uint32_t sz_user_get(sz_part_t *p, const char *uid, size_t len, uint64_t h);
/* Drops every session of the user and the user itself (no output). */
void sz_user_drop(sz_part_t *p, uint32_t uidx);
/* A new empty session appended to the user's list in start order (the caller
 * fills it, then calls sz_user_resort). SZ_NIL on no memory. */
uint32_t sz_sess_new(sz_part_t *p);
void sz_user_insert_sess(sz_part_t *p, sz_user_t *u, uint32_t sidx);
/* Re-arms the user's timer from its sessions. */
cm_err_t sz_user_arm(sz_part_t *p, uint32_t uidx);
/* No session left and the final_end marker is past use at wm: the user can go. */
bool sz_user_expired(const sz_part_t *p, const sz_user_t *u, int64_t wm);
void sz_user_mark_dirty(sz_part_t *p, uint32_t uidx);

uint32_t sz_str_intern(sz_strtab_t *t, const char *s, size_t len); /* 0 on no memory */
void sz_str_release(sz_strtab_t *t, uint32_t id);
static inline const sz_str_t *sz_str_get(const sz_strtab_t *t, uint32_t id)
{
    return id ? t->strs[id] : NULL;
}

static inline sz_user_t *sz_user_at(const sz_part_t *p, uint32_t id)
{
    return (sz_user_t *)sz_pool_at(&p->users, id);
}
static inline sz_sess_t *sz_sess_at(const sz_part_t *p, uint32_t id)
{
    return (sz_sess_t *)sz_pool_at(&p->sessions, id);
}

#endif
