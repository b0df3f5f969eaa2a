/* Exclusive output-folder lock: flock on a lock file that names its holder. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cirrdata/folder.h"
#include "io/dir_lock.h"

/* What the lock file says about its holder, for the refusal of a second writer. */
static void read_holder(int fd, char *buf, size_t cap) {
    ssize_t n = pread(fd, buf, cap - 1, 0);
    if (n < 0) n = 0;
    buf[n] = '\0';
    for (char *c = buf; *c; c++)
        if (*c == '\n' || *c == '\r') *c = *(c + 1) ? ' ' : '\0';
    if (!buf[0]) snprintf(buf, cap, "it has not said who it is yet");
}

static void write_holder(int fd, const char *what) {
    char host[256] = "?", when[32] = "?", line[512];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = '\0';
    time_t t = time(NULL);
    struct tm tm;
    if (localtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    int n =
        snprintf(line, sizeof line, "pid %ld on host %s: cirrdata %s, since %s\n", (long)getpid(), host, what, when);
    if (ftruncate(fd, 0) == 0 && n > 0) (void)!pwrite(fd, line, (size_t)n, 0);
}

cd_status cd_dir_lock_acquire(const char *dir, const char *what, cd_dir_lock *lock, cd_error *err) {
    lock->fd = -1;
    if (snprintf(lock->path, sizeof lock->path, "%s/" CD_DIR_LOCK_NAME, dir) >= (int)sizeof lock->path)
        return cd_fail(err, CD_ERR_ARG, "%.100s...: path too long", dir);
    /* The holder removes the file when it is done: a file we opened may be unlinked before we lock it,
     * and then a third process could lock a new one. Only a lock on the file the name still points to
     * counts, so retry when it changed under us. */
    for (int attempt = 0; attempt < 16; attempt++) {
        int fd = open(lock->path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0644);
        if (fd < 0 && errno == ELOOP) {
            /* A symbolic link planted at the lock's name: remove the link (never what it points to). */
            if (unlink(lock->path) == 0) continue;
        }
        if (fd < 0)
            return cd_fail(err, CD_ERR_IO, "%s: cannot create the folder's lock file: %s", lock->path, strerror(errno));
        struct stat a, b;
        if (fstat(fd, &a) != 0 || !S_ISREG(a.st_mode)) {
            close(fd);
            return cd_fail(err, CD_ERR_IO, "%s: the folder's lock file is not a regular file", lock->path);
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            char holder[400];
            read_holder(fd, holder, sizeof holder);
            close(fd);
            if (e == EWOULDBLOCK)
                return cd_fail(
                    err, CD_ERR_IO,
                    "%s: another cirrdata process is writing into this folder (%s); wait for it to finish or "
                    "choose another output folder",
                    dir, holder);
            return cd_fail(err, CD_ERR_IO, "%s: cannot lock: %s", lock->path, strerror(e));
        }
        if (stat(lock->path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
            write_holder(fd, what);
            lock->fd = fd;
            return CD_OK;
        }
        close(fd);
    }
    return cd_fail(err, CD_ERR_IO, "%s: cannot lock: the lock file keeps being replaced", lock->path);
}

void cd_dir_lock_release(cd_dir_lock *lock) {
    if (!lock || lock->fd < 0) return;
    unlink(lock->path); /* while still holding it: see cd_dir_lock_acquire */
    close(lock->fd);
    lock->fd = -1;
}

/* The public face (cirrdata/dataset.h), for tools that write folders. */
struct cd_folder_lock {
    cd_dir_lock lock;
};

cd_status cd_folder_lock_acquire(const char *dir, const char *what, cd_folder_lock **out, cd_error *err) {
    if (!dir || !what || !out) return cd_fail(err, CD_ERR_ARG, "cd_folder_lock_acquire: NULL argument");
    *out = NULL;
    cd_folder_lock *l = malloc(sizeof *l);
    if (!l) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    cd_status st = cd_dir_lock_acquire(dir, what, &l->lock, err);
    if (st != CD_OK) {
        free(l);
        return st;
    }
    *out = l;
    return CD_OK;
}

void cd_folder_lock_release(cd_folder_lock *l) {
    if (!l) return;
    cd_dir_lock_release(&l->lock);
    free(l);
}
