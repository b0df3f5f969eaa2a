/* The storage-independent half of a training sample: placement, drawn parameters, source box, and
 * the augmentation of that box (see sample_plan.h). */
#include <string.h>

#include "cirrdata/rng.h"
#include "loader/sample_plan.h"

/* Philox stream id of the patch-centre draw (the permutation's lives in loader.c). */
#define OP_CENTER 0x63656e74u

static void identity_params(const double center[3], cd_aug_params *a) {
    memset(a, 0, sizeof *a);
    for (int i = 0; i < 3; i++) {
        a->matrix[i][i] = 1.0;
        a->center[i] = center[i];
    }
    a->scale = 1.0;
}

void cd_sample_plan_make(const cd_aug_pipeline *pipe, cd_loader_mode mode, uint64_t seed, uint64_t epoch, uint64_t record_index,
                         int32_t z, const uint32_t shape[3], const int64_t patch[3], bool fg, uint32_t nfg, const int32_t (*fgl)[3],
                         cd_sample_plan *out) {
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

void cd_sample_plan_extract(const cd_sample_plan *p, const float *img, const uint8_t *mask, uint32_t channels, const uint32_t shape[3],
                            float *box, uint8_t *mbox) {
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

cd_status cd_sample_plan_render(const cd_sample_plan *p, bool intensity, const float *box, const uint8_t *mbox, uint32_t channels,
                                float *out_img, uint8_t *out_mask, cd_error *err) {
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
