/* The output folder of an nnU-Net export (nnunet_export.h): a hidden sibling written in full, then
 * renamed into place, and the byte-exact file copies. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libdeflate.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert/nnunet_export.h"
#include "io/file.h"

/* Splits out_dir into its parent folder and its last component (trailing slashes dropped). */
static cd_status split_path(const char *out_dir, char *parent, char *name, size_t cap, cd_error *err) {
    size_t len = strlen(out_dir);
    while (len > 1 && out_dir[len - 1] == '/') len--;
    if (len == 0 || len >= cap) return cd_fail(err, CD_ERR_ARG, "%.200s: bad output folder name", out_dir);
    char path[PATH_MAX];
    memcpy(path, out_dir, len);
    path[len] = '\0';
    char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(parent, cap, ".");
        snprintf(name, cap, "%s", path);
    } else {
        snprintf(name, cap, "%s", slash + 1);
        if (slash == path)
            snprintf(parent, cap, "/");
        else {
            *slash = '\0';
            snprintf(parent, cap, "%s", path);
        }
    }
    if (!*name || !strcmp(name, ".") || !strcmp(name, ".."))
        return cd_fail(err, CD_ERR_ARG, "%.200s: the output must name a new folder", out_dir);
    return CD_OK;
}

cd_status cd_nn_out_check(const char *out_dir, bool force, bool *exists, cd_error *err) {
    struct stat st;
    *exists = false;
    if (lstat(out_dir, &st) != 0) {
        if (errno == ENOENT) return CD_OK;
        return cd_fail(err, CD_ERR_IO, "%s: %s", out_dir, strerror(errno));
    }
    *exists = true;
    if (!S_ISDIR(st.st_mode)) return cd_fail(err, CD_ERR_ARG, "%s: exists and is not a folder; not replaced", out_dir);
    if (!force)
        return cd_fail(err, CD_ERR_ARG,
                       "%s: already exists; use --force to replace it (cd_nnunet_export_options.force)", out_dir);
    /* Only an nnU-Net dataset (or an empty folder) is replaced: a mistyped path must not delete a home. */
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/dataset.json", out_dir);
    if (access(p, F_OK) == 0) return CD_OK;
    DIR *d = opendir(out_dir);
    if (!d) return cd_fail(err, CD_ERR_IO, "%s: cannot list: %s", out_dir, strerror(errno));
    struct dirent *e;
    bool empty = true;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = false;
    closedir(d);
    if (!empty)
        return cd_fail(
            err, CD_ERR_ARG,
            "%s: exists and holds no dataset.json: --force replaces only an nnU-Net dataset or an empty folder",
            out_dir);
    return CD_OK;
}

