/* cd_loader_create's option bounds (cirrdata/loader.h): each out-of-range option is CD_ERR_ARG (or
 * CD_ERR_LIMIT for the caps of cirrdata/limits.h) with a message naming it, its bounds and the value,
 * before the dataset is opened or anything is allocated: the dataset here does not exist, so options
 * that pass get as far as opening it (CD_ERR_IO). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cirrdata/cirrdata.h"

#define MISSING "/nonexistent/cirrdata-loader-options"

static cd_loader_options base(void) {
    cd_loader_options o;
    cd_loader_options_init(&o);
    o.dataset = MISSING;
    o.world_size = 1;
    return o;
}

/* Creation with o fails with status st and exactly msg (or, msg NULL, a message containing part). */
static void refused(const cd_loader_options *o, cd_status st, const char *msg, const char *part) {
    cd_loader *l = (cd_loader *)(uintptr_t)1; /* must be reset to NULL */
    cd_error err;
    cd_error_clear(&err);
    cd_status got = cd_loader_create(o, &l, &err);
    if (got != st) fail_msg("status %d (%s), wanted %d", got, err.message, st);
    assert_null(l);
    if (msg && strcmp(err.message, msg)) fail_msg("message '%s', wanted '%s'", err.message, msg);
    if (part && !strstr(err.message, part)) fail_msg("message '%s' lacks '%s'", err.message, part);
}

static void test_bounds(void **state) {
    (void)state;
    cd_loader_options o = base();
    refused(&o, CD_ERR_IO, NULL, MISSING); /* the defaults pass: the dataset is what fails */

    o = base(), o.batch_size = 0;
    refused(&o, CD_ERR_ARG, "batch_size must be in 1..65536 (got 0)", NULL);
    o = base(), o.batch_size = UINT32_MAX; /* a -1 from a binding */
    refused(&o, CD_ERR_ARG, "batch_size must be in 1..65536 (got 4294967295)", NULL);
    o = base(), o.batch_size = CD_LOADER_MAX_BATCH;
    refused(&o, CD_ERR_IO, NULL, MISSING);

    o = base(), o.threads = -1;
    refused(&o, CD_ERR_ARG, "threads must be in 0..1024, 0 for one per online CPU (got -1)", NULL);
    o = base(), o.threads = 1000000;
    refused(&o, CD_ERR_ARG, "threads must be in 0..1024, 0 for one per online CPU (got 1000000)", NULL);
    o = base(), o.threads = CD_LOADER_MAX_THREADS;
    refused(&o, CD_ERR_IO, NULL, MISSING);

    o = base(), o.ring = 1000000;
    refused(&o, CD_ERR_ARG, "ring must be in 0..64, 0 for the default 4 (got 1000000)", NULL);
    o = base(), o.ring = CD_LOADER_MAX_RING;
    refused(&o, CD_ERR_IO, NULL, MISSING);

    const double fractions[] = {NAN, -0.25, 1.5, INFINITY};
    const char *fmsg[] = {"(got nan)", "(got -0.25)", "(got 1.5)", "(got inf)"};
    for (int i = 0; i < 4; i++) {
        o = base(), o.foreground_fraction = fractions[i];
        refused(&o, CD_ERR_ARG, NULL, "foreground_fraction must be in [0, 1]");
        refused(&o, CD_ERR_ARG, NULL, fmsg[i]);
    }

    o = base(), o.mode = (cd_loader_mode)7;
    refused(&o, CD_ERR_ARG, NULL, "mode must be in 0..2");
    o = base(), o.io = (cd_loader_io)-1;
    refused(&o, CD_ERR_ARG, NULL, "io must be in 0..2");

    o = base(), o.world_size = -2;
    refused(&o, CD_ERR_ARG, "world_size must be in 0..2147483647, 0 for $WORLD_SIZE (got -2)", NULL);
    o = base(), o.world_size = 4, o.rank = 4;
    refused(&o, CD_ERR_ARG, "rank must be in 0..3 (world_size 4) (got 4)", NULL);
    o = base(), o.world_size = 4, o.rank = -1;
    refused(&o, CD_ERR_ARG, "rank must be in 0..3 (world_size 4) (got -1)", NULL);

    o = base(), o.cache_bytes = -2;
    refused(&o, CD_ERR_ARG, NULL, "cache_bytes must be in -1..");
    o = base(), o.cache_bytes = INT64_MAX;
    refused(&o, CD_ERR_ARG, NULL, "(the physical memory)");
    o = base(), o.cache_bytes = -1;
    refused(&o, CD_ERR_IO, NULL, MISSING);
    o = base(), o.cache_bytes = 0; /* no cache: as in Python */
    refused(&o, CD_ERR_IO, NULL, MISSING);
    assert_int_equal(base().cache_bytes, CD_LOADER_CACHE_AUTO);

    /* A zeroed struct is not silently taken: the message says how to get the defaults. */
    memset(&o, 0, sizeof o);
    o.dataset = MISSING;
    refused(&o, CD_ERR_ARG, NULL, "cd_loader_options_init fills in the defaults");
}

