/* Storing a volume in C order (internal): the last step of preprocessing, and the chunks of a sample
 * read in place from its source (image_view.h). */
#ifndef CD_PREPROCESS_STORE_H
#define CD_PREPROCESS_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/orient.h"
#include "cirrdata/volume.h"
#include "core/internal.h"

/* Stores a volume in C order (X, Y, Z; z fastest), casting to dtype. The source is read through signed
 * element steps per stored axis, so a reorientation (axis permutation and flips) is folded into the
 * copy instead of being a volume copy of its own. The axis with a unit source step (the source's x) is
 * walked in blocks of one cache line: every source line is read once, and the block's destination rows
 * (z fastest) fill line by line as the other two axes advance. */
typedef struct cd_store_src {
    const void *data;
    cd_dtype dtype;
    int64_t d[3];    /* stored dims */
    int64_t step[3]; /* source elements per step along stored axis a (signed) */
    int64_t base;    /* source element of stored voxel (0, 0, 0) */
    bool scaled;     /* stored as float32 with the source's NIfTI scaling: (float)(v * slope + inter) in double */
    double slope, inter;
} cd_store_src;

/* Stores src in C order (X, Y, Z; z fastest) into dst, cast to out_dtype. */
CD_INTERNAL void cd_store_c_order(const cd_store_src *src, cd_dtype out_dtype, void *dst);
/* A volume as it is (NIfTI order). */
CD_INTERNAL cd_store_src cd_store_plain_src(const cd_volume *vol);
/* A volume as cd_volume_reorient_canonical would return it (same permutation, flips and affine), read
 * in place: stored axis o->world_axis[i] walks source axis i, backwards where flipped. */
CD_INTERNAL cd_store_src cd_store_reoriented_src(const cd_volume *vol, const cd_orientation *o, double affine[4][4]);
/* Half-open box of nonzero voxels and their count, of a C-order (X, Y, Z) uint8 array. */
CD_INTERNAL void cd_bbox_c_order(const uint8_t *m, const uint32_t d[3], int64_t lo[3], int64_t hi[3], bool *found,
                                 uint64_t *count);

#endif
