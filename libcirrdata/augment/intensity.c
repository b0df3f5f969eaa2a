/* Intensity augmentations on a (channels, patch) float32 image, in nnU-Net v2's order:
 *   noise -> blur -> brightness -> contrast -> low resolution -> inverted gamma -> gamma.
 * Definitions (batchgeneratorsv2, the transforms nnUNetTrainer uses; batchgenerators for blur):
 *   noise:      x += sigma * n(i) in float32, n the per-voxel normal field of draw.c (same for all channels).
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
 *               + mean (nnU-Net's p_retain_stats = 1). t^g = exp2(g log2 t) in float with the
 *               polynomial log2 / exp2 of core/vmath.h (within 3 and 2 ulp; 0 where t or t^g is
 *               below 2^-126), as shaders/aug_gamma.comp.
 * Statistics are computed in double, sums as 16 lane partial sums (voxel i in lane i mod 16) added
 * in a fixed tree: deterministic, independent of machine and vector width; voxels are stored back
 * as float32. Brightness, contrast and the retained-statistics step compute each voxel in double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "augment/augment_impl.h"
#include "core/vmath.h"

static int64_t reflect_index(int64_t i, int64_t n) {
    if (n == 1) return 0;
    int64_t period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

CD_VCLONES bool cd_aug_gauss_axis(float *data, const int64_t shape[3], int axis, double sigma, double truncate,
                                  int mode) {
    if (!(sigma > 0)) return true;
    int64_t r = (int64_t)(truncate * sigma + 0.5);
    if (r < 1) return true;
    const int64_t n = shape[axis];
    const int64_t stride = axis == 0 ? shape[1] * shape[2] : axis == 1 ? shape[2] : 1;
    /* All axes: LANES lines at once, each lane with the arithmetic of one line alone (taps j and
     * 2r - j summed first, then times w[j], accumulated in j order), so every lane's result is what
     * a line-by-line loop gives, bit for bit, whatever the vector width; the lane loops vectorise. Lines of axis 0:
     * (y, z) at
     * offset y*nz + z; axis 1: (x, z) at x*ny*nz + z -- neighbouring lanes adjacent in memory; axis
     * 2: (x, y) at (x*ny + y)*nz -- neighbouring lanes nz apart (gathered into the lane buffer). */
    enum { LANES = 16 };
    double *w = malloc(sizeof(double) * (size_t)(2 * r + 1));
    double *ext = calloc((size_t)(n + 2 * r) * LANES, sizeof(double)); /* lanes past nl: unused */
    if (!w || !ext) {
        free(w);
        free(ext);
        return false;
    }
    double sum = 0, s2 = sigma * sigma;
    for (int64_t j = -r; j <= r; j++) sum += w[j + r] = exp(-0.5 / s2 * (double)(j * j));
    for (int64_t j = 0; j <= 2 * r; j++) w[j] /= sum;
    const int64_t inner = axis == 0 ? shape[1] * shape[2] : axis == 1 ? shape[2] : shape[0] * shape[1];
    const int64_t outer = axis == 1 ? shape[0] : 1, lane_step = axis == 2 ? shape[2] : 1;
    for (int64_t q = 0; q < outer; q++)
        for (int64_t k0 = 0; k0 < inner; k0 += LANES) {
            const int64_t nl = inner - k0 < LANES ? inner - k0 : LANES;
            float *line = data + q * shape[1] * shape[2] + k0 * lane_step;
            for (int64_t i = -r; i < n + r; i++) {
                double *e = ext + (i + r) * LANES;
                if ((i < 0 || i >= n) && mode != 0) {
                    for (int64_t k = 0; k < nl; k++) e[k] = 0.0;
                    continue;
                }
                const float *src = line + (i >= 0 && i < n ? i : reflect_index(i, n)) * stride;
                if (lane_step == 1)
                    for (int64_t k = 0; k < nl; k++) e[k] = src[k];
                else
                    for (int64_t k = 0; k < nl; k++) e[k] = src[k * lane_step];
            }
            for (int64_t i = 0; i < n; i++) {
                const double *e = ext + i * LANES;
                double acc[LANES];
                for (int64_t k = 0; k < LANES; k++) acc[k] = w[r] * e[r * LANES + k];
                for (int64_t j = 0; j < r; j++)
                    for (int64_t k = 0; k < LANES; k++)
                        acc[k] += (e[j * LANES + k] + e[(2 * r - j) * LANES + k]) * w[j];
                if (lane_step == 1)
                    for (int64_t k = 0; k < nl; k++) line[i * stride + k] = (float)acc[k];
                else
                    for (int64_t k = 0; k < nl; k++) line[i * stride + k * lane_step] = (float)acc[k];
            }
        }
    free(w);
    free(ext);
    return true;
}

