/* The reference slice, concat and attention ops (nn/graph.h): plain C over NCHW float32, where a
 * token sequence is the (h, w) positions of an image in row-major order (schemas/model-graph.md).
 *
 * Attention runs per (image, head, block of QB query rows), the items spread over the threads. Each
 * item takes the block's scores S = scale * Q^T K (QB x Lk) into scratch, a softmax per row with the
 * row maximum subtracted, then O = P V^T accumulated over the keys with V transposed to (Lk x d) so
 * that the inner loops run over contiguous memory. Scratch per thread: QB * Lk + Lk * d + QB * d
 * floats, never a score matrix over the whole batch. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/graph.h"

#define QB 64 /* query rows per work item */

void cd_nn_ref_slice(const cd_nn_node *nd, const cd_nn_shape *is, const float *in, float *out) {
    const int64_t plane = is->h * is->w, len = (int64_t)nd->slice_len * plane;
    if ((int64_t)nd->slice_start + nd->slice_len > is->c) return; /* cd_nn_graph_shape refuses it */
    for (int64_t n = 0; n < is->n; n++)
        memcpy(out + n * len, in + (n * is->c + nd->slice_start) * plane, (size_t)len * sizeof(float));
}

void cd_nn_ref_concat(const cd_nn_shape *as, const float *a, const cd_nn_shape *bs, const float *b, float *out) {
    const int64_t la = as->c * as->h * as->w, lb = bs->c * bs->h * bs->w;
    for (int64_t n = 0; n < as->n; n++) {
        memcpy(out + n * (la + lb), a + n * la, (size_t)la * sizeof(float));
        memcpy(out + n * (la + lb) + la, b + n * lb, (size_t)lb * sizeof(float));
    }
}

typedef struct attn_job {
    const float *q, *k, *v;
    float *out;
    int64_t C, d, heads, Lq, Lk, blocks; /* blocks: query blocks per (image, head) */
    float scale;
    float *scratch; /* per thread: QB * Lk scores, Lk * d transposed V, QB * d outputs */
    int64_t per_thread;
    int64_t items, chunks; /* items split into `chunks` contiguous ranges, one scratch each */
} attn_job;

/* Items [begin, end) of one thread's range; `s` is its scratch. */
static void attn_items(const attn_job *j, int64_t begin, int64_t end, float *s) {
    const int64_t d = j->d, Lq = j->Lq, Lk = j->Lk;
    float *S = s, *vt = s + QB * Lk, *o = vt + Lk * d;
    int64_t vt_of = -1; /* the (image, head) whose V is in vt */
    for (int64_t it = begin; it < end; it++) {
        const int64_t nh = it / j->blocks, t0 = it % j->blocks * QB, nq = Lq - t0 < QB ? Lq - t0 : QB;
        const int64_t n = nh / j->heads, h = nh % j->heads, c0 = n * j->C + h * d;
        const float *q = j->q + c0 * Lq, *k = j->k + c0 * Lk, *v = j->v + c0 * Lk;
        if (vt_of != nh) {
            for (int64_t c = 0; c < d; c++)
                for (int64_t s2 = 0; s2 < Lk; s2++) vt[s2 * d + c] = v[c * Lk + s2];
            vt_of = nh;
        }
        /* S[t][s] = sum_i q[i][t0 + t] k[i][s], feature by feature (rows of k are contiguous) */
        memset(S, 0, (size_t)(nq * Lk) * sizeof(float));
        for (int64_t i = 0; i < d; i++) {
            const float *ki = k + i * Lk, *qi = q + i * Lq + t0;
            for (int64_t t = 0; t < nq; t++) {
                const float a = qi[t];
                float *row = S + t * Lk;
                for (int64_t s2 = 0; s2 < Lk; s2++) row[s2] += a * ki[s2];
            }
        }
        memset(o, 0, (size_t)(nq * d) * sizeof(float));
        for (int64_t t = 0; t < nq; t++) {
            float *row = S + t * Lk, m = -INFINITY;
            for (int64_t s2 = 0; s2 < Lk; s2++) {
                row[s2] *= j->scale;
                if (row[s2] > m) m = row[s2];
            }
            double sum = 0;
            for (int64_t s2 = 0; s2 < Lk; s2++) {
                row[s2] = expf(row[s2] - m);
                sum += row[s2];
            }
            float *ot = o + t * d;
            for (int64_t s2 = 0; s2 < Lk; s2++) {
                const float p = row[s2];
                const float *vs = vt + s2 * d;
                for (int64_t c = 0; c < d; c++) ot[c] += p * vs[c];
            }
            const float inv = (float)(1.0 / sum);
            float *dst = j->out + c0 * Lq + t0 + t;
            for (int64_t c = 0; c < d; c++) dst[c * Lq] = ot[c] * inv;
        }
    }
}

static void attn_range(void *ctx, int64_t begin, int64_t end) {
    const attn_job *j = ctx;
    for (int64_t c = begin; c < end; c++)
        attn_items(j, j->items * c / j->chunks, j->items * (c + 1) / j->chunks, j->scratch + c * j->per_thread);
}

cd_status cd_nn_ref_attention(const cd_nn_node *nd, const cd_nn_shape *qs, const float *q, const cd_nn_shape *ks,
                              const float *k, const float *v, float *out, int threads, cd_error *err) {
    if (nd->heads < 1 || qs->c % nd->heads != 0 || ks->c != qs->c || ks->n != qs->n)
        return cd_fail(err, CD_ERR_INTERNAL, "graph node '%s' (attention): not shaped", nd->name);
    attn_job j = {.q = q,
                  .k = k,
                  .v = v,
                  .out = out,
                  .C = qs->c,
                  .d = qs->c / nd->heads,
                  .heads = nd->heads,
                  .Lq = qs->h * qs->w,
                  .Lk = ks->h * ks->w,
                  .scale = nd->attn_scale};
    j.blocks = (j.Lq + QB - 1) / QB;
    j.items = qs->n * j.heads * j.blocks;
    j.per_thread = QB * j.Lk + j.Lk * j.d + QB * j.d; /* each term <= 64 times a tensor's size (< 2^50) */
    /* Threads only where the work pays for their start (a MambaVision window is ~2 MFLOP). */
    const double work = 4.0 * (double)qs->n * (double)j.C * (double)j.Lq * (double)j.Lk;
    int t = work < 4e6 ? 1 : cd_thread_count(threads);
    if (t > 256) t = 256;
    if (t > j.items) t = (int)j.items;
    j.chunks = t;
    size_t bytes = 0;
    if (!__builtin_mul_overflow((size_t)t * sizeof(float), (size_t)j.per_thread, &bytes)) j.scratch = malloc(bytes);
    if (!j.scratch)
        return cd_fail(err, CD_ERR_NOMEM, "graph node '%s' (attention): out of memory for %d x %lld floats of scratch",
                       nd->name, t, (long long)j.per_thread);
    cd_nn_parallel_for(t, t, attn_range, &j);
    free(j.scratch);
    return CD_OK;
}
