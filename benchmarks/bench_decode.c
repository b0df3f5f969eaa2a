/* bench_decode — how fast cd_nifti_read decodes a NIfTI volume, against the bounds of the machine.
 *
 *   bench_decode FILE.nii.gz [--repeat N] [--json] [--diag]
 *   bench_decode FILE.nii    [--repeat N] [--json] [--diag]
 *
 * --verbose prints every timing (ms, in round order) to stderr.
 *
 * Everything runs in one process. The candidates are interleaved round-robin (the starting candidate
 * rotates every round) over N rounds (default 15) after one untimed warm-up round, so that drift in
 * machine load hits every candidate alike. Times come from clock_gettime(CLOCK_MONOTONIC). For each
 * candidate we report the median and minimum time and the throughput in MB/s (1 MB = 1e6 bytes) of
 * the uncompressed voxel bytes of volume 0 (the same denominator for every candidate, so a
 * throughput ratio is the inverse time ratio).
 *
 * .nii.gz candidates:
 *   libdeflate raw    the compressed file already in memory; libdeflate_gzip_decompress into a
 *                     preallocated, pre-touched output buffer: the pure inflate bound. The buffer is
 *                     a 2 MiB-aligned mapping with madvise(MADV_HUGEPAGE) (transparent huge pages
 *                     where the kernel allows them), so that the bound is not inflated by TLB misses
 *                     a reader can avoid (see "raw (4K pages)" under --diag).
 *   libdeflate + file open + fstat + read the file (page cache) into a malloc'd buffer + malloc the
 *                     output + inflate + free: what a minimal hand-written reader costs.
 *   cirrdata          cd_nifti_read(path) then cd_volume_destroy: the full path a user calls.
 * .nii candidates:
 *   pread raw         open + pread of the voxel bytes into a preallocated, pre-touched buffer (the
 *                     same huge-page-advised kind as above).
 *   malloc + pread    open + malloc + pread of the voxel bytes + free (fresh pages every time).
 *   cirrdata          as above.
 * --diag adds diagnostic candidates that split the cost of "libdeflate + file" into phases:
 *   raw (4K pages)    as "libdeflate raw" / "pread raw", but the pre-touched output is a plain malloc
 *                     buffer (4 KiB pages: more TLB misses, which cost a lot in some VMs).
 *   read file only    open + read the compressed file into a malloc'd buffer + free.
 *   inflate fresh     compressed data in memory; malloc a fresh output + inflate + free (raw inflate
 *                     plus the page faults of a new buffer).
 *   malloc + touch    malloc the output size, write one byte per 4 KiB page, free (fault cost).
 *   mmap populate     mmap(MAP_POPULATE) of the output size + munmap (pages without fault traps).
 *   hugepage + touch  2 MiB-aligned mmap + madvise(MADV_HUGEPAGE) + touch + munmap.
 *   deflate+file+pop  "libdeflate + file" with the output in a MAP_POPULATE mapping: what a reader
 *                     that avoids per-page faults could reach.
 *   deflate+file+huge "libdeflate + file" with the output in a 2 MiB-aligned MADV_HUGEPAGE mapping.
 *
 * Before timing, every candidate's output is checked against the reference bytes (the voxels of the
 * inflated file), so a fast but wrong decoder cannot win.
 *
 * Only little-endian single-file NIfTI-1/-2 files are supported as input (the baselines need the
 * voxel offset; cirrdata itself reads more). */
#include <cirrdata/cirrdata.h>
#include <libdeflate.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_CANDIDATES 12

typedef struct bench_ctx {
    const char *path;
    bool gz;
    /* compressed (or plain) file contents, read once */
    uint8_t *file_buf;
    size_t file_len;
    /* the whole uncompressed file, inflated once: the reference */
    uint8_t *ref;
    size_t ref_len;
    size_t vox_offset;
    size_t vox_bytes;     /* bytes of volume 0 */
    uint8_t *prealloc;    /* pre-touched output buffer of out_size() bytes, MADV_HUGEPAGE */
    uint8_t *prealloc_4k; /* the same from malloc (4 KiB pages; --diag only) */
    struct libdeflate_decompressor *dec;
    bool verify; /* set during the check pass: compare outputs with the reference */
} bench_ctx;

