/* Internal pieces of cd_resample (transform/resample.c) that the Vulkan resampler (preprocess/gpu_kernels.c)
 * shares, so that both compute from the very same numbers. */
#ifndef CD_RESAMPLE_IMPL_H
#define CD_RESAMPLE_IMPL_H

#include "cirrdata/resample.h"
#include "core/internal.h"

/* cd_resample's output-voxel -> source-voxel map M = inv(A_src) * A_grid, its entries snapped as
 * cd_resample snaps them. CD_ERR_ARG for a singular or non-finite affine. */
CD_INTERNAL cd_status cd_resample_voxel_map(const cd_volume *src, const cd_grid *grid, double m[3][4], cd_error *err);

/* The cubic B-spline coefficients cd_resample interpolates for a source whose values float32 holds
 * exactly (8/16-bit integers, float16/32; else CD_ERR_ARG): physical values, prefiltered with mirror
 * boundaries, written to coef (src's voxel count, x fastest). threads: 0 = online CPUs. */
CD_INTERNAL cd_status cd_resample_spline_f32(const cd_volume *src, int threads, float *coef, cd_error *err);

#endif
