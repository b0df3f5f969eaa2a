/* Unit tests: world-space resampling and grid construction, with hand-computed expected values. */
#include "test_util.h"

#include <math.h>

#include <cirrdata/cirrdata.h>

/* A float32 volume with small-integer values (sums of them are exact in double) and an LPS-like,
 * anisotropic affine with an offset. */
static cd_volume *make_f32(int64_t nx, int64_t ny, int64_t nz) {
    cd_volume *v;
    int64_t dims[3] = {nx, ny, nz};
    assert_int_equal(cd_volume_create(dims, CD_DTYPE_FLOAT32, &v, NULL), CD_OK);
    float *d = cd_volume_data(v);
    for (size_t i = 0; i < cd_volume_count(v); i++) d[i] = (float)((i * 7919) % 101) - 50.0f;
    double a[4][4] = {{-0.8, 0, 0, 100}, {0, -1.2, 0, 120}, {0, 0, 3.0, -50}, {0, 0, 0, 1}};
    cd_volume_set_affine(v, a);
    return v;
}

static float at(const cd_volume *v, int64_t i, int64_t j, int64_t k) {
    int64_t d[3];
    cd_volume_dims(v, d);
    return ((const float *)cd_volume_data_const(v))[i + d[0] * (j + d[1] * k)];
}

/* The grid whose voxel v sits at source voxel position m * v + t (diagonal m). */
static cd_grid shifted_grid(const cd_volume *v, const int64_t dims[3], const double m[3], const double t[3]) {
    cd_grid g;
    double a[4][4];
    cd_volume_affine(v, a);
    memcpy(g.dims, dims, sizeof g.dims);
    memset(g.affine, 0, sizeof g.affine);
    for (int r = 0; r < 3; r++) {
        g.affine[r][3] = a[r][3];
        for (int c = 0; c < 3; c++) {
            g.affine[r][c] = a[r][c] * m[c];
            g.affine[r][3] += a[r][c] * t[c];
        }
    }
    g.affine[3][3] = 1.0;
    return g;
}

static cd_volume *resample(const cd_volume *v, const cd_grid *g, cd_interp interp, cd_dtype odt, double fill,
                           int threads) {
    cd_resample_options o;
    cd_resample_options_init(&o);
    o.interp = interp;
    o.out_dtype = odt;
    o.fill = fill;
    o.threads = threads;
    cd_volume *r = NULL;
    cd_error err;
    cd_status st = cd_resample(v, g, &o, &r, &err);
    if (st != CD_OK) fprintf(stderr, "cd_resample: %s\n", err.message);
    assert_int_equal(st, CD_OK);
    return r;
}

static void test_identity(void **state) {
    (void)state;
    cd_volume *v = make_f32(9, 7, 5);
    cd_grid g;
    cd_grid_of_volume(v, &g);
    cd_volume *r0 = resample(v, &g, CD_INTERP_NEAREST, CD_DTYPE_INVALID, 0, 1);
    cd_volume *r1 = resample(v, &g, CD_INTERP_LINEAR, CD_DTYPE_INVALID, 0, 1);
    cd_volume *r3 = resample(v, &g, CD_INTERP_CUBIC, CD_DTYPE_INVALID, 0, 1);
    assert_int_equal(cd_volume_dtype(r0), CD_DTYPE_FLOAT32);
    /* Nearest and trilinear at integer positions are exact (weights 1 and 0). */
    assert_memory_equal(cd_volume_data(r0), cd_volume_data(v), cd_volume_nbytes(v));
    assert_memory_equal(cd_volume_data(r1), cd_volume_data(v), cd_volume_nbytes(v));
    /* The B-spline interpolates its samples: exact up to round-off of the prefilter. */
    for (int64_t k = 0; k < 5; k++)
        for (int64_t j = 0; j < 7; j++)
            for (int64_t i = 0; i < 9; i++) assert_true(fabsf(at(r3, i, j, k) - at(v, i, j, k)) < 1e-4f);
    double a[4][4], b[4][4], sp[3];
    cd_volume_affine(v, a);
    cd_volume_affine(r1, b);
    assert_memory_equal(a, b, sizeof a);
    cd_volume_spacing(r1, sp);
    assert_true(fabs(sp[0] - 0.8) < 1e-12 && fabs(sp[1] - 1.2) < 1e-12 && fabs(sp[2] - 3.0) < 1e-12);
    cd_volume_destroy(r0);
    cd_volume_destroy(r1);
    cd_volume_destroy(r3);
    cd_volume_destroy(v);
}

