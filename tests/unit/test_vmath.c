/* Unit tests: the vectorisable float log2 / exp2 / power of core/vmath.h against libm in double
 * (glibc's log2 / exp2 / pow, correctly rounded to well under a float ulp), and the claim the
 * augmentation relies on: a vectorised lane loop (SSE2, and AVX2 / AVX-512F where the CPU has
 * them) gives the same bits as one call per element with vectorisation off. */
#include "test_util.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/vmath.h"

/* |a - exact| in units of the float ulp at exact (normal range). */
static double ulps(float a, double exact) {
    int e;
    frexp(exact, &e);
    return fabs((double)a - exact) / ldexp(1.0, e - 24);
}

/* Every 1021st float in [2^-126, 2^8): ~1 million values over every binade. The documented bound
 * is about 3 ulp (the truncated atanh series: relative error z^5 / 11 < 2e-9, plus roundings of
 * s, the Horner steps and the final sum). */
static void test_log2(void **state) {
    (void)state;
    double worst = 0;
    for (uint32_t u = 0x00800000u; u < 0x43800000u; u += 1021) {
        const float x = cd_vu2f(u);
        const double e = ulps(cd_vlog2f(x), log2((double)x));
        worst = e > worst ? e : worst;
    }
    assert_true(worst <= 3.5);
    /* exact where log2 is an integer: powers of two */
    for (int k = -126; k < 128; k++) assert_true(cd_vlog2f(ldexpf(1.0f, k)) == (float)k);
}

/* Every 1021st float of z in [-126, 127]: within 2 ulp (polynomial 1.7e-8 relative, Horner rounding). */
static void test_exp2(void **state) {
    (void)state;
    double worst = 0;
    for (float z = -126.0f; z <= 127.0f;) {
        const double e = ulps(cd_vexp2f(z), exp2((double)z));
        worst = e > worst ? e : worst;
        uint32_t u = cd_vf2u(z);
        u = z < 0 ? (u >= 0x80000000u + 1021 ? u - 1021 : 0) : u + 1021; /* toward +inf: |z| shrinks below 0 */
        z = cd_vu2f(u);
    }
    assert_true(worst <= 2.0);
    for (int k = -126; k <= 127; k++) assert_true(cd_vexp2f((float)k) == ldexpf(1.0f, k));
    assert_true(cd_vexp2f(-126.5f) == 0.0f); /* flushed below 2^-126 */
    assert_true(cd_vexp2f(-1000.0f) == 0.0f);
    assert_true(isinf(cd_vexp2f(200.0f)) && cd_vexp2f(200.0f) > 0);
    assert_true(cd_vexp2f(NAN) == 0.0f);
}

/* t^g for t in (0, 1], g in the gamma augmentation's range and beyond: absolute error within
 * 2^-23 (z = g log2 t is rounded to float, error |z| 2^-24 plus log2's, amplified by ln 2 t^g |z|,
 * at most ~0.53 ln 2 * few ulp near t^g = 1/e; libm's exp2f(g * log2f(t)) has the same
 * z rounding). Special values: 0 for t <= 0, NaN and t < 2^-126; 1 at t = 1. */
static void test_pow_unit(void **state) {
    (void)state;
    const float gs[] = {0.7f, 0.85f, 1.0f, 1.2345f, 1.5f, 2.0f, 4.0f};
    for (size_t gi = 0; gi < sizeof gs / sizeof gs[0]; gi++) {
        const float g = gs[gi];
        double worst = 0;
        for (uint32_t u = 0x00800000u; u <= 0x3f800000u; u += 2039) {
            const float t = cd_vu2f(u);
            const double ex = pow((double)t, (double)g);
            if (ex < 0x1p-125) continue; /* next to the flush threshold: 0 or 2^-126 both correct */
            const double e = fabs((double)cd_vpowf_unit(t, g) - ex);
            worst = e > worst ? e : worst;
        }
        if (worst > 0x1p-23) fprintf(stderr, "g %g: worst absolute error %.3g\n", g, worst);
        assert_true(worst <= 0x1p-23);
        assert_true(cd_vpowf_unit(1.0f, g) == 1.0f);
        assert_true(cd_vpowf_unit(0.0f, g) == 0.0f);
        assert_true(cd_vpowf_unit(-0.5f, g) == 0.0f);
        assert_true(cd_vpowf_unit(NAN, g) == 0.0f);
        assert_true(cd_vpowf_unit(0x1p-127f, g) == 0.0f);
    }
}

