/* Unit tests of the safetensors reader (libcirrdata/nn/safetensors.c): files built by hand in memory
 * with hand-computed values, and a matrix of malformed headers, each of which must fail with the right
 * status and a message naming the file and the tensor or field at fault. */
#include "test_util.h"

#include <math.h>

#include "nn/safetensors.h"

#define NAME "t.safetensors"

/* 8-byte little-endian header length, the JSON, then `n` data bytes. Caller frees. */
static uint8_t *build(const char *json, const void *data, size_t n, size_t *len) {
    size_t h = strlen(json);
    uint8_t *buf = malloc(8 + h + n + 1);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, json, h);
    if (n) memcpy(buf + 8 + h, data, n);
    *len = 8 + h + n;
    return buf;
}

static void put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void test_values_and_conversions(void **state) {
    (void)state;
    /* Layout: h (F16, 2 x 2 B) at 0, b (BF16, 3 x 2 B) at 4, d (F64, 4 x 8 B) at 10 -- deliberately
     * not 8-byte aligned, so the reader must not load doubles in place -- f (F32, 2x2) at 42, i (I64) at 58. */
    uint8_t data[66];
    memset(data, 0, sizeof data);
    const uint16_t h[2] = {0x3555, 0x0001};         /* 0.333251953125 (= 1365/4096), 2^-24 (smallest subnormal) */
    const uint16_t b[3] = {0x3F80, 0x4049, 0xC2F7}; /* 1.0, 3.140625, -123.5 */
    const double d[4] = {0.1, 2.5, 1e300, -1e300};
    const float f[4] = {1.5f, -2.0f, 0.0f, 1e-3f};
    const int64_t iv = 7;
    for (int i = 0; i < 2; i++) data[2 * i] = (uint8_t)h[i], data[2 * i + 1] = (uint8_t)(h[i] >> 8);
    for (int i = 0; i < 3; i++) data[4 + 2 * i] = (uint8_t)b[i], data[4 + 2 * i + 1] = (uint8_t)(b[i] >> 8);
    memcpy(data + 10, d, sizeof d);
    memcpy(data + 42, f, sizeof f);
    memcpy(data + 58, &iv, sizeof iv);
    const char *json = "{\"__metadata__\":{\"cirrdata.arch\":\"resnet18\",\"empty\":\"\"},"
                       "\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                       "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[4,10]},"
                       "\"d\":{\"dtype\":\"F64\",\"shape\":[2,2],\"data_offsets\":[10,42]},"
                       "\"f\":{\"dtype\":\"F32\",\"shape\":[2,1,2],\"data_offsets\":[42,58]},"
                       "\"i\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[58,66]},"
                       "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[66,66]}}";
    size_t len;
    uint8_t *buf = build(json, data, sizeof data, &len);
    cd_st_file *sf = NULL;
    cd_error err;
    assert_int_equal(cd_st_open_memory(buf, len, NAME, &sf, &err), CD_OK);
    assert_int_equal(cd_st_count(sf), 6);
    assert_string_equal(cd_st_path(sf), NAME);
    assert_string_equal(cd_st_metadata(sf, "cirrdata.arch"), "resnet18");
    assert_string_equal(cd_st_metadata(sf, "empty"), "");
    assert_null(cd_st_metadata(sf, "cirrdata.graph"));
    assert_string_equal(cd_st_at(sf, 0)->name, "h"); /* file order */
    assert_null(cd_st_at(sf, 6));
    const cd_st_tensor *t = cd_st_find(sf, "d");
    assert_non_null(t);
    assert_int_equal(t->dtype, CD_ST_F64);
    assert_int_equal(t->rank, 2);
    assert_int_equal(t->elements, 4);
    assert_int_equal(t->nbytes, 32);
    assert_ptr_equal(t->data, buf + len - sizeof data + 10);
    t = cd_st_find(sf, "i");
    assert_int_equal(t->rank, 0);
    assert_int_equal(t->elements, 1); /* a scalar */
    assert_null(cd_st_find(sf, "nope"));
    assert_int_equal(cd_st_dtype_size(CD_ST_BF16), 2);
    assert_int_equal(cd_st_dtype_size(CD_ST_BOOL), 1);
    assert_string_equal(cd_st_dtype_name(CD_ST_BF16), "BF16");

    float *v = NULL;
    const int64_t s2[1] = {2}, s3[1] = {3}, s22[2] = {2, 2}, s212[3] = {2, -1, 2}, s03[2] = {0, 3};
    assert_int_equal(cd_st_get_f32(sf, "h", 1, s2, &v, &err), CD_OK);
    assert_true(v[0] == 1365.0f / 4096.0f);
    assert_true(v[1] == ldexpf(1.0f, -24));
    free(v);
    assert_int_equal(cd_st_get_f32(sf, "b", 1, s3, &v, &err), CD_OK);
    assert_true(v[0] == 1.0f && v[1] == 3.140625f && v[2] == -123.5f);
    free(v);
    assert_int_equal(cd_st_get_f32(sf, "d", 2, s22, &v, &err), CD_OK);
    assert_true(v[0] == (float)0.1 && v[1] == 2.5f);
    assert_true(isinf(v[2]) && v[2] > 0 && isinf(v[3]) && v[3] < 0); /* out of float range */
    free(v);
    assert_int_equal(cd_st_get_f32(sf, "f", 3, s212, &v, &err), CD_OK); /* -1 matches any size */
    assert_memory_equal(v, f, sizeof f);
    free(v);
    assert_int_equal(cd_st_get_f32(sf, "z", 2, s03, &v, &err), CD_OK); /* empty tensor */
    assert_non_null(v);
    free(v);

    /* the wrong-request errors of cd_st_get_f32 */
    const int64_t s32[2] = {3, 2};
    v = (float *)1;
    assert_int_equal(cd_st_get_f32(sf, "nope", 1, s2, &v, &err), CD_ERR_FORMAT);
    assert_null(v);
    assert_string_equal(err.message, NAME ": missing tensor 'nope'");
    assert_int_equal(cd_st_get_f32(sf, "d", 2, s32, &v, &err), CD_ERR_FORMAT);
    assert_string_equal(err.message, NAME ": tensor 'd' has shape [2, 2], expected [3, 2]");
    assert_int_equal(cd_st_get_f32(sf, "d", 1, s2, &v, &err), CD_ERR_FORMAT); /* rank differs */
    assert_string_equal(err.message, NAME ": tensor 'd' has shape [2, 2], expected [2]");
    assert_int_equal(cd_st_get_f32(sf, "i", 0, NULL, &v, &err), CD_ERR_FORMAT);
    assert_string_equal(err.message, NAME ": tensor 'i': dtype I64 where a float tensor is expected");
    assert_int_equal(cd_st_get_f32(sf, "h", 9, s2, &v, &err), CD_ERR_ARG);
    cd_st_close(sf);
    free(buf);
}

