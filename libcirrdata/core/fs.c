/* Creating and writing files safely (see fs.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
}

const char *cd_file_kind(unsigned mode) {
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISLNK(mode)) return "a symbolic link";
    return S_ISREG(mode) ? "a regular file" : "not a file";
}

cd_status cd_open_regular(const char *path, const char *what, int *fd_out, uint64_t *size, cd_error *err) {
    const char *sp = what ? " " : "", *w = what ? what : "";
    *fd_out = -1;
    if (size) *size = 0;
    /* O_NONBLOCK: open(2) of a FIFO without a writer otherwise waits for one forever, before the kind
     * of file can be checked; O_NOCTTY: a terminal device never becomes the controlling terminal. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) return cd_fail(err, CD_ERR_IO, "%s: cannot open%s%s: %s", path, sp, w, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return cd_fail(err, CD_ERR_IO, "%s: cannot stat%s%s: %s", path, sp, w, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return cd_fail(err, CD_ERR_IO, "%s: %s%snot a regular file (%s)", path, w, what ? ": " : "",
                       cd_file_kind((unsigned)st.st_mode));
    }
    /* Regular files ignore O_NONBLOCK today; cleared anyway so reads keep plain blocking semantics. */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        return cd_fail(err, CD_ERR_IO, "%s: cannot set blocking mode: %s", path, strerror(e));
    }
    *fd_out = fd;
    if (size) *size = (uint64_t)st.st_size;
    return CD_OK;
}

ssize_t cd_pread_full(int fd, void *buf, size_t n, uint64_t offset) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)buf + done, n - done, (off_t)(offset + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) break;
        done += (size_t)r;
    }
    return (ssize_t)done;
}
