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
#include "cirrdata/progress.h"
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
    uint32_t case_index; /* selects the case's random stream */
    cd_sequence sequence;
    int stage;       /* 1 mild, 2 moderate, 3 severe; 0 = healthy */
    int64_t dims[3]; /* 0 = drawn from the seed (in-plane 160..320, 24..64 slices); else 1..2048 */
} cd_synth_case_params;

/* Generates one case. *image gets a stored dtype as real scanners vary (int16 mostly, uint16, float32,
 * int16 with scl_slope/scl_inter), *mask uint8 (0 background, 1 liver). Both share an LPS affine
 * (axis 0 towards the patient's left, 1 posterior, 2 superior; slices are axial), sometimes slightly
 * oblique in-plane. Spacing: in-plane 0.7..1.6 mm, slices 3..8 mm. A pure function of the params:
 * the same patient (seed, case_index) has the same anatomy in T1 and T2. The caller owns both. */
CD_API cd_status cd_synth_case(const cd_synth_case_params *params, cd_volume **image, cd_volume **mask, cd_error *err);

/* What cd_synth_cirrmri600 wrote. Index [q] is the sequence (0 = T1, 1 = T2). */
typedef struct cd_synth_stats {
    uint32_t patients;          /* cirrhosis patients */
    uint32_t healthy;           /* healthy subjects (each has a T1 and a T2 scan) */
    uint32_t cases[2][3];       /* cirrhosis scans per sequence and split (train, valid, test) */
    uint32_t stage_cases[2][4]; /* scans per sequence and stage (0 = healthy, 1..3) */
    uint32_t healthy_cases[2];  /* healthy scans per sequence */
    uint64_t files;             /* NIfTI files (images + masks) */
    uint64_t bytes;             /* bytes written, NIfTI and metadata */
} cd_synth_stats;

typedef struct cd_synth_options {
    uint32_t cases;          /* cirrhosis patients; default 24 */
    uint64_t seed;           /* default 0 */
    bool healthy;            /* also write Healthy_subjects/ (default true): max(2, cases / 4) subjects */
    int threads;             /* worker threads; 0 = online CPUs. The output does not depend on it. */
    cd_progress_fn progress; /* optional (cirrdata/progress.h): scans (image + mask) done of the total,
                              * bytes written */
    void *progress_user;
    cd_synth_stats *stats; /* optional output, filled on return */
} cd_synth_options;

/* The defaults: 24 patients, seed 0, healthy subjects, all CPUs. A zeroed struct asks for 0 patients,
 * which cd_synth_cirrmri600 refuses (CD_ERR_ARG). */
CD_API void cd_synth_options_init(cd_synth_options *o);

/* Writes a synthetic CirrMRI600+ tree under root (created if missing; existing files of the same
 * names are replaced atomically, other files are left alone). The layout, exactly as published:
 *   Cirrhosis_T1_3D/Cirrhosis_T1_3D/{train,valid,test}_{images,masks}/<id>.nii.gz  (double nested)
 *   Cirrhosis_T2_3D/{train,valid,test}_{images,masks}/<id>.nii.gz
 *   Healthy_subjects/T1_W_Healthy/{T1_images,T1_masks}/<id>.nii.gz, T2_W_Healthy/{T2_images,T2_masks}/
 *   Metadata/{CirrMRI600+_CompleteData,T1,T2,T1&T2_Paired}_age_gender_evaluation.csv,
 *            Healthy_demographics.csv, labels.txt
 * See synth/cirrmri600.c for the cohort (ids, stages, splits, CSV details). */
CD_API cd_status cd_synth_cirrmri600(const char *root, const cd_synth_options *opts, cd_error *err);

#ifdef __cplusplus
}
#endif
#endif
