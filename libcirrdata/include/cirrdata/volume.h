/* cirrdata/volume.h — a 3D voxel array with its world geometry.
 *
 * A cd_volume owns its voxels. Voxels are stored x fastest (NIfTI / Fortran order): the element at
 * (i, j, k) is at index i + nx * (j + ny * k). The affine maps voxel indices (i, j, k, 1) to world
 * millimetres in RAS+ (the NIfTI/nibabel convention). Stored values are raw; the linear scaling
 * (value = raw * slope + inter) is kept separately, as in NIfTI, and applied by cd_volume_to_float*.
 *
 * Thread safety: a volume may be read from many threads at once; mutation needs exclusive access. */
#ifndef CIRRDATA_VOLUME_H
#define CIRRDATA_VOLUME_H

#include "cirrdata/api.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cirrdata/dtype.h"
#include "cirrdata/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cd_volume cd_volume;

/* Creates a zero-filled volume of dims[0] x dims[1] x dims[2] elements of dtype, with an identity
 * affine, spacing 1 and no scaling. Each dim must be >= 1. The caller owns *out and frees it with
 * cd_volume_destroy. */
CD_API cd_status cd_volume_create(const int64_t dims[3], cd_dtype dtype, cd_volume **out, cd_error *err);

/* Frees the volume and its voxels. NULL is allowed. */
CD_API void cd_volume_destroy(cd_volume *vol);

/* Deep copy. The caller owns *out. */
CD_API cd_status cd_volume_clone(const cd_volume *vol, cd_volume **out, cd_error *err);

CD_API void cd_volume_dims(const cd_volume *vol, int64_t dims[3]);
CD_API cd_dtype cd_volume_dtype(const cd_volume *vol);
CD_API size_t cd_volume_count(const cd_volume *vol);  /* number of voxels */
CD_API size_t cd_volume_nbytes(const cd_volume *vol); /* count * element size */

/* The voxel array (borrowed; valid until the volume is destroyed). */
CD_API void *cd_volume_data(cd_volume *vol);
CD_API const void *cd_volume_data_const(const cd_volume *vol);

/* Voxel-to-world affine, row major: world = A * (i, j, k, 1)^T. */
CD_API void cd_volume_affine(const cd_volume *vol, double affine[4][4]);
CD_API void cd_volume_set_affine(cd_volume *vol, const double affine[4][4]);

/* Voxel size in mm along each array axis (NIfTI pixdim[1..3], permuted by reorientation). */
CD_API void cd_volume_spacing(const cd_volume *vol, double spacing[3]);
CD_API void cd_volume_set_spacing(cd_volume *vol, const double spacing[3]);

/* Linear intensity scaling. has_scaling is false when values are used as stored (slope 1, inter 0). */
CD_API bool cd_volume_has_scaling(const cd_volume *vol);
CD_API void cd_volume_scaling(const cd_volume *vol, double *slope, double *inter);
CD_API void cd_volume_set_scaling(cd_volume *vol, double slope, double inter);

/* Writes the scaled values (raw * slope + inter, computed in double then rounded) into out, which
 * must hold cd_volume_count(vol) elements. */
CD_API void cd_volume_to_float32(const cd_volume *vol, float *out);
CD_API void cd_volume_to_float64(const cd_volume *vol, double *out);

/* numpy.percentile(values, p) ('linear' method) of n floats; reorders values. NaNs must be absent. */
CD_API double cd_percentile_f32(float *values, size_t n, double p);

#ifdef __cplusplus
}
#endif
#endif
