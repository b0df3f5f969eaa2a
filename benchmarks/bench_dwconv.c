/* Depthwise convolution layer timing (benchmarks/run_dwconv.sh drives it).
 *
 *   bench_dwconv --layer C,H,W,K,S,R [--device cpu|vulkan] [--threads T] [--batch N] [--iters I]
 *                [--warmup W] [--json]
 *
 * One depthwise conv2d (C channels in and out, groups C, K x K kernel, stride S, padding K/2, a bias,
 * ReLU fused when R is 1) on a random N x C x H x W batch, run as a one-node graph by the C executor
 * (cd_nn_ref_run with T threads) or the Vulkan executor (cd_nn_vk_run on the default device: lavapipe
 * on a CPU-only machine). Links the internal library: the layer alone, no model-file round trip.
 * Which kernel runs is the library's choice: the depthwise kernel, or the grouped GEMM when
 * CIRRDATA_NN_NO_DWCONV is set (the old path, for comparison); "path" in the output says which (on
 * Vulkan, as the executor reports it). Each of W untimed then I timed calls is timed with
 * CLOCK_MONOTONIC; prints one line, or with --json one JSON object: every timed call, best, median.
 * Exit status 1 on a library error, 2 on wrong usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/graph.h"
#include "cirrdata/gpu.h"
#include "nn/vk_exec.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int usage(void) {
    fprintf(stderr, "usage: bench_dwconv --layer C,H,W,K,S,R [--device cpu|vulkan] [--threads T] [--batch N] "
                    "[--iters I] [--warmup W] [--json]\n");
    return 2;
}

static float *rand_floats(int64_t n, float scale, uint64_t *s) {
    float *a = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; a && i < n; i++) {
        *s = *s * 6364136223846793005ull + 1442695040888963407ull;
        a[i] = scale * ((float)(*s >> 40) / (float)(1 << 24) * 2.0f - 1.0f);
    }
    return a;
}

int main(int argc, char **argv) {
    int C = 0, H = 0, W = 0, K = 0, S = 0, R = 0, threads = 2, json = 0, vulkan = 0;
    long batch = 8, iters = 5, warmup = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
            continue;
        }
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        i++;
        if (strcmp(a, "--layer") == 0) {
            if (sscanf(v, "%d,%d,%d,%d,%d,%d", &C, &H, &W, &K, &S, &R) != 6) return usage();
        } else if (strcmp(a, "--device") == 0) {
            if (strcmp(v, "cpu") && strcmp(v, "vulkan")) return usage();
            vulkan = strcmp(v, "vulkan") == 0;
        } else if (strcmp(a, "--threads") == 0) {
            threads = atoi(v);
        } else if (strcmp(a, "--batch") == 0) {
            batch = atol(v);
        } else if (strcmp(a, "--iters") == 0) {
            iters = atol(v);
        } else if (strcmp(a, "--warmup") == 0) {
            warmup = atol(v);
        } else
            return usage();
    }
    if (C < 1 || H < 1 || W < 1 || K < 1 || K > 64 || S < 1 || batch < 1 || iters < 1 || iters > 1000 || warmup < 0)
        return usage();

    /* the graph: input -> depthwise conv (as graph.c would leave it after simplification) */
    cd_nn_graph *g = calloc(1, sizeof *g);
    if (!g || !(g->nodes = calloc(2, sizeof *g->nodes))) return 1;
    g->count = 2;
    g->in_channels = C;
    snprintf(g->source, sizeof g->source, "bench_dwconv");
    snprintf(g->arch, sizeof g->arch, "dwconv");
    cd_nn_node *in = &g->nodes[0], *nd = &g->nodes[1];
    in->op = CD_NN_INPUT;
    in->in[0] = in->in[1] = -1;
    in->out_ch = C;
    snprintf(in->name, sizeof in->name, "x");
    nd->op = CD_NN_CONV2D;
    nd->in[0] = 0;
    nd->in[1] = -1;
    nd->n_in = 1;
    snprintf(nd->name, sizeof nd->name, "dw");
    nd->kh = nd->kw = K;
    nd->sh = nd->sw = S;
    nd->ph = nd->pw = K / 2;
    nd->dh = nd->dw = 1;
    nd->groups = nd->in_ch = nd->out_ch = C;
    nd->relu = R != 0;
    uint64_t seed = 1;
    nd->weight = rand_floats((int64_t)C * K * K, 1.0f / (float)K, &seed);
    nd->bias = rand_floats(C, 0.1f, &seed);
    g->output = 1;
    g->classes = C;
    cd_error err;
    if (!nd->weight || !nd->bias || cd_nn_graph_shape(g, batch, H, W, 0, &err) != CD_OK) {
        fprintf(stderr, "bench_dwconv: cannot shape the layer\n");
        cd_nn_graph_free(g);
        return 1;
    }
    const int64_t nin = batch * C * H * W, nout = batch * C * nd->shape.h * nd->shape.w;
    float *x = rand_floats(nin, 2.0f, &seed), *y = malloc((size_t)nout * sizeof(float));
    float *arena = vulkan ? NULL : calloc((size_t)g->arena_floats, sizeof(float));
    cd_gpu_context *ctx = NULL;
    cd_nn_vk *vk = NULL;
    char device[300] = "C executor";
    cd_status st = x && y && (vulkan || arena) ? CD_OK : CD_ERR_NOMEM;
    if (st == CD_OK && vulkan) {
        st = cd_gpu_create(NULL, &ctx, &err);
        if (st == CD_OK) st = cd_nn_vk_create(ctx, g, false, NULL, &vk, &err);
        if (st == CD_OK) snprintf(device, sizeof device, "Vulkan (%s)", cd_gpu_device(ctx)->name);
    }
    double *t = calloc((size_t)iters, sizeof *t);
    for (long i = 0; st == CD_OK && t && i < warmup + iters; i++) {
        const double t0 = now();
        if (vulkan) {
            st = cd_nn_vk_run(vk, g, x, y, &err);
        } else {
            memcpy(arena + g->input_offset, x, (size_t)nin * sizeof(float));
            st = cd_nn_ref_run(g, arena, threads, &err);
        }
        if (i >= warmup) t[i - warmup] = now() - t0;
    }
    const char *path = cd_nn_dwconv_disabled() ? "gemm" : "dwconv";
    if (st == CD_OK && vulkan) path = cd_nn_vk_depthwise_nodes(vk) == 1 ? "dwconv" : "gemm";
    if (st != CD_OK || !t) {
        fprintf(stderr, "bench_dwconv: %s\n", t ? err.message : "out of memory");
    } else {
        qsort(t, (size_t)iters, sizeof *t, cmp_double);
        const double med = iters % 2 ? t[iters / 2] : (t[iters / 2 - 1] + t[iters / 2]) / 2;
        if (json) {
            printf("{\"tool\":\"ours\",\"device\":\"%s\",\"path\":\"%s\",\"layer\":\"%d,%d,%d,%d,%d,%d\",\"batch\":%ld,"
                   "\"threads\":%d,\"warmup\":%ld,\"times_s\":[",
                   device, path, C, H, W, K, S, R, batch, vulkan ? 0 : threads, warmup);
            for (long i = 0; i < iters; i++) printf("%s%.6f", i ? "," : "", t[i]);
            printf("],\"best_s\":%.6f,\"median_s\":%.6f}\n", t[0], med);
        } else
            printf("layer=%d,%d,%d,%d,%d,%d device=\"%s\" path=%s batch=%ld iters=%ld best_s=%.6f median_s=%.6f\n", C,
                   H, W, K, S, R, device, path, batch, iters, t[0], med);
    }
    cd_nn_vk_destroy(vk);
    if (ctx) cd_gpu_destroy(ctx);
    cd_nn_graph_free(g);
    free(t);
    free(x);
    free(y);
    free(arena);
    return st == CD_OK ? 0 : 1;
}
