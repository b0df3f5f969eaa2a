/* Cropping a preprocessed volume to a box (see crop.h). */
#include <string.h>

#include "preprocess/crop.h"

void cd_pp_bbox(const cd_volume *v, bool from_float, int64_t lo[3], int64_t hi[3], bool *found) {
    int64_t d[3];
    cd_volume_dims(v, d);
    *found = false;
    for (int a = 0; a < 3; a++) {
        lo[a] = d[a];
        hi[a] = 0;
    }
    const uint8_t *m = from_float ? NULL : cd_volume_data_const(v);
    const float *f = from_float ? cd_volume_data_const(v) : NULL;
    size_t i = 0;
    for (int64_t z = 0; z < d[2]; z++)
        for (int64_t y = 0; y < d[1]; y++)
            for (int64_t x = 0; x < d[0]; x++, i++) {
                if (from_float ? f[i] == 0.0f : m[i] == 0) continue;
                const int64_t p[3] = {x, y, z};
                for (int a = 0; a < 3; a++) {
                    if (p[a] < lo[a]) lo[a] = p[a];
                    if (p[a] + 1 > hi[a]) hi[a] = p[a] + 1;
                }
                *found = true;
            }
}

cd_status cd_pp_crop_volume(const cd_volume *v, const int64_t lo[3], const int64_t hi[3], cd_volume **out,
                            cd_error *err) {
    int64_t d[3], nd[3] = {hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]};
    cd_volume_dims(v, d);
    cd_status st = cd_volume_create(nd, cd_volume_dtype(v), out, err);
    if (st != CD_OK) return st;
    size_t es = cd_dtype_size(cd_volume_dtype(v));
    const uint8_t *s = cd_volume_data_const(v);
    uint8_t *o = cd_volume_data(*out);
    for (int64_t z = 0; z < nd[2]; z++)
        for (int64_t y = 0; y < nd[1]; y++) {
            size_t src = (size_t)(lo[0] + d[0] * (lo[1] + y + d[1] * (lo[2] + z)));
            memcpy(o + (size_t)(nd[0] * (y + nd[1] * z)) * es, s + src * es, (size_t)nd[0] * es);
        }
    double a[4][4], sp[3], slope, inter;
    cd_volume_affine(v, a);
    for (int r = 0; r < 3; r++) a[r][3] += a[r][0] * (double)lo[0] + a[r][1] * (double)lo[1] + a[r][2] * (double)lo[2];
    cd_volume_set_affine(*out, a);
    cd_volume_spacing(v, sp);
    cd_volume_set_spacing(*out, sp);
    cd_volume_scaling(v, &slope, &inter);
    cd_volume_set_scaling(*out, slope, inter);
    return CD_OK;
}
