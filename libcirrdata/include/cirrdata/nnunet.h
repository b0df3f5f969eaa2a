/* cirrdata/nnunet.h — nnU-Net v2 raw datasets: exporting a source we read into one, and checking one
 * with nnU-Net's dataset-integrity rules (nnunetv2/experiment_planning/verify_dataset_integrity.py).
 *
 * An nnU-Net v2 raw dataset (nnU-Net's documentation/dataset_format.md) is a folder DatasetNNN_Name with
 * dataset.json (channel_names, labels, numTraining, file_ending), imagesTr/<case>_<XXXX><ending> (one file
 * per channel XXXX = 0000, 0001, ...), labelsTr/<case><ending> and optionally imagesTs (and labelsTs,
 * which nnU-Net ignores and users keep beside it). */
#ifndef CIRRDATA_NNUNET_H
#define CIRRDATA_NNUNET_H

#include "cirrdata/api.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cirrdata/progress.h"
#include "cirrdata/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- export ---- */

typedef struct cd_nnunet_export_options {
    const char *source;      /* a source dataset, or a converted dataset directory (one with manifest.json) */
    const char *layout;      /* "cirrmri600", "nnunet", "dataset" (converted); NULL: "dataset" when source holds
                            manifest.json, else an error asking for the layout */
    const char *out_dir;     /* the dataset folder to create; its name must be DatasetNNN_Name (N digits, 3 or more) */
    const char *sequence;    /* the sequence exported (cirrmri600: "T1" or "T2"; dataset: a record's "sequence");
                             NULL: the only one the source has (a source with several is CD_ERR_ARG naming them) */
    bool pair_t1t2;          /* cirrmri600: one case per patient with T1 and T2: channel 0000 T1 as stored, 0001 T2
                             resampled onto T1's grid (cirrdata/resample.h: trilinear in world space through both
                             affines, 0 outside T2's field of view, float32), as convert --pair-t1t2 does.
                             dataset: the records of sequence "T1+T2" */
    bool healthy;            /* cirrmri600: also the Healthy_subjects (identifiers <prefix>_healthy<id>) */
    bool skip_bad;           /* a case the layout cannot use (image without mask, ...) is skipped and listed in
                             cirrdata_export.json instead of failing the export */
    bool force;              /* replace an existing out_dir (only one that holds a dataset.json, or an empty folder) */
    const char *prefix;      /* case identifiers are <prefix>_<patient id>; NULL: "case" */
    const char *labels_json; /* dataset.json's "labels" as a JSON object text; NULL: the nnunet source's own,
                                else {"background": 0, "liver": 1} */
    int compression_level;   /* gzip level 1..12 of the files written (not copied); 0 = 6 */
    uint64_t max_bytes;      /* NIfTI allocation cap; 0 = default (cirrdata/limits.h) */
    cd_progress_fn progress; /* optional: cases done of the total, bytes written */
    void *progress_user;
} cd_nnunet_export_options;

/* All zero except compression_level 0 (= 6): every pointer NULL, every flag false. */
CD_API void cd_nnunet_export_options_init(cd_nnunet_export_options *o);

typedef struct cd_nnunet_export_result {
    uint64_t training; /* cases in imagesTr/labelsTr */
    uint64_t test;     /* cases in imagesTs (and labelsTs) */
    uint64_t skipped;  /* cases skipped (skip_bad; with pair_t1t2 the patients with one sequence), listed in
                          cirrdata_export.json */
    uint64_t warnings; /* origin or direction of a mask not np.allclose to its image's (nnU-Net warns too),
                          listed in cirrdata_export.json */
    uint64_t copied;   /* files copied byte for byte (.nii.gz sources) */
    uint64_t gzipped;  /* files gzipped as they were (.nii sources) */
    uint64_t written;  /* files written from voxels (resampled T2, converted records) */
    uint64_t bytes_written;
    bool splits; /* splits_final.json was written */
} cd_nnunet_export_result;

