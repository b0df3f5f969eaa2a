/* Unit tests: augmentation pipelines (parsing, built-ins), parameter draws (determinism, frequencies,
 * ranges), the fused spatial pass (exact permutations, hand-computed trilinear values, nearest masks,
 * source box) and the intensity ops against hand-computed values. */
#include "test_util.h"

#include <math.h>
#include <stdbool.h>

#include <cirrdata/cirrdata.h>

#define DEG (3.14159265358979323846 / 180.0)

static cd_aug_params identity(double cx, double cy, double cz) {
    cd_aug_params a;
    memset(&a, 0, sizeof a);
    for (int i = 0; i < 3; i++) a.matrix[i][i] = 1.0;
    a.center[0] = cx;
    a.center[1] = cy;
    a.center[2] = cz;
    a.scale = 1.0;
    a.blur_truncate = 4.0;
    return a;
}

/* A source volume with distinct, non-linear values. */
#define SX 12
#define SY 10
#define SZ 8
static float sval(int x, int y, int z) {
    return (float)(x * x + 3 * y + 0.5 * z * z) + 0.001f * (float)(x * 100 + y * 10 + z);
}
static void make_source(float *s, uint8_t *m) {
    for (int x = 0; x < SX; x++)
        for (int y = 0; y < SY; y++)
            for (int z = 0; z < SZ; z++) {
                s[(x * SY + y) * SZ + z] = sval(x, y, z);
                if (m) m[(x * SY + y) * SZ + z] = (uint8_t)((x * 7 + y * 3 + z) % 5);
            }
}

static void test_identity_exact(void **state) {
    (void)state;
    float src[SX * SY * SZ];
    uint8_t msk[SX * SY * SZ];
    make_source(src, msk);
    const int64_t lo[3] = {0, 0, 0}, shape[3] = {SX, SY, SZ}, patch[3] = {4, 5, 3};
    /* patch voxel o <- source voxel (3, 2, 4) + o: centre = corner + (patch - 1) / 2 */
    cd_aug_params a = identity(3 + 1.5, 2 + 2.0, 4 + 1.0);
    float out[60];
    uint8_t om[60];
    cd_error err;
    assert_int_equal(cd_aug_apply_spatial(&a, src, msk, 1, lo, shape, patch, out, om, &err), CD_OK);
    for (int x = 0; x < 4; x++)
        for (int y = 0; y < 5; y++)
            for (int z = 0; z < 3; z++) {
                int o = (x * 5 + y) * 3 + z, s = ((3 + x) * SY + 2 + y) * SZ + 4 + z;
                assert_true(out[o] == src[s]);
                assert_int_equal(om[o], msk[s]);
            }
    /* the "none" pipeline draws the identity */
    cd_aug_pipeline *p;
    assert_int_equal(cd_aug_pipeline_load("none", &p, &err), CD_OK);
    cd_aug_params d;
    const double c[3] = {4.5, 4.0, 5.0};
    cd_aug_draw(p, 1, 2, 3, patch, c, &d);
    assert_memory_equal(d.matrix, a.matrix, sizeof a.matrix);
    assert_false(d.noise || d.blur || d.brightness || d.contrast || d.lowres || d.gamma || d.gamma_invert || d.elastic);
    float out2[60];
    assert_int_equal(cd_aug_apply_spatial(&d, src, NULL, 1, lo, shape, patch, out2, NULL, &err), CD_OK);
    assert_memory_equal(out, out2, sizeof out);
    /* a box offset: the same patch read from a sub-box */
    const int64_t blo[3] = {2, 1, 3}, bshape[3] = {7, 8, 5};
    float sub[7 * 8 * 5];
    for (int x = 0; x < 7; x++)
        for (int y = 0; y < 8; y++)
            for (int z = 0; z < 5; z++) sub[(x * 8 + y) * 5 + z] = src[((x + 2) * SY + y + 1) * SZ + z + 3];
    assert_int_equal(cd_aug_apply_spatial(&a, sub, NULL, 1, blo, bshape, patch, out2, NULL, &err), CD_OK);
    assert_memory_equal(out, out2, sizeof out);
    cd_aug_pipeline_destroy(p);
}

