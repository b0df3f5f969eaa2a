/* Byte layout constants and little-endian helpers for shard files (internal).
 * The normative description is schemas/shard-format.md; keep the two in step. */
#ifndef CD_SHARD_FORMAT_H
#define CD_SHARD_FORMAT_H

#include <stdint.h>
#include <string.h>

#include "cirrdata/dtype.h"
#include "core/internal.h"

#define CD_SHARD_MAGIC "CDSHARD1"
#define CD_RECORD_MAGIC "CDRECRD1"
#define CD_SHARD_VERSION 1
#define CD_SHARD_HEADER_SIZE 4096
#define CD_SHARD_INDEX_ENTRY 32
#define CD_RECORD_FIXED 32
#define CD_RECORD_TENSOR_ENTRY 64
#define CD_RECORD_CHUNK_ENTRY 24
#define CD_ALIGN 4096u

static inline uint64_t cd_align4k(uint64_t n) { return (n + CD_ALIGN - 1) & ~(uint64_t)(CD_ALIGN - 1); }

static inline void cd_put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void cd_put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void cd_put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t cd_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t cd_get_u64(const uint8_t *p) {
    return (uint64_t)cd_get_u32(p) | ((uint64_t)cd_get_u32(p + 4) << 32);
}

/* On-disk dtype codes. */
static inline int cd_shard_dtype_code(cd_dtype d) {
    switch (d) {
    case CD_DTYPE_UINT8: return 1;
    case CD_DTYPE_INT16: return 2;
    case CD_DTYPE_FLOAT16: return 3;
    case CD_DTYPE_FLOAT32: return 4;
    default: return 0;
    }
}
static inline cd_dtype cd_shard_dtype_from_code(int c) {
    switch (c) {
    case 1: return CD_DTYPE_UINT8;
    case 2: return CD_DTYPE_INT16;
    case 3: return CD_DTYPE_FLOAT16;
    case 4: return CD_DTYPE_FLOAT32;
    default: return CD_DTYPE_INVALID;
    }
}

/* XXH3 helpers and per-thread zstd contexts (codec.c). */
CD_INTERNAL uint64_t cd_xxh3_64(const void *data, size_t len);
/* Compresses src into a new malloc'ed buffer (*dst, *dst_len). */
CD_INTERNAL cd_status cd_zstd_compress(const void *src, size_t len, int level, void **dst, size_t *dst_len,
                                       cd_error *err);
/* Compresses src into dst (capacity cap, at least cd_zstd_bound(len)); *dst_len = compressed bytes. */
CD_INTERNAL cd_status cd_zstd_compress_to(const void *src, size_t len, int level, void *dst, size_t cap,
                                          size_t *dst_len, cd_error *err);
CD_INTERNAL size_t cd_zstd_bound(size_t len);
/* Decompresses exactly raw_len bytes; returns a short message in *why on failure (NULL on success). */
CD_INTERNAL int cd_zstd_decompress(const void *src, size_t len, void *dst, size_t raw_len, const char **why);

#endif
