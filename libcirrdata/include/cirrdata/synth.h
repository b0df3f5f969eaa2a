/* cirrdata/synth.h — synthetic datasets in the exact published layout of CirrMRI600+.
 *
 * The real dataset cannot be downloaded in CI or demos, so we generate one that exercises every
 * code path of the converter: the folder layout (with its double nesting), the Metadata CSVs (with
 * their real column names and a UTF-8 BOM in some), T1 and T2 contrast, anisotropic spacing, LPS
 * affines, varied matrix sizes and stored dtypes, and liver masks. Each case's appearance depends on
 * its cirrhosis stage (surface nodularity, texture heterogeneity, lobe size ratio, spleen size) so a
 * classifier can learn the stage, but not from a constant intensity per class.
 *
 * Everything is a pure function of the seed (Philox streams per case): the same seed gives the same
 * files byte for byte. */
#ifndef CIRRDATA_SYNTH_H
#define CIRRDATA_SYNTH_H

#include "cirrdata/api.h"
#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/status.h"
#include "cirrdata/volume.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cd_sequence { CD_SEQ_T1 = 1, CD_SEQ_T2 = 2 } cd_sequence;

/* One synthetic abdominal MRI case: image and liver mask on the same grid. */
typedef struct cd_synth_case_params {
    uint64_t seed;
    uint32_t case_index;  /* selects the case's random stream */
    cd_sequence sequence;
    int stage;            /* 1 mild, 2 moderate, 3 severe; 0 = healthy */
    int64_t dims[3];      /* 0 = drawn from the seed (in-plane 160..320, 24..64 slices) */
} cd_synth_case_params;

/* Generates one case. *image gets a stored integer or float dtype (as real scanners vary), *mask
 * uint8 (0 background, 1 liver). Both share an LPS affine. The caller owns both. */
CD_API cd_status cd_synth_case(const cd_synth_case_params *params, cd_volume **image, cd_volume **mask,
                               cd_error *err);

typedef void (*cd_progress_fn)(void *user, uint64_t done, uint64_t total);

typedef struct cd_synth_options {
    uint32_t cases;        /* patients; default 24 */
    uint64_t seed;         /* default 0 */
    bool healthy;          /* also write Healthy_subjects/ (default true) */
    int threads;           /* 0 = online CPUs */
    cd_progress_fn progress; /* optional, called from one thread */
    void *progress_user;
} cd_synth_options;

#define CD_SYNTH_OPTIONS_INIT {24, 0, true, 0, NULL, NULL}

/* Writes a synthetic CirrMRI600+ tree under root (created if missing). See synth.c / README for the
 * exact layout. */
CD_API cd_status cd_synth_cirrmri600(const char *root, const cd_synth_options *opts, cd_error *err);

#ifdef __cplusplus
}
#endif
#endif
