/*
 * dashboard_auth.c: token and Origin checks (rules in the header).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dashboard_auth.h"

#define DB_MAX_ORIGINS 64
#define DB_ORIGIN_MAX 256

struct db_auth {
    char *token; /* NULL: none */
    bool any_origin;
    size_t n_origins;
    char *origins[DB_MAX_ORIGINS]; /* lower-case, no trailing '/' */
};

void db_auth_destroy(db_auth_t *a)
{
    if (!a)
        return;
    if (a->token) {
        /* a secret: do not leave it in freed memory */
        volatile char *p = a->token;
        while (*p)
            *p++ = 0;
        free(a->token);
    }
    for (size_t i = 0; i < a->n_origins; i++)
        free(a->origins[i]);
    free(a);
}

/* Copies s[0..n) trimmed, lower-cased, without a trailing '/', into out. */
static bool norm_origin(const char *s, size_t n, char *out, size_t size)
{
    while (n && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    if (n && s[n - 1] == '/')
        n--;
    if (n == 0 || n >= size)
        return false;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[n] = '\0';
    return true;
}

static bool origin_well_formed(const char *o)
{
    const char *rest;
    if (strncmp(o, "http://", 7) == 0)
        rest = o + 7;
    else if (strncmp(o, "https://", 8) == 0)
        rest = o + 8;
    else
        return false;
    if (!*rest)
        return false;
    for (; *rest; rest++)
        if (*rest == '/' || *rest == '?' || *rest == '#' || isspace((unsigned char)*rest))
            return false;
    return true;
}

db_auth_t *db_auth_new(const char *token, const char *origins, char *errstr,
                       size_t errstr_size)
{
    db_auth_t *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    if (token && *token) {
        a->token = strdup(token);
        if (!a->token) {
            snprintf(errstr, errstr_size, "out of memory");
            goto fail;
        }
    }
    const char *p = origins;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char o[DB_ORIGIN_MAX];
        if (norm_origin(p, n, o, sizeof(o))) {
            if (strcmp(o, "*") == 0) {
                a->any_origin = true;
            } else if (!origin_well_formed(o)) {
                snprintf(errstr, errstr_size,
                         "DASHBOARD_ALLOWED_ORIGINS: '%s' is not scheme://host[:port] or *", o);
                goto fail;
            } else if (a->n_origins == DB_MAX_ORIGINS) {
                snprintf(errstr, errstr_size, "DASHBOARD_ALLOWED_ORIGINS: more than %d origins",
                         DB_MAX_ORIGINS);
                goto fail;
            } else if (!(a->origins[a->n_origins++] = strdup(o))) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
            }
        }
        p = comma ? comma + 1 : NULL;
    }
    return a;
fail:
    db_auth_destroy(a);
    return NULL;
}

bool db_auth_has_token(const db_auth_t *a) { return a->token != NULL; }
const char *db_auth_token(const db_auth_t *a) { return a->token; }

/* Constant time in the length of the secret. */
static bool token_eq(const char *secret, const char *given)
{
    if (!given)
        return false;
    size_t n = strlen(secret), m = strlen(given);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(secret[i] ^ (i < m ? given[i] : 0));
    return diff == 0;
}

bool db_cookie_get(const char *header, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    const char *p = header;
    while (p && *p) {
        while (*p == ' ' || *p == ';' || *p == '\t')
            p++;
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            size_t vl = len - nl - 1;
            while (vl && (p[nl + 1 + vl - 1] == ' ' || p[nl + 1 + vl - 1] == '\t'))
                vl--;
            if (vl >= size)
                return false;
            memcpy(out, p + nl + 1, vl);
            out[vl] = '\0';
            return true;
        }
        p = end;
    }
    return false;
}

bool db_auth_token_ok(const db_auth_t *a, const char *query_token, const char *authorization,
                      const char *cookie)
{
    if (!a->token)
        return true;
    bool ok = false;
    if (query_token && token_eq(a->token, query_token))
        ok = true;
    if (authorization && strncasecmp(authorization, "Bearer ", 7) == 0) {
        const char *t = authorization + 7;
        while (*t == ' ')
            t++;
        if (token_eq(a->token, t))
            ok = true;
    }
    char c[512];
    if (cookie && db_cookie_get(cookie, DB_TOKEN_COOKIE, c, sizeof(c))) {
        if (token_eq(a->token, c))
            ok = true;
        memset(c, 0, sizeof(c));
    }
    return ok;
}

bool db_auth_origin_ok(const db_auth_t *a, const char *origin, const char *host)
{
    if (!origin)
        return true;
    if (a->any_origin)
        return true;
    char o[DB_ORIGIN_MAX];
    if (!norm_origin(origin, strlen(origin), o, sizeof(o)))
        return false;
    if (a->n_origins) {
        for (size_t i = 0; i < a->n_origins; i++)
            if (strcmp(a->origins[i], o) == 0)
                return true;
        return false;
    }
    if (!host || !*host)
        return false;
    char h[DB_ORIGIN_MAX];
    if (!norm_origin(host, strlen(host), h, sizeof(h)))
        return false;
    const char *rest = NULL;
    if (strncmp(o, "http://", 7) == 0)
        rest = o + 7;
    else if (strncmp(o, "https://", 8) == 0)
        rest = o + 8;
    return rest && strcmp(rest, h) == 0;
}
