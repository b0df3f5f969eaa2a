/* cirrdata/recipe.h — deterministic preprocessing recipes (schemas/recipe.schema.json).
 *
 * A recipe says how a source volume becomes a stored record: reorient, resample, crop, normalise,
 * slice (2D), cast, chunk. Recipes are JSON; presets ship with the library:
 *   raw                canonical orientation only, physical values, lossless dtype, masks uint8
 *   nnunet-3d          dataset median spacing (anisotropy rule), cubic image / linear mask with the low-
 *                      resolution axis resampled separately (nearest), z-score
 *   synergynet-3d      256 x 256 x 80 by nearest neighbour (as the dataset paper), whole-volume z-score
 *   cirrhosisstage-2d  axial slices resized to 256 x 256, 3 channels, [0,1] then (x - 0.5) / 0.5
 * cd_recipe is a plain value type; every field has a default. */
#ifndef CIRRDATA_RECIPE_H
#define CIRRDATA_RECIPE_H

#include "cirrdata/api.h"
#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/dtype.h"
#include "cirrdata/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cd_resample_mode {
    CD_RESAMPLE_NONE = 0,
    CD_RESAMPLE_SPACING,
    CD_RESAMPLE_SHAPE,
    CD_RESAMPLE_MEDIAN_SPACING
} cd_resample_mode;

/* nnU-Net's anisotropic resampling (nnunetv2 default_resampling): the low-resolution axis is resampled
 * on its own. OFF: one 3D interpolation. AUTO: when the source spacing's max/min exceeds
 * anisotropy_threshold, the axis of the source's largest spacing (if unique); else when the target
 * spacing's max/min does, that of the target; else no separate axis. ON: always the source's largest
 * spacing axis (if unique). With a separate axis, each slice across it is resampled in 2D with
 * image_order / mask_order, then the axis itself with order_z (masks: nearest), positions beyond the
 * first/last slice taking the edge slice. */
typedef enum cd_separate_z { CD_SEPARATE_Z_OFF = 0, CD_SEPARATE_Z_AUTO, CD_SEPARATE_Z_ON } cd_separate_z;

typedef enum cd_crop_mode { CD_CROP_NONE = 0, CD_CROP_MASK, CD_CROP_NONZERO } cd_crop_mode;
typedef enum cd_norm_mode { CD_NORM_NONE = 0, CD_NORM_ZSCORE, CD_NORM_PERCENTILE } cd_norm_mode;
typedef enum cd_norm_region { CD_REGION_VOLUME = 0, CD_REGION_MASK, CD_REGION_NONZERO } cd_norm_region;

/* What happens to a case whose image (or mask) has voxels that are NaN or infinite (as float32, the
 * type preprocessing computes in; scaled integers count after scaling): ERROR refuses the case
 * ("N non-finite voxels", convert skips it and lists it), ZERO replaces them with 0 first. */
typedef enum cd_non_finite { CD_NON_FINITE_ERROR = 0, CD_NON_FINITE_ZERO } cd_non_finite;

typedef struct cd_recipe {
    char name[65];
    bool reorient; /* to RAS+ */
    cd_resample_mode resample;
    double spacing[3];           /* CD_RESAMPLE_SPACING */
    int64_t shape[3];            /* CD_RESAMPLE_SHAPE; shape[2] == 0 keeps the slice count */
    int image_order;             /* 0, 1, 3 */
    int mask_order;              /* 0, 1 */
    double anisotropy_threshold; /* CD_RESAMPLE_MEDIAN_SPACING target, and separate_z AUTO */
    cd_separate_z separate_z;    /* OFF by default; AUTO in the nnunet-3d preset */
    int order_z;                 /* 0 or 1: images along the separate axis (nnU-Net: 0) */
    cd_crop_mode crop;
    int64_t margin[3];
    cd_norm_mode normalize;
    cd_norm_region region;
    double percentiles[2];
    double range[2];
    bool has_then; /* then x = (x - then_mean) / then_std */
    double then_mean, then_std;
    bool slices; /* 2D recipe: one chunk per axial slice */
    int slice_channels;
    cd_dtype dtype; /* CD_DTYPE_INVALID = auto */
    uint32_t chunk[3];
    int zstd_level;
    cd_non_finite non_finite; /* CD_NON_FINITE_ERROR by default */
} cd_recipe;

/* Names of the presets, NULL-terminated. */
CD_API const char *const *cd_recipe_preset_names(void);

/* Fills out with a preset. Unknown name: CD_ERR_ARG listing the presets. */
CD_API cd_status cd_recipe_preset(const char *name, cd_recipe *out, cd_error *err);

/* Parses and validates a recipe JSON text. origin names it in messages (a file path). Unknown keys,
 * wrong types and out-of-range values are errors. */
CD_API cd_status cd_recipe_parse(const char *json, const char *origin, cd_recipe *out, cd_error *err);

/* A preset name, or else the path of a JSON file (at most 1 MiB). */
CD_API cd_status cd_recipe_load(const char *name_or_path, cd_recipe *out, cd_error *err);

/* The recipe as canonical JSON with every field written, except non_finite at its default "error" (so
 * recipes, and the fingerprints made from them, read as before the field existed). The caller frees
 * it with free(). NULL on OOM. */
CD_API char *cd_recipe_to_json(const cd_recipe *r);

#ifdef __cplusplus
}
#endif
#endif
