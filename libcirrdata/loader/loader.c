/* The training loader: sampling order, worker threads, batch ring (see cirrdata/loader.h). */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cirrdata/augment.h"
#include "cirrdata/dataset.h"
#include "cirrdata/gpu.h"
#include "cirrdata/loader.h"
#include "cirrdata/rng.h"
#include "core/internal.h"
#include "loader/chunk_io.h"
#include "loader/chunk_cache.h"
#include "augment/sample_plan.h"

/* Philox stream id of the epoch permutation (the patch centre's is in sample_plan.c, augmentation ops'
 * in augment/draw.c). */
#define OP_PERMUTATION 0x70657270u

typedef struct rec_info {
    uint64_t dataset_index;
    int32_t label;
    cd_record *rec;
    const cd_shard *shard;
    int image_t, mask_t;       /* tensor numbers; mask_t -1 when absent */
    cd_tensor_info img;
    uint32_t nfg;
    int32_t (*fg)[3];          /* foreground voxel locations from the metadata */
    bool has_bbox;
    int64_t bbox[3][2];
} rec_info;

typedef struct item {
    uint32_t rec;
    int32_t z;                 /* slice mode: the slice; else -1 */
} item;

typedef struct slot {
    bool assigned;
    uint64_t epoch, start, number;
    uint32_t size, claimed, done;
    bool *ok;
    float *image;
    uint8_t *mask;
    int32_t *label;
    int64_t *index, *slice, *corner;
    int64_t shape[3];          /* of this batch's samples */
    cd_batch batch;
} slot;

/* Device path: one sample of a worker's share, read and planned, awaiting the share's cd_gpu_augment.
 * Each has its own source box: the whole share is rendered by one call once every box is read. */
typedef struct gpu_job {
    cd_sample_plan plan;
    float *box;
    size_t box_cap;
    uint8_t *mbox;
    size_t mbox_cap;
    float *out_img;            /* into the ring slot */
    uint8_t *out_mask;
    bool render;               /* false: failed, or empty and already zeroed */
} gpu_job;

typedef struct worker_scratch {
    cd_chunk_io *io;
    cd_gpu_context *gpu;       /* device "vulkan": this worker's own context (NULL once given up) */
    gpu_job *jobs;             /* batch_size of them */
    cd_gpu_spatial_item *items;
    cd_aug_params *params;
    cd_status *sst;            /* per sample of the share */
    uint64_t vk_msgs_gone;     /* validation messages of contexts this worker destroyed */
    int vk_resets;             /* contexts this worker created again after a lost device */
    int vk_inject_lost;        /* CIRRDATA_TEST_LOADER_LOST: device calls still to report as lost */
    float *box;
    size_t box_cap;
    uint8_t *mbox;
    size_t mbox_cap;
    uint8_t *stored;
    size_t stored_cap;
    uint8_t *raw;
    size_t raw_cap;
    cd_read_req *reqs;
    size_t reqs_cap;
} worker_scratch;

struct cd_loader {
    cd_loader_options o;
    cd_chunk_cache *cache;
    bool cache_enabled;
    cd_dataset *ds;
    cd_aug_pipeline *pipe;
    rec_info *recs;
    size_t nrecs;
    item *items;
    uint64_t nitems;
    int64_t patch[3];          /* sample size; in volume mode without a fixed size, record 0's (see sample_shape) */
    bool per_record_shape;     /* volume mode without a fixed size: each sample keeps its record's shape */
    size_t max_pvox;           /* voxels of the largest sample: what ring buffers hold per sample */
    uint32_t channels;
    bool has_mask;
    uint64_t per_rank, bpe;
    /* epoch order cache: this rank's item indices for one epoch */
    uint64_t order_epoch;
    uint32_t *order;
    bool order_valid;
    /* ring and scheduling */
    slot *slots;
    uint32_t ring;
    uint64_t assign_seq, deliver_seq;   /* batch sequence numbers; slot = seq % ring */
    uint64_t sched_epoch, sched_pos;    /* next batch to assign */
    uint64_t current_epoch;             /* epoch of the batches being delivered */
    uint64_t deliver_epoch, deliver_pos;/* where the next delivered batch starts (resume state) */
    bool epoch_end_reported;
    int busy;
    bool stop;                 /* the workers are to exit (cd_loader_close) */
    bool closed;               /* cd_loader_close has begun: next / set_state refuse */
    cd_status failed;
    char fail_msg[CD_ERROR_MESSAGE_MAX];
    uint64_t skipped;
    bool uring;
    /* device path (cirrdata/loader.h): counters under mu */
    bool use_gpu;              /* workers render through their cd_gpu_context */
    uint32_t gpu_share;        /* samples of a batch a worker claims at once */
    char device_name[320];
    cd_gpu_options gpu_opts;   /* what every worker's context is created (and re-created) with */
    cd_loader_device_stats dev;
    /* preload (options.preload): jobs are (record, tensor) pairs, claimed under mu */
    bool preloading;           /* workers take no batch until it is over */
    uint64_t pre_next, pre_jobs;
    int pre_busy;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t *threads;
    worker_scratch *scratch;
    int nthreads, started;
};

void cd_loader_options_init(cd_loader_options *o) {
    memset(o, 0, sizeof *o);
    o->mode = CD_LOADER_PATCH;
    o->patch[0] = 96;
    o->patch[1] = 96;
    o->patch[2] = 32;
    o->foreground_fraction = 0.33;
    o->batch_size = 2;
    o->splits = "train";
    o->augment = "none";
    o->ring = 4;
}

/* Bytes of physical memory (0 when unknown). */
static uint64_t phys_ram(void) {
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    return pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 0;
}

/* ---- epoch order ---- */

/* This rank's item order for an epoch: a Philox-seeded Fisher-Yates permutation of all items, then
 * positions rank, rank + W, ... (disjoint across ranks, together the whole epoch). */
static const uint32_t *epoch_order(cd_loader *l, uint64_t epoch) {
    if (l->order_valid && l->order_epoch == epoch) return l->order;
    uint32_t *perm = malloc(l->nitems * sizeof *perm);
    if (!perm) return NULL;
    for (uint64_t i = 0; i < l->nitems; i++) perm[i] = (uint32_t)i;
    cd_rng rng;
    cd_rng_init(&rng, l->o.seed, (uint32_t)epoch, OP_PERMUTATION);
    for (uint64_t i = l->nitems; i > 1; i--) {
        uint64_t j = cd_rng_below(&rng, i);
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
    uint64_t k = 0;
    for (uint64_t i = (uint64_t)l->o.rank; i < l->nitems; i += (uint64_t)l->o.world_size) l->order[k++] = perm[i];
    free(perm);
    l->order_epoch = epoch;
    l->order_valid = true;
    return l->order;
}

/* ---- reading a box of a record's tensor as float32 ---- */

static void *grow(void *p, size_t *cap, size_t need) {
    if (need <= *cap) return p;
    size_t n = need + need / 2;
    void *q = realloc(p, n);
    if (!q) return NULL;
    *cap = n;
    return q;
}

/* One run of n elements of a decoded chunk into float32 (or, for masks, uint8) output, reversed when
 * rev (mirroring): dst[k] = src[rev ? n - 1 - k : k]. */
/* The decoded-chunk cache's key of chunk `chunk` of tensor t of record rec. */
static inline uint64_t chunk_key(size_t rec, int t, uint32_t chunk) {
    return ((uint64_t)rec << 36) | ((uint64_t)t << 32) | chunk;
}

static void copy_run(const uint8_t *raw, size_t src, cd_dtype dtype, size_t n, bool rev, float *o, uint8_t *u) {
    if (u) {
        const uint8_t *s = raw + src;
        if (!rev) {
            memcpy(u, s, n);
            return;
        }
        /* reversed (mirrored masks): 8 bytes at a time, a byte swap reversing each word */
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            uint64_t v;
            memcpy(&v, s + n - 8 - i, 8);
            v = __builtin_bswap64(v);
            memcpy(u + i, &v, 8);
        }
        for (; i < n; i++) u[i] = s[n - 1 - i];
        return;
    }
#define RUN(T, CONV)                                                                                                                   \
    do {                                                                                                                               \
        const T *s = (const T *)raw + src;                                                                                             \
        if (rev)                                                                                                                       \
            for (size_t i = 0; i < n; i++) o[i] = CONV(s[n - 1 - i]);                                                                  \
        else                                                                                                                           \
            for (size_t i = 0; i < n; i++) o[i] = CONV(s[i]);                                                                          \
    } while (0)
#define SAME(v) (v)
    switch (dtype) {
    case CD_DTYPE_FLOAT32:
        if (!rev) memcpy(o, (const float *)raw + src, n * sizeof(float));
        else RUN(float, SAME);
        break;
    case CD_DTYPE_INT16: RUN(int16_t, (float)); break;
    case CD_DTYPE_UINT8: RUN(uint8_t, (float)); break;
    case CD_DTYPE_FLOAT16: RUN(uint16_t, cd_half_to_float); break;
    default: break;
    }
#undef SAME
#undef RUN
}

