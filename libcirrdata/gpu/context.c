/* The Vulkan runtime: loader, instance (with the validation layer on request), device selection,
 * the compute queue, memory arenas, pipelines and their on-disk cache, and the command buffer of a
 * batch. Plain C over volk.
 *
 * The loader is opened with dlopen (libvulkan.so.1, or $CIRRDATA_VK_LOADER) the first time a
 * context or a device list is asked for and stays loaded; volk's global entry points are filled once
 * (the loader's instance-level trampolines serve every instance), device-level ones go to a table per
 * context. */
#include <ctype.h>
#include <dlfcn.h>
#include <stdatomic.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gpu/gpu_impl.h"
#include "core/fs.h"

/* ---------------------------------------------------------------- loader and instance */

static pthread_mutex_t g_loader_lock = PTHREAD_MUTEX_INITIALIZER;
static bool g_volk_ready;     /* volkInitializeCustom done */
static bool g_instance_ready; /* instance-level entry points loaded */

/* Process-wide totals (cd_gpu_process_stats): they outlive the contexts, so that what a context
 * reports while it is destroyed (the layer's leaked-object messages at vkDestroyDevice and
 * vkDestroyInstance) still counts. */
static atomic_ullong g_contexts, g_submissions, g_fallback, g_vmessages;
static pthread_mutex_t g_vfirst_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_vfirst[512];

const char *cd_vk_result_name(VkResult r) {
    switch (r) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_NOT_READY: return "VK_NOT_READY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_INCOMPLETE: return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_FORMAT_NOT_SUPPORTED: return "VK_ERROR_FORMAT_NOT_SUPPORTED";
    case VK_ERROR_FRAGMENTED_POOL: return "VK_ERROR_FRAGMENTED_POOL";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    default: return "VkResult";
    }
}

cd_status cd_vk_fail(cd_gpu_context *ctx, cd_error *err, VkResult r, const char *what) {
    switch (r) {
    case VK_ERROR_OUT_OF_HOST_MEMORY:
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
    case VK_ERROR_OUT_OF_POOL_MEMORY:
    case VK_ERROR_FRAGMENTED_POOL:
        return cd_fail(err, CD_ERR_NOMEM, "Vulkan: %s: out of %s memory (%s)", what,
                       r == VK_ERROR_OUT_OF_HOST_MEMORY ? "host" : "device", cd_vk_result_name(r));
    case VK_ERROR_DEVICE_LOST:
        if (ctx) ctx->lost = true;
        return cd_fail(err, CD_ERR_IO, "Vulkan: %s: device lost (driver reset or GPU fault); destroy the context and create another",
                       what);
    case VK_ERROR_INCOMPATIBLE_DRIVER:
    case VK_ERROR_INITIALIZATION_FAILED:
    case VK_ERROR_LAYER_NOT_PRESENT:
    case VK_ERROR_EXTENSION_NOT_PRESENT:
    case VK_ERROR_FEATURE_NOT_PRESENT:
        return cd_fail(err, CD_ERR_UNSUPPORTED, "Vulkan: %s failed (%s)", what, cd_vk_result_name(r));
    default: return cd_fail(err, CD_ERR_INTERNAL, "Vulkan: %s failed (%s, %d)", what, cd_vk_result_name(r), (int)r);
    }
}

/* Opens the loader and fills volk's global entry points. */
static cd_status load_loader(cd_error *err) {
    const char *path = getenv("CIRRDATA_VK_LOADER");
    pthread_mutex_lock(&g_loader_lock);
    void *h = NULL;
    if (path && *path) h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    else {
        h = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!h) h = dlopen("libvulkan.so", RTLD_NOW | RTLD_LOCAL);
    }
    if (!h) {
        const char *why = dlerror();
        pthread_mutex_unlock(&g_loader_lock);
        return cd_fail(err, CD_ERR_UNSUPPORTED,
                       "Vulkan is not available: no Vulkan loader (%s: %s); install libvulkan1 and a driver "
                       "(e.g. mesa-vulkan-drivers), or use the CPU path",
                       path && *path ? path : "libvulkan.so.1", why ? why : "not found");
    }
    if (!g_volk_ready) {
        PFN_vkGetInstanceProcAddr gipa = (PFN_vkGetInstanceProcAddr)(uintptr_t)dlsym(h, "vkGetInstanceProcAddr");
        if (!gipa) {
            pthread_mutex_unlock(&g_loader_lock);
            return cd_fail(err, CD_ERR_UNSUPPORTED, "Vulkan is not available: the loader has no vkGetInstanceProcAddr");
        }
        volkInitializeCustom(gipa);
        g_volk_ready = true;
    }
    /* The handle stays open for the life of the process (volk's pointers point into it); dlopen only
     * counts a reference when it was open already. */
    pthread_mutex_unlock(&g_loader_lock);
    return CD_OK;
}

static bool env_true(const char *name) {
    const char *v = getenv(name);
    return v && (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"));
}

static bool has_extension(const VkExtensionProperties *e, uint32_t n, const char *name) {
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(e[i].extensionName, name)) return true;
    return false;
}

#define VALIDATION_LAYER "VK_LAYER_KHRONOS_validation"

