/* Unit tests: the Vulkan preprocessing kernels (cd_gpu_resample, cd_gpu_normalize) against their C
 * references (cd_resample; the normalisation step of cd_preprocess), on whatever device Vulkan offers
 * (lavapipe in CI), with the validation layer and synchronization validation on (meson's env): any
 * validation warning or error fails the test.
 *
 * Tolerances: float results max |gpu - reference| <= 1e-4 of the reference's data range (the device
 * interpolates in float32 where the reference uses double: ~1e-7 for orders 0/1, ~1e-6 for the 64-tap
 * cubic sum); nearest results, uint8 masks and volume metadata (dims, affine) exactly equal.
 *
 * - every order on grids that zoom, shrink, shift by whole voxels, rotate (with fill outside), resize
 *   to a fixed shape and keep the grid; odd shapes (1-voxel axes, sizes that are no multiple of the
 *   workgroup), in shared and staging memory, with float64 positions and with the 32.32 fixed-point
 *   variant of devices without shaderFloat64
 * - int16 sources with scaling, uint8 masks by nearest (exact), an int32 source through the reference
 * - z-score over the volume, a mask, nonzero voxels, an empty region; percentile clip + rescale and
 *   the (x - m) / s step of cirrhosisstage-2d, against cd_preprocess itself
 * - masks by per-label linear interpolation (mask_order 1) equal to cd_preprocess's, ties at 0.5 included
 * - a too-small memory limit: an error, no crash; the context keeps working; the converter's device
 *   (cd_pp_device) then gives the CPU's result with a note, and keeps the GPU for volumes that fit
 * After every comparison the reference must have computed nothing the device was asked for (the
 * fallback counter; the int32 source expects its one call); no validation message, at teardown
 * neither. Exits 77 (skipped) only when there is no Vulkan device at all and none is required
 * (gpu_test_util.h). */
#include "test_util.h"
#include "gpu_test_util.h"

#include <math.h>
#include <stdbool.h>

#include <cirrdata/cirrdata.h>

#include "gpu/device_policy.h"
#include "preprocess/preprocess_impl.h" /* cd_gpu_resample_mask_linear (internal: what convert uses) */

/* A smooth blob, a ramp and noise (x fastest), scaled and shifted. */
static cd_volume *make_volume(const int64_t d[3], const double affine[4][4]) {
    cd_volume *v = NULL;
    cd_error err;
    assert_int_equal(cd_volume_create(d, CD_DTYPE_FLOAT32, &v, &err), CD_OK);
    float *p = cd_volume_data(v);
    const double scale = urand(0.5, 400), shift = urand(-200, 200);
    for (int64_t z = 0, i = 0; z < d[2]; z++)
        for (int64_t y = 0; y < d[1]; y++)
            for (int64_t x = 0; x < d[0]; x++, i++) {
                const double gx = (double)x / (double)d[0] - 0.4, gy = (double)y / (double)d[1] - 0.55,
                             gz = (double)z / (double)d[2] - 0.5;
                const double s =
                    2.5 * exp(-6 * (gx * gx + gy * gy + gz * gz)) + 0.8 * gx - 0.3 * gz + 0.4 * urand(-1, 1);
                p[i] = (float)(s * scale + shift);
            }
    cd_volume_set_affine(v, affine);
    return v;
}

static void diag_affine(double a[4][4], double sx, double sy, double sz) {
    memset(a, 0, sizeof(double) * 16);
    a[0][0] = -sx; /* LPS-like, as many scanners store */
    a[1][1] = sy;
    a[2][2] = sz;
    a[0][3] = urand(-50, 50);
    a[1][3] = urand(-50, 50);
    a[2][3] = urand(-50, 50);
    a[3][3] = 1;
}

