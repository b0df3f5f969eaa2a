/* The device policy of cirrdata/device.h as one object (not installed): the loader, the converter and
 * the model resolve their cd_device through it, open their Vulkan contexts as slots of it, and hand it
 * the status of every device call; it answers whether the call is done, to be retried on a context
 * created again, or to be done on the CPU, and keeps the counters and the note.
 *
 * A slot is one context with its own lock: any number of threads may use it at once (read side); the
 * re-creation after a lost device takes the write side, so a context is never destroyed under a user.
 * Callers hand their device work to cd_device_slot_run, which applies the whole rule set.
 * A slot is re-created at most once; every slot's loss after that, or a failed re-creation, turns the
 * device off for the whole policy. */
#ifndef CD_GPU_DEVICE_POLICY_H
#define CD_GPU_DEVICE_POLICY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/device.h"
#include "cirrdata/gpu.h"
#include "core/internal.h"

typedef struct cd_device_policy {
    cd_device requested;
    cd_gpu_options gpu;      /* every context is created (and re-created) with these; strings borrowed */
    bool use_gpu;            /* resolved to Vulkan */
    atomic_bool off;         /* given up: the CPU from now on */
    atomic_ullong gpu_items; /* items the device computed */
    atomic_ullong cpu_items; /* items the CPU computed instead */
    atomic_ullong resets;    /* contexts created again after a lost device */
    cd_gpu_context *spare;   /* the context made while resolving: the first slot takes it */
    int inject_lost;         /* test hook, see cd_device_slot_result */
    pthread_mutex_t mu;      /* note and device_name */
    char note[384];          /* the first reason the CPU ran instead (or the one that gave the device up) */
    char device_name[320];   /* "vulkan: NAME", "cpu" or "cpu (vulkan not used: WHY)" */
    bool ready;
} cd_device_policy;

typedef struct cd_device_slot {
    pthread_rwlock_t lock; /* read: a call on gpu; write: its re-creation */
    cd_gpu_context *gpu;   /* NULL: the CPU */
    uint32_t generation;   /* grows with each re-creation */
    uint32_t resets;
    int inject_lost;
    uint64_t messages_gone;           /* validation messages of the contexts this slot destroyed */
    void (*before_reset)(void *user); /* optional: frees what still uses the old context */
    void *user;
    bool ready;
} cd_device_slot;

/* Resolves `requested` (cirrdata/device.h): CD_DEVICE_VULKAN without a usable context is an error
 * "WHO: device 'vulkan': REASON"; AUTO on a software device or without Vulkan is the CPU with the
 * reason in device_name. gpu may be NULL (defaults). Free with cd_device_policy_free, also after a
 * failure. */
CD_INTERNAL cd_status cd_device_policy_init(cd_device_policy *p, cd_device requested, const cd_gpu_options *gpu,
                                            const char *who, cd_error *err);
CD_INTERNAL void cd_device_policy_free(cd_device_policy *p);
/* Vulkan is resolved and not given up. */
CD_INTERNAL bool cd_device_policy_active(const cd_device_policy *p);
/* Copies the note and the device name (each may be NULL). */
CD_INTERNAL void cd_device_policy_describe(cd_device_policy *p, char *note, size_t note_len, char *name,
                                           size_t name_len);

/* A slot with its own context (the spare one first) when the policy uses Vulkan, else an empty slot.
 * A context that cannot be created is an error. Close with cd_device_slot_close, also after a failure. */
CD_INTERNAL cd_status cd_device_slot_open(cd_device_policy *p, cd_device_slot *s, cd_error *err);
CD_INTERNAL void cd_device_slot_close(cd_device_slot *s);
/* A device call: fn on the slot's context (user passes its arguments and results). */
typedef cd_status (*cd_device_fn)(cd_gpu_context *gpu, void *user, cd_error *err);
/* Runs fn under the policy and returns true when the device did the work. False: the caller does it
 * on the CPU (counted as `items` CPU items): the device is not in use, was given up, or could not do
 * this item (no memory, limits). A lost device: the slot's context is created again (once per slot,
 * with before_reset first) and fn runs again. fn runs under the slot's read lock, so any number of
 * threads may run on one slot. `what` names the work in the note ("resample a volume"); `items` is
 * counted as the device's on success. Test hook: $CIRRDATA_TEST_DEVICE_LOST=N makes the first N
 * calls of each slot a lost device without running fn, so that the tests run the recovery on a
 * device that does not fail. */
CD_INTERNAL bool cd_device_slot_run(cd_device_policy *p, cd_device_slot *s, cd_device_fn fn, void *user,
                                    const char *what, uint64_t items);
/* Validation messages of the slot's contexts, the destroyed ones included; the first one of the
 * current context to `first` when non-NULL. */
CD_INTERNAL uint64_t cd_device_slot_messages(cd_device_slot *s, char *first, size_t first_len);

#endif
