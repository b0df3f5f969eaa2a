/* libFuzzer target: the shard reader (shard/reader.c, shard/codec.c; schemas/shard-format.md). The
 * bytes are a shard file: open it, read every record header, every tensor (when at most 16 MiB), a
 * region straddling the tensor's corner, every chunk through cd_record_decode_chunk, and verify it.
 *
 * Checksums. A mutated shard almost never carries the right XXH3 values, so every mutant would stop at
 * the first checksum check and the structural checks behind them would never run. So before the bytes
 * are written, every checksum field that holds 0 gets the right value, located through the same fields
 * the reader reads: the chunk xxh3s of each record's chunk tables, then each record header's trailing
 * checksum, then index_xxh3, then header_xxh3 (each covers the ones before). A nonzero field is left as
 * it is and exercises the mismatch checks. The seeds carry 0 in every checksum field (make_seeds.py).
 * The library has no fuzzing-only code path.
 *
 * Oracle. Whatever the reader accepts is checked here against the file's bytes and the rules of
 * schemas/shard-format.md, independently of the reader (abort() on a violation): the checksums it claims
 * to have verified, the header and index placement, each record header's fields and size, the chunk
 * placement rules (aligned, in table order without overlap, inside the record) and each chunk's sizes.
 * So a structural check that goes missing from the reader shows up as a crash here even where the
 * missing check would not crash by itself. */
#include <jansson.h>
#include <stdint.h>
#include <xxhash.h>

#include "cirrdata/cirrdata.h"
#include "fuzz_common.h"

#define FUZZ_TENSOR_CAP ((uint64_t)16 << 20)
#define HDR 4096u
#define MAX_RECORDS 256u

static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32); }
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
/* [off, off + len) lies inside a buffer of size bytes (no overflow). */
static bool inside(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }
static uint64_t align4k(uint64_t n) { return (n + 4095) & ~(uint64_t)4095; }

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_shard oracle: the reader accepted a shard that breaks: %s (line %d)\n", #cond,       \
                    __LINE__);                                                                                         \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

/* Fills the zero checksum fields (see the top). Hashing stops after 32 x size bytes, so a mutant
 * whose index points many records at the same large chunks stays fast. */
static void seal(uint8_t *d, size_t size) {
    if (size < HDR) return;
    uint64_t budget = 32 * (uint64_t)size;
    const uint64_t ioff = get64(d + 24), isize = get64(d + 32);
    if (inside(ioff, isize, size)) {
        for (uint64_t e = 0; e + 32 <= isize && e / 32 < MAX_RECORDS; e += 32) {
            const uint64_t off = get64(d + ioff + e), hs = get32(d + ioff + e + 8);
            if (hs < 40 || !inside(off, hs, size)) continue;
            uint8_t *h = d + off;
            const uint64_t nt = get32(h + 12), end = hs - 8;
            uint64_t p = 32 + 64 * nt + get32(h + 16); /* the chunk tables follow tensors and metadata */
            for (uint64_t t = 0; t < nt && t < 16 && 32 + 64 * (t + 1) <= end; t++) {
                const uint32_t cc = get32(h + 32 + 64 * t + 48);
                for (uint32_t c = 0; c < cc && p + 24 <= end; c++, p += 24) {
                    uint8_t *ce = h + p;
                    const uint64_t coff = get64(ce), ss = get32(ce + 8);
                    if (get64(ce + 16) == 0 && inside(coff, ss, size) && ss <= budget) {
                        put64(ce + 16, XXH3_64bits(d + coff, ss));
                        budget -= ss;
                    }
                }
            }
            if (get64(h + end) == 0 && end <= budget) {
                put64(h + end, XXH3_64bits(h, end));
                budget -= end;
            }
        }
        if (get64(d + 48) == 0) put64(d + 48, XXH3_64bits(d + ioff, isize));
    }
    if (get64(d + 4088) == 0) put64(d + 4088, XXH3_64bits(d, 4088));
}

/* cd_shard_open accepted d: the shard header and the index as the format requires. */
static void check_open(const uint8_t *d, size_t size, uint64_t n) {
    CHECK(size >= HDR && !memcmp(d, "CDSHARD1", 8) && get32(d + 8) == 1 && get32(d + 12) == HDR);
    CHECK(get64(d + 4088) == XXH3_64bits(d, 4088));
    const uint64_t ioff = get64(d + 24), isize = get64(d + 32);
    CHECK(get64(d + 16) == n && get64(d + 40) == size && isize == n * 32 && ioff % 4096 == 0 && ioff >= HDR &&
          ioff + isize == size);
    CHECK(get64(d + 48) == XXH3_64bits(d + ioff, isize));
    uint64_t prev_end = HDR;
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *e = d + ioff + 32 * i;
        const uint64_t off = get64(e), hs = get32(e + 8), rs = get64(e + 16);
        CHECK(off % 4096 == 0 && off >= prev_end && hs >= 40 && rs >= hs && off <= ioff && rs <= ioff - off);
        prev_end = off + rs;
    }
}