static VKAPI_ATTR VkBool32 VKAPI_CALL debug_callback(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                     VkDebugUtilsMessageTypeFlagsEXT types,
                                                     const VkDebugUtilsMessengerCallbackDataEXT *data, void *user) {
    cd_gpu_context *ctx = user;
    /* Count the layer's validation (and performance) warnings and errors; the loader's general
     * messages (e.g. an ICD for absent hardware that declines) are not about our use of the API. */
    if (!(severity & (VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT)))
        return VK_FALSE;
    if (!(types & (VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT)))
        return VK_FALSE;
    const char *msg = data && data->pMessage ? data->pMessage : "(no message)";
    if (atomic_fetch_add(&g_vmessages, 1) == 0) {
        pthread_mutex_lock(&g_vfirst_lock);
        snprintf(g_vfirst, sizeof g_vfirst, "%s", msg);
        pthread_mutex_unlock(&g_vfirst_lock);
    }
    if (ctx) {
        pthread_mutex_lock(&ctx->vlock);
        if (ctx->vcount++ == 0) snprintf(ctx->vfirst, sizeof ctx->vfirst, "%s", msg);
        pthread_mutex_unlock(&ctx->vlock);
    }
    if (env_true("CIRRDATA_VK_VALIDATION_PRINT"))
        fprintf(stderr, "cirrdata: Vulkan validation: %s\n", data && data->pMessage ? data->pMessage : "");
    return VK_FALSE;
}

/* Creates an instance; with `validation`, the Khronos layer (synchronization validation on where the
 * layer offers VK_EXT_validation_features) and a messenger that counts into ctx. */
static cd_status create_instance(cd_gpu_context *ctx, bool validation, VkInstance *out, cd_error *err) {
    *out = VK_NULL_HANDLE;
    cd_status st = load_loader(err);
    if (st != CD_OK) return st;
    uint32_t api = VK_API_VERSION_1_0;
    if (vkEnumerateInstanceVersion) {
        uint32_t v = 0;
        if (vkEnumerateInstanceVersion(&v) == VK_SUCCESS && v >= VK_API_VERSION_1_1) api = VK_API_VERSION_1_1;
    }
    const char *layers[1];
    const char *exts[2];
    uint32_t nlayers = 0, nexts = 0;
    bool features = false;
    if (validation) {
        uint32_t n = 0;
        vkEnumerateInstanceLayerProperties(&n, NULL);
        VkLayerProperties *lp = calloc(n ? n : 1, sizeof *lp);
        if (!lp) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
        vkEnumerateInstanceLayerProperties(&n, lp);
        bool found = false;
        for (uint32_t i = 0; i < n; i++) found |= !strcmp(lp[i].layerName, VALIDATION_LAYER);
        free(lp);
        if (!found)
            return cd_fail(err, CD_ERR_UNSUPPORTED,
                           "Vulkan validation was requested but the layer " VALIDATION_LAYER
                           " is not installed (Debian: vulkan-validationlayers)");
        layers[nlayers++] = VALIDATION_LAYER;
        uint32_t ne = 0;
        vkEnumerateInstanceExtensionProperties(VALIDATION_LAYER, &ne, NULL);
        VkExtensionProperties *ep = calloc(ne ? ne : 1, sizeof *ep);
        if (!ep) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
        vkEnumerateInstanceExtensionProperties(VALIDATION_LAYER, &ne, ep);
        bool debug_utils = has_extension(ep, ne, VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
        features = has_extension(ep, ne, VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME);
        free(ep);
        if (!debug_utils) {
            uint32_t ng = 0;
            vkEnumerateInstanceExtensionProperties(NULL, &ng, NULL);
            VkExtensionProperties *gp = calloc(ng ? ng : 1, sizeof *gp);
            if (!gp) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
            vkEnumerateInstanceExtensionProperties(NULL, &ng, gp);
            debug_utils = has_extension(gp, ng, VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
            free(gp);
        }
        if (!debug_utils)
            return cd_fail(err, CD_ERR_UNSUPPORTED, "Vulkan validation: " VK_EXT_DEBUG_UTILS_EXTENSION_NAME " is missing");
        exts[nexts++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
        if (features) exts[nexts++] = VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME;
    }
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .pApplicationName = "libcirrdata",
                             .applicationVersion = 1,
                             .pEngineName = "cirrdata",
                             .engineVersion = 1,
                             .apiVersion = api};
    const VkValidationFeatureEnableEXT enables[] = {VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT};
    VkDebugUtilsMessengerCreateInfoEXT mci = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = debug_callback,
        .pUserData = ctx};
    VkValidationFeaturesEXT vf = {.sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
                                  .pNext = &mci,
                                  .enabledValidationFeatureCount = 1,
                                  .pEnabledValidationFeatures = enables};
    VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                .pNext = validation ? (features ? (const void *)&vf : (const void *)&mci) : NULL,
                                .pApplicationInfo = &app,
                                .enabledLayerCount = nlayers,
                                .ppEnabledLayerNames = layers,
                                .enabledExtensionCount = nexts,
                                .ppEnabledExtensionNames = exts};
    VkInstance inst;
    VkResult r = vkCreateInstance(&ici, NULL, &inst);
    if (r == VK_ERROR_INCOMPATIBLE_DRIVER)
        return cd_fail(err, CD_ERR_UNSUPPORTED,
                       "Vulkan is not available: the loader found no driver (VK_ERROR_INCOMPATIBLE_DRIVER); install one "
                       "(e.g. mesa-vulkan-drivers for lavapipe) or use the CPU path");
    if (r != VK_SUCCESS) return cd_vk_fail(NULL, err, r, "vkCreateInstance");
    pthread_mutex_lock(&g_loader_lock);
    if (!g_instance_ready) {
        volkLoadInstanceOnly(inst);
        g_instance_ready = true;
    }
    pthread_mutex_unlock(&g_loader_lock);
    if (validation && ctx) {
        PFN_vkCreateDebugUtilsMessengerEXT create =
            (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(inst, "vkCreateDebugUtilsMessengerEXT");
        ctx->destroy_messenger =
            (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(inst, "vkDestroyDebugUtilsMessengerEXT");
        mci.pNext = NULL;
        if (!create || !ctx->destroy_messenger || create(inst, &mci, NULL, &ctx->messenger) != VK_SUCCESS) {
            vkDestroyInstance(inst, NULL);
            return cd_fail(err, CD_ERR_UNSUPPORTED, "Vulkan validation: cannot create the debug messenger");
        }
    }
    *out = inst;
    return CD_OK;
}

/* ---------------------------------------------------------------- devices */

const char *cd_gpu_device_type_name(cd_gpu_device_type type) {
    switch (type) {
    case CD_GPU_DISCRETE: return "discrete";
    case CD_GPU_INTEGRATED: return "integrated";
    case CD_GPU_CPU: return "cpu";
    case CD_GPU_VIRTUAL: return "virtual";
    default: return "other";
    }
}

static void describe(VkPhysicalDevice pd, int index, cd_gpu_device_info *d) {
    VkPhysicalDeviceProperties p;
    VkPhysicalDeviceMemoryProperties m;
    vkGetPhysicalDeviceProperties(pd, &p);
    vkGetPhysicalDeviceMemoryProperties(pd, &m);
    memset(d, 0, sizeof *d);
    d->index = index;
    snprintf(d->name, sizeof d->name, "%s", p.deviceName);
    switch (p.deviceType) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: d->type = CD_GPU_DISCRETE; break;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: d->type = CD_GPU_INTEGRATED; break;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: d->type = CD_GPU_VIRTUAL; break;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: d->type = CD_GPU_CPU; break;
    default: d->type = CD_GPU_OTHER; break;
    }
    d->vendor_id = p.vendorID;
    d->device_id = p.deviceID;
    d->driver_version = p.driverVersion;
    d->api_version = p.apiVersion;
    for (uint32_t h = 0; h < m.memoryHeapCount; h++)
        if (m.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) d->device_local_bytes += m.memoryHeaps[h].size;
    const VkMemoryPropertyFlags both = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;
    for (uint32_t t = 0; t < m.memoryTypeCount; t++)
        if ((m.memoryTypes[t].propertyFlags & both) == both) d->host_visible_device_local = true;
    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, NULL);
    VkQueueFamilyProperties qf[32];
    if (nq > 32) nq = 32;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, qf);
    for (uint32_t q = 0; q < nq; q++)
        if ((qf[q].queueFlags & VK_QUEUE_COMPUTE_BIT) && qf[q].queueCount > 0) d->compute = true;
}

