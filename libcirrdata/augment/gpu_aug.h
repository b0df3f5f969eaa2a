/* The augmentation engine's Vulkan kernels (internal): the warp (gpu_spatial.c) and the intensity ops
 * (gpu_intensity.c), which cd_gpu_augment records into one command buffer. Each file's kernels are a
 * cd_vk_family of the runtime of their own, created in a context on their first use there: a warp
 * alone builds no intensity kernel and the intensity ops alone no warp. */
#ifndef CD_AUGMENT_GPU_AUG_H
#define CD_AUGMENT_GPU_AUG_H

#include "cirrdata/augment.h"
#include "gpu/gpu_impl.h"

/* ---- the intensity stage (gpu_intensity.c), also recorded after the warp by cd_gpu_augment ---- */

/* Ops a sample's intensity stage runs (bits of the first word of its record in the meta buffer). */
enum {
    CD_GPU_I_NOISE = 1,
    CD_GPU_I_BLUR = 2,
    CD_GPU_I_BRIGHTNESS = 4,
    CD_GPU_I_CONTRAST = 8,
    CD_GPU_I_LOWRES = 16,
    CD_GPU_I_GAMMA_INVERT = 32,
    CD_GPU_I_GAMMA = 64,
    CD_GPU_I_SCRATCH = CD_GPU_I_BLUR | CD_GPU_I_LOWRES,                         /* need a second image */
    CD_GPU_I_STATS = CD_GPU_I_CONTRAST | CD_GPU_I_GAMMA_INVERT | CD_GPU_I_GAMMA /* need reductions */
};

/* One sample's intensity ops, resolved from its cd_aug_params as cd_aug_apply_intensity resolves them. */
typedef struct cd_gpu_iplan {
    bool cpu;           /* parameters the kernels do not take (non-finite, blur radius > 1023): the reference runs it */
    uint32_t flags;     /* CD_GPU_I_* */
    uint32_t radius[3]; /* blur radius per axis; 0: that axis is not blurred */
    int64_t m[3];       /* low-resolution grid */
    uint64_t meta_words; /* its record and tables in the meta buffer */
} cd_gpu_iplan;
CD_INTERNAL void cd_gpu_iplan_make(const cd_aug_params *a, const int64_t patch[3], cd_gpu_iplan *p);
/* Bytes of the statistics buffer for `rows` rows (sample x channel) of npatch voxels. */
CD_INTERNAL uint64_t cd_gpu_istats_bytes(const cd_gpu_context *ctx, uint64_t rows, uint64_t npatch);

/* The intensity stage of one command buffer: ns images of (channels, patch) float32, back to back at
 * the start of `data`, followed (when some sample needs it) by a scratch image of the same size at
 * float offset `scratch`. meta: cd_gpu_ijob_pack's words; stats: cd_gpu_istats_bytes (all CD_VK_DEVICE). */
typedef struct cd_gpu_ijob {
    uint32_t ns, channels;
    int64_t patch[3];
    const cd_aug_params *const *params; /* ns each */
    const cd_gpu_iplan *const *plans;
    uint32_t ops; /* union of the plans' flags */
    cd_vk_range meta, data, stats;
    uint32_t scratch;
} cd_gpu_ijob;
CD_INTERNAL void cd_gpu_ijob_pack(const cd_gpu_ijob *j, uint32_t *meta);
/* Records the dispatches into cmd (barriers between dependent ones; the caller puts one before and
 * after). Returns the float offset in j->data where the result lies: 0 or j->scratch. */
CD_INTERNAL uint32_t cd_gpu_ijob_record(cd_gpu_context *ctx, cd_vk_cmd *cmd, const cd_gpu_ijob *j);
/* Creates the intensity kernels in ctx if needed (the context's lock held): cd_gpu_istats_bytes and
 * cd_gpu_ijob_record use them. */
CD_INTERNAL cd_status cd_gpu_intensity_ready(cd_gpu_context *ctx, cd_error *err);
/* The warp batch driver of cd_gpu_aug_spatial (gpu_spatial.c); with `intensity`, each sample's
 * intensity ops follow its warp in the same command buffer (cd_gpu_augment). `fn` names the caller
 * in messages. Takes the context's lock. */
CD_INTERNAL cd_status cd_gpu_warp_batch(cd_gpu_context *ctx, const cd_aug_params *params, int n,
                                        const cd_gpu_spatial_item *items, uint32_t channels, const int64_t patch[3],
                                        bool intensity, const char *fn, cd_error *err);

#endif
