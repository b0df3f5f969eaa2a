/* NIfTI-1 writer (single file, little endian, optional gzip through libdeflate). */
#include <libdeflate.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <nifti1.h>
#include <nifti2_io.h>

#include "cirrdata/nifti.h"
#include "core/internal.h"
#include "io/file.h"
#include "io/nifti_header.h"

#define NIFTI1_VOX_OFFSET 352

static void fill_header(const cd_volume *vol, const cd_nifti_write_options *opts, nifti_1_header *h) {
    memset(h, 0, sizeof *h);
    int64_t dims[3];
    cd_volume_dims(vol, dims);
    double a[4][4], sp[3], slope, inter;
    cd_volume_affine(vol, a);
    cd_volume_spacing(vol, sp);
    cd_volume_scaling(vol, &slope, &inter);
    cd_dtype dt = cd_volume_dtype(vol);

    h->sizeof_hdr = 348;
    h->dim[0] = 3;
    for (int i = 0; i < 3; i++) h->dim[i + 1] = (short)dims[i];
    for (int i = 4; i < 8; i++) h->dim[i] = 1;
    h->datatype = (short)cd_nifti_dtype_to_datatype(dt);
    h->bitpix = (short)(8 * cd_dtype_size(dt));
    h->vox_offset = NIFTI1_VOX_OFFSET;
    h->scl_slope = cd_volume_has_scaling(vol) ? (float)slope : 1.0f;
    h->scl_inter = cd_volume_has_scaling(vol) ? (float)inter : 0.0f;
    h->xyzt_units = NIFTI_UNITS_MM;
    h->qform_code = (short)(opts->qform_code ? opts->qform_code : NIFTI_XFORM_SCANNER_ANAT);
    h->sform_code = (short)(opts->sform_code ? opts->sform_code : NIFTI_XFORM_SCANNER_ANAT);

    /* qform: the rigid part of the affine (niftilib's polar decomposition), pixdims = zooms. */
    nifti_dmat44 m;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) m.m[i][j] = a[i][j];
    double qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac;
    nifti_dmat44_to_quatern(m, &qb, &qc, &qd, &qx, &qy, &qz, &dx, &dy, &dz, &qfac);
    h->quatern_b = (float)qb;
    h->quatern_c = (float)qc;
    h->quatern_d = (float)qd;
    h->qoffset_x = (float)qx;
    h->qoffset_y = (float)qy;
    h->qoffset_z = (float)qz;
    h->pixdim[0] = (float)(qfac < 0 ? -1.0 : 1.0);
    /* The voxel sizes are the affine's column norms: the spacing the affine really implies. */
    h->pixdim[1] = (float)dx;
    h->pixdim[2] = (float)dy;
    h->pixdim[3] = (float)dz;
    (void)sp;
    for (int j = 0; j < 4; j++) {
        h->srow_x[j] = (float)a[0][j];
        h->srow_y[j] = (float)a[1][j];
        h->srow_z[j] = (float)a[2][j];
    }
    snprintf(h->descrip, sizeof h->descrip, "libcirrdata");
    memcpy(h->magic, "n+1", 4);
}

void cd_nifti_write_options_init(cd_nifti_write_options *o) { memset(o, 0, sizeof *o); }

cd_status cd_nifti_write(const char *path, const cd_volume *vol, const cd_nifti_write_options *opts, cd_error *err) {
    if (!path || !vol) return cd_fail(err, CD_ERR_ARG, "cd_nifti_write: NULL argument");
    cd_nifti_write_options defaults;
    cd_nifti_write_options_init(&defaults);
    if (!opts) opts = &defaults;
    int64_t dims[3];
    cd_volume_dims(vol, dims);
    for (int i = 0; i < 3; i++)
        if (dims[i] > 32767)
            return cd_fail(err, CD_ERR_UNSUPPORTED, "%s: dimension %lld does not fit NIfTI-1 (max 32767)", path,
                           (long long)dims[i]);
    if (!cd_nifti_dtype_to_datatype(cd_volume_dtype(vol)))
        return cd_fail(err, CD_ERR_UNSUPPORTED, "%s: dtype %s has no NIfTI-1 datatype", path,
                       cd_dtype_name(cd_volume_dtype(vol)));
    if (__BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__)
        return cd_fail(err, CD_ERR_UNSUPPORTED, "%s: NIfTI writing needs a little-endian host", path);

    uint8_t head[NIFTI1_VOX_OFFSET];
    memset(head, 0, sizeof head); /* the 4 bytes after the header: no extensions */
    nifti_1_header h;
    fill_header(vol, opts, &h);
    memcpy(head, &h, sizeof h);

    const size_t nbytes = cd_volume_nbytes(vol);
    if (!cd_path_has_suffix(path, ".gz")) {
        cd_write_piece pieces[2] = {{head, sizeof head}, {cd_volume_data_const(vol), nbytes}};
        return cd_file_write_atomic(path, pieces, 2, err);
    }

    /* One gzip member over header + voxels (some readers mishandle multi-member files). */
    int level = opts->compression_level ? opts->compression_level : 6;
    if (level < 1 || level > 12) return cd_fail(err, CD_ERR_ARG, "%s: gzip level %d is not in 1..12", path, level);
    size_t raw_len = sizeof head + nbytes;
    uint8_t *raw = cd_buffer_alloc(raw_len);
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(level);
    size_t bound = c ? libdeflate_gzip_compress_bound(c, raw_len) : 0;
    uint8_t *gz = (raw && c) ? cd_buffer_alloc(bound) : NULL;
    cd_status st;
    if (!raw || !c || !gz) {
        st = cd_fail(err, CD_ERR_NOMEM, "%s: cannot allocate buffers for compression", path);
    } else {
        memcpy(raw, head, sizeof head);
        memcpy(raw + sizeof head, cd_volume_data_const(vol), nbytes);
        size_t n = libdeflate_gzip_compress(c, raw, raw_len, gz, bound);
        if (n == 0) {
            st = cd_fail(err, CD_ERR_INTERNAL, "%s: gzip compression failed", path);
        } else {
            cd_write_piece piece = {gz, n};
            st = cd_file_write_atomic(path, &piece, 1, err);
        }
    }
    if (c) libdeflate_free_compressor(c);
    if (gz) cd_buffer_free(gz, bound);
    if (raw) cd_buffer_free(raw, raw_len);
    return st;
}
