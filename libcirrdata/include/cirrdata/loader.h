/* cirrdata/loader.h — deterministic, resumable, augmented training batches from a converted dataset.
 *
 * Order: each epoch is a seeded permutation of the selected records (split filter), partitioned
 * across ranks (rank r takes positions r, r + W, ...: disjoint, together covering the epoch), cut
 * into batches. Content: every sample is a pure function of (seed, epoch, record index, op) through
 * Philox streams, so batches do not depend on the thread count or timing, and a loader restored from
 * a state yields exactly the batches an uninterrupted one would have.
 *
 * Engine: worker threads read only the chunks a sample needs (io_uring, or pread as the fallback),
 * verify and decode them, sample/augment into a ring of preallocated batch buffers. The consumer
 * borrows a batch (cd_loader_next) and gives it back (cd_loader_release); memory is bounded by the
 * ring and per-worker scratch and does not grow.
 *
 * Lifetime: cd_loader_close stops the loader (workers joined, dataset, cache and devices freed) but keeps
 * the ring, so that batches borrowed before stay readable; cd_loader_destroy frees the rest. Bindings
 * that hand out views of the ring (the Python Loader) close at once and destroy when the last view goes.
 *
 * Thread safety: one consumer thread per loader; cd_loader_close may also be called from another thread
 * while the consumer is inside cd_loader_next or cd_loader_release (see cd_loader_close). */
#ifndef CIRRDATA_LOADER_H
#define CIRRDATA_LOADER_H

#include "cirrdata/api.h"
#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/augment.h" /* cd_loader_mode */
#include "cirrdata/device.h"
#include "cirrdata/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cd_loader_io { CD_IO_AUTO = 0, CD_IO_URING, CD_IO_PREAD } cd_loader_io;

/* Bounds of the options, checked by cd_loader_create (CD_ERR_ARG naming the option, its bound and the
 * value given). They are far above any real use; they exist so that a typo or a wrapped negative number
 * is an error, not gigabytes of ring or a million threads. Patch sizes are also held to the caps of
 * cirrdata/limits.h (max_dim per axis, max_voxels per sample: CD_ERR_LIMIT), and the whole batch ring to
 * the physical memory (CD_ERR_LIMIT). */
#define CD_LOADER_MAX_BATCH 65536u        /* batch_size 1..65536 */
#define CD_LOADER_MAX_THREADS 1024        /* threads 0..1024 */
#define CD_LOADER_MAX_RING 64u            /* ring 0..64 */
#define CD_LOADER_CACHE_AUTO (-1)         /* cache_bytes: min(2 GiB, RAM / 8) */
#define CD_LOADER_MAX_EPOCH 4294967295ull /* epochs 0..2^32 - 1: the sample streams take the epoch as 32 bits */
#define CD_LOADER_MAX_STRIDE 65536u       /* batch_stride 0..65536 */

