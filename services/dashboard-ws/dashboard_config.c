/*
 * dashboard_config.c: the dashboard's configuration table. The token and the
 * origin list stay text here; dashboard_auth.c parses them.
 */
#include <math.h>
#include <stddef.h>

#include "dashboard_config.h"

#define E(type, env, def, field, lo, hi, desc)                                        \
    {type, env, def, offsetof(db_config_t, field), lo, hi, desc, NULL, false}

const cm_config_entry_t db_config_table[] = {
    CM_CONFIG_LOG_LEVEL_ENTRY(db_config_t, log_level, ""),
    E(CM_CFG_STR, "DASHBOARD_ADDR", "0.0.0.0", addr, 1, 255,
      "bind address of the HTTP/WebSocket listener (page, /ws, /api, admin endpoints)"),
    E(CM_CFG_INT, "DASHBOARD_PORT", "3000", port, 0, 65535,
      "port of the page, the WebSocket and /metrics /healthz /readyz (0: any free port, "
      "logged)"),
    E(CM_CFG_STR, "REDIS_HOST", "127.0.0.1", redis_host, 1, 255, "Redis host (the hot store)"),
    E(CM_CFG_INT, "REDIS_PORT", "6379", redis_port, 1, 65535, "Redis port"),
    E(CM_CFG_STR, "DASHBOARD_REDIS_PREFIX", "cs:agg", redis_prefix, 1, 128,
      "key prefix of the aggregator's Redis layout (its AGGREGATOR_REDIS_PREFIX)"),
    E(CM_CFG_MS, "DASHBOARD_REDIS_TIMEOUT", "2s", redis_timeout_ms, 100, 60000,
      "connect and command timeout of Redis"),
    E(CM_CFG_MS, "DASHBOARD_REFRESH_INTERVAL", "200ms", refresh_ms, 10, 60000,
      "least time between two reads of Redis: aggregator notes in between are coalesced"),
    E(CM_CFG_MS, "DASHBOARD_POLL_INTERVAL", "5s", poll_ms, 100, 3600000,
      "Redis is read after this long even when no note came (a missed note, the clock "
      "moving the hour)"),
    E(CM_CFG_MS, "DASHBOARD_RETRY_INTERVAL", "1s", retry_ms, 50, 60000,
      "delay between two connection attempts while Redis is down"),
    E(CM_CFG_INT, "DASHBOARD_HISTORY_MINUTES", "60", history_min, 1, 360,
      "1-minute windows in the snapshot (the line charts)"),
    E(CM_CFG_INT, "DASHBOARD_TOP_N", "10", top_n, 1, 100,
      "entries of the top-URL list and of each breakdown"),
    {CM_CFG_ENUM, "DASHBOARD_ANCHOR", "clock", offsetof(db_config_t, anchor), 0, 0,
     "end of the window range shown: the wall clock, or the newest window in Redis "
     "(replays of old data)",
     "clock|data", false},
    {CM_CFG_STR, "DASHBOARD_READ_TOKEN", NULL, offsetof(db_config_t, read_token), 0, 256,
     "when set, the page, /api and /ws need it (?token=, Authorization: Bearer, or the "
     "cookie the page sets)",
     NULL, true},
    E(CM_CFG_STR, "DASHBOARD_ALLOWED_ORIGINS", NULL, allowed_origins, 0, 65536,
      "Origins a WebSocket may come from (comma list, * any); unset: the page's own "
      "origin (Host)"),
    E(CM_CFG_MS, "DASHBOARD_CLIENT_INTERVAL", "100ms", client_interval_ms, 0, 60000,
      "least time between two updates sent to one client: changes in between are "
      "coalesced into one"),
    E(CM_CFG_INT, "DASHBOARD_CLIENT_QUEUE", "16", client_queue, 2, 4096,
      "messages queued for one client; on overflow they are dropped and a fresh snapshot "
      "is queued instead"),
    E(CM_CFG_SIZE, "DASHBOARD_CLIENT_QUEUE_BYTES", "4MiB", client_queue_bytes, 4096,
      1024.0 * 1024 * 1024, "bytes queued for one client (same overflow rule)"),
    E(CM_CFG_MS, "DASHBOARD_CLIENT_STALL_TIMEOUT", "60s", client_stall_ms, 1000, 86400000,
      "a client that has taken no message for this long while some wait is disconnected"),
    E(CM_CFG_INT, "DASHBOARD_MAX_CLIENTS", "10000", max_clients, 1, 1000000,
      "concurrent WebSocket clients; more are refused with 503"),
    E(CM_CFG_STR, "DASHBOARD_WEB_DIR", NULL, web_dir, 0, 4096,
      "serve the page from this directory instead of the copy built into the binary "
      "(development)"),
    {0},
};
