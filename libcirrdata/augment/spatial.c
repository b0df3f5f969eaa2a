/* The fused spatial pass (rotation, scaling, mirroring, elastic deformation and cropping in one
 * resampling) and the source box it reads.
 *
 * Output voxel o samples src = center + M (o - h + d(o)), h = (patch - 1) / 2, in source voxel
 * coordinates; relative to the box, p = src - box_lo. Images: trilinear with zero padding outside
 * the box (scipy map_coordinates order 1, mode 'grid-constant'; torch grid_sample zeros padding),
 * evaluated as three nested lerps a + t (b - a) in float32 from the 8 neighbours (so integral
 * positions return the voxel exactly). Masks: nearest, index floor(p + 0.5), 0 outside the box.
 *
 * Rows along z are linear in z without elastic deformation: positions are exact 32.32 fixed point
 * along the row (p0 and the step rounded once per row from the double expression). A row whose two
 * end points lie inside [0, box - 1) on every axis (hence every point) runs without bounds checks
 * (row_fast); a row crossing the box edge is split once per row into that unchecked interval, the
 * few voxels with some neighbours outside (taps outside read 0) and zeros beyond, in the same fixed
 * point (row_edge; the Vulkan warp, shaders/aug_spatial.comp, computes every such row the same way,
 * bit for bit). An all-integer transform (crop, mirror, 90-degree rotations, integer zoom) copies
 * voxels. Elastic voxels, and rows reaching beyond +-2^30 voxels, take a path in double precision
 * (checked only where a neighbour may lie outside the box); it agrees with the fixed point to ~1e-8
 * voxel in position. (Until 2026-11-28 edge rows took the double path: images moved by < 3e-7 of
 * their range, masks unchanged in a 17-million-voxel comparison.) */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "augment/augment_impl.h"
#include "cirrdata/rng.h"

float *cd_aug_elastic_field(const cd_aug_params *a, const int64_t patch[3], double maxabs[3]) {
    const int64_t n = patch[0] * patch[1] * patch[2];
    float *f = malloc(sizeof(float) * 3 * (size_t)n);
    maxabs[0] = maxabs[1] = maxabs[2] = 0;
    if (!f) return NULL;
    const uint32_t key[2] = {(uint32_t)a->elastic_key, (uint32_t)(a->elastic_key >> 32)};
    for (int k = 0; k < 3; k++) {
        float *d = f + k * n;
        if (a->planar && k == 2) {
            memset(d, 0, sizeof(float) * (size_t)n);
            continue;
        }
        uint32_t w[4];
        for (int64_t i = 0; i < n; i++) {
            if ((i & 3) == 0) {
                const uint64_t b = (uint64_t)i >> 2;
                const uint32_t ctr[4] = {(uint32_t)b, (uint32_t)(b >> 32), (uint32_t)k, 0};
                cd_philox4x32_10(ctr, key, w);
            }
            d[i] = (float)(2.0 * (double)(w[i & 3] >> 8) * (1.0 / 16777216.0) - 1.0);
        }
        for (int ax = 0; ax < 3; ax++)
            if (!(a->planar && ax == 2) && !cd_aug_gauss_axis(d, patch, ax, a->elastic_sigma, 4.0, 1)) {
                free(f);
                return NULL;
            }
        double mx = 0;
        for (int64_t i = 0; i < n; i++) {
            d[i] = (float)((double)d[i] * a->elastic_alpha);
            double v = fabs((double)d[i]);
            mx = v > mx ? v : mx;
        }
        maxabs[k] = mx;
    }
    return f;
}

void cd_aug_source_box(const cd_aug_params *a, const int64_t patch[3], int64_t lo[3], int64_t hi[3]) {
    double d[3] = {0, 0, 0};
    if (a->elastic) {
        float *f = cd_aug_elastic_field(a, patch, d);
        if (f)
            free(f);
        else { /* out of memory: |d| <= alpha always (|noise| <= 1, kernel weights sum to 1) */
            d[0] = d[1] = a->elastic_alpha;
            d[2] = a->planar ? 0 : a->elastic_alpha;
        }
    }
    for (int i = 0; i < 3; i++) {
        double ext = 0;
        for (int k = 0; k < 3; k++) ext += fabs(a->matrix[i][k]) * ((double)(patch[k] - 1) * 0.5 + d[k]);
        /* A small margin covers the rounding of the per-voxel positions. */
        lo[i] = (int64_t)floor(a->center[i] - ext - 1e-6);
        hi[i] = (int64_t)floor(a->center[i] + ext + 1e-6) + 2;
    }
}

