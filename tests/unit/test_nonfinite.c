/* Unit tests: non-finite voxels (NaN, +-inf) in what the recipes preprocess.
 *
 * - cd_volume_count_non_finite counts NaN and infinities of float16/32/64 volumes, float64 values beyond
 *   the float32 range, and scaled integers whose physical value overflows float32; unscaled integers and
 *   scalings that keep every raw value finite count none
 * - cd_non_finite_apply: "error" is CD_ERR_FORMAT naming the count; "zero" gives a float32 copy with 0
 *   in their place and every other value, the affine and the spacing kept
 * - the recipe field "non_finite": parsed, validated, written back only when not the default
 * - cd_preprocess refuses a NaN image by default (3D cubic and the 2D slice recipe alike) and, with
 *   "zero", gives exactly what the same image with 0 in place of the NaN gives; a float16 recipe refuses
 *   values float16 would store as infinities (|x| >= 65520) and keeps 65504
 * - trilinear resampling reads no tap of weight exactly 0: on an identity grid a NaN or inf source voxel
 *   reaches its own output voxel only (also at the clamped last position, where the lower neighbour has
 *   weight 0), on a whole-voxel shift only its shifted voxel, on a 2D resize that keeps the slices only
 *   its own slice; the C reference (cd_resample) and the Vulkan kernel (cd_gpu_resample, with float64
 *   positions and the 32.32 fixed-point variant) alike, on lavapipe with the validation layer on.
 * The Vulkan cases skip (cmocka skip()) only when there is no Vulkan device at all. */
#include "test_util.h"
#include "gpu_test_util.h"

#include <math.h>
#include <stdbool.h>

#include <cirrdata/cirrdata.h>

#include "preprocess/nonfinite.h"

static cd_volume *make(const int64_t d[3], cd_dtype dt) {
    cd_volume *v = NULL;
    cd_error err;
    assert_int_equal(cd_volume_create(d, dt, &v, &err), CD_OK);
    double a[4][4] = {{-1.25, 0, 0, 10}, {0, 0.75, 0, -20}, {0, 0, 2.5, 5}, {0, 0, 0, 1}};
    cd_volume_set_affine(v, a);
    return v;
}

/* Smooth float32 values with no zero (so a 0 in an output is no accident). */
static cd_volume *smooth_f32(const int64_t d[3]) {
    cd_volume *v = make(d, CD_DTYPE_FLOAT32);
    float *p = cd_volume_data(v);
    for (int64_t z = 0, i = 0; z < d[2]; z++)
        for (int64_t y = 0; y < d[1]; y++)
            for (int64_t x = 0; x < d[0]; x++, i++)
                p[i] = (float)(50.0 + 10.0 * sin(0.7 * x) + 7.0 * cos(0.5 * y) + 3.0 * z + 0.1 * x * y);
    return v;
}

static size_t at(const int64_t d[3], int64_t x, int64_t y, int64_t z) { return (size_t)(x + d[0] * (y + d[1] * z)); }

