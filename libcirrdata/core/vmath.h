/* Branch-free float log2 / exp2 / power for loops the compiler vectorises (not installed).
 *
 * glibc's log2f / exp2f are calls per element, so a loop over them stays scalar; these are plain
 * float arithmetic and bit operations (no tables, no branches: conditions are selects), so a loop of
 * fixed trip count over them vectorises at -O2 and gives the same bits whatever the vector width
 * (each lane runs the same operations in the same order; FP contraction is off under -std=c17).
 * The GPU twin is shaders/aug_gamma.comp, which must keep the same formulas.
 *
 * cd_vlog2f: x = 2^k m with m in [sqrt(1/2), sqrt(2)) (exponent and mantissa bits), s = (m - 1) /
 *   (m + 1) in [-0.172, 0.172], log2 m = 2 atanh(s) / ln 2 = s (C1 + C3 z + C5 z^2 + C7 z^3 + C9 z^4),
 *   z = s^2, C_j = 2 / (j ln 2) (the series truncated after z^4: relative error z^5 / 11 < 2e-9);
 *   plus k. Valid for normal positive x (x >= FLT_MIN; any other bits give a finite, meaningless
 *   value); within 3 ulp (tests/unit/test_vmath.c).
 * cd_vexp2f: z = k + r, k = round(z) (round to nearest even by the 1.5 * 2^23 shift), r in
 *   [-1/2, 1/2]; 2^r = 1 + r P(r), cephes' degree-6 polynomial (relative error 1.7e-8 on the
 *   interval); times 2^k built in the exponent bits. Within 2 ulp for z in [-126, 127.5); 0 below
 *   (and for NaN), +inf above.
 * cd_vpowf_unit: t^g for t in [0, ~1] and g > 0 as exp2(g log2 t), flushed to 0 where t or the
 *   result is below FLT_MIN (2^-126) -- also 0 for t <= 0 and NaN t, as pow(0, g) = 0. Absolute
 *   error within 2^-23 for t^g <= 1 (the rounding of z = g log2 t to float dominates, as in libm's
 *   exp2f(g * log2f(t))). */
#ifndef CD_VMATH_H
#define CD_VMATH_H

#include <stdint.h>
#include <string.h>

/* For functions made of such lane loops: copies compiled for AVX-512F and AVX2, one chosen at load
 * time by what the CPU has (x86-64, GCC). Same bits in every copy: lane-wise operations only, and
 * nothing fused (contraction is off under -std=c17), just 16 or 8 float lanes per instruction
 * instead of SSE2's 4 (the gamma pass runs about 2x faster per step up). */
#ifndef CD_VCLONES /* (a build may define it empty to compile one variant for a chosen -m flag) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CD_VCLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CD_VCLONES
#endif
#endif

static inline uint32_t cd_vf2u(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float cd_vu2f(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static inline float cd_vlog2f(float x) {
    /* 2 / (j ln 2), j = 1, 3, 5, 7, 9: the series of log2((1 + s) / (1 - s)) = 2 atanh(s) / ln 2 */
    const float C1 = 0x1.715476p+1f, C3 = 0x1.ec709ep-1f, C5 = 0x1.2776c6p-1f, C7 = 0x1.a61762p-2f, C9 = 0x1.484b14p-2f;
    /* x = 2^k m, m in [sqrt(1/2), sqrt(2)): bias the bits by sqrt(1/2)'s (0x3f3504f3) so that the
     * exponent field is k; unsigned arithmetic: any bit pattern is defined (and gives a finite value) */
    const uint32_t ix = cd_vf2u(x) + (0x3f800000u - 0x3f3504f3u);
    const int32_t k = (int32_t)(ix >> 23) - 0x7f;
    const float f = cd_vu2f((ix & 0x007fffffu) + 0x3f3504f3u) - 1.0f; /* m - 1, exact */
    const float s = f / (2.0f + f), z = s * s;                        /* m = (1 + s) / (1 - s) */
    return s * (C1 + z * (C3 + z * (C5 + z * (C7 + z * C9)))) + (float)k;
}

static inline float cd_vexp2f(float z) {
    const float P0 = 1.535336188319500e-4f, P1 = 1.339887440266574e-3f, P2 = 9.618437357674640e-3f,
                P3 = 5.550332471162809e-2f, P4 = 2.402264791363012e-1f, P5 = 6.931472028550421e-1f;
    /* z + 1.5 * 2^23 rounds z to the integer k (nearest even) in the low mantissa bits, read as bits
     * rather than by a float-to-int conversion, which is undefined for NaN or huge z. Outside
     * [-126, 127.5) the bits are meaningless and the result is replaced (0 below, +inf above). */
    const float shift = 0x1.8p23f, zs = z + shift, kf = zs - shift, r = z - kf;
    const uint32_t k = cd_vf2u(zs) - 0x4b400000u; /* k mod 2^32 */
    const float p = 1.0f + r * (((((P0 * r + P1) * r + P2) * r + P3) * r + P4) * r + P5);
    const float y = p * cd_vu2f((k + 127u) << 23);
    /* Selects as bit masks: with "c ? y : constant" the compiler moves the arithmetic into a branch
     * and, as float operations may trap (-ftrapping-math), does not vectorise the loop. */
    const uint32_t hi = 0u - (uint32_t)(z < 127.5f), lo = 0u - (uint32_t)(z >= -126.0f); /* NaN: 0 */
    return cd_vu2f(((cd_vf2u(y) & hi) | (0x7f800000u & ~hi)) & lo);
}

static inline float cd_vpowf_unit(float t, float g) {
    const float y = cd_vexp2f(g * cd_vlog2f(t)); /* cd_vlog2f is finite for any bits */
    return cd_vu2f(cd_vf2u(y) & (0u - (uint32_t)(t >= 0x1p-126f)));
}

#endif
