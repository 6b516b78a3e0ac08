/*
 * dashboard_config.h: the dashboard's settings, one table (cm_config.h).
 *
 * db_config_table is the single source of the environment variables, their
 * defaults and bounds; `--help` prints it and the README lists it.
 */
#ifndef DB_CONFIG_H
#define DB_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "cm_config.h"

#define DB_SERVICE "dashboard-ws"
#define DB_SUMMARY                                                                     \
    "The live dashboard of the clickstream pipeline: serves the page on one port,\n"   \
    "streams the aggregator's windows from Redis over a WebSocket (/ws: a snapshot\n"  \
    "of the last hour on connect, then coalesced updates), answers the same\n"         \
    "snapshot as JSON on /api/snapshot, and /metrics, /healthz, /readyz."

typedef struct db_config {
    char *log_level;
    char *addr;
    int64_t port;

    char *redis_host;
    int64_t redis_port;
    char *redis_prefix;
    int64_t redis_timeout_ms;
    int64_t refresh_ms;    /* least time between two Redis reads */
    int64_t poll_ms;       /* read even without a note after this long */
    int64_t retry_ms;      /* reconnect delay while Redis is down */

    int64_t history_min;   /* minutes of 1-min windows in the snapshot */
    int64_t top_n;         /* entries per breakdown */
    char *anchor;          /* "clock" or "data" */

    char *read_token;      /* secret; NULL: no token */
    char *allowed_origins; /* comma list; NULL: same origin as Host */

    int64_t client_interval_ms; /* least time between two updates to a client */
    int64_t client_queue;       /* messages queued per client */
    int64_t client_queue_bytes; /* bytes queued per client */
    int64_t client_stall_ms;    /* a client that takes nothing for this long is closed */
    int64_t max_clients;

    char *web_dir; /* NULL: the embedded page */
} db_config_t;

extern const cm_config_entry_t db_config_table[];

#endif
