/* The plain C executor: the correctness baseline for the Vulkan kernels and the CPU fallback.
 *
 * Convolution is im2col fused into the packing of a cache-blocked SGEMM (C = A·B with A the weights
 * (O/groups x C/groups·KH·KW), B the image patches, C the output planes): A is packed into 6-row
 * strips once per node, on its first run (node->packed, kept with the graph; the packing depends only
 * on the weights, so results are the same as packing per call), each thread packs its own column panels of B into
 * 16-column strips, and a 6x16
 * register tile accumulates in float32 (like PyTorch). On x86-64 with AVX2+FMA the tile uses
 * intrinsics, chosen at run time; elsewhere plain C that the compiler vectorises. Pools follow
 * PyTorch exactly (max pool padding is -inf, ceil-mode windows starting in the right padding are
 * dropped, avg pool divisor rules, adaptive bins floor(i·H/o) .. ceil((i+1)·H/o)). Depthwise
 * convolutions (groups == channels) have a direct per-plane kernel of their own (cd_nn_ref_dwconv2d). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/graph.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define REF_X86 1
#include <immintrin.h>
#endif

#define MR 6
#define NR 16
#define KC 256
#define MC 96  /* rows of A per block: 16 strips, ~96 KiB of packed A at KC = 256 (L2) */
#define NC 512 /* columns of B per panel: 512 KiB at KC = 256 */

/* ---- threads ---- */

typedef void (*range_fn)(void *ctx, int64_t begin, int64_t end);

typedef struct range_job {
    range_fn fn;
    void *ctx;
    int64_t begin, end;
} range_job;

static void *range_main(void *arg) {
    range_job *j = arg;
    j->fn(j->ctx, j->begin, j->end);
    return NULL;
}

static int resolve_threads(int threads) {
    threads = cd_thread_count(threads);
    return threads > 256 ? 256 : threads;
}

/* Splits [0, count) into contiguous ranges, one per thread; the caller runs the first. A thread
 * that cannot be started runs its range on the caller instead (same result, just slower). */
static void parallel_for(int64_t count, int threads, range_fn fn, void *ctx) {
    if (count <= 0) return;
    int t = resolve_threads(threads);
    if (t > count) t = (int)count;
    if (t <= 1) {
        fn(ctx, 0, count);
        return;
    }
    range_job jobs[256];
    pthread_t tid[256];
    bool started[256] = {false};
    for (int i = 0; i < t; i++) jobs[i] = (range_job){fn, ctx, count * i / t, count * (i + 1) / t};
    for (int i = 1; i < t; i++) started[i] = pthread_create(&tid[i], NULL, range_main, &jobs[i]) == 0;
    fn(ctx, jobs[0].begin, jobs[0].end);
    for (int i = 1; i < t; i++) {
        if (started[i])
            pthread_join(tid[i], NULL);
        else
            fn(ctx, jobs[i].begin, jobs[i].end);
    }
}

void cd_nn_parallel_for(int64_t count, int threads, cd_nn_range_fn fn, void *ctx) {
    parallel_for(count, threads, fn, ctx);
}

/* PyTorch's output size (conv and pools; see graph.c). */
static int64_t out_size(int64_t in, int k, int s, int pad, int dil, bool ceil_mode) {
    int64_t num = in + 2 * pad - (int64_t)dil * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    int64_t q = num >= 0 ? num / s : -((-num + s - 1) / s);
    int64_t out = q + 1;
    if (ceil_mode && (out - 1) * s >= in + pad) out--;
    return out;
}

/* ---- the 6x16 micro-kernel: c[0..6)[0..16) (+)= sum_k a[k*6 + i] * b[k*16 + j], then, on the last
 * K block, + bias[i] (when bias is non-NULL) and ReLU (NaN stays NaN, as in PyTorch) ---- */

typedef void (*kernel_fn)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int accumulate,
                          const float *bias, int relu);

static void kernel_generic(int64_t kc, const float *restrict a, const float *restrict b, float *restrict c, int64_t ldc,
                           int accumulate, const float *bias, int relu) {
    float acc[MR][NR];
    memset(acc, 0, sizeof acc);
    for (int64_t k = 0; k < kc; k++, a += MR, b += NR)
        for (int i = 0; i < MR; i++) {
            float av = a[i];
            for (int j = 0; j < NR; j++) acc[i][j] += av * b[j];
        }
    for (int i = 0; i < MR; i++, c += ldc)
        for (int j = 0; j < NR; j++) {
            float v = accumulate ? c[j] + acc[i][j] : acc[i][j];
            if (bias) v += bias[i];
            c[j] = relu && v < 0.0f ? 0.0f : v;
        }
}

#ifdef REF_X86
__attribute__((target("avx2,fma"))) static void kernel_avx2(int64_t kc, const float *restrict a,
                                                            const float *restrict b, float *restrict c, int64_t ldc,
                                                            int accumulate, const float *bias, int relu) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k = 0; k < kc; k++, a += MR, b += NR) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), av;
        av = _mm256_broadcast_ss(a + 0);
        c00 = _mm256_fmadd_ps(av, b0, c00);
        c01 = _mm256_fmadd_ps(av, b1, c01);
        av = _mm256_broadcast_ss(a + 1);
        c10 = _mm256_fmadd_ps(av, b0, c10);
        c11 = _mm256_fmadd_ps(av, b1, c11);
        av = _mm256_broadcast_ss(a + 2);
        c20 = _mm256_fmadd_ps(av, b0, c20);
        c21 = _mm256_fmadd_ps(av, b1, c21);
        av = _mm256_broadcast_ss(a + 3);
        c30 = _mm256_fmadd_ps(av, b0, c30);
        c31 = _mm256_fmadd_ps(av, b1, c31);
        av = _mm256_broadcast_ss(a + 4);
        c40 = _mm256_fmadd_ps(av, b0, c40);
        c41 = _mm256_fmadd_ps(av, b1, c41);
        av = _mm256_broadcast_ss(a + 5);
        c50 = _mm256_fmadd_ps(av, b0, c50);
        c51 = _mm256_fmadd_ps(av, b1, c51);
    }
    const __m256 zero = _mm256_setzero_ps();
    int row = 0;
    /* max(0, v) returns v when v is NaN (the second operand wins on NaN). */
