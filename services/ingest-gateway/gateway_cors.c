/*
 * gateway_cors.c: origin allow-list (see gateway_cors.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway_cors.h"

typedef struct gw_origin {
    char *scheme_host; /* "https://shop.example.com" or, wildcard, "https://" */
    char *suffix;      /* wildcard only: ".example.com" (with port if any) */
} gw_origin_t;

struct gw_cors {
    bool any;
    gw_origin_t *v;
    size_t n;
};

void gw_cors_destroy(gw_cors_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].scheme_host);
        free(c->v[i].suffix);
    }
    free(c->v);
    free(c);
}

gw_cors_t *gw_cors_new(const char *origins, char *errstr, size_t errstr_size)
{
    gw_cors_t *c = calloc(1, sizeof(*c));
    if (!c)
        goto nomem;
    const char *p = origins;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        while (n && (*p == ' ' || *p == '\t')) {
            p++;
            n--;
        }
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '/'))
            n--;
        if (n == 1 && *p == '*') {
            c->any = true;
        } else if (n) {
            const char *sep = memmem(p, n, "://", 3);
            if (!sep || sep == p || (size_t)(sep - p) + 3 >= n) {
                snprintf(errstr, errstr_size,
                         "GATEWAY_CORS_ORIGINS: '%.*s' is not an origin (scheme://host[:port])",
                         (int)n, p);
                gw_cors_destroy(c);
                return NULL;
            }
            gw_origin_t *nv = realloc(c->v, (c->n + 1) * sizeof(*nv));
            if (!nv)
                goto nomem;
            c->v = nv;
            gw_origin_t *o = &c->v[c->n];
            memset(o, 0, sizeof(*o));
            size_t pre = (size_t)(sep - p) + 3;
            if (n > pre + 1 && p[pre] == '*' && p[pre + 1] == '.') {
                o->scheme_host = strndup(p, pre);
                o->suffix = strndup(p + pre + 1, n - pre - 1);
                if (!o->scheme_host || !o->suffix) {
                    c->n++;
                    goto nomem;
                }
            } else {
                o->scheme_host = strndup(p, n);
                if (!o->scheme_host)
                    goto nomem;
            }
            c->n++;
        }
        p = comma ? comma + 1 : NULL;
    }
    return c;
nomem:
    snprintf(errstr, errstr_size, "out of memory");
    gw_cors_destroy(c);
    return NULL;
}

bool gw_cors_enabled(const gw_cors_t *c) { return c && (c->any || c->n); }

bool gw_cors_allowed(const gw_cors_t *c, const char *origin)
{
    if (!c || !origin || !*origin)
        return false;
    if (c->any)
        return true;
    size_t on = strlen(origin);
    for (size_t i = 0; i < c->n; i++) {
        const gw_origin_t *o = &c->v[i];
        if (!o->suffix) {
            if (strcasecmp(o->scheme_host, origin) == 0)
                return true;
            continue;
        }
        size_t pn = strlen(o->scheme_host), sn = strlen(o->suffix);
        /* scheme:// + at least one label char + suffix; no '/' inside */
        if (on > pn + sn && strncasecmp(origin, o->scheme_host, pn) == 0 &&
            strcasecmp(origin + on - sn, o->suffix) == 0 &&
            !memchr(origin + pn, '/', on - pn - sn))
            return true;
    }
    return false;
}
