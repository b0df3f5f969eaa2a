/* The inference graph (nn/graph.c) and the C reference ops (nn/ref_ops.c): PyTorch's output-size
 * and pooling rules on tiny tensors against hand-computed values, batch-norm folding algebra, ReLU
 * fusion, the arena plan (no two live tensors overlap, checked for every pair), convolution against
 * a direct double-precision sum (groups, dilation, padding, edge tiles), the depthwise kernel against
 * the grouped GEMM and an exact sum (test_dwconv), and malformed graphs, each
 * refused with a message naming the node. Model files are built in memory (safetensors + the
 * "cirrdata.graph" metadata of schemas/model-graph.md). */
#include <jansson.h>
#include <math.h>

#include "nn/graph.h"
#include "nn/safetensors.h"
#include "test_util.h"

/* ---- an in-memory safetensors builder ---- */

typedef struct stb {
    json_t *hdr;
    float *data;
    size_t count;
} stb;

static void stb_init(stb *b) {
    b->hdr = json_object();
    b->data = NULL;
    b->count = 0;
}

static void stb_tensor(stb *b, const char *name, int rank, const int64_t *shape, const float *vals) {
    size_t n = 1;
    json_t *sh = json_array();
    for (int i = 0; i < rank; i++) {
        n *= (size_t)shape[i];
        json_array_append_new(sh, json_integer(shape[i]));
    }
    b->data = realloc(b->data, (b->count + n) * sizeof(float));
    assert_non_null(b->data);
    for (size_t i = 0; i < n; i++)
        b->data[b->count + i] = vals ? vals[i] : (float)sin(0.7 * (double)(b->count + i)) * 0.5f;
    json_object_set_new(b->hdr, name,
                        json_pack("{s:s, s:o, s:[I, I]}", "dtype", "F32", "shape", sh, "data_offsets",
                                  (json_int_t)(b->count * 4), (json_int_t)((b->count + n) * 4)));
    b->count += n;
}

/* JSON written with ' for " (readability in C). */
static char *dq(const char *s) {
    char *o = strdup(s);
    for (char *p = o; *p; p++)
        if (*p == '\'') *p = '"';
    return o;
}

/* Finishes the file and loads the graph from it; returns the status, the graph in *g on success. */
static cd_status stb_load(stb *b, const char *graph, int classes, int in_ch, cd_nn_graph **g, cd_error *err) {
    char *gj = dq(graph), cls[16], ich[16];
    snprintf(cls, sizeof cls, "%d", classes);
    snprintf(ich, sizeof ich, "%d", in_ch);
    json_object_set_new(b->hdr, "__metadata__",
                        json_pack("{s:s, s:s, s:s, s:s, s:s}", "cirrdata.format", "1", "cirrdata.arch", "test",
                                  "cirrdata.classes", cls, "cirrdata.in_channels", ich, "cirrdata.graph", gj));
    char *h = json_dumps(b->hdr, JSON_COMPACT);
    size_t hl = strlen(h), total = 8 + hl + b->count * 4;
    uint8_t *buf = malloc(total);
    uint64_t n = hl;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(n >> (8 * i));
    memcpy(buf + 8, h, hl);
    if (b->count) memcpy(buf + 8 + hl, b->data, b->count * 4);
    cd_st_file *f = NULL;
    cd_status st = cd_st_open_memory(buf, total, "test.safetensors", &f, err);
    if (st == CD_OK) st = cd_nn_graph_load(f, g, err);
    cd_st_close(f);
    free(buf);
    free(h);
    free(gj);
    json_decref(b->hdr);
    free(b->data);
    return st;
}

static int find(const cd_nn_graph *g, const char *name) {
    for (int i = 0; i < g->count; i++)
        if (strcmp(g->nodes[i].name, name) == 0) return i;
    return -1;
}

/* Loads a graph that must be refused, and checks the message names what it should. */
static void expect_bad(stb *b, const char *graph, int classes, const char *needle1, const char *needle2) {
    cd_nn_graph *g = NULL;
    cd_error err;
    cd_error_clear(&err);
    cd_status st = stb_load(b, graph, classes, 1, &g, &err);
    if (st == CD_OK) fail_msg("graph accepted: %s", graph);
    assert_null(g);
    if (!strstr(err.message, needle1) || (needle2 && !strstr(err.message, needle2)))
        fail_msg("message '%s' lacks '%s' / '%s'", err.message, needle1, needle2 ? needle2 : "");
    assert_non_null(strstr(err.message, "test.safetensors"));
}

/* ---- pools and output sizes ---- */

/* One pool node over a 1-channel input; returns the shaped graph. */
static cd_nn_graph *pool_graph(const char *node_json, int64_t h, int64_t w) {
    char graph[1024];
    snprintf(graph, sizeof graph, "{'version': 1, 'input': {'name': 'x', 'channels': 1}, 'output': 'p', 'nodes': [%s]}",
             node_json);
    stb b;
    stb_init(&b);
    cd_nn_graph *g = NULL;
    cd_error err;
    /* classes = 1 only matters to the API, not to the graph */
    assert_int_equal(stb_load(&b, graph, 1, 1, &g, &err), CD_OK);
    cd_status st = cd_nn_graph_shape(g, 1, h, w, 0, &err);
    if (st != CD_OK) fail_msg("%s", err.message);
    return g;
}

static void run_pool(const cd_nn_graph *g, const float *in, float *out) {
    const cd_nn_node *nd = &g->nodes[1];
    if (nd->op == CD_NN_MAXPOOL2D)
        cd_nn_ref_maxpool2d(nd, &g->input_shape, in, out);
    else if (nd->op == CD_NN_AVGPOOL2D)
        cd_nn_ref_avgpool2d(nd, &g->input_shape, in, out);
    else
        cd_nn_ref_adaptive_avgpool2d(nd, &g->input_shape, in, out);
}

/* ---- activations ---- */

/* Inputs and the outputs of PyTorch 1.13 (torch.nn.functional, float32 CPU) for them. */
static const float act_x[19] = {-100.0f,        -20.0f, -6.0f, -4.0f, -3.0f, -2.5f, -1.0f, -0.5f, -0.00100000005f, 0.0f,
                                0.00100000005f, 0.5f,   1.0f,  2.5f,  3.0f,  4.0f,  6.0f,  20.0f, 100.0f};
static const struct {
    const char *op;
    float y[19];
} act_torch[] = {
    {"gelu", /* F.gelu(x) */
     {0.0f, 0.0f, 0.0f, -0.000126719475f, -0.00404986739f, -0.0155241787f, -0.158655286f, -0.154268786f,
      -0.000499601127f, 0.0f, 0.000500398921f, 0.345731199f, 0.841344714f, 2.48447585f, 2.99595022f, 3.99987316f, 6.0f,
      20.0f, 100.0f}},
    {"gelu_tanh", /* F.gelu(x, approximate='tanh') */
     {-0.0f, -0.0f, -0.0f, -7.02142715e-05f, -0.00363743305f, -0.0150842965f, -0.158807993f, -0.154285997f,
      -0.000499601068f, 0.0f, 0.000500398979f, 0.345714003f, 0.841192007f, 2.48491573f, 2.99636269f, 3.9999299f, 6.0f,
      20.0f, 100.0f}},
    {"silu", /* F.silu(x) */
     {-0.0f, -4.12230747e-08f, -0.0148357386f, -0.0719448403f, -0.142277613f, -0.189645454f, -0.268941432f,
      -0.188770339f, -0.000499750022f, 0.0f, 0.000500250026f, 0.311229676f, 0.731058598f, 2.31035447f, 2.85772252f,
      3.92805505f, 5.98516464f, 20.0f, 100.0f}},
    {"hardswish", /* F.hardswish(x) */
     {-0.0f, -0.0f, -0.0f, -0.0f, -0.0f, -0.208333328f, -0.333333343f, -0.208333328f, -0.000499833375f, 0.0f,
      0.000500166672f, 0.291666657f, 0.666666687f, 2.29166675f, 3.0f, 4.0f, 6.0f, 20.0f, 100.0f}},
    {"hardsigmoid", /* F.hardsigmoid(x) */
     {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0833333358f, 0.333333343f, 0.416666657f, 0.499833345f, 0.5f, 0.500166655f,
      0.583333313f, 0.666666687f, 0.916666687f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f}},
};

/* Each activation as a graph node over a 1x19 input, loaded, shaped and run by cd_nn_ref_run, against
 * PyTorch's values. Tolerance: libm's erff/tanhf/expf and PyTorch's (vectorised) ones are each within
 * a few ulp, so 1e-6 |y| (8 ulp); plus an absolute 1.2e-7 max(1, |x|), because GELU's 1 + erf (and
 * 1 + tanh) cancel for negative x: the ulp of 1 there (6e-8), times |x| / 2, is all the accuracy either
 * side has. The piecewise-linear hard ops come out exact but share the bound. Then a 1x300x300 input
 * (past the threading threshold) run with 4 threads and with 1 must agree bit for bit, and a NaN stays
 * NaN. */
static void test_activations(void **state) {
    (void)state;
    for (size_t k = 0; k < sizeof act_torch / sizeof act_torch[0]; k++) {
        char node[128];
        snprintf(node, sizeof node, "{'name': 'p', 'op': '%s', 'inputs': ['x']}", act_torch[k].op);
        cd_nn_graph *g = pool_graph(node, 1, 19);
        const cd_nn_node *nd = &g->nodes[g->output];
        assert_string_equal(cd_nn_op_name(nd->op), act_torch[k].op);
        assert_true(nd->shape.n == 1 && nd->shape.c == 1 && nd->shape.h == 1 && nd->shape.w == 19);
        float *arena = calloc((size_t)g->arena_floats, sizeof(float));
        assert_non_null(arena);
        memcpy(arena + g->input_offset, act_x, sizeof act_x);
        cd_error err;
        assert_int_equal(cd_nn_ref_run(g, arena, 1, &err), CD_OK);
        const float *y = arena + nd->offset;
        for (int i = 0; i < 19; i++) {
            const double want = act_torch[k].y[i], tol = 1e-6 * fabs(want) + 1.2e-7 * fmax(1.0, fabs(act_x[i]));
            if (!(fabs((double)y[i] - want) <= tol))
                fail_msg("%s(%.9g) = %.9g, torch %.9g", act_torch[k].op, act_x[i], y[i], want);
        }
        cd_nn_graph_free(g);

        g = pool_graph(node, 300, 300);
        nd = &g->nodes[g->output];
        const int64_t n = 300 * 300;
        float *a1 = calloc((size_t)g->arena_floats, sizeof(float)),
              *a4 = calloc((size_t)g->arena_floats, sizeof(float));
        assert_non_null(a1);
        assert_non_null(a4);
        for (int64_t i = 0; i < n; i++) a1[g->input_offset + i] = (float)sin(0.37 * (double)i) * 8.0f;
        a1[g->input_offset + 12345] = NAN;
        memcpy(a4 + g->input_offset, a1 + g->input_offset, (size_t)n * sizeof(float));
        assert_int_equal(cd_nn_ref_run(g, a1, 1, &err), CD_OK);
        assert_int_equal(cd_nn_ref_run(g, a4, 4, &err), CD_OK);
        assert_memory_equal(a1 + nd->offset, a4 + nd->offset, (size_t)n * sizeof(float));
        assert_true(isnan(a1[nd->offset + 12345]));
        assert_false(isnan(a1[nd->offset + 12346]));
        free(a1);
        free(a4);
        free(arena);
        cd_nn_graph_free(g);
    }
}

