/* The loader's options: their bounds (cirrdata/loader.h) and the rank from the environment. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loader/loader_impl.h"

void cd_loader_options_init(cd_loader_options *o) {
    memset(o, 0, sizeof *o);
    o->mode = CD_LOADER_PATCH;
    o->patch[0] = 96;
    o->patch[1] = 96;
    o->patch[2] = 32;
    o->foreground_fraction = 0.33;
    o->batch_size = 2;
    o->splits = "train";
    o->augment = "none";
    o->ring = 4;
    o->cache_bytes = CD_LOADER_CACHE_AUTO;
}

uint64_t cd_loader_phys_ram(void) {
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    return pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 0;
}

/* $name as an integer in lo..INT_MAX (dflt when unset or empty); an error naming it otherwise. */
static cd_status env_int(const char *name, int lo, int dflt, int *out, cd_error *err) {
    const char *v = getenv(name);
    if (!v || !*v) {
        *out = dflt;
        return CD_OK;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > INT_MAX)
        return cd_fail(err, CD_ERR_ARG, "$%s='%.64s' is not an integer in %d..%d", name, v, lo, INT_MAX);
    *out = (int)x;
    return CD_OK;
}

/* "96 x 96 x 32" */
static const char *xyz(const int64_t p[3], char *buf, size_t len) {
    snprintf(buf, len, "%lld x %lld x %lld", (long long)p[0], (long long)p[1], (long long)p[2]);
    return buf;
}

/* The scalar options. The wording "<option> must be in <bounds> (got <value>)" is also the Python
 * binding's, for values that do not fit the C field. */
static cd_status check_scalars(const cd_loader_options *o, cd_error *err) {
    if (o->batch_size == 0 && !o->splits && !o->augment) /* a zeroed struct: say how to get the defaults */
        return cd_fail(err, CD_ERR_ARG,
                       "batch_size must be in 1..%u (got 0; cd_loader_options_init fills in the defaults)",
                       CD_LOADER_MAX_BATCH);
    if (o->batch_size < 1 || o->batch_size > CD_LOADER_MAX_BATCH)
        return cd_fail(err, CD_ERR_ARG, "batch_size must be in 1..%u (got %u)", CD_LOADER_MAX_BATCH, o->batch_size);
    if (o->threads < 0 || o->threads > CD_LOADER_MAX_THREADS)
        return cd_fail(err, CD_ERR_ARG, "threads must be in 0..%d, 0 for one per online CPU (got %d)",
                       CD_LOADER_MAX_THREADS, o->threads);
    if (o->ring > CD_LOADER_MAX_RING)
        return cd_fail(err, CD_ERR_ARG, "ring must be in 0..%u, 0 for the default 4 (got %u)", CD_LOADER_MAX_RING,
                       o->ring);
    if (!(o->foreground_fraction >= 0 && o->foreground_fraction <= 1)) /* NaN too */
        return cd_fail(err, CD_ERR_ARG, "foreground_fraction must be in [0, 1] (got %g)", o->foreground_fraction);
    if ((unsigned)o->mode > CD_LOADER_SLICE)
        return cd_fail(err, CD_ERR_ARG, "mode must be in 0..2, volume, patch or slice (got %d)", (int)o->mode);
    if ((unsigned)o->io > CD_IO_PREAD)
        return cd_fail(err, CD_ERR_ARG, "io must be in 0..2, auto, uring or pread (got %d)", (int)o->io);
    if (o->world_size < 0)
        return cd_fail(err, CD_ERR_ARG, "world_size must be in 0..%d, 0 for $WORLD_SIZE (got %d)", INT_MAX,
                       o->world_size);
    if (o->batch_stride > CD_LOADER_MAX_STRIDE)
        return cd_fail(err, CD_ERR_ARG, "batch_stride must be in 0..%u, 0 or 1 for every batch (got %u)",
                       CD_LOADER_MAX_STRIDE, o->batch_stride);
    if (o->batch_offset >= (o->batch_stride ? o->batch_stride : 1))
        return cd_fail(err, CD_ERR_ARG, "batch_offset must be in 0..%u, below batch_stride %u (got %u)",
                       o->batch_stride ? o->batch_stride - 1 : 0, o->batch_stride, o->batch_offset);
    const uint64_t ram = cd_loader_phys_ram();
    if (o->cache_bytes < -1 || (ram && o->cache_bytes > 0 && (uint64_t)o->cache_bytes > ram))
        return cd_fail(
            err, CD_ERR_ARG,
            "cache_bytes must be in -1..%llu (the physical memory), 0 for no cache, -1 for the default (got %lld)",
            (unsigned long long)ram, (long long)o->cache_bytes);
    return CD_OK;
}

