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

typedef struct cd_case {
    char key[CD_CASE_KEY_MAX]; /* unique: "<sequence>/<patient_id>" */
    char patient_id[CD_CASE_ID_MAX];
    char sequence[CD_CASE_SEQUENCE_MAX];
    char split[16];
    int label;  /* 0-based class, -1 unknown */
    int stage;  /* dataset's own code (Radiological Evaluation), 0 none */
    double age; /* NaN unknown */
    int gender; /* -1 unknown */
    char *image_path;
    char *mask_path;   /* NULL: no mask */
    char *image2_path; /* a second, co-registered sequence (pairing), or NULL */
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

/* nnU-Net v2 raw / Medical Segmentation Decathlon: dataset.json, imagesTr, labelsTr (imagesTs is not
 * read). First channel only; every case has split "train". Skipped (with the file and the reason): an
 * image without its label, a label in labelsTr without its image (v2), a listed file that is missing
 * or escapes the dataset (MSD), a name too long for a case key. Errors: a channel name too long for a
 * sequence; two cases with one key (case_0000.nii and case_0000.nii.gz, or an MSD entry listed twice). */
CD_INTERNAL cd_status cd_layout_nnunet(const char *root, bool strict, cd_case_list *out, cd_error *err);

/* Multi-sequence pairing: replaces the list by one case per patient that has both sequences a and b
 * (same label), key "a+b/<id>", sequence "a+b", image a with its mask plus image2 = b. Patients
 * with only one of them are skipped with a reason (strict: an error). */
CD_INTERNAL cd_status cd_layout_pair_sequences(cd_case_list *l, const char *a, const char *b, bool strict,
                                               cd_error *err);

#endif
