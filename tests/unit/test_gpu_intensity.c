/* Unit tests: the Vulkan intensity kernels (cd_gpu_aug_intensity) and the fused augmentation
 * (cd_gpu_augment: warp + intensity in one command buffer) against the C reference
 * (cd_aug_apply_intensity, cd_aug_apply_spatial), on whatever device Vulkan offers (lavapipe in CI),
 * with the validation layer and synchronization validation on (meson's env): any validation warning
 * or error fails the test.
 *
 * Tolerance: max |gpu - reference| <= 1e-4 of the sample's data range. The kernels compute in float
 * where the reference accumulates in double (statistics, blur sums), and divisions, square roots and
 * fused multiply-adds are the driver's (noise, gamma), which alone accounts for ~1e-6; masks must be equal.
 *
 * - every op alone, on odd shapes (1-voxel axes, 33x17x5, planar 2D slices, sizes not multiples of
 *   the workgroup), mixed with samples that skip it, in shared and staging memory
 * - the nnU-Net pipeline and an every-op pipeline drawn through cd_aug_draw for many seeds, intensity
 *   alone and fused with the warp (masks exact), 3D and 2D
 * - a batch split over several submissions; non-finite parameters through the reference
 * - a too-small memory limit or a too-large patch: an error, no crash; the context keeps working
 * After every comparison the reference must have computed none of the samples (the fallback counter;
 * the split test expects its 2); no validation message, at teardown neither. Exits 77 (skipped) only
 * when there is no Vulkan device at all and none is required (gpu_test_util.h). */
#include "test_util.h"
#include "gpu_test_util.h"

#include <math.h>
#include <stdbool.h>

#include <cirrdata/cirrdata.h>

/* A test image: a smooth blob, a ramp and noise, z-scored-like values scaled and shifted per sample. */
static float *make_image(uint32_t channels, const int64_t p[3]) {
    const int64_t n = p[0] * p[1] * p[2];
    float *img = malloc(sizeof(float) * (size_t)(n * channels));
    const double scale = urand(0.5, 400), shift = urand(-200, 200);
    for (uint32_t c = 0; c < channels; c++)
        for (int64_t x = 0; x < p[0]; x++)
            for (int64_t y = 0; y < p[1]; y++)
                for (int64_t z = 0; z < p[2]; z++) {
                    const double gx = (double)x / (double)p[0] - 0.4, gy = (double)y / (double)p[1] - 0.55,
                                 gz = (double)z / (double)p[2] - 0.5;
                    const double v = 2.5 * exp(-6 * (gx * gx + gy * gy + gz * gz)) + 0.8 * gx - 0.3 * gz +
                                     0.4 * urand(-1, 1) + 0.3 * c;
                    img[(int64_t)c * n + (x * p[1] + y) * p[2] + z] = (float)(v * scale + shift);
                }
    return img;
}

/* max |a - b| / range, the range taken over both (the reference's and the input's spread). */
static double rel_err(const float *ref, const float *got, const float *in, int64_t n) {
    float lo = INFINITY, hi = -INFINITY;
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        lo = fminf(lo, fminf(ref[i], in[i]));
        hi = fmaxf(hi, fmaxf(ref[i], in[i]));
        if (isnan(ref[i]) && isnan(got[i])) continue;
        const double d = fabs((double)ref[i] - (double)got[i]);
        e = d > e || isnan(d) ? (isnan(d) ? INFINITY : d) : e;
    }
    return e / (hi > lo ? (double)hi - (double)lo : 1.0);
}

static void identity_params(cd_aug_params *a) {
    memset(a, 0, sizeof *a);
    for (int k = 0; k < 3; k++) a->matrix[k][k] = 1;
    a->scale = 1;
    a->blur_truncate = 4;
}

enum { OP_NOISE, OP_BLUR, OP_BRIGHTNESS, OP_CONTRAST, OP_LOWRES, OP_GAMMA_INVERT, OP_GAMMA, NOPS };
static const char *const op_names[NOPS] = {"noise",  "blur",         "brightness", "contrast",
                                           "lowres", "gamma_invert", "gamma"};

