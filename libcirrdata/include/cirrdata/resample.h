/* cirrdata/resample.h — world-space resampling of volumes onto other voxel grids.
 *
 * A grid is a shape plus a voxel-to-world affine. Resampling evaluates the source at the world
 * position of every target voxel: out[v] = src(A_src^-1 * A_grid * v). Interpolation semantics are
 * scipy.ndimage.map_coordinates' (mode 'constant', prefilter=True): order 0 nearest (index
 * floor(c + 0.5)), order 1 trilinear, order 3 cubic B-spline on spline coefficients prefiltered with
 * mirror boundaries (scipy's spline_filter in mode 'mirror', which mode 'constant' uses; taps beyond
 * the edge read mirrored coefficients). A position outside [0, n-1] on any axis takes the fill value,
 * except within 1e-4 voxel of the edge, where it is snapped onto the edge: scipy has no such band,
 * but without it round-off in affine products (and float32-stored sforms) would turn whole border
 * slices of a same-grid resampling into fill. For the same reason, entries of the voxel-to-voxel
 * matrix within 1e-12 (relative) of a multiple of 1/1024 are snapped onto it, so grids related by
 * whole-voxel shifts or simple zooms sample exactly at voxel centres (a same-grid resampling returns
 * the source's voxels bit for bit for orders 0 and 1). Arithmetic is double; the cubic coefficients are
 * float32 for sources float32 represents exactly (8/16-bit integers, float16/32), else float64.
 * Scaling (slope/inter) of the source is applied to the values being interpolated for orders 1 and 3
 * (for order 1 it is applied to each interpolated raw value, which is identical because the weights
 * sum to 1). A trilinear tap of weight exactly 0 is not read (scipy multiplies it: 0 * NaN is NaN), so a
 * NaN or infinite source voxel reaches only the output voxels that depend on it. The cubic prefilter
 * is recursive along whole lines: for order 3 one such voxel makes every spline coefficient, and so
 * every output voxel inside the source, non-finite.
 *
 * Thread safety: reentrant; each call may use `threads` worker threads of its own. Results are
 * identical for every thread count (each output voxel is computed by one thread, the same way). */
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

typedef enum cd_interp { CD_INTERP_NEAREST = 0, CD_INTERP_LINEAR = 1, CD_INTERP_CUBIC = 3 } cd_interp;

typedef struct cd_grid {
    int64_t dims[3];
    double affine[4][4];
} cd_grid;

/* The grid of an existing volume. */
CD_API void cd_grid_of_volume(const cd_volume *vol, cd_grid *out);

/* A grid covering the same field of view as vol with the given voxel spacing (mm) along each array
 * axis: dims = max(1, round(n * old_spacing / spacing)) (round half away from zero), where
 * old_spacing is the norm of the affine's column (not pixdim); axis directions kept; centred on the
 * same world point as vol's grid (the centre of its voxel (n-1)/2). Spacings must be finite and > 0;
 * a degenerate (zero) affine column is CD_ERR_ARG; more than 2^24 voxels on an axis is CD_ERR_LIMIT. */
CD_API cd_status cd_grid_for_spacing(const cd_volume *vol, const double spacing[3], cd_grid *out, cd_error *err);

/* A grid of the given shape covering vol's field of view edge to edge (spacing n*old/new per axis,
 * the convention of skimage.transform.resize and torch align_corners=False), same centre and axis
 * directions. Each shape entry must be in 1..2^24. */
CD_API cd_status cd_grid_for_shape(const cd_volume *vol, const int64_t shape[3], cd_grid *out, cd_error *err);

typedef struct cd_resample_options {
    cd_interp interp;   /* the spline order: CD_INTERP_LINEAR (1) from cd_resample_options_init and for NULL
                            options; a zeroed struct asks for CD_INTERP_NEAREST (0) */
    cd_dtype out_dtype; /* CD_DTYPE_INVALID (0) = float32 for linear/cubic, source dtype for nearest */
    double fill;        /* value outside the source; default 0 */
    int threads;        /* 0 = number of online CPUs */
} cd_resample_options;

/* The defaults: linear, float32 (source dtype for nearest), fill 0, all CPUs. */
CD_API void cd_resample_options_init(cd_resample_options *o);

/* Resamples src onto grid. The result has grid's dims and affine, spacing from the affine's column
 * norms, and no scaling (values are physical) unless nearest kept the source dtype, in which case
 * voxels are copied exactly, the source's scaling is kept and the fill is stored as the raw value
 * that scales to it. Integer outputs are rounded as scipy does (half away from zero) and clamped to
 * the type's range (NaN becomes 0); a NaN fill needs a floating-point output. opts may be NULL
 * (defaults). Errors: CD_ERR_ARG for NULL, dims < 1, a bad order/dtype, threads < 0, or a singular
 * or non-finite affine; CD_ERR_LIMIT when the output (plus the cubic coefficients) exceeds the
 * allocation cap ($CIRRDATA_MAX_BYTES, default 8 GiB). The caller owns *out. */
CD_API cd_status cd_resample(const cd_volume *src, const cd_grid *grid, const cd_resample_options *opts,
                             cd_volume **out, cd_error *err);

#ifdef __cplusplus
}
#endif
#endif