static int type_rank(cd_gpu_device_type t) {
    switch (t) {
    case CD_GPU_DISCRETE: return 5;
    case CD_GPU_INTEGRATED: return 4;
    case CD_GPU_VIRTUAL: return 3;
    case CD_GPU_OTHER: return 2;
    default: return 1; /* CPU */
    }
}

/* The index of the device to use: the selector ("<index>" or a name substring, case-insensitive),
 * else the best ranked device with a compute queue. */
static cd_status select_device(const cd_gpu_device_info *d, int n, const char *selector, int *out, cd_error *err) {
    *out = -1;
    if (selector && *selector) {
        char *end;
        errno = 0;
        long idx = strtol(selector, &end, 10);
        if (*end == '\0' && errno == 0) {
            if (idx < 0 || idx >= n)
                return cd_fail(err, CD_ERR_ARG, "Vulkan device %s: no such device (there are %d)", selector, n);
            if (!d[idx].compute) return cd_fail(err, CD_ERR_UNSUPPORTED, "Vulkan device %s (%s) has no compute queue", selector, d[idx].name);
            *out = (int)idx;
            return CD_OK;
        }
        for (int i = 0; i < n; i++) {
            const char *h = d[i].name;
            size_t ls = strlen(selector);
            for (; *h; h++)
                if (!strncasecmp(h, selector, ls)) break;
            if (*h && d[i].compute) {
                *out = i;
                return CD_OK;
            }
        }
        return cd_fail(err, CD_ERR_ARG, "Vulkan device '%s' matches no device with a compute queue ('cirrdata devices' lists them)",
                       selector);
    }
    for (int i = 0; i < n; i++) {
        if (!d[i].compute) continue;
        if (*out < 0) {
            *out = i;
            continue;
        }
        const cd_gpu_device_info *b = &d[*out];
        int ra = type_rank(d[i].type), rb = type_rank(b->type);
        if (ra > rb || (ra == rb && d[i].device_local_bytes > b->device_local_bytes)) *out = i;
    }
    if (*out < 0) return cd_fail(err, CD_ERR_UNSUPPORTED, "Vulkan is not available: no device with a compute queue");
    return CD_OK;
}

