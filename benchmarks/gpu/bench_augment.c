/* bench_augment — the whole augmentation (spatial warp + every intensity op) on the device: the fused
 * cd_gpu_augment (one command buffer per batch) against the C reference (cd_aug_apply_spatial +
 * cd_aug_apply_intensity) and against the two passes submitted apart (cd_gpu_aug_spatial, then
 * cd_gpu_aug_intensity: the warped images travel back to the host and out again); parity and speed.
 *
 *   bench_augment [--cases 2x128x128x128,8x96x96x32] [--seconds S] [--cpu-only | --gpu-only] [--json]
 *                 [--dump DIR]
 *
 * A case BxXxYxZ is a batch of B single-channel float32 patches of X x Y x Z voxels plus uint8 masks,
 * each warped from its source box of a smooth phantom with noise, then: Gaussian noise (sigma 0.1),
 * blur (sigma 0.5, 0.75, 1.0), brightness x1.1, contrast x0.85, low resolution (zoom 0.6), inverted
 * gamma 1.3, gamma 0.8 -- every op of the nnU-Net chain at once (rotation 10/5/15 degrees, scale 1.1,
 * mirror along x), the costliest draw.
 *
 * Reported per case (Mvox/s = output voxels per second, 1 M = 1e6):
 *   cpu          the C reference, one thread, per sample back to back (median of rounds)
 *   fused kernel cd_gpu_augment's dispatches alone, GPU timestamps (median)
 *   fused call   the whole cd_gpu_augment call: host packing, copies, dispatches, unpacking (median)
 *   split call   cd_gpu_aug_spatial + cd_gpu_aug_intensity (median of the sum)
 *   parity       max |gpu - cpu| / data range of the images, and mask voxels that differ
 * --dump DIR writes sample 0 of the first case (source box, transform and op parameters, and the C
 * reference of the chain without noise, whose random numbers torch cannot draw) for
 * benchmarks/gpu/torch_augment.py's check that its torch chain is the same computation.
 * Exit status 1 when parity fails (image error > 1e-4 of the range or any mask voxel differs). */
#include "bench_common.h"

/* The transform of bench_warp plus every intensity op. */
static void make_params(cd_aug_params *a, const double center[3], uint64_t key) {
    bench_transform(a, center);
    a->noise = true;
    a->noise_sigma = 0.1;
    a->noise_key = key;
    a->blur = true;
    a->blur_sigma[0] = 0.5;
    a->blur_sigma[1] = 0.75;
    a->blur_sigma[2] = 1.0;
    a->blur_truncate = 4;
    a->brightness = true;
    a->brightness_factor = 1.1;
    a->contrast = true;
    a->contrast_factor = 0.85;
    a->lowres = true;
    a->lowres_zoom = 0.6;
    a->gamma_invert = true;
    a->gamma_invert_value = 1.3;
    a->gamma = true;
    a->gamma_value = 0.8;
}

typedef struct result {
    double cpu_ms, kernel_ms, call_ms, split_ms, max_err;
    long long mask_bad;
    int cpu_fallback, batches;
    int64_t box[3];
} result;

static int fail(const char *what, const cd_error *err) {
    fprintf(stderr, "bench_augment: %s: %s\n", what, err->message);
    return 1;
}

/* The reference chain of one sample. */
static cd_status reference(const cd_aug_params *a, const cd_gpu_spatial_item *it, const int64_t patch[3], float *img,
                           uint8_t *mask, cd_error *err) {
    cd_status st = cd_aug_apply_spatial(a, it->src, it->mask_src, 1, it->box_lo, it->box_shape, patch, img, mask, err);
    return st == CD_OK ? cd_aug_apply_intensity(a, img, 1, patch, err) : st;
}