#define STORE_ROW(r0, r1)                                                                                              \
    do {                                                                                                               \
        if (accumulate) {                                                                                              \
            r0 = _mm256_add_ps(r0, _mm256_loadu_ps(c));                                                                \
            r1 = _mm256_add_ps(r1, _mm256_loadu_ps(c + 8));                                                            \
        }                                                                                                              \
        if (bias) {                                                                                                    \
            __m256 bv = _mm256_broadcast_ss(bias + row);                                                               \
            r0 = _mm256_add_ps(r0, bv);                                                                                \
            r1 = _mm256_add_ps(r1, bv);                                                                                \
        }                                                                                                              \
        if (relu) {                                                                                                    \
            r0 = _mm256_max_ps(zero, r0);                                                                              \
            r1 = _mm256_max_ps(zero, r1);                                                                              \
        }                                                                                                              \
        row++;                                                                                                         \
        _mm256_storeu_ps(c, r0);                                                                                       \
        _mm256_storeu_ps(c + 8, r1);                                                                                   \
        c += ldc;                                                                                                      \
    } while (0)
    STORE_ROW(c00, c01);
    STORE_ROW(c10, c11);
    STORE_ROW(c20, c21);
    STORE_ROW(c30, c31);
    STORE_ROW(c40, c41);
    STORE_ROW(c50, c51);
#undef STORE_ROW
}
#endif

static kernel_fn pick_kernel(void) {
#ifdef REF_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kernel_avx2;
#endif
    return kernel_generic;
}

/* ---- convolution ---- */

typedef struct conv_job {
    const cd_nn_node *node;
    const float *in;
    float *out;
    const float *apack; /* packed weights: per group, per K block, per 6-row strip: kc x 6 */
    const float *bias;  /* per group og_pad values (zeros without a bias) */
    kernel_fn kern;
    int64_t C, H, W, O, OH, OW;
    int64_t cg, og, og_pad, K, N; /* per group: channels in/out, rows padded to MR, depth, pixels */
    int64_t tile, tiles;          /* columns per work item, items per (image, group) */
    bool pointwise;               /* 1x1, stride 1, no padding: B is the input planes themselves */
} conv_job;

/* Packs A (weights of all groups) into strips of MR rows for every KC block. */
static void pack_weights(const conv_job *j, float *ap) {
    const cd_nn_node *nd = j->node;
    for (int64_t g = 0; g < nd->groups; g++) {
        const float *w = nd->weight + g * j->og * j->K;
        float *dst = ap + g * j->og_pad * j->K;
        for (int64_t pc = 0; pc < j->K; pc += KC) {
            int64_t kc = j->K - pc < KC ? j->K - pc : KC;
            for (int64_t m0 = 0; m0 < j->og_pad; m0 += MR) {
                for (int64_t k = 0; k < kc; k++)
                    for (int64_t r = 0; r < MR; r++) *dst++ = m0 + r < j->og ? w[(m0 + r) * j->K + pc + k] : 0.0f;
            }
        }
    }
}

/* im2col of columns [n0, n0 + nc) and rows [pc, pc + kc) straight into 16-column strips, strip by
 * strip so that writes are sequential. A strip of 16 pixels on one output row whose window row lies
 * inside the input is one 64-byte copy (stride 1); the rest take the checked per-pixel path. */
static void pack_patches(const conv_job *j, const float *in_g, int64_t n0, int64_t nc, int64_t pc, int64_t kc,
                         const int32_t *iy0, const int32_t *ix0, float *bp) {
    const cd_nn_node *nd = j->node;
    int64_t strips = (nc + NR - 1) / NR, HW = j->H * j->W, khw = (int64_t)nd->kh * nd->kw;
    if (j->pointwise) {
        for (int64_t k = 0; k < kc; k++) {
            const float *src = in_g + (pc + k) * HW + n0;
            for (int64_t s = 0; s < strips; s++) {
                float *d = bp + s * kc * NR + k * NR;
                int64_t w = nc - s * NR < NR ? nc - s * NR : NR;
                memcpy(d, src + s * NR, (size_t)w * sizeof(float));
                for (int64_t x = w; x < NR; x++) d[x] = 0.0f;
            }
        }
        return;
    }
    const int64_t H = j->H, W = j->W, sw = nd->sw;
    for (int64_t s = 0; s < strips; s++) {
        int64_t c0 = s * NR, w = nc - c0 < NR ? nc - c0 : NR;
        int64_t p = n0 + c0, ox = p % j->OW;
        bool one_row = w == NR && ox + NR <= j->OW;
        float *d = bp + s * kc * NR;
        /* (c, ky, kx) of row pc, advanced incrementally */
        int64_t c = pc / khw, r = pc % khw, ky = r / nd->kw, kx = r % nd->kw;
        for (int64_t k = 0; k < kc; k++, d += NR) {
            const float *plane = in_g + c * HW;
            int64_t dy = ky * nd->dh, dx = kx * nd->dw;
            if (one_row) {
                int64_t iy = iy0[c0] + dy, ix = ix0[c0] + dx;
                if (iy < 0 || iy >= H) {
                    memset(d, 0, NR * sizeof(float));
                } else {
                    const float *row = plane + iy * W;
                    if (ix >= 0 && ix + (NR - 1) * sw < W) {
                        if (sw == 1)
                            memcpy(d, row + ix, NR * sizeof(float));
                        else
                            for (int t = 0; t < NR; t++) d[t] = row[ix + t * sw];
                    } else { /* the window crosses the left or right border: t in [t0, t1) is inside */
                        int64_t t0 = ix < 0 ? (-ix + sw - 1) / sw : 0, t1 = W - ix > 0 ? (W - ix + sw - 1) / sw : 0;
                        if (t1 > NR) t1 = NR;
                        if (t0 > t1) t0 = t1;
                        for (int64_t t = 0; t < t0; t++) d[t] = 0.0f;
                        if (sw == 1)
                            memcpy(d + t0, row + ix + t0, (size_t)(t1 - t0) * sizeof(float));
                        else
                            for (int64_t t = t0; t < t1; t++) d[t] = row[ix + t * sw];
                        for (int64_t t = t1; t < NR; t++) d[t] = 0.0f;
                    }
                }
            } else {
                for (int64_t t = 0; t < NR; t++) {
                    float v = 0.0f;
                    if (t < w) {
                        int64_t iy = iy0[c0 + t] + dy, ix = ix0[c0 + t] + dx;
                        if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = plane[iy * W + ix];
                    }
                    d[t] = v;
                }
            }
            if (++kx == nd->kw) {
                kx = 0;
                if (++ky == nd->kh) {
                    ky = 0;
                    c++;
                }
            }
        }
    }
}

