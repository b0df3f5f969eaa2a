/* The runtime's device memory: the per-batch arenas (one block and buffer per kind, bump-allocated,
 * reset for every batch) and the persistent buffers of the inference executor, both counted against
 * the context's memory limit. */
#include <stdlib.h>
#include <string.h>

#include "gpu/context_impl.h"

/* A memory type allowed by `bits` with all of `required`, preferring the most of `preferred`. */
static int find_memory_type(const VkPhysicalDeviceMemoryProperties *m, uint32_t bits, VkMemoryPropertyFlags required,
                            VkMemoryPropertyFlags preferred) {
    int best = -1, best_score = -1;
    for (uint32_t t = 0; t < m->memoryTypeCount; t++) {
        if (!(bits & (1u << t))) continue;
        VkMemoryPropertyFlags f = m->memoryTypes[t].propertyFlags;
        if ((f & required) != required) continue;
        int score = __builtin_popcount(f & preferred);
        if (score > best_score) {
            best = (int)t;
            best_score = score;
        }
    }
    return best;
}

void cd_vk_arena_free(cd_gpu_context *ctx, cd_vk_arena *a) {
    if (a->mapped) ctx->vk.vkUnmapMemory(ctx->device, a->memory);
    if (a->buffer) ctx->vk.vkDestroyBuffer(ctx->device, a->buffer, NULL);
    if (a->memory) ctx->vk.vkFreeMemory(ctx->device, a->memory, NULL);
    memset(a, 0, sizeof *a);
}

VkDeviceSize cd_vk_padded(const cd_gpu_context *ctx, VkDeviceSize size) {
    VkDeviceSize al = ctx->props.limits.minStorageBufferOffsetAlignment;
    if (al < 16) al = 16;
    if (size < 16) size = 16;
    return (size + al - 1) / al * al;
}

static const char *kind_name(cd_vk_kind k) {
    return k == CD_VK_DEVICE ? "device" : k == CD_VK_UPLOAD ? "upload staging" : "readback staging";
}

