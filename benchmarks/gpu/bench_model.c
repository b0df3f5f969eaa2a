/* Inference benchmark of one model file on Vulkan (not a test): cd_model_predict with
 * CD_DEVICE_VULKAN, end to end (host input in, logits out), and the executor's dispatches alone from
 * GPU timestamps (cd_nn_vk_last_kernel_ms, through the internal executor on the same graph).
 * Optionally checks the Vulkan logits against the C executor on the first few images.
 *
 *   bench_model --model FILE [--batch 32] [--size 256] [--iters 10] [--warmup 2] [--seed 1]
 *               [--input-out FILE] [--logits-out FILE] [--cpu-check K] [--threads T] [--fp16]
 *
 * Prints one JSON object on stdout (times in ms: the median and the minimum over --iters calls); the
 * input (batch, in_channels, size, size) is uniform in [-1, 1) from --seed, written raw float32 to
 * --input-out (so that torch_model.py runs the same images) and the logits to --logits-out.
 * --fp16: float16 storage of weights and activations (cd_model_options.fp16; float32 arithmetic);
 * "fp16" in the JSON says whether the device allowed it (else the run is float32, and says so).
 * Exit status 0; 1 when Vulkan is not used or a call fails; 2 for wrong usage; 3 when --cpu-check
 * differs by more than 1e-4 of the largest logit (1e-2 with float16 storage: one binary16 rounding,
 * 2^-11, per stored value, ~25 of them in a ResNet; tests/python/test_model_torch.py's FP16_TOL). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cirrdata/cirrdata.h>

#include "bench_time.h"
#include "nn/graph.h"
#include "nn/safetensors.h"
#include "nn/vk_exec.h"

static void json_str(const char *s) {
    putchar('"');
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static int write_raw(const char *path, const float *a, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(a, sizeof(float), n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* Kernel times through the internal executor (the model does not expose them). */
static cd_status kernel_times(const char *path, int64_t n, int64_t size, bool fp16, const float *x, int warmup,
                              int iters, double *kms, double *wall, cd_error *err) {
    cd_st_file *f = NULL;
    cd_nn_graph *g = NULL;
    cd_gpu_context *ctx = NULL;
    cd_nn_vk *vk = NULL;
    float *out = NULL;
    cd_status st = cd_st_open(path, &f, err);
    if (st == CD_OK) st = cd_nn_graph_load(f, &g, err);
    cd_st_close(f);
    if (st == CD_OK) st = cd_nn_graph_shape(g, n, size, size, 0, err);
    if (st == CD_OK) st = cd_gpu_create(NULL, &ctx, err);
    if (st == CD_OK) st = cd_nn_vk_create(ctx, g, fp16, NULL, &vk, err);
    if (st == CD_OK) {
        const cd_nn_shape *os = &g->nodes[g->output].shape;
        out = malloc(sizeof(float) * (size_t)(os->n * os->c * os->h * os->w));
        if (!out) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < warmup + iters && st == CD_OK; i++) {
        double t0 = now_ms();
        st = cd_nn_vk_run(vk, g, x, out, err);
        if (i >= warmup) {
            kms[i - warmup] = cd_nn_vk_last_kernel_ms(vk);
            wall[i - warmup] = now_ms() - t0;
        }
    }
    free(out);
    cd_nn_vk_destroy(vk);
    cd_gpu_destroy(ctx);
    cd_nn_graph_free(g);
    return st;
}

