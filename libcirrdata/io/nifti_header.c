/* NIfTI header parsing with nibabel's semantics. niftilib supplies the on-disk structs and the
 * byte swapping; validation, the affine and the orientation follow nibabel, our reference. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <nifti1.h>
#include <nifti2.h>
#include <nifti2_io.h>

#include "cirrdata/orient.h"
#include "io/nifti_header.h"

static uint32_t bswap32(uint32_t v) { return __builtin_bswap32(v); }

cd_dtype cd_nifti_datatype_to_dtype(int datatype) {
    switch (datatype) {
    case NIFTI_TYPE_UINT8: return CD_DTYPE_UINT8;
    case NIFTI_TYPE_INT8: return CD_DTYPE_INT8;
    case NIFTI_TYPE_INT16: return CD_DTYPE_INT16;
    case NIFTI_TYPE_UINT16: return CD_DTYPE_UINT16;
    case NIFTI_TYPE_INT32: return CD_DTYPE_INT32;
    case NIFTI_TYPE_UINT32: return CD_DTYPE_UINT32;
    case NIFTI_TYPE_INT64: return CD_DTYPE_INT64;
    case NIFTI_TYPE_UINT64: return CD_DTYPE_UINT64;
    case NIFTI_TYPE_FLOAT32: return CD_DTYPE_FLOAT32;
    case NIFTI_TYPE_FLOAT64: return CD_DTYPE_FLOAT64;
    default: return CD_DTYPE_INVALID;
    }
}

int cd_nifti_dtype_to_datatype(cd_dtype dtype) {
    switch (dtype) {
    case CD_DTYPE_UINT8: return NIFTI_TYPE_UINT8;
    case CD_DTYPE_INT8: return NIFTI_TYPE_INT8;
    case CD_DTYPE_INT16: return NIFTI_TYPE_INT16;
    case CD_DTYPE_UINT16: return NIFTI_TYPE_UINT16;
    case CD_DTYPE_INT32: return NIFTI_TYPE_INT32;
    case CD_DTYPE_UINT32: return NIFTI_TYPE_UINT32;
    case CD_DTYPE_INT64: return NIFTI_TYPE_INT64;
    case CD_DTYPE_UINT64: return NIFTI_TYPE_UINT64;
    case CD_DTYPE_FLOAT32: return NIFTI_TYPE_FLOAT32;
    case CD_DTYPE_FLOAT64: return NIFTI_TYPE_FLOAT64;
    default: return 0;
    }
}

const char *cd_nifti_datatype_label(int datatype) {
    switch (datatype) {
    case NIFTI_TYPE_COMPLEX64: return "complex64";
    case NIFTI_TYPE_COMPLEX128: return "complex128";
    case NIFTI_TYPE_COMPLEX256: return "complex256";
    case NIFTI_TYPE_RGB24: return "RGB24";
    case NIFTI_TYPE_RGBA32: return "RGBA32";
    case NIFTI_TYPE_FLOAT128: return "float128";
    case DT_BINARY: return "binary (1 bit)";
    default: return "unknown";
    }
}

void cd_nifti_qform_affine(double qb, double qc, double qd, double qx, double qy, double qz, const double pixdim[4],
                           double out[4][4]) {
    /* nibabel.quaternions.fillpositive, then quat2mat and the zooms, in nibabel's precision: its
     * MAX_FLOAT, long double, rounded to double once at the end. Near 180-degree rotations w is the
     * square root of a tiny difference, and computing in double there moves entries by ~1e-9. */
    typedef long double ld;
    ld x = qb, y = qc, z = qd;
    ld w2 = 1.0L - (x * x + y * y + z * z);
    ld w = (w2 < 0.0L) ? 0.0L : sqrtl(w2);
    ld nq = w * w + x * x + y * y + z * z;
    ld r[3][3];
    if (nq < 2.220446049250313e-16L) {
        memset(r, 0, sizeof r);
        r[0][0] = r[1][1] = r[2][2] = 1.0L;
    } else {
        ld s = 2.0L / nq;
        ld X = x * s, Y = y * s, Z = z * s;
        ld wX = w * X, wY = w * Y, wZ = w * Z;
        ld xX = x * X, xY = x * Y, xZ = x * Z;
        ld yY = y * Y, yZ = y * Z, zZ = z * Z;
        r[0][0] = 1.0L - (yY + zZ);
        r[0][1] = xY - wZ;
        r[0][2] = xZ + wY;
        r[1][0] = xY + wZ;
        r[1][1] = 1.0L - (xX + zZ);
        r[1][2] = yZ - wX;
        r[2][0] = xZ - wY;
        r[2][1] = yZ + wX;
        r[2][2] = 1.0L - (xX + yY);
    }
    double qfac = (pixdim[0] == 1.0 || pixdim[0] == -1.0) ? pixdim[0] : 1.0;
    double vox[3];
    for (int i = 0; i < 3; i++) {
        vox[i] = fabs(pixdim[i + 1]);
        if (vox[i] == 0.0) vox[i] = 1.0;
    }
    vox[2] *= qfac;
    memset(out, 0, sizeof(double[4][4]));
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) out[i][j] = (double)(r[i][j] * (ld)vox[j]);
    out[0][3] = qx;
    out[1][3] = qy;
    out[2][3] = qz;
    out[3][3] = 1.0;
}

