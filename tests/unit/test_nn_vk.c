/* Unit tests: the Vulkan inference executor (nn/vk_exec.c) against the C reference ops (nn/ref_ops.c)
 * on whatever device Vulkan offers (lavapipe in CI), with the validation layer and synchronization
 * validation on (meson's env): any validation message fails the test.
 *
 * - every op on random data with odd shapes (1-pixel axes, channel counts and N*OH*OW not multiples
 *   of the 64 x 64 tile, stride 2 with padding, dilation 2, groups 2 and depthwise, 1x1, ResNet's
 *   7x7/2 stem, linear with K not a multiple of 16), in shared and in staging memory. Convolution and
 *   linear: max|diff| <= 1e-4 * max|ref| (float32 sums in another order); pools and add: 1e-6
 *   relative (the same sums in the same order); softmax 1e-5 (the reference sums in double).
 * - depthwise convolutions on their own kernel (dwconv_cases: 1-pixel axes, stride 2 with padding,
 *   dilation 2, 3x3/5x5/7x7, a channel multiplier, 300 channels, batch 5, bias or not, ReLU or not),
 *   against the C depthwise kernel and the C grouped GEMM; the executor must report the kernel taken;
 *   with CIRRDATA_NN_NO_DWCONV the node runs on the GEMM; a fused add on the depthwise kernel
 * - a conv followed by an add (fused into the conv's epilogue) and an add of two pools (not fused)
 * - a small whole graph (conv-relu-maxpool-conv-add-adaptive avgpool-flatten-linear, plus a
 *   downsample branch) against cd_nn_ref_run, with and without conv+add fusion; replayed, then
 *   reshaped and re-recorded
 * - layers larger than one binding may hold (VGG-19's 392 MiB fc weight on lavapipe's 128 MiB
 *   maxStorageBufferRange), on small data: with the limits lowered through cd_nn_vk_test_limits
 *   (32 KiB per binding, 64 KiB per weight buffer) a conv, a grouped conv, a linear layer and the
 *   small graph run in output-channel blocks and chunks of images over several weight buffers,
 *   compared with the reference as above; limits one output channel's weights or one image cannot
 *   meet fail with CD_ERR_LIMIT naming the node
 * - impossible allocations: a tiny memory limit fails create, a huge batch fails run, with
 *   CD_ERR_NOMEM or CD_ERR_LIMIT and a message; the executor keeps working afterwards
 * - float16 storage (test_fp16): all of the above again with weights and input rounded to binary16
 *   (for the reference too): one op must then equal the reference up to its output's rounding,
 *   2^-11 |ref| per element, plus the float32 tolerance; graphs allow 8 more roundings of max|ref|
 *   for their rounded intermediates. The split cases run at half the lowered limits (the same blocks
 *   and chunks with 2-byte elements). Fallback: with CIRRDATA_NN_NO_FP16 (a device without 16-bit
 *   storage, pretended) fp16 asked for gives float32 and float32's accuracy.
 * - a pass past CIRRDATA_VK_TIMEOUT_S: an error, then a clean destroy
 * - the pass in pieces of bounded work: one submission per piece, the same logits; a timeout with
 *   every piece pending, then a clean destroy
 * Every run must have been computed by the device (check_fallback); no validation message, at
 * teardown neither. Exits 77 (skipped) only when there is no Vulkan device at all and none is
 * required (gpu_test_util.h). */
#include "test_util.h"

#include <math.h>
#include <stdbool.h>

#include "cirrdata/gpu.h"
#include "gpu_test_util.h"
#include "nn/graph.h"
#include "nn/vk_exec.h"
#include "nn_vk_test_util.h"

/* One op applied to a random (n, c, h, w) input, compared with its reference op called directly. */
typedef struct conv_case {
    int n, c, o, h, w, k, s, p, d, groups;
    bool bias, relu;
} conv_case;

