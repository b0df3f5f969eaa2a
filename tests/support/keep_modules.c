/* LD_PRELOAD shim of the sanitizer builds' tests (tests/meson.build, the default test setup):
 * dlclose() keeps every module mapped.
 *
 * Why: the Vulkan loader unloads the driver (lavapipe, LLVM) and the layers at each
 * vkDestroyInstance. Their one-time allocations that are still live at exit then belong to an
 * unmapped module, which LeakSanitizer reports as "<unknown module>" and no suppression can name,
 * so every process that opened Vulkan failed. With the modules kept, LeakSanitizer scans their data
 * (most of that memory is reachable from it) and names the rest, which tests/lsan-vulkan.supp
 * suppresses by module; leaks in our own code keep their frames in libcirrdata and are reported.
 *
 * Built without sanitizers, so that uninstrumented processes (the Python interpreter) can load it
 * too; instrumented ones then run with verify_asan_link_order=0, the shim ahead of the ASan runtime.
 * The only symbol it defines is dlclose: ASan's own dlclose interceptor is then either not reached
 * (the shim comes first) or forwards to the shim (where the runtime was preloaded first, as
 * tests/python/asan_reexec.py does); either way the module stays mapped, which is all ASan needs. */
__attribute__((visibility("default"))) int dlclose(void *handle); /* the project builds with -fvisibility=hidden */

int dlclose(void *handle) {
    (void)handle;
    return 0;
}