/* nibabel's base affine (shape_zoom_affine with x flipped) for headers without a valid xform. */
static void base_affine(const cd_nifti_header *h, double out[4][4]) {
    memset(out, 0, sizeof(double[4][4]));
    for (int i = 0; i < 3; i++) {
        double n = (i < h->ndim) ? (double)h->dim[i + 1] : 1.0;
        double zoom = (i < h->ndim) ? h->pixdim[i + 1] : 1.0;
        if (i == 0) zoom = -zoom;
        out[i][i] = zoom;
        out[i][3] = -((n - 1.0) / 2.0) * zoom;
    }
    out[3][3] = 1.0;
}

/* nibabel resets xform codes outside 0..5 to 0 when it loads a header. */
static int valid_xform_code(int code) { return (code >= 0 && code <= 5) ? code : 0; }

cd_status cd_nifti_caps_resolve(uint64_t requested, cd_nifti_caps *caps, cd_error *err) {
    cd_status st;
    if ((st = cd_resolve_max_bytes(requested, &caps->max_bytes, err)) != CD_OK ||
        (st = cd_limit(CD_LIMIT_DIM, &caps->max_dim, err)) != CD_OK ||
        (st = cd_limit(CD_LIMIT_VOXELS, &caps->max_voxels, err)) != CD_OK)
        return st;
    caps->per_call = requested != 0;
    return CD_OK;
}

const char *cd_nifti_bytes_cap_text(const cd_nifti_caps *caps, char *buf, size_t buflen) {
    if (!caps->per_call) return cd_limit_describe(CD_LIMIT_BYTES, caps->max_bytes, buf, buflen);
    char v[32];
    snprintf(buf, buflen, "the limit of %s given for this read (max_bytes)",
             cd_format_bytes(caps->max_bytes, v, sizeof v));
    return buf;
}

/* The on-disk fields that are resolved after the checks: the xforms and the voxel offset. */
typedef struct raw_fields {
    double quatern[6]; /* quatern_b, c, d, qoffset_x, y, z */
    double srow[3][4];
    double vox_offset_f; /* NIfTI-1 stores the offset as a float */
    int64_t vox_offset;  /* NIfTI-2 */
} raw_fields;

/* The header size (348 or 540) and whether its fields are byte-swapped, from the first field. */
static cd_status header_size(const char *path, const void *bytes, size_t len, uint32_t *hsize, bool *swapped,
                             cd_error *err) {
    if (len < 4)
        return cd_fail(err, CD_ERR_TRUNCATED, "%s: truncated: %zu bytes is too short for a NIfTI header", path, len);
    uint32_t sizeof_hdr;
    memcpy(&sizeof_hdr, bytes, 4);
    if (sizeof_hdr == CD_NIFTI1_HEADER_SIZE || sizeof_hdr == CD_NIFTI2_HEADER_SIZE)
        *swapped = false;
    else if (bswap32(sizeof_hdr) == CD_NIFTI1_HEADER_SIZE || bswap32(sizeof_hdr) == CD_NIFTI2_HEADER_SIZE)
        *swapped = true;
    else
        return cd_fail(err, CD_ERR_FORMAT,
                       "%s: not a NIfTI file (header size field is %u, expected 348 for NIfTI-1 or 540 for NIfTI-2)",
                       path, sizeof_hdr);
    *hsize = *swapped ? bswap32(sizeof_hdr) : sizeof_hdr;
    if (len < *hsize)
        return cd_fail(err, CD_ERR_TRUNCATED, "%s: truncated: the NIfTI-%d header needs %u bytes, the file has %zu",
                       path, *hsize == CD_NIFTI1_HEADER_SIZE ? 1 : 2, *hsize, len);
    return CD_OK;
}