static void test_maxpool_ceil(void **state) {
    (void)state;
    /* k2 s2 ceil on 5x5: (5 - 2 + 1) / 2 + 1 = 3; the last window holds only column/row 4. */
    cd_nn_graph *g = pool_graph("{'name': 'p', 'op': 'max_pool2d', 'inputs': ['x'], 'kernel': [2, 2], 'stride': [2, 2],"
                                " 'padding': [0, 0], 'dilation': [1, 1], 'ceil_mode': true}",
                                5, 5);
    assert_int_equal(g->nodes[1].shape.h, 3);
    assert_int_equal(g->nodes[1].shape.w, 3);
    float in[25], out[9];
    for (int i = 0; i < 25; i++) in[i] = (float)((i * 7) % 25); /* a permutation of 0..24 */
    run_pool(g, in, out);
    /* out[0][0] = max(in[0], in[1], in[5], in[6]) = max(0, 7, 10, 17) = 17 */
    assert_true(out[0] == 17.0f);
    /* out[0][2] = max(in[4], in[9]) = max(3, 13) */
    assert_true(out[2] == 13.0f);
    /* out[2][2] = in[24] = 168 % 25 = 18 */
    assert_true(out[8] == 18.0f);
    cd_nn_graph_free(g);

    /* k2 s2 p1 ceil on 5x5: ceil gives 4, but the 4th window would start at 6 >= 5 + 1 (in the right
     * padding): dropped, 3. */
    g = pool_graph("{'name': 'p', 'op': 'max_pool2d', 'inputs': ['x'], 'kernel': [2, 2], 'stride': [2, 2],"
                   " 'padding': [1, 1], 'dilation': [1, 1], 'ceil_mode': true}",
                   5, 5);
    assert_int_equal(g->nodes[1].shape.h, 3);
    cd_nn_graph_free(g);
    /* Padding is -inf: an all-negative input keeps its values at the border. */
    g = pool_graph("{'name': 'p', 'op': 'max_pool2d', 'inputs': ['x'], 'kernel': [3, 3], 'stride': [2, 2],"
                   " 'padding': [1, 1], 'dilation': [1, 1], 'ceil_mode': false}",
                   4, 4);
    assert_int_equal(g->nodes[1].shape.h, 2);
    for (int i = 0; i < 16; i++) in[i] = -100.0f - (float)i;
    run_pool(g, in, out);
    assert_true(out[0] == -100.0f); /* window rows -1..1, cols -1..1: max of in[0,1,4,5] */
    assert_true(out[3] == -105.0f); /* rows 1..3, cols 1..3: max is in[5] */
    cd_nn_graph_free(g);
    /* Dilation 2, k2, p1 on 3 wide: (3 + 2 - 2 - 1) / 1 + 1 = 3 outputs per axis. */
    g = pool_graph("{'name': 'p', 'op': 'max_pool2d', 'inputs': ['x'], 'kernel': [2, 2], 'stride': [1, 1],"
                   " 'padding': [1, 1], 'dilation': [2, 2], 'ceil_mode': false}",
                   3, 3);
    assert_int_equal(g->nodes[1].shape.w, 3);
    for (int i = 0; i < 9; i++) in[i] = (float)i;
    run_pool(g, in, out);
    /* out[1][1]: rows {0, 2}, cols {0, 2}: max(in[0], in[2], in[6], in[8]) = 8 */
    assert_true(out[4] == 8.0f);
    /* out[0][0]: rows {-1, 1}, cols {-1, 1}: in[4] */
    assert_true(out[0] == 4.0f);
    cd_nn_graph_free(g);
}

static void test_avgpool_divisor(void **state) {
    (void)state;
    float in[36], out[16];
    for (int i = 0; i < 36; i++) in[i] = 1.0f;
    /* k3 s2 p1 on 4x4, count_include_pad: the corner window covers 4 cells of 9. */
    cd_nn_graph *g = pool_graph("{'name': 'p', 'op': 'avg_pool2d', 'inputs': ['x'], 'kernel': [3, 3], 'stride': [2, 2],"
                                " 'padding': [1, 1], 'ceil_mode': false, 'count_include_pad': true}",
                                4, 4);
    assert_int_equal(g->nodes[1].shape.h, 2);
    run_pool(g, in, out);
    assert_float_equal(out[0], 4.0 / 9.0, 1e-7);
    assert_float_equal(out[3], 1.0, 1e-7);
    cd_nn_graph_free(g);
    g = pool_graph("{'name': 'p', 'op': 'avg_pool2d', 'inputs': ['x'], 'kernel': [3, 3], 'stride': [2, 2],"
                   " 'padding': [1, 1], 'ceil_mode': false, 'count_include_pad': false}",
                   4, 4);
    run_pool(g, in, out);
    assert_float_equal(out[0], 1.0, 1e-7);
    cd_nn_graph_free(g);
    /* Ceil mode on 6x6: 4 outputs; the last window starts at 5 and hangs past the padded input
     * (ends at min(5 + 3, 6 + 1) = 7): the divisor with padding is 2 x 2 = 4 and the one input cell
     * sums to 1; without padding the divisor is 1. */
    g = pool_graph("{'name': 'p', 'op': 'avg_pool2d', 'inputs': ['x'], 'kernel': [3, 3], 'stride': [2, 2],"
                   " 'padding': [1, 1], 'ceil_mode': true, 'count_include_pad': true}",
                   6, 6);
    assert_int_equal(g->nodes[1].shape.h, 4);
    run_pool(g, in, out);
    assert_float_equal(out[15], 0.25, 1e-7);
    assert_float_equal(out[0], 4.0 / 9.0, 1e-7);
    cd_nn_graph_free(g);
    g = pool_graph("{'name': 'p', 'op': 'avg_pool2d', 'inputs': ['x'], 'kernel': [3, 3], 'stride': [2, 2],"
                   " 'padding': [1, 1], 'ceil_mode': true, 'count_include_pad': false}",
                   6, 6);
    run_pool(g, in, out);
    assert_float_equal(out[15], 1.0, 1e-7);
    cd_nn_graph_free(g);
}

static void test_adaptive_bins(void **state) {
    (void)state;
    /* 1x5 -> 1x3: bins [0,2), [1,4), [3,5) (floor(i*5/3) .. ceil((i+1)*5/3)), overlapping. */
    cd_nn_graph *g =
        pool_graph("{'name': 'p', 'op': 'adaptive_avg_pool2d', 'inputs': ['x'], 'output_size': [1, 3]}", 1, 5);
    float in[5] = {0, 1, 2, 3, 4}, out[3];
    run_pool(g, in, out);
    assert_float_equal(out[0], 0.5, 1e-7);
    assert_float_equal(out[1], 2.0, 1e-7);
    assert_float_equal(out[2], 3.5, 1e-7);
    cd_nn_graph_free(g);
    /* Output larger than the input (2 -> 3): bins [0,1), [0,2), [1,2). */
    g = pool_graph("{'name': 'p', 'op': 'adaptive_avg_pool2d', 'inputs': ['x'], 'output_size': [1, 3]}", 1, 2);
    float in2[2] = {2, 6};
    run_pool(g, in2, out);
    assert_float_equal(out[0], 2.0, 1e-7);
    assert_float_equal(out[1], 4.0, 1e-7);
    assert_float_equal(out[2], 6.0, 1e-7);
    cd_nn_graph_free(g);
}

/* ---- convolution against a direct sum ---- */

static void check_conv(int C, int O, int k, int s, int p, int d, int groups, int64_t h, int64_t w, int n) {
    char graph[1024];
    snprintf(graph, sizeof graph,
             "{'version': 1, 'input': {'name': 'x', 'channels': %d}, 'output': 'c', 'nodes': ["
             "{'name': 'c', 'op': 'conv2d', 'inputs': ['x'], 'weight': 'w', 'bias': 'b', 'stride': [%d, %d],"
             " 'padding': [%d, %d], 'dilation': [%d, %d], 'groups': %d}]}",
             C, s, s, p, p, d, d, groups);
    stb b;
    stb_init(&b);
    int64_t ws[4] = {O, C / groups, k, k}, bs[1] = {O};
    stb_tensor(&b, "w", 4, ws, NULL);
    stb_tensor(&b, "b", 1, bs, NULL);
    cd_nn_graph *g;
    cd_error err;
    assert_int_equal(stb_load(&b, graph, O, C, &g, &err), CD_OK);
    assert_int_equal(cd_nn_graph_shape(g, n, h, w, 0, &err), CD_OK);
    const cd_nn_node *nd = &g->nodes[1];
    int64_t oh = (h + 2 * p - d * (k - 1) - 1) / s + 1, ow = (w + 2 * p - d * (k - 1) - 1) / s + 1;
    assert_int_equal(nd->shape.h, oh);
    assert_int_equal(nd->shape.w, ow);
    size_t insz = (size_t)(n * C * h * w), outsz = (size_t)(n * O * oh * ow);
    float *in = malloc(insz * sizeof(float)), *out = malloc(outsz * sizeof(float));
    for (size_t i = 0; i < insz; i++) in[i] = (float)cos(0.37 * (double)i);
    for (int threads = 1; threads <= 3; threads += 2) {
        cd_nn_ref_conv2d(nd, &g->input_shape, in, out, threads);
        double worst = 0;
        int cg = C / groups, og = O / groups;
        for (int bi = 0; bi < n; bi++)
            for (int o = 0; o < O; o++)
                for (int64_t y = 0; y < oh; y++)
                    for (int64_t x = 0; x < ow; x++) {
                        int gi = o / og;
                        double acc = nd->bias[o];
                        for (int c = 0; c < cg; c++)
                            for (int ky = 0; ky < k; ky++)
                                for (int kx = 0; kx < k; kx++) {
                                    int64_t iy = y * s - p + ky * d, ix = x * s - p + kx * d;
                                    if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                    acc += (double)nd->weight[((o * cg + c) * k + ky) * k + kx] *
                                           in[((bi * C + gi * cg + c) * h + iy) * w + ix];
                                }
                        double e = fabs(acc - out[((bi * O + o) * oh + y) * ow + x]);
                        if (e > worst) worst = e;
                    }
        if (worst > 1e-4)
            fail_msg("conv C%d O%d k%d s%d p%d d%d g%d %lldx%lld: error %g", C, O, k, s, p, d, groups, (long long)h,
                     (long long)w, worst);
    }
    free(in);
    free(out);
    cd_nn_graph_free(g);
}

static void test_conv_direct(void **state) {
    (void)state;
    check_conv(3, 7, 3, 1, 1, 1, 1, 9, 11, 2);   /* edge tiles in M (7 = 6 + 1) and N (99 pixels) */
    check_conv(4, 6, 3, 2, 2, 2, 2, 13, 10, 1);  /* groups, dilation, stride */
    check_conv(5, 13, 1, 1, 0, 1, 1, 5, 7, 3);   /* pointwise path */
    check_conv(2, 4, 7, 2, 3, 1, 1, 20, 33, 1);  /* the ResNet stem shape */
    check_conv(600, 8, 1, 2, 0, 1, 1, 6, 6, 1);  /* K = 600 > one K block: accumulation across blocks */
    check_conv(70, 9, 3, 1, 1, 1, 1, 12, 40, 1); /* K = 630: 3 blocks, rows straddling strips */
}