static void test_shift_one_voxel(void **state) {
    (void)state;
    cd_volume *v = make_f32(6, 5, 4);
    int64_t dims[3] = {6, 5, 4};
    const double one[3] = {1, 1, 1}, t[3] = {1, 0, -1};
    cd_grid g = shifted_grid(v, dims, one, t);
    for (int order = 0; order <= 1; order++) {
        cd_volume *r = resample(v, &g, order ? CD_INTERP_LINEAR : CD_INTERP_NEAREST, CD_DTYPE_FLOAT32, -7.0, 2);
        for (int64_t k = 0; k < 4; k++)
            for (int64_t j = 0; j < 5; j++)
                for (int64_t i = 0; i < 6; i++) {
                    /* Output (i, j, k) reads source (i + 1, j, k - 1); beyond the edges: fill. */
                    float want = (i + 1 < 6 && k >= 1) ? at(v, i + 1, j, k - 1) : -7.0f;
                    assert_true(at(r, i, j, k) == want);
                }
        cd_volume_destroy(r);
    }
    cd_volume_destroy(v);
}

static void test_linear_half_voxel(void **state) {
    (void)state;
    cd_volume *v = make_f32(5, 4, 3);
    int64_t dims[3] = {4, 3, 2};
    const double one[3] = {1, 1, 1}, half[3] = {0.5, 0.5, 0.5};
    cd_grid g = shifted_grid(v, dims, one, half);
    cd_volume *r = resample(v, &g, CD_INTERP_LINEAR, CD_DTYPE_FLOAT64, 0, 1);
    const double *d = cd_volume_data(r);
    for (int64_t k = 0; k < 2; k++)
        for (int64_t j = 0; j < 3; j++)
            for (int64_t i = 0; i < 4; i++) {
                double sum = 0;
                for (int c = 0; c < 8; c++) sum += at(v, i + (c & 1), j + ((c >> 1) & 1), k + (c >> 2));
                assert_true(d[i + 4 * (j + 3 * k)] == sum / 8.0);
            }
    cd_volume_destroy(r);
    /* Half a voxel along x only: the mean of two neighbours. */
    const double hx[3] = {0.5, 0, 0};
    int64_t dims2[3] = {4, 4, 3};
    g = shifted_grid(v, dims2, one, hx);
    r = resample(v, &g, CD_INTERP_LINEAR, CD_DTYPE_FLOAT64, 0, 1);
    d = cd_volume_data(r);
    for (int64_t k = 0; k < 3; k++)
        for (int64_t j = 0; j < 4; j++)
            for (int64_t i = 0; i < 4; i++)
                assert_true(d[i + 4 * (j + 4 * k)] == 0.5 * ((double)at(v, i, j, k) + (double)at(v, i + 1, j, k)));
    cd_volume_destroy(r);
    cd_volume_destroy(v);
}

static void test_nearest_mask_exact(void **state) {
    (void)state;
    int64_t dims[3] = {8, 6, 4};
    cd_volume *m;
    assert_int_equal(cd_volume_create(dims, CD_DTYPE_UINT8, &m, NULL), CD_OK);
    uint8_t *d = cd_volume_data(m);
    for (size_t i = 0; i < cd_volume_count(m); i++) d[i] = (uint8_t)((i * 31) % 5);
    cd_volume_set_scaling(m, 2.0, 1.0);
    /* Upsampling by 2: output i sits at i / 2; ties (odd i) go up, as floor(c + 0.5) does. */
    int64_t odims[3] = {15, 11, 7};
    const double half[3] = {0.5, 0.5, 0.5}, zero[3] = {0, 0, 0};
    cd_grid g = shifted_grid(m, odims, half, zero);
    cd_volume *r = resample(m, &g, CD_INTERP_NEAREST, CD_DTYPE_INVALID, 0, 3);
    assert_int_equal(cd_volume_dtype(r), CD_DTYPE_UINT8);
    double slope, inter;
    cd_volume_scaling(r, &slope, &inter);
    assert_true(cd_volume_has_scaling(r) && slope == 2.0 && inter == 1.0);
    const uint8_t *o = cd_volume_data(r);
    for (int64_t k = 0; k < 7; k++)
        for (int64_t j = 0; j < 11; j++)
            for (int64_t i = 0; i < 15; i++) {
                int64_t si = (i + 1) / 2, sj = (j + 1) / 2, sk = (k + 1) / 2;
                assert_int_equal(o[i + 15 * (j + 11 * k)], d[si + 8 * (sj + 6 * sk)]);
            }
    cd_volume_destroy(r);
    /* Into float32: physical values; the fill stays physical. */
    int64_t big[3] = {17, 11, 7};
    g = shifted_grid(m, big, half, zero);
    r = resample(m, &g, CD_INTERP_NEAREST, CD_DTYPE_FLOAT32, -1.0, 1);
    assert_false(cd_volume_has_scaling(r));
    const float *f = cd_volume_data(r);
    assert_true(f[0] == (float)(d[0] * 2.0 + 1.0));
    assert_true(f[16] == -1.0f); /* i = 16 sits at 8.0 > 7 */
    cd_volume_destroy(r);
    /* A raw copy keeps the scaling, so the fill is stored as the raw value that scales to it. */
    r = resample(m, &g, CD_INTERP_NEAREST, CD_DTYPE_INVALID, 7.0, 1);
    assert_int_equal(((const uint8_t *)cd_volume_data(r))[16], 3);
    cd_volume_destroy(r);
    cd_volume_destroy(m);
}

