/* What convert writes about each case (internal): record metadata, manifest entry, source statistics. */
#ifndef CD_CONVERT_RECORD_META_H
#define CD_CONVERT_RECORD_META_H

#include <jansson.h>

#include "cirrdata/preprocess.h"
#include "cirrdata/volume.h"
#include "convert/layout.h"
#include "core/internal.h"

#define CD_STATS_SAMPLES 256
#define CD_FG_LOCATIONS 256

/* Source-image facts gathered per case for the dataset statistics. */
typedef struct cd_source_stats {
    double spacing_ras[3];
    int64_t shape_ras[3];
    uint64_t count; /* voxels inside the mask */
    double sum, sumsq, min, max;
    size_t nsamples;
    double samples[CD_STATS_SAMPLES];
} cd_source_stats;

/* Computes stats of image (physical values) inside mask (> 0); the mask may be NULL (whole image). */
CD_INTERNAL void cd_source_stats_compute(const cd_volume *image, const cd_volume *mask, cd_source_stats *out);

/* The record metadata object stored in the shard (schemas/shard-format.md). src: the case's c->nimages
 * source volumes (channels). */
CD_INTERNAL json_t *cd_record_metadata_json(const cd_case *c, const char *root, const char *class_name,
                                            const cd_volume *const *src, const cd_sample *s);

/* The manifest's per-record entry (shard and index are set by the writer). */
CD_INTERNAL json_t *cd_manifest_entry(const cd_case *c, const cd_sample *s, const cd_source_stats *st);

#endif
