/* Reading many byte ranges of one file at once (internal): io_uring with a bounded number of
 * requests in flight, or plain pread when io_uring cannot be set up (old kernel, seccomp sandbox). */
#ifndef CD_LOADER_CHUNK_IO_H
#define CD_LOADER_CHUNK_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

typedef struct cd_chunk_io cd_chunk_io;

typedef struct cd_read_req {
    int fd;
    uint64_t offset;
    uint32_t len;
    void *buf;
} cd_read_req;

/* want_uring: try io_uring (falls back to pread when it fails unless require_uring). */
CD_INTERNAL cd_status cd_chunk_io_create(bool want_uring, bool require_uring, unsigned depth, cd_chunk_io **out,
                                         cd_error *err);
CD_INTERNAL void cd_chunk_io_destroy(cd_chunk_io *io);
CD_INTERNAL bool cd_chunk_io_is_uring(const cd_chunk_io *io);
/* Reads every request completely; a short file is CD_ERR_TRUNCATED naming what (path for messages). */
CD_INTERNAL cd_status cd_chunk_io_read(cd_chunk_io *io, cd_read_req *reqs, size_t n, const char *path, cd_error *err);

#endif