/* A grid rotated about every axis by up to `deg` degrees and shifted, spacing sp. */
static void rotated_grid(const cd_volume *v, const int64_t dims[3], double sp, double deg, cd_grid *g) {
    double a[4][4];
    cd_volume_affine(v, a);
    const double ax = urand(-deg, deg) * M_PI / 180, ay = urand(-deg, deg) * M_PI / 180,
                 az = urand(-deg, deg) * M_PI / 180;
    const double rx[3][3] = {{1, 0, 0}, {0, cos(ax), -sin(ax)}, {0, sin(ax), cos(ax)}};
    const double ry[3][3] = {{cos(ay), 0, sin(ay)}, {0, 1, 0}, {-sin(ay), 0, cos(ay)}};
    const double rz[3][3] = {{cos(az), -sin(az), 0}, {sin(az), cos(az), 0}, {0, 0, 1}};
    double t[3][3], r[3][3];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            t[i][j] = 0;
            for (int k = 0; k < 3; k++) t[i][j] += ry[i][k] * rz[k][j];
        }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            r[i][j] = 0;
            for (int k = 0; k < 3; k++) r[i][j] += rx[i][k] * t[k][j];
        }
    memcpy(g->dims, dims, sizeof g->dims);
    memset(g->affine, 0, sizeof g->affine);
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) g->affine[i][j] = r[i][j] * sp;
        g->affine[i][3] = a[i][3] + urand(-3, 3);
    }
    g->affine[3][3] = 1;
}

/* max |a - b| over the reference's range (NaN fill compared as equal). */
static double rel_err(const float *ref, const float *got, size_t n) {
    float lo = INFINITY, hi = -INFINITY;
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(ref[i]) && isnan(got[i])) continue;
        lo = fminf(lo, ref[i]);
        hi = fmaxf(hi, ref[i]);
        const double d = fabs((double)ref[i] - (double)got[i]);
        if (isnan(d) || d > e) e = isnan(d) ? INFINITY : d;
    }
    return e / (hi > lo ? (double)hi - (double)lo : 1.0);
}

/* cd_gpu_resample against cd_resample for one source, grid and options; `fallback`: the call is one
 * the reference must compute (check_fallback), else the device must. */
static void check_resample_fb(cd_gpu_context *ctx, const cd_volume *src, const cd_grid *g,
                              const cd_resample_options *ro, const char *what, bool fallback) {
    cd_error err;
    cd_volume *ref = NULL, *got = NULL;
    assert_int_equal(cd_resample(src, g, ro, &ref, &err), CD_OK);
    fallback_mark();
    cd_status st = cd_gpu_resample(ctx, src, g, ro, &got, &err);
    if (st != CD_OK) fprintf(stderr, "%s: %s\n", what, err.message);
    assert_int_equal(st, CD_OK);
    check_fallback(fallback ? 1 : 0, !fallback);
    int64_t d1[3], d2[3];
    cd_volume_dims(ref, d1);
    cd_volume_dims(got, d2);
    assert_memory_equal(d1, d2, sizeof d1);
    assert_int_equal(cd_volume_dtype(ref), cd_volume_dtype(got));
    double a1[4][4], a2[4][4];
    cd_volume_affine(ref, a1);
    cd_volume_affine(got, a2);
    assert_memory_equal(a1, a2, sizeof a1);
    const size_t n = cd_volume_count(ref);
    if (ro->interp == CD_INTERP_NEAREST || cd_volume_dtype(ref) != CD_DTYPE_FLOAT32) {
        if (memcmp(cd_volume_data_const(ref), cd_volume_data_const(got), n * cd_dtype_size(cd_volume_dtype(ref)))) {
            size_t nd = 0, first = 0;
            const uint8_t *r8 = cd_volume_data_const(ref), *g8 = cd_volume_data_const(got);
            const size_t es = cd_dtype_size(cd_volume_dtype(ref));
            for (size_t i = 0; i < n; i++)
                if (memcmp(r8 + i * es, g8 + i * es, es) && !nd++) first = i;
            fprintf(stderr, "%s: nearest/uint8 result differs from the reference at %zu voxels, first %zu", what, nd,
                    first);
            if (es == 4)
                fprintf(stderr, " (%g, not %g)", (double)((const float *)g8)[first],
                        (double)((const float *)r8)[first]);
            fputc('\n', stderr);
            fail();
        }
    } else {
        const double e = rel_err(cd_volume_data_const(ref), cd_volume_data_const(got), n);
        if (!(e <= 1e-4)) fprintf(stderr, "%s: order %d: max error %.3g of the range\n", what, (int)ro->interp, e);
        assert_true(e <= 1e-4);
    }
    cd_volume_destroy(ref);
    cd_volume_destroy(got);
    check_validation(ctx);
}

static void check_resample(cd_gpu_context *ctx, const cd_volume *src, const cd_grid *g, const cd_resample_options *ro,
                           const char *what) {
    check_resample_fb(ctx, src, g, ro, what, false);
}

