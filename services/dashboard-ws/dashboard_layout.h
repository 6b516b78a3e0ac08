/*
 * dashboard_layout.h: reads the aggregator's Redis layout (documented in
 * services/aggregator/README.md, "Redis key layout"; written by
 * services/aggregator/aggregator_redis.c) into a db_data_t.
 *
 * What is read, for prefix P (AGGREGATOR_REDIS_PREFIX, default "cs:agg") and
 * 1-minute windows (size 60000):
 *   P:win:60000                       ZSET of window starts (anchor=data)
 *   P:w:60000:<start>:src             SET of source ids: r<partition> (raw
 *                                     events), s<partition> (sessions)
 *   P:w:60000:<start>:t:<sid>         HASH of absolute totals of that
 *                                     source: events, page_views, purchases,
 *                                     revenue_micros, sessions,
 *                                     session_ms_sum, bounces, conversions
 *                                     (+ final, wm; and `late` when present)
 *   P:w:60000:<start>:d:<dim>:<sid>   HASH value -> count, dim in url,
 *                                     category, device_type, country,
 *                                     event_type
 *   P:w:60000:<start>:u:<sid>         Redis HLL of the source's users
 *   channel P:updates                 note {"ts","replica","full","windows":
 *                                     [[size,start],...]} after each flush
 * Merging follows the aggregator's rule: values of one window are summed
 * over its sources, unique users are one PFCOUNT over the sources' HLLs (a
 * union); the hour's unique users are one PFCOUNT over every HLL of the
 * range.
 *
 * A cache keeps each window's merged values; a window is read again when a
 * note names it, when db_layout_invalidate() was called (reconnect, the
 * periodic poll), or when it enters the range. Each read is two pipelined
 * round trips (SMEMBERS, then HGETALL/PFCOUNT), three with anchor=data.
 *
 * Not thread-safe: a layout belongs to the reader thread.
 */
#ifndef DB_LAYOUT_H
#define DB_LAYOUT_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"
#include "dashboard_snapshot.h"

#define DB_WINDOW_MS 60000
/* Sources of one window, entries of one window's dimension, kept at most:
 * caps on what Redis may hand us. */
#define DB_MAX_SOURCES 4096
#define DB_MAX_DIM_ENTRIES 200000

typedef struct db_layout db_layout_t;

/* prefix copied. NULL on no memory. */
db_layout_t *db_layout_new(const char *prefix, size_t history_windows, size_t top_n,
                           bool anchor_data);
void db_layout_destroy(db_layout_t *l); /* NULL: no-op */

/* The pub/sub channel of the notes ("<prefix>:updates"). */
const char *db_layout_channel(const db_layout_t *l);

/*
 * Applies one note (the message text): the 1-minute windows it names are
 * read again at the next db_layout_read(); a note with "full":true, or that
 * may have left windows out (64 listed), marks everything. *ts gets the
 * note's ts (0 if none). CM_ERR_PARSE on a malformed note (then everything
 * is marked too: better one read too many than a stale window).
 */
cm_err_t db_layout_note(db_layout_t *l, const char *msg, size_t len, int64_t *ts);

/* Marks every cached window to be read again. */
void db_layout_invalidate(db_layout_t *l);

/*
 * Reads what is marked or missing for the range ending at the minute of
 * now_ms (anchor=clock) or at the newest window (anchor=data), and fills
 * out (cleared first; owned by the caller: db_data_clear) with the range's
 * windows, the hour's unique users and the breakdowns (top_n each).
 * CM_ERR_IO (errstr says why) when Redis failed: the caller reconnects; the
 * cache keeps what it had.
 */
cm_err_t db_layout_read(db_layout_t *l, redisContext *c, int64_t now_ms, db_data_t *out,
                        char *errstr, size_t errstr_size);

/* Windows read from Redis by the last db_layout_read (tests, metrics). */
size_t db_layout_last_reads(const db_layout_t *l);
/* u keys the last read found holding no HyperLogLog (their users not counted). */
size_t db_layout_last_bad_hlls(const db_layout_t *l);

#endif
