/* Shard reader: every field from the file is validated before it locates or sizes anything. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "cirrdata/shard.h"
#include "shard/format.h"
#include "shard/record_copy.h"
#include "shard/record_impl.h"
#include "core/fs.h"

#define MAX_RECORD_HEADER ((uint64_t)64 << 20)

struct cd_shard {
    char *path;
    int fd;
    uint64_t file_size;
    uint64_t nrecords;
    uint8_t *index;
};

static bool all_zero(const uint8_t *p, size_t n) {
    for (size_t k = 0; k < n; k++)
        if (p[k]) return false;
    return true;
}

static cd_status pread_exact(const cd_shard *s, void *buf, size_t len, uint64_t at, const char *what, cd_error *err) {
    ssize_t n = cd_pread_full(s->fd, buf, len, at);
    if (n < 0) return cd_fail(err, CD_ERR_IO, "%s: reading %s failed: %s", s->path, what, strerror(errno));
    if ((size_t)n < len)
        return cd_fail(err, CD_ERR_TRUNCATED, "%s: truncated: %s at byte %llu is past the end", s->path, what,
                       (unsigned long long)at);
    return CD_OK;
}

void cd_shard_close(cd_shard *s) {
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    free(s->index);
    free(s->path);
    free(s);
}

uint64_t cd_shard_record_count(const cd_shard *s) { return s->nrecords; }
/* record_copy.h: the index's record_size ends at the last chunk's bytes; the writer pads it to 4 KiB. */
uint64_t cd_shard_record_bytes(const cd_shard *s, uint64_t i) {
    return i < s->nrecords ? cd_align4k(cd_get_u64(s->index + i * CD_SHARD_INDEX_ENTRY + 16)) : 0;
}
const char *cd_shard_path(const cd_shard *s) { return s->path; }
int cd_shard_fd(const cd_shard *s) { return s->fd; }

cd_status cd_shard_open(const char *path, cd_shard **out, cd_error *err) {
    if (!path || !out) return cd_fail(err, CD_ERR_ARG, "cd_shard_open: NULL argument");
    *out = NULL;
    cd_shard *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    /* A FIFO is refused, never waited on. */
    cd_status st = cd_open_regular(path, NULL, &s->fd, &s->file_size, err);
    if (st != CD_OK) goto fail;
    if (s->file_size < CD_SHARD_HEADER_SIZE) {
        st = cd_fail(err, CD_ERR_TRUNCATED, "%s: truncated: %llu bytes is smaller than the shard header", path,
                     (unsigned long long)s->file_size);
        goto fail;
    }
    uint8_t h[CD_SHARD_HEADER_SIZE];
    if ((st = pread_exact(s, h, sizeof h, 0, "the shard header", err)) != CD_OK) goto fail;
    if (memcmp(h, CD_SHARD_MAGIC, 8) != 0) {
        st = cd_fail(err, CD_ERR_FORMAT, "%s: not a cirrdata shard (bad magic)", path);
        goto fail;
    }
    if (cd_get_u64(h + 4088) != cd_xxh3_64(h, 4088)) {
        st = cd_fail(err, CD_ERR_CORRUPT, "%s: shard header checksum mismatch", path);
        goto fail;
    }
    if (cd_get_u32(h + 8) != CD_SHARD_VERSION || cd_get_u32(h + 12) != CD_SHARD_HEADER_SIZE) {
        st = cd_fail(err, CD_ERR_UNSUPPORTED, "%s: shard format version %u is not supported (this library reads 1)",
                     path, cd_get_u32(h + 8));
        goto fail;
    }
    if (!all_zero(h + 56, 4088 - 56)) {
        st = cd_fail(err, CD_ERR_CORRUPT, "%s: the shard header's reserved bytes are not zero", path);
        goto fail;
    }
    uint64_t n = cd_get_u64(h + 16), ioff = cd_get_u64(h + 24), isize = cd_get_u64(h + 32), fsize = cd_get_u64(h + 40);
    if (fsize != s->file_size) {
        st = cd_fail(err, s->file_size < fsize ? CD_ERR_TRUNCATED : CD_ERR_CORRUPT,
                     "%s: file has %llu bytes, its header says %llu", path, (unsigned long long)s->file_size,
                     (unsigned long long)fsize);
        goto fail;
    }
    if (n > fsize / CD_ALIGN || isize != n * CD_SHARD_INDEX_ENTRY || ioff % CD_ALIGN || ioff < CD_SHARD_HEADER_SIZE ||
        ioff > fsize || fsize - ioff != isize) {
        st = cd_fail(err, CD_ERR_CORRUPT, "%s: inconsistent shard header (records %llu, index at %llu size %llu)", path,
                     (unsigned long long)n, (unsigned long long)ioff, (unsigned long long)isize);
        goto fail;
    }
    s->nrecords = n;
    s->index = malloc(isize ? isize : 1);
    if (!s->index) {
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (isize && (st = pread_exact(s, s->index, isize, ioff, "the record index", err)) != CD_OK) goto fail;
    if (cd_xxh3_64(s->index, isize) != cd_get_u64(h + 48)) {
        st = cd_fail(err, CD_ERR_CORRUPT, "%s: record index checksum mismatch", path);
        goto fail;
    }
    uint64_t prev_end = CD_SHARD_HEADER_SIZE;
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *e = s->index + i * CD_SHARD_INDEX_ENTRY;
        uint64_t off = cd_get_u64(e), hs = cd_get_u32(e + 8), rs = cd_get_u64(e + 16);
        if (off % CD_ALIGN || off < prev_end || hs < CD_RECORD_FIXED + 8 || hs > MAX_RECORD_HEADER || rs < hs ||
            off > ioff || rs > ioff - off || !all_zero(e + 12, 4) || !all_zero(e + 24, 8)) {
            st = cd_fail(err, CD_ERR_CORRUPT, "%s: record %llu: bad index entry", path, (unsigned long long)i);
            goto fail;
        }
        prev_end = off + rs;
    }
    *out = s;
    return CD_OK;
fail:
    cd_shard_close(s);
    return st;
}

