/* The batch ring: `ring` slots, each one batch's buffers, allocated at creation. Batches are assigned
 * to free slots in schedule order, filled by the workers, handed out in order by cd_loader_next and
 * given back by cd_loader_release. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "loader/loader_impl.h"

/* Bytes of the batch ring (every slot's arrays), or false on overflow. */
static bool ring_bytes(const cd_loader *l, uint64_t *out) {
    const uint64_t per_voxel = (uint64_t)l->channels * sizeof(float) + (l->has_mask ? 1 : 0);
    const uint64_t per_sample_extra = sizeof(bool) + sizeof(int32_t) + 5 * sizeof(int64_t);
    uint64_t v;
    if (__builtin_mul_overflow((uint64_t)l->max_pvox, per_voxel, &v) ||
        __builtin_add_overflow(v, per_sample_extra, &v) || __builtin_mul_overflow(v, (uint64_t)l->o.batch_size, &v) ||
        __builtin_mul_overflow(v, (uint64_t)l->ring, &v))
        return false;
    *out = v;
    return true;
}

/* The voxels of the largest sample (volume mode without a fixed size: the largest record). */
static size_t max_sample_voxels(const cd_loader *l) {
    size_t m = (size_t)(l->patch[0] * l->patch[1] * l->patch[2]);
    for (size_t i = 0; l->per_record_shape && i < l->nrecs; i++) {
        size_t v = (size_t)l->recs[i].img.shape[0] * l->recs[i].img.shape[1] * l->recs[i].img.shape[2];
        if (v > m) m = v;
    }
    return m;
}

static size_t page_round(size_t n) { return (n + 4095) & ~(size_t)4095; }

/* The image and mask buffers of every slot in one memfd mapping (ring_shared), after a header page
 * left to the consumers (cirrdata/loader.h). */
static cd_status shared_ring(cd_loader *l, size_t image_bytes, size_t mask_bytes, cd_error *err) {
    l->shared_stride = page_round(image_bytes) + page_round(mask_bytes);
    l->shared_bytes = CD_LOADER_SHARED_HEADER + (size_t)l->ring * l->shared_stride;
    l->shared_fd = memfd_create("cirrdata-ring", MFD_CLOEXEC);
    if (l->shared_fd < 0 || ftruncate(l->shared_fd, (off_t)l->shared_bytes) != 0)
        return cd_fail(err, CD_ERR_IO, "cannot create the shared batch ring (%zu bytes): %s", l->shared_bytes,
                       strerror(errno));
    void *p = mmap(NULL, l->shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, l->shared_fd, 0);
    if (p == MAP_FAILED)
        return cd_fail(err, CD_ERR_NOMEM, "cannot map the shared batch ring (%zu bytes): %s", l->shared_bytes,
                       strerror(errno));
    l->shared_base = p;
    return CD_OK;
}

cd_status cd_loader_ring_alloc(cd_loader *l, cd_error *err) {
    l->max_pvox = max_sample_voxels(l);
    const size_t pvox = l->max_pvox, B = l->o.batch_size;
    uint64_t rb = 0;
    const uint64_t ram = cd_loader_phys_ram();
    if (!ring_bytes(l, &rb) || (ram && rb > ram)) {
        char need[32], have[32];
        return cd_fail(err, CD_ERR_LIMIT,
                       "%s: the batch ring (ring %u x batch_size %zu x %u channel(s) x %zu voxels) needs %s, more than "
                       "the physical "
                       "memory (%s): lower ring, batch_size or patch",
                       l->o.dataset, l->ring, B, l->channels, pvox,
                       rb ? cd_format_bytes(rb, need, sizeof need) : "over 2^64 bytes",
                       cd_format_bytes(ram, have, sizeof have));
    }
    if (!(l->slots = calloc(l->ring, sizeof *l->slots)) || !(l->queue = calloc(l->ring, sizeof *l->queue)))
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    const size_t image_bytes = B * l->channels * pvox * sizeof(float), mask_bytes = l->has_mask ? B * pvox : 0;
    if (l->o.ring_shared) {
        cd_status st = shared_ring(l, image_bytes, mask_bytes, err);
        if (st != CD_OK) return st;
    }
    for (uint32_t i = 0; i < l->ring; i++) {
        slot *s = &l->slots[i];
        s->ok = calloc(B, sizeof *s->ok);
        if (l->shared_base) {
            s->image = (float *)(l->shared_base + CD_LOADER_SHARED_HEADER + (size_t)i * l->shared_stride);
            s->mask = l->has_mask ? (uint8_t *)s->image + page_round(image_bytes) : NULL;
        } else {
            s->image = malloc(image_bytes);
            s->mask = l->has_mask ? malloc(mask_bytes) : NULL;
        }
        s->label = calloc(B, sizeof *s->label);
        s->index = calloc(B, sizeof *s->index);
        s->slice = calloc(B, sizeof *s->slice);
        s->corner = calloc(3 * B, sizeof *s->corner);
        if (!s->ok || !s->image || (l->has_mask && !s->mask) || !s->label || !s->index || !s->slice || !s->corner)
            return cd_fail(err, CD_ERR_NOMEM,
                           "cannot allocate the batch ring (%u batches of %zu samples of %zu voxels)", l->ring, B,
                           pvox);
    }
    return CD_OK;
}

