/*
 * gateway_cors.h: the origin allow-list for browser beacons.
 *
 * Entries: "*" (any origin), an exact origin ("https://shop.example.com",
 * scheme and host compared case-insensitively, port exact), or a subdomain
 * wildcard: "*." before the host, e.g. https:// + *.example.com (any
 * subdomain, not the apex).
 */
#ifndef GW_CORS_H
#define GW_CORS_H

#include <stdbool.h>
#include <stddef.h>

#include "cm_err.h"

typedef struct gw_cors gw_cors_t;

/* origins may be NULL/"" (CORS off: no origin allowed). NULL + errstr on a
 * malformed entry. Free with gw_cors_destroy (NULL: no-op). */
gw_cors_t *gw_cors_new(const char *origins, char *errstr, size_t errstr_size);
void gw_cors_destroy(gw_cors_t *c);

bool gw_cors_enabled(const gw_cors_t *c);
bool gw_cors_allowed(const gw_cors_t *c, const char *origin);

/* Preflight answer headers. */
#define GW_CORS_ALLOW_METHODS "POST, OPTIONS"
#define GW_CORS_ALLOW_HEADERS \
    "Content-Type, Content-Encoding, Authorization, X-Write-Key"
#define GW_CORS_MAX_AGE "600"

#endif
