/* cirrdata/resample.h — world-space resampling of volumes onto other voxel grids.
 *
 * A grid is a shape plus a voxel-to-world affine. Resampling evaluates the source at the world
 * position of every target voxel: out[v] = src(A_src^-1 * A_grid * v). Interpolation semantics are
 * scipy.ndimage.map_coordinates' (mode 'constant'): order 0 nearest, order 1 trilinear, order 3 cubic
 * B-spline on spline coefficients prefiltered with mirror boundaries; positions outside the source
 * (beyond [0, n-1] on an axis, with a 1e-? tolerance documented in resample.c) take the fill value.
 * Scaling (slope/inter) of the source is applied before interpolation for orders 1 and 3.
 *
 * Thread safety: reentrant; each call may use `threads` worker threads of its own. */
#ifndef CIRRDATA_RESAMPLE_H
#define CIRRDATA_RESAMPLE_H

#include "cirrdata/api.h"
#include <stdint.h>

#include "cirrdata/dtype.h"
#include "cirrdata/status.h"
#include "cirrdata/volume.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cd_interp {
    CD_INTERP_NEAREST = 0,
    CD_INTERP_LINEAR = 1,
    CD_INTERP_CUBIC = 3
} cd_interp;

typedef struct cd_grid {
    int64_t dims[3];
    double affine[4][4];
} cd_grid;

/* The grid of an existing volume. */
CD_API void cd_grid_of_volume(const cd_volume *vol, cd_grid *out);

/* A grid covering the same field of view as vol with the given voxel spacing (mm) along each array
 * axis: dims = max(1, round(n * old_spacing / spacing)); axis directions kept; centred on the same
 * world point as vol's grid. */
CD_API cd_status cd_grid_for_spacing(const cd_volume *vol, const double spacing[3], cd_grid *out, cd_error *err);

/* A grid of the given shape covering vol's field of view edge to edge (spacing n*old/new per axis,
 * the convention of skimage.transform.resize and torch align_corners=False), same centre. */
CD_API cd_status cd_grid_for_shape(const cd_volume *vol, const int64_t shape[3], cd_grid *out, cd_error *err);

typedef struct cd_resample_options {
    cd_interp interp;    /* default CD_INTERP_LINEAR */
    cd_dtype out_dtype;  /* CD_DTYPE_INVALID (0) = float32 for linear/cubic, source dtype for nearest */
    double fill;         /* value outside the source; default 0 */
    int threads;         /* 0 = number of online CPUs */
} cd_resample_options;

#define CD_RESAMPLE_OPTIONS_INIT {CD_INTERP_LINEAR, CD_DTYPE_INVALID, 0.0, 0}

/* Resamples src onto grid. The result has grid's dims and affine, spacing from the affine's column
 * norms, and no scaling (values are physical) unless nearest kept the source dtype, in which case
 * the source's scaling is kept. Integer outputs are rounded to nearest and clamped to the type's
 * range. The caller owns *out. */
CD_API cd_status cd_resample(const cd_volume *src, const cd_grid *grid, const cd_resample_options *opts,
                             cd_volume **out, cd_error *err);

#ifdef __cplusplus
}
#endif
#endif