void cd_loader_ring_free(cd_loader *l) {
    for (uint32_t i = 0; l->slots && i < l->ring; i++) {
        slot *s = &l->slots[i];
        free(s->ok);
        if (!l->shared_base) {
            free(s->image);
            free(s->mask);
        }
        free(s->label);
        free(s->index);
        free(s->slice);
        free(s->corner);
    }
    free(l->slots);
    l->slots = NULL;
    free(l->queue);
    l->queue = NULL;
    if (l->shared_base) munmap(l->shared_base, l->shared_bytes);
    l->shared_base = NULL;
    if (l->shared_fd >= 0) close(l->shared_fd);
    l->shared_fd = -1;
}

/* Where this loader's first batch of an epoch starts (batch number batch_offset). */
uint64_t cd_loader_epoch_start(const cd_loader *l) { return (uint64_t)l->o.batch_offset * l->o.batch_size; }

/* Whether a batch starting at pos lies past this rank's epoch (or, with drop_last, would be partial). */
static bool past_epoch(const cd_loader *l, uint64_t pos) {
    return pos >= l->per_rank || (l->o.drop_last && l->per_rank - pos < l->o.batch_size);
}

/* Where the batch after the one starting at start begins: batch_stride batches on. */
static uint64_t following(const cd_loader *l, uint64_t start) {
    return start + (uint64_t)l->o.batch_stride * l->o.batch_size;
}

/* A slot neither waiting to be delivered, borrowed nor lent, or NULL. */
static slot *free_slot(cd_loader *l, uint32_t *index) {
    for (uint32_t i = 0; i < l->ring; i++)
        if (!l->slots[i].assigned) {
            *index = i;
            return &l->slots[i];
        }
    return NULL;
}

void cd_loader_assign_batches(cd_loader *l) {
    uint32_t i;
    slot *s;
    while (l->assign_seq - l->deliver_seq < l->ring && (s = free_slot(l, &i))) {
        if (past_epoch(l, l->sched_pos)) {
            l->sched_epoch++;
            l->sched_pos = cd_loader_epoch_start(l);
        }
        l->queue[l->assign_seq % l->ring] = i;
        uint64_t left = l->per_rank - l->sched_pos;
        s->assigned = true;
        s->epoch = l->sched_epoch;
        s->start = l->sched_pos;
        s->number = l->sched_pos / l->o.batch_size;
        s->size = (uint32_t)(left < l->o.batch_size ? left : l->o.batch_size);
        s->claimed = s->done = 0;
        l->sched_pos = following(l, l->sched_pos);
        l->assign_seq++;
    }
    pthread_cond_broadcast(&l->cv);
}

/* ---- consuming ---- */

/* Skipped (corrupt) samples are dropped: the good ones move together; returns how many. */
static uint32_t compact_batch(cd_loader *l, slot *s) {
    const size_t pvox = (size_t)(s->shape[0] * s->shape[1] * s->shape[2]);
    uint32_t k = 0;
    for (uint32_t j = 0; j < s->size; j++) {
        if (!s->ok[j]) {
            l->skipped++;
            continue;
        }
        if (k != j) {
            memmove(s->image + (size_t)k * l->channels * pvox, s->image + (size_t)j * l->channels * pvox,
                    l->channels * pvox * sizeof(float));
            if (s->mask) memmove(s->mask + (size_t)k * pvox, s->mask + (size_t)j * pvox, pvox);
            s->label[k] = s->label[j];
            s->index[k] = s->index[j];
            s->slice[k] = s->slice[j];
            memmove(s->corner + 3 * k, s->corner + 3 * j, 3 * sizeof *s->corner);
        }
        k++;
    }
    return k;
}

/* Hands out the finished batch of slot s (caller holds the lock). The resume state counts a batch as
 * delivered once it is handed out. */