typedef struct cd_loader_options {
    const char *dataset; /* dataset directory */
    cd_loader_mode mode;
    int64_t patch[3];           /* patch mode: patch size, each 1..max_dim; volume mode: a fixed size (each
                                  >= 1) or all 0 = as stored; ignored in slice mode. At most max_voxels. */
    double foreground_fraction; /* patch mode: share of each batch centred on a foreground voxel (0.33); [0, 1] */
    bool slices_with_mask_only; /* slice mode: only slices containing mask */
    uint32_t batch_size;        /* 1..CD_LOADER_MAX_BATCH */
    uint64_t seed;
    const char *splits;   /* comma-separated split names (default "train"); "*" = all */
    const char *augment;  /* "none" (default), "nnunet", "cirrhosisstage" or a pipeline JSON path */
    int threads;          /* 0 = online CPUs, else 1..CD_LOADER_MAX_THREADS */
    int rank, world_size; /* world_size 0 = from $WORLD_SIZE / $RANK, else $SLURM_NTASKS / $SLURM_PROCID
                                  (decimal integers; all unset: 1 / 0),
                                  else >= 1 with rank in 0..world_size - 1 */
    bool drop_last;       /* drop a final partial batch (default false: it is returned smaller) */
    bool skip_corrupt;    /* a corrupt record is skipped and counted instead of failing */
    cd_loader_io io;
    uint32_t ring;             /* batches in flight: 0 = the default 4, else 1..CD_LOADER_MAX_RING */
    int64_t cache_bytes;       /* decoded-chunk cache shared by the workers, a byte budget up to the
                                  physical memory: 0 = none, CD_LOADER_CACHE_AUTO (what
                                  cd_loader_options_init sets) = min(2 GiB, RAM / 8) */
    cd_device device;          /* where augmentation runs (cirrdata/device.h): CD_DEVICE_CPU (the default),
                                  CD_DEVICE_VULKAN (every worker gets its own cd_gpu_context; creation
                                  fails, naming the reason, when none can be made) or CD_DEVICE_AUTO */
    uint64_t gpu_memory_limit; /* vulkan: bytes each worker's context may hold on the device (0 = the
                                  heap; cd_gpu_options.memory_limit); batches that do not fit run on the CPU */
    bool preload;              /* fill the decoded-chunk cache before the first batch: the worker threads
                                  read and decode every chunk of every selected record (image and mask;
                                  all of the split's records whatever the rank, since each epoch's
                                  permutation gives every rank other records), in parallel, until the
                                  budget (cache_bytes) is full; nothing is evicted for it. No effect
                                  without a cache (cache_bytes 0) and none on batch contents.
                                  cd_loader_create returns at once; the first cd_loader_next waits for
                                  the preload. A chunk that cannot be read or verified is left out and
                                  fails (or with skip_corrupt is skipped and counted) exactly as without
                                  preload, when a sample reads it. Memory: the cache's, as without it. */
    uint32_t batch_stride;     /* deliver only every batch_stride-th batch of each epoch of this rank (0 or 1:
                                  all): batches number batch_offset, batch_offset + batch_stride, ... So
                                  several consumers (e.g. DataLoader worker processes, one loader each with
                                  the same options and offsets 0..stride - 1) share a rank's batches without
                                  changing any: each batch is the one a loader with stride 1 gives at that
                                  number. 0..CD_LOADER_MAX_STRIDE */
    uint32_t batch_offset;     /* 0..batch_stride - 1, and below the epoch's batch count (CD_ERR_ARG) */
    bool ring_shared;          /* the ring's images and masks in one shared-memory file (a memfd) that
                                  another process may map: cd_loader_ring_memory. Batches are the same. */
} cd_loader_options;

CD_API void cd_loader_options_init(cd_loader_options *o);

typedef struct cd_loader cd_loader;

CD_API cd_status cd_loader_create(const cd_loader_options *opts, cd_loader **out, cd_error *err);

/* Stops the loader and frees everything but the batch ring: the worker threads are joined, the dataset's
 * files closed, the cache, pipeline and device contexts freed. A batch borrowed before stays readable,
 * its contents no longer changing, until cd_loader_destroy. From then on cd_loader_next and
 * cd_loader_set_state fail with CD_ERR_ARG "the loader is closed", cd_loader_release does nothing and the
 * counters keep their last values (cd_loader_cache_bytes: 0). Idempotent. It may run in another thread
 * while the consumer is inside cd_loader_next (which then returns that error at once, or the batch it
 * already had) or cd_loader_release; not concurrently with any other call on l, itself included. */
CD_API void cd_loader_close(cd_loader *l);
/* Closes l when it is not closed yet, then frees the ring and l: every batch borrowed from it is gone.
 * No other call on l may be running or follow. NULL is allowed. */
CD_API void cd_loader_destroy(cd_loader *l);

/* A borrowed batch: valid until cd_loader_release (then the ring slot is filled again) or, after
 * cd_loader_close, until cd_loader_destroy. Arrays are C-order. */
