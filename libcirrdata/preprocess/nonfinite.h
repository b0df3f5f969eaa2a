/* Voxels that are NaN or infinite in the volumes a recipe preprocesses (internal): counted, refused or
 * replaced by 0 according to the recipe's non_finite (cirrdata/recipe.h). */
#ifndef CD_CONVERT_NONFINITE_H
#define CD_CONVERT_NONFINITE_H

#include <stdint.h>

#include "cirrdata/recipe.h"
#include "cirrdata/volume.h"
#include "core/internal.h"

/* Voxels whose physical value as float32 (cd_volume_to_float32's: scaling applied in double, then
 * rounded) is NaN or infinite. Unscaled integer volumes have none and are not read. */
CD_INTERNAL uint64_t cd_volume_count_non_finite(const cd_volume *v);

/* Applies `policy` to v. No non-finite voxel: CD_OK with *clean = NULL (use v as it is).
 * CD_NON_FINITE_ERROR: CD_ERR_FORMAT "N non-finite voxels (NaN or infinite in float32) in <what>; <hint>"
 * (hint NULL: the recipe option that converts it). CD_NON_FINITE_ZERO: *clean is a new float32 volume
 * of v's physical values with 0 in their place (same dims, affine and spacing; no scaling), which the
 * caller destroys. */
CD_INTERNAL cd_status cd_non_finite_apply(cd_non_finite policy, const cd_volume *v, const char *what, const char *hint,
                                          cd_volume **clean, cd_error *err);

/* cd_non_finite_apply for a volume read from `path` (named first in the message); under ZERO *v is
 * replaced by its clean copy (the old one destroyed). */
CD_INTERNAL cd_status cd_non_finite_resolve(cd_non_finite policy, cd_volume **v, const char *path, const char *what,
                                            cd_error *err);

#endif
