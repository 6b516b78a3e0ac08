/*
 * cm_hll.h: HyperLogLog for unique_users, bit-compatible with Redis.
 *
 * m = 2^14 registers, so the standard error is 1.04 / sqrt(16384) = 0.81 %
 * (about 99.7 % of estimates fall within 3 standard errors, 2.44 %; the unit
 * test checks 1 million distinct users against that bound). Small sets are
 * nearly exact (Ertl's estimator behaves like linear counting there).
 *
 * Why Redis-compatible: each partition's sketch is written to Redis as a
 * dense HLL string (cm_hll_to_redis), so `PFCOUNT k1 k2 ... kn` over the
 * per-partition keys returns the cardinality of the UNION, merged by Redis,
 * with no double counting and no Lua. The hash (MurmurHash64A, seed
 * 0xadc83b19), the register rule and the estimator (Ertl, arXiv:1702.01284)
 * are Redis 5+'s, so cm_hll_count() gives the very number PFCOUNT gives for
 * the same registers: the metrics topic and the dashboard agree.
 * dashboard-ws reads the strings back (cm_hll_from_redis) and merges and
 * counts a window's and the hour's union itself.
 *
 * In memory the registers are one byte each (16 KiB): an update is a load, a
 * compare and a store, no bit packing on the hot path. Packing to Redis'
 * 6-bit layout happens only when a pane is written to Redis.
 */
#ifndef CM_HLL_H
#define CM_HLL_H

#include <stddef.h>
#include <stdint.h>

#define CM_HLL_P 14
#define CM_HLL_REGISTERS (1u << CM_HLL_P)
#define CM_HLL_Q (64 - CM_HLL_P)
/* Size of Redis' dense representation: 16-byte header + 16384 x 6 bits. */
#define CM_HLL_REDIS_SIZE (16 + (CM_HLL_REGISTERS * 6 + 7) / 8)
/* Relative standard error, 1.04 / sqrt(m). */
#define CM_HLL_STD_ERROR 0.008125

typedef struct cm_hll {
    uint8_t reg[CM_HLL_REGISTERS];
} cm_hll_t;

/* Redis' MurmurHash64A (the 64-bit MurmurHash2 variant). */
uint64_t cm_murmur64a(const void *key, size_t len, uint64_t seed);

/* Hash of an element as Redis' PFADD computes it. */
static inline uint64_t cm_hll_hash(const void *p, size_t n)
{
    return cm_murmur64a(p, n, 0xadc83b19ULL);
}

/* Adds an element by its hash; returns 1 when a register changed, else 0. */
static inline int cm_hll_add_hash(cm_hll_t *h, uint64_t hash)
{
    uint32_t idx = (uint32_t)(hash & (CM_HLL_REGISTERS - 1));
    uint64_t rest = (hash >> CM_HLL_P) | (1ULL << CM_HLL_Q);
    uint8_t rank = (uint8_t)(__builtin_ctzll(rest) + 1);
    if (rank > h->reg[idx]) {
        h->reg[idx] = rank;
        return 1;
    }
    return 0;
}

static inline int cm_hll_add(cm_hll_t *h, const void *p, size_t n)
{
    return cm_hll_add_hash(h, cm_hll_hash(p, n));
}

/* dst = union(dst, src): register-wise max. */
void cm_hll_merge(cm_hll_t *dst, const cm_hll_t *src);

/* The estimate (Redis' hllCount with Ertl's estimator). */
uint64_t cm_hll_count(const cm_hll_t *h);

/* Number of non-zero registers (for sparse encodings). */
size_t cm_hll_nonzero(const cm_hll_t *h);

/*
 * Writes Redis' dense HLL string ("HYLL", encoding 0, cached cardinality
 * marked stale, 6-bit registers) into out, which must hold CM_HLL_REDIS_SIZE
 * bytes. Redis accepts it as a HyperLogLog (PFCOUNT, PFMERGE, PFADD).
 */
void cm_hll_to_redis(const cm_hll_t *h, uint8_t *out);

/* Reads a Redis HLL string (dense, or sparse as PFADD leaves small sets)
 * into h; -1 when it is not one. */
int cm_hll_from_redis(cm_hll_t *h, const uint8_t *in, size_t len);

#endif