/* Copies the voxels of one decoded chunk that the map m reads into its output (fbox: channels x
 * m->size float32, or ubox: m->size uint8): one run per (channel, x, y), reversed along mirrored z. */
static void scatter_chunk(const cd_tensor_info *ti, const cd_chunk_info *ci, const uint8_t *raw, const cd_sample_map *m, float *fbox,
                          uint8_t *ubox) {
    int64_t r0[3], r1[3]; /* source voxels of this chunk that the map reads */
    for (int a = 0; a < 3; a++) {
        const int64_t nlo = m->sgn[a] > 0 ? m->off[a] : m->off[a] - m->size[a] + 1, nhi = nlo + m->size[a];
        const int64_t cs = ci->start[a], ce = cs + ci->extent[a];
        r0[a] = cs > nlo ? cs : nlo;
        r1[a] = ce < nhi ? ce : nhi;
        if (r1[a] <= r0[a]) return;
    }
    const size_t n = (size_t)(r1[2] - r0[2]);
    const bool rev = m->sgn[2] < 0;
    /* output z of the run's first element */
    const int64_t oz = rev ? m->off[2] - (r1[2] - 1) : r0[2] - m->off[2];
    const size_t pvox = (size_t)(m->size[0] * m->size[1] * m->size[2]);
    for (uint32_t c = 0; c < ti->channels; c++)
        for (int64_t x = r0[0]; x < r1[0]; x++) {
            const int64_t ox = m->sgn[0] > 0 ? x - m->off[0] : m->off[0] - x;
            for (int64_t y = r0[1]; y < r1[1]; y++) {
                const int64_t oy = m->sgn[1] > 0 ? y - m->off[1] : m->off[1] - y;
                size_t src = (((size_t)c * ci->extent[0] + (size_t)(x - ci->start[0])) * ci->extent[1] + (size_t)(y - ci->start[1])) *
                                 ci->extent[2] + (size_t)(r0[2] - ci->start[2]);
                size_t dst = (size_t)c * pvox + ((size_t)ox * (size_t)m->size[1] + (size_t)oy) * (size_t)m->size[2] + (size_t)oz;
                copy_run(raw, src, ti->dtype, n, rev, ubox ? NULL : fbox + dst, ubox ? ubox + dst : NULL);
            }
        }
}

/* Reads the chunks of tensor t of record number rec that the box [lo, hi) (inside the tensor)
 * touches and copies what the map m reads from them into fbox / ubox: cached decoded chunks are
 * reused, the others are read together (one submission), verified and decoded, then cached. */
static cd_status read_chunks(cd_loader *l, worker_scratch *w, size_t rec, int t, const int64_t lo[3], const int64_t hi[3],
                             const cd_sample_map *m, float *fbox, uint8_t *ubox, cd_error *err) {
    const rec_info *ri = &l->recs[rec];
    cd_tensor_info ti;
    cd_record_tensor_info(ri->rec, (uint32_t)t, &ti);
    uint32_t c0[3], c1[3];
    for (int a = 0; a < 3; a++) {
        c0[a] = (uint32_t)(lo[a] / ti.chunk[a]);
        c1[a] = (uint32_t)((hi[a] - 1) / ti.chunk[a]);
    }
    const size_t n = (size_t)(c1[0] - c0[0] + 1) * (c1[1] - c0[1] + 1) * (c1[2] - c0[2] + 1);
    /* per-chunk bookkeeping: on the stack for the usual few chunks */
    enum { NSTACK = 32 };
    uint32_t ids_s[NSTACK];
    const cd_cached_chunk *ent_s[NSTACK] = {0};
    const void *data_s[NSTACK] = {0};
    size_t miss_s[NSTACK];
    const bool heap = n > NSTACK;
    uint32_t *ids = heap ? malloc(n * sizeof *ids) : ids_s;
    const cd_cached_chunk **ent = heap ? calloc(n, sizeof *ent) : ent_s;
    const void **data = heap ? calloc(n, sizeof *data) : data_s;
    size_t *miss = heap ? malloc(n * sizeof *miss) : miss_s;
    cd_status st = (ids && ent && data && miss) ? CD_OK : cd_fail(err, CD_ERR_NOMEM, "out of memory");
    size_t k = 0, nmiss = 0, total = 0;
    for (uint32_t a = c0[0]; st == CD_OK && a <= c1[0]; a++)
        for (uint32_t b = c0[1]; b <= c1[1]; b++)
            for (uint32_t c = c0[2]; c <= c1[2]; c++, k++) {
                ids[k] = (a * ti.chunk_grid[1] + b) * ti.chunk_grid[2] + c;
                uint64_t key = chunk_key(rec, t, ids[k]);
                ent[k] = l->cache_enabled ? cd_chunk_cache_get(l->cache, key, &data[k]) : NULL;
                if (!ent[k]) {
                    cd_chunk_info ci;
                    cd_record_chunk_info(ri->rec, (uint32_t)t, ids[k], &ci);
                    miss[nmiss++] = k;
                    total += ci.stored_size;
                }
            }
    if (st == CD_OK && nmiss) {
        if (!(w->reqs = grow(w->reqs, &w->reqs_cap, nmiss * sizeof *w->reqs)) ||
            !(w->stored = grow(w->stored, &w->stored_cap, total ? total : 1)))
            st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
        size_t off = 0;
        for (size_t q = 0; st == CD_OK && q < nmiss; q++) {
            cd_chunk_info ci;
            cd_record_chunk_info(ri->rec, (uint32_t)t, ids[miss[q]], &ci);
            w->reqs[q] = (cd_read_req){cd_shard_fd(ri->shard), ci.offset, ci.stored_size, w->stored + off};
            off += ci.stored_size;
        }
        if (st == CD_OK) st = cd_chunk_io_read(w->io, w->reqs, nmiss, cd_shard_path(ri->shard), err);
        off = 0;
        for (size_t q = 0; st == CD_OK && q < nmiss; q++) {
            size_t i = miss[q];
            cd_chunk_info ci;
            cd_record_chunk_info(ri->rec, (uint32_t)t, ids[i], &ci);
            if (!l->cache_enabled) {
                /* No cache: decode into the worker's reused buffer and scatter at once (fresh buffers
                 * per chunk cost page faults that can exceed the decoding itself). */
                if (!(w->raw = grow(w->raw, &w->raw_cap, ci.raw_size ? ci.raw_size : 1))) {
                    st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
                    break;
                }
                st = cd_record_decode_chunk(ri->shard, ri->rec, (uint32_t)t, ids[i], w->stored + off, w->raw, err);
                off += ci.stored_size;
                if (st == CD_OK) scatter_chunk(&ti, &ci, w->raw, m, fbox, ubox);
                data[i] = NULL;
                continue;
            }
            void *raw = cd_chunk_cache_alloc(l->cache, ci.raw_size);
            if (!raw) {
                st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
                break;
            }
            st = cd_record_decode_chunk(ri->shard, ri->rec, (uint32_t)t, ids[i], w->stored + off, raw, err);
            off += ci.stored_size;
            if (st != CD_OK) {
                cd_chunk_cache_free(l->cache, raw, ci.raw_size);
                break;
            }
            uint64_t key = chunk_key(rec, t, ids[i]);
            if (!(ent[i] = cd_chunk_cache_put(l->cache, key, raw, ci.raw_size))) {
                cd_chunk_cache_free(l->cache, raw, ci.raw_size);
                st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
                break;
            }
            data[i] = raw;
        }
    }
    for (size_t i = 0; st == CD_OK && i < n; i++) {
        if (!data[i]) continue; /* scattered straight from the worker's buffer */
        cd_chunk_info ci;
        cd_record_chunk_info(ri->rec, (uint32_t)t, ids[i], &ci);
        scatter_chunk(&ti, &ci, data[i], m, fbox, ubox);
    }
    for (size_t i = 0; ent && i < n; i++)
        if (ent[i]) cd_chunk_cache_unpin(l->cache, ent[i]);
    if (heap) {
        free(ids);
        free(ent);
        free(data);
        free(miss);
    }
    return st;
}