static void test_mirror_and_rot90(void **state) {
    (void)state;
    float src[SX * SY * SZ];
    uint8_t msk[SX * SY * SZ];
    make_source(src, msk);
    const int64_t lo[3] = {0, 0, 0}, shape[3] = {SX, SY, SZ}, patch[3] = {4, 4, 3};
    float out[48];
    uint8_t om[48];
    cd_error err;
    /* mirror x and z about centre (5.5, 4.5, 3): o -> (5.5 - (x - 1.5), 4.5 + (y - 1.5), 3 - (z - 1)) */
    cd_aug_params a = identity(5.5, 4.5, 3.0);
    a.matrix[0][0] = -1;
    a.matrix[2][2] = -1;
    a.mirror[0] = a.mirror[2] = true;
    assert_int_equal(cd_aug_apply_spatial(&a, src, msk, 1, lo, shape, patch, out, om, &err), CD_OK);
    for (int x = 0; x < 4; x++)
        for (int y = 0; y < 4; y++)
            for (int z = 0; z < 3; z++) {
                int o = (x * 4 + y) * 3 + z;
                int sx = 7 - x, sy = 3 + y, sz = 4 - z;
                assert_true(out[o] == sval(sx, sy, sz));
                assert_int_equal(om[o], msk[(sx * SY + sy) * SZ + sz]);
            }
    /* 90 degrees about z: R = [[0,-1,0],[1,0,0],[0,0,1]]: src = c + (-(y - 1.5), x - 1.5, z - 1) */
    a = identity(5.5, 4.5, 3.0);
    a.matrix[0][0] = 0;
    a.matrix[0][1] = -1;
    a.matrix[1][0] = 1;
    a.matrix[1][1] = 0;
    assert_int_equal(cd_aug_apply_spatial(&a, src, msk, 1, lo, shape, patch, out, om, &err), CD_OK);
    for (int x = 0; x < 4; x++)
        for (int y = 0; y < 4; y++)
            for (int z = 0; z < 3; z++) {
                int o = (x * 4 + y) * 3 + z;
                int sx = 7 - y, sy = 3 + x, sz = 2 + z;
                assert_true(out[o] == sval(sx, sy, sz));
                assert_int_equal(om[o], msk[(sx * SY + sy) * SZ + sz]);
            }
    /* a patch partly outside the source (x positions -1, 0, 1, 2): zeros there */
    a = identity(0.5, 4.5, 3.0);
    assert_int_equal(cd_aug_apply_spatial(&a, src, msk, 1, lo, shape, patch, out, om, &err), CD_OK);
    for (int y = 0; y < 4; y++)
        for (int z = 0; z < 3; z++) {
            assert_true(out[(0 * 4 + y) * 3 + z] == 0.0f);
            assert_int_equal(om[(0 * 4 + y) * 3 + z], 0);
            for (int x = 1; x < 4; x++) {
                assert_true(out[(x * 4 + y) * 3 + z] == sval(x - 1, 3 + y, 2 + z));
                assert_int_equal(om[(x * 4 + y) * 3 + z], msk[((x - 1) * SY + 3 + y) * SZ + 2 + z]);
            }
        }
    /* the same through the interpolating paths (a shift of 0.25 voxel in y): x = -1 reads 0 */
    a = identity(0.5, 4.75, 3.0);
    assert_int_equal(cd_aug_apply_spatial(&a, src, msk, 1, lo, shape, patch, out, om, &err), CD_OK);
    for (int y = 0; y < 4; y++)
        for (int z = 0; z < 3; z++) {
            assert_true(out[(0 * 4 + y) * 3 + z] == 0.0f);
            assert_float_equal(out[(2 * 4 + y) * 3 + z], 0.75 * sval(1, 3 + y, 2 + z) + 0.25 * sval(1, 4 + y, 2 + z),
                               1e-4);
            assert_int_equal(om[(2 * 4 + y) * 3 + z], msk[(1 * SY + 3 + y) * SZ + 2 + z]);
        }
}