/* The magic of a single file ("n+V") or a .hdr/.img pair ("niV"), V the version. */
static cd_status check_magic(const char *path, const char *magic, int version, bool pair, cd_error *err) {
    const char single[4] = {'n', '+', (char)('0' + version), 0}, paired[4] = {'n', 'i', (char)('0' + version), 0};
    if (memcmp(magic, pair ? paired : single, 4) == 0) return CD_OK;
    if (memcmp(magic, pair ? single : paired, 4) == 0)
        return cd_fail(err, CD_ERR_FORMAT, "%s: NIfTI-%d magic '%s' is for a %s, not a %s", path, version, magic,
                       pair ? "single .nii file" : ".hdr/.img pair", pair ? ".hdr/.img pair" : "single file");
    if (version == 1)
        return cd_fail(err, CD_ERR_FORMAT, "%s: wrong magic: not a NIfTI-1 file (plain Analyze 7.5 is not supported)",
                       path);
    return cd_fail(err, CD_ERR_FORMAT, "%s: wrong magic: not a NIfTI-2 file", path);
}

/* The fields that NIfTI-1 and NIfTI-2 headers share by name (N: a nifti_1_header or nifti_2_header). */
#define COPY_FIELDS(N)                                                                                                 \
    do {                                                                                                               \
        for (int i = 1; i < 8; i++) h->dim[i] = (N).dim[i];                                                            \
        for (int i = 0; i < 8; i++) h->pixdim[i] = (N).pixdim[i];                                                      \
        h->datatype = (N).datatype;                                                                                    \
        h->bitpix = (N).bitpix;                                                                                        \
        h->scl_slope = (N).scl_slope;                                                                                  \
        h->scl_inter = (N).scl_inter;                                                                                  \
        h->qform_code = (N).qform_code;                                                                                \
        h->sform_code = (N).sform_code;                                                                                \
        raw->quatern[0] = (N).quatern_b, raw->quatern[1] = (N).quatern_c;                                              \
        raw->quatern[2] = (N).quatern_d, raw->quatern[3] = (N).qoffset_x;                                              \
        raw->quatern[4] = (N).qoffset_y, raw->quatern[5] = (N).qoffset_z;                                              \
        for (int j = 0; j < 4; j++) {                                                                                  \
            raw->srow[0][j] = (N).srow_x[j];                                                                           \
            raw->srow[1][j] = (N).srow_y[j];                                                                           \
            raw->srow[2][j] = (N).srow_z[j];                                                                           \
        }                                                                                                              \
        h->xyzt_units = (N).xyzt_units;                                                                                \
        h->intent_code = (N).intent_code;                                                                              \
        memcpy(h->descrip, (N).descrip, 80);                                                                           \
    } while (0)

static cd_status read_nifti1(const char *path, const void *bytes, bool swapped, bool pair, cd_nifti_header *h,
                             raw_fields *raw, cd_error *err) {
    nifti_1_header n1;
    memcpy(&n1, bytes, sizeof n1);
    if (swapped) nifti_swap_as_nifti1(&n1);
    h->version = 1;
    cd_status st = check_magic(path, n1.magic, 1, pair, err);
    if (st != CD_OK) return st;
    h->ndim = n1.dim[0];
    COPY_FIELDS(n1);
    raw->vox_offset_f = n1.vox_offset;
    return CD_OK;
}

static cd_status read_nifti2(const char *path, const void *bytes, bool swapped, bool pair, cd_nifti_header *h,
                             raw_fields *raw, cd_error *err) {
    nifti_2_header n2;
    memcpy(&n2, bytes, sizeof n2);
    if (swapped) nifti_swap_as_nifti2(&n2);
    h->version = 2;
    cd_status st = check_magic(path, n2.magic, 2, pair, err);
    if (st != CD_OK) return st;
    if (n2.dim[0] < -32768 || n2.dim[0] > 32767)
        return cd_fail(err, CD_ERR_FORMAT, "%s: dim[0] = %lld is not a number of dimensions", path,
                       (long long)n2.dim[0]);
    h->ndim = (int)n2.dim[0];
    COPY_FIELDS(n2);
    raw->vox_offset_f = NAN;
    raw->vox_offset = n2.vox_offset;
    return CD_OK;
}

