/*
 * sessionizer_config.c: the sessionizer's configuration table
 * (docs/configuration.md: shared names unprefixed, the rest SESSIONIZER_).
 */
#include <stddef.h>

#include "sessionizer_config.h"

#define E(type, env, def, field, lo, hi, desc)                                        \
    {type, env, def, offsetof(sz_config_t, field), lo, hi, desc, NULL, false}

const cm_config_entry_t sz_config_table[] = {
    CM_CONFIG_COMMON_ENTRIES(sz_config_t, common, "", "9102"),
    E(CM_CFG_STR, "KAFKA_BOOTSTRAP", "127.0.0.1:9092", bootstrap, 1, 4096,
      "Kafka bootstrap servers (host:port,...)"),
    E(CM_CFG_STR, "SCHEMA_REGISTRY_URL", NULL, registry_url, 0, 2048,
      "Confluent Schema Registry URL; unset: built-in schema ids"),
    E(CM_CFG_STR, "TOPIC_RAW", "clickstream.raw", topic_raw, 1, 249,
      "input: enriched events, keyed by user_id"),
    E(CM_CFG_STR, "TOPIC_SESSIONS", "clickstream.sessions", topic_sessions, 1, 249,
      "output: session records (SPEC 4), keyed by user_id"),
    E(CM_CFG_STR, "TOPIC_LATE", "clickstream.late", topic_late, 1, 249,
      "output: late, undecodable and invalid input records, with a reason header"),
    E(CM_CFG_STR, "SESSIONIZER_CHANGELOG_TOPIC", "clickstream.sessionizer.changelog",
      topic_changelog, 1, 249,
      "compacted state changelog; created at start with TOPIC_RAW's partition count"),
    E(CM_CFG_INT, "SESSIONIZER_CHANGELOG_REPLICATION", "1", changelog_replication, 1, 32,
      "replication factor of the changelog topic when the sessionizer creates it"),
    E(CM_CFG_STR, "SESSIONIZER_GROUP_ID", "clickstream-sessionizer", group_id, 1, 255,
      "consumer group: instances with the same id split the partitions"),
    E(CM_CFG_STR, "SESSIONIZER_TRANSACTIONAL_ID", NULL, transactional_id, 1, 255,
      "transactional.id, unique per instance and stable across its restarts; "
      "unset: clickstream-sessionizer-<hostname>"),
    E(CM_CFG_MS, "SESSIONIZER_GAP", "30m", gap_ms, 1000, 86400000,
      "inactivity gap that ends a session (event time)"),
    E(CM_CFG_MS, "SESSIONIZER_BOUND", "10s", bound_ms, 0, 3600000,
      "out-of-orderness bound: watermark = highest event time - bound"),
    E(CM_CFG_MS, "SESSIONIZER_IDLE_TIMEOUT", "30s", idle_timeout_ms, 0, 86400000,
      "a partition without records for this long (processing time) stops holding "
      "the watermark back; 0: never"),
    E(CM_CFG_MS, "SESSIONIZER_LATENESS", "5m", lateness_ms, 0, 86400000,
      "allowed lateness: a closed session is still updated (revision + 1) this long"),
    E(CM_CFG_MS, "SESSIONIZER_COMMIT_INTERVAL", "100ms", commit_interval_ms, 10, 60000,
      "a transaction is committed at least this often"),
    E(CM_CFG_INT, "SESSIONIZER_COMMIT_MAX_EVENTS", "20000", commit_max_events, 1, 10000000,
      "input records per transaction at most"),
    E(CM_CFG_MS, "SESSIONIZER_TRANSACTION_TIMEOUT", "30s", transaction_timeout_ms, 1000,
      900000, "transaction.timeout.ms of the producer"),
    E(CM_CFG_MS, "SESSIONIZER_RESTORE_TIMEOUT", "5m", restore_timeout_ms, 1000, 86400000,
      "longest time to read one changelog partition on assignment"),
    E(CM_CFG_INT, "SESSIONIZER_DEDUPE_MAX", "4194304", dedupe_max, 16, 1000000000,
      "event ids remembered per partition at most (oldest evicted beyond, counted)"),
    {0},
};
