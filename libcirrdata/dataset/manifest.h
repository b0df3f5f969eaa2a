/* The manifest of a dataset (internal): counts and statistics of its record entries, its own checksum,
 * reading and writing it (schemas/shard-format.md). */
#ifndef CD_DATASET_MANIFEST_H
#define CD_DATASET_MANIFEST_H

#include <jansson.h>

#include "core/internal.h"

/* counts and statistics from the record entries (an array). */
CD_INTERNAL json_t *cd_manifest_counts(json_t *entries);
CD_INTERNAL json_t *cd_manifest_statistics(json_t *entries);
/* The manifest's "statistics": of one entry per case (with augmented copies, augmentation being the
 * manifest's object: the plain record, or copy 0 when no_original). A conversion and a merge of its parts
 * compute it alike. */
CD_INTERNAL json_t *cd_manifest_case_statistics(json_t *entries, json_t *augmentation);
/* The image dtype the entries have: their common "dtype", "mixed", or "float32" without any (the manifest's
 * tensors.image.dtype). The string lives as long as entries. */
CD_INTERNAL const char *cd_manifest_image_dtype(json_t *entries);

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

/* The first case at which two inputs lists (a manifest's source.inputs, shard-format.md) differ, or SIZE_MAX when they
 * are equal; describes the difference in msg ("case T1/p07: image train/p07.nii.gz was modified (size
 * 1000 -> 1000 bytes, mtime ...)", "case T1/p09 is new", ...). */
CD_INTERNAL size_t cd_inputs_first_change(json_t *before, json_t *now, char *msg, size_t cap);

#endif
