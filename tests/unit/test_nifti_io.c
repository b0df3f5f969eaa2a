/* Unit tests: NIfTI write/read round trips and every gzip path (whole-buffer, multi-member,
 * truncated, corrupt CRC, wrong ISIZE, bomb), with exact expected values. */
#include "test_util.h"

#include <libdeflate.h>
#include <math.h>

#include <cirrdata/cirrdata.h>

static cd_volume *make_volume(cd_dtype dt, int64_t nx, int64_t ny, int64_t nz) {
    cd_volume *v;
    int64_t dims[3] = {nx, ny, nz};
    assert_int_equal(cd_volume_create(dims, dt, &v, NULL), CD_OK);
    size_t n = cd_volume_count(v);
    if (dt == CD_DTYPE_INT16) {
        int16_t *d = cd_volume_data(v);
        for (size_t i = 0; i < n; i++) d[i] = (int16_t)((i * 37) % 2001 - 1000);
    } else if (dt == CD_DTYPE_FLOAT32) {
        float *d = cd_volume_data(v);
        for (size_t i = 0; i < n; i++) d[i] = (float)i * 0.25f - 3.0f;
    } else if (dt == CD_DTYPE_UINT8) {
        uint8_t *d = cd_volume_data(v);
        for (size_t i = 0; i < n; i++) d[i] = (uint8_t)(i * 7);
    }
    /* LPS-like affine with anisotropic spacing and an offset. */
    double a[4][4] = {{-0.8, 0, 0, 100}, {0, -0.8, 0, 120}, {0, 0, 3.0, -50}, {0, 0, 0, 1}};
    cd_volume_set_affine(v, a);
    return v;
}

static void assert_same_volume(const cd_volume *a, const cd_volume *b) {
    int64_t da[3], db[3];
    cd_volume_dims(a, da);
    cd_volume_dims(b, db);
    assert_memory_equal(da, db, sizeof da);
    assert_int_equal(cd_volume_dtype(a), cd_volume_dtype(b));
    assert_memory_equal(cd_volume_data_const(a), cd_volume_data_const(b), cd_volume_nbytes(a));
    double aa[4][4], ab[4][4];
    cd_volume_affine(a, aa);
    cd_volume_affine(b, ab);
    /* The sform is stored as float32: exact for these values' float32 roundings. */
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) assert_true(fabs(aa[i][j] - ab[i][j]) <= 1e-5 * fmax(1.0, fabs(aa[i][j])));
}

static void roundtrip(const char *name, cd_dtype dt) {
    char path[512];
    test_path(path, sizeof path, name);
    cd_volume *v = make_volume(dt, 7, 5, 3), *r;
    cd_error err;
    assert_int_equal(cd_nifti_write(path, v, NULL, &err), CD_OK);
    cd_nifti_header h;
    assert_int_equal(cd_nifti_read(path, NULL, &r, &h, &err), CD_OK);
    assert_same_volume(v, r);
    assert_int_equal(h.version, 1);
    assert_false(h.big_endian);
    assert_int_equal(h.sform_code, 1);
    assert_int_equal(h.qform_code, 1);
    assert_string_equal(h.orientation, "LPS");
    /* The qform (rigid part) must describe the same grid as the sform here. */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) assert_true(fabs(h.qform[i][j] - h.sform[i][j]) < 1e-4);
    double sp[3];
    cd_volume_spacing(r, sp);
    assert_true(fabs(sp[0] - 0.8) < 1e-6 && fabs(sp[2] - 3.0) < 1e-6);
    cd_volume_destroy(v);
    cd_volume_destroy(r);
}

static void test_roundtrip_nii(void **state) {
    (void)state;
    roundtrip("a.nii", CD_DTYPE_INT16);
    roundtrip("b.nii", CD_DTYPE_FLOAT32);
    roundtrip("c.nii", CD_DTYPE_UINT8);
}

static void test_roundtrip_nii_gz(void **state) {
    (void)state;
    roundtrip("a.nii.gz", CD_DTYPE_INT16);
    roundtrip("b.nii.gz", CD_DTYPE_FLOAT32);
}

