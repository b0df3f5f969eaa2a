/* Plain file access with errors that name the file (internal). */
#ifndef CD_IO_FILE_H
#define CD_IO_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/fs.h"
#include "core/internal.h"

typedef struct cd_file {
    int fd;
    uint64_t size;
    const char *path; /* borrowed, for messages */
} cd_file;

/* cd_open_regular into a cd_file. */
CD_INTERNAL cd_status cd_file_open(const char *path, cd_file *f, cd_error *err);
CD_INTERNAL void cd_file_close(cd_file *f);

/* Reads exactly n bytes at offset; a short file is CD_ERR_TRUNCATED. */
CD_INTERNAL cd_status cd_file_pread_exact(const cd_file *f, void *buf, size_t n, uint64_t offset, cd_error *err);

/* Reads up to n bytes at offset into buf; *got receives the count (short only at end of file). */
CD_INTERNAL cd_status cd_file_pread_some(const cd_file *f, void *buf, size_t n, uint64_t offset, size_t *got,
                                         cd_error *err);

/* Reads the whole file into a buffer from cd_buffer_alloc (free with cd_buffer_free(*buf, *len)).
 * Files larger than max_bytes are refused with CD_ERR_LIMIT. */
CD_INTERNAL cd_status cd_file_read_all(const cd_file *f, uint64_t max_bytes, void **buf, size_t *len, cd_error *err);

/* Reads a whole text file (a regular file: see cd_open_regular) of at most max_bytes (0: the JSON size
 * cap of cirrdata/limits.h) into a NUL-terminated malloc'ed string (*text); `what` names the content in
 * messages ("recipe", "manifest"). The _len form also gives the byte count (the text may hold NUL
 * bytes). A file whose size changes while it is read is CD_ERR_IO. */
CD_INTERNAL cd_status cd_read_text_file(const char *path, size_t max_bytes, const char *what, char **text,
                                        cd_error *err);
CD_INTERNAL cd_status cd_read_text_file_len(const char *path, size_t max_bytes, const char *what, char **text,
                                            size_t *len, cd_error *err);

/* True when path ends with suffix (ASCII case-insensitive). */
CD_INTERNAL int cd_path_has_suffix(const char *path, const char *suffix);

/* A piece of a file to write. */
typedef struct cd_write_piece {
    const void *data;
    size_t len;
} cd_write_piece;

/* Writes the pieces, in order, to "<path>.tmp-<pid>" and renames it to path, so no reader ever sees a
 * partial file under the final name. On failure the temporary file is removed. The temporary is created
 * exclusively and never through a symbolic link (cd_file_create_exclusive). The _ex form with `durable`
 * also fsyncs the file before the rename and the folder after it (manifests, journals). */
CD_INTERNAL cd_status cd_file_write_atomic(const char *path, const cd_write_piece *pieces, size_t npieces,
                                           cd_error *err);
CD_INTERNAL cd_status cd_file_write_atomic_ex(const char *path, const cd_write_piece *pieces, size_t npieces,
                                              bool durable, cd_error *err);

#endif
