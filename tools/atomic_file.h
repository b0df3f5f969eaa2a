/* Files the CLI writes whole (pictures, JSON sidecars): written under a temporary name created with
 * O_EXCL | O_NOFOLLOW and renamed into place, so that a reader never sees half a file and a link
 * planted at the name is replaced, never followed. */
#ifndef CIRRDATA_TOOLS_ATOMIC_FILE_H
#define CIRRDATA_TOOLS_ATOMIC_FILE_H

#include <stddef.h>
#include <stdio.h>

#include "cirrdata/status.h"

/* Opens tmp for writing, created anew (an earlier leftover of that name is removed once); NULL with
 * errno set on failure. */
FILE *atomic_open_temporary(const char *tmp);

/* Writes len bytes of data to path through path.tmp-<pid> and a rename. */
cd_status atomic_write_file(const char *path, const void *data, size_t len, cd_error *err);

#endif
