/* The device the converter preprocesses on (`cirrdata convert --device vulkan|auto`): the recipe's
 * resampling and normalisation through the Vulkan kernels of gpu_kernels.c, each call under the device
 * policy (cirrdata/device.h): the CPU reference computes what the device cannot. Not installed. */
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
#include "gpu/device_policy.h"

typedef struct cd_pp_device {
    cd_device_policy *policy; /* NULL: everything on the CPU (borrowed, as is slot) */
    cd_device_slot *slot;     /* the context the calls share */
    atomic_ullong gpu_calls;  /* volumes resampled or normalised on the device */
} cd_pp_device;

/* The preprocessing device over a policy and a slot that outlive it (policy NULL: the CPU). */
CD_INTERNAL void cd_pp_device_init(cd_pp_device *d, cd_device_policy *policy, cd_device_slot *slot);
/* "vulkan" when the device computed something, else "cpu". */
CD_INTERNAL const char *cd_pp_device_used(const cd_pp_device *d);

/* cd_resample through the device when there is one (d may be NULL: the CPU). Errors are the
 * reference's: a GPU failure only moves the work to the CPU. Thread-safe. */
CD_INTERNAL cd_status cd_pp_resample(cd_pp_device *d, const cd_volume *src, const cd_grid *grid,
                                     const cd_resample_options *o, cd_volume **out, cd_error *err);
/* The recipe's linear mask resampling (mask_order 1: one trilinear pass per label, argmax; what
 * cd_pp_mask_linear in nnunet_resample.c does) on the device. Returns false when it did not run
 * there (*out untouched: the caller runs the CPU reference). Thread-safe. */
CD_INTERNAL bool cd_pp_resample_mask_linear(cd_pp_device *d, const cd_volume *mask, const cd_grid *grid,
                                            cd_volume **out);
/* The device part of it: the labels of a uint8 mask resampled exactly as the reference does (the
 * device interpolates every label's indicator; voxels within 1e-5 of a decision are decided again on
 * the host in the reference's double arithmetic). The caller owns *out. Errors as cd_gpu_resample. */
CD_INTERNAL cd_status cd_gpu_resample_mask_linear(cd_gpu_context *ctx, const cd_volume *mask, const cd_grid *grid,
                                                  cd_volume **out, cd_error *err);
/* The recipe's normalisation of one channel (x fastest, n voxels, mask NULL or n bytes) on the
 * device. Returns false when it did not run there (no device, nothing to do, a failure: x is then
 * untouched and the caller runs the CPU reference). Thread-safe. */
CD_INTERNAL bool cd_pp_normalize(cd_pp_device *d, const cd_recipe *r, float *x, size_t n, const uint8_t *mask);

/* cd_preprocess_multi (preprocess.c) with its resampling and normalisation through dev (NULL:
 * the CPU, which is cd_preprocess_multi). What the converter calls. */
CD_INTERNAL cd_status cd_preprocess_multi_dev(const cd_recipe *r, const double target_spacing[3],
                                              const cd_volume *const *images, int nimages, const cd_volume *mask,
                                              int threads, cd_pp_device *dev, cd_sample **out, cd_error *err);

#endif
