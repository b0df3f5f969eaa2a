/* Intensity augmentations on a (channels, patch) float32 image, in nnU-Net v2's order:
 *   noise -> blur -> brightness -> contrast -> low resolution -> inverted gamma -> gamma.
 * Definitions (batchgeneratorsv2, the transforms nnUNetTrainer uses; batchgenerators for blur):
 *   noise:      x += sigma * n(i), n the per-voxel normal field of draw.c (same for all channels).
 *   blur:       scipy.ndimage.gaussian_filter per axis (batchgenerators augment_gaussian_blur):
 *               radius (int)(truncate * sigma + 0.5), truncate 4 by default, mode 'reflect'.
 *   brightness: x *= factor.
 *   contrast:   mean, min, max of the channel; x = (x - mean) * factor + mean, clipped to [min, max].
 *   lowres:     per axis m = max(1, round_half_even(n * zoom)) (z kept in 2D pipelines); down to m
 *               with torch 'nearest-exact' (src = min(floor((o + 0.5) * n / m), n - 1)), back up
 *               to n with torch (tri)linear, align_corners=False (src = max((o + 0.5) * m / n - 0.5, 0),
 *               upper neighbour clamped) -- equal to scipy zoom order 0 / order 1 with
 *               grid_mode=True, mode 'nearest'.
 *   gamma:      (inverted: x = -x first and last) mean, std (N - 1) kept; mn = min, r = max - mn;
 *               x = ((x - mn) / max(r, 1e-7))^gamma * r + mn; x = (x - mean') * std / max(std', 1e-7)
 *               + mean (nnU-Net's p_retain_stats = 1).
 * Statistics are computed in double; voxels are stored back as float32. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "augment/augment_impl.h"

static int64_t reflect_index(int64_t i, int64_t n) {
    if (n == 1) return 0;
    int64_t period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

bool cd_aug_gauss_axis(float *data, const int64_t shape[3], int axis, double sigma, double truncate, int mode) {
    if (!(sigma > 0)) return true;
    int64_t r = (int64_t)(truncate * sigma + 0.5);
    if (r < 1) return true;
    const int64_t n = shape[axis];
    const int64_t stride = axis == 0 ? shape[1] * shape[2] : axis == 1 ? shape[2] : 1;
    /* Lines: for axis 0, (y, z) pairs: shape[1] * shape[2] lines at offsets y*nz + z. For axis 1,
     * (x, z): offset x*ny*nz + z. For axis 2, (x, y): offset (x*ny + y)*nz. */
    /* Axes 0 and 1: LANES neighbouring lines at once (adjacent in memory), each lane with exactly the
     * scalar arithmetic below, so the results are the same bit for bit; the lane loops vectorise. */
    enum { LANES = 16 };
    const bool lanes = axis < 2;
    double *w = malloc(sizeof(double) * (size_t)(2 * r + 1));
    double *ext = calloc((size_t)(n + 2 * r) * (lanes ? LANES : 1), sizeof(double)); /* lanes past nl: zeros, unused */
    if (!w || !ext) {
        free(w);
        free(ext);
        return false;
    }
    double sum = 0, s2 = sigma * sigma;
    for (int64_t j = -r; j <= r; j++) sum += w[j + r] = exp(-0.5 / s2 * (double)(j * j));
    for (int64_t j = 0; j <= 2 * r; j++) w[j] /= sum;
    if (lanes) {
        /* lines of axis 0: (y, z) at offset y*nz + z; axis 1: (x, z) at x*ny*nz + z */
        const int64_t inner = axis == 0 ? shape[1] * shape[2] : shape[2], outer = axis == 0 ? 1 : shape[0];
        for (int64_t q = 0; q < outer; q++)
            for (int64_t k0 = 0; k0 < inner; k0 += LANES) {
                const int64_t nl = inner - k0 < LANES ? inner - k0 : LANES;
                float *line = data + q * shape[1] * shape[2] + k0;
                for (int64_t i = -r; i < n + r; i++) {
                    double *e = ext + (i + r) * LANES;
                    if (i >= 0 && i < n) {
                        for (int64_t k = 0; k < nl; k++) e[k] = line[i * stride + k];
                    } else if (mode == 0) {
                        const float *src = line + reflect_index(i, n) * stride;
                        for (int64_t k = 0; k < nl; k++) e[k] = src[k];
                    } else {
                        for (int64_t k = 0; k < nl; k++) e[k] = 0.0;
                    }
                }
                for (int64_t i = 0; i < n; i++) {
                    const double *e = ext + i * LANES;
                    double acc[LANES];
                    for (int64_t k = 0; k < LANES; k++) acc[k] = w[r] * e[r * LANES + k];
                    for (int64_t j = 0; j < r; j++)
                        for (int64_t k = 0; k < LANES; k++) acc[k] += (e[j * LANES + k] + e[(2 * r - j) * LANES + k]) * w[j];
                    for (int64_t k = 0; k < nl; k++) line[i * stride + k] = (float)acc[k];
                }
            }
        free(w);
        free(ext);
        return true;
    }
    int64_t nlines = shape[0] * shape[1] * shape[2] / n;
    for (int64_t l = 0; l < nlines; l++) {
        int64_t base;
        if (axis == 0) base = l;
        else if (axis == 1) base = (l / shape[2]) * shape[1] * shape[2] + l % shape[2];
        else base = l * shape[2];
        float *line = data + base;
        for (int64_t i = -r; i < n + r; i++) {
            double v;
            if (i >= 0 && i < n) v = line[i * stride];
            else if (mode == 0) v = line[reflect_index(i, n) * stride];
            else v = 0.0;
            ext[i + r] = v;
        }
        for (int64_t i = 0; i < n; i++) {
            const double *e = ext + i;
            double acc = w[r] * e[r];
            for (int64_t j = 0; j < r; j++) acc += (e[j] + e[2 * r - j]) * w[j];
            line[i * stride] = (float)acc;
        }
    }
    free(w);
    free(ext);
    return true;
}