/* The node's packed weights followed by its bias padded per group to og_pad (zeros without a bias):
 * made on the first call and kept in node->packed (freed by cd_nn_graph_free). Concurrent first
 * calls each pack; one compare-and-swap publishes a copy and the others free theirs. NULL when
 * memory runs out (the caller then takes the direct loop). */
static const float *packed_weights(const conv_job *j) {
    cd_nn_node *nd = (cd_nn_node *)j->node; /* the cache is not part of the node's value */
    float *p = __atomic_load_n(&nd->packed, __ATOMIC_ACQUIRE);
    if (p) return p;
    const int64_t na = nd->groups * j->og_pad * j->K, floats = na + nd->groups * j->og_pad;
    p = aligned_alloc(64, (size_t)((floats * (int64_t)sizeof(float) + 63) / 64 * 64));
    if (!p) return NULL;
    pack_weights(j, p);
    float *bias = p + na;
    memset(bias, 0, (size_t)(nd->groups * j->og_pad) * sizeof(float));
    if (nd->bias)
        for (int64_t g = 0; g < nd->groups; g++)
            memcpy(bias + g * j->og_pad, nd->bias + g * j->og, (size_t)j->og * sizeof(float));
    float *expected = NULL;
    if (!__atomic_compare_exchange_n(&nd->packed, &expected, p, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        free(p);
        return expected;
    }
    return p;
}

typedef struct conv_scratch {
    float *bp;
    int32_t *iy0, *ix0;
} conv_scratch;

static void conv_item(const conv_job *j, int64_t item, conv_scratch *s) {
    const cd_nn_node *nd = j->node;
    int64_t t = item % j->tiles, bg = item / j->tiles, g = bg % nd->groups, b = bg / nd->groups;
    int64_t n0 = t * j->tile, nc = j->N - n0 < j->tile ? j->N - n0 : j->tile;
    if (nc <= 0) return;
    const float *in_g = j->in + (b * j->C + g * j->cg) * j->H * j->W;
    float *out_g = j->out + (b * j->O + g * j->og) * j->N;
    const float *a_g = j->apack + g * j->og_pad * j->K;
    if (!j->pointwise)
        for (int64_t col = 0; col < nc; col++) {
            int64_t p = n0 + col, oy = p / j->OW, ox = p % j->OW;
            s->iy0[col] = (int32_t)(oy * nd->sh - nd->ph);
            s->ix0[col] = (int32_t)(ox * nd->sw - nd->pw);
        }
    int64_t strips = (nc + NR - 1) / NR;
    float tmp[MR * NR];
    for (int64_t pc = 0; pc < j->K; pc += KC) {
        int64_t kc = j->K - pc < KC ? j->K - pc : KC;
        pack_patches(j, in_g, n0, nc, pc, kc, s->iy0, s->ix0, s->bp);
        const float *a_blk = a_g + j->og_pad * pc;
        int acc = pc > 0, last = pc + kc >= j->K;
        for (int64_t m0 = 0; m0 < j->og_pad; m0 += MC) {
            int64_t m1 = m0 + MC < j->og_pad ? m0 + MC : j->og_pad;
            for (int64_t st = 0; st < strips; st++) {
                const float *bs = s->bp + st * kc * NR;
                int64_t c0 = n0 + st * NR, nr = nc - st * NR < NR ? nc - st * NR : NR;
                for (int64_t m = m0; m < m1; m += MR) {
                    const float *as = a_blk + m * kc, *bias = j->bias + g * j->og_pad + m;
                    int64_t mr = j->og - m < MR ? j->og - m : MR;
                    float *c = out_g + m * j->N + c0;
                    if (mr == MR && nr == NR) {
                        j->kern(kc, as, bs, c, j->N, acc, last ? bias : NULL, last && nd->relu);
                    } else { /* edge tile: compute it whole, keep the valid part */
                        j->kern(kc, as, bs, tmp, NR, 0, NULL, 0);
                        for (int64_t r = 0; r < mr; r++)
                            for (int64_t x = 0; x < nr; x++) {
                                float v = acc ? c[r * j->N + x] + tmp[r * NR + x] : tmp[r * NR + x];
                                if (last) {
                                    v += bias[r];
                                    if (nd->relu && v < 0.0f) v = 0.0f;
                                }
                                c[r * j->N + x] = v;
                            }
                    }
                }
            }
        }
    }
}

/* The direct loop over output pixels [p0, p1) of image b, group g: used only when scratch memory
 * cannot be had (the ops cannot fail), so the result is always computed. */
static void conv_direct(const conv_job *j, int64_t b, int64_t g, int64_t p0, int64_t p1) {
    const cd_nn_node *nd = j->node;
    for (int64_t p = p0; p < p1; p++) {
        int64_t oy = p / j->OW, ox = p % j->OW;
        for (int64_t m = 0; m < j->og; m++) {
            const float *w = nd->weight + (g * j->og + m) * j->K;
            float acc = 0.0f;
            for (int64_t c = 0; c < j->cg; c++)
                for (int ky = 0; ky < nd->kh; ky++)
                    for (int kx = 0; kx < nd->kw; kx++) {
                        int64_t iy = oy * nd->sh - nd->ph + ky * nd->dh, ix = ox * nd->sw - nd->pw + kx * nd->dw;
                        if (iy >= 0 && iy < j->H && ix >= 0 && ix < j->W)
                            acc += w[(c * nd->kh + ky) * nd->kw + kx] *
                                   j->in[((b * j->C + g * j->cg + c) * j->H + iy) * j->W + ix];
                    }
            acc += nd->bias ? nd->bias[g * j->og + m] : 0.0f;
            if (nd->relu && acc < 0.0f) acc = 0.0f;
            j->out[(b * j->O + g * j->og + m) * j->N + p] = acc;
        }
    }
}

static void conv_range(void *ctx, int64_t begin, int64_t end) {
    const conv_job *j = ctx;
    conv_scratch s = {NULL, NULL, NULL};
    if (j->apack) {
        int64_t kc = j->K < KC ? j->K : KC;
        s.bp =
            aligned_alloc(64, (size_t)((kc * ((j->tile + NR - 1) / NR) * NR * (int64_t)sizeof(float) + 63) / 64 * 64));
        s.iy0 = malloc((size_t)j->tile * sizeof(int32_t));
        s.ix0 = malloc((size_t)j->tile * sizeof(int32_t));
    }
    for (int64_t i = begin; i < end; i++) {
        if (s.bp && s.iy0 && s.ix0) {
            conv_item(j, i, &s);
        } else {
            int64_t t = i % j->tiles, bg = i / j->tiles;
            int64_t p1 = (t + 1) * j->tile < j->N ? (t + 1) * j->tile : j->N;
            conv_direct(j, bg / j->node->groups, bg % j->node->groups, t * j->tile, p1);
        }
    }
    free(s.bp);
    free(s.iy0);
    free(s.ix0);
}

void cd_nn_ref_conv2d(const cd_nn_node *nd, const cd_nn_shape *is, const float *in, float *out, int threads) {
    if (cd_nn_ref_conv2d_is_depthwise(nd) && !cd_nn_dwconv_disabled()) {
        cd_nn_ref_dwconv2d(nd, is, in, out, threads);
        return;
    }
    conv_job j;
    memset(&j, 0, sizeof j);
    j.node = nd;
    j.in = in;
    j.out = out;
    j.kern = pick_kernel();
    j.C = is->c;
    j.H = is->h;
    j.W = is->w;
    j.O = nd->out_ch;
    j.OH = out_size(is->h, nd->kh, nd->sh, nd->ph, nd->dh, false);
    j.OW = out_size(is->w, nd->kw, nd->sw, nd->pw, nd->dw, false);
    /* cd_nn_graph_shape rejects both; never read past the input */
    if (j.OH < 1 || j.OW < 1 || is->n < 1 || is->c != nd->in_ch) return;
    j.cg = j.C / nd->groups;
    j.og = j.O / nd->groups;
    j.og_pad = (j.og + MR - 1) / MR * MR;
    j.K = j.cg * nd->kh * nd->kw;
    j.N = j.OH * j.OW;
    j.pointwise = nd->kh == 1 && nd->kw == 1 && nd->sh == 1 && nd->sw == 1 && nd->ph == 0 && nd->pw == 0;
    /* Column tiles: at most NC wide, narrow enough that every thread gets several work items. */
    int t = resolve_threads(threads);
    int64_t per = is->n * nd->groups, want = 4 * (int64_t)t;
    int64_t split = (want + per - 1) / per;
    int64_t tile = (j.N + split - 1) / split;
    tile = (tile + NR - 1) / NR * NR;
    if (tile > NC) tile = NC;
    if (tile < NR) tile = NR;
    j.tile = tile;
    j.tiles = (j.N + tile - 1) / tile;
    const float *ap = packed_weights(&j);
    if (ap) {
        j.apack = ap;
        j.bias = ap + nd->groups * j.og_pad * j.K;
    } /* else j.apack stays NULL: conv_range uses the direct loop */
    parallel_for(per * j.tiles, t, conv_range, &j);
}

/* ---- depthwise convolution: groups == in_ch (> 1), out_ch = m * in_ch (channel multiplier m), so
 * output plane o is one kh x kw filter over input plane o / m. The GEMM above would run one group
 * per work item with M = m rows (a 6-row strip mostly padding) and K = kh*kw: here each output plane
 * is computed directly, row by row, as a sum of kh*kw shifted, scaled input rows (at stride 1 a
 * contiguous multiply-add the compiler turns into vector code). Taps are added in (ky, kx) order
 * starting from 0 and the bias last, the GEMM's order, so the two paths differ only by the GEMM's
 * fused multiply-adds (AVX2) and the zero products it adds for padding. */

typedef struct dw_job {
    const cd_nn_node *node;
    const float *in;
    float *out;
    int64_t C, H, W, O, OH, OW, m;
} dw_job;

bool cd_nn_ref_conv2d_is_depthwise(const cd_nn_node *nd) {
    return nd->op == CD_NN_CONV2D && nd->groups > 1 && nd->groups == nd->in_ch && nd->out_ch % nd->in_ch == 0;
}

/* CIRRDATA_NN_NO_DWCONV (non-empty, not "0"): depthwise convolutions take the grouped GEMM, as
 * before they had a kernel of their own (tests and benchmarks compare the two). */
bool cd_nn_dwconv_disabled(void) {
    const char *v = getenv("CIRRDATA_NN_NO_DWCONV");
    return v && *v && strcmp(v, "0") != 0;
}

/* 8 lanes: two SSE registers, or one AVX register in the AVX2 build of dw_planes. */
typedef float v8f __attribute__((vector_size(32)));

/* a macro: a function returning v8f would change the ABI between the two builds (-Wpsabi) */
#define DW_LOAD8(v, p) memcpy(&(v), (p), sizeof(v))

/* One output pixel whose window may cross the border: the taps inside, in (ky, kx) order. */
static inline float dw_pixel(const float *src, const float *w, int64_t W, int64_t y0, int64_t x0, int64_t ky0,
                             int64_t ky1, int64_t kw, int64_t dh, int64_t dw) {
    float acc = 0.0f;
    for (int64_t ky = ky0; ky < ky1; ky++) {
        const float *row = src + (y0 + ky * dh) * W;
        for (int64_t kx = 0; kx < kw; kx++) {
            const int64_t ix = x0 + kx * dw;
            if (ix >= 0 && ix < W) acc += w[ky * kw + kx] * row[ix];
        }
    }
    return acc;
}

/* 8 * nv output columns of one row, every window inside `rows` (a zero-padded copy of the input,
 * see dw_planes_body): out[i] = sum over the nky window rows (rows + r * stride, weights w + r * kw)
 * and the kw taps (tap kx of column i at row[koff[kx] + i]) of w * x, in (ky, kx) order, accumulated
 * in nv independent vector registers (one chain would wait on the adder's latency). */
static inline __attribute__((always_inline)) void dw_cols(float *out, const float *rows, const float *w, int64_t stride,
                                                          int64_t nky, int64_t kw, const int64_t *koff, int nv) {
    v8f acc[4] = {{0}, {0}, {0}, {0}};
    for (int64_t r = 0; r < nky; r++) {
        const float *row = rows + r * stride;
        for (int64_t kx = 0; kx < kw; kx++) {
            const float wf = w[r * kw + kx];
            const v8f wv = {wf, wf, wf, wf, wf, wf, wf, wf};
            for (int v = 0; v < nv; v++) {
                v8f x;
                DW_LOAD8(x, row + koff[kx] + 8 * v);
                acc[v] += wv * x;
            }
        }
    }
    for (int v = 0; v < nv; v++) memcpy(out + 8 * v, &acc[v], sizeof acc[v]);
}

/* Output planes [begin, end) of the batch (plane = image * O + channel). Per output row the window
 * rows inside the input are ky in [ky0, ky1). With rows of at least 8 outputs, the plane is first
 * copied with its left and right zero padding (as the GEMM's patches hold it: the same products,
 * zeros included), each padded row P split by phase at stride sw (P[0], P[sw], ..., then P[1],
 * P[1 + sw], ...), so that the tap at P[t + sw * ox] is one contiguous run over ox and every column
 * goes 32 or 8 at a time in registers (dw_cols); the last block of 8 ends at OW and may recompute
 * columns (the same values). Otherwise (rows under 8 outputs, no memory for the copy) one pixel at a
 * time, with bounds checks only at the border columns. */
static inline __attribute__((always_inline)) void dw_planes_body(const dw_job *j, int64_t begin, int64_t end) {
    const cd_nn_node *nd = j->node;
    const int64_t H = j->H, W = j->W, OH = j->OH, OW = j->OW, kh = nd->kh, kw = nd->kw;
    const int64_t sh = nd->sh, sw = nd->sw, ph = nd->ph, pw = nd->pw, dh = nd->dh, dw = nd->dw;
    /* the padded copy: columns xp = ix + pw for every ix a window reaches, [0, (OW-1)*sw + (kw-1)*dw];
     * phase q (xp % sw == q) starts at pstart[q]; tap kx of column ox is at koff[kx] + ox */
    const int64_t Wp = (OW - 1) * sw + (kw - 1) * dw + 1;
    float *pad = OW >= 8 && kw <= 64 && sw <= 64 ? malloc((size_t)(H * Wp) * sizeof(float)) : NULL;
    int64_t pstart[64], koff[64];
    for (int64_t q = 0, at = 0; pad && q < sw; q++) {
        pstart[q] = at;
        at += q < Wp ? (Wp - q + sw - 1) / sw : 0;
    }
    for (int64_t kx = 0; pad && kx < kw; kx++) koff[kx] = pstart[kx * dw % sw] + kx * dw / sw;
    /* interior columns of the unpadded path: 0 <= ox*sw - pw and ox*sw - pw + (kw-1)*dw < W */
    const int64_t reach = W - 1 - (kw - 1) * dw + pw;
    int64_t xl = (pw + sw - 1) / sw, xh = reach >= 0 ? reach / sw + 1 : 0;
    if (xh > OW) xh = OW;
    if (xl > xh) xl = xh = OW; /* no interior: every column takes the checked path */
    for (int64_t pl = begin; pl < end; pl++) {
        const int64_t b = pl / j->O, o = pl % j->O;
        const float *src = j->in + (b * j->C + o / j->m) * H * W;
        const float *w = nd->weight + o * kh * kw;
        const float bias = nd->bias ? nd->bias[o] : 0.0f;
        float *dst = j->out + pl * OH * OW;
        if (pad && sw == 1) {
            const int64_t left = pw < Wp ? pw : Wp, mid = W < Wp - left ? W : Wp - left;
            for (int64_t y = 0; y < H; y++) {
                float *r = pad + y * Wp;
                memset(r, 0, (size_t)left * sizeof(float));
                memcpy(r + left, src + y * W, (size_t)mid * sizeof(float));
                memset(r + left + mid, 0, (size_t)(Wp - left - mid) * sizeof(float));
            }
        } else if (pad) {
            for (int64_t y = 0; y < H; y++)
                for (int64_t q = 0; q < sw && q < Wp; q++) {
                    float *d = pad + y * Wp + pstart[q];
                    for (int64_t xp = q; xp < Wp; xp += sw, d++) {
                        const int64_t ix = xp - pw;
                        *d = ix >= 0 && ix < W ? src[y * W + ix] : 0.0f;
                    }
                }
        }
        for (int64_t oy = 0; oy < OH; oy++) {
            float *out = dst + oy * OW;
            const int64_t y0 = oy * sh - ph;
            const int64_t ky0 = y0 < 0 ? (-y0 + dh - 1) / dh : 0, ky1r = H - y0 > 0 ? (H - y0 + dh - 1) / dh : 0;
            const int64_t ky1 = ky1r < kh ? ky1r : kh;
            if (pad && ky0 >= ky1) {
                memset(out, 0, (size_t)OW * sizeof(float));
            } else if (pad) {
                const float *rows = pad + (y0 + ky0 * dh) * Wp, *wr = w + ky0 * kw;
                int64_t ox = 0;
                for (; ox + 32 <= OW; ox += 32) dw_cols(out + ox, rows + ox, wr, dh * Wp, ky1 - ky0, kw, koff, 4);
                while (ox < OW) {
                    if (ox + 8 > OW) ox = OW - 8;
                    dw_cols(out + ox, rows + ox, wr, dh * Wp, ky1 - ky0, kw, koff, 1);
                    ox += 8;
                }
            } else {
                for (int64_t ox = 0; ox < xl; ox++)
                    out[ox] = dw_pixel(src, w, W, y0, ox * sw - pw, ky0, ky1, kw, dh, dw);
                for (int64_t ox = xl; ox < xh; ox++) { /* inside: no checks */
                    float acc = 0.0f;
                    for (int64_t ky = ky0; ky < ky1; ky++) {
                        const float *row = src + (y0 + ky * dh) * W + ox * sw - pw;
                        for (int64_t kx = 0; kx < kw; kx++) acc += w[ky * kw + kx] * row[kx * dw];
                    }
                    out[ox] = acc;
                }
                for (int64_t ox = xh; ox < OW; ox++)
                    out[ox] = dw_pixel(src, w, W, y0, ox * sw - pw, ky0, ky1, kw, dh, dw);
            }
            for (int64_t ox = 0; ox < OW; ox++) {
                const float v = out[ox] + bias;
                out[ox] = nd->relu && v < 0.0f ? 0.0f : v; /* NaN stays NaN */
            }
        }
    }
    free(pad);
}

static void dw_planes_generic(void *ctx, int64_t begin, int64_t end) { dw_planes_body(ctx, begin, end); }

#ifdef REF_X86
__attribute__((target("avx2"))) static void dw_planes_avx2(void *ctx, int64_t begin, int64_t end) {
    dw_planes_body(ctx, begin, end);
}
#endif

void cd_nn_ref_dwconv2d(const cd_nn_node *nd, const cd_nn_shape *is, const float *in, float *out, int threads) {
    dw_job j = {nd, in, out, is->c, is->h, is->w, nd->out_ch, 0, 0, 0};
    j.OH = out_size(is->h, nd->kh, nd->sh, nd->ph, nd->dh, false);
    j.OW = out_size(is->w, nd->kw, nd->sw, nd->pw, nd->dw, false);
    /* cd_nn_graph_shape rejects these; never read past the input */
    if (j.OH < 1 || j.OW < 1 || is->n < 1 || is->c != nd->in_ch || !cd_nn_ref_conv2d_is_depthwise(nd)) return;
    j.m = nd->out_ch / nd->in_ch;
    range_fn fn = dw_planes_generic;
#ifdef REF_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) fn = dw_planes_avx2;
#endif
    /* Small tensors are not worth a thread start (like the pools). */
    const int64_t planes = is->n * j.O, work = planes * j.OH * j.OW * nd->kh * nd->kw;
    parallel_for(planes, work < (1 << 16) ? 1 : threads, fn, &j);
}

/* ---- linear: out[b][o] = bias[o] + W[o] . x[b]; each weight row is read once for up to four
 * batch rows (a small batch makes this a matrix-vector product bound by reading W) ---- */

/* 16-byte vectors: native on every x86-64 (SSE2) and on NEON, no ABI questions. */
typedef float v4f __attribute__((vector_size(16)));

static inline v4f load4(const float *p) {
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

typedef struct linear_job {
    const cd_nn_node *node;
    const float *in;
    float *out;
    int64_t batch, I, O;
} linear_job;

static void linear_range(void *ctx, int64_t begin, int64_t end) {
    const linear_job *j = ctx;
    const cd_nn_node *nd = j->node;
    int64_t I = j->I, I16 = I / 16 * 16;
    for (int64_t o = begin; o < end; o++) {
        const float *w = nd->weight + o * I;
        float bias = nd->bias ? nd->bias[o] : 0.0f;
        for (int64_t b0 = 0; b0 < j->batch; b0 += 4) {
            int nb = j->batch - b0 < 4 ? (int)(j->batch - b0) : 4;
            const float *x[4];
            for (int r = 0; r < 4; r++) x[r] = j->in + (b0 + (r < nb ? r : 0)) * I;
            v4f acc[4][4];
            memset(acc, 0, sizeof acc);
            for (int64_t i = 0; i < I16; i += 16) {
                v4f w0 = load4(w + i), w1 = load4(w + i + 4), w2 = load4(w + i + 8), w3 = load4(w + i + 12);
                for (int r = 0; r < 4; r++) {
                    acc[r][0] += w0 * load4(x[r] + i);
                    acc[r][1] += w1 * load4(x[r] + i + 4);
                    acc[r][2] += w2 * load4(x[r] + i + 8);
                    acc[r][3] += w3 * load4(x[r] + i + 12);
                }
            }
            for (int r = 0; r < nb; r++) {
                v4f v = (acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3]);
                float s = (v[0] + v[1]) + (v[2] + v[3]);
                for (int64_t i = I16; i < I; i++) s += w[i] * x[r][i];
                s += bias;
                if (nd->relu && s < 0.0f) s = 0.0f;
                j->out[(b0 + r) * j->O + o] = s;
            }
        }
    }
}

void cd_nn_ref_linear(const cd_nn_node *nd, const cd_nn_shape *is, const float *in, float *out, int threads) {
    if (is->h != 1 || is->w != 1) { /* over C at every position: the 1x1 convolution (GEMM) path */
        if (is->c == nd->in_ch && nd->kh == 1 && nd->kw == 1) cd_nn_ref_conv2d(nd, is, in, out, threads);
        return;
    }
    linear_job j = {nd, in, out, is->n, is->c * is->h * is->w, nd->out_ch};
    if (j.I != nd->in_ch) return; /* cd_nn_graph_shape rejects this; never read past the input */
    /* Threads only pay off when there is real work (VGG's 25088 x 4096, not ResNet's 512 x 3). */
    int64_t work = j.O * j.I * j.batch;
    parallel_for(j.O, work < (1 << 20) ? 1 : threads, linear_range, &j);
}

/* ---- pools (one plane at a time: every op below works on n*c independent planes) ---- */

void cd_nn_ref_maxpool2d(const cd_nn_node *nd, const cd_nn_shape *is, const float *in, float *out) {
    int64_t H = is->h, W = is->w, planes = is->n * is->c;
    int64_t OH = out_size(H, nd->kh, nd->sh, nd->ph, nd->dh, nd->ceil_mode);
    int64_t OW = out_size(W, nd->kw, nd->sw, nd->pw, nd->dw, nd->ceil_mode);
    if (OH < 1 || OW < 1) return;
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *src = in + pl * H * W;
        float *dst = out + pl * OH * OW;
        for (int64_t oy = 0; oy < OH; oy++) {
            int64_t y0 = oy * nd->sh - nd->ph;
            /* Window rows inside the input: y0 + ky*dh in [0, H). */
            int64_t ky0 = y0 < 0 ? (-y0 + nd->dh - 1) / nd->dh : 0;
            int64_t ky1 = (H - y0 + nd->dh - 1) / nd->dh;
            if (ky1 > nd->kh) ky1 = nd->kh;
            for (int64_t ox = 0; ox < OW; ox++) {
                int64_t x0 = ox * nd->sw - nd->pw;
                int64_t kx0 = x0 < 0 ? (-x0 + nd->dw - 1) / nd->dw : 0;
                int64_t kx1 = (W - x0 + nd->dw - 1) / nd->dw;
                if (kx1 > nd->kw) kx1 = nd->kw;
                float m = -INFINITY;
                int nan = 0;
                for (int64_t ky = ky0; ky < ky1; ky++) {
                    const float *row = src + (y0 + ky * nd->dh) * W + x0;
                    for (int64_t kx = kx0; kx < kx1; kx++) {
                        float v = row[kx * nd->dw];
                        m = v > m ? v : m; /* branch-free (maxss) */
                        nan |= v != v;
                    }
                }
                dst[oy * OW + ox] = nan ? NAN : m; /* NaN propagates, as in PyTorch */
            }
        }
    }
}

