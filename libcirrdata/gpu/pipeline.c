/* Kernels and their pipelines, the on-disk pipeline cache, descriptor sets, and the op families'
 * per-context state. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"
#include "gpu/context_impl.h"

/* ---------------------------------------------------------------- the pipeline cache */

static cd_status mkdirs(const char *path) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return CD_ERR_IO;
            *p = '/';
        }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return CD_ERR_IO;
    return CD_OK;
}

static void cache_path(cd_gpu_context *ctx, const cd_gpu_options *o) {
    ctx->cache_path[0] = '\0';
    if ((o && o->no_pipeline_cache) ||
        (getenv("CIRRDATA_VK_PIPELINE_CACHE") && !strcmp(getenv("CIRRDATA_VK_PIPELINE_CACHE"), "0")))
        return;
    char dir[900];
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (o && o->cache_dir && *o->cache_dir)
        snprintf(dir, sizeof dir, "%s", o->cache_dir);
    else if (xdg && *xdg)
        snprintf(dir, sizeof dir, "%s/cirrdata", xdg);
    else if (home && *home)
        snprintf(dir, sizeof dir, "%s/.cache/cirrdata", home);
    else
        return;
    char uuid[33];
    for (int i = 0; i < 16; i++) snprintf(uuid + 2 * i, 3, "%02x", ctx->props.pipelineCacheUUID[i]);
    snprintf(ctx->cache_path, sizeof ctx->cache_path, "%s/vk-pipelines-%04x-%04x-%08x-%s.bin", dir, ctx->props.vendorID,
             ctx->props.deviceID, ctx->props.driverVersion, uuid);
}

/* Reads the cache file if its header is this device's; anything else is a miss (NULL). */
static void *cache_read(cd_gpu_context *ctx, size_t *len) {
    *len = 0;
    if (!ctx->cache_path[0]) return NULL;
    int fd; /* a FIFO in the cache's place is a miss, never waited on */
    if (cd_open_regular(ctx->cache_path, NULL, &fd, NULL, NULL) != CD_OK) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return NULL;
    }
    void *data = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n >= 32 && n <= (64L << 20) && fseek(f, 0, SEEK_SET) == 0 && (data = malloc((size_t)n)) &&
        fread(data, 1, (size_t)n, f) == (size_t)n) {
        const unsigned char *b = data;
        uint32_t hsize, hversion, vendor, device;
        memcpy(&hsize, b, 4);
        memcpy(&hversion, b + 4, 4);
        memcpy(&vendor, b + 8, 4);
        memcpy(&device, b + 12, 4);
        if (hsize >= 32 && hsize <= (uint32_t)n && hversion == VK_PIPELINE_CACHE_HEADER_VERSION_ONE &&
            vendor == ctx->props.vendorID && device == ctx->props.deviceID &&
            !memcmp(b + 16, ctx->props.pipelineCacheUUID, VK_UUID_SIZE)) {
            fclose(f);
            *len = (size_t)n;
            return data;
        }
    }
    free(data);
    fclose(f);
    return NULL;
}

/* Writes the cache atomically (temporary file, then rename); failures are ignored: a cache. */
static void cache_write(cd_gpu_context *ctx) {
    if (!ctx->cache_path[0] || !ctx->cache) return;
    size_t n = 0;
    if (ctx->vk.vkGetPipelineCacheData(ctx->device, ctx->cache, &n, NULL) != VK_SUCCESS || n == 0 || n > (64u << 20))
        return;
    void *data = malloc(n);
    if (!data) return;
    if (ctx->vk.vkGetPipelineCacheData(ctx->device, ctx->cache, &n, data) == VK_SUCCESS) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s", ctx->cache_path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
        if (mkdirs(dir) == CD_OK) {
            char tmp[1100];
            snprintf(tmp, sizeof tmp, "%s.%ld.tmp", ctx->cache_path, (long)getpid());
            FILE *f = fopen(tmp, "wb");
            if (f) {
                bool ok = fwrite(data, 1, n, f) == n;
                ok &= fclose(f) == 0;
                if (!ok || rename(tmp, ctx->cache_path) != 0) unlink(tmp);
            }
        }
    }
    free(data);
}

void cd_vk_cache_open(cd_gpu_context *ctx, const cd_gpu_options *options) {
    cache_path(ctx, options);
    size_t len = 0;
    void *data = cache_read(ctx, &len);
    VkPipelineCacheCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO, .initialDataSize = len, .pInitialData = data};
    VkResult r = ctx->vk.vkCreatePipelineCache(ctx->device, &pci, NULL, &ctx->cache);
    if (r != VK_SUCCESS && data) { /* a driver that refuses the data: a miss */
        pci.initialDataSize = 0;
        pci.pInitialData = NULL;
        r = ctx->vk.vkCreatePipelineCache(ctx->device, &pci, NULL, &ctx->cache);
        free(data);
        data = NULL;
    }
    if (r != VK_SUCCESS) ctx->cache = VK_NULL_HANDLE; /* pipelines are built without one */
    ctx->cache_hit = data != NULL && ctx->cache;
    free(data);
}