static void test_count(void **state) {
    (void)state;
    const int64_t d[3] = {4, 3, 2};
    cd_volume *f = smooth_f32(d);
    assert_int_equal(cd_volume_count_non_finite(f), 0);
    float *p = cd_volume_data(f);
    p[0] = NAN;
    p[5] = INFINITY;
    p[23] = -INFINITY;
    assert_int_equal(cd_volume_count_non_finite(f), 3);
    cd_volume_destroy(f);

    cd_volume *g = make(d, CD_DTYPE_FLOAT64);
    double *q = cd_volume_data(g);
    for (int i = 0; i < 24; i++) q[i] = i;
    q[3] = 1e300; /* finite in double, infinite as the float32 preprocessing computes in */
    q[7] = NAN;
    assert_int_equal(cd_volume_count_non_finite(g), 2);
    cd_volume_destroy(g);

    cd_volume *h = make(d, CD_DTYPE_FLOAT16);
    uint16_t *hp = cd_volume_data(h);
    for (int i = 0; i < 24; i++) hp[i] = 0x3c00; /* 1.0 */
    hp[1] = 0x7c00;                              /* +inf */
    hp[2] = 0x7e00;                              /* NaN */
    assert_int_equal(cd_volume_count_non_finite(h), 2);
    cd_volume_destroy(h);

    cd_volume *s = make(d, CD_DTYPE_INT16);
    int16_t *sp = cd_volume_data(s);
    for (int i = 0; i < 24; i++) sp[i] = (int16_t)(i - 12);
    assert_int_equal(cd_volume_count_non_finite(s), 0);
    cd_volume_set_scaling(s, 2.0, -1.0); /* every int16 stays finite: no voxel needs reading */
    assert_int_equal(cd_volume_count_non_finite(s), 0);
    cd_volume_set_scaling(s, 1e36, 0.0); /* |raw| >= 341 overflows float32 (3.4e38) */
    sp[4] = 400;
    sp[9] = -32768;
    sp[10] = 340; /* 3.4e38: still finite */
    assert_int_equal(cd_volume_count_non_finite(s), 2);
    cd_volume_destroy(s);
}

static void test_apply(void **state) {
    (void)state;
    const int64_t d[3] = {5, 4, 3};
    cd_volume *v = smooth_f32(d);
    cd_volume_set_scaling(v, 2.0, 1.0);
    cd_error err;
    cd_volume *clean = (cd_volume *)1;
    assert_int_equal(cd_non_finite_apply(CD_NON_FINITE_ERROR, v, "the image", NULL, &clean, &err), CD_OK);
    assert_null(clean);
    float *p = cd_volume_data(v);
    p[7] = NAN;
    p[8] = -INFINITY;
    p[59] = INFINITY;
    assert_int_equal(cd_non_finite_apply(CD_NON_FINITE_ERROR, v, "the image", NULL, &clean, &err), CD_ERR_FORMAT);
    assert_null(clean);
    assert_non_null(strstr(err.message, "3 non-finite voxels (NaN or infinite in float32) in the image; "));
    assert_non_null(strstr(err.message, "\"non_finite\": \"zero\""));
    assert_int_equal(
        cd_non_finite_apply(CD_NON_FINITE_ERROR, v, "the image", "staging needs finite values", &clean, &err),
        CD_ERR_FORMAT);
    assert_non_null(strstr(err.message, "in the image; staging needs finite values"));
    assert_int_equal(cd_non_finite_apply(CD_NON_FINITE_ZERO, v, "the image", NULL, &clean, &err), CD_OK);
    assert_non_null(clean);
    assert_int_equal(cd_volume_dtype(clean), CD_DTYPE_FLOAT32);
    assert_false(cd_volume_has_scaling(clean));
    double a1[4][4], a2[4][4], s1[3], s2[3];
    cd_volume_affine(v, a1);
    cd_volume_affine(clean, a2);
    assert_memory_equal(a1, a2, sizeof a1);
    cd_volume_spacing(v, s1);
    cd_volume_spacing(clean, s2);
    assert_memory_equal(s1, s2, sizeof s1);
    const float *c = cd_volume_data_const(clean);
    for (size_t i = 0; i < 60; i++) {
        if (i == 7 || i == 8 || i == 59)
            assert_true(c[i] == 0.0f);
        else
            assert_true(c[i] == (float)((double)p[i] * 2.0 + 1.0)); /* physical values */
    }
    cd_volume_destroy(clean);
    /* a path-named refusal (the mask in convert) */
    cd_volume *m = v;
    assert_int_equal(cd_non_finite_resolve(CD_NON_FINITE_ERROR, &m, "/data/m.nii.gz", "the mask", &err), CD_ERR_FORMAT);
    assert_ptr_equal(m, v);
    assert_non_null(
        strstr(err.message, "/data/m.nii.gz: 3 non-finite voxels (NaN or infinite in float32) in the mask; "));
    assert_non_null(strstr(err.message, "background"));
    assert_int_equal(cd_non_finite_resolve(CD_NON_FINITE_ZERO, &m, "/data/m.nii.gz", "the mask", &err), CD_OK);
    assert_ptr_not_equal(m, v); /* v was destroyed and replaced */
    assert_int_equal(cd_volume_count_non_finite(m), 0);
    cd_volume_destroy(m);
}

