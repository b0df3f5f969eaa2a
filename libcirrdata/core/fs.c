/* Creating and writing files safely (see fs.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/fs.h"

cd_status cd_file_create_exclusive(const char *path, int *fd, cd_error *err) {
    for (int attempt = 0; attempt < 2; attempt++) {
        *fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (*fd >= 0) return CD_OK;
        /* A leftover of a killed run, or a link planted at the name: removing the name never touches
         * what a link points to. Then create afresh (exclusively again: nothing is written through). */
        if (errno != EEXIST || attempt || unlink(path) != 0) break;
    }
    return cd_fail(err, CD_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
}

cd_status cd_file_write_full(int fd, const void *data, size_t len, const char *path, cd_error *err) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        /* A short write is followed by another one, which reports the errno (ENOSPC, EFBIG...). */
        if (w < 0) return cd_fail(err, CD_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        if (w == 0) return cd_fail(err, CD_ERR_IO, "%s: write failed: %s", path, strerror(ENOSPC));
        p += w;
        len -= (size_t)w;
    }
    return CD_OK;
}

void cd_fsync_dir_of(const char *path) {
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
}
