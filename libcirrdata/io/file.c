#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/file.h"

cd_status cd_file_open(const char *path, cd_file *f, cd_error *err) {
    f->fd = -1;
    f->size = 0;
    f->path = path;
    return cd_open_regular(path, NULL, &f->fd, &f->size, err);
}

void cd_file_close(cd_file *f) {
    if (f && f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
}

cd_status cd_file_pread_some(const cd_file *f, void *buf, size_t n, uint64_t offset, size_t *got, cd_error *err) {
    ssize_t r = cd_pread_full(f->fd, buf, n, offset);
    if (r < 0)
        return cd_fail(err, CD_ERR_IO, "%s: read failed at byte %llu: %s", f->path, (unsigned long long)offset,
                       strerror(errno));
    *got = (size_t)r;
    return CD_OK;
}

cd_status cd_file_pread_exact(const cd_file *f, void *buf, size_t n, uint64_t offset, cd_error *err) {
    size_t got = 0;
    cd_status st = cd_file_pread_some(f, buf, n, offset, &got, err);
    if (st != CD_OK) return st;
    if (got < n)
        return cd_fail(err, CD_ERR_TRUNCATED, "%s: truncated: file has %llu bytes, needs %llu", f->path,
                       (unsigned long long)(offset + got), (unsigned long long)(offset + n));
    return CD_OK;
}

cd_status cd_file_read_all(const cd_file *f, uint64_t max_bytes, void **buf, size_t *len, cd_error *err) {
    char a[32], b[32];
    if (f->size > max_bytes || f->size > SIZE_MAX)
        return cd_fail(err, CD_ERR_LIMIT, "%s: file of %s is above the limit of %s", f->path,
                       cd_format_bytes(f->size, a, sizeof a), cd_format_bytes(max_bytes, b, sizeof b));
    size_t n = (size_t)f->size;
    void *p = cd_buffer_alloc(n);
    if (!p) return cd_fail(err, CD_ERR_NOMEM, "%s: cannot allocate %zu bytes", f->path, n);
    cd_status st = cd_file_pread_exact(f, p, n, 0, err);
    if (st != CD_OK) {
        cd_buffer_free(p, n);
        return st;
    }
    *buf = p;
    *len = n;
    return CD_OK;
}

int cd_path_has_suffix(const char *path, const char *suffix) {
    size_t lp = strlen(path), ls = strlen(suffix);
    return lp >= ls && strcasecmp(path + lp - ls, suffix) == 0;
}

cd_status cd_file_write_atomic_ex(const char *path, const cd_write_piece *pieces, size_t npieces, bool durable,
                                  cd_error *err) {
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return cd_fail(err, CD_ERR_ARG, "%.200s...: path too long", path);
    int fd;
    cd_status st = cd_file_create_exclusive(tmp, &fd, err);
    if (st != CD_OK) return st;
    for (size_t i = 0; i < npieces && st == CD_OK; i++)
        st = cd_file_write_full(fd, pieces[i].data, pieces[i].len, tmp, err);
    if (st == CD_OK && durable && fsync(fd) != 0)
        st = cd_fail(err, CD_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && st == CD_OK) st = cd_fail(err, CD_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (st == CD_OK && rename(tmp, path) != 0)
        st = cd_fail(err, CD_ERR_IO, "%s: cannot rename the finished file into place: %s", path, strerror(errno));
    if (st != CD_OK) {
        unlink(tmp);
        return st;
    }
    if (durable) cd_fsync_dir_of(path);
    return CD_OK;
}

cd_status cd_file_write_atomic(const char *path, const cd_write_piece *pieces, size_t npieces, cd_error *err) {
    return cd_file_write_atomic_ex(path, pieces, npieces, false, err);
}

cd_status cd_read_text_file_len(const char *path, size_t max_bytes, const char *what, char **text, size_t *len,
                                cd_error *err) {
    *text = NULL;
    if (len) *len = 0;
    const bool json_cap = max_bytes == 0;
    if (json_cap) {
        uint64_t cap;
        cd_status st = cd_limit(CD_LIMIT_JSON, &cap, err);
        if (st != CD_OK) return st;
        max_bytes = (size_t)cap;
    }
    cd_file f = {-1, 0, path};
    cd_status st = cd_open_regular(path, what, &f.fd, &f.size, err);
    if (st != CD_OK) return st;
    char a[32], lim[160];
    if (f.size > max_bytes) {
        cd_file_close(&f);
        if (json_cap)
            cd_limit_describe(CD_LIMIT_JSON, max_bytes, lim, sizeof lim);
        else
            snprintf(lim, sizeof lim, "the limit of %s", cd_format_bytes(max_bytes, a, sizeof a));
        return cd_fail(err, CD_ERR_LIMIT, "%s: %s file of %s is above %s", path, what,
                       cd_format_bytes(f.size, a, sizeof a), lim);
    }
    /* One byte more than the size tells whether the file grew meanwhile. */
    const size_t cap = (size_t)f.size;
    char *buf = malloc(cap + 1);
    if (!buf) {
        cd_file_close(&f);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    size_t n = 0;
    st = cd_file_pread_some(&f, buf, cap + 1, 0, &n, err);
    cd_file_close(&f);
    if (st == CD_OK && n != cap) st = cd_fail(err, CD_ERR_IO, "%s: %s file changed while being read", path, what);
    if (st != CD_OK) {
        free(buf);
        return st;
    }
    buf[n] = '\0';
    *text = buf;
    if (len) *len = n;
    return CD_OK;
}

cd_status cd_read_text_file(const char *path, size_t max_bytes, const char *what, char **text, cd_error *err) {
    return cd_read_text_file_len(path, max_bytes, what, text, NULL, err);
}
