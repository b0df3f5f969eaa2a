/* Storing a volume in C order, casting and reorienting on the way (see store.h), and a sample's chunks
 * produced straight from its source (cd_image_view_fill). */
#include <math.h>
#include <string.h>

#include "preprocess/image_view.h"
#include "preprocess/store.h"

/* When the unit-step axis f is not the stored z (the usual case: x), the values of an f-block x z-block
 * tile are transposed in a small L1-resident buffer and written out as whole z-runs; otherwise (source x
 * became the stored z) the plain loop already writes contiguously. */
#define STORE_TILE_Z 32
#define STORE_LOOP(SRC_T, DST_T, CONVERT)                                                                              \
    do {                                                                                                               \
        const SRC_T *s = (const SRC_T *)src->data + src->base;                                                         \
        DST_T *o = (DST_T *)dst;                                                                                       \
        const int64_t B = 64 / (int64_t)sizeof(SRC_T), tf = t[f];                                                      \
        for (int64_t f0 = 0; f0 < d[f]; f0 += B) {                                                                     \
            const int64_t f1 = f0 + B < d[f] ? f0 + B : d[f];                                                          \
            if (ost[b] == 1) {                                                                                         \
                DST_T tile[64][STORE_TILE_Z];                                                                          \
                for (int64_t pa = 0; pa < d[a]; pa++)                                                                  \
                    for (int64_t b0 = 0; b0 < d[b]; b0 += STORE_TILE_Z) {                                              \
                        const int64_t b1 = b0 + STORE_TILE_Z < d[b] ? b0 + STORE_TILE_Z : d[b];                        \
                        for (int64_t pb = b0; pb < b1; pb++) {                                                         \
                            const SRC_T *row = s + pa * t[a] + pb * t[b];                                              \
                            /* The next tile's source lines (every row a different line: the      \
                             * hardware prefetchers do not follow this pattern). */                    \
                            if (pa + 1 < d[a]) {                                                                       \
                                __builtin_prefetch(row + t[a] + f0 * tf);                                              \
                                __builtin_prefetch(row + t[a] + (f1 - 1) * tf);                                        \
                            }                                                                                          \
                            for (int64_t pf = f0; pf < f1; pf++) {                                                     \
                                SRC_T v = row[pf * tf];                                                                \
                                tile[pf - f0][pb - b0] = CONVERT;                                                      \
                            }                                                                                          \
                        }                                                                                              \
                        for (int64_t pf = f0; pf < f1; pf++) {                                                         \
                            DST_T *orow = o + pa * ost[a] + b0 + pf * ost[f];                                          \
                            for (int64_t k = 0; k < b1 - b0; k++) orow[k] = tile[pf - f0][k];                          \
                        }                                                                                              \
                    }                                                                                                  \
                continue;                                                                                              \
            }                                                                                                          \
            for (int64_t pa = 0; pa < d[a]; pa++)                                                                      \
                for (int64_t pb = 0; pb < d[b]; pb++) {                                                                \
                    const SRC_T *row = s + pa * t[a] + pb * t[b];                                                      \
                    DST_T *orow = o + pa * ost[a] + pb * ost[b];                                                       \
                    for (int64_t pf = f0; pf < f1; pf++) {                                                             \
                        SRC_T v = row[pf * tf];                                                                        \
                        orow[pf * ost[f]] = CONVERT;                                                                   \
                    }                                                                                                  \
                }                                                                                                      \
        }                                                                                                              \
    } while (0)

static int16_t round_i16(double v) { return (int16_t)(v < -32768 ? -32768 : v > 32767 ? 32767 : lrint(v)); }
static uint8_t round_u8(double v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lrint(v)); }

void cd_store_c_order(const cd_store_src *src, cd_dtype out_dtype, void *dst) {
    const int64_t *d = src->d, *t = src->step;
    const int64_t ost[3] = {d[1] * d[2], d[2], 1};
    int f = 0;
    for (int i = 0; i < 3; i++)
        if (t[i] == 1 || t[i] == -1) {
            f = i;
            break;
        }
    const int a = f == 0 ? 1 : 0, b = f == 2 ? 1 : 2;
    if (out_dtype == CD_DTYPE_FLOAT32 && (src->scaled || src->dtype != CD_DTYPE_FLOAT32)) {
        /* Physical values, as cd_volume_to_float32 computes them. */
        const double slope = src->scaled ? src->slope : 1.0, inter = src->scaled ? src->inter : 0.0;
        switch (src->dtype) {
        case CD_DTYPE_FLOAT32: STORE_LOOP(float, float, (float)((double)v * slope + inter)); break;
        case CD_DTYPE_UINT8: STORE_LOOP(uint8_t, float, (float)((double)v * slope + inter)); break;
        case CD_DTYPE_INT8: STORE_LOOP(int8_t, float, (float)((double)v * slope + inter)); break;
        case CD_DTYPE_INT16: STORE_LOOP(int16_t, float, (float)((double)v * slope + inter)); break;
        case CD_DTYPE_UINT16: STORE_LOOP(uint16_t, float, (float)((double)v * slope + inter)); break;
        default: break;
        }
        return;
    }
    switch (src->dtype) {
    case CD_DTYPE_FLOAT32:
        switch (out_dtype) {
        case CD_DTYPE_FLOAT32: STORE_LOOP(float, float, v); break;
        case CD_DTYPE_FLOAT16: STORE_LOOP(float, uint16_t, cd_float_to_half(v)); break;
        case CD_DTYPE_INT16: STORE_LOOP(float, int16_t, round_i16(v)); break;
        case CD_DTYPE_UINT8: STORE_LOOP(float, uint8_t, round_u8(v)); break;
        default: break;
        }
        break;
    case CD_DTYPE_UINT8:
        if (out_dtype == CD_DTYPE_UINT8)
            STORE_LOOP(uint8_t, uint8_t, v);
        else
            STORE_LOOP(uint8_t, int16_t, (int16_t)v);
        break;
    case CD_DTYPE_INT8: STORE_LOOP(int8_t, int16_t, (int16_t)v); break;
    case CD_DTYPE_INT16: STORE_LOOP(int16_t, int16_t, v); break;
    case CD_DTYPE_UINT16: STORE_LOOP(uint16_t, int16_t, (int16_t)v); break;
    default: break;
    }
}

