/* CPU time of each intensity augmentation op on one patch (not installed, not a test).
 *
 *   bench_intensity [--patch 96,96,32] [--repeat 200] [--channels 1]
 *
 * Runs cd_aug_apply_intensity with one op set at a time (noise sigma 0.1, blur sigma (1, 1, 1),
 * brightness 1.1, contrast 1.2, lowres zoom 0.6, inverted gamma 0.8, gamma 1.3: mid-range nnU-Net
 * values) on a fixed pseudo-random patch, --repeat times each, and prints the median and the minimum
 * thread CPU time per call in microseconds. CPU time (CLOCK_THREAD_CPUTIME_ID), not wall time: the
 * numbers stay comparable on a shared, loaded machine. The patch is refilled before every call
 * (untimed) so every call sees the same input. A/B: build this file against two libraries. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cirrdata/augment.h"

static double cpu_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec * 1e-3;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int64_t patch[3] = {96, 96, 32};
    int repeat = 200;
    unsigned channels = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--patch") && i + 1 < argc) {
            long long a, b, c;
            if (sscanf(argv[++i], "%lld,%lld,%lld", &a, &b, &c) != 3 || a < 1 || b < 1 || c < 1 ||
                a * b * c > (1LL << 26)) {
                fprintf(stderr, "bench_intensity: bad --patch '%s' (X,Y,Z, at most 2^26 voxels)\n", argv[i]);
                return 2;
            }
            patch[0] = a, patch[1] = b, patch[2] = c;
        } else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) {
            repeat = atoi(argv[++i]);
            if (repeat < 1 || repeat > 100000) {
                fprintf(stderr, "bench_intensity: bad --repeat '%s' (1..100000)\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--channels") && i + 1 < argc) {
            int c = atoi(argv[++i]);
            if (c < 1 || c > 16) {
                fprintf(stderr, "bench_intensity: bad --channels '%s' (1..16)\n", argv[i]);
                return 2;
            }
            channels = (unsigned)c;
        } else {
            fprintf(stderr, "usage: bench_intensity [--patch X,Y,Z] [--repeat N] [--channels C]\n");
            return 2;
        }
    }
    const size_t n = (size_t)(patch[0] * patch[1] * patch[2]) * channels;
    float *src = malloc(n * sizeof(float)), *img = malloc(n * sizeof(float));
    double *t = malloc((size_t)repeat * sizeof(double));
    if (!src || !img || !t) {
        fprintf(stderr, "bench_intensity: out of memory\n");
        return 1;
    }
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i++) { /* MR-like: a smooth-ish positive signal plus speckle */
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        src[i] = (float)(100.0 + 50.0 * (double)(i % 97) / 97.0 + (double)(s >> 40) / (double)(1 << 24) * 20.0);
    }
    const char *names[] = {"noise", "blur", "brightness", "contrast", "lowres", "gamma_invert", "gamma"};
    printf("patch %lldx%lldx%lld, %u channel(s), %d calls per op; thread CPU time per call\n", (long long)patch[0],
           (long long)patch[1], (long long)patch[2], channels, repeat);
    printf("%-13s %10s %10s\n", "op", "median_us", "min_us");
    for (int op = 0; op < 7; op++) {
        cd_aug_params a;
        memset(&a, 0, sizeof a);
        a.blur_truncate = 4.0;
        switch (op) {
        case 0: a.noise = true, a.noise_sigma = 0.1, a.noise_key = 0x1234; break;
        case 1: a.blur = true, a.blur_sigma[0] = a.blur_sigma[1] = a.blur_sigma[2] = 1.0; break;
        case 2: a.brightness = true, a.brightness_factor = 1.1; break;
        case 3: a.contrast = true, a.contrast_factor = 1.2; break;
        case 4: a.lowres = true, a.lowres_zoom = 0.6; break;
        case 5: a.gamma_invert = true, a.gamma_invert_value = 0.8; break;
        default: a.gamma = true, a.gamma_value = 1.3; break;
        }
        for (int r = 0; r < repeat; r++) {
            memcpy(img, src, n * sizeof(float));
            cd_error err;
            double t0 = cpu_us();
            if (cd_aug_apply_intensity(&a, img, channels, patch, &err) != CD_OK) {
                fprintf(stderr, "bench_intensity: %s: %s\n", names[op], err.message);
                return 1;
            }
            t[r] = cpu_us() - t0;
        }
        qsort(t, (size_t)repeat, sizeof(double), cmp_double);
        printf("%-13s %10.1f %10.1f\n", names[op], t[repeat / 2], t[0]);
    }
    free(src);
    free(img);
    free(t);
    return 0;
}
