/* Unit tests: the vectorised noise path. cd_philox4x32_10_blocks against single cd_philox4x32_10
 * calls (whose known answers test_core checks), bit for bit; cd_aug_noise_fill against the
 * Box-Muller transform of the documented words evaluated in double with libm (not our code), and
 * against itself for every start and length (the same n(i) whatever the chunking); the noise op of
 * cd_aug_apply_intensity against x + sigma * n(i) in float. */
#include "test_util.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cirrdata/cirrdata.h>

#include "augment/augment_impl.h"

static void test_philox_blocks(void **state) {
    (void)state;
    /* counters at 0, across the 2^32 carry into word 1, and across the 2^64 wrap */
    const uint32_t starts[][4] = {
        {0, 0, 0, 0}, {0xFFFFFFF0u, 7, 3, 9}, {0xFFFFFFFAu, 0xFFFFFFFFu, 1, 2}, {12345, 0, 4, 0}};
    const uint32_t key[2] = {0x01234567u, 0x89ABCDEFu};
    const size_t counts[] = {0, 1, 15, 16, 17, 33, 100};
    uint32_t out[4 * 100 + 4];
    for (size_t s = 0; s < sizeof starts / sizeof *starts; s++)
        for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
            const size_t n = counts[c];
            out[4 * n] = 0xDEADBEEFu; /* nothing written past 4 n words */
            cd_philox4x32_10_blocks(starts[s], key, n, out);
            assert_int_equal(out[4 * n], 0xDEADBEEFu);
            const uint64_t pos0 = (uint64_t)starts[s][0] | (uint64_t)starts[s][1] << 32;
            for (size_t j = 0; j < n; j++) {
                const uint64_t pos = pos0 + j;
                const uint32_t ctr[4] = {(uint32_t)pos, (uint32_t)(pos >> 32), starts[s][2], starts[s][3]};
                uint32_t w[4];
                cd_philox4x32_10(ctr, key, w);
                assert_memory_equal(w, out + 4 * j, sizeof w);
            }
        }
}

/* n(i) in double from the documented words (draw.c): Box-Muller with libm's log, sqrt, cos, sin. */
static double noise_ref(uint64_t key, uint64_t i) {
    const uint64_t b = i / 4;
    const uint32_t ctr[4] = {(uint32_t)b, (uint32_t)(b >> 32), 0, 0}, k[2] = {(uint32_t)key, (uint32_t)(key >> 32)};
    uint32_t w[4];
    cd_philox4x32_10(ctr, k, w);
    const int h = (int)(i % 4) / 2;
    const double u1 = ((double)(w[2 * h] >> 8) + 1.0) / 16777216.0, u2 = (double)(w[2 * h + 1] >> 8) / 16777216.0;
    const double r = sqrt(-2.0 * log(u1)), t = 6.283185307179586 * u2;
    return i % 2 == 0 ? r * cos(t) : r * sin(t);
}

static void test_noise_values(void **state) {
    (void)state;
    /* The float evaluation's error bound: u1, u2 exact; ln u1 to a few ulp of |ln u1| <= 16.7 (series
     * error < 1e-9, ~10 roundings of 2^-24 relative), r = sqrt(-2 ln) halves that relative error;
     * cos/sin: a = 2 pi (u2 - q/4) carries 2^-24 relative (the float 2 pi and the product), series
     * error < 1e-9; products rounded twice more. Altogether under ~8 ulp of |n| <= 5.77, i.e.
     * 8 * 2^-24 * 5.77 = 2.8e-6 absolute; relative to r (the scale of both components) under 1e-6.
     * The measured worst case over 2^20 voxels is printed. */
    enum { N = 1 << 20 };
    float *n = malloc(sizeof(float) * N);
    assert_non_null(n);
    const uint64_t keys[] = {0x0123456789ABCDEFull, 12345};
    for (size_t k = 0; k < 2; k++) {
        cd_aug_noise_fill(keys[k], 0, N, n);
        double worst_abs = 0, worst_rel = 0, s1 = 0, s2 = 0;
        for (uint64_t i = 0; i < N; i++) {
            const double ref = noise_ref(keys[k], i), d = fabs((double)n[i] - ref);
            const uint64_t pair = i & ~(uint64_t)1;
            const double r = hypot(noise_ref(keys[k], pair), noise_ref(keys[k], pair + 1));
            if (d > worst_abs) worst_abs = d;
            if (r > 0 && d / r > worst_rel) worst_rel = d / r;
            s1 += n[i];
            s2 += (double)n[i] * n[i];
        }
        print_message("noise key %zu: worst |float - double| %.3g absolute, %.3g of r; mean %.4f, std %.4f\n", k,
                      worst_abs, worst_rel, s1 / N, sqrt(s2 / N - (s1 / N) * (s1 / N)));
        assert_true(worst_abs <= 2.8e-6);
        assert_true(worst_rel <= 1e-6);
        /* standard normal: 2^20 samples, std errors 0.001 (mean) and 0.0007 (std) */
        assert_true(fabs(s1 / N) < 0.005);
        assert_true(fabs(sqrt(s2 / N) - 1) < 0.004);
    }
    free(n);
}

