/* Records copied as stored (see record_copy.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "shard/format.h"
#include "shard/record_copy.h"
#include "shard/record_impl.h"

/* Tensor t of r into the builder: its chunks' stored bytes read into one arena and checked. */
static cd_status copy_tensor(const cd_shard *s, const cd_record *r, uint32_t t, built_tensor *bt, cd_error *err) {
    cd_record_tensor_info(r, t, &bt->info);
    const uint32_t n = bt->info.chunk_count;
    size_t total = 0;
    for (uint32_t c = 0; c < n; c++) {
        cd_chunk_info ci;
        cd_record_chunk_info(r, t, c, &ci);
        total += ci.stored_size;
    }
    bt->chunks = calloc(n ? n : 1, sizeof *bt->chunks);
    bt->arena_bytes = total ? total : 1;
    bt->arena = cd_buffer_alloc(bt->arena_bytes);
    if (!bt->chunks || !bt->arena) return cd_fail(err, CD_ERR_NOMEM, "out of memory copying a record");
    size_t used = 0;
    for (uint32_t c = 0; c < n; c++) {
        cd_chunk_info ci;
        cd_record_chunk_info(r, t, c, &ci);
        built_chunk *ch = &bt->chunks[c];
        ch->data = bt->arena + used;
        ch->stored_size = ci.stored_size;
        ch->raw_size = ci.raw_size;
        ch->xxh3 = ci.xxh3;
        if (cd_pread_full(cd_shard_fd(s), ch->data, ci.stored_size, ci.offset) != (ssize_t)ci.stored_size)
            return cd_fail(err, CD_ERR_IO, "%s: record %llu: tensor '%s' chunk %u: cannot read %u bytes at %llu",
                           cd_shard_path(s), (unsigned long long)cd_record_number(r), bt->info.name, c, ci.stored_size,
                           (unsigned long long)ci.offset);
        if (cd_xxh3_64(ch->data, ci.stored_size) != ci.xxh3)
            return cd_fail(err, CD_ERR_CORRUPT, "%s: record %llu: tensor '%s' chunk %u: checksum mismatch",
                           cd_shard_path(s), (unsigned long long)cd_record_number(r), bt->info.name, c);
        used += ci.stored_size;
    }
    return CD_OK;
}

cd_status cd_record_builder_copy(const cd_shard *s, const cd_record *r, cd_record_builder **out, cd_error *err) {
    if (!s || !r || !out) return cd_fail(err, CD_ERR_ARG, "cd_record_builder_copy: NULL argument");
    *out = NULL;
    cd_record_builder *b = NULL;
    cd_status st = cd_record_builder_create(cd_record_metadata(r), &b, err);
    if (st != CD_OK) return st;
    const uint32_t nt = cd_record_tensor_count(r);
    for (uint32_t t = 0; st == CD_OK && t < nt; t++) {
        b->ntensors = t + 1; /* what was allocated is freed by destroy, even on failure */
        st = copy_tensor(s, r, t, &b->tensors[t], err);
    }
    if (st != CD_OK) {
        cd_record_builder_destroy(b);
        return st;
    }
    *out = b;
    return CD_OK;
}
