/* Unit tests: synthetic phantom cases (determinism, ranges, orientation, stage features) and a tiny
 * CirrMRI600+ tree. */
#include "test_util.h"

#include <math.h>
#include <sys/stat.h>

#include <cirrdata/cirrdata.h>

/* Small fixed grid for the feature tests: fast, and the same grid for every stage. */
static void make_case(uint32_t idx, cd_sequence seq, int stage, const int64_t dims[3], cd_volume **img,
                      cd_volume **msk) {
    cd_synth_case_params p = {
        .seed = 1234, .case_index = idx, .sequence = seq, .stage = stage, .dims = {dims[0], dims[1], dims[2]}};
    cd_error err;
    assert_int_equal(cd_synth_case(&p, img, msk, &err), CD_OK);
}

static void test_deterministic(void **state) {
    (void)state;
    const int64_t dims[3] = {96, 80, 16};
    cd_volume *a, *am, *b, *bm, *c, *cm;
    make_case(3, CD_SEQ_T1, 2, dims, &a, &am);
    make_case(3, CD_SEQ_T1, 2, dims, &b, &bm);
    make_case(4, CD_SEQ_T1, 2, dims, &c, &cm);
    assert_int_equal(cd_volume_dtype(a), cd_volume_dtype(b));
    assert_int_equal(cd_volume_nbytes(a), cd_volume_nbytes(b));
    assert_memory_equal(cd_volume_data(a), cd_volume_data(b), cd_volume_nbytes(a));
    assert_memory_equal(cd_volume_data(am), cd_volume_data(bm), cd_volume_nbytes(am));
    double fa[4][4], fb[4][4];
    cd_volume_affine(a, fa);
    cd_volume_affine(b, fb);
    assert_memory_equal(fa, fb, sizeof fa);
    /* Another case index: another patient. */
    assert_true(cd_volume_nbytes(a) != cd_volume_nbytes(c) ||
                memcmp(cd_volume_data(a), cd_volume_data(c), cd_volume_nbytes(a)) != 0);
    assert_true(memcmp(cd_volume_data(am), cd_volume_data(cm), cd_volume_nbytes(am)) != 0);
    cd_volume_destroy(a);
    cd_volume_destroy(am);
    cd_volume_destroy(b);
    cd_volume_destroy(bm);
    cd_volume_destroy(c);
    cd_volume_destroy(cm);
}

static void test_ranges_and_orientation(void **state) {
    (void)state;
    const int64_t zero[3] = {0, 0, 0};
    int seen_dtypes = 0;
    for (uint32_t idx = 0; idx < 6; idx++) {
        cd_volume *img, *msk;
        make_case(idx, idx % 2 ? CD_SEQ_T2 : CD_SEQ_T1, (int)(idx % 4), zero, &img, &msk);
        int64_t d[3];
        double sp[3], aff[4][4];
        cd_volume_dims(img, d);
        cd_volume_spacing(img, sp);
        cd_volume_affine(img, aff);
        assert_true(d[0] >= 160 && d[0] <= 320 && d[1] >= 160 && d[1] <= 320 && d[2] >= 24 && d[2] <= 64);
        assert_true(sp[0] >= 0.7 && sp[0] <= 1.6 && sp[1] >= 0.7 && sp[1] <= 1.6 && sp[2] >= 3.0 && sp[2] <= 8.0);
        cd_dtype dt = cd_volume_dtype(img);
        assert_true(dt == CD_DTYPE_INT16 || dt == CD_DTYPE_UINT16 || dt == CD_DTYPE_FLOAT32);
        seen_dtypes |= 1 << dt;
        char codes[4];
        cd_volume_axcodes(img, codes);
        assert_string_equal(codes, "LPS");
        cd_volume_axcodes(msk, codes);
        assert_string_equal(codes, "LPS");
        assert_int_equal(cd_volume_dtype(msk), CD_DTYPE_UINT8);
        assert_false(cd_volume_has_scaling(msk));

        /* Mask 0/1, non-empty; most of the liver on the patient's right (RAS x larger) of the grid
         * centre, which is within a few mm of the body centre. */
        const uint8_t *m = cd_volume_data_const(msk);
        size_t n = cd_volume_count(msk), count = 0, right = 0;
        double cj = 0.5 * (double)(d[1] - 1), ck = 0.5 * (double)(d[2] - 1), c0 = 0.5 * (double)(d[0] - 1);
        double centre_x = aff[0][0] * c0 + aff[0][1] * cj + aff[0][2] * ck + aff[0][3];
        for (size_t q = 0; q < n; q++) {
            assert_true(m[q] <= 1);
            if (m[q]) {
                count++;
                double i = (double)(q % (size_t)d[0]);
                right += aff[0][0] * i + aff[0][1] * cj + aff[0][2] * ck + aff[0][3] > centre_x;
            }
        }
        assert_true(count > 1000);
        assert_true((double)right > 0.6 * (double)count);
        cd_volume_destroy(img);
        cd_volume_destroy(msk);
    }
    assert_true(__builtin_popcount((unsigned)seen_dtypes) >= 2);
}