/* Enumerates the instance's devices: *pds and *infos (caller frees both). */
static cd_status enumerate(VkInstance inst, VkPhysicalDevice **pds, cd_gpu_device_info **infos, int *n, cd_error *err) {
    *pds = NULL;
    *infos = NULL;
    *n = 0;
    uint32_t count = 0;
    VkResult r = vkEnumeratePhysicalDevices(inst, &count, NULL);
    if (r != VK_SUCCESS) return cd_vk_fail(NULL, err, r, "vkEnumeratePhysicalDevices");
    if (count == 0)
        return cd_fail(err, CD_ERR_UNSUPPORTED, "Vulkan is not available: the driver reports no device (install one, e.g. "
                                                "mesa-vulkan-drivers, or use the CPU path)");
    *pds = calloc(count, sizeof **pds);
    *infos = calloc(count, sizeof **infos);
    if (!*pds || !*infos) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    r = vkEnumeratePhysicalDevices(inst, &count, *pds);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) return cd_vk_fail(NULL, err, r, "vkEnumeratePhysicalDevices");
    for (uint32_t i = 0; i < count; i++) describe((*pds)[i], (int)i, &(*infos)[i]);
    *n = (int)count;
    return CD_OK;
}

cd_status cd_gpu_list_devices(cd_gpu_device_info *out, int cap, int *count, int *selected, cd_error *err) {
    if (!count || (cap > 0 && !out)) return cd_fail(err, CD_ERR_ARG, "cd_gpu_list_devices: NULL argument");
    *count = 0;
    if (selected) *selected = -1;
    VkInstance inst;
    cd_status st = create_instance(NULL, false, &inst, err);
    if (st != CD_OK) return st;
    VkPhysicalDevice *pds;
    cd_gpu_device_info *infos;
    int n;
    st = enumerate(inst, &pds, &infos, &n, err);
    if (st == CD_OK) {
        *count = n;
        for (int i = 0; i < n && i < cap; i++) out[i] = infos[i];
        if (selected) st = select_device(infos, n, getenv("CIRRDATA_VK_DEVICE"), selected, err);
    }
    free(pds);
    free(infos);
    vkDestroyInstance(inst, NULL);
    return st;
}

/* ---------------------------------------------------------------- memory */

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

