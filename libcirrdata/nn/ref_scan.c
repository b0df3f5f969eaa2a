/* The C reference of MambaVision's ops (schemas/model-graph.md): softplus, the depthwise conv1d over
 * tokens, mamba's selective scan and the window partition / reverse with zero padding.
 *
 * A token sequence is an image's H*W pixels in row-major order (t = h*W + w), its features the
 * channels, so that every op works on the (N, C, H, W) tensor as it is. The arithmetic follows
 * PyTorch's float32 formulas (F.softplus, Conv1d, mamba_ssm's selective_scan_ref) term by term; the
 * scan is sequential over the tokens with a float32 state per (n, d, s) and runs (n, d) channels on
 * threads. */
#include <math.h>
#include <string.h>

#include "nn/graph.h"

void cd_nn_ref_softplus(const cd_nn_node *nd, int64_t count, const float *in, float *out) {
    const float beta = nd->beta, threshold = nd->threshold;
    /* PyTorch's CPU kernel: (x * beta) > threshold ? x : log1p(exp(x * beta)) / beta; NaN fails the
     * comparison and stays NaN through the formula */
    for (int64_t i = 0; i < count; i++) {
        const float bx = in[i] * beta;
        out[i] = bx > threshold ? in[i] : log1pf(expf(bx)) / beta;
    }
}

/* ---- dwconv1d: one (n, c) token sequence per item ---- */

typedef struct seq_job {
    const cd_nn_node *node;
    cd_nn_shape shape; /* of the (first) input */
    const float *u, *delta, *b, *c;
    float *out;
} seq_job;

static void dwconv1d_range(void *ctx, int64_t begin, int64_t end) {
    const seq_job *j = ctx;
    const cd_nn_node *nd = j->node;
    const int64_t L = j->shape.h * j->shape.w, C = j->shape.c, K = nd->kw, pl = nd->pw;
    for (int64_t item = begin; item < end; item++) {
        const int64_t c = item % C;
        const float *x = j->u + item * L, *w = nd->weight + c * K;
        float *y = j->out + item * L;
        const float b = nd->bias ? nd->bias[c] : 0.0f;
        for (int64_t t = 0; t < L; t++) {
            /* taps k with 0 <= t + k - pl < L (the rest read the zero padding) */
            const int64_t k0 = pl - t > 0 ? pl - t : 0, k1 = L - t + pl < K ? L - t + pl : K;
            float acc = 0.0f;
            for (int64_t k = k0; k < k1; k++) acc += w[k] * x[t + k - pl];
            y[t] = acc + b;
        }
    }
}

void cd_nn_ref_dwconv1d(const cd_nn_node *nd, const cd_nn_shape *is, const float *in, float *out, int threads) {
    seq_job j = {nd, *is, in, NULL, NULL, NULL, out};
    const int64_t items = is->n * is->c, work = items * is->h * is->w * nd->kw;
    cd_nn_parallel_for(items, work < (1 << 16) ? 1 : threads, dwconv1d_range, &j);
}

/* ---- the selective scan: one (n, d) channel per item ---- */

static void scan_range(void *ctx, int64_t begin, int64_t end) {
    const seq_job *j = ctx;
    const cd_nn_node *nd = j->node;
    const int64_t L = j->shape.h * j->shape.w, D = j->shape.c, S = nd->states;
    float h[256]; /* S <= 256 (graph.c) */
    for (int64_t item = begin; item < end; item++) {
        const int64_t n = item / D, d = item % D;
        const float *u = j->u + item * L, *delta = j->delta + item * L;
        const float *B = j->b + n * S * L, *C = j->c + n * S * L, *A = nd->weight + d * S;
        const float dbias = nd->delta_bias ? nd->delta_bias[d] : 0.0f, dskip = nd->bias ? nd->bias[d] : 0.0f;
        float *y = j->out + item * L;
        memset(h, 0, sizeof(float) * (size_t)S);
        for (int64_t t = 0; t < L; t++) {
            float dt = delta[t] + dbias;
            if (nd->delta_softplus) dt = dt <= 20.0f ? log1pf(expf(dt)) : dt; /* F.softplus, threshold 20 */
            const float du = dt * u[t];
            float acc = 0.0f;
            for (int64_t s = 0; s < S; s++) {
                h[s] = expf(dt * A[s]) * h[s] + du * B[s * L + t];
                acc += C[s * L + t] * h[s];
            }
            y[t] = nd->bias ? acc + dskip * u[t] : acc;
        }
    }
}

void cd_nn_ref_selective_scan(const cd_nn_node *nd, const cd_nn_shape *is, const float *u, const float *delta,
                              const float *b, const float *c, float *out, int threads) {
    seq_job j = {nd, *is, u, delta, b, c, out};
    const int64_t items = is->n * is->c, work = items * is->h * is->w * nd->states;
    cd_nn_parallel_for(items, work < (1 << 14) ? 1 : threads, scan_range, &j);
}

/* ---- windows: image (n, c, y, x) <-> window (n * nh * nw + (y / ws) * nw + x / ws, c, y % ws, x % ws) ---- */

void cd_nn_ref_window_partition(const cd_nn_node *nd, const cd_nn_shape *is, const float *in, float *out) {
    const int64_t ws = nd->window, H = is->h, W = is->w, C = is->c;
    const int64_t nh = (H + ws - 1) / ws, nw = (W + ws - 1) / ws;
    for (int64_t n = 0; n < is->n; n++)
        for (int64_t wy = 0; wy < nh; wy++)
            for (int64_t wx = 0; wx < nw; wx++)
                for (int64_t c = 0; c < C; c++) {
                    float *o = out + (((n * nh + wy) * nw + wx) * C + c) * ws * ws;
                    const float *plane = in + (n * C + c) * H * W;
                    for (int64_t i = 0; i < ws; i++) {
                        const int64_t y = wy * ws + i;
                        for (int64_t k = 0; k < ws; k++) {
                            const int64_t x = wx * ws + k;
                            o[i * ws + k] = y < H && x < W ? plane[y * W + x] : 0.0f; /* the right/bottom padding */
                        }
                    }
                }
}

void cd_nn_ref_window_reverse(const cd_nn_node *nd, const cd_nn_shape *is, const float *in, float *out) {
    const cd_nn_shape *os = &nd->shape;
    const int64_t ws = nd->window, H = os->h, W = os->w, C = is->c;
    const int64_t nh = (H + ws - 1) / ws, nw = (W + ws - 1) / ws;
    for (int64_t n = 0; n < os->n; n++)
        for (int64_t c = 0; c < C; c++) {
            float *plane = out + (n * C + c) * H * W;
            for (int64_t y = 0; y < H; y++)
                for (int64_t x = 0; x < W; x++) {
                    const int64_t win = (n * nh + y / ws) * nw + x / ws;
                    plane[y * W + x] = in[(win * C + c) * ws * ws + (y % ws) * ws + x % ws];
                }
        }
}
