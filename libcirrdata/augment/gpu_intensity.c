/* cd_gpu_aug_intensity and cd_gpu_augment: the intensity augmentations on the device, the Vulkan twin
 * of cd_aug_apply_intensity (augment/intensity.c), alone or after the spatial warp in the same
 * command buffer.
 *
 * A batch's images lie back to back in one device range (row r = sample r / C, channel r % C, at
 * r * npatch floats), with a scratch image of the same size after it when blur or low resolution
 * needs one. Every op is one dispatch over all rows (one per axis for the blur, two for the low
 * resolution, two per statistics reduction); samples that do not draw an op skip it inside the
 * kernel, so a batch records each op once, only when some sample needs it, with a barrier between
 * dependent dispatches and no others. The kernels bind the same three buffers (meta, data, stats)
 * and take their offsets from push constants: a kernel's one descriptor set serves every dispatch
 * of the command buffer, also the ping-pong of the blur.
 *
 * The host resolves what the reference resolves per sample before touching voxels: blur weights
 * (double, normalised, stored as float), the low-resolution index and weight tables (the reference's
 * own float arithmetic, so nearest indices agree exactly), the noise key and the factors; statistics
 * (mean, sd, min, max) are reduced on the device in float (aug_reduce.comp: Welford + Chan merges).
 * Agreement with the reference: ~1e-6 of the data range (float vs double accumulation), asserted at
 * 1e-4 by tests/unit/test_gpu_intensity.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "augment/augment_impl.h"
#include "augment/gpu_aug.h"

enum { K_NOISE = 0, K_BLUR, K_SCALE, K_REDUCE, K_CONTRAST, K_LOWRES, K_GAMMA, NK };
enum { SAMPLE_WORDS = 32, NBIND = 3, MAX_RADIUS = 1023, REDUCE_LOCAL = 256, MAX_PARTS = 1024 };

/* The push constants of every intensity kernel (shaders/include/aug_intensity.glsl declares the same
 * block, and the op flags of gpu_aug.h). */
typedef struct ipush {
    uint32_t groups_x, count, npatch, channels, nx, ny, nz, cur, oth, op, mode, slot, parts, stats, rows, pad;
} ipush;

/* The intensity kernels of a context (a cd_vk_family of the runtime), one per op file. */
typedef struct ikernels {
    cd_vk_kernel k[NK];
} ikernels;

static cd_status ikernels_init(cd_gpu_context *ctx, void *state, cd_error *err) {
    cd_vk_kernel *ik = ((ikernels *)state)->k;
    static const cd_shader_id src[NK] = {CD_SHADER_AUG_NOISE,  CD_SHADER_AUG_BLUR,     CD_SHADER_AUG_SCALE,
                                         CD_SHADER_AUG_REDUCE, CD_SHADER_AUG_CONTRAST, CD_SHADER_AUG_LOWRES,
                                         CD_SHADER_AUG_GAMMA};
    const VkPhysicalDeviceLimits *l = cd_vk_limits(ctx);
    if (sizeof(ipush) > l->maxPushConstantsSize)
        return cd_fail(err, CD_ERR_UNSUPPORTED, "Vulkan: %s allows too few push constants", cd_vk_name(ctx));
    uint32_t lim = l->maxComputeWorkGroupSize[0] < l->maxComputeWorkGroupInvocations
                       ? l->maxComputeWorkGroupSize[0]
                       : l->maxComputeWorkGroupInvocations;
    for (int k = 0; k < NK; k++) {
        uint32_t ls = k == K_REDUCE ? REDUCE_LOCAL : 64; /* the reduction's shared arrays hold 256 */
        if (ls > lim) ls = lim;
        cd_status st = cd_vk_kernel_create(ctx, &ik[k], src[k], NBIND, sizeof(ipush), ls, err);
        if (st != CD_OK) return st;
    }
    return CD_OK;
}

static void ikernels_destroy(cd_gpu_context *ctx, void *state) {
    for (int k = 0; k < NK; k++) cd_vk_kernel_destroy(ctx, &((ikernels *)state)->k[k]);
}