static inline float lerp(float a, float b, float t) { return a + t * (b - a); }

#define FIX_ONE (INT64_C(1) << 32) /* 32.32 fixed point */
#define FIX_HALF (INT64_C(1) << 31)

typedef struct warp_ctx {
    const float *src;
    const uint8_t *mask;
    uint32_t channels;
    int64_t nbox, sx, sy, b[3];
    float *out;
    uint8_t *out_mask;
    int64_t npatch;
} warp_ctx;

/* One voxel with bounds checks (any position, NaN included). */
static void sample_checked(const warp_ctx *w, int64_t o, double px, double py, double pz) {
    if (w->out_mask) {
        /* floor(p + 0.5) evaluated exactly (p - floor(p) is exact; p + 0.5 may round up) */
        double rx = floor(px), ry = floor(py), rz = floor(pz);
        rx += px - rx >= 0.5;
        ry += py - ry >= 0.5;
        rz += pz - rz >= 0.5;
        uint8_t v = 0;
        if (rx >= 0 && rx < (double)w->b[0] && ry >= 0 && ry < (double)w->b[1] && rz >= 0 && rz < (double)w->b[2])
            v = w->mask[(int64_t)rx * w->sx + (int64_t)ry * w->sy + (int64_t)rz];
        w->out_mask[o] = v;
    }
    if (!w->out) return;
    if (!(px > -1.0 && px < (double)w->b[0] && py > -1.0 && py < (double)w->b[1] && pz > -1.0 &&
          pz < (double)w->b[2])) {
        for (uint32_t c = 0; c < w->channels; c++) w->out[c * w->npatch + o] = 0.0f;
        return;
    }
    const double fx = floor(px), fy = floor(py), fz = floor(pz);
    const int64_t ix = (int64_t)fx, iy = (int64_t)fy, iz = (int64_t)fz;
    const float tx = (float)(px - fx), ty = (float)(py - fy), tz = (float)(pz - fz);
    const bool vx0 = ix >= 0, vx1 = ix + 1 < w->b[0], vy0 = iy >= 0, vy1 = iy + 1 < w->b[1], vz0 = iz >= 0,
               vz1 = iz + 1 < w->b[2];
    const int64_t off = ix * w->sx + iy * w->sy + iz;
    for (uint32_t c = 0; c < w->channels; c++) {
        const float *s = w->src + (int64_t)c * w->nbox + off;
#define AT(dx, dy, dz) ((vx##dx && vy##dy && vz##dz) ? s[(dx)*w->sx + (dy)*w->sy + (dz)] : 0.0f)
        const float c00 = lerp(AT(0, 0, 0), AT(0, 0, 1), tz), c01 = lerp(AT(0, 1, 0), AT(0, 1, 1), tz);
        const float c10 = lerp(AT(1, 0, 0), AT(1, 0, 1), tz), c11 = lerp(AT(1, 1, 0), AT(1, 1, 1), tz);
#undef AT
        w->out[c * w->npatch + o] = lerp(lerp(c00, c01, ty), lerp(c10, c11, ty), tx);
    }
}

/* sample_checked for a position whose 8 neighbours all lie in the box (0 <= p < box - 1 on every
 * axis, see interior): the same arithmetic without the checks, hence the same value bit for bit. Rows
 * that cross the box edge (rotated patches near the volume border) and elastic samples are mostly
 * such voxels. */
static inline bool interior(const warp_ctx *w, double px, double py, double pz) {
    return px >= 0.0 && px < (double)(w->b[0] - 1) && py >= 0.0 && py < (double)(w->b[1] - 1) && pz >= 0.0 &&
           pz < (double)(w->b[2] - 1);
}