static void set_op(cd_aug_params *a, int op) {
    switch (op) {
    case OP_NOISE:
        a->noise = true;
        a->noise_sigma = urand(0.01, 0.3) * (irand(0, 1) ? 1 : 100);
        a->noise_key = rnd();
        break;
    case OP_BLUR:
        a->blur = true;
        for (int k = 0; k < 3; k++) a->blur_sigma[k] = irand(0, 5) ? urand(0.1, 3.0) : 0.0; /* some radius-0 axes */
        a->blur_truncate = irand(0, 3) ? 4.0 : urand(1, 6);
        break;
    case OP_BRIGHTNESS:
        a->brightness = true;
        a->brightness_factor = urand(0.5, 1.5);
        break;
    case OP_CONTRAST:
        a->contrast = true;
        a->contrast_factor = urand(0.5, 1.5);
        break;
    case OP_LOWRES:
        a->lowres = true;
        a->lowres_zoom = urand(0.2, 1.0);
        break;
    case OP_GAMMA_INVERT:
        a->gamma_invert = true;
        a->gamma_invert_value = urand(0.7, 1.5);
        break;
    default:
        a->gamma = true;
        a->gamma_value = urand(0.7, 1.5);
        break;
    }
}

/* Runs params[0..n) on copies of imgs through the GPU and the reference; returns the worst error. */
static double compare_intensity(cd_gpu_context *ctx, const cd_aug_params *params, int n, float **imgs,
                                uint32_t channels, const int64_t patch[3]) {
    const int64_t np = patch[0] * patch[1] * patch[2] * channels;
    float **gpu = malloc(sizeof *gpu * (size_t)n);
    for (int i = 0; i < n; i++) {
        gpu[i] = malloc(sizeof(float) * (size_t)np);
        memcpy(gpu[i], imgs[i], sizeof(float) * (size_t)np);
    }
    cd_error err;
    fallback_mark();
    cd_status st = cd_gpu_aug_intensity(ctx, params, n, gpu, channels, patch, &err);
    if (st != CD_OK) fprintf(stderr, "cd_gpu_aug_intensity: %s\n", err.message);
    assert_int_equal(st, CD_OK);
    /* none through the reference (a batch whose ops are all no-ops, such as a blur with radius 0 on
     * every axis, submits nothing: submissions are not asserted here) */
    check_fallback(0, false);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        float *ref = malloc(sizeof(float) * (size_t)np);
        memcpy(ref, imgs[i], sizeof(float) * (size_t)np);
        assert_int_equal(cd_aug_apply_intensity(&params[i], ref, channels, patch, &err), CD_OK);
        const double e = rel_err(ref, gpu[i], imgs[i], np);
        worst = e > worst ? e : worst;
        free(ref);
        free(gpu[i]);
    }
    free(gpu);
    return worst;
}

static const int64_t odd_shapes[][3] = {{1, 1, 1}, {1, 5, 7},   {33, 17, 5}, {7, 1, 9},
                                        {6, 8, 1}, {16, 16, 1}, {2, 3, 2},   {13, 11, 19}};

static void ops_alone(cd_gpu_memory_mode mode) {
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(mode, 0);
    for (int op = 0; op < NOPS; op++) {
        double worst = 0;
        for (size_t sh = 0; sh < sizeof odd_shapes / sizeof odd_shapes[0]; sh++) {
            const int64_t *patch = odd_shapes[sh];
            const uint32_t channels = (uint32_t)irand(1, 2);
            const int n = irand(1, 3);
            cd_aug_params params[3];
            float *imgs[3];
            const bool planar = patch[2] == 1 || irand(0, 3) == 0;
            for (int i = 0; i < n; i++) {
                identity_params(&params[i]);
                params[i].planar = planar;
                if (i == 0 || irand(0, 2)) set_op(&params[i], op); /* others skip it */
                imgs[i] = make_image(channels, patch);
            }
            const double w = compare_intensity(ctx, params, n, imgs, channels, patch);
            if (w > 1e-4)
                fprintf(stderr, "%s: shape %lldx%lldx%lld, %u channels: error %.3g\n", op_names[op],
                        (long long)patch[0], (long long)patch[1], (long long)patch[2], channels, w);
            worst = w > worst ? w : worst;
            for (int i = 0; i < n; i++) free(imgs[i]);
        }
        fprintf(stderr, "[%s memory] %-12s worst error %.3g of the range\n",
                cd_gpu_shared_memory(ctx) ? "shared" : "staging", op_names[op], worst);
        assert_true(worst <= 1e-4);
    }
    destroy_ctx(ctx);
}