cd_status cd_nn_out_begin(const char *out_dir, char *tmp, size_t cap, cd_error *err) {
    char parent[PATH_MAX], name[PATH_MAX];
    cd_status s = split_path(out_dir, parent, name, sizeof parent, err);
    if (s != CD_OK) return s;
    if (snprintf(tmp, cap, "%s/.%s.tmp-%ld", parent, name, (long)getpid()) >= (int)cap)
        return cd_fail(err, CD_ERR_ARG, "%.200s: path too long", out_dir);
    if (mkdir(tmp, 0755) == 0) return CD_OK;
    /* A leftover of a killed run with our pid (pid reuse) is ours by its name. */
    if (errno == EEXIST) {
        cd_nn_remove_tree(tmp);
        if (mkdir(tmp, 0755) == 0) return CD_OK;
    }
    return cd_fail(err, CD_ERR_IO, "%s: cannot create the temporary folder: %s", tmp, strerror(errno));
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

void cd_nn_remove_tree(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static int sync_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    if (flag != FTW_F && flag != FTW_DP) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return 1;
    int r = fsync(fd);
    close(fd);
    return r != 0;
}

cd_status cd_nn_out_commit(const char *tmp, const char *out_dir, bool replace, cd_error *err) {
    /* Every file and folder reaches the disk before the dataset's name does: a crash cannot leave a named
     * dataset with empty files. */
    if (nftw(tmp, sync_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return cd_fail(err, CD_ERR_IO, "%s: cannot flush the written files to disk: %s", tmp, strerror(errno));
    if (!replace) {
        /* RENAME_NOREPLACE: an out_dir created meanwhile (another export) is never replaced. */
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, out_dir, RENAME_NOREPLACE) == 0) {
            cd_fsync_dir_of(out_dir);
            return CD_OK;
        }
        if (errno != EINVAL && errno != ENOSYS)
            return cd_fail(err, CD_ERR_IO, "%s: cannot rename %s into place: %s", out_dir, tmp, strerror(errno));
        if (access(out_dir, F_OK) == 0) return cd_fail(err, CD_ERR_ARG, "%s: appeared while exporting", out_dir);
        if (rename(tmp, out_dir) != 0)
            return cd_fail(err, CD_ERR_IO, "%s: cannot rename %s into place: %s", out_dir, tmp, strerror(errno));
        cd_fsync_dir_of(out_dir);
        return CD_OK;
    }
    /* Swap: out_dir is the complete new dataset at every instant; the old one then lies at tmp. */
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, out_dir, RENAME_EXCHANGE) == 0) {
        cd_fsync_dir_of(out_dir);
        cd_nn_remove_tree(tmp);
        return CD_OK;
    }
    if (errno != EINVAL && errno != ENOSYS)
        return cd_fail(err, CD_ERR_IO, "%s: cannot swap %s into place: %s", out_dir, tmp, strerror(errno));
    char old[PATH_MAX + 16];
    snprintf(old, sizeof old, "%s.old", tmp);
    if (rename(out_dir, old) != 0)
        return cd_fail(err, CD_ERR_IO, "%s: cannot move the old dataset aside: %s", out_dir, strerror(errno));
    if (rename(tmp, out_dir) != 0) {
        int e = errno;
        rename(old, out_dir);
        return cd_fail(err, CD_ERR_IO, "%s: cannot rename %s into place: %s", out_dir, tmp, strerror(e));
    }
    cd_fsync_dir_of(out_dir);
    cd_nn_remove_tree(old);
    return CD_OK;
}

cd_status cd_nn_copy_file(const char *src, const char *dst, bool gzip, int level, uint64_t max_bytes, uint64_t *bytes,
                          cd_error *err) {
    *bytes = 0;
    cd_file f = {-1, 0, src};
    cd_status st = cd_file_open(src, &f, err);
    if (st != CD_OK) return st;
    void *buf = NULL;
    size_t len = 0;
    st = cd_file_read_all(&f, max_bytes ? max_bytes : UINT64_MAX, &buf, &len, err);
    cd_file_close(&f);
    if (st != CD_OK) return st;
    if (!gzip) {
        cd_write_piece piece = {buf, len};
        st = cd_file_write_atomic(dst, &piece, 1, err);
        *bytes = len;
        cd_buffer_free(buf, len);
        return st;
    }
    /* One gzip member over the whole file: header, extensions and voxels as they were. */
    if (level < 1 || level > 12) {
        cd_buffer_free(buf, len);
        return cd_fail(err, CD_ERR_ARG, "%s: gzip level %d is not in 1..12", dst, level);
    }
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(level);
    size_t bound = c ? libdeflate_gzip_compress_bound(c, len) : 0;
    uint8_t *gz = c ? cd_buffer_alloc(bound) : NULL;
    if (!gz) {
        st = cd_fail(err, CD_ERR_NOMEM, "%s: cannot allocate buffers for compression", dst);
    } else {
        size_t n = libdeflate_gzip_compress(c, buf, len, gz, bound);
        if (n == 0) {
            st = cd_fail(err, CD_ERR_INTERNAL, "%s: gzip compression failed", dst);
        } else {
            cd_write_piece piece = {gz, n};
            st = cd_file_write_atomic(dst, &piece, 1, err);
            *bytes = n;
        }
    }
    if (gz) cd_buffer_free(gz, bound);
    if (c) libdeflate_free_compressor(c);
    cd_buffer_free(buf, len);
    return st;
}