/* Channel statistics and the voxel loops below work on VL consecutive voxels at a time: lane k
 * takes the voxels i = k (mod VL) (the last n mod VL voxels go to lanes 0, 1, ... in order), and
 * sums are VL double partial sums added in a fixed tree (lane_sum). The order depends only on n,
 * never on the machine or the vector width, and the fixed-length lane loops vectorise (a single
 * sequential double sum is bound by the adder's latency). */
enum { VL = 16 };

static double lane_sum(double s[VL]) {
    for (int w = VL / 2; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) s[k] += s[k + w];
    return s[0];
}

/* Sum, min and max of x[0..n). NaN voxels are skipped by min/max unless x[0] is NaN (as a
 * sequential scan from x[0]). */
CD_VCLONES static void sum_min_max(const float *x, int64_t n, double *sum, float *mn, float *mx) {
    double s[VL] = {0};
    float lo[VL], hi[VL];
    for (int k = 0; k < VL; k++) lo[k] = hi[k] = x[0];
    int64_t i = 0;
    for (; i + VL <= n; i += VL)
#pragma GCC unroll 1 /* at -O3 GCC 12 unrolls the lane loop fully and then vectorises it only in part */
        for (int k = 0; k < VL; k++) {
            const float v = x[i + k];
            s[k] += v;
            lo[k] = v < lo[k] ? v : lo[k];
            hi[k] = v > hi[k] ? v : hi[k];
        }
    for (int k = 0; i + k < n; k++) {
        const float v = x[i + k];
        s[k] += v;
        lo[k] = v < lo[k] ? v : lo[k];
        hi[k] = v > hi[k] ? v : hi[k];
    }
    for (int k = 1; k < VL; k++) {
        lo[0] = lo[k] < lo[0] ? lo[k] : lo[0];
        hi[0] = hi[k] > hi[0] ? hi[k] : hi[0];
    }
    *sum = lane_sum(s);
    *mn = lo[0];
    *mx = hi[0];
}

/* Sample standard deviation (N - 1) about mean m: sum of squared deviations, lane-blocked. */
CD_VCLONES static double sd_about(const float *x, int64_t n, double m) {
    double q[VL] = {0};
    int64_t i = 0;
    for (; i + VL <= n; i += VL)
        for (int k = 0; k < VL; k++) {
            const double d = (double)x[i + k] - m;
            q[k] += d * d;
        }
    for (int k = 0; i + k < n; k++) {
        const double d = (double)x[i + k] - m;
        q[k] += d * d;
    }
    return n > 1 ? sqrt(lane_sum(q) / (double)(n - 1)) : 0.0;
}

/* One voxel of the gamma step in the signed space (sg = -1 for the inverted variant): t = (sg x -
 * mn) / max(r, 1e-7) (times the float reciprocal), x' = t^g r + mn with t^g = cd_vpowf_unit (float
 * log2 / exp2 polynomials, core/vmath.h; shaders/aug_gamma.comp evaluates the same formulas). */
static inline float gamma_voxel(float v, float sg, float mn, float inv, float g, float r) {
    return cd_vpowf_unit((sg * v - mn) * inv, g) * r + mn;
}

/* The retained-statistics step back from the signed space: x = sg ((x' - mean') f + mean). */
static inline float gamma_restore(float v, float sg, double mean2, double f, double mean) {
    return sg * (float)(((double)v - mean2) * f + mean);
}

/* Brightness: x *= f in double. */
CD_VCLONES static void brightness(float *x, int64_t n, double f) {
    int64_t i = 0;
    for (; i + VL <= n; i += VL)
        for (int k = 0; k < VL; k++) x[i + k] = (float)((double)x[i + k] * f);
    for (; i < n; i++) x[i] = (float)((double)x[i] * f);
}

/* Contrast: (x - mean) f + mean in double, clipped to the channel's [min, max]. */
static inline float contrast_voxel(float x, double mean, double f, float mn, float mx) {
    const float v = (float)(((double)x - mean) * f + mean);
    return v < mn ? mn : v > mx ? mx : v;
}

CD_VCLONES static void contrast_channel(float *x, int64_t n, double f) {
    double sum;
    float mn, mx;
    sum_min_max(x, n, &sum, &mn, &mx);
    const double mean = sum / (double)n;
    int64_t i = 0;
    for (; i + VL <= n; i += VL)
        for (int k = 0; k < VL; k++) x[i + k] = contrast_voxel(x[i + k], mean, f, mn, mx);
    for (; i < n; i++) x[i] = contrast_voxel(x[i], mean, f, mn, mx);
}

