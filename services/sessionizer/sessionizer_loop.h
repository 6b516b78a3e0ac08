/*
 * sessionizer_loop.h: the sessionizer's Kafka side: the transactional
 * consume-transform-produce loop (cm_txloop) around the per-partition state
 * of sessionizer_state.h, the changelog topic, metrics and readiness.
 */
#ifndef SESSIONIZER_LOOP_H
#define SESSIONIZER_LOOP_H

#include <stddef.h>

#include "cm_config.h"
#include "cm_err.h"
#include "cm_metrics.h"
#include "sessionizer_config.h"

typedef struct sz_app sz_app_t;

/*
 * Builds the app: registry, watermark tracker, the transactional loop
 * (init_transactions fences an older instance with the same transactional
 * id), the changelog topic (created if missing with TOPIC_RAW's partition
 * count, compacted), and the metrics in `reg` (borrowed: must outlive the
 * app). cfg and pt are borrowed for the app's life. NULL + errstr on failure.
 */
sz_app_t *sz_app_new(const sz_config_t *cfg, const cm_passthrough_t *pt, cm_metrics_t *reg,
                     char *errstr, size_t errstr_size);

/* Runs until SIGTERM/SIGINT (cm_signal) or a fatal error; CM_OK on an orderly stop. */
cm_err_t sz_app_run(sz_app_t *app);

/* For /readyz: true once running and every assigned partition is restored. */
bool sz_app_ready(void *app, char *reason, size_t size);

void sz_app_destroy(sz_app_t *app); /* NULL: no-op */

#endif