/* Writes an nnU-Net v2 raw dataset at out_dir from opts->source:
 *   cirrmri600  train and valid cases -> imagesTr/labelsTr, test -> imagesTs/labelsTs; splits_final.json
 *               = [{"train": [train ids], "val": [valid ids]}] (nnU-Net reads it from
 *               nnUNet_preprocessed/DatasetNNN_Name/); one sequence per dataset (opts->sequence) or both
 *               paired (pair_t1t2);
 *   nnunet      an nnU-Net raw / MSD dataset as convert reads it: every channel file, imagesTs cases as the
 *               test split (without labels), its labels; channels that are volumes of one 4D file (MSD)
 *               are CD_ERR_UNSUPPORTED (the export copies one file per channel);
 *   dataset     a converted dataset's plain records (augmented copies are left out) of one sequence, split
 *               as recorded (train/valid -> imagesTr, test -> imagesTs; splits_final.json as above when it has
 *               valid records).
 * Files: a .nii.gz source is copied byte for byte, a .nii source is gzipped as it is (header, extensions
 * and voxels unchanged); a converted record or a resampled T2 is written as NIfTI-1 (its affine in sform
 * and qform, float16 widened to float32). Every case is checked before it is written, as verify-raw
 * would: channels and mask with the same shape and (np.allclose) spacing, no NaN voxel, mask values
 * integers declared in labels; a failure names the source file and the rule.
 * Atomic: everything is written into a hidden sibling folder (.<name>.tmp-<pid>) that is renamed to
 * out_dir at the end; on any error it is removed and out_dir is untouched. An existing out_dir is
 * CD_ERR_ARG unless force (then swapped out and deleted after the new one is in place; force refuses a
 * folder that holds neither dataset.json nor nothing at all). Also written: cirrdata_export.json
 * (source, options, each case's source files and how each file was made, the skipped cases).
 * result may be NULL. */
CD_API cd_status cd_nnunet_export(const cd_nnunet_export_options *opts, cd_nnunet_export_result *result, cd_error *err);

/* ---- verify ---- */

/* One finding of cd_nnunet_verify. rule is a stable short name:
 *   dataset_json   dataset.json missing, not JSON, a required key (labels, channel_names, numTraining,
 *                  file_ending) missing or of the wrong type
 *   folders        imagesTr or labelsTr missing
 *   labels         the labels object breaks nnU-Net's rules (background 0, consecutive values, ignore label
 *                  the highest, regions with regions_class_order)
 *   file_ending    an ending this reader cannot check (only .nii.gz and .nii), or (warning) a NIfTI file that
 *                  does not end in file_ending, which nnU-Net ignores
 *   num_training   numTraining differs from the cases in imagesTr
 *   stray_file     a file ending in file_ending that is no <case>_<XXXX> image (nnU-Net would take it for a
 *                  case), a hidden file, or (warning) a label without an image
 *   missing_channel, extra_channel   a case lacks channel XXXX < len(channel_names), or has one beyond
 *   missing_label  a training case without labelsTr/<case><ending>
 *   unreadable     a file that cannot be read as NIfTI (the reader's message)
 *   not_3d         a file with more than one volume (4D) where one channel is expected
 *   shape, spacing channels and label with different shapes, or spacings not np.allclose
 *   origin, direction   (warnings, as in nnU-Net) not np.allclose between channels and label
 *   label_values   label voxels not among the declared labels (the values found are listed)
 *   nan            NaN voxels in an image or a label
 * case_id is the case's identifier ("" for dataset-wide findings); file the file concerned (may be ""). */
typedef struct cd_nnunet_finding {
    bool warning; /* nnU-Net only warns: does not fail the check */
    char rule[24];
    char case_id[256];
    char file[512];
    char message[512];
} cd_nnunet_finding;

typedef struct cd_nnunet_report {
    uint64_t training_cases; /* identifiers found in imagesTr */
    uint64_t test_cases;     /* identifiers found in imagesTs */
    uint64_t failures, warnings;
    cd_nnunet_finding *findings; /* failures and warnings in the order found */
    size_t nfindings;
} cd_nnunet_report;

/* Checks the nnU-Net raw dataset in dir with the rules of nnU-Net's verify_dataset_integrity (listed at
 * cd_nnunet_finding) and lists every problem, not only the first; imagesTs (and labelsTs where present)
 * are checked the same way as the training cases except that their labels are optional. Cases are
 * checked in identifier order. Returns CD_OK when the check ran: report->failures says whether the
 * dataset passed; an error status only when it could not run (out of memory). progress may be NULL
 * (cases done of the total, bytes read). The caller owns *report (cd_nnunet_report_free). */
CD_API cd_status cd_nnunet_verify(const char *dir, cd_progress_fn progress, void *user, cd_nnunet_report **report,
                                  cd_error *err);
CD_API void cd_nnunet_report_free(cd_nnunet_report *report);

#ifdef __cplusplus
}
#endif
#endif
