/* Shard writer: records appended in order to NAME.tmp; index and header at the end; fsync; rename. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cirrdata/shard.h"
#include "core/fs.h"
#include "shard/format.h"
#include "shard/record_impl.h"

struct cd_shard_writer {
    char *path, *tmp_path;
    int fd;
    uint64_t pos; /* bytes written so far (always 4 KiB aligned between records) */
    uint64_t nrecords, cap;
    uint8_t *index; /* nrecords * 32 bytes */
    bool finished;
};

static cd_status write_all(cd_shard_writer *w, const void *buf, size_t len, uint64_t at, cd_error *err) {
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(w->fd, p, len, (off_t)at);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            return cd_fail(err, CD_ERR_IO, "%s: write failed: %s", w->path, n < 0 ? strerror(errno) : "no progress");
        p += n;
        len -= (size_t)n;
        at += (uint64_t)n;
    }
    return CD_OK;
}

cd_status cd_shard_writer_create(const char *path, cd_shard_writer **out, cd_error *err) {
    if (!path || !out) return cd_fail(err, CD_ERR_ARG, "cd_shard_writer_create: NULL argument");
    cd_shard_writer *w = calloc(1, sizeof *w);
    size_t n = strlen(path);
    if (!w || !(w->path = strdup(path)) || !(w->tmp_path = malloc(n + 5))) {
        if (w) free(w->path);
        free(w);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    snprintf(w->tmp_path, n + 5, "%s.tmp", path);
    /* Exclusively and never through a link planted at the temporary's name (core/fs.h). */
    cd_status st = cd_file_create_exclusive(w->tmp_path, &w->fd, err);
    if (st != CD_OK) {
        free(w->tmp_path);
        free(w->path);
        free(w);
        return st;
    }
    w->pos = CD_SHARD_HEADER_SIZE; /* the header is written last */
    *out = w;
    return CD_OK;
}

uint64_t cd_shard_writer_records(const cd_shard_writer *w) { return w->nrecords; }
uint64_t cd_shard_writer_bytes(const cd_shard_writer *w) { return w->pos; }

cd_status cd_shard_writer_append(cd_shard_writer *w, const cd_record_builder *b, cd_error *err) {
    if (!w || !b) return cd_fail(err, CD_ERR_ARG, "cd_shard_writer_append: NULL argument");
    if (w->finished) return cd_fail(err, CD_ERR_ARG, "%s: shard already finished", w->path);
    if (w->nrecords == w->cap) {
        uint64_t cap = w->cap ? w->cap * 2 : 64;
        uint8_t *idx = realloc(w->index, cap * CD_SHARD_INDEX_ENTRY);
        if (!idx) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
        w->index = idx;
        w->cap = cap;
    }
    const uint64_t start = w->pos;
    const uint64_t hsize = cd_record_builder_header_size(b);
    uint8_t *h = calloc(1, cd_align4k(hsize));
    if (!h) return cd_fail(err, CD_ERR_NOMEM, "out of memory");

    /* Fixed part, tensor table, metadata, chunk tables (chunk offsets are absolute), checksum. */
    memcpy(h, CD_RECORD_MAGIC, 8);
    cd_put_u32(h + 8, (uint32_t)hsize);
    cd_put_u32(h + 12, b->ntensors);
    cd_put_u32(h + 16, (uint32_t)b->meta_len);
    cd_put_u64(h + 24, w->nrecords);
    uint8_t *p = h + CD_RECORD_FIXED;
    for (uint32_t t = 0; t < b->ntensors; t++, p += CD_RECORD_TENSOR_ENTRY) {
        const cd_tensor_info *ti = &b->tensors[t].info;
        memcpy(p, ti->name, strlen(ti->name));
        p[16] = (uint8_t)cd_shard_dtype_code(ti->dtype);
        p[17] = (uint8_t)ti->codec;
        cd_put_u32(p + 20, ti->channels);
        for (int a = 0; a < 3; a++) {
            cd_put_u32(p + 24 + 4 * a, ti->shape[a]);
            cd_put_u32(p + 36 + 4 * a, ti->chunk[a]);
        }
        cd_put_u32(p + 48, ti->chunk_count);
    }
    memcpy(p, b->meta, b->meta_len);
    p += b->meta_len;
    uint64_t at = start + cd_align4k(hsize);
    for (uint32_t t = 0; t < b->ntensors; t++)
        for (uint32_t c = 0; c < b->tensors[t].info.chunk_count; c++, p += CD_RECORD_CHUNK_ENTRY) {
            const built_chunk *ch = &b->tensors[t].chunks[c];
            cd_put_u64(p, at);
            cd_put_u32(p + 8, ch->stored_size);
            cd_put_u32(p + 12, ch->raw_size);
            cd_put_u64(p + 16, ch->xxh3);
            at += cd_align4k(ch->stored_size);
        }
    cd_put_u64(p, cd_xxh3_64(h, hsize - 8));

    cd_status st = write_all(w, h, cd_align4k(hsize), start, err);
    free(h);
    uint64_t pos = start + cd_align4k(hsize), last_end = pos;
    for (uint32_t t = 0; t < b->ntensors && st == CD_OK; t++)
        for (uint32_t c = 0; c < b->tensors[t].info.chunk_count && st == CD_OK; c++) {
            const built_chunk *ch = &b->tensors[t].chunks[c];
            st = write_all(w, ch->data, ch->stored_size, pos, err);
            last_end = pos + ch->stored_size;
            pos += cd_align4k(ch->stored_size);
        }
    if (st != CD_OK) return st;
    uint8_t *e = w->index + w->nrecords * CD_SHARD_INDEX_ENTRY;
    memset(e, 0, CD_SHARD_INDEX_ENTRY);
    cd_put_u64(e, start);
    cd_put_u32(e + 8, (uint32_t)hsize);
    cd_put_u64(e + 16, last_end - start);
    w->nrecords++;
    w->pos = pos;
#ifdef SYNC_FILE_RANGE_WRITE
    /* Start this record's writeback now (asynchronous; not a durability point): the fsync in finish then
     * waits for little instead of the whole shard. Failure only loses that head start. */
    (void)sync_file_range(w->fd, (off_t)start, (off_t)(pos - start), SYNC_FILE_RANGE_WRITE);
#endif
    return CD_OK;
}

cd_status cd_shard_writer_finish(cd_shard_writer *w, uint64_t *size, char hash_hex[33], cd_error *err) {
    if (!w) return cd_fail(err, CD_ERR_ARG, "cd_shard_writer_finish: NULL argument");
    if (w->finished) return cd_fail(err, CD_ERR_ARG, "%s: shard already finished", w->path);
    const uint64_t index_offset = w->pos, index_size = w->nrecords * CD_SHARD_INDEX_ENTRY;
    cd_status st = index_size ? write_all(w, w->index, index_size, index_offset, err) : CD_OK;
    if (st != CD_OK) return st;
    uint8_t hdr[CD_SHARD_HEADER_SIZE];
    memset(hdr, 0, sizeof hdr);
    memcpy(hdr, CD_SHARD_MAGIC, 8);
    cd_put_u32(hdr + 8, CD_SHARD_VERSION);
    cd_put_u32(hdr + 12, CD_SHARD_HEADER_SIZE);
    cd_put_u64(hdr + 16, w->nrecords);
    cd_put_u64(hdr + 24, index_offset);
    cd_put_u64(hdr + 32, index_size);
    cd_put_u64(hdr + 40, index_offset + index_size);
    cd_put_u64(hdr + 48, cd_xxh3_64(w->index, index_size));
    cd_put_u64(hdr + 4088, cd_xxh3_64(hdr, 4088));
    if ((st = write_all(w, hdr, sizeof hdr, 0, err)) != CD_OK) return st;
    /* The file must be on disk before its final name appears (crash safety). */
    if (fsync(w->fd) != 0) return cd_fail(err, CD_ERR_IO, "%s: fsync failed: %s", w->tmp_path, strerror(errno));
    if (close(w->fd) != 0) {
        w->fd = -1;
        return cd_fail(err, CD_ERR_IO, "%s: close failed: %s", w->tmp_path, strerror(errno));
    }
    w->fd = -1;
    if (rename(w->tmp_path, w->path) != 0)
        return cd_fail(err, CD_ERR_IO, "%s: cannot rename into place: %s", w->path, strerror(errno));
    w->finished = true;
    cd_fsync_dir_of(w->path);
    if (size || hash_hex) {
        char hex[33];
        uint64_t n;
        st = cd_file_xxh3_128(w->path, hex, &n, err);
        if (st != CD_OK) return st;
        if (size) *size = n;
        if (hash_hex) memcpy(hash_hex, hex, 33);
    }
    return CD_OK;
}

void cd_shard_writer_destroy(cd_shard_writer *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (!w->finished) unlink(w->tmp_path);
    free(w->index);
    free(w->tmp_path);
    free(w->path);
    free(w);
}
