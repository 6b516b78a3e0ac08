/*
 * gateway_config.c: the gateway's configuration table. Lists (keys, CIDRs,
 * origins) are kept as text here and parsed by the module that uses them, so
 * that each keeps its own error wording.
 */
#include <math.h>
#include <stddef.h>

#include "gateway_config.h"

#define E(type, env, def, field, lo, hi, desc)                                        \
    {type, env, def, offsetof(gw_config_t, field), lo, hi, desc, NULL, false}

const cm_config_entry_t gw_config_table[] = {
    CM_CONFIG_LOG_LEVEL_ENTRY(gw_config_t, log_level, "GATEWAY_"),
    E(CM_CFG_STR, "GATEWAY_ADDR", "0.0.0.0", addr, 1, 255,
      "bind address of the HTTP listener (events API and /metrics /healthz /readyz)"),
    E(CM_CFG_INT, "GATEWAY_PORT", "8080", port, 0, 65535,
      "HTTP port of the events API and the admin endpoints (0: any free port, logged)"),
    E(CM_CFG_INT, "GATEWAY_HTTP_THREADS", "0", http_threads, 0, 256,
      "HTTP worker threads (0: one per CPU)"),
    E(CM_CFG_INT, "GATEWAY_MAX_CONNECTIONS", "4096", max_connections, 1, 1000000,
      "concurrent HTTP connections accepted"),
    E(CM_CFG_MS, "GATEWAY_READ_TIMEOUT", "10s", read_timeout_ms, 1000, 3600000,
      "a connection idle (or sending its body slower) for this long is closed"),
    /* libmicrohttpd clears this pool on every request: at 128 KiB that
     * memset was 27% of the CPU of single-event requests, at 32 KiB 11%. */
    E(CM_CFG_SIZE, "GATEWAY_CONN_MEMORY", "16KiB", conn_memory, 8 * 1024, 1024 * 1024,
      "memory of one connection: request line + headers + read buffer (a header "
      "block that does not fit gets 431)"),
    E(CM_CFG_STR, "KAFKA_BOOTSTRAP", "127.0.0.1:9092", bootstrap, 1, 4096,
      "Kafka bootstrap servers (host:port,...)"),
    E(CM_CFG_STR, "GATEWAY_TOPIC", "clickstream.raw", topic, 1, 249,
      "topic the enriched events are produced to (keyed by user_id)"),
    E(CM_CFG_STR, "SCHEMA_REGISTRY_URL", NULL, registry_url, 0, 2048,
      "Confluent Schema Registry URL; unset: built-in schema ids"),
    E(CM_CFG_MS, "GATEWAY_DELIVERY_TIMEOUT", "30s", delivery_timeout_ms, 1000, 600000,
      "an event Kafka has not acknowledged after this long fails its request (503)"),
    E(CM_CFG_INT, "GATEWAY_QUEUE_MAX_MESSAGES", "200000", queue_max_messages, 1000, 10000000,
      "producer queue capacity; a request that does not fit gets 503"),
    E(CM_CFG_INT, "GATEWAY_RETRY_AFTER", "1", retry_after_s, 1, 3600,
      "Retry-After seconds of a 503"),
    E(CM_CFG_MS, "GATEWAY_SHUTDOWN_TIMEOUT", "8s", shutdown_timeout_ms, 0, 60000,
      "on SIGTERM, how long in-flight requests may wait for Kafka"),
    E(CM_CFG_BOOL, "GATEWAY_AUTH", "on", auth, 0, 0,
      "require a write key (Authorization: Bearer KEY, X-Write-Key or ?write_key=)"),
    {CM_CFG_STR, "GATEWAY_WRITE_KEYS", NULL, offsetof(gw_config_t, write_keys), 0, 65536,
     "write keys as source:key,source:key,... (a key per source)", NULL, true},
    E(CM_CFG_STR, "GATEWAY_WRITE_KEYS_FILE", NULL, write_keys_file, 0, 4096,
      "file of write keys, one 'source key' or 'source:key' per line, # comments"),
    E(CM_CFG_DOUBLE, "GATEWAY_RATE_LIMIT", "0", rate_limit, 0, INFINITY,
      "events per second per write key (token bucket); 0: no limit"),
    E(CM_CFG_DOUBLE, "GATEWAY_RATE_BURST", "0", rate_burst, 0, INFINITY,
      "token bucket size in events; 0: max(GATEWAY_RATE_LIMIT, GATEWAY_MAX_REQUEST_EVENTS)"),
    E(CM_CFG_STR, "GATEWAY_CORS_ORIGINS", NULL, cors_origins, 0, 65536,
      "browser origins allowed (comma list; https://*.example.com wildcards; * any); "
      "unset: no CORS"),
    E(CM_CFG_BOOL, "GATEWAY_ANONYMIZE", "on", anonymize, 0, 0,
      "zero the last IPv4 octet / last 80 IPv6 bits of every IP address produced"),
    E(CM_CFG_STR, "GATEWAY_TRUSTED_PROXIES", NULL, trusted_proxies, 0, 65536,
      "CIDRs of proxies whose X-Forwarded-For is believed (comma list); unset: XFF ignored"),
    E(CM_CFG_SIZE, "GATEWAY_MAX_EVENT_BYTES", "32KiB", max_event_bytes, 64, 16 * 1024 * 1024,
      "largest event (its JSON text)"),
    E(CM_CFG_SIZE, "GATEWAY_MAX_REQUEST_BYTES", "1MiB", max_request_bytes, 1024,
      256 * 1024 * 1024, "largest request body, also after gunzip (else 413)"),
    E(CM_CFG_INT, "GATEWAY_MAX_REQUEST_EVENTS", "1000", max_request_events, 1, 100000,
      "most events in one request (else 413)"),
    E(CM_CFG_INT, "GATEWAY_MAX_DEPTH", "16", max_depth, 1, 1000, "deepest JSON nesting of an event"),
    E(CM_CFG_MS, "GATEWAY_MAX_FUTURE", "5m", max_future_ms, 0, 86400000,
      "how far ahead of the gateway clock an event time may be"),
    E(CM_CFG_INT, "GATEWAY_MAX_ERRORS", "100", max_errors, 0, 100000,
      "rejected events listed in one response body"),
    {0},
};