void cd_vk_cache_close(cd_gpu_context *ctx) {
    if (ctx->cache_dirty && !ctx->lost) cache_write(ctx); /* pipelines built here: the next context finds them */
    if (ctx->cache) ctx->vk.vkDestroyPipelineCache(ctx->device, ctx->cache, NULL);
    ctx->cache = VK_NULL_HANDLE;
}

/* ---------------------------------------------------------------- kernels */

cd_status cd_vk_layout_create(cd_gpu_context *ctx, cd_vk_kernel *k, uint32_t bindings, uint32_t push_bytes,
                              cd_error *err) {
    memset(k, 0, sizeof *k);
    k->bindings = bindings;
    k->push_bytes = push_bytes;
    VkDescriptorSetLayoutBinding b[16];
    if (bindings > 16) return cd_fail(err, CD_ERR_INTERNAL, "too many bindings");
    for (uint32_t i = 0; i < bindings; i++)
        b[i] = (VkDescriptorSetLayoutBinding){.binding = i,
                                              .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                              .descriptorCount = 1,
                                              .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    VkDescriptorSetLayoutCreateInfo dli = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO, .bindingCount = bindings, .pBindings = b};
    VkResult r = ctx->vk.vkCreateDescriptorSetLayout(ctx->device, &dli, NULL, &k->set_layout);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkCreateDescriptorSetLayout");
    VkPushConstantRange pcr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .offset = 0, .size = push_bytes};
    VkPipelineLayoutCreateInfo pli = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                      .setLayoutCount = 1,
                                      .pSetLayouts = &k->set_layout,
                                      .pushConstantRangeCount = push_bytes ? 1 : 0,
                                      .pPushConstantRanges = &pcr};
    r = ctx->vk.vkCreatePipelineLayout(ctx->device, &pli, NULL, &k->layout);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkCreatePipelineLayout");
    return CD_OK;
}

cd_status cd_vk_pipeline_create(cd_gpu_context *ctx, const cd_vk_kernel *k, cd_shader_id shader, const uint32_t *spec,
                                uint32_t nspec, VkPipeline *out, cd_error *err) {
    *out = VK_NULL_HANDLE;
    VkSpecializationMapEntry me[4];
    if (nspec > 4) return cd_fail(err, CD_ERR_INTERNAL, "too many specialization constants");
    for (uint32_t i = 0; i < nspec; i++)
        me[i] = (VkSpecializationMapEntry){.constantID = i, .offset = 4 * i, .size = sizeof(uint32_t)};
    const cd_shader *code = cd_shader_get(shader);
    VkShaderModuleCreateInfo smi = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, .codeSize = code->bytes, .pCode = code->code};
    VkShaderModule mod;
    VkResult r = ctx->vk.vkCreateShaderModule(ctx->device, &smi, NULL, &mod);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkCreateShaderModule");
    VkSpecializationInfo si = {
        .mapEntryCount = nspec, .pMapEntries = me, .dataSize = nspec * sizeof(uint32_t), .pData = spec};
    VkComputePipelineCreateInfo cpi = {.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
                                       .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                                                 .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                                                 .module = mod,
                                                 .pName = "main",
                                                 .pSpecializationInfo = &si},
                                       .layout = k->layout};
    r = ctx->vk.vkCreateComputePipelines(ctx->device, ctx->cache, 1, &cpi, NULL, out);
    ctx->vk.vkDestroyShaderModule(ctx->device, mod, NULL);
    if (r != VK_SUCCESS) {
        *out = VK_NULL_HANDLE;
        return cd_vk_fail(ctx, err, r, "vkCreateComputePipelines");
    }
    ctx->cache_dirty = true;
    return CD_OK;
}

void cd_vk_pipeline_destroy(cd_gpu_context *ctx, VkPipeline pipeline) {
    if (pipeline && ctx->device) ctx->vk.vkDestroyPipeline(ctx->device, pipeline, NULL);
}

cd_status cd_vk_kernel_create(cd_gpu_context *ctx, cd_vk_kernel *k, cd_shader_id shader, uint32_t bindings,
                              uint32_t push_bytes, uint32_t local_size, cd_error *err) {
    cd_status st = cd_vk_layout_create(ctx, k, bindings, push_bytes, err);
    k->local_size = local_size;
    if (st == CD_OK) st = cd_vk_pipeline_create(ctx, k, shader, &local_size, 1, &k->pipeline, err);
    if (st == CD_OK) st = cd_vk_sets_create(ctx, 1, bindings, &k->pool, err);
    if (st == CD_OK) st = cd_vk_set_alloc(ctx, k->pool, k, NULL, &k->set, err);
    return st;
}