void cd_nn_ref_avgpool2d(const cd_nn_node *nd, const cd_nn_shape *is, const float *in, float *out) {
    int64_t H = is->h, W = is->w, planes = is->n * is->c;
    int64_t OH = out_size(H, nd->kh, nd->sh, nd->ph, 1, nd->ceil_mode);
    int64_t OW = out_size(W, nd->kw, nd->sw, nd->pw, 1, nd->ceil_mode);
    if (OH < 1 || OW < 1) return;
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *src = in + pl * H * W;
        float *dst = out + pl * OH * OW;
        for (int64_t oy = 0; oy < OH; oy++)
            for (int64_t ox = 0; ox < OW; ox++) {
                /* PyTorch: the divisor with padding counts the window clipped to the padded input
                 * (a ceil-mode window can hang past it); without, only the input cells. */
                int64_t y0 = oy * nd->sh - nd->ph, x0 = ox * nd->sw - nd->pw;
                int64_t y1 = y0 + nd->kh < H + nd->ph ? y0 + nd->kh : H + nd->ph;
                int64_t x1 = x0 + nd->kw < W + nd->pw ? x0 + nd->kw : W + nd->pw;
                int64_t pool = (y1 - y0) * (x1 - x0);
                if (y0 < 0) y0 = 0;
                if (x0 < 0) x0 = 0;
                if (y1 > H) y1 = H;
                if (x1 > W) x1 = W;
                if (y0 >= y1 || x0 >= x1) {
                    dst[oy * OW + ox] = 0.0f;
                    continue;
                }
                float sum = 0.0f;
                for (int64_t y = y0; y < y1; y++)
                    for (int64_t x = x0; x < x1; x++) sum += src[y * W + x];
                int64_t div = nd->count_include_pad ? pool : (y1 - y0) * (x1 - x0);
                dst[oy * OW + ox] = sum / (float)div;
            }
    }
}

