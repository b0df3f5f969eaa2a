/* Augmented copies of a preprocessed case for `convert --augment` (internal).
 *
 * Copy k of the case with sample index i is rendered by the loader's own per-sample code
 * (augment/sample_plan.c) from the values the loader would read back from the plain record (the
 * stored dtype converted to float32), for (seed, epoch = k, record index = i) with batch size 1. */
#ifndef CD_CONVERT_AUGMENT_COPIES_H
#define CD_CONVERT_AUGMENT_COPIES_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

#include "cirrdata/augment.h"
#include "cirrdata/convert.h"
#include "cirrdata/gpu.h"
#include "cirrdata/preprocess.h"
#include "core/internal.h"
#include "gpu/device_policy.h"

typedef struct cd_aug_copies {
    cd_aug_pipeline *pipe;
    char *pipe_json; /* canonical pipeline (manifest provenance) */
    uint32_t copies;
    uint64_t seed;
    cd_loader_mode mode;
    int64_t patch[3]; /* volume: 0 = each record's own shape */
    bool fg;          /* patch mode: centre on foreground (foreground_fraction >= 0.5) */
    double foreground_fraction;
    bool no_original;
    cd_device_policy *policy; /* the converter's (borrowed, as is slot): the warp on Vulkan when active */
    cd_device_slot *slot;
    pthread_key_t scratch; /* per worker thread: buffers reused from case to case (fresh pages cost faults) */
    bool scratch_key;
} cd_aug_copies;

/* Validates the options and loads the pipeline; the spatial warp runs on the policy's slot while the
 * policy is active (cirrdata/device.h), else on the CPU. policy and slot outlive ac. */
CD_INTERNAL cd_status cd_aug_copies_init(cd_aug_copies *ac, const cd_convert_options *o, cd_device_policy *policy,
                                         cd_device_slot *slot, cd_error *err);
/* "vulkan" while the policy keeps the device in use, else "cpu". */
CD_INTERNAL const char *cd_aug_copies_device(const cd_aug_copies *ac);
CD_INTERNAL void cd_aug_copies_free(cd_aug_copies *ac);

/* The manifest's "augmentation" object. */
CD_INTERNAL json_t *cd_aug_copies_manifest(const cd_aug_copies *ac);

/* One rendered copy: a sample in the record's layout plus its "augmentation" metadata object. */
typedef struct cd_aug_copy {
    cd_sample s;  /* image (float32, or float16 when the plain record is float16), mask, affine, bbox... */
    json_t *meta; /* the record's "augmentation" object */
} cd_aug_copy;

/* Renders the K copies of preprocessed case s with sample index `index`; fg_locations: the plain
 * record's metadata array of the same name (what the loader samples patch centres from), or NULL.
 * out[0..K) receive the copies (cd_aug_copy_clear each). *seconds accumulates the thread's CPU time spent. */
CD_INTERNAL cd_status cd_aug_copies_render(cd_aug_copies *ac, const cd_sample *s, json_t *fg_locations, uint64_t index,
                                           cd_aug_copy *out, double *seconds, cd_error *err);
CD_INTERNAL void cd_aug_copy_clear(cd_aug_copy *c);

#endif