static void arena_free(cd_gpu_context *ctx, cd_vk_arena *a) {
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
            return cd_fail(err, CD_ERR_NOMEM, "GPU memory: the batch needs %s, more than the context's limit of %s (%s)",
                           cd_format_bytes(total, b1, sizeof b1), cd_format_bytes(ctx->memory_limit, b2, sizeof b2), ctx->info.name);
        for (int k = 0; k < CD_VK_NKINDS; k++)
            if (need[k] > ctx->arena[k].capacity) arena_free(ctx, &ctx->arena[k]);
    }
    for (int k = 0; k < CD_VK_NKINDS; k++) {
        cd_vk_arena *a = &ctx->arena[k];
        a->used = 0;
        if (need[k] <= a->capacity) continue;
        arena_free(ctx, a);
        VkDeviceSize cap = 1 << 20;
        while (cap < need[k] && cap < ((VkDeviceSize)1 << 62)) cap <<= 1;
        /* the power of two only where it fits the limits; else exactly what is needed */
        uint64_t others = ctx->held_bytes;
        for (int o = 0; o < CD_VK_NKINDS; o++)
            if (o != k) others += ctx->arena[o].capacity > need[o] ? ctx->arena[o].capacity : need[o];
        if (cap > ctx->max_allocation || (ctx->memory_limit && others + cap > ctx->memory_limit)) cap = need[k];
        if (cap > ctx->max_allocation)
            return cd_fail(err, CD_ERR_NOMEM, "GPU memory: the batch needs a %s %s buffer, more than one allocation may hold (%s) on %s",
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
            arena_free(ctx, a);
            return cd_fail(err, CD_ERR_UNSUPPORTED, "GPU memory: %s has no memory type for %s buffers", ctx->info.name,
                           kind_name((cd_vk_kind)k));
        }
        const VkMemoryType *mt = &ctx->memprops.memoryTypes[t];
        VkDeviceSize heap = ctx->memprops.memoryHeaps[mt->heapIndex].size, in_heap = req.size;
        for (int o = 0; o < CD_VK_NKINDS; o++)
            if (o != k && ctx->arena[o].memory && ctx->arena[o].heap_index == mt->heapIndex) in_heap += ctx->arena[o].capacity;
        if (in_heap > heap) {
            arena_free(ctx, a);
            return cd_fail(err, CD_ERR_NOMEM, "GPU memory: the batch needs %s in a memory heap of %s (%s)",
                           cd_format_bytes(in_heap, b1, sizeof b1), cd_format_bytes(heap, b2, sizeof b2), ctx->info.name);
        }
        VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size, .memoryTypeIndex = (uint32_t)t};
        r = ctx->vk.vkAllocateMemory(ctx->device, &mai, NULL, &a->memory);
        if (r != VK_SUCCESS) {
            a->memory = VK_NULL_HANDLE;
            arena_free(ctx, a);
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
            arena_free(ctx, a);
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

cd_status cd_vk_buffer_create(cd_gpu_context *ctx, cd_vk_kind kind, VkDeviceSize size, cd_vk_buffer *out, cd_error *err) {
    char b1[32], b2[32], b3[32];
    memset(out, 0, sizeof *out);
    size = cd_vk_padded(ctx, size);
    uint64_t arenas = 0;
    for (int k = 0; k < CD_VK_NKINDS; k++) arenas += ctx->arena[k].capacity;
    if (ctx->memory_limit && arenas + ctx->held_bytes + size > ctx->memory_limit)
        return cd_fail(err, CD_ERR_NOMEM, "GPU memory: a %s %s buffer does not fit the context's limit of %s (%s held; %s)",
                       cd_format_bytes(size, b1, sizeof b1), kind_name(kind), cd_format_bytes(ctx->memory_limit, b2, sizeof b2),
                       cd_format_bytes(arenas + ctx->held_bytes, b3, sizeof b3), ctx->info.name);
    if (size > ctx->max_allocation)
        return cd_fail(err, CD_ERR_NOMEM, "GPU memory: a %s %s buffer is more than one allocation may hold (%s) on %s",
                       cd_format_bytes(size, b1, sizeof b1), kind_name(kind), cd_format_bytes(ctx->max_allocation, b2, sizeof b2),
                       ctx->info.name);
    VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                              .size = size,
                              .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
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
    if (kind == CD_VK_DEVICE && ctx->shared) preferred = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
    else if (kind == CD_VK_DEVICE) required = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
    else if (kind == CD_VK_READBACK) preferred = VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
    int t = find_memory_type(&ctx->memprops, req.memoryTypeBits, required, preferred);
    if (t < 0) {
        cd_vk_buffer_destroy(ctx, out);
        return cd_fail(err, CD_ERR_UNSUPPORTED, "GPU memory: %s has no memory type for %s buffers", ctx->info.name, kind_name(kind));
    }
    const VkMemoryType *mt = &ctx->memprops.memoryTypes[t];
    if (req.size > ctx->memprops.memoryHeaps[mt->heapIndex].size) {
        cd_vk_buffer_destroy(ctx, out);
        return cd_fail(err, CD_ERR_NOMEM, "GPU memory: a %s buffer is larger than its memory heap (%s) on %s",
                       cd_format_bytes(req.size, b1, sizeof b1), cd_format_bytes(ctx->memprops.memoryHeaps[mt->heapIndex].size, b2, sizeof b2),
                       ctx->info.name);
    }
    VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size, .memoryTypeIndex = (uint32_t)t};
    r = ctx->vk.vkAllocateMemory(ctx->device, &mai, NULL, &out->memory);
    if (r != VK_SUCCESS) {
        out->memory = VK_NULL_HANDLE;
        cd_vk_buffer_destroy(ctx, out);
        if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
            return cd_fail(err, CD_ERR_NOMEM, "GPU memory: cannot allocate %s of %s memory on %s (%s)", cd_format_bytes(req.size, b1, sizeof b1),
                           kind_name(kind), ctx->info.name, cd_vk_result_name(r));
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

/* ---------------------------------------------------------------- pipelines and their cache */

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
    if ((o && o->no_pipeline_cache) || (getenv("CIRRDATA_VK_PIPELINE_CACHE") && !strcmp(getenv("CIRRDATA_VK_PIPELINE_CACHE"), "0")))
        return;
    char dir[900];
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (o && o->cache_dir && *o->cache_dir) snprintf(dir, sizeof dir, "%s", o->cache_dir);
    else if (xdg && *xdg) snprintf(dir, sizeof dir, "%s/cirrdata", xdg);
    else if (home && *home) snprintf(dir, sizeof dir, "%s/.cache/cirrdata", home);
    else return;
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
        if (hsize >= 32 && hsize <= (uint32_t)n && hversion == VK_PIPELINE_CACHE_HEADER_VERSION_ONE && vendor == ctx->props.vendorID &&
            device == ctx->props.deviceID && !memcmp(b + 16, ctx->props.pipelineCacheUUID, VK_UUID_SIZE)) {
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
    if (ctx->vk.vkGetPipelineCacheData(ctx->device, ctx->cache, &n, NULL) != VK_SUCCESS || n == 0 || n > (64u << 20)) return;
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

cd_status cd_vk_kernel_create(cd_gpu_context *ctx, cd_vk_kernel *k, cd_shader_id shader, uint32_t bindings, uint32_t push_bytes,
                              uint32_t local_size, cd_error *err) {
    memset(k, 0, sizeof *k);
    k->bindings = bindings;
    k->local_size = local_size;
    VkDescriptorSetLayoutBinding b[16];
    if (bindings > 16) return cd_fail(err, CD_ERR_INTERNAL, "too many bindings");
    for (uint32_t i = 0; i < bindings; i++)
        b[i] = (VkDescriptorSetLayoutBinding){.binding = i,
                                              .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                              .descriptorCount = 1,
                                              .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    VkDescriptorSetLayoutCreateInfo dli = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO, .bindingCount = bindings, .pBindings = b};
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
    const cd_shader *code = cd_shader_get(shader);
    VkShaderModuleCreateInfo smi = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, .codeSize = code->bytes, .pCode = code->code};
    VkShaderModule mod;
    r = ctx->vk.vkCreateShaderModule(ctx->device, &smi, NULL, &mod);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkCreateShaderModule");
    VkSpecializationMapEntry me = {.constantID = 0, .offset = 0, .size = sizeof(uint32_t)};
    VkSpecializationInfo si = {.mapEntryCount = 1, .pMapEntries = &me, .dataSize = sizeof local_size, .pData = &local_size};
    VkComputePipelineCreateInfo cpi = {.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
                                       .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                                                 .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                                                 .module = mod,
                                                 .pName = "main",
                                                 .pSpecializationInfo = &si},
                                       .layout = k->layout};
    r = ctx->vk.vkCreateComputePipelines(ctx->device, ctx->cache, 1, &cpi, NULL, &k->pipeline);
    ctx->vk.vkDestroyShaderModule(ctx->device, mod, NULL);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkCreateComputePipelines");
    VkDescriptorPoolSize ps = {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .descriptorCount = bindings};
    VkDescriptorPoolCreateInfo dpi = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO, .maxSets = 1, .poolSizeCount = 1, .pPoolSizes = &ps};
    r = ctx->vk.vkCreateDescriptorPool(ctx->device, &dpi, NULL, &k->pool);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkCreateDescriptorPool");
    VkDescriptorSetAllocateInfo dai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                       .descriptorPool = k->pool,
                                       .descriptorSetCount = 1,
                                       .pSetLayouts = &k->set_layout};
    r = ctx->vk.vkAllocateDescriptorSets(ctx->device, &dai, &k->set);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkAllocateDescriptorSets");
    return CD_OK;
}

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
    ctx->cache_dirty = true;
    *state = s;
    return CD_OK;
}

