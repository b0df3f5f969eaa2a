/* Chunk codec: zstd with one context per thread (contexts are costly to create, and not shareable
 * between threads), and XXH3 checksums. */
#include <pthread.h>
#include <stdlib.h>
#include <xxhash.h>
#include <zstd.h>

#include "shard/format.h"

static pthread_key_t cctx_key, dctx_key;
static pthread_once_t keys_once = PTHREAD_ONCE_INIT;

static void free_cctx(void *p) { ZSTD_freeCCtx(p); }
static void free_dctx(void *p) { ZSTD_freeDCtx(p); }
static void make_keys(void) {
    pthread_key_create(&cctx_key, free_cctx);
    pthread_key_create(&dctx_key, free_dctx);
}

static ZSTD_CCtx *thread_cctx(void) {
    pthread_once(&keys_once, make_keys);
    ZSTD_CCtx *c = pthread_getspecific(cctx_key);
    if (!c && (c = ZSTD_createCCtx())) pthread_setspecific(cctx_key, c);
    return c;
}

static ZSTD_DCtx *thread_dctx(void) {
    pthread_once(&keys_once, make_keys);
    ZSTD_DCtx *d = pthread_getspecific(dctx_key);
    if (!d && (d = ZSTD_createDCtx())) pthread_setspecific(dctx_key, d);
    return d;
}

uint64_t cd_xxh3_64(const void *data, size_t len) { return XXH3_64bits(data, len); }

cd_status cd_zstd_compress(const void *src, size_t len, int level, void **dst, size_t *dst_len, cd_error *err) {
    ZSTD_CCtx *c = thread_cctx();
    size_t bound = ZSTD_compressBound(len);
    void *out = malloc(bound ? bound : 1);
    if (!c || !out) {
        free(out);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory for zstd compression");
    }
    size_t n = ZSTD_compressCCtx(c, out, bound, src, len, level);
    if (ZSTD_isError(n)) {
        free(out);
        return cd_fail(err, CD_ERR_INTERNAL, "zstd compression failed: %s", ZSTD_getErrorName(n));
    }
    *dst = out;
    *dst_len = n;
    return CD_OK;
}

size_t cd_zstd_bound(size_t len) { return ZSTD_compressBound(len); }

cd_status cd_zstd_compress_to(const void *src, size_t len, int level, void *dst, size_t cap, size_t *dst_len,
                              cd_error *err) {
    ZSTD_CCtx *c = thread_cctx();
    if (!c) return cd_fail(err, CD_ERR_NOMEM, "out of memory for zstd compression");
    size_t n = ZSTD_compressCCtx(c, dst, cap, src, len, level);
    if (ZSTD_isError(n)) return cd_fail(err, CD_ERR_INTERNAL, "zstd compression failed: %s", ZSTD_getErrorName(n));
    *dst_len = n;
    return CD_OK;
}

int cd_zstd_decompress(const void *src, size_t len, void *dst, size_t raw_len, const char **why) {
    ZSTD_DCtx *d = thread_dctx();
    if (!d) {
        *why = "out of memory for zstd";
        return -1;
    }
    /* A frame must declare its size, and it must be the one the chunk table says. */
    unsigned long long declared = ZSTD_getFrameContentSize(src, len);
    if (declared == ZSTD_CONTENTSIZE_ERROR) {
        *why = "not a zstd frame";
        return -1;
    }
    if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared != raw_len) {
        *why = "zstd frame size disagrees with the chunk table";
        return -1;
    }
    size_t n = ZSTD_decompressDCtx(d, dst, raw_len, src, len);
    if (ZSTD_isError(n)) {
        *why = ZSTD_getErrorName(n);
        return -1;
    }
    if (n != raw_len) {
        *why = "decoded size disagrees with the chunk table";
        return -1;
    }
    *why = NULL;
    return 0;
}