static inline void sample_interior(const warp_ctx *w, int64_t o, double px, double py, double pz) {
    const double fx = floor(px), fy = floor(py), fz = floor(pz);
    if (w->out_mask) {
        const double rx = fx + (px - fx >= 0.5), ry = fy + (py - fy >= 0.5), rz = fz + (pz - fz >= 0.5);
        w->out_mask[o] = w->mask[(int64_t)rx * w->sx + (int64_t)ry * w->sy + (int64_t)rz];
    }
    if (!w->out) return;
    const float tx = (float)(px - fx), ty = (float)(py - fy), tz = (float)(pz - fz);
    const int64_t off = (int64_t)fx * w->sx + (int64_t)fy * w->sy + (int64_t)fz, sx = w->sx, sy = w->sy;
    for (uint32_t c = 0; c < w->channels; c++) {
        const float *s = w->src + (int64_t)c * w->nbox + off;
        const float c00 = lerp(s[0], s[1], tz), c01 = lerp(s[sy], s[sy + 1], tz);
        const float c10 = lerp(s[sx], s[sx + 1], tz), c11 = lerp(s[sx + sy], s[sx + sy + 1], tz);
        w->out[c * w->npatch + o] = lerp(lerp(c00, c01, ty), lerp(c10, c11, ty), tx);
    }
}

/* A row of n voxels whose positions are all inside [0, box - 1): no checks. Positions are 32.32
 * fixed point, p(z) = p0 + z * dp exactly (p0, dp rounded once per row: error < 1e-8 voxel over a
 * row), which makes the two end points bound the whole row. Two passes over blocks of ROW_BLOCK
 * voxels: positions -> (offset, weights), then gathers and lerps once per channel. (Measured on
 * Zen 5, not kept: lerps vectorised by gcc with emulated gathers, or 4-wide SSE2 within a voxel, no
 * faster; AVX2 vgatherdps slower, 6.7 vs 5.7 ns/voxel; y-tiled row order slower.) */
#define ROW_BLOCK 128

/* row_fast for a row along the source z axis (dp x and y zero: no rotation, e.g. scaling alone):
 * x, y and their weights are constant over the row, so only z is computed per voxel; the same
 * operations per voxel, hence the same bits. */
static void row_axial(const warp_ctx *w, int64_t o, int64_t n, const int64_t p0[3], int64_t dz) {
    const int32_t sx = (int32_t)w->sx, sy = (int32_t)w->sy;
    const float inv = 1.0f / 16777216.0f;
    int32_t iz[ROW_BLOCK];
    float wz[ROW_BLOCK];
    const int32_t base = (int32_t)(p0[0] >> 32) * sx + (int32_t)(p0[1] >> 32) * sy;
    const float tx = (float)(int32_t)((uint32_t)p0[0] >> 8) * inv, ty = (float)(int32_t)((uint32_t)p0[1] >> 8) * inv;
    const int32_t mbase = (int32_t)((p0[0] + FIX_HALF) >> 32) * sx + (int32_t)((p0[1] + FIX_HALF) >> 32) * sy;
    for (int64_t z0 = 0; z0 < n; z0 += ROW_BLOCK) {
        const int nb = (int)(n - z0 < ROW_BLOCK ? n - z0 : ROW_BLOCK);
        int64_t pz = p0[2] + z0 * dz;
        if (w->out) {
            for (int k = 0; k < nb; k++, pz += dz) {
                iz[k] = (int32_t)(pz >> 32);
                wz[k] = (float)(int32_t)((uint32_t)pz >> 8) * inv;
            }
            for (uint32_t c = 0; c < w->channels; c++) {
                const float *src = w->src + (int64_t)c * w->nbox + base;
                float *out = w->out + (int64_t)c * w->npatch + o + z0;
                for (int k = 0; k < nb; k++) {
                    const float *s = src + iz[k];
                    const float tz = wz[k];
                    const float c00 = lerp(s[0], s[1], tz), c01 = lerp(s[sy], s[sy + 1], tz);
                    const float c10 = lerp(s[sx], s[sx + 1], tz), c11 = lerp(s[sx + sy], s[sx + sy + 1], tz);
                    out[k] = lerp(lerp(c00, c01, ty), lerp(c10, c11, ty), tx);
                }
            }
        }
        if (w->out_mask) {
            const uint8_t *m = w->mask + mbase;
            uint8_t *om = w->out_mask + o + z0;
            pz = p0[2] + z0 * dz;
            for (int k = 0; k < nb; k++, pz += dz) om[k] = m[(int32_t)((pz + FIX_HALF) >> 32)];
        }
    }
}

