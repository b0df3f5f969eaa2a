/* cirrdata/limits.h: defaults, the environment (read once: main() sets it before the library's first
 * use), cd_limits_set, and that each reader refuses input above its cap with a message naming the file,
 * the cap and its variable, and accepts the same input once the cap is raised. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cirrdata/cirrdata.h"
#include "core/internal.h"
#include "io/csv.h"
#include "test_util.h"

#define GiB ((uint64_t)1 << 30)
#define MiB ((uint64_t)1 << 20)

static void expect_msg(const cd_error *err, const char *a, const char *b) {
    if (a && !strstr(err->message, a)) fail_msg("message '%s' lacks '%s'", err->message, a);
    if (b && !strstr(err->message, b)) fail_msg("message '%s' lacks '%s'", err->message, b);
}

static void test_defaults(void **state) {
    (void)state;
    cd_limits d;
    cd_limits_defaults(&d);
    /* The values documented in limits.h and RELIABILITY.md. */
    assert_true(d.max_dim == 1048576);
    assert_true(d.max_voxels == ((uint64_t)1 << 31));
    assert_true(d.max_decompressed_bytes == 8 * GiB);
    assert_true(d.max_decompressed_bytes == CD_NIFTI_DEFAULT_MAX_BYTES);
    assert_true(d.max_json_bytes == 512 * MiB);
    assert_true(d.max_csv_bytes == 64 * MiB);
}

