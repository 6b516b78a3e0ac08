/*
 * gateway_metrics.c: the series of the gateway's /metrics.
 */
#include <stdio.h>
#include <string.h>

#include "gateway_metrics.h"

static const int gw_codes[] = {200, 202, 204, 400, 401, 403, 404, 405,
                               408, 413, 415, 429, 500, 503, 0};

static const char *const gw_reject_reasons[] = {
    "missing_field", "bad_type",   "too_long",     "bad_value",   "future_timestamp",
    "too_large",     "too_deep",   "invalid_json", "unencodable", NULL,
};

#define GW_REJ_HELP "events refused, by reason (the rest of their request may be accepted)"

void gw_metrics_init(gw_metrics_t *m, cm_metrics_t *reg)
{
    memset(m, 0, sizeof(*m));
    m->reg = reg;
    size_t i = 0;
    for (; gw_codes[i]; i++) {
        char code[8];
        snprintf(code, sizeof(code), "%d", gw_codes[i]);
        m->codes[i] = gw_codes[i];
        m->requests[i] = cm_metrics_counter(reg, "gateway_requests_total",
                                            "HTTP requests answered, by status", "status",
                                            code, NULL);
    }
    m->requests[GW_STATUS_CODES] = cm_metrics_counter(
        reg, "gateway_requests_total", "HTTP requests answered, by status", "status", "other",
        NULL);
    for (size_t r = 0; gw_reject_reasons[r]; r++)
        m->rejected[r] = cm_metrics_counter(reg, "gateway_events_rejected_total", GW_REJ_HELP,
                                            "reason", gw_reject_reasons[r], NULL);
    m->events_accepted = cm_metrics_counter(
        reg, "gateway_events_accepted_total",
        "events acknowledged by Kafka and reported accepted to the client", NULL);
    m->events_not_stored = cm_metrics_counter(
        reg, "gateway_events_not_stored_total",
        "valid events of requests answered 503 (queue full, Kafka failure)", NULL);
    m->unknown_fields = cm_metrics_counter(reg, "gateway_unknown_fields_total",
                                           "unknown top-level event fields dropped", NULL);
    m->ip_dropped = cm_metrics_counter(reg, "gateway_ip_dropped_total",
                                       "ip_address values dropped: not an IP address", NULL);
    m->bytes_in = cm_metrics_counter(reg, "gateway_request_bytes_total",
                                     "request body bytes received (as sent)", NULL);
    static const double lat[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                 0.1,    0.25,  0.5,    1,     2.5,  5,     10};
    size_t nlat = sizeof(lat) / sizeof(lat[0]);
    m->request_seconds = cm_metrics_histogram(
        reg, "gateway_request_duration_seconds",
        "POST /v1/events: first byte to answer, including the wait for Kafka", lat, nlat, NULL);
    m->produce_seconds = cm_metrics_histogram(
        reg, "gateway_produce_duration_seconds",
        "per request: first produce to the last delivery report (acks=all)", lat, nlat, NULL);
    static const double sizes[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};
    m->batch_events = cm_metrics_histogram(reg, "gateway_request_events",
                                           "events per POST /v1/events", sizes,
                                           sizeof(sizes) / sizeof(sizes[0]), NULL);
    m->in_flight = cm_metrics_gauge(reg, "gateway_requests_in_flight",
                                    "requests received and not yet answered", NULL);
}

void gw_metrics_status(gw_metrics_t *m, int status)
{
    for (int i = 0; i < GW_STATUS_CODES && m->codes[i]; i++)
        if (m->codes[i] == status) {
            cm_counter_inc(m->requests[i]);
            return;
        }
    cm_counter_inc(m->requests[GW_STATUS_CODES]);
}

void gw_metrics_reject(void *ud, const char *reason)
{
    gw_metrics_t *m = ud;
    for (size_t r = 0; gw_reject_reasons[r]; r++)
        if (strcmp(gw_reject_reasons[r], reason) == 0) {
            cm_counter_inc(m->rejected[r]);
            return;
        }
    /* reasons are static codes from a short list, so the lookup stays cheap
     * and the label set bounded */
    cm_counter_inc(cm_metrics_counter(m->reg, "gateway_events_rejected_total", GW_REJ_HELP,
                                      "reason", reason, NULL));
}
