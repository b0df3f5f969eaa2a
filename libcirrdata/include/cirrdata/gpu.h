/* cirrdata/gpu.h — the Vulkan compute path: augmentation kernels on any GPU (and on lavapipe).
 *
 * A context owns one Vulkan instance, one logical device with one compute queue, its memory (one
 * VkDeviceMemory block per kind: device-local, upload staging, readback staging, or one shared
 * host-visible block where the device sees host memory directly: lavapipe, integrated GPUs), one
 * command buffer reused for every batch, and the compute pipelines (SPIR-V compiled by glslc at build
 * time and embedded in the library; nothing is read at run time except the pipeline cache).
 *
 * Every kernel has a C reference in the CPU engine and computes the same thing (cd_gpu_resample is
 * cd_resample, cd_gpu_normalize the normalisation of cd_preprocess; see below): cd_gpu_aug_spatial
 * is cd_aug_apply_spatial (cirrdata/augment.h) for a batch, cd_gpu_aug_intensity is
 * cd_aug_apply_intensity, and cd_gpu_augment is both, fused into one command buffer per batch. Images agree with the
 * reference to about
 * 1e-7 of the data range (the same float32 lerps; positions differ by < 1e-7 voxel where the
 * reference uses double precision), masks exactly (barring a position within 1e-7 voxel of a
 * half-integer).
 *
 * Environment:
 *   CIRRDATA_VK_DEVICE=<index|name substring>  which device (default: discrete > integrated > CPU)
 *   CIRRDATA_VK_VALIDATION=1                   enable the Khronos validation layer and count its
 *                                              messages (also on when VK_INSTANCE_LAYERS names it)
 *   CIRRDATA_VK_LOADER=<path>                  the Vulkan loader library (default libvulkan.so.1)
 *   CIRRDATA_VK_PIPELINE_CACHE=0               do not read or write the pipeline cache
 *   CIRRDATA_VK_NO_FLOAT64=1                   cd_gpu_resample: positions in 32.32 fixed point even
 *                                              where the device has shaderFloat64 (for tests)
 *   XDG_CACHE_HOME                             the pipeline cache lives in $XDG_CACHE_HOME/cirrdata
 *                                              (else ~/.cache/cirrdata), one file per device and
 *                                              driver version; a bad or foreign file is a miss.
 *
 * Without a Vulkan loader, driver or device every call returns CD_ERR_UNSUPPORTED with a message;
 * the CPU path (cd_aug_apply_spatial) is always there.
 *
 * Thread safety: cd_gpu_list_devices may be called from any thread. A context may be shared by
 * threads: its calls are serialised by a lock inside it (one batch on the queue at a time); for
 * parallel batches create one context per thread. */
#ifndef CIRRDATA_GPU_H
#define CIRRDATA_GPU_H

#include "cirrdata/api.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cirrdata/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cd_gpu_context cd_gpu_context;

typedef enum cd_gpu_device_type {
    CD_GPU_OTHER = 0,
    CD_GPU_INTEGRATED = 1,
    CD_GPU_DISCRETE = 2,
    CD_GPU_VIRTUAL = 3,
    CD_GPU_CPU = 4, /* a software device such as lavapipe ("llvmpipe") */
} cd_gpu_device_type;

typedef struct cd_gpu_device_info {
    int index; /* position in the loader's list (what CIRRDATA_VK_DEVICE=<index> names) */
    char name[256];
    cd_gpu_device_type type;
    uint32_t vendor_id, device_id;
    uint32_t driver_version;        /* as the driver reports it (vendor-specific packing) */
    uint32_t api_version;           /* VK_MAKE_API_VERSION packing */
    uint64_t device_local_bytes;    /* sum of the device-local memory heaps */
    bool host_visible_device_local; /* a memory type that is both (shared memory, ReBAR) */
    bool compute;                   /* has a compute queue: usable by cirrdata */
} cd_gpu_device_info;

/* "discrete", "integrated", "cpu", "virtual" or "other". */
CD_API const char *cd_gpu_device_type_name(cd_gpu_device_type type);

/* Lists the Vulkan devices into out[0 .. min(*count, cap)) (out may be NULL with cap 0: counts only).
 * *count receives the number of devices; *selected (may be NULL) the index a context created with
 * default options would use (from CIRRDATA_VK_DEVICE or the ranking), -1 if none. Returns
 * CD_ERR_UNSUPPORTED when there is no Vulkan loader or driver, CD_ERR_ARG when CIRRDATA_VK_DEVICE
 * names no device. */
CD_API cd_status cd_gpu_list_devices(cd_gpu_device_info *out, int cap, int *count, int *selected, cd_error *err);

