/* In-memory layouts of record builders and read records (internal). */
#ifndef CD_SHARD_RECORD_IMPL_H
#define CD_SHARD_RECORD_IMPL_H

#include "cirrdata/shard.h"
#include "core/internal.h"

typedef struct built_chunk {
    void *data; /* inside its tensor's arena */
    uint32_t stored_size, raw_size;
    uint64_t xxh3;
} built_chunk;

typedef struct built_tensor {
    cd_tensor_info info;
    built_chunk *chunks;
    uint8_t *arena; /* every chunk's stored bytes, back to back (cd_buffer_alloc) */
    size_t arena_bytes;
} built_tensor;

struct cd_record_builder {
    char *meta;
    size_t meta_len;
    uint32_t ntensors;
    built_tensor tensors[CD_SHARD_MAX_TENSORS];
};

struct cd_record {
    uint64_t number;
    uint64_t offset; /* of the record header in the shard */
    char *meta;      /* NUL-terminated copy */
    uint32_t ntensors;
    cd_tensor_info tensors[CD_SHARD_MAX_TENSORS];
    cd_chunk_info *chunks[CD_SHARD_MAX_TENSORS];
};

CD_INTERNAL cd_status cd_tensor_info_init(cd_tensor_info *ti, const char *name, cd_dtype dtype, uint32_t channels,
                                          const uint32_t shape[3], const uint32_t chunk[3], cd_codec codec,
                                          cd_error *err);
CD_INTERNAL void cd_chunk_geometry(const cd_tensor_info *ti, uint32_t chunk, cd_chunk_info *ci);
CD_INTERNAL void cd_chunk_gather(const cd_tensor_info *ti, const cd_chunk_info *ci, const void *src, void *dst);
CD_INTERNAL uint64_t cd_record_builder_header_size(const cd_record_builder *b);

/* Writes chunk ci of tensor ti, C-order (channels, ex, ey, ez), into dst. */
typedef void (*cd_chunk_fill_fn)(const void *user, const cd_tensor_info *ti, const cd_chunk_info *ci, void *dst);
/* cd_record_builder_add_tensor with the chunks produced by fill(user, ...) instead of gathered from a
 * C-order array (so a caller can produce them straight from its own layout). */
CD_INTERNAL cd_status cd_record_builder_add_tensor_fill(cd_record_builder *b, const char *name, cd_dtype dtype,
                                                        uint32_t channels, const uint32_t shape[3],
                                                        const uint32_t chunk[3], cd_codec codec, int level,
                                                        cd_chunk_fill_fn fill, const void *user, cd_error *err);

#endif
