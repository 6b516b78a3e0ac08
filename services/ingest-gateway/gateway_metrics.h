/*
 * gateway_metrics.h: the gateway's series, created once at start so the hot
 * path is an atomic add on a kept handle.
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include "cm_metrics.h"

/* Status codes the gateway answers; anything else counts as "other". */
#define GW_STATUS_CODES 16

typedef struct gw_metrics {
    cm_metrics_t *reg; /* borrowed */
    int codes[GW_STATUS_CODES];
    cm_counter_t *requests[GW_STATUS_CODES + 1];
    cm_counter_t *events_accepted;
    cm_counter_t *events_not_stored; /* valid, but Kafka failed: 503 */
    cm_counter_t *unknown_fields;
    cm_counter_t *ip_dropped;
    cm_counter_t *bytes_in;
    cm_histogram_t *request_seconds;
    cm_histogram_t *produce_seconds;
    cm_histogram_t *batch_events;
    cm_gauge_t *in_flight;
    cm_counter_t *rejected[16]; /* by gw_reject_reasons order */
} gw_metrics_t;

/* reg is borrowed and must outlive m. */
void gw_metrics_init(gw_metrics_t *m, cm_metrics_t *reg);
void gw_metrics_status(gw_metrics_t *m, int status);
/* One rejected event with a reason code; the series is found or made. */
void gw_metrics_reject(void *m, const char *reason);

#endif
