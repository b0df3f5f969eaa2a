/* The converter's shared state (internal; the API is cirrdata/convert.h). cd_convert (convert.c) runs
 * three steps, each in its own file:
 *   plan.c    the case list and this part of it, the conversion's identity, the output folder (lock,
 *             resume, journal) and the dataset's target spacing
 *   run.c     the worker pipeline (case.c: one case's records) and the writer that puts the records
 *             into shards in case order, journaling each finished shard
 *   finish.c  the manifest, the journal's removal and the result */
#ifndef CD_CONVERT_CONVERT_IMPL_H
#define CD_CONVERT_CONVERT_IMPL_H

#include <jansson.h>
#include <stdbool.h>

#include "cirrdata/convert.h"
#include "convert/augment_copies.h"
#include "convert/identity.h"
#include "convert/journal.h"
#include "convert/layout.h"
#include "convert/resume.h"
#include "core/internal.h"
#include "gpu/device_policy.h"
#include "io/dir_lock.h"
#include "preprocess/preprocess_impl.h"
#include "shard/record_impl.h"

#define CD_CONV_PATH_CAP 4200
#define CD_CONV_DIR_CAP 3800

/* What is written, journaled as shards finish. */
typedef struct convert_state {
    const cd_convert_options *opts;
    const cd_conv_identity *id;
    char dir[CD_CONV_DIR_CAP];
    cd_journal journal;
    json_t *shards;                              /* finished: [{path, size, records, xxh3_128, end_case}] */
    json_t *entries;                             /* manifest entries of the records in finished shards */
    json_t *skipped;                             /* [{case, path, reason}] */
    size_t journaled_entries, journaled_skipped; /* how many of each the journal holds */
    json_t *resolved;
    json_t *augmentation; /* the manifest's "augmentation" object, or NULL */
    const char *device;   /* what preprocessed: "cpu" or "vulkan" (the manifest's "device") */
} convert_state;

/* One conversion: cd_convert's options, result and everything its steps share. */
typedef struct conversion {
    const cd_convert_options *o;
    cd_convert_result *res;
    uint64_t shard_size;
    cd_case_list cases;
    size_t lo, hi; /* this part's cases: [lo, hi) */
    convert_state cs;
    bool augmenting;
    cd_aug_copies ac;
    cd_conv_identity id;
    cd_resume rs; /* rs.finished: the folder holds this conversion already */
    cd_dir_lock lock;
    char *legacy;
    cd_device_policy policy; /* options.device (cirrdata/device.h) */
    cd_device_slot slot;     /* the one context preprocessing and the copies' warp share */
    cd_pp_device pp;
    double target[3]; /* the target spacing of a median-spacing recipe */
    bool buffer_cache;
    bool ran; /* the pipeline ran (finish.c reports it, successful or not) */
} conversion;

/* A case yields one record, or with augmented copies up to K + 1 (all in one shard). */
typedef struct case_result {
    bool ready;
    bool skipped;
    cd_status status;
    char message[CD_ERROR_MESSAGE_MAX];
    size_t nrec;
    cd_record_builder **builders;
    json_t **entries;
    uint64_t bytes_read;
    double augment_seconds;
} case_result;

/* What every case's work reads. */
typedef struct conv_job {
    const cd_convert_options *opts;
    const cd_case_list *cases;
    const double *target_spacing;
    cd_aug_copies *aug; /* NULL: plain conversion */
    cd_pp_device *pp;   /* what resamples and normalises (--device) */
} conv_job;

typedef struct conv_pipeline conv_pipeline;

/* ---- plan.c ---- */

/* The case list of the layout (sequences paired when asked). */
CD_INTERNAL cd_status cd_conv_plan_cases(conversion *cv, cd_error *err);
/* Everything before the first case: the identity, the output folder (locked; finished, resumed or
 * new), the journal and the target spacing. cv->rs.finished: nothing is left to do. */
CD_INTERNAL cd_status cd_conv_plan(conversion *cv, cd_error *err);

/* ---- run.c ---- */

/* The workers and the writer: every case from the resume point to hi into shards. */
CD_INTERNAL cd_status cd_conv_run(conversion *cv, cd_error *err);
/* Records case i's outcome and, for a good case, waits until every earlier case is resolved and
 * returns its sample index (augmented copies). */
CD_INTERNAL uint64_t cd_conv_resolve_case(conv_pipeline *p, size_t i, bool ok);

/* ---- case.c ---- */

/* Reads, preprocesses and builds the records of case c (number case_no) into res (in a worker thread). */
CD_INTERNAL void cd_conv_process_case(const conv_job *jb, const cd_case *c, case_result *res, conv_pipeline *p,
                                      size_t case_no);
CD_INTERNAL void cd_conv_case_result_clear(case_result *r);

/* ---- finish.c ---- */

/* After the run (st its status): the device used, the manifest, the journal removed, the counts. */
CD_INTERNAL cd_status cd_conv_finish(conversion *cv, cd_status st, cd_error *err);
/* Fills res from a finished dataset of this conversion found in the output folder. */
CD_INTERNAL void cd_conv_result_from_manifest(json_t *m, cd_convert_result *res);

#endif
