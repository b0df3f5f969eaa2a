/* An exclusive lock on an output folder (internal): two writers into one folder (a job array with a wrong
 * --out, a convert and a merge) would otherwise both finish with one dataset silently replacing the other. */
#ifndef CD_IO_DIR_LOCK_H
#define CD_IO_DIR_LOCK_H

#include "core/internal.h"

#define CD_DIR_LOCK_NAME ".cirrdata.lock"

typedef struct cd_dir_lock {
    int fd; /* -1: not held */
    char path[4200];
} cd_dir_lock;

/* Takes the lock of the existing folder dir: flock(LOCK_EX) on dir/.cirrdata.lock, never waiting. The
 * file then says who holds it ("pid 123 on host h: cirrdata convert, since 2026-12-06 15:00:00"), which a
 * refused second writer quotes: CD_ERR_IO "DIR: another cirrdata process is writing into this folder
 * (pid ...)". The kernel drops the lock when the holder dies (kill -9 leaves no stale lock). `what` names
 * the holder's work in that line ("convert", "merge"). */
CD_INTERNAL cd_status cd_dir_lock_acquire(const char *dir, const char *what, cd_dir_lock *lock, cd_error *err);

/* Removes the lock file and drops the lock; a no-op when not held. */
CD_INTERNAL void cd_dir_lock_release(cd_dir_lock *lock);

#endif
