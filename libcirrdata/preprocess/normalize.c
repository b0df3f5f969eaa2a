/* The recipe's intensity normalisation on the CPU (see normalize.h). */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "cirrdata/volume.h"
#include "preprocess/normalize.h"

void cd_pp_normalize_cpu(const cd_recipe *r, float *x, size_t n, const uint8_t *mask) {
    if (r->normalize == CD_NORM_NONE) goto then;
    /* The region's voxels define the statistics; an empty region falls back to the whole volume. */
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += r->region == CD_REGION_VOLUME || (r->region == CD_REGION_MASK ? (mask && mask[i]) : x[i] != 0.0f);
    bool all = count == 0 || r->region == CD_REGION_VOLUME;
    if (all) count = n;
#define IN_REGION(i) (all || (r->region == CD_REGION_MASK ? (mask && mask[i]) : x[i] != 0.0f))
    if (r->normalize == CD_NORM_ZSCORE) {
        double sum = 0, sumsq = 0;
        for (size_t i = 0; i < n; i++)
            if (IN_REGION(i)) sum += x[i];
        double mean = sum / (double)count;
        for (size_t i = 0; i < n; i++)
            if (IN_REGION(i)) sumsq += ((double)x[i] - mean) * ((double)x[i] - mean);
        double sd = sqrt(sumsq / (double)count);
        if (sd < 1e-8) sd = 1e-8;
        for (size_t i = 0; i < n; i++) x[i] = (float)(((double)x[i] - mean) / sd);
    } else {
        float *v = malloc(count * sizeof *v);
        if (!v) return; /* cannot happen in practice: checked by the caller's allocation budget */
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (IN_REGION(i)) v[k++] = x[i];
        double lo = cd_percentile_f32(v, count, r->percentiles[0]);
        double hi = cd_percentile_f32(v, count, r->percentiles[1]);
        free(v);
        double r0 = r->range[0], r1 = r->range[1], scale = hi > lo ? (r1 - r0) / (hi - lo) : 0.0;
        double cmin = fmin(r0, r1), cmax = fmax(r0, r1);
        for (size_t i = 0; i < n; i++) {
            double y = r0 + ((double)x[i] - lo) * scale;
            x[i] = (float)(y < cmin ? cmin : y > cmax ? cmax : y);
        }
    }
#undef IN_REGION
then:
    if (r->has_then)
        for (size_t i = 0; i < n; i++) x[i] = (float)(((double)x[i] - r->then_mean) / r->then_std);
}
