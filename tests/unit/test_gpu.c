/* Unit tests: the Vulkan compute path against the C reference, on whatever device Vulkan offers
 * (lavapipe in CI), with the validation layer on (meson sets CIRRDATA_VK_VALIDATION=1 and
 * synchronization validation): any validation warning or error fails the test.
 *
 * - random batches (rotations, scales, mirrors, planar, elastic, odd shapes, 1-voxel axes, boxes
 *   partly outside, sizes not multiples of the workgroup) in shared and staging memory: images within
 *   1e-4 of the data range of cd_aug_apply_spatial, masks equal
 * - integer transforms (crops, mirrors, 90-degree rotations) exactly equal
 * - NaN parameters: the reference's result (through its fallback)
 * - too large: a memory limit or a box beyond the device's limits is an error; the context and the
 *   CPU path keep working
 * - a batch past CIRRDATA_VK_TIMEOUT_S: an error, and the context still closes cleanly
 * - no loader, no driver: CD_ERR_UNSUPPORTED with a message, no crash
 * - device list and selection, the pipeline cache (miss, hit, garbage is a miss)
 * After every comparison the reference must have computed nothing the GPU was asked for (the
 * fallback counter; test_fallback expects its 2), and no validation message may appear, at
 * teardown neither. Exits 77 (skipped) only when there is no Vulkan device at all and none is
 * required (gpu_test_util.h). */
#include "test_util.h"
#include "gpu_test_util.h"

#include <math.h>
#include <stdbool.h>

#include <cirrdata/cirrdata.h>

static void make_matrix(cd_aug_params *a, double rx, double ry, double rz, const double sc[3], const bool mir[3]) {
    const double cx = cos(rx), sx = sin(rx), cy = cos(ry), sy = sin(ry), cz = cos(rz), sz = sin(rz);
    const double Rx[3][3] = {{1, 0, 0}, {0, cx, -sx}, {0, sx, cx}};
    const double Ry[3][3] = {{cy, 0, sy}, {0, 1, 0}, {-sy, 0, cy}};
    const double Rz[3][3] = {{cz, -sz, 0}, {sz, cz, 0}, {0, 0, 1}};
    double t[3][3], r[3][3];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            t[i][j] = 0;
            for (int k = 0; k < 3; k++) t[i][j] += Ry[i][k] * Rx[k][j];
        }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            r[i][j] = 0;
            for (int k = 0; k < 3; k++) r[i][j] += Rz[i][k] * t[k][j];
        }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) a->matrix[i][j] = r[i][j] * sc[j] * (mir[j] ? -1.0 : 1.0);
}

typedef struct sample {
    cd_aug_params a;
    cd_gpu_spatial_item it;
    float *src, *ref;
    uint8_t *msk, *refm;
} sample;

static void free_sample(sample *s) {
    free(s->src);
    free(s->msk);
    free(s->ref);
    free(s->refm);
    free(s->it.out_img);
    free(s->it.out_mask);
}

