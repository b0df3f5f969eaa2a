/* The Vulkan runtime as the op families use it (not installed): device facts, memory, one command
 * object (record, submit, wait with the timeout), kernels and their pipelines, the shader registry,
 * and the per-context state of each family. Plain C over volk; the runtime knows no op (augment/,
 * preprocess/ and nn/ own their kernels). The context's fields are the runtime's own
 * (gpu/context_impl.h): a family goes through these functions. */
#ifndef CD_GPU_IMPL_H
#define CD_GPU_IMPL_H

#include <volk.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cirrdata/gpu.h"
#include "core/internal.h"

/* ---------------------------------------------------------------- the context */

/* Serialise the public calls on a context: every function below is called with the lock held
 * (except the device facts, which do not change). */
CD_INTERNAL void cd_vk_lock(cd_gpu_context *ctx);
CD_INTERNAL void cd_vk_unlock(cd_gpu_context *ctx);
/* CD_OK, or CD_ERR_IO when the device was lost (or a submission timed out): every later call fails. */
CD_INTERNAL cd_status cd_vk_usable(const cd_gpu_context *ctx, cd_error *err);
/* Waits until the device is idle (before freeing what a submission that timed out may still use; a
 * hung device ends in VK_ERROR_DEVICE_LOST, after which freeing is allowed). */
CD_INTERNAL void cd_vk_wait_idle(cd_gpu_context *ctx);

/* Device facts. */
CD_INTERNAL const char *cd_vk_name(const cd_gpu_context *ctx);
CD_INTERNAL const VkPhysicalDeviceLimits *cd_vk_limits(const cd_gpu_context *ctx);
/* maxMemoryAllocationSize (Vulkan 1.1), else the largest heap. */
CD_INTERNAL VkDeviceSize cd_vk_max_allocation(const cd_gpu_context *ctx);
/* shaderFloat64 enabled and wanted (CIRRDATA_VK_NO_FLOAT64=1 turns it off): the resampler's fp64 variant. */
CD_INTERNAL bool cd_vk_float64(const cd_gpu_context *ctx);
/* storageBuffer16BitAccess enabled: the inference executor's float16 storage. */
CD_INTERNAL bool cd_vk_storage16(const cd_gpu_context *ctx);

/* The frame of a public call that runs batches: takes the lock and resets the call's figures
 * (cd_gpu_last_timings); cd_vk_call_end sets its total time (since t0, from cd_now_ms) and releases
 * the lock. A batch that completed adds its kernel time and the bytes it moved in and out. */
CD_INTERNAL void cd_vk_call_begin(cd_gpu_context *ctx);
CD_INTERNAL void cd_vk_call_end(cd_gpu_context *ctx, double t0);
CD_INTERNAL void cd_vk_count_batch(cd_gpu_context *ctx, double kernel_ms, uint64_t bytes_in, uint64_t bytes_out);
/* Bytes one batch's buffers may take in all: one allocation (maxMemoryAllocationSize), and the
 * memory limit (half of it in staging mode, where every byte has a host-side twin). */
CD_INTERNAL uint64_t cd_vk_batch_budget(const cd_gpu_context *ctx);

/* Fails with a message naming the call and the VkResult (out-of-memory -> CD_ERR_NOMEM, device lost
 * -> CD_ERR_IO and marks the context lost, others CD_ERR_INTERNAL). ctx may be NULL. */
CD_INTERNAL cd_status cd_vk_fail(cd_gpu_context *ctx, cd_error *err, VkResult r, const char *what);
CD_INTERNAL const char *cd_vk_result_name(VkResult r);

/* Process-wide counters (cd_gpu_process_stats): a command buffer that completed; `items` of the
 * current call computed by the C reference (also added to the call's cpu_fallback). */
CD_INTERNAL void cd_vk_count_submission(void);
CD_INTERNAL void cd_vk_count_fallback(cd_gpu_context *ctx, int items);

/* ---------------------------------------------------------------- memory */

/* Memory kinds: one VkDeviceMemory block and one VkBuffer over it per kind, sub-allocated by a bump
 * pointer that is reset for every batch (a batch's buffers all live exactly as long as the batch). */
typedef enum cd_vk_kind {
    CD_VK_DEVICE = 0, /* what the kernels read and write; host-visible too in shared mode */
    CD_VK_UPLOAD,     /* staging: host writes, copied to CD_VK_DEVICE (staging mode only) */
    CD_VK_READBACK,   /* staging: copied from CD_VK_DEVICE, host reads (staging mode only) */
    CD_VK_NKINDS
} cd_vk_kind;

/* A sub-allocated range of one arena. */
typedef struct cd_vk_range {
    cd_vk_kind kind;
    VkDeviceSize offset, size;
} cd_vk_range;

/* Makes every arena able to hold `need[kind]` bytes (growing a block means freeing and reallocating
 * it: only between batches) and resets the bump pointers. Respects the memory limit, the heap sizes
 * and maxMemoryAllocationSize; CD_ERR_NOMEM with a message otherwise. */