static void test_scale2_trilinear(void **state) {
    (void)state;
    float src[SX * SY * SZ];
    uint8_t msk[SX * SY * SZ];
    make_source(src, msk);
    const int64_t lo[3] = {0, 0, 0}, shape[3] = {SX, SY, SZ}, patch[3] = {4, 4, 4};
    /* matrix 2 I, centre (5.25, 4.0, 3.75): positions x: 2.25, 4.25, 6.25, 8.25; y: 1, 3, 5, 7;
     * z: 0.75, 2.75, 4.75, 6.75 */
    cd_aug_params a = identity(5.25, 4.0, 3.75);
    a.matrix[0][0] = a.matrix[1][1] = a.matrix[2][2] = 2.0;
    a.scale = 2.0;
    float out[64];
    uint8_t om[64];
    cd_error err;
    assert_int_equal(cd_aug_apply_spatial(&a, src, msk, 1, lo, shape, patch, out, om, &err), CD_OK);
    /* v = x^2 + 3y + z^2 / 2 + 0.001 (100x + 10y + z); trilinear of a sum of 1-D functions is the sum
     * of 1-D lerps. Voxel (0, 0, 0) at (2.25, 1, 0.75): x^2 lerp(4, 9, .25) = 5.25; 3y = 3;
     * z^2/2: lerp(0, 0.5, .75) = 0.375; linear part 0.001 (225 + 10 + 0.75) = 0.23575 -> 8.86075 */
    assert_float_equal(out[0], 8.86075, 1e-4);
    /* voxel (3, 2, 1) at (8.25, 5, 2.75): lerp(64, 81, .25) = 68.25; 15; lerp(2, 4.5, .75) = 3.875;
     * 0.001 (825 + 50 + 2.75) = 0.87775 -> 88.00275 */
    assert_float_equal(out[(3 * 4 + 2) * 4 + 1], 88.00275, 1e-4);
    /* voxel (1, 3, 3) at (4.25, 7, 6.75): lerp(16, 25, .25) = 18.25; 21; lerp(18, 24.5, .75) = 22.875;
     * 0.001 (425 + 70 + 6.75) = 0.50175 -> 62.62675 */
    assert_float_equal(out[(1 * 4 + 3) * 4 + 3], 62.62675, 1e-4);
    /* nearest: floor(p + 0.5): (2.25, 1, 0.75) -> (2, 1, 1); (8.25, 5, 2.75) -> (8, 5, 3) */
    assert_int_equal(om[0], msk[(2 * SY + 1) * SZ + 1]);
    assert_int_equal(om[(3 * 4 + 2) * 4 + 1], msk[(8 * SY + 5) * SZ + 3]);
    /* exact .5 ties round up: matrix 0.5 I, centre (4, 4, 4): x positions 3.25, 3.75, 4.25, 4.75;
     * matrix 1, centre (4.0, 4.0, 4.0) with patch 4: positions 2.5 .. 5.5 -> 3 .. 6 */
    a = identity(4.0, 4.0, 4.0);
    assert_int_equal(cd_aug_apply_spatial(&a, src, msk, 1, lo, shape, patch, out, om, &err), CD_OK);
    for (int x = 0; x < 4; x++)
        for (int y = 0; y < 4; y++)
            for (int z = 0; z < 4; z++) {
                assert_int_equal(om[(x * 4 + y) * 4 + z], msk[((3 + x) * SY + 3 + y) * SZ + 3 + z]);
                /* image: the mean of the 8 neighbours of the half-integer position */
                double m = 0;
                for (int k = 0; k < 8; k++) m += sval(2 + x + (k >> 2), 2 + y + ((k >> 1) & 1), 2 + z + (k & 1));
                assert_float_equal(out[(x * 4 + y) * 4 + z], m / 8, 1e-3);
            }
}

static cd_aug_pipeline *parse_ok(const char *json) {
    cd_aug_pipeline *p = NULL;
    cd_error err;
    cd_status st = cd_aug_pipeline_parse(json, "inline.json", &p, &err);
    if (st != CD_OK) fprintf(stderr, "%s\n", err.message);
    assert_int_equal(st, CD_OK);
    return p;
}

static void test_draw_deterministic(void **state) {
    (void)state;
    cd_aug_pipeline *p;
    cd_error err;
    assert_int_equal(cd_aug_pipeline_load("nnunet", &p, &err), CD_OK);
    const int64_t patch[3] = {32, 32, 16};
    const double c[3] = {50, 60, 20};
    cd_aug_params a, b;
    int differ_sample = 0, differ_epoch = 0, differ_seed = 0;
    for (uint64_t s = 0; s < 50; s++) {
        cd_aug_draw(p, 42, 3, s, patch, c, &a);
        cd_aug_draw(p, 42, 3, s, patch, c, &b);
        assert_memory_equal(&a, &b, sizeof a);
        cd_aug_draw(p, 42, 3, s + 1, patch, c, &b);
        differ_sample += memcmp(&a, &b, sizeof a) != 0;
        cd_aug_draw(p, 42, 4, s, patch, c, &b);
        differ_epoch += memcmp(&a, &b, sizeof a) != 0;
        cd_aug_draw(p, 43, 3, s, patch, c, &b);
        differ_seed += memcmp(&a, &b, sizeof a) != 0;
    }
    /* P(two nnU-Net draws identical) = P(no op applies, same mirrors) ~ 0.05: nearly always differ */
    assert_true(differ_sample >= 40 && differ_epoch >= 40 && differ_seed >= 40);
    /* with rotation always on, every draw differs */
    cd_aug_pipeline *q = parse_ok(
        "{\"name\": \"r\", \"version\": 1, \"ops\": [{\"op\": \"rotation\", \"p\": 1, \"range_deg\": [-30, 30]}]}");
    for (uint64_t s = 0; s < 20; s++) {
        cd_aug_draw(q, 42, 3, s, patch, c, &a);
        cd_aug_draw(q, 42, 3, s + 1, patch, c, &b);
        assert_true(a.rotation[0] != b.rotation[0]);
        cd_aug_draw(q, 42, 4, s, patch, c, &b);
        assert_true(a.rotation[0] != b.rotation[0]);
        cd_aug_draw(q, 41, 3, s, patch, c, &b);
        assert_true(a.rotation[0] != b.rotation[0]);
        assert_true(a.center[0] == 50 && a.center[2] == 20);
    }
    char *js = cd_aug_params_to_json(&a);
    assert_non_null(js);
    assert_non_null(strstr(js, "\"matrix\""));
    assert_non_null(strstr(js, "\"rotation_rad\""));
    free(js);
    cd_aug_pipeline_destroy(q);
    cd_aug_pipeline_destroy(p);
}