void *cd_vk_family_find(const cd_gpu_context *ctx, const cd_vk_family *family) {
    for (int f = 0; f < ctx->nfamilies; f++)
        if (ctx->families[f].family == family) return ctx->families[f].state;
    return NULL;
}

void cd_vk_kernel_destroy(cd_gpu_context *ctx, cd_vk_kernel *k) {
    if (!ctx->device) return;
    if (k->pool) ctx->vk.vkDestroyDescriptorPool(ctx->device, k->pool, NULL);
    if (k->pipeline) ctx->vk.vkDestroyPipeline(ctx->device, k->pipeline, NULL);
    if (k->layout) ctx->vk.vkDestroyPipelineLayout(ctx->device, k->layout, NULL);
    if (k->set_layout) ctx->vk.vkDestroyDescriptorSetLayout(ctx->device, k->set_layout, NULL);
    memset(k, 0, sizeof *k);
}

void cd_vk_kernel_bind(cd_gpu_context *ctx, cd_vk_kernel *k, const cd_vk_range *ranges) {
    VkDescriptorBufferInfo bi[16];
    VkWriteDescriptorSet w[16];
    for (uint32_t i = 0; i < k->bindings; i++) {
        bi[i] = (VkDescriptorBufferInfo){.buffer = ctx->arena[ranges[i].kind].buffer, .offset = ranges[i].offset, .range = ranges[i].size};
        w[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                      .dstSet = k->set,
                                      .dstBinding = i,
                                      .descriptorCount = 1,
                                      .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                      .pBufferInfo = &bi[i]};
    }
    ctx->vk.vkUpdateDescriptorSets(ctx->device, k->bindings, w, 0, NULL);
}

/* ---------------------------------------------------------------- command buffer of a batch */

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

/* ---------------------------------------------------------------- context */

static bool validation_wanted(cd_gpu_validation v) {
    if (v == CD_GPU_VALIDATION_ON) return true;
    if (v == CD_GPU_VALIDATION_OFF) return false;
    if (env_true("CIRRDATA_VK_VALIDATION")) return true;
    const char *layers = getenv("VK_INSTANCE_LAYERS");
    return layers && strstr(layers, VALIDATION_LAYER);
}