/* cd_shard_read_record accepted record i: its header, tensor table and chunk tables as the format
 * requires, and the record as the reader describes it equals what the bytes say. */
static void check_record(const uint8_t *d, uint64_t i, const cd_record *r) {
    const uint8_t *e = d + get64(d + 24) + 32 * i;
    const uint64_t off = get64(e), hs = get32(e + 8), rs = get64(e + 16);
    const uint8_t *h = d + off;
    CHECK(!memcmp(h, "CDRECRD1", 8) && get64(h + hs - 8) == XXH3_64bits(h, hs - 8));
    const uint32_t nt = get32(h + 12), meta = get32(h + 16);
    CHECK(get32(h + 8) == hs && nt >= 1 && nt <= 16 && meta <= (1u << 20) && get64(h + 24) == i);
    CHECK(cd_record_number(r) == i && cd_record_tensor_count(r) == nt);
    uint64_t need = 32 + 64 * (uint64_t)nt + meta + 8;
    CHECK(need <= hs);
    json_t *j = json_loadb((const char *)h + 32 + 64 * nt, meta, JSON_REJECT_DUPLICATES, NULL);
    CHECK(json_is_object(j));
    json_decref(j);
    CHECK(strlen(cd_record_metadata(r)) <= meta &&
          !memcmp(cd_record_metadata(r), h + 32 + 64 * nt, strlen(cd_record_metadata(r))));
    const uint8_t *ct = h + 32 + 64 * nt + meta;
    uint64_t next_free = off + align4k(hs);
    for (uint32_t t = 0; t < nt; t++) {
        const uint8_t *te = h + 32 + 64 * t;
        cd_tensor_info ti;
        cd_record_tensor_info(r, t, &ti);
        CHECK(ti.name[0] && strlen(ti.name) <= 16 && !strncmp(ti.name, (const char *)te, 16));
        CHECK(te[16] >= 1 && te[16] <= 4 && te[17] <= 1 && (uint32_t)ti.codec == te[17] &&
              ti.channels == get32(te + 20) && ti.channels >= 1);
        static const size_t esize[5] = {0, 1, 2, 2, 4};
        CHECK(cd_dtype_size(ti.dtype) == esize[te[16]]);
        uint64_t count = 1;
        for (int a = 0; a < 3; a++) {
            CHECK(ti.shape[a] == get32(te + 24 + 4 * a) && ti.chunk[a] == get32(te + 36 + 4 * a));
            CHECK(ti.shape[a] >= 1 && ti.chunk[a] >= 1 && ti.chunk[a] <= ti.shape[a]);
            count *= (ti.shape[a] + ti.chunk[a] - 1) / ti.chunk[a];
        }
        CHECK(ti.chunk_count == count && get32(te + 48) == count);
        need += 24 * count;
        CHECK(need <= hs);
        for (uint32_t c = 0; c < ti.chunk_count; c++, ct += 24) {
            cd_chunk_info ci;
            cd_record_chunk_info(r, t, c, &ci);
            CHECK(ci.offset == get64(ct) && ci.stored_size == get32(ct + 8) && ci.raw_size == get32(ct + 12) &&
                  ci.xxh3 == get64(ct + 16));
            /* placement: aligned, in table order, no overlap, inside the record */
            CHECK(ci.offset % 4096 == 0 && ci.offset >= next_free && ci.offset <= off + rs &&
                  ci.stored_size <= off + rs - ci.offset);
            next_free = ci.offset + ci.stored_size;
            /* geometry: chunk (a, b, c) of the grid in C order, edge chunks clipped */
            const uint32_t g1 = (ti.shape[1] + ti.chunk[1] - 1) / ti.chunk[1],
                           g2 = (ti.shape[2] + ti.chunk[2] - 1) / ti.chunk[2];
            const uint32_t idx[3] = {c / (g1 * g2), (c / g2) % g1, c % g2};
            uint64_t raw = (uint64_t)ti.channels * esize[te[16]];
            for (int a = 0; a < 3; a++) {
                const uint32_t start = idx[a] * ti.chunk[a];
                const uint32_t ext = ti.shape[a] - start < ti.chunk[a] ? ti.shape[a] - start : ti.chunk[a];
                CHECK(ci.start[a] == start && ci.extent[a] == ext);
                raw *= ext;
            }
            CHECK(ci.raw_size == raw && (ti.codec == CD_CODEC_RAW ? ci.stored_size == raw : ci.stored_size > 0));
        }
    }
    CHECK(need == hs);
}