static void test_patch(void **state) {
    (void)state;
    cd_loader_options o = base();
    o.patch[1] = 0;
    refused(&o, CD_ERR_ARG, "patch must be in 1..1048576 per axis (got 96 x 0 x 32)", NULL);
    o.patch[1] = -96;
    refused(&o, CD_ERR_ARG, NULL, "(got 96 x -96 x 32)");
    o.patch[1] = (int64_t)1 << 21;
    refused(&o, CD_ERR_LIMIT, NULL, "CIRRDATA_MAX_DIM");
    o.patch[0] = o.patch[1] = o.patch[2] = 1300; /* 2.2e9 voxels: above max_voxels (2^31) */
    refused(&o, CD_ERR_LIMIT, NULL, "CIRRDATA_MAX_VOXELS");
    o.patch[0] = o.patch[1] = o.patch[2] = (int64_t)1 << 62; /* the voxel count overflows 64 bits */
    o.mode = CD_LOADER_PATCH;
    cd_limits lim = {.max_dim = (uint64_t)1 << 62};
    assert_int_equal(cd_limits_set(&lim, NULL), CD_OK);
    refused(&o, CD_ERR_LIMIT, NULL, "CIRRDATA_MAX_VOXELS");
    /* A lowered cap applies. */
    lim.max_dim = 64;
    assert_int_equal(cd_limits_set(&lim, NULL), CD_OK);
    o = base();
    refused(&o, CD_ERR_LIMIT, NULL, "patch must be in 1..64 per axis (got 96 x 96 x 32): 96 is above");
    assert_int_equal(cd_limits_set(NULL, NULL), CD_OK);

    /* Volume mode: all 0 (each record's size) or a fixed size; slice mode ignores the patch. */
    o = base(), o.mode = CD_LOADER_VOLUME;
    o.patch[0] = o.patch[1] = o.patch[2] = 0;
    refused(&o, CD_ERR_IO, NULL, MISSING);
    o.patch[2] = 16;
    refused(&o, CD_ERR_ARG,
            "patch must be in 1..1048576 per axis, or all 0 for each record's own size (got 0 x 0 x 16)", NULL);
    o = base(), o.mode = CD_LOADER_SLICE;
    o.patch[0] = -1;
    refused(&o, CD_ERR_IO, NULL, MISSING);
}

static void test_environment(void **state) {
    (void)state;
    cd_loader_options o = base();
    o.world_size = 0; /* from $WORLD_SIZE / $RANK */
    setenv("WORLD_SIZE", "2x", 1);
    refused(&o, CD_ERR_ARG, "$WORLD_SIZE='2x' is not an integer in 1..2147483647", NULL);
    setenv("WORLD_SIZE", "0", 1);
    refused(&o, CD_ERR_ARG, "$WORLD_SIZE='0' is not an integer in 1..2147483647", NULL);
    setenv("WORLD_SIZE", "4", 1);
    setenv("RANK", "-1", 1);
    refused(&o, CD_ERR_ARG, "$RANK='-1' is not an integer in 0..2147483647", NULL);
    setenv("RANK", "4", 1);
    refused(&o, CD_ERR_ARG, "rank must be in 0..3 (world_size 4) (got 4)", NULL);
    setenv("RANK", "3", 1);
    refused(&o, CD_ERR_IO, NULL, MISSING);
    unsetenv("WORLD_SIZE");
    unsetenv("RANK");
    refused(&o, CD_ERR_IO, NULL, MISSING);
}

static void test_null(void **state) {
    (void)state;
    cd_loader_close(NULL);
    cd_loader_destroy(NULL);
    cd_loader *l = NULL;
    cd_error err;
    assert_int_equal(cd_loader_create(NULL, &l, &err), CD_ERR_ARG);
}

int main(void) {
    unsetenv("CIRRDATA_MAX_DIM");
    unsetenv("CIRRDATA_MAX_VOXELS");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_patch),
        cmocka_unit_test(test_environment),
        cmocka_unit_test(test_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
