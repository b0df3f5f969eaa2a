/* Unit tests: shard write/read round trips, region reads, and detection of every kind of damage. */
#include "test_util.h"

#include <xxhash.h>

#include <cirrdata/cirrdata.h>

#define NX 37
#define NY 20
#define NZ 9

static int16_t image_value(int rec, int c, int x, int y, int z) {
    return (int16_t)(rec * 1000 + c * 500 + x * 13 - y * 7 + z);
}

static void fill_record(int rec, int16_t *img, uint8_t *mask) {
    for (int c = 0; c < 2; c++)
        for (int x = 0; x < NX; x++)
            for (int y = 0; y < NY; y++)
                for (int z = 0; z < NZ; z++) img[((c * NX + x) * NY + y) * NZ + z] = image_value(rec, c, x, y, z);
    for (int i = 0; i < NX * NY * NZ; i++) mask[i] = (uint8_t)((i / 50) % 2);
}

static void write_shard(const char *path, int nrec, cd_codec codec) {
    cd_shard_writer *w;
    cd_error err;
    assert_int_equal(cd_shard_writer_create(path, &w, &err), CD_OK);
    int16_t *img = malloc(sizeof(int16_t) * 2 * NX * NY * NZ);
    uint8_t *mask = malloc(NX * NY * NZ);
    const uint32_t shape[3] = {NX, NY, NZ}, chunk[3] = {16, 16, 4};
    for (int r = 0; r < nrec; r++) {
        fill_record(r, img, mask);
        char meta[64];
        snprintf(meta, sizeof meta, "{\"key\": \"case/%d\", \"label\": %d}", r, r % 3);
        cd_record_builder *b;
        assert_int_equal(cd_record_builder_create(meta, &b, &err), CD_OK);
        assert_int_equal(cd_record_builder_add_tensor(b, "image", CD_DTYPE_INT16, 2, shape, chunk, codec, 3, img, &err),
                         CD_OK);
        assert_int_equal(cd_record_builder_add_tensor(b, "mask", CD_DTYPE_UINT8, 1, shape, chunk, codec, 3, mask, &err),
                         CD_OK);
        assert_int_equal(cd_record_builder_add_tensor(b, "mask", CD_DTYPE_UINT8, 1, shape, chunk, codec, 3, mask, &err),
                         CD_ERR_ARG);
        assert_int_equal(cd_shard_writer_append(w, b, &err), CD_OK);
        cd_record_builder_destroy(b);
    }
    char hex[33];
    uint64_t size;
    assert_int_equal(cd_shard_writer_finish(w, &size, hex, &err), CD_OK);
    assert_int_equal(strlen(hex), 32);
    assert_int_equal(size % 4096, (size_t)nrec * 32 % 4096);
    cd_shard_writer_destroy(w);
    free(img);
    free(mask);
}

static void check_roundtrip(cd_codec codec) {
    char path[512];
    test_path(path, sizeof path, codec == CD_CODEC_ZSTD ? "zstd.cds" : "raw.cds");
    write_shard(path, 5, codec);
    cd_shard *s;
    cd_error err;
    assert_int_equal(cd_shard_open(path, &s, &err), CD_OK);
    assert_int_equal(cd_shard_record_count(s), 5);
    int16_t *img = malloc(sizeof(int16_t) * 2 * NX * NY * NZ), *got = malloc(sizeof(int16_t) * 2 * NX * NY * NZ);
    uint8_t *mask = malloc(NX * NY * NZ), *gotm = malloc(NX * NY * NZ);
    for (int r = 4; r >= 0; r--) { /* any order: the index makes records independent */
        cd_record *rec;
        assert_int_equal(cd_shard_read_record(s, (uint64_t)r, &rec, &err), CD_OK);
        char want[64];
        snprintf(want, sizeof want, "{\"key\": \"case/%d\", \"label\": %d}", r, r % 3);
        assert_string_equal(cd_record_metadata(rec), want);
        int ti = cd_record_find_tensor(rec, "image"), tm = cd_record_find_tensor(rec, "mask");
        assert_true(ti == 0 && tm == 1);
        assert_int_equal(cd_record_find_tensor(rec, "nope"), -1);
        cd_tensor_info info;
        cd_record_tensor_info(rec, 0, &info);
        assert_int_equal(info.chunk_count, 3 * 2 * 3); /* ceil(37/16) * ceil(20/16) * ceil(9/4) */
        fill_record(r, img, mask);
        assert_int_equal(cd_record_read_tensor(s, rec, 0, got, &err), CD_OK);
        assert_memory_equal(got, img, sizeof(int16_t) * 2 * NX * NY * NZ);
        assert_int_equal(cd_record_read_tensor(s, rec, 1, gotm, &err), CD_OK);
        assert_memory_equal(gotm, mask, NX * NY * NZ);
        /* A region crossing chunk borders and sticking out of the tensor: outside is zero. */
        const int64_t start[3] = {30, -2, 3}, size[3] = {10, 6, 5};
        int16_t region[2 * 10 * 6 * 5];
        assert_int_equal(cd_record_read_region(s, rec, 0, start, size, region, &err), CD_OK);
        for (int c = 0; c < 2; c++)
            for (int x = 0; x < 10; x++)
                for (int y = 0; y < 6; y++)
                    for (int z = 0; z < 5; z++) {
                        int gx = 30 + x, gy = -2 + y, gz = 3 + z;
                        int16_t v = region[((c * 10 + x) * 6 + y) * 5 + z];
                        if (gx < NX && gy >= 0 && gy < NY && gz < NZ)
                            assert_int_equal(v, image_value(r, c, gx, gy, gz));
                        else
                            assert_int_equal(v, 0);
                    }
        cd_chunk_info ci;
        cd_record_chunk_info(rec, 0, 1, &ci);
        assert_int_equal(ci.offset % 4096, 0);
        assert_true(ci.start[2] == 4 && ci.extent[2] == 4);
        cd_record_destroy(rec);
    }
    cd_record *none;
    assert_int_equal(cd_shard_read_record(s, 5, &none, &err), CD_ERR_ARG);
    cd_shard_close(s);
    int64_t bad;
    assert_int_equal(cd_shard_verify(path, &bad, &err), CD_OK);
    free(img);
    free(got);
    free(mask);
    free(gotm);
}