static void expect_freq(int k, int n, double p, const char *what) {
    double mu = n * p, sd = sqrt(n * p * (1 - p));
    if (fabs(k - mu) > 4 * sd + 1e-9) fail_msg("%s: %d of %d, expected %.1f +- %.1f", what, k, n, mu, 4 * sd);
}

static void test_draw_frequencies_ranges(void **state) {
    (void)state;
    cd_aug_pipeline *p;
    cd_error err;
    assert_int_equal(cd_aug_pipeline_load("nnunet", &p, &err), CD_OK);
    assert_false(cd_aug_pipeline_is_2d(p));
    const int64_t patch[3] = {32, 32, 16};
    const double c[3] = {0, 0, 0};
    enum { N = 20000 };
    int rot = 0, sc = 0, el = 0, no = 0, bl = 0, br = 0, co = 0, lr = 0, gi = 0, ga = 0, mi[3] = {0, 0, 0},
        gamma_low = 0;
    for (int s = 0; s < N; s++) {
        cd_aug_params a;
        cd_aug_draw(p, 7, 1, (uint64_t)s, patch, c, &a);
        bool r = a.rotation[0] != 0 || a.rotation[1] != 0 || a.rotation[2] != 0;
        rot += r;
        for (int i = 0; i < 3; i++) {
            assert_true(fabs(a.rotation[i]) <= 30 * DEG + 1e-12);
            if (r) assert_true(a.rotation[i] != 0); /* all three axes rotate together */
            mi[i] += a.mirror[i];
        }
        sc += a.scale != 1.0;
        assert_true(a.scale >= 0.7 && a.scale <= 1.4);
        el += a.elastic;
        no += a.noise;
        if (a.noise) assert_true(a.noise_sigma >= 0 && a.noise_sigma <= 0.1);
        bl += a.blur;
        if (a.blur)
            for (int i = 0; i < 3; i++) assert_true(a.blur_sigma[i] >= 0.5 && a.blur_sigma[i] <= 1.0);
        br += a.brightness;
        if (a.brightness) assert_true(a.brightness_factor >= 0.75 && a.brightness_factor <= 1.25);
        co += a.contrast;
        if (a.contrast) assert_true(a.contrast_factor >= 0.75 && a.contrast_factor <= 1.25);
        lr += a.lowres;
        if (a.lowres) assert_true(a.lowres_zoom >= 0.5 && a.lowres_zoom <= 1.0);
        gi += a.gamma_invert;
        if (a.gamma_invert) assert_true(a.gamma_invert_value >= 0.7 && a.gamma_invert_value <= 1.5);
        ga += a.gamma;
        if (a.gamma) {
            assert_true(a.gamma_value >= 0.7 && a.gamma_value <= 1.5);
            gamma_low += a.gamma_value < 1.0;
        }
        /* the matrix is R S F: its determinant is +-scale^3 */
        const double(*m)[3] = a.matrix;
        double det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) -
                     m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
                     m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
        int flips = a.mirror[0] + a.mirror[1] + a.mirror[2];
        assert_float_equal(det, (flips % 2 ? -1 : 1) * a.scale * a.scale * a.scale, 1e-9);
    }
    expect_freq(rot, N, 0.2, "rotation");
    expect_freq(sc, N, 0.2, "scaling");
    assert_int_equal(el, 0);
    expect_freq(no, N, 0.1, "noise");
    expect_freq(bl, N, 0.2 * 0.5, "blur (p 0.2, p_per_channel 0.5)");
    expect_freq(br, N, 0.15, "brightness");
    expect_freq(co, N, 0.15, "contrast");
    expect_freq(lr, N, 0.25 * 0.5, "lowres (p 0.25, p_per_channel 0.5)");
    expect_freq(gi, N, 0.1, "inverted gamma");
    expect_freq(ga, N, 0.3, "gamma");
    expect_freq(gamma_low, ga, 0.5, "gamma < 1 (split sampling)");
    for (int i = 0; i < 3; i++) expect_freq(mi[i], N, 0.5, "mirror");
    cd_aug_pipeline_destroy(p);

    /* the staging paper's 2D set */
    assert_int_equal(cd_aug_pipeline_load("cirrhosisstage", &p, &err), CD_OK);
    assert_true(cd_aug_pipeline_is_2d(p));
    int m0 = 0, m1 = 0, both = 0;
    for (int s = 0; s < N; s++) {
        cd_aug_params a;
        cd_aug_draw(p, 42, 0, (uint64_t)s, patch, c, &a);
        assert_true(a.planar);
        assert_true(a.rotation[0] == 0 && a.rotation[1] == 0 && a.rotation[2] != 0);
        assert_true(fabs(a.rotation[2]) <= 10 * DEG);
        assert_false(a.mirror[2]);
        assert_true(a.scale == 1.0 && a.matrix[2][2] == 1.0 && a.matrix[0][2] == 0 && a.matrix[2][0] == 0);
        assert_false(a.noise || a.blur || a.brightness || a.contrast || a.lowres || a.gamma || a.elastic);
        m0 += a.mirror[0];
        m1 += a.mirror[1];
        both += a.mirror[0] && a.mirror[1];
    }
    expect_freq(m0, N, 0.3, "horizontal flip");
    expect_freq(m1, N, 0.3, "vertical flip");
    expect_freq(both, N, 0.09, "both flips (independent)");
    cd_aug_pipeline_destroy(p);
}