/* ---- batch-norm folding and fusion ---- */

/* ---- depthwise convolution: its own kernel against the grouped GEMM and an exact sum ----
 *
 * Tolerance: both float32 paths add the same K = kh*kw products and the bias (K + 1 terms) in the
 * same order, but the GEMM may fuse multiply-adds (AVX2) and adds zero products for padding, so
 * they are not bitwise equal. Each is within the classic bound of recursive summation,
 * |fl - exact| <= gamma_{K+1} * A with gamma_n = n*u / (1 - n*u), u = 2^-24 and
 * A = |bias| + sum |w*x| (computed in double; ReLU does not widen a difference), hence the two
 * within 2 * gamma_{K+1} * A of each other: checked per element. */

static void check_dwconv(int C, int m, int kh, int kw, int s, int ph, int pw, int d, bool bias, bool relu, int64_t h,
                         int64_t w, int n) {
    cd_nn_node nd;
    memset(&nd, 0, sizeof nd);
    nd.op = CD_NN_CONV2D;
    snprintf(nd.name, sizeof nd.name, "dw");
    nd.kh = kh;
    nd.kw = kw;
    nd.sh = nd.sw = s;
    nd.ph = ph;
    nd.pw = pw;
    nd.dh = nd.dw = d;
    nd.groups = nd.in_ch = C;
    nd.out_ch = C * m;
    nd.relu = relu;
    const int O = C * m, K = kh * kw;
    nd.weight = malloc((size_t)(O * K) * sizeof(float));
    for (int i = 0; i < O * K; i++) nd.weight[i] = (float)(0.3 * sin(1.3 * i + 0.2));
    if (bias) {
        nd.bias = malloc((size_t)O * sizeof(float));
        for (int i = 0; i < O; i++) nd.bias[i] = (float)(0.1 * cos(2.1 * i));
    }
    assert_true(cd_nn_ref_conv2d_is_depthwise(&nd));
    const cd_nn_shape is = {n, C, h, w};
    const int64_t oh = (h + 2 * ph - d * (kh - 1) - 1) / s + 1, ow = (w + 2 * pw - d * (kw - 1) - 1) / s + 1;
    const size_t insz = (size_t)(n * C * h * w), outsz = (size_t)(n * O * oh * ow);
    float *in = malloc(insz * sizeof(float)), *dw = malloc(outsz * sizeof(float));
    float *gemm = malloc(outsz * sizeof(float)), *def = malloc(outsz * sizeof(float));
    for (size_t i = 0; i < insz; i++) in[i] = (float)cos(0.37 * (double)i);
    setenv("CIRRDATA_NN_NO_DWCONV", "1", 1);
    cd_nn_ref_conv2d(&nd, &is, in, gemm, 2); /* the grouped GEMM */
    unsetenv("CIRRDATA_NN_NO_DWCONV");
    const double u = ldexp(1.0, -24), gamma = (K + 1) * u / (1 - (K + 1) * u);
    for (int threads = 1; threads <= 3; threads += 2) {
        memset(dw, 0xff, outsz * sizeof(float)); /* NaN: every element must be written */
        cd_nn_ref_dwconv2d(&nd, &is, in, dw, threads);
        cd_nn_ref_conv2d(&nd, &is, in, def, threads); /* takes the depthwise kernel */
        assert_memory_equal(dw, def, outsz * sizeof(float));
        for (int bi = 0; bi < n; bi++)
            for (int o = 0; o < O; o++)
                for (int64_t y = 0; y < oh; y++)
                    for (int64_t x = 0; x < ow; x++) {
                        double acc = bias ? nd.bias[o] : 0, A = fabs(acc);
                        for (int ky = 0; ky < kh; ky++)
                            for (int kx = 0; kx < kw; kx++) {
                                int64_t iy = y * s - ph + ky * d, ix = x * s - pw + kx * d;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                const double t =
                                    (double)nd.weight[o * K + ky * kw + kx] * in[((bi * C + o / m) * h + iy) * w + ix];
                                acc += t;
                                A += fabs(t);
                            }
                        if (relu && acc < 0) acc = 0;
                        const size_t i = (size_t)(((bi * O + o) * oh + y) * ow + x);
                        const double e = fabs(acc - dw[i]), eg = fabs((double)gemm[i] - dw[i]);
                        if (!(e <= gamma * A + 1e-30) || !(eg <= 2 * gamma * A + 1e-30))
                            fail_msg("dwconv C%d m%d %dx%d s%d p%d,%d d%d %lldx%lld n%d at %zu: %g (exact %g, gemm "
                                     "%g, bound %g)",
                                     C, m, kh, kw, s, ph, pw, d, (long long)h, (long long)w, n, i, (double)dw[i], acc,
                                     (double)gemm[i], gamma * A);
                    }
    }
    free(in);
    free(dw);
    free(gemm);
    free(def);
    free(nd.weight);
    free(nd.bias);
    free(nd.packed); /* the GEMM's packed weights (cd_nn_graph_free's job in a graph) */
}

static void test_dwconv(void **state) {
    (void)state;
    check_dwconv(5, 1, 3, 3, 1, 1, 1, 1, true, true, 1, 9, 2);    /* 1-pixel-high image */
    check_dwconv(4, 1, 3, 3, 1, 1, 1, 1, false, false, 11, 1, 1); /* 1-pixel-wide image */
    check_dwconv(7, 1, 3, 3, 2, 1, 1, 1, true, false, 13, 10, 3); /* stride 2 with padding */
    check_dwconv(6, 1, 3, 3, 1, 2, 2, 2, false, true, 11, 40, 1); /* dilation 2 */
    check_dwconv(9, 1, 5, 5, 1, 2, 2, 1, true, false, 17, 35, 2); /* 5x5 */
    check_dwconv(10, 1, 7, 7, 1, 3, 3, 1, true, true, 20, 41, 2); /* ConvNeXt's 7x7: vector rows + tail, threads */
    check_dwconv(4, 3, 3, 3, 2, 0, 0, 1, true, false, 9, 9, 2);   /* channel multiplier 3, no padding */
    check_dwconv(3, 2, 3, 5, 1, 1, 2, 1, true, true, 6, 37, 1);   /* 3x5 kernel, multiplier 2 */
    check_dwconv(3, 1, 3, 3, 2, 3, 3, 1, true, false, 5, 4, 2);   /* padding past the window: bias alone */
    check_dwconv(96, 1, 3, 3, 2, 1, 1, 1, true, true, 15, 15, 1); /* MobileNet's stride-2 block, threads */
    check_dwconv(5, 1, 5, 5, 2, 2, 2, 1, true, true, 9, 75, 2);   /* stride 2, 38 columns: the phase-split copy */
    check_dwconv(3, 2, 3, 3, 3, 2, 2, 2, false, false, 7, 50, 1); /* stride 3, dilation 2, multiplier 2 */
    /* not depthwise: groups 2 of 3 channels each, and a single-channel input */
    cd_nn_node nd = {.op = CD_NN_CONV2D, .groups = 2, .in_ch = 6, .out_ch = 6};
    assert_false(cd_nn_ref_conv2d_is_depthwise(&nd));
    nd = (cd_nn_node){.op = CD_NN_CONV2D, .groups = 1, .in_ch = 1, .out_ch = 4};
    assert_false(cd_nn_ref_conv2d_is_depthwise(&nd));
    nd = (cd_nn_node){.op = CD_NN_CONV2D, .groups = 4, .in_ch = 4, .out_ch = 6};
    assert_false(cd_nn_ref_conv2d_is_depthwise(&nd));
}

static void test_bn_fold(void **state) {
    (void)state;
    stb b;
    stb_init(&b);
    int64_t ws[4] = {2, 1, 1, 1}, cs[1] = {2};
    float w[2] = {2.0f, -3.0f}, gamma[2] = {0.5f, 2.0f}, beta[2] = {1.0f, -1.0f}, mean[2] = {0.25f, -2.0f},
          var[2] = {4.0f, 0.0f};
    stb_tensor(&b, "w", 4, ws, w);
    stb_tensor(&b, "g", 1, cs, gamma);
    stb_tensor(&b, "be", 1, cs, beta);
    stb_tensor(&b, "m", 1, cs, mean);
    stb_tensor(&b, "v", 1, cs, var);
    cd_nn_graph *g;
    cd_error err;
    cd_status st =
        stb_load(&b,
                 "{'version': 1, 'input': {'name': 'x', 'channels': 1}, 'output': 'r', 'nodes': ["
                 "{'name': 'c', 'op': 'conv2d', 'inputs': ['x'], 'weight': 'w', 'bias': null, 'stride': [1, 1],"
                 " 'padding': [0, 0], 'dilation': [1, 1], 'groups': 1},"
                 "{'name': 'bn', 'op': 'batch_norm', 'inputs': ['c'], 'weight': 'g', 'bias': 'be',"
                 " 'running_mean': 'm', 'running_var': 'v', 'eps': 0.25},"
                 "{'name': 'd', 'op': 'dropout', 'inputs': ['bn']},"
                 "{'name': 'r', 'op': 'relu', 'inputs': ['d']}]}",
                 2, 1, &g, &err);
    if (st != CD_OK) fail_msg("%s", err.message);
    /* Everything folds into the convolution: input + conv. */
    assert_int_equal(g->count, 2);
    assert_int_equal(g->output, 1);
    const cd_nn_node *c = &g->nodes[1];
    assert_int_equal(c->op, CD_NN_CONV2D);
    assert_true(c->relu);
    assert_null(c->bn_mean);
    /* s = gamma / sqrt(var + eps): 0.5 / sqrt(4.25), 2 / sqrt(0.25) = 4 */
    double s0 = 0.5 / sqrt(4.25), s1 = 4.0;
    assert_float_equal(c->weight[0], 2.0 * s0, 1e-7);
    assert_float_equal(c->weight[1], -3.0 * s1, 1e-6);
    assert_float_equal(c->bias[0], -0.25 * s0 + 1.0, 1e-7);
    assert_float_equal(c->bias[1], 2.0 * s1 - 1.0, 1e-6);
    /* and runs: x = 1.5 -> relu(bn(conv(x))) per channel */
    assert_int_equal(cd_nn_graph_shape(g, 1, 1, 1, 0, &err), CD_OK);
    float *arena = calloc((size_t)g->arena_floats, sizeof(float));
    arena[g->input_offset] = 1.5f;
    assert_int_equal(cd_nn_ref_run(g, arena, 1, &err), CD_OK);
    const float *y = arena + g->nodes[g->output].offset;
    double r0 = (3.0 - 0.25) / sqrt(4.25) * 0.5 + 1.0, r1 = (-4.5 + 2.0) / sqrt(0.25) * 2.0 - 1.0;
    assert_float_equal(y[0], r0 > 0 ? r0 : 0, 1e-6);
    assert_float_equal(y[1], r1 > 0 ? r1 : 0, 1e-6);
    free(arena);
    cd_nn_graph_free(g);

    /* A batch norm after a convolution that has another consumer cannot fold: it becomes a scale
     * with weight s and bias beta - mean * s, and the graph computes bn(c) + c. */
    stb_init(&b);
    stb_tensor(&b, "w", 4, ws, w);
    stb_tensor(&b, "g", 1, cs, gamma);
    stb_tensor(&b, "be", 1, cs, beta);
    stb_tensor(&b, "m", 1, cs, mean);
    stb_tensor(&b, "v", 1, cs, var);
    st = stb_load(&b,
                  "{'version': 1, 'input': {'name': 'x', 'channels': 1}, 'output': 'a', 'nodes': ["
                  "{'name': 'c', 'op': 'conv2d', 'inputs': ['x'], 'weight': 'w', 'bias': null, 'stride': [1, 1],"
                  " 'padding': [0, 0], 'dilation': [1, 1], 'groups': 1},"
                  "{'name': 'bn7', 'op': 'batch_norm', 'inputs': ['c'], 'weight': 'g', 'bias': 'be',"
                  " 'running_mean': 'm', 'running_var': 'v', 'eps': 0.25},"
                  "{'name': 'a', 'op': 'add', 'inputs': ['bn7', 'c']}]}",
                  2, 1, &g, &err);
    if (st != CD_OK) fail_msg("%s", err.message);
    assert_int_equal(g->count, 4);
    const cd_nn_node *sc = &g->nodes[find(g, "bn7")];
    assert_int_equal(sc->op, CD_NN_SCALE);
    assert_null(sc->bn_mean);
    assert_float_equal(sc->weight[0], s0, 1e-7);
    assert_float_equal(sc->weight[1], s1, 1e-6);
    assert_float_equal(sc->bias[0], 1.0 - 0.25 * s0, 1e-7);
    assert_float_equal(sc->bias[1], -1.0 + 2.0 * s1, 1e-6);
    assert_int_equal(cd_nn_graph_shape(g, 1, 1, 1, 0, &err), CD_OK);
    arena = calloc((size_t)g->arena_floats, sizeof(float));
    arena[g->input_offset] = 1.5f;
    assert_int_equal(cd_nn_ref_run(g, arena, 1, &err), CD_OK);
    y = arena + g->nodes[g->output].offset;
    assert_float_equal(y[0], (3.0 - 0.25) / sqrt(4.25) * 0.5 + 1.0 + 3.0, 1e-6);
    assert_float_equal(y[1], (-4.5 + 2.0) / sqrt(0.25) * 2.0 - 1.0 - 4.5, 1e-5);
    free(arena);
    cd_nn_graph_free(g);
}

