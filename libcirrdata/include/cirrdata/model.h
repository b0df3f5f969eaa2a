/* cirrdata/model.h — inference of image classifiers (the cirrhosis staging networks) from a
 * safetensors file, with a plain C executor or Vulkan compute on any GPU.
 *
 * A model file is safetensors whose metadata carries the architecture ("cirrdata.arch", e.g.
 * "resnet18"), the class count and the graph ("cirrdata.graph", schemas/model-graph.md), as written by
 * tools/scripts/export_weights.py from a PyTorch checkpoint. Batch norm is folded into the convolutions at
 * load. Outputs equal PyTorch eval() to max|diff| / max|ref| <= 1e-4 (tests/python/test_model_torch.py;
 * 1e-2 with the Vulkan fp16 storage option).
 *
 * Ownership: cd_model_open returns a model the caller frees with cd_model_close; it keeps its own
 * copy of the parameters (the file is closed before cd_model_open returns). Input and output arrays
 * belong to the caller.
 *
 * Thread safety: one thread at a time per model (calls on one model are serialised by a lock). */
#ifndef CIRRDATA_MODEL_H
#define CIRRDATA_MODEL_H

#include "cirrdata/api.h"
#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/device.h"
#include "cirrdata/gpu.h"
#include "cirrdata/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cd_model cd_model;

/* Options of cd_model_open; all-zero (or NULL) means the defaults: CPU, all online CPUs. */
typedef struct cd_model_options {
    cd_device device;          /* cirrdata/device.h: CD_DEVICE_CPU (the C executor), CD_DEVICE_VULKAN
                                        (Vulkan compute) or CD_DEVICE_AUTO; one batch (call) is the item
                                        of the device policy's fallbacks */
    int threads;               /* CPU executor threads; 0 = online CPUs */
    bool fp16;                 /* Vulkan: store weights and activations as float16 where the device
                                        has 16-bit storage buffers (storageBuffer16BitAccess, Vulkan 1.1);
                                        arithmetic, biases, input and logits stay float32. Logits then
                                        differ from float32's by ~1e-3 of the largest (one 2^-11 rounding
                                        per stored value; a value beyond +-65504 becomes infinite).
                                        cd_model_device_name ends in "(fp16)" when used, "(fp32)"
                                        otherwise. Ignored on the CPU */
    const cd_gpu_options *gpu; /* Vulkan context options (NULL: defaults) */
    uint64_t max_arena_bytes;  /* cap on activation memory per call; 0 = 4 GiB */
} cd_model_options;

/* The defaults (all zero): the CPU, all online CPUs, float32, the default arena cap. */
CD_API void cd_model_options_init(cd_model_options *o);

CD_API cd_status cd_model_open(const char *path, const cd_model_options *options, cd_model **out, cd_error *err);
/* Frees the model; NULL is a no-op. Safe after any error: when a Vulkan pass did not finish (a
 * timeout, CIRRDATA_VK_TIMEOUT_S) it first waits for the device to finish it (or to report itself
 * lost), since the pass still uses the memory being freed. */
CD_API void cd_model_close(cd_model *m);

/* Architecture name from the file's metadata ("resnet18", "vgg19", ...). */
CD_API const char *cd_model_arch(const cd_model *m);
CD_API int cd_model_classes(const cd_model *m);
CD_API int cd_model_in_channels(const cd_model *m);
/* The executor in use now: CD_DEVICE_CPU or CD_DEVICE_VULKAN (CPU after the device was given up). */
CD_API cd_device cd_model_device_used(const cd_model *m);
/* Short description of the executor ("cpu (2 threads)", "vulkan: NVIDIA H200 (fp32)"). */
CD_API const char *cd_model_device_name(const cd_model *m);

/* Runs the network on x: n images of (in_channels, h, w) float32, C-order. Writes n * classes logits
 * (the last layer's outputs, before softmax) to `logits`. The first call for a given (n, h, w) plans
 * the activation memory (and on Vulkan records the command buffer); later calls with the same shape
 * reuse it. On Vulkan, a pass that does not finish within CIRRDATA_VK_TIMEOUT_S seconds (default 120)
 * or a lost device returns CD_ERR_IO, and so does every later call: close the model and open it
 * again. */
CD_API cd_status cd_model_predict(cd_model *m, const float *x, int64_t n, int64_t h, int64_t w, float *logits,
                                  cd_error *err);

#ifdef __cplusplus
}
#endif
#endif