/* A random sample: box, data, transform. */
static void random_sample(sample *s, uint32_t channels, const int64_t patch[3], bool allow_elastic, bool with_mask) {
    memset(s, 0, sizeof *s);
    cd_aug_params *a = &s->a;
    a->scale = 1.0;
    a->blur_truncate = 4.0;
    int64_t nbox = 1;
    for (int k = 0; k < 3; k++) {
        s->it.box_shape[k] = irand(1, 29);
        if (irand(0, 9) == 0) s->it.box_shape[k] = 1;
        s->it.box_lo[k] = irand(-5, 5);
        nbox *= s->it.box_shape[k];
    }
    const bool planar = irand(0, 4) == 0;
    double sc[3], rot[3] = {0, 0, 0};
    bool mir[3];
    const double su = irand(0, 1) ? urand(0.6, 1.5) : 1.0;
    for (int k = 0; k < 3; k++) {
        sc[k] = irand(0, 2) ? su : urand(0.6, 1.5);
        mir[k] = irand(0, 1);
        if (irand(0, 1)) rot[k] = urand(-3.2, 3.2);
    }
    if (planar) {
        rot[0] = rot[1] = 0;
        sc[2] = 1;
        mir[2] = false;
        a->planar = true;
    }
    make_matrix(a, rot[0], rot[1], rot[2], sc, mir);
    for (int k = 0; k < 3; k++) a->center[k] = (double)s->it.box_lo[k] + urand(-3, (double)s->it.box_shape[k] + 2);
    if (irand(0, 3) == 0) /* centre on a voxel or half voxel: exact ties for the nearest mask */
        for (int k = 0; k < 3; k++) a->center[k] = floor(a->center[k] * 2) * 0.5;
    if (allow_elastic && irand(0, 3) == 0) {
        a->elastic = true;
        a->elastic_alpha = urand(0.5, 6);
        a->elastic_sigma = urand(1, 4);
        a->elastic_key = rnd();
    }
    const int64_t npatch = patch[0] * patch[1] * patch[2];
    s->src = malloc(sizeof(float) * (size_t)(nbox * channels));
    for (int64_t i = 0; i < nbox * channels; i++) s->src[i] = (float)urand(-1000, 3000);
    s->ref = malloc(sizeof(float) * (size_t)(npatch * channels));
    s->it.out_img = malloc(sizeof(float) * (size_t)(npatch * channels));
    s->it.src = s->src;
    if (with_mask) {
        s->msk = malloc((size_t)nbox);
        for (int64_t i = 0; i < nbox; i++) s->msk[i] = (uint8_t)irand(0, 255);
        s->refm = malloc((size_t)npatch);
        s->it.out_mask = malloc((size_t)npatch);
        s->it.mask_src = s->msk;
    }
}

/* Runs a batch on the GPU and through the reference; returns the worst image error relative to the
 * data range, counts mismatching mask voxels and bit-identical image voxels. The reference must have
 * computed exactly `fallback` of the GPU call's samples (check_fallback). */
static double compare_batch_fb(cd_gpu_context *ctx, sample *s, int n, uint32_t channels, const int64_t patch[3],
                               int64_t *mask_bad, int64_t *exact, int64_t *total, int fallback) {
    cd_aug_params *params = malloc(sizeof *params * (size_t)n);
    cd_gpu_spatial_item *items = malloc(sizeof *items * (size_t)n);
    for (int i = 0; i < n; i++) {
        params[i] = s[i].a;
        items[i] = s[i].it;
    }
    cd_error err;
    fallback_mark();
    cd_status st = cd_gpu_aug_spatial(ctx, params, n, items, channels, patch, &err);
    if (st != CD_OK) fprintf(stderr, "cd_gpu_aug_spatial: %s\n", err.message);
    assert_int_equal(st, CD_OK);
    check_fallback((uint64_t)fallback, fallback < n);
    const int64_t npatch = patch[0] * patch[1] * patch[2];
    double worst = 0;
    for (int i = 0; i < n; i++) {
        assert_int_equal(cd_aug_apply_spatial(&s[i].a, s[i].src, s[i].msk, channels, s[i].it.box_lo, s[i].it.box_shape,
                                              patch, s[i].ref, s[i].refm, &err),
                         CD_OK);
        for (int64_t v = 0; v < npatch * channels; v++) {
            double e = fabs((double)s[i].ref[v] - (double)s[i].it.out_img[v]) / 4000.0;
            worst = e > worst ? e : worst;
            *exact += s[i].ref[v] == s[i].it.out_img[v];
        }
        *total += npatch * channels;
        if (s[i].refm)
            for (int64_t v = 0; v < npatch; v++) {
                if (s[i].refm[v] != s[i].it.out_mask[v] && *mask_bad < 5)
                    fprintf(stderr, "mask mismatch: sample %d voxel %lld: ref %d gpu %d\n", i, (long long)v,
                            s[i].refm[v], s[i].it.out_mask[v]);
                *mask_bad += s[i].refm[v] != s[i].it.out_mask[v];
            }
    }
    free(params);
    free(items);
    return worst;
}

static double compare_batch(cd_gpu_context *ctx, sample *s, int n, uint32_t channels, const int64_t patch[3],
                            int64_t *mask_bad, int64_t *exact, int64_t *total) {
    return compare_batch_fb(ctx, s, n, channels, patch, mask_bad, exact, total, 0);
}