/* Every position the warp touches lies in cd_aug_source_box: voxels outside it are poisoned (NaN,
 * mask 255) and must not reach the output. */
static void test_source_box_poison(void **state) {
    (void)state;
    enum { BX = 90, BY = 90, BZ = 60 };
    float *clean = malloc(sizeof(float) * BX * BY * BZ), *pois = malloc(sizeof(float) * BX * BY * BZ);
    uint8_t *mask = malloc(BX * BY * BZ), *mpois = malloc(BX * BY * BZ);
    for (int i = 0; i < BX * BY * BZ; i++) {
        clean[i] = (float)((i * 2654435761u) % 1000) * 0.01f;
        mask[i] = (uint8_t)(i % 7);
    }
    cd_aug_pipeline *p = parse_ok("{\"name\": \"all\", \"version\": 1, \"ops\": ["
                                  "{\"op\": \"rotation\", \"p\": 0.8, \"range_deg\": [-180, 180]},"
                                  "{\"op\": \"scaling\", \"p\": 0.8, \"range\": [0.5, 1.6]},"
                                  "{\"op\": \"elastic\", \"p\": 0.5, \"alpha\": [0, 200], \"sigma\": [3, 6]},"
                                  "{\"op\": \"mirror\", \"p\": 0.5}]}");
    const int64_t patch[3] = {21, 18, 12}, full_lo[3] = {0, 0, 0}, full[3] = {BX, BY, BZ};
    const double c[3] = {45.3, 44.8, 30.1};
    float *o1 = malloc(sizeof(float) * 21 * 18 * 12), *o2 = malloc(sizeof(float) * 21 * 18 * 12);
    uint8_t *m1 = malloc(21 * 18 * 12), *m2 = malloc(21 * 18 * 12);
    cd_error err;
    int elastic_seen = 0;
    for (uint64_t s = 0; s < 24; s++) {
        cd_aug_params a;
        cd_aug_draw(p, 5, 0, s, patch, c, &a);
        elastic_seen += a.elastic;
        int64_t lo[3], hi[3];
        cd_aug_source_box(&a, patch, lo, hi);
        for (int i = 0; i < 3; i++) {
            assert_true(lo[i] < hi[i]);
            assert_true(lo[i] >= 0 && hi[i] <= full[i]); /* the test volume is large enough */
        }
        for (int x = 0; x < BX; x++)
            for (int y = 0; y < BY; y++)
                for (int z = 0; z < BZ; z++) {
                    int i = (x * BY + y) * BZ + z;
                    bool in = x >= lo[0] && x < hi[0] && y >= lo[1] && y < hi[1] && z >= lo[2] && z < hi[2];
                    pois[i] = in ? clean[i] : NAN;
                    mpois[i] = in ? mask[i] : 255;
                }
        assert_int_equal(cd_aug_apply_spatial(&a, clean, mask, 1, full_lo, full, patch, o1, m1, &err), CD_OK);
        assert_int_equal(cd_aug_apply_spatial(&a, pois, mpois, 1, full_lo, full, patch, o2, m2, &err), CD_OK);
        for (int i = 0; i < 21 * 18 * 12; i++) {
            assert_false(isnan(o2[i]));
            assert_true(o1[i] == o2[i]);
            assert_true(m2[i] != 255 && m1[i] == m2[i]);
        }
        /* and reading only the box gives the same patch */
        const int64_t bshape[3] = {hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]};
        float *sub = malloc(sizeof(float) * (size_t)(bshape[0] * bshape[1] * bshape[2]));
        for (int64_t x = 0; x < bshape[0]; x++)
            for (int64_t y = 0; y < bshape[1]; y++)
                for (int64_t z = 0; z < bshape[2]; z++)
                    sub[(x * bshape[1] + y) * bshape[2] + z] = clean[((x + lo[0]) * BY + y + lo[1]) * BZ + z + lo[2]];
        assert_int_equal(cd_aug_apply_spatial(&a, sub, NULL, 1, lo, bshape, patch, o2, NULL, &err), CD_OK);
        assert_memory_equal(o1, o2, sizeof(float) * 21 * 18 * 12);
        free(sub);
    }
    assert_true(elastic_seen > 0);
    free(clean);
    free(pois);
    free(mask);
    free(mpois);
    free(o1);
    free(o2);
    free(m1);
    free(m2);
    cd_aug_pipeline_destroy(p);
}

