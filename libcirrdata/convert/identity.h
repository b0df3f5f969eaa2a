/* What identifies a conversion (internal): the options and the state of every input file. A rerun, a
 * resume after a kill and a merge of parts compare these, so a source edited since (even at the same
 * size), another recipe or a part of another conversion is noticed and named, never taken for the same. */
#ifndef CD_CONVERT_IDENTITY_H
#define CD_CONVERT_IDENTITY_H

#include <jansson.h>
#include <stddef.h>

#include "cirrdata/convert.h"
#include "convert/layout.h"
#include "dataset/manifest.h" /* cd_inputs_first_change */

typedef struct cd_conv_identity {
    char options[17];           /* XXH3-64 (hex) of the options: layout, recipe, shard size, healthy, pairing,
                           * augmentation (not the device, not the part) */
    char fingerprint[17];       /* options + every case's inputs: the manifest's source.fingerprint, the same for
                           * every part of a conversion and for a one-machine conversion */
    json_t *inputs;             /* every case in list order: {key, split, sequence, label, files: [[path relative
                           * to the root, size, mtime_ns], ...]} (image, then mask, then a paired image) */
    int part_index, part_count; /* 0/0: everything */
    size_t lo, hi, ncases;      /* this part's cases [lo, hi) of ncases (dataset/partition.h) */
    uint64_t part_bytes;        /* input bytes of the cases [lo, hi) */
    uint64_t shard_size;        /* the shards' target size (merge lays out the parts' records by it) */
} cd_conv_identity;

/* Fills id for the case list and options (stat of every input file), with this part's cases: the
 * range of options.part_index of part_count balanced by the input sizes just read (dataset/partition.h),
 * or every case. aug: the manifest's augmentation object without its device, or NULL. */
CD_INTERNAL cd_status cd_conv_identity_init(cd_conv_identity *id, const cd_convert_options *o, const cd_case_list *l,
                                            uint64_t shard_size, json_t *aug, cd_error *err);
CD_INTERNAL void cd_conv_identity_free(cd_conv_identity *id);

/* The fingerprint libcirrdata wrote before input modification times were part of it (manifest
 * format_version 1): lets the same convert command rewrite such a dataset in place. */
CD_INTERNAL char *cd_conv_legacy_fingerprint(const cd_convert_options *o, const cd_case_list *l, size_t lo, size_t hi,
                                             uint64_t shard_size, json_t *aug);

#endif