static void channel_stats(const float *x, int64_t n, double *mean, double *sd, float *mn, float *mx) {
    double s = 0;
    float lo = x[0], hi = x[0];
    for (int64_t i = 0; i < n; i++) {
        s += x[i];
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    double m = s / (double)n;
    if (sd) {
        double q = 0;
        for (int64_t i = 0; i < n; i++) q += ((double)x[i] - m) * ((double)x[i] - m);
        *sd = n > 1 ? sqrt(q / (double)(n - 1)) : 0.0;
    }
    *mean = m;
    if (mn) *mn = lo;
    if (mx) *mx = hi;
}

static void gamma_channel(float *x, int64_t n, double g, bool invert) {
    if (invert)
        for (int64_t i = 0; i < n; i++) x[i] = -x[i];
    double mean, sd;
    float mn, mx;
    channel_stats(x, n, &mean, &sd, &mn, &mx);
    double rng = (double)mx - (double)mn, den = rng > 1e-7 ? rng : 1e-7;
    /* t^g = 2^(g log2 t) in float: several times cheaper than double pow, and exact to float
     * rounding for t in [0, 1] (pow(0, g) = 0 for g > 0). */
    const float inv = (float)(1.0 / den), gf = (float)g, rf = (float)rng;
    for (int64_t i = 0; i < n; i++) {
        float t = (x[i] - mn) * inv;
        float y = t > 0.0f ? exp2f(gf * log2f(t)) : 0.0f;
        x[i] = y * rf + mn;
    }
    double mean2, sd2;
    channel_stats(x, n, &mean2, &sd2, NULL, NULL);
    double f = sd / (sd2 > 1e-7 ? sd2 : 1e-7);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(((double)x[i] - mean2) * f + mean);
    if (invert)
        for (int64_t i = 0; i < n; i++) x[i] = -x[i];
}

/* One channel: nearest-exact down to m, (tri)linear align_corners=False up to n (torch semantics,
 * float arithmetic as torch's CPU kernels). */
static bool lowres_channel(float *x, const int64_t n[3], const int64_t m[3]) {
    float *down = malloc(sizeof(float) * (size_t)(m[0] * m[1] * m[2]));
    int64_t *idx[3] = {NULL, NULL, NULL};
    int64_t *i0[3] = {NULL, NULL, NULL}, *i1[3] = {NULL, NULL, NULL};
    float *l1[3] = {NULL, NULL, NULL};
    bool ok = down != NULL;
    for (int a = 0; a < 3 && ok; a++) {
        idx[a] = malloc(sizeof(int64_t) * (size_t)m[a]);
        i0[a] = malloc(sizeof(int64_t) * (size_t)n[a]);
        i1[a] = malloc(sizeof(int64_t) * (size_t)n[a]);
        l1[a] = malloc(sizeof(float) * (size_t)n[a]);
        ok = idx[a] && i0[a] && i1[a] && l1[a];
    }
    if (ok) {
        for (int a = 0; a < 3; a++) {
            float sd = (float)n[a] / (float)m[a], su = (float)m[a] / (float)n[a];
            for (int64_t o = 0; o < m[a]; o++) {
                int64_t s = (int64_t)floorf(((float)o + 0.5f) * sd);
                idx[a][o] = s < n[a] - 1 ? s : n[a] - 1;
            }
            for (int64_t o = 0; o < n[a]; o++) {
                float s = su * ((float)o + 0.5f) - 0.5f;
                if (s < 0) s = 0;
                int64_t k = (int64_t)s;
                i0[a][o] = k;
                i1[a][o] = k < m[a] - 1 ? k + 1 : k;
                l1[a][o] = s - (float)k;
            }
        }
        for (int64_t a = 0; a < m[0]; a++)
            for (int64_t b = 0; b < m[1]; b++)
                for (int64_t c = 0; c < m[2]; c++)
                    down[(a * m[1] + b) * m[2] + c] = x[(idx[0][a] * n[1] + idx[1][b]) * n[2] + idx[2][c]];
        for (int64_t a = 0; a < n[0]; a++) {
            const float ax = l1[0][a], bx = 1.0f - ax;
            const float *p0 = down + i0[0][a] * m[1] * m[2], *p1 = down + i1[0][a] * m[1] * m[2];
            for (int64_t b = 0; b < n[1]; b++) {
                const float ay = l1[1][b], by = 1.0f - ay;
                const int64_t y0 = i0[1][b] * m[2], y1 = i1[1][b] * m[2];
                float *o = x + (a * n[1] + b) * n[2];
                for (int64_t c = 0; c < n[2]; c++) {
                    const float az = l1[2][c], bz = 1.0f - az;
                    const int64_t z0 = i0[2][c], z1 = i1[2][c];
                    o[c] = bx * (by * (bz * p0[y0 + z0] + az * p0[y0 + z1]) + ay * (bz * p0[y1 + z0] + az * p0[y1 + z1])) +
                           ax * (by * (bz * p1[y0 + z0] + az * p1[y0 + z1]) + ay * (bz * p1[y1 + z0] + az * p1[y1 + z1]));
                }
            }
        }
    }
    free(down);
    for (int a = 0; a < 3; a++) {
        free(idx[a]);
        free(i0[a]);
        free(i1[a]);
        free(l1[a]);
    }
    return ok;
}

cd_status cd_aug_apply_intensity(const cd_aug_params *a, float *img, uint32_t channels, const int64_t patch[3], cd_error *err) {
    if (!a || !img || !patch) return cd_fail(err, CD_ERR_ARG, "cd_aug_apply_intensity: NULL argument");
    for (int i = 0; i < 3; i++)
        if (patch[i] < 1 || patch[i] > (1 << 20))
            return cd_fail(err, CD_ERR_ARG, "cd_aug_apply_intensity: bad patch size %lld", (long long)patch[i]);
    const int64_t n = patch[0] * patch[1] * patch[2];
    if (a->noise && a->noise_sigma != 0) {
        double v[4];
        for (int64_t b = 0; b * 4 < n; b++) {
            cd_aug_noise_block(a->noise_key, (uint64_t)b, v);
            for (int l = 0; l < 4 && b * 4 + l < n; l++)
                for (uint32_t c = 0; c < channels; c++) {
                    float *x = img + (int64_t)c * n + b * 4 + l;
                    *x = (float)((double)*x + a->noise_sigma * v[l]);
                }
        }
    }
    if (a->blur)
        for (uint32_t c = 0; c < channels; c++)
            for (int ax = 0; ax < 3; ax++)
                if (!(a->planar && ax == 2) && patch[ax] > 1 &&
                    !cd_aug_gauss_axis(img + (int64_t)c * n, patch, ax, a->blur_sigma[ax], a->blur_truncate, 0))
                    return cd_fail(err, CD_ERR_NOMEM, "out of memory (blur)");
    if (a->brightness)
        for (int64_t i = 0; i < n * (int64_t)channels; i++) img[i] = (float)((double)img[i] * a->brightness_factor);
    if (a->contrast)
        for (uint32_t c = 0; c < channels; c++) {
            float *x = img + (int64_t)c * n, mn, mx;
            double mean;
            channel_stats(x, n, &mean, NULL, &mn, &mx);
            for (int64_t i = 0; i < n; i++) {
                float v = (float)(((double)x[i] - mean) * a->contrast_factor + mean);
                x[i] = v < mn ? mn : v > mx ? mx : v;
            }
        }
    if (a->lowres) {
        int64_t m[3];
        for (int ax = 0; ax < 3; ax++) {
            m[ax] = (a->planar && ax == 2) ? patch[ax] : (int64_t)nearbyint((double)patch[ax] * a->lowres_zoom);
            if (m[ax] < 1) m[ax] = 1;
            if (m[ax] > patch[ax]) m[ax] = patch[ax];
        }
        for (uint32_t c = 0; c < channels; c++)
            if (!lowres_channel(img + (int64_t)c * n, patch, m)) return cd_fail(err, CD_ERR_NOMEM, "out of memory (lowres)");
    }
    if (a->gamma_invert)
        for (uint32_t c = 0; c < channels; c++) gamma_channel(img + (int64_t)c * n, n, a->gamma_invert_value, true);
    if (a->gamma)
        for (uint32_t c = 0; c < channels; c++) gamma_channel(img + (int64_t)c * n, n, a->gamma_value, false);
    return CD_OK;
}
