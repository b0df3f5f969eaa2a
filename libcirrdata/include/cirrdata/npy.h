/* cirrdata/npy.h — writing NumPy .npy files (format version 1.0). */
#ifndef CIRRDATA_NPY_H
#define CIRRDATA_NPY_H

#include "cirrdata/api.h"
#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/dtype.h"
#include "cirrdata/status.h"
#include "cirrdata/volume.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes ndim dims of dtype from data, little-endian. fortran_order says whether data is stored
 * first-axis fastest (true, as cd_volume) or last-axis fastest (false, C order). Written to a
 * temporary name and renamed. */
CD_API cd_status cd_npy_write(const char *path, const void *data, cd_dtype dtype, int ndim, const int64_t *dims,
                              bool fortran_order, cd_error *err);

/* Writes a volume as a 3D array of shape (nx, ny, nz): the raw dtype, or float32 scaled values
 * when apply_scaling is true and the volume has scaling. */
CD_API cd_status cd_npy_write_volume(const char *path, const cd_volume *vol, bool apply_scaling, cd_error *err);

#ifdef __cplusplus
}
#endif
#endif
