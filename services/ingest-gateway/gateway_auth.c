/*
 * gateway_auth.c: write keys and token buckets (see gateway_auth.h).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_time.h"
#include "gateway_auth.h"

#define GW_KEY_MAX 256
#define GW_SOURCE_MAX 128

typedef struct gw_key {
    char source[GW_SOURCE_MAX];
    char key[GW_KEY_MAX];
    size_t key_len;
    gw_bucket_t bucket;
} gw_key_t;

struct gw_auth {
    bool enabled;
    gw_key_t *keys;
    size_t n, cap;
};

void gw_bucket_init(gw_bucket_t *b, double rate, double burst, int64_t now_us)
{
    pthread_mutex_init(&b->lock, NULL);
    b->rate = rate;
    b->burst = burst;
    b->tokens = burst;
    b->last_us = now_us;
}

void gw_bucket_destroy(gw_bucket_t *b)
{
    pthread_mutex_destroy(&b->lock);
}

bool gw_bucket_take(gw_bucket_t *b, double n, int64_t now_us, int *retry_after_s)
{
    if (b->rate <= 0)
        return true;
    bool ok;
    pthread_mutex_lock(&b->lock);
    if (now_us > b->last_us) {
        b->tokens += (double)(now_us - b->last_us) * b->rate / 1e6;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
        b->last_us = now_us;
    }
    ok = b->tokens >= n;
    if (ok) {
        b->tokens -= n;
    } else if (retry_after_s) {
        /* a request larger than the bucket can never pass: say 1 s anyway */
        double need = (n > b->burst ? b->burst : n) - b->tokens;
        double s = ceil(need / b->rate);
        *retry_after_s = s < 1 ? 1 : s > 3600 ? 3600 : (int)s;
    }
    pthread_mutex_unlock(&b->lock);
    return ok;
}

static cm_err_t gw_auth_add(gw_auth_t *a, const char *src, size_t src_len, const char *key,
                            size_t key_len, char *errstr, size_t errstr_size)
{
    if (key_len == 0 || key_len >= GW_KEY_MAX || src_len >= GW_SOURCE_MAX) {
        snprintf(errstr, errstr_size, "write key %zu: key must be 1..%d bytes, source < %d",
                 a->n + 1, GW_KEY_MAX - 1, GW_SOURCE_MAX);
        return CM_ERR_INVALID;
    }
    for (size_t i = 0; i < a->n; i++)
        if (a->keys[i].key_len == key_len && memcmp(a->keys[i].key, key, key_len) == 0) {
            snprintf(errstr, errstr_size, "write key of source '%.*s' is given twice",
                     (int)src_len, src);
            return CM_ERR_INVALID;
        }
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        gw_key_t *nk = realloc(a->keys, cap * sizeof(*nk));
        if (!nk) {
            snprintf(errstr, errstr_size, "out of memory");
            return CM_ERR_NOMEM;
        }
        a->keys = nk;
        a->cap = cap;
    }
    gw_key_t *k = &a->keys[a->n];
    memset(k, 0, sizeof(*k));
    if (src_len)
        memcpy(k->source, src, src_len);
    else
        snprintf(k->source, sizeof(k->source), "key%zu", a->n + 1);
    memcpy(k->key, key, key_len);
    k->key_len = key_len;
    a->n++;
    return CM_OK;
}

static void gw_trim(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t' || **s == '\r' || **s == '\n')) {
        (*s)++;
        (*n)--;
    }
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t' || (*s)[*n - 1] == '\r' ||
                  (*s)[*n - 1] == '\n'))
        (*n)--;
}

