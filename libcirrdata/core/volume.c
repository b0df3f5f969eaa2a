#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/volume_impl.h"

static void set_identity(double a[4][4]) {
    memset(a, 0, sizeof(double[4][4]));
    for (int i = 0; i < 4; i++) a[i][i] = 1.0;
}

static cd_status check_dims(const int64_t dims[3], cd_dtype dtype, size_t *count, size_t *nbytes, cd_error *err) {
    size_t esize = cd_dtype_size(dtype);
    if (!esize) return cd_fail(err, CD_ERR_ARG, "invalid dtype %d", (int)dtype);
    size_t n = 1;
    for (int i = 0; i < 3; i++) {
        if (dims[i] < 1) return cd_fail(err, CD_ERR_ARG, "volume dim %d is %lld (must be >= 1)", i, (long long)dims[i]);
        if (__builtin_mul_overflow(n, (size_t)dims[i], &n))
            return cd_fail(err, CD_ERR_LIMIT, "volume of %lld x %lld x %lld voxels overflows size_t",
                           (long long)dims[0], (long long)dims[1], (long long)dims[2]);
    }
    size_t b;
    if (__builtin_mul_overflow(n, esize, &b)) return cd_fail(err, CD_ERR_LIMIT, "volume too large");
    *count = n;
    *nbytes = b;
    return CD_OK;
}

cd_status cd_volume_wrap_buffer(void *buffer, size_t alloc_bytes, size_t data_offset, const int64_t dims[3],
                                cd_dtype dtype, cd_volume **out, cd_error *err) {
    size_t count = 0, nbytes = 0;
    cd_status st = check_dims(dims, dtype, &count, &nbytes, err);
    if (st == CD_OK && (data_offset > alloc_bytes || nbytes > alloc_bytes - data_offset))
        st = cd_fail(err, CD_ERR_INTERNAL, "volume buffer of %zu bytes too small", alloc_bytes);
    cd_volume *v = NULL;
    if (st == CD_OK && !(v = calloc(1, sizeof *v))) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
    if (st != CD_OK) {
        cd_buffer_free(buffer, alloc_bytes);
        return st;
    }
    memcpy(v->dims, dims, sizeof v->dims);
    v->dtype = dtype;
    v->count = count;
    v->buffer = buffer;
    v->buffer_bytes = alloc_bytes;
    v->data = (char *)buffer + data_offset;
    set_identity(v->affine);
    v->spacing[0] = v->spacing[1] = v->spacing[2] = 1.0;
    v->slope = 1.0;
    v->inter = 0.0;
    *out = v;
    return CD_OK;
}

cd_status cd_volume_create(const int64_t dims[3], cd_dtype dtype, cd_volume **out, cd_error *err) {
    if (!dims || !out) return cd_fail(err, CD_ERR_ARG, "cd_volume_create: NULL argument");
    size_t count = 0, nbytes = 0;
    cd_status st = check_dims(dims, dtype, &count, &nbytes, err);
    if (st != CD_OK) return st;
    void *buf = cd_buffer_alloc(nbytes);
    if (!buf) return cd_fail(err, CD_ERR_NOMEM, "cannot allocate %zu bytes for a volume", nbytes);
    memset(buf, 0, nbytes);
    return cd_volume_wrap_buffer(buf, nbytes, 0, dims, dtype, out, err);
}

void cd_volume_destroy(cd_volume *vol) {
    if (!vol) return;
    cd_buffer_free(vol->buffer, vol->buffer_bytes);
    free(vol);
}

cd_status cd_volume_clone(const cd_volume *vol, cd_volume **out, cd_error *err) {
    if (!vol || !out) return cd_fail(err, CD_ERR_ARG, "cd_volume_clone: NULL argument");
    cd_volume *c;
    cd_status st = cd_volume_create(vol->dims, vol->dtype, &c, err);
    if (st != CD_OK) return st;
    memcpy(c->data, vol->data, cd_volume_nbytes(vol));
    memcpy(c->affine, vol->affine, sizeof c->affine);
    memcpy(c->spacing, vol->spacing, sizeof c->spacing);
    c->slope = vol->slope;
    c->inter = vol->inter;
    c->scaled = vol->scaled;
    *out = c;
    return CD_OK;
}

