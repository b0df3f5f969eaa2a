/* The Vulkan context's own state, for the runtime's files in gpu/ alone: the op families use the
 * functions of gpu/gpu_impl.h. */
#ifndef CD_GPU_CONTEXT_IMPL_H
#define CD_GPU_CONTEXT_IMPL_H

#include <pthread.h>

#include "gpu/gpu_impl.h"

typedef struct cd_vk_arena {
    VkDeviceMemory memory;
    VkBuffer buffer;
    VkDeviceSize capacity, used;
    uint32_t type_index;
    uint32_t heap_index;
    void *mapped; /* host-visible kinds: persistently mapped */
} cd_vk_arena;

#define CD_VK_MAX_FAMILIES 8

struct cd_gpu_context {
    pthread_mutex_t lock; /* serialises the public calls */
    VkInstance instance;
    VkDebugUtilsMessengerEXT messenger;
    PFN_vkDestroyDebugUtilsMessengerEXT destroy_messenger;
    bool validation;
    pthread_mutex_t vlock; /* the debug callback may run on any thread */
    uint64_t vcount;
    char vfirst[1024];

    VkPhysicalDevice physical;
    VkPhysicalDeviceProperties props;
    VkPhysicalDeviceMemoryProperties memprops;
    VkDeviceSize max_allocation; /* maxMemoryAllocationSize (Vulkan 1.1), else the heap size */
    cd_gpu_device_info info;
    VkDevice device;
    struct VolkDeviceTable vk;
    VkQueue queue;
    uint32_t queue_family;
    bool shared;    /* kernels use host-visible memory directly */
    bool lost;      /* device lost (or a submission timed out): every later call fails */
    bool float64;   /* shaderFloat64 enabled and used by the resampler (CIRRDATA_VK_NO_FLOAT64=1 turns it off) */
    bool storage16; /* storageBuffer16BitAccess enabled on the device (float16 storage of the inference executor) */

    cd_vk_arena arena[CD_VK_NKINDS];
    uint64_t memory_limit; /* bytes all arenas together may hold */
    uint64_t held_bytes;   /* persistent buffers (cd_vk_buffer_create), counted against memory_limit */

    VkCommandPool command_pool; /* of every cd_vk_cmd (used under the lock) */
    cd_vk_cmd batch;            /* the command object of a batch (cd_vk_batch) */
    uint32_t timestamp_bits;    /* timestampValidBits of the queue (0: no timestamps) */
    double timestamp_ns;        /* ns per tick */
    uint64_t timestamp_mask;

    VkPipelineCache cache;
    bool cache_hit;
    bool cache_dirty;      /* pipelines built since the cache file was read: written back at destroy */
    char cache_path[1024]; /* empty: no persistence */

    /* The op families' per-context state (their kernels), created on first use (cd_vk_family_state). */
    struct {
        const struct cd_vk_family *family;
        void *state;
    } families[CD_VK_MAX_FAMILIES];
    int nfamilies;
    cd_gpu_timings last;
};

/* Frees an arena's block and buffer (memory.c). */
CD_INTERNAL void cd_vk_arena_free(cd_gpu_context *ctx, cd_vk_arena *a);
/* The pipeline cache: opened from its file (if any, and this device's) at creation; written back (when
 * pipelines were built and the device was not lost) and destroyed when the context goes (pipeline.c). */
CD_INTERNAL void cd_vk_cache_open(cd_gpu_context *ctx, const cd_gpu_options *options);
CD_INTERNAL void cd_vk_cache_close(cd_gpu_context *ctx);

#endif
