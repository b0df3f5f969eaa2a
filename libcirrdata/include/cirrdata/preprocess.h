/* cirrdata/preprocess.h — applying a recipe to one image (and its mask).
 *
 * Order: reorient -> resample -> crop -> normalise -> slice channels -> cast -> C-order layout.
 * The result is what a shard record stores: C-order (C, X, Y, Z) arrays whose voxel axes are those of
 * `affine`. Deterministic: same inputs, same recipe, same bytes, for any thread count. */
#ifndef CIRRDATA_PREPROCESS_H
#define CIRRDATA_PREPROCESS_H

#include "cirrdata/api.h"
#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/gpu.h"
#include "cirrdata/recipe.h"
#include "cirrdata/resample.h"
#include "cirrdata/status.h"
#include "cirrdata/volume.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cd_sample {
    uint32_t channels;
    uint32_t shape[3];   /* X, Y, Z */
    cd_dtype dtype;      /* of image */
    void *image;         /* C-order (channels, X, Y, Z) */
    uint8_t *mask;       /* C-order (1, X, Y, Z), or NULL without a mask */
    double affine[4][4]; /* voxel -> world (RAS mm) of the stored arrays */
    double spacing[3];
    char orientation[4];
    bool has_bbox;       /* false when the mask is absent or empty */
    int64_t bbox[3][2];  /* half-open box of mask > 0, stored voxels */
    uint64_t foreground; /* voxels with mask > 0 */
} cd_sample;

/* Applies recipe r. target_spacing is used by CD_RESAMPLE_MEDIAN_SPACING (the converter resolves it
 * from the whole dataset); may be NULL otherwise. mask may be NULL; when given, it must lie on the
 * image's grid. An image with NaN or infinite voxels (as float32) is CD_ERR_FORMAT "N non-finite
 * voxels ..." unless r->non_finite is CD_NON_FINITE_ZERO, which sets them to 0 first (the uint8 mask
 * has none). threads: 0 = online CPUs. The caller owns *out (cd_sample_destroy). */
CD_API cd_status cd_preprocess(const cd_recipe *r, const double target_spacing[3], const cd_volume *image,
                               const cd_volume *mask, int threads, cd_sample **out, cd_error *err);
/* Several co-registered inputs as channels (e.g. T1 and T2 of one patient): images[0] defines the
 * grid; images[1..] are first resampled onto images[0]'s (reoriented) grid in world space through
 * their affines (trilinear, 0 outside), then every channel goes through the recipe, each normalised
 * on its own statistics. The mask belongs to images[0]. At most 8 images. */
CD_API cd_status cd_preprocess_multi(const cd_recipe *r, const double target_spacing[3], const cd_volume *const *images,
                                     int nimages, const cd_volume *mask, int threads, cd_sample **out, cd_error *err);
CD_API void cd_sample_destroy(cd_sample *s);

/* The dtype a recipe stores for an image (resolving "auto" from the image's stored dtype and values). */
CD_API cd_dtype cd_recipe_output_dtype(const cd_recipe *r, const cd_volume *image);

/* ==== Advanced API ====
 * The recipe's resampling and normalisation as Vulkan kernels, one call each (what `convert --device`
 * runs through the device policy of cirrdata/device.h).
 * Like zstd.h's ZSTD_STATIC_LINKING_ONLY section: these declarations may change in any release
 * (signatures, struct layouts); define CIRRDATA_ADVANCED_API before including this header to use
 * them. The library and its own tools, tests and benchmarks are built with it. */
#ifdef CIRRDATA_ADVANCED_API

/* ---- the recipe steps on a Vulkan device (cirrdata/gpu.h gives the context) ---- */

/* cd_resample (cirrdata/resample.h) on the device, same arguments, same result layout: src resampled
 * onto grid through M = inv(A_src) * A_grid (snapped entries, the 1e-4 voxel edge band, fill
 * outside), order 0 (nearest), 1 (trilinear) or 3 (cubic B-spline: the coefficients come from the
 * reference's recursive mirror-boundary prefilter on the host, opts->threads threads; the 4x4x4
 * evaluation runs on the device). Resizing to a fixed shape is this with cd_grid_for_shape's grid,
 * 2D axial slices (the cirrhosisstage-2d preset, cirrdata/staging.h) the same with the slice count
 * kept. Positions are the reference's own double arithmetic on devices with shaderFloat64 (nearest
 * copies exactly the reference's voxels), else 32.32 fixed point from the reference's double row
 * bases with the reference's decisions handed over where rounding could flip them systematically
 * (exact on axis-aligned grids, < 1e-9 per voxel chance of a one-off nearest index on rotated ones);
 * orders 1 and 3 agree to float32 rounding (~1e-6 of the data range; the tests assert 1e-4).
 * The device takes sources whose values float32 holds exactly (8/16-bit integers, float16/32;
 * scaling applied) into float32, and uint8 -> uint8 nearest copies (masks); anything else (other
 * dtypes or outputs, positions beyond +-2^30 voxels) runs through cd_resample, counted in
 * cd_gpu_timings.cpu_fallback. The caller owns *out (NULL on failure). Errors: cd_resample's for
 * bad arguments; CD_ERR_LIMIT when a buffer exceeds what the device can bind or dispatch,
 * CD_ERR_NOMEM when the device has not the memory, CD_ERR_IO for a lost device (the context is
 * then unusable), as cd_gpu_aug_spatial. */
CD_API cd_status cd_gpu_resample(cd_gpu_context *ctx, const cd_volume *src, const cd_grid *grid,
                                 const cd_resample_options *opts, cd_volume **out, cd_error *err);

/* The normalisation step of cd_preprocess for one channel, in place: x holds n float32 voxels (any
 * order), mask is NULL or n bytes on the same voxels. Uses r->normalize, region, percentiles, range,
 * has_then, then_mean and then_std, and nothing else of r:
 *   z-score: (x - mean) / max(sd, 1e-8), mean and population sd over the region (the volume,
 *            mask != 0, or x != 0; an empty region means the volume), reduced on the device
 *            (Welford per invocation, Chan's pairwise merge: ~1e-6 of the data range from the
 *            reference's double sums);
 *   percentile: numpy 'linear' percentiles of the region computed on the host by the reference's
 *            own code (cd_percentile_f32, identical values), the clip and rescale on the device;
 *   then:    (x - then_mean) / then_std.
 * x is written only when the device has finished (after an error it is intact). The caller keeps
 * ownership of x and mask. Errors as cd_gpu_resample; CD_ERR_ARG for a bad recipe field. */
CD_API cd_status cd_gpu_normalize(cd_gpu_context *ctx, const cd_recipe *r, float *x, size_t n, const uint8_t *mask,
                                  cd_error *err);

#endif /* CIRRDATA_ADVANCED_API */

#ifdef __cplusplus
}
#endif
#endif
