/*
 * aggregator_config.c: the aggregator's configuration table.
 */
#include "aggregator_config.h"

#include <stddef.h>

#define E(type, env, def, field, lo, hi, desc)                                        \
    {type, env, def, offsetof(ag_config_t, field), lo, hi, desc, NULL, false}

const cm_config_entry_t ag_config_table[] = {
    CM_CONFIG_COMMON_ENTRIES(ag_config_t, common, "AGGREGATOR_", "9103"),
    E(CM_CFG_STR, "KAFKA_BOOTSTRAP", "127.0.0.1:9092", bootstrap, 1, 4096,
      "Kafka bootstrap servers (host:port,...)"),
    E(CM_CFG_STR, "SCHEMA_REGISTRY_URL", NULL, registry_url, 0, 2048,
      "Confluent Schema Registry URL; unset: built-in schema ids"),
    E(CM_CFG_STR, "TOPIC_RAW", "clickstream.raw", topic_raw, 1, 249,
      "input: enriched events (keyed by user_id)"),
    E(CM_CFG_STR, "TOPIC_SESSIONS", "clickstream.sessions", topic_sessions, 0, 249,
      "input: sessions of the sessionizer (\"\" or \"-\": none)"),
    E(CM_CFG_STR, "TOPIC_METRICS", "clickstream.metrics", topic_metrics, 1, 249,
      "output: final and revised window results"),
    E(CM_CFG_STR, "TOPIC_LATE", "clickstream.late", topic_late, 1, 249,
      "output: events too late for their window, or undecodable (header reason)"),
    E(CM_CFG_STR, "AGGREGATOR_CHANGELOG_TOPIC", "clickstream.aggregator.changelog",
      topic_changelog, 1, 249, "internal, compacted: restore checkpoints"),
    E(CM_CFG_STR, "AGGREGATOR_PANES_TOPIC", "clickstream.aggregator.panes", topic_panes, 1,
      249, "internal: per-partition panes and watermarks for the merger"),
    E(CM_CFG_INT, "AGGREGATOR_PANES_PARTITIONS", "1", panes_partitions, 1, 1024,
      "partitions of the panes topic when this service creates it (merger parallelism)"),
    E(CM_CFG_BOOL, "AGGREGATOR_CREATE_TOPICS", "on", create_topics, 0, 0,
      "create the two internal topics at start when they are missing"),
    E(CM_CFG_STR, "AGGREGATOR_GROUP_ID", "clickstream-aggregator", group_id, 1, 255,
      "consumer group of the inputs (the merger uses <group>.merge)"),
    E(CM_CFG_STR, "AGGREGATOR_INSTANCE_ID", NULL, instance_id, 0, 200,
      "transactional id base, unique per replica and stable across its restarts "
      "(unset: the host name)"),
    E(CM_CFG_STR, "REDIS_HOST", "127.0.0.1", redis_host, 1, 255, "Redis host"),
    E(CM_CFG_INT, "REDIS_PORT", "6379", redis_port, 1, 65535, "Redis port"),
    E(CM_CFG_STR, "AGGREGATOR_REDIS_PREFIX", "cs:agg", redis_prefix, 1, 128,
      "prefix of every Redis key and of the pub/sub channel <prefix>:updates"),
    E(CM_CFG_MS, "AGGREGATOR_REDIS_TIMEOUT", "500ms", redis_timeout_ms, 10, 60000,
      "Redis connect and command timeout"),
    E(CM_CFG_MS, "AGGREGATOR_REDIS_RETRY", "1s", redis_retry_ms, 10, 600000,
      "least time between two Redis connection attempts"),
    E(CM_CFG_MS, "AGGREGATOR_FLUSH_INTERVAL", "250ms", flush_interval_ms, 10, 500,
      "Redis flush period of the open windows (at most 500 ms)"),
    E(CM_CFG_MS, "AGGREGATOR_COARSE_FLUSH_INTERVAL", "2s", coarse_flush_ms, 0, 60000,
      "Redis write period of the dimension counts of OPEN 5-min and 1-h windows "
      "(their totals, unique users and the 1-min windows follow AGGREGATOR_FLUSH_INTERVAL)"),
    E(CM_CFG_MS, "AGGREGATOR_HEARTBEAT_INTERVAL", "500ms", heartbeat_interval_ms, 10, 60000,
      "period of the watermark heartbeats sent to the merger"),
    E(CM_CFG_MS, "AGGREGATOR_COMMIT_INTERVAL", "200ms", commit_interval_ms, 10, 60000,
      "Kafka transaction length"),
    E(CM_CFG_MS, "AGGREGATOR_OUT_OF_ORDERNESS", "10s", bound_ms, 0, 86400000,
      "out-of-orderness bound of the watermark (SPEC 3)"),
    E(CM_CFG_MS, "AGGREGATOR_ALLOWED_LATENESS", "5m", lateness_ms, 0, 86400000,
      "allowed lateness after a window's end (SPEC 3)"),
    E(CM_CFG_MS, "AGGREGATOR_IDLE_TIMEOUT", "30s", idle_ms, 0, 86400000,
      "a partition without records this long stops holding the watermark back (0: never)"),
    E(CM_CFG_BOOL, "AGGREGATOR_KEEP_CLOSED", "on", keep_closed, 0, 0,
      "keep closed windows in memory for their Redis TTL, to rewrite them when Redis "
      "comes back empty"),
    E(CM_CFG_INT, "AGGREGATOR_DEDUPE_MAX", "4194304", dedupe_max, 16, 1e9,
      "cap of the event_id dedupe set of one partition"),
    E(CM_CFG_MS, "AGGREGATOR_RESTORE_TIMEOUT", "300s", restore_timeout_ms, 1000, 3600000,
      "budget for restoring one partition (checkpoint + replay)"),
    E(CM_CFG_BOOL, "AGGREGATOR_MERGER", "on", merger, 0, 0,
      "run the merger loop in this replica (off: only per-partition work)"),
    E(CM_CFG_MS, "AGGREGATOR_MERGE_GRACE", "10m", merge_grace_ms, 0, 30 * 86400000.0,
      "a partition idle this long (processing time) no longer keeps the merger's "
      "windows open for its late data"),
    {0},
};
