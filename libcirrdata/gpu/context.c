/* The Vulkan runtime's context: loader, instance (with the validation layer on request), device
 * selection, the compute queue and what a context holds; the process-wide totals. Memory is in
 * memory.c, kernels, pipelines and their cache in pipeline.c, the command object in command.c. Plain
 * C over volk.
 *
 * The loader is opened with dlopen (libvulkan.so.1, or $CIRRDATA_VK_LOADER) the first time a
 * context or a device list is asked for and stays loaded; volk's global entry points are filled once
 * (the loader's instance-level trampolines serve every instance), device-level ones go to a table per
 * context. */
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/context_impl.h"

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
        return cd_fail(err, CD_ERR_IO,
                       "Vulkan: %s: device lost (driver reset or GPU fault); destroy the context and create another",
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
    if (path && *path)
        h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
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
            return cd_fail(err, CD_ERR_UNSUPPORTED,
                           "Vulkan validation: " VK_EXT_DEBUG_UTILS_EXTENSION_NAME " is missing");
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
    VkDebugUtilsMessengerCreateInfoEXT mci = {.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
                                              .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                                                                 VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
                                              .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                                                             VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
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
        return cd_fail(
            err, CD_ERR_UNSUPPORTED,
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
            if (!d[idx].compute)
                return cd_fail(err, CD_ERR_UNSUPPORTED, "Vulkan device %s (%s) has no compute queue", selector,
                               d[idx].name);
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
        return cd_fail(err, CD_ERR_ARG,
                       "Vulkan device '%s' matches no device with a compute queue ('cirrdata devices' lists them)",
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
        return cd_fail(err, CD_ERR_UNSUPPORTED,
                       "Vulkan is not available: the driver reports no device (install one, e.g. "
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
        if (ctx->memprops.memoryHeaps[h].size > ctx->max_allocation)
            ctx->max_allocation = ctx->memprops.memoryHeaps[h].size;
    /* 16-bit storage buffers (core in Vulkan 1.1): enabled when offered, for the inference executor's
     * float16 storage option (nn/vk_exec.c); nothing else changes with it */
    VkPhysicalDevice16BitStorageFeatures s16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
    if (ctx->props.apiVersion >= VK_API_VERSION_1_1 && vkGetPhysicalDeviceProperties2) {
        VkPhysicalDeviceMaintenance3Properties m3 = {.sType =
                                                         VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
        VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &m3};
        uint32_t iv = 0;
        if (vkEnumerateInstanceVersion && vkEnumerateInstanceVersion(&iv) == VK_SUCCESS && iv >= VK_API_VERSION_1_1) {
            vkGetPhysicalDeviceProperties2(ctx->physical, &p2);
            if (m3.maxMemoryAllocationSize && m3.maxMemoryAllocationSize < ctx->max_allocation)
                ctx->max_allocation = m3.maxMemoryAllocationSize;
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
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                   .queueFamilyIndex = ctx->queue_family,
                                   .queueCount = 1,
                                   .pQueuePriorities = &prio};
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
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                              .pNext = ctx->storage16 ? &s16 : NULL,
                              .queueCreateInfoCount = 1,
                              .pQueueCreateInfos = &qci,
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
    const uint32_t bits = qf[ctx->queue_family].timestampValidBits;
    if (bits) {
        ctx->timestamp_bits = bits;
        ctx->timestamp_mask = bits >= 64 ? ~UINT64_C(0) : (UINT64_C(1) << bits) - 1;
        ctx->timestamp_ns = ctx->props.limits.timestampPeriod;
    }
    return cd_vk_cmd_create(ctx, &ctx->batch, err);
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
    if (st == CD_OK) cd_vk_cache_open(ctx, options);
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
        cd_vk_cache_close(ctx);
        for (int k = 0; k < CD_VK_NKINDS; k++) cd_vk_arena_free(ctx, &ctx->arena[k]);
        cd_vk_cmd_destroy(&ctx->batch);
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

/* ---------------------------------------------------------------- what the op families ask */

void cd_vk_lock(cd_gpu_context *ctx) { pthread_mutex_lock(&ctx->lock); }
void cd_vk_unlock(cd_gpu_context *ctx) { pthread_mutex_unlock(&ctx->lock); }

cd_status cd_vk_usable(const cd_gpu_context *ctx, cd_error *err) {
    if (!ctx->lost) return CD_OK;
    return cd_fail(err, CD_ERR_IO,
                   "Vulkan: the device of this context was lost; destroy the context and create another");
}

void cd_vk_wait_idle(cd_gpu_context *ctx) {
    if (ctx->device) ctx->vk.vkDeviceWaitIdle(ctx->device);
}

const char *cd_vk_name(const cd_gpu_context *ctx) { return ctx->info.name; }
const VkPhysicalDeviceLimits *cd_vk_limits(const cd_gpu_context *ctx) { return &ctx->props.limits; }
VkDeviceSize cd_vk_max_allocation(const cd_gpu_context *ctx) { return ctx->max_allocation; }
bool cd_vk_float64(const cd_gpu_context *ctx) { return ctx->float64; }
bool cd_vk_storage16(const cd_gpu_context *ctx) { return ctx->storage16; }

void cd_vk_call_begin(cd_gpu_context *ctx) {
    pthread_mutex_lock(&ctx->lock);
    memset(&ctx->last, 0, sizeof ctx->last);
}

void cd_vk_call_end(cd_gpu_context *ctx, double t0) {
    ctx->last.total_ms = cd_now_ms() - t0;
    pthread_mutex_unlock(&ctx->lock);
}

void cd_vk_count_batch(cd_gpu_context *ctx, double kernel_ms, uint64_t bytes_in, uint64_t bytes_out) {
    ctx->last.kernel_ms += kernel_ms;
    ctx->last.batches++;
    ctx->last.bytes_in += bytes_in;
    ctx->last.bytes_out += bytes_out;
}

uint64_t cd_vk_batch_budget(const cd_gpu_context *ctx) {
    uint64_t budget = ctx->max_allocation;
    if (ctx->memory_limit) {
        const uint64_t b = ctx->shared ? ctx->memory_limit : ctx->memory_limit / 2;
        budget = b < budget ? b : budget;
    }
    return budget;
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
