/*
 * aggregator_window.h: tumbling-window state of the aggregator, per source
 * partition ("pane" = one window of one size on one input partition).
 *
 * Sources are the partitions of clickstream.raw (events) and of
 * clickstream.sessions (sessions). Each source has its own state and its own
 * watermark (max event time seen on it - bound), and every decision about a
 * record -- which windows it goes to, whether it is late, whether it is a
 * duplicate, which panes are final -- depends only on that source's records
 * in offset order. That makes the state a pure function of the input: a
 * replay of a partition from a checkpoint rebuilds exactly the state that was
 * committed, which is how the aggregator restores after a crash or a
 * rebalance, whatever the number of replicas (see README "Exactly once").
 *
 * Window rules (SPEC §3, §5):
 *  - windows are [start, start + size), aligned to the epoch, sizes 1 min,
 *    5 min and 1 h; an event goes to one window of each size;
 *  - lateness is judged on the event's 1-minute window: the event is late,
 *    counted nowhere and sent to clickstream.late, when
 *        end_1min + lateness <= watermark(partition)
 *    so every 5-min and 1-h window is the exact sum of its 1-min windows;
 *  - a pane is final when end <= watermark, closed (immutable) when
 *    end + lateness <= watermark;
 *  - duplicates: an event_id seen again while its entry is alive in the
 *    partition's cm_dedupe set (horizon = bound + lateness + 1 min, so a copy
 *    that is not late is always recognised) counts once;
 *  - sessions are assigned to windows by their `end` time, on the same
 *    rules with the sessions partition's own watermark (max end - bound). A
 *    revision replaces the session's earlier contribution (subtracted from
 *    the earlier revision's windows), a tombstone removes it; a revision
 *    whose earlier revision's window is closed is ignored as late; a record
 *    whose revision is not above the one counted is ignored (a replay).
 *
 * Memory: no allocation per event once the panes of the current windows
 * exist: dimension values are interned per source, counts are id -> count
 * tables, the HLL of a pane is allocated with the pane.
 *
 * Speed: an event of a raw source updates only its 1-minute pane; the 5-min
 * and 1-h panes get the 1-minute panes' changes (count deltas, totals, HLL
 * registers) by ag_source_fold(), which runs before anything reads them
 * (pane transitions in ag_source_advance, the merger records, the Redis
 * flush). The aggregation is memory-bound -- each table update is a cache
 * miss -- and folding turns 15 count updates and 3 HLL updates per event
 * into 5 and 1, plus one update per distinct key per fold
 * (bench/aggregator_micro.c: 320k -> see README for the figures). Sessions
 * (few) update all three sizes directly.
 *
 * Not thread-safe: one ag_state_t belongs to the processing thread.
 */
#ifndef AGGREGATOR_WINDOW_H
#define AGGREGATOR_WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aggregator_dict.h"
#include "cm_hll.h"
#include "cm_dedupe.h"
#include "cm_err.h"
#include "cm_event.h"
#include "cm_records.h"
#include "cm_watermark.h"

#define AG_N_SIZES 3
extern const int64_t ag_window_sizes[AG_N_SIZES]; /* 60000, 300000, 3600000 */

enum ag_dim {
    AG_DIM_URL = 0,
    AG_DIM_CATEGORY,
    AG_DIM_DEVICE_TYPE,
    AG_DIM_COUNTRY,
    AG_DIM_EVENT_TYPE,
    AG_N_DIMS
};
/* "url", "category", "device_type", "country", "event_type" (CM_DIM_*). */
extern const char *const ag_dim_names[AG_N_DIMS];

typedef enum ag_src_kind { AG_SRC_RAW = 0, AG_SRC_SESSIONS = 1 } ag_src_kind_t;

/* Key of a source in the watermark tracker and in the pane records. */
static inline int32_t ag_src_key(ag_src_kind_t kind, int32_t partition)
{
    return ((int32_t)kind << 16) | partition;
}

/*
 * The additive figures of a pane. `late` counts the records of a raw source
 * that went to clickstream.late (too late, or undecodable): such a record
 * has no window of its own that is still open, so it is counted in the
 * 1-minute window of the source's newest event (the window the partition is
 * "at" when the record arrives) -- a pure function of the input like the
 * rest, and what the dashboard's late/DLQ rate reads.
 */