/* Reads the box [lo, hi) (inside the tensor) of tensor t of record number rec into fbox / ubox
 * (laid out as the box). */
static cd_status read_box(cd_loader *l, worker_scratch *w, size_t rec, int t, const int64_t lo[3], const int64_t hi[3],
                          float *fbox, uint8_t *ubox, cd_error *err) {
    const cd_sample_map m = {{lo[0], lo[1], lo[2]}, {1, 1, 1}, {hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]}};
    return read_chunks(l, w, rec, t, lo, hi, &m, fbox, ubox, err);
}

/* A plan that is a map (cd_sample_plan_direct): the voxels go straight from the chunks into the
 * output, one copy, without the staging box; then the intensity ops. Equal to the box path bit for bit. */
static cd_status read_direct(cd_loader *l, worker_scratch *w, size_t rec, const cd_sample_plan *plan, const cd_sample_map *m,
                             float *out_img, uint8_t *out_mask, cd_error *err) {
    const rec_info *ri = &l->recs[rec];
    int64_t lo[3], hi[3];
    cd_sample_map_zero_outside(m, ri->img.shape, l->channels, out_img, out_mask);
    cd_status st = CD_OK;
    if (cd_sample_map_source(m, ri->img.shape, lo, hi)) {
        st = read_chunks(l, w, rec, ri->image_t, lo, hi, m, out_img, NULL, err);
        if (st == CD_OK && out_mask) st = read_chunks(l, w, rec, ri->mask_t, lo, hi, m, NULL, out_mask, err);
    }
    if (st == CD_OK && l->pipe) st = cd_aug_apply_intensity(&plan->a, out_img, l->channels, plan->patch, err);
    return st;
}

/* ---- one sample ---- */

/* Makes sample j of slot s. gj non-NULL (device path): reads its box into gj's buffers and plans it,
 * leaving the rendering to the share's cd_gpu_augment (gj->render), except an empty plan (zeroed here). */
static cd_status make_sample(cd_loader *l, worker_scratch *w, slot *s, uint32_t j, gpu_job *gj, cd_error *err) {
    const uint32_t *order = NULL;
    pthread_mutex_lock(&l->mu);
    order = epoch_order(l, s->epoch);
    item it = order ? l->items[order[s->start + j]] : (item){0, -1};
    pthread_mutex_unlock(&l->mu);
    if (!order) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    const rec_info *ri = &l->recs[it.rec];
    int64_t patch[3] = {l->patch[0], l->patch[1], l->patch[2]};
    if (l->per_record_shape)
        for (int a = 0; a < 3; a++) patch[a] = ri->img.shape[a];
    if (j == 0) memcpy(s->shape, patch, sizeof patch); /* equal for every sample of a batch (checked at creation) */
    const size_t pvox = (size_t)(patch[0] * patch[1] * patch[2]);
    float *out_img = s->image + (size_t)j * l->channels * pvox;
    uint8_t *out_mask = l->has_mask ? s->mask + (size_t)j * pvox : NULL;
    s->label[j] = ri->label;
    s->index[j] = (int64_t)ri->dataset_index;
    s->slice[j] = it.z;

    /* Placement, drawn parameters and source box: shared with the augmented conversion
     * (loader/sample_plan.c), so both produce the same sample bit for bit. nnU-Net: the last
     * round(B * fraction) positions of a batch are forced onto foreground. */
    uint32_t forced = (uint32_t)lround(l->o.batch_size * l->o.foreground_fraction);
    bool fg = l->o.mode == CD_LOADER_PATCH && j >= l->o.batch_size - forced && ri->nfg > 0;
    cd_sample_plan plan;
    cd_sample_plan_make(l->pipe, l->o.mode, l->o.seed, s->epoch, ri->dataset_index, it.z, ri->img.shape, patch, fg, ri->nfg,
                        (const int32_t(*)[3])ri->fg, &plan);
    for (int a = 0; a < 3; a++) s->corner[3 * j + a] = plan.corner[a];
    if (plan.empty) return cd_sample_plan_render(&plan, false, NULL, NULL, l->channels, out_img, out_mask, err);
    /* Integer translation + mirroring (every sample without augmentation, most with it): straight
     * from the chunks into the output. The device path keeps its boxes. */
    cd_sample_map dmap;
    if (!gj && cd_sample_plan_direct(&plan, &dmap)) return read_direct(l, w, it.rec, &plan, &dmap, out_img, out_mask, err);

    /* Read only the source box the transform needs. */
    const int64_t *lo = plan.lo, *hi = plan.hi, *bshape = plan.bshape;
    size_t bvox = (size_t)(bshape[0] * bshape[1] * bshape[2]);
    float **box = gj ? &gj->box : &w->box;
    uint8_t **mbox = gj ? &gj->mbox : &w->mbox;
    if (!(*box = grow(*box, gj ? &gj->box_cap : &w->box_cap, (size_t)l->channels * bvox * sizeof(float))) ||
        (l->has_mask && !(*mbox = grow(*mbox, gj ? &gj->mbox_cap : &w->mbox_cap, bvox))))
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    cd_status st = read_box(l, w, it.rec, ri->image_t, lo, hi, *box, NULL, err);
    if (st == CD_OK && l->has_mask) st = read_box(l, w, it.rec, ri->mask_t, lo, hi, NULL, *mbox, err);
    if (st == CD_OK && gj) {
        gj->plan = plan;
        gj->out_img = out_img;
        gj->out_mask = out_mask;
        gj->render = true;
        return CD_OK;
    }
    if (st == CD_OK)
        st = cd_sample_plan_render(&plan, l->pipe != NULL, w->box, l->has_mask ? w->mbox : NULL, l->channels, out_img, out_mask, err);
    return st;
}

/* ---- the device path: a worker's share of a batch in one cd_gpu_augment ---- */

/* The first device error, or the one that gave the device up (caller holds the lock). */
static void device_note(cd_loader *l, const char *what, const char *msg) {
    if (!l->dev.note[0] || l->dev.gpu_disabled) snprintf(l->dev.note, sizeof l->dev.note, "%s: %.250s", what, msg);
}

/* Renders the share's m read samples (w->params, w->items) on the worker's device. A lost device: the
 * context is destroyed and created again once per worker and the share retried; a second loss, or a
 * failed re-creation, gives the device up for every worker. Returns CD_OK when the device rendered
 * them; anything else means the caller renders them on the CPU (the reason is in the note). */
static cd_status render_on_device(cd_loader *l, worker_scratch *w, int m, const int64_t patch[3]) {
    for (int attempt = 0;; attempt++) {
        cd_error e;
        cd_error_clear(&e);
        cd_status st = cd_gpu_augment(w->gpu, w->params, m, w->items, l->channels, patch, &e);
        if (st == CD_OK && w->vk_inject_lost > 0) {
            /* Test hook: the recovery below runs for real on a device that did not fail. */
            w->vk_inject_lost--;
            st = cd_fail(&e, CD_ERR_IO, "Vulkan: device lost (injected by CIRRDATA_TEST_LOADER_LOST)");
        }
        cd_gpu_timings t;
        cd_gpu_last_timings(w->gpu, &t);
        pthread_mutex_lock(&l->mu);
        if (st == CD_OK) {
            l->dev.gpu_calls++;
            l->dev.gpu_reference += (uint64_t)t.cpu_fallback;
            l->dev.gpu_samples += (uint64_t)(m - t.cpu_fallback);
            pthread_mutex_unlock(&l->mu);
            return CD_OK;
        }
        if (st != CD_ERR_IO || attempt > 0 || w->vk_resets > 0) {
            /* out of device memory or limits: this share on the CPU; a lost device again: give it up */
            if (st == CD_ERR_IO) l->dev.gpu_disabled = true;
            device_note(l, st == CD_ERR_IO ? "the Vulkan device was lost again, the CPU renders from now on" : "a share ran on the CPU",
                        e.message);
            pthread_mutex_unlock(&l->mu);
            return st;
        }
        /* Lost: take the context out of the stats' reach, destroy it, make another, retry. */
        cd_gpu_context *old = w->gpu;
        w->gpu = NULL;
        w->vk_msgs_gone += cd_gpu_validation_messages(old, NULL, 0);
        w->vk_resets++;
        l->dev.device_resets++;
        device_note(l, "the Vulkan device was lost, its context was created again", e.message);
        pthread_mutex_unlock(&l->mu);
        cd_gpu_destroy(old);
        cd_gpu_context *fresh = NULL;
        cd_error ce;
        cd_error_clear(&ce);
        cd_status cs = cd_gpu_create(&l->gpu_opts, &fresh, &ce);
        pthread_mutex_lock(&l->mu);
        w->gpu = fresh;
        if (cs != CD_OK) {
            l->dev.gpu_disabled = true;
            device_note(l, "a lost Vulkan device could not be opened again, the CPU renders from now on", ce.message);
        }
        pthread_mutex_unlock(&l->mu);
        if (cs != CD_OK) return cs;
    }
}