typedef struct cd_batch {
    uint32_t size; /* samples in this batch (<= batch_size) */
    uint32_t channels;
    int64_t shape[3]; /* X, Y, Z of every sample (Z = 1 in slice mode) */
    float *image;     /* (size, channels, X, Y, Z) */
    uint8_t *mask;    /* (size, 1, X, Y, Z), or NULL when the dataset has no masks */
    int32_t *label;   /* (size) */
    int64_t *index;   /* (size) dataset record indices */
    int64_t *slice;   /* (size) slice mode: z of the slice; else -1 */
    int64_t *corner;  /* (size, 3) source voxel of each sample's first voxel before augmentation
                                  (the patch covers corner .. corner + shape - 1; may lie partly outside) */
    uint64_t epoch;
    uint64_t number; /* batch number within the epoch (for this rank) */
} cd_batch;

/* The next batch. At the end of an epoch returns CD_OK with *batch = NULL once; the next call starts
 * the following epoch. Several batches may be borrowed at once (each holds its ring slot until it is
 * released, in any order; the others keep being filled); when all `ring` slots are borrowed there is
 * nothing left to fill and the call fails with CD_ERR_ARG instead of waiting forever. */
CD_API cd_status cd_loader_next(cd_loader *l, cd_batch **batch, cd_error *err);
/* Gives a borrowed batch back: its slot is filled again. A batch not borrowed (or already released) is
 * ignored. */
CD_API void cd_loader_release(cd_loader *l, cd_batch *batch);

/* Resume state: (seed, epoch, position = samples of this rank's epoch already handed out by
 * cd_loader_next, the batch currently borrowed included). With a batch_stride above 1 the position is
 * where this loader's next batch starts: (its number) x batch_size. */
typedef struct cd_loader_state {
    uint64_t seed;
    uint64_t epoch;
    uint64_t position;
} cd_loader_state;

CD_API void cd_loader_get_state(const cd_loader *l, cd_loader_state *out);
/* Restarts delivery at state (drops batches in flight; CD_ERR_ARG while a batch is borrowed). The seed
 * must equal the loader's, the epoch be at most CD_LOADER_MAX_EPOCH and the position below
 * cd_loader_epoch_samples (CD_ERR_ARG otherwise); with a batch_stride above 1 it must start one of this
 * loader's batches (batch_size x a number n with n mod batch_stride = batch_offset). */
CD_API cd_status cd_loader_set_state(cd_loader *l, const cd_loader_state *state, cd_error *err);

/* Samples per epoch for this rank, and batches per epoch of this rank (all of them, whatever the
 * batch_stride: this loader delivers those numbered batch_offset + k x batch_stride). */
CD_API uint64_t cd_loader_epoch_samples(const cd_loader *l);
CD_API uint64_t cd_loader_epoch_batches(const cd_loader *l);
/* With ring_shared: the memfd holding the ring (owned by the loader, valid until cd_loader_destroy;
 * -1 without ring_shared), its mapping in this process and its size. The file starts with a header of
 * CD_LOADER_SHARED_HEADER bytes: its first `ring` 32-bit words are the lend flags (cd_loader_lend), the
 * rest is zero and left to the consumers; the batch arrays lie after it, so a batch's image and mask are
 * at (pointer - *base) in the file. */
#define CD_LOADER_SHARED_HEADER 4096u
CD_API int cd_loader_ring_memory(const cd_loader *l, void **base, size_t *bytes);
/* With ring_shared: hands a borrowed batch over to whoever maps the ring (e.g. another process), so that
 * its slot comes back without a call on this loader. The batch stops counting as borrowed (as after
 * cd_loader_release) and its slot's lend flag, the 32-bit word number *slot of the header, is set to 1;
 * the mapper reads the batch's arrays at their offsets in the file (cd_batch's small arrays are not in
 * it: copy them before lending) and stores 0 in the word when done. The loader's worker threads see the
 * 0 (they look whenever they claim work, and while idle every 0.1 to 2 ms) and fill the slot again; until
 * then the slot is out of the ring, which cd_loader_next counts like a borrowed one (it fails when every
 * slot is borrowed or lent). cd_loader_set_state leaves lent slots lent. CD_ERR_ARG without ring_shared,
 * for a batch that is not borrowed, or after cd_loader_close. */
