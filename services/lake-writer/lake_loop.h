/*
 * lake_loop.h: the lake-writer's consumer loop: Kafka records in, table rows
 * out, commits by age, start offsets from the tables' snapshots.
 *
 * The consumer group only assigns partitions (and receives the committed
 * offsets, for lag monitoring); where reading starts is decided by the
 * tables: on every assignment each table re-reads its newest snapshot and the
 * partition is sought to the smallest offset any of its tables still needs
 * (lake_table.h). Records of the raw, sessions, metrics and late topics go to
 * their tables; metrics records are routed by window size.
 *
 * The loop runs on the calling thread; lw_loop_ready() may be called from
 * any thread (the admin server's).
 */
#ifndef LAKE_LOOP_H
#define LAKE_LOOP_H

#include <stdbool.h>

#include "cm_config.h"
#include "cm_err.h"
#include "cm_metrics.h"
#include "lake_config.h"

typedef struct lw_loop lw_loop_t;

/*
 * Opens the storage and every configured table (creating missing ones and
 * cleaning up interrupted batches), registers the metrics in `reg`
 * (borrowed, must outlive the loop) and creates the consumer. cfg and pt are
 * borrowed for the loop's life. NULL + errstr on failure.
 */
lw_loop_t *lw_loop_new(const lw_config_t *cfg, const cm_passthrough_t *pt, cm_metrics_t *reg,
                       char *errstr, size_t errstr_size);

/* Runs until cm_signal_stop_requested(); then commits every table, leaves
 * the group and returns CM_OK. CM_ERR_FATAL: Kafka failed for good. */
cm_err_t lw_loop_run(lw_loop_t *loop);

/* Partitions assigned (for /readyz). Thread-safe. */
bool lw_loop_ready(void *loop, char *reason, size_t size);

/* Frees; an uncommitted batch is discarded (its rows will be read again).
 * NULL: no-op. */
void lw_loop_destroy(lw_loop_t *loop);

#endif
