/* Reading a box of a record's tensor as float32 (or uint8 masks): the chunks the box touches, from
 * the decoded-chunk cache or read together in one submission, verified, decoded and copied out. */
#include <stdlib.h>
#include <string.h>

#include "loader/loader_impl.h"

void *cd_loader_grow(void *p, size_t *cap, size_t need) {
    if (need <= *cap) return p;
    size_t n = need + need / 2;
    void *q = realloc(p, n);
    if (!q) return NULL;
    *cap = n;
    return q;
}

/* A run of n mask bytes, reversed when rev (mirroring): 8 bytes at a time, a byte swap reversing each word. */
static void copy_mask_run(const uint8_t *s, size_t n, bool rev, uint8_t *u) {
    if (!rev) {
        memcpy(u, s, n);
        return;
    }
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, s + n - 8 - i, 8);
        v = __builtin_bswap64(v);
        memcpy(u + i, &v, 8);
    }
    for (; i < n; i++) u[i] = s[n - 1 - i];
}

/* One run of n elements of a decoded chunk into float32 (or, for masks, uint8) output, reversed when
 * rev (mirroring): dst[k] = src[rev ? n - 1 - k : k]. */
static void copy_run(const uint8_t *raw, size_t src, cd_dtype dtype, size_t n, bool rev, float *o, uint8_t *u) {
    if (u) {
        copy_mask_run(raw + src, n, rev, u);
        return;
    }
#define RUN(T, CONV)                                                                                                   \
    do {                                                                                                               \
        const T *s = (const T *)raw + src;                                                                             \
        if (rev)                                                                                                       \
            for (size_t i = 0; i < n; i++) o[i] = CONV(s[n - 1 - i]);                                                  \
        else                                                                                                           \
            for (size_t i = 0; i < n; i++) o[i] = CONV(s[i]);                                                          \
    } while (0)
#define SAME(v) (v)
    switch (dtype) {
    case CD_DTYPE_FLOAT32:
        if (!rev)
            memcpy(o, (const float *)raw + src, n * sizeof(float));
        else
            RUN(float, SAME);
        break;
    case CD_DTYPE_INT16: RUN(int16_t, (float)); break;
    case CD_DTYPE_UINT8: RUN(uint8_t, (float)); break;
    case CD_DTYPE_FLOAT16: RUN(uint16_t, cd_half_to_float); break;
    default: break;
    }
#undef SAME
#undef RUN
}

/* Copies the voxels of one decoded chunk that the map m reads into its output (fbox: channels x
 * m->size float32, or ubox: m->size uint8): one run per (channel, x, y), reversed along mirrored z. */
static void scatter_chunk(const cd_tensor_info *ti, const cd_chunk_info *ci, const uint8_t *raw, const cd_sample_map *m,
                          float *fbox, uint8_t *ubox) {
    int64_t r0[3], r1[3]; /* source voxels of this chunk that the map reads */
    for (int a = 0; a < 3; a++) {
        const int64_t nlo = m->sgn[a] > 0 ? m->off[a] : m->off[a] - m->size[a] + 1, nhi = nlo + m->size[a];
        const int64_t cs = ci->start[a], ce = cs + ci->extent[a];
        r0[a] = cs > nlo ? cs : nlo;
        r1[a] = ce < nhi ? ce : nhi;
        if (r1[a] <= r0[a]) return;
    }
    const size_t n = (size_t)(r1[2] - r0[2]);
    const bool rev = m->sgn[2] < 0;
    /* output z of the run's first element */
    const int64_t oz = rev ? m->off[2] - (r1[2] - 1) : r0[2] - m->off[2];
    const size_t pvox = (size_t)(m->size[0] * m->size[1] * m->size[2]);
    for (uint32_t c = 0; c < ti->channels; c++)
        for (int64_t x = r0[0]; x < r1[0]; x++) {
            const int64_t ox = m->sgn[0] > 0 ? x - m->off[0] : m->off[0] - x;
            for (int64_t y = r0[1]; y < r1[1]; y++) {
                const int64_t oy = m->sgn[1] > 0 ? y - m->off[1] : m->off[1] - y;
                size_t src = (((size_t)c * ci->extent[0] + (size_t)(x - ci->start[0])) * ci->extent[1] +
                              (size_t)(y - ci->start[1])) *
                                 ci->extent[2] +
                             (size_t)(r0[2] - ci->start[2]);
                size_t dst =
                    (size_t)c * pvox + ((size_t)ox * (size_t)m->size[1] + (size_t)oy) * (size_t)m->size[2] + (size_t)oz;
                copy_run(raw, src, ti->dtype, n, rev, ubox ? NULL : fbox + dst, ubox ? ubox + dst : NULL);
            }
        }
}

