/* Parsing and validating NIfTI-1/-2 headers from raw bytes (internal). */
#ifndef CD_IO_NIFTI_HEADER_H
#define CD_IO_NIFTI_HEADER_H

#include <stdbool.h>
#include <stddef.h>

#include "cirrdata/nifti.h"
#include "core/internal.h"

#define CD_NIFTI1_HEADER_SIZE 348
#define CD_NIFTI2_HEADER_SIZE 540

/* Parses the header at the start of bytes[0..len). pair says whether it came from a .hdr file
 * (magic ni1/ni2) rather than a single .nii (n+1/n+2). Validates every field that later sizes
 * or locates data: magic, dims, datatype/bitpix, vox_offset; and fills the nibabel affine.
 * max_bytes bounds the bytes of all the data the header describes. */
CD_INTERNAL cd_status cd_nifti_parse_header(const char *path, const void *bytes, size_t len, bool pair,
                                            uint64_t max_bytes, cd_nifti_header *hdr, cd_error *err);

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
