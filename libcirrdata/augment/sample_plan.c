/* The storage-independent half of a training sample: placement, drawn parameters, source box, and
 * the augmentation of that box (see sample_plan.h). */
#include <math.h>
#include <string.h>

#include "cirrdata/rng.h"
#include "augment/sample_plan.h"

/* Philox stream id of the patch-centre draw (the permutation's lives in loader/order.c). */
#define OP_CENTER 0x63656e74u

static void identity_params(const double center[3], cd_aug_params *a) {
    memset(a, 0, sizeof *a);
    for (int i = 0; i < 3; i++) {
        a->matrix[i][i] = 1.0;
        a->center[i] = center[i];
    }
    a->scale = 1.0;
}

void cd_sample_plan_make(const cd_aug_pipeline *pipe, cd_loader_mode mode, uint64_t seed, uint64_t epoch,
                         uint64_t record_index, int32_t z, const uint32_t shape[3], const int64_t patch[3], bool fg,
                         uint32_t nfg, const int32_t (*fgl)[3], cd_sample_plan *out) {
    memset(out, 0, sizeof *out);
    memcpy(out->patch, patch, sizeof out->patch);
    /* Where the patch lies: an integer corner, so that without augmentation a patch is an exact crop
     * (centre = corner + (patch - 1) / 2). */
    int64_t *corner = out->corner;
    uint64_t sample_id = record_index;
    if (mode == CD_LOADER_SLICE) {
        corner[2] = z;
        sample_id = (record_index << 20) | (uint64_t)z; /* each slice has its own draws */
    } else if (mode == CD_LOADER_VOLUME) {
        for (int a = 0; a < 3; a++) corner[a] = ((int64_t)shape[a] - patch[a]) / 2; /* centred crop or pad */
    } else {
        cd_rng rng;
        cd_rng_init(&rng, seed ^ 0x5bd1e995ull * (sample_id + 1), (uint32_t)epoch, OP_CENTER);
        out->fg = fg && nfg > 0;
        if (out->fg) {
            const int32_t *p = fgl[cd_rng_below(&rng, nfg)];
            for (int a = 0; a < 3; a++) corner[a] = p[a] - patch[a] / 2;
        } else {
            /* Any corner whose patch centre lies inside the volume. */
            for (int a = 0; a < 3; a++) corner[a] = (int64_t)cd_rng_below(&rng, shape[a]) - patch[a] / 2;
        }
    }
    out->sample_id = sample_id;
    double center[3];
    for (int a = 0; a < 3; a++) center[a] = (double)corner[a] + (double)(patch[a] - 1) / 2.0;
    if (pipe)
        cd_aug_draw(pipe, seed, epoch, sample_id, patch, center, &out->a);
    else
        identity_params(center, &out->a);

    /* Only the source box the transform needs (clipped to the record). */
    cd_aug_source_box(&out->a, patch, out->lo, out->hi);
    for (int d = 0; d < 3; d++) {
        if (out->lo[d] < 0) out->lo[d] = 0;
        if (out->hi[d] > (int64_t)shape[d]) out->hi[d] = shape[d];
        if (out->hi[d] <= out->lo[d]) out->empty = true;
        out->bshape[d] = out->hi[d] - out->lo[d];
    }
}

void cd_sample_plan_extract(const cd_sample_plan *p, const float *img, const uint8_t *mask, uint32_t channels,
                            const uint32_t shape[3], float *box, uint8_t *mbox) {
    if (p->empty) return;
    const size_t X = shape[0], Y = shape[1], Z = shape[2];
    const size_t bx = (size_t)p->bshape[0], by = (size_t)p->bshape[1], bz = (size_t)p->bshape[2];
    for (uint32_t c = 0; c < channels; c++)
        for (size_t x = 0; x < bx; x++)
            for (size_t y = 0; y < by; y++) {
                size_t src = (((size_t)c * X + (size_t)p->lo[0] + x) * Y + (size_t)p->lo[1] + y) * Z + (size_t)p->lo[2];
                size_t dst = (((size_t)c * bx + x) * by + y) * bz;
                if (box) memcpy(box + dst, img + src, bz * sizeof(float));
                if (mbox && mask && c == 0) memcpy(mbox + dst, mask + src, bz);
            }
}

