/* A sample's image read in place from its source volume (internal): what `raw` stores is the source
 * voxels reoriented and cast, so the chunks are produced straight from the source, without a C-order
 * copy of the whole image. */
#ifndef CD_CONVERT_IMAGE_VIEW_H
#define CD_CONVERT_IMAGE_VIEW_H

#include "cirrdata/preprocess.h"
#include "cirrdata/shard.h"
#include "core/internal.h"
#include "preprocess/preprocess_impl.h"

typedef struct cd_image_view {
    const void *data;   /* the source's voxels (borrowed: the source volume must outlive the view) */
    cd_dtype src_dtype; /* of data */
    cd_dtype dtype;     /* stored */
    int64_t d[3];       /* stored dims (X, Y, Z) */
    int64_t step[3];    /* source elements per step along stored axis a (signed) */
    int64_t base;       /* source element of stored voxel (0, 0, 0) */
    bool scaled;        /* float32 = (float)(v * slope + inter), as cd_volume_to_float32 */
    double slope, inter;
} cd_image_view;

/* cd_preprocess_multi_dev, except that when the recipe stores one image's raw values without a crop
 * (the source's values, reoriented, cast or scaled to float32) and view is non-NULL, the sample's image is left NULL
 * and *view describes it instead (*used true). */
CD_INTERNAL cd_status cd_preprocess_multi_view(const cd_recipe *r, const double target_spacing[3],
                                               const cd_volume *const *images, int nimages, const cd_volume *mask,
                                               int threads, cd_pp_device *dev, cd_image_view *view, bool *used,
                                               cd_sample **out, cd_error *err);

/* A cd_chunk_fill_fn (shard/record_impl.h) over a cd_image_view (user): one chunk in C order. */
CD_INTERNAL void cd_image_view_fill(const void *user, const cd_tensor_info *ti, const cd_chunk_info *ci, void *dst);

#endif
