/*
 * lake_config.h: the lake-writer's settings (environment variables; --help
 * prints the table). See README.md beside this file.
 */
#ifndef LAKE_CONFIG_H
#define LAKE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "cm_config.h"
#include "lake_schema.h"

#define LW_SERVICE "lake-writer"
#define LW_SUMMARY                                                                     \
    "Writes the Kafka topics of the clickstream pipeline into Apache Iceberg v2 tables " \
    "(events_raw, sessions, metrics_1min, metrics_5min, metrics_hourly, late_events), " \
    "exactly once.\n"                                                                  \
    "Also: lake-writer expire-snapshots TABLE [--older-than DURATION] [--retain-last N]"

typedef struct lw_config {
    cm_common_config_t common; /* LAKE_LOG_LEVEL, LAKE_ADMIN_ADDR, LAKE_ADMIN_PORT */
    char *bootstrap;
    char *topic_raw, *topic_sessions, *topic_metrics, *topic_late;
    char *registry_url;
    char *group_id;
    char *instance;
    char *warehouse;
    char *tables;
    int64_t roll_bytes;
    int64_t roll_age_ms;
    int64_t max_open_files;
    char *codec;
    char *manifest_codec;
    bool fsync;
    char *staging;
    char *s3_endpoint, *s3_region, *s3_access_key, *s3_secret_key;
    bool s3_path_style;
    int64_t s3_timeout_ms;
    int64_t shutdown_timeout_ms;
} lw_config_t;

extern const cm_config_entry_t lw_config_table[];

/* Parses a LAKE_TABLES list into out[max]; returns the count, or -1 for an
 * unknown or repeated name (or more than max). */
int lw_config_table_list(const char *list, const lw_table_def_t **out, size_t max);

/* Validates what the table cannot (table names, codec); one line in errstr. */
int lw_config_check(const lw_config_t *cfg, char *errstr, size_t errstr_size);

#endif
