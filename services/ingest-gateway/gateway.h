/*
 * gateway.h: the ingest gateway as one object: its configuration-derived
 * tables, the Kafka producer, the metrics and the HTTP daemon.
 *
 * Life cycle (main.c): gw_gateway_new -> gw_gateway_start -> (signal) ->
 * gw_gateway_shutdown -> gw_gateway_destroy.
 */
#ifndef GW_GATEWAY_H
#define GW_GATEWAY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cm_config.h"
#include "cm_kafka.h"
#include "cm_metrics.h"
#include "gateway_auth.h"
#include "gateway_batch.h"
#include "gateway_config.h"
#include "gateway_cors.h"
#include "gateway_enrich.h"
#include "gateway_metrics.h"

struct MHD_Daemon;

typedef struct gw_gateway {
    const gw_config_t *cfg; /* borrowed; outlives the gateway */
    gw_batch_opts_t bopts;
    gw_auth_t *auth;
    gw_cors_t *cors;
    gw_cidrs_t trusted;
    cm_producer_t *producer;
    cm_metrics_t *reg;
    gw_metrics_t m;
    struct MHD_Daemon *mhd;
    int port; /* listened on */

    /* Producing happens under the read side; shutdown takes the write side
     * once to set `stopping`, after which nothing is produced any more and
     * the producer can be flushed and destroyed safely. */
    pthread_rwlock_t stop_lock;
    bool stopping;
    atomic_int open_requests;
} gw_gateway_t;

/* Exit-code classes of gw_gateway_new failures. */
typedef enum gw_fail {
    GW_FAIL_NONE = 0,
    GW_FAIL_CONFIG, /* a setting is wrong: exit 2 */
    GW_FAIL_RUNTIME /* anything else: exit 1 */
} gw_fail_t;

/*
 * Builds everything but the listener: auth table, CORS list, trusted
 * proxies, schema id (asks the registry when configured), producer, metrics.
 * cfg and pt are borrowed (pt only during the call). NULL + errstr + *fail on
 * failure.
 */
gw_gateway_t *gw_gateway_new(const gw_config_t *cfg, const cm_passthrough_t *pt,
                             gw_fail_t *fail, char *errstr, size_t errstr_size);

/* Starts the HTTP daemon (gateway_http.c). CM_OK or CM_ERR_IO + errstr. */
cm_err_t gw_http_start(gw_gateway_t *gw, char *errstr, size_t errstr_size);

/*
 * Orderly stop: stop accepting connections, refuse new produces (503),
 * wait up to timeout_ms for Kafka to acknowledge what is in flight (the
 * waiting requests get their answers), then stop the daemon.
 */
void gw_gateway_shutdown(gw_gateway_t *gw, int timeout_ms);

/* NULL: no-op. Calls gw_gateway_shutdown(gw, 0) when still running. */
void gw_gateway_destroy(gw_gateway_t *gw);

/* /readyz: Kafka reachable and not stopping. */
bool gw_gateway_ready(gw_gateway_t *gw, const char **reason);

/* Delivery report of one event (the producer's poll thread): msg_opaque is
 * the gw_req_t of gateway_http.c. */
void gw_http_on_delivery(void *msg_opaque, cm_err_t err, const char *errmsg,
                         int32_t partition, int64_t offset, void *cb_opaque);
/* Stops the daemon: after the producer is gone (gateway_http.c). */
void gw_http_stop(gw_gateway_t *gw, int timeout_ms);
void gw_http_quiesce(gw_gateway_t *gw);

#endif