/* Liver statistics on a fixed grid: boundary voxels per liver voxel^(2/3) (surface roughness),
 * share of the liver in the patient-left half of its extent (caudate/left lobe vs right lobe), and the
 * liver's mean/coefficient of variation of local differences (heterogeneity). */
typedef struct liver_stats {
    double roughness, left_share, hetero, mean;
} liver_stats;

static liver_stats measure(const cd_volume *img, const cd_volume *msk) {
    int64_t d[3];
    cd_volume_dims(msk, d);
    const uint8_t *m = cd_volume_data_const(msk);
    size_t n = cd_volume_count(img);
    float *v = malloc(n * sizeof *v);
    cd_volume_to_float32(img, v);
    int64_t nx = d[0], ny = d[1], nz = d[2];
    double vol = 0, surf = 0, sum = 0, diff = 0, ndiff = 0;
    int64_t imin = nx, imax = -1;
    for (int64_t k = 0; k < nz; k++)
        for (int64_t j = 1; j < ny - 1; j++)
            for (int64_t i = 1; i < nx - 1; i++) {
                size_t q = (size_t)(i + nx * (j + ny * k));
                if (!m[q]) continue;
                vol++;
                sum += v[q];
                if (i < imin) imin = i;
                if (i > imax) imax = i;
                surf += !m[q - 1] + !m[q + 1] + !m[q - (size_t)nx] + !m[q + (size_t)nx];
                if (m[q + 1]) {
                    diff += fabs(v[q] - v[q + 1]);
                    ndiff++;
                }
            }
    double left = 0, mid = 0.5 * (double)(imin + imax);
    for (size_t q = 0; q < n; q++)
        if (m[q] && (double)(q % (size_t)nx) > mid) left++;
    free(v);
    liver_stats s = {surf / pow(vol, 2.0 / 3.0), left / vol, (diff / ndiff) / (sum / vol), sum / vol};
    return s;
}

static void test_stage_features(void **state) {
    (void)state;
    /* The same patients drawn healthy and severe: only the stage-driven features change. */
    const int64_t dims[3] = {192, 160, 28};
    double rough[2] = {0, 0}, left[2] = {0, 0}, het[2] = {0, 0};
    const int N = 4;
    for (uint32_t idx = 0; idx < (uint32_t)N; idx++) {
        for (int s = 0; s < 2; s++) {
            cd_volume *img, *msk;
            make_case(idx, CD_SEQ_T1, s ? 3 : 0, dims, &img, &msk);
            liver_stats st = measure(img, msk);
            rough[s] += st.roughness / N;
            left[s] += st.left_share / N;
            het[s] += st.hetero / N;
            cd_volume_destroy(img);
            cd_volume_destroy(msk);
        }
    }
    print_message("healthy vs severe: roughness %.3f/%.3f, left share %.3f/%.3f, heterogeneity %.4f/%.4f\n", rough[0],
                  rough[1], left[0], left[1], het[0], het[1]);
    assert_true(rough[1] > 1.05 * rough[0]);
    assert_true(left[1] > left[0] + 0.03);
    assert_true(het[1] > 1.05 * het[0]);
}