void cd_nn_ref_adaptive_avgpool2d(const cd_nn_node *nd, const cd_nn_shape *is, const float *in, float *out) {
    int64_t H = is->h, W = is->w, OH = nd->out_h, OW = nd->out_w, planes = is->n * is->c;
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *src = in + pl * H * W;
        float *dst = out + pl * OH * OW;
        for (int64_t oy = 0; oy < OH; oy++) {
            int64_t y0 = oy * H / OH, y1 = ((oy + 1) * H + OH - 1) / OH;
            for (int64_t ox = 0; ox < OW; ox++) {
                int64_t x0 = ox * W / OW, x1 = ((ox + 1) * W + OW - 1) / OW;
                float sum = 0.0f;
                for (int64_t y = y0; y < y1; y++)
                    for (int64_t x = x0; x < x1; x++) sum += src[y * W + x];
                dst[oy * OW + ox] = sum / (float)((y1 - y0) * (x1 - x0));
            }
        }
    }
}

void cd_nn_ref_add(const cd_nn_node *nd, int64_t count, const float *a, const float *b, float *out) {
    if (nd->relu)
        for (int64_t i = 0; i < count; i++) {
            float v = a[i] + b[i];
            out[i] = v < 0.0f ? 0.0f : v;
        }
    else
        for (int64_t i = 0; i < count; i++) out[i] = a[i] + b[i];
}

