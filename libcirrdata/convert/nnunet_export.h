/* Pieces of cd_nnunet_export (internal): the cases to export (nnunet_plan.c) and the output folder
 * (nnunet_files.c). */
#ifndef CD_CONVERT_NNUNET_EXPORT_H
#define CD_CONVERT_NNUNET_EXPORT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cirrdata/dataset.h"
#include "cirrdata/nnunet.h"
#include "core/internal.h"

#define CD_NN_MAX_CHANNELS 8

/* One case of the export. From a layout: image paths (one per channel; with pair, [1] is resampled onto
 * [0]'s grid) and the mask path. From a converted dataset: the record index. */
typedef struct cd_nn_case {
    char id[256];   /* the nnU-Net case identifier */
    char split[16]; /* "train", "valid" or "test" */
    char *image[CD_NN_MAX_CHANNELS];
    int nimages;
    char *mask;     /* NULL: no mask (dataset records without one) */
    int64_t record; /* converted dataset: record index; else -1 */
} cd_nn_case;

typedef struct cd_nn_skip {
    char *path, *reason;
} cd_nn_skip;

typedef struct cd_nn_plan {
    cd_nn_case *cases;
    size_t n;
    cd_nn_skip *skipped;
    size_t nskipped;
    char *channel_names[CD_NN_MAX_CHANNELS];
    int nchannels;
    bool paired;        /* image[1] is resampled onto image[0]'s grid */
    json_t *labels;     /* the source's labels (nnunet layout), or NULL */
    char sequence[128]; /* what was selected */
    cd_dataset *ds;     /* converted dataset source, else NULL */
} cd_nn_plan;

/* The cases of opts->source, selected (sequence, pairing, healthy) and named, in export order.
 * Identifiers are unique (a collision is CD_ERR_ARG naming both sources). */
CD_INTERNAL cd_status cd_nn_plan_make(const cd_nnunet_export_options *opts, const char *layout, cd_nn_plan *plan,
                                      cd_error *err);
CD_INTERNAL void cd_nn_plan_free(cd_nn_plan *plan);

/* The output folder: out_dir must not exist unless force (then it must hold dataset.json or nothing). */
CD_INTERNAL cd_status cd_nn_out_check(const char *out_dir, bool force, bool *exists, cd_error *err);
/* Creates the hidden sibling .<name>.tmp-<pid> of out_dir (path into tmp, PATH_MAX bytes). */
CD_INTERNAL cd_status cd_nn_out_begin(const char *out_dir, char *tmp, size_t cap, cd_error *err);
/* Flushes tmp to disk and puts it in out_dir's place (swapping out and deleting an existing one when
 * replace); refuses to replace an out_dir that appeared meanwhile when not replace. */
CD_INTERNAL cd_status cd_nn_out_commit(const char *tmp, const char *out_dir, bool replace, cd_error *err);
/* Removes a folder tree this export made (never following symbolic links). */
CD_INTERNAL void cd_nn_remove_tree(const char *dir);

/* Copies src to dst byte for byte (gzip: false), or gzips it as it is (gzip: true, libdeflate level);
 * dst is written through a temporary name. *bytes receives the bytes written. */
CD_INTERNAL cd_status cd_nn_copy_file(const char *src, const char *dst, bool gzip, int level, uint64_t max_bytes,
                                      uint64_t *bytes, cd_error *err);

#endif