CD_API cd_status cd_loader_lend(cd_loader *l, cd_batch *batch, uint32_t *slot, cd_error *err);
/* Slots lent and not yet given back (their flag still 1). */
CD_API uint32_t cd_loader_lent(cd_loader *l);
/* This loader's rank and world size (as given, or from the environment: see world_size). */
CD_API void cd_loader_rank(const cd_loader *l, int *rank, int *world_size);
/* Items (samples) of an epoch over all ranks together: records, or slices in slice mode. Rank r of W
 * gets n / W of them, one more when r < n mod W. */
CD_API uint64_t cd_loader_epoch_items(const cd_loader *l);
/* Bytes held by the decoded-chunk cache now. */
CD_API uint64_t cd_loader_cache_bytes(const cd_loader *l);
/* Counters: records skipped as corrupt; "uring" or "pread". */
CD_API uint64_t cd_loader_skipped(const cd_loader *l);
CD_API const char *cd_loader_io_name(const cd_loader *l);

/* The device path (options.device). Decoding stays on the CPU; on Vulkan each worker renders its
 * share of a batch (its samples of one ring slot, up to the whole batch) with ONE cd_gpu_augment call
 * writing straight into the slot, warp and intensity ops fused. Batches equal CD_DEVICE_CPU ones: same
 * samples, order and drawn parameters, images within about 1e-6 of the data range (float32 on the
 * device; see gpu.h), masks, labels, indices and corners exactly, in patch, volume and slice mode. With
 * augment "none" samples are exact crops and are cut on the CPU whatever the device. Whatever the
 * device cannot do runs on the CPU reference, never a wrong or missing batch: samples gpu.h sends to
 * the reference, and the fallbacks of cirrdata/device.h with a worker's share of a batch as the item
 * (the worker's context is the one created again after a lost device). Each worker thread holds its own context (a
 * Vulkan device, queue and memory), created
 * by cd_loader_create: give `threads` explicitly rather than one per online CPU on a large machine.
 * CIRRDATA_VK_DEVICE picks the device (gpu.h). */

/* What runs augmentation, fixed at creation: "cpu", "vulkan: <device name>", or for "auto" without a
 * hardware GPU "cpu (vulkan not used: <reason>)". Valid until cd_loader_destroy. */
CD_API const char *cd_loader_device_name(const cd_loader *l);

typedef struct cd_loader_device_stats {
    uint64_t gpu_calls;      /* successful cd_gpu_augment calls (a worker's share of one batch each) */
    uint64_t gpu_samples;    /* samples those calls rendered on the device */
    uint64_t gpu_reference;  /* samples inside those calls that gpu.h ran on the reference */
    uint64_t fallback_calls; /* shares rendered on the CPU after a device error */
    uint64_t fallback_samples;
    uint64_t device_resets;       /* contexts created again after a lost device */
    bool gpu_disabled;            /* the device was given up: the CPU renders from then on */
    bool validation;              /* the Vulkan validation layer is on (CIRRDATA_VK_VALIDATION=1) */
    uint64_t validation_messages; /* warnings and errors it reported, all contexts together */
    char validation_first[256];   /* the first of them */
    char note[384];               /* the first device error, or the one that gave the device up ("" when none) */
} cd_loader_device_stats;

/* The counters so far (all zero with device "cpu"). They include batches prepared ahead in the ring,
 * not only those handed out. out is filled whole. */
CD_API void cd_loader_device_stats_get(const cd_loader *l, cd_loader_device_stats *out);

#ifdef __cplusplus
}
#endif
#endif
