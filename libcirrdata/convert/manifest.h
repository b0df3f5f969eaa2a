/* Manifest assembly and parsing (internal). */
#ifndef CD_CONVERT_MANIFEST_H
#define CD_CONVERT_MANIFEST_H

#include <jansson.h>

#include "cirrdata/preprocess.h"
#include "cirrdata/recipe.h"
#include "cirrdata/volume.h"
#include "convert/layout.h"
#include "core/internal.h"

#define CD_STATS_SAMPLES 256
#define CD_FG_LOCATIONS 256

/* Source-image facts gathered per case for the dataset statistics. */
typedef struct cd_source_stats {
    double spacing_ras[3];
    int64_t shape_ras[3];
    uint64_t count;             /* voxels inside the mask */
    double sum, sumsq, min, max;
    size_t nsamples;
    double samples[CD_STATS_SAMPLES];
} cd_source_stats;

/* Computes stats of image (physical values) inside mask (> 0); the mask may be NULL (whole image). */
CD_INTERNAL void cd_source_stats_compute(const cd_volume *image, const cd_volume *mask, cd_source_stats *out);

/* The record metadata object stored in the shard (schemas/shard-format.md). */
CD_INTERNAL json_t *cd_record_metadata_json(const cd_case *c, const char *root, const char *class_name,
                                            const cd_volume *src_image, const cd_volume *src_image2, const cd_sample *s);

/* The manifest's per-record entry (shard and index are set by the writer). */
CD_INTERNAL json_t *cd_manifest_entry(const cd_case *c, const cd_sample *s, const cd_source_stats *st);

/* counts and statistics from the record entries (an array). */
CD_INTERNAL json_t *cd_manifest_counts(json_t *entries);
CD_INTERNAL json_t *cd_manifest_statistics(json_t *entries);

/* Writes a JSON value to path atomically (tmp + fsync + rename). */
CD_INTERNAL cd_status cd_json_write_atomic(const char *path, json_t *value, cd_error *err);

/* The manifest's format_version; 2 added the checksum member. */
#define CD_MANIFEST_FORMAT_VERSION 2
#define CD_MANIFEST_SUM_MEMBER "manifest_xxh3"

/* Writes a manifest like cd_json_write_atomic, ending with its own checksum member (schemas/shard-format.md,
 * "Manifest checksum"); any manifest_xxh3 member already in the object is dropped first. */
CD_INTERNAL cd_status cd_manifest_write_atomic(const char *path, json_t *manifest, cd_error *err);

/* Checks the checksum member at the end of a manifest's bytes text[0..len): CD_ERR_CORRUPT when it is
 * missing, malformed or differs, CD_ERR_UNSUPPORTED for a format_version 1 manifest (which has none).
 * Messages name path. */
CD_INTERNAL cd_status cd_manifest_check_sum(const char *path, const char *text, size_t len, cd_error *err);

/* Reads path under the JSON size cap and checks its checksum; on CD_OK *text (when text is non-NULL; a
 * malloc'ed NUL-terminated copy) and *len (when non-NULL) receive the bytes. */
CD_INTERNAL cd_status cd_manifest_read(const char *path, char **text, size_t *len, cd_error *err);

/* numpy-style linear percentile of n doubles (sorts a copy). */
CD_INTERNAL double cd_percentile_f64(const double *v, size_t n, double p);

#endif