void cd_record_destroy(cd_record *r) {
    if (!r) return;
    for (uint32_t t = 0; t < r->ntensors; t++) free(r->chunks[t]);
    free(r->meta);
    free(r);
}

cd_status cd_shard_read_record(const cd_shard *s, uint64_t i, cd_record **out, cd_error *err) {
    if (!s || !out) return cd_fail(err, CD_ERR_ARG, "cd_shard_read_record: NULL argument");
    *out = NULL;
    if (i >= s->nrecords)
        return cd_fail(err, CD_ERR_ARG, "%s: record %llu does not exist (the shard has %llu)", s->path,
                       (unsigned long long)i, (unsigned long long)s->nrecords);
    const uint8_t *e = s->index + i * CD_SHARD_INDEX_ENTRY;
    const uint64_t off = cd_get_u64(e), hsize = cd_get_u32(e + 8), rsize = cd_get_u64(e + 16);
    uint8_t *h = malloc(hsize);
    cd_record *r = calloc(1, sizeof *r);
    cd_status st = CD_OK;
    char what[64];
    snprintf(what, sizeof what, "record %llu", (unsigned long long)i);
#define BAD(...)                                                                                                       \
    do {                                                                                                               \
        st = cd_fail(err, CD_ERR_CORRUPT, __VA_ARGS__);                                                                \
        goto done;                                                                                                     \
    } while (0)
    if (!h || !r) {
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = pread_exact(s, h, hsize, off, what, err)) != CD_OK) goto done;
    if (memcmp(h, CD_RECORD_MAGIC, 8) != 0) BAD("%s: record %llu: bad record magic", s->path, (unsigned long long)i);
    if (cd_get_u64(h + hsize - 8) != cd_xxh3_64(h, hsize - 8))
        BAD("%s: record %llu: record header checksum mismatch", s->path, (unsigned long long)i);
    uint32_t nt = cd_get_u32(h + 12), meta = cd_get_u32(h + 16);
    if (cd_get_u32(h + 8) != hsize || nt < 1 || nt > CD_SHARD_MAX_TENSORS || meta > CD_SHARD_MAX_META_BYTES ||
        cd_get_u64(h + 24) != i || !all_zero(h + 20, 4))
        BAD("%s: record %llu: inconsistent record header", s->path, (unsigned long long)i);
    uint64_t need = CD_RECORD_FIXED + (uint64_t)CD_RECORD_TENSOR_ENTRY * nt + meta + 8;
    if (need > hsize) BAD("%s: record %llu: record header too short", s->path, (unsigned long long)i);
    r->number = i;
    r->offset = off;
    const uint8_t *p = h + CD_RECORD_FIXED;
    for (uint32_t t = 0; t < nt; t++, p += CD_RECORD_TENSOR_ENTRY) {
        char name[CD_TENSOR_NAME_MAX + 1];
        memcpy(name, p, CD_TENSOR_NAME_MAX);
        name[CD_TENSOR_NAME_MAX] = '\0';
        uint32_t shape[3], chunk[3];
        for (int a = 0; a < 3; a++) {
            shape[a] = cd_get_u32(p + 24 + 4 * a);
            chunk[a] = cd_get_u32(p + 36 + 4 * a);
        }
        /* NUL-padded name, unique in the record; reserved bytes zero (shard-format.md). */
        size_t nl = strnlen((const char *)p, CD_TENSOR_NAME_MAX);
        if (!nl || !all_zero(p + nl, CD_TENSOR_NAME_MAX - nl) || !all_zero(p + 18, 2) || !all_zero(p + 52, 12))
            BAD("%s: record %llu: tensor %u: bad name padding or reserved bytes not zero", s->path,
                (unsigned long long)i, t);
        for (uint32_t u = 0; u < t; u++)
            if (!strcmp(r->tensors[u].name, name))
                BAD("%s: record %llu: two tensors named '%s'", s->path, (unsigned long long)i, name);
        cd_dtype dt = cd_shard_dtype_from_code(p[16]);
        if (cd_tensor_info_init(&r->tensors[t], name, dt, cd_get_u32(p + 20), shape, chunk, (cd_codec)p[17], NULL) !=
                CD_OK ||
            memcmp(r->tensors[t].chunk, chunk, sizeof chunk) != 0 || r->tensors[t].chunk_count != cd_get_u32(p + 48))
            BAD("%s: record %llu: tensor %u has an invalid description", s->path, (unsigned long long)i, t);
        need += (uint64_t)CD_RECORD_CHUNK_ENTRY * r->tensors[t].chunk_count;
        r->ntensors = t + 1;
    }
    if (need != hsize)
        BAD("%s: record %llu: record header size disagrees with its tables", s->path, (unsigned long long)i);
    r->meta = malloc((size_t)meta + 1);
    if (!r->meta) {
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
        goto done;
    }
    memcpy(r->meta, p, meta);
    r->meta[meta] = '\0';
    json_error_t jerr;
    json_t *j = json_loadb(r->meta, meta, JSON_REJECT_DUPLICATES, &jerr);
    bool is_obj = j && json_is_object(j);
    json_decref(j);
    if (!is_obj) BAD("%s: record %llu: metadata is not a JSON object", s->path, (unsigned long long)i);
    p += meta;
    const uint64_t data_lo = off + cd_align4k(hsize), data_hi = off + rsize;
    /* Chunks follow the table order in the file without overlapping: no entry may alias another's
     * bytes (which checksums alone would not catch). */
    uint64_t next_free = data_lo;
    for (uint32_t t = 0; t < r->ntensors; t++) {
        cd_tensor_info *ti = &r->tensors[t];
        r->chunks[t] = calloc(ti->chunk_count, sizeof(cd_chunk_info));
        if (!r->chunks[t]) {
            st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (uint32_t c = 0; c < ti->chunk_count; c++, p += CD_RECORD_CHUNK_ENTRY) {
            cd_chunk_info *ci = &r->chunks[t][c];
            cd_chunk_geometry(ti, c, ci);
            ci->offset = cd_get_u64(p);
            ci->stored_size = cd_get_u32(p + 8);
            ci->xxh3 = cd_get_u64(p + 16);
            bool raw_ok = cd_get_u32(p + 12) == ci->raw_size;
            bool stored_ok = ti->codec == CD_CODEC_RAW ? ci->stored_size == ci->raw_size : ci->stored_size > 0;
            if (!raw_ok || !stored_ok || ci->offset % CD_ALIGN || ci->offset < next_free || ci->offset > data_hi ||
                ci->stored_size > data_hi - ci->offset)
                BAD("%s: record %llu: tensor '%s' chunk %u: bad chunk table entry", s->path, (unsigned long long)i,
                    ti->name, c);
            next_free = ci->offset + ci->stored_size;
        }
    }
#undef BAD
done:
    free(h);
    if (st != CD_OK) {
        cd_record_destroy(r);
        return st;
    }
    *out = r;
    return CD_OK;
}