static void test_recipe_field(void **state) {
    (void)state;
    cd_recipe r;
    cd_error err;
    assert_int_equal(cd_recipe_preset("nnunet-3d", &r, &err), CD_OK);
    assert_int_equal(r.non_finite, CD_NON_FINITE_ERROR);
    char *j = cd_recipe_to_json(&r);
    assert_null(strstr(j, "non_finite")); /* the default is not written: fingerprints stay as they were */
    free(j);
    assert_int_equal(cd_recipe_parse("{\"name\": \"x\", \"version\": 1, \"non_finite\": \"zero\"}", "x.json", &r, &err),
                     CD_OK);
    assert_int_equal(r.non_finite, CD_NON_FINITE_ZERO);
    j = cd_recipe_to_json(&r);
    assert_non_null(strstr(j, "\"non_finite\": \"zero\""));
    cd_recipe back;
    assert_int_equal(cd_recipe_parse(j, "back", &back, &err), CD_OK);
    assert_int_equal(back.non_finite, CD_NON_FINITE_ZERO);
    free(j);
    assert_int_equal(
        cd_recipe_parse("{\"name\": \"x\", \"version\": 1, \"non_finite\": \"error\"}", "x.json", &r, &err), CD_OK);
    assert_int_equal(r.non_finite, CD_NON_FINITE_ERROR);
    assert_int_equal(cd_recipe_parse("{\"name\": \"x\", \"version\": 1, \"non_finite\": \"nan\"}", "x.json", &r, &err),
                     CD_ERR_FORMAT);
    assert_non_null(strstr(err.message, "x.json: recipe: 'non_finite' must be one of error, zero"));
    assert_int_equal(cd_recipe_parse("{\"name\": \"x\", \"version\": 1, \"non_finite\": 0}", "x.json", &r, &err),
                     CD_ERR_FORMAT);
}

/* cd_preprocess of an image with a NaN: refused; with "zero" the same bytes as the image with a 0 there. */
static void preprocess_case(const char *preset, const double *target) {
    const int64_t d[3] = {19, 15, 9};
    cd_volume *v = smooth_f32(d), *z = smooth_f32(d);
    const size_t k = at(d, 9, 7, 4);
    ((float *)cd_volume_data(v))[k] = NAN;
    ((float *)cd_volume_data(z))[k] = 0.0f;
    cd_recipe r;
    cd_error err;
    assert_int_equal(cd_recipe_preset(preset, &r, &err), CD_OK);
    cd_sample *s = NULL, *ref = NULL;
    assert_int_equal(cd_preprocess(&r, target, v, NULL, 1, &s, &err), CD_ERR_FORMAT);
    assert_null(s);
    assert_non_null(strstr(err.message, "1 non-finite voxel (NaN or infinite in float32) in the image"));
    r.non_finite = CD_NON_FINITE_ZERO;
    assert_int_equal(cd_preprocess(&r, target, v, NULL, 1, &s, &err), CD_OK);
    assert_int_equal(cd_preprocess(&r, target, z, NULL, 1, &ref, &err), CD_OK);
    assert_memory_equal(s->shape, ref->shape, sizeof s->shape);
    assert_int_equal(s->channels, ref->channels);
    assert_int_equal(s->dtype, ref->dtype);
    const size_t n = (size_t)s->shape[0] * s->shape[1] * s->shape[2] * s->channels * cd_dtype_size(s->dtype);
    assert_memory_equal(s->image, ref->image, n);
    assert_memory_equal(s->affine, ref->affine, sizeof s->affine);
    cd_sample_destroy(s);
    cd_sample_destroy(ref);
    cd_volume_destroy(v);
    cd_volume_destroy(z);
}

