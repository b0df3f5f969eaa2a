/* The zstd-decode bound of the loader benchmark (not installed, not a test).
 *
 *   loader_bound DATASET CORNERS [--patch 96,96,32] [--threads 2] [--repeat 7] [--min-seconds 0] [--json]
 *
 * CORNERS: one sample per line, "record cx cy cz" (dataset record index and the patch corner, as
 * benchmarks/loader_bench.py --dump-corners writes them from our loader's batches with augment
 * 'none'). For each sample the box the loader reads is [corner, corner + patch) (an identity transform
 * is copied straight from the chunks since 2026-11-27 21:30 UTC; before, the loader read the staging
 * box [corner - 1, corner + patch + 1), and this tool used [corner, corner + patch + 1)), clipped to the record;
 * every chunk of the 'image' and 'mask' tensors that the box touches is located with the library's
 * shard API (cd_dataset_read_record, cd_record_tensor_info, cd_record_chunk_info) — exactly the
 * chunks the loader reads.
 *
 * Candidates (each timed over the whole sample list, --repeat rounds, round-robin; samples split
 * into --threads equal contiguous parts, one pthread each, own ZSTD_DCtx and output buffer). With
 * --min-seconds S, one timed round passes over the whole list again and again until S seconds have
 * passed (whole passes; time per pass = elapsed / passes), so that a round is not a fraction of a
 * second on a shared machine:
 *   decode        stored bytes preloaded in memory; ZSTD_decompressDCtx of every chunk: the bound
 *   xxh3+decode   the same plus XXH3-64 of the stored bytes (the loader verifies every chunk)
 *   pread+decode  pread of each chunk from the shard (page cache) into a buffer, then decode
 * Nothing is scattered into a patch: the bound is the decoding alone.
 * Reports samples/s from the median round (and from the best), chunks and bytes per sample. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "cirrdata/dataset.h"
#include "cirrdata/shard.h"

typedef struct chunk {
    int fd;
    uint64_t offset;
    uint32_t stored, raw;
    uint64_t xxh3;
    const uint8_t *bytes; /* preloaded */
} chunk;

typedef struct sample {
    size_t first, count; /* into the chunk list */
} sample;

enum { C_DECODE, C_XXH3, C_PREAD, NCAND };
static const char *cand_name[NCAND] = {"decode", "xxh3+decode", "pread+decode"};

static chunk *chunks;
static size_t nchunks, chunks_cap;
static sample *samples;
static size_t nsamples;
static size_t max_raw, max_stored;

typedef struct job {
    int cand;
    size_t s0, s1;
    int failed;
} job;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *run_job(void *arg) {
    job *j = arg;
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    uint8_t *out = malloc(max_raw), *buf = malloc(max_stored);
    if (!dctx || !out || !buf) {
        j->failed = 1;
        goto done;
    }
    memset(out, 0, max_raw);
    memset(buf, 0, max_stored);
    for (size_t s = j->s0; s < j->s1; s++)
        for (size_t k = samples[s].first; k < samples[s].first + samples[s].count; k++) {
            const chunk *c = &chunks[k];
            const uint8_t *src = c->bytes;
            if (j->cand == C_PREAD) {
                if (pread(c->fd, buf, c->stored, (off_t)c->offset) != (ssize_t)c->stored) {
                    j->failed = 1;
                    goto done;
                }
                src = buf;
            } else if (j->cand == C_XXH3 && XXH3_64bits(src, c->stored) != c->xxh3) {
                j->failed = 2;
                goto done;
            }
            size_t r = ZSTD_decompressDCtx(dctx, out, c->raw, src, c->stored);
            if (ZSTD_isError(r) || r != c->raw) {
                j->failed = 3;
                goto done;
            }
        }
done:
    ZSTD_freeDCtx(dctx);
    free(out);
    free(buf);
    return NULL;
}

static double one_pass(int cand, int threads) {
    pthread_t th[64];
    job jobs[64];
    double t0 = now();
    for (int i = 0; i < threads; i++) {
        jobs[i] = (job){cand, nsamples * (size_t)i / (size_t)threads, nsamples * (size_t)(i + 1) / (size_t)threads, 0};
        if (pthread_create(&th[i], NULL, run_job, &jobs[i])) {
            fprintf(stderr, "loader_bound: pthread_create failed\n");
            exit(1);
        }
    }
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    double t = now() - t0;
    for (int i = 0; i < threads; i++)
        if (jobs[i].failed) {
            fprintf(stderr, "loader_bound: %s failed (%d)\n", cand_name[cand], jobs[i].failed);
            exit(1);
        }
    return t;
}

