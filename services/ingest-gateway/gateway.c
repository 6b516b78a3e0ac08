/*
 * gateway.c: building, starting and stopping the gateway (see gateway.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm_avro.h"
#include "cm_log.h"
#include "cm_registry.h"
#include "cm_time.h"
#include "gateway.h"
#include "gateway_json.h"

static double gw_queue_depth(void *ud)
{
    gw_gateway_t *gw = ud;
    return gw->producer ? (double)cm_producer_queue_len(gw->producer) : 0;
}

static double gw_kafka_ready(void *ud)
{
    gw_gateway_t *gw = ud;
    return cm_producer_ready(gw->producer) ? 1 : 0;
}

static double gw_delivered(void *ud)
{
    gw_gateway_t *gw = ud;
    cm_producer_stats_t st;
    cm_producer_get_stats(gw->producer, &st);
    return (double)st.delivered;
}

static double gw_failed(void *ud)
{
    gw_gateway_t *gw = ud;
    cm_producer_stats_t st;
    cm_producer_get_stats(gw->producer, &st);
    return (double)st.failed;
}

gw_gateway_t *gw_gateway_new(const gw_config_t *cfg, const cm_passthrough_t *pt,
                             gw_fail_t *fail, char *errstr, size_t errstr_size)
{
    *fail = GW_FAIL_CONFIG;
    gw_gateway_t *gw = calloc(1, sizeof(*gw));
    if (!gw) {
        *fail = GW_FAIL_RUNTIME;
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    gw->cfg = cfg;
    pthread_rwlock_init(&gw->stop_lock, NULL);
    gw_json_arena_install();

    gw->bopts.lim.max_event_bytes = (size_t)cfg->max_event_bytes;
    gw->bopts.lim.max_request_bytes = (size_t)cfg->max_request_bytes;
    gw->bopts.lim.max_request_events = (size_t)cfg->max_request_events;
    gw->bopts.lim.max_depth = (int)cfg->max_depth;
    gw->bopts.lim.max_future_ms = cfg->max_future_ms;
    gw->bopts.max_errors = (size_t)cfg->max_errors;
    gw->bopts.anonymize = cfg->anonymize;

    gw->auth = gw_auth_new(cfg->auth, cfg->write_keys, cfg->write_keys_file, cfg->rate_limit,
                           cfg->rate_burst, (double)cfg->max_request_events, errstr,
                           errstr_size);
    if (!gw->auth)
        goto fail;
    gw->cors = gw_cors_new(cfg->cors_origins, errstr, errstr_size);
    if (!gw->cors)
        goto fail;
    char cerr[200];
    if (gw_cidrs_parse(cfg->trusted_proxies, &gw->trusted, cerr, sizeof(cerr))) {
        snprintf(errstr, errstr_size, "GATEWAY_TRUSTED_PROXIES: %s", cerr);
        goto fail;
    }

    *fail = GW_FAIL_RUNTIME;
    cm_registry_t *reg = cm_registry_new(cfg->registry_url, errstr, errstr_size);
    if (!reg) {
        *fail = GW_FAIL_CONFIG;
        goto fail;
    }
    char subject[300];
    cm_err_t err = cm_registry_subject(cfg->topic, subject, sizeof(subject));
    if (!err)
        err = cm_registry_id(reg, subject, CM_SCHEMA_EVENT, &gw->bopts.schema_id, errstr,
                             errstr_size);
    cm_registry_destroy(reg);
    if (err)
        goto fail;

    gw->reg = cm_metrics_new();
    if (!gw->reg) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    gw_metrics_init(&gw->m, gw->reg);
    cm_metrics_register_process(gw->reg);

    cm_producer_opts_t po = {
        .bootstrap = cfg->bootstrap,
        .pt = pt,
        .client_id = GW_SERVICE,
        .on_delivery = gw_http_on_delivery,
        .cb_opaque = gw,
        .queue_max_msgs = (int)cfg->queue_max_messages,
        .delivery_timeout_ms = (int)cfg->delivery_timeout_ms,
    };
    gw->producer = cm_producer_new(&po, errstr, errstr_size);
    if (!gw->producer) {
        *fail = GW_FAIL_CONFIG; /* a bad RDKAFKA_* property, most likely */
        goto fail;
    }
    cm_metrics_gauge_fn(gw->reg, "gateway_producer_queue_depth",
                        "events queued in the producer, not yet acknowledged", gw_queue_depth,
                        gw, NULL);
    cm_metrics_gauge_fn(gw->reg, "gateway_kafka_ready", "1 while a Kafka broker answers",
                        gw_kafka_ready, gw, NULL);
    cm_metrics_counter_fn(gw->reg, "gateway_kafka_delivered_total",
                          "delivery reports without error", gw_delivered, gw, NULL);
    cm_metrics_counter_fn(gw->reg, "gateway_kafka_failed_total",
                          "delivery reports with an error", gw_failed, gw, NULL);
    *fail = GW_FAIL_NONE;
    return gw;
fail:
    gw_gateway_destroy(gw);
    return NULL;
}

bool gw_gateway_ready(gw_gateway_t *gw, const char **reason)
{
    bool ok = false;
    pthread_rwlock_rdlock(&gw->stop_lock);
    if (gw->stopping)
        *reason = "shutting down";
    else if (!cm_producer_ready(gw->producer))
        *reason = "kafka unreachable";
    else {
        *reason = "";
        ok = true;
    }
    pthread_rwlock_unlock(&gw->stop_lock);
    return ok;
}

void gw_gateway_shutdown(gw_gateway_t *gw, int timeout_ms)
{
    if (!gw || !gw->mhd)
        return;
    gw_http_quiesce(gw);
    pthread_rwlock_wrlock(&gw->stop_lock);
    gw->stopping = true;
    pthread_rwlock_unlock(&gw->stop_lock);
    cm_metrics_unbind(gw->reg, gw); /* the scrape functions read the producer */
    /* Waiting requests are answered as their acknowledgements come in;
     * what is left at the deadline is purged, reported failed, and those
     * requests are answered 503. */
    int64_t t0 = cm_mono_ms();
    cm_producer_destroy(gw->producer, timeout_ms);
    gw->producer = NULL;
    int left = timeout_ms - (int)(cm_mono_ms() - t0);
    gw_http_stop(gw, left > 1000 ? left : 1000);
}

void gw_gateway_destroy(gw_gateway_t *gw)
{
    if (!gw)
        return;
    if (gw->mhd)
        gw_gateway_shutdown(gw, 0);
    cm_producer_destroy(gw->producer, 0);
    if (gw->reg)
        cm_metrics_unbind(gw->reg, gw);
    cm_metrics_destroy(gw->reg);
    gw_auth_destroy(gw->auth);
    gw_cors_destroy(gw->cors);
    gw_cidrs_free(&gw->trusted);
    pthread_rwlock_destroy(&gw->stop_lock);
    free(gw);
}