/* Samples j0 .. j0 + n - 1 of slot s: each read and planned (make_sample), then rendered together by
 * one cd_gpu_augment straight into the slot, or on the CPU reference when the device cannot.
 * Per-sample statuses in w->sst; err receives the first one that is not a skippable corruption. */
static void make_share(cd_loader *l, worker_scratch *w, slot *s, uint32_t j0, uint32_t n, bool device_ok, cd_error *err) {
    int m = 0;
    bool first = true;
    for (uint32_t k = 0; k < n; k++) {
        gpu_job *gj = &w->jobs[k];
        gj->render = false;
        cd_error e;
        cd_error_clear(&e);
        cd_status st = w->sst[k] = make_sample(l, w, s, j0 + k, gj, &e);
        if (st != CD_OK && first && !(l->o.skip_corrupt && (st == CD_ERR_CORRUPT || st == CD_ERR_TRUNCATED))) {
            *err = e;
            first = false;
        }
        if (st != CD_OK || !gj->render) continue;
        w->params[m] = gj->plan.a;
        w->items[m] = (cd_gpu_spatial_item){gj->box,
                                            l->has_mask ? gj->mbox : NULL,
                                            {gj->plan.lo[0], gj->plan.lo[1], gj->plan.lo[2]},
                                            {gj->plan.bshape[0], gj->plan.bshape[1], gj->plan.bshape[2]},
                                            gj->out_img,
                                            gj->out_mask};
        m++;
    }
    if (m == 0) return;
    /* One patch size for the whole share: the creation checks make every sample of a batch alike. */
    const int64_t *patch = NULL;
    bool alike = true;
    for (uint32_t k = 0; k < n; k++) {
        if (w->sst[k] != CD_OK || !w->jobs[k].render) continue;
        if (!patch) patch = w->jobs[k].plan.patch;
        alike &= !memcmp(patch, w->jobs[k].plan.patch, sizeof(int64_t[3]));
    }
    if (device_ok && w->gpu && alike && render_on_device(l, w, m, patch) == CD_OK) return;
    /* The CPU reference for the whole share (the device's outputs are undefined after an error). */
    for (uint32_t k = 0; k < n; k++) {
        gpu_job *gj = &w->jobs[k];
        if (w->sst[k] != CD_OK || !gj->render) continue;
        cd_error e;
        cd_error_clear(&e);
        cd_status st = w->sst[k] = cd_sample_plan_render(&gj->plan, true, gj->box, l->has_mask ? gj->mbox : NULL, l->channels,
                                                         gj->out_img, gj->out_mask, &e);
        if (st != CD_OK && first) {
            *err = e;
            first = false;
        }
    }
    pthread_mutex_lock(&l->mu);
    l->dev.fallback_calls++;
    l->dev.fallback_samples += (uint64_t)m;
    pthread_mutex_unlock(&l->mu);
}

/* ---- preload ---- */

/* Preload job k: the chunks of record k / 2, image (k even) or mask, that are not cached yet, read
 * in groups of PRELOAD_GROUP (one submission each, bounded staging), decoded, inserted without
 * eviction. A chunk that cannot be read or verified is left out: the sample that reads it later
 * reports it (or skips it) as it would without preload. Returns true when the budget is full. */
#define PRELOAD_GROUP 32
static bool preload_job(cd_loader *l, worker_scratch *w, uint64_t k) {
    const size_t rec = (size_t)(k / 2);
    const rec_info *ri = &l->recs[rec];
    const int t = k % 2 ? ri->mask_t : ri->image_t;
    if (t < 0) return false;
    cd_tensor_info ti;
    cd_record_tensor_info(ri->rec, (uint32_t)t, &ti);
    uint64_t room = cd_chunk_cache_room(l->cache);
    bool full = false;
    for (uint32_t first = 0; first < ti.chunk_count && !full;) {
        uint32_t ids[PRELOAD_GROUP];
        cd_chunk_info cis[PRELOAD_GROUP];
        size_t n = 0, total = 0;
        for (; first < ti.chunk_count && n < PRELOAD_GROUP; first++) {
            const uint64_t key = chunk_key(rec, t, first);
            if (cd_chunk_cache_has(l->cache, key)) continue;
            cd_chunk_info *ci = &cis[n];
            cd_record_chunk_info(ri->rec, (uint32_t)t, first, ci);
            if (ci->raw_size > room) {
                full = true;
                break;
            }
            room -= ci->raw_size;
            total += ci->stored_size;
            ids[n++] = first;
        }
        if (!n) continue;
        if (!(w->reqs = grow(w->reqs, &w->reqs_cap, n * sizeof *w->reqs)) || !(w->stored = grow(w->stored, &w->stored_cap, total ? total : 1)))
            return true; /* out of memory: stop preloading, sampling reads on demand */
        size_t off = 0;
        for (size_t q = 0; q < n; q++) {
            w->reqs[q] = (cd_read_req){cd_shard_fd(ri->shard), cis[q].offset, cis[q].stored_size, w->stored + off};
            off += cis[q].stored_size;
        }
        cd_error e;
        cd_error_clear(&e);
        if (cd_chunk_io_read(w->io, w->reqs, n, cd_shard_path(ri->shard), &e) != CD_OK) continue;
        off = 0;
        for (size_t q = 0; q < n; q++) {
            const cd_chunk_info *ci = &cis[q];
            const uint8_t *stored = w->stored + off;
            off += ci->stored_size;
            void *raw = cd_chunk_cache_alloc(l->cache, ci->raw_size);
            if (!raw) return true;
            const uint64_t key = chunk_key(rec, t, ids[q]);
            if (cd_record_decode_chunk(ri->shard, ri->rec, (uint32_t)t, ids[q], stored, raw, &e) != CD_OK ||
                !cd_chunk_cache_preload(l->cache, key, raw, ci->raw_size))
                cd_chunk_cache_free(l->cache, raw, ci->raw_size);
        }
    }
    return full;
}

/* The preload phase of a worker (caller holds mu; returns holding it): claims jobs until none are
 * left, then waits for the others' last jobs, so that no batch starts before the cache is filled. */
static void preload_phase(cd_loader *l, worker_scratch *w) {
    while (l->preloading && !l->stop) {
        if (l->pre_next < l->pre_jobs) {
            const uint64_t k = l->pre_next++;
            l->pre_busy++;
            pthread_mutex_unlock(&l->mu);
            const bool full = preload_job(l, w, k);
            pthread_mutex_lock(&l->mu);
            l->pre_busy--;
            if (full) l->pre_next = l->pre_jobs;
        } else if (l->pre_busy == 0) {
            l->preloading = false;
            pthread_cond_broadcast(&l->cv);
        } else {
            pthread_cond_wait(&l->cv, &l->mu);
        }
    }
}

/* ---- workers ---- */

typedef struct worker_arg {
    cd_loader *l;
    int id;
} worker_arg;

