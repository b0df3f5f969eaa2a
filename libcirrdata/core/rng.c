/* Philox4x32-10 (Random123's constants). Counter-based: no state beyond (key, counter). */
#include <math.h>

#include "cirrdata/rng.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void cd_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* The same rounds as above on LANES blocks side by side (structure of arrays): each lane loop is
 * independent per lane, so gcc turns the 32x32->64 products into pmuludq (SSE2) without changing
 * a bit. Lanes past n are computed and dropped. */
void cd_philox4x32_10_blocks(const uint32_t counter[4], const uint32_t key[2], size_t n, uint32_t *out) {
    enum { LANES = 16 };
    const uint64_t pos = (uint64_t)counter[0] | (uint64_t)counter[1] << 32;
    for (size_t j0 = 0; j0 < n; j0 += LANES) {
        uint32_t c0[LANES], c1[LANES], c2[LANES], c3[LANES];
        for (int l = 0; l < LANES; l++) {
            const uint64_t b = pos + j0 + (uint64_t)l;
            c0[l] = (uint32_t)b;
            c1[l] = (uint32_t)(b >> 32);
            c2[l] = counter[2];
            c3[l] = counter[3];
        }
        uint32_t k0 = key[0], k1 = key[1];
        for (int round = 0; round < 10; round++) {
            /* -O3 would otherwise unroll the lane loop completely and then fail to vectorise it
             * (measured: 12 ns per block instead of 7) */
#pragma GCC unroll 1
            for (int l = 0; l < LANES; l++) {
                const uint64_t p0 = (uint64_t)PHILOX_M0 * c0[l], p1 = (uint64_t)PHILOX_M1 * c2[l];
                const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[l] ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3[l] ^ k1;
                c1[l] = (uint32_t)p1;
                c3[l] = (uint32_t)p0;
                c0[l] = n0;
                c2[l] = n2;
            }
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        const size_t m = n - j0 < LANES ? n - j0 : LANES;
        for (size_t l = 0; l < m; l++) {
            uint32_t *o = out + 4 * (j0 + l);
            o[0] = c0[l];
            o[1] = c1[l];
            o[2] = c2[l];
            o[3] = c3[l];
        }
    }
}

void cd_rng_init(cd_rng *rng, uint64_t seed, uint32_t stream_hi, uint32_t stream_lo) {
    rng->key[0] = (uint32_t)seed;
    rng->key[1] = (uint32_t)(seed >> 32);
    rng->counter[0] = 0;
    rng->counter[1] = 0;
    rng->counter[2] = stream_lo;
    rng->counter[3] = stream_hi;
    rng->used = 4;
}

uint32_t cd_rng_u32(cd_rng *rng) {
    if (rng->used >= 4) {
        cd_philox4x32_10(rng->counter, rng->key, rng->block);
        if (++rng->counter[0] == 0) rng->counter[1]++;
        rng->used = 0;
    }
    return rng->block[rng->used++];
}

double cd_rng_uniform(cd_rng *rng) {
    uint64_t hi = cd_rng_u32(rng) >> 5, lo = cd_rng_u32(rng) >> 6; /* 27 + 26 = 53 bits */
    return (double)(hi * 67108864.0 + lo) * (1.0 / 9007199254740992.0);
}

double cd_rng_range(cd_rng *rng, double lo, double hi) { return lo + (hi - lo) * cd_rng_uniform(rng); }

double cd_rng_normal(cd_rng *rng) {
    double u1 = cd_rng_uniform(rng), u2 = cd_rng_uniform(rng);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t cd_rng_below(cd_rng *rng, uint64_t n) {
    if (n <= 1) return 0;
    /* Rejection sampling on 64-bit draws: exact uniformity. */
    uint64_t limit = UINT64_MAX - (UINT64_MAX % n);
    for (;;) {
        uint64_t v = ((uint64_t)cd_rng_u32(rng) << 32) | cd_rng_u32(rng);
        if (v < limit) return v % n;
    }
}