static cd_status create_device(cd_gpu_context *ctx, const cd_gpu_options *o, cd_error *err) {
    VkPhysicalDevice *pds;
    cd_gpu_device_info *infos;
    int n, idx;
    cd_status st = enumerate(ctx->instance, &pds, &infos, &n, err);
    if (st == CD_OK) st = select_device(infos, n, o && o->device ? o->device : getenv("CIRRDATA_VK_DEVICE"), &idx, err);
    if (st == CD_OK) {
        ctx->physical = pds[idx];
        ctx->info = infos[idx];
    }
    free(pds);
    free(infos);
    if (st != CD_OK) return st;
    vkGetPhysicalDeviceProperties(ctx->physical, &ctx->props);
    vkGetPhysicalDeviceMemoryProperties(ctx->physical, &ctx->memprops);
    ctx->max_allocation = 0;
    for (uint32_t h = 0; h < ctx->memprops.memoryHeapCount; h++)
        if (ctx->memprops.memoryHeaps[h].size > ctx->max_allocation) ctx->max_allocation = ctx->memprops.memoryHeaps[h].size;
    /* 16-bit storage buffers (core in Vulkan 1.1): enabled when offered, for the inference executor's
     * float16 storage option (nn/vk_exec.c); nothing else changes with it */
    VkPhysicalDevice16BitStorageFeatures s16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
    if (ctx->props.apiVersion >= VK_API_VERSION_1_1 && vkGetPhysicalDeviceProperties2) {
        VkPhysicalDeviceMaintenance3Properties m3 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
        VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &m3};
        uint32_t iv = 0;
        if (vkEnumerateInstanceVersion && vkEnumerateInstanceVersion(&iv) == VK_SUCCESS && iv >= VK_API_VERSION_1_1) {
            vkGetPhysicalDeviceProperties2(ctx->physical, &p2);
            if (m3.maxMemoryAllocationSize && m3.maxMemoryAllocationSize < ctx->max_allocation) ctx->max_allocation = m3.maxMemoryAllocationSize;
            VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &s16};
            if (vkGetPhysicalDeviceFeatures2) vkGetPhysicalDeviceFeatures2(ctx->physical, &f2);
            ctx->storage16 = s16.storageBuffer16BitAccess == VK_TRUE;
        }
    }
    if (ctx->storage16) { /* enable only that one feature */
        s16.pNext = NULL;
        s16.uniformAndStorageBuffer16BitAccess = s16.storagePushConstant16 = s16.storageInputOutput16 = VK_FALSE;
    }
    /* the queue: a compute family, preferring one with timestamps, then a compute-only one */
    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(ctx->physical, &nq, NULL);
    VkQueueFamilyProperties qf[32];
    if (nq > 32) nq = 32;
    vkGetPhysicalDeviceQueueFamilyProperties(ctx->physical, &nq, qf);
    int best = -1, best_score = -1;
    for (uint32_t q = 0; q < nq; q++) {
        if (!(qf[q].queueFlags & VK_QUEUE_COMPUTE_BIT) || qf[q].queueCount == 0) continue;
        int score = (qf[q].timestampValidBits ? 2 : 0) + (qf[q].queueFlags & VK_QUEUE_GRAPHICS_BIT ? 0 : 1);
        if (score > best_score) {
            best = (int)q;
            best_score = score;
        }
    }
    if (best < 0) return cd_fail(err, CD_ERR_UNSUPPORTED, "Vulkan: %s has no compute queue", ctx->info.name);
    ctx->queue_family = (uint32_t)best;
    const float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, .queueFamilyIndex = ctx->queue_family, .queueCount = 1, .pQueuePriorities = &prio};
    /* float64 arithmetic when offered: the resampler computes positions in the reference's own double
     * precision with it (preprocess/gpu_kernels.c); CIRRDATA_VK_NO_FLOAT64=1 keeps it off (the tests of
     * the fixed-point variant) */
    VkPhysicalDeviceFeatures have, want;
    memset(&want, 0, sizeof want);
    vkGetPhysicalDeviceFeatures(ctx->physical, &have);
    want.shaderFloat64 = have.shaderFloat64;
    ctx->float64 = have.shaderFloat64 == VK_TRUE;
    const char *no64 = getenv("CIRRDATA_VK_NO_FLOAT64");
    if (no64 && *no64 && strcmp(no64, "0")) ctx->float64 = false;
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = ctx->storage16 ? &s16 : NULL, .queueCreateInfoCount = 1, .pQueueCreateInfos = &qci,
                              .pEnabledFeatures = &want};
    VkResult r = vkCreateDevice(ctx->physical, &dci, NULL, &ctx->device);
    if (r != VK_SUCCESS) {
        ctx->device = VK_NULL_HANDLE;
        return cd_vk_fail(ctx, err, r, "vkCreateDevice");
    }
    volkLoadDeviceTable(&ctx->vk, ctx->device);
    ctx->vk.vkGetDeviceQueue(ctx->device, ctx->queue_family, 0, &ctx->queue);

    /* memory mode */
    cd_gpu_memory_mode mode = o ? o->memory : CD_GPU_MEMORY_AUTO;
    const char *env = getenv("CIRRDATA_VK_MEMORY");
    if (mode == CD_GPU_MEMORY_AUTO && env && !strcmp(env, "shared")) mode = CD_GPU_MEMORY_SHARED;
    if (mode == CD_GPU_MEMORY_AUTO && env && !strcmp(env, "staging")) mode = CD_GPU_MEMORY_STAGING;
    if (mode == CD_GPU_MEMORY_AUTO)
        ctx->shared = ctx->info.type == CD_GPU_INTEGRATED || ctx->info.type == CD_GPU_CPU;
    else
        ctx->shared = mode == CD_GPU_MEMORY_SHARED;
    ctx->memory_limit = o ? o->memory_limit : 0;

    VkCommandPoolCreateInfo cpi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                   .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                   .queueFamilyIndex = ctx->queue_family};
    r = ctx->vk.vkCreateCommandPool(ctx->device, &cpi, NULL, &ctx->command_pool);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkCreateCommandPool");
    VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                       .commandPool = ctx->command_pool,
                                       .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                       .commandBufferCount = 1};
    r = ctx->vk.vkAllocateCommandBuffers(ctx->device, &cai, &ctx->cmd);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkAllocateCommandBuffers");
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    r = ctx->vk.vkCreateFence(ctx->device, &fci, NULL, &ctx->fence);
    if (r != VK_SUCCESS) return cd_vk_fail(ctx, err, r, "vkCreateFence");
    if (qf[ctx->queue_family].timestampValidBits) {
        VkQueryPoolCreateInfo qpi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO, .queryType = VK_QUERY_TYPE_TIMESTAMP, .queryCount = 2};
        if (ctx->vk.vkCreateQueryPool(ctx->device, &qpi, NULL, &ctx->queries) != VK_SUCCESS) ctx->queries = VK_NULL_HANDLE;
        uint32_t bits = qf[ctx->queue_family].timestampValidBits;
        ctx->timestamp_mask = bits >= 64 ? ~UINT64_C(0) : (UINT64_C(1) << bits) - 1;
        ctx->timestamp_ns = ctx->props.limits.timestampPeriod;
    }
    return CD_OK;
}

