/* Helpers shared by the cmocka tests of the Vulkan path: finding a device (where there is none the
 * binary exits 77, a skip, unless this machine must have one), creating a context with validation on,
 * asserting that validation reported nothing (teardown included) and that the device, not the C
 * reference, computed what a comparison compared, and a deterministic random source. Include after
 * test_util.h. Driver leaks under LeakSanitizer are handled for every test by meson's default test
 * setup (tests/meson.build), not here. */
#ifndef CD_GPU_TEST_UTIL_H
#define CD_GPU_TEST_UTIL_H

#include <glob.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cirrdata/cirrdata.h>

static bool g_have_vulkan;

/* Whether this machine must have a Vulkan device: CIRRDATA_TEST_REQUIRE_VULKAN=1 or 0 says so;
 * otherwise yes where lavapipe's driver manifest is installed (Debian: mesa-vulkan-drivers), so that a
 * broken Vulkan setup fails the suite instead of skipping every GPU test. tests/python/vk_test.py
 * decides the same way. */
static inline bool vulkan_required(void) {
    const char *v = getenv("CIRRDATA_TEST_REQUIRE_VULKAN");
    if (v && *v) return strcmp(v, "0") != 0;
    static const char *const where[] = {"/usr/share/vulkan/icd.d/lvp_icd*.json",
                                        "/usr/local/share/vulkan/icd.d/lvp_icd*.json",
                                        "/etc/vulkan/icd.d/lvp_icd*.json"};
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        glob_t g;
        const bool found = glob(where[i], 0, NULL, &g) == 0 && g.gl_pathc > 0;
        globfree(&g);
        if (found) return true;
    }
    return false;
}

/* Call first in main(). Returns nonzero when the setup is broken: the validation layer is missing, or
 * there is no Vulkan device where one is required (vulkan_required). On a machine without Vulkan the
 * device tests skip and gpu_test_result makes the binary exit 77. */
static inline int gpu_test_init(void) {
    cd_error err;
    int n = 0;
    cd_status st = cd_gpu_list_devices(NULL, 0, &n, NULL, &err);
    g_have_vulkan = st == CD_OK && n > 0;
    if (!g_have_vulkan) {
        fprintf(stderr, "no Vulkan device: %s\n", err.message);
        /* a missing validation layer is a broken setup, not a machine without Vulkan */
        if (strstr(err.message, "LAYER")) return 1;
        if (vulkan_required()) {
            fprintf(
                stderr,
                "lavapipe is installed (or CIRRDATA_TEST_REQUIRE_VULKAN=1), so a Vulkan device must open: failing\n");
            return 1;
        }
    }
    return 0;
}

/* main's exit status: the tests' result, or 77 (meson: skipped) when there was no device to test. */
static inline int gpu_test_result(int rc) {
    if (rc == 0 && !g_have_vulkan) {
        fprintf(stderr, "skipped: no Vulkan device\n");
        return 77;
    }
    return rc;
}

static inline void require_vulkan(void) {
    if (!g_have_vulkan) skip();
}

/* Any validation warning or error so far fails the test: the context's, and the process's (which
 * also counts what destroyed contexts reported at vkDestroyDevice / vkDestroyInstance). */
static inline void check_validation(cd_gpu_context *ctx) {
    char first[1024];
    uint64_t n = ctx ? cd_gpu_validation_messages(ctx, first, sizeof first) : 0;
    if (n) fprintf(stderr, "validation messages: %llu, first: %s\n", (unsigned long long)n, first);
    assert_int_equal(n, 0);
    cd_gpu_stats s;
    cd_gpu_process_stats(&s);
    if (s.validation_messages)
        fprintf(stderr, "validation messages in this process: %llu, first: %s\n",
                (unsigned long long)s.validation_messages, s.validation_first);
    assert_int_equal(s.validation_messages, 0);
}

/* Destroys ctx, then fails on any validation message, those of the teardown included. */
static inline void destroy_ctx(cd_gpu_context *ctx) {
    check_validation(ctx);
    cd_gpu_destroy(ctx);
    check_validation(NULL);
}

/* Around a comparison with the C reference: fallback_mark() before the GPU call(s), then
 * check_fallback(n): the reference computed exactly n items of them (normally 0, so that a GPU path
 * that silently handed its work to the reference fails), and unless everything was expected to fall
 * back, the device ran at least one command buffer. */
static cd_gpu_stats g_mark;
static inline void fallback_mark(void) { cd_gpu_process_stats(&g_mark); }
static inline void check_fallback(uint64_t expected, bool device_ran) {
    cd_gpu_stats s;
    cd_gpu_process_stats(&s);
    const uint64_t fb = s.cpu_fallback - g_mark.cpu_fallback, subs = s.submissions - g_mark.submissions;
    if (fb != expected || (device_ran && subs == 0))
        fprintf(stderr, "items computed by the C reference: %llu (expected %llu); device submissions: %llu\n",
                (unsigned long long)fb, (unsigned long long)expected, (unsigned long long)subs);
    assert_int_equal(fb, expected);
    if (device_ran) assert_true(subs > 0);
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
static inline double urand(double lo, double hi) {
    return lo + (hi - lo) * (double)(rnd() >> 11) * (1.0 / 9007199254740992.0);
}
static inline int irand(int lo, int hi) { return lo + (int)(rnd() % (uint64_t)(hi - lo + 1)); }

#endif
