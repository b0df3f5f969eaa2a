/* Shared helpers for the libFuzzer targets (tests/fuzz): a private temporary folder, created once per
 * process (under /dev/shm when present, so the file system is not the bottleneck), and whole-file
 * writes. The targets call the library's file-based parsers on the fuzzer's bytes. */
#ifndef CD_FUZZ_COMMON_H
#define CD_FUZZ_COMMON_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_dir[256];

/* Removes the temporary folder at exit (libFuzzer exits through exit(); after a crash it stays). */
static void fuzz_cleanup(void) {
    DIR *d = opendir(fuzz_dir);
    if (!d) return;
    struct dirent *e;
    char p[600];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", fuzz_dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(fuzz_dir);
}

__attribute__((unused)) static const char *fuzz_tmpdir(void) {
    char *dir = fuzz_dir;
    if (!dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        snprintf(dir, sizeof fuzz_dir, "%s/cd-fuzz-XXXXXX", base);
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            abort();
        }
        atexit(fuzz_cleanup);
    }
    return dir;
}

/* dir/name, in a static buffer per slot (0..3). */
__attribute__((unused)) static const char *fuzz_path(int slot, const char *name) {
    static char paths[4][320];
    snprintf(paths[slot], sizeof paths[slot], "%s/%s", fuzz_tmpdir(), name);
    return paths[slot];
}

__attribute__((unused)) static void fuzz_write(const char *path, const void *data, size_t size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(path);
        abort();
    }
    const char *p = data;
    while (size) {
        ssize_t n = write(fd, p, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            perror(path);
            abort();
        }
        p += n;
        size -= (size_t)n;
    }
    close(fd);
}

/* The bytes as a NUL-terminated string (the JSON parsers take C strings). Caller frees. */
__attribute__((unused)) static char *fuzz_cstring(const unsigned char *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}

#endif
