/* Helpers shared by the cmocka tests of the Vulkan path: finding a device (skip only when there is
 * none), creating a context with validation on, asserting that validation reported nothing, and a
 * deterministic random source. Include after test_util.h. */
#ifndef CD_GPU_TEST_UTIL_H
#define CD_GPU_TEST_UTIL_H

#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cirrdata/cirrdata.h>

static bool g_have_vulkan;

/* Call first in main(). Returns nonzero when the setup is broken (the validation layer is missing):
 * that fails the test binary, while a machine without any Vulkan device only makes the tests skip. */
static inline int gpu_test_init(void) {
    /* Keep the validation layer and the driver mapped for the whole run (the loader unloads them at
     * each vkDestroyInstance): their one-time allocations then show up under their own names, which
     * tests/lsan-vulkan.supp suppresses, rather than as "<unknown module>". */
    const char *keep[] = {"libVkLayer_khronos_validation.so", "libvulkan_lvp.so"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) (void)dlopen(keep[i], RTLD_NOW | RTLD_NODELETE);
    cd_error err;
    int n = 0;
    cd_status st = cd_gpu_list_devices(NULL, 0, &n, NULL, &err);
    g_have_vulkan = st == CD_OK && n > 0;
    if (!g_have_vulkan) {
        fprintf(stderr, "no Vulkan device: %s\n", err.message);
        /* a missing validation layer is a broken setup, not a machine without Vulkan */
        if (strstr(err.message, "LAYER")) return 1;
    }
    return 0;
}

static inline void require_vulkan(void) {
    if (!g_have_vulkan) skip();
}

/* Any validation warning or error so far fails the test. */
static inline void check_validation(cd_gpu_context *ctx) {
    char first[1024];
    uint64_t n = cd_gpu_validation_messages(ctx, first, sizeof first);
    if (n) fprintf(stderr, "validation messages: %llu, first: %s\n", (unsigned long long)n, first);
    assert_int_equal(n, 0);
}

static inline cd_gpu_context *make_ctx(cd_gpu_memory_mode mode, uint64_t limit) {
    cd_gpu_options o;
    memset(&o, 0, sizeof o);
    o.memory = mode;
    o.memory_limit = limit;
    cd_gpu_context *ctx = NULL;
    cd_error err;
    cd_status st = cd_gpu_create(&o, &ctx, &err);
    if (st != CD_OK) fprintf(stderr, "cd_gpu_create: %s\n", err.message);
    assert_int_equal(st, CD_OK);
    /* the tests run with validation on (meson's env); outside meson it may be off */
    if (getenv("CIRRDATA_VK_VALIDATION")) assert_true(cd_gpu_validation_enabled(ctx));
    return ctx;
}

/* xorshift64*: deterministic test randomness; a test may reseed g_rng first thing in main(). */
static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static inline uint64_t rnd(void) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545F4914F6CDD1Dull;
}
static inline double urand(double lo, double hi) { return lo + (hi - lo) * (double)(rnd() >> 11) * (1.0 / 9007199254740992.0); }
static inline int irand(int lo, int hi) { return lo + (int)(rnd() % (uint64_t)(hi - lo + 1)); }

#endif