static void test_contrast(void **state) {
    (void)state;
    /* T1: liver brighter than the spleen's typical region (patient-left, posterior); T2: darker. We
     * compare the liver with the mean of non-liver voxels in the body at the liver's slices, which holds
     * for both the fat-bright T1 and the fluid-bright T2 only in aggregate, so use ratios between
     * sequences of the same patient instead: liver/body is higher in T1 than in T2. */
    const int64_t dims[3] = {160, 160, 24};
    for (uint32_t idx = 0; idx < 3; idx++) {
        double ratio[2];
        for (int q = 0; q < 2; q++) {
            cd_volume *img, *msk;
            make_case(idx, q ? CD_SEQ_T2 : CD_SEQ_T1, 1, dims, &img, &msk);
            size_t n = cd_volume_count(img);
            float *v = malloc(n * sizeof *v);
            cd_volume_to_float32(img, v);
            const uint8_t *m = cd_volume_data_const(msk);
            double ls = 0, ln = 0, bs = 0, bn = 0, mx = 0;
            for (size_t i = 0; i < n; i++) mx = v[i] > mx ? v[i] : mx;
            for (size_t i = 0; i < n; i++) {
                if (m[i]) {
                    ls += v[i];
                    ln++;
                } else if (v[i] > 0.1 * mx) {
                    bs += v[i];
                    bn++;
                }
            }
            ratio[q] = (ls / ln) / (bs / bn);
            free(v);
            cd_volume_destroy(img);
            cd_volume_destroy(msk);
        }
        assert_true(ratio[0] > ratio[1] * 1.3);
    }
}

static void test_bad_params(void **state) {
    (void)state;
    cd_volume *img = (cd_volume *)1, *msk = (cd_volume *)1;
    cd_error err;
    cd_synth_case_params p = {.seed = 1, .case_index = 0, .sequence = 3, .stage = 1};
    assert_int_equal(cd_synth_case(&p, &img, &msk, &err), CD_ERR_ARG);
    assert_null(img);
    p.sequence = CD_SEQ_T1;
    p.stage = 4;
    assert_int_equal(cd_synth_case(&p, &img, &msk, &err), CD_ERR_ARG);
    assert_non_null(strstr(err.message, "stage"));
    cd_synth_options o;
    cd_synth_options_init(&o);
    o.cases = 0;
    assert_int_equal(cd_synth_cirrmri600("/nonexistent-dir/x", &o, &err), CD_ERR_ARG);
}

static bool exists(const char *root, const char *rel) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    struct stat sb;
    return stat(p, &sb) == 0;
}

static void test_tree(void **state) {
    (void)state;
    char root[512];
    test_path(root, sizeof root, "cirrmri600");
    cd_synth_stats stats;
    cd_synth_options o;
    cd_synth_options_init(&o);
    o.cases = 3;
    o.seed = 9;
    o.threads = 2;
    o.stats = &stats;
    cd_error err;
    assert_int_equal(cd_synth_cirrmri600(root, &o, &err), CD_OK);
    assert_int_equal(stats.patients, 3);
    assert_int_equal(stats.healthy, 2);
    for (int q = 0; q < 2; q++)
        for (int s = 0; s < 3; s++) assert_int_equal(stats.cases[q][s], 1); /* 3 cases: one per split */
    assert_int_equal(stats.healthy_cases[0], 2);
    assert_int_equal(stats.files, 2 * (6 + 4));
    assert_true(stats.bytes > 0);
    assert_true(exists(root, "Cirrhosis_T1_3D/Cirrhosis_T1_3D/train_images"));
    assert_true(exists(root, "Cirrhosis_T1_3D/Cirrhosis_T1_3D/test_masks"));
    assert_true(exists(root, "Cirrhosis_T2_3D/valid_images"));
    assert_true(exists(root, "Healthy_subjects/T1_W_Healthy/T1_masks"));
    assert_true(exists(root, "Healthy_subjects/T2_W_Healthy/T2_images"));
    assert_true(exists(root, "Metadata/T1&T2_Paired_age_gender_evaluation.csv"));
    assert_true(exists(root, "Metadata/labels.txt"));
    char path[1024];
    snprintf(path, sizeof path, "%s/Metadata/T1_age_gender_evaluation.csv", root);
    size_t len;
    char *csv = read_bytes(path, &len);
    assert_true(len > 3 && memcmp(csv, "\xEF\xBB\xBFPatient ID,Age,Gender,Radiological Evaluation\r\n", 50) == 0);
    free(csv);
    /* A file where a folder must go: the error names the path. */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/Metadata/labels.txt/sub", root);
    assert_int_not_equal(cd_synth_cirrmri600(bad, &o, &err), CD_OK);
    assert_non_null(strstr(err.message, "labels.txt"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deterministic),  cmocka_unit_test(test_ranges_and_orientation),
        cmocka_unit_test(test_stage_features), cmocka_unit_test(test_contrast),
        cmocka_unit_test(test_bad_params),     cmocka_unit_test(test_tree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
