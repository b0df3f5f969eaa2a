/* bench_warp — the fused spatial augmentation warp: Vulkan (cd_gpu_aug_spatial) against the C
 * reference (cd_aug_apply_spatial), parity and speed.
 *
 *   bench_warp [--cases 2x96x96x32,1x256x256x64] [--seconds S] [--cpu-only | --gpu-only] [--json]
 *              [--dump DIR]
 *
 * A case BxXxYxZ is a batch of B single-channel float32 patches of X x Y x Z voxels (plus a uint8
 * mask), each warped from its source box (cd_aug_source_box of the transform: rotation 10/5/15
 * degrees about x/y/z, scale 1.1, mirror along x) of a smooth phantom with noise.
 *
 * Reported per case (Mvox/s = output voxels per second; 1 M = 1e6):
 *   cpu        the C reference, one thread, per sample back to back (median of rounds)
 *   gpu kernel the dispatch alone, on the device's clock: Vulkan timestamps around it (median), the
 *              data resident on the device; torch_warp.py's peer on the same clock is CUDA events
 *              around CUDA-graph replays of the same warp
 *   gpu call   the whole cd_gpu_aug_spatial call on the host's clock (CLOCK_MONOTONIC around it,
 *              median): host packing, copies to and from the device, dispatch, wait, unpacking;
 *              torch_warp.py's peer on the same clock is its end-to-end warp from host tensors to
 *              host tensors
 *   bytes      the kernel's minimal traffic: source boxes and masks read once, outputs written once;
 *              GB/s = bytes / kernel time (1 GB = 1e9 bytes)
 *   parity     max |gpu - cpu| / data range of the images, and mask voxels that differ
 * --dump DIR writes the first sample of the first case (source box, transform, GPU output) for
 * benchmarks/gpu/torch_warp.py's convention check against torch.nn.functional.grid_sample.
 * Exit status 1 when parity fails (image error > 1e-4 of the range or any mask voxel differs). */
#include "bench_common.h"

typedef struct result {
    double cpu_ms, gpu_kernel_ms, gpu_call_ms, bytes, max_err;
    long long mask_bad;
    int cpu_fallback, batches;
    int64_t box[3];
} result;

static int run_case(cd_gpu_context *ctx, const bcase *c, double seconds, bool cpu, const char *dump, result *r) {
    memset(r, 0, sizeof *r);
    const int64_t *patch = c->patch;
    const int64_t np = patch[0] * patch[1] * patch[2];
    cd_aug_params *params = calloc((size_t)c->b, sizeof *params);
    cd_gpu_spatial_item *items = calloc((size_t)c->b, sizeof *items);
    float **ref = calloc((size_t)c->b, sizeof *ref);
    uint8_t **refm = calloc((size_t)c->b, sizeof *refm);
    for (int i = 0; i < c->b; i++) {
        /* the source: a phantom of 1.5x the patch; the patch centred in it (shifted per sample) */
        double center[3];
        for (int k = 0; k < 3; k++) center[k] = 0.75 * (double)patch[k] + 0.37 * i;
        bench_transform(&params[i], center);
        const int64_t nb =
            bench_fill_item(&items[i], &params[i], patch, &(bench_phantom){1000.0, 200.0, 0.0, 20.0f}, r->box);
        ref[i] = malloc(sizeof(float) * (size_t)np);
        refm[i] = malloc((size_t)np);
        r->bytes += (double)nb * 5.0 + (double)np * 5.0;
    }
    cd_error err;
    int rc = 0;
    /* CPU reference (also the parity reference) */
    double t[BENCH_MAX_ROUNDS];
    int nt = 0;
    const double t_end = now_ms() + seconds * 1e3;
    do {
        const double t0 = now_ms();
        for (int i = 0; i < c->b; i++)
            if (cd_aug_apply_spatial(&params[i], items[i].src, items[i].mask_src, 1, items[i].box_lo,
                                     items[i].box_shape, patch, ref[i], refm[i], &err) != CD_OK) {
                fprintf(stderr, "bench_warp: %s\n", err.message);
                return 1;
            }
        t[nt++] = now_ms() - t0;
    } while (cpu && now_ms() < t_end && nt < BENCH_MAX_ROUNDS);
    r->cpu_ms = cpu ? median(t, nt) : 0;
    if (ctx) {
        bench_gpu_times g;
        if (bench_gpu_rounds("bench_warp", NULL, cd_gpu_aug_spatial, ctx, params, c->b, items, patch, seconds, &g))
            return 1;
        r->gpu_kernel_ms = g.kernel_ms;
        r->gpu_call_ms = g.call_ms;
        r->cpu_fallback = g.cpu_fallback;
        r->batches = g.batches;
        float mn = INFINITY, mx = -INFINITY;
        for (int i = 0; i < c->b; i++)
            for (int64_t v = 0; v < np; v++) {
                mn = ref[i][v] < mn ? ref[i][v] : mn;
                mx = ref[i][v] > mx ? ref[i][v] : mx;
                double e = fabs((double)ref[i][v] - (double)items[i].out_img[v]);
                r->max_err = e > r->max_err ? e : r->max_err;
                r->mask_bad += refm[i][v] != items[i].out_mask[v];
            }
        r->max_err /= (mx > mn ? (double)(mx - mn) : 1.0);
        if (r->max_err > 1e-4 || r->mask_bad) rc = 1;
        if (dump) {
            char meta[2048];
            const cd_aug_params *a = &params[0];
            int len = snprintf(
                meta, sizeof meta,
                "{\"patch\": [%lld, %lld, %lld], \"box_lo\": [%lld, %lld, %lld], \"box_shape\": [%lld, %lld, %lld], "
                "\"center\": [%.17g, %.17g, %.17g], \"matrix\": [[%.17g, %.17g, %.17g], [%.17g, %.17g, %.17g], [%.17g, "
                "%.17g, %.17g]]}\n",
                (long long)patch[0], (long long)patch[1], (long long)patch[2], (long long)items[0].box_lo[0],
                (long long)items[0].box_lo[1], (long long)items[0].box_lo[2], (long long)items[0].box_shape[0],
                (long long)items[0].box_shape[1], (long long)items[0].box_shape[2], a->center[0], a->center[1],
                a->center[2], a->matrix[0][0], a->matrix[0][1], a->matrix[0][2], a->matrix[1][0], a->matrix[1][1],
                a->matrix[1][2], a->matrix[2][0], a->matrix[2][1], a->matrix[2][2]);
            const int64_t nb = items[0].box_shape[0] * items[0].box_shape[1] * items[0].box_shape[2];
            rc |= write_file("bench_warp", dump, "warp_meta.json", meta, (size_t)len);
            rc |= write_file("bench_warp", dump, "warp_src.f32", items[0].src, sizeof(float) * (size_t)nb);
            rc |= write_file("bench_warp", dump, "warp_gpu.f32", items[0].out_img, sizeof(float) * (size_t)np);
            rc |= write_file("bench_warp", dump, "warp_cpu.f32", ref[0], sizeof(float) * (size_t)np);
        }
    }
    for (int i = 0; i < c->b; i++) {
        bench_free_item(&items[i]);
        free(ref[i]);
        free(refm[i]);
    }
    free(params);
    free(items);
    free(ref);
    free(refm);
    return rc;
}

