/* The recipe's intensity normalisation of one channel on the CPU (internal): the reference that the
 * device kernels of gpu_kernels.c (cd_pp_normalize) equal. */
#ifndef CD_PREPROCESS_NORMALIZE_H
#define CD_PREPROCESS_NORMALIZE_H

#include <stddef.h>
#include <stdint.h>

#include "cirrdata/recipe.h"
#include "core/internal.h"

/* Normalises x (n voxels) in place as r says (z-score or percentiles over r's region, then r's
 * "then"); mask is NULL or n bytes (nonzero: inside the mask). */
CD_INTERNAL void cd_pp_normalize_cpu(const cd_recipe *r, float *x, size_t n, const uint8_t *mask);

#endif