/* The activations in PyTorch's float32 order of operations (its CPU kernels), each a loop of its own
 * so that the branch-free ones vectorise; erff/tanhf/expf come from libm. The clamps are written as
 * comparisons (false for NaN) so that NaN stays NaN, which fminf/fmaxf would not keep. */
void cd_nn_ref_unary(cd_nn_op op, int64_t count, const float *in, float *out) {
    switch (op) {
    case CD_NN_RELU:
        for (int64_t i = 0; i < count; i++) out[i] = in[i] < 0.0f ? 0.0f : in[i];
        break;
    case CD_NN_GELU:
        for (int64_t i = 0; i < count; i++) out[i] = in[i] * 0.5f * (1.0f + erff(in[i] * (float)M_SQRT1_2));
        break;
    case CD_NN_GELU_TANH: {
        const float beta = (float)(M_SQRT2 * M_2_SQRTPI * 0.5), kappa = 0.044715f;
        for (int64_t i = 0; i < count; i++) {
            const float x = in[i];
            out[i] = 0.5f * x * (1.0f + tanhf(beta * (x + kappa * x * x * x)));
        }
        break;
    }
    case CD_NN_SILU:
        for (int64_t i = 0; i < count; i++) out[i] = in[i] / (1.0f + expf(-in[i]));
        break;
    case CD_NN_HARDSWISH:
        for (int64_t i = 0; i < count; i++) {
            float r = in[i] + 3.0f;
            r = r < 0.0f ? 0.0f : r;
            r = r > 6.0f ? 6.0f : r;
            out[i] = in[i] * r / 6.0f;
        }
        break;
    case CD_NN_HARDSIGMOID:
        for (int64_t i = 0; i < count; i++) {
            float r = in[i] + 3.0f;
            r = r < 0.0f ? 0.0f : r;
            r = r > 6.0f ? 6.0f : r;
            out[i] = r / 6.0f;
        }
        break;
    default: break;
    }
}

