/* cirrdata/shard.h — writing and reading shard files (schemas/shard-format.md).
 *
 * A shard holds records; a record is one sample: named tensors of shape (C, X, Y, Z) in C order,
 * split into chunks that are compressed (zstd) and checksummed (XXH3-64) one by one, plus a JSON
 * metadata object. An index at the end of the shard locates every record, and each record's header
 * locates every chunk, so a reader fetches exactly the chunks a patch touches.
 *
 * Writing: build a record in memory (cd_record_builder: compression happens here, in the caller's
 * thread, so several threads can build records in parallel), then append builders to a
 * cd_shard_writer in the order they should appear. Nothing is visible under the shard's name until
 * cd_shard_writer_finish renames the complete file into place.
 *
 * Reading: cd_shard_open verifies the shard header and index; cd_shard_read_record verifies a record
 * header; cd_record_read_tensor / cd_record_read_region verify each chunk's checksum and size before
 * decoding. Every error names the shard file, the record and (where it applies) the chunk.
 *
 * Thread safety: a cd_shard may be read from many threads at once (reads use pread); a cd_record is
 * immutable once read. Writers and builders are single-threaded objects. */
#ifndef CIRRDATA_SHARD_H
#define CIRRDATA_SHARD_H

#include "cirrdata/api.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cirrdata/dtype.h"
#include "cirrdata/status.h"
#include "cirrdata/volume.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CD_SHARD_MAX_TENSORS 16
#define CD_SHARD_MAX_META_BYTES (1u << 20)
#define CD_TENSOR_NAME_MAX 16

typedef enum cd_codec { CD_CODEC_RAW = 0, CD_CODEC_ZSTD = 1 } cd_codec;

/* Description of one tensor of a record. Only uint8, int16, float16 and float32 are storable. */
typedef struct cd_tensor_info {
    char name[CD_TENSOR_NAME_MAX + 1];
    cd_dtype dtype;
    cd_codec codec;
    uint32_t channels;
    uint32_t shape[3]; /* X, Y, Z */
    uint32_t chunk[3]; /* chunk extents */
    uint32_t chunk_count;
    uint32_t chunk_grid[3]; /* chunks along each axis */
} cd_tensor_info;

/* ---- building records ---- */

typedef struct cd_record_builder cd_record_builder;

/* metadata_json: a JSON object (copied). The caller owns *out (cd_record_builder_destroy). */
CD_API cd_status cd_record_builder_create(const char *metadata_json, cd_record_builder **out, cd_error *err);
CD_API void cd_record_builder_destroy(cd_record_builder *b);

/* Adds a tensor from data, a C-order (channels, X, Y, Z) array of dtype (copied and compressed now).
 * chunk: chunk extents (clipped to the shape). level: zstd level (1..19; 0 = 3). */
CD_API cd_status cd_record_builder_add_tensor(cd_record_builder *b, const char *name, cd_dtype dtype, uint32_t channels,
                                              const uint32_t shape[3], const uint32_t chunk[3], cd_codec codec,
                                              int level, const void *data, cd_error *err);

/* Bytes this record will take in a shard (headers, chunks and alignment). */
CD_API uint64_t cd_record_builder_size(const cd_record_builder *b);

/* ---- writing shards ---- */

typedef struct cd_shard_writer cd_shard_writer;

/* Starts writing path (as path + ".tmp"). The caller owns *out. */
CD_API cd_status cd_shard_writer_create(const char *path, cd_shard_writer **out, cd_error *err);

/* Appends a finished record. */
CD_API cd_status cd_shard_writer_append(cd_shard_writer *w, const cd_record_builder *b, cd_error *err);

CD_API uint64_t cd_shard_writer_records(const cd_shard_writer *w);
/* Bytes written so far (without the index still to come). */
CD_API uint64_t cd_shard_writer_bytes(const cd_shard_writer *w);

/* Writes the index and header, flushes to disk (fsync) and renames the file into place. Fills the
 * final size and the XXH3-128 of the whole file as 32 hex digits (hash_hex must hold 33 bytes). */
CD_API cd_status cd_shard_writer_finish(cd_shard_writer *w, uint64_t *size, char hash_hex[33], cd_error *err);

/* Frees the writer; an unfinished shard's temporary file is removed. NULL is allowed. */
CD_API void cd_shard_writer_destroy(cd_shard_writer *w);

/* ---- reading shards ---- */

typedef struct cd_shard cd_shard;
typedef struct cd_record cd_record;

