/*
 * dashboard_redis.h: the reader thread. It keeps two Redis connections, one
 * subscribed to the aggregator's note channel and one for reads, and turns
 * what it reads into models (dashboard_snapshot.h) handed to `publish`.
 *
 * When it reads:
 *  - after a note, at most every DASHBOARD_REFRESH_INTERVAL (notes in
 *    between are coalesced into one read of the windows they name);
 *  - every DASHBOARD_POLL_INTERVAL anyway, everything (a missed note, the
 *    clock moving the range);
 *  - right after (re)connecting, everything.
 * A model equal to the previous one is not published.
 *
 * When Redis is down (connect, subscribe or read fails), it publishes the
 * last data it had marked stale (status.redis = "down", with the error and
 * since when), then tries again every DASHBOARD_RETRY_INTERVAL; the first
 * good read publishes fresh data again.
 */
#ifndef DB_REDIS_H
#define DB_REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include "cm_metrics.h"
#include "dashboard_config.h"
#include "dashboard_snapshot.h"

typedef struct db_reader db_reader_t;

/* Receives one reference to a new model; called on the reader thread. */
typedef void db_publish_fn(void *ud, db_model_t *m);

/* Starts the thread (cfg and reg borrowed, must outlive it). NULL + errstr. */
db_reader_t *db_reader_start(const db_config_t *cfg, cm_metrics_t *reg, db_publish_fn *fn,
                             void *ud, char *errstr, size_t errstr_size);

/* Ready = the last read of Redis succeeded (a db_ready_fn). Thread-safe. */
bool db_reader_ready(void *reader, char *reason, size_t size);

/* Stops and joins the thread, closes the connections. NULL: no-op. */
void db_reader_stop(db_reader_t *r);

#endif