typedef enum cd_gpu_memory_mode {
    CD_GPU_MEMORY_AUTO = 0,   /* shared on integrated and CPU devices, staging on discrete ones */
    CD_GPU_MEMORY_SHARED = 1, /* kernels read and write host-visible memory directly */
    CD_GPU_MEMORY_STAGING = 2 /* device-local buffers, copies through host-visible staging buffers */
} cd_gpu_memory_mode;

typedef enum cd_gpu_validation {
    CD_GPU_VALIDATION_ENV = 0, /* on when CIRRDATA_VK_VALIDATION=1 or VK_INSTANCE_LAYERS names it */
    CD_GPU_VALIDATION_ON = 1,  /* on (an error if the layer is not installed) */
    CD_GPU_VALIDATION_OFF = 2
} cd_gpu_validation;

/* Options of cd_gpu_create; all-zero (or a NULL pointer) means the defaults. */
typedef struct cd_gpu_options {
    const char *device; /* "<index>" or a name substring; NULL: $CIRRDATA_VK_DEVICE, else the best */
    cd_gpu_validation validation;
    cd_gpu_memory_mode memory;
    uint64_t memory_limit;  /* bytes the context may hold on the device; 0: the memory heap's size */
    bool no_pipeline_cache; /* neither read nor write the on-disk pipeline cache */
    const char *cache_dir;  /* pipeline cache folder; NULL: $XDG_CACHE_HOME/cirrdata or ~/.cache/cirrdata */
} cd_gpu_options;

/* The defaults (all zero). */
CD_API void cd_gpu_options_init(cd_gpu_options *o);

/* Creates a context on one device. *out is NULL on failure. */
CD_API cd_status cd_gpu_create(const cd_gpu_options *options, cd_gpu_context **out, cd_error *err);
/* Waits for the device and frees everything; NULL is a no-op. */
CD_API void cd_gpu_destroy(cd_gpu_context *ctx);
/* The device the context runs on (valid until cd_gpu_destroy). */
CD_API const cd_gpu_device_info *cd_gpu_device(const cd_gpu_context *ctx);
/* True when the context uses shared (host-visible) memory rather than staging copies. */
CD_API bool cd_gpu_shared_memory(const cd_gpu_context *ctx);
/* Whether the validation layer is active, and how many warnings and errors it reported so far
 * (a test fails on any). When non-NULL, first receives the first such message (truncated). */
CD_API bool cd_gpu_validation_enabled(const cd_gpu_context *ctx);
CD_API uint64_t cd_gpu_validation_messages(cd_gpu_context *ctx, char *first, size_t first_len);
/* Totals over every context this process created, destroyed ones included (cd_gpu_process_stats).
 * Counters only grow; a caller takes differences around the work it checks. */
typedef struct cd_gpu_stats {
    uint64_t contexts;            /* contexts created */
    uint64_t submissions;         /* command buffers the device ran to completion (kernels and inference) */
    uint64_t cpu_fallback;        /* items of cd_gpu_* calls computed by the C reference instead of the
                                     device (the sum of every call's cd_gpu_timings.cpu_fallback) */
    uint64_t validation_messages; /* validation warnings and errors of every context, including those
                                     reported while a context is destroyed (objects still alive at
                                     vkDestroyDevice or vkDestroyInstance), which
                                     cd_gpu_validation_messages cannot return */
    char validation_first[512];   /* the first of them (truncated); empty when there is none */
} cd_gpu_stats;
/* Fills *out (NULL is a no-op). Thread-safe. The CLI checks validation_messages before it exits. */
CD_API void cd_gpu_process_stats(cd_gpu_stats *out);
/* ==== Advanced API ====
 * Per-context measurements for benchmarks and tests: the pipeline cache hit, the last call's times.
 * Like zstd.h's ZSTD_STATIC_LINKING_ONLY section: these declarations may change in any release
 * (signatures, struct layouts); define CIRRDATA_ADVANCED_API before including this header to use
 * them. The library and its own tools, tests and benchmarks are built with it. */
#ifdef CIRRDATA_ADVANCED_API

/* Whether the pipeline cache was loaded from disk (a hit) when the context was created. */
CD_API bool cd_gpu_pipeline_cache_hit(const cd_gpu_context *ctx);

/* Times of the last batch, for benchmarks. kernel_ms: the dispatches alone, from GPU timestamps
 * (0 when the queue has none); total_ms: the whole call, packing and unpacking on the host
 * included. */
typedef struct cd_gpu_timings {
    double kernel_ms;
    double total_ms;
    uint64_t bytes_in, bytes_out; /* bytes sent to and read back from the device */
    int batches;                  /* command buffers submitted (more than one when a batch was split) */
    int cpu_fallback;             /* items computed by the C reference (transforms outside the GPU's range) */
} cd_gpu_timings;
CD_API void cd_gpu_last_timings(const cd_gpu_context *ctx, cd_gpu_timings *out);

#endif /* CIRRDATA_ADVANCED_API */

#ifdef __cplusplus
}
#endif
#endif