static void conv_cases(cd_gpu_memory_mode mode) {
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(mode, 0);
    static const conv_case cases[] = {
        {2, 3, 5, 7, 1, 3, 1, 1, 1, 1, true, false},    /* 1-pixel-wide axis, tiny channels */
        {3, 4, 6, 9, 8, 3, 2, 1, 1, 1, true, true},     /* stride 2 with padding */
        {1, 5, 7, 11, 10, 3, 1, 2, 2, 1, true, false},  /* dilation 2 */
        {2, 6, 10, 8, 9, 3, 1, 1, 1, 2, true, true},    /* groups 2 */
        {2, 8, 8, 6, 6, 3, 1, 1, 1, 8, false, false},   /* depthwise */
        {3, 70, 130, 5, 6, 1, 1, 0, 1, 1, true, false}, /* 1x1, O over two tiles, K over several steps */
        {2, 3, 16, 33, 31, 7, 2, 3, 1, 1, false, true}, /* ResNet's stem: 7x7 stride 2 pad 3 */
        {1, 40, 3, 4, 4, 3, 1, 1, 1, 1, false, true},   /* K = 360, O = 3 */
        {5, 2, 3, 1, 1, 1, 1, 0, 1, 1, true, false},    /* 1x1 images */
        {2, 3, 16, 20, 17, 5, 2, 2, 1, 1, true, true},  /* 5x5 stride 2, padding 2 */
        {2, 3, 24, 21, 18, 4, 4, 0, 1, 1, false, true}, /* cirrnet-small's stem: 4x4 stride 4, no padding, odd sizes */
        {1, 16, 32, 9, 9, 1, 2, 0, 1, 1, true, false},  /* downsample: 1x1 stride 2 */
        {1, 65, 66, 3, 70, 3, 1, 1, 1, 1, true, false}, /* 65x66 channels, wide rows (N = 210) */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const conv_case *c = &cases[i];
        cd_nn_graph *g = new_graph(2, c->c);
        add_conv(g, 0, c->c, c->o, c->k, c->s, c->p, c->d, c->groups, c->bias, c->relu, "conv");
        finish(g, c->n, c->h, c->w);
        char what[64];
        snprintf(what, sizeof what, "conv case %zu", i);
        run_and_compare(ctx, g, 1e-4, what);
        cd_nn_graph_free(g);
    }
    /* linear: K not a multiple of 16, N = batch over a tile, through a flatten view */
    static const int lin[][4] = {{3, 8, 5, 7}, {70, 513, 1, 65}, {1, 1, 1, 1}};
    for (size_t i = 0; i < sizeof lin / sizeof lin[0]; i++) {
        const int n = lin[i][0], c = lin[i][1], hw = lin[i][2], o = lin[i][3];
        cd_nn_graph *g = new_graph(3, c);
        add_node(g, CD_NN_FLATTEN, 0, -1, "flatten");
        add_linear(g, 1, c * hw * hw, o, i != 1, "fc");
        finish(g, n, hw, hw);
        char what[64];
        snprintf(what, sizeof what, "linear case %zu", i);
        run_and_compare(ctx, g, 1e-4, what);
        cd_nn_graph_free(g);
    }
    destroy_ctx(ctx);
}

/* Depthwise convolutions on their own kernel (shaders/nn_dwconv.comp), compared with the C executor's
 * depthwise kernel and with its grouped GEMM (CIRRDATA_NN_NO_DWCONV for the reference only), 1e-4 of
 * max|ref| as the other convolutions; the executor must report the node as run on the depthwise
 * kernel. Then the same node kept on the GEMM (CIRRDATA_NN_NO_DWCONV at create), and a depthwise conv
 * whose add is fused into it (the residual binding). */
static void dwconv_cases(cd_gpu_memory_mode mode) {
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(mode, 0);
    static const conv_case cases[] = {
        /* n, c, o, h, w, k, s, p, d, groups, bias, relu */
        {2, 5, 5, 1, 9, 3, 1, 1, 1, 5, true, true},        /* 1-pixel-high image */
        {1, 4, 4, 11, 1, 3, 1, 1, 1, 4, false, false},     /* 1-pixel-wide image */
        {3, 7, 7, 13, 10, 3, 2, 1, 1, 7, true, false},     /* stride 2 with padding */
        {1, 6, 6, 11, 12, 3, 1, 2, 2, 6, false, true},     /* dilation 2 */
        {2, 9, 9, 17, 19, 5, 1, 2, 1, 9, true, false},     /* 5x5 */
        {2, 10, 10, 20, 23, 7, 1, 3, 1, 10, true, true},   /* ConvNeXt's 7x7 */
        {2, 4, 12, 9, 9, 3, 2, 0, 1, 4, true, false},      /* channel multiplier 3, no padding */
        {1, 300, 300, 5, 5, 3, 1, 1, 1, 300, false, true}, /* 300 channels: not a multiple of the workgroup */
        {5, 33, 33, 7, 6, 3, 2, 1, 1, 33, true, true},     /* batch 5, stride 2 */
    };
    g_dw_expect = 1;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const conv_case *c = &cases[i];
        cd_nn_graph *g = new_graph(2, c->c);
        add_conv(g, 0, c->c, c->o, c->k, c->s, c->p, c->d, c->groups, c->bias, c->relu, "dwconv");
        finish(g, c->n, c->h, c->w);
        char what[64];
        for (int ref = 0; ref < 2; ref++) {
            g_ref_gemm = ref == 1;
            snprintf(what, sizeof what, "depthwise case %zu (reference: %s)", i, ref ? "GEMM" : "depthwise");
            run_and_compare(ctx, g, 1e-4, what);
        }
        g_ref_gemm = false;
        cd_nn_graph_free(g);
    }
    /* disabled: the grouped GEMM runs the node */
    g_dw_expect = 0;
    setenv("CIRRDATA_NN_NO_DWCONV", "1", 1);
    cd_nn_graph *g = new_graph(2, 10);
    add_conv(g, 0, 10, 10, 7, 1, 3, 1, 10, true, true, "dwconv");
    finish(g, 2, 9, 8);
    run_and_compare(ctx, g, 1e-4, "depthwise on the GEMM");
    unsetenv("CIRRDATA_NN_NO_DWCONV");
    cd_nn_graph_free(g);
    /* x -> depthwise 3x3 -> add x -> relu: the add is fused into the depthwise kernel */
    g_dw_expect = 1;
    g = new_graph(3, 11);
    add_conv(g, 0, 11, 11, 3, 1, 1, 1, 11, true, false, "dwconv");
    add_node(g, CD_NN_ADD, 1, 0, "add")->relu = true;
    finish(g, 3, 7, 9);
    run_and_compare(ctx, g, 1e-4, "depthwise + fused add");
    cd_nn_graph_free(g);
    g_dw_expect = -1;
    destroy_ctx(ctx);
}