static void test_scaling_roundtrip(void **state) {
    (void)state;
    char path[512];
    test_path(path, sizeof path, "scaled.nii.gz");
    cd_volume *v = make_volume(CD_DTYPE_INT16, 4, 4, 4), *r;
    cd_volume_set_scaling(v, 0.5, -10.0);
    assert_int_equal(cd_nifti_write(path, v, NULL, NULL), CD_OK);
    assert_int_equal(cd_nifti_read(path, NULL, &r, NULL, NULL), CD_OK);
    double s, i;
    cd_volume_scaling(r, &s, &i);
    assert_true(cd_volume_has_scaling(r) && s == 0.5 && i == -10.0);
    float f[64];
    cd_volume_to_float32(r, f);
    /* raw[1] = 37 - 1000 = -963 -> -963 * 0.5 - 10 = -491.5 */
    assert_true(f[1] == -491.5f);
    cd_volume_destroy(v);
    cd_volume_destroy(r);
}

/* Reads a file that must fail, and checks status and that the message names the file. */
static void expect_fail(const char *path, cd_status want, const char *needle) {
    cd_volume *r = NULL;
    cd_error err;
    cd_status st = cd_nifti_read(path, NULL, &r, NULL, &err);
    if (st != want || !strstr(err.message, path) || (needle && !strstr(err.message, needle)))
        fail_msg("%s: got status %s, message '%s'; wanted %s containing '%s'", path, cd_status_name(st), err.message,
                 cd_status_name(want), needle ? needle : "");
    assert_null(r);
}

static uint8_t *gzip_bytes(const void *in, size_t len, size_t *out_len) {
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(6);
    size_t bound = libdeflate_gzip_compress_bound(c, len);
    uint8_t *out = malloc(bound);
    *out_len = libdeflate_gzip_compress(c, in, len, out, bound);
    assert_true(*out_len > 0);
    libdeflate_free_compressor(c);
    return out;
}

static void test_multi_member_gzip(void **state) {
    (void)state;
    /* Header and voxels in two gzip members (as pigz or appending writers produce). */
    char raw_path[512], path[512];
    test_path(raw_path, sizeof raw_path, "mm_src.nii");
    test_path(path, sizeof path, "mm.nii.gz");
    cd_volume *v = make_volume(CD_DTYPE_INT16, 9, 8, 7), *r;
    assert_int_equal(cd_nifti_write(raw_path, v, NULL, NULL), CD_OK);
    size_t n;
    uint8_t *raw = read_bytes(raw_path, &n);
    size_t l1, l2;
    uint8_t *m1 = gzip_bytes(raw, 352, &l1), *m2 = gzip_bytes(raw + 352, n - 352, &l2);
    uint8_t *both = malloc(l1 + l2);
    memcpy(both, m1, l1);
    memcpy(both + l1, m2, l2);
    write_bytes(path, both, l1 + l2);
    cd_error err;
    assert_int_equal(cd_nifti_read(path, NULL, &r, NULL, &err), CD_OK);
    assert_same_volume(v, r);
    cd_volume_destroy(r);

    /* Three members, split inside the voxels. */
    size_t l3;
    uint8_t *m2a = gzip_bytes(raw + 352, 100, &l2), *m3 = gzip_bytes(raw + 452, n - 452, &l3);
    uint8_t *three = malloc(l1 + l2 + l3);
    memcpy(three, m1, l1);
    memcpy(three + l1, m2a, l2);
    memcpy(three + l1 + l2, m3, l3);
    write_bytes(path, three, l1 + l2 + l3);
    assert_int_equal(cd_nifti_read(path, NULL, &r, NULL, &err), CD_OK);
    assert_same_volume(v, r);
    cd_volume_destroy(r);
    free(raw);
    free(m1);
    free(m2);
    free(m2a);
    free(m3);
    free(both);
    free(three);
    cd_volume_destroy(v);
}

