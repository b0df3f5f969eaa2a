/* cirrdata/folder.h — the lock that keeps one writer per output folder (convert, merge, synth,
 * export-batch and any tool that writes beside a dataset take it). */
#ifndef CIRRDATA_FOLDER_H
#define CIRRDATA_FOLDER_H

#include "cirrdata/api.h"

#include "cirrdata/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cd_folder_lock cd_folder_lock;

/* Takes the exclusive lock that convert, merge and synth hold on an output folder (an existing folder
 * dir): flock on dir/.cirrdata.lock, never waiting. A folder another process holds is CD_ERR_IO,
 * "DIR: another cirrdata process is writing into this folder (pid P on host H: cirrdata WHAT, since
 * ...)"; `what` names this holder's work in that line. The caller owns *out (cd_folder_lock_release
 * removes the lock file and drops the lock); the kernel drops it when the process dies. */
CD_API cd_status cd_folder_lock_acquire(const char *dir, const char *what, cd_folder_lock **out, cd_error *err);
CD_API void cd_folder_lock_release(cd_folder_lock *lock);

#ifdef __cplusplus
}
#endif
#endif