void cd_vk_kernel_destroy(cd_gpu_context *ctx, cd_vk_kernel *k) {
    if (!ctx->device) return;
    cd_vk_sets_destroy(ctx, &k->pool);
    cd_vk_pipeline_destroy(ctx, k->pipeline);
    if (k->layout) ctx->vk.vkDestroyPipelineLayout(ctx->device, k->layout, NULL);
    if (k->set_layout) ctx->vk.vkDestroyDescriptorSetLayout(ctx->device, k->set_layout, NULL);
    memset(k, 0, sizeof *k);
}

/* ---------------------------------------------------------------- descriptor sets */

cd_status cd_vk_sets_create(cd_gpu_context *ctx, uint32_t sets, uint32_t descriptors, VkDescriptorPool *out,
                            cd_error *err) {
    VkDescriptorPoolSize ps = {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .descriptorCount = descriptors};
    VkDescriptorPoolCreateInfo dpi = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO, .maxSets = sets, .poolSizeCount = 1, .pPoolSizes = &ps};
    VkResult r = ctx->vk.vkCreateDescriptorPool(ctx->device, &dpi, NULL, out);
    if (r != VK_SUCCESS) {
        *out = VK_NULL_HANDLE;
        return cd_vk_fail(ctx, err, r, "vkCreateDescriptorPool");
    }
    return CD_OK;
}

void cd_vk_sets_destroy(cd_gpu_context *ctx, VkDescriptorPool *pool) {
    if (*pool && ctx->device) ctx->vk.vkDestroyDescriptorPool(ctx->device, *pool, NULL);
    *pool = VK_NULL_HANDLE;
}

static void write_set(cd_gpu_context *ctx, VkDescriptorSet set, uint32_t n, const VkDescriptorBufferInfo *bi) {
    VkWriteDescriptorSet w[16];
    for (uint32_t i = 0; i < n; i++)
        w[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                      .dstSet = set,
                                      .dstBinding = i,
                                      .descriptorCount = 1,
                                      .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                      .pBufferInfo = &bi[i]};
    ctx->vk.vkUpdateDescriptorSets(ctx->device, n, w, 0, NULL);
}

cd_status cd_vk_set_alloc(cd_gpu_context *ctx, VkDescriptorPool pool, const cd_vk_kernel *k,
                          const VkDescriptorBufferInfo *bindings, VkDescriptorSet *out, cd_error *err) {
    VkDescriptorSetAllocateInfo dai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                       .descriptorPool = pool,
                                       .descriptorSetCount = 1,
                                       .pSetLayouts = &k->set_layout};
    VkResult r = ctx->vk.vkAllocateDescriptorSets(ctx->device, &dai, out);
    if (r != VK_SUCCESS) {
        *out = VK_NULL_HANDLE;
        return cd_vk_fail(ctx, err, r, "vkAllocateDescriptorSets");
    }
    if (bindings) write_set(ctx, *out, k->bindings, bindings);
    return CD_OK;
}

void cd_vk_kernel_bind(cd_gpu_context *ctx, cd_vk_kernel *k, const cd_vk_range *ranges) {
    VkDescriptorBufferInfo bi[16];
    for (uint32_t i = 0; i < k->bindings; i++)
        bi[i] = (VkDescriptorBufferInfo){
            .buffer = ctx->arena[ranges[i].kind].buffer, .offset = ranges[i].offset, .range = ranges[i].size};
    write_set(ctx, k->set, k->bindings, bi);
}

/* ---------------------------------------------------------------- op families */

cd_status cd_vk_family_state(cd_gpu_context *ctx, const cd_vk_family *family, void **state, cd_error *err) {
    *state = cd_vk_family_find(ctx, family);
    if (*state) return CD_OK;
    if (ctx->nfamilies == CD_VK_MAX_FAMILIES)
        return cd_fail(err, CD_ERR_INTERNAL, "Vulkan: more than %d kernel families in one context", CD_VK_MAX_FAMILIES);
    void *s = calloc(1, family->state_bytes);
    if (!s) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    cd_status st = family->init(ctx, s, err);
    if (st != CD_OK) {
        family->destroy(ctx, s);
        free(s);
        return st;
    }
    ctx->families[ctx->nfamilies].family = family;
    ctx->families[ctx->nfamilies++].state = s;
    *state = s;
    return CD_OK;
}

void *cd_vk_family_find(const cd_gpu_context *ctx, const cd_vk_family *family) {
    for (int f = 0; f < ctx->nfamilies; f++)
        if (ctx->families[f].family == family) return ctx->families[f].state;
    return NULL;
}