/* The chunks one read touches, with their per-chunk bookkeeping: on the stack for the usual few chunks. */
enum { NSTACK = 32 };
typedef struct chunk_set {
    /* what is read, and where it goes */
    const rec_info *ri;
    size_t rec;
    int t;
    cd_tensor_info ti;
    const cd_sample_map *m;
    float *fbox;
    uint8_t *ubox;
    /* the chunks */
    size_t n, nmiss, total; /* chunks, those not cached, their stored bytes */
    uint32_t *ids;
    const cd_cached_chunk **ent;
    const void **data; /* decoded bytes of chunk i still to scatter (NULL: scattered already) */
    size_t *miss;
    bool heap;
    uint32_t ids_s[NSTACK];
    const cd_cached_chunk *ent_s[NSTACK];
    const void *data_s[NSTACK];
    size_t miss_s[NSTACK];
} chunk_set;

static bool chunk_set_alloc(chunk_set *cs) {
    cs->heap = cs->n > NSTACK; /* the stack arrays are zeroed with the set */
    cs->ids = cs->heap ? malloc(cs->n * sizeof *cs->ids) : cs->ids_s;
    cs->ent = cs->heap ? calloc(cs->n, sizeof *cs->ent) : cs->ent_s;
    cs->data = cs->heap ? calloc(cs->n, sizeof *cs->data) : cs->data_s;
    cs->miss = cs->heap ? malloc(cs->n * sizeof *cs->miss) : cs->miss_s;
    return cs->ids && cs->ent && cs->data && cs->miss;
}

/* Unpins the cache entries and frees the bookkeeping. */
static void chunk_set_free(cd_loader *l, chunk_set *cs) {
    for (size_t i = 0; cs->ent && i < cs->n; i++)
        if (cs->ent[i]) cd_chunk_cache_unpin(l->cache, cs->ent[i]);
    if (cs->heap) {
        free(cs->ids);
        free(cs->ent);
        free(cs->data);
        free(cs->miss);
    }
}

/* The chunk numbers of chunk grid cells c0 .. c1; cached ones are pinned, the others listed in miss. */
static void lookup_chunks(cd_loader *l, chunk_set *cs, const uint32_t c0[3], const uint32_t c1[3]) {
    size_t k = 0;
    for (uint32_t a = c0[0]; a <= c1[0]; a++)
        for (uint32_t b = c0[1]; b <= c1[1]; b++)
            for (uint32_t c = c0[2]; c <= c1[2]; c++, k++) {
                cs->ids[k] = (a * cs->ti.chunk_grid[1] + b) * cs->ti.chunk_grid[2] + c;
                uint64_t key = cd_loader_chunk_key(cs->rec, cs->t, cs->ids[k]);
                cs->ent[k] = l->cache_enabled ? cd_chunk_cache_get(l->cache, key, &cs->data[k]) : NULL;
                if (!cs->ent[k]) {
                    cd_chunk_info ci;
                    cd_record_chunk_info(cs->ri->rec, (uint32_t)cs->t, cs->ids[k], &ci);
                    cs->miss[cs->nmiss++] = k;
                    cs->total += ci.stored_size;
                }
            }
}

/* Reads the stored bytes of the missing chunks into w->stored, one submission. */
static cd_status read_missing(worker_scratch *w, chunk_set *cs, cd_error *err) {
    if (!(w->reqs = cd_loader_grow(w->reqs, &w->reqs_cap, cs->nmiss * sizeof *w->reqs)) ||
        !(w->stored = cd_loader_grow(w->stored, &w->stored_cap, cs->total ? cs->total : 1)))
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    size_t off = 0;
    for (size_t q = 0; q < cs->nmiss; q++) {
        cd_chunk_info ci;
        cd_record_chunk_info(cs->ri->rec, (uint32_t)cs->t, cs->ids[cs->miss[q]], &ci);
        w->reqs[q] = (cd_read_req){cd_shard_fd(cs->ri->shard), ci.offset, ci.stored_size, w->stored + off};
        off += ci.stored_size;
    }
    return cd_chunk_io_read(w->io, w->reqs, cs->nmiss, cd_shard_path(cs->ri->shard), err);
}

/* Missing chunk i (stored bytes at `stored`) without a cache: decoded into the worker's reused buffer
 * and scattered at once (fresh buffers per chunk cost page faults that can exceed the decoding itself). */
static cd_status decode_uncached(worker_scratch *w, chunk_set *cs, size_t i, const cd_chunk_info *ci,
                                 const uint8_t *stored, cd_error *err) {
    if (!(w->raw = cd_loader_grow(w->raw, &w->raw_cap, ci->raw_size ? ci->raw_size : 1)))
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    cd_status st = cd_record_decode_chunk(cs->ri->shard, cs->ri->rec, (uint32_t)cs->t, cs->ids[i], stored, w->raw, err);
    if (st == CD_OK) scatter_chunk(&cs->ti, ci, w->raw, cs->m, cs->fbox, cs->ubox);
    cs->data[i] = NULL;
    return st;
}

