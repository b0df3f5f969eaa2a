/* The loader's device path (options.device "vulkan" / "auto"): every worker has its own
 * cd_gpu_context and renders a share of a batch in one cd_gpu_augment; whatever the device cannot
 * do runs on the CPU reference, and a lost device is re-created once per worker, then given up. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loader/loader_impl.h"

/* One share's device call: its arguments in, the device's timings out. */
typedef struct share_call {
    cd_loader *l;
    worker_scratch *w;
    int m;
    const int64_t *patch;
    cd_gpu_timings t;
} share_call;

static cd_status augment_share(cd_gpu_context *gpu, void *user, cd_error *err) {
    share_call *c = user;
    cd_status st = cd_gpu_augment(gpu, c->w->params, c->m, c->w->items, c->l->channels, c->patch, err);
    cd_gpu_last_timings(gpu, &c->t);
    return st;
}

/* Renders the share's m read samples (w->params, w->items) on the worker's device under the device
 * policy. Returns CD_OK when the device rendered them; anything else means the caller renders them
 * on the CPU (the reason is in the policy's note). */
static cd_status render_on_device(cd_loader *l, worker_scratch *w, int m, const int64_t patch[3]) {
    share_call c = {.l = l, .w = w, .m = m, .patch = patch};
    if (!cd_device_slot_run(&l->policy, &w->gpu, augment_share, &c, "render a share", (uint64_t)m))
        return CD_ERR_UNSUPPORTED;
    pthread_mutex_lock(&l->mu);
    l->dev.gpu_calls++;
    l->dev.gpu_reference += (uint64_t)c.t.cpu_fallback;
    l->dev.gpu_samples += (uint64_t)(m - c.t.cpu_fallback);
    pthread_mutex_unlock(&l->mu);
    return CD_OK;
}

/* Reads and plans samples j0 .. j0 + n - 1 (cd_loader_make_sample), listing those to render in
 * w->params / w->items. Returns how many; *first_err is cleared once err holds a failure. */