static void test_conv_shared(void **state) {
    (void)state;
    conv_cases(CD_GPU_MEMORY_SHARED);
    dwconv_cases(CD_GPU_MEMORY_SHARED);
}

static void test_conv_staging(void **state) {
    (void)state;
    conv_cases(CD_GPU_MEMORY_STAGING);
    dwconv_cases(CD_GPU_MEMORY_STAGING);
}

static void test_pools(void **state) {
    (void)state;
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    typedef struct {
        cd_nn_op op;
        int kh, kw, s, p, d;
        bool ceil_mode, cip;
        int n, c, h, w;
    } pool_case;
    static const pool_case cases[] = {
        {CD_NN_MAXPOOL2D, 3, 3, 2, 1, 1, false, false, 2, 3, 17, 16}, /* ResNet's */
        {CD_NN_MAXPOOL2D, 3, 3, 2, 0, 1, true, false, 1, 2, 8, 9},    /* ceil mode */
        {CD_NN_MAXPOOL2D, 3, 2, 1, 1, 2, false, false, 1, 3, 9, 7},   /* dilation 2 */
        {CD_NN_MAXPOOL2D, 2, 2, 2, 0, 1, false, false, 3, 5, 2, 7},   /* one output row */
        {CD_NN_AVGPOOL2D, 1, 3, 1, 0, 1, false, true, 2, 3, 1, 7},    /* 1-pixel axis */
        {CD_NN_AVGPOOL2D, 3, 3, 2, 1, 1, false, true, 2, 3, 9, 10},
        {CD_NN_AVGPOOL2D, 3, 3, 2, 1, 1, false, false, 2, 3, 9, 10},
        {CD_NN_AVGPOOL2D, 3, 3, 2, 1, 1, true, true, 1, 4, 8, 8}, /* ceil mode: a window past the padding */
        {CD_NN_AVGPOOL2D, 3, 3, 2, 1, 1, true, false, 1, 4, 8, 8},
        {CD_NN_AVGPOOL2D, 2, 2, 2, 0, 1, false, true, 2, 5, 7, 6},
        {CD_NN_ADAPTIVE_AVGPOOL2D, 1, 1, 1, 0, 1, false, false, 3, 7, 7, 7},
        {CD_NN_ADAPTIVE_AVGPOOL2D, 3, 2, 1, 0, 1, false, false, 2, 3, 7, 5},
        {CD_NN_ADAPTIVE_AVGPOOL2D, 4, 4, 1, 0, 1, false, false, 2, 3, 3, 3}, /* bins overlap (upsampling) */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const pool_case *c = &cases[i];
        cd_nn_graph *g = new_graph(2, c->c);
        cd_nn_node *nd = add_pool(g, c->op, 0, c->kh, c->kw, c->s, c->p, c->d, c->ceil_mode, c->cip, "pool");
        if (c->op == CD_NN_ADAPTIVE_AVGPOOL2D) {
            nd->out_h = c->kh;
            nd->out_w = c->kw;
        }
        finish(g, c->n, c->h, c->w);
        char what[64];
        snprintf(what, sizeof what, "pool case %zu", i);
        run_and_compare(ctx, g, 1e-6, what);
        cd_nn_graph_free(g);
    }
    /* softmax over channels, 1e-5 of the largest probability */
    cd_nn_graph *g = new_graph(2, 7);
    add_node(g, CD_NN_SOFTMAX, 0, -1, "softmax");
    finish(g, 3, 2, 5);
    run_and_compare(ctx, g, 1e-5, "softmax");
    cd_nn_graph_free(g);
    destroy_ctx(ctx);
}

