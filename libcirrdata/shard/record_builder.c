/* Building a record in memory: split each tensor into chunks, compress and checksum them. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cirrdata/shard.h"
#include "shard/format.h"
#include "shard/record_impl.h"

cd_status cd_record_builder_create(const char *metadata_json, cd_record_builder **out, cd_error *err) {
    if (!metadata_json || !out) return cd_fail(err, CD_ERR_ARG, "cd_record_builder_create: NULL argument");
    size_t n = strlen(metadata_json);
    if (n > CD_SHARD_MAX_META_BYTES)
        return cd_fail(err, CD_ERR_LIMIT, "record metadata of %zu bytes is above 1 MiB", n);
    cd_record_builder *b = calloc(1, sizeof *b);
    if (!b || !(b->meta = malloc(n + 1))) {
        free(b);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    memcpy(b->meta, metadata_json, n + 1);
    b->meta_len = n;
    *out = b;
    return CD_OK;
}

void cd_record_builder_destroy(cd_record_builder *b) {
    if (!b) return;
    for (uint32_t t = 0; t < b->ntensors; t++) {
        cd_buffer_free(b->tensors[t].arena, b->tensors[t].arena_bytes);
        free(b->tensors[t].chunks);
    }
    free(b->meta);
    free(b);
}

/* Copies chunk (a, b, c) of a C-order (C, X, Y, Z) array into dst, C-order (C, ex, ey, ez). */
void cd_chunk_gather(const cd_tensor_info *ti, const cd_chunk_info *ci, const void *src, void *dst) {
    size_t es = cd_dtype_size(ti->dtype);
    const uint8_t *s = src;
    uint8_t *d = dst;
    size_t X = ti->shape[0], Y = ti->shape[1], Z = ti->shape[2];
    size_t row = (size_t)ci->extent[2] * es;
    for (uint32_t ch = 0; ch < ti->channels; ch++)
        for (uint32_t x = 0; x < ci->extent[0]; x++)
            for (uint32_t y = 0; y < ci->extent[1]; y++) {
                size_t off = (((size_t)ch * X + ci->start[0] + x) * Y + ci->start[1] + y) * Z + ci->start[2];
                memcpy(d, s + off * es, row);
                d += row;
            }
}

void cd_chunk_geometry(const cd_tensor_info *ti, uint32_t chunk, cd_chunk_info *ci) {
    uint32_t g[3], idx[3];
    memcpy(g, ti->chunk_grid, sizeof g);
    idx[2] = chunk % g[2];
    idx[1] = (chunk / g[2]) % g[1];
    idx[0] = chunk / (g[2] * g[1]);
    for (int a = 0; a < 3; a++) {
        ci->start[a] = idx[a] * ti->chunk[a];
        uint32_t end = ci->start[a] + ti->chunk[a];
        if (end > ti->shape[a]) end = ti->shape[a];
        ci->extent[a] = end - ci->start[a];
    }
    ci->raw_size =
        (uint32_t)((uint64_t)ti->channels * ci->extent[0] * ci->extent[1] * ci->extent[2] * cd_dtype_size(ti->dtype));
}

cd_status cd_tensor_info_init(cd_tensor_info *ti, const char *name, cd_dtype dtype, uint32_t channels,
                              const uint32_t shape[3], const uint32_t chunk[3], cd_codec codec, cd_error *err) {
    memset(ti, 0, sizeof *ti);
    if (!name || !*name || strlen(name) > CD_TENSOR_NAME_MAX)
        return cd_fail(err, CD_ERR_ARG, "tensor name must be 1..%d characters", CD_TENSOR_NAME_MAX);
    if (!cd_shard_dtype_code(dtype))
        return cd_fail(err, CD_ERR_ARG, "tensor '%s': dtype %s cannot be stored (uint8, int16, float16, float32)", name,
                       cd_dtype_name(dtype));
    if (codec != CD_CODEC_RAW && codec != CD_CODEC_ZSTD)
        return cd_fail(err, CD_ERR_ARG, "tensor '%s': bad codec", name);
    if (channels < 1) return cd_fail(err, CD_ERR_ARG, "tensor '%s': channels must be >= 1", name);
    strcpy(ti->name, name);
    ti->dtype = dtype;
    ti->codec = codec;
    ti->channels = channels;
    uint64_t count = 1, chunk_bytes = (uint64_t)channels * cd_dtype_size(dtype);
    for (int a = 0; a < 3; a++) {
        if (shape[a] < 1 || chunk[a] < 1)
            return cd_fail(err, CD_ERR_ARG, "tensor '%s': shape and chunk must be >= 1", name);
        ti->shape[a] = shape[a];
        ti->chunk[a] = chunk[a] < shape[a] ? chunk[a] : shape[a];
        ti->chunk_grid[a] = (shape[a] + ti->chunk[a] - 1) / ti->chunk[a];
        count *= ti->chunk_grid[a];
        chunk_bytes *= ti->chunk[a];
    }
    /* Chunk sizes are 32-bit fields; the chunk table is bounded too. */
    if (chunk_bytes > UINT32_MAX / 2) return cd_fail(err, CD_ERR_LIMIT, "tensor '%s': chunks above 2 GiB", name);
    if (count > (1u << 24)) return cd_fail(err, CD_ERR_LIMIT, "tensor '%s': more than 16M chunks", name);
    ti->chunk_count = (uint32_t)count;
    return CD_OK;
}

/* One chunk-sized scratch buffer per thread, kept between tensors and records: a fresh one per tensor
 * costs page faults (glibc maps blocks of this size anew). */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

typedef struct scratch_buf {
    uint8_t *p;
    size_t cap;
} scratch_buf;

static void free_scratch(void *v) {
    scratch_buf *s = v;
    free(s->p);
    free(s);
}

