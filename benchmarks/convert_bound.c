/* convert_bound — the "inflate + zstd-compress" bound of a conversion: the work the `raw` recipe
 * cannot avoid, and nothing else.
 *
 *   convert_bound [--threads N] [--repeat R] [--json] [--flat] [--read] [--dataset DIR] FILE...
 *
 * FILEs are the images and masks of a dataset (.nii.gz or .nii, little-endian NIfTI-1/-2, single
 * file). A FILE whose path contains "_images/" counts as one case (so the cases/s are comparable with
 * `cirrdata convert`, whose cases are image + mask pairs).
 *
 * Before timing, every file is read into memory (unless --read), its gzip ISIZE read, and each thread
 * gets an output buffer of the largest uncompressed size (2 MiB aligned, MADV_HUGEPAGE, pre-touched),
 * a chunk scratch buffer, a compressed-chunk buffer and one ZSTD_CCtx, all reused. Timed, per round:
 * N pthreads take files from a shared counter (dynamic split, one file at a time) and for each file
 *   libdeflate_gzip_decompress of the whole buffer (a .nii is used in place),
 *   then for every 64^3-voxel chunk of volume 0 (NIfTI order, x fastest; edge chunks smaller):
 *     gather the chunk's rows into the scratch buffer (default; --flat compresses consecutive
 *     64^3-voxel slices of the flat buffer instead, no gather, different bytes),
 *     ZSTD_compressCCtx(level 3) into the reused output buffer.
 * Nothing is written, hashed, reoriented, cast or allocated. --read moves the file read (open +
 * read from the page cache into a per-thread reused buffer) into the timed part.
 *
 * Rounds: one untimed warm-up, then R (default 5) timed; reports median and minimum wall seconds,
 * cases/s from the median, the bytes, and per-phase thread CPU seconds (CLOCK_THREAD_CPUTIME_ID,
 * summed over threads and rounds, divided by rounds): read, inflate, gather, zstd.
 *
 * Note: `cirrdata convert --recipe raw` stores images with a NIfTI scaling (scl_slope != 1) or a float
 * dtype as float32, which for an int16 source is twice the bytes this mode ("voxels") compresses; its
 * chunks are also gathered in C order (z fastest) from the reoriented volume.
 *
 * --dataset DIR ("stored" mode): the bytes compressed are exactly the tensors a conversion stored: DIR
 * is a dataset `cirrdata convert` wrote from these FILEs (any recipe); before timing, every chunk of
 * every record (image and mask; dtype, 64^3 chunk and C order as stored) is read and decoded with the
 * library (untimed). Timed: the FILEs are inflated as above (nothing else is done with them), and every
 * record's chunks are compressed with ZSTD_compressCCtx level 3, one chunk at a time as stored, into a
 * reused buffer; the threads take files and records from one shared counter. Cases = records. For
 * `raw` this is "inflate + zstd of the same bytes"; for nnunet-3d it is the same floor for that recipe
 * (its resampling, cropping and normalisation are left out).
 *
 * CONVERT_BOUND_VERBOSE=1 in the environment prints each thread's CPU per timed round to stderr (thread
 * CPU well below wall x threads means the threads did not get their cores: a loaded machine). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <libdeflate.h>
#include <zstd.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cirrdata/dataset.h"
#include "cirrdata/shard.h"

#define CHUNK 64
#define LEVEL 3
#define MAX_THREADS 256

typedef struct file_in {
    const char *path;
    bool gz;
    uint8_t *data; /* file contents (preloaded) */
    size_t len;
    size_t raw_len; /* uncompressed size (gzip ISIZE, or len) */
} file_in;

typedef struct thread_state {
    pthread_t tid;
    uint8_t *out;     /* inflate output, max raw_len, huge pages, touched */
    uint8_t *filebuf; /* --read: file buffer, max len */
    uint8_t *scratch; /* one gathered chunk */
    uint8_t *zout;    /* one compressed chunk */
    size_t zcap;
    ZSTD_CCtx *cctx;
    struct libdeflate_decompressor *dec;
    double t_read, t_inflate, t_gather, t_zstd; /* thread CPU seconds */
    uint64_t zbytes, vbytes;
    int error;
} thread_state;