static void test_noise_chunking(void **state) {
    (void)state;
    enum { N = 3000 };
    float all[N], part[N + 1];
    const uint64_t key = 0xFEDCBA9876543210ull;
    cd_aug_noise_fill(key, 0, N, all);
    const int64_t firsts[] = {0, 1, 2, 3, 4, 5, 255, 256, 257, 1023, 1024, 2999};
    const int64_t lens[] = {0, 1, 2, 3, 5, 255, 256, 257, 511, 1000};
    for (size_t f = 0; f < sizeof firsts / sizeof *firsts; f++)
        for (size_t l = 0; l < sizeof lens / sizeof *lens; l++) {
            const int64_t first = firsts[f], len = first + lens[l] <= N ? lens[l] : N - first;
            part[len] = -12345.0f; /* nothing written past n */
            cd_aug_noise_fill(key, (uint64_t)first, len, part);
            assert_memory_equal(part, all + first, sizeof(float) * (size_t)len);
            assert_true(part[len] == -12345.0f);
        }
    /* a start past 2^32 blocks: the counter's high word (checked against the double reference) */
    const uint64_t far = (1ull << 34) + 6;
    cd_aug_noise_fill(key, far, 8, part);
    for (int i = 0; i < 8; i++) assert_float_equal(part[i], noise_ref(key, far + (uint64_t)i), 3e-6);
}

static void test_noise_op(void **state) {
    (void)state;
    const int64_t patch[3] = {13, 7, 5}; /* 455 voxels: not a multiple of 4 */
    const int64_t n = patch[0] * patch[1] * patch[2];
    cd_aug_params a;
    cd_aug_draw(NULL, 0, 0, 0, patch, NULL, &a);
    a.noise = true;
    a.noise_sigma = 0.37;
    a.noise_key = 99;
    float *img = malloc(sizeof(float) * (size_t)(3 * n)), *ref = malloc(sizeof(float) * (size_t)(3 * n)),
          *nz = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < 3 * n; i++) img[i] = ref[i] = (float)sin(0.1 * (double)i) * 100.0f;
    cd_aug_noise_fill(a.noise_key, 0, n, nz);
    cd_error err;
    assert_int_equal(cd_aug_apply_intensity(&a, img, 3, patch, &err), CD_OK);
    const float sigma = (float)a.noise_sigma;
    for (int64_t c = 0; c < 3; c++)
        for (int64_t i = 0; i < n; i++) {
            volatile float add = sigma * nz[i]; /* float product, then float sum (the definition) */
            assert_true(img[c * n + i] == ref[c * n + i] + add);
            assert_float_equal(img[c * n + i], ref[c * n + i] + 0.37 * noise_ref(a.noise_key, (uint64_t)i), 2e-5);
        }
    free(img);
    free(ref);
    free(nz);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_philox_blocks),
        cmocka_unit_test(test_noise_values),
        cmocka_unit_test(test_noise_chunking),
        cmocka_unit_test(test_noise_op),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
