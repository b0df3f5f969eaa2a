/* A channel of a record tensor as a volume (cirrdata/shard.h: cd_tensor_channel_volume). */
#include <string.h>

#include "cirrdata/shard.h"
#include "cirrdata/volume.h"
#include "core/internal.h"

cd_status cd_tensor_channel_volume(const void *data, const cd_tensor_info *ti, uint32_t ch, const double affine[4][4],
                                   const double spacing[3], cd_volume **out, cd_error *err) {
    if (out) *out = NULL;
    if (!data || !ti || !affine || !spacing || !out)
        return cd_fail(err, CD_ERR_ARG, "cd_tensor_channel_volume: NULL argument");
    if (ch >= ti->channels)
        return cd_fail(err, CD_ERR_ARG, "cd_tensor_channel_volume: channel %u of a %u-channel tensor", ch,
                       ti->channels);
    const size_t X = ti->shape[0], Y = ti->shape[1], Z = ti->shape[2], n = X * Y * Z;
    const cd_dtype dt = ti->dtype, odt = dt == CD_DTYPE_FLOAT16 ? CD_DTYPE_FLOAT32 : dt;
    int64_t dims[3] = {(int64_t)X, (int64_t)Y, (int64_t)Z};
    cd_status st = cd_volume_create(dims, odt, out, err);
    if (st != CD_OK) return st;
    uint8_t *dst = cd_volume_data(*out);
    const size_t es = cd_dtype_size(dt), oes = cd_dtype_size(odt);
    const uint8_t *src = (const uint8_t *)data + (size_t)ch * n * es;
    for (size_t x = 0; x < X; x++)
        for (size_t y = 0; y < Y; y++)
            for (size_t z = 0; z < Z; z++) {
                const uint8_t *s = src + ((x * Y + y) * Z + z) * es;
                uint8_t *d = dst + (x + X * (y + Y * z)) * oes;
                if (dt == CD_DTYPE_FLOAT16) {
                    uint16_t hv;
                    float f;
                    memcpy(&hv, s, 2);
                    cd_float16_to_float32(&hv, &f, 1);
                    memcpy(d, &f, 4);
                } else {
                    memcpy(d, s, es);
                }
            }
    cd_volume_set_affine(*out, affine);
    cd_volume_set_spacing(*out, spacing);
    return CD_OK;
}