static void random_parity(cd_gpu_memory_mode mode, int rounds) {
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(mode, 0);
    double worst = 0;
    int64_t mask_bad = 0, exact = 0, total = 0;
    for (int r = 0; r < rounds; r++) {
        int64_t patch[3];
        for (int k = 0; k < 3; k++) patch[k] = irand(1, 23);
        if (irand(0, 5) == 0) patch[irand(0, 2)] = 1;
        const uint32_t channels = (uint32_t)irand(1, 2);
        const int n = irand(1, 4);
        const bool with_mask = irand(0, 4) != 0;
        sample s[4];
        for (int i = 0; i < n; i++) random_sample(&s[i], channels, patch, true, with_mask);
        double w = compare_batch(ctx, s, n, channels, patch, &mask_bad, &exact, &total);
        worst = w > worst ? w : worst;
        for (int i = 0; i < n; i++) free_sample(&s[i]);
    }
    cd_gpu_timings t;
    cd_gpu_last_timings(ctx, &t);
    fprintf(stderr,
            "[%s, %s memory] %d batches: worst image error %.3g of the range, %.4f%% of voxels bit-identical, %lld "
            "mask mismatches\n",
            cd_gpu_device(ctx)->name, cd_gpu_shared_memory(ctx) ? "shared" : "staging", rounds, worst,
            100.0 * (double)exact / (double)total, (long long)mask_bad);
    assert_true(worst <= 1e-4);
    assert_int_equal(mask_bad, 0);
    destroy_ctx(ctx);
}

static void test_parity_shared(void **state) {
    (void)state;
    random_parity(CD_GPU_MEMORY_SHARED, 60);
}

static void test_parity_staging(void **state) {
    (void)state;
    random_parity(CD_GPU_MEMORY_STAGING, 40);
}

/* A patch larger than one row of workgroups, with a box the reference runs on its fast path. */
static void test_parity_large(void **state) {
    (void)state;
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    const int64_t patch[3] = {40, 37, 29};
    sample s[2];
    for (int i = 0; i < 2; i++) {
        random_sample(&s[i], 1, patch, false, true);
        free(s[i].src);
        free(s[i].msk);
        for (int k = 0; k < 3; k++) {
            s[i].it.box_lo[k] = 0;
            s[i].it.box_shape[k] = 60;
            s[i].a.center[k] = 30 + urand(-2, 2);
        }
        s[i].src = malloc(sizeof(float) * 60 * 60 * 60);
        s[i].msk = malloc(60 * 60 * 60);
        for (int v = 0; v < 60 * 60 * 60; v++) {
            int x = v / 3600, y = v / 60 % 60, z = v % 60;
            s[i].src[v] = (float)(sin(x * 0.3) * 1000 + y * y - z * 7.5);
            s[i].msk[v] = (uint8_t)((x / 7 + y / 5 + z / 3) % 4);
        }
        s[i].it.src = s[i].src;
        s[i].it.mask_src = s[i].msk;
    }
    int64_t bad = 0, exact = 0, total = 0;
    double w = compare_batch(ctx, s, 2, 1, patch, &bad, &exact, &total);
    fprintf(stderr, "[large] worst %.3g, %.4f%% bit-identical, %lld mask mismatches\n", w,
            100.0 * (double)exact / (double)total, (long long)bad);
    assert_true(w <= 1e-4);
    assert_int_equal(bad, 0);
    for (int i = 0; i < 2; i++) free_sample(&s[i]);
    destroy_ctx(ctx);
}

/* Integer transforms (crop, mirrors, 90-degree rotations about z): exactly the reference. */
static void test_integral_exact(void **state) {
    (void)state;
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    const int64_t patch[3] = {7, 6, 5};
    for (int r = 0; r < 8; r++) {
        sample s;
        random_sample(&s, 2, patch, false, true);
        memset(s.a.matrix, 0, sizeof s.a.matrix);
        const int perm = r & 1; /* swap x and y (a 90-degree rotation about z) */
        s.a.matrix[0][perm] = (r & 2) ? -1 : 1;
        s.a.matrix[1][1 - perm] = (r & 4) ? -1 : 1;
        s.a.matrix[2][2] = 1;
        for (int k = 0; k < 3; k++)
            s.a.center[k] = (double)(s.it.box_lo[k] + irand(0, 6)) + ((patch[k] - 1) % 2 ? 0.5 : 0.0);
        int64_t bad = 0, exact = 0, total = 0;
        double w = compare_batch(ctx, &s, 1, 2, patch, &bad, &exact, &total);
        assert_true(w == 0.0);
        assert_int_equal(exact, total);
        assert_int_equal(bad, 0);
        free_sample(&s);
    }
    destroy_ctx(ctx);
}