CD_INTERNAL cd_status cd_vk_arenas_reserve(cd_gpu_context *ctx, const VkDeviceSize need[CD_VK_NKINDS], cd_error *err);
/* Bump allocation of size bytes (at least 16, aligned for storage-buffer descriptors). */
CD_INTERNAL cd_vk_range cd_vk_alloc(cd_gpu_context *ctx, cd_vk_kind kind, VkDeviceSize size);
/* Bytes an allocation of `size` takes in an arena (size rounded up to the alignment). */
CD_INTERNAL VkDeviceSize cd_vk_padded(const cd_gpu_context *ctx, VkDeviceSize size);
/* Host pointer of a range of a host-visible arena. */
CD_INTERNAL void *cd_vk_host(cd_gpu_context *ctx, cd_vk_range r);
/* The buffer over an arena's block (for copies between kinds). */
CD_INTERNAL VkBuffer cd_vk_arena_buffer(const cd_gpu_context *ctx, cd_vk_kind kind);

/* A buffer that lives outside the per-batch arenas (the inference executor's weights and activations):
 * its own VkDeviceMemory, of the memory type the arenas would use for `kind` (CD_VK_DEVICE follows
 * the shared/staging mode), persistently mapped when host-visible. Counted with the arenas against
 * the memory limit; CD_ERR_NOMEM with a message when it does not fit. */
typedef struct cd_vk_buffer {
    VkDeviceMemory memory;
    VkBuffer buffer;
    VkDeviceSize size;
    void *mapped;
} cd_vk_buffer;
CD_INTERNAL cd_status cd_vk_buffer_create(cd_gpu_context *ctx, cd_vk_kind kind, VkDeviceSize size, cd_vk_buffer *out,
                                          cd_error *err);
CD_INTERNAL void cd_vk_buffer_destroy(cd_gpu_context *ctx, cd_vk_buffer *b);

/* ---------------------------------------------------------------- shaders */

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

/* ---------------------------------------------------------------- kernels */

/* A kernel: `bindings` storage buffers (bindings 0..n-1 of set 0) and push_bytes of push constants
 * (its layouts), a pipeline and one descriptor set of its own. */
typedef struct cd_vk_kernel {
    VkDescriptorSetLayout set_layout;
    VkPipelineLayout layout;
    VkPipeline pipeline; /* VK_NULL_HANDLE for layouts alone (cd_vk_layout_create) */
    VkDescriptorPool pool;
    VkDescriptorSet set; /* its own set (cd_vk_kernel_create), VK_NULL_HANDLE for layouts alone */
    uint32_t bindings, push_bytes, local_size;
} cd_vk_kernel;

/* The layouts, a pipeline of `shader` with the workgroup size as specialization constant 0, and the
 * kernel's own descriptor set. */
CD_INTERNAL cd_status cd_vk_kernel_create(cd_gpu_context *ctx, cd_vk_kernel *k, cd_shader_id shader, uint32_t bindings,
                                          uint32_t push_bytes, uint32_t local_size, cd_error *err);
/* The layouts alone: pipelines come from cd_vk_pipeline_create, sets from cd_vk_set_alloc. */
CD_INTERNAL cd_status cd_vk_layout_create(cd_gpu_context *ctx, cd_vk_kernel *k, uint32_t bindings, uint32_t push_bytes,
                                          cd_error *err);
/* Destroys what the kernel holds (its pipeline included; not those of cd_vk_pipeline_create). */
CD_INTERNAL void cd_vk_kernel_destroy(cd_gpu_context *ctx, cd_vk_kernel *k);
/* A pipeline of `shader` on k's layouts, with specialization constants 0..nspec-1 = spec[] (32-bit
 * each), built through the context's pipeline cache (written back when the context goes). */
CD_INTERNAL cd_status cd_vk_pipeline_create(cd_gpu_context *ctx, const cd_vk_kernel *k, cd_shader_id shader,
                                            const uint32_t *spec, uint32_t nspec, VkPipeline *out, cd_error *err);
CD_INTERNAL void cd_vk_pipeline_destroy(cd_gpu_context *ctx, VkPipeline pipeline);
/* Points binding i of the kernel's own set at ranges[i] (all in CD_VK_DEVICE). */
CD_INTERNAL void cd_vk_kernel_bind(cd_gpu_context *ctx, cd_vk_kernel *k, const cd_vk_range *ranges);

/* Descriptor sets beyond the kernels' own (one per dispatch of a recorded command buffer): a pool of
 * `sets` sets with `descriptors` storage-buffer descriptors in all, and a set of k's layout from it
 * with binding i pointing at bindings[i]. */
CD_INTERNAL cd_status cd_vk_sets_create(cd_gpu_context *ctx, uint32_t sets, uint32_t descriptors, VkDescriptorPool *out,
                                        cd_error *err);
CD_INTERNAL void cd_vk_sets_destroy(cd_gpu_context *ctx, VkDescriptorPool *pool);
CD_INTERNAL cd_status cd_vk_set_alloc(cd_gpu_context *ctx, VkDescriptorPool pool, const cd_vk_kernel *k,
                                      const VkDescriptorBufferInfo *bindings, VkDescriptorSet *out, cd_error *err);

