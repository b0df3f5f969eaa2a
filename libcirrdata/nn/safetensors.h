/* Reading safetensors files (https://huggingface.co/docs/safetensors): an 8-byte little-endian
 * header length N, N bytes of JSON ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * optional "__metadata__": {string: string}}), then the byte buffer the offsets index.
 *
 * Every field is checked before use: the header length against the file size and a cap, each tensor's
 * dtype, shape (rank <= 8, no overflow of the element count), and offsets (inside the buffer, end -
 * begin == elements * dtype size, no two tensors overlapping). The file is mmap'ed read-only; tensor
 * data pointers stay valid until cd_st_close. Not installed: the public API is cirrdata/model.h. */
#ifndef CD_NN_SAFETENSORS_H
#define CD_NN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

#define CD_ST_MAX_RANK 8
/* Header JSON larger than this is rejected (the format's reference implementation caps it at 100 MB). */
#define CD_ST_MAX_HEADER (100u * 1024u * 1024u)

typedef enum cd_st_dtype {
    CD_ST_F32 = 0,
    CD_ST_F16,
    CD_ST_BF16,
    CD_ST_F64,
    CD_ST_I64,
    CD_ST_I32,
    CD_ST_I16,
    CD_ST_I8,
    CD_ST_U8,
    CD_ST_BOOL
} cd_st_dtype;

typedef struct cd_st_tensor {
    const char *name; /* owned by the file handle */
    cd_st_dtype dtype;
    int rank;
    int64_t shape[CD_ST_MAX_RANK];
    int64_t elements;
    const void *data; /* inside the mapping; NOT aligned in general (use memcpy) */
    size_t nbytes;
} cd_st_tensor;

typedef struct cd_st_file cd_st_file;

/* Opens and validates `path`. Errors name the file and the tensor or field at fault. */
CD_INTERNAL cd_status cd_st_open(const char *path, cd_st_file **out, cd_error *err);
/* The same over a caller-owned buffer (fuzzing, tests); `name` is used in messages. The buffer must
 * outlive the handle. */
CD_INTERNAL cd_status cd_st_open_memory(const void *data, size_t size, const char *name, cd_st_file **out,
                                        cd_error *err);
CD_INTERNAL void cd_st_close(cd_st_file *f);

CD_INTERNAL const char *cd_st_path(const cd_st_file *f);
CD_INTERNAL int cd_st_count(const cd_st_file *f);
CD_INTERNAL const cd_st_tensor *cd_st_at(const cd_st_file *f, int i);
/* NULL when absent. */
CD_INTERNAL const cd_st_tensor *cd_st_find(const cd_st_file *f, const char *name);
/* A "__metadata__" value, NULL when absent. */
CD_INTERNAL const char *cd_st_metadata(const cd_st_file *f, const char *key);
CD_INTERNAL size_t cd_st_dtype_size(cd_st_dtype d);
CD_INTERNAL const char *cd_st_dtype_name(cd_st_dtype d);

/* Copies tensor `name` as float32 into a new malloc'ed array after checking it exists and has exactly
 * the expected shape (rank = expected_rank, shape[i] == expected[i]; -1 matches any size). Converts
 * F16/BF16/F64. Errors name the file and the tensor: "missing tensor", "has shape [..], expected [..]",
 * "dtype I64 where a float tensor is expected". */
CD_INTERNAL cd_status cd_st_get_f32(const cd_st_file *f, const char *name, int expected_rank, const int64_t *expected,
                                    float **out, cd_error *err);

#endif