int main(int argc, char **argv) {
    bench_args args = {.prog = "bench_warp", .cases = "2x96x96x32,1x256x256x64"};
    cd_gpu_context *ctx;
    if (bench_start(&args, argc, argv, INT64_MAX, &ctx)) return 2;
    const bcase *cs = args.cs;
    int rc = 0;
    if (!args.json)
        printf("%-14s %-13s %10s %10s %10s %9s %10s %10s %6s\n", "case", "box", "cpu Mv/s", "kern Mv/s", "call Mv/s",
               "kern GB/s", "max err", "mask diff", "subm");
    for (int i = 0; i < args.nc; i++) {
        result r;
        rc |= run_case(ctx, &cs[i], args.seconds, args.cpu, i == 0 ? args.dump : NULL, &r);
        const double vox = (double)cs[i].b * (double)(cs[i].patch[0] * cs[i].patch[1] * cs[i].patch[2]);
        const double cpu_mv = mvox_s(vox, r.cpu_ms), k_mv = mvox_s(vox, r.gpu_kernel_ms),
                     c_mv = mvox_s(vox, r.gpu_call_ms),
                     gbs = r.gpu_kernel_ms > 0 ? r.bytes / r.gpu_kernel_ms * 1e-6 : 0;
        char name[64], box[64];
        bench_case_names(&cs[i], r.box, name, box);
        if (args.json)
            printf(
                "%s{\"case\": \"%s\", \"batch\": %d, \"patch\": [%lld, %lld, %lld], \"box\": [%lld, %lld, %lld], "
                "\"voxels\": %.0f, "
                "\"bytes\": %.0f, \"cpu_ms\": %.6g, \"gpu_kernel_ms\": %.6g, \"gpu_call_ms\": %.6g, \"cpu_mvox_s\": "
                "%.6g, "
                "\"gpu_kernel_mvox_s\": %.6g, \"gpu_call_mvox_s\": %.6g, \"gpu_kernel_gb_s\": %.6g, \"max_err\": %.3g, "
                "\"mask_mismatch\": %lld, \"submissions\": %d, \"cpu_fallback\": %d}",
                i ? ", " : "", name, cs[i].b, (long long)cs[i].patch[0], (long long)cs[i].patch[1],
                (long long)cs[i].patch[2], (long long)r.box[0], (long long)r.box[1], (long long)r.box[2], vox, r.bytes,
                r.cpu_ms, r.gpu_kernel_ms, r.gpu_call_ms, cpu_mv, k_mv, c_mv, gbs, r.max_err, r.mask_bad, r.batches,
                r.cpu_fallback);
        else
            printf("%-14s %-13s %10.1f %10.1f %10.1f %9.1f %10.2g %10lld %6d\n", name, box, cpu_mv, k_mv, c_mv, gbs,
                   r.max_err, r.mask_bad, r.batches);
    }
    if (args.json) printf("], \"parity_ok\": %s}\n", rc ? "false" : "true");
    cd_gpu_destroy(ctx);
    if (rc) fprintf(stderr, "bench_warp: PARITY FAILED (or a write failed)\n");
    return rc;
}