static void test_ops_alone_shared(void **state) {
    (void)state;
    ops_alone(CD_GPU_MEMORY_SHARED);
}

static void test_ops_alone_staging(void **state) {
    (void)state;
    ops_alone(CD_GPU_MEMORY_STAGING);
}

/* Every op of the CPU engine at once, with high probabilities: most samples draw most ops. */
static const char *all_ops_json(int dims) {
    return dims == 3 ? "{\"name\": \"all-3d\", \"version\": 1, \"dims\": 3, \"ops\": ["
                       "{\"op\": \"rotation\", \"p\": 0.7, \"range_deg\": [-30, 30], \"axes\": \"xyz\"},"
                       "{\"op\": \"scaling\", \"p\": 0.7, \"range\": [0.7, 1.4]},"
                       "{\"op\": \"elastic\", \"p\": 0.3, \"alpha\": [0, 8], \"sigma\": [2, 4]},"
                       "{\"op\": \"noise\", \"p\": 0.8, \"sigma\": [0, 0.1]},"
                       "{\"op\": \"blur\", \"p\": 0.8, \"sigma\": [0.5, 1.0], \"p_per_channel\": 0.8, \"per_axis\": "
                       "true, \"truncate\": 4},"
                       "{\"op\": \"brightness\", \"p\": 0.8, \"range\": [0.75, 1.25]},"
                       "{\"op\": \"contrast\", \"p\": 0.8, \"range\": [0.75, 1.25]},"
                       "{\"op\": \"lowres\", \"p\": 0.8, \"zoom\": [0.5, 1.0], \"p_per_channel\": 0.8},"
                       "{\"op\": \"gamma\", \"p\": 0.8, \"range\": [0.7, 1.5], \"invert_p\": 0.5},"
                       "{\"op\": \"mirror\", \"p\": 0.5, \"axes\": \"xyz\"}]}"
                     : "{\"name\": \"all-2d\", \"version\": 1, \"dims\": 2, \"ops\": ["
                       "{\"op\": \"rotation\", \"p\": 0.7, \"range_deg\": [-30, 30], \"axes\": \"z\"},"
                       "{\"op\": \"scaling\", \"p\": 0.7, \"range\": [0.7, 1.4]},"
                       "{\"op\": \"noise\", \"p\": 0.8, \"sigma\": [0, 0.1]},"
                       "{\"op\": \"blur\", \"p\": 0.8, \"sigma\": [0.5, 1.0], \"p_per_channel\": 0.8, \"per_axis\": "
                       "true, \"truncate\": 4},"
                       "{\"op\": \"brightness\", \"p\": 0.8, \"range\": [0.75, 1.25]},"
                       "{\"op\": \"contrast\", \"p\": 0.8, \"range\": [0.75, 1.25]},"
                       "{\"op\": \"lowres\", \"p\": 0.8, \"zoom\": [0.5, 1.0], \"p_per_channel\": 0.8},"
                       "{\"op\": \"gamma\", \"p\": 0.8, \"range\": [0.7, 1.5], \"invert_p\": 0.5},"
                       "{\"op\": \"mirror\", \"p\": 0.5, \"axes\": \"xy\"}]}";
}

static cd_aug_pipeline *load_pipeline(const char *which) {
    cd_aug_pipeline *p = NULL;
    cd_error err;
    cd_status st = !strcmp(which, "nnunet")
                       ? cd_aug_pipeline_load("nnunet", &p, &err)
                       : cd_aug_pipeline_parse(all_ops_json(!strcmp(which, "all-2d") ? 2 : 3), which, &p, &err);
    if (st != CD_OK) fprintf(stderr, "pipeline %s: %s\n", which, err.message);
    assert_int_equal(st, CD_OK);
    return p;
}