static void test_outside_fill_and_rounding(void **state) {
    (void)state;
    cd_volume *v = make_f32(4, 4, 4);
    int64_t dims[3] = {3, 3, 3};
    const double one[3] = {1, 1, 1}, far[3] = {100, 0, 0};
    cd_grid g = shifted_grid(v, dims, one, far);
    for (int order = 0; order <= 3; order += (order == 1 ? 2 : 1)) {
        cd_volume *r = resample(v, &g, (cd_interp)order, CD_DTYPE_INT16, 5.4, 1);
        const int16_t *d = cd_volume_data(r);
        for (int i = 0; i < 27; i++) assert_int_equal(d[i], 5);
        cd_volume_destroy(r);
    }
    /* Just outside (beyond the 1e-4 edge band) is fill; inside the band snaps onto the edge. */
    const double past[3] = {3.001, 0, 0}, band[3] = {3.00001, 0, 0};
    int64_t d1[3] = {1, 1, 1};
    g = shifted_grid(v, d1, one, past);
    cd_volume *r = resample(v, &g, CD_INTERP_LINEAR, CD_DTYPE_FLOAT32, -3, 1);
    assert_true(at(r, 0, 0, 0) == -3.0f);
    cd_volume_destroy(r);
    g = shifted_grid(v, d1, one, band);
    r = resample(v, &g, CD_INTERP_LINEAR, CD_DTYPE_FLOAT32, -3, 1);
    assert_true(at(r, 0, 0, 0) == at(v, 3, 0, 0));
    cd_volume_destroy(r);
    /* Integer outputs round half away from zero and clamp. */
    float *s = cd_volume_data(v);
    s[0] = 2.5f;
    s[1] = -2.5f;
    s[2] = 1000.0f;
    s[3] = -1000.0f;
    cd_grid_of_volume(v, &g);
    r = resample(v, &g, CD_INTERP_LINEAR, CD_DTYPE_INT8, 0, 1);
    const int8_t *q = cd_volume_data(r);
    assert_int_equal(q[0], 3);
    assert_int_equal(q[1], -3);
    assert_int_equal(q[2], 127);
    assert_int_equal(q[3], -128);
    cd_volume_destroy(r);
    r = resample(v, &g, CD_INTERP_LINEAR, CD_DTYPE_UINT8, 0, 1);
    const uint8_t *u = cd_volume_data(r);
    assert_int_equal(u[0], 3);
    assert_int_equal(u[1], 0);
    assert_int_equal(u[2], 255);
    cd_volume_destroy(r);
    /* float16 output: 2.5 = 0x4100, -2.5 = 0xc100, 1000 = 0x63d0. */
    r = resample(v, &g, CD_INTERP_NEAREST, CD_DTYPE_FLOAT16, 0, 1);
    const uint16_t *hf = cd_volume_data(r);
    assert_int_equal(hf[0], 0x4100);
    assert_int_equal(hf[1], 0xc100);
    assert_int_equal(hf[2], 0x63d0);
    cd_volume_destroy(r);
    cd_volume_destroy(v);
}

static void test_scaling_applied(void **state) {
    (void)state;
    int64_t dims[3] = {4, 3, 2};
    cd_volume *v;
    assert_int_equal(cd_volume_create(dims, CD_DTYPE_INT16, &v, NULL), CD_OK);
    int16_t *d = cd_volume_data(v);
    for (int i = 0; i < 24; i++) d[i] = (int16_t)(i * 3 - 20);
    cd_volume_set_scaling(v, 0.5, 10.0);
    cd_grid g;
    cd_grid_of_volume(v, &g);
    for (int order = 1; order <= 3; order += 2) {
        cd_volume *r = resample(v, &g, (cd_interp)order, CD_DTYPE_INVALID, 0, 1);
        assert_int_equal(cd_volume_dtype(r), CD_DTYPE_FLOAT32);
        assert_false(cd_volume_has_scaling(r));
        const float *f = cd_volume_data(r);
        for (int i = 0; i < 24; i++) assert_true(fabs(f[i] - (d[i] * 0.5 + 10.0)) < 1e-4);
        cd_volume_destroy(r);
    }
    cd_volume_destroy(v);
}