uint64_t cd_record_number(const cd_record *r) { return r->number; }
const char *cd_record_metadata(const cd_record *r) { return r->meta; }
uint32_t cd_record_tensor_count(const cd_record *r) { return r->ntensors; }

int cd_record_find_tensor(const cd_record *r, const char *name) {
    for (uint32_t t = 0; t < r->ntensors; t++)
        if (!strcmp(r->tensors[t].name, name)) return (int)t;
    return -1;
}

void cd_record_tensor_info(const cd_record *r, uint32_t tensor, cd_tensor_info *out) { *out = r->tensors[tensor]; }
void cd_record_chunk_info(const cd_record *r, uint32_t tensor, uint32_t chunk, cd_chunk_info *out) {
    *out = r->chunks[tensor][chunk];
}

cd_status cd_record_decode_chunk(const cd_shard *s, const cd_record *r, uint32_t tensor, uint32_t chunk,
                                 const void *stored, void *out, cd_error *err) {
    const cd_tensor_info *ti = &r->tensors[tensor];
    const cd_chunk_info *ci = &r->chunks[tensor][chunk];
    if (cd_xxh3_64(stored, ci->stored_size) != ci->xxh3)
        return cd_fail(err, CD_ERR_CORRUPT, "%s: record %llu: tensor '%s' chunk %u: checksum mismatch", s->path,
                       (unsigned long long)r->number, ti->name, chunk);
    if (ti->codec == CD_CODEC_RAW) {
        memcpy(out, stored, ci->raw_size);
        return CD_OK;
    }
    const char *why;
    if (cd_zstd_decompress(stored, ci->stored_size, out, ci->raw_size, &why) != 0)
        return cd_fail(err, CD_ERR_CORRUPT, "%s: record %llu: tensor '%s' chunk %u: %s", s->path,
                       (unsigned long long)r->number, ti->name, chunk, why);
    return CD_OK;
}