static void run_line(cd_aug_params *a, float *v, int64_t n) {
    const int64_t patch[3] = {1, 1, n};
    cd_error err;
    assert_int_equal(cd_aug_apply_intensity(a, v, 1, patch, &err), CD_OK);
}

static void test_intensity_hand(void **state) {
    (void)state;
    cd_aug_params a = identity(0, 0, 0);
    a.brightness = true;
    a.brightness_factor = 1.5;
    float b[4] = {1, 2, 3, 4};
    run_line(&a, b, 4);
    assert_float_equal(b[0], 1.5, 1e-6);
    assert_float_equal(b[3], 6.0, 1e-6);

    /* contrast about the mean 2, clipped to [0, 5] */
    a = identity(0, 0, 0);
    a.contrast = true;
    a.contrast_factor = 2.0;
    float c1[4] = {0, 1, 2, 5};
    run_line(&a, c1, 4);
    const float e1[4] = {0, 0, 2, 5}; /* (-2, 0, 2, 8) clipped */
    for (int i = 0; i < 4; i++) assert_float_equal(c1[i], e1[i], 1e-6);
    a.contrast_factor = 0.5;
    float c2[4] = {0, 1, 2, 5};
    run_line(&a, c2, 4);
    const float e2[4] = {1, 1.5, 2, 3.5};
    for (int i = 0; i < 4; i++) assert_float_equal(c2[i], e2[i], 1e-6);

    /* gamma 2 on (0, 1, 2, 3): (x / 3)^2 * 3 = (0, 1/3, 4/3, 3), then mean 1.5 and std sqrt(5/3)
     * restored: deviations (-7/6, -5/6, 1/6, 11/6) * 3 sqrt(5) / 7 + 1.5 */
    a = identity(0, 0, 0);
    a.gamma = true;
    a.gamma_value = 2.0;
    float g[4] = {0, 1, 2, 3};
    run_line(&a, g, 4);
    const double eg[4] = {1.5 - sqrt(5.0) / 2, 1.5 - 5 * sqrt(5.0) / 14, 1.5 + sqrt(5.0) / 14,
                          1.5 + 11 * sqrt(5.0) / 14};
    for (int i = 0; i < 4; i++) assert_float_equal(g[i], eg[i], 1e-5);
    /* inverted gamma 2: negate, gamma with stats, negate back */
    a = identity(0, 0, 0);
    a.gamma_invert = true;
    a.gamma_invert_value = 2.0;
    float gi[4] = {0, 1, 2, 3};
    run_line(&a, gi, 4);
    const double egi[4] = {1.5 - 11 * sqrt(5.0) / 14, 1.5 - sqrt(5.0) / 14, 1.5 + 5 * sqrt(5.0) / 14,
                           1.5 + sqrt(5.0) / 2};
    for (int i = 0; i < 4; i++) assert_float_equal(gi[i], egi[i], 1e-5);

    /* lowres zoom 0.5 on (0, 1, 2, 3): nearest-exact down to (1, 3); linear up (align_corners False):
     * positions (-0.25 -> 0, 0.25, 0.75, 1.25 -> clamped) = (1, 1.5, 2.5, 3) */
    a = identity(0, 0, 0);
    a.lowres = true;
    a.lowres_zoom = 0.5;
    float l[4] = {0, 1, 2, 3};
    run_line(&a, l, 4);
    const float el[4] = {1, 1.5, 2.5, 3};
    for (int i = 0; i < 4; i++) assert_float_equal(l[i], el[i], 1e-6);

    /* blur sigma 1 of a delta: the scipy kernel exp(-j^2 / 2) / sum over |j| <= 4 */
    a = identity(0, 0, 0);
    a.blur = true;
    a.blur_sigma[2] = 1.0;
    float d[11] = {0};
    d[5] = 1;
    run_line(&a, d, 11);
    double sum = 0;
    for (int j = -4; j <= 4; j++) sum += exp(-0.5 * j * j);
    for (int j = -5; j <= 5; j++) assert_float_equal(d[5 + j], abs(j) <= 4 ? exp(-0.5 * j * j) / sum : 0.0, 1e-7);
    /* reflect at the border: a delta at index 0 reflects onto itself (d c b a | a b c d) */
    float e[6] = {1, 0, 0, 0, 0, 0};
    run_line(&a, e, 6);
    assert_float_equal(e[0], (1 + exp(-0.5)) / sum, 1e-7);

    /* noise: sigma 0 changes nothing; sigma 0.5 on a large patch has that std, same for all channels */
    a = identity(0, 0, 0);
    a.noise = true;
    a.noise_sigma = 0.5;
    a.noise_key = 0xABCDEF;
    enum { NN = 40000 };
    float *v = calloc(2 * NN, sizeof(float));
    const int64_t patch[3] = {100, 100, 4};
    cd_error err;
    assert_int_equal(cd_aug_apply_intensity(&a, v, 2, patch, &err), CD_OK);
    double s1 = 0, s2 = 0;
    for (int i = 0; i < NN; i++) {
        s1 += v[i];
        s2 += (double)v[i] * v[i];
        assert_true(v[i] == v[NN + i]);
    }
    assert_true(fabs(s1 / NN) < 0.02);
    assert_true(fabs(sqrt(s2 / NN) - 0.5) < 0.02);
    free(v);
}