/* Opens and verifies header and index. The caller owns *out (cd_shard_close). */
CD_API cd_status cd_shard_open(const char *path, cd_shard **out, cd_error *err);
CD_API void cd_shard_close(cd_shard *s);
CD_API uint64_t cd_shard_record_count(const cd_shard *s);
CD_API const char *cd_shard_path(const cd_shard *s);

/* Reads and verifies record i's header. The caller owns *out (cd_record_destroy). */
CD_API cd_status cd_shard_read_record(const cd_shard *s, uint64_t i, cd_record **out, cd_error *err);
CD_API void cd_record_destroy(cd_record *r);

CD_API uint64_t cd_record_number(const cd_record *r);
/* The metadata JSON text (NUL-terminated, owned by the record). */
CD_API const char *cd_record_metadata(const cd_record *r);
CD_API uint32_t cd_record_tensor_count(const cd_record *r);
/* Index of the tensor called name, or -1. */
CD_API int cd_record_find_tensor(const cd_record *r, const char *name);
CD_API void cd_record_tensor_info(const cd_record *r, uint32_t tensor, cd_tensor_info *out);
/* Reads a whole tensor into out: C-order (C, X, Y, Z), C*X*Y*Z*sizeof(dtype) bytes. */
CD_API cd_status cd_record_read_tensor(const cd_shard *s, const cd_record *r, uint32_t tensor, void *out,
                                       cd_error *err);

/* Channel ch of a tensor read whole (cd_record_read_tensor: C-order (C, X, Y, Z)) as a volume in NIfTI
 * order (x fastest), float16 widened to float32, with the given affine and spacing (what export-batch
 * and export-nnunet write). The caller owns *out (cd_volume_destroy). */
CD_API cd_status cd_tensor_channel_volume(const void *data, const cd_tensor_info *ti, uint32_t ch,
                                          const double affine[4][4], const double spacing[3], cd_volume **out,
                                          cd_error *err);

/* Reads the box [start, start+size) of a tensor (all channels) into out, C-order
 * (C, size[0], size[1], size[2]); only the chunks the box touches are read. Parts of the box outside
 * the tensor are filled with zero bytes. */
CD_API cd_status cd_record_read_region(const cd_shard *s, const cd_record *r, uint32_t tensor, const int64_t start[3],
                                       const int64_t size[3], void *out, cd_error *err);

/* Reads every record and chunk of a shard and verifies all checksums. On failure the message names
 * the first damaged place; *bad_record receives its record number (or -1 for header/index damage). */
CD_API cd_status cd_shard_verify(const char *path, int64_t *bad_record, cd_error *err);

/* XXH3-128 of a whole file as 32 hex digits (hash_hex holds 33 bytes). */
CD_API cd_status cd_file_xxh3_128(const char *path, char hash_hex[33], uint64_t *size, cd_error *err);

/* ==== Advanced API ====
 * Chunk-level reading for callers that schedule their own reads (the loader's io_uring path): the
 * file descriptor, where each chunk lives, and decoding one chunk already read.
 * Like zstd.h's ZSTD_STATIC_LINKING_ONLY section: these declarations may change in any release
 * (signatures, struct layouts); define CIRRDATA_ADVANCED_API before including this header to use
 * them. The library and its own tools, tests and benchmarks are built with it. */
#ifdef CIRRDATA_ADVANCED_API

/* Where one chunk lives and what it covers. */
typedef struct cd_chunk_info {
    uint64_t offset; /* absolute, in the shard file */
    uint32_t stored_size;
    uint32_t raw_size;
    uint64_t xxh3;
    uint32_t start[3];  /* first voxel covered */
    uint32_t extent[3]; /* voxels covered along each axis */
} cd_chunk_info;

/* The file descriptor (for callers that schedule their own reads, e.g. io_uring). */
CD_API int cd_shard_fd(const cd_shard *s);

CD_API void cd_record_chunk_info(const cd_record *r, uint32_t tensor, uint32_t chunk, cd_chunk_info *out);

/* Decodes one chunk from its stored bytes (already read by the caller), verifying checksum and
 * size. out must hold info->raw_size bytes. Errors name the shard, record, tensor and chunk. */
CD_API cd_status cd_record_decode_chunk(const cd_shard *s, const cd_record *r, uint32_t tensor, uint32_t chunk,
                                        const void *stored, void *out, cd_error *err);

#endif /* CIRRDATA_ADVANCED_API */

#ifdef __cplusplus
}
#endif
#endif
