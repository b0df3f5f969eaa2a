/* The device the converter preprocesses on (`cirrdata convert --device vulkan`): the recipe's
 * resampling and normalisation through the Vulkan kernels of gpu/preprocess.c, each call falling back
 * to the CPU reference when the GPU cannot do it (no device, memory, limits, a lost device), with the
 * first reason kept as a note. Not installed. */
#ifndef CD_GPU_PREPROCESS_IMPL_H
#define CD_GPU_PREPROCESS_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "cirrdata/gpu.h"
#include "cirrdata/preprocess.h"
#include "cirrdata/recipe.h"
#include "cirrdata/resample.h"
#include "core/internal.h"

typedef struct cd_pp_device {
    bool ready;                 /* initialised (cd_pp_device_free may run on a zeroed one) */
    bool wanted;                /* "vulkan" was asked for */
    cd_gpu_context *gpu;        /* NULL: everything on the CPU */
    atomic_bool off;            /* the device failed for good: the rest runs on the CPU */
    atomic_ullong gpu_calls;    /* volumes resampled or normalised on the device */
    atomic_ullong cpu_calls;    /* resamplings that went to the CPU */
    pthread_mutex_t mu;
    char note[256];             /* the first reason the CPU ran instead; empty otherwise */
} cd_pp_device;

/* device: NULL or "cpu" (no GPU), or "vulkan" (a GPU that is not there is no error: the reason lands
 * in note). CD_ERR_ARG for another name. Free with cd_pp_device_free (also after a failed init). */
CD_INTERNAL cd_status cd_pp_device_init(cd_pp_device *d, const char *device, cd_error *err);
CD_INTERNAL void cd_pp_device_free(cd_pp_device *d);
/* "vulkan" when the device computed something, else "cpu". */
CD_INTERNAL const char *cd_pp_device_used(const cd_pp_device *d);

/* cd_resample through the device when there is one (d may be NULL: the CPU). Errors are the
 * reference's: a GPU failure only moves the work to the CPU. Thread-safe. */
CD_INTERNAL cd_status cd_pp_resample(cd_pp_device *d, const cd_volume *src, const cd_grid *grid, const cd_resample_options *o,
                                     cd_volume **out, cd_error *err);
/* The recipe's linear mask resampling (mask_order 1: one trilinear pass per label, argmax; what
 * resample_mask_linear in convert/preprocess.c does) on the device. Returns false when it did not run
 * there (*out untouched: the caller runs the CPU reference). Thread-safe. */
CD_INTERNAL bool cd_pp_resample_mask_linear(cd_pp_device *d, const cd_volume *mask, const cd_grid *grid, cd_volume **out);
/* The device part of it: the labels of a uint8 mask resampled exactly as the reference does (the
 * device interpolates every label's indicator; voxels within 1e-5 of a decision are decided again on
 * the host in the reference's double arithmetic). The caller owns *out. Errors as cd_gpu_resample. */
CD_INTERNAL cd_status cd_gpu_resample_mask_linear(cd_gpu_context *ctx, const cd_volume *mask, const cd_grid *grid, cd_volume **out,
                                                  cd_error *err);
/* The recipe's normalisation of one channel (x fastest, n voxels, mask NULL or n bytes) on the
 * device. Returns false when it did not run there (no device, nothing to do, a failure: x is then
 * untouched and the caller runs the CPU reference). Thread-safe. */
CD_INTERNAL bool cd_pp_normalize(cd_pp_device *d, const cd_recipe *r, float *x, size_t n, const uint8_t *mask);

/* cd_preprocess_multi (convert/preprocess.c) with its resampling and normalisation through dev (NULL:
 * the CPU, which is cd_preprocess_multi). What the converter calls. */
CD_INTERNAL cd_status cd_preprocess_multi_dev(const cd_recipe *r, const double target_spacing[3], const cd_volume *const *images,
                                              int nimages, const cd_volume *mask, int threads, cd_pp_device *dev, cd_sample **out,
                                              cd_error *err);

#endif
