/* cirrdata/progress.h — the one progress callback of the library's long calls: cd_convert
 * (cd_convert_options.progress), cd_dataset_verify and cd_synth_cirrmri600 (cd_synth_options.progress). */
#ifndef CIRRDATA_PROGRESS_H
#define CIRRDATA_PROGRESS_H

#include "cirrdata/api.h"
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* `done` of `total` items (cases, records or scans: each call's documentation says which) are finished;
 * `bytes` counts the bytes processed so far (read or written, as documented there; 0 where a call does
 * not count them). Called from the thread that made the call, never concurrently; `total` may still
 * grow between calls when the work is only known as it goes. */
typedef void (*cd_progress_fn)(void *user, uint64_t done, uint64_t total, uint64_t bytes);

#ifdef __cplusplus
}
#endif
#endif