CD_VCLONES static void gamma_channel(float *x, int64_t n, double g, bool invert) {
    /* The statistics of -x follow from those of x exactly (negation commutes with rounding). */
    double sum, mean, sd;
    float mn, mx;
    sum_min_max(x, n, &sum, &mn, &mx);
    mean = sum / (double)n;
    sd = sd_about(x, n, mean);
    const float sg = invert ? -1.0f : 1.0f;
    if (invert) {
        const float t = mn;
        mn = -mx;
        mx = -t;
        mean = -mean;
    }
    double rng = (double)mx - (double)mn, den = rng > 1e-7 ? rng : 1e-7;
    const float inv = (float)(1.0 / den), gf = (float)g, rf = (float)rng;
    /* the gamma pass also sums its output (the same lanes and order as sum_min_max) */
    double s[VL] = {0};
    int64_t i = 0;
    for (; i + VL <= n; i += VL)
        for (int k = 0; k < VL; k++) {
            const float y = gamma_voxel(x[i + k], sg, mn, inv, gf, rf);
            x[i + k] = y;
            s[k] += y;
        }
    for (int k = 0; i + k < n; k++) {
        const float y = gamma_voxel(x[i + k], sg, mn, inv, gf, rf);
        x[i + k] = y;
        s[k] += y;
    }
    const double mean2 = lane_sum(s) / (double)n, sd2 = sd_about(x, n, mean2);
    const double f = sd / (sd2 > 1e-7 ? sd2 : 1e-7);
    for (i = 0; i + VL <= n; i += VL)
        for (int k = 0; k < VL; k++) x[i + k] = gamma_restore(x[i + k], sg, mean2, f, mean);
    for (; i < n; i++) x[i] = gamma_restore(x[i], sg, mean2, f, mean);
}

/* One channel: nearest-exact down to m, (tri)linear align_corners=False up to n (torch semantics,
 * float arithmetic as torch's CPU kernels):
 *   out = bx (by (bz d000 + az d001) + ay (bz d010 + az d011)) + ax (by (...) + ay (...)),
 * with a = weight of the upper neighbour, b = 1 - a, d the down-sampled image. The expression is
 * evaluated separably -- along z (the m0 x m1 down-sampled rows, read from the source through the
 * nearest indices), then y (one down-sampled x plane at a time, the two the current output plane
 * needs kept), then x -- which computes every parenthesised term once with the same operations in
 * the same order: the same bits as evaluating it per voxel, with about 1/4 of the work and
 * contiguous, vectorisable inner loops. */
/* o = b p0 + a p1 elementwise (o never overlaps p0 or p1). */
static inline void lerp_rows(float *restrict o, const float *restrict p0, const float *restrict p1, int64_t n, float b,
                             float a) {
    int64_t c = 0;
    for (; c + VL <= n; c += VL)
        for (int k = 0; k < VL; k++) o[c + k] = b * p0[c + k] + a * p1[c + k];
    for (; c < n; c++) o[c] = b * p0[c] + a * p1[c];
}

CD_VCLONES static bool lowres_channel(float *x, const int64_t n[3], const int64_t m[3]) {
    const int64_t plane = n[1] * n[2], zsize = m[0] * m[1] * n[2];
    float *zb = malloc(sizeof(float) * (size_t)(zsize + 2 * plane)), *yp[2] = {NULL, NULL};
    int64_t *idx[3] = {NULL, NULL, NULL};
    int64_t *i0[3] = {NULL, NULL, NULL}, *i1[3] = {NULL, NULL, NULL};
    float *l1[3] = {NULL, NULL, NULL};
    int32_t *zz = malloc(sizeof(int32_t) * (size_t)(2 * n[2])); /* source z of each output z's two taps */
    bool ok = zb != NULL && zz != NULL;
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
        for (int64_t c = 0; c < n[2]; c++) { /* n[2] <= 2^20: fits */
            zz[c] = (int32_t)idx[2][i0[2][c]];
            zz[n[2] + c] = (int32_t)idx[2][i1[2][c]];
        }
        /* z: zb[a][b][c] = bz d[a][b][i0 c] + az d[a][b][i1 c], d[a][b][j] = x[idx0 a][idx1 b][idx2 j]
         * (all of it before x is overwritten: a down-sampled plane may come from an earlier x plane) */
        for (int64_t a = 0; a < m[0]; a++)
            for (int64_t b = 0; b < m[1]; b++) {
                const float *src = x + (idx[0][a] * n[1] + idx[1][b]) * n[2];
                float *o = zb + (a * m[1] + b) * n[2];
                for (int64_t c = 0; c < n[2]; c++) {
                    const float az = l1[2][c], bz = 1.0f - az;
                    o[c] = bz * src[zz[c]] + az * src[zz[n[2] + c]];
                }
            }
        /* y, per down-sampled x plane a: yp[a][b][:] = by zb[a][i0 b][:] + ay zb[a][i1 b][:]; x: out[a][:][:]
         * = bx yp[i0 a] + ax yp[i1 a]. i0 a and i1 a (= i0 a or i0 a + 1) never decrease with a: two
         * planes in a small ring, each computed once. */
        yp[0] = zb + zsize;
        yp[1] = yp[0] + plane;
        int64_t held[2] = {-1, -1};
        for (int64_t a = 0; a < n[0]; a++) {
            const float *p[2];
            for (int t = 0; t < 2; t++) {
                const int64_t want = t == 0 ? i0[0][a] : i1[0][a];
                int slot = held[0] == want ? 0 : held[1] == want ? 1 : -1;
                if (slot < 0) { /* compute it in the slot that holds neither plane this output needs */
                    slot = held[0] == i0[0][a] || held[0] == i1[0][a] ? 1 : 0;
                    float *o = yp[slot];
                    for (int64_t b = 0; b < n[1]; b++) {
                        const float ay = l1[1][b], by = 1.0f - ay;
                        lerp_rows(o + b * n[2], zb + (want * m[1] + i0[1][b]) * n[2],
                                  zb + (want * m[1] + i1[1][b]) * n[2], n[2], by, ay);
                    }
                    held[slot] = want;
                }
                p[t] = yp[slot];
            }
            const float ax = l1[0][a];
            lerp_rows(x + a * plane, p[0], p[1], plane, 1.0f - ax, ax);
        }
    }
    free(zb);
    free(zz);
    for (int a = 0; a < 3; a++) {
        free(idx[a]);
        free(i0[a]);
        free(i1[a]);
        free(l1[a]);
    }
    return ok;
}