/* Each activation alone on a random input, against cd_nn_ref_unary (through cd_nn_ref_run), in the
 * given memory mode: inputs in [-2, 2], then in [-12, 12] (past the hard ops' +-3 corners and into
 * GELU's and SiLU's flat tails). Tolerance 1e-6 * max|ref|: the kernels compute in float32 with the
 * device's exp (Vulkan allows 3 + 2|x| ulp) and, for GELU, A&S 7.1.26's erf (absolute error
 * 1.5e-7, times |x| / 2 <= max|ref| / 2); lavapipe stays near 1e-7 * max|ref|. fp16: only the
 * output's rounding, which excess() allows. */
static void activation_cases(cd_gpu_memory_mode mode) {
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(mode, 0);
    static const cd_nn_op ops[] = {CD_NN_GELU, CD_NN_GELU_TANH, CD_NN_SILU, CD_NN_HARDSWISH, CD_NN_HARDSIGMOID};
    for (int r = 0; r < 2; r++)
        for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
            g_in_range = r ? 12.0f : 2.0f;
            cd_nn_graph *g = new_graph(2, 5);
            add_node(g, ops[k], 0, -1, cd_nn_op_name(ops[k]));
            finish(g, 3, 7, 13);
            run_and_compare16(ctx, g, 1e-6, 0, cd_nn_op_name(ops[k]));
            cd_nn_graph_free(g);
        }
    g_in_range = 2;
    destroy_ctx(ctx);
}

static void test_activations(void **state) {
    (void)state;
    activation_cases(CD_GPU_MEMORY_SHARED);
    activation_cases(CD_GPU_MEMORY_STAGING);
}

static void test_add(void **state) {
    (void)state;
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    /* add of two pools (a plain add dispatch), with and without ReLU */
    for (int relu = 0; relu < 2; relu++) {
        cd_nn_graph *g = new_graph(4, 3);
        add_pool(g, CD_NN_MAXPOOL2D, 0, 3, 3, 1, 1, 1, false, false, "a");
        add_pool(g, CD_NN_AVGPOOL2D, 0, 3, 3, 1, 1, 1, false, true, "b");
        add_node(g, CD_NN_ADD, 1, 2, "add")->relu = relu;
        finish(g, 2, 5, 67);
        /* fp16: the average pool's output is rounded (2^-11 of it, and |avg| <= max|x| = 2 <~ max|ref|)
         * before the add */
        run_and_compare16(ctx, g, 1e-6, 0x1p-10, relu ? "add+relu" : "add");
        cd_nn_graph_free(g);
    }
    /* conv -> add(+relu) with the residual computed earlier: fused into the conv's epilogue */
    for (int order = 0; order < 2; order++) {
        cd_nn_graph *g = new_graph(4, 6);
        add_pool(g, CD_NN_MAXPOOL2D, 0, 3, 3, 1, 1, 1, false, false, "identity");
        add_conv(g, 0, 6, 6, 3, 1, 1, 1, 1, true, false, "conv");
        cd_nn_node *a = order ? add_node(g, CD_NN_ADD, 2, 1, "add") : add_node(g, CD_NN_ADD, 1, 2, "add");
        a->relu = true;
        finish(g, 2, 9, 11);
        run_and_compare(ctx, g, 1e-4, "conv+add");
        cd_nn_graph_free(g);
    }
    /* a standalone ReLU */
    cd_nn_graph *g = new_graph(2, 4);
    add_node(g, CD_NN_RELU, 0, -1, "relu");
    finish(g, 2, 3, 3);
    run_and_compare(ctx, g, 0, "relu");
    cd_nn_graph_free(g);
    destroy_ctx(ctx);
}

/* conv-relu-maxpool-[conv-relu-conv (+) downsample conv]-add-relu-adaptive avgpool-flatten-linear */
static cd_nn_graph *small_net(void) {
    cd_nn_graph *g = new_graph(12, 3);
    add_conv(g, 0, 3, 8, 5, 2, 2, 1, 1, true, true, "conv1");                 /* 1 */
    add_pool(g, CD_NN_MAXPOOL2D, 1, 3, 3, 2, 1, 1, false, false, "maxpool");  /* 2 */
    add_conv(g, 2, 8, 16, 3, 2, 1, 1, 1, true, true, "l1c1");                 /* 3 */
    add_conv(g, 3, 16, 16, 3, 1, 1, 1, 1, true, false, "l1c2");               /* 4 */
    add_conv(g, 2, 8, 16, 1, 2, 0, 1, 1, true, false, "l1down");              /* 5 */
    add_node(g, CD_NN_ADD, 4, 5, "add")->relu = true;                         /* 6 */
    add_conv(g, 6, 16, 16, 3, 1, 1, 1, 1, true, false, "l2c1");               /* 7 */
    add_node(g, CD_NN_ADD, 7, 6, "add2")->relu = true;                        /* 8 */
    cd_nn_node *ap = add_node(g, CD_NN_ADAPTIVE_AVGPOOL2D, 8, -1, "avgpool"); /* 9 */
    ap->out_h = ap->out_w = 1;
    add_node(g, CD_NN_FLATTEN, 9, -1, "flatten"); /* 10 */
    add_linear(g, 10, 16, 3, true, "fc");         /* 11 */
    return g;
}

