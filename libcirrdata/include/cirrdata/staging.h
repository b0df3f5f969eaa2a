/* cirrdata/staging.h — cirrhosis staging of one MRI scan: axial slices through a 2D classifier
 * (cirrdata/model.h), slice probabilities averaged into one stage per scan.
 *
 * Preprocessing (identical to the `cirrhosisstage-2d` recipe, so a model trained from a dataset
 * converted with that recipe through cirrdata.Loader sees exactly the same numbers; see
 * tests/python/test_staging.py for the check against an independent numpy/scipy implementation):
 *   1. reorient to RAS+ (cirrdata/orient.h: permutation and flips, no interpolation); physical values
 *      (scaling applied) in float32;
 *   2. resize every axial slice to 256 x 256: world-space resampling onto cd_grid_for_shape's grid
 *      (same field of view; output pixel i samples source coordinate (i + 0.5) * n / 256 - 0.5, i.e.
 *      half-pixel centres as torch's align_corners=False), bilinear in-plane, the slice positions
 *      unchanged; positions outside [0, n - 1] read 0 (no edge clamping, no antialiasing);
 *   3. intensities to [0, 1]: per-volume 0.5 and 99.5 percentiles (numpy 'linear') of the resized
 *      volume map to 0 and 1, clipped;
 *   4. three identical channels, then (x - 0.5) / 0.5 (torchvision Normalize(0.5, 0.5));
 *   5. rounded to float16 as the dataset stores it, and read back as float32.
 * No 8-bit quantisation: the public staging code reads 8-bit PNGs whose export is not published.
 * A slice is a (3, 256, 256) array whose rows are the RAS+ x axis and columns the y axis: the
 * layout of cirrdata.Loader's slice-mode batches (B, 3, X, Y, 1) with the last axis dropped.
 *
 * Slices: all axial slices of the volume, or with a mask only those where the (resized) mask has
 * liver. Ownership: the caller owns every *out and frees it with the matching _destroy. */
#ifndef CIRRDATA_STAGING_H
#define CIRRDATA_STAGING_H

#include "cirrdata/api.h"
#include <stdint.h>

#include "cirrdata/model.h"
#include "cirrdata/status.h"
#include "cirrdata/volume.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CD_STAGE_SIZE 256 /* slice side after resizing */
#define CD_STAGE_CHANNELS 3

/* Preprocessed slices of one scan. */
typedef struct cd_stage_input {
    int64_t n;     /* slices */
    int64_t depth; /* axial slices in the RAS+ volume */
    int64_t *z;    /* (n) the RAS+ axial index of each slice, increasing */
    float *x;      /* (n, 3, 256, 256) C-order, ready for cd_model_predict */
} cd_stage_input;

/* Preprocesses image (any orientation; mask, when not NULL, on the same voxel grid, any integer or
 * float dtype, nonzero = liver). Errors: CD_ERR_ARG when the mask's shape or affine differs from the
 * image's, or the mask has no liver voxel (message says which); CD_ERR_NOMEM. threads: 0 = online
 * CPUs (the result does not depend on it). */
CD_API cd_status cd_stage_preprocess(const cd_volume *image, const cd_volume *mask, int threads, cd_stage_input **out,
                                     cd_error *err);
CD_API void cd_stage_input_destroy(cd_stage_input *in);

/* Staging result of one scan. */
typedef struct cd_stage_result {
    int classes;         /* the model's classes (3: mild, moderate, severe) */
    int stage;           /* argmax of probs, 0-based (0 mild, 1 moderate, 2 severe) */
    float *probs;        /* (classes) mean of the slice probabilities; sums to 1 */
    int64_t n;           /* slices */
    int64_t *z;          /* (n) as cd_stage_input.z */
    float *slice_logits; /* (n, classes) the network's outputs */
    float *slice_probs;  /* (n, classes) softmax of each slice's logits */
} cd_stage_result;

/* Runs the model on in's slices, batch slices per cd_model_predict call (0 = 16), and aggregates.
 * Errors: CD_ERR_ARG when the model does not take 3 channels or has fewer than 2 classes; whatever
 * cd_model_predict reports. */
CD_API cd_status cd_stage_run(cd_model *m, const cd_stage_input *in, int batch, cd_stage_result **out, cd_error *err);
/* cd_stage_preprocess then cd_stage_run. */
CD_API cd_status cd_stage_volume(cd_model *m, const cd_volume *image, const cd_volume *mask, int batch, int threads,
                                 cd_stage_result **out, cd_error *err);
CD_API void cd_stage_result_destroy(cd_stage_result *r);

/* "mild", "moderate", "severe" for 0..2 (also "healthy" for 3); "class N" otherwise. Static storage
 * for 0..3; for other values a per-thread buffer overwritten by the next call. */
CD_API const char *cd_stage_name(int stage);

#ifdef __cplusplus
}
#endif
#endif
