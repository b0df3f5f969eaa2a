/* Helpers shared by the cmocka tests of the Vulkan inference executor (test_nn_vk*.c): building small
 * graphs by hand (new_graph, add_node, add_conv, add_linear, add_pool, finish), random data, float16
 * rounding, and run_and_compare16: the executor on a random input against cd_nn_ref_run, within a
 * tolerance relative to max|ref| (float16 storage: see below). Include after test_util.h and
 * gpu_test_util.h. */
#ifndef CD_NN_VK_TEST_UTIL_H
#define CD_NN_VK_TEST_UTIL_H

#include <math.h>
#include <stdbool.h>

#include "cirrdata/gpu.h"
#include "nn/graph.h"
#include "nn/vk_exec.h"

static inline float frand(float lo, float hi) {
    return lo + (hi - lo) * (float)((double)(rnd() >> 11) * (1.0 / 9007199254740992.0));
}

static inline float *rand_array(int64_t n, float lo, float hi) {
    float *a = malloc(sizeof(float) * (size_t)(n ? n : 1));
    assert_non_null(a);
    for (int64_t i = 0; i < n; i++) a[i] = frand(lo, hi);
    return a;
}

/* ---------------------------------------------------------------- graph building */

static inline cd_nn_graph *new_graph(int cap, int in_channels) {
    cd_nn_graph *g = calloc(1, sizeof *g);
    assert_non_null(g);
    g->nodes = calloc((size_t)cap, sizeof *g->nodes);
    assert_non_null(g->nodes);
    g->in_channels = in_channels;
    snprintf(g->source, sizeof g->source, "test_nn_vk");
    snprintf(g->arch, sizeof g->arch, "test");
    cd_nn_node *in = &g->nodes[0];
    in->op = CD_NN_INPUT;
    for (int k = 0; k < CD_NN_MAX_INPUTS; k++) in->in[k] = -1;
    in->out_ch = in_channels;
    snprintf(in->name, sizeof in->name, "x");
    g->count = 1;
    return g;
}

static inline cd_nn_node *add_node(cd_nn_graph *g, cd_nn_op op, int in0, int in1, const char *name) {
    cd_nn_node *nd = &g->nodes[g->count++];
    memset(nd, 0, sizeof *nd);
    nd->op = op;
    for (int k = 0; k < CD_NN_MAX_INPUTS; k++) nd->in[k] = -1;
    nd->in[0] = in0;
    nd->in[1] = in1;
    nd->n_in = in1 >= 0 ? 2 : 1;
    nd->kh = nd->kw = nd->sh = nd->sw = nd->dh = nd->dw = nd->groups = 1;
    snprintf(nd->name, sizeof nd->name, "%s", name);
    return nd;
}

static inline cd_nn_node *add_conv(cd_nn_graph *g, int in, int c, int o, int k, int s, int p, int d, int groups,
                                   bool bias, bool relu, const char *name) {
    cd_nn_node *nd = add_node(g, CD_NN_CONV2D, in, -1, name);
    nd->in_ch = c;
    nd->out_ch = o;
    nd->kh = nd->kw = k;
    nd->sh = nd->sw = s;
    nd->ph = nd->pw = p;
    nd->dh = nd->dw = d;
    nd->groups = groups;
    nd->relu = relu;
    /* PyTorch's default init range: +-1/sqrt(fan_in) */
    const float b = 1.0f / sqrtf((float)(c / groups * k * k));
    nd->weight = rand_array((int64_t)o * (c / groups) * k * k, -b, b);
    nd->bias = bias ? rand_array(o, -b, b) : NULL;
    return nd;
}

static inline cd_nn_node *add_linear(cd_nn_graph *g, int in, int i, int o, bool bias, const char *name) {
    cd_nn_node *nd = add_node(g, CD_NN_LINEAR, in, -1, name);
    nd->in_ch = i;
    nd->out_ch = o;
    const float b = 1.0f / sqrtf((float)i);
    nd->weight = rand_array((int64_t)o * i, -b, b);
    nd->bias = bias ? rand_array(o, -b, b) : NULL;
    return nd;
}

static inline cd_nn_node *add_pool(cd_nn_graph *g, cd_nn_op op, int in, int kh, int kw, int s, int p, int d,
                                   bool ceil_mode, bool cip, const char *name) {
    cd_nn_node *nd = add_node(g, op, in, -1, name);
    nd->kh = kh;
    nd->kw = kw;
    nd->sh = nd->sw = s;
    nd->ph = nd->pw = p;
    nd->dh = nd->dw = d;
    nd->ceil_mode = ceil_mode;
    nd->count_include_pad = cip;
    return nd;
}

static inline void finish(cd_nn_graph *g, int64_t n, int64_t h, int64_t w) {
    g->output = g->count - 1;
    g->classes = (int)g->nodes[g->output].out_ch;
    cd_error err;
    cd_status st = cd_nn_graph_shape(g, n, h, w, 0, &err);
    if (st != CD_OK) fprintf(stderr, "cd_nn_graph_shape: %s\n", err.message);
    assert_int_equal(st, CD_OK);
}

static inline int64_t numel(const cd_nn_shape *s) { return s->n * s->c * s->h * s->w; }

/* ---------------------------------------------------------------- comparison */

static inline double max_abs(const float *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
    return m;
}