/* ---------------------------------------------------------------- op families */

/* An op family (augment's warp and intensity ops, preprocessing, inference): the runtime knows none of
 * them. Each keeps its per-context state (its kernels) in a block of state_bytes that the context
 * allocates zeroed and hands to init on the family's first use in that context, and to destroy (the
 * device idle) when the context goes. A family is identified by the address of its (static)
 * descriptor. */
typedef struct cd_vk_family {
    const char *name;
    size_t state_bytes;
    cd_status (*init)(cd_gpu_context *ctx, void *state, cd_error *err);
    void (*destroy)(cd_gpu_context *ctx, void *state);
} cd_vk_family;
/* Makes *state the family's state in ctx, initialised on first use. A failed init is undone (its
 * destroy runs on the partial state) and tried again on the next call. */
CD_INTERNAL cd_status cd_vk_family_state(cd_gpu_context *ctx, const cd_vk_family *family, void **state, cd_error *err);
/* The family's state when it was initialised in ctx, else NULL (never initialises). */
CD_INTERNAL void *cd_vk_family_find(const cd_gpu_context *ctx, const cd_vk_family *family);

/* ---------------------------------------------------------------- commands */

/* The one way work reaches the queue: a command buffer with its fence and two timestamp queries.
 * The context owns one for its batches (cd_vk_batch); a family may create its own, e.g. to record
 * once and submit many times. Record, then submit and wait: the wait gives up after
 * CIRRDATA_VK_TIMEOUT_S (default 120 s), after which the context is unusable (the work may still
 * be pending: nothing it uses may be freed before cd_vk_wait_idle). */
typedef struct cd_vk_cmd {
    cd_gpu_context *ctx;
    VkCommandBuffer cb;
    VkFence fence;
    VkQueryPool queries; /* VK_NULL_HANDLE when the queue has no timestamps */
    uint32_t stamps;     /* timestamps recorded since begin (bit per query) */
    bool recording;
} cd_vk_cmd;
CD_INTERNAL cd_status cd_vk_cmd_create(cd_gpu_context *ctx, cd_vk_cmd *c, cd_error *err);
/* After the device went idle (or the work completed). */
CD_INTERNAL void cd_vk_cmd_destroy(cd_vk_cmd *c);
/* The context's command object for one batch at a time. */
CD_INTERNAL cd_vk_cmd *cd_vk_batch(cd_gpu_context *ctx);
/* Resets and begins recording (and resets the timestamps); `reuse`: to be submitted more than once. */
CD_INTERNAL cd_status cd_vk_cmd_begin(cd_vk_cmd *c, bool reuse, cd_error *err);
CD_INTERNAL cd_status cd_vk_cmd_end(cd_vk_cmd *c, cd_error *err);
/* Ends the recording if needed, submits, waits (CD_ERR_IO naming `what` after the timeout) and, when
 * both timestamps were recorded and kernel_ms is not NULL, gives the milliseconds between them. */
CD_INTERNAL cd_status cd_vk_cmd_submit_wait(cd_vk_cmd *c, const char *what, double *kernel_ms, cd_error *err);
/* The two halves of cd_vk_cmd_submit_wait, for several command objects in flight at once: each wait
 * has the whole timeout from the moment it starts (a pass submitted in pieces and waited piece by
 * piece fails only when one piece takes longer than the timeout after the one before it finished). */
CD_INTERNAL cd_status cd_vk_cmd_submit(cd_vk_cmd *c, cd_error *err);
CD_INTERNAL cd_status cd_vk_cmd_wait(cd_vk_cmd *c, const char *what, double *kernel_ms, cd_error *err);

/* Recording. A global memory barrier between two stages (the only kind the families need). */
CD_INTERNAL void cd_vk_cmd_barrier(cd_vk_cmd *c, VkPipelineStageFlags src_stage, VkAccessFlags src_access,
                                   VkPipelineStageFlags dst_stage, VkAccessFlags dst_access);
/* Timestamp query 0 or 1 after `stage`. */
CD_INTERNAL void cd_vk_cmd_timestamp(cd_vk_cmd *c, VkPipelineStageFlagBits stage, uint32_t query);
CD_INTERNAL void cd_vk_cmd_copy(cd_vk_cmd *c, VkBuffer src, VkBuffer dst, uint32_t n, const VkBufferCopy *regions);
/* Binds k's pipeline (or `pipeline` when not VK_NULL_HANDLE) and k's own set (or `set`). */
CD_INTERNAL void cd_vk_cmd_bind(cd_vk_cmd *c, const cd_vk_kernel *k, VkPipeline pipeline, VkDescriptorSet set);
/* k's push constants (k->push_bytes of push). */
CD_INTERNAL void cd_vk_cmd_push(cd_vk_cmd *c, const cd_vk_kernel *k, const void *push);
CD_INTERNAL void cd_vk_cmd_dispatch(cd_vk_cmd *c, uint32_t gx, uint32_t gy, uint32_t gz);

#endif
