/* Non-finite voxels of a recipe's inputs: one NaN would otherwise reach every voxel a cubic prefilter,
 * a z-score or a percentile touches, and be stored without a word. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "preprocess/nonfinite.h"

/* Physical values as cd_volume_to_float32 forms them: (float)(raw * slope + inter) in double. */
#define COUNT_LOOP(T)                                                                                                  \
    do {                                                                                                               \
        const T *s = (const T *)data;                                                                                  \
        if (scaled)                                                                                                    \
            for (size_t i = 0; i < n; i++) bad += !isfinite((float)((double)s[i] * slope + inter));                    \
        else                                                                                                           \
            for (size_t i = 0; i < n; i++) bad += !isfinite((float)s[i]);                                              \
    } while (0)

/* The physical values of every raw value of an integer type lie between those of its extremes (the
 * scaling is linear): when both are finite as float32, so is every voxel. */
static bool int_range_finite(cd_dtype dt, double slope, double inter) {
    double lo, hi;
    switch (dt) {
    case CD_DTYPE_UINT8: lo = 0, hi = 255; break;
    case CD_DTYPE_INT8: lo = -128, hi = 127; break;
    case CD_DTYPE_UINT16: lo = 0, hi = 65535; break;
    case CD_DTYPE_INT16: lo = -32768, hi = 32767; break;
    case CD_DTYPE_UINT32: lo = 0, hi = 4294967295.0; break;
    case CD_DTYPE_INT32: lo = -2147483648.0, hi = 2147483647.0; break;
    case CD_DTYPE_UINT64: lo = 0, hi = 18446744073709551615.0; break;
    case CD_DTYPE_INT64: lo = -9223372036854775808.0, hi = 9223372036854775807.0; break;
    default: return false;
    }
    return isfinite((float)(lo * slope + inter)) && isfinite((float)(hi * slope + inter));
}

uint64_t cd_volume_count_non_finite(const cd_volume *v) {
    const cd_dtype dt = cd_volume_dtype(v);
    const bool scaled = cd_volume_has_scaling(v);
    double slope, inter;
    cd_volume_scaling(v, &slope, &inter);
    const bool is_float = dt == CD_DTYPE_FLOAT16 || dt == CD_DTYPE_FLOAT32 || dt == CD_DTYPE_FLOAT64;
    if (!is_float && (!scaled || int_range_finite(dt, slope, inter))) return 0;
    const void *data = cd_volume_data_const(v);
    const size_t n = cd_volume_count(v);
    uint64_t bad = 0;
    switch (dt) {
    case CD_DTYPE_UINT8: COUNT_LOOP(uint8_t); break;
    case CD_DTYPE_INT8: COUNT_LOOP(int8_t); break;
    case CD_DTYPE_UINT16: COUNT_LOOP(uint16_t); break;
    case CD_DTYPE_INT16: COUNT_LOOP(int16_t); break;
    case CD_DTYPE_UINT32: COUNT_LOOP(uint32_t); break;
    case CD_DTYPE_INT32: COUNT_LOOP(int32_t); break;
    case CD_DTYPE_UINT64: COUNT_LOOP(uint64_t); break;
    case CD_DTYPE_INT64: COUNT_LOOP(int64_t); break;
    case CD_DTYPE_FLOAT32: COUNT_LOOP(float); break;
    case CD_DTYPE_FLOAT64: COUNT_LOOP(double); break;
    case CD_DTYPE_FLOAT16: {
        const uint16_t *s = data;
        for (size_t i = 0; i < n; i++) {
            double x = cd_half_to_float(s[i]);
            bad += !isfinite((float)(scaled ? x * slope + inter : x));
        }
        break;
    }
    case CD_DTYPE_INVALID: break;
    }
    return bad;
}

cd_status cd_non_finite_apply(cd_non_finite policy, const cd_volume *v, const char *what, const char *hint,
                              cd_volume **clean, cd_error *err) {
    *clean = NULL;
    const uint64_t bad = cd_volume_count_non_finite(v);
    if (bad == 0) return CD_OK;
    if (policy != CD_NON_FINITE_ZERO) {
        if (!hint)
            hint = strstr(what, "mask")
                       ? "a recipe with \"non_finite\": \"zero\" (convert --non-finite zero) makes such voxels "
                         "background (0)"
                       : "a recipe with \"non_finite\": \"zero\" (convert --non-finite zero) sets such voxels to 0";
        return cd_fail(err, CD_ERR_FORMAT, "%llu non-finite voxel%s (NaN or infinite in float32) in %s; %s",
                       (unsigned long long)bad, bad == 1 ? "" : "s", what, hint);
    }
    int64_t d[3];
    cd_volume_dims(v, d);
    cd_volume *c = NULL;
    cd_status st = cd_volume_create(d, CD_DTYPE_FLOAT32, &c, err);
    if (st != CD_OK) return st;
    float *p = cd_volume_data(c);
    cd_volume_to_float32(v, p);
    for (size_t i = 0, n = cd_volume_count(c); i < n; i++)
        if (!isfinite(p[i])) p[i] = 0.0f;
    double a[4][4], sp[3];
    cd_volume_affine(v, a);
    cd_volume_spacing(v, sp);
    cd_volume_set_affine(c, a);
    cd_volume_set_spacing(c, sp);
    *clean = c;
    return CD_OK;
}

cd_status cd_non_finite_resolve(cd_non_finite policy, cd_volume **v, const char *path, const char *what,
                                cd_error *err) {
    cd_volume *clean = NULL;
    cd_status st = cd_non_finite_apply(policy, *v, what, NULL, &clean, err);
    if (st != CD_OK) {
        char m[CD_ERROR_MESSAGE_MAX];
        snprintf(m, sizeof m, "%s", err ? err->message : "");
        return cd_fail(err, st, "%s: %s", path, m);
    }
    if (clean) {
        cd_volume_destroy(*v);
        *v = clean;
    }
    return CD_OK;
}