/* NaN or far-away transforms run through the reference. */
static void test_fallback(void **state) {
    (void)state;
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    const int64_t patch[3] = {5, 4, 3};
    sample s[3];
    for (int i = 0; i < 3; i++) random_sample(&s[i], 1, patch, false, true);
    s[0].a.matrix[1][1] = NAN;
    s[2].a.center[0] = 3e9;
    int64_t bad = 0, exact = 0, total = 0;
    double w = compare_batch_fb(ctx, s, 3, 1, patch, &bad, &exact, &total, 2);
    assert_true(w <= 1e-4);
    assert_int_equal(bad, 0);
    cd_gpu_timings t;
    cd_gpu_last_timings(ctx, &t);
    assert_int_equal(t.cpu_fallback, 2);
    assert_int_equal(t.batches, 1);
    for (int i = 0; i < 3; i++) free_sample(&s[i]);
    destroy_ctx(ctx);
}

/* Too much memory: an error, and both the context and the CPU path keep working. */
static void test_too_large(void **state) {
    (void)state;
    require_vulkan();
    for (int mode = CD_GPU_MEMORY_SHARED; mode <= CD_GPU_MEMORY_STAGING; mode++) {
        cd_gpu_context *ctx = make_ctx((cd_gpu_memory_mode)mode, 1 << 20);
        const int64_t patch[3] = {64, 64, 64};
        sample s;
        random_sample(&s, 1, patch, false, false);
        cd_error err;
        cd_status st = cd_gpu_aug_spatial(ctx, &s.a, 1, &s.it, 1, patch, &err);
        assert_int_equal(st, CD_ERR_NOMEM);
        fprintf(stderr, "expected error: %s\n", err.message);
        assert_non_null(strstr(err.message, "GPU memory"));
        /* the CPU path */
        assert_int_equal(
            cd_aug_apply_spatial(&s.a, s.src, NULL, 1, s.it.box_lo, s.it.box_shape, patch, s.ref, NULL, &err), CD_OK);
        free_sample(&s);
        /* the same context, a batch that fits */
        const int64_t small[3] = {9, 8, 7};
        random_sample(&s, 1, small, true, true);
        int64_t bad = 0, exact = 0, total = 0;
        assert_true(compare_batch(ctx, &s, 1, 1, small, &bad, &exact, &total) <= 1e-4);
        assert_int_equal(bad, 0);
        free_sample(&s);
        destroy_ctx(ctx);
    }
    /* a box beyond what one descriptor can bind: refused before anything is read */
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    const int64_t patch[3] = {4, 4, 4};
    cd_aug_params a;
    memset(&a, 0, sizeof a);
    for (int k = 0; k < 3; k++) {
        a.matrix[k][k] = 1;
        a.center[k] = 100;
    }
    static float dummy[4];
    float out[64];
    cd_gpu_spatial_item it = {.src = dummy, .box_shape = {1 << 20, 1 << 20, 1 << 20}, .out_img = out};
    cd_error err;
    cd_status st = cd_gpu_aug_spatial(ctx, &a, 1, &it, 1, patch, &err);
    fprintf(stderr, "expected error: %s\n", err.message);
    assert_true(st == CD_ERR_LIMIT || st == CD_ERR_NOMEM);
    /* bad arguments */
    it.box_shape[0] = -1;
    assert_int_equal(cd_gpu_aug_spatial(ctx, &a, 1, &it, 1, patch, &err), CD_ERR_ARG);
    const int64_t zero[3] = {0, 4, 4};
    assert_int_equal(cd_gpu_aug_spatial(ctx, &a, 1, &it, 1, zero, &err), CD_ERR_ARG);
    destroy_ctx(ctx);
}

