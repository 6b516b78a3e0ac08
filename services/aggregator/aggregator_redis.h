/*
 * aggregator_redis.h: the live view in Redis (SPEC §6) -- per-partition
 * ABSOLUTE values, merged when read.
 *
 * Each pane (window x source partition) is written under keys of its own
 * (layout in services/aggregator/README.md, "Redis key layout"); a replica
 * only ever writes the panes of the partitions it owns, and a value is always
 * the pane's current absolute value, never an increment. So a replayed or
 * retried write leaves Redis as it was, two replicas never write the same
 * key at the same time, and after a rebalance the new owner simply
 * overwrites. Readers merge: a sum over the partitions' hashes, PFCOUNT over
 * their HLL strings (a union, see libcommon/cm_hll.h), top URLs from the summed
 * url counts -- all in one EVAL of aggregator_read.lua.
 *
 * Only what changed since the last flush is written (dirty totals, dirty
 * count entries, a changed HLL), pipelined, with EXPIRE on every key
 * written (TTL counted from the last write: 1 h for 1-min windows, 6 h for
 * 5-min, 48 h for 1-h). One PUBLISH per flush announces the windows written.
 *
 * Threads: ag_redis_flush() runs on the source loop's thread and only
 * BUILDS a batch (the pipelined commands, a snapshot of the changed values)
 * and hands it to a writer thread that does the network I/O, so the loop
 * never waits for Redis. One batch is in flight at a time; changes made
 * meanwhile wait for the next flush (coalesced). A pane stays "Redis-dirty"
 * (ag_pane_redis_dirty) until the batch carrying its last change is
 * acknowledged: only then may it be freed or leave the replay range of the
 * checkpoint, so a crash never loses a change Redis has not got.
 *
 * Failures: while Redis is unreachable no batch is built: the dirty panes in
 * memory are the bounded buffer of what Redis still has to get; the writer
 * re-connects at most every retry interval; after a reconnect, after a failed
 * batch, or when the `<prefix>:alive` key is missing (Redis restarted empty
 * or flushed), every pane in memory -- open ones and the closed ones kept for
 * this -- is rewritten in full.
 *
 * ag_redis_flush/force_full/destroy belong to the source loop's thread;
 * ag_redis_up and the stats may be read from any thread.
 */
#ifndef AGGREGATOR_REDIS_H
#define AGGREGATOR_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aggregator_window.h"
#include "cm_err.h"
#include "cm_metrics.h"

typedef struct ag_redis_opts {
    const char *host;
    int port;
    const char *prefix;         /* key prefix, e.g. "cs:agg" */
    const char *replica;        /* id put in the pub/sub note */
    int64_t connect_timeout_ms; /* also the command timeout */
    int64_t retry_ms;           /* least time between two connect attempts */
    int64_t ttl_s[AG_N_SIZES];  /* key TTL per window size */
    int64_t coarse_dims_ms;     /* least time between two writes of the dimension
                                 * hashes of OPEN 5-min and 1-h windows (0: every
                                 * flush); the rest is written at every flush */
    cm_metrics_t *metrics;      /* may be NULL */
} ag_redis_opts_t;

typedef struct ag_redis ag_redis_t;

/* Does not connect yet (the first flush does). NULL + errstr on bad options. */
ag_redis_t *ag_redis_new(const ag_redis_opts_t *o, char *errstr, size_t errstr_size);
void ag_redis_destroy(ag_redis_t *r); /* NULL: no-op */

/*
 * Builds a batch of what changed in st (everything after a reconnect or a
 * lost `alive` key) and hands it to the writer thread; does nothing while the
 * previous batch is in flight. wall_ms stamps the note. CM_OK, or CM_ERR_IO
 * when Redis is unreachable (nothing is lost: the panes stay dirty).
 */
cm_err_t ag_redis_flush(ag_redis_t *r, ag_state_t *st, int64_t wall_ms);

/* Waits up to timeout_ms for the batch in flight to be written; true when
 * the writer is idle (used at shutdown). */
bool ag_redis_drain(ag_redis_t *r, int64_t timeout_ms);

/* Next flush rewrites every pane in full (after a restore). */
void ag_redis_force_full(ag_redis_t *r);

/* Whether the last flush (or connect) succeeded. Thread-safe. */
bool ag_redis_up(const ag_redis_t *r);

typedef struct ag_redis_stats {
    uint64_t flushes, commands, errors, full_rewrites;
    uint64_t bytes;
} ag_redis_stats_t;
void ag_redis_get_stats(const ag_redis_t *r, ag_redis_stats_t *out);

/* The text of aggregator_read.lua. */
extern const char ag_redis_read_lua[];

/*
 * Reads the merged window (size_ms, start_ms) from Redis at host:port with
 * aggregator_read.lua: *json gets the JSON text (caller frees) or NULL when
 * the call failed (errstr says why). For dashboards written in C and tests.
 */
cm_err_t ag_redis_read_window(const char *host, int port, const char *prefix, int64_t size_ms,
                              int64_t start_ms, int top_n, char **json, char *errstr,
                              size_t errstr_size);

#endif
