/* Internal pieces of the Vulkan runtime (not installed): the context, memory arenas, command buffer,
 * pipelines and their cache, and the per-context state of the op families that use it. Plain C over
 * volk, no framework; the runtime knows no op (augment/, preprocess/ and nn/ own their kernels). */
#ifndef CD_GPU_IMPL_H
#define CD_GPU_IMPL_H

#include <volk.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/gpu.h"
#include "core/internal.h"

/* An embedded compute shader: SPIR-V words, their size in bytes, its name ("<file>" or
 * "<file>_<variant>"). The registry (gpu/shaders.c) holds one per entry of shaders/meson.build's list,
 * named by cd_shader_id (CD_SHADER_AUG_GAMMA, CD_SHADER_NN_ADD_FP16, ...). */
typedef struct cd_shader {
    const uint32_t *code;
    size_t bytes;
    const char *name;
} cd_shader;
#include "shader_registry.h" /* generated: enum cd_shader_id */
/* The shader `id` (never NULL for an id of the enum). */
CD_INTERNAL const cd_shader *cd_shader_get(cd_shader_id id);

/* Memory kinds: one VkDeviceMemory block and one VkBuffer over it per kind, sub-allocated by a bump
 * pointer that is reset for every batch (a batch's buffers all live exactly as long as the batch). */
typedef enum cd_vk_kind {
    CD_VK_DEVICE = 0, /* what the kernels read and write; host-visible too in shared mode */
    CD_VK_UPLOAD,     /* staging: host writes, copied to CD_VK_DEVICE (staging mode only) */
    CD_VK_READBACK,   /* staging: copied from CD_VK_DEVICE, host reads (staging mode only) */
    CD_VK_NKINDS
} cd_vk_kind;

typedef struct cd_vk_arena {
    VkDeviceMemory memory;
    VkBuffer buffer;
    VkDeviceSize capacity, used;
    uint32_t type_index;
    uint32_t heap_index;
    void *mapped; /* host-visible kinds: persistently mapped */
} cd_vk_arena;

/* A sub-allocated range of one arena. */
typedef struct cd_vk_range {
    cd_vk_kind kind;
    VkDeviceSize offset, size;
} cd_vk_range;

/* One compute pipeline with its layouts and its one descriptor set. */
typedef struct cd_vk_kernel {
    VkDescriptorSetLayout set_layout;
    VkPipelineLayout layout;
    VkPipeline pipeline;
    VkDescriptorPool pool;
    VkDescriptorSet set;
    uint32_t bindings;
    uint32_t local_size;
} cd_vk_kernel;

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
    bool shared; /* kernels use host-visible memory directly */
    bool lost;   /* device lost: every later call fails */
    bool float64; /* shaderFloat64 enabled and used by the resampler (preprocess.c; CIRRDATA_VK_NO_FLOAT64=1 turns it off) */
    bool storage16; /* storageBuffer16BitAccess enabled on the device (float16 storage of the inference executor) */

    cd_vk_arena arena[CD_VK_NKINDS];
    uint64_t memory_limit; /* bytes all arenas together may hold */
    uint64_t held_bytes;   /* persistent buffers (cd_vk_buffer_create), counted against memory_limit */

    VkCommandPool command_pool;
    VkCommandBuffer cmd;
    VkFence fence;
    VkQueryPool queries; /* 2 timestamps around the dispatches; VK_NULL_HANDLE when unsupported */
    double timestamp_ns; /* ns per tick */
    uint64_t timestamp_mask;

    VkPipelineCache cache;
    bool cache_hit;
    char cache_path[1024]; /* empty: no persistence */

    /* The op families' per-context state (their kernels), created on first use (cd_vk_family_state). */
    struct {
        const struct cd_vk_family *family;
        void *state;
    } families[CD_VK_MAX_FAMILIES];
    int nfamilies;
    bool cache_dirty; /* pipelines built since the cache file was read: written back at destroy */
    cd_gpu_timings last;
};

/* Fails with a message naming the call and the VkResult (out-of-memory -> CD_ERR_NOMEM, device lost
 * -> CD_ERR_IO and marks the context lost, others CD_ERR_INTERNAL). ctx may be NULL. */
CD_INTERNAL cd_status cd_vk_fail(cd_gpu_context *ctx, cd_error *err, VkResult r, const char *what);
CD_INTERNAL const char *cd_vk_result_name(VkResult r);

/* Process-wide counters (cd_gpu_process_stats): a command buffer that completed; `items` of the
 * current call computed by the C reference (also added to ctx->last.cpu_fallback; ctx->lock held). */
CD_INTERNAL void cd_vk_count_submission(void);
CD_INTERNAL void cd_vk_count_fallback(cd_gpu_context *ctx, int items);