/* fp16 graphs: each of small_net's ~7 stored stages between input and logits rounds by <= 2^-11 of
 * its values, and the random layers (PyTorch's init range) do not amplify: 8 roundings of max|ref|
 * are allowed beyond the output's own (measured: ~1e-3 of max|ref|). */
#define GRAPH_REL16 (8 * 0x1p-11)

static void test_graph(void **state) {
    (void)state;
    require_vulkan();
    for (int mode = 0; mode < 2; mode++) {
        /* shared memory with conv+add fusion, staging memory without (plain add dispatches) */
        if (mode) setenv("CIRRDATA_NN_NO_FUSE", "1", 1);
        cd_gpu_context *ctx = make_ctx(mode ? CD_GPU_MEMORY_STAGING : CD_GPU_MEMORY_SHARED, 0);
        cd_nn_graph *g = small_net();
        finish(g, 3, 37, 29);
        cd_error err;
        cd_nn_vk *vk = make_vk(ctx, g);
        const double rel = 1e-4 + (g_fp16 ? GRAPH_REL16 : 0);
        /* three shapes, the first one twice more after the others (replay and re-record) */
        const int64_t shapes[4][3] = {{3, 37, 29}, {1, 64, 64}, {5, 16, 9}, {3, 37, 29}};
        for (int s = 0; s < 4; s++) {
            assert_int_equal(cd_nn_graph_shape(g, shapes[s][0], shapes[s][1], shapes[s][2], 0, &err), CD_OK);
            const int64_t nin = numel(&g->input_shape), nout = numel(&g->nodes[g->output].shape);
            assert_int_equal(nout, shapes[s][0] * 3);
            float *x = rand_array(nin, -1, 1);
            if (g_fp16) round16_array(x, nin);
            float *arena = calloc((size_t)g->arena_floats, sizeof(float));
            float *got = malloc(sizeof(float) * (size_t)nout);
            memcpy(arena + g->input_offset, x, sizeof(float) * (size_t)nin);
            assert_int_equal(cd_nn_ref_run(g, arena, 1, &err), CD_OK);
            const float *ref = arena + g->nodes[g->output].offset;
            for (int rep = 0; rep < 2; rep++) {
                memset(got, 0xff, sizeof(float) * (size_t)nout);
                fallback_mark();
                cd_status st = cd_nn_vk_run(vk, g, x, got, &err);
                if (st != CD_OK) fprintf(stderr, "cd_nn_vk_run: %s\n", err.message);
                assert_int_equal(st, CD_OK);
                check_fallback(0, true);
                const double m = max_abs(ref, nout), d = excess(got, ref, nout);
                if (!(d <= rel * m) || getenv("CIRRDATA_TEST_VERBOSE"))
                    fprintf(stderr, "graph shape %d%s: max|diff| %.3g max|ref| %.3g\n", s, g_fp16 ? " (fp16)" : "", d,
                            m);
                assert_true(d <= rel * m);
                assert_true(m > 0);
            }
            assert_true(cd_nn_vk_last_kernel_ms(vk) >= 0);
            free(x);
            free(arena);
            free(got);
        }
        check_validation(ctx);
        cd_nn_vk_destroy(vk);
        cd_nn_graph_free(g);
        destroy_ctx(ctx);
        unsetenv("CIRRDATA_NN_NO_FUSE");
    }
}

