/* Pieces the augmentation benchmarks (bench_warp, bench_augment) share: timing and medians (bench_time.h), the
 * command line (--cases/--seconds/--cpu-only/--gpu-only/--json/--dump), the fixed transform, the
 * phantom source boxes and the report header. libc and libm only, so the binaries stay
 * dependency-free (see meson.build). */
#ifndef CD_BENCH_COMMON_H
#define CD_BENCH_COMMON_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cirrdata/cirrdata.h>

#include "bench_time.h"

#define DEG (3.14159265358979323846 / 180.0)
#define BENCH_MAX_CASES 16
#define BENCH_MAX_ROUNDS 4096

/* Rotation 10/5/15 degrees about x/y/z, scale 1.1, mirror along x, about center; no intensity op. */
static void bench_transform(cd_aug_params *a, const double center[3]) {
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

/* The phantom's noise: xorshift64, uniform in [-0.5, 0.5). */
static uint64_t g_rng = 88172645463325252ull;
static float noise(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) * (1.0 / 9007199254740992.0) - 0.5);
}

/* Source voxel value: peak * exp(-4 d) + wave * sin(9 gx) cos(7 gy) + offset, plus noise_amp * noise(). */
typedef struct bench_phantom {
    double peak, wave, offset;
    float noise_amp;
} bench_phantom;

/* Fills item's source box (cd_aug_source_box of a for patch) with the phantom and a 3-label mask and
 * allocates its outputs; the box's shape goes to box[3]. Returns the box's voxel count. */
static int64_t bench_fill_item(cd_gpu_spatial_item *item, const cd_aug_params *a, const int64_t patch[3],
                               const bench_phantom *ph, int64_t box[3]) {
    const int64_t np = patch[0] * patch[1] * patch[2];
    int64_t lo[3], hi[3];
    cd_aug_source_box(a, patch, lo, hi);
    int64_t nb = 1;
    for (int k = 0; k < 3; k++) {
        item->box_lo[k] = lo[k];
        item->box_shape[k] = hi[k] - lo[k];
        nb *= hi[k] - lo[k];
        box[k] = hi[k] - lo[k];
    }
    float *src = malloc(sizeof(float) * (size_t)nb);
    uint8_t *m = malloc((size_t)nb);
    if (!src || !m) {
        fprintf(stderr, "out of memory for a %lld-voxel source box\n", (long long)nb);
        exit(1);
    }
    const int64_t *s = item->box_shape;
    for (int64_t x = 0; x < s[0]; x++)
        for (int64_t y = 0; y < s[1]; y++)
            for (int64_t z = 0; z < s[2]; z++) {
                const double gx = (double)(x + lo[0]) / (double)patch[0], gy = (double)(y + lo[1]) / (double)patch[1],
                             gz = (double)(z + lo[2]) / (double)patch[2];
                const double d =
                    (gx - 0.75) * (gx - 0.75) + (gy - 0.75) * (gy - 0.75) + 0.5 * (gz - 0.75) * (gz - 0.75);
                const int64_t v = (x * s[1] + y) * s[2] + z;
                src[v] = (float)(ph->peak * exp(-4.0 * d) + ph->wave * sin(9.0 * gx) * cos(7.0 * gy) + ph->offset) +
                         ph->noise_amp * noise();
                m[v] = d < 0.1 ? 1 : d < 0.2 ? 2 : 0;
            }
    item->src = src;
    item->mask_src = m;
    item->out_img = malloc(sizeof(float) * (size_t)np);
    item->out_mask = malloc((size_t)np);
    return nb;
}

static void bench_free_item(cd_gpu_spatial_item *item) {
    free((void *)item->src);
    free((void *)item->mask_src);
    free(item->out_img);
    free(item->out_mask);
}

static int write_file(const char *prog, const char *dir, const char *name, const void *data, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        fprintf(stderr, "%s: cannot write %s\n", prog, path);
        if (f) fclose(f);
        return 1;
    }
    return fclose(f) != 0;
}

typedef struct bcase {
    int b;
    int64_t patch[3];
} bcase;

typedef struct bench_args {
    const char *prog, *cases, *dump;
    double seconds;
    bool cpu, gpu, json;
    bcase cs[BENCH_MAX_CASES];
    int nc;
} bench_args;

/* Parses the common command line into a (a->prog and a->cases, the default cases, set by the caller);
 * each extent of a case at most max_extent. Returns 0, or 2 after a usage message. */
static int bench_parse_args(bench_args *a, int argc, char **argv, int64_t max_extent) {
    a->seconds = 2.0;
    a->cpu = a->gpu = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cases") && i + 1 < argc)
            a->cases = argv[++i];
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            a->seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--dump") && i + 1 < argc)
            a->dump = argv[++i];
        else if (!strcmp(argv[i], "--cpu-only"))
            a->gpu = false;
        else if (!strcmp(argv[i], "--gpu-only"))
            a->cpu = false;
        else if (!strcmp(argv[i], "--json"))
            a->json = true;
        else {
            fprintf(stderr,
                    "usage: %s [--cases BxXxYxZ,...] [--seconds S] [--cpu-only | --gpu-only] [--json] [--dump DIR]\n",
                    a->prog);
            return 2;
        }
    }
    a->nc = 0;
    for (const char *p = a->cases; *p && a->nc < BENCH_MAX_CASES;) {
        long long b, x, y, z;
        int used = 0;
        if (sscanf(p, "%lldx%lldx%lldx%lld%n", &b, &x, &y, &z, &used) != 4 || b < 1 || b > 256 || x < 1 || y < 1 ||
            z < 1 || x > max_extent || y > max_extent || z > max_extent) {
            fprintf(stderr, "%s: bad case '%s' (want BxXxYxZ)\n", a->prog, p);
            return 2;
        }
        a->cs[a->nc++] = (bcase){(int)b, {x, y, z}};
        p += used;
        if (*p == ',') p++;
    }
    return 0;
}