cd_status cd_sample_plan_render(const cd_sample_plan *p, bool intensity, const float *box, const uint8_t *mbox,
                                uint32_t channels, float *out_img, uint8_t *out_mask, cd_error *err) {
    const size_t pvox = (size_t)(p->patch[0] * p->patch[1] * p->patch[2]);
    if (p->empty) {
        memset(out_img, 0, (size_t)channels * pvox * sizeof(float));
        if (out_mask) memset(out_mask, 0, pvox);
        return CD_OK;
    }
    cd_status st = cd_aug_apply_spatial(&p->a, box, mbox, channels, p->lo, p->bshape, p->patch, out_img, out_mask, err);
    if (st == CD_OK && intensity) st = cd_aug_apply_intensity(&p->a, out_img, channels, p->patch, err);
    return st;
}

bool cd_sample_plan_direct(const cd_sample_plan *p, cd_sample_map *m) {
    if (p->empty || p->a.elastic) return false;
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 3; k++)
            if (k != i && p->a.matrix[i][k] != 0.0) return false;
        const double s = p->a.matrix[i][i];
        if (s != 1.0 && s != -1.0) return false;
        /* the offset as cd_aug_apply_spatial computes it (relative to the box), integral there too */
        const double o = (p->a.center[i] - (double)p->lo[i]) - s * ((double)(p->patch[i] - 1) * 0.5);
        if (o != floor(o) || fabs(o) > 1e15) return false;
        m->off[i] = (int64_t)o + p->lo[i];
        m->sgn[i] = s > 0 ? 1 : -1;
        m->size[i] = p->patch[i];
    }
    return true;
}

/* Output indices [*o0, *o1) of axis a whose source lies in [0, n). */
static void valid_range(const cd_sample_map *m, int a, int64_t n, int64_t *o0, int64_t *o1) {
    int64_t lo, hi;
    if (m->sgn[a] > 0) { /* src = off + o in [0, n) */
        lo = -m->off[a];
        hi = n - m->off[a];
    } else { /* src = off - o in [0, n) */
        lo = m->off[a] - n + 1;
        hi = m->off[a] + 1;
    }
    lo = lo < 0 ? 0 : lo;
    hi = hi > m->size[a] ? m->size[a] : hi;
    *o0 = lo;
    *o1 = hi > lo ? hi : lo;
}

bool cd_sample_map_source(const cd_sample_map *m, const uint32_t shape[3], int64_t lo[3], int64_t hi[3]) {
    for (int a = 0; a < 3; a++) {
        int64_t o0, o1;
        valid_range(m, a, shape[a], &o0, &o1);
        if (o1 <= o0) return false;
        const int64_t s0 = m->off[a] + m->sgn[a] * o0, s1 = m->off[a] + m->sgn[a] * (o1 - 1);
        lo[a] = s0 < s1 ? s0 : s1;
        hi[a] = (s0 < s1 ? s1 : s0) + 1;
    }
    return true;
}

void cd_sample_map_zero_outside(const cd_sample_map *m, const uint32_t shape[3], uint32_t channels, float *out_img,
                                uint8_t *out_mask) {
    int64_t v0[3], v1[3];
    for (int a = 0; a < 3; a++) valid_range(m, a, shape[a], &v0[a], &v1[a]);
    const int64_t X = m->size[0], Y = m->size[1], Z = m->size[2];
    const bool empty = v0[0] >= v1[0] || v0[1] >= v1[1] || v0[2] >= v1[2];
    for (uint32_t c = 0; c <= channels; c++) {
        /* c == channels: the mask */
        float *f = c < channels ? out_img + (size_t)c * (size_t)(X * Y * Z) : NULL;
        uint8_t *u = c == channels ? out_mask : NULL;
        if (!f && !u) continue;
        const size_t es = f ? sizeof(float) : 1;
        char *base = f ? (char *)f : (char *)u;
        if (empty) {
            memset(base, 0, (size_t)(X * Y * Z) * es);
            continue;
        }
        for (int64_t x = 0; x < X; x++) {
            char *slab = base + (size_t)(x * Y * Z) * es;
            if (x < v0[0] || x >= v1[0]) {
                memset(slab, 0, (size_t)(Y * Z) * es);
                continue;
            }
            for (int64_t y = 0; y < Y; y++) {
                char *row = slab + (size_t)(y * Z) * es;
                if (y < v0[1] || y >= v1[1]) {
                    memset(row, 0, (size_t)Z * es);
                    continue;
                }
                if (v0[2] > 0) memset(row, 0, (size_t)v0[2] * es);
                if (v1[2] < Z) memset(row + (size_t)v1[2] * es, 0, (size_t)(Z - v1[2]) * es);
            }
        }
    }
}
