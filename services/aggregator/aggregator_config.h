/*
 * aggregator_config.h: the aggregator's settings (environment variables,
 * listed by `aggregator --help` and in README.md).
 */
#ifndef AGGREGATOR_CONFIG_H
#define AGGREGATOR_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "cm_config.h"

#define AG_SERVICE "aggregator"
#define AG_SUMMARY                                                                          \
    "Tumbling event-time windows (1 min, 5 min, 1 h) over clickstream.raw and\n"           \
    "clickstream.sessions: live per-partition values in Redis, final and revised\n"        \
    "window results on clickstream.metrics, exactly once."

typedef struct ag_config {
    cm_common_config_t common;
    char *bootstrap;
    char *registry_url;
    char *topic_raw, *topic_sessions, *topic_metrics, *topic_late;
    char *topic_changelog, *topic_panes;
    int64_t panes_partitions;
    bool create_topics;
    char *group_id;
    char *instance_id;
    char *redis_host;
    int64_t redis_port;
    char *redis_prefix;
    int64_t redis_timeout_ms, redis_retry_ms;
    int64_t flush_interval_ms;
    int64_t coarse_flush_ms;
    int64_t heartbeat_interval_ms;
    int64_t commit_interval_ms;
    int64_t bound_ms, lateness_ms, idle_ms;
    bool keep_closed;
    int64_t dedupe_max;
    int64_t restore_timeout_ms;
    bool merger;
    int64_t merge_grace_ms;
} ag_config_t;

extern const cm_config_entry_t ag_config_table[];

#endif