/* One "source:key", "source key" or bare "key" entry. */
static cm_err_t gw_auth_entry(gw_auth_t *a, const char *p, size_t n, bool space_sep,
                              char *errstr, size_t errstr_size)
{
    gw_trim(&p, &n);
    if (n == 0)
        return CM_OK;
    const char *sep = memchr(p, ':', n);
    if (!sep && space_sep) {
        sep = memchr(p, ' ', n);
        if (!sep)
            sep = memchr(p, '\t', n);
    }
    if (!sep)
        return gw_auth_add(a, "", 0, p, n, errstr, errstr_size);
    const char *src = p, *key = sep + 1;
    size_t src_len = (size_t)(sep - p), key_len = n - src_len - 1;
    gw_trim(&src, &src_len);
    gw_trim(&key, &key_len);
    return gw_auth_add(a, src, src_len, key, key_len, errstr, errstr_size);
}

static cm_err_t gw_auth_load_file(gw_auth_t *a, const char *path, char *errstr,
                                  size_t errstr_size)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(errstr, errstr_size, "GATEWAY_WRITE_KEYS_FILE=%s: %s", path, strerror(errno));
        return CM_ERR_IO;
    }
    char line[1024];
    cm_err_t err = CM_OK;
    while (fgets(line, sizeof(line), f)) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        if ((err = gw_auth_entry(a, line, strlen(line), true, errstr, errstr_size)))
            break;
    }
    fclose(f);
    return err;
}

void gw_auth_destroy(gw_auth_t *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++)
        gw_bucket_destroy(&a->keys[i].bucket);
    free(a->keys);
    free(a);
}

gw_auth_t *gw_auth_new(bool enabled, const char *keys, const char *keys_file, double rate,
                       double burst, double min_burst, char *errstr, size_t errstr_size)
{
    gw_auth_t *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    a->enabled = enabled;
    if (!enabled) {
        if (gw_auth_add(a, "anonymous", 9, "-", 1, errstr, errstr_size))
            goto fail;
    } else {
        const char *p = keys;
        while (p && *p) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            if (gw_auth_entry(a, p, n, false, errstr, errstr_size))
                goto fail;
            p = comma ? comma + 1 : NULL;
        }
        if (keys_file && *keys_file && gw_auth_load_file(a, keys_file, errstr, errstr_size))
            goto fail;
        if (a->n == 0) {
            snprintf(errstr, errstr_size,
                     "GATEWAY_AUTH is on but no write key is configured "
                     "(GATEWAY_WRITE_KEYS or GATEWAY_WRITE_KEYS_FILE; GATEWAY_AUTH=off for "
                     "local runs)");
            goto fail;
        }
    }
    if (burst <= 0)
        burst = rate > min_burst ? rate : min_burst;
    int64_t now = cm_mono_us();
    for (size_t i = 0; i < a->n; i++)
        gw_bucket_init(&a->keys[i].bucket, rate, burst, now);
    return a;
fail:
    free(a->keys); /* buckets not initialised yet */
    free(a);
    return NULL;
}

bool gw_auth_enabled(const gw_auth_t *a) { return a->enabled; }
size_t gw_auth_count(const gw_auth_t *a) { return a->n; }

int gw_auth_lookup(const gw_auth_t *a, const char *key, size_t n)
{
    if (!a->enabled)
        return 0;
    if (!key || n == 0 || n >= GW_KEY_MAX)
        return -1;
    int found = -1;
    /* constant time per key: OR of the byte differences over the whole key */
    for (size_t i = 0; i < a->n; i++) {
        const gw_key_t *k = &a->keys[i];
        unsigned diff = (unsigned)(k->key_len ^ n);
        for (size_t j = 0; j < GW_KEY_MAX - 1; j++) {
            uint8_t x = j < n ? (uint8_t)key[j] : 0;
            diff |= (unsigned)(x ^ (uint8_t)k->key[j]);
        }
        if (diff == 0 && found < 0)
            found = (int)i;
    }
    return found;
}

const char *gw_auth_source(const gw_auth_t *a, int idx)
{
    return idx >= 0 && (size_t)idx < a->n ? a->keys[idx].source : "unknown";
}

gw_bucket_t *gw_auth_bucket(gw_auth_t *a, int idx)
{
    return idx >= 0 && (size_t)idx < a->n ? &a->keys[idx].bucket : NULL;
}