/* --dataset: one record's decoded chunks, back to back. */
typedef struct record_in {
    uint8_t *raw;
    size_t nchunks;
    size_t *len; /* raw bytes of chunk i (chunk i starts at the sum of the earlier ones) */
} record_in;

static file_in *files;
static size_t nfiles;
static record_in *records;
static size_t nrecords;
static atomic_size_t next_file;
static bool opt_flat, opt_read;

static double now(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *huge_alloc(size_t n) {
    size_t align = (size_t)2 << 20, len = (n + align - 1) / align * align;
    void *p = NULL;
    if (posix_memalign(&p, align, len ? len : align) != 0) return NULL;
    madvise(p, len, MADV_HUGEPAGE);
    memset(p, 0, len); /* touch */
    return p;
}

static int read_file(const char *path, uint8_t *buf, size_t cap, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t got = 0;
    while (got < cap) {
        ssize_t r = read(fd, buf + got, cap - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    return 0;
}

static uint64_t rd_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* NIfTI-1/-2 header of an uncompressed buffer: dims of volume 0, bytes per voxel, voxel offset. */
static int nifti_geom(const uint8_t *b, size_t len, int64_t d[3], size_t *es, size_t *off) {
    if (len < 348) return -1;
    uint32_t sz = (uint32_t)rd_le(b, 4);
    int bitpix;
    int64_t dim[8];
    if (sz == 348) {
        for (int i = 0; i < 8; i++) dim[i] = (int16_t)rd_le(b + 40 + 2 * i, 2);
        bitpix = (int16_t)rd_le(b + 72, 2);
        float f;
        memcpy(&f, b + 108, 4);
        *off = (size_t)f;
    } else if (sz == 540 && len >= 540) {
        for (int i = 0; i < 8; i++) dim[i] = (int64_t)rd_le(b + 16 + 8 * i, 8);
        bitpix = (int16_t)rd_le(b + 14, 2);
        *off = (size_t)rd_le(b + 168, 8);
    } else {
        return -1;
    }
    for (int a = 0; a < 3; a++) d[a] = a < dim[0] ? dim[a + 1] : 1;
    *es = (size_t)bitpix / 8;
    if (*es == 0 || *off + (size_t)(d[0] * d[1] * d[2]) * *es > len) return -1;
    return 0;
}

static void process_file(thread_state *t, const file_in *f) {
    double c0 = now(CLOCK_THREAD_CPUTIME_ID), c1;
    const uint8_t *src = f->data;
    size_t src_len = f->len;
    if (opt_read) {
        if (read_file(f->path, t->filebuf, f->len, &src_len) != 0 || src_len != f->len) {
            t->error = 1;
            return;
        }
        src = t->filebuf;
    }
    c1 = now(CLOCK_THREAD_CPUTIME_ID);
    t->t_read += c1 - c0;
    c0 = c1;
    const uint8_t *raw = src;
    size_t raw_len = src_len;
    if (f->gz) {
        size_t n = 0;
        if (libdeflate_gzip_decompress(t->dec, src, src_len, t->out, f->raw_len, &n) != LIBDEFLATE_SUCCESS) {
            t->error = 1;
            return;
        }
        raw = t->out;
        raw_len = n;
    }
    c1 = now(CLOCK_THREAD_CPUTIME_ID);
    t->t_inflate += c1 - c0;
    c0 = c1;
    if (records) return; /* stored mode: the records are compressed instead of the voxels */
    int64_t d[3];
    size_t es, off;
    if (nifti_geom(raw, raw_len, d, &es, &off) != 0) {
        t->error = 1;
        return;
    }
    const uint8_t *vox = raw + off;
    const size_t total = (size_t)(d[0] * d[1] * d[2]) * es;
    t->vbytes += total;
    double gather = 0, zstd = 0;
    if (opt_flat) {
        const size_t step = (size_t)CHUNK * CHUNK * CHUNK * es;
        for (size_t p = 0; p < total; p += step) {
            size_t n = total - p < step ? total - p : step;
            size_t z = ZSTD_compressCCtx(t->cctx, t->zout, t->zcap, vox + p, n, LEVEL);
            if (ZSTD_isError(z))
                t->error = 1;
            else
                t->zbytes += z;
        }
        zstd = now(CLOCK_THREAD_CPUTIME_ID) - c0;
    } else {
        for (int64_t z0 = 0; z0 < d[2]; z0 += CHUNK)
            for (int64_t y0 = 0; y0 < d[1]; y0 += CHUNK)
                for (int64_t x0 = 0; x0 < d[0]; x0 += CHUNK) {
                    int64_t ex = d[0] - x0 < CHUNK ? d[0] - x0 : CHUNK, ey = d[1] - y0 < CHUNK ? d[1] - y0 : CHUNK,
                            ez = d[2] - z0 < CHUNK ? d[2] - z0 : CHUNK;
                    const size_t row = (size_t)ex * es;
                    uint8_t *o = t->scratch;
                    for (int64_t z = z0; z < z0 + ez; z++)
                        for (int64_t y = y0; y < y0 + ey; y++, o += row)
                            memcpy(o, vox + ((size_t)(x0 + d[0] * (y + d[1] * z))) * es, row);
                    double g = now(CLOCK_THREAD_CPUTIME_ID);
                    gather += g - c0;
                    size_t n =
                        ZSTD_compressCCtx(t->cctx, t->zout, t->zcap, t->scratch, (size_t)(o - t->scratch), LEVEL);
                    if (ZSTD_isError(n))
                        t->error = 1;
                    else
                        t->zbytes += n;
                    c0 = now(CLOCK_THREAD_CPUTIME_ID);
                    zstd += c0 - g;
                }
    }
    t->t_gather += gather;
    t->t_zstd += zstd;
}

static void process_record(thread_state *t, const record_in *r) {
    double c0 = now(CLOCK_THREAD_CPUTIME_ID);
    const uint8_t *p = r->raw;
    for (size_t i = 0; i < r->nchunks; i++) {
        size_t n = ZSTD_compressCCtx(t->cctx, t->zout, t->zcap, p, r->len[i], LEVEL);
        if (ZSTD_isError(n))
            t->error = 1;
        else
            t->zbytes += n;
        t->vbytes += r->len[i];
        p += r->len[i];
    }
    t->t_zstd += now(CLOCK_THREAD_CPUTIME_ID) - c0;
}

static void *worker(void *arg) {
    thread_state *t = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&next_file, 1);
        if (i >= nfiles + nrecords) break;
        if (i < nfiles)
            process_file(t, &files[i]);
        else
            process_record(t, &records[i - nfiles]);
    }
    return NULL;
}

/* Reads and decodes every chunk of every record of the dataset at dir (untimed); returns the largest
 * chunk's raw size, 0 on failure. */
static size_t load_dataset(const char *dir) {
    cd_error err;
    cd_dataset *ds;
    if (cd_dataset_open(dir, &ds, &err) != CD_OK) {
        fprintf(stderr, "convert_bound: %s\n", err.message);
        return 0;
    }
    size_t max_chunk = 0;
    nrecords = (size_t)cd_dataset_record_count(ds);
    records = calloc(nrecords ? nrecords : 1, sizeof *records);
    for (size_t r = 0; records && r < nrecords; r++) {
        cd_record *rec;
        const cd_shard *sh;
        if (cd_dataset_read_record(ds, r, &rec, &sh, &err) != CD_OK) {
            fprintf(stderr, "convert_bound: %s\n", err.message);
            return 0;
        }
        size_t total = 0, n = 0;
        for (uint32_t t = 0; t < cd_record_tensor_count(rec); t++) {
            cd_tensor_info ti;
            cd_record_tensor_info(rec, t, &ti);
            for (uint32_t c = 0; c < ti.chunk_count; c++) {
                cd_chunk_info ci;
                cd_record_chunk_info(rec, t, c, &ci);
                total += ci.raw_size;
                n++;
            }
        }
        record_in *ri = &records[r];
        ri->raw = malloc(total ? total : 1);
        ri->len = calloc(n ? n : 1, sizeof *ri->len);
        uint8_t *p = ri->raw;
        for (uint32_t t = 0; ri->raw && ri->len && t < cd_record_tensor_count(rec); t++) {
            cd_tensor_info ti;
            cd_record_tensor_info(rec, t, &ti);
            for (uint32_t c = 0; c < ti.chunk_count; c++) {
                cd_chunk_info ci;
                cd_record_chunk_info(rec, t, c, &ci);
                uint8_t *stored = malloc(ci.stored_size ? ci.stored_size : 1);
                if (!stored ||
                    pread(cd_shard_fd(sh), stored, ci.stored_size, (off_t)ci.offset) != (ssize_t)ci.stored_size ||
                    cd_record_decode_chunk(sh, rec, t, c, stored, p, &err) != CD_OK) {
                    fprintf(stderr, "convert_bound: %s: record %zu tensor %u chunk %u cannot be read\n", dir, r, t, c);
                    return 0;
                }
                free(stored);
                ri->len[ri->nchunks++] = ci.raw_size;
                if (ci.raw_size > max_chunk) max_chunk = ci.raw_size;
                p += ci.raw_size;
            }
        }
        cd_record_destroy(rec);
        if (!ri->raw || !ri->len) {
            fprintf(stderr, "convert_bound: out of memory\n");
            return 0;
        }
    }
    cd_dataset_close(ds);
    return records ? max_chunk : 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN), repeat = 5;
    bool json = false;
    const char *dataset = NULL;
    files = calloc((size_t)argc, sizeof *files);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--flat"))
            opt_flat = true;
        else if (!strcmp(argv[i], "--read"))
            opt_read = true;
        else if (!strcmp(argv[i], "--dataset") && i + 1 < argc)
            dataset = argv[++i];
        else if (argv[i][0] == '-') {
            fprintf(
                stderr,
                "usage: convert_bound [--threads N] [--repeat R] [--json] [--flat] [--read] [--dataset DIR] FILE...\n");
            return 2;
        } else
            files[nfiles++].path = argv[i];
    }
    if (!nfiles || threads < 1 || threads > MAX_THREADS || repeat < 1) {
        fprintf(stderr, "convert_bound: need FILEs, 1 <= threads <= %d, repeat >= 1\n", MAX_THREADS);
        return 2;
    }
    size_t cases = 0, max_raw = 0, max_len = 0;
    uint64_t in_bytes = 0;
    for (size_t i = 0; i < nfiles; i++) {
        file_in *f = &files[i];
        struct stat st;
        if (stat(f->path, &st) != 0) {
            fprintf(stderr, "convert_bound: %s: %s\n", f->path, strerror(errno));
            return 1;
        }
        f->data = malloc((size_t)st.st_size + 1);
        if (!f->data || read_file(f->path, f->data, (size_t)st.st_size, &f->len) != 0 || f->len != (size_t)st.st_size) {
            fprintf(stderr, "convert_bound: %s: cannot read\n", f->path);
            return 1;
        }
        f->gz = f->len > 18 && f->data[0] == 0x1f && f->data[1] == 0x8b;
        f->raw_len = f->gz ? (size_t)rd_le(f->data + f->len - 4, 4) : f->len;
        if (f->raw_len > max_raw) max_raw = f->raw_len;
        if (f->len > max_len) max_len = f->len;
        in_bytes += f->len;
        cases += strstr(f->path, "_images/") != NULL;
    }
    if (opt_read)
        for (size_t i = 0; i < nfiles; i++) {
            free(files[i].data);
            files[i].data = NULL;
        }
    size_t chunk_cap = (size_t)CHUNK * CHUNK * CHUNK * 8;
    if (dataset) {
        size_t m = load_dataset(dataset);
        if (!m) return 1;
        if (m > chunk_cap) chunk_cap = m;
        cases = nrecords;
    }
    thread_state *ts = calloc((size_t)threads, sizeof *ts);
    for (int t = 0; t < threads; t++) {
        ts[t].out = huge_alloc(max_raw);
        ts[t].filebuf = opt_read ? huge_alloc(max_len) : NULL;
        ts[t].scratch = huge_alloc(chunk_cap);
        ts[t].zcap = ZSTD_compressBound(chunk_cap);
        ts[t].zout = huge_alloc(ts[t].zcap);
        ts[t].cctx = ZSTD_createCCtx();
        ts[t].dec = libdeflate_alloc_decompressor();
        if (!ts[t].out || !ts[t].scratch || !ts[t].zout || !ts[t].cctx || !ts[t].dec || (opt_read && !ts[t].filebuf)) {
            fprintf(stderr, "convert_bound: out of memory\n");
            return 1;
        }
    }
    double *times = calloc((size_t)repeat, sizeof *times);
    uint64_t zbytes = 0, vbytes = 0;
    double ph[4] = {0, 0, 0, 0};
    for (int r = -1; r < repeat; r++) { /* r = -1: warm-up */
        for (int t = 0; t < threads; t++) {
            ts[t].t_read = ts[t].t_inflate = ts[t].t_gather = ts[t].t_zstd = 0;
            ts[t].zbytes = ts[t].vbytes = 0;
        }
        atomic_store(&next_file, 0);
        double w0 = now(CLOCK_MONOTONIC);
        for (int t = 0; t < threads; t++)
            if (pthread_create(&ts[t].tid, NULL, worker, &ts[t]) != 0) {
                fprintf(stderr, "convert_bound: pthread_create failed\n");
                return 1;
            }
        for (int t = 0; t < threads; t++) pthread_join(ts[t].tid, NULL);
        double w = now(CLOCK_MONOTONIC) - w0;
        zbytes = vbytes = 0;
        for (int t = 0; t < threads; t++) {
            if (ts[t].error) {
                fprintf(stderr, "convert_bound: a file failed to inflate, parse or compress\n");
                return 1;
            }
            zbytes += ts[t].zbytes;
            vbytes += ts[t].vbytes;
            if (r >= 0) {
                ph[0] += ts[t].t_read;
                ph[1] += ts[t].t_inflate;
                ph[2] += ts[t].t_gather;
                ph[3] += ts[t].t_zstd;
            }
        }
        if (r >= 0) times[r] = w;
        if (getenv("CONVERT_BOUND_VERBOSE") && r >= 0)
            for (int t = 0; t < threads; t++)
                fprintf(stderr, "round %d thread %d: wall %.3f s, cpu inflate %.3f zstd %.3f\n", r, t, w,
                        ts[t].t_inflate, ts[t].t_zstd);
    }
    double best = times[0];
    for (int r = 1; r < repeat; r++) best = times[r] < best ? times[r] : best;
    qsort(times, (size_t)repeat, sizeof *times, cmp_double);
    double med = repeat % 2 ? times[repeat / 2] : 0.5 * (times[repeat / 2 - 1] + times[repeat / 2]);
    if (json) {
        printf("{\"tool\":\"convert_bound\",\"files\":%zu,\"cases\":%zu,\"threads\":%d,\"repeat\":%d,\"mode\":\"%s\","
               "\"read_timed\":%s,\"median_s\":%.6f,\"min_s\":%.6f,\"cases_per_s\":%.4f,\"in_bytes\":%llu,"
               "\"voxel_bytes\":%llu,\"zstd_bytes\":%llu,\"cpu_s\":{\"read\":%.4f,\"inflate\":%.4f,\"gather\":%.4f,"
               "\"zstd\":%.4f}}\n",
               nfiles, cases, threads, repeat,
               records    ? "stored"
               : opt_flat ? "flat"
                          : "chunks",
               opt_read ? "true" : "false", med, best, (double)cases / med, (unsigned long long)in_bytes,
               (unsigned long long)vbytes, (unsigned long long)zbytes, ph[0] / repeat, ph[1] / repeat, ph[2] / repeat,
               ph[3] / repeat);
    } else {
        printf("convert_bound: %zu files (%zu cases), %d threads, %d rounds, %s%s\n", nfiles, cases, threads, repeat,
               records    ? "the dataset's stored chunks"
               : opt_flat ? "flat slices"
                          : "64^3 chunks",
               opt_read ? ", file read timed" : "");
        printf("  wall: median %.3f s, best %.3f s -> %.2f cases/s (median)\n", med, best, (double)cases / med);
        printf("  bytes: %llu compressed in, %llu voxel bytes, %llu zstd out (ratio %.2f)\n",
               (unsigned long long)in_bytes, (unsigned long long)vbytes, (unsigned long long)zbytes,
               zbytes ? (double)vbytes / (double)zbytes : 0.0);
        printf("  thread CPU s per round: read %.3f, inflate %.3f, gather %.3f, zstd %.3f\n", ph[0] / repeat,
               ph[1] / repeat, ph[2] / repeat, ph[3] / repeat);
    }
    return 0;
}