static void row_fast(const warp_ctx *w, int64_t o, int64_t n, const int64_t p0[3], const int64_t dp[3]) {
    if (dp[0] == 0 && dp[1] == 0) {
        row_axial(w, o, n, p0, dp[2]);
        return;
    }
    const int32_t sx = (int32_t)w->sx, sy = (int32_t)w->sy;
    int32_t off[ROW_BLOCK];
    float wx[ROW_BLOCK], wy[ROW_BLOCK], wz[ROW_BLOCK];
    const float inv = 1.0f / 16777216.0f;
    for (int64_t z0 = 0; z0 < n; z0 += ROW_BLOCK) {
        const int nb = (int)(n - z0 < ROW_BLOCK ? n - z0 : ROW_BLOCK);
        int64_t px = p0[0] + z0 * dp[0], py = p0[1] + z0 * dp[1], pz = p0[2] + z0 * dp[2];
        for (int k = 0; k < nb; k++, px += dp[0], py += dp[1], pz += dp[2]) {
            const int32_t ix = (int32_t)(px >> 32), iy = (int32_t)(py >> 32), iz = (int32_t)(pz >> 32);
            wx[k] = (float)(int32_t)((uint32_t)px >> 8) * inv;
            wy[k] = (float)(int32_t)((uint32_t)py >> 8) * inv;
            wz[k] = (float)(int32_t)((uint32_t)pz >> 8) * inv;
            off[k] = ix * sx + iy * sy + iz;
        }
        if (w->out_mask) { /* nearest: floor(p + 0.5) */
            const uint8_t *mk = w->mask;
            uint8_t *om = w->out_mask + o + z0;
            px = p0[0] + z0 * dp[0], py = p0[1] + z0 * dp[1], pz = p0[2] + z0 * dp[2];
            for (int k = 0; k < nb; k++, px += dp[0], py += dp[1], pz += dp[2])
                om[k] = mk[(int32_t)((px + FIX_HALF) >> 32) * sx + (int32_t)((py + FIX_HALF) >> 32) * sy +
                           (int32_t)((pz + FIX_HALF) >> 32)];
        }
        if (w->out)
            for (uint32_t c = 0; c < w->channels; c++) {
                const float *src = w->src + (int64_t)c * w->nbox;
                float *out = w->out + (int64_t)c * w->npatch + o + z0;
                for (int k = 0; k < nb; k++) {
                    const float *s = src + off[k];
                    const float tz = wz[k], ty = wy[k];
                    const float c00 = lerp(s[0], s[1], tz), c01 = lerp(s[sy], s[sy + 1], tz);
                    const float c10 = lerp(s[sx], s[sx + 1], tz), c11 = lerp(s[sx + sy], s[sx + sy + 1], tz);
                    out[k] = lerp(lerp(c00, c01, ty), lerp(c10, c11, ty), wx[k]);
                }
            }
    }
}

/* ---- rows that cross the box edge, in the same 32.32 fixed point ---- */

/* floor(a / b) and ceil(a / b) for b > 0 */
static inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static inline int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

/* Narrows [*za, *zb) to the z with lo <= p0 + z dp < hi (positions linear in z: an interval). */
static void z_clip(int64_t p0, int64_t dp, int64_t lo, int64_t hi, int64_t *za, int64_t *zb) {
    int64_t a, b;
    if (dp == 0) {
        a = 0;
        b = p0 >= lo && p0 < hi ? INT64_MAX : 0;
    } else if (dp > 0) {
        a = ceil_div(lo - p0, dp);
        b = ceil_div(hi - p0, dp);
    } else {
        a = floor_div(p0 - hi, -dp) + 1;
        b = floor_div(p0 - lo, -dp) + 1;
    }
    if (a > *za) *za = a;
    if (b < *zb) *zb = b;
    if (*zb < *za) *zb = *za;
}

/* One image voxel at a fixed-point position whose neighbours may lie outside the box (taps outside
 * read 0; caller: -1 < p < box on every axis). The weights and lerps are row_fast's, and the
 * Vulkan warp's (shaders/aug_spatial.comp), bit for bit. */