static const cd_vk_family intensity_family = {"augmentation: intensity", sizeof(ikernels), ikernels_init,
                                              ikernels_destroy};

cd_status cd_gpu_intensity_ready(cd_gpu_context *ctx, cd_error *err) {
    void *state;
    return cd_vk_family_state(ctx, &intensity_family, &state, err);
}

/* The kernels of ctx, after cd_gpu_intensity_ready succeeded. */
static cd_vk_kernel *IK(const cd_gpu_context *ctx) {
    return ((ikernels *)cd_vk_family_find(ctx, &intensity_family))->k;
}

/* ---------------------------------------------------------------- per-sample plans */

void cd_gpu_iplan_make(const cd_aug_params *a, const int64_t patch[3], cd_gpu_iplan *p) {
    memset(p, 0, sizeof *p);
    bool ok = true;
    p->meta_words = SAMPLE_WORDS;
    if (a->noise && a->noise_sigma != 0) {
        p->flags |= CD_GPU_I_NOISE;
        ok &= isfinite(a->noise_sigma) != 0;
    }
    if (a->blur)
        for (int ax = 0; ax < 3; ax++) {
            /* the axes cd_aug_apply_intensity / cd_aug_gauss_axis blur */
            if ((a->planar && ax == 2) || patch[ax] <= 1 || !(a->blur_sigma[ax] > 0)) continue;
            const double r = a->blur_truncate * a->blur_sigma[ax] + 0.5;
            if (!(r < MAX_RADIUS + 1)) {
                ok = false;
                continue;
            }
            if (r >= 1) {
                p->radius[ax] = (uint32_t)r;
                p->flags |= CD_GPU_I_BLUR;
                p->meta_words += 2 * (uint64_t)p->radius[ax] + 1;
            }
        }
    if (a->brightness) {
        p->flags |= CD_GPU_I_BRIGHTNESS;
        ok &= isfinite(a->brightness_factor) != 0;
    }
    if (a->contrast) {
        p->flags |= CD_GPU_I_CONTRAST;
        ok &= isfinite(a->contrast_factor) != 0;
    }
    if (a->lowres) {
        p->flags |= CD_GPU_I_LOWRES;
        if (!isfinite(a->lowres_zoom))
            ok = false;
        else
            for (int ax = 0; ax < 3; ax++) {
                const double v =
                    (a->planar && ax == 2) ? (double)patch[ax] : nearbyint((double)patch[ax] * a->lowres_zoom);
                p->m[ax] = v < 1 ? 1 : v > (double)patch[ax] ? patch[ax] : (int64_t)v;
                p->meta_words += (uint64_t)p->m[ax] + 3 * (uint64_t)patch[ax];
            }
    }
    if (a->gamma_invert) {
        p->flags |= CD_GPU_I_GAMMA_INVERT;
        ok &= isfinite(a->gamma_invert_value) != 0;
    }
    if (a->gamma) {
        p->flags |= CD_GPU_I_GAMMA;
        ok &= isfinite(a->gamma_value) != 0;
    }
    p->cpu = !ok;
}

static uint32_t reduce_parts(const cd_gpu_context *ctx, uint64_t npatch) {
    const uint64_t per = (uint64_t)IK(ctx)[K_REDUCE].local_size * 8; /* about 8 voxels per invocation */
    const uint64_t parts = (npatch + per - 1) / per;
    return (uint32_t)(parts < 1 ? 1 : parts > MAX_PARTS ? MAX_PARTS : parts);
}

uint64_t cd_gpu_istats_bytes(const cd_gpu_context *ctx, uint64_t rows, uint64_t npatch) {
    return rows * ((uint64_t)reduce_parts(ctx, npatch) * 5 + 2 * 4) * 4;
}

static uint32_t fbits(double v) {
    const float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

void cd_gpu_ijob_pack(const cd_gpu_ijob *j, uint32_t *meta) {
    const int64_t *n = j->patch;
    uint64_t t = (uint64_t)j->ns * SAMPLE_WORDS; /* tables follow the records */
    for (uint32_t s = 0; s < j->ns; s++) {
        const cd_aug_params *a = j->params[s];
        const cd_gpu_iplan *p = j->plans[s];
        uint32_t *w = meta + (size_t)s * SAMPLE_WORDS;
        memset(w, 0, SAMPLE_WORDS * 4);
        w[0] = p->flags;
        w[1] = (uint32_t)a->noise_key;
        w[2] = (uint32_t)(a->noise_key >> 32);
        w[3] = fbits(a->noise_sigma);
        w[4] = fbits(a->brightness_factor);
        w[5] = fbits(a->contrast_factor);
        w[6] = fbits(a->gamma_invert_value);
        w[7] = fbits(a->gamma_value);
        if (p->flags & CD_GPU_I_BLUR)
            for (int ax = 0; ax < 3; ax++) {
                const int64_t r = p->radius[ax];
                w[17 + ax] = (uint32_t)r;
                if (!r) continue;
                w[14 + ax] = (uint32_t)t;
                /* cd_aug_gauss_axis's weights, in double, normalised, then rounded to float */
                double wd[2 * MAX_RADIUS + 1], sum = 0, s2 = a->blur_sigma[ax] * a->blur_sigma[ax];
                for (int64_t k = -r; k <= r; k++) sum += wd[k + r] = exp(-0.5 / s2 * (double)(k * k));
                for (int64_t k = 0; k <= 2 * r; k++) meta[t + (uint64_t)k] = fbits(wd[k] / sum);
                t += 2 * (uint64_t)r + 1;
            }
        if (p->flags & CD_GPU_I_LOWRES)
            for (int ax = 0; ax < 3; ax++) {
                /* lowres_channel's tables, computed by the same float expressions */
                const int64_t m = p->m[ax];
                w[8 + ax] = (uint32_t)m;
                w[11 + ax] = (uint32_t)t;
                uint32_t *idx = meta + t, *i0 = idx + m, *i1 = i0 + n[ax], *l1 = i1 + n[ax];
                const float sd = (float)n[ax] / (float)m, su = (float)m / (float)n[ax];
                for (int64_t o = 0; o < m; o++) {
                    const int64_t s_ = (int64_t)floorf(((float)o + 0.5f) * sd);
                    idx[o] = (uint32_t)(s_ < n[ax] - 1 ? s_ : n[ax] - 1);
                }
                for (int64_t o = 0; o < n[ax]; o++) {
                    float sv = su * ((float)o + 0.5f) - 0.5f;
                    if (sv < 0) sv = 0;
                    const int64_t k = (int64_t)sv;
                    i0[o] = (uint32_t)k;
                    i1[o] = (uint32_t)(k < m - 1 ? k + 1 : k);
                    const float l = sv - (float)k;
                    memcpy(&l1[o], &l, 4);
                }
                t += (uint64_t)m + 3 * (uint64_t)n[ax];
            }
    }
}

/* ---------------------------------------------------------------- recording */

static void bind(cd_vk_cmd *cmd, const cd_vk_kernel *k, const ipush *pc) {
    cd_vk_cmd_bind(cmd, k, VK_NULL_HANDLE, VK_NULL_HANDLE);
    cd_vk_cmd_push(cmd, k, pc);
}

/* A dispatch of `per_row` invocations for each of gz rows: a 2D grid of workgroups per row when one
 * row of groups would exceed the device's limit along x. */
static void dispatch_rows(cd_vk_cmd *cmd, const cd_vk_kernel *k, ipush *pc, uint64_t per_row, uint32_t gz) {
    const uint64_t groups = (per_row + k->local_size - 1) / k->local_size;
    const uint32_t maxx = cd_vk_limits(cmd->ctx)->maxComputeWorkGroupCount[0];
    const uint32_t gx = (uint32_t)(groups < maxx ? groups : maxx);
    pc->groups_x = gx;
    pc->count = (uint32_t)per_row;
    bind(cmd, k, pc);
    cd_vk_cmd_dispatch(cmd, gx, (uint32_t)((groups + gx - 1) / gx), gz);
}

static void compute_barrier(cd_vk_cmd *cmd) {
    cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
}

/* Statistics of the rows of samples with `flag` into stats slot `slot`: two dependent dispatches. */
static void reduce(cd_vk_cmd *cmd, const cd_vk_kernel *ik, ipush pc, uint32_t flag, uint32_t slot) {
    const cd_vk_kernel *k = &ik[K_REDUCE];
    pc.op = flag;
    pc.slot = slot;
    pc.mode = 0;
    bind(cmd, k, &pc);
    cd_vk_cmd_dispatch(cmd, pc.parts, 1, pc.rows);
    compute_barrier(cmd);
    pc.mode = 1;
    bind(cmd, k, &pc);
    cd_vk_cmd_dispatch(cmd, 1, 1, pc.rows);
}

static void gamma_step(cd_vk_cmd *cmd, const cd_vk_kernel *ik, ipush pc, uint32_t flag) {
    reduce(cmd, ik, pc, flag, 0);
    compute_barrier(cmd);
    pc.op = flag;
    pc.mode = 0;
    dispatch_rows(cmd, &ik[K_GAMMA], &pc, pc.npatch, pc.rows);
    compute_barrier(cmd);
    reduce(cmd, ik, pc, flag, 1);
    compute_barrier(cmd);
    pc.op = flag;
    pc.mode = 1;
    dispatch_rows(cmd, &ik[K_GAMMA], &pc, pc.npatch, pc.rows);
}

uint32_t cd_gpu_ijob_record(cd_gpu_context *ctx, cd_vk_cmd *cmd, const cd_gpu_ijob *j) {
    if (!j->ops || !j->ns) return 0;
    cd_vk_kernel *ik = IK(ctx);
    const cd_vk_range ranges[NBIND] = {j->meta, j->data, j->stats};
    for (int k = 0; k < NK; k++) cd_vk_kernel_bind(ctx, &ik[k], ranges);
    const uint64_t npatch = (uint64_t)(j->patch[0] * j->patch[1] * j->patch[2]);
    ipush pc = {.npatch = (uint32_t)npatch,
                .channels = j->channels,
                .nx = (uint32_t)j->patch[0],
                .ny = (uint32_t)j->patch[1],
                .nz = (uint32_t)j->patch[2],
                .cur = 0,
                .oth = j->scratch,
                .parts = reduce_parts(ctx, npatch),
                .stats = (uint32_t)(j->ns * j->channels * reduce_parts(ctx, npatch) * 5),
                .rows = j->ns * j->channels};
    bool first = true;
#define STEP()                                                                                                         \
    do {                                                                                                               \
        if (!first) compute_barrier(cmd);                                                                              \
        first = false;                                                                                                 \
    } while (0)
    if (j->ops & CD_GPU_I_NOISE) {
        STEP();
        dispatch_rows(cmd, &ik[K_NOISE], &pc, (npatch + 3) / 4, j->ns);
    }
    if (j->ops & CD_GPU_I_BLUR)
        for (uint32_t ax = 0; ax < 3; ax++) {
            bool any = false;
            for (uint32_t s = 0; s < j->ns; s++) any |= j->plans[s]->radius[ax] != 0;
            if (!any) continue;
            STEP();
            pc.op = ax;
            dispatch_rows(cmd, &ik[K_BLUR], &pc, npatch, pc.rows);
            const uint32_t t = pc.cur;
            pc.cur = pc.oth;
            pc.oth = t;
        }
    if (j->ops & CD_GPU_I_BRIGHTNESS) {
        STEP();
        dispatch_rows(cmd, &ik[K_SCALE], &pc, npatch, pc.rows);
    }
    if (j->ops & CD_GPU_I_CONTRAST) {
        STEP();
        reduce(cmd, ik, pc, CD_GPU_I_CONTRAST, 0);
        compute_barrier(cmd);
        pc.slot = 0;
        dispatch_rows(cmd, &ik[K_CONTRAST], &pc, npatch, pc.rows);
    }
    if (j->ops & CD_GPU_I_LOWRES) {
        STEP();
        pc.mode = 0;
        dispatch_rows(cmd, &ik[K_LOWRES], &pc, npatch, pc.rows);
        compute_barrier(cmd);
        pc.mode = 1;
        dispatch_rows(cmd, &ik[K_LOWRES], &pc, npatch, pc.rows);
    }
    if (j->ops & CD_GPU_I_GAMMA_INVERT) {
        STEP();
        gamma_step(cmd, ik, pc, CD_GPU_I_GAMMA_INVERT);
    }
    if (j->ops & CD_GPU_I_GAMMA) {
        STEP();
        gamma_step(cmd, ik, pc, CD_GPU_I_GAMMA);
    }
#undef STEP
    return pc.cur;
}

/* ---------------------------------------------------------------- cd_gpu_aug_intensity */

/* Device bytes of samples [i0, i1) (the GPU ones): meta, image, scratch, stats (padded). */
static void igroup_sizes(const cd_gpu_context *ctx, const cd_gpu_iplan *pl, int i0, int i1, uint32_t channels,
                         uint64_t npatch, VkDeviceSize sz[4], uint32_t *ns) {
    uint64_t meta = 0, rows = 0;
    uint32_t ops = 0;
    *ns = 0;
    for (int i = i0; i < i1; i++) {
        if (pl[i].cpu || !pl[i].flags) continue;
        meta += pl[i].meta_words * 4;
        rows += channels;
        ops |= pl[i].flags;
        (*ns)++;
    }
    sz[0] = cd_vk_padded(ctx, meta);
    sz[1] = cd_vk_padded(ctx, rows * npatch * 4);
    sz[2] = (ops & CD_GPU_I_SCRATCH) ? sz[1] : 0;
    sz[3] = cd_vk_padded(ctx, (ops & CD_GPU_I_STATS) ? cd_gpu_istats_bytes(ctx, rows, npatch) : 0);
}

static cd_status irun_group(cd_gpu_context *ctx, const cd_aug_params *params, float *const *images,
                            const cd_gpu_iplan *pl, int i0, int i1, uint32_t channels, const int64_t patch[3],
                            cd_error *err) {
    const uint64_t npatch = (uint64_t)(patch[0] * patch[1] * patch[2]);
    VkDeviceSize sz[4];
    uint32_t ns;
    igroup_sizes(ctx, pl, i0, i1, channels, npatch, sz, &ns);
    if (ns == 0) return CD_OK;
    const VkDeviceSize in_bytes = sz[0] + sz[1];
    const bool shared = cd_gpu_shared_memory(ctx);
    VkDeviceSize need[CD_VK_NKINDS] = {sz[0] + sz[1] + sz[2] + sz[3], shared ? 0 : in_bytes, shared ? 0 : sz[1]};
    cd_status st = cd_vk_arenas_reserve(ctx, need, err);
    if (st != CD_OK) return st;
    cd_vk_range meta = cd_vk_alloc(ctx, CD_VK_DEVICE, sz[0]);
    cd_vk_range img = cd_vk_alloc(ctx, CD_VK_DEVICE, sz[1]);
    cd_vk_range data = img;
    if (sz[2]) data.size += cd_vk_alloc(ctx, CD_VK_DEVICE, sz[2]).size; /* contiguous: [image | scratch] */
    cd_vk_range stats = cd_vk_alloc(ctx, CD_VK_DEVICE, sz[3]);
    cd_vk_range h_meta = meta, h_img = img, h_out = img;
    if (!shared) {
        h_meta = cd_vk_alloc(ctx, CD_VK_UPLOAD, sz[0]);
        h_img = cd_vk_alloc(ctx, CD_VK_UPLOAD, sz[1]);
        h_out = cd_vk_alloc(ctx, CD_VK_READBACK, sz[1]);
    }
    const cd_aug_params **pp = malloc(sizeof *pp * ns);
    const cd_gpu_iplan **pq = malloc(sizeof *pq * ns);
    if (!pp || !pq) {
        free(pp);
        free(pq);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    cd_gpu_ijob job = {.ns = ns,
                       .channels = channels,
                       .params = pp,
                       .plans = pq,
                       .meta = meta,
                       .data = data,
                       .stats = stats,
                       .scratch = (uint32_t)(sz[1] / 4)};
    memcpy(job.patch, patch, sizeof job.patch);
    float *hi = cd_vk_host(ctx, h_img);
    const size_t row_bytes = (size_t)(npatch * channels) * sizeof(float);
    uint32_t s = 0;
    for (int i = i0; i < i1; i++) {
        if (pl[i].cpu || !pl[i].flags) continue;
        pp[s] = &params[i];
        pq[s] = &pl[i];
        job.ops |= pl[i].flags;
        memcpy(hi + (size_t)s * npatch * channels, images[i], row_bytes);
        s++;
    }
    cd_gpu_ijob_pack(&job, cd_vk_host(ctx, h_meta));

    cd_vk_cmd *cmd = cd_vk_batch(ctx);
    st = cd_vk_cmd_begin(cmd, false, err);
    if (st == CD_OK) {
        if (!shared) {
            /* meta and image are adjacent in both arenas: one region */
            VkBufferCopy region = {.srcOffset = h_meta.offset, .dstOffset = meta.offset, .size = in_bytes};
            cd_vk_cmd_copy(cmd, cd_vk_arena_buffer(ctx, CD_VK_UPLOAD), cd_vk_arena_buffer(ctx, CD_VK_DEVICE), 1,
                           &region);
            cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                              VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                              VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
        } /* shared memory: the submission makes the host's writes visible */
        cd_vk_cmd_timestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0);
        const uint32_t res = cd_gpu_ijob_record(ctx, cmd, &job);
        cd_vk_cmd_timestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 1);
        if (!shared) {
            cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                              VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
            VkBufferCopy region = {
                .srcOffset = img.offset + (VkDeviceSize)res * 4, .dstOffset = h_out.offset, .size = sz[1]};
            cd_vk_cmd_copy(cmd, cd_vk_arena_buffer(ctx, CD_VK_DEVICE), cd_vk_arena_buffer(ctx, CD_VK_READBACK), 1,
                           &region);
            cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                              VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
        } else {
            h_out.offset += (VkDeviceSize)res * 4;
            cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                              VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
        }
        double kms = 0;
        st = cd_vk_cmd_submit_wait(cmd, "a batch", &kms, err);
        if (st == CD_OK) {
            cd_vk_count_batch(ctx, kms, in_bytes, sz[1]);
            const float *out = cd_vk_host(ctx, h_out);
            s = 0;
            for (int i = i0; i < i1; i++) {
                if (pl[i].cpu || !pl[i].flags) continue;
                memcpy(images[i], out + (size_t)s * npatch * channels, row_bytes);
                s++;
            }
        }
    }
    free(pp);
    free(pq);
    return st;
}

static cd_status intensity_locked(cd_gpu_context *ctx, const cd_aug_params *params, int n, float *const *images,
                                  uint32_t channels, const int64_t patch[3], cd_gpu_iplan *pl, cd_error *err) {
    const uint64_t npatch = (uint64_t)(patch[0] * patch[1] * patch[2]);
    const VkPhysicalDeviceLimits *lim = cd_vk_limits(ctx);
    const bool shared = cd_gpu_shared_memory(ctx);
    for (int i = 0; i < n; i++) {
        if (!images[i]) return cd_fail(err, CD_ERR_ARG, "cd_gpu_aug_intensity: image %d is NULL", i);
        cd_gpu_iplan_make(&params[i], patch, &pl[i]);
        if (pl[i].cpu) {
            cd_status st = cd_aug_apply_intensity(&params[i], images[i], channels, patch, err);
            if (st != CD_OK) return st;
            cd_vk_count_fallback(ctx, 1);
        }
    }
    const uint64_t budget = cd_vk_batch_budget(ctx);
    const uint64_t range_max = lim->maxStorageBufferRange;
    int i0 = 0;
    while (i0 < n) {
        int i1 = i0;
        while (i1 < n) {
            VkDeviceSize sz[4];
            uint32_t ns;
            igroup_sizes(ctx, pl, i0, i1 + 1, channels, npatch, sz, &ns);
            const uint64_t total = sz[0] + sz[1] + sz[2] + sz[3];
            const bool fits = sz[0] <= range_max && sz[1] + sz[2] <= range_max && sz[3] <= range_max &&
                              total <= budget && (uint64_t)ns * channels <= lim->maxComputeWorkGroupCount[2];
            if (!fits) {
                if (i1 == i0) {
                    char b1[32], b2[32];
                    if (sz[1] + sz[2] > range_max || sz[3] > range_max || sz[0] > range_max ||
                        channels > lim->maxComputeWorkGroupCount[2])
                        return cd_fail(
                            err, CD_ERR_LIMIT,
                            "cd_gpu_aug_intensity: image %d (%s with its scratch copy) is more than %s can bind "
                            "(maxStorageBufferRange %s)",
                            i0, cd_format_bytes(sz[1] + sz[2], b1, sizeof b1), cd_vk_name(ctx),
                            cd_format_bytes(range_max, b2, sizeof b2));
                    return cd_fail(err, CD_ERR_NOMEM, "GPU memory: image %d needs %s, more than the %s available on %s",
                                   i0, cd_format_bytes(total * (shared ? 1 : 2), b1, sizeof b1),
                                   cd_format_bytes(budget * (shared ? 1 : 2), b2, sizeof b2), cd_vk_name(ctx));
                }
                break;
            }
            i1++;
        }
        cd_status st = irun_group(ctx, params, images, pl, i0, i1, channels, patch, err);
        if (st != CD_OK) return st;
        i0 = i1;
    }
    return CD_OK;
}

