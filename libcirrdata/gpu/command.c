/* The command object (gpu_impl.h: cd_vk_cmd): a command buffer of the context's pool, its fence and
 * two timestamp queries; recording helpers; submission with the one timeout of the runtime. */
#include <stdlib.h>
#include <string.h>

#include "gpu/context_impl.h"

cd_status cd_vk_cmd_create(cd_gpu_context *ctx, cd_vk_cmd *c, cd_error *err) {
    memset(c, 0, sizeof *c);
    c->ctx = ctx;
    VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                       .commandPool = ctx->command_pool,
                                       .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                       .commandBufferCount = 1};
    VkResult r = ctx->vk.vkAllocateCommandBuffers(ctx->device, &cai, &c->cb);
    if (r != VK_SUCCESS) {
        c->cb = VK_NULL_HANDLE;
        return cd_vk_fail(ctx, err, r, "vkAllocateCommandBuffers");
    }
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    r = ctx->vk.vkCreateFence(ctx->device, &fci, NULL, &c->fence);
    if (r != VK_SUCCESS) {
        c->fence = VK_NULL_HANDLE;
        return cd_vk_fail(ctx, err, r, "vkCreateFence");
    }
    if (ctx->timestamp_bits) { /* without them the kernels' time is reported as 0 */
        VkQueryPoolCreateInfo qpi = {
            .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO, .queryType = VK_QUERY_TYPE_TIMESTAMP, .queryCount = 2};
        if (ctx->vk.vkCreateQueryPool(ctx->device, &qpi, NULL, &c->queries) != VK_SUCCESS) c->queries = VK_NULL_HANDLE;
    }
    return CD_OK;
}

void cd_vk_cmd_destroy(cd_vk_cmd *c) {
    cd_gpu_context *ctx = c->ctx;
    if (!ctx || !ctx->device) return;
    if (c->queries) ctx->vk.vkDestroyQueryPool(ctx->device, c->queries, NULL);
    if (c->fence) ctx->vk.vkDestroyFence(ctx->device, c->fence, NULL);
    if (c->cb) ctx->vk.vkFreeCommandBuffers(ctx->device, ctx->command_pool, 1, &c->cb);
    memset(c, 0, sizeof *c);
}

cd_vk_cmd *cd_vk_batch(cd_gpu_context *ctx) { return &ctx->batch; }

cd_status cd_vk_cmd_begin(cd_vk_cmd *c, bool reuse, cd_error *err) {
    cd_gpu_context *ctx = c->ctx;
    c->recording = false;
    c->stamps = 0;
    VkResult r = ctx->vk.vkResetCommandBuffer(c->cb, 0);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkResetCommandBuffer");
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = reuse ? 0 : VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    r = ctx->vk.vkBeginCommandBuffer(c->cb, &bi);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkBeginCommandBuffer");
    c->recording = true;
    if (c->queries) ctx->vk.vkCmdResetQueryPool(c->cb, c->queries, 0, 2);
    return CD_OK;
}

cd_status cd_vk_cmd_end(cd_vk_cmd *c, cd_error *err) {
    if (!c->recording) return CD_OK;
    c->recording = false;
    VkResult r = c->ctx->vk.vkEndCommandBuffer(c->cb);
    return r == VK_SUCCESS ? CD_OK : cd_vk_fail(c->ctx, err, r, "vkEndCommandBuffer");
}

void cd_vk_cmd_barrier(cd_vk_cmd *c, VkPipelineStageFlags src_stage, VkAccessFlags src_access,
                       VkPipelineStageFlags dst_stage, VkAccessFlags dst_access) {
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = src_access, .dstAccessMask = dst_access};
    c->ctx->vk.vkCmdPipelineBarrier(c->cb, src_stage, dst_stage, 0, 1, &mb, 0, NULL, 0, NULL);
}