static uint64_t tensor_bytes(const cd_tensor_info *ti) {
    uint64_t n = (uint64_t)ti->channels * cd_dtype_size(ti->dtype);
    for (int a = 0; a < 3; a++) {
        if (ti->shape[a] && n > UINT64_MAX / ti->shape[a]) return UINT64_MAX;
        n *= ti->shape[a];
    }
    return n;
}

/* Every chunk a successful read used passed its checksum. */
static void check_chunks_verified(const uint8_t *d, const cd_record *r, uint32_t t) {
    cd_tensor_info ti;
    cd_record_tensor_info(r, t, &ti);
    for (uint32_t c = 0; c < ti.chunk_count; c++) {
        cd_chunk_info ci;
        cd_record_chunk_info(r, t, c, &ci);
        CHECK(XXH3_64bits(d + ci.offset, ci.stored_size) == ci.xxh3);
    }
}

static void read_tensors(const uint8_t *d, const cd_shard *s, const cd_record *r) {
    cd_error err;
    uint32_t nt = cd_record_tensor_count(r);
    for (uint32_t t = 0; t < nt; t++) {
        cd_tensor_info ti;
        cd_record_tensor_info(r, t, &ti);
        cd_record_find_tensor(r, ti.name);
        uint64_t nbytes = tensor_bytes(&ti);
        if (nbytes && nbytes <= FUZZ_TENSOR_CAP) {
            void *buf = malloc(nbytes);
            if (!buf) abort();
            if (cd_record_read_tensor(s, r, t, buf, &err) == CD_OK) check_chunks_verified(d, r, t);
            free(buf);
        }
        /* a 6^3 box starting 2 voxels before the corner, and one ending 2 past the far corner */
        uint64_t elem = (uint64_t)ti.channels * cd_dtype_size(ti.dtype);
        if (elem && elem <= 4096) {
            int64_t size[3] = {6, 6, 6};
            int64_t start0[3] = {-2, -2, -2};
            int64_t start1[3] = {(int64_t)ti.shape[0] - 4, (int64_t)ti.shape[1] - 4, (int64_t)ti.shape[2] - 4};
            void *buf = malloc(elem * 216);
            if (!buf) abort();
            cd_record_read_region(s, r, t, start0, size, buf, &err);
            cd_record_read_region(s, r, t, start1, size, buf, &err);
            free(buf);
        }
        /* chunks one by one, at most 64 of them, each at most 16 MiB */
        for (uint32_t c = 0; c < ti.chunk_count && c < 64; c++) {
            cd_chunk_info ci;
            cd_record_chunk_info(r, t, c, &ci);
            if (ci.raw_size > FUZZ_TENSOR_CAP || ci.stored_size > FUZZ_TENSOR_CAP) continue;
            void *stored = calloc(1, ci.stored_size ? ci.stored_size : 1);
            void *raw = malloc(ci.raw_size ? ci.raw_size : 1);
            if (!stored || !raw) abort();
            if (pread(cd_shard_fd(s), stored, ci.stored_size, (off_t)ci.offset) == (ssize_t)ci.stored_size &&
                cd_record_decode_chunk(s, r, t, c, stored, raw, &err) == CD_OK)
                CHECK(XXH3_64bits(stored, ci.stored_size) == ci.xxh3);
            free(stored);
            free(raw);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *d = malloc(size ? size : 1);
    if (!d) abort();
    memcpy(d, data, size);
    seal(d, size);
    const char *path = fuzz_path(0, "f.cdshard");
    fuzz_write(path, d, size);
    cd_error err;
    cd_shard *s = NULL;
    if (cd_shard_open(path, &s, &err) == CD_OK) {
        uint64_t n = cd_shard_record_count(s);
        check_open(d, size, n);
        for (uint64_t i = 0; i < n && i < MAX_RECORDS; i++) {
            cd_record *r = NULL;
            if (cd_shard_read_record(s, i, &r, &err) != CD_OK) continue;
            check_record(d, i, r);
            read_tensors(d, s, r);
            cd_record_destroy(r);
        }
        /* an index past the end must be refused, not read */
        cd_record *r = NULL;
        if (cd_shard_read_record(s, n, &r, &err) == CD_OK) abort();
        cd_shard_close(s);
    }
    int64_t bad = 0;
    cd_shard_verify(path, &bad, &err);
    free(d);
    return 0;
}