void cd_nn_ref_softmax(const cd_nn_shape *s, const float *in, float *out) {
    int64_t plane = s->h * s->w;
    for (int64_t n = 0; n < s->n; n++)
        for (int64_t p = 0; p < plane; p++) {
            const float *x = in + n * s->c * plane + p;
            float *y = out + n * s->c * plane + p;
            float m = -INFINITY;
            for (int64_t c = 0; c < s->c; c++)
                if (x[c * plane] > m) m = x[c * plane];
            double sum = 0.0;
            for (int64_t c = 0; c < s->c; c++) sum += exp((double)x[c * plane] - m);
            for (int64_t c = 0; c < s->c; c++) y[c * plane] = (float)(exp((double)x[c * plane] - m) / sum);
        }
}

/* ---- the executor ---- */

/* Elementwise and per-plane ops split over planes (or elements) between threads. */
typedef struct plane_job {
    const cd_nn_node *node;
    cd_nn_shape in_shape; /* n = 1, c = planes: each range is a sub-shape */
    int64_t in_plane, out_plane;
    const float *a, *b;
    float *out;
} plane_job;

static void plane_range(void *ctx, int64_t begin, int64_t end) {
    const plane_job *j = ctx;
    const cd_nn_node *nd = j->node;
    cd_nn_shape s = j->in_shape;
    s.n = 1;
    s.c = end - begin;
    const float *a = j->a + begin * j->in_plane;
    float *o = j->out + begin * j->out_plane;
    switch (nd->op) {
    case CD_NN_MAXPOOL2D: cd_nn_ref_maxpool2d(nd, &s, a, o); break;
    case CD_NN_AVGPOOL2D: cd_nn_ref_avgpool2d(nd, &s, a, o); break;
    case CD_NN_ADAPTIVE_AVGPOOL2D: cd_nn_ref_adaptive_avgpool2d(nd, &s, a, o); break;
    case CD_NN_ADD: cd_nn_ref_add(nd, s.c * j->in_plane, a, j->b + begin * j->in_plane, o); break;
    case CD_NN_RELU:
    case CD_NN_GELU:
    case CD_NN_GELU_TANH:
    case CD_NN_SILU:
    case CD_NN_HARDSWISH:
    case CD_NN_HARDSIGMOID: cd_nn_ref_unary(nd->op, s.c * j->in_plane, a, o); break;
    case CD_NN_SOFTPLUS: cd_nn_ref_softplus(nd, s.c * j->in_plane, a, o); break;
    default: break;
    }
}

