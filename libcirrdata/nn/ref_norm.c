/* The C executor's per-channel ops: layer norm over C at every position (ConvNeXt's LayerNorm2d and
 * channels-last LayerNorm, PVTv2's and MambaVision's token LayerNorm), the elementwise product with
 * a squeeze-and-excitation broadcast, and the per-channel scale (layer scale, a batch norm no
 * convolution takes). NCHW float32 like the rest of nn/ref_*.c. */
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "nn/graph.h"

/* Positions per block of the layer norm: the channel loop reads one row of `POS` floats per channel
 * (contiguous), so the statistics of a block stay in a small stack array. */
#define POS 256

typedef struct ln_job {
    const cd_nn_node *node;
    const float *in;
    float *out;
    int64_t C, HW, blocks; /* blocks per image */
} ln_job;

/* Blocks [begin, end) of (image, position block): mean, then the biased variance around it (two
 * passes, sums in double), then y = (x - mean) / sqrt(var + eps) * weight + bias. */
static void ln_range(const ln_job *j, int64_t begin, int64_t end) {
    const cd_nn_node *nd = j->node;
    double sum[POS];
    float mean[POS], inv[POS];
    for (int64_t it = begin; it < end; it++) {
        const int64_t n = it / j->blocks, p0 = it % j->blocks * POS;
        const int64_t np = j->HW - p0 < POS ? j->HW - p0 : POS;
        const float *x = j->in + n * j->C * j->HW + p0;
        float *y = j->out + n * j->C * j->HW + p0;
        for (int64_t p = 0; p < np; p++) sum[p] = 0;
        for (int64_t c = 0; c < j->C; c++)
            for (int64_t p = 0; p < np; p++) sum[p] += x[c * j->HW + p];
        for (int64_t p = 0; p < np; p++) {
            mean[p] = (float)(sum[p] / (double)j->C);
            sum[p] = 0;
        }
        for (int64_t c = 0; c < j->C; c++)
            for (int64_t p = 0; p < np; p++) {
                const double d = (double)x[c * j->HW + p] - mean[p];
                sum[p] += d * d;
            }
        for (int64_t p = 0; p < np; p++) inv[p] = (float)(1.0 / sqrt(sum[p] / (double)j->C + (double)nd->eps));
        for (int64_t c = 0; c < j->C; c++) {
            const float w = nd->weight ? nd->weight[c] : 1.0f, b = nd->bias ? nd->bias[c] : 0.0f;
            for (int64_t p = 0; p < np; p++) y[c * j->HW + p] = (x[c * j->HW + p] - mean[p]) * inv[p] * w + b;
        }
    }
}

typedef struct ln_thread {
    const ln_job *job;
    int64_t begin, end;
} ln_thread;

static void *ln_main(void *arg) {
    const ln_thread *t = arg;
    ln_range(t->job, t->begin, t->end);
    return NULL;
}

void cd_nn_ref_layer_norm(const cd_nn_node *nd, const cd_nn_shape *s, const float *in, float *out, int threads) {
    if (s->c < 1 || (nd->in_ch > 0 && s->c != nd->in_ch)) return; /* cd_nn_graph_shape rejects this */
    ln_job j = {nd, in, out, s->c, s->h * s->w, (s->h * s->w + POS - 1) / POS};
    const int64_t items = s->n * j.blocks;
    int t = cd_thread_count(threads);
    if (t > 64) t = 64;
    if (t > items) t = (int)items;
    if (items * j.C * POS < (1 << 16)) t = 1; /* not worth a thread start */
    pthread_t tid[64];
    ln_thread jobs[64];
    bool started[64] = {false};
    for (int i = 0; i < t; i++) jobs[i] = (ln_thread){&j, items * i / t, items * (i + 1) / t};
    for (int i = 1; i < t; i++) started[i] = pthread_create(&tid[i], NULL, ln_main, &jobs[i]) == 0;
    if (t >= 1) ln_range(&j, jobs[0].begin, jobs[0].end);
    for (int i = 1; i < t; i++) {
        if (started[i])
            pthread_join(tid[i], NULL);
        else
            ln_range(&j, jobs[i].begin, jobs[i].end); /* could not start: same result on this thread */
    }
}

void cd_nn_ref_mul(const cd_nn_shape *as, const cd_nn_shape *bs, const float *a, const float *b, float *out) {
    const int64_t HW = as->h * as->w, planes = as->n * as->c;
    if (bs->h == as->h && bs->w == as->w) {
        for (int64_t i = 0; i < planes * HW; i++) out[i] = a[i] * b[i];
        return;
    }
    for (int64_t pl = 0; pl < planes; pl++) { /* b is (N, C, 1, 1): one factor per plane */
        const float f = b[pl];
        for (int64_t p = 0; p < HW; p++) out[pl * HW + p] = a[pl * HW + p] * f;
    }
}

void cd_nn_ref_scale(const cd_nn_node *nd, const cd_nn_shape *s, const float *in, float *out) {
    const int64_t HW = s->h * s->w;
    if (nd->in_ch > 0 && s->c != nd->in_ch) return; /* cd_nn_graph_shape rejects this */
    for (int64_t n = 0; n < s->n; n++)
        for (int64_t c = 0; c < s->c; c++) {
            const float w = nd->weight[c], b = nd->bias ? nd->bias[c] : 0.0f;
            const float *x = in + (n * s->c + c) * HW;
            float *y = out + (n * s->c + c) * HW;
            if (nd->bias)
                for (int64_t p = 0; p < HW; p++) y[p] = x[p] * w + b;
            else
                for (int64_t p = 0; p < HW; p++) y[p] = x[p] * w;
        }
}