static void test_too_large(void **state) {
    (void)state;
    require_vulkan();
    cd_error err;
    /* a memory limit smaller than the weights: create fails with a message */
    {
        cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_STAGING, 4096);
        cd_nn_graph *g = small_net();
        finish(g, 1, 16, 16);
        cd_nn_vk *vk = (cd_nn_vk *)1;
        memset(&err, 0, sizeof err);
        cd_status st = cd_nn_vk_create(ctx, g, false, NULL, &vk, &err);
        assert_true(st == CD_ERR_NOMEM || st == CD_ERR_LIMIT);
        assert_null(vk);
        assert_true(strlen(err.message) > 10);
        check_validation(ctx);
        cd_nn_graph_free(g);
        destroy_ctx(ctx);
    }
    /* a limit that holds the weights but not a large batch's activations: run fails, then a small
     * batch works with the same executor */
    {
        cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_SHARED, 8u << 20);
        cd_nn_graph *g = small_net();
        finish(g, 1, 16, 16);
        cd_nn_vk *vk = NULL;
        assert_int_equal(cd_nn_vk_create(ctx, g, false, NULL, &vk, &err), CD_OK);
        assert_int_equal(cd_nn_graph_shape(g, 64, 128, 128, 0, &err), CD_OK);
        float *x = calloc((size_t)numel(&g->input_shape), sizeof(float));
        float out[3 * 64];
        memset(&err, 0, sizeof err);
        cd_status st = cd_nn_vk_run(vk, g, x, out, &err);
        assert_true(st == CD_ERR_NOMEM || st == CD_ERR_LIMIT);
        assert_true(strlen(err.message) > 10);
        fprintf(stderr, "expected failure: %s\n", err.message);
        free(x);
        assert_int_equal(cd_nn_graph_shape(g, 1, 16, 16, 0, &err), CD_OK);
        float x1[3 * 16 * 16] = {0};
        assert_int_equal(cd_nn_vk_run(vk, g, x1, out, &err), CD_OK);
        check_validation(ctx);
        cd_nn_vk_destroy(vk);
        cd_nn_graph_free(g);
        destroy_ctx(ctx);
    }
    /* no limit: a batch whose activations exceed the device's memory heap */
    {
        cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
        cd_nn_graph *g = small_net();
        finish(g, 1, 16, 16);
        cd_nn_vk *vk = NULL;
        assert_int_equal(cd_nn_vk_create(ctx, g, false, NULL, &vk, &err), CD_OK);
        assert_int_equal(cd_nn_graph_shape(g, 1 << 20, 4096, 4096, 0, &err), CD_OK); /* ~10^14 bytes */
        float dummy[3];
        memset(&err, 0, sizeof err);
        /* the input is never read: the allocation fails first */
        cd_status st = cd_nn_vk_run(vk, g, dummy, dummy, &err);
        assert_true(st == CD_ERR_NOMEM || st == CD_ERR_LIMIT);
        fprintf(stderr, "expected failure: %s\n", err.message);
        check_validation(ctx);
        cd_nn_vk_destroy(vk);
        cd_nn_graph_free(g);
        destroy_ctx(ctx);
    }
}

static void split_cases(cd_gpu_memory_mode mode) {
    cd_gpu_context *ctx = make_ctx(mode, 0);
    /* 16 -> 100, 3x3: a 56.25 KiB weight, so blocks of 56 and 44 channels; 11.7 KiB per output image,
     * so the batch of 5 goes 2 + 2 + 1 images */
    cd_nn_graph *g = new_graph(2, 16);
    add_conv(g, 0, 16, 100, 3, 1, 1, 1, 1, true, true, "conv");
    finish(g, 5, 6, 5);
    run_and_compare(ctx, g, 1e-4, "split conv");
    cd_nn_graph_free(g);
    /* groups 2: each group's 28 KiB fits, the whole does not: one dispatch per group */
    g = new_graph(2, 32);
    add_conv(g, 0, 32, 100, 3, 1, 1, 1, 2, true, false, "gconv");
    finish(g, 3, 6, 5);
    run_and_compare(ctx, g, 1e-4, "split grouped conv");
    cd_nn_graph_free(g);
    /* linear 480 -> 100: 1920 bytes per output channel, so blocks of 17 (not whole tiles) with bias
     * slices at unaligned channels; the batch of 70 in chunks of 16 images */
    g = new_graph(3, 16);
    add_node(g, CD_NN_FLATTEN, 0, -1, "flatten");
    add_linear(g, 1, 16 * 6 * 5, 100, true, "fc");
    finish(g, 70, 6, 5);
    run_and_compare(ctx, g, 1e-4, "split linear");
    cd_nn_graph_free(g);
    /* the whole small graph: pools, fused and plain adds, in chunks of images */
    g = small_net();
    finish(g, 9, 37, 29);
    run_and_compare16(ctx, g, 1e-4, GRAPH_REL16, "split graph");
    cd_nn_graph_free(g);
    destroy_ctx(ctx);
}

