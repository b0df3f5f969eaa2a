/* Where a training sample comes from and what is done to it (internal): the part of the loader's
 * per-sample work that does not touch storage. The loader (loader/workers.c) and the augmented conversion
 * (convert/augment_copies.c) both call it, so a record that `convert --augment` writes is, bit for
 * bit, the sample the loader produces for the same (seed, epoch, record index, mode, patch). */
#ifndef CD_AUGMENT_SAMPLE_PLAN_H
#define CD_AUGMENT_SAMPLE_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/augment.h"
#include "core/internal.h"

typedef struct cd_sample_plan {
    int64_t patch[3];     /* output size */
    int64_t corner[3];    /* source voxel of the output's first voxel before augmentation */
    uint64_t sample_id;   /* the augmentation's sample number: the record index, or (index << 20) | z in slice mode */
    bool fg;              /* patch mode: the centre was drawn from the foreground locations */
    cd_aug_params a;      /* drawn parameters (identity without a pipeline) */
    int64_t lo[3], hi[3]; /* the source box the transform reads, clipped to the record */
    int64_t bshape[3];    /* hi - lo */
    bool empty;           /* the box misses the record: the output is all zero */
} cd_sample_plan;

/* A pure integer translation plus mirroring: output voxel o of size[] reads source voxel
 * off[a] + sgn[a] * o[a] on each axis a (sgn +1 or -1). The loader's staging box is the case
 * off = lo, sgn = +1, size = bshape. */
typedef struct cd_sample_map {
    int64_t off[3];
    int sgn[3];
    int64_t size[3];
} cd_sample_map;

/* Plans one sample of a record of the given shape. mode/patch as the loader's (patch: the output
 * size; the loader passes the record's shape in volume mode without a fixed size). z: the slice in
 * slice mode, else ignored. fg: patch mode, centre the patch on one of fgl[0..nfg) (the loader's
 * nnU-Net rule decides; needs nfg > 0); otherwise on a uniformly drawn voxel. pipe NULL: identity. */
CD_INTERNAL void cd_sample_plan_make(const cd_aug_pipeline *pipe, cd_loader_mode mode, uint64_t seed, uint64_t epoch,
                                     uint64_t record_index, int32_t z, const uint32_t shape[3], const int64_t patch[3],
                                     bool fg, uint32_t nfg, const int32_t (*fgl)[3], cd_sample_plan *out);

/* Copies the plan's box out of a whole record held in memory (C-order (channels, shape) float32
 * image, (shape) uint8 mask or NULL) into box / mbox, laid out as the loader reads it from chunks. */
CD_INTERNAL void cd_sample_plan_extract(const cd_sample_plan *p, const float *img, const uint8_t *mask,
                                        uint32_t channels, const uint32_t shape[3], float *box, uint8_t *mbox);

/* Renders the plan from its box (as extracted or read): zero for an empty plan, else the fused
 * spatial pass, then (with a pipeline) the intensity ops. out_mask may be NULL. */
CD_INTERNAL cd_status cd_sample_plan_render(const cd_sample_plan *p, bool intensity, const float *box,
                                            const uint8_t *mbox, uint32_t channels, float *out_img, uint8_t *out_mask,
                                            cd_error *err);

/* True when the plan is a map (no rotation, scaling or elastic deformation; a diagonal +-1 matrix with
 * an integer offset): every sample without augmentation, and about two thirds with nnU-Net's. Then the
 * output equals cd_sample_plan_render's, bit for bit, when the output voxels whose source lies in the
 * record are copied from it (cd_sample_map_source) and the others are zero (cd_sample_map_zero_outside),
 * followed by cd_aug_apply_intensity when the plan has a pipeline. Fills *m with the map. */
CD_INTERNAL bool cd_sample_plan_direct(const cd_sample_plan *p, cd_sample_map *m);

/* The source voxels the map reads, clipped to a record of the given shape: [lo, hi). False when
 * none (the whole output is zero). */
CD_INTERNAL bool cd_sample_map_source(const cd_sample_map *m, const uint32_t shape[3], int64_t lo[3], int64_t hi[3]);

/* Zeroes the output voxels (channels x size float32, and the size uint8 mask when not NULL) whose
 * source lies outside a record of the given shape; leaves the others alone. */
CD_INTERNAL void cd_sample_map_zero_outside(const cd_sample_map *m, const uint32_t shape[3], uint32_t channels,
                                            float *out_img, uint8_t *out_mask);

#endif