/* Reads and decodes one chunk into scratch buffers (stored: >= stored_size, raw: >= raw_size). */
static cd_status load_chunk(const cd_shard *s, const cd_record *r, uint32_t t, uint32_t c, uint8_t *stored,
                            uint8_t *raw, cd_error *err) {
    const cd_chunk_info *ci = &r->chunks[t][c];
    char what[96];
    snprintf(what, sizeof what, "record %llu chunk %u", (unsigned long long)r->number, c);
    cd_status st = pread_exact(s, stored, ci->stored_size, ci->offset, what, err);
    if (st != CD_OK) return st;
    return cd_record_decode_chunk(s, r, t, c, stored, raw, err);
}

static uint64_t max_chunk_stored(const cd_record *r, uint32_t t) {
    uint64_t m = 1;
    for (uint32_t c = 0; c < r->tensors[t].chunk_count; c++)
        if (r->chunks[t][c].stored_size > m) m = r->chunks[t][c].stored_size;
    return m;
}

cd_status cd_record_read_region(const cd_shard *s, const cd_record *r, uint32_t tensor, const int64_t start[3],
                                const int64_t size[3], void *out, cd_error *err) {
    if (!s || !r || !start || !size || !out || tensor >= r->ntensors)
        return cd_fail(err, CD_ERR_ARG, "cd_record_read_region: invalid argument");
    const cd_tensor_info *ti = &r->tensors[tensor];
    const size_t es = cd_dtype_size(ti->dtype);
    int64_t lo[3], hi[3];
    bool inside = true, empty = false;
    for (int a = 0; a < 3; a++) {
        if (size[a] < 1) return cd_fail(err, CD_ERR_ARG, "cd_record_read_region: size must be >= 1");
        lo[a] = start[a] < 0 ? 0 : start[a];
        hi[a] = start[a] + size[a] > (int64_t)ti->shape[a] ? (int64_t)ti->shape[a] : start[a] + size[a];
        if (start[a] < 0 || start[a] + size[a] > (int64_t)ti->shape[a]) inside = false;
        if (lo[a] >= hi[a]) empty = true;
    }
    if (!inside) memset(out, 0, (size_t)ti->channels * size[0] * size[1] * size[2] * es);
    if (empty) return CD_OK;
    uint32_t c0[3], c1[3];
    for (int a = 0; a < 3; a++) {
        c0[a] = (uint32_t)(lo[a] / ti->chunk[a]);
        c1[a] = (uint32_t)((hi[a] - 1) / ti->chunk[a]);
    }
    uint8_t *stored = malloc(max_chunk_stored(r, tensor));
    uint8_t *raw = malloc((size_t)ti->channels * ti->chunk[0] * ti->chunk[1] * ti->chunk[2] * es);
    cd_status st = (stored && raw) ? CD_OK : cd_fail(err, CD_ERR_NOMEM, "out of memory");
    uint8_t *o = out;
    for (uint32_t a = c0[0]; a <= c1[0] && st == CD_OK; a++)
        for (uint32_t b = c0[1]; b <= c1[1] && st == CD_OK; b++)
            for (uint32_t c = c0[2]; c <= c1[2] && st == CD_OK; c++) {
                uint32_t idx = (a * ti->chunk_grid[1] + b) * ti->chunk_grid[2] + c;
                const cd_chunk_info *ci = &r->chunks[tensor][idx];
                if ((st = load_chunk(s, r, tensor, idx, stored, raw, err)) != CD_OK) break;
                /* Intersection of the chunk with the clipped box, copied row by row along z. */
                int64_t x0 = ci->start[0] > lo[0] ? ci->start[0] : lo[0];
                int64_t x1 = ci->start[0] + ci->extent[0] < hi[0] ? ci->start[0] + ci->extent[0] : hi[0];
                int64_t y0 = ci->start[1] > lo[1] ? ci->start[1] : lo[1];
                int64_t y1 = ci->start[1] + ci->extent[1] < hi[1] ? ci->start[1] + ci->extent[1] : hi[1];
                int64_t z0 = ci->start[2] > lo[2] ? ci->start[2] : lo[2];
                int64_t z1 = ci->start[2] + ci->extent[2] < hi[2] ? ci->start[2] + ci->extent[2] : hi[2];
                size_t row = (size_t)(z1 - z0) * es;
                for (uint32_t ch = 0; ch < ti->channels; ch++)
                    for (int64_t x = x0; x < x1; x++)
                        for (int64_t y = y0; y < y1; y++) {
                            size_t src = (((size_t)ch * ci->extent[0] + (x - ci->start[0])) * ci->extent[1] +
                                          (y - ci->start[1])) *
                                             ci->extent[2] +
                                         (z0 - ci->start[2]);
                            size_t dst =
                                (((size_t)ch * size[0] + (x - start[0])) * size[1] + (y - start[1])) * size[2] +
                                (z0 - start[2]);
                            memcpy(o + dst * es, raw + src * es, row);
                        }
            }
    free(stored);
    free(raw);
    return st;
}

