/*
 * dashboard_server.h: the one listener of the dashboard (libwebsockets, one
 * service thread):
 *
 *   GET /, /index.html, /app.js, /style.css   the page (dashboard_web.h)
 *   GET /api/snapshot                         the current snapshot (JSON)
 *   WS  /ws                                   snapshot, then updates
 *   GET /metrics, /healthz, /readyz           admin (SPEC §8), no token
 *
 * Models come from the reader thread through db_server_publish(), which
 * keeps only the newest and wakes the service thread (lws_cancel_service);
 * that thread hands them to the hub (dashboard_clients.h), which decides
 * what each client gets.
 */
#ifndef DB_SERVER_H
#define DB_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "cm_err.h"
#include "cm_metrics.h"
#include "dashboard_config.h"
#include "dashboard_snapshot.h"

typedef struct db_server db_server_t;

/* /readyz: true when ready, else a reason in reason[size]. Called on the
 * service thread: thread-safe and quick. */
typedef bool db_ready_fn(void *ud, char *reason, size_t size);

/*
 * Listens on cfg's address and port (cfg and reg borrowed: they outlive the
 * server) and starts the service thread. NULL + errstr when the port is
 * taken, the origin list is bad or lws fails.
 */
db_server_t *db_server_start(const db_config_t *cfg, cm_metrics_t *reg, char *errstr,
                             size_t errstr_size);

/* The port listened on (the real one when DASHBOARD_PORT=0). */
int db_server_port(const db_server_t *s);

/* Sets the readiness callback (before traffic, or any time: it is read
 * atomically enough for a pointer pair set once at start). */
void db_server_set_ready_fn(db_server_t *s, db_ready_fn *fn, void *ud);

/* Hands a new model over (takes the caller's reference). Thread-safe. */
void db_server_publish(db_server_t *s, db_model_t *m);

/* Stops the thread, closes every connection, frees everything. NULL: no-op. */
void db_server_stop(db_server_t *s);

#endif