typedef int (*bench_fn)(bench_ctx *ctx);

typedef struct candidate {
    const char *name;
    const char *key; /* JSON key */
    bench_fn fn;
    double *times;
} candidate;

typedef struct map_buf {
    uint8_t *base, *p;
    size_t len;
} map_buf;

static int map_buf_alloc(map_buf *b, size_t n, bool huge);

static void die(const char *fmt, const char *arg) {
    fprintf(stderr, "bench_decode: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(1);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Reads a whole file into a fresh malloc'd buffer. Returns NULL on error (errno set). */
static uint8_t *read_file(const char *path, size_t *len_out) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    size_t len = (size_t)st.st_size;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        close(fd);
        return NULL;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t r = read(fd, buf + done, len - done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(buf);
            close(fd);
            if (r == 0) errno = EIO;
            return NULL;
        }
        done += (size_t)r;
    }
    close(fd);
    *len_out = len;
    return buf;
}

/* gzip ISIZE: the uncompressed size mod 2^32, from the last four bytes of a single-member stream. */
static size_t gzip_isize(const uint8_t *buf, size_t len) {
    if (len < 18) return 0;
    const uint8_t *p = buf + len - 4;
    return (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 | (size_t)p[3] << 24;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static int64_t le64(const uint8_t *p) { return (int64_t)((uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32); }

/* Voxel offset and bytes of volume 0 from a little-endian NIfTI-1 or NIfTI-2 header. */
static void parse_header(bench_ctx *ctx, const uint8_t *h, size_t len) {
    int64_t dim[8];
    int64_t bitpix;
    double off;
    if (len >= 348 && le32(h) == 348) {
        for (int i = 0; i < 8; i++) dim[i] = (int16_t)le16(h + 40 + 2 * i);
        bitpix = (int16_t)le16(h + 72);
        float f;
        uint32_t u = le32(h + 108);
        memcpy(&f, &u, sizeof f);
        off = f;
    } else if (len >= 540 && le32(h) == 540) {
        for (int i = 0; i < 8; i++) dim[i] = le64(h + 16 + 8 * i);
        bitpix = (int16_t)le16(h + 14);
        off = (double)le64(h + 168);
    } else {
        die("%s: not a little-endian single-file NIfTI-1/-2 (the baselines need one)", ctx->path);
        return;
    }
    if (dim[0] < 1 || dim[0] > 7 || bitpix <= 0 || bitpix % 8 != 0 || off < 0)
        die("%s: unexpected header fields", ctx->path);
    uint64_t n = 1;
    for (int i = 1; i <= (dim[0] < 3 ? dim[0] : 3); i++) {
        if (dim[i] < 1) die("%s: bad dim", ctx->path);
        n *= (uint64_t)dim[i];
    }
    ctx->vox_offset = (size_t)off;
    ctx->vox_bytes = (size_t)(n * (uint64_t)(bitpix / 8));
}

static int check_voxels(bench_ctx *ctx, const void *data, size_t nbytes, const char *who) {
    if (!ctx->verify) return 0;
    if (nbytes != ctx->vox_bytes) {
        fprintf(stderr, "bench_decode: %s produced %zu voxel bytes, expected %zu\n", who, nbytes, ctx->vox_bytes);
        return -1;
    }
    if (memcmp(data, ctx->ref + ctx->vox_offset, nbytes) != 0) {
        fprintf(stderr, "bench_decode: %s output differs from the reference voxels\n", who);
        return -1;
    }
    return 0;
}

/* ---- .nii.gz candidates ---- */

static int run_deflate_raw(bench_ctx *ctx) {
    size_t actual = 0;
    enum libdeflate_result r =
        libdeflate_gzip_decompress(ctx->dec, ctx->file_buf, ctx->file_len, ctx->prealloc, ctx->ref_len, &actual);
    if (r != LIBDEFLATE_SUCCESS || actual != ctx->ref_len) return -1;
    return check_voxels(ctx, ctx->prealloc + ctx->vox_offset, ctx->vox_bytes, "libdeflate raw");
}

static int run_deflate_raw_4k(bench_ctx *ctx) {
    size_t actual = 0;
    enum libdeflate_result r =
        libdeflate_gzip_decompress(ctx->dec, ctx->file_buf, ctx->file_len, ctx->prealloc_4k, ctx->ref_len, &actual);
    if (r != LIBDEFLATE_SUCCESS || actual != ctx->ref_len) return -1;
    return check_voxels(ctx, ctx->prealloc_4k + ctx->vox_offset, ctx->vox_bytes, "raw (4K pages)");
}

static int run_deflate_file(bench_ctx *ctx) {
    size_t clen = 0;
    uint8_t *cbuf = read_file(ctx->path, &clen);
    if (!cbuf) return -1;
    size_t ulen = gzip_isize(cbuf, clen);
    uint8_t *out = malloc(ulen ? ulen : 1);
    struct libdeflate_decompressor *dec = libdeflate_alloc_decompressor();
    int rc = -1;
    size_t actual = 0;
    if (out && dec && libdeflate_gzip_decompress(dec, cbuf, clen, out, ulen, &actual) == LIBDEFLATE_SUCCESS &&
        actual == ulen && ulen == ctx->ref_len)
        rc = check_voxels(ctx, out + ctx->vox_offset, ctx->vox_bytes, "libdeflate + file");
    libdeflate_free_decompressor(dec);
    free(out);
    free(cbuf);
    return rc;
}

static int run_read_only(bench_ctx *ctx) {
    size_t len = 0;
    uint8_t *buf = read_file(ctx->path, &len);
    if (!buf) return -1;
    int rc = len == ctx->file_len ? 0 : -1;
    free(buf);
    return rc;
}

static int run_inflate_fresh(bench_ctx *ctx) {
    uint8_t *out = malloc(ctx->ref_len);
    if (!out) return -1;
    size_t actual = 0;
    int rc = -1;
    if (libdeflate_gzip_decompress(ctx->dec, ctx->file_buf, ctx->file_len, out, ctx->ref_len, &actual) ==
            LIBDEFLATE_SUCCESS &&
        actual == ctx->ref_len)
        rc = check_voxels(ctx, out + ctx->vox_offset, ctx->vox_bytes, "inflate fresh");
    free(out);
    return rc;
}

static size_t out_size(const bench_ctx *ctx);

static int run_malloc_touch(bench_ctx *ctx) {
    size_t n = out_size(ctx);
    volatile uint8_t *out = malloc(n);
    if (!out) return -1;
    for (size_t i = 0; i < n; i += 4096) out[i] = 1;
    free((void *)out);
    return 0;
}

static size_t out_size(const bench_ctx *ctx) { return ctx->gz ? ctx->ref_len : ctx->vox_bytes; }

static int run_mmap_populate(bench_ctx *ctx) {
    size_t n = out_size(ctx);
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) return -1;
    munmap(p, n);
    return 0;
}

static int run_hugepage_touch(bench_ctx *ctx) {
    const size_t huge = (size_t)2 << 20;
    size_t n = out_size(ctx), m = n + huge;
    uint8_t *base = mmap(NULL, m, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return -1;
    volatile uint8_t *p = (uint8_t *)(((uintptr_t)base + huge - 1) & ~(uintptr_t)(huge - 1));
    (void)madvise((void *)p, n, MADV_HUGEPAGE);
    for (size_t i = 0; i < n; i += 4096) p[i] = 1;
    munmap(base, m);
    return 0;
}

/* A fresh output buffer: MAP_POPULATE mapping, or 2 MiB-aligned mapping with MADV_HUGEPAGE. */
static int map_buf_alloc(map_buf *b, size_t n, bool huge) {
    const size_t h = (size_t)2 << 20;
    b->len = huge ? n + h : n;
    b->base =
        mmap(NULL, b->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (huge ? 0 : MAP_POPULATE), -1, 0);
    if (b->base == MAP_FAILED) return -1;
    b->p = huge ? (uint8_t *)(((uintptr_t)b->base + h - 1) & ~(uintptr_t)(h - 1)) : b->base;
    if (huge) (void)madvise(b->p, n, MADV_HUGEPAGE);
    return 0;
}

static int deflate_file_mapped(bench_ctx *ctx, bool huge, const char *who) {
    size_t clen = 0;
    uint8_t *cbuf = read_file(ctx->path, &clen);
    if (!cbuf) return -1;
    size_t ulen = gzip_isize(cbuf, clen);
    map_buf out;
    if (map_buf_alloc(&out, ulen ? ulen : 1, huge) != 0) {
        free(cbuf);
        return -1;
    }
    struct libdeflate_decompressor *dec = libdeflate_alloc_decompressor();
    int rc = -1;
    size_t actual = 0;
    if (dec && libdeflate_gzip_decompress(dec, cbuf, clen, out.p, ulen, &actual) == LIBDEFLATE_SUCCESS &&
        actual == ulen && ulen == ctx->ref_len)
        rc = check_voxels(ctx, out.p + ctx->vox_offset, ctx->vox_bytes, who);
    libdeflate_free_decompressor(dec);
    munmap(out.base, out.len);
    free(cbuf);
    return rc;
}

static int run_deflate_file_populate(bench_ctx *ctx) { return deflate_file_mapped(ctx, false, "deflate+file+pop"); }
static int run_deflate_file_huge(bench_ctx *ctx) { return deflate_file_mapped(ctx, true, "deflate+file+huge"); }

/* ---- .nii candidates ---- */

static int pread_all(int fd, uint8_t *buf, size_t len, off_t off) {
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, buf + done, len - done, off + (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        done += (size_t)r;
    }
    return 0;
}

static int run_pread_raw(bench_ctx *ctx) {
    int fd = open(ctx->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = pread_all(fd, ctx->prealloc, ctx->vox_bytes, (off_t)ctx->vox_offset);
    close(fd);
    if (rc == 0) rc = check_voxels(ctx, ctx->prealloc, ctx->vox_bytes, "pread raw");
    return rc;
}

static int run_pread_raw_4k(bench_ctx *ctx) {
    int fd = open(ctx->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = pread_all(fd, ctx->prealloc_4k, ctx->vox_bytes, (off_t)ctx->vox_offset);
    close(fd);
    if (rc == 0) rc = check_voxels(ctx, ctx->prealloc_4k, ctx->vox_bytes, "raw (4K pages)");
    return rc;
}

static int run_malloc_pread(bench_ctx *ctx) {
    int fd = open(ctx->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    uint8_t *buf = malloc(ctx->vox_bytes);
    int rc = buf ? pread_all(fd, buf, ctx->vox_bytes, (off_t)ctx->vox_offset) : -1;
    close(fd);
    if (rc == 0) rc = check_voxels(ctx, buf, ctx->vox_bytes, "malloc + pread");
    free(buf);
    return rc;
}

/* ---- cirrdata ---- */

static int run_cirrdata(bench_ctx *ctx) {
    cd_volume *vol = NULL;
    cd_nifti_header hdr;
    cd_error err;
    cd_status st = cd_nifti_read(ctx->path, NULL, &vol, &hdr, &err);
    if (st != CD_OK) {
        fprintf(stderr, "bench_decode: cd_nifti_read: %s: %s\n", cd_status_name(st), err.message);
        return -1;
    }
    int rc = check_voxels(ctx, cd_volume_data_const(vol), cd_volume_nbytes(vol), "cirrdata");
    cd_volume_destroy(vol);
    return rc;
}

/* ---- statistics ---- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_of(const double *t, int n) {
    double *s = malloc((size_t)n * sizeof *s);
    if (!s) die("%s", "out of memory");
    memcpy(s, t, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return m;
}

static double min_of(const double *t, int n) {
    double m = t[0];
    for (int i = 1; i < n; i++)
        if (t[i] < m) m = t[i];
    return m;
}

static void usage(void) {
    fprintf(stderr, "usage: bench_decode FILE.nii[.gz] [--repeat N] [--json] [--diag] [--verbose]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int repeat = 15;
    bool json = false, diag = false, verbose = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
            repeat = atoi(argv[++i]);
            if (repeat < 1) usage();
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--diag") == 0) {
            diag = true;
        } else if (strcmp(argv[i], "--verbose") == 0) {
            verbose = true;
        } else if (argv[i][0] == '-' || path) {
            usage();
        } else {
            path = argv[i];
        }
    }
    if (!path) usage();

    bench_ctx ctx = {0};
    ctx.path = path;
    ctx.file_buf = read_file(path, &ctx.file_len);
    if (!ctx.file_buf) die("cannot read %s", path);
    ctx.gz = ends_with(path, ".gz") || (ctx.file_len >= 2 && ctx.file_buf[0] == 0x1f && ctx.file_buf[1] == 0x8b);

    if (ctx.gz) {
        ctx.dec = libdeflate_alloc_decompressor();
        if (!ctx.dec) die("%s", "libdeflate_alloc_decompressor failed");
        ctx.ref_len = gzip_isize(ctx.file_buf, ctx.file_len);
        ctx.ref = malloc(ctx.ref_len ? ctx.ref_len : 1);
        size_t actual = 0;
        if (!ctx.ref ||
            libdeflate_gzip_decompress(ctx.dec, ctx.file_buf, ctx.file_len, ctx.ref, ctx.ref_len, &actual) !=
                LIBDEFLATE_SUCCESS ||
            actual != ctx.ref_len)
            die("%s: libdeflate cannot inflate it as one gzip member", path);
    } else {
        ctx.ref = ctx.file_buf;
        ctx.ref_len = ctx.file_len;
    }
    parse_header(&ctx, ctx.ref, ctx.ref_len);
    if (ctx.vox_offset + ctx.vox_bytes > ctx.ref_len) die("%s: file shorter than its header says", path);
    map_buf pre_buf;
    size_t pre_len = out_size(&ctx);
    if (map_buf_alloc(&pre_buf, pre_len ? pre_len : 1, true) != 0) die("%s", "mmap failed");
    ctx.prealloc = pre_buf.p;
    memset(ctx.prealloc, 0, pre_len); /* pre-touch */
    if (diag) {
        ctx.prealloc_4k = malloc(pre_len ? pre_len : 1);
        if (!ctx.prealloc_4k) die("%s", "out of memory");
        memset(ctx.prealloc_4k, 0, pre_len);
    }

    candidate cands[MAX_CANDIDATES];
    int nc = 0;
    if (ctx.gz) {
        cands[nc++] = (candidate){"libdeflate raw", "libdeflate_raw", run_deflate_raw, NULL};
        cands[nc++] = (candidate){"libdeflate + file", "libdeflate_file", run_deflate_file, NULL};
    } else {
        cands[nc++] = (candidate){"pread raw", "pread_raw", run_pread_raw, NULL};
        cands[nc++] = (candidate){"malloc + pread", "malloc_pread", run_malloc_pread, NULL};
    }
    cands[nc++] = (candidate){"cirrdata", "cirrdata", run_cirrdata, NULL};
    if (diag) {
        cands[nc++] = ctx.gz ? (candidate){"raw (4K pages)", "libdeflate_raw_4k", run_deflate_raw_4k, NULL}
                             : (candidate){"raw (4K pages)", "pread_raw_4k", run_pread_raw_4k, NULL};
        if (ctx.gz) {
            cands[nc++] = (candidate){"read file only", "read_file", run_read_only, NULL};
            cands[nc++] = (candidate){"inflate fresh", "inflate_fresh", run_inflate_fresh, NULL};
        }
        cands[nc++] = (candidate){"malloc + touch", "malloc_touch", run_malloc_touch, NULL};
        cands[nc++] = (candidate){"mmap populate", "mmap_populate", run_mmap_populate, NULL};
        cands[nc++] = (candidate){"hugepage + touch", "hugepage_touch", run_hugepage_touch, NULL};
        if (ctx.gz) {
            cands[nc++] = (candidate){"deflate+file+pop", "deflate_file_populate", run_deflate_file_populate, NULL};
            cands[nc++] = (candidate){"deflate+file+huge", "deflate_file_hugepage", run_deflate_file_huge, NULL};
        }
    }
    for (int c = 0; c < nc; c++) {
        cands[c].times = calloc((size_t)repeat, sizeof(double));
        if (!cands[c].times) die("%s", "out of memory");
    }

    /* Check pass (also the warm-up round): every candidate must reproduce the reference voxels. */
    ctx.verify = true;
    for (int c = 0; c < nc; c++)
        if (cands[c].fn(&ctx) != 0) die("candidate '%s' failed its check", cands[c].name);
    ctx.verify = false;

    for (int r = 0; r < repeat; r++) {
        for (int j = 0; j < nc; j++) {
            candidate *cd = &cands[(r + j) % nc];
            double t0 = now_s();
            int rc = cd->fn(&ctx);
            double t1 = now_s();
            if (rc != 0) die("candidate '%s' failed", cd->name);
            cd->times[r] = t1 - t0;
        }
    }

    if (verbose) {
        for (int c = 0; c < nc; c++) {
            fprintf(stderr, "%-20s ms:", cands[c].name);
            for (int r = 0; r < repeat; r++) fprintf(stderr, " %.1f", cands[c].times[r] * 1e3);
            fputc('\n', stderr);
        }
    }

    double med[MAX_CANDIDATES], mn[MAX_CANDIDATES];
    for (int c = 0; c < nc; c++) {
        med[c] = median_of(cands[c].times, repeat);
        mn[c] = min_of(cands[c].times, repeat);
    }
    const int cd_idx = 2; /* cirrdata; 0 = raw bound, 1 = minimal reader */
    double mb = (double)ctx.vox_bytes / 1e6;
    double r_raw_med = med[0] / med[cd_idx], r_raw_min = mn[0] / mn[cd_idx];
    double r_file_med = med[1] / med[cd_idx], r_file_min = mn[1] / mn[cd_idx];

    if (json) {
        printf("{\"file\":\"%s\",\"mode\":\"%s\",\"file_bytes\":%zu,\"voxel_bytes\":%zu,\"repeat\":%d", path,
               ctx.gz ? "nii.gz" : "nii", ctx.file_len, ctx.vox_bytes, repeat);
        for (int c = 0; c < nc; c++)
            printf(",\"%s\":{\"name\":\"%s\",\"median_s\":%.6f,\"min_s\":%.6f,\"median_MBps\":%.1f,\"max_MBps\":%.1f}",
                   cands[c].key, cands[c].name, med[c], mn[c], mb / med[c], mb / mn[c]);
        printf(",\"ratio_cirrdata_vs_%s\":{\"median\":%.4f,\"min\":%.4f}", cands[0].key, r_raw_med, r_raw_min);
        printf(",\"ratio_cirrdata_vs_%s\":{\"median\":%.4f,\"min\":%.4f}}\n", cands[1].key, r_file_med, r_file_min);
    } else {
        printf("%s: %s, %zu bytes on disk, %.2f MB of voxels (volume 0), %d interleaved rounds\n", path,
               ctx.gz ? "gzip" : "uncompressed", ctx.file_len, mb, repeat);
        printf("%-20s %10s %10s %12s %12s\n", "candidate", "median ms", "min ms", "median MB/s", "best MB/s");
        for (int c = 0; c < nc; c++)
            printf("%-20s %10.2f %10.2f %12.1f %12.1f\n", cands[c].name, med[c] * 1e3, mn[c] * 1e3, mb / med[c],
                   mb / mn[c]);
        printf("throughput ratio cirrdata / %-18s median %.3f  min-time %.3f\n", cands[0].name, r_raw_med, r_raw_min);
        printf("throughput ratio cirrdata / %-18s median %.3f  min-time %.3f\n", cands[1].name, r_file_med, r_file_min);
    }

    for (int c = 0; c < nc; c++) free(cands[c].times);
    if (ctx.gz) free(ctx.ref);
    munmap(pre_buf.base, pre_buf.len);
    free(ctx.prealloc_4k);
    free(ctx.file_buf);
    libdeflate_free_decompressor(ctx.dec);
    return 0;
}
