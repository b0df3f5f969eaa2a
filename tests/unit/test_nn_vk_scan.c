/* Unit tests: MambaVision's ops on the Vulkan executor (shaders/nn_softplus.comp, nn_dwconv1d.comp,
 * nn_selective_scan.comp, nn_window_partition.comp, nn_window_reverse.comp dispatched by
 * nn/vk_exec.c) against the C reference (nn/ref_scan.c) through cd_nn_ref_run, on lavapipe with the
 * validation layer and synchronization validation on, in shared, staging and float16 memory:
 * - softplus: beta / threshold pairs with inputs in [-2, 2] and [-12, 12] (across the threshold, into
 *   the flat tail); 1e-6 * max|ref| (the device's exp; log1p by the series of include/softplus.glsl)
 * - dwconv1d: K = 1, 3, 4, 5 with 'same' and lopsided padding, bias or not, 1-token and 1-row
 *   sequences, 80 channels at 14x14, batch 3; 1e-6 (the same taps in the same order)
 * - selective_scan: S = 8 with D = 80 at L = 196 and D = 160 at L = 49 (batch 2 and 3), softplus on
 *   and off, D skip and delta_bias present or not, S > D (40 states: 6 channels per workgroup), S = 256
 *   (one channel per workgroup), S = 1; delta, B and C are channel selections of the input by one-hot
 *   1x1 convolutions, exact in float32 and float16, so in fp16 only the output's rounding adds.
 *   1e-5 * max|ref|: the state's update uses the device's exp (Vulkan allows 3 + 2|x| ulp) over up to
 *   196 steps of a decaying sum, the reference libm's expf
 * - window_partition alone (16x16 window 14, 8x8 window 7, odd 9x11 window 4, 5x6 window 7, an exact
 *   multiple; batch up to 3: the output has N * windows images); partition, softplus, reverse with
 *   like = another node; exact (copies)
 * - the mixer's pattern: partition, dwconv1d, 1x1 convs to B and C, the scan, reverse (like = the
 *   input) at 16x16 / 14 and 8x8 / 7, batch 2; with the bindings limited (cd_nn_vk_test_limits) the
 *   same graph at batch 4 runs the windows and the scan in chunks of whole samples; 1e-5, fp16 8
 *   roundings of max|ref| more (the intermediate tensors are stored in float16)
 * Every run is computed by the device; no validation message (nn_vk_test_util.h). */
#include "test_util.h"

#include <math.h>
#include <stdbool.h>

#include "cirrdata/gpu.h"
#include "gpu_test_util.h"
#include "nn/graph.h"
#include "nn/vk_exec.h"
#include "nn_vk_test_util.h"

#define REL16 (8.0 / 2048.0) /* graphs: 8 float16 roundings of max|ref| for their intermediates */

static cd_nn_node *add_softplus(cd_nn_graph *g, int in, float beta, float threshold, const char *name) {
    cd_nn_node *nd = add_node(g, CD_NN_SOFTPLUS, in, -1, name);
    nd->beta = beta;
    nd->threshold = threshold;
    return nd;
}

static cd_nn_node *add_dwconv1d(cd_nn_graph *g, int in, int c, int k, int left, bool bias, const char *name) {
    cd_nn_node *nd = add_node(g, CD_NN_DWCONV1D, in, -1, name);
    nd->in_ch = nd->out_ch = c;
    nd->kh = 1;
    nd->kw = k;
    nd->pw = left;
    const float b = 1.0f / sqrtf((float)k);
    nd->weight = rand_array((int64_t)c * k, -b, b);
    nd->bias = bias ? rand_array(c, -0.5f, 0.5f) : NULL;
    return nd;
}

/* A 1x1 convolution whose output channel o is input channel (o * mul + add) % c: an exact copy. */
static int add_select(cd_nn_graph *g, int in, int c, int o, int mul, int add, const char *name) {
    cd_nn_node *nd = add_conv(g, in, c, o, 1, 1, 0, 1, 1, false, false, name);
    memset(nd->weight, 0, sizeof(float) * (size_t)o * c);
    for (int j = 0; j < o; j++) nd->weight[(int64_t)j * c + (j * mul + add) % c] = 1.0f;
    return g->count - 1;
}

/* A_log as MambaVision initialises it (log(1..S) per channel), perturbed; D and delta_bias random. */
static cd_nn_node *add_scan(cd_nn_graph *g, int u, int delta, int b, int c, int d, int s, bool softplus, bool skip,
                            bool dbias, float dbias_lo, const char *name) {
    cd_nn_node *nd = add_node(g, CD_NN_SELECTIVE_SCAN, u, delta, name);
    nd->in[2] = b;
    nd->in[3] = c;
    nd->n_in = 4;
    nd->in_ch = nd->out_ch = d;
    nd->states = s;
    nd->delta_softplus = softplus;
    nd->weight = rand_array((int64_t)d * s, -0.3f, 0.3f);
    for (int64_t i = 0; i < (int64_t)d * s; i++) nd->weight[i] = -expf(logf((float)(i % s + 1)) + nd->weight[i]);
    nd->bias = skip ? rand_array(d, -1.0f, 1.0f) : NULL;
    nd->delta_bias = dbias ? rand_array(d, dbias_lo, dbias_lo + 1.5f) : NULL;
    return nd;
}