static cd_batch *hand_out(cd_loader *l, slot *s) {
    l->current_epoch = s->epoch;
    l->epoch_end_reported = false;
    l->deliver_epoch = s->epoch;
    l->deliver_pos = following(l, s->start);
    if (past_epoch(l, l->deliver_pos)) {
        l->deliver_epoch++;
        l->deliver_pos = cd_loader_epoch_start(l);
    }
    s->borrowed = true;
    l->borrowed++;
    l->deliver_seq++;
    const uint32_t k = compact_batch(l, s);
    s->batch = (cd_batch){.size = k,
                          .channels = l->channels,
                          .shape = {s->shape[0], s->shape[1], s->shape[2]},
                          .image = s->image,
                          .mask = s->mask,
                          .label = s->label,
                          .index = s->index,
                          .slice = s->slice,
                          .corner = s->corner,
                          .epoch = s->epoch,
                          .number = s->number};
    return &s->batch;
}

cd_status cd_loader_next(cd_loader *l, cd_batch **batch, cd_error *err) {
    if (!l || !batch) return cd_fail(err, CD_ERR_ARG, "cd_loader_next: NULL argument");
    *batch = NULL;
    pthread_mutex_lock(&l->mu);
    if (l->closed) {
        pthread_mutex_unlock(&l->mu);
        return cd_fail(err, CD_ERR_ARG, "the loader is closed");
    }
    cd_loader_reclaim_lent(l);
    if (l->deliver_seq == l->assign_seq) { /* every slot borrowed or lent, none to fill: waiting would never end */
        const uint32_t borrowed = l->borrowed, lent = l->lent;
        pthread_mutex_unlock(&l->mu);
        return cd_fail(err, CD_ERR_ARG,
                       "all %u ring slots hold batches that were not released (%u borrowed: cd_loader_release; %u "
                       "lent: their flags are still 1): keep copies, not the borrowed batches, or raise ring",
                       l->ring, borrowed, lent);
    }
    slot *s = &l->slots[l->queue[l->deliver_seq % l->ring]];
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
    cd_batch *b = hand_out(l, s);
    pthread_mutex_unlock(&l->mu);
    *batch = b;
    return CD_OK;
}

void cd_loader_release(cd_loader *l, cd_batch *batch) {
    if (!l || !batch) return;
    pthread_mutex_lock(&l->mu);
    slot *s = NULL;
    for (uint32_t i = 0; i < l->ring && !s; i++)
        if (&l->slots[i].batch == batch && l->slots[i].borrowed) s = &l->slots[i];
    if (!l->closed && s) { /* closed: the batch stays as it is until cd_loader_destroy */
        s->borrowed = s->assigned = false;
        l->borrowed--;
        cd_loader_assign_batches(l);
    }
    pthread_mutex_unlock(&l->mu);
}

/* ---- lending (ring_shared) ---- */

static uint32_t *lend_flags(const cd_loader *l) { return (uint32_t *)l->shared_base; }

uint32_t cd_loader_reclaim_lent(cd_loader *l) {
    if (!l->lent || l->closed || l->resetting) return 0;
    uint32_t back = 0;
    for (uint32_t i = 0; i < l->ring; i++) {
        slot *s = &l->slots[i];
        /* acquire: the mapper's last reads of the slot come before the worker's next writes */
        if (s->lent && __atomic_load_n(&lend_flags(l)[i], __ATOMIC_ACQUIRE) == 0) {
            s->lent = s->assigned = false;
            l->lent--;
            back++;
        }
    }
    if (back) {
        l->lend_poll_ns = CD_LOADER_LEND_POLL_MIN_NS;
        cd_loader_assign_batches(l);
    }
    return back;
}

cd_status cd_loader_lend(cd_loader *l, cd_batch *batch, uint32_t *slot_index, cd_error *err) {
    if (!l || !batch || !slot_index) return cd_fail(err, CD_ERR_ARG, "cd_loader_lend: NULL argument");
    if (!l->shared_base) return cd_fail(err, CD_ERR_ARG, "cd_loader_lend: the ring is not shared (ring_shared)");
    pthread_mutex_lock(&l->mu);
    if (l->closed) {
        pthread_mutex_unlock(&l->mu);
        return cd_fail(err, CD_ERR_ARG, "the loader is closed");
    }
    uint32_t i = 0;
    while (i < l->ring && !(&l->slots[i].batch == batch && l->slots[i].borrowed)) i++;
    if (i == l->ring) {
        pthread_mutex_unlock(&l->mu);
        return cd_fail(err, CD_ERR_ARG, "cd_loader_lend: the batch is not borrowed from this loader");
    }
    slot *s = &l->slots[i];
    s->borrowed = false;
    s->lent = true;
    l->borrowed--;
    l->lent++;
    __atomic_store_n(&lend_flags(l)[i], 1u, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&l->mu);
    *slot_index = i;
    return CD_OK;
}

uint32_t cd_loader_lent(cd_loader *l) {
    if (!l) return 0;
    pthread_mutex_lock(&l->mu);
    cd_loader_reclaim_lent(l);
    const uint32_t n = l->lent;
    pthread_mutex_unlock(&l->mu);
    return n;
}