static void test_split(void **state) {
    (void)state;
    require_vulkan();
    cd_nn_vk_test_limits(32 << 10, 64 << 10);
    split_cases(CD_GPU_MEMORY_SHARED);
    split_cases(CD_GPU_MEMORY_STAGING);
    setenv("CIRRDATA_NN_NO_FUSE", "1", 1);
    split_cases(CD_GPU_MEMORY_AUTO);
    unsetenv("CIRRDATA_NN_NO_FUSE");
    /* 2 KiB per binding: a 4000-byte weight row cannot be split further; a 4 KiB image neither */
    cd_nn_vk_test_limits(2048, 0);
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    cd_error err;
    cd_nn_graph *g = new_graph(3, 1000);
    add_node(g, CD_NN_FLATTEN, 0, -1, "flatten");
    add_linear(g, 1, 1000, 4, true, "wide_fc");
    finish(g, 1, 1, 1);
    cd_nn_vk *vk = (cd_nn_vk *)1;
    memset(&err, 0, sizeof err);
    assert_int_equal(cd_nn_vk_create(ctx, g, false, NULL, &vk, &err), CD_ERR_LIMIT);
    assert_null(vk);
    fprintf(stderr, "expected failure: %s\n", err.message);
    assert_non_null(strstr(err.message, "wide_fc"));
    cd_nn_graph_free(g);
    g = new_graph(2, 4);
    add_conv(g, 0, 4, 4, 1, 1, 0, 1, 1, true, false, "big_image");
    finish(g, 2, 16, 16);
    assert_int_equal(cd_nn_vk_create(ctx, g, false, NULL, &vk, &err), CD_OK);
    float x[2 * 4 * 16 * 16] = {0}, y[2 * 4 * 16 * 16];
    memset(&err, 0, sizeof err);
    assert_int_equal(cd_nn_vk_run(vk, g, x, y, &err), CD_ERR_LIMIT);
    fprintf(stderr, "expected failure: %s\n", err.message);
    assert_non_null(strstr(err.message, "big_image"));
    /* the executor still works once the input is small enough */
    assert_int_equal(cd_nn_graph_shape(g, 1, 4, 4, 0, &err), CD_OK);
    assert_int_equal(cd_nn_vk_run(vk, g, x, y, &err), CD_OK);
    check_validation(ctx);
    cd_nn_vk_destroy(vk);
    cd_nn_graph_free(g);
    destroy_ctx(ctx);
    cd_nn_vk_test_limits(0, 0);
}

/* A pass that does not finish within CIRRDATA_VK_TIMEOUT_S: CD_ERR_IO naming the timeout, later runs
 * fail (the command buffer is still pending), and destroying the executor and the context waits for
 * the device before it frees what the pending work uses: no crash, no validation message (before,
 * cd_nn_vk_destroy freed buffers and pipelines in use: the layer reported them, lavapipe could
 * crash). In shared and staging memory. */
static void test_timeout(void **state) {
    (void)state;
    require_vulkan();
    cd_error err;
    for (int mode = 0; mode < 2; mode++) {
        cd_gpu_context *ctx = make_ctx(mode ? CD_GPU_MEMORY_STAGING : CD_GPU_MEMORY_SHARED, 0);
        cd_nn_graph *g = small_net();
        finish(g, 8, 96, 96);
        cd_nn_vk *vk = make_vk(ctx, g);
        float *x = rand_array(numel(&g->input_shape), -1, 1), y[3 * 8];
        setenv("CIRRDATA_VK_TIMEOUT_S", "0.000001", 1);
        cd_status st = cd_nn_vk_run(vk, g, x, y, &err);
        unsetenv("CIRRDATA_VK_TIMEOUT_S");
        fprintf(stderr, "expected failure: %s\n", err.message);
        assert_int_equal(st, CD_ERR_IO);
        assert_non_null(strstr(err.message, "timeout"));
        assert_int_equal(cd_nn_vk_run(vk, g, x, y, &err), CD_ERR_IO);
        assert_non_null(strstr(err.message, "lost"));
        cd_nn_vk_destroy(vk);
        destroy_ctx(ctx);
        cd_nn_graph_free(g);
        free(x);
    }
}

/* The pass in pieces of bounded work (issue: VGG-19 at batch 2, 256 x 256, ran past the whole-pass
 * timeout on lavapipe): with CIRRDATA_NN_VK_PIECE_FLOP=1 every dispatched node of small_net is a
 * piece of its own (8: conv1, maxpool, l1c1, l1c2, l1down+add, l2c1+add2, avgpool, fc), each its own
 * submission, and the logits still equal the reference, replayed and re-recorded; with the default
 * budget the small pass is one piece. Then the timeout with every piece pending: the first wait
 * fails naming the timeout, destroy waits for the rest (no validation message). */
static uint64_t submissions(void) {
    cd_gpu_stats s;
    cd_gpu_process_stats(&s);
    return s.submissions;
}

