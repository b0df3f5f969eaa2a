/* Percentiles as numpy's default ('linear') computes them:
 * a[floor(h)] + (h - floor(h)) * (a[floor(h) + 1] - a[floor(h)]) with h = (n - 1) * p / 100. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cirrdata/volume.h"
#include "core/internal.h"

static void swapf(float *a, float *b) {
    float t = *a;
    *a = *b;
    *b = t;
}

/* Quickselect: afterwards v[k] is the k-th smallest, smaller ones before it, larger after. */
static void select_kth(float *v, size_t n, size_t k) {
    size_t lo = 0, hi = n - 1;
    while (hi > lo) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] < v[lo]) swapf(&v[mid], &v[lo]);
        if (v[hi] < v[lo]) swapf(&v[hi], &v[lo]);
        if (v[hi] < v[mid]) swapf(&v[hi], &v[mid]);
        float pivot = v[mid];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                swapf(&v[i], &v[j]);
                i++;
                if (j == 0) break;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return;
    }
}

double cd_percentile_f32(float *v, size_t n, double p) {
    if (n == 0) return 0.0;
    double h = (double)(n - 1) * p / 100.0;
    size_t k = (size_t)floor(h);
    if (k >= n - 1) k = n - 1;
    select_kth(v, n, k);
    double a = v[k];
    if (k + 1 >= n) return a;
    float b = v[k + 1]; /* after selection, everything above k is >= v[k]: the next value is their minimum */
    for (size_t i = k + 2; i < n; i++)
        if (v[i] < b) b = v[i];
    return a + (h - (double)k) * ((double)b - a);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double cd_percentile_f64(const double *v, size_t n, double p) {
    if (n == 0) return 0.0;
    double *c = malloc(n * sizeof *c);
    if (!c) return NAN;
    memcpy(c, v, n * sizeof *c);
    qsort(c, n, sizeof *c, cmp_double);
    double h = (double)(n - 1) * p / 100.0;
    size_t k = (size_t)floor(h);
    double r = k + 1 < n ? c[k] + (h - (double)k) * (c[k + 1] - c[k]) : c[n - 1];
    free(c);
    return r;
}
