/*
 * aggregator_hll.h: HyperLogLog for unique_users, bit-compatible with Redis.
 *
 * m = 2^14 registers, so the standard error is 1.04 / sqrt(16384) = 0.81 %
 * (about 99.7 % of estimates fall within 3 standard errors, 2.44 %; the unit
 * test checks 1 million distinct users against that bound). Small sets are
 * nearly exact (Ertl's estimator behaves like linear counting there).
 *
 * Why Redis-compatible: each partition's sketch is written to Redis as a
 * dense HLL string (ag_hll_to_redis), so `PFCOUNT k1 k2 ... kn` over the
 * per-partition keys returns the cardinality of the UNION, merged by Redis,
 * with no double counting and no Lua. The hash (MurmurHash64A, seed
 * 0xadc83b19), the register rule and the estimator (Ertl, arXiv:1702.01284)
 * are Redis 5+'s, so ag_hll_count() gives the very number PFCOUNT gives for
 * the same registers: the metrics topic and the dashboard agree.
 *
 * In memory the registers are one byte each (16 KiB): an update is a load, a
 * compare and a store, no bit packing on the hot path. Packing to Redis'
 * 6-bit layout happens only when a pane is written to Redis.
 */
#ifndef AGGREGATOR_HLL_H
#define AGGREGATOR_HLL_H

#include <stddef.h>
#include <stdint.h>

#define AG_HLL_P 14
#define AG_HLL_REGISTERS (1u << AG_HLL_P)
#define AG_HLL_Q (64 - AG_HLL_P)
/* Size of Redis' dense representation: 16-byte header + 16384 x 6 bits. */
#define AG_HLL_REDIS_SIZE (16 + (AG_HLL_REGISTERS * 6 + 7) / 8)
/* Relative standard error, 1.04 / sqrt(m). */
#define AG_HLL_STD_ERROR 0.008125

typedef struct ag_hll {
    uint8_t reg[AG_HLL_REGISTERS];
} ag_hll_t;

/* Redis' MurmurHash64A (the 64-bit MurmurHash2 variant). */
uint64_t ag_murmur64a(const void *key, size_t len, uint64_t seed);

/* Hash of an element as Redis' PFADD computes it. */
static inline uint64_t ag_hll_hash(const void *p, size_t n)
{
    return ag_murmur64a(p, n, 0xadc83b19ULL);
}

/* Adds an element by its hash; returns 1 when a register changed, else 0. */
static inline int ag_hll_add_hash(ag_hll_t *h, uint64_t hash)
{
    uint32_t idx = (uint32_t)(hash & (AG_HLL_REGISTERS - 1));
    uint64_t rest = (hash >> AG_HLL_P) | (1ULL << AG_HLL_Q);
    uint8_t rank = (uint8_t)(__builtin_ctzll(rest) + 1);
    if (rank > h->reg[idx]) {
        h->reg[idx] = rank;
        return 1;
    }
    return 0;
}

static inline int ag_hll_add(ag_hll_t *h, const void *p, size_t n)
{
    return ag_hll_add_hash(h, ag_hll_hash(p, n));
}

/* dst = union(dst, src): register-wise max. */
void ag_hll_merge(ag_hll_t *dst, const ag_hll_t *src);

/* The estimate (Redis' hllCount with Ertl's estimator). */
uint64_t ag_hll_count(const ag_hll_t *h);

/* Number of non-zero registers (for sparse encodings). */
size_t ag_hll_nonzero(const ag_hll_t *h);

/*
 * Writes Redis' dense HLL string ("HYLL", encoding 0, cached cardinality
 * marked stale, 6-bit registers) into out, which must hold AG_HLL_REDIS_SIZE
 * bytes. Redis accepts it as a HyperLogLog (PFCOUNT, PFMERGE, PFADD).
 */
void ag_hll_to_redis(const ag_hll_t *h, uint8_t *out);

/* Reads a Redis dense HLL string back; -1 when it is not one (tests). */
int ag_hll_from_redis(ag_hll_t *h, const uint8_t *in, size_t len);

#endif
