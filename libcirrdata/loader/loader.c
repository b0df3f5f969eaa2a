/* The training loader (see cirrdata/loader.h): creation, closing and destruction, tying together the
 * pieces of loader_impl.h (records, order, ring, workers, device, preload, state). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loader/loader_impl.h"

/* A loader with its options, lock and decoded-chunk cache; NULL when out of memory. */
static cd_loader *new_loader(const cd_loader_options *opts, int world, int rank) {
    cd_loader *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->shared_fd = -1;
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_t cva; /* monotonic: the workers' timed waits for lent slots (ring.c) */
    pthread_condattr_init(&cva);
    pthread_condattr_setclock(&cva, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &cva);
    pthread_condattr_destroy(&cva);
    l->lend_poll_ns = CD_LOADER_LEND_POLL_MIN_NS;
    l->o = *opts;
    if (!l->o.splits) l->o.splits = "train";
    l->o.world_size = world;
    l->o.rank = rank;
    l->ring = l->o.ring ? l->o.ring : 4;
    if (!l->o.batch_stride) l->o.batch_stride = 1;
    uint64_t budget = 0;
    if (l->o.cache_bytes > 0) {
        budget = (uint64_t)l->o.cache_bytes;
    } else if (l->o.cache_bytes == CD_LOADER_CACHE_AUTO) {
        uint64_t ram = cd_loader_phys_ram();
        budget = ram / 8 < ((uint64_t)2 << 30) ? ram / 8 : ((uint64_t)2 << 30);
    }
    l->cache = cd_chunk_cache_create(budget);
    l->cache_enabled = budget > 0;
    if (!l->cache) {
        cd_loader_destroy(l);
        return NULL;
    }
    return l;
}

/* The dataset, the augmentation pipeline and the split's records with their sample shape. */
static cd_status open_dataset(cd_loader *l, cd_error *err) {
    cd_status st = cd_dataset_open(l->o.dataset, &l->ds, err);
    if (st == CD_OK && l->o.augment && strcmp(l->o.augment, "none"))
        st = cd_aug_pipeline_load(l->o.augment, &l->pipe, err);
    if (st == CD_OK) st = cd_loader_records_load(l, err);
    if (st == CD_OK && l->nrecs == 0)
        st = cd_fail(err, CD_ERR_ARG, "%s: no records in split(s) '%s'", l->o.dataset, l->o.splits);
    if (st == CD_OK) st = cd_loader_records_shape(l, err);
    return st;
}

/* Preload (the workers fill the cache before their first batch, see preload.c), the first batches
 * assigned, the workers started. */
static cd_status start(cd_loader *l, cd_error *err) {
    l->sched_pos = l->deliver_pos = cd_loader_epoch_start(l);
    l->preloading = l->o.preload && l->cache_enabled;
    l->pre_jobs = l->preloading ? 2 * (uint64_t)l->nrecs : 0;
    pthread_mutex_lock(&l->mu);
    cd_loader_assign_batches(l);
    pthread_mutex_unlock(&l->mu);
    return cd_loader_workers_start(l) ? CD_OK : cd_fail(err, CD_ERR_INTERNAL, "cannot start loader threads");
}

cd_status cd_loader_create(const cd_loader_options *opts, cd_loader **out, cd_error *err) {
    if (!opts || !opts->dataset || !out) return cd_fail(err, CD_ERR_ARG, "cd_loader_create: missing dataset");
    *out = NULL;
    int world, rank;
    cd_status st = cd_loader_check_options(opts, &world, &rank, err);
    if (st != CD_OK) return st;
    cd_loader *l = new_loader(opts, world, rank);
    if (!l) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    st = open_dataset(l, err);
    if (st == CD_OK) st = cd_loader_order_plan(l, err);
    if (st == CD_OK) st = cd_loader_ring_alloc(l, err); /* every buffer now; nothing grows later */
    if (st == CD_OK) st = cd_loader_workers_prepare(l, err);
    if (st == CD_OK) st = cd_loader_device_open(l, err);
    if (st == CD_OK) st = start(l, err);
    if (st != CD_OK) {
        cd_loader_destroy(l);
        return st;
    }
    *out = l;
    return CD_OK;
}

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
     * what follows. The scratch leaves under the lock for cd_loader_device_stats_get; the device
     * counters outlive the contexts. */
    pthread_mutex_lock(&l->mu);
    worker_scratch *scratch = l->scratch;
    l->scratch = NULL;
    cd_loader_device_messages(l, scratch, &l->dev);
    pthread_mutex_unlock(&l->mu);
    cd_loader_workers_free(l, scratch);
    cd_loader_records_free(l);
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
    cd_loader_ring_free(l);
    cd_device_policy_free(&l->policy);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
}

uint64_t cd_loader_epoch_samples(const cd_loader *l) { return l->per_rank; }
uint64_t cd_loader_epoch_batches(const cd_loader *l) { return l->bpe; }
uint64_t cd_loader_epoch_items(const cd_loader *l) { return l->nitems; }
int cd_loader_ring_memory(const cd_loader *l, void **base, size_t *bytes) {
    if (base) *base = l->shared_base;
    if (bytes) *bytes = l->shared_bytes;
    return l->shared_fd;
}
void cd_loader_rank(const cd_loader *l, int *rank, int *world_size) {
    *rank = l->o.rank;
    *world_size = l->o.world_size;
}
uint64_t cd_loader_skipped(const cd_loader *l) { return l->skipped; }
uint64_t cd_loader_cache_bytes(const cd_loader *l) { return l->cache ? cd_chunk_cache_bytes(l->cache) : 0; }
const char *cd_loader_io_name(const cd_loader *l) { return l->uring ? "uring" : "pread"; }
const char *cd_loader_device_name(const cd_loader *l) { return l->device_name; }