static const cd_interp orders[3] = {CD_INTERP_NEAREST, CD_INTERP_LINEAR, CD_INTERP_CUBIC};

static void resample_suite(cd_gpu_memory_mode mode) {
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(mode, 0);
    static const int64_t shapes[][3] = {{33, 17, 5}, {1, 7, 5},    {13, 1, 1}, {9, 11, 1},
                                        {1, 1, 1},   {20, 24, 16}, {2, 3, 65}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        double a[4][4];
        diag_affine(a, urand(0.6, 1.6), urand(0.6, 1.6), urand(1.0, 4.0));
        cd_volume *v = make_volume(shapes[s], a);
        cd_error err;
        for (int gk = 0; gk < 6; gk++) {
            cd_grid g;
            char what[128];
            switch (gk) {
            case 0: cd_grid_of_volume(v, &g); break; /* same grid: the source's voxels */
            case 1: {                                /* finer spacing */
                double sp[3] = {urand(0.3, 1.0), urand(0.3, 1.0), urand(0.5, 2.0)};
                assert_int_equal(cd_grid_for_spacing(v, sp, &g, &err), CD_OK);
                break;
            }
            case 2: { /* coarser spacing */
                double sp[3] = {urand(1.5, 3.0), urand(1.5, 3.0), urand(2.0, 6.0)};
                assert_int_equal(cd_grid_for_spacing(v, sp, &g, &err), CD_OK);
                break;
            }
            case 3: { /* fixed shape, slices kept: the cirrhosisstage-2d resize */
                int64_t sh[3] = {irand(1, 40), irand(1, 40), shapes[s][2]};
                assert_int_equal(cd_grid_for_shape(v, sh, &g, &err), CD_OK);
                break;
            }
            case 4: { /* whole-voxel shift: exact voxel centres, part outside */
                cd_grid_of_volume(v, &g);
                for (int r = 0; r < 3; r++) g.affine[r][3] += 2 * g.affine[r][0] - 1 * g.affine[r][1];
                break;
            }
            default: { /* rotated, shifted, odd size: fill outside */
                int64_t dims[3] = {irand(1, 30), irand(1, 30), irand(1, 12)};
                rotated_grid(v, dims, urand(0.5, 2.0), 25, &g);
                break;
            }
            }
            for (int o = 0; o < 3; o++) {
                cd_resample_options ro;
                cd_resample_options_init(&ro);
                ro.interp = orders[o];
                ro.fill = gk == 5 && o == 1 ? -7.5 : 0.0;
                ro.threads = 1;
                snprintf(what, sizeof what, "shape %zu grid %d (%lldx%lldx%lld)", s, gk, (long long)g.dims[0],
                         (long long)g.dims[1], (long long)g.dims[2]);
                check_resample(ctx, v, &g, &ro, what);
            }
        }
        cd_volume_destroy(v);
    }
    destroy_ctx(ctx);
}

static void test_resample_shared(void **state) {
    (void)state;
    resample_suite(CD_GPU_MEMORY_SHARED);
}

static void test_resample_staging(void **state) {
    (void)state;
    resample_suite(CD_GPU_MEMORY_STAGING);
}

/* The 32.32 fixed-point variant that devices without shaderFloat64 run (CIRRDATA_VK_NO_FLOAT64=1):
 * the same results, nearest exact (the host hands over the reference's decisions where rounding
 * could flip them: centre ties of axis-aligned grids). */
static void test_resample_fixed_point(void **state) {
    (void)state;
    setenv("CIRRDATA_VK_NO_FLOAT64", "1", 1);
    resample_suite(CD_GPU_MEMORY_SHARED);
    unsetenv("CIRRDATA_VK_NO_FLOAT64");
}

/* int16 with scaling into float32; uint8 masks by nearest into uint8; an int32 source runs through
 * the reference (counted as a CPU fallback). */