cd_status cd_record_read_tensor(const cd_shard *s, const cd_record *r, uint32_t tensor, void *out, cd_error *err) {
    if (!r || tensor >= r->ntensors) return cd_fail(err, CD_ERR_ARG, "cd_record_read_tensor: invalid argument");
    const int64_t start[3] = {0, 0, 0};
    const int64_t size[3] = {r->tensors[tensor].shape[0], r->tensors[tensor].shape[1], r->tensors[tensor].shape[2]};
    return cd_record_read_region(s, r, tensor, start, size, out, err);
}

cd_status cd_shard_verify(const char *path, int64_t *bad_record, cd_error *err) {
    if (bad_record) *bad_record = -1;
    cd_shard *s;
    cd_status st = cd_shard_open(path, &s, err);
    if (st != CD_OK) return st;
    for (uint64_t i = 0; i < s->nrecords && st == CD_OK; i++) {
        cd_record *r;
        if ((st = cd_shard_read_record(s, i, &r, err)) != CD_OK) {
            if (bad_record) *bad_record = (int64_t)i;
            break;
        }
        for (uint32_t t = 0; t < r->ntensors && st == CD_OK; t++) {
            const cd_tensor_info *ti = &r->tensors[t];
            uint8_t *stored = malloc(max_chunk_stored(r, t));
            uint8_t *raw =
                malloc((size_t)ti->channels * ti->chunk[0] * ti->chunk[1] * ti->chunk[2] * cd_dtype_size(ti->dtype));
            if (!stored || !raw) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
            for (uint32_t c = 0; c < ti->chunk_count && st == CD_OK; c++) st = load_chunk(s, r, t, c, stored, raw, err);
            free(stored);
            free(raw);
        }
        if (st != CD_OK && bad_record) *bad_record = (int64_t)i;
        cd_record_destroy(r);
    }
    cd_shard_close(s);
    return st;
}

cd_status cd_file_xxh3_128(const char *path, char hash_hex[33], uint64_t *size, cd_error *err) {
    int fd;
    cd_status ost = cd_open_regular(path, NULL, &fd, NULL, err); /* a FIFO is refused, never waited on */
    if (ost != CD_OK) return ost;
    XXH3_state_t *state = XXH3_createState();
    size_t bufsize = 1 << 20;
    uint8_t *buf = malloc(bufsize);
    cd_status st = CD_OK;
    uint64_t total = 0;
    if (!state || !buf) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
    if (st == CD_OK) XXH3_128bits_reset(state);
    while (st == CD_OK) {
        ssize_t n = read(fd, buf, bufsize);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) st = cd_fail(err, CD_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        if (n <= 0) break;
        XXH3_128bits_update(state, buf, (size_t)n);
        total += (uint64_t)n;
    }
    if (st == CD_OK) {
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_digest(state));
        for (int i = 0; i < 16; i++) snprintf(hash_hex + 2 * i, 3, "%02x", c.digest[i]);
        if (size) *size = total;
    }
    free(buf);
    XXH3_freeState(state);
    close(fd);
    return st;
}
