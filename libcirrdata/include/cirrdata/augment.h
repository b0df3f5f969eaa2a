/* cirrdata/augment.h — data augmentation for training batches (CPU reference engine).
 *
 * A pipeline is a list of operations with probabilities and ranges, described in JSON
 * (schemas/augment.schema.json) or named: "nnunet" (the nnU-Net v2 default 3D set), "cirrhosisstage"
 * (the staging paper's 2D set: horizontal flip 0.3, vertical flip 0.3, rotation 10 degrees) and
 * "none". Randomness is resolved once per sample into a cd_aug_params value by cd_aug_draw: a pure
 * function of (pipeline, seed, epoch, sample index), drawn from Philox streams keyed by
 * (seed, epoch, sample, op), so results never depend on thread count or timing, and the Vulkan path
 * (later) can apply the very same parameters.
 *
 * Spatial operations (rotation, scaling, mirroring, elastic deformation, patch cropping) are fused
 * into ONE resampling pass: every output voxel maps to one source position through the combined
 * transform (plus the elastic displacement), sampled trilinearly for images and by nearest
 * neighbour for masks. Intensity operations then run in nnU-Net's order on the patch.
 *
 * Arrays are C-order (C, X, Y, Z) float32 images and (X, Y, Z) uint8 masks, as stored in shards.
 * Thread safety: pipelines are immutable after creation and may be shared by threads. */
#ifndef CIRRDATA_AUGMENT_H
#define CIRRDATA_AUGMENT_H

#include "cirrdata/api.h"
#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/gpu.h"
#include "cirrdata/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cd_aug_pipeline cd_aug_pipeline;

/* A built-in name ("nnunet", "cirrhosisstage", "none") or the path of a JSON pipeline file. */
CD_API cd_status cd_aug_pipeline_load(const char *name_or_path, cd_aug_pipeline **out, cd_error *err);
CD_API cd_status cd_aug_pipeline_parse(const char *json, const char *origin, cd_aug_pipeline **out, cd_error *err);
CD_API void cd_aug_pipeline_destroy(cd_aug_pipeline *p);
/* Canonical JSON with every default written (caller frees with free()). */
CD_API char *cd_aug_pipeline_to_json(const cd_aug_pipeline *p);
/* True for 2D pipelines (spatial ops act in the x-y plane only; z is untouched). */
CD_API bool cd_aug_pipeline_is_2d(const cd_aug_pipeline *p);

/* How samples are cut from records: by the training loader (cirrdata/loader.h) and by the augmented
 * copies of a conversion (cirrdata/convert.h), which equal its samples. */
typedef enum cd_loader_mode {
    CD_LOADER_VOLUME = 0, /* whole records (batch > 1 needs equal shapes, or patch = a fixed crop/pad) */
    CD_LOADER_PATCH,      /* fixed-size patches; a fraction centred on foreground */
    CD_LOADER_SLICE       /* 2D axial slices (z), all or only those containing mask */
} cd_loader_mode;

/* ==== Advanced API ====
 * The engine's per-sample steps (draw the parameters, the source box, the fused spatial pass, the
 * intensity ops) and their Vulkan kernels: what cirrdata/loader.h and the converter's augmented copies
 * are built from, for tools, benchmarks and tests that drive the engine directly.
 * Like zstd.h's ZSTD_STATIC_LINKING_ONLY section: these declarations may change in any release
 * (signatures, struct layouts); define CIRRDATA_ADVANCED_API before including this header to use
 * them. The library and its own tools, tests and benchmarks are built with it. */
#ifdef CIRRDATA_ADVANCED_API

/* Everything random about one sample, resolved. */
typedef struct cd_aug_params {
    /* Spatial: output voxel o (0-based in the patch) samples the source at
     *   src = center + matrix * (o - (patch - 1) / 2 + d(o))
     * where d(o) is the elastic displacement (0 unless elastic), defined on the patch grid and
     * applied before rotation and scaling, as nnU-Net / batchgenerators do.
     * matrix = R * S * F: R = Rz * Ry * Rx (angles in `rotation`), S = diag(scale) (z unscaled when
     * planar), F = diag(mirror ? -1 : 1); the identity when none applies. Images: trilinear with
     * zero padding (scipy map_coordinates order 1 mode 'grid-constant', torch grid_sample
     * padding_mode 'zeros'); masks: nearest, index floor(src + 0.5). */
    double matrix[3][3];
    double center[3]; /* source voxel coordinates of the patch centre */
    bool planar;      /* from a 2D pipeline: z is never rotated, scaled, displaced,
                                    blurred or downsampled */
    bool elastic;
    double elastic_alpha; /* displacement magnitude, voxels */
    double elastic_sigma; /* smoothness of the displacement field, voxels */
    uint64_t elastic_key; /* Philox key of the displacement noise */
    /* Intensity ops, applied in this order when their flag is set. Every channel gets the same
     * values (nnU-Net v2 draws brightness, contrast and gamma per channel: identical for the
     * single-channel MRI this library serves). */
    bool noise;
    double noise_sigma; /* standard deviation (nnU-Net's "noise_variance" is used as one) */
    uint64_t noise_key; /* Philox key of the per-voxel noise (same field for all channels) */
    bool blur;
    double blur_sigma[3]; /* per axis, voxels (0 = no blur on that axis) */
    double blur_truncate; /* kernel radius (int)(truncate * sigma + 0.5), scipy 'reflect' */
    bool brightness;
    double brightness_factor; /* multiplicative */
    bool contrast;
    double contrast_factor; /* about the mean, clipped to the patch's original range */
    bool lowres;
    double lowres_zoom;        /* down by nearest to zoom * shape, back up trilinearly */
    bool gamma_invert;         /* the "inverted gamma" step (nnU-Net p = 0.1), applied before gamma */
    double gamma_invert_value; /* its gamma: the image is negated, gamma'd as below, negated back */
    bool gamma;
    double gamma_value; /* on the min-max range, mean and std restored (nnU-Net) */
    bool mirror[3];     /* already folded into matrix; kept for metadata/audit */
    double rotation[3]; /* radians, about x, y, z; already in matrix */
    double scale;       /* already in matrix */
} cd_aug_params;

