/*
 * cm_admin.h: the admin HTTP server every service runs (SPEC §8), on
 * libmicrohttpd's own thread:
 *
 *   GET /metrics  the registry in the Prometheus text format 0.0.4
 *   GET /healthz  200 {"status":"ok"}: the process is alive
 *   GET /readyz   200 {"status":"ready"} or 503 {"status":"not ready",
 *                 "reason":"kafka unreachable"}
 *   otherwise     404 {"error":"not found","path":"/x"}, or what a handler
 *                 registered with cm_admin_handle() answers
 *
 * A service starts it not ready (reason "starting") and calls
 * cm_admin_set_ready() when it is connected and assigned, or gives a
 * callback that decides at request time.
 */
#ifndef CM_ADMIN_H
#define CM_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "cm_buf.h"
#include "cm_err.h"
#include "cm_metrics.h"

/* A request body over this gets 413 without reaching a handler. */
#define CM_ADMIN_MAX_BODY (1024 * 1024)
/* /readyz reasons are cut to this. */
#define CM_ADMIN_REASON_MAX 256

typedef struct cm_admin cm_admin_t;

/*
 * Listens on bind_addr:port (bind_addr an IPv4 or IPv6 literal, NULL or ""
 * meaning "0.0.0.0"; "::" takes IPv6 and IPv4 both; port 0 picks a free
 * port, see cm_admin_port()) and serves on an internal
 * thread. `reg` is borrowed: it must outlive the server (NULL serves an empty
 * /metrics). Returns NULL and fills errstr when the address is bad or the
 * port is taken.
 */
cm_admin_t *cm_admin_start(const char *bind_addr, int port, cm_metrics_t *reg, char *errstr,
                           size_t errstr_size);

/* Stops the thread, closes the socket, frees everything. NULL is a no-op.
 * No handler or readiness callback runs after it returns. */
void cm_admin_stop(cm_admin_t *adm);

/* The port actually listened on. */
int cm_admin_port(const cm_admin_t *adm);

/* Sets the /readyz answer; `reason` (copied, may be NULL) is shown when not
 * ready. Thread-safe. */
void cm_admin_set_ready(cm_admin_t *adm, bool ready, const char *reason);

/*
 * Lets `fn` decide /readyz at each request instead of the flag: it returns
 * true when ready, else writes a reason into reason[size]. It runs on the
 * server's thread, so it must be thread-safe and quick. NULL goes back to the
 * flag.
 */
typedef bool (*cm_admin_ready_fn)(void *ud, char *reason, size_t size);
void cm_admin_set_ready_fn(cm_admin_t *adm, cm_admin_ready_fn fn, void *ud);

/* ----------------------------------------------------- extra handlers */

/* One request, valid for the duration of the handler call. */
typedef struct cm_admin_req {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* without the query string */
    const char *body;   /* NUL-terminated; "" without a body */
    size_t body_len;
    void *conn; /* internal */
} cm_admin_req_t;

/* The handler fills this. `status` starts at 200, content_type at
 * "application/json"; `body` (capped at 64 MiB) is sent and freed by the
 * server. content_type must point to memory that outlives the request
 * (normally a literal). */
typedef struct cm_admin_resp {
    int status;
    const char *content_type;
    cm_buf_t body;
} cm_admin_resp_t;

typedef void (*cm_admin_handler_fn)(void *ud, const cm_admin_req_t *req,
                                    cm_admin_resp_t *resp);

/*
 * Routes requests whose path starts with `prefix` (copied) to `fn`, on the
 * server's thread; the longest matching prefix wins and /metrics, /healthz
 * and /readyz always win. `ud` is borrowed. May be called while serving.
 */
cm_err_t cm_admin_handle(cm_admin_t *adm, const char *prefix, cm_admin_handler_fn fn,
                         void *ud);

/* A query-string argument or a request header of `req`; NULL when absent. */
const char *cm_admin_req_arg(const cm_admin_req_t *req, const char *key);
const char *cm_admin_req_header(const cm_admin_req_t *req, const char *name);

#endif