/* The same function four ways over the same inputs: one call per element with vectorisation off,
 * a 16-lane loop the compiler vectorises for SSE2, and (where the CPU has them) for AVX2 and
 * AVX-512F. */
enum { NV = 1 << 16 };

__attribute__((noinline, optimize("no-tree-vectorize", "no-tree-slp-vectorize"))) static void
pow_scalar(const float *t, float *y, float g) {
    for (int i = 0; i < NV; i++) {
        y[i] = cd_vpowf_unit(t[i], g);
        __asm__ volatile("" ::: "memory"); /* one element at a time */
    }
}

__attribute__((noinline)) static void pow_lanes(const float *restrict t, float *restrict y, float g) {
    for (int64_t i = 0; i < NV; i += 16)
        for (int64_t k = 0; k < 16; k++) y[i + k] = cd_vpowf_unit(t[i + k], g);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((noinline, target("avx2"))) static void pow_lanes_avx2(const float *restrict t, float *restrict y,
                                                                     float g) {
    for (int64_t i = 0; i < NV; i += 16)
        for (int64_t k = 0; k < 16; k++) y[i + k] = cd_vpowf_unit(t[i + k], g);
}

__attribute__((noinline, target("avx512f"))) static void pow_lanes_avx512(const float *restrict t, float *restrict y,
                                                                          float g) {
    for (int64_t i = 0; i < NV; i += 16)
        for (int64_t k = 0; k < 16; k++) y[i + k] = cd_vpowf_unit(t[i + k], g);
}
#endif

static void test_lanes_same_bits(void **state) {
    (void)state;
    float *t = malloc(sizeof(float) * NV), *a = malloc(sizeof(float) * NV), *b = malloc(sizeof(float) * NV);
    assert_non_null(t);
    assert_non_null(a);
    assert_non_null(b);
    uint32_t s = 12345;
    for (int i = 0; i < NV; i++) { /* mostly (0, 1], some specials and out-of-range bit patterns */
        s = s * 1664525u + 1013904223u;
        t[i] = i % 97 == 0 ? cd_vu2f(s) : (float)(s >> 8) * 0x1p-24f;
    }
    t[1] = 0.0f, t[2] = -0.0f, t[3] = 1.0f, t[4] = NAN, t[5] = INFINITY, t[6] = 0x1p-130f;
    const float gs[] = {0.7f, 1.3f, 1.5f};
    for (int gi = 0; gi < 3; gi++) {
        pow_scalar(t, a, gs[gi]);
        pow_lanes(t, b, gs[gi]);
        assert_memory_equal(a, b, sizeof(float) * NV);
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
        if (__builtin_cpu_supports("avx2")) {
            memset(b, 0, sizeof(float) * NV);
            pow_lanes_avx2(t, b, gs[gi]);
            assert_memory_equal(a, b, sizeof(float) * NV);
        }
        if (__builtin_cpu_supports("avx512f")) {
            memset(b, 0, sizeof(float) * NV);
            pow_lanes_avx512(t, b, gs[gi]);
            assert_memory_equal(a, b, sizeof(float) * NV);
        }
#endif
    }
    free(t);
    free(a);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log2),
        cmocka_unit_test(test_exp2),
        cmocka_unit_test(test_pow_unit),
        cmocka_unit_test(test_lanes_same_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
