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

#include "cirrdata/recipe.h"
#include "cirrdata/status.h"
#include "cirrdata/volume.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cd_sample {
    uint32_t channels;
    uint32_t shape[3];      /* X, Y, Z */
    cd_dtype dtype;         /* of image */
    void *image;            /* C-order (channels, X, Y, Z) */
    uint8_t *mask;          /* C-order (1, X, Y, Z), or NULL without a mask */
    double affine[4][4];    /* voxel -> world (RAS mm) of the stored arrays */
    double spacing[3];
    char orientation[4];
    bool has_bbox;          /* false when the mask is absent or empty */
    int64_t bbox[3][2];     /* half-open box of mask > 0, stored voxels */
    uint64_t foreground;    /* voxels with mask > 0 */
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

/* numpy.percentile(values, p) ('linear' method) of n floats; reorders values. NaNs must be absent. */
CD_API double cd_percentile_f32(float *values, size_t n, double p);

#ifdef __cplusplus
}
#endif
#endif
