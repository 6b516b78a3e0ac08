/*
 * aggregator_loop.h: the aggregator's two transactional loops and their
 * wiring (Kafka, Redis, /metrics). See README.md "Design" for the whole
 * picture; in short:
 *
 *  source loop (group AGGREGATOR_GROUP_ID, inputs raw + sessions): per
 *    partition panes (aggregator_window.h); in each transaction, the late
 *    events (clickstream.late), the changed final panes and the watermark
 *    heartbeats (internal panes topic) and a restore checkpoint per partition
 *    (internal changelog, only when it moved). Redis gets the live panes every
 *    AGGREGATOR_FLUSH_INTERVAL (aggregator_redis.h).
 *  merge loop (group <group>.merge, input the panes topic): merges the panes
 *    of all partitions and writes window results to clickstream.metrics
 *    (aggregator_merge.h), with its own checkpoint.
 *
 * Restore (assign, abort): read the partition's checkpoint (replay offset and
 * the max event time before it), replay the input from there up to the
 * committed offset without producing anything, and go on: the state is then
 * the committed one, record for record (the window rules depend on nothing
 * else).
 */
#ifndef AGGREGATOR_LOOP_H
#define AGGREGATOR_LOOP_H

#include <stddef.h>

#include "aggregator_config.h"
#include "cm_config.h"
#include "cm_err.h"

typedef struct ag_app ag_app_t;

/*
 * Builds everything (metrics, admin server, Redis writer, internal topics,
 * both loops). cfg and pt are borrowed and must outlive the app. NULL +
 * errstr on failure; *config_error is set when the cause is a bad setting
 * (exit code 2).
 */
ag_app_t *ag_app_new(const ag_config_t *cfg, const cm_passthrough_t *pt, bool *config_error,
                     char *errstr, size_t errstr_size);

/* Runs both loops until SIGTERM/SIGINT (cm_signal) or a fatal error.
 * CM_OK on an orderly stop. */
cm_err_t ag_app_run(ag_app_t *app);

void ag_app_destroy(ag_app_t *app); /* NULL: no-op */

#endif
