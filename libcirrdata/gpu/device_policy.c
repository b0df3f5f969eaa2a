/* The device policy (cirrdata/device.h) as one object: resolution, slots, and what a device call's
 * status means. See device_policy.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/device_policy.h"

/* What a device call's status means. */
typedef enum cd_device_next {
    CD_DEVICE_DONE = 0, /* the device did it */
    CD_DEVICE_RETRY,    /* the context was created again: call the device again */
    CD_DEVICE_FALLBACK  /* the CPU does this item */
} cd_device_next;

static void set_name(cd_device_policy *p, const char *fmt, const char *a) {
    pthread_mutex_lock(&p->mu);
    snprintf(p->device_name, sizeof p->device_name, fmt, a);
    pthread_mutex_unlock(&p->mu);
}

/* Keeps the first reason; one that gives the device up replaces it (it is the one that matters). */
static void note_locked(cd_device_policy *p, bool giving_up, const char *what, const char *msg) {
    if (!p->note[0] || giving_up) snprintf(p->note, sizeof p->note, "%.120s: %.250s", what, msg);
}

/* Records a reason the CPU ran (kept when it is the first). */
static void note(cd_device_policy *p, const char *what, const char *msg) {
    pthread_mutex_lock(&p->mu);
    note_locked(p, false, what, msg);
    pthread_mutex_unlock(&p->mu);
}

cd_status cd_device_policy_init(cd_device_policy *p, cd_device requested, const cd_gpu_options *gpu, const char *who,
                                cd_error *err) {
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    atomic_init(&p->off, false);
    atomic_init(&p->gpu_items, 0);
    atomic_init(&p->cpu_items, 0);
    atomic_init(&p->resets, 0);
    p->ready = true;
    snprintf(p->device_name, sizeof p->device_name, "cpu");
    if ((int)requested < CD_DEVICE_CPU || (int)requested > CD_DEVICE_AUTO)
        return cd_fail(err, CD_ERR_ARG, "%s: unknown device %d (cpu, vulkan or auto)", who, (int)requested);
    p->requested = requested;
    if (gpu) p->gpu = *gpu;
    if (requested == CD_DEVICE_CPU) return CD_OK;
    cd_error why;
    cd_error_clear(&why);
    cd_status st = cd_gpu_create(&p->gpu, &p->spare, &why);
    if (st == CD_OK && requested == CD_DEVICE_AUTO && cd_gpu_device(p->spare)->type == CD_GPU_CPU) {
        /* a software device (lavapipe) is slower than the C code: auto keeps the CPU */
        st = cd_fail(&why, CD_ERR_UNSUPPORTED, "the Vulkan device '%s' is a CPU implementation",
                     cd_gpu_device(p->spare)->name);
        cd_gpu_destroy(p->spare);
        p->spare = NULL;
    }
    if (st != CD_OK) {
        p->spare = NULL;
        if (requested == CD_DEVICE_VULKAN) return cd_fail(err, st, "%s: device 'vulkan': %s", who, why.message);
        set_name(p, "cpu (vulkan not used: %.280s)", why.message);
        return CD_OK;
    }
    const char *inject = getenv("CIRRDATA_TEST_DEVICE_LOST");
    p->inject_lost = inject ? atoi(inject) : 0;
    p->use_gpu = true;
    set_name(p, "vulkan: %s", cd_gpu_device(p->spare)->name);
    return CD_OK;
}

void cd_device_policy_free(cd_device_policy *p) {
    if (!p || !p->ready) return;
    cd_gpu_destroy(p->spare);
    pthread_mutex_destroy(&p->mu);
    memset(p, 0, sizeof *p);
}

bool cd_device_policy_active(const cd_device_policy *p) { return p && p->use_gpu && !atomic_load(&p->off); }

void cd_device_policy_describe(cd_device_policy *p, char *note, size_t note_len, char *name, size_t name_len) {
    pthread_mutex_lock(&p->mu);
    if (note) snprintf(note, note_len, "%s", p->note);
    if (name) snprintf(name, name_len, "%s", p->device_name);
    pthread_mutex_unlock(&p->mu);
}

cd_status cd_device_slot_open(cd_device_policy *p, cd_device_slot *s, cd_error *err) {
    memset(s, 0, sizeof *s);
    if (pthread_rwlock_init(&s->lock, NULL) != 0)
        return cd_fail(err, CD_ERR_NOMEM, "cannot create a device slot's lock");
    s->ready = true;
    if (!p->use_gpu) return CD_OK;
    s->inject_lost = p->inject_lost;
    pthread_mutex_lock(&p->mu);
    s->gpu = p->spare;
    p->spare = NULL;
    pthread_mutex_unlock(&p->mu);
    return s->gpu ? CD_OK : cd_gpu_create(&p->gpu, &s->gpu, err);
}

void cd_device_slot_close(cd_device_slot *s) {
    if (!s || !s->ready) return;
    cd_gpu_destroy(s->gpu);
    pthread_rwlock_destroy(&s->lock);
    memset(s, 0, sizeof *s);
}