/* Makes every arena able to hold `need[kind]` bytes (growing a block means freeing and reallocating
 * it: only between batches) and resets the bump pointers. Respects memory_limit, the heap sizes and
 * maxMemoryAllocationSize; CD_ERR_NOMEM with a message otherwise. */
CD_INTERNAL cd_status cd_vk_arenas_reserve(cd_gpu_context *ctx, const VkDeviceSize need[CD_VK_NKINDS], cd_error *err);
/* Bump allocation of size bytes (at least 16, aligned for storage-buffer descriptors). */
CD_INTERNAL cd_vk_range cd_vk_alloc(cd_gpu_context *ctx, cd_vk_kind kind, VkDeviceSize size);
/* Bytes an allocation of `size` takes in an arena (size rounded up to the alignment). */
CD_INTERNAL VkDeviceSize cd_vk_padded(const cd_gpu_context *ctx, VkDeviceSize size);
/* Host pointer of a range of a host-visible arena. */
CD_INTERNAL void *cd_vk_host(cd_gpu_context *ctx, cd_vk_range r);

/* A buffer that lives outside the per-batch arenas (the inference executor's weights and activations):
 * its own VkDeviceMemory, of the memory type the arenas would use for `kind` (CD_VK_DEVICE follows
 * the shared/staging mode), persistently mapped when host-visible. Counted with the arenas against
 * memory_limit; CD_ERR_NOMEM with a message when it does not fit. Call with ctx->lock held. */
typedef struct cd_vk_buffer {
    VkDeviceMemory memory;
    VkBuffer buffer;
    VkDeviceSize size;
    void *mapped;
} cd_vk_buffer;
CD_INTERNAL cd_status cd_vk_buffer_create(cd_gpu_context *ctx, cd_vk_kind kind, VkDeviceSize size, cd_vk_buffer *out,
                                          cd_error *err);
CD_INTERNAL void cd_vk_buffer_destroy(cd_gpu_context *ctx, cd_vk_buffer *b);

/* Builds a compute pipeline from an embedded shader with `bindings` storage buffers (bindings 0..n-1
 * of set 0), push_bytes of push constants and the workgroup size as specialization constant 0. */
CD_INTERNAL cd_status cd_vk_kernel_create(cd_gpu_context *ctx, cd_vk_kernel *k, cd_shader_id shader, uint32_t bindings,
                                          uint32_t push_bytes, uint32_t local_size, cd_error *err);
CD_INTERNAL void cd_vk_kernel_destroy(cd_gpu_context *ctx, cd_vk_kernel *k);

/* An op family (augment's warp, its intensity ops, preprocessing, ...): the runtime knows none of them.
 * Each keeps its per-context state (its kernels) in a block of state_bytes that the context allocates
 * zeroed and hands to init on the family's first use in that context, and to destroy (the device idle)
 * when the context goes. A family is identified by the address of its (static) descriptor. */
typedef struct cd_vk_family {
    const char *name;
    size_t state_bytes;
    cd_status (*init)(cd_gpu_context *ctx, void *state, cd_error *err);
    void (*destroy)(cd_gpu_context *ctx, void *state);
} cd_vk_family;
/* Makes *state the family's state in ctx, initialised on first use (call with ctx->lock held). A failed
 * init is undone (its destroy runs on the partial state) and tried again on the next call. */
CD_INTERNAL cd_status cd_vk_family_state(cd_gpu_context *ctx, const cd_vk_family *family, void **state, cd_error *err);
/* The family's state when it was initialised in ctx, else NULL (never initialises). */
CD_INTERNAL void *cd_vk_family_find(const cd_gpu_context *ctx, const cd_vk_family *family);
/* Points binding i of the kernel's set at ranges[i] (all in CD_VK_DEVICE). */
CD_INTERNAL void cd_vk_kernel_bind(cd_gpu_context *ctx, cd_vk_kernel *k, const cd_vk_range *ranges);

/* Command buffer of a batch: begin (resets it and the timestamp queries), submit and wait. */
CD_INTERNAL cd_status cd_vk_begin(cd_gpu_context *ctx, cd_error *err);
CD_INTERNAL cd_status cd_vk_submit_wait(cd_gpu_context *ctx, double *kernel_ms, cd_error *err);
/* A global memory barrier between two stages (the only kind a batch needs). */
CD_INTERNAL void cd_vk_barrier(cd_gpu_context *ctx, VkPipelineStageFlags src_stage, VkAccessFlags src_access,
                               VkPipelineStageFlags dst_stage, VkAccessFlags dst_access);
CD_INTERNAL void cd_vk_timestamp(cd_gpu_context *ctx, uint32_t query);

#endif
