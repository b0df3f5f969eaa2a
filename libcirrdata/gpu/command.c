/* The command buffer of a batch: begin, barriers and timestamps, submission with the runtime's
 * timeout. */
#include <stdlib.h>

#include "gpu/context_impl.h"

cd_status cd_vk_begin(cd_gpu_context *ctx, cd_error *err) {
    VkResult r = ctx->vk.vkResetCommandBuffer(ctx->cmd, 0);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkResetCommandBuffer");
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    r = ctx->vk.vkBeginCommandBuffer(ctx->cmd, &bi);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkBeginCommandBuffer");
    if (ctx->queries) ctx->vk.vkCmdResetQueryPool(ctx->cmd, ctx->queries, 0, 2);
    return CD_OK;
}

void cd_vk_timestamp(cd_gpu_context *ctx, uint32_t query) {
    if (ctx->queries) ctx->vk.vkCmdWriteTimestamp(ctx->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, ctx->queries, query);
}

void cd_vk_barrier(cd_gpu_context *ctx, VkPipelineStageFlags src_stage, VkAccessFlags src_access, VkPipelineStageFlags dst_stage,
                   VkAccessFlags dst_access) {
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = src_access, .dstAccessMask = dst_access};
    ctx->vk.vkCmdPipelineBarrier(ctx->cmd, src_stage, dst_stage, 0, 1, &mb, 0, NULL, 0, NULL);
}

static uint64_t timeout_ns(void) {
    const char *v = getenv("CIRRDATA_VK_TIMEOUT_S");
    double s = v && *v ? atof(v) : 120.0;
    if (!(s > 0) || s > 1e9) s = 120.0;
    return (uint64_t)(s * 1e9);
}

cd_status cd_vk_submit_wait(cd_gpu_context *ctx, double *kernel_ms, cd_error *err) {
    *kernel_ms = 0;
    VkResult r = ctx->vk.vkEndCommandBuffer(ctx->cmd);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkEndCommandBuffer");
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &ctx->cmd};
    r = ctx->vk.vkQueueSubmit(ctx->queue, 1, &si, ctx->fence);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkQueueSubmit");
    r = ctx->vk.vkWaitForFences(ctx->device, 1, &ctx->fence, VK_TRUE, timeout_ns());
    if (r == VK_TIMEOUT) {
        ctx->lost = true; /* the command buffer is still pending: it cannot be reused */
        return cd_fail(err, CD_ERR_IO, "Vulkan: a batch did not finish within the timeout (CIRRDATA_VK_TIMEOUT_S, default 120 s) "
                                       "on %s; the context is unusable",
                       ctx->info.name);
    }
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkWaitForFences");
    cd_vk_count_submission();
    r = ctx->vk.vkResetFences(ctx->device, 1, &ctx->fence);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkResetFences");
    if (ctx->queries) {
        uint64_t ts[2];
        r = ctx->vk.vkGetQueryPoolResults(ctx->device, ctx->queries, 0, 2, sizeof ts, ts, sizeof ts[0],
                                          VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        if (r == VK_SUCCESS) *kernel_ms = (double)((ts[1] - ts[0]) & ctx->timestamp_mask) * ctx->timestamp_ns * 1e-6;
        else if (r == VK_ERROR_DEVICE_LOST) return cd_vk_fail(ctx, err, r, "vkGetQueryPoolResults");
    }
    return CD_OK;
}