static void sample_fixed_checked(const warp_ctx *w, int64_t o, const int64_t p[3]) {
    const float inv = 1.0f / 16777216.0f;
    int64_t i[3];
    float t[3];
    for (int a = 0; a < 3; a++) {
        i[a] = floor_div(p[a], FIX_ONE);
        t[a] = (float)(int32_t)((uint32_t)(uint64_t)p[a] >> 8) * inv;
    }
    const bool vx0 = i[0] >= 0, vx1 = i[0] + 1 < w->b[0], vy0 = i[1] >= 0, vy1 = i[1] + 1 < w->b[1], vz0 = i[2] >= 0,
               vz1 = i[2] + 1 < w->b[2];
    const int64_t off = i[0] * w->sx + i[1] * w->sy + i[2];
    for (uint32_t c = 0; c < w->channels; c++) {
        const float *s = w->src + (int64_t)c * w->nbox; /* indexed only at taps inside the box */
#define AT(dx, dy, dz) ((vx##dx && vy##dy && vz##dz) ? s[off + (dx)*w->sx + (dy)*w->sy + (dz)] : 0.0f)
        const float c00 = lerp(AT(0, 0, 0), AT(0, 0, 1), t[2]), c01 = lerp(AT(0, 1, 0), AT(0, 1, 1), t[2]);
        const float c10 = lerp(AT(1, 0, 0), AT(1, 0, 1), t[2]), c11 = lerp(AT(1, 1, 0), AT(1, 1, 1), t[2]);
#undef AT
        w->out[c * w->npatch + o] = lerp(lerp(c00, c01, t[1]), lerp(c10, c11, t[1]), t[0]);
    }
}

/* A row that crosses the box edge: split per axis (positions are linear in z) into the interval
 * whose 8 neighbours are all inside (row_fast's kernel), the voxels around it with some neighbours
 * outside (sample_fixed_checked), zeros beyond; the mask, nearest, over its own interval. Solving
 * the intervals once per row replaces a per-voxel bounds test in double precision. */
static void row_edge(const warp_ctx *w, int64_t o, int64_t n, const int64_t p0[3], const int64_t dp[3]) {
    int64_t ia = 0, ib = n, sa = 0, sb = n, ma = 0, mb = n; /* interior, image support, mask support */
    for (int a = 0; a < 3; a++) {
        const int64_t B = w->b[a] * FIX_ONE, e = p0[a] + (n - 1) * dp[a];
        if (p0[a] >= 0 && p0[a] < B - FIX_ONE && e >= 0 && e < B - FIX_ONE) continue; /* interior along a: no limit */
        z_clip(p0[a], dp[a], 0, B - FIX_ONE, &ia, &ib);                               /* 0 <= p < b - 1 */
        z_clip(p0[a], dp[a], 1 - FIX_ONE, B, &sa, &sb);                               /* -1 < p < b */
        z_clip(p0[a], dp[a], -FIX_HALF, B - FIX_HALF, &ma, &mb);                      /* 0 <= floor(p + 1/2) < b */
    }
    /* within [0, n): an interval may start past the row */
    ia = ia < n ? ia : n, sa = sa < n ? sa : n, ma = ma < n ? ma : n;
    ib = ib < n ? ib : n, sb = sb < n ? sb : n, mb = mb < n ? mb : n;
    if (w->out) {
        warp_ctx img = *w;
        img.out_mask = NULL;
        if (ib <= ia) ia = ib = sb; /* no interior: all of the support is checked */
        for (uint32_t c = 0; c < w->channels; c++) {
            float *out = w->out + (int64_t)c * w->npatch + o;
            for (int64_t z = 0; z < sa; z++) out[z] = 0.0f;
            for (int64_t z = sb; z < n; z++) out[z] = 0.0f;
        }
        for (int64_t z = sa; z < sb; z++) {
            if (z == ia && ib > ia) {
                const int64_t q[3] = {p0[0] + ia * dp[0], p0[1] + ia * dp[1], p0[2] + ia * dp[2]};
                row_fast(&img, o + ia, ib - ia, q, dp);
                z = ib - 1;
                continue;
            }
            const int64_t q[3] = {p0[0] + z * dp[0], p0[1] + z * dp[1], p0[2] + z * dp[2]};
            sample_fixed_checked(w, o + z, q);
        }
    }
    if (w->out_mask) {
        uint8_t *om = w->out_mask + o;
        for (int64_t z = 0; z < ma; z++) om[z] = 0;
        for (int64_t z = ma; z < mb; z++) {
            const int64_t x = (p0[0] + z * dp[0] + FIX_HALF) >> 32, y = (p0[1] + z * dp[1] + FIX_HALF) >> 32,
                          zz = (p0[2] + z * dp[2] + FIX_HALF) >> 32; /* >= 0 inside the interval */
            om[z] = w->mask[x * w->sx + y * w->sy + zz];
        }
        for (int64_t z = mb > ma ? mb : ma; z < n; z++) om[z] = 0;
    }
}