static void test_roundtrip_zstd(void **state) {
    (void)state;
    check_roundtrip(CD_CODEC_ZSTD);
}
static void test_roundtrip_raw(void **state) {
    (void)state;
    check_roundtrip(CD_CODEC_RAW);
}

static void test_deterministic_bytes(void **state) {
    (void)state;
    char a[512], b[512];
    test_path(a, sizeof a, "det_a.cds");
    test_path(b, sizeof b, "det_b.cds");
    write_shard(a, 3, CD_CODEC_ZSTD);
    write_shard(b, 3, CD_CODEC_ZSTD);
    size_t na, nb;
    void *da = read_bytes(a, &na), *db = read_bytes(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(da, db, na);
    free(da);
    free(db);
}

/* Damages a copy of a good shard and checks that verify names the problem. */
static void expect_damage(const uint8_t *good, size_t n, size_t at, int xor_mask, size_t truncate_to, cd_status want,
                          int64_t want_record, const char *needle) {
    char path[512];
    test_path(path, sizeof path, "damaged.cds");
    uint8_t *copy = malloc(n);
    memcpy(copy, good, n);
    if (xor_mask) copy[at] ^= (uint8_t)xor_mask;
    write_bytes(path, copy, truncate_to ? truncate_to : n);
    int64_t bad = -2;
    cd_error err;
    cd_status st = cd_shard_verify(path, &bad, &err);
    if (st != want || bad != want_record || !strstr(err.message, path) || !strstr(err.message, needle))
        fail_msg("damage at %zu: got %s record %lld '%s'", at, cd_status_name(st), (long long)bad, err.message);
    free(copy);
}

static void test_damage_detected(void **state) {
    (void)state;
    char path[512];
    test_path(path, sizeof path, "good.cds");
    write_shard(path, 3, CD_CODEC_ZSTD);
    size_t n;
    uint8_t *good = read_bytes(path, &n);
    cd_shard *s;
    cd_record *r;
    assert_int_equal(cd_shard_open(path, &s, NULL), CD_OK);
    assert_int_equal(cd_shard_read_record(s, 1, &r, NULL), CD_OK);
    cd_chunk_info ci;
    cd_record_chunk_info(r, 0, 2, &ci);
    cd_record_destroy(r);
    cd_shard_close(s);
    expect_damage(good, n, 20, 0x1, 0, CD_ERR_CORRUPT, -1, "header checksum");            /* shard header */
    expect_damage(good, n, n - 10, 0x4, 0, CD_ERR_CORRUPT, -1, "index checksum");         /* index */
    expect_damage(good, n, (size_t)ci.offset + 5, 0x10, 0, CD_ERR_CORRUPT, 1, "chunk 2"); /* a chunk of record 1 */
    expect_damage(good, n, 4096 + 40, 0x2, 0, CD_ERR_CORRUPT, 0, "record header checksum");
    expect_damage(good, n, 0, 0, n - 100, CD_ERR_TRUNCATED, -1, "header says"); /* truncated */
    expect_damage(good, n, 0, 0xff, 0, CD_ERR_FORMAT, -1, "bad magic");
    free(good);
}

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* A forged record whose chunk 0 entry aliases chunk 1's bytes, with every checksum recomputed: only
 * the placement rule (chunks in table order, disjoint) can catch it. */
static void test_aliased_chunk_rejected(void **state) {
    (void)state;
    char path[512];
    test_path(path, sizeof path, "alias.cds");
    write_shard(path, 1, CD_CODEC_ZSTD);
    size_t n;
    uint8_t *b = read_bytes(path, &n);
    const size_t rec = 4096, meta = strlen("{\"key\": \"case/0\", \"label\": 0}");
    uint32_t hsize = (uint32_t)(b[rec + 8] | b[rec + 9] << 8 | b[rec + 10] << 16 | (uint32_t)b[rec + 11] << 24);
    uint8_t *e0 = b + rec + 32 + 2 * 64 + meta, *e1 = e0 + 24;
    memcpy(e0, e1, 24); /* same offset, sizes and checksum as chunk 1 (both 16x16x4 chunks) */
    put_le64(b + rec + hsize - 8, XXH3_64bits(b + rec, hsize - 8));
    assert_true(le64(e0) == le64(e1));
    write_bytes(path, b, n);
    int64_t bad = -2;
    cd_error err;
    assert_int_equal(cd_shard_verify(path, &bad, &err), CD_ERR_CORRUPT);
    assert_int_equal(bad, 0);
    assert_non_null(strstr(err.message, "bad chunk table entry"));
    free(b);
}

/* Forged shards with every checksum recomputed, each breaking one rule of shard-format.md that only the
 * structure can tell: a non-zero reserved byte (shard header, index entry, record header, tensor entry),
 * a tensor named like another, a name with bytes after its NUL padding. */
static void reseal(uint8_t *b, size_t n) {
    const uint64_t ioff = le64(b + 24), isize = le64(b + 32);
    const size_t rec = 4096;
    uint32_t hsize = (uint32_t)(b[rec + 8] | b[rec + 9] << 8 | b[rec + 10] << 16 | (uint32_t)b[rec + 11] << 24);
    put_le64(b + rec + hsize - 8, XXH3_64bits(b + rec, hsize - 8));
    (void)n;
    put_le64(b + 48, XXH3_64bits(b + ioff, isize));
    put_le64(b + 4088, XXH3_64bits(b, 4088));
}

static void test_structure_rules(void **state) {
    (void)state;
    char path[512];
    test_path(path, sizeof path, "rules.cds");
    write_shard(path, 1, CD_CODEC_ZSTD);
    size_t n;
    uint8_t *good = read_bytes(path, &n);
    const size_t rec = 4096, ioff = (size_t)le64(good + 24), t0 = rec + 32, t1 = t0 + 64;
    static const struct {
        const char *what;
        /* 0 shard header, 1 index entry, 2 record header, 3 tensor entry, 4 duplicate name, 5 name padding */
        int where;
        size_t at;
        const char *needle;
    } cases[] = {
        {"shard header reserved", 0, 100, "reserved bytes"},
        {"index entry reserved", 1, 12, "bad index entry"},
        {"index entry reserved 2", 1, 24, "bad index entry"},
        {"record header reserved", 2, 20, "inconsistent record header"},
        {"tensor reserved", 3, 18, "reserved bytes"},
        {"tensor reserved 2", 3, 60, "reserved bytes"},
        {"duplicate name", 4, 0, "two tensors named 'image'"},
        {"name padding", 5, 0, "name padding"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        uint8_t *b = malloc(n);
        memcpy(b, good, n);
        switch (cases[k].where) {
        case 0: b[cases[k].at] = 1; break;
        case 1: b[ioff + cases[k].at] = 1; break;
        case 2: b[rec + cases[k].at] = 1; break;
        case 3: b[t1 + cases[k].at] = 1; break;
        case 4: memcpy(b + t1, b + t0, 16); break; /* "mask" renamed "image" */
        case 5: b[t1 + 10] = 'x'; break;           /* "mask\0\0...x" */
        }
        reseal(b, n);
        write_bytes(path, b, n);
        int64_t bad = -2;
        cd_error err;
        cd_status st = cd_shard_verify(path, &bad, &err);
        if (st == CD_OK || !strstr(err.message, cases[k].needle))
            fail_msg("%s: got %s '%s'", cases[k].what, cd_status_name(st), st == CD_OK ? "" : err.message);
        free(b);
    }
    /* the resealed good bytes still pass: the forging itself is sound */
    uint8_t *b = malloc(n);
    memcpy(b, good, n);
    reseal(b, n);
    write_bytes(path, b, n);
    cd_error err;
    int64_t bad = -2;
    assert_int_equal(cd_shard_verify(path, &bad, &err), CD_OK);
    free(b);
    free(good);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_zstd),         cmocka_unit_test(test_roundtrip_raw),
        cmocka_unit_test(test_deterministic_bytes),    cmocka_unit_test(test_damage_detected),
        cmocka_unit_test(test_aliased_chunk_rejected), cmocka_unit_test(test_structure_rules),
    };
    return cmocka_run_group_tests_name("shard", tests, NULL, NULL);
}