static void test_threads_identical(void **state) {
    (void)state;
    cd_volume *v = make_f32(23, 19, 17);
    /* An oblique grid: rotation about z and y plus an anisotropic zoom. */
    cd_grid g;
    double a[4][4];
    cd_volume_affine(v, a);
    const double cz = cos(0.3), sz = sin(0.3), cy = cos(0.2), sy = sin(0.2);
    double r[3][3] = {{cz * cy, -sz, cz * sy}, {sz * cy, cz, sz * sy}, {-sy, 0, cy}};
    double zoom[3] = {0.7, 1.3, 0.9};
    g.dims[0] = 29;
    g.dims[1] = 17;
    g.dims[2] = 13;
    memset(g.affine, 0, sizeof g.affine);
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            for (int q = 0; q < 3; q++) g.affine[i][j] += a[i][q] * r[q][j] * zoom[j];
        }
        g.affine[i][3] = a[i][3] + 1.7 * a[i][0] - 2.1 * a[i][1] + 0.3 * a[i][2];
    }
    g.affine[3][3] = 1;
    const cd_interp orders[3] = {CD_INTERP_NEAREST, CD_INTERP_LINEAR, CD_INTERP_CUBIC};
    for (int o = 0; o < 3; o++) {
        cd_volume *r1 = resample(v, &g, orders[o], CD_DTYPE_INVALID, -1, 1);
        for (int t = 2; t <= 3; t++) {
            cd_volume *rt = resample(v, &g, orders[o], CD_DTYPE_INVALID, -1, t);
            assert_memory_equal(cd_volume_data(r1), cd_volume_data(rt), cd_volume_nbytes(r1));
            cd_volume_destroy(rt);
        }
        /* Some voxels are inside and some outside, so both paths ran. */
        const float *f = cd_volume_data(r1);
        size_t fills = 0;
        for (size_t i = 0; i < cd_volume_count(r1); i++) fills += f[i] == -1.0f;
        assert_true(fills > 0 && fills < cd_volume_count(r1));
        cd_volume_destroy(r1);
    }
    cd_volume_destroy(v);
}

static void test_grid_for_spacing_and_shape(void **state) {
    (void)state;
    int64_t dims[3] = {10, 20, 5};
    cd_volume *v;
    assert_int_equal(cd_volume_create(dims, CD_DTYPE_UINT8, &v, NULL), CD_OK);
    /* x flipped (L), 2 x 1 x 3 mm. Centre of voxel (4.5, 9.5, 2): (-9+40, 9.5-10, 6+5) = (31, -0.5, 11). */
    double a[4][4] = {{-2, 0, 0, 40}, {0, 1, 0, -10}, {0, 0, 3, 5}, {0, 0, 0, 1}};
    cd_volume_set_affine(v, a);
    cd_grid g;
    const double sp[3] = {1, 1, 1};
    assert_int_equal(cd_grid_for_spacing(v, sp, &g, NULL), CD_OK);
    assert_int_equal(g.dims[0], 20);
    assert_int_equal(g.dims[1], 20);
    assert_int_equal(g.dims[2], 15);
    /* Directions kept; new centre (9.5, 9.5, 7) maps to (31, -0.5, 11). */
    const double want[4][4] = {{-1, 0, 0, 40.5}, {0, 1, 0, -10}, {0, 0, 1, 4}, {0, 0, 0, 1}};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) assert_true(fabs(g.affine[i][j] - want[i][j]) < 1e-12);
    /* Rounding: 10 * 2 / 3 = 6.67 -> 7, 20 / 3 -> 7, 5 * 3 / 100 -> 0 -> 1. */
    const double sp2[3] = {3, 3, 100};
    assert_int_equal(cd_grid_for_spacing(v, sp2, &g, NULL), CD_OK);
    assert_int_equal(g.dims[0], 7);
    assert_int_equal(g.dims[1], 7);
    assert_int_equal(g.dims[2], 1);
    assert_true(fabs(g.affine[0][0] + 3) < 1e-12 && fabs(g.affine[2][2] - 100) < 1e-12);
    /* Centre (3, 3, 0) -> (31, -0.5, 11): x0 = 31 + 9, y0 = -0.5 - 9, z0 = 11. */
    assert_true(fabs(g.affine[0][3] - 40) < 1e-12 && fabs(g.affine[1][3] + 9.5) < 1e-12 &&
                fabs(g.affine[2][3] - 11) < 1e-12);

    /* Shape: spacing n * old / new = (4, 2, 3); centre (2, 4.5, 2) -> (31, -0.5, 11). */
    const int64_t shape[3] = {5, 10, 5};
    assert_int_equal(cd_grid_for_shape(v, shape, &g, NULL), CD_OK);
    assert_memory_equal(g.dims, shape, sizeof shape);
    const double want2[4][4] = {{-4, 0, 0, 39}, {0, 2, 0, -9.5}, {0, 0, 3, 5}, {0, 0, 0, 1}};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) assert_true(fabs(g.affine[i][j] - want2[i][j]) < 1e-12);
    cd_grid_of_volume(v, &g);
    assert_memory_equal(g.dims, dims, sizeof dims);
    assert_memory_equal(g.affine, a, sizeof a);
    cd_volume_destroy(v);
}