static void usage(void) {
    fprintf(stderr,
            "usage: bench_model --model FILE [--batch 32] [--size 256] [--iters 10] [--warmup 2] [--seed 1]\n"
            "                   [--input-out FILE] [--logits-out FILE] [--cpu-check K] [--threads T] [--fp16]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *model = NULL, *input_out = NULL, *logits_out = NULL;
    long batch = 32, size = 256, iters = 10, warmup = 2, cpu_check = 0, threads = 0;
    unsigned long long seed = 1;
    bool fp16 = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--fp16")) {
            fp16 = true;
            continue;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--batch"))
            batch = atol(v);
        else if (!strcmp(a, "--size"))
            size = atol(v);
        else if (!strcmp(a, "--iters"))
            iters = atol(v);
        else if (!strcmp(a, "--warmup"))
            warmup = atol(v);
        else if (!strcmp(a, "--seed"))
            seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--input-out"))
            input_out = v;
        else if (!strcmp(a, "--logits-out"))
            logits_out = v;
        else if (!strcmp(a, "--cpu-check"))
            cpu_check = atol(v);
        else if (!strcmp(a, "--threads"))
            threads = atol(v);
        else
            usage();
        i++;
    }
    if (!model || batch < 1 || batch > 4096 || size < 8 || size > 4096 || iters < 1 || iters > 100000 || warmup < 0 ||
        cpu_check < 0)
        usage();
    if (cpu_check > batch) cpu_check = batch;

    cd_error err;
    cd_model *m = NULL;
    cd_model_options o;
    memset(&o, 0, sizeof o);
    o.device = CD_DEVICE_VULKAN;
    o.threads = (int)threads;
    o.fp16 = fp16;
    o.max_arena_bytes = (uint64_t)64 << 30;
    double t0 = now_ms();
    cd_status st = cd_model_open(model, &o, &m, &err);
    const double open_ms = now_ms() - t0;
    if (st != CD_OK || cd_model_device_used(m) != CD_DEVICE_VULKAN) {
        fprintf(stderr, "bench_model: %s: %s\n", model, st != CD_OK ? err.message : "Vulkan is not in use");
        printf("{\"model\": ");
        json_str(model);
        printf(", \"device\": \"\", \"error\": ");
        json_str(st != CD_OK ? err.message : cd_model_device_name(m));
        printf("}\n");
        cd_model_close(m);
        return 1;
    }
    const int64_t C = cd_model_in_channels(m), K = cd_model_classes(m);
    const size_t nin = (size_t)(batch * C * size * size), nout = (size_t)(batch * K);
    float *x = malloc(nin * sizeof(float)), *logits = malloc(nout * sizeof(float));
    double *call = calloc((size_t)iters, sizeof(double)), *kms = calloc((size_t)iters, sizeof(double)),
           *wall = calloc((size_t)iters, sizeof(double));
    if (!x || !logits || !call || !kms || !wall) {
        fprintf(stderr, "bench_model: out of memory\n");
        return 1;
    }
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < nin; i++) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        x[i] = (float)((double)((s * 0x2545F4914F6CDD1Dull) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
    }
    if (input_out && write_raw(input_out, x, nin)) fprintf(stderr, "bench_model: cannot write %s\n", input_out);

    t0 = now_ms();
    st = cd_model_predict(m, x, batch, size, size, logits, &err); /* plans, records, runs */
    const double first_ms = now_ms() - t0;
    for (long i = 0; i < warmup && st == CD_OK; i++) st = cd_model_predict(m, x, batch, size, size, logits, &err);
    for (long i = 0; i < iters && st == CD_OK; i++) {
        t0 = now_ms();
        st = cd_model_predict(m, x, batch, size, size, logits, &err);
        call[i] = now_ms() - t0;
    }
    if (st != CD_OK) {
        fprintf(stderr, "bench_model: %s: %s\n", model, err.message);
        return 1;
    }
    if (logits_out && write_raw(logits_out, logits, nout))
        fprintf(stderr, "bench_model: cannot write %s\n", logits_out);
    char device[700];
    snprintf(device, sizeof device, "%s", cd_model_device_name(m));
    const size_t dl = strlen(device);
    const bool fp16_used = dl >= 6 && !strcmp(device + dl - 6, "(fp16)"); /* cd_model_device_name's convention */
    char arch[64];
    snprintf(arch, sizeof arch, "%s", cd_model_arch(m));
    cd_model_close(m);

    /* the C executor on the first images */
    double cpu_rel = -1;
    if (cpu_check > 0) {
        cd_model *mc = NULL;
        o.device = CD_DEVICE_CPU;
        float *lc = malloc((size_t)(cpu_check * K) * sizeof(float));
        st = lc ? cd_model_open(model, &o, &mc, &err) : CD_ERR_NOMEM;
        if (st == CD_OK) st = cd_model_predict(mc, x, cpu_check, size, size, lc, &err);
        if (st != CD_OK) {
            fprintf(stderr, "bench_model: CPU check: %s\n", err.message);
            return 1;
        }
        double dmax = 0, rmax = 0;
        for (int64_t i = 0; i < cpu_check * K; i++) {
            dmax = fmax(dmax, fabs((double)logits[i] - (double)lc[i]));
            rmax = fmax(rmax, fabs((double)lc[i]));
        }
        cpu_rel = rmax > 0 ? dmax / rmax : (dmax > 0 ? INFINITY : 0);
        cd_model_close(mc);
        free(lc);
    }

    st = kernel_times(model, batch, size, fp16_used, x, warmup > 0 ? 1 : 0, (int)iters, kms, wall, &err);
    if (st != CD_OK) fprintf(stderr, "bench_model: kernel timing: %s\n", err.message);

    const double call_med = median(call, (int)iters), call_min = call[0]; /* median() sorts */
    const double k_med = median(kms, (int)iters), k_min = kms[0];
    const double w_med = median(wall, (int)iters);
    printf("{\"model\": ");
    json_str(model);
    printf(", \"arch\": ");
    json_str(arch);
    printf(", \"device\": ");
    json_str(device);
    printf(", \"fp16\": %s", fp16_used ? "true" : "false");
    printf(", \"batch\": %ld, \"size\": %ld, \"iters\": %ld, \"open_ms\": %.3f, \"first_ms\": %.3f, \"call_ms\": %.3f, "
           "\"call_ms_min\": %.3f, \"kernel_ms\": %.3f, \"kernel_ms_min\": %.3f, \"exec_call_ms\": %.3f, "
           "\"img_per_s\": %.2f",
           batch, size, iters, open_ms, first_ms, call_med, call_min, k_med, k_min, w_med,
           call_med > 0 ? batch / (call_med * 1e-3) : 0);
    if (cpu_rel >= 0) printf(", \"cpu_check_images\": %ld, \"cpu_check_rel\": %.3e", cpu_check, cpu_rel);
    printf(", \"error\": ");
    json_str(st == CD_OK ? "" : err.message);
    printf("}\n");
    free(x);
    free(logits);
    free(call);
    free(kms);
    free(wall);
    const double tol = fp16_used ? 1e-2 : 1e-4;
    if (cpu_rel > tol) {
        fprintf(stderr,
                "bench_model: Vulkan logits differ from the C executor by %.3e of the largest logit (allowed %.0e)\n",
                cpu_rel, tol);
        return 3;
    }
    return st == CD_OK ? 0 : 1;
}
