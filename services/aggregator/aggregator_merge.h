/*
 * aggregator_merge.h: from per-partition panes to one exact result per
 * window, for the metrics topic.
 *
 * Stage 1 (ag_loop's source loop) owns some partitions of raw and sessions;
 * for each of its panes that is final (or whose partition went idle) and has
 * changed, it writes the pane's ABSOLUTE content as one record to the
 * internal topic clickstream.aggregator.panes (partitioned by window), and
 * for every source partition it owns, a heartbeat (watermark, idle, number of
 * partitions of the topic) to every partition of that topic. All inside its
 * transactions, so the panes topic holds exactly the committed panes.
 *
 * Stage 2, the merger (this file), consumes one partition of the panes
 * topic. It keeps the newest pane of each (window, source) and the newest
 * heartbeat of each source. Its watermark is the min over the non-idle
 * sources' watermarks (the max when all are idle; held back while a source
 * of the topics has never reported) and never goes back. A window is
 * emitted when its end <= that watermark: six WindowResult records (total +
 * five dimensions), revision 0, final = true; a pane arriving later for it
 * re-emits it with revision + 1. It is dropped once no source can change
 * it any more: when every source, idle ones included, is past end +
 * lateness (a source idle for `grace` of processing time no longer counts:
 * it is probably idle for good). So a partition that was idle and wakes up with data
 * for an emitted window gives a revision, not a loss. A pane for a window
 * dropped already is counted as late (aggregator_merge_late_panes_total) and
 * ignored.
 *
 * Since panes are absolute, applying one twice changes nothing: the merged
 * values are the sum over sources of each source's newest pane, whatever the
 * number of replicas or restarts.
 *
 * Pane record (value, binary, all integers LEB128 varints, signed ones
 * zig-zag): 'P' 1, size_ms, start_ms, source key, final (0/1), the 8 totals
 * of ag_totals_t, HLL (0: none; 1: sparse: n, n x (index, value); 2: dense:
 * 16384 bytes), then per dimension (ag_dim order): n, n x (len, bytes,
 * count). Heartbeat: 'H' 1, source key, watermark (zig-zag; INT64_MIN for
 * none), idle (0/1), partitions of the source's topic.
 *
 * Not thread-safe: a merger belongs to the merger loop's thread.
 */
#ifndef AGGREGATOR_MERGE_H
#define AGGREGATOR_MERGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aggregator_window.h"
#include "cm_buf.h"
#include "cm_err.h"
#include "cm_records.h"

#define AG_TOP_URLS 100

/* Appends the pane record of p (a pane of s) to out. */
cm_err_t ag_pane_encode(const ag_source_t *s, const ag_pane_t *p, cm_buf_t *out);

/*
 * A pane record above Kafka's message size (1 MB by default) is sent as
 * chunks: ag_pane_chunk() appends chunk i of n of `rec` (the bytes of
 * ag_pane_encode) to out: 'Q' 1, source key, size_ms, start_ms, i, n, the
 * slice. The merger puts them back together (the chunks of one pane are
 * produced in order by one transaction to one partition) and applies the
 * pane at the offset of its first chunk.
 */
#define AG_PANE_CHUNK (900 * 1024)
cm_err_t ag_pane_chunk(const ag_source_t *s, const ag_pane_t *p, const uint8_t *rec, size_t len,
                       uint32_t i, uint32_t n, cm_buf_t *out);
/* Appends a heartbeat record to out. */
cm_err_t ag_heartbeat_encode(int32_t src_key, int64_t wm, bool idle, int32_t n_partitions,
                             cm_buf_t *out);

typedef struct ag_merger ag_merger_t;

/*
 * lateness_ms: the allowed lateness; grace_ms: processing time after which
 * a source whose heartbeats say idle no longer keeps windows alive (< 0:
 * never). now_ms arguments are monotonic processing time (ms).
 * NULL on no memory.
 */
ag_merger_t *ag_merger_new(int64_t lateness_ms, int64_t grace_ms);
void ag_merger_destroy(ag_merger_t *m); /* NULL: no-op */

/*
 * Applies one record of the panes topic at `offset` (bytes borrowed): a
 * pane, a heartbeat or a chunk of a pane.
 * replay = true while restoring: heartbeats are skipped (the checkpoint has
 * the source table as of the commit) and nothing is marked to emit.
 * CM_OK, CM_ERR_PARSE (not a pane or heartbeat record: skipped by the
 * caller), CM_ERR_NOMEM.
 */
cm_err_t ag_merger_apply(ag_merger_t *m, const void *data, size_t len, int64_t offset,
                         bool replay, int64_t now_ms);

/* Called for each record to emit; r is valid during the call only. */
typedef cm_err_t ag_emit_fn(const cm_window_result_t *r, void *ud);

/*
 * Recomputes the watermark, emits every window that is due (see top) through
 * fn, in (size, start, dimension) order, and drops windows past lateness. An
 * error from fn stops and is returned (the window stays due).
 */
cm_err_t ag_merger_flush(ag_merger_t *m, ag_emit_fn *fn, void *ud, int64_t now_ms);

/*
 * Checkpoint of the merger for its changelog, to write in the transaction
 * after ag_merger_flush: the replay offset (smallest offset of a pane record
 * still needed, or next_offset), the source table, the hold watermark and the
 * emission state of each window. Appended to out. *sig_len (may be NULL)
 * gets the length of the part that matters for a restore (replay offset and
 * windows): the caller writes a checkpoint only when that part changed.
 * After a restore every source counts as stale until its next heartbeat, so
 * nothing is emitted on the checkpoint's old watermarks.
 */
cm_err_t ag_merger_checkpoint(const ag_merger_t *m, int64_t next_offset, cm_buf_t *out,
                              size_t *sig_len);

/*
 * Restore: ag_merger_load_checkpoint() reads the replay offset out of a
 * checkpoint; the caller then replays [replay_from, committed) with
 * ag_merger_apply(replay = true) and calls ag_merger_finish_restore() with
 * the same checkpoint bytes. With no checkpoint (data NULL), finish just
 * clears the flags.
 */
cm_err_t ag_merger_load_checkpoint(const void *data, size_t len, int64_t *replay_from);
cm_err_t ag_merger_finish_restore(ag_merger_t *m, const void *data, size_t len);

typedef struct ag_merger_stats {
    int64_t watermark;    /* the hold watermark (INT64_MIN: none) */
    size_t windows;       /* windows kept */
    size_t sources;       /* sources heard of */
    uint64_t late_panes;  /* panes for windows dropped already */
    uint64_t results;     /* WindowResult records emitted */
} ag_merger_stats_t;
void ag_merger_get_stats(const ag_merger_t *m, ag_merger_stats_t *out);

/*
 * Fills the 6 results of window (size_ms, start_ms) from the merger's current
 * content (revision and final as given): r[0] total, r[1..5] the dimensions
 * in ag_dim order. Strings point into the merger (valid until its next
 * apply). CM_ERR_NOT_FOUND when the window is unknown. For tests and the
 * emitting code.
 */
cm_err_t ag_merger_result(ag_merger_t *m, int64_t size_ms, int64_t start_ms, int32_t revision,
                          bool final, cm_window_result_t r[1 + AG_N_DIMS]);

#endif