/* A row at integer positions base + z * step (integer step): voxel copies, bounds-checked only at
 * the ends of the run of z inside the box. */
static void row_integral(const warp_ctx *w, int64_t o, int64_t n, const int64_t base[3], const int64_t step[3]) {
    int64_t zlo = 0, zhi = n; /* [zlo, zhi): inside on every axis */
    for (int i = 0; i < 3; i++) {
        const int64_t b = base[i], s = step[i], lim = w->b[i];
        if (s == 0) {
            if (b < 0 || b >= lim) zhi = 0;
        } else if (s > 0) { /* b + z s >= 0 and b + z s < lim */
            int64_t a = b >= 0 ? 0 : (-b + s - 1) / s;
            int64_t e = b >= lim ? 0 : (lim - b + s - 1) / s;
            zlo = a > zlo ? a : zlo;
            zhi = e < zhi ? e : zhi;
        } else {
            const int64_t t = -s; /* b - z t < lim and b - z t >= 0 */
            int64_t a = b < lim ? 0 : (b - lim + 1 + t - 1) / t;
            int64_t e = b < 0 ? 0 : b / t + 1;
            zlo = a > zlo ? a : zlo;
            zhi = e < zhi ? e : zhi;
        }
    }
    if (zhi < zlo) zhi = zlo;
    if (zlo > n) zlo = zhi = n;
    const int64_t dz = step[0] * w->sx + step[1] * w->sy + step[2];
    const int64_t off0 = base[0] * w->sx + base[1] * w->sy + base[2];
    if (w->out)
        for (uint32_t c = 0; c < w->channels; c++) {
            float *out = w->out + (int64_t)c * w->npatch + o;
            const float *src = w->src + (int64_t)c * w->nbox + off0;
            for (int64_t z = 0; z < zlo; z++) out[z] = 0.0f;
            if (dz == 1)
                memcpy(out + zlo, src + zlo, sizeof(float) * (size_t)(zhi - zlo));
            else
                for (int64_t z = zlo; z < zhi; z++) out[z] = src[z * dz];
            for (int64_t z = zhi; z < n; z++) out[z] = 0.0f;
        }
    if (w->out_mask) {
        uint8_t *om = w->out_mask + o;
        const uint8_t *m = w->mask + off0;
        for (int64_t z = 0; z < zlo; z++) om[z] = 0;
        for (int64_t z = zlo; z < zhi; z++) om[z] = m[z * dz];
        for (int64_t z = zhi; z < n; z++) om[z] = 0;
    }
}

static bool is_int(double v) { return v == floor(v) && fabs(v) < 9e15; }

/* floor(v * 2^32 + 0.5) for |v| < 2^30, without a libm call per row (floor is an out-of-line call
 * on baseline x86-64): truncation, minus one where it rounded up (negative non-integers). Exact:
 * below 2^52 the truncated value is exact, above it x is an integer. */
static inline int64_t fixed_round(double v) {
    const double x = v * 4294967296.0 + 0.5;
    const int64_t t = (int64_t)x;
    return t - (x < (double)t);
}

