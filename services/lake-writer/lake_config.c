/*
 * lake_config.c: the configuration table of the lake-writer.
 */
#include "lake_config.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "lake_schema.h"

#define E(type, env, def, field, lo, hi, desc)                                        \
    {type, env, def, offsetof(lw_config_t, field), lo, hi, desc, NULL, false}

const cm_config_entry_t lw_config_table[] = {
    CM_CONFIG_COMMON_ENTRIES(lw_config_t, common, "LAKE_", "9104"),
    E(CM_CFG_STR, "KAFKA_BOOTSTRAP", "127.0.0.1:9092", bootstrap, 1, 4096,
      "Kafka bootstrap servers (host:port,...)"),
    E(CM_CFG_STR, "TOPIC_RAW", "clickstream.raw", topic_raw, 1, 249,
      "enriched events -> events_raw"),
    E(CM_CFG_STR, "TOPIC_SESSIONS", "clickstream.sessions", topic_sessions, 1, 249,
      "session records -> sessions"),
    E(CM_CFG_STR, "TOPIC_METRICS", "clickstream.metrics", topic_metrics, 1, 249,
      "window results -> metrics_1min / metrics_5min / metrics_hourly by window size"),
    E(CM_CFG_STR, "TOPIC_LATE", "clickstream.late", topic_late, 1, 249,
      "late / undecodable / invalid events -> late_events"),
    E(CM_CFG_STR, "SCHEMA_REGISTRY_URL", NULL, registry_url, 0, 2048,
      "Confluent Schema Registry URL; unset: built-in schema ids"),
    E(CM_CFG_STR, "LAKE_GROUP_ID", "lake-writer", group_id, 1, 255,
      "consumer group (partition assignment and lag only: the start offsets come from "
      "the tables' snapshots)"),
    E(CM_CFG_STR, "LAKE_INSTANCE_ID", "lake-writer", instance, 1, 128,
      "stable id of this writer, unique among running writers (names its journal)"),
    E(CM_CFG_STR, "LAKE_WAREHOUSE", "./warehouse", warehouse, 1, 4096,
      "warehouse root: a local directory, or s3://bucket/prefix"),
    E(CM_CFG_STR, "LAKE_TABLES",
      "events_raw,sessions,metrics_1min,metrics_5min,metrics_hourly,late_events", tables, 1,
      1024, "tables to write (comma list)"),
    E(CM_CFG_SIZE, "LAKE_ROLL_SIZE", "128MiB", roll_bytes, 4096, 64.0 * 1024 * 1024 * 1024,
      "a data file is closed when it reaches this size"),
    E(CM_CFG_MS, "LAKE_ROLL_AGE", "60s", roll_age_ms, 100, 86400000,
      "a table commits its open files this long after their first row"),
    E(CM_CFG_INT, "LAKE_MAX_OPEN_FILES", "64", max_open_files, 1, 4096,
      "open data files (partitions) per table before the oldest is closed"),
    {CM_CFG_ENUM, "LAKE_AVRO_CODEC", "null", offsetof(lw_config_t, codec), 0, 0,
     "compression of data file blocks", "null|deflate", false},
    {CM_CFG_ENUM, "LAKE_MANIFEST_CODEC", "deflate", offsetof(lw_config_t, manifest_codec), 0,
     0, "compression of manifests and manifest lists", "null|deflate", false},
    E(CM_CFG_BOOL, "LAKE_FSYNC", "true", fsync, 0, 0,
      "fsync data and metadata files before they are published (local warehouse)"),
    E(CM_CFG_STR, "LAKE_STAGING_DIR", "/tmp/lake-staging", staging, 1, 4096,
      "s3: local directory for data files being written"),
    E(CM_CFG_STR, "LAKE_S3_ENDPOINT", NULL, s3_endpoint, 0, 2048,
      "s3: endpoint URL (http://127.0.0.1:9000); unset: AWS for LAKE_S3_REGION"),
    E(CM_CFG_STR, "LAKE_S3_REGION", "us-east-1", s3_region, 1, 64, "s3: region of the SigV4 scope"),
    {CM_CFG_STR, "LAKE_S3_ACCESS_KEY", NULL, offsetof(lw_config_t, s3_access_key), 0, 1024,
     "s3: access key id", NULL, true},
    {CM_CFG_STR, "LAKE_S3_SECRET_KEY", NULL, offsetof(lw_config_t, s3_secret_key), 0, 1024,
     "s3: secret access key", NULL, true},
    E(CM_CFG_BOOL, "LAKE_S3_PATH_STYLE", "true", s3_path_style, 0, 0,
      "s3: path-style URLs (endpoint/bucket/key) instead of bucket.endpoint/key"),
    E(CM_CFG_MS, "LAKE_S3_TIMEOUT", "60s", s3_timeout_ms, 1000, 3600000,
      "s3: time limit of one request"),
    E(CM_CFG_MS, "LAKE_SHUTDOWN_TIMEOUT", "8s", shutdown_timeout_ms, 0, 60000,
      "on SIGTERM, time for the final commits"),
    {0},
};

int lw_config_table_list(const char *list, const lw_table_def_t **out, size_t max)
{
    size_t n = 0;
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        size_t l = (size_t)(e - p);
        while (l && p[l - 1] == ' ')
            l--;
        if (l) {
            const lw_table_def_t *d = NULL;
            for (size_t i = 0; i < lw_n_tables; i++)
                if (strlen(lw_tables[i].name) == l && memcmp(lw_tables[i].name, p, l) == 0)
                    d = &lw_tables[i];
            if (!d || n == max)
                return -1;
            for (size_t i = 0; i < n; i++)
                if (out[i] == d)
                    return -1;
            out[n++] = d;
        }
        p = e;
    }
    return (int)n;
}

int lw_config_check(const lw_config_t *cfg, char *errstr, size_t errstr_size)
{
    const lw_table_def_t *defs[16];
    int n = lw_config_table_list(cfg->tables, defs, 16);
    if (n <= 0) {
        snprintf(errstr, errstr_size,
                 "LAKE_TABLES=%s: must be a comma list of distinct tables among "
                 "events_raw, sessions, metrics_1min, metrics_5min, metrics_hourly, "
                 "late_events",
                 cfg->tables);
        return -1;
    }
    if (strncmp(cfg->warehouse, "s3://", 5) == 0 &&
        (!cfg->s3_access_key || !cfg->s3_secret_key)) {
        snprintf(errstr, errstr_size,
                 "LAKE_WAREHOUSE=%s: LAKE_S3_ACCESS_KEY and LAKE_S3_SECRET_KEY are required",
                 cfg->warehouse);
        return -1;
    }
    return 0;
}