cd_status cd_gpu_create(const cd_gpu_options *options, cd_gpu_context **out, cd_error *err) {
    if (!out) return cd_fail(err, CD_ERR_ARG, "cd_gpu_create: NULL argument");
    *out = NULL;
    cd_gpu_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&ctx->lock, NULL);
    pthread_mutex_init(&ctx->vlock, NULL);
    ctx->validation = validation_wanted(options ? options->validation : CD_GPU_VALIDATION_ENV);
    cd_status st = create_instance(ctx, ctx->validation, &ctx->instance, err);
    if (st == CD_OK) st = create_device(ctx, options, err);
    if (st == CD_OK) {
        cache_path(ctx, options);
        size_t len = 0;
        void *data = cache_read(ctx, &len);
        VkPipelineCacheCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO, .initialDataSize = len, .pInitialData = data};
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
    if (st != CD_OK) {
        cd_gpu_destroy(ctx);
        return st;
    }
    atomic_fetch_add(&g_contexts, 1);
    *out = ctx;
    return CD_OK;
}

void cd_gpu_destroy(cd_gpu_context *ctx) {
    if (!ctx) return;
    if (ctx->device) {
        ctx->vk.vkDeviceWaitIdle(ctx->device);
        for (int f = ctx->nfamilies - 1; f >= 0; f--) {
            ctx->families[f].family->destroy(ctx, ctx->families[f].state);
            free(ctx->families[f].state);
        }
        if (ctx->cache_dirty && !ctx->lost) cache_write(ctx); /* pipelines built here: the next context finds them */
        for (int k = 0; k < CD_VK_NKINDS; k++) arena_free(ctx, &ctx->arena[k]);
        if (ctx->cache) ctx->vk.vkDestroyPipelineCache(ctx->device, ctx->cache, NULL);
        if (ctx->queries) ctx->vk.vkDestroyQueryPool(ctx->device, ctx->queries, NULL);
        if (ctx->fence) ctx->vk.vkDestroyFence(ctx->device, ctx->fence, NULL);
        if (ctx->command_pool) ctx->vk.vkDestroyCommandPool(ctx->device, ctx->command_pool, NULL);
        ctx->vk.vkDestroyDevice(ctx->device, NULL);
    }
    if (ctx->instance) {
        if (ctx->messenger) ctx->destroy_messenger(ctx->instance, ctx->messenger, NULL);
        vkDestroyInstance(ctx->instance, NULL);
    }
    pthread_mutex_destroy(&ctx->lock);
    pthread_mutex_destroy(&ctx->vlock);
    free(ctx);
}

const cd_gpu_device_info *cd_gpu_device(const cd_gpu_context *ctx) { return ctx ? &ctx->info : NULL; }
bool cd_gpu_shared_memory(const cd_gpu_context *ctx) { return ctx && ctx->shared; }
bool cd_gpu_validation_enabled(const cd_gpu_context *ctx) { return ctx && ctx->validation; }
bool cd_gpu_pipeline_cache_hit(const cd_gpu_context *ctx) { return ctx && ctx->cache_hit; }

uint64_t cd_gpu_validation_messages(cd_gpu_context *ctx, char *first, size_t first_len) {
    if (!ctx) return 0;
    pthread_mutex_lock(&ctx->vlock);
    uint64_t n = ctx->vcount;
    if (first && first_len) snprintf(first, first_len, "%s", ctx->vfirst);
    pthread_mutex_unlock(&ctx->vlock);
    return n;
}

void cd_gpu_last_timings(const cd_gpu_context *ctx, cd_gpu_timings *out) {
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!ctx) return;
    pthread_mutex_lock((pthread_mutex_t *)&ctx->lock);
    *out = ctx->last;
    pthread_mutex_unlock((pthread_mutex_t *)&ctx->lock);
}

void cd_vk_count_submission(void) { atomic_fetch_add(&g_submissions, 1); }

void cd_vk_count_fallback(cd_gpu_context *ctx, int items) {
    ctx->last.cpu_fallback += items;
    atomic_fetch_add(&g_fallback, (unsigned long long)items);
}

void cd_gpu_process_stats(cd_gpu_stats *out) {
    if (!out) return;
    memset(out, 0, sizeof *out);
    out->contexts = atomic_load(&g_contexts);
    out->submissions = atomic_load(&g_submissions);
    out->cpu_fallback = atomic_load(&g_fallback);
    out->validation_messages = atomic_load(&g_vmessages);
    pthread_mutex_lock(&g_vfirst_lock);
    snprintf(out->validation_first, sizeof out->validation_first, "%s", g_vfirst);
    pthread_mutex_unlock(&g_vfirst_lock);
}
