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
 *   gpu kernel the dispatch alone, from GPU timestamps (median): what the device computes, with the
 *              data resident; comparable to torch grid_sample on CUDA tensors
 *   gpu call   the whole cd_gpu_aug_spatial call: host packing, copies to and from the device,
 *              dispatch, unpacking (median)
 *   bytes      the kernel's minimal traffic: source boxes and masks read once, outputs written once;
 *              GB/s = bytes / kernel time (1 GB = 1e9 bytes)
 *   parity     max |gpu - cpu| / data range of the images, and mask voxels that differ
 * --dump DIR writes the first sample of the first case (source box, transform, GPU output) for
 * benchmarks/gpu/torch_warp.py's convention check against torch.nn.functional.grid_sample.
 * Exit status 1 when parity fails (image error > 1e-4 of the range or any mask voxel differs). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cirrdata/cirrdata.h>

#define DEG (3.14159265358979323846 / 180.0)

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    if (n <= 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void transform(cd_aug_params *a, const double center[3]) {
    memset(a, 0, sizeof *a);
    const double rx = 10 * DEG, ry = 5 * DEG, rz = 15 * DEG, s = 1.1;
    const double Rx[3][3] = {{1, 0, 0}, {0, cos(rx), -sin(rx)}, {0, sin(rx), cos(rx)}};
    const double Ry[3][3] = {{cos(ry), 0, sin(ry)}, {0, 1, 0}, {-sin(ry), 0, cos(ry)}};
    const double Rz[3][3] = {{cos(rz), -sin(rz), 0}, {sin(rz), cos(rz), 0}, {0, 0, 1}};
    double t[3][3];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            t[i][j] = 0;
            for (int k = 0; k < 3; k++) t[i][j] += Ry[i][k] * Rx[k][j];
        }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double v = 0;
            for (int k = 0; k < 3; k++) v += Rz[i][k] * t[k][j];
            a->matrix[i][j] = v * s * (j == 0 ? -1.0 : 1.0);
        }
    memcpy(a->center, center, sizeof a->center);
    a->scale = s;
    a->rotation[0] = rx;
    a->rotation[1] = ry;
    a->rotation[2] = rz;
    a->mirror[0] = true;
    a->blur_truncate = 4;
}

typedef struct bcase {
    int b;
    int64_t patch[3];
} bcase;

typedef struct result {
    double cpu_ms, gpu_kernel_ms, gpu_call_ms, bytes, max_err;
    long long mask_bad;
    int cpu_fallback, batches;
    int64_t box[3];
} result;

static uint64_t g_rng = 88172645463325252ull;
static float noise(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) * (1.0 / 9007199254740992.0) - 0.5);
}