static void test_devices(void **state) {
    (void)state;
    require_vulkan();
    cd_gpu_device_info d[16];
    int n = 0, sel = -1;
    cd_error err;
    assert_int_equal(cd_gpu_list_devices(d, 16, &n, &sel, &err), CD_OK);
    assert_true(n >= 1);
    assert_true(sel >= 0 && sel < n);
    for (int i = 0; i < n && i < 16; i++) {
        assert_true(d[i].name[0] != '\0');
        assert_int_equal(d[i].index, i);
        fprintf(stderr, "device %d: %s (%s)%s\n", i, d[i].name, cd_gpu_device_type_name(d[i].type),
                i == sel ? " *" : "");
    }
    /* selection by index and by name */
    char idx[16];
    snprintf(idx, sizeof idx, "%d", n - 1);
    cd_gpu_options o;
    memset(&o, 0, sizeof o);
    o.device = idx;
    cd_gpu_context *ctx;
    assert_int_equal(cd_gpu_create(&o, &ctx, &err), CD_OK);
    assert_string_equal(cd_gpu_device(ctx)->name, d[n - 1].name);
    destroy_ctx(ctx);
    char sub[8];
    snprintf(sub, sizeof sub, "%.4s", d[0].name);
    for (char *p = sub; *p; p++) *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p); /* case-insensitive */
    o.device = sub;
    assert_int_equal(cd_gpu_create(&o, &ctx, &err), CD_OK);
    destroy_ctx(ctx);
    o.device = "no-such-device-name";
    assert_int_equal(cd_gpu_create(&o, &ctx, &err), CD_ERR_ARG);
    assert_null(ctx);
    o.device = "99";
    assert_int_equal(cd_gpu_create(&o, &ctx, &err), CD_ERR_ARG);
    setenv("CIRRDATA_VK_DEVICE", "no-such-device-name", 1);
    assert_int_equal(cd_gpu_list_devices(d, 16, &n, &sel, &err), CD_ERR_ARG);
    unsetenv("CIRRDATA_VK_DEVICE");
}

static void test_pipeline_cache(void **state) {
    (void)state;
    require_vulkan();
    char dir[512];
    test_path(dir, sizeof dir, "vkcache");
    cd_gpu_options o;
    memset(&o, 0, sizeof o);
    o.cache_dir = dir;
    cd_gpu_context *ctx;
    cd_error err;
    assert_int_equal(cd_gpu_create(&o, &ctx, &err), CD_OK);
    assert_false(cd_gpu_pipeline_cache_hit(ctx));
    destroy_ctx(ctx); /* no kernel was used: nothing built, nothing to write */
    assert_int_equal(cd_gpu_create(&o, &ctx, &err), CD_OK);
    assert_false(cd_gpu_pipeline_cache_hit(ctx));
    /* kernels are built on a context's first use of their family: a resample builds the preprocessing
     * pipelines, and the context writes them back when it goes */
    const int64_t dims[3] = {4, 4, 4};
    cd_volume *v, *out = NULL;
    assert_int_equal(cd_volume_create(dims, CD_DTYPE_FLOAT32, &v, &err), CD_OK);
    cd_grid g;
    cd_grid_of_volume(v, &g);
    cd_resample_options ro;
    cd_resample_options_init(&ro);
    assert_int_equal(cd_gpu_resample(ctx, v, &g, &ro, &out, &err), CD_OK);
    cd_volume_destroy(out);
    cd_volume_destroy(v);
    destroy_ctx(ctx);
    assert_int_equal(cd_gpu_create(&o, &ctx, &err), CD_OK);
    assert_true(cd_gpu_pipeline_cache_hit(ctx));
    destroy_ctx(ctx);
    /* the one file there, overwritten: garbage, then a right header over garbage */
    char cmd[700], path[1024];
    snprintf(cmd, sizeof cmd, "ls %s/vk-pipelines-*.bin", dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(path, sizeof path, p));
    pclose(p);
    path[strcspn(path, "\n")] = '\0';
    size_t len;
    unsigned char *good = read_bytes(path, &len);
    assert_true(len >= 32);
    unsigned char junk[300];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)rnd();
    write_bytes(path, junk, sizeof junk);
    assert_int_equal(cd_gpu_create(&o, &ctx, &err), CD_OK);
    assert_false(cd_gpu_pipeline_cache_hit(ctx));
    destroy_ctx(ctx);
    memcpy(junk, good, 32);
    write_bytes(path, junk, sizeof junk);
    assert_int_equal(cd_gpu_create(&o, &ctx, &err), CD_OK);
    /* the context works whatever the driver made of it */
    const int64_t patch[3] = {5, 6, 7};
    sample s;
    random_sample(&s, 1, patch, false, true);
    int64_t bad = 0, exact = 0, total = 0;
    assert_true(compare_batch(ctx, &s, 1, 1, patch, &bad, &exact, &total) <= 1e-4);
    assert_int_equal(bad, 0);
    free_sample(&s);
    destroy_ctx(ctx);
    free(good);
    /* disabled: no hit */
    o.no_pipeline_cache = true;
    assert_int_equal(cd_gpu_create(&o, &ctx, &err), CD_OK);
    assert_false(cd_gpu_pipeline_cache_hit(ctx));
    destroy_ctx(ctx);
}