/* The patch size against the limits (not in slice mode, where the patch is the slice, nor in volume
 * mode without a fixed size). */
static cd_status check_patch(const cd_loader_options *o, cd_error *err) {
    if (o->mode == CD_LOADER_SLICE) return CD_OK; /* the patch is the slice */
    uint64_t max_dim, max_voxels;
    cd_status st = cd_limit(CD_LIMIT_DIM, &max_dim, err);
    if (st == CD_OK) st = cd_limit(CD_LIMIT_VOXELS, &max_voxels, err);
    if (st != CD_OK) return st;
    const int64_t *p = o->patch;
    const bool as_stored = o->mode == CD_LOADER_VOLUME && !p[0] && !p[1] && !p[2];
    if (as_stored) return CD_OK;
    char b[96], d[160];
    const char *alt = o->mode == CD_LOADER_VOLUME ? ", or all 0 for each record's own size" : "";
    for (int a = 0; a < 3; a++)
        if (p[a] < 1)
            return cd_fail(err, CD_ERR_ARG, "patch must be in 1..%llu per axis%s (got %s)", (unsigned long long)max_dim,
                           alt, xyz(p, b, sizeof b));
    for (int a = 0; a < 3; a++)
        if ((uint64_t)p[a] > max_dim)
            return cd_fail(err, CD_ERR_LIMIT, "patch must be in 1..%llu per axis%s (got %s): %lld is above %s",
                           (unsigned long long)max_dim, alt, xyz(p, b, sizeof b), (long long)p[a],
                           cd_limit_describe(CD_LIMIT_DIM, max_dim, d, sizeof d));
    uint64_t v;
    if (__builtin_mul_overflow((uint64_t)p[0], (uint64_t)p[1], &v) || __builtin_mul_overflow(v, (uint64_t)p[2], &v) ||
        v > max_voxels)
        return cd_fail(err, CD_ERR_LIMIT, "patch %s is above %s", xyz(p, b, sizeof b),
                       cd_limit_describe(CD_LIMIT_VOXELS, max_voxels, d, sizeof d));
    return CD_OK;
}

/* The bounds of loader.h, checked before anything is allocated; then the rank, once world_size is known. */
cd_status cd_loader_check_options(const cd_loader_options *o, int *world, int *rank, cd_error *err) {
    cd_status st = check_scalars(o, err);
    if (st == CD_OK) st = check_patch(o, err);
    *world = o->world_size;
    *rank = o->rank;
    if (st == CD_OK && *world == 0) {
        /* torchrun's variables first, then Slurm's (srun sets them for every task) */
        const char *w = getenv("WORLD_SIZE");
        const bool slurm = (!w || !*w) && getenv("SLURM_NTASKS") && *getenv("SLURM_NTASKS");
        if ((st = env_int(slurm ? "SLURM_NTASKS" : "WORLD_SIZE", 1, 1, world, err)) == CD_OK)
            st = env_int(slurm ? "SLURM_PROCID" : "RANK", 0, 0, rank, err);
    }
    if (st == CD_OK && (*rank < 0 || *rank >= *world))
        st = cd_fail(err, CD_ERR_ARG, "rank must be in 0..%d (world_size %d) (got %d)", *world - 1, *world, *rank);
    return st;
}