static int write_file(const char *dir, const char *name, const void *data, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        fprintf(stderr, "bench_warp: cannot write %s\n", path);
        if (f) fclose(f);
        return 1;
    }
    return fclose(f) != 0;
}

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
        transform(&params[i], center);
        int64_t lo[3], hi[3];
        cd_aug_source_box(&params[i], patch, lo, hi);
        int64_t nb = 1;
        for (int k = 0; k < 3; k++) {
            items[i].box_lo[k] = lo[k];
            items[i].box_shape[k] = hi[k] - lo[k];
            nb *= hi[k] - lo[k];
            r->box[k] = hi[k] - lo[k];
        }
        float *src = malloc(sizeof(float) * (size_t)nb);
        uint8_t *m = malloc((size_t)nb);
        const int64_t *s = items[i].box_shape;
        for (int64_t x = 0; x < s[0]; x++)
            for (int64_t y = 0; y < s[1]; y++)
                for (int64_t z = 0; z < s[2]; z++) {
                    const double gx = (double)(x + lo[0]) / (double)patch[0], gy = (double)(y + lo[1]) / (double)patch[1],
                                 gz = (double)(z + lo[2]) / (double)patch[2];
                    const double d = (gx - 0.75) * (gx - 0.75) + (gy - 0.75) * (gy - 0.75) + 0.5 * (gz - 0.75) * (gz - 0.75);
                    const int64_t v = (x * s[1] + y) * s[2] + z;
                    src[v] = (float)(1000.0 * exp(-4.0 * d) + 200.0 * sin(9.0 * gx) * cos(7.0 * gy)) + 20.0f * noise();
                    m[v] = d < 0.1 ? 1 : d < 0.2 ? 2 : 0;
                }
        items[i].src = src;
        items[i].mask_src = m;
        items[i].out_img = malloc(sizeof(float) * (size_t)np);
        items[i].out_mask = malloc((size_t)np);
        ref[i] = malloc(sizeof(float) * (size_t)np);
        refm[i] = malloc((size_t)np);
        r->bytes += (double)nb * 5.0 + (double)np * 5.0;
    }
    cd_error err;
    int rc = 0;
    /* CPU reference (also the parity reference) */
    double t[4096];
    int nt = 0;
    const double t_end = now_ms() + seconds * 1e3;
    do {
        const double t0 = now_ms();
        for (int i = 0; i < c->b; i++)
            if (cd_aug_apply_spatial(&params[i], items[i].src, items[i].mask_src, 1, items[i].box_lo, items[i].box_shape, patch, ref[i],
                                     refm[i], &err) != CD_OK) {
                fprintf(stderr, "bench_warp: %s\n", err.message);
                return 1;
            }
        t[nt++] = now_ms() - t0;
    } while (cpu && now_ms() < t_end && nt < 4096);
    r->cpu_ms = cpu ? median(t, nt) : 0;
    if (ctx) {
        double tk[4096], tc[4096];
        int n = 0;
        for (int w = 0; w < 2; w++) /* warm-up: arenas, pipeline, caches */
            if (cd_gpu_aug_spatial(ctx, params, c->b, items, 1, patch, &err) != CD_OK) {
                fprintf(stderr, "bench_warp: %s\n", err.message);
                return 1;
            }
        const double g_end = now_ms() + seconds * 1e3;
        do {
            if (cd_gpu_aug_spatial(ctx, params, c->b, items, 1, patch, &err) != CD_OK) {
                fprintf(stderr, "bench_warp: %s\n", err.message);
                return 1;
            }
            cd_gpu_timings tm;
            cd_gpu_last_timings(ctx, &tm);
            tk[n] = tm.kernel_ms;
            tc[n] = tm.total_ms;
            r->cpu_fallback = tm.cpu_fallback;
            r->batches = tm.batches;
            n++;
        } while (now_ms() < g_end && n < 4096);
        r->gpu_kernel_ms = median(tk, n);
        r->gpu_call_ms = median(tc, n);
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
            int len = snprintf(meta, sizeof meta,
                               "{\"patch\": [%lld, %lld, %lld], \"box_lo\": [%lld, %lld, %lld], \"box_shape\": [%lld, %lld, %lld], "
                               "\"center\": [%.17g, %.17g, %.17g], \"matrix\": [[%.17g, %.17g, %.17g], [%.17g, %.17g, %.17g], [%.17g, %.17g, %.17g]]}\n",
                               (long long)patch[0], (long long)patch[1], (long long)patch[2], (long long)items[0].box_lo[0],
                               (long long)items[0].box_lo[1], (long long)items[0].box_lo[2], (long long)items[0].box_shape[0],
                               (long long)items[0].box_shape[1], (long long)items[0].box_shape[2], a->center[0], a->center[1], a->center[2],
                               a->matrix[0][0], a->matrix[0][1], a->matrix[0][2], a->matrix[1][0], a->matrix[1][1], a->matrix[1][2],
                               a->matrix[2][0], a->matrix[2][1], a->matrix[2][2]);
            const int64_t nb = items[0].box_shape[0] * items[0].box_shape[1] * items[0].box_shape[2];
            rc |= write_file(dump, "warp_meta.json", meta, (size_t)len);
            rc |= write_file(dump, "warp_src.f32", items[0].src, sizeof(float) * (size_t)nb);
            rc |= write_file(dump, "warp_gpu.f32", items[0].out_img, sizeof(float) * (size_t)np);
            rc |= write_file(dump, "warp_cpu.f32", ref[0], sizeof(float) * (size_t)np);
        }
    }
    for (int i = 0; i < c->b; i++) {
        free((void *)items[i].src);
        free((void *)items[i].mask_src);
        free(items[i].out_img);
        free(items[i].out_mask);
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
    const char *cases = "2x96x96x32,1x256x256x64", *dump = NULL;
    double seconds = 2.0;
    bool cpu = true, gpu = true, json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cases") && i + 1 < argc) cases = argv[++i];
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--dump") && i + 1 < argc) dump = argv[++i];
        else if (!strcmp(argv[i], "--cpu-only")) gpu = false;
        else if (!strcmp(argv[i], "--gpu-only")) cpu = false;
        else if (!strcmp(argv[i], "--json")) json = true;
        else {
            fprintf(stderr, "usage: bench_warp [--cases BxXxYxZ,...] [--seconds S] [--cpu-only | --gpu-only] [--json] [--dump DIR]\n");
            return 2;
        }
    }
    bcase cs[16];
    int nc = 0;
    for (const char *p = cases; *p && nc < 16;) {
        long long b, x, y, z;
        int used = 0;
        if (sscanf(p, "%lldx%lldx%lldx%lld%n", &b, &x, &y, &z, &used) != 4 || b < 1 || b > 256 || x < 1 || y < 1 || z < 1) {
            fprintf(stderr, "bench_warp: bad case '%s' (want BxXxYxZ)\n", p);
            return 2;
        }
        cs[nc++] = (bcase){(int)b, {x, y, z}};
        p += used;
        if (*p == ',') p++;
    }
    cd_gpu_context *ctx = NULL;
    cd_error err;
    if (gpu && cd_gpu_create(NULL, &ctx, &err) != CD_OK) {
        fprintf(stderr, "bench_warp: no GPU path: %s\n", err.message);
        ctx = NULL;
    }
    const cd_gpu_device_info *d = ctx ? cd_gpu_device(ctx) : NULL;
    int rc = 0;
    if (json)
        printf("{\"device\": \"%s\", \"device_type\": \"%s\", \"shared_memory\": %s, \"cases\": [", d ? d->name : "",
               d ? cd_gpu_device_type_name(d->type) : "", ctx && cd_gpu_shared_memory(ctx) ? "true" : "false");
    else
        printf("device: %s\n%-14s %-13s %10s %10s %10s %9s %10s %10s %6s\n", d ? d->name : "(none)", "case", "box", "cpu Mv/s", "kern Mv/s",
               "call Mv/s", "kern GB/s", "max err", "mask diff", "subm");
    for (int i = 0; i < nc; i++) {
        result r;
        rc |= run_case(ctx, &cs[i], seconds, cpu, i == 0 ? dump : NULL, &r);
        const double vox = (double)cs[i].b * (double)(cs[i].patch[0] * cs[i].patch[1] * cs[i].patch[2]);
        const double cpu_mv = r.cpu_ms > 0 ? vox / r.cpu_ms * 1e-3 : 0, k_mv = r.gpu_kernel_ms > 0 ? vox / r.gpu_kernel_ms * 1e-3 : 0,
                     c_mv = r.gpu_call_ms > 0 ? vox / r.gpu_call_ms * 1e-3 : 0, gbs = r.gpu_kernel_ms > 0 ? r.bytes / r.gpu_kernel_ms * 1e-6 : 0;
        char name[64], box[64];
        snprintf(name, sizeof name, "%dx%lldx%lldx%lld", cs[i].b, (long long)cs[i].patch[0], (long long)cs[i].patch[1], (long long)cs[i].patch[2]);
        snprintf(box, sizeof box, "%lldx%lldx%lld", (long long)r.box[0], (long long)r.box[1], (long long)r.box[2]);
        if (json)
            printf("%s{\"case\": \"%s\", \"batch\": %d, \"patch\": [%lld, %lld, %lld], \"box\": [%lld, %lld, %lld], \"voxels\": %.0f, "
                   "\"bytes\": %.0f, \"cpu_ms\": %.6g, \"gpu_kernel_ms\": %.6g, \"gpu_call_ms\": %.6g, \"cpu_mvox_s\": %.6g, "
                   "\"gpu_kernel_mvox_s\": %.6g, \"gpu_call_mvox_s\": %.6g, \"gpu_kernel_gb_s\": %.6g, \"max_err\": %.3g, "
                   "\"mask_mismatch\": %lld, \"submissions\": %d, \"cpu_fallback\": %d}",
                   i ? ", " : "", name, cs[i].b, (long long)cs[i].patch[0], (long long)cs[i].patch[1], (long long)cs[i].patch[2],
                   (long long)r.box[0], (long long)r.box[1], (long long)r.box[2], vox, r.bytes, r.cpu_ms, r.gpu_kernel_ms, r.gpu_call_ms,
                   cpu_mv, k_mv, c_mv, gbs, r.max_err, r.mask_bad, r.batches, r.cpu_fallback);
        else
            printf("%-14s %-13s %10.1f %10.1f %10.1f %9.1f %10.2g %10lld %6d\n", name, box, cpu_mv, k_mv, c_mv, gbs, r.max_err, r.mask_bad,
                   r.batches);
    }
    if (json) printf("], \"parity_ok\": %s}\n", rc ? "false" : "true");
    cd_gpu_destroy(ctx);
    if (rc) fprintf(stderr, "bench_warp: PARITY FAILED (or a write failed)\n");
    return rc;
}