/* Dimensions: everything that sizes an allocation is checked here, before any use. */
static cd_status check_dims(const char *path, const cd_nifti_caps *caps, cd_nifti_header *h, cd_error *err) {
    if (h->ndim < 1 || h->ndim > 7)
        return cd_fail(err, CD_ERR_FORMAT, "%s: dim[0] = %d: the number of dimensions must be 1..7", path, h->ndim);
    for (int i = 1; i <= 7; i++) {
        if (i > h->ndim) {
            h->dim[i] = 1;
            continue;
        }
        if (h->dim[i] < 1)
            return cd_fail(err, CD_ERR_FORMAT, "%s: dim[%d] = %lld: dimensions must be >= 1", path, i,
                           (long long)h->dim[i]);
        if ((uint64_t)h->dim[i] > caps->max_dim) {
            char c[160];
            return cd_fail(err, CD_ERR_LIMIT, "%s: dim[%d] = %lld is above %s", path, i, (long long)h->dim[i],
                           cd_limit_describe(CD_LIMIT_DIM, caps->max_dim, c, sizeof c));
        }
    }
    return CD_OK;
}

/* The voxel type and its size in bytes. An unsupported datatype is still a readable header (info
 * reports it); reading voxels refuses it. */
static cd_status check_datatype(const char *path, cd_nifti_header *h, size_t *esize, cd_error *err) {
    h->dtype = cd_nifti_datatype_to_dtype(h->datatype);
    *esize = cd_dtype_size(h->dtype);
    if (h->dtype == CD_DTYPE_INVALID) {
        if (h->bitpix < 8 || h->bitpix % 8 || h->bitpix > 256)
            return cd_fail(err, CD_ERR_UNSUPPORTED, "%s: unsupported datatype %d (%s) with bitpix %d", path,
                           h->datatype, cd_nifti_datatype_label(h->datatype), h->bitpix);
        *esize = (size_t)h->bitpix / 8;
    } else if (h->bitpix != (int)(8 * *esize)) {
        return cd_fail(err, CD_ERR_FORMAT, "%s: bitpix %d disagrees with datatype %d (%s, %zu bits)", path, h->bitpix,
                       h->datatype, cd_dtype_name(h->dtype), 8 * *esize);
    }
    return CD_OK;
}

/* Voxels per volume, volumes and bytes, without overflow and within the caps. */
static cd_status check_sizes(const char *path, const cd_nifti_caps *caps, size_t esize, cd_nifti_header *h,
                             cd_error *err) {
    uint64_t vox3 = 1, nvol = 1, vol_bytes, all_bytes;
    bool over = false;
    for (int i = 1; i <= 3 && !over; i++) over = __builtin_mul_overflow(vox3, (uint64_t)h->dim[i], &vox3);
    for (int i = 4; i <= 7 && !over; i++) over = __builtin_mul_overflow(nvol, (uint64_t)h->dim[i], &nvol);
    if (over || __builtin_mul_overflow(vox3, (uint64_t)esize, &vol_bytes) ||
        __builtin_mul_overflow(vol_bytes, nvol, &all_bytes))
        return cd_fail(err, CD_ERR_LIMIT,
                       "%s: the header's dimensions (%lld x %lld x %lld x %lld ...) overflow a 64-bit size", path,
                       (long long)h->dim[1], (long long)h->dim[2], (long long)h->dim[3], (long long)h->dim[4]);
    h->nvolumes = (int64_t)nvol;
    h->volume_bytes = vol_bytes;
    if (vox3 > caps->max_voxels) {
        char c[160];
        return cd_fail(err, CD_ERR_LIMIT, "%s: a volume of %lld x %lld x %lld = %llu voxels is above %s", path,
                       (long long)h->dim[1], (long long)h->dim[2], (long long)h->dim[3], (unsigned long long)vox3,
                       cd_limit_describe(CD_LIMIT_VOXELS, caps->max_voxels, c, sizeof c));
    }
    if (vol_bytes > caps->max_bytes) {
        char a[32], c[160];
        return cd_fail(err, CD_ERR_LIMIT, "%s: a volume of %lld x %lld x %lld voxels of %zu bytes is %s, above %s",
                       path, (long long)h->dim[1], (long long)h->dim[2], (long long)h->dim[3], esize,
                       cd_format_bytes(vol_bytes, a, sizeof a), cd_nifti_bytes_cap_text(caps, c, sizeof c));
    }
    return CD_OK;
}

