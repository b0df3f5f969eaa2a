/* cirrdata/dtype.h — element types of voxel arrays. */
#ifndef CIRRDATA_DTYPE_H
#define CIRRDATA_DTYPE_H

#include "cirrdata/api.h"
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cd_dtype {
    CD_DTYPE_INVALID = 0,
    CD_DTYPE_UINT8,
    CD_DTYPE_INT8,
    CD_DTYPE_UINT16,
    CD_DTYPE_INT16,
    CD_DTYPE_UINT32,
    CD_DTYPE_INT32,
    CD_DTYPE_UINT64,
    CD_DTYPE_INT64,
    CD_DTYPE_FLOAT16,
    CD_DTYPE_FLOAT32,
    CD_DTYPE_FLOAT64
} cd_dtype;

/* Bytes per element; 0 for CD_DTYPE_INVALID. */
CD_API size_t cd_dtype_size(cd_dtype dtype);

/* NumPy-style name ("int16", "float32"); "invalid" for unknown values. */
CD_API const char *cd_dtype_name(cd_dtype dtype);

/* Inverse of cd_dtype_name; CD_DTYPE_INVALID when the name is unknown. */
CD_API cd_dtype cd_dtype_from_name(const char *name);

/* IEEE binary16 values to float32, exactly (infinities and NaNs kept): dst[i] = src[i] for i < n.
 * For readers of float16 tensors (the cirrhosisstage-2d records); src and dst must not overlap. */
CD_API void cd_float16_to_float32(const uint16_t *src, float *dst, size_t n);

#ifdef __cplusplus
}
#endif
#endif
