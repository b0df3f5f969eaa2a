/* Unit tests: orientation codes and canonical reorientation, against hand-computed values. */
#include "test_util.h"

#include <math.h>

#include <cirrdata/cirrdata.h>

static void codes_of(const double a[4][4], char out[4]) {
    cd_orientation o;
    assert_int_equal(cd_orientation_from_affine(a, &o, NULL), CD_OK);
    cd_orientation_codes(&o, out);
}

static void test_axis_codes(void **state) {
    (void)state;
    char c[4];
    double las[4][4] = {{-2, 0, 0, 0}, {0, 2, 0, 0}, {0, 0, 3, 0}, {0, 0, 0, 1}};
    codes_of(las, c);
    assert_string_equal(c, "LAS");
    /* Columns are array axes: axis 0 -> +z (S), axis 1 -> -x (L), axis 2 -> -y (P). */
    double slp[4][4] = {{0, -2, 0, 5}, {0, 0, -1, 6}, {3, 0, 0, 7}, {0, 0, 0, 1}};
    codes_of(slp, c);
    assert_string_equal(c, "SLP");
    /* 30 degrees about z: still closest to RAS. */
    double t = 30.0 * M_PI / 180.0;
    double rot[4][4] = {{cos(t), -sin(t), 0, 0}, {sin(t), cos(t), 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
    codes_of(rot, c);
    assert_string_equal(c, "RAS");
    /* 60 degrees about z: axis 0 mostly +y (A), axis 1 mostly -x (L). */
    t = 60.0 * M_PI / 180.0;
    double rot60[4][4] = {{cos(t), -sin(t), 0, 0}, {sin(t), cos(t), 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
    codes_of(rot60, c);
    assert_string_equal(c, "ALS");
    /* A zero column has no direction. */
    double degenerate[4][4] = {{1, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 2, 0}, {0, 0, 0, 1}};
    codes_of(degenerate, c);
    assert_string_equal(c, "R?S");
    double nan_aff[4][4] = {{NAN, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
    cd_orientation o;
    assert_int_equal(cd_orientation_from_affine(nan_aff, &o, NULL), CD_ERR_ARG);
}

static void apply(const double a[4][4], const double v[3], double w[3]) {
    for (int r = 0; r < 3; r++) w[r] = a[r][0] * v[0] + a[r][1] * v[1] + a[r][2] * v[2] + a[r][3];
}

static void test_reorient_canonical(void **state) {
    (void)state;
    cd_volume *v, *r;
    cd_error err;
    int64_t dims[3] = {2, 3, 4};
    assert_int_equal(cd_volume_create(dims, CD_DTYPE_INT32, &v, &err), CD_OK);
    int32_t *d = cd_volume_data(v);
    for (int i = 0; i < 24; i++) d[i] = 100 + i;
    double a[4][4] = {{0, -2, 0, 10}, {0, 0, -1, 20}, {3, 0, 0, 30}, {0, 0, 0, 1}};
    cd_volume_set_affine(v, a);
    double sp[3] = {3, 2, 1};
    cd_volume_set_spacing(v, sp);
    assert_int_equal(cd_volume_reorient_canonical(v, &r, &err), CD_OK);

    int64_t nd[3];
    cd_volume_dims(r, nd);
    assert_int_equal(nd[0], 3);
    assert_int_equal(nd[1], 4);
    assert_int_equal(nd[2], 2);
    double b[4][4];
    cd_volume_affine(r, b);
    /* Hand-computed: columns (2,0,0), (0,1,0), (0,0,3); origin (10-2*2, 20-1*3, 30) = (6, 17, 30). */
    const double expect[4][4] = {{2, 0, 0, 6}, {0, 1, 0, 17}, {0, 0, 3, 30}, {0, 0, 0, 1}};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) assert_true(fabs(b[i][j] - expect[i][j]) < 1e-12);
    char c[4];
    cd_volume_axcodes(r, c);
    assert_string_equal(c, "RAS");
    double rsp[3];
    cd_volume_spacing(r, rsp);
    assert_true(rsp[0] == 2 && rsp[1] == 1 && rsp[2] == 3);

    /* Every voxel keeps its value and its world position. */
    const int32_t *rd = cd_volume_data_const(r);
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 2; i++) {
                double in[3] = {i, j, k}, w[3];
                apply(a, in, w);
                /* Invert the new (diagonal) affine. */
                int64_t o0 = (int64_t)llround((w[0] - 6) / 2), o1 = (int64_t)llround(w[1] - 17),
                        o2 = (int64_t)llround((w[2] - 30) / 3);
                assert_true(o0 >= 0 && o0 < 3 && o1 >= 0 && o1 < 4 && o2 >= 0 && o2 < 2);
                assert_int_equal(rd[o0 + 3 * (o1 + 4 * o2)], d[i + 2 * (j + 3 * k)]);
            }
    cd_volume_destroy(r);

    /* An already canonical volume is copied unchanged. */
    double ras[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
    cd_volume_set_affine(v, ras);
    assert_int_equal(cd_volume_reorient_canonical(v, &r, &err), CD_OK);
    assert_memory_equal(cd_volume_data_const(r), d, 24 * sizeof(int32_t));
    cd_volume_destroy(r);

    /* A degenerate affine cannot be reoriented: an error, not a guess. */
    double degenerate[4][4] = {{1, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 2, 0}, {0, 0, 0, 1}};
    cd_volume_set_affine(v, degenerate);
    assert_int_equal(cd_volume_reorient_canonical(v, &r, &err), CD_ERR_FORMAT);
    assert_non_null(strstr(err.message, "axis 1"));
    cd_volume_destroy(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_axis_codes),
        cmocka_unit_test(test_reorient_canonical),
    };
    return cmocka_run_group_tests_name("orient", tests, NULL, NULL);
}
