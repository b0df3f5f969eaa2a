/* Unit tests: status, dtype and volume basics, with hand-computed values. */
#include "test_util.h"

#include <math.h>

#include <cirrdata/cirrdata.h>

#include "core/internal.h"

static void test_dtype_table(void **state) {
    (void)state;
    assert_int_equal(cd_dtype_size(CD_DTYPE_UINT8), 1);
    assert_int_equal(cd_dtype_size(CD_DTYPE_INT16), 2);
    assert_int_equal(cd_dtype_size(CD_DTYPE_FLOAT16), 2);
    assert_int_equal(cd_dtype_size(CD_DTYPE_UINT32), 4);
    assert_int_equal(cd_dtype_size(CD_DTYPE_FLOAT64), 8);
    assert_int_equal(cd_dtype_size(CD_DTYPE_INVALID), 0);
    const cd_dtype all[] = {CD_DTYPE_UINT8,   CD_DTYPE_INT8,    CD_DTYPE_UINT16, CD_DTYPE_INT16,
                            CD_DTYPE_UINT32,  CD_DTYPE_INT32,   CD_DTYPE_UINT64, CD_DTYPE_INT64,
                            CD_DTYPE_FLOAT16, CD_DTYPE_FLOAT32, CD_DTYPE_FLOAT64};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        assert_int_equal(cd_dtype_from_name(cd_dtype_name(all[i])), all[i]);
    assert_string_equal(cd_dtype_name(CD_DTYPE_INT16), "int16");
    assert_int_equal(cd_dtype_from_name("complex64"), CD_DTYPE_INVALID);
    assert_int_equal(cd_dtype_from_name(NULL), CD_DTYPE_INVALID);
}

static void test_status_names(void **state) {
    (void)state;
    assert_string_equal(cd_status_name(CD_OK), "ok");
    assert_string_equal(cd_status_name(CD_ERR_TRUNCATED), "truncated");
    assert_string_equal(cd_status_name((cd_status)999), "unknown");
    cd_error e = {CD_ERR_IO, "x"};
    cd_error_clear(&e);
    assert_int_equal(e.status, CD_OK);
    assert_string_equal(e.message, "");
    cd_error_clear(NULL);
}

static void test_volume_create_rejects_bad_dims(void **state) {
    (void)state;
    cd_volume *v = NULL;
    cd_error err;
    int64_t zero[3] = {4, 0, 2};
    assert_int_equal(cd_volume_create(zero, CD_DTYPE_INT16, &v, &err), CD_ERR_ARG);
    assert_non_null(strstr(err.message, "dim 1 is 0"));
    int64_t huge[3] = {INT64_MAX / 2, INT64_MAX / 2, 4};
    assert_int_equal(cd_volume_create(huge, CD_DTYPE_INT16, &v, &err), CD_ERR_LIMIT);
    int64_t ok[3] = {2, 3, 4};
    assert_int_equal(cd_volume_create(ok, CD_DTYPE_INVALID, &v, &err), CD_ERR_ARG);
}

static void test_volume_basics(void **state) {
    (void)state;
    cd_volume *v;
    cd_error err;
    int64_t dims[3] = {2, 3, 4};
    assert_int_equal(cd_volume_create(dims, CD_DTYPE_INT16, &v, &err), CD_OK);
    assert_int_equal(cd_volume_count(v), 24);
    assert_int_equal(cd_volume_nbytes(v), 48);
    int16_t *d = cd_volume_data(v);
    for (int i = 0; i < 24; i++) assert_int_equal(d[i], 0); /* zero-filled */
    for (int i = 0; i < 24; i++) d[i] = (int16_t)(i - 12);
    double a[4][4];
    cd_volume_affine(v, a);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) assert_true(a[i][j] == (i == j ? 1.0 : 0.0));

    /* nibabel semantics: slope 0 or non-finite means no scaling; (1, 0) is no scaling. */
    cd_volume_set_scaling(v, 0.0, 5.0);
    assert_false(cd_volume_has_scaling(v));
    cd_volume_set_scaling(v, NAN, 0.0);
    assert_false(cd_volume_has_scaling(v));
    cd_volume_set_scaling(v, 1.0, 0.0);
    assert_false(cd_volume_has_scaling(v));
    cd_volume_set_scaling(v, 0.5, 100.0);
    assert_true(cd_volume_has_scaling(v));

    float f[24];
    double g[24];
    cd_volume_to_float32(v, f);
    cd_volume_to_float64(v, g);
    /* value = raw * 0.5 + 100: raw -12 -> 94, raw 11 -> 105.5 */
    assert_true(f[0] == 94.0f);
    assert_true(f[23] == 105.5f);
    assert_true(g[13] == 100.5);

    cd_volume *c;
    assert_int_equal(cd_volume_clone(v, &c, &err), CD_OK);
    d[0] = 7; /* the clone owns its own voxels */
    assert_int_equal(((int16_t *)cd_volume_data(c))[0], -12);
    assert_true(cd_volume_has_scaling(c));
    cd_volume_destroy(c);
    cd_volume_destroy(v);
    cd_volume_destroy(NULL);
}

