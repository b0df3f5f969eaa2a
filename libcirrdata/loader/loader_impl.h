/* The training loader's shared state (internal; the API is cirrdata/loader.h). One file per concern:
 *   loader.c   create, close, destroy and the small accessors: ties the others together
 *   options.c  the bounds of the options, rank and world size from the environment
 *   records.c  the split's records, their shapes and the sample shape
 *   order.c    the epoch's items, their permutation and this rank's share
 *   read.c     reading a box of a record's tensor from its chunks (decoded-chunk cache, io_uring)
 *   workers.c  the worker threads and one sample made on the CPU (read, cut, augment)
 *   device.c   the Vulkan path: a worker's share of a batch in one device call, its CPU fallback
 *   preload.c  filling the decoded-chunk cache before the first batch
 *   ring.c     the batch ring: scheduling, next, release
 *   state.c    get / set the resume state
 * Locking: mu guards the ring, the schedule, the counters and the epoch order cache; workers hold it
 * only to claim work and to report it. */
#ifndef CD_LOADER_LOADER_IMPL_H
#define CD_LOADER_LOADER_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "augment/sample_plan.h"
#include "cirrdata/augment.h"
#include "cirrdata/dataset.h"
#include "cirrdata/gpu.h"
#include "cirrdata/loader.h"
#include "gpu/device_policy.h"
#include "core/internal.h"
#include "loader/chunk_cache.h"
#include "loader/chunk_io.h"

typedef struct rec_info {
    uint64_t dataset_index;
    int32_t label;
    cd_record *rec;
    const cd_shard *shard;
    int image_t, mask_t; /* tensor numbers; mask_t -1 when absent */
    cd_tensor_info img;
    uint32_t nfg;
    int32_t (*fg)[3]; /* foreground voxel locations from the metadata */
    bool has_bbox;
    int64_t bbox[3][2];
} rec_info;

typedef struct item {
    uint32_t rec;
    int32_t z; /* slice mode: the slice; else -1 */
} item;

typedef struct slot {
    bool assigned;
    bool borrowed; /* handed out by cd_loader_next, not yet released */
    bool lent;     /* handed over by cd_loader_lend: back when its shared flag is 0 again */
    uint64_t epoch, start, number;
    uint32_t size, claimed, done;
    bool *ok;
    float *image;
    uint8_t *mask;
    int32_t *label;
    int64_t *index, *slice, *corner;
    int64_t shape[3]; /* of this batch's samples */
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
    float *out_img; /* into the ring slot */
    uint8_t *out_mask;
    bool render; /* false: failed, or empty and already zeroed */
} gpu_job;

typedef struct worker_scratch {
    cd_chunk_io *io;
    cd_device_slot gpu; /* device "vulkan": this worker's own context (the device policy's slot) */
    gpu_job *jobs;      /* batch_size of them */
    cd_gpu_spatial_item *items;
    cd_aug_params *params;
    cd_status *sst; /* per sample of the share */
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
    int64_t patch[3];      /* sample size; in volume mode without a fixed size, record 0's (records.c) */
    bool per_record_shape; /* volume mode without a fixed size: each sample keeps its record's shape */
    size_t max_pvox;       /* voxels of the largest sample: what ring buffers hold per sample */
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
    uint64_t assign_seq, deliver_seq; /* batch sequence numbers */
    uint8_t *shared_base;             /* ring_shared: the memfd mapping holding every slot's image and mask */
    size_t shared_bytes, shared_stride;
    int shared_fd;                       /* -1 when the ring is not shared */
    uint32_t *queue;                     /* queue[seq % ring]: the slot of batch seq, deliver_seq <= seq < assign_seq
                                            (slots come back in any order: batches may be released in any) */
    uint32_t borrowed;                   /* batches handed out and not released */
    uint32_t lent;                       /* slots lent (cd_loader_lend) whose flag is still 1 */
    bool resetting;                      /* cd_loader_set_state is waiting for the workers */
    bool lend_polling;                   /* a worker is waiting on a timer to look at the lend flags */
    long lend_poll_ns;                   /* its interval: doubles while nothing comes back */
    uint64_t sched_epoch, sched_pos;     /* next batch to assign */
    uint64_t current_epoch;              /* epoch of the batches being delivered */
    uint64_t deliver_epoch, deliver_pos; /* where the next delivered batch starts (resume state) */
    bool epoch_end_reported;
    int busy;
    bool stop;   /* the workers are to exit (cd_loader_close) */
    bool closed; /* cd_loader_close has begun: next / set_state refuse */
    cd_status failed;
    char fail_msg[CD_ERROR_MESSAGE_MAX];
    uint64_t skipped;
    bool uring;
    /* device path (cirrdata/loader.h): counters under mu */
    bool use_gpu;       /* workers render through their cd_gpu_context */
    uint32_t gpu_share; /* samples of a batch a worker claims at once */
    char device_name[320];
    cd_device_policy policy; /* cirrdata/device.h: resolution, fallbacks, the note */
    cd_loader_device_stats dev;
    /* preload (options.preload): jobs are (record, tensor) pairs, claimed under mu */
    bool preloading; /* workers take no batch until it is over */
    uint64_t pre_next, pre_jobs;
    int pre_busy;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t *threads;
    worker_scratch *scratch;
    int nthreads, started;
};

/* ---- options.c ---- */

/* Bytes of physical memory (0 when unknown). */
CD_INTERNAL uint64_t cd_loader_phys_ram(void);
/* The bounds of loader.h, and world size / rank (from $WORLD_SIZE / $RANK when world_size is 0). */
CD_INTERNAL cd_status cd_loader_check_options(const cd_loader_options *o, int *world, int *rank, cd_error *err);

