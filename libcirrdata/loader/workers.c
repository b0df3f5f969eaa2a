/* The loader's worker threads: each claims samples of the batches in the ring (or, on the device
 * path, a share of a batch), makes them and reports them. One sample on the CPU: its item, its plan
 * (placement, drawn parameters, source box), the voxels read from the chunks, then rendered. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loader/loader_impl.h"

/* ---- one sample ---- */

/* The item at position start + j of this rank's order of the slot's epoch (takes the lock). */
static bool slot_item(cd_loader *l, const slot *s, uint32_t j, item *it) {
    pthread_mutex_lock(&l->mu);
    const uint32_t *order = cd_loader_epoch_order(l, s->epoch);
    *it = order ? l->items[order[s->start + j]] : (item){0, -1};
    pthread_mutex_unlock(&l->mu);
    return order != NULL;
}

/* Where sample j of slot s goes, and its label, index and slice. */
static void slot_sample(cd_loader *l, slot *s, uint32_t j, const rec_info *ri, item it, const int64_t patch[3],
                        float **out_img, uint8_t **out_mask) {
    if (j == 0)
        memcpy(s->shape, patch, sizeof(int64_t[3])); /* equal for every sample of a batch (checked at creation) */
    const size_t pvox = (size_t)(patch[0] * patch[1] * patch[2]);
    *out_img = s->image + (size_t)j * l->channels * pvox;
    *out_mask = l->has_mask ? s->mask + (size_t)j * pvox : NULL;
    s->label[j] = ri->label;
    s->index[j] = (int64_t)ri->dataset_index;
    s->slice[j] = it.z;
}

/* Placement, drawn parameters and source box of sample j: shared with the augmented conversion
 * (augment/sample_plan.c), so both produce the same sample bit for bit. nnU-Net: the last
 * round(B * fraction) positions of a batch are forced onto foreground. */
static void plan_sample(const cd_loader *l, const slot *s, uint32_t j, const rec_info *ri, item it,
                        const int64_t patch[3], cd_sample_plan *plan) {
    uint32_t forced = (uint32_t)lround(l->o.batch_size * l->o.foreground_fraction);
    bool fg = l->o.mode == CD_LOADER_PATCH && j >= l->o.batch_size - forced && ri->nfg > 0;
    cd_sample_plan_make(l->pipe, l->o.mode, l->o.seed, s->epoch, ri->dataset_index, it.z, ri->img.shape, patch, fg,
                        ri->nfg, (const int32_t(*)[3])ri->fg, plan);
}

/* Reads only the source box the transform needs into *box / *mbox (grown as needed). */
static cd_status read_plan_box(cd_loader *l, worker_scratch *w, item it, const cd_sample_plan *plan, float **box,
                               size_t *box_cap, uint8_t **mbox, size_t *mbox_cap, cd_error *err) {
    const rec_info *ri = &l->recs[it.rec];
    const int64_t *bshape = plan->bshape;
    size_t bvox = (size_t)(bshape[0] * bshape[1] * bshape[2]);
    if (!(*box = cd_loader_grow(*box, box_cap, (size_t)l->channels * bvox * sizeof(float))) ||
        (l->has_mask && !(*mbox = cd_loader_grow(*mbox, mbox_cap, bvox))))
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    cd_status st = cd_loader_read_box(l, w, it.rec, ri->image_t, plan->lo, plan->hi, *box, NULL, err);
    if (st == CD_OK && l->has_mask)
        st = cd_loader_read_box(l, w, it.rec, ri->mask_t, plan->lo, plan->hi, NULL, *mbox, err);
    return st;
}

cd_status cd_loader_make_sample(cd_loader *l, worker_scratch *w, slot *s, uint32_t j, gpu_job *gj, cd_error *err) {
    item it;
    if (!slot_item(l, s, j, &it)) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    const rec_info *ri = &l->recs[it.rec];
    int64_t patch[3] = {l->patch[0], l->patch[1], l->patch[2]};
    if (l->per_record_shape)
        for (int a = 0; a < 3; a++) patch[a] = ri->img.shape[a];
    float *out_img;
    uint8_t *out_mask;
    slot_sample(l, s, j, ri, it, patch, &out_img, &out_mask);
    cd_sample_plan plan;
    plan_sample(l, s, j, ri, it, patch, &plan);
    for (int a = 0; a < 3; a++) s->corner[3 * j + a] = plan.corner[a];
    if (plan.empty) return cd_sample_plan_render(&plan, false, NULL, NULL, l->channels, out_img, out_mask, err);
    /* Integer translation + mirroring (every sample without augmentation, most with it): straight
     * from the chunks into the output. The device path keeps its boxes. */
    cd_sample_map dmap;
    if (!gj && cd_sample_plan_direct(&plan, &dmap))
        return cd_loader_read_direct(l, w, it.rec, &plan, &dmap, out_img, out_mask, err);
    if (gj) {
        cd_status st = read_plan_box(l, w, it, &plan, &gj->box, &gj->box_cap, &gj->mbox, &gj->mbox_cap, err);
        if (st != CD_OK) return st;
        gj->plan = plan;
        gj->out_img = out_img;
        gj->out_mask = out_mask;
        gj->render = true;
        return CD_OK;
    }
    cd_status st = read_plan_box(l, w, it, &plan, &w->box, &w->box_cap, &w->mbox, &w->mbox_cap, err);
    if (st == CD_OK)
        st = cd_sample_plan_render(&plan, l->pipe != NULL, w->box, l->has_mask ? w->mbox : NULL, l->channels, out_img,
                                   out_mask, err);
    return st;
}

