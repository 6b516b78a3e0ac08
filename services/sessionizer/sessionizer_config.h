/*
 * sessionizer_config.h: the sessionizer's settings (environment variables,
 * table in sessionizer_config.c, `sessionizer --help` prints it).
 */
#ifndef SESSIONIZER_CONFIG_H
#define SESSIONIZER_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "cm_config.h"

#define SZ_SERVICE "sessionizer"
#define SZ_SUMMARY                                                                         \
    "Builds per-user event-time sessions (SPEC 4) from the raw topic, exactly once:\n"     \
    "reads read_committed, writes sessions, late events and its state changelog in\n"     \
    "Kafka transactions together with the input offsets."

typedef struct sz_config {
    cm_common_config_t common; /* LOG_LEVEL, ADMIN_ADDR, ADMIN_PORT */
    char *bootstrap;
    char *registry_url;
    char *topic_raw, *topic_sessions, *topic_late;
    char *topic_changelog;
    char *group_id;
    char *transactional_id; /* NULL: "clickstream-sessionizer-<hostname>" */
    int64_t gap_ms, bound_ms, idle_timeout_ms, lateness_ms;
    int64_t commit_interval_ms, commit_max_events;
    int64_t transaction_timeout_ms;
    int64_t restore_timeout_ms;
    int64_t dedupe_max;
    int64_t changelog_replication;
} sz_config_t;

extern const cm_config_entry_t sz_config_table[];

#endif
