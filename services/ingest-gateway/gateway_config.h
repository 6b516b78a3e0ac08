/*
 * gateway_config.h: the ingest gateway's settings, one table (cm_config.h).
 *
 * gw_config_table is the single source of the environment variables, their
 * defaults and bounds; `--help` and the README are generated from / kept in
 * step with it.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "cm_config.h"

#define GW_SERVICE "ingest-gateway"
#define GW_SUMMARY                                                                     \
    "The HTTP front door of the clickstream pipeline: POST /v1/events takes JSON,\n"   \
    "JSON arrays or NDJSON (gzip allowed), validates and enriches each event\n"        \
    "(SPEC 1) and produces it as Avro to Kafka; it answers 2xx only after Kafka\n"     \
    "acknowledged every accepted event. /metrics, /healthz and /readyz are served\n"   \
    "on the same port."

typedef struct gw_config {
    char *log_level;
    char *addr;
    int64_t port;
    int64_t http_threads; /* 0: one per CPU */
    int64_t max_connections;
    int64_t read_timeout_ms; /* idle / slow-body connection timeout */
    int64_t conn_memory;     /* libmicrohttpd per-connection pool */

    char *bootstrap;
    char *topic;
    char *registry_url;
    int64_t delivery_timeout_ms;
    int64_t queue_max_messages;
    int64_t retry_after_s;
    int64_t shutdown_timeout_ms;

    bool auth;
    char *write_keys;
    char *write_keys_file;
    double rate_limit; /* events/s per key, 0: off */
    double rate_burst; /* 0: max(rate, max_request_events) */

    char *cors_origins;
    bool anonymize;
    char *trusted_proxies;

    int64_t max_event_bytes;
    int64_t max_request_bytes;
    int64_t max_request_events;
    int64_t max_depth;
    int64_t max_future_ms;
    int64_t max_errors; /* rejected events listed in one response */
} gw_config_t;

extern const cm_config_entry_t gw_config_table[];

#endif
