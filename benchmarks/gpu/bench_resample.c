/* bench_resample — the recipe resampling: Vulkan (cd_gpu_resample) against the C reference
 * (cd_resample), parity and speed, for orders 0, 1 and 3.
 *
 *   bench_resample [--size XxYxZ] [--zoom F] [--seconds S] [--threads N] [--json]
 *
 * The source: a float32 phantom (smooth blob, ramp, noise) of XxYxZ voxels (default 256x256x64) at
 * 1 x 1 x 3 mm; the target: the same field of view at spacing / F (default F = 1.5: 1.5^3 as many
 * voxels, as nnU-Net's median-spacing grids often are), cd_grid_for_spacing.
 *
 * Reported per order (Mvox/s = output voxels per second, 1 M = 1e6; medians of rounds):
 *   cpu N      cd_resample with N threads (--threads, default 1; 0 = all CPUs)
 *   gpu kernel the dispatch alone (GPU timestamps): what the device computes with the data resident
 *   gpu call   the whole cd_gpu_resample call: conversion (order 3: the host prefilter), copies to and
 *              from the device, the dispatch
 *   parity     max |gpu - cpu| / data range (orders 1, 3), voxels that differ (order 0)
 * Exit status 1 when parity fails (> 1e-4 of the range, or any nearest voxel differs). */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cirrdata/cirrdata.h>

#include "bench_time.h"

#define MAX_ROUNDS 1024

