/*
 * dashboard_auth.h: the optional read token and the WebSocket Origin check.
 *
 * Token (DASHBOARD_READ_TOKEN): when set, every request but /metrics,
 * /healthz and /readyz must carry it as `?token=`, `Authorization: Bearer`,
 * or the cookie `dashboard_token` that the page sets when it is opened with
 * `?token=` (a browser cannot put a header on a WebSocket; the cookie goes
 * along with the handshake). Compared in constant time.
 *
 * Origin (DASHBOARD_ALLOWED_ORIGINS): a WebSocket handshake that carries an
 * Origin header must name one of the listed origins (scheme://host[:port],
 * case-insensitive; `*` allows any); with no list, the page's own origin,
 * http(s)://<Host>. A handshake without Origin is not from a browser (a
 * browser always sends it), so no page of another site can be riding on the
 * user's cookie: it is let through. Origin "null" (sandboxed frames, files)
 * is refused unless `*`.
 */
#ifndef DB_AUTH_H
#define DB_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#define DB_TOKEN_COOKIE "dashboard_token"

typedef struct db_auth db_auth_t;

/* token: NULL or "" for none (copied). origins: comma list or NULL. NULL +
 * errstr on a malformed origin. */
db_auth_t *db_auth_new(const char *token, const char *origins, char *errstr,
                       size_t errstr_size);
void db_auth_destroy(db_auth_t *a); /* NULL: no-op */

bool db_auth_has_token(const db_auth_t *a);
const char *db_auth_token(const db_auth_t *a);

/* True when no token is configured or one of the three carries it (each may
 * be NULL: the ?token= value, the Authorization header, the Cookie header). */
bool db_auth_token_ok(const db_auth_t *a, const char *query_token, const char *authorization,
                      const char *cookie);

/* True when a WebSocket from `origin` (NULL: no header) may connect to a
 * server reached as `host` (the Host header, may be NULL). */
bool db_auth_origin_ok(const db_auth_t *a, const char *origin, const char *host);

/* The value of cookie `name` in a Cookie header, copied into out[size];
 * false when absent or longer. */
bool db_cookie_get(const char *header, const char *name, char *out, size_t size);

#endif