static cd_nn_node *add_window(cd_nn_graph *g, cd_nn_op op, int in, int like, int ws, const char *name) {
    cd_nn_node *nd = add_node(g, op, in, like, name);
    nd->window = ws;
    return nd;
}

static void softplus_cases(cd_gpu_context *ctx) {
    static const float params[][2] = {{1.0f, 20.0f}, {2.0f, 5.0f}, {0.5f, -1.0f}, {1.5f, 3.0f}};
    for (int r = 0; r < 2; r++)
        for (size_t k = 0; k < sizeof params / sizeof params[0]; k++) {
            g_in_range = r ? 12.0f : 2.0f;
            cd_nn_graph *g = new_graph(2, 5);
            add_softplus(g, 0, params[k][0], params[k][1], "softplus");
            finish(g, 3, 7, 13);
            char what[128];
            snprintf(what, sizeof what, "softplus beta %g threshold %g range %g", params[k][0], params[k][1],
                     g_in_range);
            run_and_compare16(ctx, g, 1e-6, 0, what);
            cd_nn_graph_free(g);
        }
    g_in_range = 2;
}

typedef struct dw1d_case {
    int n, c, h, w, k, left;
    bool bias;
} dw1d_case;

static void dwconv1d_cases(cd_gpu_context *ctx) {
    static const dw1d_case cases[] = {
        {2, 80, 14, 14, 3, 1, false}, /* MambaVision's conv1d_x / conv1d_z on a 14x14 window */
        {3, 6, 5, 7, 4, 1, true},     /* PyTorch's 'same' for an even K: [1, 2] */
        {1, 4, 3, 3, 1, 0, true},     /* K = 1 */
        {2, 5, 1, 9, 5, 3, true},     /* lopsided [3, 1], one row */
        {1, 3, 1, 1, 3, 1, true},     /* one token: only the middle tap */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const dw1d_case *t = &cases[i];
        cd_nn_graph *g = new_graph(2, t->c);
        add_dwconv1d(g, 0, t->c, t->k, t->left, t->bias, "conv1d");
        finish(g, t->n, t->h, t->w);
        char what[96];
        snprintf(what, sizeof what, "dwconv1d %dx%dx%dx%d K=%d padding [%d, %d]", t->n, t->c, t->h, t->w, t->k, t->left,
                 t->k - 1 - t->left);
        run_and_compare16(ctx, g, 1e-6, 0, what);
        cd_nn_graph_free(g);
    }
}

typedef struct scan_case {
    int n, d, s, h, w;
    bool softplus, skip, dbias;
} scan_case;

static void scan_cases(cd_gpu_context *ctx) {
    static const scan_case cases[] = {
        {2, 80, 8, 14, 14, true, true, true},  /* a 14x14 window of stage 3 */
        {3, 160, 8, 7, 7, true, false, false}, /* a 7x7 window of stage 4, no D, no delta_bias */
        {2, 16, 8, 14, 14, false, true, true}, /* softplus off: delta_bias keeps delta > 0 */
        {1, 5, 3, 1, 9, true, true, false},    /* odd sizes */
        {2, 3, 40, 2, 3, true, true, true},    /* S > D: 6 channels per workgroup, 16 lanes idle */
        {1, 2, 256, 1, 5, true, true, true},   /* S = 256: one channel per workgroup */
        {2, 7, 1, 3, 1, false, false, true},   /* one state */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const scan_case *t = &cases[i];
        cd_nn_graph *g = new_graph(6, t->d);
        const int delta = add_select(g, 0, t->d, t->d, 7, 3, "delta");
        const int b = add_select(g, 0, t->d, t->s, 5, 1, "B");
        const int c = add_select(g, 0, t->d, t->s, 3, 2, "C");
        /* softplus off: the input is in [-2, 2], delta_bias in [2.5, 4] */
        add_scan(g, 0, delta, b, c, t->d, t->s, t->softplus, t->skip, t->dbias, t->softplus ? -3.0f : 2.5f, "scan");
        finish(g, t->n, t->h, t->w);
        char what[128];
        snprintf(what, sizeof what, "selective_scan N=%d D=%d S=%d L=%dx%d softplus %d D %d delta_bias %d", t->n, t->d,
                 t->s, t->h, t->w, t->softplus, t->skip, t->dbias);
        run_and_compare16(ctx, g, 1e-5, 0, what);
        cd_nn_graph_free(g);
    }
}

typedef struct win_case {
    int n, c, h, w, ws;
} win_case;