/* ---- the worker threads ---- */

typedef struct worker_arg {
    cd_loader *l;
    int id;
} worker_arg;

/* Waits for samples to make (caller holds mu): the slot, the first sample and how many (the device
 * path takes a share of the batch, rendered by one cd_gpu_augment). NULL once the loader stops. */
static slot *claim_work(cd_loader *l, uint32_t *j, uint32_t *n) {
    *n = 1;
    while (!l->stop) {
        cd_loader_reclaim_lent(l);
        for (uint64_t q = l->deliver_seq; q < l->assign_seq; q++) {
            slot *c = &l->slots[l->queue[q % l->ring]];
            if (c->assigned && c->claimed < c->size) {
                *j = c->claimed;
                if (l->use_gpu) *n = c->size - *j < l->gpu_share ? c->size - *j : l->gpu_share;
                c->claimed += *n;
                return c;
            }
        }
        if (l->lent && !l->lend_polling) {
            /* Lent slots come back by a flag in shared memory that nothing signals: one idle worker
             * looks again after a while. */
            l->lend_polling = true;
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += l->lend_poll_ns;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&l->cv, &l->mu, &until) == ETIMEDOUT &&
                l->lend_poll_ns < CD_LOADER_LEND_POLL_MAX_NS)
                l->lend_poll_ns *= 2;
            l->lend_polling = false;
        } else {
            pthread_cond_wait(&l->cv, &l->mu);
        }
    }
    return NULL;
}

/* Marks samples j .. j + n - 1 of s made (caller holds mu): a failure that is not a skippable
 * corruption fails the loader with its message. */
static void report_work(cd_loader *l, worker_scratch *w, slot *s, uint32_t j, uint32_t n, cd_status st,
                        const cd_error *err) {
    for (uint32_t k = j; k < j + n; k++) {
        if (l->use_gpu) st = w->sst[k - j];
        s->ok[k] = st == CD_OK;
        if (st != CD_OK) {
            if (l->o.skip_corrupt && (st == CD_ERR_CORRUPT || st == CD_ERR_TRUNCATED)) {
                /* counted when the batch is handed out */
            } else if (l->failed == CD_OK) {
                l->failed = st;
                snprintf(l->fail_msg, sizeof l->fail_msg, "%s", err->message);
            }
        }
    }
    s->done += n;
    pthread_cond_broadcast(&l->cv);
}

static void *worker_main(void *arg) {
    cd_loader *l = ((worker_arg *)arg)->l;
    worker_scratch *w = &l->scratch[((worker_arg *)arg)->id];
    free(arg);
    pthread_mutex_lock(&l->mu);
    cd_loader_preload_phase(l, w);
    for (;;) {
        uint32_t j = 0, n;
        slot *s = claim_work(l, &j, &n);
        if (!s) break;
        l->busy++;
        const bool device_ok = cd_device_policy_active(&l->policy);
        pthread_mutex_unlock(&l->mu);
        cd_error err;
        cd_error_clear(&err);
        cd_status st = CD_OK;
        if (l->use_gpu)
            cd_loader_make_share(l, w, s, j, n, device_ok, &err);
        else
            st = cd_loader_make_sample(l, w, s, j, NULL, &err);
        pthread_mutex_lock(&l->mu);
        l->busy--;
        report_work(l, w, s, j, n, st, &err);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

cd_status cd_loader_workers_prepare(cd_loader *l, cd_error *err) {
    l->nthreads = l->o.threads > 0 ? l->o.threads : cd_thread_count(0);
    if (!(l->scratch = calloc((size_t)l->nthreads, sizeof *l->scratch)) ||
        !(l->threads = calloc((size_t)l->nthreads, sizeof *l->threads)))
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    bool want_uring = l->o.io != CD_IO_PREAD;
    l->uring = want_uring;
    cd_status st = CD_OK;
    for (int i = 0; i < l->nthreads && st == CD_OK; i++) {
        st = cd_chunk_io_create(want_uring, l->o.io == CD_IO_URING, 64, &l->scratch[i].io, err);
        if (st == CD_OK && !cd_chunk_io_is_uring(l->scratch[i].io)) l->uring = false;
    }
    return st;
}

bool cd_loader_workers_start(cd_loader *l) {
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
    return l->started > 0;
}

void cd_loader_workers_free(cd_loader *l, worker_scratch *scratch) {
    for (int i = 0; scratch && i < l->nthreads; i++) {
        worker_scratch *w = &scratch[i];
        cd_chunk_io_destroy(w->io);
        cd_device_slot_close(&w->gpu);
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
}