void cd_vk_cmd_timestamp(cd_vk_cmd *c, VkPipelineStageFlagBits stage, uint32_t query) {
    if (!c->queries) return;
    c->ctx->vk.vkCmdWriteTimestamp(c->cb, stage, c->queries, query);
    c->stamps |= 1u << query;
}

void cd_vk_cmd_copy(cd_vk_cmd *c, VkBuffer src, VkBuffer dst, uint32_t n, const VkBufferCopy *regions) {
    c->ctx->vk.vkCmdCopyBuffer(c->cb, src, dst, n, regions);
}

void cd_vk_cmd_bind(cd_vk_cmd *c, const cd_vk_kernel *k, VkPipeline pipeline, VkDescriptorSet set) {
    c->ctx->vk.vkCmdBindPipeline(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline ? pipeline : k->pipeline);
    const VkDescriptorSet s = set ? set : k->set;
    c->ctx->vk.vkCmdBindDescriptorSets(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, k->layout, 0, 1, &s, 0, NULL);
}

void cd_vk_cmd_push(cd_vk_cmd *c, const cd_vk_kernel *k, const void *push) {
    c->ctx->vk.vkCmdPushConstants(c->cb, k->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, k->push_bytes, push);
}

void cd_vk_cmd_dispatch(cd_vk_cmd *c, uint32_t gx, uint32_t gy, uint32_t gz) {
    c->ctx->vk.vkCmdDispatch(c->cb, gx, gy, gz);
}

static uint64_t timeout_ns(void) {
    const char *v = getenv("CIRRDATA_VK_TIMEOUT_S");
    double s = v && *v ? atof(v) : 120.0;
    if (!(s > 0) || s > 1e9) s = 120.0;
    return (uint64_t)(s * 1e9);
}

cd_status cd_vk_cmd_submit(cd_vk_cmd *c, cd_error *err) {
    cd_gpu_context *ctx = c->ctx;
    cd_status st = cd_vk_cmd_end(c, err);
    if (st != CD_OK) return st;
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &c->cb};
    VkResult r = ctx->vk.vkQueueSubmit(ctx->queue, 1, &si, c->fence);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkQueueSubmit");
    return CD_OK;
}

cd_status cd_vk_cmd_submit_wait(cd_vk_cmd *c, const char *what, double *kernel_ms, cd_error *err) {
    if (kernel_ms) *kernel_ms = 0;
    cd_status st = cd_vk_cmd_submit(c, err);
    return st == CD_OK ? cd_vk_cmd_wait(c, what, kernel_ms, err) : st;
}

cd_status cd_vk_cmd_wait(cd_vk_cmd *c, const char *what, double *kernel_ms, cd_error *err) {
    cd_gpu_context *ctx = c->ctx;
    if (kernel_ms) *kernel_ms = 0;
    VkResult r = ctx->vk.vkWaitForFences(ctx->device, 1, &c->fence, VK_TRUE, timeout_ns());
    if (r == VK_TIMEOUT) {
        ctx->lost = true; /* the command buffer is still pending: nothing it uses can be reused */
        return cd_fail(err, CD_ERR_IO,
                       "Vulkan: %s did not finish within the timeout (CIRRDATA_VK_TIMEOUT_S, default 120 s) on %s; "
                       "the context is unusable",
                       what, ctx->info.name);
    }
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkWaitForFences");
    cd_vk_count_submission();
    r = ctx->vk.vkResetFences(ctx->device, 1, &c->fence);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkResetFences");
    if (kernel_ms && c->queries && c->stamps == 3u) {
        uint64_t ts[2];
        r = ctx->vk.vkGetQueryPoolResults(ctx->device, c->queries, 0, 2, sizeof ts, ts, sizeof ts[0],
                                          VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        if (r == VK_SUCCESS)
            *kernel_ms = (double)((ts[1] - ts[0]) & ctx->timestamp_mask) * ctx->timestamp_ns * 1e-6;
        else if (r == VK_ERROR_DEVICE_LOST)
            return cd_vk_fail(ctx, err, r, "vkGetQueryPoolResults");
    }
    return CD_OK;
}
