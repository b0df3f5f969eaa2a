/* The per-file rules of nnU-Net's dataset-integrity check (internal), shared by cd_nnunet_verify and
 * cd_nnunet_export (which checks each case before writing it). */
#ifndef CD_CONVERT_NNUNET_CHECK_H
#define CD_CONVERT_NNUNET_CHECK_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cirrdata/nifti.h"
#include "core/internal.h"

/* The label values nnU-Net accepts in a segmentation: LabelManager's all_labels plus the ignore label. */
typedef struct cd_nn_labels {
    int64_t *values; /* sorted, distinct */
    size_t n;
} cd_nn_labels;

/* Parses dataset.json's "labels" (regions_class_order may be NULL) by nnU-Net's LabelManager rules:
 * "background" present and 0 (not a region); values integers or lists of integers (regions, which then
 * need regions_class_order with one entry per region); "ignore" an integer, the highest value; all values
 * (with ignore) consecutive. false with the broken rule in why. */
CD_INTERNAL bool cd_nn_labels_parse(json_t *labels, json_t *regions_class_order, cd_nn_labels *out, char *why,
                                    size_t whylen);
CD_INTERNAL void cd_nn_labels_free(cd_nn_labels *l);
/* The labels as "[0, 1, 2]". */
CD_INTERNAL void cd_nn_labels_format(const cd_nn_labels *l, char *out, size_t cap);

/* Voxels that are NaN (floating-point dtypes; integers have none). */
CD_INTERNAL uint64_t cd_nn_count_nan(const cd_volume *v);

/* Whether every value of a label volume (scaled, as nnU-Net's float32 read of it) is one of l's; when not,
 * found receives the distinct values that are not (the first few, then "..."). */
CD_INTERNAL bool cd_nn_label_values_ok(const cd_volume *v, const cd_nn_labels *l, char *found, size_t cap);

/* The geometry nnU-Net compares: shape (dims 1..3), spacing (|pixdim 1..3|), origin and direction (from
 * the affine nibabel uses), the affine itself. */
typedef struct cd_nn_geometry {
    int64_t shape[3];
    double spacing[3];
    double origin[3];
    double direction[9];
    double affine[16];
} cd_nn_geometry;

CD_INTERNAL void cd_nn_geometry_of(const cd_nifti_header *h, cd_nn_geometry *g);
/* numpy.allclose(a, b): |a - b| <= 1e-8 + 1e-5 * |b| for every entry. */
CD_INTERNAL bool cd_nn_allclose(const double *a, const double *b, int n);

/* What differs between two geometries (CD_NN_DIFF_* bits): shape and spacing fail nnU-Net's check;
 * origin, direction and affine only make it warn. */
enum {
    CD_NN_DIFF_SHAPE = 1,
    CD_NN_DIFF_SPACING = 2,
    CD_NN_DIFF_ORIGIN = 4,
    CD_NN_DIFF_DIRECTION = 8,
    CD_NN_DIFF_AFFINE = 16
};
CD_INTERNAL unsigned cd_nn_geometry_diff(const cd_nn_geometry *a, const cd_nn_geometry *b);
/* "rule: what_a has X, what_b has Y" for one CD_NN_DIFF_* bit; returns the rule's name. */
CD_INTERNAL const char *cd_nn_geometry_message(unsigned bit, const cd_nn_geometry *a, const char *what_a,
                                               const cd_nn_geometry *b, const char *what_b, char *msg, size_t cap);

#endif