static void make_scratch_key(void) { pthread_key_create(&scratch_key, free_scratch); }

static uint8_t *thread_scratch(size_t n) {
    pthread_once(&scratch_once, make_scratch_key);
    scratch_buf *s = pthread_getspecific(scratch_key);
    if (!s) {
        if (!(s = calloc(1, sizeof *s))) return NULL;
        if (pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->cap < n) {
        uint8_t *p = realloc(s->p, n);
        if (!p) return NULL;
        s->p = p;
        s->cap = n;
    }
    return s->p;
}

static void fill_from_array(const void *user, const cd_tensor_info *ti, const cd_chunk_info *ci, void *dst) {
    cd_chunk_gather(ti, ci, user, dst);
}

cd_status cd_record_builder_add_tensor(cd_record_builder *b, const char *name, cd_dtype dtype, uint32_t channels,
                                       const uint32_t shape[3], const uint32_t chunk[3], cd_codec codec, int level,
                                       const void *data, cd_error *err) {
    if (!data) return cd_fail(err, CD_ERR_ARG, "cd_record_builder_add_tensor: NULL argument");
    return cd_record_builder_add_tensor_fill(b, name, dtype, channels, shape, chunk, codec, level, fill_from_array,
                                             data, err);
}

cd_status cd_record_builder_add_tensor_fill(cd_record_builder *b, const char *name, cd_dtype dtype, uint32_t channels,
                                            const uint32_t shape[3], const uint32_t chunk[3], cd_codec codec, int level,
                                            cd_chunk_fill_fn fill, const void *user, cd_error *err) {
    if (!b || !shape || !chunk || !fill) return cd_fail(err, CD_ERR_ARG, "cd_record_builder_add_tensor: NULL argument");
    if (b->ntensors >= CD_SHARD_MAX_TENSORS) return cd_fail(err, CD_ERR_LIMIT, "a record holds at most 16 tensors");
    for (uint32_t t = 0; t < b->ntensors; t++)
        if (!strcmp(b->tensors[t].info.name, name)) return cd_fail(err, CD_ERR_ARG, "tensor '%s' added twice", name);
    built_tensor *bt = &b->tensors[b->ntensors];
    cd_status st = cd_tensor_info_init(&bt->info, name, dtype, channels, shape, chunk, codec, err);
    if (st != CD_OK) return st;
    if (level == 0) level = 3;
    /* One arena per tensor for every chunk's stored bytes (room for the worst case; only what the chunks
     * take is ever touched) instead of a malloc per chunk: a fresh buffer per chunk costs page faults. */
    size_t cap = 0;
    for (uint32_t c = 0; c < bt->info.chunk_count; c++) {
        cd_chunk_info ci;
        cd_chunk_geometry(&bt->info, c, &ci);
        cap += codec == CD_CODEC_ZSTD ? cd_zstd_bound(ci.raw_size) : ci.raw_size;
    }
    bt->chunks = calloc(bt->info.chunk_count, sizeof *bt->chunks);
    bt->arena_bytes = cap ? cap : 1;
    bt->arena = cd_buffer_alloc(bt->arena_bytes);
    uint8_t *scratch = codec == CD_CODEC_ZSTD
                           ? thread_scratch((size_t)channels * bt->info.chunk[0] * bt->info.chunk[1] *
                                            bt->info.chunk[2] * cd_dtype_size(dtype))
                           : NULL;
    if (!bt->chunks || (codec == CD_CODEC_ZSTD && !scratch) || !bt->arena) {
        free(bt->chunks);
        cd_buffer_free(bt->arena, bt->arena_bytes);
        bt->chunks = NULL;
        bt->arena = NULL;
        return cd_fail(err, CD_ERR_NOMEM, "out of memory building tensor '%s'", name);
    }
    size_t used = 0;
    for (uint32_t c = 0; c < bt->info.chunk_count && st == CD_OK; c++) {
        cd_chunk_info ci;
        cd_chunk_geometry(&bt->info, c, &ci);
        built_chunk *ch = &bt->chunks[c];
        ch->raw_size = ci.raw_size;
        ch->data = bt->arena + used;
        if (codec == CD_CODEC_ZSTD) {
            fill(user, &bt->info, &ci, scratch);
            size_t n = 0;
            st = cd_zstd_compress_to(scratch, ci.raw_size, level, ch->data, cap - used, &n, err);
            ch->stored_size = (uint32_t)n;
        } else {
            fill(user, &bt->info, &ci, ch->data);
            ch->stored_size = ci.raw_size;
        }
        used += ch->stored_size;
        if (st == CD_OK) ch->xxh3 = cd_xxh3_64(ch->data, ch->stored_size);
    }
    if (st != CD_OK) {
        cd_buffer_free(bt->arena, bt->arena_bytes);
        free(bt->chunks);
        bt->chunks = NULL;
        bt->arena = NULL;
        return st;
    }
    b->ntensors++;
    return CD_OK;
}

uint64_t cd_record_builder_header_size(const cd_record_builder *b) {
    uint64_t n = CD_RECORD_FIXED + (uint64_t)CD_RECORD_TENSOR_ENTRY * b->ntensors + b->meta_len + 8;
    for (uint32_t t = 0; t < b->ntensors; t++) n += (uint64_t)CD_RECORD_CHUNK_ENTRY * b->tensors[t].info.chunk_count;
    return n;
}

uint64_t cd_record_builder_size(const cd_record_builder *b) {
    uint64_t n = cd_align4k(cd_record_builder_header_size(b));
    for (uint32_t t = 0; t < b->ntensors; t++)
        for (uint32_t c = 0; c < b->tensors[t].info.chunk_count; c++)
            n += cd_align4k(b->tensors[t].chunks[c].stored_size);
    return n;
}