static void test_gzip_damage(void **state) {
    (void)state;
    char good[512], path[512];
    test_path(good, sizeof good, "good.nii.gz");
    cd_volume *v = make_volume(CD_DTYPE_INT16, 32, 32, 16);
    assert_int_equal(cd_nifti_write(good, v, NULL, NULL), CD_OK);
    cd_volume_destroy(v);
    size_t n;
    uint8_t *gz = read_bytes(good, &n);

    test_path(path, sizeof path, "cut.nii.gz");
    write_bytes(path, gz, n / 2);
    expect_fail(path, CD_ERR_TRUNCATED, "truncated");
    write_bytes(path, gz, 40); /* inside the header */
    expect_fail(path, CD_ERR_TRUNCATED, "truncated");

    /* Wrong ISIZE trailer: the whole-buffer path is skipped; zlib's length check catches it. */
    test_path(path, sizeof path, "isize.nii.gz");
    gz[n - 1] ^= 0x40;
    write_bytes(path, gz, n);
    expect_fail(path, CD_ERR_CORRUPT, "ISIZE");
    gz[n - 1] ^= 0x40;

    /* Wrong CRC32 trailer. */
    test_path(path, sizeof path, "crc.nii.gz");
    gz[n - 8] ^= 0x01;
    write_bytes(path, gz, n);
    expect_fail(path, CD_ERR_CORRUPT, "CRC");
    gz[n - 8] ^= 0x01;
    free(gz);
}

/* A valid .nii header with dims changed, gzip-compressed with (almost) no voxels: a "bomb". */
static void test_gzip_bomb(void **state) {
    (void)state;
    char src[512], path[512];
    test_path(src, sizeof src, "bomb_src.nii");
    test_path(path, sizeof path, "bomb.nii.gz");
    cd_volume *v = make_volume(CD_DTYPE_INT16, 4, 4, 4);
    assert_int_equal(cd_nifti_write(src, v, NULL, NULL), CD_OK);
    cd_volume_destroy(v);
    size_t n, gl;
    uint8_t *raw = read_bytes(src, &n);
    int16_t dims[8] = {3, 2048, 2048, 2048, 1, 1, 1, 1}; /* 2^33 voxels, 16 GiB of int16: above the default caps */
    memcpy(raw + 40, dims, sizeof dims);
    uint8_t *gz = gzip_bytes(raw, n, &gl);
    write_bytes(path, gz, gl);
    expect_fail(path, CD_ERR_LIMIT, "voxel count cap");
    /* Under the cap (256 MiB) but far more than the compressed bytes can hold. */
    int16_t dims2[8] = {3, 1024, 1024, 128, 1, 1, 1, 1};
    memcpy(raw + 40, dims2, sizeof dims2);
    free(gz);
    gz = gzip_bytes(raw, n, &gl);
    write_bytes(path, gz, gl);
    expect_fail(path, CD_ERR_TRUNCATED, "cannot hold");
    free(gz);
    free(raw);
}

static void test_big_endian_and_pair(void **state) {
    (void)state;
    /* Build a big-endian .hdr/.img pair by hand from a little-endian file. */
    char src[512], hdr[512], img[512];
    test_path(src, sizeof src, "le.nii");
    test_path(hdr, sizeof hdr, "be.hdr");
    test_path(img, sizeof img, "be.img");
    cd_volume *v = make_volume(CD_DTYPE_INT16, 5, 4, 3), *r;
    assert_int_equal(cd_nifti_write(src, v, NULL, NULL), CD_OK);
    size_t n;
    uint8_t *raw = read_bytes(src, &n);
    uint8_t h[348];
    memcpy(h, raw, 348);
    memcpy(h + 344, "ni1", 4);
    float zero = 0.0f; /* vox_offset 0: voxels start the .img */
    memcpy(h + 108, &zero, 4);
    /* Swap every field by its size: int32 sizeof_hdr, int16 dims, ... (layout of nifti_1_header). */
    const struct {
        int off, size, count;
    } fields[] = {{0, 4, 1},   {32, 4, 1},  {40, 2, 8},  {56, 4, 3},  {68, 2, 1},  {70, 2, 1},
                  {72, 2, 1},  {74, 2, 1},  {76, 4, 8},  {108, 4, 1}, {112, 4, 1}, {116, 4, 1},
                  {120, 2, 1}, {124, 4, 1}, {128, 4, 1}, {132, 4, 1}, {136, 4, 1}, {140, 4, 1},
                  {144, 4, 1}, {252, 2, 1}, {254, 2, 1}, {256, 4, 18}};
    for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++)
        for (int c = 0; c < fields[f].count; c++) {
            uint8_t *p = h + fields[f].off + c * fields[f].size;
            for (int i = 0; i < fields[f].size / 2; i++) {
                uint8_t t = p[i];
                p[i] = p[fields[f].size - 1 - i];
                p[fields[f].size - 1 - i] = t;
            }
        }
    write_bytes(hdr, h, 348);
    size_t nvox = cd_volume_count(v);
    uint8_t *data = malloc(nvox * 2);
    for (size_t i = 0; i < nvox; i++) {
        data[2 * i] = raw[352 + 2 * i + 1];
        data[2 * i + 1] = raw[352 + 2 * i];
    }
    write_bytes(img, data, nvox * 2);
    cd_nifti_header hh;
    cd_error err;
    assert_int_equal(cd_nifti_read(hdr, NULL, &r, &hh, &err), CD_OK);
    assert_true(hh.big_endian && hh.pair);
    assert_same_volume(v, r);
    cd_volume_destroy(r);
    /* The .img path finds its .hdr. */
    assert_int_equal(cd_nifti_read(img, NULL, &r, NULL, &err), CD_OK);
    assert_same_volume(v, r);
    cd_volume_destroy(r);
    /* A .hdr without its .img is a clear error. */
    remove(img);
    expect_fail(hdr, CD_ERR_IO, "missing");
    free(data);
    free(raw);
    cd_volume_destroy(v);
}

