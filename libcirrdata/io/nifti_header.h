/* Parsing and validating NIfTI-1/-2 headers from raw bytes (internal). */
#ifndef CD_IO_NIFTI_HEADER_H
#define CD_IO_NIFTI_HEADER_H

#include <stdbool.h>
#include <stddef.h>

#include "cirrdata/nifti.h"
#include "core/internal.h"

#define CD_NIFTI1_HEADER_SIZE 348
#define CD_NIFTI2_HEADER_SIZE 540

/* The caps (cirrdata/limits.h) one NIfTI read works under. */
typedef struct cd_nifti_caps {
    uint64_t max_bytes;  /* bytes of one volume, of the inflated data, of a .gz held in memory */
    uint64_t max_dim;    /* dim[1..7] */
    uint64_t max_voxels; /* dim[1] * dim[2] * dim[3] */
    bool per_call;       /* max_bytes came from cd_nifti_read_options.max_bytes */
} cd_nifti_caps;

/* The caps in effect, max_bytes replaced by requested when that is non-zero. Fails (naming the variable)
 * when one comes from a malformed environment variable. */
CD_INTERNAL cd_status cd_nifti_caps_resolve(uint64_t requested, cd_nifti_caps *caps, cd_error *err);

/* "the decompressed size cap of 8.0 GiB (raise it with CIRRDATA_MAX_BYTES)", or the per-call limit. */
CD_INTERNAL const char *cd_nifti_bytes_cap_text(const cd_nifti_caps *caps, char *buf, size_t buflen);

/* Parses the header at the start of bytes[0..len). pair says whether it came from a .hdr file
 * (magic ni1/ni2) rather than a single .nii (n+1/n+2). Validates every field that later sizes
 * or locates data: magic, dims, datatype/bitpix, vox_offset; and fills the nibabel affine.
 * caps bound each dim, the voxels and the bytes of one volume. */
CD_INTERNAL cd_status cd_nifti_parse_header(const char *path, const void *bytes, size_t len, bool pair,
                                            const cd_nifti_caps *caps, cd_nifti_header *hdr, cd_error *err);

/* Maps a NIfTI datatype code to our dtype (CD_DTYPE_INVALID when unsupported). */
CD_INTERNAL cd_dtype cd_nifti_datatype_to_dtype(int datatype);
CD_INTERNAL int cd_nifti_dtype_to_datatype(cd_dtype dtype);
/* A readable name for a NIfTI datatype code we do not support ("complex64", "RGB24", ...). */
CD_INTERNAL const char *cd_nifti_datatype_label(int datatype);

/* nibabel's quaternion -> 4x4 affine (Nifti1Header.get_qform) with its load-time fixes applied:
 * qfac other than +-1 becomes 1; pixdims are used as absolute values, zeros as 1. */
CD_INTERNAL void cd_nifti_qform_affine(double qb, double qc, double qd, double qx, double qy, double qz,
                                       const double pixdim[4], double out[4][4]);

#endif