typedef struct bad_case {
    const char *what;
    const char *json;
    size_t data_len; /* zero bytes after the header */
    cd_status status;
    const char *needle; /* must appear in the message (which must also start with the file name) */
} bad_case;

static const bad_case bad_cases[] = {
    {"non-JSON", "{\"w\": {\"dtype\": \"F32\",", 0, CD_ERR_FORMAT, "not valid JSON"},
    {"trailing garbage", "{} x", 0, CD_ERR_FORMAT, "not valid JSON"},
    {"non-object", "[1, 2]", 0, CD_ERR_FORMAT, "not a JSON object"},
    {"empty header", "", 0, CD_ERR_FORMAT, "not a JSON object"},
    {"duplicate key",
     "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, CD_ERR_FORMAT, "duplicate"},
    {"entry not object", "{\"w\": 3}", 0, CD_ERR_FORMAT, "tensor 'w': entry is not an object"},
    {"unknown dtype", "{\"w\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, CD_ERR_FORMAT,
     "tensor 'w': unknown dtype 'F99'"},
    {"dtype not string", "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, CD_ERR_FORMAT,
     "tensor 'w': dtype is not a string"},
    {"unsupported dtype", "{\"w\":{\"dtype\":\"U16\",\"shape\":[1],\"data_offsets\":[0,2]}}", 2, CD_ERR_UNSUPPORTED,
     "tensor 'w': dtype U16"},
    {"negative dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,0]}}", 0, CD_ERR_FORMAT,
     "tensor 'w': shape[1] is negative"},
    {"fractional dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, CD_ERR_FORMAT,
     "tensor 'w': shape[0] is not an integer"},
    {"shape not array", "{\"w\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, CD_ERR_FORMAT,
     "tensor 'w': shape is not an array"},
    {"rank 9", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, CD_ERR_LIMIT,
     "tensor 'w': rank 9"},
    {"element count overflow", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}",
     0, CD_ERR_FORMAT, "tensor 'w': element count overflows"},
    {"huge dim of an empty tensor",
     "{\"w\":{\"dtype\":\"F32\",\"shape\":[0,9223372036854775807],\"data_offsets\":[0,0]}}", 0, CD_ERR_FORMAT,
     "tensor 'w': element count overflows"},
    {"byte count overflow", "{\"w\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,0]}}", 0,
     CD_ERR_FORMAT, "tensor 'w': element count overflows"},
    {"offsets past buffer", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, CD_ERR_TRUNCATED,
     "tensor 'w': data_offsets end 16 is past the 8-byte data buffer"},
    {"huge offsets",
     "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[9223372036854775806,"
     "9223372036854775807]}}",
     8, CD_ERR_TRUNCATED, "tensor 'w': data_offsets end"},
    {"end-begin mismatch", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, CD_ERR_FORMAT,
     "tensor 'w': data_offsets span 4 bytes, but F32 shape needs 8"},
    {"reversed offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, CD_ERR_FORMAT,
     "tensor 'w': data_offsets [8, 0]"},
    {"negative offset", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 8, CD_ERR_FORMAT,
     "tensor 'w': data_offsets [-4, 0]"},
    {"offsets not a pair", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, CD_ERR_FORMAT,
     "tensor 'w': data_offsets is not [begin, end]"},
    {"overlapping tensors",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, CD_ERR_FORMAT, "tensors 'a' and 'b' overlap"},
    {"same offsets",
     "{\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[4,8]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, CD_ERR_FORMAT, "overlap"},
    {"missing field", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, CD_ERR_FORMAT,
     "tensor 'w': missing 'data_offsets'"},
    {"unknown field", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, CD_ERR_FORMAT,
     "tensor 'w': unknown key 'x'"},
    {"metadata non-string", "{\"__metadata__\":{\"cirrdata.arch\":\"r\",\"k\":1}}", 0, CD_ERR_FORMAT,
     "metadata value 'k' is not a string"},
    {"metadata not object", "{\"__metadata__\":[\"a\"]}", 0, CD_ERR_FORMAT, "'__metadata__' is not an object"},
    {"NUL in string", "{\"__metadata__\":{\"k\":\"a\\u0000b\"}}", 0, CD_ERR_FORMAT, "not valid JSON"},
};

static void check_error(const cd_error *err, cd_status got, cd_status want, const char *needle, const char *what) {
    if (got != want || strncmp(err->message, NAME ":", strlen(NAME) + 1) != 0 || !strstr(err->message, needle)) {
        print_error("case '%s': status %s (want %s), message '%s' (want '%s')\n", what, cd_status_name(got),
                    cd_status_name(want), err->message, needle);
        fail();
    }
}

static void test_bad_headers(void **state) {
    (void)state;
    uint8_t zeros[16] = {0};
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        size_t len;
        uint8_t *buf = build(c->json, zeros, c->data_len, &len);
        cd_st_file *sf = (cd_st_file *)1;
        cd_error err;
        cd_error_clear(&err);
        cd_status st = cd_st_open_memory(buf, len, NAME, &sf, &err);
        check_error(&err, st, c->status, c->needle, c->what);
        assert_null(sf);
        free(buf);
    }
}