static void test_volume_index_and_limits(void **state) {
    (void)state;
    char path[512];
    test_path(path, sizeof path, "small.nii");
    cd_volume *v = make_volume(CD_DTYPE_INT16, 8, 8, 8), *r;
    assert_int_equal(cd_nifti_write(path, v, NULL, NULL), CD_OK);
    cd_nifti_read_options o;
    cd_nifti_read_options_init(&o);
    cd_error err;
    o.volume = 1;
    assert_int_equal(cd_nifti_read(path, &o, &r, NULL, &err), CD_ERR_ARG);
    assert_non_null(strstr(err.message, "volume 1"));
    o.volume = 0;
    o.max_bytes = 512; /* the volume is 1 KiB */
    assert_int_equal(cd_nifti_read(path, &o, &r, NULL, &err), CD_ERR_LIMIT);
    assert_non_null(strstr(err.message, "limit"));
    cd_volume_destroy(v);
    expect_fail("/nonexistent/dir/x.nii", CD_ERR_IO, "cannot open");
    expect_fail(test_tmpdir(), CD_ERR_IO, "not a regular file");
}

static void test_npy_header(void **state) {
    (void)state;
    char path[512];
    test_path(path, sizeof path, "v.npy");
    cd_volume *v = make_volume(CD_DTYPE_INT16, 3, 2, 5);
    assert_int_equal(cd_npy_write_volume(path, v, true, NULL), CD_OK);
    size_t n;
    uint8_t *b = read_bytes(path, &n);
    assert_memory_equal(b, "\x93NUMPY\x01\x00", 8);
    size_t hl = b[8] | (b[9] << 8);
    assert_int_equal((10 + hl) % 64, 0);
    assert_int_equal(n, 10 + hl + 30 * 2);
    assert_int_equal(b[10 + hl - 1], '\n');
    const char *want = "{'descr': '<i2', 'fortran_order': True, 'shape': (3, 2, 5), }";
    assert_memory_equal(b + 10, want, strlen(want));
    assert_memory_equal(b + 10 + hl, cd_volume_data_const(v), 60);
    free(b);
    cd_volume_destroy(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_nii),       cmocka_unit_test(test_roundtrip_nii_gz),
        cmocka_unit_test(test_scaling_roundtrip),   cmocka_unit_test(test_multi_member_gzip),
        cmocka_unit_test(test_gzip_damage),         cmocka_unit_test(test_gzip_bomb),
        cmocka_unit_test(test_big_endian_and_pair), cmocka_unit_test(test_volume_index_and_limits),
        cmocka_unit_test(test_npy_header),
    };
    return cmocka_run_group_tests_name("nifti_io", tests, NULL, NULL);
}
