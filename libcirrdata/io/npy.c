/* NumPy .npy writer (format 1.0): a tiny, fully specified format, so we write it by hand. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cirrdata/npy.h"
#include "core/internal.h"
#include "io/file.h"

static const char *npy_descr(cd_dtype dtype) {
    switch (dtype) {
    case CD_DTYPE_UINT8: return "|u1";
    case CD_DTYPE_INT8: return "|i1";
    case CD_DTYPE_UINT16: return "<u2";
    case CD_DTYPE_INT16: return "<i2";
    case CD_DTYPE_UINT32: return "<u4";
    case CD_DTYPE_INT32: return "<i4";
    case CD_DTYPE_UINT64: return "<u8";
    case CD_DTYPE_INT64: return "<i8";
    case CD_DTYPE_FLOAT16: return "<f2";
    case CD_DTYPE_FLOAT32: return "<f4";
    case CD_DTYPE_FLOAT64: return "<f8";
    default: return NULL;
    }
}

cd_status cd_npy_write(const char *path, const void *data, cd_dtype dtype, int ndim, const int64_t *dims,
                       bool fortran_order, cd_error *err) {
    const char *descr = npy_descr(dtype);
    if (!path || !data || !descr || ndim < 0 || ndim > 32 || (ndim > 0 && !dims))
        return cd_fail(err, CD_ERR_ARG, "cd_npy_write: invalid argument");
    if (__BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__)
        return cd_fail(err, CD_ERR_UNSUPPORTED, "%s: .npy writing needs a little-endian host", path);
    char shape[32 * 24 + 8];
    size_t pos = 0;
    size_t count = 1;
    shape[pos++] = '(';
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0) return cd_fail(err, CD_ERR_ARG, "cd_npy_write: negative dim");
        count *= (size_t)dims[i];
        pos += (size_t)snprintf(shape + pos, sizeof shape - pos, i ? ", %lld" : "%lld", (long long)dims[i]);
    }
    if (ndim == 1) shape[pos++] = ',';
    shape[pos++] = ')';
    shape[pos] = '\0';
    char header[1024];
    int n = snprintf(header + 10, sizeof header - 10, "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }", descr,
                     fortran_order ? "True" : "False", shape);
    size_t len = 10 + (size_t)n + 1; /* + the final newline */
    size_t padded = (len + 63) / 64 * 64;
    memset(header + 10 + n, ' ', padded - len);
    header[padded - 1] = '\n';
    memcpy(header, "\x93NUMPY\x01\x00", 8);
    size_t hlen = padded - 10;
    header[8] = (char)(hlen & 0xff);
    header[9] = (char)(hlen >> 8);
    cd_write_piece pieces[2] = {{header, padded}, {data, count * cd_dtype_size(dtype)}};
    return cd_file_write_atomic(path, pieces, 2, err);
}

cd_status cd_npy_write_volume(const char *path, const cd_volume *vol, bool apply_scaling, cd_error *err) {
    int64_t dims[3];
    cd_volume_dims(vol, dims);
    if (!apply_scaling || !cd_volume_has_scaling(vol))
        return cd_npy_write(path, cd_volume_data_const(vol), cd_volume_dtype(vol), 3, dims, true, err);
    size_t count = cd_volume_count(vol);
    float *tmp = malloc(count * sizeof *tmp);
    if (!tmp) return cd_fail(err, CD_ERR_NOMEM, "%s: cannot allocate %zu floats", path, count);
    cd_volume_to_float32(vol, tmp);
    cd_status st = cd_npy_write(path, tmp, CD_DTYPE_FLOAT32, 3, dims, true, err);
    free(tmp);
    return st;
}