/* ---- the arena plan ---- */

static const char *plan_graph =
    "{'version': 1, 'input': {'name': 'x', 'channels': 2}, 'output': 'fc', 'nodes': ["
    "{'name': 'a', 'op': 'conv2d', 'inputs': ['x'], 'weight': 'w1', 'bias': 'b4', 'stride': [1, 1], 'padding': [1, 1],"
    " 'dilation': [1, 1], 'groups': 1},"
    "{'name': 'ar', 'op': 'relu', 'inputs': ['a']},"
    "{'name': 'b', 'op': 'conv2d', 'inputs': ['ar'], 'weight': 'w2', 'bias': null, 'stride': [1, 1], 'padding': [1, 1],"
    " 'dilation': [1, 1], 'groups': 1},"
    "{'name': 'c', 'op': 'conv2d', 'inputs': ['ar'], 'weight': 'w3', 'bias': null, 'stride': [1, 1], 'padding': [0, 0],"
    " 'dilation': [1, 1], 'groups': 2},"
    "{'name': 's', 'op': 'add', 'inputs': ['b', 'c']},"
    "{'name': 'sr', 'op': 'relu', 'inputs': ['s']},"
    "{'name': 'mp', 'op': 'max_pool2d', 'inputs': ['sr'], 'kernel': [3, 3], 'stride': [2, 2], 'padding': [1, 1],"
    " 'dilation': [1, 1], 'ceil_mode': true},"
    "{'name': 'd', 'op': 'conv2d', 'inputs': ['mp'], 'weight': 'w2', 'bias': null, 'stride': [1, 1], 'padding': [1, 1],"
    " 'dilation': [1, 1], 'groups': 1},"
    "{'name': 't', 'op': 'add', 'inputs': ['d', 'mp']},"
    "{'name': 'm2', 'op': 'max_pool2d', 'inputs': ['t'], 'kernel': [2, 2], 'stride': [2, 2], 'padding': [0, 0],"
    " 'dilation': [1, 1], 'ceil_mode': false},"
    "{'name': 'u', 'op': 'add', 'inputs': ['m2', 'm2']},"
    "{'name': 'ap', 'op': 'adaptive_avg_pool2d', 'inputs': ['u'], 'output_size': [2, 2]},"
    "{'name': 'fl', 'op': 'flatten', 'inputs': ['ap'], 'start_dim': 1},"
    "{'name': 'fc', 'op': 'linear', 'inputs': ['fl'], 'weight': 'lw', 'bias': 'lb'}]}";

static void plan_tensors(stb *b) {
    int64_t w1[4] = {4, 2, 3, 3}, w2[4] = {4, 4, 3, 3}, w3[4] = {4, 2, 1, 1}, b4[1] = {4}, lw[2] = {3, 16}, lb[1] = {3};
    stb_init(b);
    stb_tensor(b, "w1", 4, w1, NULL);
    stb_tensor(b, "w2", 4, w2, NULL);
    stb_tensor(b, "w3", 4, w3, NULL);
    stb_tensor(b, "b4", 1, b4, NULL);
    stb_tensor(b, "lw", 2, lw, NULL);
    stb_tensor(b, "lb", 1, lb, NULL);
}

static void test_arena_plan(void **state) {
    (void)state;
    stb b;
    plan_tensors(&b);
    cd_nn_graph *g;
    cd_error err;
    cd_status st = stb_load(&b, plan_graph, 3, 2, &g, &err);
    if (st != CD_OK) fail_msg("%s", err.message);
    /* relus fused into a and s: 15 nodes - 2 */
    assert_int_equal(g->count, 13);
    assert_true(g->nodes[find(g, "a")].relu);
    assert_true(g->nodes[find(g, "s")].relu);
    static const int64_t sizes[][3] = {{2, 16, 16}, {1, 13, 9}, {3, 7, 30}, {1, 8, 8}};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        if ((st = cd_nn_graph_shape(g, sizes[t][0], sizes[t][1], sizes[t][2], 0, &err)) != CD_OK) {
            /* 16 features are needed by fc: only 2x2 adaptive output with 4 channels gives them, always. */
            fail_msg("%s", err.message);
        }
        int n = g->count;
        int *birth = calloc((size_t)n, sizeof(int)), *death = calloc((size_t)n, sizeof(int)),
            *own = calloc((size_t)n, sizeof(int));
        for (int i = 0; i < n; i++) {
            own[i] = g->nodes[i].op == CD_NN_FLATTEN ? own[g->nodes[i].in[0]] : i;
            birth[i] = death[i] = i;
        }
        for (int i = 0; i < n; i++)
            for (int k = 0; k < g->nodes[i].n_in; k++)
                if (death[own[g->nodes[i].in[k]]] < i) death[own[g->nodes[i].in[k]]] = i;
        death[own[g->output]] = n;
        for (int i = 0; i < n; i++) {
            const cd_nn_node *a = &g->nodes[i];
            int64_t asz = a->shape.n * a->shape.c * a->shape.h * a->shape.w;
            assert_true(a->offset >= 0 && a->offset + asz <= g->arena_floats);
            if (own[i] != i) {
                assert_int_equal(a->offset, g->nodes[own[i]].offset); /* a view */
                continue;
            }
            for (int j = i + 1; j < n; j++) {
                if (own[j] != j) continue;
                const cd_nn_node *c = &g->nodes[j];
                int64_t csz = c->shape.n * c->shape.c * c->shape.h * c->shape.w;
                bool live_together = birth[j] <= death[i] && birth[i] <= death[j];
                bool overlap = a->offset < c->offset + csz && c->offset < a->offset + asz;
                if (live_together && overlap)
                    fail_msg("'%s' [%lld, +%lld) and '%s' [%lld, +%lld) are alive together and overlap", a->name,
                             (long long)a->offset, (long long)asz, c->name, (long long)c->offset, (long long)csz);
            }
        }
        /* The plan reuses memory: less than the sum of all tensors. */
        int64_t sum = 0;
        for (int i = 0; i < n; i++)
            if (own[i] == i)
                sum += g->nodes[i].shape.n * g->nodes[i].shape.c * g->nodes[i].shape.h * g->nodes[i].shape.w;
        assert_true(g->arena_floats < sum + 64 * n);
        /* and the whole thing runs (ASan checks every access stays in the arena) */
        float *arena = calloc((size_t)g->arena_floats, sizeof(float));
        for (int64_t i = 0; i < g->input_shape.n * 2 * g->input_shape.h * g->input_shape.w; i++)
            arena[g->input_offset + i] = (float)sin((double)i);
        assert_int_equal(cd_nn_ref_run(g, arena, 2, &err), CD_OK);
        free(arena);
        free(birth);
        free(death);
        free(own);
    }
    /* The arena cap is enforced. */
    assert_int_equal(cd_nn_graph_shape(g, 4, 300, 300, 1 << 20, &err), CD_ERR_LIMIT);
    assert_non_null(strstr(err.message, "limit"));
    /* Too small an input for the pools: an argument error naming the node. */
    cd_nn_graph_free(g);
}

/* ---- malformed graphs ---- */

#define HEAD "{'version': 1, 'input': {'name': 'x', 'channels': 1}, "
#define CONV(name, in, w, extra)                                                                                       \
    "{'name': '" name "', 'op': 'conv2d', 'inputs': ['" in "'], 'weight': '" w "', 'bias': null, 'stride': [1, 1],"    \
    " 'padding': [0, 0], 'dilation': [1, 1], 'groups': 1" extra "}"

static void one_conv(stb *b, int64_t o, int64_t c, int64_t k) {
    int64_t ws[4] = {o, c, k, k};
    stb_init(b);
    stb_tensor(b, "w", 4, ws, NULL);
}

