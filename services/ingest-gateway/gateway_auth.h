/*
 * gateway_auth.h: write keys (a key per source) and the per-key token bucket.
 *
 * Keys come from GATEWAY_WRITE_KEYS ("source:key,source:key") and/or a file
 * (one "source key" or "source:key" per line, '#' comments). With auth off
 * every request maps to one anonymous source, which still has a bucket.
 * The table is built once at start and read-only afterwards; buckets have a
 * lock each.
 */
#ifndef GW_AUTH_H
#define GW_AUTH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"

/* Token bucket: `rate` tokens per second up to `burst`; rate 0: unlimited. */
typedef struct gw_bucket {
    pthread_mutex_t lock;
    double rate, burst, tokens;
    int64_t last_us;
} gw_bucket_t;

void gw_bucket_init(gw_bucket_t *b, double rate, double burst, int64_t now_us);
void gw_bucket_destroy(gw_bucket_t *b);
/* Takes n tokens at monotonic time now_us: true when granted. When refused
 * nothing is taken and *retry_after_s (may be NULL) gets the whole seconds
 * (>= 1) after which n tokens will be there. */
bool gw_bucket_take(gw_bucket_t *b, double n, int64_t now_us, int *retry_after_s);

typedef struct gw_auth gw_auth_t;

/*
 * enabled=false: one anonymous source. Otherwise at least one key is
 * required. keys and keys_file may be NULL. rate/burst configure every
 * key's bucket (burst 0: max(rate, min_burst)). Returns NULL + errstr on a
 * malformed list, an unreadable file, a duplicate key or no key at all.
 * Free with gw_auth_destroy (NULL: no-op).
 */
gw_auth_t *gw_auth_new(bool enabled, const char *keys, const char *keys_file, double rate,
                       double burst, double min_burst, char *errstr, size_t errstr_size);
void gw_auth_destroy(gw_auth_t *a);

bool gw_auth_enabled(const gw_auth_t *a);
size_t gw_auth_count(const gw_auth_t *a);

/* Index of the key (n bytes), or -1. With auth off, always 0. The compare
 * takes the same time whatever the key's content (no timing oracle). */
int gw_auth_lookup(const gw_auth_t *a, const char *key, size_t n);
/* The source name of a key index (static while `a` lives). */
const char *gw_auth_source(const gw_auth_t *a, int idx);
gw_bucket_t *gw_auth_bucket(gw_auth_t *a, int idx);

#endif