static void test_resample_dtypes(void **state) {
    (void)state;
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    cd_error err;
    const int64_t d[3] = {23, 19, 7};
    double a[4][4];
    diag_affine(a, 0.8, 0.8, 3.0);
    cd_volume *i16 = NULL, *m8 = NULL, *i32 = NULL;
    assert_int_equal(cd_volume_create(d, CD_DTYPE_INT16, &i16, &err), CD_OK);
    assert_int_equal(cd_volume_create(d, CD_DTYPE_UINT8, &m8, &err), CD_OK);
    assert_int_equal(cd_volume_create(d, CD_DTYPE_INT32, &i32, &err), CD_OK);
    int16_t *p = cd_volume_data(i16);
    uint8_t *m = cd_volume_data(m8);
    int32_t *q = cd_volume_data(i32);
    for (size_t i = 0; i < cd_volume_count(i16); i++) {
        p[i] = (int16_t)irand(-3000, 3000);
        q[i] = irand(-100000, 100000);
        m[i] = (uint8_t)(irand(0, 3) == 0 ? irand(1, 4) : 0);
    }
    cd_volume_set_affine(i16, a);
    cd_volume_set_affine(m8, a);
    cd_volume_set_affine(i32, a);
    cd_volume_set_scaling(i16, 0.25, -12.0);
    for (int gk = 0; gk < 3; gk++) {
        cd_grid g;
        if (gk == 0) {
            double sp[3] = {0.5, 0.7, 1.1};
            assert_int_equal(cd_grid_for_spacing(i16, sp, &g, &err), CD_OK);
        } else if (gk == 1) {
            int64_t sh[3] = {64, 64, 7};
            assert_int_equal(cd_grid_for_shape(i16, sh, &g, &err), CD_OK);
        } else {
            const int64_t dims[3] = {17, 29, 9};
            rotated_grid(i16, dims, 0.9, 20, &g);
        }
        for (int o = 0; o < 3; o++) {
            cd_resample_options ro;
            cd_resample_options_init(&ro);
            ro.interp = orders[o];
            ro.out_dtype = CD_DTYPE_FLOAT32;
            check_resample(ctx, i16, &g, &ro, "int16 scaled");
        }
        cd_resample_options ro;
        cd_resample_options_init(&ro);
        ro.interp = CD_INTERP_NEAREST;
        ro.out_dtype = CD_DTYPE_UINT8;
        check_resample(ctx, m8, &g, &ro, "uint8 mask");
        ro.interp = CD_INTERP_LINEAR;
        ro.out_dtype = CD_DTYPE_FLOAT32;
        check_resample_fb(ctx, i32, &g, &ro, "int32 (reference)", true);
        cd_gpu_timings t;
        cd_gpu_last_timings(ctx, &t);
        assert_int_equal(t.cpu_fallback, 1);
    }
    cd_volume_destroy(i16);
    cd_volume_destroy(m8);
    cd_volume_destroy(i32);
    destroy_ctx(ctx);
}

/* Masks by linear interpolation per label (recipes with mask_order 1, as nnunet-3d): exactly the
 * reference's labels (cd_preprocess with a spacing recipe), binary and multi-label, on zooms that
 * put many voxels exactly on a 0.5 decision (spacing halved) and on arbitrary ones. */
