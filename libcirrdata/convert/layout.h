/* Dataset layouts the converter reads (internal): what cases exist, their files and labels. */
#ifndef CD_CONVERT_LAYOUT_H
#define CD_CONVERT_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/internal.h"

/* A patient id is a file name's stem, and a path component has at most 255 bytes; a key is
 * "[healthy-]<sequence>[+<sequence>]/<patient_id>". A name that does not fit is refused with a reason
 * that names the file, never cut. */
#define CD_CASE_ID_MAX 256
#define CD_CASE_SEQUENCE_MAX 64
#define CD_CASE_KEY_MAX (16 + 2 * CD_CASE_SEQUENCE_MAX + CD_CASE_ID_MAX)
/* Images of one case (the channels of its record): what cd_preprocess_multi takes. */
#define CD_CASE_CHANNELS_MAX 8

typedef struct cd_case {
    char key[CD_CASE_KEY_MAX]; /* unique: "<sequence>/<patient_id>" */
    char patient_id[CD_CASE_ID_MAX];
    char sequence[CD_CASE_SEQUENCE_MAX];
    char split[16];
    int label;                                   /* 0-based class, -1 unknown */
    int stage;                                   /* dataset's own code (Radiological Evaluation), 0 none */
    double age;                                  /* NaN unknown */
    int gender;                                  /* -1 unknown */
    int nimages;                                 /* channels, 1..CD_CASE_CHANNELS_MAX */
    char *image_paths[CD_CASE_CHANNELS_MAX];     /* channel k's file (owned; an MSD 4D file once per channel) */
    int64_t image_volumes[CD_CASE_CHANNELS_MAX]; /* which 3D volume of its file channel k is */
    /* true: every channel lies on channel 0's grid (nnU-Net; checked when read, never resampled); false:
     * channels 1.. are co-registered sequences resampled onto channel 0's grid (pairing) */
    bool same_grid;
    char *mask_path; /* NULL: no mask */
} cd_case;

typedef struct cd_skip {
    char *path;
    char *reason;
} cd_skip;

typedef struct cd_case_list {
    cd_case *cases;
    size_t n, cap;
    cd_skip *skipped;
    size_t nskipped, capskipped;
    char **classes; /* class names, label i = classes[i] */
    size_t nclasses;
    /* nnunet with a fold: the fold and where its split came from (the splits file's path, or "default":
     * nnU-Net's own 5-fold split); fold -1 and split_source NULL otherwise (owned) */
    int fold;
    char *split_source;
} cd_case_list;

CD_INTERNAL void cd_case_list_free(cd_case_list *l);

/* CirrMRI600+ as published (double nesting, BOMs). healthy_class: add Healthy_subjects as class 3
 * ("healthy"); otherwise they are not read. strict: any problem with a case is an error instead of
 * a skip. Skipped (with the file and the reason): an image without its mask or label, a mask without
 * its image, a name too long for a case key. Errors whatever strict says: one patient id (compared as
 * numbers, as the CSVs are joined) in two splits of one sequence, or twice in one folder (304.nii and
 * 304.nii.gz); two rows of a metadata CSV for one patient that disagree (identical repeated rows are
 * accepted). Cases come sorted by (sequence, split, patient id). */
CD_INTERNAL cd_status cd_layout_cirrmri600(const char *root, bool healthy_class, bool strict, cd_case_list *out,
                                           cd_error *err);

/* nnU-Net v2 raw / nnU-Net v1 / Medical Segmentation Decathlon: dataset.json, imagesTr, labelsTr,
 * imagesTs. Every channel of dataset.json's channel_names (v1/MSD: modality) is one channel of the
 * case: v2 files imagesTr/<case>_<kkkk><file_ending>; v1/MSD entries "./imagesTr/<case>.nii.gz" read
 * as that file's 4D volumes when it exists, else as the per-channel files <case>_<kkkk>.nii.gz. The
 * sequence is the channel names joined by '+'. Training cases have split "train"; with fold >= 0 the
 * fold's validation cases get "valid" (nnunet_split.h: splits_file, <root>/splits_final.json, or
 * nnU-Net's default 5-fold split); imagesTs (MSD: "test") cases get "test", without a mask.
 * Symbolic links are followed while they stay inside root.
 * Skipped (with the file and the reason; strict: errors): an image without its label, a label in
 * labelsTr without its image (v2), a listed file that is missing, a file or link leading out of the
 * dataset, a name too long for a case key, a training case that the splits file's fold leaves out.
 * Errors: a file_ending other than .nii.gz or .nii, regions_class_order (region-based training), a
 * channel missing for a case or a channel number dataset.json does not name, channels whose headers
 * disagree on shape, spacing or affine (nnU-Net's np.allclose), more than CD_CASE_CHANNELS_MAX channels,
 * channel names too long for a sequence, two cases with one key, and the split errors of
 * nnunet_split.h. */
CD_INTERNAL cd_status cd_layout_nnunet(const char *root, bool strict, int fold, const char *splits_file,
                                       cd_case_list *out, cd_error *err);

/* Multi-sequence pairing: replaces the list by one case per patient that has both sequences a and b
 * (same label), key "a+b/<id>", sequence "a+b", channel 0 = a with its mask, channel 1 = b. Patients
 * with only one of them are skipped with a reason (strict: an error). */
CD_INTERNAL cd_status cd_layout_pair_sequences(cd_case_list *l, const char *a, const char *b, bool strict,
                                               cd_error *err);

#endif
