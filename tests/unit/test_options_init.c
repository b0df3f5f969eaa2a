/* Every options struct of the public API has a cd_x_options_init that gives the documented defaults,
 * and those defaults behave as a NULL options pointer does where the call takes one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cirrdata/cirrdata.h"

static bool all_zero(const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i]) return false;
    return true;
}

static void test_defaults(void **state) {
    (void)state;
    cd_nifti_read_options nr;
    memset(&nr, 0x5a, sizeof nr);
    cd_nifti_read_options_init(&nr);
    assert_true(all_zero(&nr, sizeof nr)); /* volume 0, max_bytes from limits.h */
    cd_nifti_write_options nw;
    memset(&nw, 0x5a, sizeof nw);
    cd_nifti_write_options_init(&nw);
    assert_true(all_zero(&nw, sizeof nw));
    cd_nnunet_export_options ne;
    memset(&ne, 0x5a, sizeof ne);
    cd_nnunet_export_options_init(&ne);
    assert_true(all_zero(&ne, sizeof ne)); /* NULL pointers, no flags, gzip level 0 = 6 */
    cd_resample_options ro;
    memset(&ro, 0x5a, sizeof ro);
    cd_resample_options_init(&ro);
    assert_int_equal(ro.interp, CD_INTERP_LINEAR);
    assert_int_equal(ro.out_dtype, CD_DTYPE_INVALID);
    assert_true(ro.fill == 0.0 && ro.threads == 0);
    cd_synth_options so;
    memset(&so, 0x5a, sizeof so);
    cd_synth_options_init(&so);
    assert_int_equal(so.cases, 24);
    assert_true(so.healthy && so.seed == 0 && so.threads == 0 && !so.progress && !so.stats);
    cd_gpu_options go;
    memset(&go, 0x5a, sizeof go);
    cd_gpu_options_init(&go);
    assert_true(all_zero(&go, sizeof go));
    cd_model_options mo;
    memset(&mo, 0x5a, sizeof mo);
    cd_model_options_init(&mo);
    assert_true(all_zero(&mo, sizeof mo));
    assert_int_equal(mo.device, CD_DEVICE_CPU);
    cd_loader_options lo;
    memset(&lo, 0x5a, sizeof lo);
    cd_loader_options_init(&lo);
    assert_int_equal(lo.cache_bytes, CD_LOADER_CACHE_AUTO);
    assert_int_equal(lo.device, CD_DEVICE_CPU);
    assert_int_equal(lo.batch_size, 2);
    cd_convert_options co;
    memset(&co, 0x5a, sizeof co);
    cd_convert_options_init(&co);
    assert_int_equal(co.device, CD_DEVICE_CPU);
    assert_string_equal(co.layout, "cirrmri600");
}

/* cd_resample with initialised options equals cd_resample with NULL options, voxel for voxel. */
static void test_resample_init_is_null(void **state) {
    (void)state;
    const int64_t dims[3] = {7, 6, 5};
    cd_volume *v = NULL;
    cd_error err;
    assert_int_equal(cd_volume_create(dims, CD_DTYPE_FLOAT32, &v, &err), CD_OK);
    float *x = cd_volume_data(v);
    for (size_t i = 0; i < cd_volume_count(v); i++) x[i] = (float)((i * 37) % 101);
    cd_grid g;
    const double sp[3] = {0.7, 0.8, 1.3};
    assert_int_equal(cd_grid_for_spacing(v, sp, &g, &err), CD_OK);
    cd_resample_options ro;
    cd_resample_options_init(&ro);
    cd_volume *a = NULL, *b = NULL;
    assert_int_equal(cd_resample(v, &g, &ro, &a, &err), CD_OK);
    assert_int_equal(cd_resample(v, &g, NULL, &b, &err), CD_OK);
    assert_int_equal(cd_volume_count(a), cd_volume_count(b));
    assert_memory_equal(cd_volume_data_const(a), cd_volume_data_const(b), cd_volume_count(a) * sizeof(float));
    cd_volume_destroy(a);
    cd_volume_destroy(b);
    cd_volume_destroy(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_defaults), cmocka_unit_test(test_resample_init_is_null)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