cd_status cd_nn_ref_run(const cd_nn_graph *g, float *arena, int threads, cd_error *err) {
    if (!g->arena_floats) return cd_fail(err, CD_ERR_ARG, "%s: the graph has not been shaped", g->source);
    int t = resolve_threads(threads);
    for (int i = 1; i < g->count; i++) {
        const cd_nn_node *nd = &g->nodes[i];
        const cd_nn_node *src = &g->nodes[nd->in[0]];
        const float *a = arena + src->offset;
        float *out = arena + nd->offset;
        const cd_nn_shape *is = &src->shape;
        switch (nd->op) {
        case CD_NN_CONV2D: cd_nn_ref_conv2d(nd, is, a, out, t); break;
        case CD_NN_LINEAR: cd_nn_ref_linear(nd, is, a, out, t); break;
        case CD_NN_FLATTEN: break; /* a view: same offset as its input */
        case CD_NN_SOFTMAX: cd_nn_ref_softmax(is, a, out); break;
        case CD_NN_DWCONV1D: cd_nn_ref_dwconv1d(nd, is, a, out, t); break;
        case CD_NN_SELECTIVE_SCAN:
            cd_nn_ref_selective_scan(nd, is, a, arena + g->nodes[nd->in[1]].offset, arena + g->nodes[nd->in[2]].offset,
                                     arena + g->nodes[nd->in[3]].offset, out, t);
            break;
        case CD_NN_WINDOW_PARTITION: cd_nn_ref_window_partition(nd, is, a, out); break;
        case CD_NN_WINDOW_REVERSE: cd_nn_ref_window_reverse(nd, is, a, out); break;
        case CD_NN_LAYER_NORM: cd_nn_ref_layer_norm(nd, is, a, out, t); break;
        case CD_NN_MUL:
            cd_nn_ref_mul(is, &g->nodes[nd->in[1]].shape, a, arena + g->nodes[nd->in[1]].offset, out);
            break;
        case CD_NN_SCALE: cd_nn_ref_scale(nd, is, a, out); break;
        case CD_NN_SLICE: cd_nn_ref_slice(nd, is, a, out); break;
        case CD_NN_CONCAT:
            cd_nn_ref_concat(is, a, &g->nodes[nd->in[1]].shape, arena + g->nodes[nd->in[1]].offset, out);
            break;
        case CD_NN_ATTENTION: {
            const cd_nn_node *kn = &g->nodes[nd->in[1]], *vn = &g->nodes[nd->in[2]];
            cd_status st =
                cd_nn_ref_attention(nd, is, a, &kn->shape, arena + kn->offset, arena + vn->offset, out, t, err);
            if (st != CD_OK) {
                char msg[CD_ERROR_MESSAGE_MAX];
                snprintf(msg, sizeof msg, "%s", err ? err->message : "");
                return cd_fail(err, st, "%s: %s", g->source, msg);
            }
            break;
        }
        case CD_NN_MAXPOOL2D:
        case CD_NN_AVGPOOL2D:
        case CD_NN_ADAPTIVE_AVGPOOL2D:
        case CD_NN_ADD:
        case CD_NN_RELU:
        case CD_NN_GELU:
        case CD_NN_GELU_TANH:
        case CD_NN_SILU:
        case CD_NN_HARDSWISH:
        case CD_NN_HARDSIGMOID:
        case CD_NN_SOFTPLUS: {
            plane_job j = {nd,
                           *is,
                           is->h * is->w,
                           nd->shape.h * nd->shape.w,
                           a,
                           nd->op == CD_NN_ADD ? arena + g->nodes[nd->in[1]].offset : NULL,
                           out};
            int64_t planes = is->n * is->c;
            /* Small tensors are not worth a thread start. */
            int64_t work = planes * j.in_plane;
            parallel_for(planes, work < (1 << 16) ? 1 : t, plane_range, &j);
            break;
        }
        default:
            return cd_fail(err, CD_ERR_INTERNAL, "%s: graph node '%s': op %s cannot run (not simplified?)", g->source,
                           nd->name, cd_nn_op_name(nd->op));
        }
    }
    return CD_OK;
}