static int dump_sample(const char *dir, const cd_aug_params *a0, const cd_gpu_spatial_item *it,
                       const int64_t patch[3]) {
    cd_aug_params a = *a0;
    a.noise = false;
    const int64_t np = patch[0] * patch[1] * patch[2], nb = it->box_shape[0] * it->box_shape[1] * it->box_shape[2];
    float *img = malloc(sizeof(float) * (size_t)np);
    cd_error err;
    if (!img || reference(&a, it, patch, img, NULL, &err) != CD_OK) {
        free(img);
        return 1;
    }
    char meta[4096];
    int len = snprintf(
        meta, sizeof meta,
        "{\"patch\": [%lld, %lld, %lld], \"box_lo\": [%lld, %lld, %lld], \"box_shape\": [%lld, %lld, %lld], "
        "\"center\": [%.17g, %.17g, %.17g], \"matrix\": [[%.17g, %.17g, %.17g], [%.17g, %.17g, %.17g], [%.17g, %.17g, "
        "%.17g]], "
        "\"noise_sigma\": %.17g, \"blur_sigma\": [%.17g, %.17g, %.17g], \"blur_truncate\": %.17g, \"brightness\": "
        "%.17g, "
        "\"contrast\": %.17g, \"lowres_zoom\": %.17g, \"gamma_invert\": %.17g, \"gamma\": %.17g}\n",
        (long long)patch[0], (long long)patch[1], (long long)patch[2], (long long)it->box_lo[0],
        (long long)it->box_lo[1], (long long)it->box_lo[2], (long long)it->box_shape[0], (long long)it->box_shape[1],
        (long long)it->box_shape[2], a.center[0], a.center[1], a.center[2], a.matrix[0][0], a.matrix[0][1],
        a.matrix[0][2], a.matrix[1][0], a.matrix[1][1], a.matrix[1][2], a.matrix[2][0], a.matrix[2][1], a.matrix[2][2],
        a0->noise_sigma, a.blur_sigma[0], a.blur_sigma[1], a.blur_sigma[2], a.blur_truncate, a.brightness_factor,
        a.contrast_factor, a.lowres_zoom, a.gamma_invert_value, a.gamma_value);
    int rc = write_file("bench_augment", dir, "augment_meta.json", meta, (size_t)len);
    rc |= write_file("bench_augment", dir, "augment_src.f32", it->src, sizeof(float) * (size_t)nb);
    rc |= write_file("bench_augment", dir, "augment_cpu_nonoise.f32", img, sizeof(float) * (size_t)np);
    free(img);
    return rc;
}

static int run_case(cd_gpu_context *ctx, const bcase *c, double seconds, bool cpu, const char *dump, result *r) {
    memset(r, 0, sizeof *r);
    const int64_t *patch = c->patch;
    const int64_t np = patch[0] * patch[1] * patch[2];
    cd_aug_params *params = calloc((size_t)c->b, sizeof *params);
    cd_gpu_spatial_item *items = calloc((size_t)c->b, sizeof *items);
    float **ref = calloc((size_t)c->b, sizeof *ref), **split = calloc((size_t)c->b, sizeof *split);
    uint8_t **refm = calloc((size_t)c->b, sizeof *refm);
    for (int i = 0; i < c->b; i++) {
        double center[3];
        for (int k = 0; k < 3; k++) center[k] = 0.75 * (double)patch[k] + 0.37 * i;
        make_params(&params[i], center, 0x5EED0000ull + (uint64_t)i);
        /* z-scored-like values, as the nnunet-3d recipe stores them */
        bench_fill_item(&items[i], &params[i], patch, &(bench_phantom){2.5, 0.5, -0.8, 0.05f}, r->box);
        ref[i] = malloc(sizeof(float) * (size_t)np);
        split[i] = malloc(sizeof(float) * (size_t)np);
        refm[i] = malloc((size_t)np);
    }
    cd_error err;
    int rc = 0;
    double t[BENCH_MAX_ROUNDS];
    int nt = 0;
    const double t_end = now_ms() + seconds * 1e3;
    do {
        const double t0 = now_ms();
        for (int i = 0; i < c->b; i++)
            if (reference(&params[i], &items[i], patch, ref[i], refm[i], &err) != CD_OK) return fail("reference", &err);
        t[nt++] = now_ms() - t0;
    } while (cpu && now_ms() < t_end && nt < BENCH_MAX_ROUNDS);
    r->cpu_ms = cpu ? median(t, nt) : 0;
    if (dump && dump_sample(dump, &params[0], &items[0], patch)) rc = 1;
    if (ctx) {
        static double ts[BENCH_MAX_ROUNDS];
        bench_gpu_times g;
        if (bench_gpu_rounds("bench_augment", "cd_gpu_augment", cd_gpu_augment, ctx, params, c->b, items, patch,
                             seconds, &g))
            return 1;
        r->kernel_ms = g.kernel_ms;
        r->call_ms = g.call_ms;
        r->cpu_fallback = g.cpu_fallback;
        r->batches = g.batches;
        /* the two passes apart: spatial into split[], then intensity in place */
        cd_gpu_spatial_item *it2 = calloc((size_t)c->b, sizeof *it2);
        for (int i = 0; i < c->b; i++) {
            it2[i] = items[i];
            it2[i].out_img = split[i];
            it2[i].out_mask = NULL;
        }
        int ns = 0;
        const double s_end = now_ms() + seconds * 1e3;
        do {
            const double t0 = now_ms();
            if (cd_gpu_aug_spatial(ctx, params, c->b, it2, 1, patch, &err) != CD_OK)
                return fail("cd_gpu_aug_spatial", &err);
            if (cd_gpu_aug_intensity(ctx, params, c->b, split, 1, patch, &err) != CD_OK)
                return fail("cd_gpu_aug_intensity", &err);
            ts[ns++] = now_ms() - t0;
        } while (now_ms() < s_end && ns < BENCH_MAX_ROUNDS);
        r->split_ms = median(ts, ns);
        free(it2);
        if (!cpu) /* parity needs the reference once */
            for (int i = 0; i < c->b; i++)
                if (reference(&params[i], &items[i], patch, ref[i], refm[i], &err) != CD_OK)
                    return fail("reference", &err);
        float mn = INFINITY, mx = -INFINITY;
        for (int i = 0; i < c->b; i++)
            for (int64_t v = 0; v < np; v++) {
                mn = ref[i][v] < mn ? ref[i][v] : mn;
                mx = ref[i][v] > mx ? ref[i][v] : mx;
                double e = fabs((double)ref[i][v] - (double)items[i].out_img[v]);
                double e2 = fabs((double)ref[i][v] - (double)split[i][v]);
                e = e2 > e ? e2 : e;
                r->max_err = e > r->max_err || e != e ? e : r->max_err;
                r->mask_bad += refm[i][v] != items[i].out_mask[v];
            }
        r->max_err /= (mx > mn ? (double)(mx - mn) : 1.0);
        if (!(r->max_err <= 1e-4) || r->mask_bad) rc = 1;
    }
    for (int i = 0; i < c->b; i++) {
        bench_free_item(&items[i]);
        free(ref[i]);
        free(split[i]);
        free(refm[i]);
    }
    free(params);
    free(items);
    free(ref);
    free(split);
    free(refm);
    return rc;
}