static void test_bad_lengths(void **state) {
    (void)state;
    cd_st_file *sf = NULL;
    cd_error err;
    size_t len;
    uint8_t *buf = build("{}", NULL, 0, &len);
    assert_int_equal(cd_st_open_memory(buf, len, NAME, &sf, &err), CD_OK); /* the smallest valid file */
    assert_int_equal(cd_st_count(sf), 0);
    cd_st_close(sf);
    /* shorter than the length field */
    check_error(&err, cd_st_open_memory(buf, 5, NAME, &sf, &err), CD_ERR_TRUNCATED, "too short", "5 bytes");
    check_error(&err, cd_st_open_memory(NULL, 0, NAME, &sf, &err), CD_ERR_TRUNCATED, "too short", "empty");
    /* header length past the end of the file */
    put_le64(buf, 100);
    check_error(&err, cd_st_open_memory(buf, len, NAME, &sf, &err), CD_ERR_TRUNCATED,
                "header length 100 is past the end of the 10-byte file", "past EOF");
    /* huge header lengths: refused before any allocation or read */
    put_le64(buf, UINT64_MAX);
    check_error(&err, cd_st_open_memory(buf, len, NAME, &sf, &err), CD_ERR_LIMIT, "above the limit", "2^64-1");
    put_le64(buf, (uint64_t)CD_ST_MAX_HEADER + 1);
    check_error(&err, cd_st_open_memory(buf, len, NAME, &sf, &err), CD_ERR_LIMIT, "above the limit", "cap + 1");
    free(buf);
}