/* Intensity alone, parameters drawn by cd_aug_draw. */
static void test_pipeline_intensity(void **state) {
    (void)state;
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    const char *pipes[] = {"nnunet", "all-3d", "all-2d"};
    for (int pi = 0; pi < 3; pi++) {
        cd_aug_pipeline *p = load_pipeline(pipes[pi]);
        double worst = 0;
        int ops_seen[NOPS] = {0};
        for (int round = 0; round < 6; round++) {
            const int64_t patch[3] = {irand(1, 24), irand(1, 21), pi == 2 ? 1 : irand(1, 13)};
            const uint32_t channels = (uint32_t)irand(1, 2);
            enum { N = 8 };
            cd_aug_params params[N];
            float *imgs[N];
            const double c[3] = {0, 0, 0};
            for (int i = 0; i < N; i++) {
                cd_aug_draw(p, 1000 + (uint64_t)round, 3, (uint64_t)i, patch, c, &params[i]);
                const cd_aug_params *a = &params[i];
                ops_seen[OP_NOISE] += a->noise;
                ops_seen[OP_BLUR] += a->blur;
                ops_seen[OP_BRIGHTNESS] += a->brightness;
                ops_seen[OP_CONTRAST] += a->contrast;
                ops_seen[OP_LOWRES] += a->lowres;
                ops_seen[OP_GAMMA_INVERT] += a->gamma_invert;
                ops_seen[OP_GAMMA] += a->gamma;
                imgs[i] = make_image(channels, patch);
            }
            const double w = compare_intensity(ctx, params, N, imgs, channels, patch);
            worst = w > worst ? w : worst;
            for (int i = 0; i < N; i++) free(imgs[i]);
        }
        fprintf(stderr, "[%s] 48 samples: worst error %.3g; ops drawn:", pipes[pi], worst);
        for (int o = 0; o < NOPS; o++) fprintf(stderr, " %s %d", op_names[o], ops_seen[o]);
        fprintf(stderr, "\n");
        assert_true(worst <= 1e-4);
        if (pi > 0)
            for (int o = 0; o < NOPS; o++) assert_true(ops_seen[o] > 0);
        cd_aug_pipeline_destroy(p);
    }
    destroy_ctx(ctx);
}

/* The fused warp + intensity against cd_aug_apply_spatial + cd_aug_apply_intensity. */
static void fused(cd_gpu_memory_mode mode, const char *pipe, int rounds) {
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(mode, 0);
    cd_aug_pipeline *p = load_pipeline(pipe);
    const bool planar = cd_aug_pipeline_is_2d(p);
    double worst = 0;
    int64_t mask_bad = 0;
    for (int round = 0; round < rounds; round++) {
        int64_t patch[3] = {irand(1, 22), irand(1, 19), planar ? 1 : irand(1, 11)};
        if (round == 0 && !planar) {
            patch[0] = 33;
            patch[1] = 17;
            patch[2] = 5;
        }
        const uint32_t channels = (uint32_t)irand(1, 2);
        const int n = irand(1, 5);
        cd_aug_params params[5];
        cd_gpu_spatial_item items[5];
        float *ref[5];
        uint8_t *refm[5];
        const int64_t np = patch[0] * patch[1] * patch[2];
        for (int i = 0; i < n; i++) {
            /* a source volume around the patch; the centre somewhere inside it */
            int64_t vol[3];
            double c[3];
            for (int k = 0; k < 3; k++) {
                vol[k] = planar && k == 2 ? 1 : patch[k] + irand(0, 8);
                c[k] = planar && k == 2 ? 0 : urand(0, (double)vol[k] - 1);
            }
            cd_aug_draw(p, 77, (uint64_t)round, (uint64_t)i, patch, c, &params[i]);
            int64_t lo[3], hi[3];
            cd_aug_source_box(&params[i], patch, lo, hi);
            memset(&items[i], 0, sizeof items[i]);
            int64_t nb = 1;
            for (int k = 0; k < 3; k++) {
                items[i].box_lo[k] = lo[k];
                items[i].box_shape[k] = hi[k] - lo[k];
                nb *= hi[k] - lo[k];
            }
            float *src = make_image(channels, items[i].box_shape);
            uint8_t *m = malloc((size_t)nb);
            for (int64_t v = 0; v < nb; v++) m[v] = (uint8_t)(((v * 7) / 5 + (v / 13)) % 3);
            items[i].src = src;
            items[i].mask_src = m;
            items[i].out_img = malloc(sizeof(float) * (size_t)(np * channels));
            items[i].out_mask = irand(0, 4) ? malloc((size_t)np) : NULL;
            ref[i] = malloc(sizeof(float) * (size_t)(np * channels));
            refm[i] = malloc((size_t)np);
        }
        cd_error err;
        fallback_mark();
        cd_status st = cd_gpu_augment(ctx, params, n, items, channels, patch, &err);
        if (st != CD_OK) fprintf(stderr, "cd_gpu_augment: %s\n", err.message);
        assert_int_equal(st, CD_OK);
        check_fallback(0, true);
        for (int i = 0; i < n; i++) {
            assert_int_equal(cd_aug_apply_spatial(&params[i], items[i].src, items[i].mask_src, channels,
                                                  items[i].box_lo, items[i].box_shape, patch, ref[i], refm[i], &err),
                             CD_OK);
            float *warped = malloc(sizeof(float) * (size_t)(np * channels));
            memcpy(warped, ref[i], sizeof(float) * (size_t)(np * channels));
            assert_int_equal(cd_aug_apply_intensity(&params[i], ref[i], channels, patch, &err), CD_OK);
            const double w = rel_err(ref[i], items[i].out_img, warped, np * channels);
            worst = w > worst ? w : worst;
            if (items[i].out_mask)
                for (int64_t v = 0; v < np; v++) mask_bad += refm[i][v] != items[i].out_mask[v];
            free(warped);
            free((void *)items[i].src);
            free((void *)items[i].mask_src);
            free(items[i].out_img);
            free(items[i].out_mask);
            free(ref[i]);
            free(refm[i]);
        }
    }
    fprintf(stderr, "[%s, %s memory] fused, %d batches: worst error %.3g of the range, %lld mask mismatches\n", pipe,
            cd_gpu_shared_memory(ctx) ? "shared" : "staging", rounds, worst, (long long)mask_bad);
    assert_true(worst <= 1e-4);
    assert_int_equal(mask_bad, 0);
    cd_aug_pipeline_destroy(p);
    destroy_ctx(ctx);
}