static void *worker_main(void *arg) {
    cd_loader *l = ((worker_arg *)arg)->l;
    worker_scratch *w = &l->scratch[((worker_arg *)arg)->id];
    free(arg);
    pthread_mutex_lock(&l->mu);
    preload_phase(l, w);
    for (;;) {
        slot *s = NULL;
        uint32_t j = 0, n = 1;
        while (!l->stop) {
            for (uint64_t q = l->deliver_seq; q < l->assign_seq; q++) {
                slot *c = &l->slots[q % l->ring];
                if (c->assigned && c->claimed < c->size) {
                    s = c;
                    j = c->claimed;
                    /* the device path takes a share of the batch, rendered by one cd_gpu_augment */
                    if (l->use_gpu) n = c->size - j < l->gpu_share ? c->size - j : l->gpu_share;
                    c->claimed += n;
                    break;
                }
            }
            if (s) break;
            pthread_cond_wait(&l->cv, &l->mu);
        }
        if (l->stop) break;
        l->busy++;
        const bool device_ok = !l->dev.gpu_disabled;
        pthread_mutex_unlock(&l->mu);
        cd_error err;
        cd_error_clear(&err);
        cd_status st = CD_OK;
        if (l->use_gpu)
            make_share(l, w, s, j, n, device_ok, &err);
        else
            st = make_sample(l, w, s, j, NULL, &err);
        pthread_mutex_lock(&l->mu);
        l->busy--;
        for (uint32_t k = j; k < j + n; k++) {
            if (l->use_gpu) st = w->sst[k - j];
            s->ok[k] = st == CD_OK;
            if (st != CD_OK) {
                if (l->o.skip_corrupt && (st == CD_ERR_CORRUPT || st == CD_ERR_TRUNCATED)) {
                    /* counted when the batch is handed out */
                } else if (l->failed == CD_OK) {
                    l->failed = st;
                    snprintf(l->fail_msg, sizeof l->fail_msg, "%s", err.message);
                }
            }
        }
        s->done += n;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* Gives free ring slots the next batches (caller holds the lock). */
static void assign_batches(cd_loader *l) {
    while (l->assign_seq < l->deliver_seq + l->ring) {
        if (l->sched_pos >= l->per_rank || (l->o.drop_last && l->per_rank - l->sched_pos < l->o.batch_size)) {
            l->sched_epoch++;
            l->sched_pos = 0;
        }
        slot *s = &l->slots[l->assign_seq % l->ring];
        uint64_t left = l->per_rank - l->sched_pos;
        s->assigned = true;
        s->epoch = l->sched_epoch;
        s->start = l->sched_pos;
        s->number = l->sched_pos / l->o.batch_size;
        s->size = (uint32_t)(left < l->o.batch_size ? left : l->o.batch_size);
        s->claimed = s->done = 0;
        l->sched_pos += s->size;
        l->assign_seq++;
    }
    pthread_cond_broadcast(&l->cv);
}

/* ---- creation ---- */

/* Stops the workers and frees everything a borrowed batch does not point into (see loader.h). */
void cd_loader_close(cd_loader *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    const bool again = l->closed;
    l->closed = l->stop = true;
    pthread_cond_broadcast(&l->cv); /* wakes a cd_loader_next waiting for a batch, and the workers */
    pthread_mutex_unlock(&l->mu);
    if (again) return;
    for (int i = 0; l->threads && i < l->started; i++) pthread_join(l->threads[i], NULL);
    /* Only cd_loader_next / cd_loader_release may run now: they touch the ring and the counters, none of
     * what follows. The scratch leaves under the lock for cd_loader_device_stats_get. */
    pthread_mutex_lock(&l->mu);
    worker_scratch *scratch = l->scratch;
    l->scratch = NULL;
    for (int i = 0; scratch && i < l->nthreads; i++) {
        worker_scratch *w = &scratch[i];
        l->dev.validation_messages += w->vk_msgs_gone;
        if (w->gpu) { /* the counters outlive the contexts */
            char first[sizeof l->dev.validation_first];
            uint64_t k = cd_gpu_validation_messages(w->gpu, first, sizeof first);
            if (k && !l->dev.validation_first[0]) snprintf(l->dev.validation_first, sizeof l->dev.validation_first, "%s", first);
            l->dev.validation_messages += k;
        }
    }
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; scratch && i < l->nthreads; i++) {
        worker_scratch *w = &scratch[i];
        cd_chunk_io_destroy(w->io);
        cd_gpu_destroy(w->gpu);
        for (uint32_t k = 0; w->jobs && k < l->o.batch_size; k++) {
            free(w->jobs[k].box);
            free(w->jobs[k].mbox);
        }
        free(w->jobs);
        free(w->items);
        free(w->params);
        free(w->sst);
        free(w->box);
        free(w->mbox);
        free(w->stored);
        free(w->raw);
        free(w->reqs);
    }
    free(scratch);
    for (size_t i = 0; l->recs && i < l->nrecs; i++) {
        cd_record_destroy(l->recs[i].rec);
        free(l->recs[i].fg);
    }
    free(l->recs);
    l->recs = NULL;
    free(l->items);
    l->items = NULL;
    free(l->order);
    l->order = NULL;
    l->order_valid = false;
    free(l->threads);
    l->threads = NULL;
    l->started = 0;
    cd_aug_pipeline_destroy(l->pipe);
    l->pipe = NULL;
    pthread_mutex_lock(&l->mu);
    cd_chunk_cache *cache = l->cache;
    l->cache = NULL; /* cd_loader_cache_bytes reads 0 from now on */
    pthread_mutex_unlock(&l->mu);
    cd_chunk_cache_destroy(cache);
    cd_dataset_close(l->ds);
    l->ds = NULL;
}

void cd_loader_destroy(cd_loader *l) {
    if (!l) return;
    cd_loader_close(l);
    for (uint32_t i = 0; l->slots && i < l->ring; i++) {
        slot *s = &l->slots[i];
        free(s->ok);
        free(s->image);
        free(s->mask);
        free(s->label);
        free(s->index);
        free(s->slice);
        free(s->corner);
    }
    free(l->slots);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
}

static cd_status load_records(cd_loader *l, cd_error *err) {
    json_t *m = json_loads(cd_dataset_manifest(l->ds), 0, NULL);
    json_t *entries = json_object_get(m, "records");
    size_t n = json_array_size(entries);
    l->recs = calloc(n ? n : 1, sizeof *l->recs);
    if (!l->recs) {
        json_decref(m);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    cd_status st = CD_OK;
    for (size_t i = 0; i < n && st == CD_OK; i++) {
        json_t *e = json_array_get(entries, i);
        const char *split = json_string_value(json_object_get(e, "split"));
        if (!cd_dataset_split_selected(l->o.splits, split ? split : "")) continue;
        rec_info *ri = &l->recs[l->nrecs];
        ri->dataset_index = i;
        ri->label = (int32_t)json_integer_value(json_object_get(e, "label"));
        if ((st = cd_dataset_read_record(l->ds, i, &ri->rec, &ri->shard, err)) != CD_OK) break;
        l->nrecs++;
        ri->image_t = cd_record_find_tensor(ri->rec, "image");
        ri->mask_t = cd_record_find_tensor(ri->rec, "mask");
        if (ri->image_t < 0) {
            st = cd_fail(err, CD_ERR_FORMAT, "%s: record %zu has no 'image' tensor", cd_shard_path(ri->shard), i);
            break;
        }
        cd_record_tensor_info(ri->rec, (uint32_t)ri->image_t, &ri->img);
        json_t *meta = json_loads(cd_record_metadata(ri->rec), 0, NULL);
        json_t *fg = json_object_get(meta, "fg_locations"), *bb = json_object_get(meta, "mask_bbox");
        if (json_is_array(fg) && json_array_size(fg)) {
            ri->fg = calloc(json_array_size(fg), sizeof *ri->fg);
            size_t k;
            json_t *p;
            json_array_foreach(fg, k, p) {
                bool okp = ri->fg && json_array_size(p) == 3;
                for (int a = 0; okp && a < 3; a++) {
                    json_int_t v = json_integer_value(json_array_get(p, (size_t)a));
                    okp = v >= 0 && v < (json_int_t)ri->img.shape[a];
                    if (okp) ri->fg[ri->nfg][a] = (int32_t)v;
                }
                if (okp) ri->nfg++;
            }
        }
        if (json_is_array(bb) && json_array_size(bb) == 3) {
            ri->has_bbox = true;
            for (int a = 0; a < 3; a++)
                for (int b = 0; b < 2; b++) ri->bbox[a][b] = json_integer_value(json_array_get(json_array_get(bb, (size_t)a), (size_t)b));
        }
        json_decref(meta);
    }
    json_decref(m);
    return st;
}

/* options.device: one cd_gpu_context per worker, created here so that a device that cannot be used is
 * an error now (device "vulkan") or a reasoned CPU choice (device "auto"). */
static cd_status open_device(cd_loader *l, cd_error *err) {
    const char *d = l->o.device ? l->o.device : "cpu";
    snprintf(l->device_name, sizeof l->device_name, "cpu");
    if (!strcmp(d, "cpu")) return CD_OK;
    const bool automatic = !strcmp(d, "auto");
    if (!automatic && strcmp(d, "vulkan"))
        return cd_fail(err, CD_ERR_ARG, "%s: unknown loader device '%s' (cpu, vulkan or auto)", l->o.dataset, d);
    memset(&l->gpu_opts, 0, sizeof l->gpu_opts);
    l->gpu_opts.memory_limit = l->o.gpu_memory_limit;
    cd_error why;
    cd_error_clear(&why);
    cd_status st = CD_OK;
    for (int i = 0; i < l->nthreads && st == CD_OK; i++) {
        worker_scratch *w = &l->scratch[i];
        st = cd_gpu_create(&l->gpu_opts, &w->gpu, &why);
        if (st == CD_OK && automatic && cd_gpu_device(w->gpu)->type == CD_GPU_CPU)
            /* a software device (lavapipe) is slower than the CPU engine: auto keeps the CPU, as CD_MODEL_AUTO */
            st = cd_fail(&why, CD_ERR_UNSUPPORTED, "the Vulkan device '%s' is a CPU implementation", cd_gpu_device(w->gpu)->name);
        if (st == CD_OK && !((w->jobs = calloc(l->o.batch_size, sizeof *w->jobs)) && (w->items = calloc(l->o.batch_size, sizeof *w->items)) &&
                             (w->params = calloc(l->o.batch_size, sizeof *w->params)) && (w->sst = calloc(l->o.batch_size, sizeof *w->sst))))
            st = cd_fail(&why, CD_ERR_NOMEM, "out of memory");
    }
    if (st != CD_OK) {
        for (int i = 0; i < l->nthreads; i++) {
            cd_gpu_destroy(l->scratch[i].gpu);
            l->scratch[i].gpu = NULL;
        }
        if (!automatic) return cd_fail(err, st, "%s: device 'vulkan': %s", l->o.dataset, why.message);
        snprintf(l->device_name, sizeof l->device_name, "cpu (vulkan not used: %.280s)", why.message);
        return CD_OK;
    }
    /* Test hook: each worker's first N device calls report a lost device (1: one re-creation; 2: the
     * device is given up), so that tests exercise the recovery without a GPU that fails. */
    const char *inject = getenv("CIRRDATA_TEST_LOADER_LOST");
    for (int i = 0; inject && i < l->nthreads; i++) l->scratch[i].vk_inject_lost = atoi(inject);
    const cd_gpu_context *g = l->scratch[0].gpu;
    snprintf(l->device_name, sizeof l->device_name, "vulkan: %s", cd_gpu_device(g)->name);
    l->dev.validation = cd_gpu_validation_enabled(g);
    /* Without a pipeline a sample is an exact crop: the CPU cuts it, the contexts stay idle. */
    l->use_gpu = l->pipe != NULL;
    /* A worker's share: the samples in flight (ring x batch) spread over the workers, at most a batch,
     * so that every worker has decoding to do and each device call carries as many samples as it can. */
    const uint64_t inflight = (uint64_t)l->ring * l->o.batch_size, share = (inflight + (uint64_t)l->nthreads - 1) / (uint64_t)l->nthreads;
    l->gpu_share = (uint32_t)(share < 1 ? 1 : share > l->o.batch_size ? l->o.batch_size : share);
    return CD_OK;
}

/* $name as an integer in lo..INT_MAX (dflt when unset or empty); an error naming it otherwise. */
static cd_status env_int(const char *name, int lo, int dflt, int *out, cd_error *err) {
    const char *v = getenv(name);
    if (!v || !*v) {
        *out = dflt;
        return CD_OK;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > INT_MAX)
        return cd_fail(err, CD_ERR_ARG, "$%s='%.64s' is not an integer in %d..%d", name, v, lo, INT_MAX);
    *out = (int)x;
    return CD_OK;
}

/* "96 x 96 x 32" */
static const char *xyz(const int64_t p[3], char *buf, size_t len) {
    snprintf(buf, len, "%lld x %lld x %lld", (long long)p[0], (long long)p[1], (long long)p[2]);
    return buf;
}

/* The bounds of loader.h, checked before anything is allocated (rank is checked once world_size is
 * known). The wording "<option> must be in <bounds> (got <value>)" is also the Python binding's, for
 * values that do not fit the C field. */
static cd_status check_options(const cd_loader_options *o, cd_error *err) {
    if (o->batch_size < 1 || o->batch_size > CD_LOADER_MAX_BATCH)
        return cd_fail(err, CD_ERR_ARG, "batch_size must be in 1..%u (got %u)", CD_LOADER_MAX_BATCH, o->batch_size);
    if (o->threads < 0 || o->threads > CD_LOADER_MAX_THREADS)
        return cd_fail(err, CD_ERR_ARG, "threads must be in 0..%d, 0 for one per online CPU (got %d)", CD_LOADER_MAX_THREADS, o->threads);
    if (o->ring > CD_LOADER_MAX_RING)
        return cd_fail(err, CD_ERR_ARG, "ring must be in 0..%u, 0 for the default 4 (got %u)", CD_LOADER_MAX_RING, o->ring);
    if (!(o->foreground_fraction >= 0 && o->foreground_fraction <= 1)) /* NaN too */
        return cd_fail(err, CD_ERR_ARG, "foreground_fraction must be in [0, 1] (got %g)", o->foreground_fraction);
    if ((unsigned)o->mode > CD_LOADER_SLICE)
        return cd_fail(err, CD_ERR_ARG, "mode must be in 0..2, volume, patch or slice (got %d)", (int)o->mode);
    if ((unsigned)o->io > CD_IO_PREAD) return cd_fail(err, CD_ERR_ARG, "io must be in 0..2, auto, uring or pread (got %d)", (int)o->io);
    if (o->world_size < 0)
        return cd_fail(err, CD_ERR_ARG, "world_size must be in 0..%d, 0 for $WORLD_SIZE (got %d)", INT_MAX, o->world_size);
    const uint64_t ram = phys_ram();
    if (o->cache_bytes < -1 || (ram && o->cache_bytes > 0 && (uint64_t)o->cache_bytes > ram))
        return cd_fail(err, CD_ERR_ARG, "cache_bytes must be in -1..%llu (the physical memory), -1 for no cache, 0 for the default (got %lld)",
                       (unsigned long long)ram, (long long)o->cache_bytes);
    if (o->mode == CD_LOADER_SLICE) return CD_OK; /* the patch is the slice */
    uint64_t max_dim, max_voxels;
    cd_status st = cd_limit(CD_LIMIT_DIM, &max_dim, err);
    if (st == CD_OK) st = cd_limit(CD_LIMIT_VOXELS, &max_voxels, err);
    if (st != CD_OK) return st;
    const int64_t *p = o->patch;
    const bool as_stored = o->mode == CD_LOADER_VOLUME && !p[0] && !p[1] && !p[2];
    if (as_stored) return CD_OK;
    char b[96], d[160];
    const char *alt = o->mode == CD_LOADER_VOLUME ? ", or all 0 for each record's own size" : "";
    for (int a = 0; a < 3; a++)
        if (p[a] < 1) return cd_fail(err, CD_ERR_ARG, "patch must be in 1..%llu per axis%s (got %s)", (unsigned long long)max_dim, alt, xyz(p, b, sizeof b));
    for (int a = 0; a < 3; a++)
        if ((uint64_t)p[a] > max_dim)
            return cd_fail(err, CD_ERR_LIMIT, "patch must be in 1..%llu per axis%s (got %s): %lld is above %s", (unsigned long long)max_dim, alt,
                           xyz(p, b, sizeof b), (long long)p[a], cd_limit_describe(CD_LIMIT_DIM, max_dim, d, sizeof d));
    uint64_t v;
    if (__builtin_mul_overflow((uint64_t)p[0], (uint64_t)p[1], &v) || __builtin_mul_overflow(v, (uint64_t)p[2], &v) || v > max_voxels)
        return cd_fail(err, CD_ERR_LIMIT, "patch %s is above %s", xyz(p, b, sizeof b), cd_limit_describe(CD_LIMIT_VOXELS, max_voxels, d, sizeof d));
    return CD_OK;
}

/* Bytes of the batch ring (every slot's arrays), or false on overflow. */
static bool ring_bytes(const cd_loader *l, uint64_t *out) {
    const uint64_t per_voxel = (uint64_t)l->channels * sizeof(float) + (l->has_mask ? 1 : 0);
    const uint64_t per_sample_extra = sizeof(bool) + sizeof(int32_t) + 5 * sizeof(int64_t);
    uint64_t v;
    if (__builtin_mul_overflow((uint64_t)l->max_pvox, per_voxel, &v) || __builtin_add_overflow(v, per_sample_extra, &v) ||
        __builtin_mul_overflow(v, (uint64_t)l->o.batch_size, &v) || __builtin_mul_overflow(v, (uint64_t)l->ring, &v))
        return false;
    *out = v;
    return true;
}

cd_status cd_loader_create(const cd_loader_options *opts, cd_loader **out, cd_error *err) {
    if (!opts || !opts->dataset || !out) return cd_fail(err, CD_ERR_ARG, "cd_loader_create: missing dataset");
    *out = NULL;
    cd_status st = check_options(opts, err);
    int world = opts->world_size, rank = opts->rank;
    if (st == CD_OK && world == 0 && (st = env_int("WORLD_SIZE", 1, 1, &world, err)) == CD_OK) st = env_int("RANK", 0, 0, &rank, err);
    if (st == CD_OK && (rank < 0 || rank >= world))
        st = cd_fail(err, CD_ERR_ARG, "rank must be in 0..%d (world_size %d) (got %d)", world - 1, world, rank);
    if (st != CD_OK) return st;
    cd_loader *l = calloc(1, sizeof *l);
    if (!l) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->o = *opts;
    if (!l->o.splits) l->o.splits = "train";
    l->o.world_size = world;
    l->o.rank = rank;
    l->ring = l->o.ring ? l->o.ring : 4;
    uint64_t budget = 0;
    if (l->o.cache_bytes > 0) {
        budget = (uint64_t)l->o.cache_bytes;
    } else if (l->o.cache_bytes == 0) {
        uint64_t ram = phys_ram();
        budget = ram / 8 < ((uint64_t)2 << 30) ? ram / 8 : ((uint64_t)2 << 30);
    }
    l->cache = cd_chunk_cache_create(budget);
    l->cache_enabled = budget > 0;
    if (!l->cache) {
        cd_loader_destroy(l);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    st = cd_dataset_open(opts->dataset, &l->ds, err);
    if (st == CD_OK && l->o.augment && strcmp(l->o.augment, "none")) st = cd_aug_pipeline_load(l->o.augment, &l->pipe, err);
    if (st == CD_OK) st = load_records(l, err);
    if (st == CD_OK && l->nrecs == 0) st = cd_fail(err, CD_ERR_ARG, "%s: no records in split(s) '%s'", opts->dataset, l->o.splits);
    if (st != CD_OK) {
        cd_loader_destroy(l);
        return st;
    }
    /* Shapes, channels, masks. */
    l->channels = l->recs[0].img.channels;
    l->has_mask = true;
    for (size_t i = 0; i < l->nrecs; i++) {
        if (l->recs[i].img.channels != l->channels)
            st = cd_fail(err, CD_ERR_FORMAT, "%s: records have different channel counts (%u and %u)", opts->dataset, l->channels,
                         l->recs[i].img.channels);
        if (l->recs[i].mask_t < 0) l->has_mask = false;
    }
    const uint32_t *s0 = l->recs[0].img.shape;
    if (l->o.mode == CD_LOADER_PATCH) {
        memcpy(l->patch, l->o.patch, sizeof l->patch); /* checked by check_options */
    } else if (l->o.mode == CD_LOADER_VOLUME) {
        bool fixed = l->o.patch[0] > 0 && l->o.patch[1] > 0 && l->o.patch[2] > 0;
        for (int a = 0; a < 3; a++) l->patch[a] = fixed ? l->o.patch[a] : s0[a];
        l->per_record_shape = !fixed;
        for (size_t i = 0; i < l->nrecs && !fixed && l->o.batch_size > 1 && st == CD_OK; i++)
            if (memcmp(l->recs[i].img.shape, s0, sizeof(uint32_t[3])))
                st = cd_fail(err, CD_ERR_ARG,
                             "%s: volume mode with batch_size > 1 needs records of one shape (record %llu is %ux%ux%u, record %llu "
                             "%ux%ux%u); give a fixed size (patch) to crop/pad",
                             opts->dataset, (unsigned long long)l->recs[0].dataset_index, s0[0], s0[1], s0[2],
                             (unsigned long long)l->recs[i].dataset_index, l->recs[i].img.shape[0], l->recs[i].img.shape[1],
                             l->recs[i].img.shape[2]);
    } else {
        l->patch[0] = s0[0];
        l->patch[1] = s0[1];
        l->patch[2] = 1;
        for (size_t i = 0; i < l->nrecs && st == CD_OK; i++)
            if (l->recs[i].img.shape[0] != s0[0] || l->recs[i].img.shape[1] != s0[1])
                st = cd_fail(err, CD_ERR_ARG, "%s: slice mode needs one in-plane size (a 2D recipe such as cirrhosisstage-2d)",
                             opts->dataset);
    }
    /* The epoch's items. */
    if (st == CD_OK) {
        uint64_t n = 0;
        for (size_t i = 0; i < l->nrecs; i++) {
            if (l->o.mode != CD_LOADER_SLICE) {
                n++;
            } else if (l->o.slices_with_mask_only) {
                if (l->recs[i].has_bbox) n += (uint64_t)(l->recs[i].bbox[2][1] - l->recs[i].bbox[2][0]);
            } else {
                n += l->recs[i].img.shape[2];
            }
        }
        l->items = calloc(n ? n : 1, sizeof *l->items);
        if (!l->items) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < l->nrecs && st == CD_OK; i++) {
            if (l->o.mode != CD_LOADER_SLICE) {
                l->items[l->nitems++] = (item){(uint32_t)i, -1};
                continue;
            }
            int64_t z0 = 0, z1 = l->recs[i].img.shape[2];
            if (l->o.slices_with_mask_only) {
                if (!l->recs[i].has_bbox) continue;
                z0 = l->recs[i].bbox[2][0];
                z1 = l->recs[i].bbox[2][1];
            }
            for (int64_t z = z0; z < z1; z++) l->items[l->nitems++] = (item){(uint32_t)i, (int32_t)z};
        }
        l->per_rank = l->nitems / (uint64_t)l->o.world_size + ((uint64_t)l->o.rank < l->nitems % (uint64_t)l->o.world_size);
        if (l->per_rank == 0) st = cd_fail(err, CD_ERR_ARG, "%s: no samples for rank %d of %d", opts->dataset, l->o.rank, l->o.world_size);
        l->bpe = l->o.drop_last ? l->per_rank / l->o.batch_size : (l->per_rank + l->o.batch_size - 1) / l->o.batch_size;
        if (st == CD_OK && l->bpe == 0) st = cd_fail(err, CD_ERR_ARG, "fewer samples than one batch with drop_last");
        l->order = calloc(l->per_rank ? l->per_rank : 1, sizeof *l->order);
        if (st == CD_OK && !l->order) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    /* The ring: every buffer allocated now; nothing grows later. */
    l->max_pvox = (size_t)(l->patch[0] * l->patch[1] * l->patch[2]);
    for (size_t i = 0; l->per_record_shape && i < l->nrecs; i++) {
        size_t v = (size_t)l->recs[i].img.shape[0] * l->recs[i].img.shape[1] * l->recs[i].img.shape[2];
        if (v > l->max_pvox) l->max_pvox = v;
    }
    const size_t pvox = l->max_pvox, B = l->o.batch_size;
    uint64_t rb = 0;
    const uint64_t ram = phys_ram();
    if (st == CD_OK && (!ring_bytes(l, &rb) || (ram && rb > ram))) {
        char need[32], have[32];
        st = cd_fail(err, CD_ERR_LIMIT,
                     "%s: the batch ring (ring %u x batch_size %zu x %u channel(s) x %zu voxels) needs %s, more than the physical "
                     "memory (%s): lower ring, batch_size or patch",
                     opts->dataset, l->ring, B, l->channels, pvox, rb ? cd_format_bytes(rb, need, sizeof need) : "over 2^64 bytes",
                     cd_format_bytes(ram, have, sizeof have));
    }
    if (st == CD_OK && !(l->slots = calloc(l->ring, sizeof *l->slots))) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
    for (uint32_t i = 0; st == CD_OK && i < l->ring; i++) {
        slot *s = &l->slots[i];
        s->ok = calloc(B, sizeof *s->ok);
        s->image = malloc(B * l->channels * pvox * sizeof(float));
        s->mask = l->has_mask ? malloc(B * pvox) : NULL;
        s->label = calloc(B, sizeof *s->label);
        s->index = calloc(B, sizeof *s->index);
        s->slice = calloc(B, sizeof *s->slice);
        s->corner = calloc(3 * B, sizeof *s->corner);
        if (!s->ok || !s->image || (l->has_mask && !s->mask) || !s->label || !s->index || !s->slice || !s->corner)
            st = cd_fail(err, CD_ERR_NOMEM, "cannot allocate the batch ring (%u batches of %zu samples of %zu voxels)", l->ring, B, pvox);
    }
    l->nthreads = l->o.threads > 0 ? l->o.threads : cd_thread_count(0);
    if (st == CD_OK && (!(l->scratch = calloc((size_t)l->nthreads, sizeof *l->scratch)) ||
                        !(l->threads = calloc((size_t)l->nthreads, sizeof *l->threads))))
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
    bool want_uring = l->o.io != CD_IO_PREAD;
    l->uring = want_uring;
    for (int i = 0; i < l->nthreads && st == CD_OK; i++) {
        st = cd_chunk_io_create(want_uring, l->o.io == CD_IO_URING, 64, &l->scratch[i].io, err);
        if (st == CD_OK && !cd_chunk_io_is_uring(l->scratch[i].io)) l->uring = false;
    }
    if (st == CD_OK) st = open_device(l, err);
    if (st != CD_OK) {
        cd_loader_destroy(l);
        return st;
    }
    /* Preload: the workers fill the cache before their first batch (see preload_phase). */
    l->preloading = l->o.preload && l->cache_enabled;
    l->pre_jobs = l->preloading ? 2 * (uint64_t)l->nrecs : 0;
    pthread_mutex_lock(&l->mu);
    assign_batches(l);
    pthread_mutex_unlock(&l->mu);
    for (; l->started < l->nthreads; l->started++) {
        worker_arg *a = malloc(sizeof *a);
        if (!a) break;
        a->l = l;
        a->id = l->started;
        if (pthread_create(&l->threads[l->started], NULL, worker_main, a) != 0) {
            free(a);
            break;
        }
    }
    if (l->started == 0) {
        cd_loader_destroy(l);
        return cd_fail(err, CD_ERR_INTERNAL, "cannot start loader threads");
    }
    *out = l;
    return CD_OK;
}

/* ---- consuming ---- */

cd_status cd_loader_next(cd_loader *l, cd_batch **batch, cd_error *err) {
    if (!l || !batch) return cd_fail(err, CD_ERR_ARG, "cd_loader_next: NULL argument");
    *batch = NULL;
    pthread_mutex_lock(&l->mu);
    if (l->closed) {
        pthread_mutex_unlock(&l->mu);
        return cd_fail(err, CD_ERR_ARG, "the loader is closed");
    }
    slot *s = &l->slots[l->deliver_seq % l->ring];
    if (s->assigned && s->epoch != l->current_epoch && !l->epoch_end_reported) {
        /* The previous epoch is over: say so once. */
        l->epoch_end_reported = true;
        pthread_mutex_unlock(&l->mu);
        return CD_OK;
    }
    while (l->failed == CD_OK && !l->closed && s->done < s->size) pthread_cond_wait(&l->cv, &l->mu);
    if (l->closed) { /* cd_loader_close from another thread while this one waited */
        pthread_mutex_unlock(&l->mu);
        return cd_fail(err, CD_ERR_ARG, "the loader is closed");
    }
    if (l->failed != CD_OK) {
        cd_status st = cd_fail(err, l->failed, "%s", l->fail_msg);
        pthread_mutex_unlock(&l->mu);
        return st;
    }
    l->current_epoch = s->epoch;
    l->epoch_end_reported = false;
    /* The resume state counts a batch as delivered once it is handed out. */
    l->deliver_epoch = s->epoch;
    l->deliver_pos = s->start + s->size;
    if (l->deliver_pos >= l->per_rank || (l->o.drop_last && l->per_rank - l->deliver_pos < l->o.batch_size)) {
        l->deliver_epoch++;
        l->deliver_pos = 0;
    }
    /* Skipped (corrupt) samples are dropped: move the good ones together. */
    const size_t pvox = (size_t)(s->shape[0] * s->shape[1] * s->shape[2]);
    uint32_t k = 0;
    for (uint32_t j = 0; j < s->size; j++) {
        if (!s->ok[j]) {
            l->skipped++;
            continue;
        }
        if (k != j) {
            memmove(s->image + (size_t)k * l->channels * pvox, s->image + (size_t)j * l->channels * pvox, l->channels * pvox * sizeof(float));
            if (s->mask) memmove(s->mask + (size_t)k * pvox, s->mask + (size_t)j * pvox, pvox);
            s->label[k] = s->label[j];
            s->index[k] = s->index[j];
            s->slice[k] = s->slice[j];
            memmove(s->corner + 3 * k, s->corner + 3 * j, 3 * sizeof *s->corner);
        }
        k++;
    }
    s->batch = (cd_batch){.size = k, .channels = l->channels, .shape = {s->shape[0], s->shape[1], s->shape[2]}, .image = s->image,
                          .mask = s->mask, .label = s->label, .index = s->index, .slice = s->slice, .corner = s->corner, .epoch = s->epoch,
                          .number = s->number};
    pthread_mutex_unlock(&l->mu);
    *batch = &s->batch;
    return CD_OK;
}

void cd_loader_release(cd_loader *l, cd_batch *batch) {
    if (!l || !batch) return;
    pthread_mutex_lock(&l->mu);
    slot *s = &l->slots[l->deliver_seq % l->ring];
    if (!l->closed && &s->batch == batch) { /* closed: the batch stays as it is until cd_loader_destroy */
        s->assigned = false;
        l->deliver_seq++;
        assign_batches(l);
    }
    pthread_mutex_unlock(&l->mu);
}

void cd_loader_get_state(const cd_loader *l, cd_loader_state *out) {
    pthread_mutex_lock((pthread_mutex_t *)&l->mu);
    out->seed = l->o.seed;
    out->epoch = l->deliver_epoch;
    out->position = l->deliver_pos;
    pthread_mutex_unlock((pthread_mutex_t *)&l->mu);
}

cd_status cd_loader_set_state(cd_loader *l, const cd_loader_state *state, cd_error *err) {
    if (!l || !state) return cd_fail(err, CD_ERR_ARG, "cd_loader_set_state: NULL argument");
    if (l->closed) return cd_fail(err, CD_ERR_ARG, "the loader is closed");
    if (state->seed != l->o.seed)
        return cd_fail(err, CD_ERR_ARG, "state was saved with seed %llu, this loader has seed %llu", (unsigned long long)state->seed,
                       (unsigned long long)l->o.seed);
    if (state->epoch > CD_LOADER_MAX_EPOCH)
        return cd_fail(err, CD_ERR_ARG, "state epoch must be in 0..%llu (got %llu)", CD_LOADER_MAX_EPOCH, (unsigned long long)state->epoch);
    if (state->position >= l->per_rank)
        return cd_fail(err, CD_ERR_ARG, "state position must be in 0..%llu, the samples of an epoch of this rank (got %llu)",
                       (unsigned long long)l->per_rank - 1, (unsigned long long)state->position);
    pthread_mutex_lock(&l->mu);
    /* Stop handing out work, let samples in progress finish, then restart the schedule. */
    for (uint32_t i = 0; i < l->ring; i++) l->slots[i].assigned = false;
    l->deliver_seq = l->assign_seq;
    while (l->busy > 0) pthread_cond_wait(&l->cv, &l->mu);
    if (l->closed) {
        pthread_mutex_unlock(&l->mu);
        return cd_fail(err, CD_ERR_ARG, "the loader is closed");
    }
    l->failed = CD_OK;
    l->sched_epoch = l->deliver_epoch = l->current_epoch = state->epoch;
    l->sched_pos = l->deliver_pos = state->position;
    l->epoch_end_reported = false;
    assign_batches(l);
    pthread_mutex_unlock(&l->mu);
    return CD_OK;
}

uint64_t cd_loader_epoch_samples(const cd_loader *l) { return l->per_rank; }
uint64_t cd_loader_epoch_batches(const cd_loader *l) { return l->bpe; }
uint64_t cd_loader_skipped(const cd_loader *l) { return l->skipped; }
uint64_t cd_loader_cache_bytes(const cd_loader *l) { return l->cache ? cd_chunk_cache_bytes(l->cache) : 0; }
const char *cd_loader_io_name(const cd_loader *l) { return l->uring ? "uring" : "pread"; }
const char *cd_loader_device_name(const cd_loader *l) { return l->device_name; }

void cd_loader_device_stats_get(const cd_loader *l, cd_loader_device_stats *out) {
    cd_loader *m = (cd_loader *)l; /* the lock and the contexts' message counters */
    pthread_mutex_lock(&m->mu);
    *out = l->dev;
    for (int i = 0; l->scratch && i < l->nthreads; i++) {
        worker_scratch *w = &m->scratch[i];
        out->validation_messages += w->vk_msgs_gone;
        if (w->gpu) {
            char first[sizeof out->validation_first];
            uint64_t k = cd_gpu_validation_messages(w->gpu, first, sizeof first);
            if (k && !out->validation_first[0]) snprintf(out->validation_first, sizeof out->validation_first, "%s", first);
            out->validation_messages += k;
        }
    }
    pthread_mutex_unlock(&m->mu);
}