/* Draws the parameters of one sample. patch: the output size; center: the source voxel the patch
 * is centred on (chosen by the sampler). */
CD_API void cd_aug_draw(const cd_aug_pipeline *p, uint64_t seed, uint64_t epoch, uint64_t sample,
                        const int64_t patch[3], const double center[3], cd_aug_params *out);

/* The box of source voxels [lo, hi) the spatial transform of a patch can touch (trilinear support
 * included; with elastic deformation the displacement field is generated to bound it exactly, which
 * costs about as much as the deformation itself). Not clipped to the source: the caller reads the
 * intersection with the source and leaves the rest 0. Used to read only the chunks needed. */
CD_API void cd_aug_source_box(const cd_aug_params *a, const int64_t patch[3], int64_t lo[3], int64_t hi[3]);

/* The fused spatial pass. src: C-order (channels, box) float32 image of the box [box_lo, box_lo +
 * box_shape) of the source; mask_src: (box) uint8 or NULL. Writes out_img (channels, patch) and
 * out_mask (patch) when non-NULL. Positions outside the box (or the source) read 0. Single-threaded;
 * calls on different outputs may run concurrently. */
CD_API cd_status cd_aug_apply_spatial(const cd_aug_params *a, const float *src, const uint8_t *mask_src,
                                      uint32_t channels, const int64_t box_lo[3], const int64_t box_shape[3],
                                      const int64_t patch[3], float *out_img, uint8_t *out_mask, cd_error *err);

/* The intensity ops, in place on a (channels, patch) image. */
CD_API cd_status cd_aug_apply_intensity(const cd_aug_params *a, float *img, uint32_t channels, const int64_t patch[3],
                                        cd_error *err);

/* The parameters as a JSON object (for record metadata and audits); caller frees with free(). */
CD_API char *cd_aug_params_to_json(const cd_aug_params *a);

/* ---- the same ops on a Vulkan device (cirrdata/gpu.h gives the context) ---- */

/* One sample of a batch: the arguments of cd_aug_apply_spatial that differ between samples. */
typedef struct cd_gpu_spatial_item {
    const float *src;        /* (channels, box) float32, C order; may be NULL when out_img is NULL */
    const uint8_t *mask_src; /* (box) uint8 or NULL */
    int64_t box_lo[3];       /* the box of the source that src holds */
    int64_t box_shape[3];
    float *out_img;    /* (channels, patch) or NULL */
    uint8_t *out_mask; /* (patch) or NULL */
} cd_gpu_spatial_item;

/* The fused spatial pass for n samples (params[i] and items[i]), all with the same channel count and
 * patch size: exactly cd_aug_apply_spatial for each, elastic deformation included (its displacement
 * field is computed on the host, as in the CPU path, and applied on the device). The caller keeps
 * ownership of every array; they are read and written during the call only. A batch that exceeds the
 * device's limits is split into several submissions; a single sample too large for the device
 * returns CD_ERR_LIMIT, memory the device cannot give CD_ERR_NOMEM, a lost device CD_ERR_IO (the
 * context is then unusable: destroy it and create another). On error the outputs are undefined. */
CD_API cd_status cd_gpu_aug_spatial(cd_gpu_context *ctx, const cd_aug_params *params, int n,
                                    const cd_gpu_spatial_item *items, uint32_t channels, const int64_t patch[3],
                                    cd_error *err);

/* The intensity ops for n samples: exactly cd_aug_apply_intensity(&params[i], images[i], channels,
 * patch) for each, in place on the (channels, patch) float32 images, in one command buffer per batch
 * (noise from the same Philox stream, blur, brightness, contrast, low resolution, inverted gamma,
 * gamma, in that order). Images agree with the reference to about 1e-6 of the data range (float where
 * it accumulates statistics in double; the tests assert 1e-4). Samples with parameters the kernels
 * do not take (non-finite values, a blur radius over 1023 voxels) run through the reference
 * (counted in cd_gpu_timings.cpu_fallback). Limits, splitting and errors as cd_gpu_aug_spatial. */
CD_API cd_status cd_gpu_aug_intensity(cd_gpu_context *ctx, const cd_aug_params *params, int n, float *const *images,
                                      uint32_t channels, const int64_t patch[3], cd_error *err);

/* The whole augmentation of n samples: cd_aug_apply_spatial then cd_aug_apply_intensity for each
 * (items as for cd_gpu_aug_spatial: out_img receives the augmented image, out_mask the warped mask),
 * the warp and the intensity ops in ONE command buffer per batch, the warped images staying on the
 * device between them. A sample that either part cannot run on the device runs entirely through the
 * reference. This is what a training loader calls with its per-worker batch: params from cd_aug_draw,
 * items from the source boxes it read (cd_aug_source_box). Limits, splitting and errors as
 * cd_gpu_aug_spatial. */
CD_API cd_status cd_gpu_augment(cd_gpu_context *ctx, const cd_aug_params *params, int n,
                                const cd_gpu_spatial_item *items, uint32_t channels, const int64_t patch[3],
                                cd_error *err);

#endif /* CIRRDATA_ADVANCED_API */

#ifdef __cplusplus
}
#endif
#endif
