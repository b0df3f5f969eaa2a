/* Unit tests: the Vulkan kernels of the per-channel ops (shaders/nn_layer_norm.comp, nn_mul.comp,
 * nn_scale.comp) and the linear over C at every position (the GEMM as a 1x1 convolution) against the
 * C executor (nn/ref_norm.c, nn/ref_ops.c) on lavapipe, with the validation layer on, in shared,
 * staging and float16 memory:
 * - layer_norm with and without weight/bias, C of 1, 7 and 300, 1-pixel axes, batch 5: 1e-5 *
 *   max|ref| (float32 sums on the device, double in the reference; outputs are O(1) to O(10));
 * - mul with b of a's shape and b (N, C, 1, 1) from an adaptive average pool (the squeeze-and-
 *   excitation product), odd sizes: 1e-6 (one rounding each side); with a pool before it the pool's
 *   sums differ in order: 1e-5;
 * - scale with and without bias: 1e-6;
 * - linear on (N, I, H, W): 1e-4 like the convolutions (float32 sums in another order), with K not
 *   a multiple of 16 and N*H*W not a multiple of the 64-wide tile;
 * - a ConvNeXt block (depthwise 7x7, layer norm, linear, GELU, linear, scale, residual add) as one
 *   graph: 1e-4;
 * - layer norm, a broadcast mul, scale and linear on tensors of several bindings (the limit lowered
 *   to 32 KiB through cd_nn_vk_test_limits): chunks of whole images, 1e-4.
 * float16 storage (run_and_compare16): the input rounded to binary16 for the reference too; one op
 * then differs by its output's rounding (excess()); a graph whose intermediates are rounded on the
 * device but not in the reference allows rel16 more: 2^-10 per rounded intermediate through a mul or
 * scale (the relative error carries over), 8 roundings of max|ref| for the block (its layer norm
 * divides by the spread of rounded inputs and its GEMMs sum 4C rounded products). */
#include "test_util.h"

#include <math.h>
#include <stdbool.h>

#include "cirrdata/gpu.h"
#include "gpu_test_util.h"
#include "nn/graph.h"
#include "nn/vk_exec.h"
#include "nn_vk_test_util.h"

/* Under AddressSanitizer (-O0, lavapipe's pipeline compiles slower under the runtime's allocator) float16
 * runs in shared memory only: staging differs only in the host's upload path, which the float32 staging
 * run takes. */
#if defined(__SANITIZE_ADDRESS__)
#define NORM_ASAN 1
#else
#define NORM_ASAN 0
#endif

static cd_nn_node *add_layer_norm(cd_nn_graph *g, int in, int c, bool weight, bool bias, float eps, const char *name) {
    cd_nn_node *nd = add_node(g, CD_NN_LAYER_NORM, in, -1, name);
    nd->in_ch = nd->out_ch = c;
    nd->weight = weight ? rand_array(c, -2, 2) : NULL;
    nd->bias = bias ? rand_array(c, -1, 1) : NULL;
    nd->eps = eps;
    return nd;
}

static cd_nn_node *add_scale(cd_nn_graph *g, int in, int c, bool bias, const char *name) {
    cd_nn_node *nd = add_node(g, CD_NN_SCALE, in, -1, name);
    nd->in_ch = nd->out_ch = c;
    nd->weight = rand_array(c, -2, 2);
    nd->bias = bias ? rand_array(c, -1, 1) : NULL;
    return nd;
}

typedef struct ln_case {
    int n, c, h, w;
    bool weight, bias;
    float eps;
} ln_case;

static void layer_norm_cases(cd_gpu_memory_mode mode) {
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(mode, 0);
    static const ln_case cases[] = {
        {2, 7, 5, 3, true, true, 1e-5f},    {5, 300, 3, 1, true, false, 1e-6f}, {1, 1, 4, 4, false, true, 1e-5f},
        {3, 33, 1, 9, false, false, 1e-3f}, {1, 64, 17, 19, true, true, 1e-6f},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const ln_case *c = &cases[k];
        cd_nn_graph *g = new_graph(2, c->c);
        add_layer_norm(g, 0, c->c, c->weight, c->bias, c->eps, "ln");
        finish(g, c->n, c->h, c->w);
        char what[64];
        snprintf(what, sizeof what, "layer_norm %dx%dx%dx%d", c->n, c->c, c->h, c->w);
        run_and_compare16(ctx, g, 1e-5, 0, what);
        cd_nn_graph_free(g);
    }
    destroy_ctx(ctx);
}