static void test_mask_linear(void **state) {
    (void)state;
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    cd_error err;
    static const int64_t shapes[][3] = {{21, 18, 11}, {1, 9, 6}, {16, 16, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int labels = 1; labels <= 3; labels += 2)
            for (int z = 0; z < 3; z++) {
                double a[4][4];
                diag_affine(a, 1.5, 1.25, 3.0);
                cd_volume *img = make_volume(shapes[s], a), *mask = NULL, *got = NULL;
                assert_int_equal(cd_volume_create(shapes[s], CD_DTYPE_UINT8, &mask, &err), CD_OK);
                uint8_t *m = cd_volume_data(mask);
                const int64_t *d = shapes[s];
                for (int64_t k = 0, i = 0; k < d[2]; k++)
                    for (int64_t j = 0; j < d[1]; j++)
                        for (int64_t x = 0; x < d[0]; x++, i++) {
                            const double r = ((x - d[0] / 2.0) / 5) * ((x - d[0] / 2.0) / 5) +
                                             ((j - d[1] / 2.0) / 4) * ((j - d[1] / 2.0) / 4) +
                                             ((k - d[2] / 2.0) / 3) * ((k - d[2] / 2.0) / 3);
                            m[i] = r <= 1 ? (uint8_t)(labels == 1 ? 1 : 1 + (x > d[0] / 2) + (j > d[1] / 2)) : 0;
                        }
                cd_volume_set_affine(mask, a);
                cd_recipe r;
                assert_int_equal(cd_recipe_preset("raw", &r, &err), CD_OK);
                r.reorient = false;
                r.resample = CD_RESAMPLE_SPACING;
                r.mask_order = 1;
                r.dtype = CD_DTYPE_FLOAT32;
                if (z == 0)
                    r.spacing[0] = 0.75, r.spacing[1] = 0.625, r.spacing[2] = 1.5; /* exactly 2x */
                else if (z == 1)
                    r.spacing[0] = 1.1, r.spacing[1] = 0.9, r.spacing[2] = 2.2;
                else
                    r.spacing[0] = 2.5, r.spacing[1] = 2.0, r.spacing[2] = 4.0;
                cd_sample *ref = NULL;
                assert_int_equal(cd_preprocess(&r, NULL, img, mask, 1, &ref, &err), CD_OK);
                cd_grid g;
                assert_int_equal(cd_grid_for_spacing(img, r.spacing, &g, &err), CD_OK);
                fallback_mark();
                cd_status st = cd_gpu_resample_mask_linear(ctx, mask, &g, &got, &err);
                if (st != CD_OK) fprintf(stderr, "mask linear: %s\n", err.message);
                assert_int_equal(st, CD_OK);
                check_fallback(0, true);
                int64_t od[3];
                cd_volume_dims(got, od);
                for (int q = 0; q < 3; q++) assert_int_equal(od[q], (int64_t)ref->shape[q]);
                const uint8_t *o = cd_volume_data_const(got);
                size_t bad = 0, fg = 0;
                for (int64_t k = 0, i = 0; k < od[2]; k++)
                    for (int64_t j = 0; j < od[1]; j++)
                        for (int64_t x = 0; x < od[0]; x++, i++) {
                            bad += o[i] != ref->mask[(x * od[1] + j) * od[2] + k];
                            fg += o[i] != 0;
                        }
                if (bad)
                    fprintf(stderr, "mask linear: shape %zu labels %d zoom %d: %zu of %zu voxels differ\n", s, labels,
                            z, bad, (size_t)(od[0] * od[1] * od[2]));
                assert_int_equal(bad, 0);
                cd_sample_destroy(ref);
                cd_volume_destroy(got);
                cd_volume_destroy(img);
                cd_volume_destroy(mask);
                check_validation(ctx);
            }
    destroy_ctx(ctx);
}

/* cd_gpu_normalize on x-fastest voxels against cd_preprocess (normalisation only, float32 output,
 * which stores C order: (x * ny + y) * nz + z). */
static void check_normalize(cd_gpu_context *ctx, const cd_recipe *r, const cd_volume *v, const cd_volume *mask,
                            const char *what) {
    cd_error err;
    cd_sample *s = NULL;
    cd_status st = cd_preprocess(r, NULL, v, mask, 1, &s, &err);
    if (st != CD_OK) fprintf(stderr, "%s: cd_preprocess: %s\n", what, err.message);
    assert_int_equal(st, CD_OK);
    int64_t d[3];
    cd_volume_dims(v, d);
    const size_t n = cd_volume_count(v);
    float *x = malloc(n * sizeof *x), *ref = malloc(n * sizeof *ref);
    memcpy(x, cd_volume_data_const(v), n * sizeof *x);
    const float *c = s->image;
    for (int64_t z = 0, i = 0; z < d[2]; z++)
        for (int64_t y = 0; y < d[1]; y++)
            for (int64_t xx = 0; xx < d[0]; xx++, i++) ref[i] = c[(xx * d[1] + y) * d[2] + z];
    fallback_mark();
    st = cd_gpu_normalize(ctx, r, x, n, mask ? cd_volume_data_const(mask) : NULL, &err);
    if (st != CD_OK) fprintf(stderr, "%s: %s\n", what, err.message);
    assert_int_equal(st, CD_OK);
    check_fallback(0, true);
    const double e = rel_err(ref, x, n);
    if (!(e <= 1e-4)) fprintf(stderr, "%s: max error %.3g of the range\n", what, e);
    assert_true(e <= 1e-4);
    free(x);
    free(ref);
    cd_sample_destroy(s);
    check_validation(ctx);
}

static void normalize_suite(cd_gpu_memory_mode mode) {
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(mode, 0);
    cd_error err;
    static const int64_t shapes[][3] = {{33, 17, 5}, {1, 1, 1}, {7, 1, 3}, {64, 48, 37}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        double a[4][4];
        diag_affine(a, 1, 1, 2);
        cd_volume *v = make_volume(shapes[s], a), *mask = NULL, *empty = NULL;
        /* some exact zeros for the nonzero region */
        float *p = cd_volume_data(v);
        for (size_t i = 0; i < cd_volume_count(v); i += 3) p[i] = 0.0f;
        assert_int_equal(cd_volume_create(shapes[s], CD_DTYPE_UINT8, &mask, &err), CD_OK);
        assert_int_equal(cd_volume_create(shapes[s], CD_DTYPE_UINT8, &empty, &err), CD_OK);
        uint8_t *m = cd_volume_data(mask);
        for (size_t i = 0; i < cd_volume_count(v); i++) m[i] = (uint8_t)(irand(0, 2) == 0);
        memset(cd_volume_data(empty), 0, cd_volume_count(empty));
        cd_volume_set_affine(mask, a);
        cd_volume_set_affine(empty, a);
        cd_recipe r;
        assert_int_equal(cd_recipe_preset("raw", &r, &err), CD_OK);
        r.reorient = false;
        r.dtype = CD_DTYPE_FLOAT32;
        for (int k = 0; k < 8; k++) {
            r.normalize = k < 4 ? CD_NORM_ZSCORE : CD_NORM_PERCENTILE;
            r.region = (cd_norm_region)(k % 3);
            r.has_then = k == 3 || k == 7;
            r.then_mean = 0.5;
            r.then_std = 0.5;
            r.percentiles[0] = k == 5 ? 2.0 : 0.5;
            r.percentiles[1] = k == 5 ? 98.0 : 99.5;
            r.range[0] = k == 6 ? 1.0 : 0.0; /* reversed range: a flip */
            r.range[1] = k == 6 ? -1.0 : 1.0;
            char what[96];
            snprintf(what, sizeof what, "shape %zu norm %d region %d", s, (int)r.normalize, (int)r.region);
            check_normalize(ctx, &r, v, mask, what);
            if (r.region == CD_REGION_MASK) {
                check_normalize(ctx, &r, v, empty, "empty mask region");
                check_normalize(ctx, &r, v, NULL, "mask region without a mask");
            }
        }
        /* the cirrhosisstage-2d map: percentiles to [0, 1], then (x - 0.5) / 0.5 */
        assert_int_equal(cd_recipe_preset("cirrhosisstage-2d", &r, &err), CD_OK);
        r.reorient = false;
        r.resample = CD_RESAMPLE_NONE;
        r.slices = false;
        r.slice_channels = 1;
        r.dtype = CD_DTYPE_FLOAT32;
        check_normalize(ctx, &r, v, NULL, "cirrhosisstage-2d map");
        cd_volume_destroy(v);
        cd_volume_destroy(mask);
        cd_volume_destroy(empty);
    }
    destroy_ctx(ctx);
}

static void test_normalize_shared(void **state) {
    (void)state;
    normalize_suite(CD_GPU_MEMORY_SHARED);
}

static void test_normalize_staging(void **state) {
    (void)state;
    normalize_suite(CD_GPU_MEMORY_STAGING);
}

/* A memory limit below one volume: CD_ERR_NOMEM with a message, then the same context works. */
static void test_memory_limit(void **state) {
    (void)state;
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 64 << 10);
    cd_error err;
    const int64_t d[3] = {40, 40, 20}; /* 128 KB of float32 */
    double a[4][4];
    diag_affine(a, 1, 1, 1);
    cd_volume *v = make_volume(d, a), *out = (cd_volume *)1;
    cd_grid g;
    cd_grid_of_volume(v, &g);
    cd_resample_options ro;
    cd_resample_options_init(&ro);
    assert_int_equal(cd_gpu_resample(ctx, v, &g, &ro, &out, &err), CD_ERR_NOMEM);
    assert_null(out);
    assert_non_null(strstr(err.message, "GPU memory") ? err.message : strstr(err.message, "memory"));
    cd_recipe r;
    assert_int_equal(cd_recipe_preset("synergynet-3d", &r, &err), CD_OK);
    float *x = malloc(cd_volume_count(v) * sizeof *x);
    memcpy(x, cd_volume_data_const(v), cd_volume_count(v) * sizeof *x);
    assert_int_equal(cd_gpu_normalize(ctx, &r, x, cd_volume_count(v), NULL, &err), CD_ERR_NOMEM);
    assert_memory_equal(x, cd_volume_data_const(v), cd_volume_count(v) * sizeof *x); /* untouched */
    free(x);
    /* a small volume still fits */
    const int64_t d2[3] = {9, 7, 5};
    cd_volume *w = make_volume(d2, a);
    cd_grid_of_volume(w, &g);
    check_resample(ctx, w, &g, &ro, "after a failure");
    cd_volume_destroy(v);
    cd_volume_destroy(w);
    destroy_ctx(ctx);
}

