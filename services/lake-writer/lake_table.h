/*
 * lake_table.h: one Iceberg table being written: its open data files (one per
 * partition tuple), rolling by size and age, and the commit of a batch as one
 * snapshot that records the Kafka offsets it covers.
 *
 * Offsets. Each table follows one source topic. For every partition p of it
 * the table knows
 *   committed[p]  next offset to read, as recorded by the current snapshot
 *                 (summary "lake.kafka-offsets"); -1 when none;
 *   pos[p]        next offset it has seen (committed or in the open batch).
 * A record at offset o belongs to the table iff o >= pos[p]; a record that
 * is not a row of it (another metrics table's window size, an undecodable
 * event) is "covered" all the same. A commit publishes max(committed, pos)
 * per partition, so on restart the writer seeks every partition to the
 * smallest committed offset among the tables of its topic, and each table
 * skips what it already has: no row is lost or written twice.
 *
 * Crash safety. Before a data file, manifest or manifest list of a batch is
 * created, its key is added to the table's journal
 * (<table>/lw-journal/<instance>.json, with the batch id). The snapshot of a
 * batch carries "lake.batch-id". On open, a journal whose batch id is in no
 * snapshot belongs to an interrupted batch: its files are deleted (they are
 * in no snapshot, so no reader sees them); otherwise the batch did commit
 * and only the journal is removed.
 *
 * Not thread-safe: a table belongs to the loop thread; lw_table_get_stats()
 * reads atomics and may be called from any thread.
 */
#ifndef LAKE_TABLE_H
#define LAKE_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"
#include "lake_rows.h"
#include "lake_schema.h"
#include "lake_storage.h"

typedef struct lw_table lw_table_t;

typedef struct lw_table_opts {
    const char *topic;     /* source topic (key of the offsets in summaries) */
    const char *instance;  /* this writer's stable id (journal name) */
    int64_t roll_bytes;    /* a data file is closed past this size; 0: 128 MiB */
    int64_t roll_age_ms;   /* a batch is committed this long after its first row; 0: 60 s */
    int max_open_files;    /* open partitions per table; 0: 64 */
    int codec;             /* LW_CODEC_* for data files */
    int manifest_codec;    /* LW_CODEC_* for manifests and manifest lists */
} lw_table_opts_t;

/* Opens (or creates) the table, recovers an interrupted batch of this
 * instance, loads the committed offsets. NULL + errstr on failure. */
lw_table_t *lw_table_open(const lw_table_def_t *def, lw_storage_t *st,
                          const lw_table_opts_t *opts, char *errstr, size_t errstr_size);

/* Discards the open batch (files deleted, journal removed) and frees.
 * Commit first to keep it. NULL: no-op. */
void lw_table_destroy(lw_table_t *t);

const lw_table_def_t *lw_table_def(const lw_table_t *t);

/* pos[p] (see above); -1 when the table knows nothing of p. */
int64_t lw_table_pos(const lw_table_t *t, int32_t partition);
/* committed[p]; -1 when none. */
int64_t lw_table_committed(const lw_table_t *t, int32_t partition);

/* Whether offset o of partition p is new to the table (o >= pos[p]). */
bool lw_table_wants(const lw_table_t *t, int32_t partition, int64_t offset);

/* Writes one row (the caller checked lw_table_wants) and covers its offset. */
cm_err_t lw_table_append(lw_table_t *t, const lw_row_t *row);

/* Covers an offset that is not a row of this table. */
void lw_table_cover(lw_table_t *t, int32_t partition, int64_t offset);

/* True when the open batch is old enough (roll_age) to be committed. */
bool lw_table_due(const lw_table_t *t, int64_t now_mono_ms);

/* Rows in the open batch. */
uint64_t lw_table_batch_rows(const lw_table_t *t);

/*
 * Closes every open file and commits the batch as one snapshot (retrying on
 * a concurrent commit). No-op without rows. CM_ERR_RETRY: another writer has
 * committed some of the same offsets meanwhile (a rebalance): the batch was
 * discarded and pos rewound to the new committed offsets: the caller must
 * seek back (lw_table_pos). A data file that cannot be closed (disk full)
 * loses its rows: the batch is discarded as well, pos rewound, and the error
 * returned. Other errors (manifests, metadata): the batch is kept, retry
 * later. errstr always says what failed.
 */
cm_err_t lw_table_commit(lw_table_t *t, char *errstr, size_t errstr_size);

/* Throws the open batch away (files deleted) and rewinds pos to committed. */
void lw_table_abort(lw_table_t *t);

/* Re-reads the newest metadata (another writer may have committed) and
 * takes its offsets for partitions without rows in the open batch. */
cm_err_t lw_table_refresh(lw_table_t *t, char *errstr, size_t errstr_size);

typedef struct lw_table_stats {
    uint64_t rows;          /* rows written (appended) */
    uint64_t bytes;         /* data file bytes committed */
    uint64_t rows_committed;
    uint64_t commits;
    uint64_t commit_conflicts;
    uint64_t commit_failures;
    uint64_t files_committed;
    uint64_t last_commit_files;
    double last_commit_seconds;
    double commit_seconds_sum;
    int64_t snapshot_id;
    int64_t version;
} lw_table_stats_t;

void lw_table_get_stats(const lw_table_t *t, lw_table_stats_t *out);

/* Test hook: SIGKILL when LAKE_CRASH_AT equals `point`. Points of a commit,
 * in order: commit-start, files-closed, manifest-written, list-written,
 * before-hint (metadata published, version-hint not yet), published,
 * journal-cleared. */
void lw_crash_point(const char *point);

/* Partitions with a committed offset: calls fn(partition, committed) each. */
void lw_table_foreach_committed(const lw_table_t *t, void (*fn)(int32_t, int64_t, void *),
                                void *ud);

#endif