static void test_fused_shared(void **state) {
    (void)state;
    fused(CD_GPU_MEMORY_SHARED, "all-3d", 14);
    fused(CD_GPU_MEMORY_SHARED, "nnunet", 8);
}

static void test_fused_staging(void **state) {
    (void)state;
    fused(CD_GPU_MEMORY_STAGING, "all-3d", 10);
    fused(CD_GPU_MEMORY_STAGING, "all-2d", 8);
}

/* A memory limit that holds two samples, not eight: several submissions, the same results; non-finite
 * parameters run through the reference. */
static void test_split_and_fallback(void **state) {
    (void)state;
    require_vulkan();
    const int64_t patch[3] = {24, 20, 16};
    const int64_t np = patch[0] * patch[1] * patch[2];
    /* per sample ~62 KB on the device (image, scratch, meta, stats) and as much in staging; the batch
     * budget in staging mode is half the limit: 2 samples per submission */
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_STAGING, 256 << 10);
    enum { N = 8 };
    cd_aug_params params[N];
    float *imgs[N], *gpu[N];
    for (int i = 0; i < N; i++) {
        identity_params(&params[i]);
        for (int op = 0; op < NOPS; op++) set_op(&params[i], op);
        imgs[i] = make_image(1, patch);
        gpu[i] = malloc(sizeof(float) * (size_t)np);
        memcpy(gpu[i], imgs[i], sizeof(float) * (size_t)np);
    }
    params[3].contrast_factor = NAN;
    params[5].blur_sigma[1] = 600; /* radius 2400: beyond the kernel's 1023 */
    params[5].blur_truncate = 4;
    cd_error err;
    fallback_mark();
    assert_int_equal(cd_gpu_aug_intensity(ctx, params, N, gpu, 1, patch, &err), CD_OK);
    check_fallback(2, true);
    cd_gpu_timings t;
    cd_gpu_last_timings(ctx, &t);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(cd_aug_apply_intensity(&params[i], imgs[i], 1, patch, &err), CD_OK);
        if (i == 3 || i == 5) /* computed by the reference itself */
            assert_memory_equal(imgs[i], gpu[i], sizeof(float) * (size_t)np);
        else {
            const double w = rel_err(imgs[i], gpu[i], imgs[i], np);
            worst = w > worst ? w : worst;
        }
        free(imgs[i]);
        free(gpu[i]);
    }
    fprintf(stderr, "[split] %d submissions, %d samples on the CPU, worst error %.3g\n", t.batches, t.cpu_fallback,
            worst);
    assert_true(t.batches >= 3);
    assert_int_equal(t.cpu_fallback, 2);
    assert_true(worst <= 1e-4);
    destroy_ctx(ctx);
}

