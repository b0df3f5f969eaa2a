/* cirrdata/dataset.h — converted datasets: reading, verifying, merging parts, locking an output folder.
 *
 * A dataset directory holds manifest.json and shards/ (schemas/shard-format.md,
 * schemas/manifest.schema.json). cd_convert (cirrdata/convert.h) builds one from a source layout;
 * cd_dataset_open reads one: the manifest is validated (and shard paths must stay inside the
 * directory) before anything else is touched. */
#ifndef CIRRDATA_DATASET_H
#define CIRRDATA_DATASET_H

#include "cirrdata/api.h"
#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/folder.h"
#include "cirrdata/progress.h"
#include "cirrdata/shard.h"
#include "cirrdata/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Joins the outputs of `convert --part I/N` into out_dir: all N parts of one conversion (the same
 * options and source fingerprint; together they cover every case once), else CD_ERR_ARG naming the part
 * and what differs. out_dir is locked as by cd_convert; shard files already there that are not the
 * parts' own are refused, never overwritten. */
CD_API cd_status cd_dataset_merge(const char *out_dir, const char *const *part_dirs, int nparts, cd_error *err);
/* cd_dataset_merge reporting progress (cirrdata/progress.h; may be NULL): merged shards written (linked,
 * copied or rebuilt) of all the merged dataset's shards, and their bytes so far. */
CD_API cd_status cd_dataset_merge_with_progress(const char *out_dir, const char *const *part_dirs, int nparts,
                                                cd_progress_fn progress, void *user, cd_error *err);

/* ---- reading ---- */

typedef struct cd_dataset cd_dataset;

/* Opens DIR/manifest.json (validated). Shards are opened on first use. The caller owns *out. */
CD_API cd_status cd_dataset_open(const char *dir, cd_dataset **out, cd_error *err);
CD_API void cd_dataset_close(cd_dataset *ds);

CD_API uint64_t cd_dataset_record_count(const cd_dataset *ds);
/* Whether split (a record's "split") is named in splits, a comma-separated list of split names as
 * cd_loader_options.splits takes it; "*" or NULL selects every split. */
CD_API bool cd_dataset_split_selected(const char *splits, const char *split);
/* The manifest text (owned by the dataset). */
CD_API const char *cd_dataset_manifest(const cd_dataset *ds);

/* Reads record i's header (its metadata and tensor table); *shard receives the shard to read its
 * tensors from (owned by the dataset). Thread safe. The caller owns *rec (cd_record_destroy). */
CD_API cd_status cd_dataset_read_record(cd_dataset *ds, uint64_t i, cd_record **rec, const cd_shard **shard,
                                        cd_error *err);

/* Checks every shard's size and XXH3-128 against the manifest and every record and chunk checksum.
 * Stops at the first damage (named in the message: shard file, record, tensor, chunk). progress may be
 * NULL (cirrdata/progress.h: shards done of the total, bytes checked). */
CD_API cd_status cd_dataset_verify(const char *dir, cd_progress_fn progress, void *user, cd_error *err);

#ifdef __cplusplus
}
#endif
#endif