/* ---------------------------------------------------------------- float16 storage
 *
 * With g_fp16 the executor is asked for float16 storage (lavapipe offers storageBuffer16BitAccess, so
 * it is used: asserted). The weights and the input are rounded to binary16 first, for the reference
 * too, so that one op's result differs from the reference only by the rounding of its output,
 * <= 2^-11 |ref| per element (round to nearest even; a subnormal's absolute error, <= 2^-25, is far
 * below the float32 term), on top of the float32 tolerance rel * max|ref| (the same sums in another
 * order). Graphs of several ops also round their intermediate tensors: they add rel16 * max|ref|. */
static bool g_fp16;          /* float16 storage asked for and expected */
static bool g_ref_gemm;      /* the reference takes the grouped GEMM for depthwise convolutions */
static int g_dw_expect = -1; /* >= 0: nodes the executor must have run on the depthwise kernel */
static bool g_ask16;         /* float16 storage asked for, float32 expected (the fallback) */
static float g_in_range = 2; /* the random input is uniform in [-g_in_range, g_in_range] */

static inline float round16(float v) { return cd_half_to_float(cd_float_to_half(v)); }

static inline void round16_array(float *a, int64_t n) {
    for (int64_t i = 0; i < n; i++) a[i] = round16(a[i]);
}

/* Rounds every conv/linear weight of g to binary16 (biases stay float32, as the executor keeps them). */
static inline void round16_weights(cd_nn_graph *g) {
    for (int i = 0; i < g->count; i++) {
        const cd_nn_node *nd = &g->nodes[i];
        if (nd->op == CD_NN_CONV2D)
            round16_array(nd->weight, (int64_t)nd->out_ch * (nd->in_ch / nd->groups) * nd->kh * nd->kw);
        if (nd->op == CD_NN_LINEAR) round16_array(nd->weight, (int64_t)nd->out_ch * nd->in_ch);
    }
}

/* max over i of |got_i - ref_i| - 2^-11 |ref_i| with g_fp16 (the excess over the output rounding),
 * else max|got - ref|. */
static inline double excess(const float *got, const float *ref, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(got[i]) != isnan(ref[i])) return INFINITY;
        const double d = fabs((double)got[i] - (double)ref[i]) - (g_fp16 ? ldexp(fabs((double)ref[i]), -11) : 0);
        m = fmax(m, d);
    }
    return m;
}

static inline cd_nn_vk *make_vk(cd_gpu_context *ctx, cd_nn_graph *g) {
    cd_error err;
    cd_nn_vk *vk = NULL;
    bool used = !g_fp16;
    if (g_fp16) round16_weights(g);
    cd_status st = cd_nn_vk_create(ctx, g, g_fp16 || g_ask16, &used, &vk, &err);
    if (st != CD_OK) fprintf(stderr, "cd_nn_vk_create: %s\n", err.message);
    assert_int_equal(st, CD_OK);
    assert_true(used == g_fp16);
    return vk;
}

/* Runs g (shaped) on Vulkan with a random input, and the node-by-node reference; compares the output
 * within rel * max|ref| (fp16: see above). */
static inline void run_and_compare16(cd_gpu_context *ctx, cd_nn_graph *g, double rel, double rel16, const char *what) {
    cd_error err;
    cd_nn_vk *vk = make_vk(ctx, g);
    cd_status st;
    const int64_t nin = numel(&g->input_shape), nout = numel(&g->nodes[g->output].shape);
    float *x = rand_array(nin, -g_in_range, g_in_range);
    if (g_fp16) round16_array(x, nin);
    float *arena = calloc((size_t)g->arena_floats, sizeof(float));
    float *got = malloc(sizeof(float) * (size_t)nout);
    assert_non_null(arena);
    assert_non_null(got);
    memcpy(arena + g->input_offset, x, sizeof(float) * (size_t)nin);
    if (g_ref_gemm) setenv("CIRRDATA_NN_NO_DWCONV", "1", 1);
    st = cd_nn_ref_run(g, arena, 1, &err);
    unsetenv("CIRRDATA_NN_NO_DWCONV");
    assert_int_equal(st, CD_OK);
    const float *ref = arena + g->nodes[g->output].offset;
    fallback_mark();
    st = cd_nn_vk_run(vk, g, x, got, &err);
    if (st != CD_OK) fprintf(stderr, "cd_nn_vk_run (%s): %s\n", what, err.message);
    assert_int_equal(st, CD_OK);
    check_fallback(0, true); /* the device ran the pass */
    if (g_dw_expect >= 0) assert_int_equal(cd_nn_vk_depthwise_nodes(vk), g_dw_expect);
    if (g_fp16) rel += rel16;
    const double m = max_abs(ref, nout), d = excess(got, ref, nout);
    if (!(d <= rel * fmax(m, 1e-30)) || getenv("CIRRDATA_TEST_VERBOSE"))
        fprintf(stderr, "%s%s: max|diff|%s %.3g, max|ref| %.3g, allowed %.3g (%s memory)\n", what,
                g_fp16 ? " (fp16)" : "", g_fp16 ? " beyond 2^-11|ref|" : "", d, m, rel * m,
                cd_gpu_shared_memory(ctx) ? "shared" : "staging");
    assert_true(d <= rel * fmax(m, 1e-30));
    assert_true(m > 0);
    check_validation(ctx);
    cd_nn_vk_destroy(vk);
    free(x);
    free(arena);
    free(got);
}

static inline void run_and_compare(cd_gpu_context *ctx, cd_nn_graph *g, double rel, const char *what) {
    run_and_compare16(ctx, g, rel, 0, what);
}

#endif