/* Where the voxels start. NIfTI-1 stores it as a float. */
static cd_status check_vox_offset(const char *path, uint32_t hsize, const raw_fields *raw, cd_nifti_header *h,
                                  cd_error *err) {
    int64_t vox_offset = raw->vox_offset;
    if (h->version == 1) {
        if (!isfinite(raw->vox_offset_f) || raw->vox_offset_f < 0 || raw->vox_offset_f > 9.0e15)
            return cd_fail(err, CD_ERR_FORMAT, "%s: vox_offset %g is not a valid byte offset", path, raw->vox_offset_f);
        vox_offset = (int64_t)raw->vox_offset_f; /* nibabel: int(vox_offset) */
    }
    if (vox_offset < 0)
        return cd_fail(err, CD_ERR_FORMAT, "%s: vox_offset %lld is negative", path, (long long)vox_offset);
    if (!h->pair && (uint64_t)vox_offset < hsize + 4u)
        return cd_fail(err, CD_ERR_FORMAT, "%s: vox_offset %lld lies inside the %u-byte header", path,
                       (long long)vox_offset, hsize + 4u);
    h->vox_offset = vox_offset;
    return CD_OK;
}

/* Scaling, as nibabel's get_slope_inter; the affine: sform > qform > base, after nibabel's load-time
 * fixes of codes and pixdims; the orientation codes. */
static void resolve_geometry(const raw_fields *raw, cd_nifti_header *h) {
    h->has_scaling = h->scl_slope != 0.0 && isfinite(h->scl_slope) && isfinite(h->scl_inter) &&
                     !(h->scl_slope == 1.0 && h->scl_inter == 0.0);
    h->qform_code = valid_xform_code(h->qform_code);
    h->sform_code = valid_xform_code(h->sform_code);
    for (int i = 1; i <= 3; i++) {
        h->pixdim[i] = fabs(h->pixdim[i]);
        if (h->pixdim[i] == 0.0) h->pixdim[i] = 1.0;
    }
    if (h->pixdim[0] != 1.0 && h->pixdim[0] != -1.0) h->pixdim[0] = 1.0;
    const double *q = raw->quatern;
    cd_nifti_qform_affine(q[0], q[1], q[2], q[3], q[4], q[5], h->pixdim, h->qform);
    memset(h->sform, 0, sizeof h->sform);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) h->sform[i][j] = raw->srow[i][j];
    h->sform[3][3] = 1.0;
    if (h->sform_code > 0)
        memcpy(h->affine, h->sform, sizeof h->affine);
    else if (h->qform_code > 0)
        memcpy(h->affine, h->qform, sizeof h->affine);
    else
        base_affine(h, h->affine);
    cd_orientation ornt;
    if (cd_orientation_from_affine(h->affine, &ornt, NULL) == CD_OK)
        cd_orientation_codes(&ornt, h->orientation);
    else
        memcpy(h->orientation, "???", 4);
}

cd_status cd_nifti_parse_header(const char *path, const void *bytes, size_t len, bool pair, const cd_nifti_caps *caps,
                                cd_nifti_header *h, cd_error *err) {
    memset(h, 0, sizeof *h);
    uint32_t hsize = 0;
    bool swapped = false;
    cd_status st = header_size(path, bytes, len, &hsize, &swapped, err);
    if (st != CD_OK) return st;
    bool little_host = (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__);
    h->big_endian = little_host ? swapped : !swapped;
    h->pair = pair;
    raw_fields raw = {.vox_offset = 0};
    if (hsize == CD_NIFTI1_HEADER_SIZE)
        st = read_nifti1(path, bytes, swapped, pair, h, &raw, err);
    else
        st = read_nifti2(path, bytes, swapped, pair, h, &raw, err);
    if (st != CD_OK) return st;
    h->descrip[80] = '\0';
    size_t esize;
    if ((st = check_dims(path, caps, h, err)) != CD_OK || (st = check_datatype(path, h, &esize, err)) != CD_OK ||
        (st = check_sizes(path, caps, esize, h, err)) != CD_OK ||
        (st = check_vox_offset(path, hsize, &raw, h, err)) != CD_OK)
        return st;
    resolve_geometry(&raw, h);
    return CD_OK;
}
