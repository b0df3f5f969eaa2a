/* Creating and writing files without writing through planted links or losing errno (internal). */
#ifndef CD_CORE_FS_H
#define CD_CORE_FS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/internal.h"

/* Creates path for writing with O_CREAT | O_EXCL | O_NOFOLLOW: a file or a symbolic link already at that
 * name (a killed run's temporary, or a link planted to make us write elsewhere) is unlinked first, so
 * nothing is ever written through a link. *fd receives the descriptor. */
CD_INTERNAL cd_status cd_file_create_exclusive(const char *path, int *fd, cd_error *err);

/* write() until all len bytes are written; errors name path and carry the real errno (a short write on
 * a full disk is followed by the write that reports ENOSPC). */
CD_INTERNAL cd_status cd_file_write_full(int fd, const void *data, size_t len, const char *path, cd_error *err);

/* fsync of the folder holding path (after a rename into it); errors are ignored (not every file system
 * supports it). */
CD_INTERNAL void cd_fsync_dir_of(const char *path);

/* Opens path read-only (O_CLOEXEC) without ever waiting: a FIFO (whose open(2) would block until a
 * writer comes), a directory, a device or a socket is refused with "<path>: [what: ]not a regular
 * file (a FIFO)". Every reader of a file a user or a dataset names opens it through here. *fd gets a
 * blocking descriptor the caller closes; *size (may be NULL) the file's size. `what` (may be NULL)
 * names the content in messages ("recipe"). */
CD_INTERNAL cd_status cd_open_regular(const char *path, const char *what, int *fd, uint64_t *size, cd_error *err);

/* "a FIFO", "a directory", "a character device", ... for a st_mode. */
CD_INTERNAL const char *cd_file_kind(unsigned mode);

/* pread() until n bytes are read or the file ends (EINTR retried): the count read (short only at the
 * end of the file), or -1 with errno set. The one read loop of the library's readers. */
CD_INTERNAL ssize_t cd_pread_full(int fd, void *buf, size_t n, uint64_t offset);

#endif