/* Parses the command line, creates the GPU context unless --cpu-only or there is no device (then *ctx
 * is NULL: CPU columns only) and prints the report's start: the JSON object's device fields (the
 * "cases" array opened) or the text's device line. Returns 0, or 2 after a usage message. */
static int bench_start(bench_args *a, int argc, char **argv, int64_t max_extent, cd_gpu_context **ctx) {
    *ctx = NULL;
    if (bench_parse_args(a, argc, argv, max_extent)) return 2;
    cd_error err;
    if (a->gpu && cd_gpu_create(NULL, ctx, &err) != CD_OK) {
        fprintf(stderr, "%s: no GPU path: %s\n", a->prog, err.message);
        *ctx = NULL;
    }
    const cd_gpu_device_info *d = *ctx ? cd_gpu_device(*ctx) : NULL;
    if (a->json)
        printf("{\"device\": \"%s\", \"device_type\": \"%s\", \"shared_memory\": %s, \"kernel_clock\": \"device: "
               "Vulkan timestamps\", "
               "\"call_clock\": \"host: CLOCK_MONOTONIC, host memory to host memory\", \"cases\": [",
               d ? d->name : "", d ? cd_gpu_device_type_name(d->type) : "",
               *ctx && cd_gpu_shared_memory(*ctx) ? "true" : "false");
    else
        printf("device: %s\n", d ? d->name : "(none)");
    return 0;
}

typedef cd_status (*bench_gpu_fn)(cd_gpu_context *ctx, const cd_aug_params *params, int n,
                                  const cd_gpu_spatial_item *items, uint32_t channels, const int64_t patch[3],
                                  cd_error *err);

/* Two clocks, each compared only with a peer on the same clock (benchmarks/gpu/README.md):
 *   kernel_ms  the device's: Vulkan timestamps written in the command buffer around the dispatches
 *              (data already on the device); torch's peer: CUDA events around CUDA-graph replays
 *   call_ms    the host's: CLOCK_MONOTONIC (now_ms) around the whole call, from host memory to host
 *              memory (packing, copies both ways, dispatch, wait, unpacking); torch's peer:
 *              time.perf_counter (CLOCK_MONOTONIC) around host tensors -> device -> compute -> host */
typedef struct bench_gpu_times {
    double kernel_ms, call_ms; /* medians over the calls */
    int cpu_fallback, batches; /* of the last call */
} bench_gpu_times;

/* fn on one batch: two warm-up calls (arenas, pipelines, caches), then calls until `seconds` have
 * passed. Returns 0, or 1 after a message "prog: what: error" (what may be NULL) when a call fails. */
static int bench_gpu_rounds(const char *prog, const char *what, bench_gpu_fn fn, cd_gpu_context *ctx,
                            const cd_aug_params *params, int b, const cd_gpu_spatial_item *items,
                            const int64_t patch[3], double seconds, bench_gpu_times *out) {
    static double tk[BENCH_MAX_ROUNDS], tc[BENCH_MAX_ROUNDS];
    cd_error err;
    int n = 0;
    memset(out, 0, sizeof *out);
    for (int w = 0; w < 2; w++)
        if (fn(ctx, params, b, items, 1, patch, &err) != CD_OK) goto failed;
    const double g_end = now_ms() + seconds * 1e3;
    do {
        const double t0 = now_ms();
        if (fn(ctx, params, b, items, 1, patch, &err) != CD_OK) goto failed;
        tc[n] = now_ms() - t0;
        cd_gpu_timings tm;
        cd_gpu_last_timings(ctx, &tm);
        tk[n] = tm.kernel_ms;
        out->cpu_fallback = tm.cpu_fallback;
        out->batches = tm.batches;
        n++;
    } while (now_ms() < g_end && n < BENCH_MAX_ROUNDS);
    out->kernel_ms = median(tk, n);
    out->call_ms = median(tc, n);
    return 0;
failed:
    fprintf(stderr, "%s: %s%s%s\n", prog, what ? what : "", what ? ": " : "", err.message);
    return 1;
}

/* "BxXxYxZ" of a case and "XxYxZ" of its source box. */
static void bench_case_names(const bcase *c, const int64_t box[3], char name[64], char boxs[64]) {
    snprintf(name, 64, "%dx%lldx%lldx%lld", c->b, (long long)c->patch[0], (long long)c->patch[1],
             (long long)c->patch[2]);
    snprintf(boxs, 64, "%lldx%lldx%lld", (long long)box[0], (long long)box[1], (long long)box[2]);
}

/* Mvox/s of vox voxels in ms milliseconds; 0 when not measured. */
static double mvox_s(double vox, double ms) { return ms > 0 ? vox / ms * 1e-3 : 0; }

#endif
