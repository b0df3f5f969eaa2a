/* cirrdata/nifti.h — reading (and writing) NIfTI-1 and NIfTI-2 volumes.
 *
 * Files: single-file .nii and .nii.gz; .hdr/.img pairs (either part may be gzipped: .hdr.gz, .img.gz;
 * pass the path of either part). Little- and big-endian headers and data.
 * Semantics follow nibabel: scl_slope of 0 or non-finite means no scaling; the affine is the sform
 * when sform_code > 0, else the qform when qform_code > 0, else nibabel's base affine (centred,
 * x flipped); orientation codes are nibabel's aff2axcodes.
 *
 * Safety: every header field is validated before it sizes anything. Allocation is capped by
 * max_bytes (default CD_NIFTI_DEFAULT_MAX_BYTES, override per call or with the environment variable
 * CIRRDATA_MAX_BYTES), and a gzip stream cannot claim more data than deflate could possibly hold.
 * Errors name the file and the problem.
 *
 * Thread safety: all functions are reentrant; distinct calls may run concurrently. */
#ifndef CIRRDATA_NIFTI_H
#define CIRRDATA_NIFTI_H

#include "cirrdata/api.h"
#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/dtype.h"
#include "cirrdata/limits.h"
#include "cirrdata/status.h"
#include "cirrdata/volume.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CD_NIFTI_DEFAULT_MAX_BYTES CD_LIMIT_DEFAULT_MAX_BYTES /* 8 GiB (cirrdata/limits.h) */

/* Everything we report about a NIfTI header, in host byte order and native types. */
typedef struct cd_nifti_header {
    int version;      /* 1 or 2 */
    bool big_endian;  /* byte order of the file */
    bool compressed;  /* gzip (the data part, for pairs) */
    bool pair;        /* .hdr/.img pair */
    int ndim;         /* dim[0], 1..7 */
    int64_t dim[8];   /* dim[1..ndim] >= 1; unused entries are 1 */
    double pixdim[8]; /* pixdim[0] is qfac */
    int datatype;     /* NIfTI datatype code */
    int bitpix;
    cd_dtype dtype;              /* CD_DTYPE_INVALID for unsupported datatype codes */
    int64_t vox_offset;          /* byte offset of the voxels in the data file */
    double scl_slope, scl_inter; /* as stored */
    bool has_scaling;            /* nibabel semantics: slope finite, non-zero, and (slope,inter) != (1,0) */
    int qform_code, sform_code;
    double qform[4][4];  /* from the quaternion (meaningful even when qform_code is 0) */
    double sform[4][4];  /* srow_x/y/z */
    double affine[4][4]; /* the one nibabel uses (sform > qform > base) */
    char orientation[4]; /* axis codes of affine, e.g. "LPS" */
    int xyzt_units;
    int intent_code;
    char descrip[81];
    int64_t nvolumes;      /* product of dim[4..ndim] (1 for 3D) */
    uint64_t volume_bytes; /* bytes of one 3D volume */
} cd_nifti_header;

typedef struct cd_nifti_read_options {
    int64_t volume;     /* which 3D volume of a 4D+ file, 0-based (product of dims 4..7, x fastest) */
    uint64_t max_bytes; /* cap on the uncompressed bytes read; 0 = CIRRDATA_MAX_BYTES or the default */
} cd_nifti_read_options;

/* The defaults (all zero: volume 0, the max_bytes of cirrdata/limits.h). */
CD_API void cd_nifti_read_options_init(cd_nifti_read_options *o);

/* Reads and validates only the header. */
CD_API cd_status cd_nifti_read_header(const char *path, cd_nifti_header *hdr, cd_error *err);

/* Reads one 3D volume: raw voxels in the stored dtype (byte-swapped to host order), the nibabel
 * affine, spacing pixdim[1..3] and the header's scaling. opts may be NULL (defaults). hdr may be
 * NULL; when given it receives the header. The caller owns *out (cd_volume_destroy). */
CD_API cd_status cd_nifti_read(const char *path, const cd_nifti_read_options *opts, cd_volume **out,
                               cd_nifti_header *hdr, cd_error *err);

/* Reads the voxels of every volume (all of a 4D+ file, in one pass: one inflate for gzip) into the
 * caller's buffer dst of dst_bytes bytes: the stored values in file order (x fastest, then y, z and the
 * volumes), byte-swapped to host order, unscaled. opts may be NULL; its volume is ignored, and
 * max_bytes caps what is read (all the voxels; for gzip the whole inflated stream, header included).
 *
 * *need receives the bytes dst must hold: the voxels (hdr->nvolumes * hdr->volume_bytes) for an
 * uncompressed data file; for gzip, vox_offset more, because the stream is inflated into dst from its
 * first byte so that no temporary buffer or copy is needed. With dst NULL only the header is read and
 * the sizes are checked (caps, truncation of raw files): call once to size dst, then with it. With dst,
 * the voxels are at dst + *data_offset: 0 for uncompressed data, vox_offset for gzip (0 when vox_offset
 * is not a multiple of the element size: the voxels are then moved to the start). A dst_bytes below
 * *need is CD_ERR_ARG. data_offset may be NULL only when dst is; hdr may be NULL. dst stays the
 * caller's; its contents are unspecified after an error. */
CD_API cd_status cd_nifti_read_all(const char *path, const cd_nifti_read_options *opts, void *dst, size_t dst_bytes,
                                   size_t *need, size_t *data_offset, cd_nifti_header *hdr, cd_error *err);

typedef struct cd_nifti_write_options {
    int compression_level; /* gzip level 1..12 (libdeflate) for .nii.gz; 0 = default (6) */
    int qform_code;        /* NIfTI xform codes written with the affine; 0 = default (1, scanner) */
    int sform_code;        /* 0 = default (1, scanner) */
} cd_nifti_write_options;

/* The defaults (all zero: level 6, codes 1). */
CD_API void cd_nifti_write_options_init(cd_nifti_write_options *o);

/* Writes vol as a little-endian NIfTI-1 single file; gzip when path ends in ".gz". The affine goes
 * into the sform exactly and into the qform as its closest rigid part (as nibabel does); scaling is
 * stored in scl_slope/scl_inter. The file is written to a temporary name and renamed, so readers
 * never see a partial file. opts may be NULL. */
CD_API cd_status cd_nifti_write(const char *path, const cd_volume *vol, const cd_nifti_write_options *opts,
                                cd_error *err);

#ifdef __cplusplus
}
#endif
#endif
