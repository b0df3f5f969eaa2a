/* The loader's device path (options.device "vulkan" / "auto"): every worker has its own
 * cd_gpu_context and renders a share of a batch in one cd_gpu_augment; whatever the device cannot
 * do runs on the CPU reference, and a lost device is re-created once per worker, then given up. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loader/loader_impl.h"

/* The first device error, or the one that gave the device up (caller holds the lock). */
static void device_note(cd_loader *l, const char *what, const char *msg) {
    if (!l->dev.note[0] || l->dev.gpu_disabled) snprintf(l->dev.note, sizeof l->dev.note, "%s: %.250s", what, msg);
}

/* One cd_gpu_augment of the share's m samples; counts it when it succeeded (takes the lock). */
static cd_status augment_once(cd_loader *l, worker_scratch *w, int m, const int64_t patch[3], cd_error *e) {
    cd_status st = cd_gpu_augment(w->gpu, w->params, m, w->items, l->channels, patch, e);
    if (st == CD_OK && w->vk_inject_lost > 0) {
        /* Test hook: the recovery below runs for real on a device that did not fail. */
        w->vk_inject_lost--;
        st = cd_fail(e, CD_ERR_IO, "Vulkan: device lost (injected by CIRRDATA_TEST_LOADER_LOST)");
    }
    cd_gpu_timings t;
    cd_gpu_last_timings(w->gpu, &t);
    if (st == CD_OK) {
        pthread_mutex_lock(&l->mu);
        l->dev.gpu_calls++;
        l->dev.gpu_reference += (uint64_t)t.cpu_fallback;
        l->dev.gpu_samples += (uint64_t)(m - t.cpu_fallback);
        pthread_mutex_unlock(&l->mu);
    }
    return st;
}

/* After a lost device: the worker's context destroyed and created again (the stats no longer reach
 * the old one). A failed re-creation gives the device up for every worker. */
static cd_status recreate_context(cd_loader *l, worker_scratch *w, const cd_error *lost) {
    pthread_mutex_lock(&l->mu);
    cd_gpu_context *old = w->gpu;
    w->gpu = NULL;
    w->vk_msgs_gone += cd_gpu_validation_messages(old, NULL, 0);
    w->vk_resets++;
    l->dev.device_resets++;
    device_note(l, "the Vulkan device was lost, its context was created again", lost->message);
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
    return cs;
}

/* Renders the share's m read samples (w->params, w->items) on the worker's device. A lost device: the
 * context is destroyed and created again once per worker and the share retried; a second loss, or a
 * failed re-creation, gives the device up for every worker. Returns CD_OK when the device rendered
 * them; anything else means the caller renders them on the CPU (the reason is in the note). */
static cd_status render_on_device(cd_loader *l, worker_scratch *w, int m, const int64_t patch[3]) {
    for (int attempt = 0;; attempt++) {
        cd_error e;
        cd_error_clear(&e);
        cd_status st = augment_once(l, w, m, patch, &e);
        if (st == CD_OK) return CD_OK;
        if (st != CD_ERR_IO || attempt > 0 || w->vk_resets > 0) {
            /* out of device memory or limits: this share on the CPU; a lost device again: give it up */
            pthread_mutex_lock(&l->mu);
            if (st == CD_ERR_IO) l->dev.gpu_disabled = true;
            device_note(l, st == CD_ERR_IO ? "the Vulkan device was lost again, the CPU renders from now on" : "a share ran on the CPU",
                        e.message);
            pthread_mutex_unlock(&l->mu);
            return st;
        }
        cd_status cs = recreate_context(l, w, &e);
        if (cs != CD_OK) return cs;
    }
}

/* Reads and plans samples j0 .. j0 + n - 1 (cd_loader_make_sample), listing those to render in
 * w->params / w->items. Returns how many; *first_err is cleared once err holds a failure. */
