/* Merging the parts of a conversion (internal; cd_dataset_merge in merge.c checks the parts, merge_pack.c
 * lays out their records). */
#ifndef CD_DATASET_MERGE_IMPL_H
#define CD_DATASET_MERGE_IMPL_H

#include <jansson.h>
#include <stdint.h>

#include "cirrdata/progress.h"
#include "core/internal.h"

#define CD_MERGE_PATH_CAP 4200

/* The records of the parts pm[0..nparts) (part manifests in part order, their folders pdir) into
 * out_dir/shards/ exactly as one conversion of every case writes them: in case order, a new shard
 * shard-000-SSSSS.cds whenever a case's records would take the shard past shard_size (run.c's rule),
 * records copied as stored (shard/record_copy.h). An output shard that is a part's shard record for record
 * is that file, hard-linked (or copied). Appends the merged manifest's "shards" entries to shards and its
 * record entries (with their new "shard" and "index") to records. A file already at an output shard's name
 * is accepted only when it holds those very bytes (a merge killed before its manifest), never overwritten. */
CD_INTERNAL cd_status cd_merge_pack(const char *out_dir, json_t *const *pm, const char *const *pdir, int nparts,
                                    uint64_t shard_size, json_t *shards, json_t *records, cd_progress_fn progress,
                                    void *user, cd_error *err);

/* A shard of a part into the merged folder (its listing: the part manifest's "shards" entry): a hard link
 * where possible, else a copy. A file already at `to` is accepted only when it is that shard. */
CD_INTERNAL cd_status cd_merge_link_or_copy(const char *from, const char *to, json_t *listing, cd_error *err);

#endif