/* Missing chunk i decoded into the cache (pinned, scattered with the cached ones). */
static cd_status decode_cached(cd_loader *l, chunk_set *cs, size_t i, const cd_chunk_info *ci, const uint8_t *stored,
                               cd_error *err) {
    void *raw = cd_chunk_cache_alloc(l->cache, ci->raw_size);
    if (!raw) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    cd_status st = cd_record_decode_chunk(cs->ri->shard, cs->ri->rec, (uint32_t)cs->t, cs->ids[i], stored, raw, err);
    if (st != CD_OK) {
        cd_chunk_cache_free(l->cache, raw, ci->raw_size);
        return st;
    }
    uint64_t key = cd_loader_chunk_key(cs->rec, cs->t, cs->ids[i]);
    if (!(cs->ent[i] = cd_chunk_cache_put(l->cache, key, raw, ci->raw_size))) {
        cd_chunk_cache_free(l->cache, raw, ci->raw_size);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    cs->data[i] = raw;
    return CD_OK;
}

/* Reads, verifies and decodes the missing chunks. */
static cd_status load_missing(cd_loader *l, worker_scratch *w, chunk_set *cs, cd_error *err) {
    cd_status st = read_missing(w, cs, err);
    size_t off = 0;
    for (size_t q = 0; st == CD_OK && q < cs->nmiss; q++) {
        size_t i = cs->miss[q];
        cd_chunk_info ci;
        cd_record_chunk_info(cs->ri->rec, (uint32_t)cs->t, cs->ids[i], &ci);
        const uint8_t *stored = w->stored + off;
        off += ci.stored_size;
        st = l->cache_enabled ? decode_cached(l, cs, i, &ci, stored, err) : decode_uncached(w, cs, i, &ci, stored, err);
    }
    return st;
}

/* Reads the chunks of tensor t of record number rec that the box [lo, hi) (inside the tensor)
 * touches and copies what the map m reads from them into fbox / ubox: cached decoded chunks are
 * reused, the others are read together (one submission), verified and decoded, then cached. */
static cd_status read_chunks(cd_loader *l, worker_scratch *w, size_t rec, int t, const int64_t lo[3],
                             const int64_t hi[3], const cd_sample_map *m, float *fbox, uint8_t *ubox, cd_error *err) {
    chunk_set cs = {.ri = &l->recs[rec], .rec = rec, .t = t, .m = m, .fbox = fbox, .ubox = ubox};
    cd_record_tensor_info(cs.ri->rec, (uint32_t)t, &cs.ti);
    uint32_t c0[3], c1[3];
    for (int a = 0; a < 3; a++) {
        c0[a] = (uint32_t)(lo[a] / cs.ti.chunk[a]);
        c1[a] = (uint32_t)((hi[a] - 1) / cs.ti.chunk[a]);
    }
    cs.n = (size_t)(c1[0] - c0[0] + 1) * (c1[1] - c0[1] + 1) * (c1[2] - c0[2] + 1);
    cd_status st = chunk_set_alloc(&cs) ? CD_OK : cd_fail(err, CD_ERR_NOMEM, "out of memory");
    if (st == CD_OK) lookup_chunks(l, &cs, c0, c1);
    if (st == CD_OK && cs.nmiss) st = load_missing(l, w, &cs, err);
    for (size_t i = 0; st == CD_OK && i < cs.n; i++) {
        if (!cs.data[i]) continue; /* scattered straight from the worker's buffer */
        cd_chunk_info ci;
        cd_record_chunk_info(cs.ri->rec, (uint32_t)t, cs.ids[i], &ci);
        scatter_chunk(&cs.ti, &ci, cs.data[i], m, fbox, ubox);
    }
    chunk_set_free(l, &cs);
    return st;
}

cd_status cd_loader_read_box(cd_loader *l, worker_scratch *w, size_t rec, int t, const int64_t lo[3],
                             const int64_t hi[3], float *fbox, uint8_t *ubox, cd_error *err) {
    const cd_sample_map m = {{lo[0], lo[1], lo[2]}, {1, 1, 1}, {hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]}};
    return read_chunks(l, w, rec, t, lo, hi, &m, fbox, ubox, err);
}

cd_status cd_loader_read_direct(cd_loader *l, worker_scratch *w, size_t rec, const cd_sample_plan *plan,
                                const cd_sample_map *m, float *out_img, uint8_t *out_mask, cd_error *err) {
    const rec_info *ri = &l->recs[rec];
    int64_t lo[3], hi[3];
    cd_sample_map_zero_outside(m, ri->img.shape, l->channels, out_img, out_mask);
    cd_status st = CD_OK;
    if (cd_sample_map_source(m, ri->img.shape, lo, hi)) {
        st = read_chunks(l, w, rec, ri->image_t, lo, hi, m, out_img, NULL, err);
        if (st == CD_OK && out_mask) st = read_chunks(l, w, rec, ri->mask_t, lo, hi, m, NULL, out_mask, err);
    }
    if (st == CD_OK && l->pipe) st = cd_aug_apply_intensity(&plan->a, out_img, l->channels, plan->patch, err);
    return st;
}