static void expect_bad(const char *json, const char *needle) {
    cd_aug_pipeline *p = (cd_aug_pipeline *)1;
    cd_error err;
    assert_int_equal(cd_aug_pipeline_parse(json, "bad_pipeline.json", &p, &err), CD_ERR_FORMAT);
    assert_null(p);
    if (!strstr(err.message, "bad_pipeline.json") || !strstr(err.message, needle))
        fail_msg("message '%s' lacks '%s'", err.message, needle);
}

static void test_bad_json(void **state) {
    (void)state;
    expect_bad("{\"name\": \"x\", \"version\": 1, \"ops\": [{\"op\": \"twirl\", \"p\": 0.5}]}", "unknown op 'twirl'");
    expect_bad("{\"name\": \"x\", \"version\": 1, \"ops\": [{\"op\": \"noise\", \"p\": 1.5, \"sigma\": [0, 0.1]}]}",
               "'p'");
    expect_bad("{\"name\": \"x\", \"version\": 1, \"ops\": [{\"op\": \"noise\", \"p\": -0.1, \"sigma\": [0, 0.1]}]}",
               "'p'");
    expect_bad("{\"name\": \"x\", \"version\": 1, \"ops\": [{\"op\": \"scaling\", \"p\": 0.2, \"range\": [1.4, 0.7]}]}",
               "reversed");
    expect_bad("{\"name\": \"x\", \"version\": 1, \"ops\": [{\"op\": \"gamma\", \"p\": 0.2, \"range\": [0.7, 1.5], "
               "\"flavour\": 1}]}",
               "unknown key 'flavour'");
    expect_bad("{\"name\": \"x\", \"version\": 1, \"ops\": [{\"op\": \"blur\", \"p\": 0.2, \"sigma\": [1, 2]},"
               "{\"op\": \"blur\", \"p\": 0.2, \"sigma\": [1, 2]}]}",
               "twice");
    expect_bad(
        "{\"name\": \"x\", \"version\": 1, \"dims\": 2, \"ops\": [{\"op\": \"mirror\", \"p\": 0.5, \"axes\": \"xz\"}]}",
        "axis z");
    expect_bad("{\"name\": \"x\", \"version\": 1, \"dims\": 2, \"ops\": [{\"op\": \"rotation\", \"p\": 1, "
               "\"range_deg\": [-10, 10], \"axes\": \"x\"}]}",
               "about z");
    expect_bad("{\"name\": \"x\", \"version\": 2, \"ops\": []}", "'version'");
    expect_bad("{\"name\": \"x\", \"version\": 1}", "'ops'");
    expect_bad("{\"name\": \"x\", \"version\": 1, \"ops\": [{\"op\": \"lowres\", \"p\": 0.2, \"zoom\": [0, 1]}]}",
               "'zoom'");
    expect_bad("{\"name\": \"x\", \"version\": 1, \"ops\": [{\"op\": \"rotation\", \"p\": 0.2}]}",
               "'range_deg' is required");
    expect_bad(
        "{\"name\": \"x\", \"version\": 1, \"ops\": [{\"op\": \"rotation\", \"p\": 0.2, \"range_deg\": [-30, 30],",
        "invalid JSON");

    /* from a file: the message names the file */
    char path[512];
    test_path(path, sizeof path, "reversed.json");
    const char *txt =
        "{\"name\": \"x\", \"version\": 1, \"ops\": [{\"op\": \"contrast\", \"p\": 0.2, \"range\": [1.25, 0.75]}]}";
    write_bytes(path, txt, strlen(txt));
    cd_aug_pipeline *p = NULL;
    cd_error err;
    assert_int_equal(cd_aug_pipeline_load(path, &p, &err), CD_ERR_FORMAT);
    assert_non_null(strstr(err.message, path));
    assert_int_equal(cd_aug_pipeline_load("nnunet3d", &p, &err), CD_ERR_ARG);
    assert_non_null(strstr(err.message, "cirrhosisstage"));
}