cd_status cd_vk_arenas_reserve(cd_gpu_context *ctx, const VkDeviceSize need[CD_VK_NKINDS], cd_error *err) {
    char b1[32], b2[32];
    uint64_t total = ctx->held_bytes;
    for (int k = 0; k < CD_VK_NKINDS; k++) total += need[k] > ctx->arena[k].capacity ? need[k] : ctx->arena[k].capacity;
    if (ctx->memory_limit && total > ctx->memory_limit) {
        /* Growing one block while keeping the others might be what overflows: drop the unneeded
         * ones and try again with just what this batch needs. */
        total = ctx->held_bytes;
        for (int k = 0; k < CD_VK_NKINDS; k++) total += need[k];
        if (total > ctx->memory_limit)
            return cd_fail(err, CD_ERR_NOMEM,
                           "GPU memory: the batch needs %s, more than the context's limit of %s (%s)",
                           cd_format_bytes(total, b1, sizeof b1), cd_format_bytes(ctx->memory_limit, b2, sizeof b2),
                           ctx->info.name);
        for (int k = 0; k < CD_VK_NKINDS; k++)
            if (need[k] > ctx->arena[k].capacity) cd_vk_arena_free(ctx, &ctx->arena[k]);
    }
    for (int k = 0; k < CD_VK_NKINDS; k++) {
        cd_vk_arena *a = &ctx->arena[k];
        a->used = 0;
        if (need[k] <= a->capacity) continue;
        cd_vk_arena_free(ctx, a);
        VkDeviceSize cap = 1 << 20;
        while (cap < need[k] && cap < ((VkDeviceSize)1 << 62)) cap <<= 1;
        /* the power of two only where it fits the limits; else exactly what is needed */
        uint64_t others = ctx->held_bytes;
        for (int o = 0; o < CD_VK_NKINDS; o++)
            if (o != k) others += ctx->arena[o].capacity > need[o] ? ctx->arena[o].capacity : need[o];
        if (cap > ctx->max_allocation || (ctx->memory_limit && others + cap > ctx->memory_limit)) cap = need[k];
        if (cap > ctx->max_allocation)
            return cd_fail(err, CD_ERR_NOMEM,
                           "GPU memory: the batch needs a %s %s buffer, more than one allocation may hold (%s) on %s",
                           cd_format_bytes(cap, b1, sizeof b1), kind_name((cd_vk_kind)k),
                           cd_format_bytes(ctx->max_allocation, b2, sizeof b2), ctx->info.name);
        VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                                  .size = cap,
                                  .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                           VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                                  .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
        VkResult r = ctx->vk.vkCreateBuffer(ctx->device, &bci, NULL, &a->buffer);
        if (r != VK_SUCCESS) {
            a->buffer = VK_NULL_HANDLE;
            return cd_vk_fail(ctx, err, r, "vkCreateBuffer");
        }
        VkMemoryRequirements req;
        ctx->vk.vkGetBufferMemoryRequirements(ctx->device, a->buffer, &req);
        VkMemoryPropertyFlags required, preferred;
        const VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
        if (k == CD_VK_DEVICE && ctx->shared) {
            required = host;
            preferred = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
        } else if (k == CD_VK_DEVICE) {
            required = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
            preferred = 0;
        } else if (k == CD_VK_UPLOAD) {
            required = host;
            preferred = 0;
        } else {
            required = host;
            preferred = VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
        }
        int t = find_memory_type(&ctx->memprops, req.memoryTypeBits, required, preferred);
        if (t < 0) {
            cd_vk_arena_free(ctx, a);
            return cd_fail(err, CD_ERR_UNSUPPORTED, "GPU memory: %s has no memory type for %s buffers", ctx->info.name,
                           kind_name((cd_vk_kind)k));
        }
        const VkMemoryType *mt = &ctx->memprops.memoryTypes[t];
        VkDeviceSize heap = ctx->memprops.memoryHeaps[mt->heapIndex].size, in_heap = req.size;
        for (int o = 0; o < CD_VK_NKINDS; o++)
            if (o != k && ctx->arena[o].memory && ctx->arena[o].heap_index == mt->heapIndex)
                in_heap += ctx->arena[o].capacity;
        if (in_heap > heap) {
            cd_vk_arena_free(ctx, a);
            return cd_fail(err, CD_ERR_NOMEM, "GPU memory: the batch needs %s in a memory heap of %s (%s)",
                           cd_format_bytes(in_heap, b1, sizeof b1), cd_format_bytes(heap, b2, sizeof b2),
                           ctx->info.name);
        }
        VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                    .allocationSize = req.size,
                                    .memoryTypeIndex = (uint32_t)t};
        r = ctx->vk.vkAllocateMemory(ctx->device, &mai, NULL, &a->memory);
        if (r != VK_SUCCESS) {
            a->memory = VK_NULL_HANDLE;
            cd_vk_arena_free(ctx, a);
            if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
                return cd_fail(err, CD_ERR_NOMEM, "GPU memory: cannot allocate %s of %s memory on %s (%s)",
                               cd_format_bytes(req.size, b1, sizeof b1), kind_name((cd_vk_kind)k), ctx->info.name,
                               cd_vk_result_name(r));
            return cd_vk_fail(ctx, err, r, "vkAllocateMemory");
        }
        a->type_index = (uint32_t)t;
        a->heap_index = mt->heapIndex;
        r = ctx->vk.vkBindBufferMemory(ctx->device, a->buffer, a->memory, 0);
        if (r == VK_SUCCESS && (mt->propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT))
            r = ctx->vk.vkMapMemory(ctx->device, a->memory, 0, VK_WHOLE_SIZE, 0, &a->mapped);
        if (r != VK_SUCCESS) {
            a->mapped = NULL;
            cd_vk_arena_free(ctx, a);
            return cd_vk_fail(ctx, err, r, "vkBindBufferMemory/vkMapMemory");
        }
        a->capacity = cap;
    }
    return CD_OK;
}

cd_vk_range cd_vk_alloc(cd_gpu_context *ctx, cd_vk_kind kind, VkDeviceSize size) {
    cd_vk_arena *a = &ctx->arena[kind];
    cd_vk_range r = {kind, a->used, cd_vk_padded(ctx, size)};
    a->used += r.size;
    return r;
}

void *cd_vk_host(cd_gpu_context *ctx, cd_vk_range r) { return (char *)ctx->arena[r.kind].mapped + r.offset; }

