/* Internal definitions shared by the augmentation sources (not installed). */
#ifndef CD_AUGMENT_IMPL_H
#define CD_AUGMENT_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/augment.h"
#include "core/internal.h"

/* Operation kinds, in the fixed order in which pipelines are written and parameters resolved:
 * spatial first (rotation, scaling, elastic; mirroring is folded into the same matrix), then the
 * intensity operations in nnU-Net v2's order. */
typedef enum cd_aug_kind {
    CD_AUG_ROTATION = 0,
    CD_AUG_SCALING,
    CD_AUG_ELASTIC,
    CD_AUG_NOISE,
    CD_AUG_BLUR,
    CD_AUG_BRIGHTNESS,
    CD_AUG_CONTRAST,
    CD_AUG_LOWRES,
    CD_AUG_GAMMA,
    CD_AUG_MIRROR,
    CD_AUG_NKINDS
} cd_aug_kind;

/* Philox stream ids (counter word 1) of each random decision; see draw.c. Stable: changing one
 * changes every augmented sample ever produced. */
enum {
    CD_AUG_STREAM_ROTATION = 1,
    CD_AUG_STREAM_SCALING = 2,
    CD_AUG_STREAM_ELASTIC = 3,
    CD_AUG_STREAM_NOISE = 4,
    CD_AUG_STREAM_BLUR = 5,
    CD_AUG_STREAM_BRIGHTNESS = 6,
    CD_AUG_STREAM_CONTRAST = 7,
    CD_AUG_STREAM_LOWRES = 8,
    CD_AUG_STREAM_GAMMA_INVERT = 9,
    CD_AUG_STREAM_GAMMA = 10,
    CD_AUG_STREAM_MIRROR = 11,
};

typedef struct cd_aug_op {
    bool present;
    double p;             /* probability that the op applies to a sample */
    double range[2];      /* the op's main range: degrees, scale, sigma, factor, zoom, gamma, alpha */
    double range2[2];     /* elastic: sigma (voxels) */
    bool axes[3];         /* rotation (about), mirror (along) */
    double p_per_channel; /* blur, lowres: nnU-Net's p_per_channel, applied jointly to all channels */
    bool per_axis;        /* blur: an independent sigma per axis (nnU-Net v2) or one for all */
    double truncate;      /* blur: kernel radius = (int)(truncate * sigma + 0.5), as scipy */
    double invert_p;      /* gamma: probability of the inverted-gamma step that precedes it */
} cd_aug_op;

struct cd_aug_pipeline {
    char name[65];
    int dims; /* 3 or 2 */
    cd_aug_op ops[CD_AUG_NKINDS];
};

extern CD_INTERNAL const char *const cd_aug_kind_names[CD_AUG_NKINDS];

/* Gaussian smoothing of a (shape) float array along one axis, in place, as scipy.ndimage.
 * gaussian_filter1d: weights exp(-x^2 / (2 sigma^2)) for |x| <= (int)(truncate * sigma + 0.5),
 * normalised to sum 1, accumulated in double. mode 0: scipy 'reflect' (d c b a | a b c d);
 * mode 1: scipy 'constant' with cval 0. Returns false when out of memory. */
CD_INTERNAL bool cd_aug_gauss_axis(float *data, const int64_t shape[3], int axis, double sigma, double truncate,
                                   int mode);

/* The elastic displacement field of a (patch): 3 planes of prod(patch) floats, in voxels of the
 * patch grid (see draw.c for the definition). maxabs receives the largest |component| per axis.
 * Returns NULL when out of memory; free with free(). */
CD_INTERNAL float *cd_aug_elastic_field(const cd_aug_params *a, const int64_t patch[3], double maxabs[3]);

/* out[j] = n(first + j), j < n: the per-voxel standard normal noise field of key (see draw.c),
 * any start and length (n <= 0: nothing). */
CD_INTERNAL void cd_aug_noise_fill(uint64_t key, uint64_t first, int64_t n, float *out);

#endif