/* Too much for the device: errors, no crash, and the context keeps working. */
static void test_too_large(void **state) {
    (void)state;
    require_vulkan();
    for (int mode = CD_GPU_MEMORY_SHARED; mode <= CD_GPU_MEMORY_STAGING; mode++) {
        cd_gpu_context *ctx = make_ctx((cd_gpu_memory_mode)mode, 1 << 20);
        const int64_t patch[3] = {64, 64, 64};
        cd_aug_params a;
        identity_params(&a);
        set_op(&a, OP_BLUR);
        set_op(&a, OP_GAMMA);
        float *img = calloc((size_t)(patch[0] * patch[1] * patch[2]), sizeof(float));
        cd_error err;
        cd_status st = cd_gpu_aug_intensity(ctx, &a, 1, &img, 1, patch, &err);
        fprintf(stderr, "expected error: %s\n", err.message);
        assert_int_equal(st, CD_ERR_NOMEM);
        assert_non_null(strstr(err.message, "GPU memory"));
        cd_gpu_spatial_item it = {.src = img, .box_shape = {64, 64, 64}, .out_img = img + 1};
        float *out = malloc(sizeof(float) * 64 * 64 * 64);
        it.out_img = out;
        a.center[0] = a.center[1] = a.center[2] = 31.5;
        st = cd_gpu_augment(ctx, &a, 1, &it, 1, patch, &err);
        fprintf(stderr, "expected error: %s\n", err.message);
        assert_int_equal(st, CD_ERR_NOMEM);
        free(out);
        free(img);
        /* the same context, a batch that fits */
        const int64_t small[3] = {9, 8, 7};
        cd_aug_params ps[2];
        float *imgs[2];
        for (int i = 0; i < 2; i++) {
            identity_params(&ps[i]);
            for (int op = 0; op < NOPS; op++) set_op(&ps[i], op);
            imgs[i] = make_image(2, small);
        }
        assert_true(compare_intensity(ctx, ps, 2, imgs, 2, small) <= 1e-4);
        for (int i = 0; i < 2; i++) free(imgs[i]);
        destroy_ctx(ctx);
    }
    /* bad arguments and limits */
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    cd_aug_params a;
    identity_params(&a);
    float v[8] = {0};
    float *one = v;
    cd_error err;
    const int64_t zero[3] = {0, 2, 2}, huge[3] = {1 << 20, 1 << 20, 1 << 20}, ok[3] = {2, 2, 2};
    assert_int_equal(cd_gpu_aug_intensity(ctx, &a, 1, &one, 1, zero, &err), CD_ERR_ARG);
    assert_int_equal(cd_gpu_aug_intensity(ctx, &a, 1, &one, 1, huge, &err), CD_ERR_LIMIT);
    assert_int_equal(cd_gpu_aug_intensity(ctx, &a, 1, NULL, 1, ok, &err), CD_ERR_ARG);
    float *nul = NULL;
    assert_int_equal(cd_gpu_aug_intensity(ctx, &a, 1, &nul, 1, ok, &err), CD_ERR_ARG);
    assert_int_equal(cd_gpu_aug_intensity(ctx, &a, 0, NULL, 1, ok, &err), CD_OK);
    cd_gpu_spatial_item it = {.box_shape = {-1, 2, 2}, .out_img = v};
    assert_int_equal(cd_gpu_augment(ctx, &a, 1, &it, 1, ok, &err), CD_ERR_ARG);
    assert_int_equal(cd_gpu_augment(ctx, &a, 1, &it, 1, huge, &err), CD_ERR_LIMIT);
    destroy_ctx(ctx);
}

int main(void) {
    if (gpu_test_init()) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ops_alone_shared),   cmocka_unit_test(test_ops_alone_staging),
        cmocka_unit_test(test_pipeline_intensity), cmocka_unit_test(test_fused_shared),
        cmocka_unit_test(test_fused_staging),      cmocka_unit_test(test_split_and_fallback),
        cmocka_unit_test(test_too_large),
    };
    return gpu_test_result(cmocka_run_group_tests(tests, NULL, NULL));
}
