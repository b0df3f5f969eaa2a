/* Inference throughput of a cirrdata model file (benchmarks/run_model.sh drives it).
 *
 *   bench_model MODEL.safetensors [--device cpu|vulkan] [--threads T] [--batch N] [--size H,W]
 *                                 [--iters I] [--warmup W] [--json]
 *
 * Times cd_model_predict on one random batch (the first calls plan memory and, on Vulkan, record
 * the command buffer: they are the warm-up; the model is opened before any timing) with
 * CLOCK_MONOTONIC around each call and prints one line:
 *   model=<arch> device="<executor>" batch=N size=HxW iters=I best_s=... median_s=... images_per_s=...
 * or, with --json, the same as one JSON object (plus "times_s", every timed call).
 * images_per_s is batch / median time. Exit status 1 on a library error, 2 on wrong usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cirrdata/model.h>

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
    fprintf(stderr, "usage: bench_model MODEL [--device cpu|vulkan] [--threads T] [--batch N] [--size H,W] "
                    "[--iters I] [--warmup W] [--json]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') return usage();
    const char *path = argv[1];
    cd_model_options o;
    memset(&o, 0, sizeof o);
    long batch = 8, h = 256, w = 256, iters = 5, warmup = 1;
    int json = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
            continue;
        }
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        i++;
        if (strcmp(a, "--device") == 0) {
            if (strcmp(v, "cpu") == 0)
                o.device = CD_DEVICE_CPU;
            else if (strcmp(v, "vulkan") == 0)
                o.device = CD_DEVICE_VULKAN;
            else
                return usage();
        } else if (strcmp(a, "--threads") == 0) {
            o.threads = atoi(v);
        } else if (strcmp(a, "--batch") == 0) {
            batch = atol(v);
        } else if (strcmp(a, "--size") == 0) {
            if (sscanf(v, "%ld,%ld", &h, &w) != 2) return usage();
        } else if (strcmp(a, "--iters") == 0) {
            iters = atol(v);
        } else if (strcmp(a, "--warmup") == 0) {
            warmup = atol(v);
        } else {
            return usage();
        }
    }
    if (batch < 1 || h < 1 || w < 1 || iters < 1 || iters > 1000 || warmup < 0) return usage();

    cd_error err;
    cd_model *m;
    if (cd_model_open(path, &o, &m, &err) != CD_OK) {
        fprintf(stderr, "bench_model: %s\n", err.message);
        return 1;
    }
    size_t n_in = (size_t)batch * (size_t)cd_model_in_channels(m) * (size_t)h * (size_t)w;
    float *x = malloc(n_in * sizeof(float)), *y = malloc((size_t)batch * (size_t)cd_model_classes(m) * sizeof(float));
    double *t = malloc((size_t)iters * sizeof(double));
    if (!x || !y || !t) {
        fprintf(stderr, "bench_model: out of memory\n");
        return 1;
    }
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n_in; i++) { /* uniform in [-2, 2): xorshift, no libm needed */
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = (float)((double)(s >> 11) * 0x1.0p-53 * 4.0 - 2.0);
    }
    int rc = 0;
    for (long i = 0; i < warmup + iters && rc == 0; i++) {
        double t0 = now();
        if (cd_model_predict(m, x, batch, h, w, y, &err) != CD_OK) {
            fprintf(stderr, "bench_model: %s\n", err.message);
            rc = 1;
        }
        if (i >= warmup) t[i - warmup] = now() - t0;
    }
    if (rc == 0 && json) {
        printf("{\"tool\": \"ours\", \"model\": \"%s\", \"device\": \"%s\", \"threads\": %d, \"batch\": %ld, \"size\": "
               "[%ld, %ld], "
               "\"warmup\": %ld, \"times_s\": [",
               cd_model_arch(m), cd_model_device_name(m), o.threads, batch, h, w, warmup);
        for (long i = 0; i < iters; i++) printf("%s%.6f", i ? ", " : "", t[i]);
        printf("], ");
    }
    if (rc == 0) {
        qsort(t, (size_t)iters, sizeof(double), cmp_double);
        double med = iters % 2 ? t[iters / 2] : 0.5 * (t[iters / 2 - 1] + t[iters / 2]);
        if (json)
            printf("\"best_s\": %.6f, \"median_s\": %.6f, \"images_per_s\": %.4f}\n", t[0], med, (double)batch / med);
        else
            printf(
                "model=%s device=\"%s\" batch=%ld size=%ldx%ld iters=%ld best_s=%.4f median_s=%.4f images_per_s=%.2f\n",
                cd_model_arch(m), cd_model_device_name(m), batch, h, w, iters, t[0], med, (double)batch / med);
    }
    free(x);
    free(y);
    free(t);
    cd_model_close(m);
    return rc;
}