static void test_bad_graphs(void **state) {
    (void)state;
    stb b;
    one_conv(&b, 2, 1, 3);
    expect_bad(&b, HEAD "'output': 'g', 'nodes': [{'name': 'g', 'op': 'mish', 'inputs': ['x']}]}", 2, "'g'",
               "unknown op");
    one_conv(&b, 2, 1, 3);
    expect_bad(&b,
               HEAD "'output': 'b', 'nodes': [{'name': 'a', 'op': 'relu', 'inputs': ['b']}, "
                    "{'name': 'b', 'op': 'relu', 'inputs': ['x']}]}",
               2, "'a'", "'b'");
    one_conv(&b, 2, 1, 3);
    expect_bad(&b, HEAD "'output': 'c', 'nodes': [" CONV("c", "x", "nope", "") "]}", 2, "'c'", "missing tensor 'nope'");
    /* weight expects 2 input channels, the input has 1 */
    one_conv(&b, 2, 2, 3);
    expect_bad(&b, HEAD "'output': 'c', 'nodes': [" CONV("c", "x", "w", "") "]}", 2, "'c'", "shape");
    /* kernel 0 and 65: pools by field, conv by weight shape */
    one_conv(&b, 2, 1, 3);
    expect_bad(&b,
               HEAD "'output': 'p', 'nodes': [{'name': 'p', 'op': 'max_pool2d', 'inputs': ['x'], 'kernel': [0, 0],"
                    " 'stride': [1, 1], 'padding': [0, 0], 'dilation': [1, 1], 'ceil_mode': false}]}",
               1, "'p'", "kernel");
    one_conv(&b, 2, 1, 3);
    expect_bad(&b,
               HEAD "'output': 'p', 'nodes': [{'name': 'p', 'op': 'avg_pool2d', 'inputs': ['x'], 'kernel': [65, 3],"
                    " 'stride': [1, 1], 'padding': [0, 0], 'ceil_mode': false, 'count_include_pad': true}]}",
               1, "'p'", "kernel");
    one_conv(&b, 1, 1, 65);
    expect_bad(&b, HEAD "'output': 'c', 'nodes': [" CONV("c", "x", "w", "") "]}", 1, "'c'", "kernel 65x65");
    {
        int64_t ws[4] = {1, 1, 0, 3};
        stb_init(&b);
        stb_tensor(&b, "w", 4, ws, NULL);
        expect_bad(&b, HEAD "'output': 'c', 'nodes': [" CONV("c", "x", "w", "") "]}", 1, "'c'", "size 0");
    }
    /* pool padding more than half the kernel */
    one_conv(&b, 2, 1, 3);
    expect_bad(&b,
               HEAD "'output': 'p', 'nodes': [{'name': 'p', 'op': 'max_pool2d', 'inputs': ['x'], 'kernel': [3, 3],"
                    " 'stride': [1, 1], 'padding': [2, 2], 'dilation': [1, 1], 'ceil_mode': false}]}",
               1, "'p'", "half");
    /* groups not dividing: 3 output channels, groups 2 on a 2-channel input */
    {
        int64_t ws[4] = {3, 1, 1, 1};
        stb_init(&b);
        stb_tensor(&b, "w", 4, ws, NULL);
        cd_nn_graph *g = NULL;
        cd_error err;
        assert_int_equal(stb_load(&b,
                                  "{'version': 1, 'input': {'name': 'x', 'channels': 2}, 'output': 'c', 'nodes': ["
                                  "{'name': 'c', 'op': 'conv2d', 'inputs': ['x'], 'weight': 'w', 'bias': null,"
                                  " 'stride': [1, 1], 'padding': [0, 0], 'dilation': [1, 1], 'groups': 2}]}",
                                  3, 2, &g, &err),
                         CD_ERR_FORMAT);
        assert_non_null(strstr(err.message, "'c'"));
        assert_non_null(strstr(err.message, "groups 2 does not divide"));
    }
    /* linear width mismatch, found when shaping: flatten of 1x4x4 gives 16 features, fc wants 9 */
    {
        int64_t lw[2] = {2, 9};
        stb_init(&b);
        stb_tensor(&b, "lw", 2, lw, NULL);
        cd_nn_graph *g = NULL;
        cd_error err;
        assert_int_equal(
            stb_load(&b,
                     HEAD "'output': 'fc', 'nodes': [{'name': 'f', 'op': 'flatten', 'inputs': ['x'], 'start_dim': 1},"
                          "{'name': 'fc', 'op': 'linear', 'inputs': ['f'], 'weight': 'lw', 'bias': null}]}",
                     2, 1, &g, &err),
            CD_OK);
        assert_int_equal(cd_nn_graph_shape(g, 1, 3, 3, 0, &err), CD_OK);
        assert_int_equal(cd_nn_graph_shape(g, 1, 4, 4, 0, &err), CD_ERR_FORMAT);
        assert_non_null(strstr(err.message, "'fc'"));
        assert_non_null(strstr(err.message, "expects 9"));
        cd_nn_graph_free(g);
    }
    /* add of unequal shapes: stride 1 vs stride 2 */
    {
        int64_t ws[4] = {1, 1, 1, 1};
        stb_init(&b);
        stb_tensor(&b, "w", 4, ws, NULL);
        cd_nn_graph *g = NULL;
        cd_error err;
        assert_int_equal(
            stb_load(
                &b,
                HEAD "'output': 's', 'nodes': [" CONV(
                    "c", "x", "w",
                    "") ","
                        "{'name': 'h', 'op': 'conv2d', 'inputs': ['x'], 'weight': 'w', 'bias': null, 'stride': [2, 2],"
                        " 'padding': [0, 0], 'dilation': [1, 1], 'groups': 1},"
                        "{'name': 's', 'op': 'add', 'inputs': ['c', 'h']}]}",
                1, 1, &g, &err),
            CD_OK);
        assert_int_equal(cd_nn_graph_shape(g, 1, 1, 1, 0, &err), CD_OK); /* 1x1 both ways */
        assert_int_equal(cd_nn_graph_shape(g, 1, 4, 4, 0, &err), CD_ERR_FORMAT);
        assert_non_null(strstr(err.message, "'s'"));
        assert_non_null(strstr(err.message, "differ"));
        cd_nn_graph_free(g);
    }
    /* an input too small for a kernel: an argument error naming the node */
    {
        one_conv(&b, 1, 1, 5);
        cd_nn_graph *g = NULL;
        cd_error err;
        assert_int_equal(stb_load(&b, HEAD "'output': 'c', 'nodes': [" CONV("c", "x", "w", "") "]}", 1, 1, &g, &err),
                         CD_OK);
        assert_int_equal(cd_nn_graph_shape(g, 1, 4, 9, 0, &err), CD_ERR_ARG);
        assert_non_null(strstr(err.message, "'c'"));
        assert_non_null(strstr(err.message, "too small"));
        cd_nn_graph_free(g);
    }
    /* duplicate names, missing fields, non-positive eps, bad JSON */
    one_conv(&b, 2, 1, 3);
    expect_bad(&b,
               HEAD "'output': 'r', 'nodes': [{'name': 'r', 'op': 'relu', 'inputs': ['x']}, "
                    "{'name': 'r', 'op': 'relu', 'inputs': ['r']}]}",
               1, "'r'", "duplicate");
    one_conv(&b, 2, 1, 3);
    expect_bad(&b,
               HEAD
               "'output': 'c', 'nodes': [{'name': 'c', 'op': 'conv2d', 'inputs': ['x'], 'weight': 'w', 'bias': null,"
               " 'stride': [1, 1], 'dilation': [1, 1], 'groups': 1}]}",
               2, "'c'", "padding");
    one_conv(&b, 2, 1, 3);
    expect_bad(&b, HEAD "'output': 'r', 'nodes': [{'name': 'r', 'op': 'relu', 'inputs': ['x']}", 1, "not valid JSON",
               NULL);
    one_conv(&b, 2, 1, 3);
    expect_bad(&b, HEAD "'output': 'zz', 'nodes': [{'name': 'r', 'op': 'relu', 'inputs': ['x']}]}", 1, "'zz'", NULL);
    /* the activations take exactly one input: none or two are refused, naming the node */
    static const char *const acts[] = {"gelu", "gelu_tanh", "silu", "hardswish", "hardsigmoid"};
    for (size_t k = 0; k < sizeof acts / sizeof acts[0]; k++) {
        char graph[256];
        snprintf(graph, sizeof graph, HEAD "'output': 'act', 'nodes': [{'name': 'act', 'op': '%s', 'inputs': []}]}",
                 acts[k]);
        one_conv(&b, 2, 1, 3);
        expect_bad(&b, graph, 1, "'act'", "array of 1 name");
        snprintf(graph, sizeof graph,
                 HEAD "'output': 'act', 'nodes': [{'name': 'act', 'op': '%s', 'inputs': ['x', 'x']}]}", acts[k]);
        one_conv(&b, 2, 1, 3);
        expect_bad(&b, graph, 1, "'act'", "array of 1 name");
    }
    /* layer_norm / scale / mul / linear over positions: inputs, parameter shapes, eps, broadcasting */
    {
        static const struct {
            const char *graph, *needle;
        } bad[] = {
            {"{'name': 'n', 'op': 'layer_norm', 'inputs': ['x', 'x'], 'weight': null, 'bias': null, 'eps': 1e-5}",
             "array of 1 name"},
            {"{'name': 'n', 'op': 'layer_norm', 'inputs': ['x'], 'weight': null, 'bias': null, 'eps': 0}", "'eps'"},
            {"{'name': 'n', 'op': 'layer_norm', 'inputs': ['x'], 'weight': null, 'bias': null, 'eps': -1e-5}", "'eps'"},
            {"{'name': 'n', 'op': 'layer_norm', 'inputs': ['x'], 'weight': null, 'bias': null}", "missing field 'eps'"},
            {"{'name': 'n', 'op': 'layer_norm', 'inputs': ['x'], 'weight': 'v3', 'bias': null, 'eps': 1e-5}",
             "3 elements, expected 1"},
            {"{'name': 'n', 'op': 'layer_norm', 'inputs': ['x'], 'weight': 'm12', 'bias': null, 'eps': 1e-5}",
             "rank 2"},
            {"{'name': 'n', 'op': 'layer_norm', 'inputs': ['x'], 'weight': 'v1', 'bias': 'v3', 'eps': 1e-5}",
             "3 elements, expected 1"},
            {"{'name': 'n', 'op': 'scale', 'inputs': ['x'], 'weight': 't121', 'bias': null}", "rank 3"},
            {"{'name': 'n', 'op': 'scale', 'inputs': ['x'], 'weight': null, 'bias': null}", "'weight'"},
            {"{'name': 'n', 'op': 'scale', 'inputs': ['x'], 'weight': 'v3', 'bias': null}", "3 elements"},
            {"{'name': 'n', 'op': 'mul', 'inputs': ['x']}", "array of 2 names"},
            {"{'name': 'n', 'op': 'linear', 'inputs': ['x'], 'weight': 'm23', 'bias': null}",
             "expects 3 inputs, its input has 1 channels"},
        };
        for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
            char graph[512];
            snprintf(graph, sizeof graph, HEAD "'output': 'n', 'nodes': [%s]}", bad[k].graph);
            int64_t s1[1] = {1}, s3[1] = {3}, s12[2] = {1, 2}, s121[3] = {1, 2, 1}, s23[2] = {2, 3};
            stb_init(&b);
            stb_tensor(&b, "v1", 1, s1, NULL);
            stb_tensor(&b, "v3", 1, s3, NULL);
            stb_tensor(&b, "m12", 2, s12, NULL);
            stb_tensor(&b, "t121", 3, s121, NULL);
            stb_tensor(&b, "m23", 2, s23, NULL);
            expect_bad(&b, graph, 1, "'n'", bad[k].needle);
        }
        /* channels that cannot broadcast: a 2-channel conv times the 1-channel input */
        one_conv(&b, 2, 1, 1);
        expect_bad(&b,
                   HEAD "'output': 'n', 'nodes': [" CONV("c", "x", "w",
                                                         "") ","
                                                             "{'name': 'n', 'op': 'mul', 'inputs': ['c', 'x']}]}",
                   2, "'n'", "cannot broadcast");
        /* sizes that cannot broadcast, found when shaping: x (4x4) times a 2x2 pool of it */
        stb_init(&b);
        cd_nn_graph *g = NULL;
        cd_error err;
        assert_int_equal(stb_load(&b,
                                  HEAD "'output': 'n', 'nodes': [{'name': 'p', 'op': 'max_pool2d', 'inputs': ['x'],"
                                       " 'kernel': [2, 2], 'stride': [2, 2], 'padding': [0, 0], 'dilation': [1, 1],"
                                       " 'ceil_mode': false}, {'name': 'n', 'op': 'mul', 'inputs': ['x', 'p']}]}",
                                  1, 1, &g, &err),
                         CD_OK);
        assert_int_equal(cd_nn_graph_shape(g, 1, 2, 2, 0, &err), CD_OK); /* p is 1x1: broadcast */
        assert_int_equal(cd_nn_graph_shape(g, 1, 4, 4, 0, &err), CD_ERR_FORMAT);
        assert_non_null(strstr(err.message, "'n'"));
        assert_non_null(strstr(err.message, "cannot broadcast"));
        cd_nn_graph_free(g);
    }
    /* slice, concat and attention: bounds and shapes, each refused naming the node */
    one_conv(&b, 2, 1, 3);
    expect_bad(&b,
               HEAD "'output': 's', 'nodes': [" CONV(
                   "c", "x", "w", "") ","
                                      "{'name': 's', 'op': 'slice', 'inputs': ['c'], 'start': 1, 'length': 2}]}",
               2, "'s'", "channels [1, 3) are outside the 2");
    one_conv(&b, 2, 1, 3);
    expect_bad(
        &b, HEAD "'output': 's', 'nodes': [{'name': 's', 'op': 'slice', 'inputs': ['x'], 'start': -1, 'length': 1}]}",
        1, "'s'", "'start'");
    one_conv(&b, 2, 1, 3);
    expect_bad(&b,
               HEAD "'output': 's', 'nodes': [{'name': 's', 'op': 'slice', 'inputs': ['x'], 'start': 0, 'length': 0}]}",
               1, "'s'", "'length'");
    one_conv(&b, 2, 1, 3);
    expect_bad(&b, HEAD "'output': 'k', 'nodes': [{'name': 'k', 'op': 'concat', 'inputs': ['x']}]}", 2, "'k'",
               "array of 2 names");
    one_conv(&b, 2, 1, 3);
    expect_bad(
        &b,
        HEAD
        "'output': 'a', 'nodes': [{'name': 'a', 'op': 'attention', 'inputs': ['x', 'x'], 'heads': 1, 'scale': 1}]}",
        1, "'a'", "array of 3 names");
    /* heads not dividing C: 3 heads over the conv's 2 channels */
    one_conv(&b, 2, 1, 3);
    expect_bad(&b,
               HEAD "'output': 'a', 'nodes': [" CONV(
                   "c", "x", "w",
                   "") ","
                       "{'name': 'a', 'op': 'attention', 'inputs': ['c', 'c', 'c'], 'heads': 3, 'scale': 0.5}]}",
               2, "'a'", "3 heads do not divide the 2 channels");
    static const char *const bad_attn[][2] = {
        {"'heads': 0, 'scale': 0.5", "'heads'"},  {"'heads': 1025, 'scale': 0.5", "'heads'"},
        {"'heads': 1, 'scale': 0", "'scale'"},    {"'heads': 1, 'scale': -1", "'scale'"},
        {"'heads': 1, 'scale': 1e39", "'scale'"}, {"'heads': 1, 'scale': 'x'", "'scale'"},
        {"'heads': 1", "missing field 'scale'"},
    };
    for (size_t k = 0; k < sizeof bad_attn / sizeof bad_attn[0]; k++) {
        char graph[320];
        snprintf(graph, sizeof graph,
                 HEAD "'output': 'a', 'nodes': [{'name': 'a', 'op': 'attention', 'inputs': ['x', 'x', 'x'], %s}]}",
                 bad_attn[k][0]);
        one_conv(&b, 2, 1, 3);
        expect_bad(&b, graph, 1, "'a'", bad_attn[k][1]);
    }
    /* q/k channel mismatch at parse time: q from the 2-channel conv, k and v the 1-channel input */
    one_conv(&b, 2, 1, 3);
    expect_bad(&b,
               HEAD "'output': 'a', 'nodes': [" CONV(
                   "c", "x", "w",
                   "") ","
                       "{'name': 'a', 'op': 'attention', 'inputs': ['c', 'x', 'x'], 'heads': 1, 'scale': 0.5}]}",
               2, "'a'", "k 'x' has 1 channels, q 'c' has 2");
    /* found when shaping (channels of a flatten are known only then; token counts always):
     * k/v token mismatch, q/k channel mismatch, concat of different H/W, a slice past the channels */
    {
        int64_t ws[4] = {2, 1, 1, 1}, ws2[4] = {2, 1, 1, 1};
        stb_init(&b);
        stb_tensor(&b, "w", 4, ws, NULL);
        stb_tensor(&b, "w2", 4, ws2, NULL);
        cd_nn_graph *g = NULL;
        cd_error err;
        /* k (2 x H x W) and v from a stride-2 conv (2 x H/2 x W/2) */
        assert_int_equal(
            stb_load(&b,
                     HEAD "'output': 'a', 'nodes': [" CONV(
                         "k", "x", "w",
                         "") ","
                             "{'name': 'v', 'op': 'conv2d', 'inputs': ['x'], 'weight': 'w2', 'bias': null,"
                             " 'stride': [2, 2], 'padding': [0, 0], 'dilation': [1, 1], 'groups': 1},"
                             "{'name': 'a', 'op': 'attention', 'inputs': ['k', 'k', 'v'], 'heads': 2, 'scale': 1}]}",
                     2, 1, &g, &err),
            CD_OK);
        assert_int_equal(cd_nn_graph_shape(g, 1, 1, 1, 0, &err), CD_OK); /* 1x1 both ways */
        assert_int_equal(cd_nn_graph_shape(g, 2, 4, 6, 0, &err), CD_ERR_FORMAT);
        assert_non_null(strstr(err.message, "'a'"));
        assert_non_null(strstr(err.message, "v 'v' (2x2x2x3)"));
        assert_non_null(strstr(err.message, "k 'k' (2x2x4x6)"));
        cd_nn_graph_free(g);
        /* concat of the same two tensors: H and W differ */
        stb_init(&b);
        stb_tensor(&b, "w", 4, ws, NULL);
        stb_tensor(&b, "w2", 4, ws2, NULL);
        assert_int_equal(stb_load(&b,
                                  HEAD "'output': 'j', 'nodes': [" CONV(
                                      "k", "x", "w",
                                      "") ","
                                          "{'name': 'v', 'op': 'conv2d', 'inputs': ['x'], 'weight': 'w2', 'bias': null,"
                                          " 'stride': [2, 2], 'padding': [0, 0], 'dilation': [1, 1], 'groups': 1},"
                                          "{'name': 'j', 'op': 'concat', 'inputs': ['k', 'v']}]}",
                                  4, 1, &g, &err),
                         CD_OK);
        assert_int_equal(cd_nn_graph_shape(g, 1, 1, 1, 0, &err), CD_OK);
        assert_int_equal(g->nodes[find(g, "j")].shape.c, 4);
        assert_int_equal(cd_nn_graph_shape(g, 1, 5, 4, 0, &err), CD_ERR_FORMAT);
        assert_non_null(strstr(err.message, "'j'"));
        assert_non_null(strstr(err.message, "differ in N, H or W"));
        cd_nn_graph_free(g);
        /* q a flatten (channels known only when shaped): 4 features against k's 2 channels; a slice
         * of the flatten past its features */
        stb_init(&b);
        stb_tensor(&b, "w", 4, ws, NULL);
        assert_int_equal(
            stb_load(&b,
                     HEAD "'output': 'a', 'nodes': [" CONV(
                         "k", "x", "w",
                         "") ","
                             "{'name': 'f', 'op': 'flatten', 'inputs': ['x'], 'start_dim': 1},"
                             "{'name': 'a', 'op': 'attention', 'inputs': ['f', 'k', 'k'], 'heads': 1, 'scale': 1}]}",
                     2, 1, &g, &err),
            CD_OK);
        assert_int_equal(cd_nn_graph_shape(g, 1, 2, 1, 0, &err), CD_OK); /* 2 features, 2 channels */
        assert_int_equal(cd_nn_graph_shape(g, 1, 2, 2, 0, &err), CD_ERR_FORMAT);
        assert_non_null(strstr(err.message, "'a'"));
        assert_non_null(strstr(err.message, "q 'f' (1x4x1x1)"));
        cd_nn_graph_free(g);
        stb_init(&b);
        stb_tensor(&b, "w", 4, ws, NULL);
        assert_int_equal(
            stb_load(&b,
                     HEAD "'output': 's', 'nodes': [{'name': 'f', 'op': 'flatten', 'inputs': ['x'], 'start_dim': 1},"
                          "{'name': 's', 'op': 'slice', 'inputs': ['f'], 'start': 2, 'length': 3}]}",
                     3, 1, &g, &err),
            CD_OK);
        assert_int_equal(cd_nn_graph_shape(g, 1, 1, 5, 0, &err), CD_OK);
        assert_int_equal(cd_nn_graph_shape(g, 1, 1, 4, 0, &err), CD_ERR_FORMAT);
        assert_non_null(strstr(err.message, "'s'"));
        assert_non_null(strstr(err.message, "channels [2, 5) are outside input 'f' (4x1x1)"));
        cd_nn_graph_free(g);
    }
    /* classes must match the output's channels */
    one_conv(&b, 2, 1, 3);
    expect_bad(&b, HEAD "'output': 'c', 'nodes': [" CONV("c", "x", "w", "") "]}", 5, "'c'", "5 classes");
}