typedef struct ag_totals {
    int64_t events, page_views, purchases, revenue_micros;
    int64_t sessions, session_ms_sum, bounces, conversions;
    int64_t late;
} ag_totals_t;

#define AG_TOTAL_FIELDS 9
/* Field names of ag_totals_t, in order (Redis hash fields, pane records). */
extern const char *const ag_total_names[AG_TOTAL_FIELDS];
static inline int64_t *ag_totals_field(ag_totals_t *t, int i)
{
    return &((int64_t *)t)[i];
}

typedef struct ag_pane {
    int size_idx;
    int64_t start_ms, end_ms;
    int64_t first_offset;   /* first input offset that touched it */
    int64_t max_event_before; /* the source's max event time before that record */
    ag_totals_t t;
    cm_hll_t *hll;          /* raw sources only */
    ag_counts_t dims[AG_N_DIMS];
    /* Redis writer bookkeeping */
    bool redis_totals_dirty, redis_hll_dirty, redis_full;
    uint64_t redis_gen; /* batch that carries its last change (0: none) */
    /* merger bookkeeping: changed since last sent to the merger */
    bool changed, sent;
    /* raw 1-min panes: what is not yet folded into the 5-min and 1-h panes */
    ag_totals_t folded;
    bool unfolded, hll_unfolded;
    bool final;  /* end <= watermark */
    bool closed; /* end + lateness <= watermark: immutable */
} ag_pane_t;

typedef struct ag_session_entry ag_session_entry_t; /* aggregator_window.c */

typedef struct ag_source {
    ag_src_kind_t kind;
    int32_t partition;
    int32_t key;              /* ag_src_key() */
    ag_pane_t **open;         /* panes not closed yet */
    size_t n_open, open_cap;
    ag_pane_t **closed;       /* closed panes kept for a Redis rebuild */
    size_t n_closed, closed_cap;
    ag_pane_t *last[AG_N_SIZES]; /* cache: pane of the previous record */
    ag_intern_t intern[AG_N_DIMS]; /* per dimension: the small ones stay in cache */
    cm_dedupe_t *dedupe;      /* raw */
    ag_session_entry_t *sessions; /* sessions: uthash by session_id */
    int64_t next_offset;      /* offset after the last record applied */
    int64_t next_check;       /* watermark at which a pane changes state next */
    cm_buf_t ck_last;         /* checkpoint last written (ag_loop) */
    /* per-source counters (for /metrics, summed by the loop) */
    uint64_t n_late, n_dup, n_applied, n_sessions_ignored;
} ag_source_t;

typedef struct ag_window_opts {
    int64_t bound_ms;          /* out-of-orderness bound (10 s) */
    int64_t lateness_ms;       /* allowed lateness (5 min) */
    int64_t idle_ms;           /* idle timeout (30 s) */
    int64_t keep_closed_ms[AG_N_SIZES]; /* keep closed panes this long after
                                         * their end (event time) for a Redis
                                         * rebuild; 0: drop at close */
    size_t dedupe_max;         /* cap of one partition's dedupe set */
    size_t max_held;           /* panes past their keep time still waiting for
                                * Redis (dirty), per source; beyond: freed
                                * anyway and counted (0: 10000) */
} ag_window_opts_t;

typedef struct ag_state {
    ag_window_opts_t o;
    cm_watermark_t *wm;
    ag_source_t **src;        /* by index; NULL holes */
    size_t n_src, src_cap;
    /* closed panes dropped since the caller last looked (the Redis writer
     * lets their keys expire; nothing to do) */
    uint64_t panes_created, panes_dropped;
    uint64_t panes_dropped_dirty; /* freed before Redis got their last change */
    uint64_t redis_acked; /* last Redis batch acknowledged (aggregator_redis.c) */
} ag_state_t;

/* NULL + errstr on bad options or no memory. */
ag_state_t *ag_state_new(const ag_window_opts_t *o, char *errstr, size_t errstr_size);
void ag_state_destroy(ag_state_t *st); /* NULL: no-op */

/*
 * The source for (kind, partition), created empty when absent (its
 * watermark restored from max_event, CM_WATERMARK_NONE for none) -- or NULL
 * on no memory. ag_state_find() does not create.
 */
ag_source_t *ag_state_source(ag_state_t *st, ag_src_kind_t kind, int32_t partition,
                             int64_t max_event, int64_t now_ms);
