/* cirrdata/limits.h — process-wide caps on what untrusted input may make the library allocate.
 *
 * Every reader of a file the library did not write itself checks sizes from that file against
 * these caps before it allocates; going over one is CD_ERR_LIMIT with a message that names the
 * file, the cap, its value and the environment variable that raises it, e.g.
 *   "DIR/manifest.json: 600.0 MiB is above the JSON size cap of 512.0 MiB (CIRRDATA_MAX_JSON_BYTES)".
 *
 * Where the value of each cap comes from, first match wins:
 *   1. cd_limits_set (a non-zero field);
 *   2. the environment variable, read once, at the library's first use of any cap: a decimal number
 *      with an optional binary suffix K, M, G or T (k, m, g, t too), e.g. "64M"; surrounding spaces are
 *      not allowed, an empty value counts as unset. A malformed or zero value is NOT ignored: every
 *      call that needs that cap fails with CD_ERR_ARG naming the variable and its value, until the
 *      program sets the cap itself;
 *   3. the built-in default (cd_limits_defaults).
 * The caps are shared by all threads; reading them is thread-safe, and a change applies to files
 * opened after it. */
#ifndef CIRRDATA_LIMITS_H
#define CIRRDATA_LIMITS_H

#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/api.h"
#include "cirrdata/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The default of max_decompressed_bytes (also cirrdata/nifti.h's CD_NIFTI_DEFAULT_MAX_BYTES). */
#define CD_LIMIT_DEFAULT_MAX_BYTES ((uint64_t)8 << 30) /* 8 GiB */

typedef struct cd_limits {
    /* NIfTI header: the largest dim[1..7] (voxels along one axis). Default 1,048,576 (2^20).
     * Environment: CIRRDATA_MAX_DIM. */
    uint64_t max_dim;
    /* NIfTI header: the voxels of one 3D volume, dim[1] * dim[2] * dim[3] (4D files are read one volume
     * at a time). Also the output of cd_resample. Default 2^31 (8 GiB as float32).
     * Environment: CIRRDATA_MAX_VOXELS. */
    uint64_t max_voxels;
    /* Bytes of one NIfTI read: the uncompressed volume (every volume, cd_nifti_read_all), the inflated
     * prefix of a .nii.gz, the compressed file held in memory; also the output of cd_resample. Default
     * 8 GiB (CD_LIMIT_DEFAULT_MAX_BYTES). cd_nifti_read_options.max_bytes overrides it for one call.
     * Environment: CIRRDATA_MAX_BYTES. */
    uint64_t max_decompressed_bytes;
    /* Bytes of a JSON text: manifest.json, recipe and augmentation pipeline files, an nnU-Net
     * dataset.json, a model's graph metadata. Default 512 MiB. Environment: CIRRDATA_MAX_JSON_BYTES. */
    uint64_t max_json_bytes;
    /* Bytes of a metadata CSV (CirrMRI600+). Default 64 MiB. Environment: CIRRDATA_MAX_CSV_BYTES. */
    uint64_t max_csv_bytes;
} cd_limits;

/* The built-in defaults (no environment, no cd_limits_set). */
CD_API void cd_limits_defaults(cd_limits *out);

/* The caps in effect now. Fills every field of *out and returns CD_OK, or CD_ERR_ARG naming the first
 * malformed environment variable that the program has not overridden with cd_limits_set (that field then
 * reads as its default). */
CD_API cd_status cd_limits_get(cd_limits *out, cd_error *err);

/* Sets the caps for the whole process. A zero field returns that cap to the environment's value or the
 * default; NULL resets every cap that way. The values are checked first (max_dim up to 2^62, byte caps
 * up to SIZE_MAX / 2; CD_ERR_ARG names the bad field) and nothing changes on error. */
CD_API cd_status cd_limits_set(const cd_limits *limits, cd_error *err);

/* The one grammar of byte sizes (the CIRRDATA_MAX_* variables, the CLI's --max-bytes and
 * --shard-size): decimal digits, then optionally K, M, G or T (binary multiples, either case), which may
 * be followed by "B" or "iB": 4096, 512M, 8GiB, 64kB. Above zero. *out receives the bytes; false for
 * anything else (signs, spaces, fractions, hexadecimal, overflow). */
CD_API bool cd_parse_bytes(const char *text, uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif
