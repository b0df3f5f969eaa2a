/* cd_gpu_aug_spatial: the fused spatial augmentation warp on the device (shaders/aug_spatial.comp),
 * the Vulkan twin of cd_aug_apply_spatial (augment/spatial.c).
 *
 * The host resolves, per sample, what the reference resolves per row: the 32.32 fixed-point
 * position of the row's first voxel (rounded from the same double expression) and the per-voxel step
 * along z; for elastic samples also the displacement M d(o) per voxel, rounded to 32.32 (the field
 * itself is the reference's, computed on the host). The device adds them exactly, so positions agree
 * with the reference to < 1e-7 voxel (bit for bit on every row the reference runs in fixed point:
 * all but elastic samples', including rows that cross the box edge).
 *
 * One batch = one command buffer: [copy in ->] dispatch [-> copy out], with one barrier at each
 * arrow (none between samples: one dispatch covers them all, samples along the grid's z). Samples
 * whose transform reaches beyond the fixed-point range (|position| >= 2^30 voxels) or holds NaN or
 * infinity run on the host through the reference instead.
 *
 * cd_gpu_augment (aug_intensity.c) runs the same batches with the intensity stage recorded after the
 * dispatch (cd_gpu_ijob_record): the warped images stay on the device, followed by a scratch image,
 * and only the final images (wherever the ping-pong left them) are read back. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "augment/augment_impl.h"
#include "augment/gpu_aug.h"

enum { SAMPLE_WORDS = 20, ROW_WORDS = 6, EL_WORDS = 6, NBIND = 7 };
/* device ranges of the fused intensity stage, after the warp's bindings: meta (an input), the scratch
 * image (right after the output image: the stage's data binding spans both) and the statistics */
enum { X_META = NBIND, X_SCRATCH, X_STATS, NRANGES };
enum { FLAG_IMAGE = 1, FLAG_MASK = 2, FLAG_ELASTIC = 4 };

typedef struct warp_push {
    uint32_t pz, npatch, channels, nquads, groups_x;
} warp_push;

/* The warp of a context: a cd_vk_family of the runtime (state: one cd_vk_kernel), created on its first
 * use there. */
static cd_status warp_init(cd_gpu_context *ctx, void *warp, cd_error *err) {
    uint32_t ls = 64;
    const VkPhysicalDeviceLimits *l = cd_vk_limits(ctx);
    if (ls > l->maxComputeWorkGroupSize[0]) ls = l->maxComputeWorkGroupSize[0];
    if (ls > l->maxComputeWorkGroupInvocations) ls = l->maxComputeWorkGroupInvocations;
    if (sizeof(warp_push) > l->maxPushConstantsSize)
        return cd_fail(err, CD_ERR_UNSUPPORTED, "Vulkan: %s allows too few push constants", cd_vk_name(ctx));
    return cd_vk_kernel_create(ctx, warp, CD_SHADER_AUG_SPATIAL, NBIND, sizeof(warp_push), ls, err);
}

static void warp_destroy(cd_gpu_context *ctx, void *warp) { cd_vk_kernel_destroy(ctx, warp); }

static const cd_vk_family warp_family = {"augmentation: warp", sizeof(cd_vk_kernel), warp_init, warp_destroy};

/* The warp of ctx, after cd_vk_family_state succeeded. */
static cd_vk_kernel *WARP(const cd_gpu_context *ctx) { return cd_vk_family_find(ctx, &warp_family); }

static uint64_t pad4(uint64_t n) { return (n + 3) & ~(uint64_t)3; }

static void put64(uint32_t *w, int64_t v) {
    w[0] = (uint32_t)(uint64_t)v;
    w[1] = (uint32_t)((uint64_t)v >> 32);
}

static int64_t fixed32(double v) { return (int64_t)floor(v * 4294967296.0 + 0.5); }

/* Per-item plan. */
typedef struct item_plan {
    bool cpu;  /* computed by the reference on the host */
    bool skip; /* nothing to write */
    uint32_t flags;
    float *field; /* elastic displacement (host), or NULL */
    uint64_t nbox;
    uint64_t src_bytes, mask_bytes, el_bytes, out_bytes, omask_bytes;
    cd_gpu_iplan ip; /* the intensity ops (cd_gpu_augment, image items) */
} item_plan;

/* Bytes of each range for items [i0, i1), padded as allocated (the X_ ones 0 without intensity). */
static void group_sizes(const cd_gpu_context *ctx, const item_plan *pl, int i0, int i1, uint64_t rows_bytes,
                        uint32_t channels, uint64_t npatch, bool intensity, VkDeviceSize sz[NRANGES]) {
    memset(sz, 0, sizeof(VkDeviceSize) * NRANGES);
    uint32_t ops = 0;
    uint64_t nimg = 0;
    for (int i = i0; i < i1; i++) {
        if (pl[i].cpu || pl[i].skip) continue;
        sz[0] += SAMPLE_WORDS * 4;
        sz[1] += rows_bytes;
        sz[2] += pl[i].src_bytes;
        sz[3] += pl[i].mask_bytes;
        sz[4] += pl[i].out_bytes;
        sz[5] += pl[i].omask_bytes;
        sz[6] += pl[i].el_bytes;
        if (intensity && (pl[i].flags & FLAG_IMAGE)) { /* every image is a row of the stage; no-op ones skip it */
            nimg++;
            sz[X_META] += pl[i].ip.meta_words * 4;
            ops |= pl[i].ip.flags;
        }
    }
    for (int b = 0; b < NBIND; b++) sz[b] = cd_vk_padded(ctx, sz[b]);
    if (!ops)
        sz[X_META] = 0;
    else {
        sz[X_META] = cd_vk_padded(ctx, sz[X_META]);
        sz[X_SCRATCH] = (ops & CD_GPU_I_SCRATCH) ? sz[4] : 0;
        sz[X_STATS] = cd_vk_padded(ctx, (ops & CD_GPU_I_STATS) ? cd_gpu_istats_bytes(ctx, nimg * channels, npatch) : 0);
    }
}

/* One command buffer's worth of items [i0, i1): sizes, ranges and the intensity job. */
typedef struct group {
    cd_gpu_context *ctx;
    const cd_aug_params *params;
    const cd_gpu_spatial_item *items;
    const item_plan *pl;
    int i0, i1;
    uint32_t channels;
    const int64_t *patch;
    uint64_t npatch, nrows;
    uint32_t ns; /* items the device runs */
    bool stage;  /* some image has intensity ops: the stage follows the warp */
    bool shared; /* host-visible device memory: no copies */
    VkDeviceSize sz[NRANGES], in_bytes, out_bytes;
    cd_vk_range dev[NRANGES], host_in[NRANGES], host_out[NRANGES];
    cd_gpu_ijob job;
    const cd_aug_params **jp; /* the job's rows: parameters and plans of the image items */
    const cd_gpu_iplan **jq;
} group;

static bool on_device(const item_plan *p) { return !(p->cpu || p->skip); }

/* The arenas reserved and every range allocated: inputs first (contiguous, copied in one region),
 * then outputs (the scratch image right after the output image), then the statistics. */
static cd_status group_ranges(group *g, cd_error *err) {
    const VkDeviceSize *sz = g->sz;
    g->in_bytes = sz[0] + sz[1] + sz[2] + sz[3] + sz[6] + sz[X_META];
    g->out_bytes = sz[4] + sz[5];
    VkDeviceSize need[CD_VK_NKINDS] = {g->in_bytes + g->out_bytes + sz[X_SCRATCH] + sz[X_STATS],
                                       g->shared ? 0 : g->in_bytes, g->shared ? 0 : g->out_bytes};
    cd_status st = cd_vk_arenas_reserve(g->ctx, need, err);
    if (st != CD_OK) return st;
    static const int in_order[6] = {0, 1, 2, 3, 6, X_META};
    const int nin = g->stage ? 6 : 5;
    for (int j = 0; j < nin; j++) g->dev[in_order[j]] = cd_vk_alloc(g->ctx, CD_VK_DEVICE, sz[in_order[j]]);
    g->dev[4] = cd_vk_alloc(g->ctx, CD_VK_DEVICE, sz[4]);
    if (sz[X_SCRATCH]) g->dev[X_SCRATCH] = cd_vk_alloc(g->ctx, CD_VK_DEVICE, sz[X_SCRATCH]);
    g->dev[5] = cd_vk_alloc(g->ctx, CD_VK_DEVICE, sz[5]);
    if (g->stage) g->dev[X_STATS] = cd_vk_alloc(g->ctx, CD_VK_DEVICE, sz[X_STATS]);
    if (g->shared) {
        memcpy(g->host_in, g->dev, sizeof g->dev);
        memcpy(g->host_out, g->dev, sizeof g->dev);
        return CD_OK;
    }
    for (int j = 0; j < nin; j++) g->host_in[in_order[j]] = cd_vk_alloc(g->ctx, CD_VK_UPLOAD, sz[in_order[j]]);
    g->host_out[4] = cd_vk_alloc(g->ctx, CD_VK_READBACK, sz[4]);
    g->host_out[5] = cd_vk_alloc(g->ctx, CD_VK_READBACK, sz[5]);
    return CD_OK;
}

/* The intensity stage: one row set per image item, in output order, packed into the meta range. */
static cd_status group_intensity_job(group *g, cd_error *err) {
    if (!g->stage) return CD_OK;
    g->jp = malloc(sizeof *g->jp * g->ns);
    g->jq = malloc(sizeof *g->jq * g->ns);
    if (!g->jp || !g->jq) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    cd_gpu_ijob *job = &g->job;
    for (int i = g->i0; i < g->i1; i++)
        if (on_device(&g->pl[i]) && (g->pl[i].flags & FLAG_IMAGE)) {
            g->jp[job->ns] = &g->params[i];
            g->jq[job->ns] = &g->pl[i].ip;
            job->ops |= g->pl[i].ip.flags;
            job->ns++;
        }
    job->channels = g->channels;
    memcpy(job->patch, g->patch, sizeof job->patch);
    job->params = g->jp;
    job->plans = g->jq;
    job->meta = g->dev[X_META];
    job->data = g->dev[4];
    job->data.size += g->sz[X_SCRATCH];
    job->stats = g->dev[X_STATS];
    job->scratch = (uint32_t)(g->sz[4] / 4);
    cd_gpu_ijob_pack(job, cd_vk_host(g->ctx, g->host_in[X_META]));
    return CD_OK;
}

/* Where one item's data start in each input and output range (in elements of each range). */
typedef struct item_offsets {
    uint64_t src, mask, out, omask, el, rows;
} item_offsets;

/* Item i's sample words, rows, source box, mask box and elastic displacements, at offsets o. */
static void pack_item(const group *g, int i, uint32_t s, item_offsets *o) {
    const item_plan *p = &g->pl[i];
    const cd_aug_params *a = &g->params[i];
    const cd_gpu_spatial_item *it = &g->items[i];
    const int64_t *patch = g->patch;
    uint32_t *w = (uint32_t *)cd_vk_host(g->ctx, g->host_in[0]) + (size_t)s * SAMPLE_WORDS;
    memset(w, 0, SAMPLE_WORDS * 4);
    w[0] = (uint32_t)o->src;
    w[1] = (uint32_t)o->mask;
    w[2] = (uint32_t)o->out;
    w[3] = (uint32_t)o->omask;
    w[4] = (uint32_t)o->rows;
    w[5] = (uint32_t)o->el;
    w[6] = p->flags;
    w[7] = (uint32_t)p->nbox;
    for (int k = 0; k < 3; k++) w[8 + k] = (uint32_t)it->box_shape[k];
    const double(*m)[3] = a->matrix;
    double c[3], h[3];
    for (int k = 0; k < 3; k++) {
        c[k] = a->center[k] - (double)it->box_lo[k];
        h[k] = (double)(patch[k] - 1) * 0.5;
    }
    for (int k = 0; k < 3; k++) put64(w + 12 + 2 * k, fixed32(m[k][2]));
    /* rows: the reference's base, rounded as its fast path rounds it */
    uint32_t *r = (uint32_t *)cd_vk_host(g->ctx, g->host_in[1]) + o->rows;
    for (int64_t x = 0; x < patch[0]; x++)
        for (int64_t y = 0; y < patch[1]; y++, r += ROW_WORDS) {
            const double q0 = (double)x - h[0], q1 = (double)y - h[1], q2 = -h[2];
            for (int k = 0; k < 3; k++) put64(r + 2 * k, fixed32(c[k] + m[k][0] * q0 + m[k][1] * q1 + m[k][2] * q2));
        }
    o->rows += g->nrows * ROW_WORDS;
    if (p->flags & FLAG_IMAGE) {
        float *src = cd_vk_host(g->ctx, g->host_in[2]);
        memcpy(src + o->src, it->src, (size_t)(p->nbox * g->channels) * sizeof(float));
        o->src += p->nbox * g->channels;
        o->out += g->npatch * g->channels;
    }
    if (p->flags & FLAG_MASK) {
        uint8_t *mask = cd_vk_host(g->ctx, g->host_in[3]);
        memcpy(mask + o->mask, it->mask_src, (size_t)p->nbox);
        o->mask += pad4(p->nbox);
        o->omask += pad4(g->npatch);
    }
    if (p->flags & FLAG_ELASTIC) {
        const float *f = p->field;
        uint32_t *e = (uint32_t *)cd_vk_host(g->ctx, g->host_in[6]) + o->el;
        for (uint64_t v = 0; v < g->npatch; v++, e += EL_WORDS) {
            const double d0 = f[v], d1 = f[g->npatch + v], d2 = f[2 * g->npatch + v];
            for (int k = 0; k < 3; k++) put64(e + 2 * k, fixed32(m[k][0] * d0 + m[k][1] * d1 + m[k][2] * d2));
        }
        o->el += g->npatch * EL_WORDS;
    }
}

/* [copy in ->] warp [-> intensity stage] [-> copy out], submitted and waited for. */
static cd_status group_record_submit(group *g, cd_error *err) {
    cd_gpu_context *ctx = g->ctx;
    cd_vk_cmd *cmd = cd_vk_batch(ctx);
    cd_status st = cd_vk_cmd_begin(cmd, false, err);
    if (st != CD_OK) return st;
    if (!g->shared) {
        VkBufferCopy region = {.srcOffset = g->host_in[0].offset, .dstOffset = g->dev[0].offset, .size = g->in_bytes};
        cd_vk_cmd_copy(cmd, cd_vk_arena_buffer(ctx, CD_VK_UPLOAD), cd_vk_arena_buffer(ctx, CD_VK_DEVICE), 1, &region);
        cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                          VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
    }
    cd_vk_kernel *warp = WARP(ctx);
    cd_vk_kernel_bind(ctx, warp, g->dev);
    cd_vk_cmd_bind(cmd, warp, VK_NULL_HANDLE, VK_NULL_HANDLE);
    const uint64_t nquads = (g->npatch + 3) / 4;
    const uint64_t groups = (nquads + warp->local_size - 1) / warp->local_size;
    const uint32_t maxx = cd_vk_limits(ctx)->maxComputeWorkGroupCount[0];
    const uint32_t gx = (uint32_t)(groups < maxx ? groups : maxx);
    const uint32_t gy = (uint32_t)((groups + gx - 1) / gx);
    warp_push pc = {(uint32_t)g->patch[2], (uint32_t)g->npatch, g->channels, (uint32_t)nquads, gx};
    cd_vk_cmd_push(cmd, warp, &pc);
    cd_vk_cmd_timestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0);
    cd_vk_cmd_dispatch(cmd, gx, gy, g->ns);
    uint32_t res = 0; /* float offset of the final images from dev[4] */
    if (g->stage) {
        cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                          VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
        res = cd_gpu_ijob_record(ctx, cmd, &g->job);
    }
    cd_vk_cmd_timestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 1);
    if (!g->shared) {
        cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                          VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
        VkBufferCopy regions[2] = {
            {.srcOffset = g->dev[4].offset + (VkDeviceSize)res * 4,
             .dstOffset = g->host_out[4].offset,
             .size = g->sz[4]},
            {.srcOffset = g->dev[5].offset, .dstOffset = g->host_out[5].offset, .size = g->sz[5]}};
        cd_vk_cmd_copy(cmd, cd_vk_arena_buffer(ctx, CD_VK_DEVICE), cd_vk_arena_buffer(ctx, CD_VK_READBACK), 2, regions);
        cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                          VK_ACCESS_HOST_READ_BIT);
    } else {
        g->host_out[4].offset += (VkDeviceSize)res * 4;
        cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                          VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    }
    double kms = 0;
    st = cd_vk_cmd_submit_wait(cmd, "a batch", &kms, err);
    if (st == CD_OK) cd_vk_count_batch(ctx, kms, g->in_bytes, g->out_bytes);
    return st;
}

/* The warped (and intensity-augmented) images and masks into the items' outputs. */
static void group_unpack(const group *g) {
    const float *out = cd_vk_host(g->ctx, g->host_out[4]);
    const uint8_t *omask = cd_vk_host(g->ctx, g->host_out[5]);
    uint64_t o_out = 0, o_omask = 0;
    for (int i = g->i0; i < g->i1; i++) {
        if (!on_device(&g->pl[i])) continue;
        if (g->pl[i].flags & FLAG_IMAGE) {
            memcpy(g->items[i].out_img, out + o_out, (size_t)(g->npatch * g->channels) * sizeof(float));
            o_out += g->npatch * g->channels;
        }
        if (g->pl[i].flags & FLAG_MASK) {
            memcpy(g->items[i].out_mask, omask + o_omask, (size_t)g->npatch);
            o_omask += pad4(g->npatch);
        }
    }
}

/* Runs items [i0, i1) (the GPU ones among them) as one command buffer; with `intensity`, the
 * intensity stage of the image items follows the warp in it. */
static cd_status run_group(cd_gpu_context *ctx, const cd_aug_params *params, const cd_gpu_spatial_item *items,
                           const item_plan *pl, int i0, int i1, uint32_t channels, const int64_t patch[3],
                           bool intensity, cd_error *err) {
    group g = (group){.ctx = ctx,
                      .params = params,
                      .items = items,
                      .pl = pl,
                      .i0 = i0,
                      .i1 = i1,
                      .channels = channels,
                      .patch = patch,
                      .npatch = (uint64_t)(patch[0] * patch[1] * patch[2]),
                      .nrows = (uint64_t)(patch[0] * patch[1])};
    group_sizes(ctx, pl, i0, i1, g.nrows * ROW_WORDS * 4, channels, g.npatch, intensity, g.sz);
    for (int i = i0; i < i1; i++) g.ns += on_device(&pl[i]);
    if (g.ns == 0) return CD_OK;
    g.stage = g.sz[X_META] != 0;
    g.shared = cd_gpu_shared_memory(ctx);
    cd_status st = group_ranges(&g, err);
    if (st == CD_OK) st = group_intensity_job(&g, err);
    if (st == CD_OK) {
        item_offsets o = {0, 0, 0, 0, 0, 0};
        uint32_t s = 0;
        for (int i = i0; i < i1; i++)
            if (on_device(&pl[i])) pack_item(&g, i, s++, &o);
        st = group_record_submit(&g, err);
    }
    free(g.jp);
    free(g.jq);
    if (st == CD_OK) group_unpack(&g);
    return st;
}

static bool finite3x3(const cd_aug_params *a) {
    for (int i = 0; i < 3; i++) {
        if (!isfinite(a->center[i])) return false;
        for (int j = 0; j < 3; j++)
            if (!isfinite(a->matrix[i][j])) return false;
    }
    return true;
}

static cd_status aug_spatial_locked(cd_gpu_context *ctx, const cd_aug_params *params, int n,
                                    const cd_gpu_spatial_item *items, uint32_t channels, const int64_t patch[3],
                                    item_plan *pl, bool intensity, const char *fn, cd_error *err) {
    const uint64_t npatch = (uint64_t)(patch[0] * patch[1] * patch[2]);
    const VkPhysicalDeviceLimits *lim = cd_vk_limits(ctx);
    const bool shared = cd_gpu_shared_memory(ctx);
    const uint64_t range_max = lim->maxStorageBufferRange;
    /* plan every item */
    for (int i = 0; i < n; i++) {
        const cd_gpu_spatial_item *it = &items[i];
        const cd_aug_params *a = &params[i];
        item_plan *p = &pl[i];
        for (int k = 0; k < 3; k++)
            if (it->box_shape[k] < 0 || it->box_shape[k] > (1 << 20))
                return cd_fail(err, CD_ERR_ARG, "%s: item %d: bad box size %lld", fn, i, (long long)it->box_shape[k]);
        if (it->out_img && channels && !it->src)
            return cd_fail(err, CD_ERR_ARG, "%s: item %d: out_img without src", fn, i);
        if (it->out_mask && !it->mask_src)
            return cd_fail(err, CD_ERR_ARG, "%s: item %d: out_mask without mask_src", fn, i);
        p->flags = (it->out_img && channels ? FLAG_IMAGE : 0) | (it->out_mask ? FLAG_MASK : 0);
        if (!p->flags) {
            p->skip = true;
            continue;
        }
        p->nbox = (uint64_t)(it->box_shape[0] * it->box_shape[1] * it->box_shape[2]);
        double dmax[3] = {0, 0, 0};
        bool ok = finite3x3(a) && (!a->elastic || (isfinite(a->elastic_alpha) && isfinite(a->elastic_sigma)));
        if (ok && a->elastic) {
            p->field = cd_aug_elastic_field(a, patch, dmax);
            if (!p->field) return cd_fail(err, CD_ERR_NOMEM, "out of memory (elastic field)");
            p->flags |= FLAG_ELASTIC;
        }
        /* every position must stay inside +-2^30 voxels for the fixed-point arithmetic */
        for (int k = 0; k < 3 && ok; k++) {
            double ext = fabs(a->center[k] - (double)it->box_lo[k]);
            for (int j = 0; j < 3; j++) ext += fabs(a->matrix[k][j]) * ((double)(patch[j] - 1) * 0.5 + dmax[j] + 1.0);
            ok = ext < 1073741824.0;
        }
        if (intensity && (p->flags & FLAG_IMAGE)) {
            cd_gpu_iplan_make(a, patch, &p->ip);
            ok &= !p->ip.cpu; /* the reference runs both passes of such a sample */
        }
        p->cpu = !ok;
        p->src_bytes = (p->flags & FLAG_IMAGE) ? p->nbox * channels * 4 : 0;
        p->mask_bytes = (p->flags & FLAG_MASK) ? pad4(p->nbox) : 0;
        p->out_bytes = (p->flags & FLAG_IMAGE) ? npatch * channels * 4 : 0;
        p->omask_bytes = (p->flags & FLAG_MASK) ? pad4(npatch) : 0;
        p->el_bytes = (p->flags & FLAG_ELASTIC) ? npatch * EL_WORDS * 4 : 0;
    }
    /* the items the reference computes */
    for (int i = 0; i < n; i++)
        if (pl[i].cpu) {
            cd_status st = cd_aug_apply_spatial(&params[i], items[i].src, items[i].mask_src, channels, items[i].box_lo,
                                                items[i].box_shape, patch, items[i].out_img, items[i].out_mask, err);
            if (st == CD_OK && intensity && (pl[i].flags & FLAG_IMAGE))
                st = cd_aug_apply_intensity(&params[i], items[i].out_img, channels, patch, err);
            if (st != CD_OK) return st;
            cd_vk_count_fallback(ctx, 1);
        }
    /* groups: as many items as fit every binding's range, the memory budget and the grid */
    const uint32_t ls = WARP(ctx)->local_size;
    const uint64_t nquads = (npatch + 3) / 4, groups = (nquads + ls - 1) / ls;
    const uint64_t gx = groups < lim->maxComputeWorkGroupCount[0] ? groups : lim->maxComputeWorkGroupCount[0];
    if ((groups + gx - 1) / gx > lim->maxComputeWorkGroupCount[1])
        return cd_fail(err, CD_ERR_LIMIT, "%s: a patch of %llu voxels is too large for one dispatch on %s", fn,
                       (unsigned long long)npatch, cd_vk_name(ctx));
    const uint64_t budget = cd_vk_batch_budget(ctx);
    const uint64_t rows_bytes = (uint64_t)(patch[0] * patch[1]) * ROW_WORDS * 4;
    int i0 = 0;
    while (i0 < n) {
        int i1 = i0, count = 0;
        while (i1 < n) {
            VkDeviceSize sz[NRANGES];
            group_sizes(ctx, pl, i0, i1 + 1, rows_bytes, channels, npatch, intensity, sz);
            uint64_t total = 0, big = sz[4] + sz[X_SCRATCH]; /* the intensity stage binds image and scratch as one */
            bool fits = count + 1 <= (int)lim->maxComputeWorkGroupCount[2] &&
                        (!intensity || (uint64_t)(count + 1) * channels <= lim->maxComputeWorkGroupCount[2]);
            for (int b = 0; b < NRANGES; b++) {
                total += sz[b];
                big = sz[b] > big ? sz[b] : big;
            }
            fits &= big <= range_max && total <= budget;
            if (!fits) {
                if (i1 == i0) {
                    char b1[32], b2[32];
                    if (big > range_max || channels > lim->maxComputeWorkGroupCount[2])
                        return cd_fail(
                            err, CD_ERR_LIMIT,
                            "%s: item %d needs a %s buffer, more than %s can bind (maxStorageBufferRange %s)", fn, i0,
                            cd_format_bytes(big, b1, sizeof b1), cd_vk_name(ctx),
                            cd_format_bytes(range_max, b2, sizeof b2));
                    return cd_fail(err, CD_ERR_NOMEM, "GPU memory: item %d needs %s, more than the %s available on %s",
                                   i0, cd_format_bytes(total * (shared ? 1 : 2), b1, sizeof b1),
                                   cd_format_bytes(budget * (shared ? 1 : 2), b2, sizeof b2), cd_vk_name(ctx));
                }
                break;
            }
            count += !(pl[i1].cpu || pl[i1].skip);
            i1++;
        }
        cd_status st = run_group(ctx, params, items, pl, i0, i1, channels, patch, intensity, err);
        if (st != CD_OK) return st;
        i0 = i1;
    }
    return CD_OK;
}

cd_status cd_gpu_warp_batch(cd_gpu_context *ctx, const cd_aug_params *params, int n, const cd_gpu_spatial_item *items,
                            uint32_t channels, const int64_t patch[3], bool intensity, const char *fn, cd_error *err) {
    item_plan *pl = calloc((size_t)n, sizeof *pl);
    if (!pl) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    cd_vk_call_begin(ctx);
    const double t0 = cd_now_ms();
    void *warp;
    cd_status st = cd_vk_usable(ctx, err);
    if (st == CD_OK) st = cd_vk_family_state(ctx, &warp_family, &warp, err);
    if (st == CD_OK && intensity) st = cd_gpu_intensity_ready(ctx, err);
    if (st == CD_OK) st = aug_spatial_locked(ctx, params, n, items, channels, patch, pl, intensity, fn, err);
    cd_vk_call_end(ctx, t0);
    for (int i = 0; i < n; i++) free(pl[i].field);
    free(pl);
    return st;
}

cd_status cd_gpu_aug_spatial(cd_gpu_context *ctx, const cd_aug_params *params, int n, const cd_gpu_spatial_item *items,
                             uint32_t channels, const int64_t patch[3], cd_error *err) {
    if (!ctx || !patch || n < 0 || (n > 0 && (!params || !items)))
        return cd_fail(err, CD_ERR_ARG, "cd_gpu_aug_spatial: NULL argument");
    for (int k = 0; k < 3; k++)
        if (patch[k] < 1 || patch[k] > (1 << 20))
            return cd_fail(err, CD_ERR_ARG, "cd_gpu_aug_spatial: bad patch size %lld", (long long)patch[k]);
    if ((uint64_t)(patch[0] * patch[1] * patch[2]) >= (UINT64_C(1) << 32) / EL_WORDS)
        return cd_fail(err, CD_ERR_LIMIT, "cd_gpu_aug_spatial: patch of %lld x %lld x %lld voxels is too large",
                       (long long)patch[0], (long long)patch[1], (long long)patch[2]);
    if (channels > 4096) return cd_fail(err, CD_ERR_ARG, "cd_gpu_aug_spatial: %u channels", channels);
    if (n == 0) return CD_OK;
    return cd_gpu_warp_batch(ctx, params, n, items, channels, patch, false, "cd_gpu_aug_spatial", err);
}