static void test_bad_args(void **state) {
    (void)state;
    cd_volume *v = make_f32(3, 3, 3), *r = NULL;
    cd_grid g;
    cd_grid_of_volume(v, &g);
    cd_error err;
    assert_int_equal(cd_resample(NULL, &g, NULL, &r, &err), CD_ERR_ARG);
    assert_int_equal(cd_resample(v, NULL, NULL, &r, &err), CD_ERR_ARG);
    assert_int_equal(cd_resample(v, &g, NULL, NULL, &err), CD_ERR_ARG);
    g.dims[1] = 0;
    assert_int_equal(cd_resample(v, &g, NULL, &r, &err), CD_ERR_ARG);
    assert_non_null(strstr(err.message, "dim 1"));
    cd_grid_of_volume(v, &g);
    cd_resample_options o;
    cd_resample_options_init(&o);
    o.interp = (cd_interp)2;
    assert_int_equal(cd_resample(v, &g, &o, &r, &err), CD_ERR_ARG);
    cd_resample_options_init(&o);
    o.threads = -1;
    assert_int_equal(cd_resample(v, &g, &o, &r, &err), CD_ERR_ARG);
    cd_resample_options_init(&o);
    o.fill = NAN;
    o.out_dtype = CD_DTYPE_INT16;
    assert_int_equal(cd_resample(v, &g, &o, &r, &err), CD_ERR_ARG);
    g.affine[0][0] = NAN;
    assert_int_equal(cd_resample(v, &g, NULL, &r, &err), CD_ERR_ARG);
    assert_null(r);
    double sing[4][4] = {{1, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
    cd_volume_set_affine(v, sing);
    cd_grid_of_volume(v, &g);
    g.affine[1][1] = 1;
    assert_int_equal(cd_resample(v, &g, NULL, &r, &err), CD_ERR_ARG);
    const double sp[3] = {1, 1, 1}, bad_sp[3] = {1, 0, 1};
    assert_int_equal(cd_grid_for_spacing(v, sp, &g, &err), CD_ERR_ARG); /* degenerate axis 1 */
    cd_volume_destroy(v);
    v = make_f32(3, 3, 3);
    assert_int_equal(cd_grid_for_spacing(v, bad_sp, &g, &err), CD_ERR_ARG);
    assert_int_equal(cd_grid_for_spacing(NULL, sp, &g, &err), CD_ERR_ARG);
    assert_int_equal(cd_grid_for_spacing(v, sp, NULL, &err), CD_ERR_ARG);
    const double tiny[3] = {1e-9, 1, 1};
    assert_int_equal(cd_grid_for_spacing(v, tiny, &g, &err), CD_ERR_LIMIT);
    const int64_t zero_shape[3] = {4, 0, 4};
    assert_int_equal(cd_grid_for_shape(v, zero_shape, &g, &err), CD_ERR_ARG);
    assert_int_equal(cd_grid_for_shape(v, NULL, &g, &err), CD_ERR_ARG);
    cd_volume_destroy(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_shift_one_voxel),
        cmocka_unit_test(test_linear_half_voxel),
        cmocka_unit_test(test_nearest_mask_exact),
        cmocka_unit_test(test_outside_fill_and_rounding),
        cmocka_unit_test(test_scaling_applied),
        cmocka_unit_test(test_threads_identical),
        cmocka_unit_test(test_grid_for_spacing_and_shape),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