cd_status cd_vk_buffer_create(cd_gpu_context *ctx, cd_vk_kind kind, VkDeviceSize size, cd_vk_buffer *out,
                              cd_error *err) {
    char b1[32], b2[32], b3[32];
    memset(out, 0, sizeof *out);
    size = cd_vk_padded(ctx, size);
    uint64_t arenas = 0;
    for (int k = 0; k < CD_VK_NKINDS; k++) arenas += ctx->arena[k].capacity;
    if (ctx->memory_limit && arenas + ctx->held_bytes + size > ctx->memory_limit)
        return cd_fail(
            err, CD_ERR_NOMEM, "GPU memory: a %s %s buffer does not fit the context's limit of %s (%s held; %s)",
            cd_format_bytes(size, b1, sizeof b1), kind_name(kind), cd_format_bytes(ctx->memory_limit, b2, sizeof b2),
            cd_format_bytes(arenas + ctx->held_bytes, b3, sizeof b3), ctx->info.name);
    if (size > ctx->max_allocation)
        return cd_fail(err, CD_ERR_NOMEM, "GPU memory: a %s %s buffer is more than one allocation may hold (%s) on %s",
                       cd_format_bytes(size, b1, sizeof b1), kind_name(kind),
                       cd_format_bytes(ctx->max_allocation, b2, sizeof b2), ctx->info.name);
    VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                              .size = size,
                              .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                       VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                              .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    VkResult r = ctx->vk.vkCreateBuffer(ctx->device, &bci, NULL, &out->buffer);
    if (r != VK_SUCCESS) {
        out->buffer = VK_NULL_HANDLE;
        return cd_vk_fail(ctx, err, r, "vkCreateBuffer");
    }
    VkMemoryRequirements req;
    ctx->vk.vkGetBufferMemoryRequirements(ctx->device, out->buffer, &req);
    /* the arenas' choice of memory type for this kind */
    const VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    VkMemoryPropertyFlags required = host, preferred = 0;
    if (kind == CD_VK_DEVICE && ctx->shared)
        preferred = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
    else if (kind == CD_VK_DEVICE)
        required = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
    else if (kind == CD_VK_READBACK)
        preferred = VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
    int t = find_memory_type(&ctx->memprops, req.memoryTypeBits, required, preferred);
    if (t < 0) {
        cd_vk_buffer_destroy(ctx, out);
        return cd_fail(err, CD_ERR_UNSUPPORTED, "GPU memory: %s has no memory type for %s buffers", ctx->info.name,
                       kind_name(kind));
    }
    const VkMemoryType *mt = &ctx->memprops.memoryTypes[t];
    if (req.size > ctx->memprops.memoryHeaps[mt->heapIndex].size) {
        cd_vk_buffer_destroy(ctx, out);
        return cd_fail(err, CD_ERR_NOMEM, "GPU memory: a %s buffer is larger than its memory heap (%s) on %s",
                       cd_format_bytes(req.size, b1, sizeof b1),
                       cd_format_bytes(ctx->memprops.memoryHeaps[mt->heapIndex].size, b2, sizeof b2), ctx->info.name);
    }
    VkMemoryAllocateInfo mai = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size, .memoryTypeIndex = (uint32_t)t};
    r = ctx->vk.vkAllocateMemory(ctx->device, &mai, NULL, &out->memory);
    if (r != VK_SUCCESS) {
        out->memory = VK_NULL_HANDLE;
        cd_vk_buffer_destroy(ctx, out);
        if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
            return cd_fail(err, CD_ERR_NOMEM, "GPU memory: cannot allocate %s of %s memory on %s (%s)",
                           cd_format_bytes(req.size, b1, sizeof b1), kind_name(kind), ctx->info.name,
                           cd_vk_result_name(r));
        return cd_vk_fail(ctx, err, r, "vkAllocateMemory");
    }
    r = ctx->vk.vkBindBufferMemory(ctx->device, out->buffer, out->memory, 0);
    if (r == VK_SUCCESS && (mt->propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT))
        r = ctx->vk.vkMapMemory(ctx->device, out->memory, 0, VK_WHOLE_SIZE, 0, &out->mapped);
    if (r != VK_SUCCESS) {
        out->mapped = NULL;
        cd_vk_buffer_destroy(ctx, out);
        return cd_vk_fail(ctx, err, r, "vkBindBufferMemory/vkMapMemory");
    }
    out->size = size;
    ctx->held_bytes += size;
    return CD_OK;
}

void cd_vk_buffer_destroy(cd_gpu_context *ctx, cd_vk_buffer *b) {
    if (!b || !ctx->device) return;
    if (b->mapped) ctx->vk.vkUnmapMemory(ctx->device, b->memory);
    if (b->buffer) ctx->vk.vkDestroyBuffer(ctx->device, b->buffer, NULL);
    if (b->memory) ctx->vk.vkFreeMemory(ctx->device, b->memory, NULL);
    if (b->size) ctx->held_bytes -= b->size;
    memset(b, 0, sizeof *b);
}

VkBuffer cd_vk_arena_buffer(const cd_gpu_context *ctx, cd_vk_kind kind) { return ctx->arena[kind].buffer; }