static void test_pieces(void **state) {
    (void)state;
    require_vulkan();
    cd_error err;
    for (int mode = 0; mode < 2; mode++) {
        cd_gpu_context *ctx = make_ctx(mode ? CD_GPU_MEMORY_STAGING : CD_GPU_MEMORY_SHARED, 0);
        cd_nn_graph *g = small_net();
        finish(g, 3, 37, 29);
        cd_nn_vk *vk = make_vk(ctx, g);
        const int64_t nin = numel(&g->input_shape), nout = numel(&g->nodes[g->output].shape);
        float *x = rand_array(nin, -1, 1), *got = malloc(sizeof(float) * (size_t)nout);
        float *arena = calloc((size_t)g->arena_floats, sizeof(float));
        memcpy(arena + g->input_offset, x, sizeof(float) * (size_t)nin);
        assert_int_equal(cd_nn_ref_run(g, arena, 1, &err), CD_OK);
        const float *ref = arena + g->nodes[g->output].offset;
        const double m = max_abs(ref, nout);
        for (int run = 0; run < 4; run++) {
            const bool pieces = run < 3; /* runs 0-2: one node per piece (1 and 2 replay), 3: re-recorded */
            if (pieces)
                setenv("CIRRDATA_NN_VK_PIECE_FLOP", "1", 1);
            else
                unsetenv("CIRRDATA_NN_VK_PIECE_FLOP");
            if (run == 3) { /* another shape and back: recorded again with the default budget */
                assert_int_equal(cd_nn_graph_shape(g, 1, 16, 16, 0, &err), CD_OK);
                float *x1 = rand_array(numel(&g->input_shape), -1, 1), y1[3];
                assert_int_equal(cd_nn_vk_run(vk, g, x1, y1, &err), CD_OK);
                free(x1);
                assert_int_equal(cd_nn_graph_shape(g, 3, 37, 29, 0, &err), CD_OK);
            }
            const uint64_t before = submissions();
            memset(got, 0xff, sizeof(float) * (size_t)nout);
            cd_status st = cd_nn_vk_run(vk, g, x, got, &err);
            if (st != CD_OK) fprintf(stderr, "cd_nn_vk_run: %s\n", err.message);
            assert_int_equal(st, CD_OK);
            assert_int_equal(submissions() - before, pieces ? 8 : 1);
            assert_true(excess(got, ref, nout) <= 1e-4 * m);
            assert_true(m > 0);
        }
        /* the timeout with all 8 pieces submitted: the first wait fails, the rest stay pending */
        assert_int_equal(cd_nn_graph_shape(g, 2, 64, 64, 0, &err), CD_OK);
        float *x2 = rand_array(numel(&g->input_shape), -1, 1), y2[6];
        setenv("CIRRDATA_NN_VK_PIECE_FLOP", "1", 1);
        setenv("CIRRDATA_VK_TIMEOUT_S", "0.000001", 1);
        cd_status st = cd_nn_vk_run(vk, g, x2, y2, &err);
        unsetenv("CIRRDATA_VK_TIMEOUT_S");
        unsetenv("CIRRDATA_NN_VK_PIECE_FLOP");
        fprintf(stderr, "expected failure: %s\n", err.message);
        assert_int_equal(st, CD_ERR_IO);
        assert_non_null(strstr(err.message, "piece 1 of 8"));
        assert_non_null(strstr(err.message, "timeout"));
        cd_nn_vk_destroy(vk);
        destroy_ctx(ctx);
        cd_nn_graph_free(g);
        free(x);
        free(x2);
        free(got);
        free(arena);
    }
}

/* Every test above again with float16 storage (see run_and_compare16), then the fallback. */
static void test_fp16(void **state) {
    require_vulkan();
    g_fp16 = true;
    conv_cases(CD_GPU_MEMORY_SHARED);
    conv_cases(CD_GPU_MEMORY_STAGING);
    dwconv_cases(CD_GPU_MEMORY_SHARED);
    dwconv_cases(CD_GPU_MEMORY_STAGING);
    test_pools(state);
    test_add(state);
    activation_cases(CD_GPU_MEMORY_SHARED);
    activation_cases(CD_GPU_MEMORY_STAGING);
    test_graph(state);
    /* half the fp32 limits: the same blocks and chunks as test_split's, with 2-byte elements */
    cd_nn_vk_test_limits(16 << 10, 32 << 10);
    split_cases(CD_GPU_MEMORY_SHARED);
    split_cases(CD_GPU_MEMORY_STAGING);
    cd_nn_vk_test_limits(0, 0);
    g_fp16 = false;
    /* a device without 16-bit storage (pretended): float32, fp16_used false, float32 accuracy */
    setenv("CIRRDATA_NN_NO_FP16", "1", 1);
    g_ask16 = true;
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    cd_nn_graph *g = small_net();
    finish(g, 2, 20, 23);
    run_and_compare(ctx, g, 1e-4, "fp16 asked, fp32 used"); /* float32's tolerance: float16 would miss it */
    g_ask16 = false;
    unsetenv("CIRRDATA_NN_NO_FP16");
    cd_nn_graph_free(g);
    destroy_ctx(ctx);
}

int main(void) {
    if (gpu_test_init()) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_shared), cmocka_unit_test(test_conv_staging), cmocka_unit_test(test_pools),
        cmocka_unit_test(test_add),         cmocka_unit_test(test_graph),        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_split),       cmocka_unit_test(test_fp16),         cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_pieces),      cmocka_unit_test(test_activations),
    };
    return gpu_test_result(cmocka_run_group_tests(tests, NULL, NULL));
}