/* ---- records.c ---- */

/* Reads the selected splits' records (tensors, labels, foreground locations, mask boxes). */
CD_INTERNAL cd_status cd_loader_records_load(cd_loader *l, cd_error *err);
/* Channels, masks and the sample shape (l->patch, per_record_shape) the mode gives the records. */
CD_INTERNAL cd_status cd_loader_records_shape(cd_loader *l, cd_error *err);
CD_INTERNAL void cd_loader_records_free(cd_loader *l);

/* ---- order.c ---- */

/* The epoch's items (records, or slices), this rank's share of them and the batches of an epoch. */
CD_INTERNAL cd_status cd_loader_order_plan(cd_loader *l, cd_error *err);
/* This rank's item order for an epoch (caller holds mu); NULL when out of memory. */
CD_INTERNAL const uint32_t *cd_loader_epoch_order(cd_loader *l, uint64_t epoch);

/* ---- read.c ---- */

/* Grows p to hold need bytes (contents kept); NULL when out of memory (p is then still valid). */
CD_INTERNAL void *cd_loader_grow(void *p, size_t *cap, size_t need);
/* The decoded-chunk cache's key of chunk `chunk` of tensor t of record rec. */
static inline uint64_t cd_loader_chunk_key(size_t rec, int t, uint32_t chunk) {
    return ((uint64_t)rec << 36) | ((uint64_t)t << 32) | chunk;
}
/* Reads the box [lo, hi) (inside the tensor) of tensor t of record number rec into fbox / ubox
 * (laid out as the box). */
CD_INTERNAL cd_status cd_loader_read_box(cd_loader *l, worker_scratch *w, size_t rec, int t, const int64_t lo[3],
                                         const int64_t hi[3], float *fbox, uint8_t *ubox, cd_error *err);
/* A plan that is a map (cd_sample_plan_direct): the voxels go straight from the chunks into the
 * output, one copy, without the staging box; then the intensity ops. Equal to the box path bit for bit. */
CD_INTERNAL cd_status cd_loader_read_direct(cd_loader *l, worker_scratch *w, size_t rec, const cd_sample_plan *plan,
                                            const cd_sample_map *m, float *out_img, uint8_t *out_mask, cd_error *err);

/* ---- workers.c ---- */

/* The worker count, their scratch and their chunk readers. */
CD_INTERNAL cd_status cd_loader_workers_prepare(cd_loader *l, cd_error *err);
/* Starts the worker threads (l->started of them); false when none could start. */
CD_INTERNAL bool cd_loader_workers_start(cd_loader *l);
/* Frees the scratch of stopped workers. */
CD_INTERNAL void cd_loader_workers_free(cd_loader *l, worker_scratch *scratch);
/* Makes sample j of slot s. gj non-NULL (device path): reads its box into gj's buffers and plans it,
 * leaving the rendering to the share's cd_gpu_augment (gj->render), except an empty plan (zeroed here). */
CD_INTERNAL cd_status cd_loader_make_sample(cd_loader *l, worker_scratch *w, slot *s, uint32_t j, gpu_job *gj,
                                            cd_error *err);

/* ---- device.c ---- */

/* options.device through the device policy (gpu/device_policy.h): one slot (context) per worker,
 * created here so that a device that cannot be used is an error now (CD_DEVICE_VULKAN) or a reasoned
 * CPU choice (CD_DEVICE_AUTO). */
CD_INTERNAL cd_status cd_loader_device_open(cd_loader *l, cd_error *err);
/* Samples j0 .. j0 + n - 1 of slot s rendered on the worker's device, or on the CPU when it cannot.
 * Per-sample statuses in w->sst; err receives the first one that is not a skippable corruption. */
CD_INTERNAL void cd_loader_make_share(cd_loader *l, worker_scratch *w, slot *s, uint32_t j0, uint32_t n, bool device_ok,
                                      cd_error *err);
/* Adds the validation messages of the workers' contexts to *out (caller holds mu). */
CD_INTERNAL void cd_loader_device_messages(const cd_loader *l, worker_scratch *scratch, cd_loader_device_stats *out);

/* ---- preload.c ---- */

/* The preload phase of a worker (caller holds mu; returns holding it). */
CD_INTERNAL void cd_loader_preload_phase(cd_loader *l, worker_scratch *w);

/* ---- ring.c ---- */

/* Every buffer of the batch ring, allocated now; nothing grows later. */
CD_INTERNAL cd_status cd_loader_ring_alloc(cd_loader *l, cd_error *err);
CD_INTERNAL void cd_loader_ring_free(cd_loader *l);
/* Gives free ring slots the next batches (caller holds the lock). */
CD_INTERNAL void cd_loader_assign_batches(cd_loader *l);
/* While slots are lent, an idle worker looks at their flags after a wait that starts at MIN and doubles
 * up to MAX while nothing comes back (nothing signals the flags: they live in shared memory). */
#define CD_LOADER_LEND_POLL_MIN_NS 100000L
#define CD_LOADER_LEND_POLL_MAX_NS 2000000L
/* Takes back the lent slots whose shared flag is 0 and assigns them (caller holds mu); how many. */
CD_INTERNAL uint32_t cd_loader_reclaim_lent(cd_loader *l);
/* Position of this loader's first batch of an epoch (batch_offset x batch_size; ring.c). */
CD_INTERNAL uint64_t cd_loader_epoch_start(const cd_loader *l);

#endif