static void test_float16_conversion(void **state) {
    (void)state;
    cd_volume *v;
    int64_t dims[3] = {6, 1, 1};
    assert_int_equal(cd_volume_create(dims, CD_DTYPE_FLOAT16, &v, NULL), CD_OK);
    /* IEEE half bit patterns and their exact values. */
    const uint16_t bits[6] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00, 0x3555};
    memcpy(cd_volume_data(v), bits, sizeof bits);
    float f[6];
    cd_volume_to_float32(v, f);
    assert_true(f[0] == 1.0f);
    assert_true(f[1] == -2.0f);
    assert_true(f[2] == 65504.0f);
    assert_true(f[3] == ldexpf(1.0f, -24));
    assert_true(isinf(f[4]) && f[4] > 0);
    assert_true(f[5] == 0.333251953125f);
    cd_volume_destroy(v);
}

static void test_large_volume_uses_big_buffer(void **state) {
    (void)state;
    /* Above the huge-page threshold the buffer comes from mmap: it must still be zeroed and usable. */
    cd_volume *v;
    int64_t dims[3] = {256, 256, 40};
    assert_int_equal(cd_volume_create(dims, CD_DTYPE_FLOAT32, &v, NULL), CD_OK);
    float *d = cd_volume_data(v);
    assert_true(d[0] == 0.0f && d[cd_volume_count(v) - 1] == 0.0f);
    d[cd_volume_count(v) - 1] = 3.0f;
    cd_volume_destroy(v);
}

/* Known-answer vectors from Random123's kat_vectors for philox4x32_10. */
static void test_philox_known_answers(void **state) {
    (void)state;
    const struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint32_t out[4];
        cd_philox4x32_10(kat[i].ctr, kat[i].key, out);
        assert_memory_equal(out, kat[i].out, sizeof out);
    }
}

static void test_rng_streams(void **state) {
    (void)state;
    cd_rng a, b, c;
    cd_rng_init(&a, 42, 1, 7);
    cd_rng_init(&b, 42, 1, 7);
    cd_rng_init(&c, 42, 1, 8);
    int same_c = 0;
    double sum = 0, sumsq = 0;
    for (int i = 0; i < 20000; i++) {
        uint32_t x = cd_rng_u32(&a);
        assert_int_equal(x, cd_rng_u32(&b)); /* same key and stream: same numbers */
        same_c += (x == cd_rng_u32(&c));
        double n = cd_rng_normal(&a);
        (void)cd_rng_normal(&b);
        sum += n;
        sumsq += n * n;
    }
    assert_true(same_c < 3); /* another stream is unrelated */
    /* 20000 normals: mean within 5 sigma (0.035) of 0, variance within 0.05 of 1. */
    assert_true(fabs(sum / 20000) < 0.035);
    assert_true(fabs(sumsq / 20000 - 1.0) < 0.05);
    for (int i = 0; i < 1000; i++) {
        double u = cd_rng_uniform(&a);
        assert_true(u >= 0.0 && u < 1.0);
        assert_true(cd_rng_below(&a, 7) < 7);
    }
}

/* Every finite half survives half -> float -> half; midpoints round to even (hand-checked). */
static void test_float_to_half(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN payloads */
        assert_int_equal(cd_float_to_half(cd_half_to_float((uint16_t)h)), h);
    }
    assert_int_equal(cd_float_to_half(1.0f + ldexpf(1.0f, -11)), 0x3C00);     /* tie -> even (down) */
    assert_int_equal(cd_float_to_half(1.0f + 3 * ldexpf(1.0f, -11)), 0x3C02); /* tie -> even (up) */
    assert_int_equal(cd_float_to_half(65520.0f), 0x7C00);                     /* overflow -> inf */
    assert_int_equal(cd_float_to_half(-ldexpf(1.0f, -26)), 0x8000);           /* underflow -> -0 */
    assert_int_equal(cd_float_to_half(ldexpf(1.0f, -24)), 0x0001);            /* smallest subnormal */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_table),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_volume_create_rejects_bad_dims),
        cmocka_unit_test(test_volume_basics),
        cmocka_unit_test(test_float16_conversion),
        cmocka_unit_test(test_large_volume_uses_big_buffer),
        cmocka_unit_test(test_philox_known_answers),
        cmocka_unit_test(test_rng_streams),
        cmocka_unit_test(test_float_to_half),
    };
    return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