/* ---- MambaVision's ops: softplus, dwconv1d, selective_scan, window_partition / window_reverse ---- */

/* expect_bad with in_ch input channels. */
static void expect_bad_in(stb *b, const char *graph, int classes, int in_ch, const char *needle1, const char *needle2) {
    cd_nn_graph *g = NULL;
    cd_error err;
    cd_error_clear(&err);
    cd_status st = stb_load(b, graph, classes, in_ch, &g, &err);
    if (st == CD_OK) fail_msg("graph accepted: %s", graph);
    assert_null(g);
    if (!strstr(err.message, needle1) || (needle2 && !strstr(err.message, needle2)))
        fail_msg("message '%s' lacks '%s' / '%s'", err.message, needle1, needle2 ? needle2 : "");
    assert_non_null(strstr(err.message, "test.safetensors"));
}

/* Loads a graph that must load, then shapes it for (n, h, w): the shaping must fail naming the node. */
static void expect_bad_shape(stb *b, const char *graph, int in_ch, int64_t n, int64_t h, int64_t w, const char *needle1,
                             const char *needle2) {
    cd_nn_graph *g = NULL;
    cd_error err;
    cd_status st = stb_load(b, graph, in_ch, in_ch, &g, &err); /* outputs here have in_ch channels */
    if (st != CD_OK) fail_msg("%s", err.message);
    assert_int_equal(cd_nn_graph_shape(g, n, h, w, 0, &err), CD_ERR_FORMAT);
    if (!strstr(err.message, needle1) || (needle2 && !strstr(err.message, needle2)))
        fail_msg("message '%s' lacks '%s' / '%s'", err.message, needle1, needle2 ? needle2 : "");
    cd_nn_graph_free(g);
}

#define HEAD4 "{'version': 1, 'input': {'name': 'x', 'channels': 4}, "
#define DW1D(w, pad)                                                                                                   \
    "{'name': 'dw', 'op': 'dwconv1d', 'inputs': ['x'], 'weight': '" w "', 'bias': null, 'padding': " pad "}"