cd_status cd_aug_apply_intensity(const cd_aug_params *a, float *img, uint32_t channels, const int64_t patch[3],
                                 cd_error *err) {
    if (!a || !img || !patch) return cd_fail(err, CD_ERR_ARG, "cd_aug_apply_intensity: NULL argument");
    for (int i = 0; i < 3; i++)
        if (patch[i] < 1 || patch[i] > (1 << 20))
            return cd_fail(err, CD_ERR_ARG, "cd_aug_apply_intensity: bad patch size %lld", (long long)patch[i]);
    const int64_t n = patch[0] * patch[1] * patch[2];
    if (a->noise && a->noise_sigma != 0) {
        /* x += (float)sigma * n(i) in float (the Vulkan kernel's operations), a chunk at a time */
        enum { CHUNK = 1024 };
        float add[CHUNK];
        const float sigma = (float)a->noise_sigma;
        for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
            const int64_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
            cd_aug_noise_fill(a->noise_key, (uint64_t)i0, m, add);
            for (int64_t i = 0; i < m; i++) add[i] = sigma * add[i];
            for (uint32_t c = 0; c < channels; c++) {
                float *x = img + (int64_t)c * n + i0;
                for (int64_t i = 0; i < m; i++) x[i] += add[i];
            }
        }
    }
    if (a->blur)
        for (uint32_t c = 0; c < channels; c++)
            for (int ax = 0; ax < 3; ax++)
                if (!(a->planar && ax == 2) && patch[ax] > 1 &&
                    !cd_aug_gauss_axis(img + (int64_t)c * n, patch, ax, a->blur_sigma[ax], a->blur_truncate, 0))
                    return cd_fail(err, CD_ERR_NOMEM, "out of memory (blur)");
    if (a->brightness) brightness(img, n * (int64_t)channels, a->brightness_factor);
    if (a->contrast)
        for (uint32_t c = 0; c < channels; c++) contrast_channel(img + (int64_t)c * n, n, a->contrast_factor);
    if (a->lowres) {
        int64_t m[3];
        for (int ax = 0; ax < 3; ax++) {
            m[ax] = (a->planar && ax == 2) ? patch[ax] : (int64_t)nearbyint((double)patch[ax] * a->lowres_zoom);
            if (m[ax] < 1) m[ax] = 1;
            if (m[ax] > patch[ax]) m[ax] = patch[ax];
        }
        for (uint32_t c = 0; c < channels; c++)
            if (!lowres_channel(img + (int64_t)c * n, patch, m))
                return cd_fail(err, CD_ERR_NOMEM, "out of memory (lowres)");
    }
    if (a->gamma_invert)
        for (uint32_t c = 0; c < channels; c++) gamma_channel(img + (int64_t)c * n, n, a->gamma_invert_value, true);
    if (a->gamma)
        for (uint32_t c = 0; c < channels; c++) gamma_channel(img + (int64_t)c * n, n, a->gamma_value, false);
    return CD_OK;
}