void cd_volume_dims(const cd_volume *vol, int64_t dims[3]) { memcpy(dims, vol->dims, sizeof vol->dims); }
cd_dtype cd_volume_dtype(const cd_volume *vol) { return vol->dtype; }
size_t cd_volume_count(const cd_volume *vol) { return vol->count; }
size_t cd_volume_nbytes(const cd_volume *vol) { return vol->count * cd_dtype_size(vol->dtype); }
void *cd_volume_data(cd_volume *vol) { return vol->data; }
const void *cd_volume_data_const(const cd_volume *vol) { return vol->data; }
void cd_volume_affine(const cd_volume *vol, double affine[4][4]) { memcpy(affine, vol->affine, sizeof vol->affine); }
void cd_volume_set_affine(cd_volume *vol, const double affine[4][4]) {
    memcpy(vol->affine, affine, sizeof vol->affine);
}
void cd_volume_spacing(const cd_volume *vol, double spacing[3]) { memcpy(spacing, vol->spacing, sizeof vol->spacing); }
void cd_volume_set_spacing(cd_volume *vol, const double spacing[3]) {
    memcpy(vol->spacing, spacing, sizeof vol->spacing);
}
bool cd_volume_has_scaling(const cd_volume *vol) { return vol->scaled; }

void cd_volume_scaling(const cd_volume *vol, double *slope, double *inter) {
    if (slope) *slope = vol->slope;
    if (inter) *inter = vol->inter;
}

void cd_volume_set_scaling(cd_volume *vol, double slope, double inter) {
    /* nibabel: a zero or non-finite slope means the values are used as stored. */
    if (slope == 0.0 || !isfinite(slope) || !isfinite(inter) || (slope == 1.0 && inter == 0.0)) {
        vol->slope = 1.0;
        vol->inter = 0.0;
        vol->scaled = false;
    } else {
        vol->slope = slope;
        vol->inter = inter;
        vol->scaled = true;
    }
}

/* One loop per stored type; the scaled value is formed in double so float32 output is correctly
 * rounded from the exact nibabel (float64) result. */
#define CONVERT_LOOP(T, OUT_T)                                                                                         \
    do {                                                                                                               \
        const T *src = (const T *)vol->data;                                                                           \
        if (vol->scaled)                                                                                               \
            for (size_t i = 0; i < n; i++) out[i] = (OUT_T)((double)src[i] * slope + inter);                           \
        else                                                                                                           \
            for (size_t i = 0; i < n; i++) out[i] = (OUT_T)src[i];                                                     \
    } while (0)

#define CONVERT_ALL(OUT_T)                                                                                             \
    do {                                                                                                               \
        size_t n = vol->count;                                                                                         \
        double slope = vol->slope, inter = vol->inter;                                                                 \
        switch (vol->dtype) {                                                                                          \
        case CD_DTYPE_UINT8: CONVERT_LOOP(uint8_t, OUT_T); break;                                                      \
        case CD_DTYPE_INT8: CONVERT_LOOP(int8_t, OUT_T); break;                                                        \
        case CD_DTYPE_UINT16: CONVERT_LOOP(uint16_t, OUT_T); break;                                                    \
        case CD_DTYPE_INT16: CONVERT_LOOP(int16_t, OUT_T); break;                                                      \
        case CD_DTYPE_UINT32: CONVERT_LOOP(uint32_t, OUT_T); break;                                                    \
        case CD_DTYPE_INT32: CONVERT_LOOP(int32_t, OUT_T); break;                                                      \
        case CD_DTYPE_UINT64: CONVERT_LOOP(uint64_t, OUT_T); break;                                                    \
        case CD_DTYPE_INT64: CONVERT_LOOP(int64_t, OUT_T); break;                                                      \
        case CD_DTYPE_FLOAT32: CONVERT_LOOP(float, OUT_T); break;                                                      \
        case CD_DTYPE_FLOAT64: CONVERT_LOOP(double, OUT_T); break;                                                     \
        case CD_DTYPE_FLOAT16: {                                                                                       \
            const uint16_t *src = (const uint16_t *)vol->data;                                                         \
            for (size_t i = 0; i < n; i++) {                                                                           \
                double v = cd_half_to_float(src[i]);                                                                   \
                out[i] = (OUT_T)(vol->scaled ? v * slope + inter : v);                                                 \
            }                                                                                                          \
            break;                                                                                                     \
        }                                                                                                              \
        case CD_DTYPE_INVALID: break;                                                                                  \
        }                                                                                                              \
    } while (0)

void cd_volume_to_float32(const cd_volume *vol, float *out) { CONVERT_ALL(float); }
void cd_volume_to_float64(const cd_volume *vol, double *out) { CONVERT_ALL(double); }