static int read_share(cd_loader *l, worker_scratch *w, slot *s, uint32_t j0, uint32_t n, cd_error *err, bool *first_err) {
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
        cd_status st = w->sst[k] = cd_sample_plan_render(&gj->plan, true, gj->box, l->has_mask ? gj->mbox : NULL, l->channels,
                                                         gj->out_img, gj->out_mask, &e);
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

void cd_loader_make_share(cd_loader *l, worker_scratch *w, slot *s, uint32_t j0, uint32_t n, bool device_ok, cd_error *err) {
    bool first_err = true;
    const int m = read_share(l, w, s, j0, n, err, &first_err);
    if (m == 0) return;
    bool alike;
    const int64_t *patch = share_patch(w, n, &alike);
    if (device_ok && w->gpu && alike && render_on_device(l, w, m, patch) == CD_OK) return;
    render_share_on_cpu(l, w, n, m, err, &first_err);
}

/* Creates worker i's context and its share buffers; device "auto" refuses a software device. */
static cd_status open_worker(cd_loader *l, worker_scratch *w, bool automatic, cd_error *why) {
    cd_status st = cd_gpu_create(&l->gpu_opts, &w->gpu, why);
    if (st == CD_OK && automatic && cd_gpu_device(w->gpu)->type == CD_GPU_CPU)
        /* a software device (lavapipe) is slower than the CPU engine: auto keeps the CPU, as CD_MODEL_AUTO */
        st = cd_fail(why, CD_ERR_UNSUPPORTED, "the Vulkan device '%s' is a CPU implementation", cd_gpu_device(w->gpu)->name);
    const uint32_t B = l->o.batch_size;
    if (st == CD_OK && !((w->jobs = calloc(B, sizeof *w->jobs)) && (w->items = calloc(B, sizeof *w->items)) &&
                         (w->params = calloc(B, sizeof *w->params)) && (w->sst = calloc(B, sizeof *w->sst))))
        st = cd_fail(why, CD_ERR_NOMEM, "out of memory");
    return st;
}

/* The device is in use: its name, the test hook, and each worker's share of a batch. */
static void device_ready(cd_loader *l) {
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
}

cd_status cd_loader_device_open(cd_loader *l, cd_error *err) {
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
    for (int i = 0; i < l->nthreads && st == CD_OK; i++) st = open_worker(l, &l->scratch[i], automatic, &why);
    if (st == CD_OK) {
        device_ready(l);
        return CD_OK;
    }
    for (int i = 0; i < l->nthreads; i++) {
        cd_gpu_destroy(l->scratch[i].gpu);
        l->scratch[i].gpu = NULL;
    }
    if (!automatic) return cd_fail(err, st, "%s: device 'vulkan': %s", l->o.dataset, why.message);
    snprintf(l->device_name, sizeof l->device_name, "cpu (vulkan not used: %.280s)", why.message);
    return CD_OK;
}

void cd_loader_device_messages(const cd_loader *l, const worker_scratch *scratch, cd_loader_device_stats *out) {
    for (int i = 0; scratch && i < l->nthreads; i++) {
        const worker_scratch *w = &scratch[i];
        out->validation_messages += w->vk_msgs_gone;
        if (w->gpu) { /* the counters outlive the contexts */
            char first[sizeof out->validation_first];
            uint64_t k = cd_gpu_validation_messages(w->gpu, first, sizeof first);
            if (k && !out->validation_first[0]) snprintf(out->validation_first, sizeof out->validation_first, "%s", first);
            out->validation_messages += k;
        }
    }
}

void cd_loader_device_stats_get(const cd_loader *l, cd_loader_device_stats *out) {
    cd_loader *m = (cd_loader *)l; /* the lock and the contexts' message counters */
    pthread_mutex_lock(&m->mu);
    *out = l->dev;
    cd_loader_device_messages(l, l->scratch, out);
    pthread_mutex_unlock(&m->mu);
}