static void test_preprocess(void **state) {
    (void)state;
    const double target[3] = {1.1, 0.9, 2.0};
    preprocess_case("nnunet-3d", target);       /* cubic B-spline: one NaN would reach every voxel */
    preprocess_case("cirrhosisstage-2d", NULL); /* per-slice linear resize, percentiles, float16 */
    preprocess_case("raw", NULL);               /* stored as it is */
}

/* A float16 recipe on values float16 cannot hold: refused, never stored as infinities. */
static void test_float16_range(void **state) {
    (void)state;
    const int64_t d[3] = {6, 5, 4};
    cd_volume *v = smooth_f32(d);
    cd_recipe r;
    cd_error err;
    assert_int_equal(cd_recipe_parse("{\"name\": \"h\", \"version\": 1, \"dtype\": \"float16\"}", "h.json", &r, &err),
                     CD_OK);
    cd_sample *s = NULL;
    ((float *)cd_volume_data(v))[3] = 65504.0f; /* the largest float16 */
    assert_int_equal(cd_preprocess(&r, NULL, v, NULL, 1, &s, &err), CD_OK);
    const uint16_t *h = s->image;
    for (size_t i = 0; i < 120; i++) assert_true((h[i] & 0x7c00u) != 0x7c00u);
    cd_sample_destroy(s);
    ((float *)cd_volume_data(v))[3] = -70000.0f;
    ((float *)cd_volume_data(v))[4] = 65520.0f; /* rounds to infinity */
    assert_int_equal(cd_preprocess(&r, NULL, v, NULL, 1, &s, &err), CD_ERR_FORMAT);
    assert_null(s);
    assert_non_null(strstr(err.message, "2 preprocessed voxels outside the float16 range"));
    cd_volume_destroy(v);
}

/* ---- trilinear resampling: taps of weight 0 are not read ---- */

typedef cd_status (*resample_fn)(void *ctx, const cd_volume *src, const cd_grid *g, const cd_resample_options *ro,
                                 cd_volume **out, cd_error *err);

static cd_status cpu_resample(void *ctx, const cd_volume *src, const cd_grid *g, const cd_resample_options *ro,
                              cd_volume **out, cd_error *err) {
    (void)ctx;
    return cd_resample(src, g, ro, out, err);
}

static cd_status gpu_resample(void *ctx, const cd_volume *src, const cd_grid *g, const cd_resample_options *ro,
                              cd_volume **out, cd_error *err) {
    cd_status st = cd_gpu_resample(ctx, src, g, ro, out, err);
    check_validation(ctx);
    return st;
}

/* Output voxels that are not finite, as (x, y, z) triples; their count. */
static int non_finite_at(const cd_volume *o, int64_t where[][3], int cap) {
    int64_t d[3];
    cd_volume_dims(o, d);
    const float *p = cd_volume_data_const(o);
    int n = 0;
    for (int64_t z = 0, i = 0; z < d[2]; z++)
        for (int64_t y = 0; y < d[1]; y++)
            for (int64_t x = 0; x < d[0]; x++, i++)
                if (!isfinite(p[i])) {
                    if (n < cap) where[n][0] = x, where[n][1] = y, where[n][2] = z;
                    n++;
                }
    return n;
}

