/*
 * cm_hll.c: HyperLogLog, following Redis' hyperloglog.c (see the
 * header for why the formats match bit for bit).
 */
#include "cm_hll.h"

#include <math.h>
#include <string.h>

uint64_t cm_murmur64a(const void *key, size_t len, uint64_t seed)
{
    const uint64_t m = 0xc6a4a7935bd1e995ULL;
    const int r = 47;
    uint64_t h = seed ^ ((uint64_t)len * m);
    const uint8_t *data = key;
    const uint8_t *end = data + (len - (len & 7));

    while (data != end) {
        uint64_t k;
        memcpy(&k, data, 8); /* little-endian hosts only, as Redis' default build */
        k *= m;
        k ^= k >> r;
        k *= m;
        h ^= k;
        h *= m;
        data += 8;
    }
    switch (len & 7) {
    case 7: h ^= (uint64_t)data[6] << 48; /* fall through */
    case 6: h ^= (uint64_t)data[5] << 40; /* fall through */
    case 5: h ^= (uint64_t)data[4] << 32; /* fall through */
    case 4: h ^= (uint64_t)data[3] << 24; /* fall through */
    case 3: h ^= (uint64_t)data[2] << 16; /* fall through */
    case 2: h ^= (uint64_t)data[1] << 8;  /* fall through */
    case 1:
        h ^= (uint64_t)data[0];
        h *= m;
    }
    h ^= h >> r;
    h *= m;
    h ^= h >> r;
    return h;
}

void cm_hll_merge(cm_hll_t *dst, const cm_hll_t *src)
{
    /* branch-free so that the compiler vectorizes it (16 KiB per call) */
    uint8_t *restrict d = dst->reg;
    const uint8_t *restrict s = src->reg;
    for (uint32_t i = 0; i < CM_HLL_REGISTERS; i++)
        d[i] = d[i] > s[i] ? d[i] : s[i];
}

size_t cm_hll_nonzero(const cm_hll_t *h)
{
    size_t n = 0;
    for (uint32_t i = 0; i < CM_HLL_REGISTERS; i++)
        n += h->reg[i] != 0;
    return n;
}

static double hll_sigma(double x)
{
    if (x == 1.)
        return INFINITY;
    double z_prev, y = 1, z = x;
    do {
        x *= x;
        z_prev = z;
        z += x * y;
        y += y;
    } while (z_prev != z);
    return z;
}

static double hll_tau(double x)
{
    if (x == 0. || x == 1.)
        return 0.;
    double z_prev, y = 1.0, z = 1 - x;
    do {
        x = sqrt(x);
        z_prev = z;
        y *= 0.5;
        z -= pow(1 - x, 2) * y;
    } while (z_prev != z);
    return z / 3;
}

uint64_t cm_hll_count(const cm_hll_t *h)
{
    const double m = CM_HLL_REGISTERS;
    int histo[64] = {0};
    for (uint32_t i = 0; i < CM_HLL_REGISTERS; i++)
        histo[h->reg[i]]++;
    double z = m * hll_tau((m - histo[CM_HLL_Q + 1]) / m);
    for (int j = CM_HLL_Q; j >= 1; --j) {
        z += histo[j];
        z *= 0.5;
    }
    z += m * hll_sigma(histo[0] / m);
    return (uint64_t)llroundl(0.721347520444481703680 * m * m / z);
}

void cm_hll_to_redis(const cm_hll_t *h, uint8_t *out)
{
    memset(out, 0, CM_HLL_REDIS_SIZE);
    memcpy(out, "HYLL", 4);
    out[4] = 0;         /* HLL_DENSE */
    out[15] = 1u << 7;  /* cached cardinality invalid: Redis recomputes it */
    uint8_t *p = out + 16;
    for (uint32_t i = 0; i < CM_HLL_REGISTERS; i++) {
        uint32_t bit = i * 6;
        uint32_t byte = bit / 8, fb = bit & 7;
        uint32_t v = h->reg[i];
        p[byte] |= (uint8_t)(v << fb);
        if (fb > 2)
            p[byte + 1] |= (uint8_t)(v >> (8 - fb));
    }
}

/* Redis' sparse encoding (hyperloglog.c): ZERO 00xxxxxx = xxxxxx+1 empty
 * registers; XZERO 01xxxxxx yyyyyyyy = 14-bit length + 1 empty registers;
 * VAL 1vvvvvxx = xx+1 registers of value vvvvv+1. */
static int from_sparse(cm_hll_t *h, const uint8_t *p, const uint8_t *end)
{
    uint32_t idx = 0;
    while (p < end) {
        uint32_t run;
        uint8_t v = 0;
        if ((*p & 0xc0) == 0) {
            run = (uint32_t)(*p & 0x3f) + 1;
            p++;
        } else if ((*p & 0xc0) == 0x40) {
            if (p + 1 >= end)
                return -1;
            run = ((uint32_t)(*p & 0x3f) << 8 | p[1]) + 1;
            p += 2;
        } else {
            v = (uint8_t)(((*p >> 2) & 0x1f) + 1);
            run = (uint32_t)(*p & 0x3) + 1;
            p++;
        }
        if (idx + run > CM_HLL_REGISTERS)
            return -1;
        memset(h->reg + idx, v, run);
        idx += run;
    }
    return idx == CM_HLL_REGISTERS ? 0 : -1;
}

int cm_hll_from_redis(cm_hll_t *h, const uint8_t *in, size_t len)
{
    if (len < 16 || memcmp(in, "HYLL", 4) != 0)
        return -1;
    if (in[4] == 1)
        return from_sparse(h, in + 16, in + len);
    if (len != CM_HLL_REDIS_SIZE || in[4] != 0)
        return -1;
    /* four 6-bit registers in every three bytes, least significant first */
    const uint8_t *p = in + 16;
    uint8_t *r = h->reg;
    for (uint32_t i = 0; i < CM_HLL_REGISTERS; i += 4, p += 3, r += 4) {
        r[0] = p[0] & 63;
        r[1] = (uint8_t)((p[0] >> 6 | p[1] << 2) & 63);
        r[2] = (uint8_t)((p[1] >> 4 | p[2] << 4) & 63);
        r[3] = p[2] >> 2;
    }
    return 0;
}