/* The converter's device (cd_pp_device over the device policy) when the GPU cannot take a volume (a
 * memory limit below it): the CPU reference's result, a note naming the reason, the GPU path still on
 * for smaller volumes; a normalisation that fails leaves the voxels to the CPU untouched. */
static void test_pp_device_fallback(void **state) {
    (void)state;
    require_vulkan();
    cd_device_policy p;
    cd_device_slot slot;
    cd_pp_device d;
    cd_error err;
    cd_gpu_options go = {0};
    go.memory_limit = 64 << 10;
    assert_int_equal(cd_device_policy_init(&p, CD_DEVICE_VULKAN, &go, "test", &err), CD_OK);
    assert_int_equal(cd_device_slot_open(&p, &slot, &err), CD_OK);
    cd_pp_device_init(&d, &p, &slot);
    const int64_t big[3] = {40, 40, 20}, small[3] = {9, 7, 5};
    double a[4][4];
    diag_affine(a, 1, 1, 2);
    cd_volume *v = make_volume(big, a), *ref = NULL, *got = NULL;
    cd_grid g;
    const double sp[3] = {0.8, 0.9, 1.7};
    assert_int_equal(cd_grid_for_spacing(v, sp, &g, &err), CD_OK);
    cd_resample_options ro;
    cd_resample_options_init(&ro);
    assert_int_equal(cd_resample(v, &g, &ro, &ref, &err), CD_OK);
    assert_int_equal(cd_pp_resample(&d, v, &g, &ro, &got, &err), CD_OK);
    assert_memory_equal(cd_volume_data_const(ref), cd_volume_data_const(got), cd_volume_count(ref) * sizeof(float));
    assert_non_null(strstr(p.note, "the GPU could not resample a volume"));
    assert_true(cd_device_policy_active(&p));
    assert_int_equal(atomic_load(&p.cpu_items), 1);
    assert_string_equal(cd_pp_device_used(&d), "cpu");
    cd_recipe r;
    assert_int_equal(cd_recipe_preset("synergynet-3d", &r, &err), CD_OK);
    float *x = malloc(cd_volume_count(v) * sizeof *x);
    memcpy(x, cd_volume_data_const(v), cd_volume_count(v) * sizeof *x);
    assert_false(cd_pp_normalize(&d, &r, x, cd_volume_count(v), NULL));
    assert_memory_equal(x, cd_volume_data_const(v), cd_volume_count(v) * sizeof *x);
    free(x);
    cd_volume_destroy(ref);
    cd_volume_destroy(got);
    cd_volume_destroy(v);
    /* a volume that fits runs on the device */
    v = make_volume(small, a);
    cd_grid_of_volume(v, &g);
    fallback_mark();
    assert_int_equal(cd_pp_resample(&d, v, &g, &ro, &got, &err), CD_OK);
    check_fallback(0, true);
    assert_string_equal(cd_pp_device_used(&d), "vulkan");
    cd_volume_destroy(got);
    cd_volume_destroy(v);
    check_validation(slot.gpu);
    cd_device_slot_close(&slot);
    cd_device_policy_free(&p);
    check_validation(NULL);
}