/* The checks both public calls share. */
static cd_status check_args(const char *fn, const cd_gpu_context *ctx, const cd_aug_params *params, int n,
                            const void *items, uint32_t channels, const int64_t patch[3], cd_error *err) {
    if (!ctx || !patch || n < 0 || (n > 0 && (!params || !items)))
        return cd_fail(err, CD_ERR_ARG, "%s: NULL argument", fn);
    for (int k = 0; k < 3; k++)
        if (patch[k] < 1 || patch[k] > (1 << 20))
            return cd_fail(err, CD_ERR_ARG, "%s: bad patch size %lld", fn, (long long)patch[k]);
    if ((uint64_t)(patch[0] * patch[1] * patch[2]) >= (UINT64_C(1) << 32) / 6)
        return cd_fail(err, CD_ERR_LIMIT, "%s: patch of %lld x %lld x %lld voxels is too large", fn,
                       (long long)patch[0], (long long)patch[1], (long long)patch[2]);
    if (channels > 4096) return cd_fail(err, CD_ERR_ARG, "%s: %u channels", fn, channels);
    return CD_OK;
}

cd_status cd_gpu_aug_intensity(cd_gpu_context *ctx, const cd_aug_params *params, int n, float *const *images,
                               uint32_t channels, const int64_t patch[3], cd_error *err) {
    cd_status st = check_args("cd_gpu_aug_intensity", ctx, params, n, images, channels, patch, err);
    if (st != CD_OK || n == 0 || channels == 0) return st;
    cd_gpu_iplan *pl = calloc((size_t)n, sizeof *pl);
    if (!pl) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    cd_vk_call_begin(ctx);
    const double t0 = cd_now_ms();
    st = cd_vk_usable(ctx, err);
    if (st == CD_OK) st = cd_gpu_intensity_ready(ctx, err);
    if (st == CD_OK) st = intensity_locked(ctx, params, n, images, channels, patch, pl, err);
    cd_vk_call_end(ctx, t0);
    free(pl);
    return st;
}

cd_status cd_gpu_augment(cd_gpu_context *ctx, const cd_aug_params *params, int n, const cd_gpu_spatial_item *items,
                         uint32_t channels, const int64_t patch[3], cd_error *err) {
    cd_status st = check_args("cd_gpu_augment", ctx, params, n, items, channels, patch, err);
    if (st != CD_OK || n == 0) return st;
    return cd_gpu_warp_batch(ctx, params, n, items, channels, patch, true, "cd_gpu_augment", err);
}
