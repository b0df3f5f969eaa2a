/* Whole-file writes through a temporary name (see atomic_file.h). */
#include "atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

FILE *atomic_open_temporary(const char *tmp) {
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd >= 0) {
            FILE *f = fdopen(fd, "wb");
            if (!f) close(fd);
            return f;
        }
        if (errno != EEXIST || unlink(tmp) != 0) break;
    }
    return NULL;
}

static cd_status fail(cd_error *err, const char *path, const char *what) {
    err->status = CD_ERR_IO;
    snprintf(err->message, sizeof err->message, "cannot write %.380s: %.100s", path, what);
    return CD_ERR_IO;
}

cd_status atomic_write_file(const char *path, const void *data, size_t len, cd_error *err) {
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return fail(err, path, "path too long");
    FILE *f = atomic_open_temporary(tmp);
    if (!f) return fail(err, path, strerror(errno));
    const bool ok = fwrite(data, 1, len, f) == len;
    const int saved = errno;
    if (fclose(f) != 0 || !ok) {
        unlink(tmp);
        return fail(err, path, strerror(ok ? errno : saved));
    }
    if (rename(tmp, path) != 0) {
        const int e = errno;
        unlink(tmp);
        return fail(err, path, strerror(e));
    }
    return CD_OK;
}