static void test_builtin_roundtrip(void **state) {
    (void)state;
    const char *names[] = {"nnunet", "cirrhosisstage", "none"};
    for (int i = 0; i < 3; i++) {
        cd_aug_pipeline *p, *q;
        cd_error err;
        assert_int_equal(cd_aug_pipeline_load(names[i], &p, &err), CD_OK);
        char *j1 = cd_aug_pipeline_to_json(p);
        assert_non_null(j1);
        assert_int_equal(cd_aug_pipeline_parse(j1, "roundtrip", &q, &err), CD_OK);
        char *j2 = cd_aug_pipeline_to_json(q);
        assert_string_equal(j1, j2);
        /* same pipeline, same draws */
        const int64_t patch[3] = {16, 16, 8};
        const double c[3] = {10, 10, 5};
        for (uint64_t s = 0; s < 100; s++) {
            cd_aug_params a, b;
            cd_aug_draw(p, 9, 2, s, patch, c, &a);
            cd_aug_draw(q, 9, 2, s, patch, c, &b);
            assert_memory_equal(&a, &b, sizeof a);
        }
        free(j1);
        free(j2);
        cd_aug_pipeline_destroy(p);
        cd_aug_pipeline_destroy(q);
    }
    /* ops in any order in the file; canonical order out */
    cd_aug_pipeline *p =
        parse_ok("{\"name\": \"o\", \"version\": 1, \"ops\": [{\"op\": \"mirror\", \"p\": 0.5, \"axes\": \"x\"},"
                 "{\"op\": \"rotation\", \"p\": 0.2, \"range_deg\": [-30, 30], \"axes\": \"z\"}]}");
    char *j = cd_aug_pipeline_to_json(p);
    assert_true(strstr(j, "\"rotation\"") < strstr(j, "\"mirror\""));
    free(j);
    cd_aug_pipeline_destroy(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_exact),          cmocka_unit_test(test_mirror_and_rot90),
        cmocka_unit_test(test_scale2_trilinear),        cmocka_unit_test(test_draw_deterministic),
        cmocka_unit_test(test_draw_frequencies_ranges), cmocka_unit_test(test_source_box_poison),
        cmocka_unit_test(test_intensity_hand),          cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_builtin_roundtrip),
    };
    return cmocka_run_group_tests_name("augment", tests, NULL, NULL);
}