int main(int argc, char **argv) {
    bench_args args = {.prog = "bench_augment", .cases = "2x128x128x128,8x96x96x32"};
    cd_gpu_context *ctx;
    if (bench_start(&args, argc, argv, 4096, &ctx)) return 2;
    const bcase *cs = args.cs;
    int rc = 0;
    if (!args.json)
        printf("%-14s %-13s %10s %11s %11s %11s %10s %9s %6s\n", "case", "box", "cpu Mv/s", "fused kern", "fused call",
               "split call", "max err", "mask diff", "subm");
    for (int i = 0; i < args.nc; i++) {
        result r;
        rc |= run_case(ctx, &cs[i], args.seconds, args.cpu, i == 0 ? args.dump : NULL, &r);
        const double vox = (double)cs[i].b * (double)(cs[i].patch[0] * cs[i].patch[1] * cs[i].patch[2]);
        const double cpu_mv = mvox_s(vox, r.cpu_ms), k_mv = mvox_s(vox, r.kernel_ms), c_mv = mvox_s(vox, r.call_ms),
                     s_mv = mvox_s(vox, r.split_ms);
        char name[64], box[64];
        bench_case_names(&cs[i], r.box, name, box);
        if (args.json)
            printf("%s{\"case\": \"%s\", \"batch\": %d, \"patch\": [%lld, %lld, %lld], \"box\": [%lld, %lld, %lld], "
                   "\"voxels\": %.0f, "
                   "\"cpu_ms\": %.6g, \"fused_kernel_ms\": %.6g, \"fused_call_ms\": %.6g, \"split_call_ms\": %.6g, "
                   "\"cpu_mvox_s\": %.6g, "
                   "\"fused_kernel_mvox_s\": %.6g, \"fused_call_mvox_s\": %.6g, \"split_call_mvox_s\": %.6g, "
                   "\"max_err\": %.3g, "
                   "\"mask_mismatch\": %lld, \"submissions\": %d, \"cpu_fallback\": %d}",
                   i ? ", " : "", name, cs[i].b, (long long)cs[i].patch[0], (long long)cs[i].patch[1],
                   (long long)cs[i].patch[2], (long long)r.box[0], (long long)r.box[1], (long long)r.box[2], vox,
                   r.cpu_ms, r.kernel_ms, r.call_ms, r.split_ms, cpu_mv, k_mv, c_mv, s_mv, r.max_err, r.mask_bad,
                   r.batches, r.cpu_fallback);
        else
            printf("%-14s %-13s %10.1f %11.1f %11.1f %11.1f %10.2g %9lld %6d\n", name, box, cpu_mv, k_mv, c_mv, s_mv,
                   r.max_err, r.mask_bad, r.batches);
    }
    if (args.json) printf("], \"parity_ok\": %s}\n", rc ? "false" : "true");
    cd_gpu_destroy(ctx);
    if (rc) fprintf(stderr, "bench_augment: PARITY FAILED (or a write failed)\n");
    return rc;
}