static void test_files_on_disk(void **state) {
    (void)state;
    char path[512];
    test_path(path, sizeof path, "w.safetensors");
    const float vals[3] = {1.0f, 2.0f, 3.0f};
    size_t len;
    uint8_t *buf = build("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                         "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                         vals, sizeof vals, &len);
    write_bytes(path, buf, len);
    cd_st_file *sf = NULL;
    cd_error err;
    assert_int_equal(cd_st_open(path, &sf, &err), CD_OK);
    float *v = NULL;
    const int64_t s2[1] = {2};
    assert_int_equal(cd_st_get_f32(sf, "w", 1, s2, &v, &err), CD_OK);
    assert_true(v[0] == 2.0f && v[1] == 3.0f);
    free(v);
    cd_st_close(sf);
    /* truncated: the last tensor's bytes are cut off */
    write_bytes(path, buf, len - 3);
    assert_int_equal(cd_st_open(path, &sf, &err), CD_ERR_TRUNCATED);
    assert_non_null(strstr(err.message, path));
    assert_non_null(strstr(err.message, "tensor 'w': data_offsets end 12 is past the 9-byte data buffer"));
    /* cut inside the header, and an empty file */
    write_bytes(path, buf, 20);
    assert_int_equal(cd_st_open(path, &sf, &err), CD_ERR_TRUNCATED);
    assert_non_null(strstr(err.message, "header length"));
    write_bytes(path, buf, 0);
    assert_int_equal(cd_st_open(path, &sf, &err), CD_ERR_TRUNCATED);
    assert_non_null(strstr(err.message, path));
    /* missing file, and a directory */
    test_path(path, sizeof path, "absent.safetensors");
    assert_int_equal(cd_st_open(path, &sf, &err), CD_ERR_IO);
    assert_non_null(strstr(err.message, path));
    assert_int_equal(cd_st_open(test_tmpdir(), &sf, &err), CD_ERR_IO);
    free(buf);
}

/* Many tensors, named out of order: each is found by name (the lookup is a sorted index). */
static void test_many_tensors(void **state) {
    (void)state;
    enum { N = 300 };
    char *json = malloc(N * 80 + 16);
    uint8_t *data = malloc(N * 4);
    assert_non_null(json);
    assert_non_null(data);
    size_t at = (size_t)sprintf(json, "{");
    for (int i = 0; i < N; i++) {
        int k = (i * 7919) % N; /* a permutation of 0..N-1 */
        at += (size_t)sprintf(json + at, "%s\"t%d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[%d,%d]}",
                              i ? "," : "", k, 4 * i, 4 * i + 4);
        float v = (float)k;
        memcpy(data + 4 * i, &v, 4);
    }
    sprintf(json + at, "}");
    size_t len;
    uint8_t *buf = build(json, data, N * 4, &len);
    cd_st_file *sf = NULL;
    cd_error err;
    assert_int_equal(cd_st_open_memory(buf, len, NAME, &sf, &err), CD_OK);
    assert_int_equal(cd_st_count(sf), N);
    for (int k = 0; k < N; k++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", k);
        const cd_st_tensor *t = cd_st_find(sf, name);
        assert_non_null(t);
        assert_string_equal(t->name, name);
        float v;
        memcpy(&v, t->data, 4);
        assert_true(v == (float)k);
    }
    assert_null(cd_st_find(sf, "t300"));
    assert_null(cd_st_find(sf, ""));
    cd_st_close(sf);
    free(buf);
    free(data);
    free(json);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_and_conversions),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_bad_lengths),
        cmocka_unit_test(test_files_on_disk),
        cmocka_unit_test(test_many_tensors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