#define SCAN(ins, a, d, extra)                                                                                         \
    "{'name': 'scan', 'op': 'selective_scan', 'inputs': " ins ", 'A_log': '" a "', 'D': " d ", 'delta_bias': null, "   \
    "'delta_softplus': true" extra "}"
#define SEL(name, w)                                                                                                   \
    "{'name': '" name "', 'op': 'conv2d', 'inputs': ['x'], 'weight': '" w "', 'bias': null, "                          \
    "'stride': 1, 'padding': 0, 'dilation': 1, 'groups': 1}"

static const float scan_a_log[8] = {0.0f, 0.5f, -0.5f, 1.0f, 2.0f, -1.0f, 0.25f, 3.0f};

/* The parameters the MambaVision graphs below use: dwconv1d weights, 1x1 convs to 2 states, A_log. */
static void scan_tensors(stb *b) {
    int64_t w3[3] = {4, 1, 3}, w65[3] = {4, 1, 65}, w2ch[3] = {4, 2, 3}, w3c[3] = {3, 1, 3}, sel[4] = {2, 4, 1, 1},
            sel4[4] = {4, 4, 1, 1}, a[2] = {4, 2}, a3[2] = {3, 2}, a257[2] = {4, 257}, d4[1] = {4}, d5[1] = {5};
    stb_init(b);
    stb_tensor(b, "w3", 3, w3, NULL);
    stb_tensor(b, "w65", 3, w65, NULL);
    stb_tensor(b, "w2ch", 3, w2ch, NULL);
    stb_tensor(b, "w3c", 3, w3c, NULL);
    stb_tensor(b, "sel", 4, sel, NULL);
    stb_tensor(b, "sel4", 4, sel4, NULL);
    stb_tensor(b, "A", 2, a, scan_a_log);
    stb_tensor(b, "A3", 2, a3, NULL);
    stb_tensor(b, "A257", 2, a257, NULL);
    stb_tensor(b, "d4", 1, d4, NULL);
    stb_tensor(b, "d5", 1, d5, NULL);
    const float nan_a[8] = {0, 1, 2, NAN, 0, 1, 2, 3};
    stb_tensor(b, "Anan", 2, a, nan_a);
}

/* A small mixer through windows: loads, shapes (the 4-input node, N changed by the windows), plans
 * without two live tensors overlapping, and runs; the window order and padding, dwconv1d and the scan
 * on hand-computed values. */
static void test_scan_ops(void **state) {
    (void)state;
    stb b;
    scan_tensors(&b);
    const char *graph =
        HEAD4 "'output': 'rev', 'nodes': ["
              "{'name': 'part', 'op': 'window_partition', 'inputs': ['x'], 'window': 3},"
              "{'name': 'dw', 'op': 'dwconv1d', 'inputs': ['part'], 'weight': 'w3', 'bias': 'd4', 'padding': [1, 1]},"
              "{'name': 'sp', 'op': 'softplus', 'inputs': ['dw'], 'beta': 1.0, 'threshold': 20},"
              "{'name': 'B', 'op': 'conv2d', 'inputs': ['part'], 'weight': 'sel', 'bias': null, 'stride': 1,"
              " 'padding': 0, 'dilation': 1, 'groups': 1},"
              "{'name': 'C', 'op': 'conv2d', 'inputs': ['part'], 'weight': 'sel', 'bias': null, 'stride': 1,"
              " 'padding': 0, 'dilation': 1, 'groups': 1},"
              "{'name': 'scan', 'op': 'selective_scan', 'inputs': ['part', 'sp', 'B', 'C'], 'A_log': 'A', 'D': 'd4',"
              " 'delta_bias': 'd4', 'delta_softplus': false},"
              "{'name': 'rev', 'op': 'window_reverse', 'inputs': ['scan', 'x'], 'window': 3}]}";
    cd_nn_graph *g = NULL;
    cd_error err;
    cd_status st = stb_load(&b, graph, 4, 4, &g, &err);
    if (st != CD_OK) fail_msg("%s", err.message);
    const cd_nn_node *scan = &g->nodes[find(g, "scan")];
    assert_int_equal(scan->n_in, 4);
    assert_int_equal(scan->states, 2);
    assert_false(scan->delta_softplus);
    /* A = -exp(A_log) */
    for (int i = 0; i < 8; i++) assert_float_equal(scan->weight[i], -expf(scan_a_log[i]), 0);
    assert_int_equal(cd_nn_graph_shape(g, 2, 5, 7, 0, &err), CD_OK);
    const cd_nn_shape *ps = &g->nodes[find(g, "part")].shape, *os = &g->nodes[g->output].shape;
    assert_true(ps->n == 2 * 2 * 3 && ps->c == 4 && ps->h == 3 && ps->w == 3);
    assert_true(os->n == 2 && os->c == 4 && os->h == 5 && os->w == 7);
    /* no two tensors alive at once overlap; a tensor lives until its last reader, any of 4 inputs */
    for (int i = 0; i < g->count; i++)
        for (int j = i + 1; j < g->count; j++) {
            int last = i;
            for (int r = i + 1; r < g->count; r++)
                for (int k = 0; k < g->nodes[r].n_in; k++)
                    if (g->nodes[r].in[k] == i) last = r;
            if (i == g->output) last = g->count;
            const cd_nn_shape *a = &g->nodes[i].shape, *c = &g->nodes[j].shape;
            const int64_t asz = a->n * a->c * a->h * a->w, csz = c->n * c->c * c->h * c->w;
            const int64_t ao = g->nodes[i].offset, co = g->nodes[j].offset;
            if (j <= last && ao < co + csz && co < ao + asz)
                fail_msg("'%s' and '%s' overlap while both alive", g->nodes[i].name, g->nodes[j].name);
        }
    float *arena = calloc((size_t)g->arena_floats, sizeof(float));
    for (int64_t i = 0; i < 2 * 4 * 5 * 7; i++) arena[g->input_offset + i] = (float)cos((double)i);
    assert_int_equal(cd_nn_ref_run(g, arena, 2, &err), CD_OK);
    for (int64_t i = 0; i < 2 * 4 * 5 * 7; i++) assert_true(isfinite(arena[g->nodes[g->output].offset + i]));
    free(arena);
    cd_nn_graph_free(g);

    /* window order and padding: 1x1x3x3 holding 1..9, window 2: padded to 4x4, windows (row, column) */
    cd_nn_node wn = {.op = CD_NN_WINDOW_PARTITION, .window = 2, .shape = {4, 1, 2, 2}};
    const cd_nn_shape img = {1, 1, 3, 3};
    const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, want[16] = {1, 2, 4, 5, 3, 0, 6, 0, 7, 8, 0, 0, 9, 0, 0, 0};
    float win[16], back[9];
    cd_nn_ref_window_partition(&wn, &img, x, win);
    for (int i = 0; i < 16; i++) assert_float_equal(win[i], want[i], 0);
    cd_nn_node rn = {.op = CD_NN_WINDOW_REVERSE, .window = 2, .shape = img};
    cd_nn_ref_window_reverse(&rn, &wn.shape, win, back);
    for (int i = 0; i < 9; i++) assert_float_equal(back[i], x[i], 0);

    /* dwconv1d: taps [1, 10, 100] over 1, 2, 3 with padding [1, 1] and bias 0.5 */
    float w3[3] = {1, 10, 100}, b1[1] = {0.5f}, y[3];
    cd_nn_node dn = {
        .op = CD_NN_DWCONV1D, .weight = w3, .bias = b1, .kh = 1, .kw = 3, .pw = 1, .in_ch = 1, .out_ch = 1};
    const cd_nn_shape seq = {1, 1, 1, 3};
    cd_nn_ref_dwconv1d(&dn, &seq, x, y, 1);
    assert_float_equal(y[0], 210.5f, 0);
    assert_float_equal(y[1], 321.5f, 0);
    assert_float_equal(y[2], 32.5f, 0);
    dn.pw = 2; /* [2, 0]: the window ends at t */
    cd_nn_ref_dwconv1d(&dn, &seq, x, y, 1);
    assert_float_equal(y[0], 100.5f, 0);
    assert_float_equal(y[1], 210.5f, 0);
    assert_float_equal(y[2], 321.5f, 0);

    /* the scan, S = 1: A = -1, dt = delta + 1 = [1, 2], u = [1, 2], B = 1, C = [1, 2], D = 0.5:
     * h0 = 1, y0 = 1 + 0.5; h1 = e^-2 + 4, y1 = 2 h1 + 1 */
    float a1[1] = {-1.0f}, dskip[1] = {0.5f}, dbias[1] = {1.0f};
    cd_nn_node sn = {.op = CD_NN_SELECTIVE_SCAN,
                     .weight = a1,
                     .bias = dskip,
                     .delta_bias = dbias,
                     .states = 1,
                     .in_ch = 1,
                     .out_ch = 1};
    const float u[2] = {1, 2}, delta[2] = {0, 1}, bb[2] = {1, 1}, cc[2] = {1, 2};
    const cd_nn_shape s2 = {1, 1, 1, 2};
    cd_nn_ref_selective_scan(&sn, &s2, u, delta, bb, cc, y, 1);
    assert_float_equal(y[0], 1.5f, 1e-6);
    assert_float_equal(y[1], 2.0f * (expf(-2.0f) + 4.0f) + 1.0f, 1e-5);
    sn.delta_softplus = true; /* dt = log1p(e^1), log1p(e^2) */
    cd_nn_ref_selective_scan(&sn, &s2, u, delta, bb, cc, y, 1);
    const float d0 = log1pf(expf(1.0f)), d1 = log1pf(expf(2.0f));
    assert_float_equal(y[0], d0 + 0.5f, 1e-6);
    assert_float_equal(y[1], 2.0f * (expf(-d1) * d0 + 2.0f * d1) + 1.0f, 1e-5);
}