cd_store_src cd_store_plain_src(const cd_volume *vol) {
    cd_store_src s = {cd_volume_data_const(vol), cd_volume_dtype(vol), {0, 0, 0}, {0, 0, 0}, 0, false, 1.0, 0.0};
    cd_volume_dims(vol, s.d);
    s.step[0] = 1;
    s.step[1] = s.d[0];
    s.step[2] = s.d[0] * s.d[1];
    return s;
}

cd_store_src cd_store_reoriented_src(const cd_volume *vol, const cd_orientation *o, double affine[4][4]) {
    int64_t n[3];
    cd_volume_dims(vol, n);
    cd_store_src s = {cd_volume_data_const(vol), cd_volume_dtype(vol), {0, 0, 0}, {0, 0, 0}, 0, false, 1.0, 0.0};
    const int64_t sst[3] = {1, n[0], n[0] * n[1]};
    s.scaled = cd_volume_has_scaling(vol);
    cd_volume_scaling(vol, &s.slope, &s.inter);
    double a[4][4];
    cd_volume_affine(vol, a);
    memset(affine, 0, sizeof(double[4][4]));
    for (int i = 0; i < 3; i++) {
        const int w = o->world_axis[i];
        s.d[w] = n[i];
        s.step[w] = o->flip[i] * sst[i];
        if (o->flip[i] < 0) s.base += sst[i] * (n[i] - 1);
    }
    for (int r = 0; r < 3; r++) {
        double t = a[r][3];
        for (int i = 0; i < 3; i++) {
            affine[r][o->world_axis[i]] = o->flip[i] * a[r][i];
            if (o->flip[i] < 0) t += a[r][i] * (double)(n[i] - 1);
        }
        affine[r][3] = t;
    }
    affine[3][3] = 1.0;
    return s;
}

/* Row by row (z runs): a row's nonzero count is a branch-free loop, and only a row with any updates the
 * box, from its first and last nonzero z. */
void cd_bbox_c_order(const uint8_t *m, const uint32_t d[3], int64_t lo[3], int64_t hi[3], bool *found,
                     uint64_t *count) {
    *found = false;
    *count = 0;
    for (int a = 0; a < 3; a++) {
        lo[a] = d[a];
        hi[a] = 0;
    }
    const size_t Z = d[2];
    for (int64_t x = 0; x < d[0]; x++)
        for (int64_t y = 0; y < d[1]; y++) {
            const uint8_t *row = m + ((size_t)x * d[1] + (size_t)y) * Z;
            size_t c = 0;
            for (size_t z = 0; z < Z; z++) c += row[z] != 0;
            if (!c) continue;
            *count += c;
            size_t z0 = 0, z1 = Z;
            while (!row[z0]) z0++;
            while (!row[z1 - 1]) z1--;
            if (x < lo[0]) lo[0] = x;
            if (x + 1 > hi[0]) hi[0] = x + 1;
            if (y < lo[1]) lo[1] = y;
            if (y + 1 > hi[1]) hi[1] = y + 1;
            if ((int64_t)z0 < lo[2]) lo[2] = (int64_t)z0;
            if ((int64_t)z1 > hi[2]) hi[2] = (int64_t)z1;
            *found = true;
        }
}

void cd_image_view_fill(const void *user, const cd_tensor_info *ti, const cd_chunk_info *ci, void *dst) {
    const cd_image_view *v = user;
    (void)ti;
    /* The chunk is the C-order store of a sub-box of the view. */
    cd_store_src sub = {v->data,
                        v->src_dtype,
                        {ci->extent[0], ci->extent[1], ci->extent[2]},
                        {v->step[0], v->step[1], v->step[2]},
                        v->base,
                        v->scaled,
                        v->slope,
                        v->inter};
    for (int a = 0; a < 3; a++) sub.base += (int64_t)ci->start[a] * v->step[a];
    cd_store_c_order(&sub, v->dtype, dst);
}