static void window_cases(cd_gpu_context *ctx) {
    static const win_case cases[] = {
        {2, 3, 16, 16, 14}, /* stage 3 at 256x256: padded to 28x28, 4 windows per sample */
        {3, 4, 8, 8, 7},    /* stage 4: padded to 14x14 */
        {1, 5, 9, 11, 4},   /* odd: 12x12, 9 windows */
        {2, 2, 8, 8, 4},    /* an exact multiple: no padding */
        {1, 3, 5, 6, 7},    /* smaller than one window */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const win_case *t = &cases[i];
        char what[96];
        cd_nn_graph *g = new_graph(2, t->c);
        add_window(g, CD_NN_WINDOW_PARTITION, 0, -1, t->ws, "partition");
        finish(g, t->n, t->h, t->w);
        snprintf(what, sizeof what, "window_partition %dx%dx%dx%d window %d", t->n, t->c, t->h, t->w, t->ws);
        run_and_compare16(ctx, g, 0, 0, what);
        cd_nn_graph_free(g);
        /* back through a per-window op; like is another node of the input's N, H, W */
        g = new_graph(5, t->c);
        add_window(g, CD_NN_WINDOW_PARTITION, 0, -1, t->ws, "partition");
        add_softplus(g, 1, 1.0f, 20.0f, "softplus");
        add_node(g, CD_NN_GELU, 0, -1, "like");
        add_window(g, CD_NN_WINDOW_REVERSE, 2, 3, t->ws, "reverse");
        finish(g, t->n, t->h, t->w);
        snprintf(what, sizeof what, "partition, softplus, reverse %dx%dx%dx%d window %d", t->n, t->c, t->h, t->w,
                 t->ws);
        run_and_compare16(ctx, g, 1e-6, 0, what);
        cd_nn_graph_free(g);
    }
}

/* MambaVision's mixer pattern through padded windows (padded tokens take part in the scan). */
static cd_nn_graph *mixer_graph(int c, int s, int ws) {
    cd_nn_graph *g = new_graph(8, c);
    add_window(g, CD_NN_WINDOW_PARTITION, 0, -1, ws, "partition");
    add_dwconv1d(g, 1, c, 3, 1, true, "conv1d");
    add_conv(g, 1, c, s, 1, 1, 0, 1, 1, true, false, "B");
    add_conv(g, 1, c, s, 1, 1, 0, 1, 1, true, false, "C");
    add_scan(g, 1, 2, 3, 4, c, s, true, true, true, -3.0f, "scan");
    add_window(g, CD_NN_WINDOW_REVERSE, 5, 0, ws, "reverse");
    return g;
}

static void mixer_cases(cd_gpu_context *ctx, int n) {
    static const win_case cases[] = {{0, 16, 16, 16, 14}, {0, 24, 8, 8, 7}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const win_case *t = &cases[i];
        cd_nn_graph *g = mixer_graph(t->c, 8, t->ws);
        finish(g, n, t->h, t->w);
        char what[96];
        snprintf(what, sizeof what, "mixer %dx%dx%dx%d window %d", n, t->c, t->h, t->w, t->ws);
        run_and_compare16(ctx, g, 1e-5, REL16, what);
        cd_nn_graph_free(g);
    }
}

static void all_cases(cd_gpu_context *ctx) {
    softplus_cases(ctx);
    dwconv1d_cases(ctx);
    scan_cases(ctx);
    window_cases(ctx);
    mixer_cases(ctx, 2);
}

/* Bindings limited to 16 KiB (8 KiB with float16): the mixer at 4 channels, 16x16, window 14 has
 * 12.25 KiB of windows per sample (4 windows of 4 x 14 x 14 floats) and 49 KiB for the batch of 4, so
 * window_partition runs one sample per dispatch, and the scan, dwconv1d and the 1x1 convs a few
 * windows per dispatch: the same results as unchunked. */
static void chunk_cases(cd_gpu_context *ctx) {
    /* float16: the same chunks with 2-byte elements at half the limits */
    cd_nn_vk_test_limits(g_fp16 ? 8 << 10 : 16 << 10, g_fp16 ? 32 << 10 : 64 << 10);
    cd_nn_graph *g = mixer_graph(4, 8, 14);
    finish(g, 4, 16, 16);
    run_and_compare16(ctx, g, 1e-5, REL16, "mixer in chunks of samples, 4x4x16x16 window 14");
    cd_nn_graph_free(g);
    cd_nn_vk_test_limits(0, 0);
}

/* Everything in float32, then in float16 storage, on one context of the memory mode (a context costs
 * about a second under ASan). */
static void mode_cases(cd_gpu_memory_mode mode) {
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(mode, 0);
    for (int half = 0; half < 2; half++) {
        g_fp16 = half;
        all_cases(ctx);
        chunk_cases(ctx);
    }
    g_fp16 = false;
    destroy_ctx(ctx);
}

static void test_shared(void **state) {
    (void)state;
    mode_cases(CD_GPU_MEMORY_SHARED);
}

static void test_staging(void **state) {
    (void)state;
    mode_cases(CD_GPU_MEMORY_STAGING);
}

int main(void) {
    if (gpu_test_init()) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared),
        cmocka_unit_test(test_staging),
    };
    return gpu_test_result(cmocka_run_group_tests(tests, NULL, NULL));
}