ag_source_t *ag_state_find(ag_state_t *st, ag_src_kind_t kind, int32_t partition);
/* Drops a source and all its panes (revoke, abort). */
void ag_state_drop(ag_state_t *st, ag_source_t *s);

/* Watermark of a source (max event - bound), CM_WATERMARK_NONE before any. */
int64_t ag_source_wm(const ag_state_t *st, const ag_source_t *s);
int64_t ag_source_max_event(const ag_state_t *st, const ag_source_t *s);

typedef enum ag_result {
    AG_APPLIED = 0,  /* counted */
    AG_LATE,         /* too late: counted nowhere (events go to the late topic) */
    AG_DUPLICATE,    /* a copy of an event counted already */
    AG_IGNORED,      /* a session record that changes nothing (replay, stale revision) */
} ag_result_t;

/*
 * Applies one event of a raw source at input offset `offset`. now_ms is
 * monotonic processing time (idle detection only). The event is borrowed.
 * Returns CM_OK and *res, or CM_ERR_NOMEM.
 */
cm_err_t ag_source_event(ag_state_t *st, ag_source_t *s, const cm_event_t *ev, int64_t offset,
                         int64_t now_ms, ag_result_t *res);

/* Applies one session record of a sessions source (see top for the rules). */
cm_err_t ag_source_session(ag_state_t *st, ag_source_t *s, const cm_session_t *ses,
                           int64_t offset, int64_t now_ms, ag_result_t *res);

/* A record that could not be decoded: the offset and idleness move, and a
 * raw source counts it as `late` (it goes to the late topic). CM_OK or
 * CM_ERR_NOMEM. */
cm_err_t ag_source_skip(ag_state_t *st, ag_source_t *s, int64_t offset, int64_t now_ms);

/* Folds the raw 1-minute panes' changes into their 5-min and 1-h panes
 * (see top). A no-op for a sessions source. CM_OK or CM_ERR_NOMEM. */
cm_err_t ag_source_fold(ag_state_t *st, ag_source_t *s);

/*
 * Folds, then re-evaluates final/closed for every pane of s against its watermark: panes
 * newly closed move to the kept list (or are freed), kept panes past their
 * keep time are freed, dead session entries are forgotten. Called after each
 * record by the functions above; exposed for ticks and tests.
 */
void ag_source_advance(ag_state_t *st, ag_source_t *s);

/*
 * The replay point of a source: the smallest first_offset of its open panes
 * (and of closed panes whose last change Redis has not got yet) and the
 * source's max event time before that record (*max_event, may be
 * CM_WATERMARK_NONE), or next_offset and the current max event when there is
 * none. A restore replays [*offset, committed) from this point.
 */
void ag_source_checkpoint(const ag_state_t *st, const ag_source_t *s, int64_t *offset,
                          int64_t *max_event);

/*
 * After a replay up to the committed offset: every final pane had been sent
 * to the merger by the transaction that committed it, so its `changed` is
 * cleared; every pane is marked for a full Redis rewrite; then advance.
 */
void ag_source_restored(ag_state_t *st, ag_source_t *s);

/*
 * After a replay from a checkpoint taken when the source's watermark was
 * wm_then: a closed pane with end + lateness <= wm_then was closed already
 * at the checkpoint, so the replay rebuilt it only partly (its first records
 * lie before the replay point) while Redis has its complete values: it is
 * freed, unless listed in keep (size index, start pairs: closed panes Redis
 * had not got yet, which the replay point covered).
 */
void ag_source_forget_closed(ag_state_t *st, ag_source_t *s, int64_t wm_then,
                             const int64_t (*keep)[2], size_t n_keep);

/* Whether Redis has still to get a change of p: a change not yet in a
 * batch, or in a batch not yet acknowledged (st->redis_acked). */
bool ag_pane_redis_dirty(const ag_state_t *st, const ag_pane_t *p);

/* Pane of (size_idx, start) on s, NULL if none (tests, Redis writer). */
ag_pane_t *ag_source_pane(ag_source_t *s, int size_idx, int64_t start_ms);

/* Window start of t for a size (floor to a multiple, also for t < 0). */
static inline int64_t ag_window_start(int64_t t, int64_t size)
{
    int64_t r = t % size;
    return r < 0 ? t - r - size : t - r;
}

#endif
