/* Cropping a preprocessed volume to a box (internal): the recipe's crop step. */
#ifndef CD_PREPROCESS_CROP_H
#define CD_PREPROCESS_CROP_H

#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/volume.h"
#include "core/internal.h"

/* Half-open box [lo, hi) of the nonzero voxels of v (x fastest): a uint8 volume, or float32 when
 * from_float. *found is false (and the box empty) when there is none. */
CD_INTERNAL void cd_pp_bbox(const cd_volume *v, bool from_float, int64_t lo[3], int64_t hi[3], bool *found);
/* Copies the box [lo, hi) of v into a new volume (the caller owns *out) with the affine moved to the
 * box origin; spacing and scaling are kept. */
CD_INTERNAL cd_status cd_pp_crop_volume(const cd_volume *v, const int64_t lo[3], const int64_t hi[3], cd_volume **out,
                                        cd_error *err);

#endif
