#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fs.h"
#include "loader/chunk_io.h"

struct cd_chunk_io {
    bool uring;
    unsigned depth;
    struct io_uring ring;
};

cd_status cd_chunk_io_create(bool want_uring, bool require_uring, unsigned depth, cd_chunk_io **out, cd_error *err) {
    cd_chunk_io *io = calloc(1, sizeof *io);
    if (!io) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    io->depth = depth ? depth : 32;
    if (want_uring) {
        int rc = io_uring_queue_init(io->depth, &io->ring, 0);
        if (rc == 0) {
            io->uring = true;
        } else if (require_uring) {
            free(io);
            return cd_fail(err, CD_ERR_IO, "io_uring is not available here: %s (use the pread backend)", strerror(-rc));
        }
    }
    *out = io;
    return CD_OK;
}

void cd_chunk_io_destroy(cd_chunk_io *io) {
    if (!io) return;
    if (io->uring) io_uring_queue_exit(&io->ring);
    free(io);
}

bool cd_chunk_io_is_uring(const cd_chunk_io *io) { return io->uring; }

static cd_status pread_all(cd_read_req *r, const char *path, cd_error *err) {
    ssize_t n = cd_pread_full(r->fd, r->buf, r->len, r->offset);
    if (n < 0)
        return cd_fail(err, CD_ERR_IO, "%s: read at byte %llu failed: %s", path, (unsigned long long)r->offset,
                       strerror(errno));
    if ((size_t)n < r->len)
        return cd_fail(err, CD_ERR_TRUNCATED, "%s: truncated: %u bytes at %llu are past the end", path, r->len,
                       (unsigned long long)r->offset);
    return CD_OK;
}

cd_status cd_chunk_io_read(cd_chunk_io *io, cd_read_req *reqs, size_t n, const char *path, cd_error *err) {
    if (!io->uring) {
        for (size_t i = 0; i < n; i++) {
            cd_status st = pread_all(&reqs[i], path, err);
            if (st != CD_OK) return st;
        }
        return CD_OK;
    }
    /* Keep up to depth reads in flight; a short read is finished with pread (rare: page cache). */
    size_t next = 0, inflight = 0;
    cd_status st = CD_OK;
    while ((next < n || inflight > 0)) {
        unsigned queued = 0;
        while (st == CD_OK && next < n && inflight < io->depth) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
            if (!sqe) break;
            io_uring_prep_read(sqe, reqs[next].fd, reqs[next].buf, reqs[next].len, reqs[next].offset);
            io_uring_sqe_set_data64(sqe, next);
            next++;
            inflight++;
            queued++;
        }
        if (queued) {
            int rc = io_uring_submit(&io->ring);
            if (rc < 0 && st == CD_OK)
                st = cd_fail(err, CD_ERR_IO, "%s: io_uring submit failed: %s", path, strerror(-rc));
            if (rc < 0) break;
        }
        if (inflight == 0) break;
        struct io_uring_cqe *cqe;
        int rc = io_uring_wait_cqe(&io->ring, &cqe);
        if (rc == -EINTR) continue;
        if (rc < 0) {
            if (st == CD_OK) st = cd_fail(err, CD_ERR_IO, "%s: io_uring wait failed: %s", path, strerror(-rc));
            break;
        }
        size_t i = (size_t)io_uring_cqe_get_data64(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&io->ring, cqe);
        inflight--;
        if (st != CD_OK) continue; /* drain what is in flight before returning */
        if (res < 0) {
            st = cd_fail(err, CD_ERR_IO, "%s: read at byte %llu failed: %s", path, (unsigned long long)reqs[i].offset,
                         strerror(-res));
        } else if ((uint32_t)res < reqs[i].len) {
            cd_read_req rest = reqs[i];
            rest.offset += (uint32_t)res;
            rest.buf = (char *)rest.buf + res;
            rest.len -= (uint32_t)res;
            st = pread_all(&rest, path, err);
        }
    }
    return st;
}