static double min_seconds;
static long passes_total[NCAND];

/* Seconds per pass over the sample list: whole passes until min_seconds have passed (at least one). */
static double timed(int cand, int threads) {
    double total = 0;
    long passes = 0;
    do {
        total += one_pass(cand, threads);
        passes++;
    } while (total < min_seconds);
    passes_total[cand] += passes;
    return total / (double)passes;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void add_chunks(const cd_record *rec, const cd_shard *shard, const char *name, const int64_t lo[3],
                       const int64_t hi[3]) {
    int t = cd_record_find_tensor(rec, name);
    if (t < 0) return;
    cd_tensor_info ti;
    cd_record_tensor_info(rec, (uint32_t)t, &ti);
    if (ti.codec != CD_CODEC_ZSTD) {
        fprintf(stderr, "loader_bound: tensor '%s' is not zstd-compressed\n", name);
        exit(1);
    }
    uint32_t c0[3], c1[3];
    for (int a = 0; a < 3; a++) {
        c0[a] = (uint32_t)(lo[a] / ti.chunk[a]);
        c1[a] = (uint32_t)((hi[a] - 1) / ti.chunk[a]);
    }
    for (uint32_t a = c0[0]; a <= c1[0]; a++)
        for (uint32_t b = c0[1]; b <= c1[1]; b++)
            for (uint32_t c = c0[2]; c <= c1[2]; c++) {
                cd_chunk_info ci;
                cd_record_chunk_info(rec, (uint32_t)t, (a * ti.chunk_grid[1] + b) * ti.chunk_grid[2] + c, &ci);
                if (nchunks == chunks_cap) {
                    chunks_cap = chunks_cap ? 2 * chunks_cap : 1024;
                    chunks = realloc(chunks, chunks_cap * sizeof *chunks);
                    if (!chunks) exit(1);
                }
                chunks[nchunks++] = (chunk){cd_shard_fd(shard), ci.offset, ci.stored_size, ci.raw_size, ci.xxh3, NULL};
                if (ci.raw_size > max_raw) max_raw = ci.raw_size;
                if (ci.stored_size > max_stored) max_stored = ci.stored_size;
            }
}

int main(int argc, char **argv) {
    const char *dir = NULL, *corners = NULL;
    int64_t patch[3] = {96, 96, 32};
    int threads = 2, repeat = 7;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--patch") && i + 1 < argc) {
            if (sscanf(argv[++i], "%" SCNd64 ",%" SCNd64 ",%" SCNd64, &patch[0], &patch[1], &patch[2]) != 3) goto usage;
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) {
            repeat = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--min-seconds") && i + 1 < argc) {
            min_seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!dir) {
            dir = argv[i];
        } else if (!corners) {
            corners = argv[i];
        } else {
            goto usage;
        }
    }
    if (!dir || !corners || threads < 1 || threads > 64 || repeat < 1 || !(min_seconds >= 0) || min_seconds > 3600)
        goto usage;

    cd_error err;
    cd_dataset *ds;
    if (cd_dataset_open(dir, &ds, &err) != CD_OK) {
        fprintf(stderr, "loader_bound: %s\n", err.message);
        return 1;
    }
    uint64_t nrec = cd_dataset_record_count(ds);
    cd_record **recs = calloc(nrec, sizeof *recs);
    const cd_shard **shards = calloc(nrec, sizeof *shards);
    FILE *f = fopen(corners, "r");
    if (!f || !recs || !shards) {
        fprintf(stderr, "loader_bound: %s: %s\n", corners, strerror(errno));
        return 1;
    }
    size_t samples_cap = 0;
    uint64_t r;
    int64_t c[3];
    while (fscanf(f, "%" SCNu64 " %" SCNd64 " %" SCNd64 " %" SCNd64, &r, &c[0], &c[1], &c[2]) == 4) {
        if (r >= nrec) {
            fprintf(stderr, "loader_bound: record %" PRIu64 " out of range\n", r);
            return 1;
        }
        if (!recs[r] && cd_dataset_read_record(ds, r, &recs[r], &shards[r], &err) != CD_OK) {
            fprintf(stderr, "loader_bound: %s\n", err.message);
            return 1;
        }
        cd_tensor_info ti;
        cd_record_tensor_info(recs[r], (uint32_t)cd_record_find_tensor(recs[r], "image"), &ti);
        int64_t lo[3], hi[3];
        bool empty = false;
        for (int a = 0; a < 3; a++) {
            lo[a] = c[a] < 0 ? 0 : c[a];
            hi[a] = c[a] + patch[a];
            if (hi[a] > (int64_t)ti.shape[a]) hi[a] = ti.shape[a];
            if (hi[a] <= lo[a]) empty = true;
        }
        if (nsamples == samples_cap) {
            samples_cap = samples_cap ? 2 * samples_cap : 1024;
            if (!(samples = realloc(samples, samples_cap * sizeof *samples))) return 1;
        }
        size_t first = nchunks;
        if (!empty) {
            add_chunks(recs[r], shards[r], "image", lo, hi);
            add_chunks(recs[r], shards[r], "mask", lo, hi);
        }
        samples[nsamples++] = (sample){first, nchunks - first};
    }
    fclose(f);
    if (!nsamples) {
        fprintf(stderr, "loader_bound: no samples in %s\n", corners);
        return 1;
    }
    /* Preload the stored bytes (untimed). */
    uint64_t stored_total = 0, raw_total = 0;
    for (size_t k = 0; k < nchunks; k++) {
        uint8_t *b = malloc(chunks[k].stored);
        if (!b || pread(chunks[k].fd, b, chunks[k].stored, (off_t)chunks[k].offset) != (ssize_t)chunks[k].stored) {
            fprintf(stderr, "loader_bound: cannot read chunk %zu\n", k);
            return 1;
        }
        chunks[k].bytes = b;
        stored_total += chunks[k].stored;
        raw_total += chunks[k].raw;
    }
    /* One untimed pass of each candidate (checks everything decodes), then round-robin. */
    double *t[NCAND];
    for (int k = 0; k < NCAND; k++) {
        one_pass(k, threads);
        t[k] = calloc((size_t)repeat, sizeof(double));
    }
    for (int i = 0; i < repeat; i++)
        for (int k = 0; k < NCAND; k++) {
            int kk = (k + i) % NCAND;
            t[kk][i] = timed(kk, threads);
        }
    if (json)
        printf("{\"tool\":\"bound\",\"threads\":%d,\"repeat\":%d,\"min_seconds\":%g,\"samples\":%zu,\"chunks\":%zu,"
               "\"stored_bytes\":%" PRIu64 ",\"raw_bytes\":%" PRIu64,
               threads, repeat, min_seconds, nsamples, nchunks, stored_total, raw_total);
    else
        printf("%zu samples, %zu chunks (%.2f per sample), %.2f MB stored, %.2f MB decoded per sample; %d threads, %d "
               "rounds\n",
               nsamples, nchunks, (double)nchunks / nsamples, stored_total / 1e6 / nsamples, raw_total / 1e6 / nsamples,
               threads, repeat);
    for (int k = 0; k < NCAND; k++) {
        qsort(t[k], (size_t)repeat, sizeof(double), cmp_d);
        double med = t[k][repeat / 2], best = t[k][0];
        if (json)
            printf(",\"%s\":{\"median_s\":%.6f,\"min_s\":%.6f,\"samples_per_s\":%.2f,\"samples_per_s_best\":%.2f,"
                   "\"decoded_MBps\":%.1f,\"passes\":%ld}",
                   k == C_DECODE ? "decode"
                   : k == C_XXH3 ? "xxh3_decode"
                                 : "pread_decode",
                   med, best, nsamples / med, nsamples / best, raw_total / 1e6 / med, passes_total[k]);
        else
            printf("  %-14s median %8.4f s  best %8.4f s  %9.1f samples/s (best %9.1f)  %8.1f MB/s decoded\n",
                   cand_name[k], med, best, nsamples / med, nsamples / best, raw_total / 1e6 / med);
    }
    if (json) printf("}\n");
    for (uint64_t i = 0; i < nrec; i++)
        if (recs[i]) cd_record_destroy(recs[i]);
    cd_dataset_close(ds);
    return 0;
usage:
    fprintf(
        stderr,
        "usage: loader_bound DATASET CORNERS [--patch X,Y,Z] [--threads N] [--repeat N] [--min-seconds S] [--json]\n");
    return 2;
}