static void linear_suite(resample_fn fn, void *ctx, const char *who) {
    const int64_t d[3] = {7, 6, 5};
    cd_error err;
    cd_resample_options ro;
    cd_resample_options_init(&ro);
    ro.interp = CD_INTERP_LINEAR;
    ro.threads = 2;
    int64_t w[64][3];
    /* (5, 4, 3): one below the last voxel on every axis, so the last voxel (the clamped corner, lower
     * neighbour of weight 0) must not see it either; (1, 1, 1): an infinity. */
    const int64_t nan_at[3] = {5, 4, 3}, inf_at[3] = {1, 1, 1};
    for (int kind = 0; kind < 2; kind++) {
        cd_volume *v = smooth_f32(d);
        const int64_t *p = kind ? inf_at : nan_at;
        ((float *)cd_volume_data(v))[at(d, p[0], p[1], p[2])] = kind ? INFINITY : NAN;
        cd_grid g;
        cd_volume *o = NULL;

        /* identity: only the voxel itself, every other voxel the source's */
        cd_grid_of_volume(v, &g);
        assert_int_equal(fn(ctx, v, &g, &ro, &o, &err), CD_OK);
        int n = non_finite_at(o, w, 64);
        if (n != 1)
            fprintf(stderr, "%s: identity grid: %d non-finite voxels, first (%lld, %lld, %lld)\n", who, n,
                    (long long)w[0][0], (long long)w[0][1], (long long)w[0][2]);
        assert_int_equal(n, 1);
        assert_memory_equal(w[0], p, sizeof w[0]);
        const float *src = cd_volume_data_const(v), *out = cd_volume_data_const(o);
        for (size_t i = 0; i < cd_volume_count(v); i++)
            if (isfinite(src[i])) assert_true(out[i] == src[i]);
        cd_volume_destroy(o);

        /* a whole-voxel shift (output voxel (x, y) reads source (x + 1, y - 1)): only the shifted voxel */
        cd_grid_of_volume(v, &g);
        for (int r = 0; r < 3; r++) g.affine[r][3] += g.affine[r][0] - g.affine[r][1];
        assert_int_equal(fn(ctx, v, &g, &ro, &o, &err), CD_OK);
        n = non_finite_at(o, w, 64);
        assert_int_equal(n, 1);
        assert_true(w[0][0] == p[0] - 1 && w[0][1] == p[1] + 1 && w[0][2] == p[2]);
        cd_volume_destroy(o);

        /* the 2D resize of cirrhosisstage-2d (slices kept): only the voxel's own slice */
        const int64_t shape[3] = {16, 11, d[2]};
        assert_int_equal(cd_grid_for_shape(v, shape, &g, &err), CD_OK);
        assert_int_equal(fn(ctx, v, &g, &ro, &o, &err), CD_OK);
        n = non_finite_at(o, w, 64);
        assert_true(n >= 1 && n <= 64);
        for (int i = 0; i < n; i++) {
            if (w[i][2] != p[2])
                fprintf(stderr, "%s: 2D resize: non-finite voxel in slice %lld, not %lld\n", who, (long long)w[i][2],
                        (long long)p[2]);
            assert_int_equal(w[i][2], p[2]);
        }
        cd_volume_destroy(o);
        cd_volume_destroy(v);
    }
}

static void test_linear_cpu(void **state) {
    (void)state;
    linear_suite(cpu_resample, NULL, "cd_resample");
}

static void test_linear_gpu(void **state) {
    (void)state;
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    fallback_mark();
    linear_suite(gpu_resample, ctx, "cd_gpu_resample");
    check_fallback(0, true); /* the device computed every result, not the C reference */
    destroy_ctx(ctx);
}

static void test_linear_gpu_fixed_point(void **state) {
    (void)state;
    require_vulkan();
    setenv("CIRRDATA_VK_NO_FLOAT64", "1", 1);
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    fallback_mark();
    linear_suite(gpu_resample, ctx, "cd_gpu_resample (32.32 fixed point)");
    check_fallback(0, true);
    destroy_ctx(ctx);
    unsetenv("CIRRDATA_VK_NO_FLOAT64");
}

int main(void) {
    if (gpu_test_init() != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_count),         cmocka_unit_test(test_apply),
        cmocka_unit_test(test_recipe_field),  cmocka_unit_test(test_preprocess),
        cmocka_unit_test(test_float16_range), cmocka_unit_test(test_linear_cpu),
        cmocka_unit_test(test_linear_gpu),    cmocka_unit_test(test_linear_gpu_fixed_point),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
