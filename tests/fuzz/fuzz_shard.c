/* libFuzzer target: the shard reader (shard/reader.c, shard/codec.c; schemas/shard-format.md). The
 * bytes are a shard file: open it, read every record header, every tensor (when at most 16 MiB), a
 * region straddling the tensor's corner, every chunk through cd_record_decode_chunk, and verify it. */
#include <stdint.h>

#include "cirrdata/cirrdata.h"
#include "fuzz_common.h"

#define FUZZ_TENSOR_CAP ((uint64_t)16 << 20)

static uint64_t tensor_bytes(const cd_tensor_info *ti) {
    uint64_t n = (uint64_t)ti->channels * cd_dtype_size(ti->dtype);
    for (int a = 0; a < 3; a++) {
        if (ti->shape[a] && n > UINT64_MAX / ti->shape[a]) return UINT64_MAX;
        n *= ti->shape[a];
    }
    return n;
}

static void read_tensors(const cd_shard *s, const cd_record *r) {
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
            cd_record_read_tensor(s, r, t, buf, &err);
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
            if (pread(cd_shard_fd(s), stored, ci.stored_size, (off_t)ci.offset) == (ssize_t)ci.stored_size)
                cd_record_decode_chunk(s, r, t, c, stored, raw, &err);
            free(stored);
            free(raw);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path(0, "f.cdshard");
    fuzz_write(path, data, size);
    cd_error err;
    cd_shard *s = NULL;
    if (cd_shard_open(path, &s, &err) == CD_OK) {
        uint64_t n = cd_shard_record_count(s);
        for (uint64_t i = 0; i < n && i < 256; i++) {
            cd_record *r = NULL;
            if (cd_shard_read_record(s, i, &r, &err) != CD_OK) continue;
            (void)cd_record_number(r);
            const char *meta = cd_record_metadata(r);
            if (meta) (void)strlen(meta);
            read_tensors(s, r);
            cd_record_destroy(r);
        }
        /* an index past the end must be refused, not read */
        cd_record *r = NULL;
        if (cd_shard_read_record(s, n, &r, &err) == CD_OK) abort();
        cd_shard_close(s);
    }
    int64_t bad = 0;
    cd_shard_verify(path, &bad, &err);
    return 0;
}