/* Resamples a small volume through a fresh policy with CIRRDATA_TEST_DEVICE_LOST=lost and checks the
 * result against the CPU reference; returns the policy's state through the out parameters. */
static void lost_device_run(const char *lost, uint64_t *resets, bool *active, char *note, size_t note_len) {
    setenv("CIRRDATA_TEST_DEVICE_LOST", lost, 1);
    cd_device_policy p;
    cd_device_slot slot;
    cd_pp_device d;
    cd_error err;
    assert_int_equal(cd_device_policy_init(&p, CD_DEVICE_VULKAN, NULL, "test", &err), CD_OK);
    unsetenv("CIRRDATA_TEST_DEVICE_LOST");
    assert_int_equal(cd_device_slot_open(&p, &slot, &err), CD_OK);
    cd_pp_device_init(&d, &p, &slot);
    const int64_t dims[3] = {9, 7, 5};
    double a[4][4];
    diag_affine(a, 1, 1, 2);
    cd_volume *v = make_volume(dims, a), *ref = NULL, *got = NULL;
    cd_grid g;
    const double sp[3] = {0.8, 0.9, 1.7};
    assert_int_equal(cd_grid_for_spacing(v, sp, &g, &err), CD_OK);
    cd_resample_options ro;
    cd_resample_options_init(&ro);
    ro.interp = CD_INTERP_NEAREST; /* exact on both: the result is the same whoever computed it */
    assert_int_equal(cd_resample(v, &g, &ro, &ref, &err), CD_OK);
    assert_int_equal(cd_pp_resample(&d, v, &g, &ro, &got, &err), CD_OK);
    assert_memory_equal(cd_volume_data_const(ref), cd_volume_data_const(got), cd_volume_count(ref) * sizeof(float));
    *resets = atomic_load(&p.resets);
    *active = cd_device_policy_active(&p);
    cd_device_policy_describe(&p, note, note_len, NULL, 0);
    cd_volume_destroy(ref);
    cd_volume_destroy(got);
    cd_volume_destroy(v);
    check_validation(slot.gpu);
    cd_device_slot_close(&slot);
    cd_device_policy_free(&p);
}

