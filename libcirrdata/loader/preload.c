/* Preload (options.preload): before their first batch the workers fill the decoded-chunk cache with
 * the split's records. Jobs are (record, tensor) pairs, claimed under the loader's lock. */
#include <stdlib.h>

#include "loader/loader_impl.h"

/* Chunks read in one submission (bounded staging). */
#define PRELOAD_GROUP 32

/* A group of chunks of one tensor not cached yet, from chunk *first on, that fit the budget's room. */
typedef struct preload_group {
    uint32_t ids[PRELOAD_GROUP];
    cd_chunk_info cis[PRELOAD_GROUP];
    size_t n, total; /* chunks, their stored bytes */
} preload_group;

/* Collects the next group; *full when a chunk no longer fits the room. */
static void next_group(cd_loader *l, const rec_info *ri, size_t rec, int t, const cd_tensor_info *ti, uint32_t *first,
                       uint64_t *room, bool *full, preload_group *g) {
    g->n = g->total = 0;
    for (; *first < ti->chunk_count && g->n < PRELOAD_GROUP; (*first)++) {
        const uint64_t key = cd_loader_chunk_key(rec, t, *first);
        if (cd_chunk_cache_has(l->cache, key)) continue;
        cd_chunk_info *ci = &g->cis[g->n];
        cd_record_chunk_info(ri->rec, (uint32_t)t, *first, ci);
        if (ci->raw_size > *room) {
            *full = true;
            break;
        }
        *room -= ci->raw_size;
        g->total += ci->stored_size;
        g->ids[g->n++] = *first;
    }
}

/* Reads, verifies and decodes a group into the cache (without eviction). A chunk that cannot be read
 * or verified is left out: the sample that reads it later reports it (or skips it) as it would without
 * preload. Returns false when out of memory (preloading stops, sampling reads on demand). */
static bool load_group(cd_loader *l, worker_scratch *w, const rec_info *ri, size_t rec, int t, const preload_group *g) {
    if (!(w->reqs = cd_loader_grow(w->reqs, &w->reqs_cap, g->n * sizeof *w->reqs)) ||
        !(w->stored = cd_loader_grow(w->stored, &w->stored_cap, g->total ? g->total : 1)))
        return false;
    size_t off = 0;
    for (size_t q = 0; q < g->n; q++) {
        w->reqs[q] = (cd_read_req){cd_shard_fd(ri->shard), g->cis[q].offset, g->cis[q].stored_size, w->stored + off};
        off += g->cis[q].stored_size;
    }
    cd_error e;
    cd_error_clear(&e);
    if (cd_chunk_io_read(w->io, w->reqs, g->n, cd_shard_path(ri->shard), &e) != CD_OK) return true;
    off = 0;
    for (size_t q = 0; q < g->n; q++) {
        const cd_chunk_info *ci = &g->cis[q];
        const uint8_t *stored = w->stored + off;
        off += ci->stored_size;
        void *raw = cd_chunk_cache_alloc(l->cache, ci->raw_size);
        if (!raw) return false;
        const uint64_t key = cd_loader_chunk_key(rec, t, g->ids[q]);
        if (cd_record_decode_chunk(ri->shard, ri->rec, (uint32_t)t, g->ids[q], stored, raw, &e) != CD_OK ||
            !cd_chunk_cache_preload(l->cache, key, raw, ci->raw_size))
            cd_chunk_cache_free(l->cache, raw, ci->raw_size);
    }
    return true;
}

/* Preload job k: the chunks of record k / 2, image (k even) or mask, that are not cached yet, read in
 * groups, decoded, inserted without eviction. Returns true when the budget is full. */
static bool preload_job(cd_loader *l, worker_scratch *w, uint64_t k) {
    const size_t rec = (size_t)(k / 2);
    const rec_info *ri = &l->recs[rec];
    const int t = k % 2 ? ri->mask_t : ri->image_t;
    if (t < 0) return false;
    cd_tensor_info ti;
    cd_record_tensor_info(ri->rec, (uint32_t)t, &ti);
    uint64_t room = cd_chunk_cache_room(l->cache);
    bool full = false;
    preload_group g;
    for (uint32_t first = 0; first < ti.chunk_count && !full;) {
        next_group(l, ri, rec, t, &ti, &first, &room, &full, &g);
        if (g.n && !load_group(l, w, ri, rec, t, &g)) return true;
    }
    return full;
}

/* Claims jobs until none are left, then waits for the others' last jobs, so that no batch starts
 * before the cache is filled. */
void cd_loader_preload_phase(cd_loader *l, worker_scratch *w) {
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