static cd_device_next give_up(cd_device_policy *p, const char *what, const char *msg) {
    atomic_store(&p->off, true);
    pthread_mutex_lock(&p->mu);
    note_locked(p, true, what, msg);
    pthread_mutex_unlock(&p->mu);
    return CD_DEVICE_FALLBACK;
}

/* A lost device: the slot's context destroyed and created again, once per slot (write lock). */
static cd_device_next after_loss(cd_device_policy *p, cd_device_slot *s, uint32_t generation, const char *what,
                                 const char *msg) {
    pthread_rwlock_wrlock(&s->lock);
    if (s->generation != generation || !s->gpu) { /* another thread got here first */
        cd_device_next next = s->gpu ? CD_DEVICE_RETRY : CD_DEVICE_FALLBACK;
        pthread_rwlock_unlock(&s->lock);
        return next;
    }
    if (s->resets > 0) {
        pthread_rwlock_unlock(&s->lock);
        char w[160];
        snprintf(w, sizeof w, "the Vulkan device was lost again (%s), the CPU does the rest", what);
        return give_up(p, w, msg);
    }
    if (s->before_reset) s->before_reset(s->user);
    s->messages_gone += cd_gpu_validation_messages(s->gpu, NULL, 0);
    cd_gpu_destroy(s->gpu);
    s->gpu = NULL;
    s->resets++;
    s->generation++;
    atomic_fetch_add(&p->resets, 1);
    note(p, "the Vulkan device was lost, its context was created again", msg);
    cd_error ce;
    cd_error_clear(&ce);
    cd_status cs = cd_gpu_create(&p->gpu, &s->gpu, &ce);
    if (cs != CD_OK) s->gpu = NULL;
    pthread_rwlock_unlock(&s->lock);
    if (cs != CD_OK)
        return give_up(p, "a lost Vulkan device could not be opened again, the CPU does the rest", ce.message);
    return CD_DEVICE_RETRY;
}

/* What the status of a device call made on generation `generation` of the slot means. */
static cd_device_next slot_result(cd_device_policy *p, cd_device_slot *s, uint32_t generation, cd_status st,
                                  const char *msg, const char *what, uint64_t items) {
    if (st == CD_OK) {
        atomic_fetch_add(&p->gpu_items, items);
        return CD_DEVICE_DONE;
    }
    char w[160];
    switch (st) {
    case CD_ERR_NOMEM:
    case CD_ERR_LIMIT:
        snprintf(w, sizeof w, "the GPU could not %s, the CPU did (same semantics)", what);
        note(p, w, msg);
        return CD_DEVICE_FALLBACK;
    case CD_ERR_IO: return after_loss(p, s, generation, what, msg);
    default: snprintf(w, sizeof w, "the GPU could not %s, the CPU does the rest", what); return give_up(p, w, msg);
    }
}

/* The test hook: whether this call (on the current context, read lock held) is to be a lost device. */
static bool inject_loss(cd_device_policy *p, cd_device_slot *s) {
    pthread_mutex_lock(&p->mu);
    bool injected = s->inject_lost > 0;
    if (injected) s->inject_lost--;
    pthread_mutex_unlock(&p->mu);
    return injected;
}

bool cd_device_slot_run(cd_device_policy *p, cd_device_slot *s, cd_device_fn fn, void *user, const char *what,
                        uint64_t items) {
    for (;;) {
        if (!cd_device_policy_active(p) || !s || !s->ready) return false;
        pthread_rwlock_rdlock(&s->lock);
        if (!s->gpu || atomic_load(&p->off)) {
            pthread_rwlock_unlock(&s->lock);
            return false;
        }
        const uint32_t generation = s->generation;
        cd_error e;
        cd_error_clear(&e);
        cd_status st;
        if (inject_loss(p, s)) /* before the call: it must not run (in-place work would run twice) */
            st = cd_fail(&e, CD_ERR_IO, "Vulkan: device lost (injected by CIRRDATA_TEST_DEVICE_LOST)");
        else
            st = fn(s->gpu, user, &e);
        pthread_rwlock_unlock(&s->lock);
        switch (slot_result(p, s, generation, st, e.message, what, items)) {
        case CD_DEVICE_DONE: return true;
        case CD_DEVICE_FALLBACK: atomic_fetch_add(&p->cpu_items, items); return false;
        case CD_DEVICE_RETRY: break;
        }
    }
}

uint64_t cd_device_slot_messages(cd_device_slot *s, char *first, size_t first_len) {
    if (first && first_len) first[0] = 0;
    if (!s || !s->ready) return 0;
    pthread_rwlock_rdlock(&s->lock);
    uint64_t k = s->messages_gone + (s->gpu ? cd_gpu_validation_messages(s->gpu, first, first_len) : 0);
    pthread_rwlock_unlock(&s->lock);
    return k;
}
