/* Internal pieces of the Vulkan runtime (not installed): the context, memory arenas, and the helpers
 * the kernels use. Plain C over volk, no framework. */
#ifndef CD_GPU_IMPL_H
#define CD_GPU_IMPL_H

#include <volk.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/gpu.h"
#include "core/internal.h"

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

    cd_vk_kernel warp;
    cd_vk_kernel ik[7]; /* the intensity kernels (aug_intensity.c) */
    cd_vk_kernel pp[3]; /* the preprocessing kernels: resample, reduce, normalize (preprocess.c) */
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

/* Builds a compute pipeline from embedded SPIR-V with `bindings` storage buffers (bindings 0..n-1 of
 * set 0), push_bytes of push constants and the workgroup size as specialization constant 0. */
CD_INTERNAL cd_status cd_vk_kernel_create(cd_gpu_context *ctx, cd_vk_kernel *k, const uint32_t *spirv, size_t spirv_bytes,
                                          uint32_t bindings, uint32_t push_bytes, uint32_t local_size, cd_error *err);
CD_INTERNAL void cd_vk_kernel_destroy(cd_gpu_context *ctx, cd_vk_kernel *k);
/* Points binding i of the kernel's set at ranges[i] (all in CD_VK_DEVICE). */
CD_INTERNAL void cd_vk_kernel_bind(cd_gpu_context *ctx, cd_vk_kernel *k, const cd_vk_range *ranges);

/* Command buffer of a batch: begin (resets it and the timestamp queries), submit and wait. */
CD_INTERNAL cd_status cd_vk_begin(cd_gpu_context *ctx, cd_error *err);
CD_INTERNAL cd_status cd_vk_submit_wait(cd_gpu_context *ctx, double *kernel_ms, cd_error *err);
/* A global memory barrier between two stages (the only kind a batch needs). */
CD_INTERNAL void cd_vk_barrier(cd_gpu_context *ctx, VkPipelineStageFlags src_stage, VkAccessFlags src_access,
                               VkPipelineStageFlags dst_stage, VkAccessFlags dst_access);
CD_INTERNAL void cd_vk_timestamp(cd_gpu_context *ctx, uint32_t query);

/* Creates the warp kernel of a fresh context (aug_spatial.c). */
CD_INTERNAL cd_status cd_gpu_warp_init(cd_gpu_context *ctx, cd_error *err);
/* Creates the preprocessing kernels of a fresh context (preprocess.c). */
CD_INTERNAL cd_status cd_gpu_preprocess_init(cd_gpu_context *ctx, cd_error *err);

/* ---- the intensity stage (aug_intensity.c), also recorded after the warp by cd_gpu_augment ---- */

/* Ops a sample's intensity stage runs (bits of the first word of its record in the meta buffer). */
enum {
    CD_GPU_I_NOISE = 1, CD_GPU_I_BLUR = 2, CD_GPU_I_BRIGHTNESS = 4, CD_GPU_I_CONTRAST = 8, CD_GPU_I_LOWRES = 16,
    CD_GPU_I_GAMMA_INVERT = 32, CD_GPU_I_GAMMA = 64,
    CD_GPU_I_SCRATCH = CD_GPU_I_BLUR | CD_GPU_I_LOWRES,                       /* need a second image */
    CD_GPU_I_STATS = CD_GPU_I_CONTRAST | CD_GPU_I_GAMMA_INVERT | CD_GPU_I_GAMMA /* need reductions */
};

/* One sample's intensity ops, resolved from its cd_aug_params as cd_aug_apply_intensity resolves them. */
typedef struct cd_gpu_iplan {
    bool cpu;           /* parameters the kernels do not take (non-finite, blur radius > 1023): the reference runs it */
    uint32_t flags;     /* CD_GPU_I_* */
    uint32_t radius[3]; /* blur radius per axis; 0: that axis is not blurred */
    int64_t m[3];       /* low-resolution grid */
    uint64_t meta_words; /* its record and tables in the meta buffer */
} cd_gpu_iplan;
CD_INTERNAL void cd_gpu_iplan_make(const cd_aug_params *a, const int64_t patch[3], cd_gpu_iplan *p);
/* Bytes of the statistics buffer for `rows` rows (sample x channel) of npatch voxels. */
CD_INTERNAL uint64_t cd_gpu_istats_bytes(const cd_gpu_context *ctx, uint64_t rows, uint64_t npatch);

/* The intensity stage of one command buffer: ns images of (channels, patch) float32, back to back at
 * the start of `data`, followed (when some sample needs it) by a scratch image of the same size at
 * float offset `scratch`. meta: cd_gpu_ijob_pack's words; stats: cd_gpu_istats_bytes (all CD_VK_DEVICE). */
typedef struct cd_gpu_ijob {
    uint32_t ns, channels;
    int64_t patch[3];
    const cd_aug_params *const *params; /* ns each */
    const cd_gpu_iplan *const *plans;
    uint32_t ops; /* union of the plans' flags */
    cd_vk_range meta, data, stats;
    uint32_t scratch;
} cd_gpu_ijob;
CD_INTERNAL void cd_gpu_ijob_pack(const cd_gpu_ijob *j, uint32_t *meta);
/* Records the dispatches (barriers between dependent ones; the caller puts one before and after).
 * Returns the float offset in j->data where the result lies: 0 or j->scratch. */
CD_INTERNAL uint32_t cd_gpu_ijob_record(cd_gpu_context *ctx, const cd_gpu_ijob *j);
/* Creates the intensity kernels of a fresh context. */
CD_INTERNAL cd_status cd_gpu_intensity_init(cd_gpu_context *ctx, cd_error *err);
/* The warp batch driver of cd_gpu_aug_spatial (aug_spatial.c); with `intensity`, each sample's
 * intensity ops follow its warp in the same command buffer (cd_gpu_augment). `fn` names the caller
 * in messages. Takes the context's lock. */
CD_INTERNAL cd_status cd_gpu_warp_batch(cd_gpu_context *ctx, const cd_aug_params *params, int n, const cd_gpu_spatial_item *items,
                                        uint32_t channels, const int64_t patch[3], bool intensity, const char *fn, cd_error *err);

#endif
