/* The device policy of cirrdata/device.h as one object (not installed): the loader, the converter and
 * the model resolve their cd_device through it, open their Vulkan contexts as slots of it, and hand it
 * the status of every device call; it answers whether the call is done, to be retried on a context
 * created again, or to be done on the CPU, and keeps the counters and the note.
 *
 * A slot is one context with its own lock: any number of threads may use it at once (read side); the
 * re-creation after a lost device takes the write side, so a context is never destroyed under a user.
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
    cd_gpu_options gpu;          /* every context is created (and re-created) with these; strings borrowed */
    bool use_gpu;                /* resolved to Vulkan */
    atomic_bool off;             /* given up: the CPU from now on */
    atomic_ullong gpu_items;     /* items the device computed */
    atomic_ullong cpu_items;     /* items the CPU computed instead (cd_device_policy_cpu) */
    atomic_ullong resets;        /* contexts created again after a lost device */
    cd_gpu_context *spare;       /* the context made while resolving: the first slot takes it */
    int inject_lost;             /* test hook, see cd_device_slot_result */
    pthread_mutex_t mu;          /* note and device_name */
    char note[384];              /* the first reason the CPU ran instead (or the one that gave the device up) */
    char device_name[320];       /* "vulkan: NAME", "cpu" or "cpu (vulkan not used: WHY)" */
    bool ready;
} cd_device_policy;

typedef struct cd_device_slot {
    pthread_rwlock_t lock;       /* read: a call on gpu; write: its re-creation */
    cd_gpu_context *gpu;         /* NULL: the CPU */
    uint32_t generation;         /* grows with each re-creation */
    uint32_t resets;
    int inject_lost;
    uint64_t messages_gone;      /* validation messages of the contexts this slot destroyed */
    void (*before_reset)(void *user); /* optional: frees what still uses the old context */
    void *user;
    bool ready;
} cd_device_slot;

typedef enum cd_device_next {
    CD_DEVICE_DONE = 0,          /* the device did it */
    CD_DEVICE_RETRY,             /* the context was created again: call the device again */
    CD_DEVICE_FALLBACK           /* do this item on the CPU (and count it with cd_device_policy_cpu) */
} cd_device_next;

/* Resolves `requested` (cirrdata/device.h): CD_DEVICE_VULKAN without a usable context is an error
 * "WHO: device 'vulkan': REASON"; AUTO on a software device or without Vulkan is the CPU with the
 * reason in device_name. gpu may be NULL (defaults). Free with cd_device_policy_free, also after a
 * failure. */
CD_INTERNAL cd_status cd_device_policy_init(cd_device_policy *p, cd_device requested, const cd_gpu_options *gpu, const char *who,
                                            cd_error *err);
CD_INTERNAL void cd_device_policy_free(cd_device_policy *p);
/* Vulkan is resolved and not given up. */
CD_INTERNAL bool cd_device_policy_active(const cd_device_policy *p);
/* Counts items the CPU computed instead of the device. */
CD_INTERNAL void cd_device_policy_cpu(cd_device_policy *p, uint64_t items);
/* Records a reason the CPU ran (kept when it is the first). */
CD_INTERNAL void cd_device_policy_note(cd_device_policy *p, const char *what, const char *msg);
/* Copies the note and the device name (each may be NULL). */
CD_INTERNAL void cd_device_policy_describe(cd_device_policy *p, char *note, size_t note_len, char *name, size_t name_len);

/* A slot with its own context (the spare one first) when the policy uses Vulkan, else an empty slot.
 * A context that cannot be created is an error. Close with cd_device_slot_close, also after a failure. */
CD_INTERNAL cd_status cd_device_slot_open(cd_device_policy *p, cd_device_slot *s, cd_error *err);
CD_INTERNAL void cd_device_slot_close(cd_device_slot *s);
/* The slot's context for one call, its read lock held until cd_device_slot_release, and its
 * generation; NULL (no lock held) when the device is not in use. */
CD_INTERNAL cd_gpu_context *cd_device_slot_acquire(cd_device_policy *p, cd_device_slot *s, uint32_t *generation);
CD_INTERNAL void cd_device_slot_release(cd_device_slot *s);
/* After a device call made under cd_device_slot_acquire (and released): applies the policy to its
 * status. `what` names the work for the note ("resample a volume"); `items` is counted as the
 * device's on success. Test hook: $CIRRDATA_TEST_DEVICE_LOST=N makes the first N successful calls of
 * each slot report a lost device, so that the tests run the recovery on a device that does not fail. */
CD_INTERNAL cd_device_next cd_device_slot_result(cd_device_policy *p, cd_device_slot *s, uint32_t generation, cd_status st,
                                                 const cd_error *e, const char *what, uint64_t items);
/* Validation messages of the slot's contexts, the destroyed ones included; the first one of the
 * current context to `first` when non-NULL. */
CD_INTERNAL uint64_t cd_device_slot_messages(cd_device_slot *s, char *first, size_t first_len);

#endif