static void mul_scale_cases(cd_gpu_memory_mode mode) {
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(mode, 0);
    /* b of a's shape: x * hardsigmoid(x) (hardsigmoid rounded on the device with fp16) */
    cd_nn_graph *g = new_graph(3, 5);
    add_node(g, CD_NN_HARDSIGMOID, 0, -1, "hs");
    add_node(g, CD_NN_MUL, 0, 1, "mul");
    finish(g, 3, 7, 13);
    run_and_compare16(ctx, g, 1e-6, ldexp(1, -10), "mul (equal shapes)");
    cd_nn_graph_free(g);
    /* squeeze-and-excitation: x * pool(x), the factor (N, C, 1, 1) broadcast over H, W */
    g = new_graph(3, 6);
    add_pool(g, CD_NN_ADAPTIVE_AVGPOOL2D, 0, 1, 1, 1, 0, 1, false, false, "pool")->out_h = 1;
    g->nodes[1].out_w = 1;
    add_node(g, CD_NN_MUL, 0, 1, "mul");
    finish(g, 5, 9, 11);
    run_and_compare16(ctx, g, 1e-5, ldexp(1, -10), "mul (broadcast)");
    cd_nn_graph_free(g);
    for (int bias = 0; bias < 2; bias++) {
        g = new_graph(2, 7);
        add_scale(g, 0, 7, bias, "scale");
        finish(g, 3, 5, 1);
        run_and_compare16(ctx, g, 1e-6, 0, bias ? "scale with bias" : "scale");
        cd_nn_graph_free(g);
    }
    destroy_ctx(ctx);
}

static void linear_cases(cd_gpu_memory_mode mode) {
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(mode, 0);
    static const int cases[][5] = {{2, 17, 9, 5, 7}, {1, 96, 64, 8, 8}, {3, 5, 130, 1, 3}}; /* n, I, O, h, w */
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const int *c = cases[k];
        cd_nn_graph *g = new_graph(2, c[1]);
        add_linear(g, 0, c[1], c[2], k != 1, "linear");
        finish(g, c[0], c[3], c[4]);
        assert_int_equal(g->nodes[1].shape.h, c[3]);
        assert_int_equal(g->nodes[1].shape.c, c[2]);
        char what[64];
        snprintf(what, sizeof what, "linear %dx%dx%dx%d -> %d", c[0], c[1], c[3], c[4], c[2]);
        run_and_compare(ctx, g, 1e-4, what);
        cd_nn_graph_free(g);
    }
    destroy_ctx(ctx);
}

/* ConvNeXt's CNBlock: x + scale(linear2(gelu(linear1(layer_norm(dwconv7x7(x)))))). */
static void block_cases(cd_gpu_memory_mode mode) {
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(mode, 0);
    const int c = 24;
    cd_nn_graph *g = new_graph(8, c);
    add_conv(g, 0, c, c, 7, 1, 3, 1, c, true, false, "dwconv");
    add_layer_norm(g, 1, c, true, true, 1e-6f, "norm");
    add_linear(g, 2, c, 4 * c, true, "pw1");
    add_node(g, CD_NN_GELU, 3, -1, "gelu");
    add_linear(g, 4, 4 * c, c, true, "pw2");
    add_scale(g, 5, c, false, "layer_scale");
    add_node(g, CD_NN_ADD, 0, 6, "add");
    finish(g, 2, 11, 10);
    run_and_compare16(ctx, g, 1e-4, 8 * ldexp(1, -11), "ConvNeXt block");
    cd_nn_graph_free(g);
    destroy_ctx(ctx);
}

/* Tensors larger than one binding may hold (the limit lowered to 32 KiB): every op runs in chunks of
 * whole images, the broadcast operand of mul in chunks of its own (N, C, 1, 1) rows. */
static void split_cases(cd_gpu_memory_mode mode) {
    require_vulkan();
    cd_nn_vk_test_limits(32 << 10, 64 << 10);
    cd_gpu_context *ctx = make_ctx(mode, 0);
    const int c = 40; /* 40 x 13 x 11 floats: 22 KiB an image, one image per chunk */
    cd_nn_graph *g = new_graph(8, c);
    add_layer_norm(g, 0, c, true, true, 1e-5f, "ln");
    add_pool(g, CD_NN_ADAPTIVE_AVGPOOL2D, 1, 1, 1, 1, 0, 1, false, false, "pool")->out_h = 1;
    g->nodes[2].out_w = 1;
    add_node(g, CD_NN_MUL, 1, 2, "se");
    add_scale(g, 3, c, true, "scale");
    add_linear(g, 4, c, 24, true, "pw");
    finish(g, 5, 13, 11);
    run_and_compare16(ctx, g, 1e-4, 8 * ldexp(1, -11), "chunked ln/mul/scale/linear");
    cd_nn_graph_free(g);
    destroy_ctx(ctx);
    cd_nn_vk_test_limits(0, 0);
}

static void all_cases(cd_gpu_memory_mode mode) {
    layer_norm_cases(mode);
    mul_scale_cases(mode);
    linear_cases(mode);
    block_cases(mode);
    split_cases(mode);
}

static void test_shared(void **state) {
    (void)state;
    all_cases(CD_GPU_MEMORY_SHARED);
}

static void test_staging(void **state) {
    (void)state;
    all_cases(CD_GPU_MEMORY_STAGING);
}

static void test_fp16(void **state) {
    (void)state;
    require_vulkan();
    g_fp16 = true;
    all_cases(CD_GPU_MEMORY_SHARED);
    if (!NORM_ASAN) all_cases(CD_GPU_MEMORY_STAGING);
    g_fp16 = false;
}

int main(void) {
    if (gpu_test_init()) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared),
        cmocka_unit_test(test_staging),
        cmocka_unit_test(test_fp16),
    };
    return gpu_test_result(cmocka_run_group_tests(tests, NULL, NULL));
}