static int read_share(cd_loader *l, worker_scratch *w, slot *s, uint32_t j0, uint32_t n, cd_error *err,
                      bool *first_err) {
    int m = 0;
    for (uint32_t k = 0; k < n; k++) {
        gpu_job *gj = &w->jobs[k];
        gj->render = false;
        cd_error e;
        cd_error_clear(&e);
        cd_status st = w->sst[k] = cd_loader_make_sample(l, w, s, j0 + k, gj, &e);
        if (st != CD_OK && *first_err && !(l->o.skip_corrupt && (st == CD_ERR_CORRUPT || st == CD_ERR_TRUNCATED))) {
            *err = e;
            *first_err = false;
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
    return m;
}

/* The patch size of the share's samples to render, and whether they all have it (the creation checks
 * make every sample of a batch alike). */
static const int64_t *share_patch(const worker_scratch *w, uint32_t n, bool *alike) {
    const int64_t *patch = NULL;
    *alike = true;
    for (uint32_t k = 0; k < n; k++) {
        if (w->sst[k] != CD_OK || !w->jobs[k].render) continue;
        if (!patch) patch = w->jobs[k].plan.patch;
        *alike &= !memcmp(patch, w->jobs[k].plan.patch, sizeof(int64_t[3]));
    }
    return patch;
}

/* The CPU reference for the whole share of m samples to render (the device's outputs are undefined
 * after an error). */
static void render_share_on_cpu(cd_loader *l, worker_scratch *w, uint32_t n, int m, cd_error *err, bool *first_err) {
    for (uint32_t k = 0; k < n; k++) {
        gpu_job *gj = &w->jobs[k];
        if (w->sst[k] != CD_OK || !gj->render) continue;
        cd_error e;
        cd_error_clear(&e);
        cd_status st = w->sst[k] = cd_sample_plan_render(&gj->plan, true, gj->box, l->has_mask ? gj->mbox : NULL,
                                                         l->channels, gj->out_img, gj->out_mask, &e);
        if (st != CD_OK && *first_err) {
            *err = e;
            *first_err = false;
        }
    }
    pthread_mutex_lock(&l->mu);
    l->dev.fallback_calls++;
    l->dev.fallback_samples += (uint64_t)m;
    pthread_mutex_unlock(&l->mu);
}

void cd_loader_make_share(cd_loader *l, worker_scratch *w, slot *s, uint32_t j0, uint32_t n, bool device_ok,
                          cd_error *err) {
    bool first_err = true;
    const int m = read_share(l, w, s, j0, n, err, &first_err);
    if (m == 0) return;
    bool alike;
    const int64_t *patch = share_patch(w, n, &alike);
    if (device_ok && alike && render_on_device(l, w, m, patch) == CD_OK) return;
    render_share_on_cpu(l, w, n, m, err, &first_err);
}

/* Worker i's slot of the device policy and its share buffers. */
static cd_status open_worker(cd_loader *l, worker_scratch *w, cd_error *err) {
    cd_status st = cd_device_slot_open(&l->policy, &w->gpu, err);
    if (st != CD_OK) return cd_fail(err, st, "%s: device 'vulkan': %s", l->o.dataset, err->message);
    const uint32_t B = l->o.batch_size;
    if (!((w->jobs = calloc(B, sizeof *w->jobs)) && (w->items = calloc(B, sizeof *w->items)) &&
          (w->params = calloc(B, sizeof *w->params)) && (w->sst = calloc(B, sizeof *w->sst))))
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    return CD_OK;
}

/* The device is in use: each worker's share of a batch. */
static void device_ready(cd_loader *l) {
    l->dev.validation = cd_gpu_validation_enabled(l->scratch[0].gpu.gpu);
    /* Without a pipeline a sample is an exact crop: the CPU cuts it, the contexts stay idle. */
    l->use_gpu = l->pipe != NULL;
    /* A worker's share: the samples in flight (ring x batch) spread over the workers, at most a batch,
     * so that every worker has decoding to do and each device call carries as many samples as it can. */
    const uint64_t inflight = (uint64_t)l->ring * l->o.batch_size,
                   share = (inflight + (uint64_t)l->nthreads - 1) / (uint64_t)l->nthreads;
    l->gpu_share = (uint32_t)(share < 1 ? 1 : share > l->o.batch_size ? l->o.batch_size : share);
}

cd_status cd_loader_device_open(cd_loader *l, cd_error *err) {
    cd_gpu_options go;
    memset(&go, 0, sizeof go);
    go.memory_limit = l->o.gpu_memory_limit;
    cd_status st = cd_device_policy_init(&l->policy, l->o.device, &go, l->o.dataset, err);
    cd_device_policy_describe(&l->policy, NULL, 0, l->device_name, sizeof l->device_name);
    if (st != CD_OK || !cd_device_policy_active(&l->policy)) return st;
    for (int i = 0; i < l->nthreads && st == CD_OK; i++) st = open_worker(l, &l->scratch[i], err);
    if (st == CD_OK) device_ready(l);
    return st;
}

void cd_loader_device_messages(const cd_loader *l, worker_scratch *scratch, cd_loader_device_stats *out) {
    for (int i = 0; scratch && i < l->nthreads; i++) {
        char first[sizeof out->validation_first];
        uint64_t k = cd_device_slot_messages(&scratch[i].gpu, first, sizeof first);
        if (k && first[0] && !out->validation_first[0])
            snprintf(out->validation_first, sizeof out->validation_first, "%s", first);
        out->validation_messages += k;
    }
}

/* The policy's part of the counters: re-creations, whether the device was given up, the note. */
static void policy_stats(cd_loader *l, cd_loader_device_stats *out) {
    if (!l->policy.ready) return;
    out->device_resets = atomic_load(&l->policy.resets);
    out->gpu_disabled = l->policy.use_gpu && !cd_device_policy_active(&l->policy);
    cd_device_policy_describe(&l->policy, out->note, sizeof out->note, NULL, 0);
}

void cd_loader_device_stats_get(const cd_loader *l, cd_loader_device_stats *out) {
    cd_loader *m = (cd_loader *)l; /* the lock and the contexts' message counters */
    pthread_mutex_lock(&m->mu);
    *out = l->dev;
    policy_stats(m, out);
    cd_loader_device_messages(l, l->scratch, out);
    pthread_mutex_unlock(&m->mu);
}