static void test_scan_bad_graphs(void **state) {
    (void)state;
    stb b;
    /* dwconv1d: padding, weight shape, channels, kernel bound */
    scan_tensors(&b);
    expect_bad_in(&b, HEAD4 "'output': 'dw', 'nodes': [" DW1D("w3", "[1, 0]") "]}", 4, 4, "'dw'", "sum to kernel");
    scan_tensors(&b);
    expect_bad_in(&b, HEAD4 "'output': 'dw', 'nodes': [" DW1D("w3", "[-1, 3]") "]}", 4, 4, "'dw'", ">= 0");
    scan_tensors(&b);
    expect_bad_in(&b, HEAD4 "'output': 'dw', 'nodes': [" DW1D("w3", "1") "]}", 4, 4, "'dw'", "[left, right]");
    scan_tensors(&b);
    expect_bad_in(&b, HEAD4 "'output': 'dw', 'nodes': [" DW1D("w2ch", "[1, 1]") "]}", 4, 4, "'dw'", "not depthwise");
    scan_tensors(&b);
    expect_bad_in(&b, HEAD4 "'output': 'dw', 'nodes': [" DW1D("w3c", "[1, 1]") "]}", 4, 4, "'dw'", "has 3 channels");
    scan_tensors(&b);
    expect_bad_in(&b, HEAD4 "'output': 'dw', 'nodes': [" DW1D("w65", "[32, 32]") "]}", 4, 4, "'dw'", "kernel size 65");
    /* softplus: beta > 0, finite fields */
    scan_tensors(&b);
    expect_bad_in(&b,
                  HEAD4 "'output': 'sp', 'nodes': [{'name': 'sp', 'op': 'softplus', 'inputs': ['x'], 'beta': 0,"
                        " 'threshold': 20}]}",
                  4, 4, "'sp'", "beta");
    scan_tensors(&b);
    expect_bad_in(&b,
                  HEAD4 "'output': 'sp', 'nodes': [{'name': 'sp', 'op': 'softplus', 'inputs': ['x'], 'beta': 1,"
                        " 'threshold': 1e39}]}",
                  4, 4, "'sp'", "'threshold' must be a finite number");
    scan_tensors(&b);
    expect_bad_in(&b, HEAD4 "'output': 'sp', 'nodes': [{'name': 'sp', 'op': 'softplus', 'inputs': ['x'], 'beta': 1}]}",
                  4, 4, "'sp'", "missing field 'threshold'");
    /* selective_scan: A_log against u's channels, B / C against the states, D's shape, S bound, inputs */
    scan_tensors(&b);
    expect_bad_in(
        &b,
        HEAD4 "'output': 'scan', 'nodes': [" SEL("B", "sel") "," SCAN("['x', 'x', 'B', 'B']", "A3", "null", "") "]}", 4,
        4, "'scan'", "input u 'x' has 4 channels; A_log 'A3' (3, 2) needs 3");
    scan_tensors(&b);
    expect_bad_in(&b, HEAD4 "'output': 'scan', 'nodes': [" SCAN("['x', 'x', 'x', 'x']", "A", "null", "") "]}", 4, 4,
                  "'scan'", "input B 'x' has 4 channels");
    scan_tensors(&b);
    expect_bad_in(
        &b, HEAD4 "'output': 'scan', 'nodes': [" SEL("B", "sel") "," SCAN("['x', 'x', 'B', 'B']", "A", "'d5'", "") "]}",
        4, 4, "'scan'", "field 'D'");
    scan_tensors(&b);
    expect_bad_in(&b, HEAD4 "'output': 'scan', 'nodes': [" SCAN("['x', 'x', 'x', 'x']", "A257", "null", "") "]}", 4, 4,
                  "'scan'", "257 states");
    scan_tensors(&b);
    expect_bad_in(
        &b,
        HEAD4 "'output': 'scan', 'nodes': [" SEL("B", "sel") "," SCAN("['x', 'x', 'B', 'B']", "Anan", "null", "") "]}",
        4, 4, "'scan'", "non-finite");
    scan_tensors(&b);
    expect_bad_in(&b, HEAD4 "'output': 'scan', 'nodes': [" SCAN("['x', 'x', 'x']", "A", "null", "") "]}", 4, 4,
                  "'scan'", "array of 4 names");
    scan_tensors(&b);
    expect_bad_in(&b,
                  HEAD4 "'output': 'scan', 'nodes': [{'name': 'scan', 'op': 'selective_scan', 'inputs': ['x', 'x', "
                        "'x', 'x'], 'A_log': 'A', 'D': null, 'delta_bias': null}]}",
                  4, 4, "'scan'", "delta_softplus");
    /* B of another size (a stride-2 selection): found when shaping */
    scan_tensors(&b);
    expect_bad_shape(&b,
                     HEAD4 "'output': 'scan', 'nodes': [{'name': 'B', 'op': 'conv2d', 'inputs': ['x'], 'weight': "
                           "'sel', 'bias': null, 'stride': 2, 'padding': 0, 'dilation': 1, 'groups': 1}," SCAN(
                               "['x', 'x', 'B', 'B']", "A", "null", "") "]}",
                     4, 1, 4, 4, "'scan'", "input B 'B' is 1x2x2x2, expected 1x2x4x4");
    /* windows: the bound, inputs, like that does not match, a flattened input */
    scan_tensors(&b);
    expect_bad_in(&b,
                  HEAD4 "'output': 'p', 'nodes': [{'name': 'p', 'op': 'window_partition', 'inputs': ['x'], "
                        "'window': 0}]}",
                  4, 4, "'p'", "outside 1..64");
    scan_tensors(&b);
    expect_bad_in(&b,
                  HEAD4 "'output': 'p', 'nodes': [{'name': 'p', 'op': 'window_partition', 'inputs': ['x'], "
                        "'window': 65}]}",
                  4, 4, "'p'", "outside 1..64");
    scan_tensors(&b);
    expect_bad_in(&b,
                  HEAD4 "'output': 'r', 'nodes': [{'name': 'r', 'op': 'window_reverse', 'inputs': ['x'], "
                        "'window': 2}]}",
                  4, 4, "'r'", "array of 2 names");
    scan_tensors(&b);
    expect_bad_in(&b,
                  HEAD4 "'output': 'p', 'nodes': [{'name': 'f', 'op': 'flatten', 'inputs': ['x'], 'start_dim': 1},"
                        "{'name': 'p', 'op': 'window_partition', 'inputs': ['f'], 'window': 2}]}",
                  4, 4, "'p'", "flattened");
    /* reverse with another window than the partition's, or a like of another size */
    scan_tensors(&b);
    expect_bad_shape(&b,
                     HEAD4 "'output': 'r', 'nodes': [{'name': 'p', 'op': 'window_partition', 'inputs': ['x'], "
                           "'window': 3},{'name': 'r', 'op': 'window_reverse', 'inputs': ['p', 'x'], 'window': 2}]}",
                     4, 2, 5, 7, "'r'", "do not tile");
    scan_tensors(&b);
    expect_bad_shape(&b,
                     HEAD4 "'output': 'r', 'nodes': [{'name': 'p', 'op': 'window_partition', 'inputs': ['x'], "
                           "'window': 3},{'name': 'm', 'op': 'max_pool2d', 'inputs': ['x'], 'kernel': 2, 'stride': 2,"
                           " 'padding': 0, 'dilation': 1, 'ceil_mode': false},"
                           "{'name': 'r', 'op': 'window_reverse', 'inputs': ['p', 'm'], 'window': 3}]}",
                     4, 2, 12, 12, "'r'", "do not tile like 'm'");
}

/* ---- layer_norm, mul, scale, linear over positions ---- */

/* Values on tiny tensors against sums in double: a layer norm over 3 channels (weight, bias, eps
 * 0.5), a linear over C at each of 2 positions with two scales folded into it, and a squeeze-and-
 * excitation product (x * pool(x), the pool broadcast over H, W). */
static void test_channelwise(void **state) {
    (void)state;
    stb b;
    stb_init(&b);
    int64_t c3[1] = {3}, c2[1] = {2}, c211[3] = {2, 1, 1}, lw[2] = {2, 3};
    float lnw[3] = {1.0f, 2.0f, -1.0f}, lnb[3] = {0.0f, 0.5f, 1.0f}, wl[6] = {1, -1, 2, 0.5f, 0.25f, -3},
          bl[2] = {0.5f, -1.0f}, ls[2] = {2.0f, -0.5f}, sb[2] = {1.0f, 3.0f};
    stb_tensor(&b, "lnw", 1, c3, lnw);
    stb_tensor(&b, "lnb", 1, c3, lnb);
    stb_tensor(&b, "lw", 2, lw, wl);
    stb_tensor(&b, "lb", 1, c2, bl);
    stb_tensor(&b, "ls", 3, c211, ls);
    stb_tensor(&b, "sb", 1, c2, sb);
    cd_nn_graph *g;
    cd_error err;
    cd_status st =
        stb_load(&b,
                 "{'version': 1, 'input': {'name': 'x', 'channels': 3}, 'output': 'se', 'nodes': ["
                 "{'name': 'ln', 'op': 'layer_norm', 'inputs': ['x'], 'weight': 'lnw', 'bias': 'lnb', 'eps': 0.5},"
                 "{'name': 'fc', 'op': 'linear', 'inputs': ['ln'], 'weight': 'lw', 'bias': 'lb'},"
                 "{'name': 'gamma', 'op': 'scale', 'inputs': ['fc'], 'weight': 'ls', 'bias': null},"
                 "{'name': 'sc2', 'op': 'scale', 'inputs': ['gamma'], 'weight': 'ls', 'bias': 'sb'},"
                 "{'name': 'p', 'op': 'adaptive_avg_pool2d', 'inputs': ['sc2'], 'output_size': [1, 1]},"
                 "{'name': 'se', 'op': 'mul', 'inputs': ['sc2', 'p']}]}",
                 2, 3, &g, &err);
    if (st != CD_OK) fail_msg("%s", err.message);
    /* gamma folds into fc (its only reader), then sc2 into the result (fc's only reader again) */
    assert_int_equal(g->count, 5);
    assert_int_equal(find(g, "gamma"), -1);
    assert_int_equal(find(g, "sc2"), -1);
    assert_non_null(g->nodes[find(g, "fc")].bias);
    assert_int_equal(cd_nn_graph_shape(g, 1, 2, 1, 0, &err), CD_OK);
    assert_int_equal(g->nodes[find(g, "fc")].shape.c, 2);
    assert_int_equal(g->nodes[find(g, "fc")].shape.h, 2);
    float *arena = calloc((size_t)g->arena_floats, sizeof(float));
    const float x[3][2] = {{1.0f, -2.0f}, {2.0f, 0.5f}, {4.0f, 3.0f}}; /* [c][position] */
    for (int c = 0; c < 3; c++)
        for (int p = 0; p < 2; p++) arena[g->input_offset + c * 2 + p] = x[c][p];
    assert_int_equal(cd_nn_ref_run(g, arena, 1, &err), CD_OK);
    const float *y = arena + g->nodes[g->output].offset;
    double v[2][2]; /* sc2's output [o][position] */
    for (int p = 0; p < 2; p++) {
        double mean = (x[0][p] + x[1][p] + x[2][p]) / 3.0, var = 0, ln[3];
        for (int c = 0; c < 3; c++) var += (x[c][p] - mean) * (x[c][p] - mean) / 3.0;
        for (int c = 0; c < 3; c++) ln[c] = (x[c][p] - mean) / sqrt(var + 0.5) * lnw[c] + lnb[c];
        for (int o = 0; o < 2; o++) {
            double fc = bl[o];
            for (int c = 0; c < 3; c++) fc += wl[o * 3 + c] * ln[c];
            v[o][p] = fc * ls[o] * ls[o] + sb[o];
        }
    }
    for (int o = 0; o < 2; o++)
        for (int p = 0; p < 2; p++) {
            const double want = v[o][p] * (v[o][0] + v[o][1]) / 2.0;
            if (fabs(y[o * 2 + p] - want) > 1e-5 * fmax(1.0, fabs(want)))
                fail_msg("y[%d][%d] = %.7g, want %.7g", o, p, (double)y[o * 2 + p], want);
        }
    free(arena);
    cd_nn_graph_free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_maxpool_ceil),  cmocka_unit_test(test_avgpool_divisor),
        cmocka_unit_test(test_adaptive_bins), cmocka_unit_test(test_conv_direct),
        cmocka_unit_test(test_dwconv),        cmocka_unit_test(test_bn_fold),
        cmocka_unit_test(test_arena_plan),    cmocka_unit_test(test_bad_graphs),
        cmocka_unit_test(test_activations),   cmocka_unit_test(test_channelwise),
        cmocka_unit_test(test_scan_ops),      cmocka_unit_test(test_scan_bad_graphs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