cd_status cd_aug_apply_spatial(const cd_aug_params *a, const float *src, const uint8_t *mask_src, uint32_t channels,
                               const int64_t box_lo[3], const int64_t box_shape[3], const int64_t patch[3],
                               float *out_img, uint8_t *out_mask, cd_error *err) {
    if (!a || !box_lo || !box_shape || !patch) return cd_fail(err, CD_ERR_ARG, "cd_aug_apply_spatial: NULL argument");
    if (out_img && channels && !src) return cd_fail(err, CD_ERR_ARG, "cd_aug_apply_spatial: out_img without src");
    if (out_mask && !mask_src) return cd_fail(err, CD_ERR_ARG, "cd_aug_apply_spatial: out_mask without mask_src");
    for (int i = 0; i < 3; i++) {
        if (patch[i] < 1 || patch[i] > (1 << 20))
            return cd_fail(err, CD_ERR_ARG, "cd_aug_apply_spatial: bad patch size %lld", (long long)patch[i]);
        if (box_shape[i] < 0 || box_shape[i] > (1 << 20))
            return cd_fail(err, CD_ERR_ARG, "cd_aug_apply_spatial: bad box size %lld", (long long)box_shape[i]);
    }
    warp_ctx w = {src,
                  mask_src,
                  channels,
                  box_shape[0] * box_shape[1] * box_shape[2],
                  box_shape[1] * box_shape[2],
                  box_shape[2],
                  {box_shape[0], box_shape[1], box_shape[2]},
                  channels ? out_img : NULL,
                  out_mask,
                  patch[0] * patch[1] * patch[2]};
    if (!w.out && !w.out_mask) return CD_OK;
    double dmax[3];
    float *field = NULL;
    if (a->elastic) {
        field = cd_aug_elastic_field(a, patch, dmax);
        if (!field) return cd_fail(err, CD_ERR_NOMEM, "out of memory (elastic field)");
    }
    const double(*m)[3] = a->matrix;
    double c[3], h[3];
    for (int i = 0; i < 3; i++) {
        c[i] = a->center[i] - (double)box_lo[i];
        h[i] = (double)(patch[i] - 1) * 0.5;
    }
    bool integral = !field;
    for (int i = 0; i < 3 && integral; i++) {
        double o0 = c[i] - m[i][0] * h[0] - m[i][1] * h[1] - m[i][2] * h[2];
        integral = is_int(o0) && is_int(m[i][0]) && is_int(m[i][1]) && is_int(m[i][2]);
    }
    const double step[3] = {m[0][2], m[1][2], m[2][2]};
    const int64_t n2 = patch[2];
    for (int64_t x = 0; x < patch[0]; x++)
        for (int64_t y = 0; y < patch[1]; y++) {
            const double q0 = (double)x - h[0], q1 = (double)y - h[1], q2 = -h[2];
            double base[3];
            for (int i = 0; i < 3; i++) base[i] = c[i] + m[i][0] * q0 + m[i][1] * q1 + m[i][2] * q2;
            const int64_t o = (x * patch[1] + y) * n2;
            if (field) {
                const int64_t np = w.npatch;
                for (int64_t z = 0; z < n2; z++) {
                    const double d0 = field[o + z], d1 = field[np + o + z], d2 = field[2 * np + o + z];
                    double p[3];
                    for (int i = 0; i < 3; i++)
                        p[i] = base[i] + (double)z * step[i] + m[i][0] * d0 + m[i][1] * d1 + m[i][2] * d2;
                    if (interior(&w, p[0], p[1], p[2]))
                        sample_interior(&w, o + z, p[0], p[1], p[2]);
                    else
                        sample_checked(&w, o + z, p[0], p[1], p[2]);
                }
                continue;
            }
            if (integral) {
                const int64_t ib[3] = {(int64_t)base[0], (int64_t)base[1], (int64_t)base[2]};
                const int64_t is[3] = {(int64_t)step[0], (int64_t)step[1], (int64_t)step[2]};
                row_integral(&w, o, n2, ib, is);
                continue;
            }
            /* 32.32 fixed point while every position of the row stays within +-2^30 voxels; rows
             * beyond (or NaN) take the checked double path */
            bool fixed = w.nbox < INT32_MAX, inside = true;
            int64_t p0[3], dp[3];
            for (int i = 0; i < 3 && fixed; i++) {
                fixed = fabs(base[i]) + fabs(step[i]) * (double)(n2 - 1) < 1073741824.0;
                if (!fixed) break;
                p0[i] = fixed_round(base[i]);
                dp[i] = fixed_round(step[i]);
                const int64_t e = p0[i] + (n2 - 1) * dp[i];
                const int64_t lo = p0[i] < e ? p0[i] : e, hi = p0[i] < e ? e : p0[i];
                inside &= lo >= 0 && hi < (w.b[i] - 1) * INT64_C(4294967296);
            }
            if (fixed && inside)
                row_fast(&w, o, n2, p0, dp);
            else if (fixed)
                row_edge(&w, o, n2, p0, dp);
            else
                for (int64_t z = 0; z < n2; z++) {
                    const double px = base[0] + (double)z * step[0], py = base[1] + (double)z * step[1],
                                 pz = base[2] + (double)z * step[2];
                    if (interior(&w, px, py, pz))
                        sample_interior(&w, o + z, px, py, pz);
                    else
                        sample_checked(&w, o + z, px, py, pz);
                }
        }
    free(field);
    return CD_OK;
}
