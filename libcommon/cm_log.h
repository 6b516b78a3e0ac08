/*
 * cm_log.h: one JSON object per line on stderr (SPEC §8):
 *   {"ts":"2024-01-15T10:30:00.123Z","level":"info","service":"sessionizer",
 *    "msg":"partition assigned","partition":3}
 *
 * Fields are given as a NULL-terminated list of key/format pairs after the
 * message: the key names the field, the format is one of
 *   "%s" (string, escaped), "%d" (int), "%ld" (long / int64_t), "%f" (double),
 *   "%b" (bool, given as int),
 * followed by the value. Thread-safe: a line is written with one write(2).
 *
 *   cm_log_info("partition assigned", "partition", "%d", p, NULL);
 */
#ifndef CM_LOG_H
#define CM_LOG_H

#include <stdbool.h>

typedef enum cm_log_level {
    CM_LOG_DEBUG = 0,
    CM_LOG_INFO,
    CM_LOG_WARN,
    CM_LOG_ERROR,
} cm_log_level_t;

/* service is copied. Safe to call once at start, before threads. */
void cm_log_init(const char *service, cm_log_level_t level);
/* "debug", "info", "warn", "error" -> level; returns -1 for anything else. */
int cm_log_level_parse(const char *s);
bool cm_log_enabled(cm_log_level_t level);
void cm_log(cm_log_level_t level, const char *msg, ...);

#define cm_log_debug(...) cm_log(CM_LOG_DEBUG, __VA_ARGS__)
#define cm_log_info(...) cm_log(CM_LOG_INFO, __VA_ARGS__)
#define cm_log_warn(...) cm_log(CM_LOG_WARN, __VA_ARGS__)
#define cm_log_error(...) cm_log(CM_LOG_ERROR, __VA_ARGS__)

#endif