/* A batch that does not finish within CIRRDATA_VK_TIMEOUT_S: CD_ERR_IO naming the timeout, every
 * later call fails the same way (the command buffer is still pending), and the context is destroyed
 * cleanly once the device has finished: no crash, no validation message (objects in use). */
static void test_timeout(void **state) {
    (void)state;
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    const int64_t patch[3] = {48, 48, 32};
    sample s[3];
    for (int i = 0; i < 3; i++) random_sample(&s[i], 2, patch, true, true);
    cd_aug_params params[3];
    cd_gpu_spatial_item items[3];
    for (int i = 0; i < 3; i++) {
        params[i] = s[i].a;
        items[i] = s[i].it;
    }
    cd_error err;
    setenv("CIRRDATA_VK_TIMEOUT_S", "0.000001", 1);
    cd_status st = cd_gpu_aug_spatial(ctx, params, 3, items, 2, patch, &err);
    unsetenv("CIRRDATA_VK_TIMEOUT_S");
    fprintf(stderr, "expected error: %s\n", err.message);
    assert_int_equal(st, CD_ERR_IO);
    assert_non_null(strstr(err.message, "timeout"));
    assert_int_equal(cd_gpu_aug_spatial(ctx, params, 3, items, 2, patch, &err), CD_ERR_IO);
    assert_non_null(strstr(err.message, "lost"));
    destroy_ctx(ctx);
    for (int i = 0; i < 3; i++) free_sample(&s[i]);
}

/* No loader, no driver: CD_ERR_UNSUPPORTED with a message. Runs whether or not Vulkan exists. */
static void test_no_vulkan(void **state) {
    (void)state;
    cd_gpu_context *ctx = (cd_gpu_context *)1;
    cd_error err;
    int n = 5;
    setenv("CIRRDATA_VK_LOADER", "/nonexistent/libvulkan.so.1", 1);
    assert_int_equal(cd_gpu_create(NULL, &ctx, &err), CD_ERR_UNSUPPORTED);
    assert_null(ctx);
    assert_non_null(strstr(err.message, "Vulkan"));
    fprintf(stderr, "expected error: %s\n", err.message);
    assert_int_equal(cd_gpu_list_devices(NULL, 0, &n, NULL, &err), CD_ERR_UNSUPPORTED);
    assert_int_equal(n, 0);
    unsetenv("CIRRDATA_VK_LOADER");
    if (!g_have_vulkan) return;
    /* a loader without drivers */
    setenv("VK_ICD_FILENAMES", "/nonexistent/icd.json", 1);
    setenv("VK_DRIVER_FILES", "/nonexistent/icd.json", 1);
    cd_status st = cd_gpu_create(NULL, &ctx, &err);
    fprintf(stderr, "expected error: %s\n", err.message);
    assert_int_equal(st, CD_ERR_UNSUPPORTED);
    assert_null(ctx);
    assert_int_equal(cd_gpu_list_devices(NULL, 0, &n, NULL, &err), CD_ERR_UNSUPPORTED);
    unsetenv("VK_ICD_FILENAMES");
    unsetenv("VK_DRIVER_FILES");
    /* and back */
    ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    destroy_ctx(ctx);
}

int main(void) {
    g_rng = 0x9E3779B97F4A7C15ull; /* this file's own sequence of draws */
    if (gpu_test_init()) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_vulkan),      cmocka_unit_test(test_devices),
        cmocka_unit_test(test_parity_shared),  cmocka_unit_test(test_parity_staging),
        cmocka_unit_test(test_parity_large),   cmocka_unit_test(test_integral_exact),
        cmocka_unit_test(test_fallback),       cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_pipeline_cache), cmocka_unit_test(test_timeout),
    };
    return gpu_test_result(cmocka_run_group_tests(tests, NULL, NULL));
}