/* The device policy itself (cirrdata/device.h): resolution of cpu / vulkan / auto and an unknown value,
 * and a lost device (injected): the context created again once and the call retried; lost again:
 * the device given up, the CPU computes, the note says so. */
static void test_device_policy(void **state) {
    (void)state;
    require_vulkan();
    cd_device_policy p;
    cd_error err;
    assert_int_equal(cd_device_policy_init(&p, CD_DEVICE_CPU, NULL, "test", &err), CD_OK);
    assert_false(cd_device_policy_active(&p));
    cd_device_policy_free(&p);
    assert_int_equal(cd_device_policy_init(&p, (cd_device)7, NULL, "test", &err), CD_ERR_ARG);
    assert_non_null(strstr(err.message, "unknown device 7"));
    cd_device_policy_free(&p);
    cd_gpu_options none = {0};
    none.device = "no-such-device-anywhere";
    assert_int_not_equal(cd_device_policy_init(&p, CD_DEVICE_VULKAN, &none, "test", &err), CD_OK);
    assert_non_null(strstr(err.message, "test: device 'vulkan': "));
    assert_non_null(strstr(err.message, "no-such-device-anywhere"));
    cd_device_policy_free(&p);
    assert_int_equal(cd_device_policy_init(&p, CD_DEVICE_AUTO, &none, "test", &err), CD_OK);
    assert_false(cd_device_policy_active(&p));
    assert_non_null(strstr(p.device_name, "cpu (vulkan not used: "));
    cd_device_policy_free(&p);
    cd_device parsed;
    assert_int_equal(cd_device_parse("auto", &parsed, &err), CD_OK);
    assert_int_equal(parsed, CD_DEVICE_AUTO);
    assert_int_equal(cd_device_parse(NULL, &parsed, &err), CD_OK);
    assert_int_equal(parsed, CD_DEVICE_CPU);
    assert_int_equal(cd_device_parse("gpu", &parsed, &err), CD_ERR_ARG);
    assert_string_equal(cd_device_name(CD_DEVICE_VULKAN), "vulkan");

    uint64_t resets;
    bool active;
    char note[384];
    lost_device_run("1", &resets, &active, note, sizeof note);
    assert_int_equal(resets, 1);
    assert_true(active);
    assert_non_null(strstr(note, "its context was created again"));
    lost_device_run("2", &resets, &active, note, sizeof note);
    assert_int_equal(resets, 1);
    assert_false(active);
    assert_non_null(strstr(note, "lost again"));
    check_validation(NULL);
}

int main(void) {
    if (gpu_test_init()) return 1;
    g_rng = 0x9E3779B97F4A7C15ull;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resample_shared),      cmocka_unit_test(test_resample_staging),
        cmocka_unit_test(test_resample_fixed_point), cmocka_unit_test(test_resample_dtypes),
        cmocka_unit_test(test_mask_linear),          cmocka_unit_test(test_normalize_shared),
        cmocka_unit_test(test_normalize_staging),    cmocka_unit_test(test_memory_limit),
        cmocka_unit_test(test_pp_device_fallback),   cmocka_unit_test(test_device_policy),
    };
    return gpu_test_result(cmocka_run_group_tests(tests, NULL, NULL));
}