int main(int argc, char **argv) {
    int64_t size[3] = {256, 256, 64};
    double zoom = 1.5, seconds = 2.0;
    int threads = 1;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--size") && i + 1 < argc) {
            long long a, b, c;
            if (sscanf(argv[++i], "%lldx%lldx%lld", &a, &b, &c) != 3 || a < 1 || b < 1 || c < 1) {
                fprintf(stderr, "bench_resample: bad --size '%s' (XxYxZ)\n", argv[i]);
                return 2;
            }
            size[0] = a, size[1] = b, size[2] = c;
        } else if (!strcmp(argv[i], "--zoom") && i + 1 < argc) {
            zoom = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else {
            fprintf(stderr, "usage: bench_resample [--size XxYxZ] [--zoom F] [--seconds S] [--threads N] [--json]\n");
            return 2;
        }
    }
    if (!(zoom > 0) || !(seconds > 0) || threads < 0) {
        fprintf(stderr, "bench_resample: --zoom and --seconds must be > 0, --threads >= 0\n");
        return 2;
    }
    cd_error err;
    cd_volume *src = NULL;
    if (cd_volume_create(size, CD_DTYPE_FLOAT32, &src, &err) != CD_OK) {
        fprintf(stderr, "bench_resample: %s\n", err.message);
        return 1;
    }
    float *p = cd_volume_data(src);
    uint64_t rng = 88172645463325252ull;
    for (int64_t z = 0, i = 0; z < size[2]; z++)
        for (int64_t y = 0; y < size[1]; y++)
            for (int64_t x = 0; x < size[0]; x++, i++) {
                const double gx = (double)x / (double)size[0] - 0.45, gy = (double)y / (double)size[1] - 0.5,
                             gz = (double)z / (double)size[2] - 0.5;
                rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
                p[i] = (float)(1000 * exp(-5 * (gx * gx + gy * gy + gz * gz)) + 200 * gx +
                               20 * ((double)(rng >> 11) / 9007199254740992.0 - 0.5));
            }
    const double aff[4][4] = {{1, 0, 0, -128}, {0, 1, 0, -128}, {0, 0, 3, -90}, {0, 0, 0, 1}};
    cd_volume_set_affine(src, aff);
    const double sp[3] = {1.0 / zoom, 1.0 / zoom, 3.0 / zoom};
    cd_grid grid;
    if (cd_grid_for_spacing(src, sp, &grid, &err) != CD_OK) {
        fprintf(stderr, "bench_resample: %s\n", err.message);
        return 1;
    }
    const double nout = (double)grid.dims[0] * (double)grid.dims[1] * (double)grid.dims[2];
    cd_gpu_context *ctx = NULL;
    if (cd_gpu_create(NULL, &ctx, &err) != CD_OK)
        fprintf(stderr, "bench_resample: no GPU (%s): CPU only\n", err.message);
    int rc = 0;
    if (!json)
        printf("resample %lldx%lldx%lld -> %lldx%lldx%lld (%.1f Mvox out)%s%s\n", (long long)size[0],
               (long long)size[1], (long long)size[2], (long long)grid.dims[0], (long long)grid.dims[1],
               (long long)grid.dims[2], nout / 1e6, ctx ? ", device " : "", ctx ? cd_gpu_device(ctx)->name : "");
    else
        printf("[");
    static const cd_interp orders[3] = {CD_INTERP_NEAREST, CD_INTERP_LINEAR, CD_INTERP_CUBIC};
    for (int o = 0; o < 3; o++) {
        cd_resample_options ro;
        cd_resample_options_init(&ro);
        ro.interp = orders[o];
        ro.threads = threads;
        double tc[MAX_ROUNDS], tk[MAX_ROUNDS], tg[MAX_ROUNDS];
        int nc = 0, ng = 0;
        cd_volume *ref = NULL, *got = NULL;
        double t_end = now_ms() + seconds * 1e3;
        do {
            cd_volume_destroy(ref);
            const double t0 = now_ms();
            if (cd_resample(src, &grid, &ro, &ref, &err) != CD_OK) {
                fprintf(stderr, "bench_resample: %s\n", err.message);
                return 1;
            }
            tc[nc++] = now_ms() - t0;
        } while (now_ms() < t_end && nc < MAX_ROUNDS);
        double err_rel = 0;
        long long bad = 0;
        if (ctx) {
            t_end = now_ms() + seconds * 1e3;
            do {
                cd_volume_destroy(got);
                got = NULL;
                if (cd_gpu_resample(ctx, src, &grid, &ro, &got, &err) != CD_OK) {
                    fprintf(stderr, "bench_resample: %s\n", err.message);
                    return 1;
                }
                cd_gpu_timings t;
                cd_gpu_last_timings(ctx, &t);
                tk[ng] = t.kernel_ms;
                tg[ng++] = t.total_ms;
            } while (now_ms() < t_end && ng < MAX_ROUNDS);
            const float *a = cd_volume_data_const(ref), *b = cd_volume_data_const(got);
            float lo = INFINITY, hi = -INFINITY;
            double e = 0;
            for (size_t i = 0; i < cd_volume_count(ref); i++) {
                lo = fminf(lo, a[i]), hi = fmaxf(hi, a[i]);
                const double d = fabs((double)a[i] - (double)b[i]);
                e = d > e ? d : e;
                bad += a[i] != b[i];
            }
            err_rel = e / (hi > lo ? (double)hi - (double)lo : 1.0);
            if (o == 0 ? bad != 0 : !(err_rel <= 1e-4)) rc = 1;
        }
        const double c = median(tc, nc), k = ctx ? median(tk, ng) : 0, g = ctx ? median(tg, ng) : 0;
        if (json)
            printf("%s{\"order\": %d, \"out_voxels\": %.0f, \"cpu_threads\": %d, \"cpu_ms\": %.3f, \"gpu_kernel_ms\": "
                   "%.3f, \"gpu_call_ms\": %.3f, "
                   "\"cpu_mvox_s\": %.2f, \"gpu_kernel_mvox_s\": %.2f, \"gpu_call_mvox_s\": %.2f, \"max_err\": %.3g, "
                   "\"nearest_diff\": %lld}",
                   o ? ", " : "", (int)orders[o], nout, threads, c, k, g, nout / c / 1e3, k > 0 ? nout / k / 1e3 : 0,
                   g > 0 ? nout / g / 1e3 : 0, err_rel, bad);
        else
            printf("  order %d: cpu(%d thr) %8.1f Mvox/s | gpu kernel %8.1f Mvox/s | gpu call %8.1f Mvox/s | parity %s "
                   "%.2g%s\n",
                   (int)orders[o], threads, nout / c / 1e3, k > 0 ? nout / k / 1e3 : 0, g > 0 ? nout / g / 1e3 : 0,
                   o == 0 ? "diff voxels" : "max err", o == 0 ? (double)bad : err_rel, o == 0 ? "" : " of the range");
        cd_volume_destroy(ref);
        cd_volume_destroy(got);
    }
    if (json) printf("]\n");
    cd_gpu_destroy(ctx);
    cd_volume_destroy(src);
    return rc;
}