static void test_parse(void **state) {
    (void)state;
    static const struct {
        const char *s;
        bool ok;
        uint64_t v;
    } cases[] = {
        {"1", true, 1},
        {"4096", true, 4096},
        {"2k", true, 2048},
        {"64M", true, 64 * MiB},
        {"8G", true, 8 * GiB},
        {"1T", true, (uint64_t)1 << 40},
        {"4611686018427387904", true, (uint64_t)1 << 62}, /* 2^62: the largest */
        {"4611686018427387905", false, 0},
        {"4194304T", true, (uint64_t)1 << 62},
        {"4194305T", false, 0},
        {"18446744073709551616", false, 0}, /* 2^64 */
        {"0", false, 0},
        {"0K", false, 0},
        {"", false, 0},
        {" 5", false, 0},
        {"5 ", false, 0},
        {"5MB", true, (uint64_t)5 << 20},
        {"8GiB", true, (uint64_t)8 << 30},
        {"64kB", true, (uint64_t)64 << 10},
        {"5B", false, 0},
        {"5Mi", false, 0},
        {"5MiBB", false, 0},
        {"-1", false, 0},
        {"+1", false, 0},
        {"1.5G", false, 0},
        {"G", false, 0},
        {"0x10", false, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint64_t v = 12345;
        bool ok = cd_limit_parse(cases[i].s, &v);
        if (ok != cases[i].ok) fail_msg("'%s': parse gave %d", cases[i].s, ok);
        if (ok && v != cases[i].v)
            fail_msg("'%s': %llu, want %llu", cases[i].s, (unsigned long long)v, (unsigned long long)cases[i].v);
    }
}

/* main() sets CIRRDATA_MAX_JSON_BYTES=2K and CIRRDATA_MAX_CSV_BYTES=12X (malformed). */
static void test_environment_and_set(void **state) {
    (void)state;
    assert_int_equal(cd_limits_set(NULL, NULL), CD_OK);
    cd_limits l, d;
    cd_error err;
    cd_limits_defaults(&d);
    assert_int_equal(cd_limits_get(&l, &err), CD_ERR_ARG);
    expect_msg(&err, "CIRRDATA_MAX_CSV_BYTES='12X'", "not a valid cap");
    assert_true(l.max_json_bytes == 2048);           /* from the environment */
    assert_true(l.max_csv_bytes == d.max_csv_bytes); /* malformed: reads as the default, and is reported */
    assert_true(l.max_dim == d.max_dim && l.max_voxels == d.max_voxels);

    /* The program's value wins over the environment, a malformed one included. */
    cd_limits s = {0};
    s.max_csv_bytes = 100;
    s.max_dim = 7;
    assert_int_equal(cd_limits_set(&s, &err), CD_OK);
    assert_int_equal(cd_limits_get(&l, &err), CD_OK);
    assert_true(l.max_csv_bytes == 100 && l.max_dim == 7 && l.max_json_bytes == 2048);

    /* Bad values change nothing. */
    cd_limits bad = s;
    bad.max_voxels = ((uint64_t)1 << 62) + 1;
    assert_int_equal(cd_limits_set(&bad, &err), CD_ERR_ARG);
    expect_msg(&err, "max_voxels", "above the largest");
    bad = s;
    bad.max_json_bytes = UINT64_MAX;
    assert_int_equal(cd_limits_set(&bad, &err), CD_ERR_ARG);
    expect_msg(&err, "max_json_bytes", NULL);
    assert_int_equal(cd_limits_get(&l, NULL), CD_OK);
    assert_true(l.max_csv_bytes == 100 && l.max_dim == 7);

    /* Zero: back to the environment or the default; NULL: all of them. */
    s.max_dim = 0;
    assert_int_equal(cd_limits_set(&s, NULL), CD_OK);
    assert_int_equal(cd_limits_get(&l, NULL), CD_OK);
    assert_true(l.max_dim == d.max_dim && l.max_csv_bytes == 100);
    assert_int_equal(cd_limits_set(NULL, NULL), CD_OK);
    assert_int_equal(cd_limits_get(&l, &err), CD_ERR_ARG);
    assert_true(l.max_json_bytes == 2048);
    assert_int_equal(cd_limits_get(NULL, &err), CD_ERR_ARG);
}

/* A NIfTI file against max_dim, max_voxels and max_decompressed_bytes. */
static void test_nifti_caps(void **state) {
    (void)state;
    char path[512];
    test_path(path, sizeof path, "caps.nii");
    int64_t dims[3] = {12, 10, 3};
    cd_volume *v, *r;
    cd_error err;
    assert_int_equal(cd_volume_create(dims, CD_DTYPE_INT16, &v, NULL), CD_OK);
    memset(cd_volume_data(v), 0, cd_volume_count(v) * 2);
    assert_int_equal(cd_nifti_write(path, v, NULL, &err), CD_OK);
    cd_volume_destroy(v);
    cd_nifti_header h;

    cd_limits s = {0};
    s.max_csv_bytes = 1000; /* keeps the malformed environment variable out of the way */
    s.max_dim = 11;
    assert_int_equal(cd_limits_set(&s, NULL), CD_OK);
    assert_int_equal(cd_nifti_read(path, NULL, &r, NULL, &err), CD_ERR_LIMIT);
    expect_msg(&err, path, "dim[1] = 12 is above the NIfTI dimension cap of 11 (raise it with CIRRDATA_MAX_DIM)");
    assert_int_equal(cd_nifti_read_header(path, &h, &err), CD_ERR_LIMIT); /* info too */
    s.max_dim = 12;
    s.max_voxels = 359;
    assert_int_equal(cd_limits_set(&s, NULL), CD_OK);
    assert_int_equal(cd_nifti_read(path, NULL, &r, NULL, &err), CD_ERR_LIMIT);
    expect_msg(&err, "360 voxels is above the voxel count cap of 359", "CIRRDATA_MAX_VOXELS");
    s.max_voxels = 360;
    s.max_decompressed_bytes = 719;
    assert_int_equal(cd_limits_set(&s, NULL), CD_OK);
    assert_int_equal(cd_nifti_read(path, NULL, &r, NULL, &err), CD_ERR_LIMIT);
    expect_msg(&err, "above the decompressed size cap of 719 B", "CIRRDATA_MAX_BYTES");
    /* A per-call limit replaces the process-wide one and says so. */
    cd_nifti_read_options o;
    cd_nifti_read_options_init(&o);
    o.max_bytes = 700;
    assert_int_equal(cd_nifti_read(path, &o, &r, NULL, &err), CD_ERR_LIMIT);
    expect_msg(&err, "given for this read", NULL);
    o.max_bytes = 720;
    assert_int_equal(cd_nifti_read(path, &o, &r, NULL, &err), CD_OK);
    cd_volume_destroy(r);
    /* Exactly at every cap: accepted. */
    s.max_decompressed_bytes = 720;
    assert_int_equal(cd_limits_set(&s, NULL), CD_OK);
    assert_int_equal(cd_nifti_read(path, NULL, &r, NULL, &err), CD_OK);
    cd_volume_destroy(r);
    assert_int_equal(cd_limits_set(NULL, NULL), CD_OK);
}

/* The JSON cap (recipe file; 2K from the environment) and the CSV cap (malformed in the environment). */
static void test_json_and_csv_caps(void **state) {
    (void)state;
    assert_int_equal(cd_limits_set(NULL, NULL), CD_OK);
    char path[512];
    test_path(path, sizeof path, "big-recipe.json");
    /* A valid recipe, padded with whitespace to 3000 bytes. */
    char text[3001];
    memset(text, ' ', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    const char *body = "{\"version\": 1, \"name\": \"raw\"}";
    memcpy(text, body, strlen(body));
    write_bytes(path, text, sizeof text - 1);
    cd_recipe rc;
    cd_error err;
    assert_int_equal(cd_recipe_load(path, &rc, &err), CD_ERR_LIMIT);
    expect_msg(&err, path, "2.9 KiB is above the JSON size cap of 2.0 KiB (raise it with CIRRDATA_MAX_JSON_BYTES)");
    cd_limits s = {0};
    s.max_json_bytes = 3000;
    assert_int_equal(cd_limits_set(&s, NULL), CD_OK);
    if (cd_recipe_load(path, &rc, &err) != CD_OK) fail_msg("at the cap: %s", err.message);

    char csv[512];
    test_path(csv, sizeof csv, "meta.csv");
    const char *rows = "Patient ID,Age\n1,40\n2,50\n";
    write_bytes(csv, rows, strlen(rows));
    cd_csv t;
    assert_int_equal(cd_csv_read(csv, &t, &err), CD_ERR_ARG); /* the malformed variable is reported */
    expect_msg(&err, "CIRRDATA_MAX_CSV_BYTES='12X'", NULL);
    s.max_csv_bytes = strlen(rows) - 1;
    assert_int_equal(cd_limits_set(&s, NULL), CD_OK);
    assert_int_equal(cd_csv_read(csv, &t, &err), CD_ERR_LIMIT);
    expect_msg(&err, csv, "is above the CSV size cap of 24 B (raise it with CIRRDATA_MAX_CSV_BYTES)");
    s.max_csv_bytes = strlen(rows);
    assert_int_equal(cd_limits_set(&s, NULL), CD_OK);
    assert_int_equal(cd_csv_read(csv, &t, &err), CD_OK);
    assert_int_equal(t.nrows, 2);
    cd_csv_free(&t);
    assert_int_equal(cd_limits_set(NULL, NULL), CD_OK);
}

/* Readers in several threads while another thread changes the caps: every value read is one that was
 * set (no torn or stale-garbage values), and nothing races under the sanitizers. */
static atomic_int stop;
static void *reader(void *arg) {
    (void)arg;
    int bad = 0;
    while (!atomic_load(&stop)) {
        cd_limits l;
        cd_limits_get(&l, NULL);
        if (l.max_dim != 1000 && l.max_dim != 2000) bad++;
        if (l.max_json_bytes != 10 * MiB && l.max_json_bytes != 20 * MiB) bad++;
    }
    return (void *)(intptr_t)bad;
}

static void test_threads(void **state) {
    (void)state;
    cd_limits a = {0}, b = {0};
    a.max_dim = 1000, a.max_json_bytes = 10 * MiB, a.max_csv_bytes = 1000;
    b.max_dim = 2000, b.max_json_bytes = 20 * MiB, b.max_csv_bytes = 1000;
    assert_int_equal(cd_limits_set(&a, NULL), CD_OK);
    atomic_store(&stop, 0);
    pthread_t t[3];
    for (int i = 0; i < 3; i++) assert_int_equal(pthread_create(&t[i], NULL, reader, NULL), 0);
    for (int k = 0; k < 20000; k++) assert_int_equal(cd_limits_set(k % 2 ? &a : &b, NULL), CD_OK);
    atomic_store(&stop, 1);
    for (int i = 0; i < 3; i++) {
        void *bad;
        pthread_join(t[i], &bad);
        assert_int_equal((intptr_t)bad, 0);
    }
    assert_int_equal(cd_limits_set(NULL, NULL), CD_OK);
}

int main(void) {
    /* Before the library's first use: the environment is read once. */
    setenv("CIRRDATA_MAX_JSON_BYTES", "2K", 1);
    setenv("CIRRDATA_MAX_CSV_BYTES", "12X", 1);
    unsetenv("CIRRDATA_MAX_DIM");
    unsetenv("CIRRDATA_MAX_VOXELS");
    unsetenv("CIRRDATA_MAX_BYTES");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_environment_and_set),
        cmocka_unit_test(test_nifti_caps),
        cmocka_unit_test(test_json_and_csv_caps),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
