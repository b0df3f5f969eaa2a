/* Unit tests: the Vulkan slice, concat and attention kernels (shaders/nn_channel_copy.comp,
 * shaders/nn_attention.comp, dispatched by nn/vk_exec.c) against the C reference
 * (nn/ref_attention.c) through cd_nn_ref_run, on whatever device Vulkan offers (lavapipe in CI), with
 * the validation layer and synchronization validation on (meson's env): any validation message fails.
 *
 * - slice alone (a middle channel range, batch 3) and concat alone (a conv's output and the input,
 *   batch 2): copies, so 1e-6 of max|ref| (exact in practice)
 * - window attention as MambaVision computes it (one 1x1 qkv conv, three slices, attention, a concat
 *   with the input): 7x7 = 49 and 14x14 = 196 tokens (not multiples of the kernel's 16-key tiles),
 *   heads 2/3/5, head dimensions 8 and 32, C = 40 and 24 (not multiples of the 64-row workgroup), batch > 1
 * - spatial-reduction attention as PVTv2 computes it (q conv, a stride-sr conv, kv conv, two slices):
 *   Lq = 256 with Lk = 16, Lq = 143 with Lk = 6, heads 1/2/5, head dimensions 8 and 64
 * - head dimensions 6 and 102 (not multiples of 4: padded), 102 (q read from the buffer, not staged
 *   in shared memory: lavapipe has no room for it)
 *   Attention: 1e-5 of max|ref| (float32, exp of the device and the sums in another order: ~1.5e-7
 *   seen). float16 storage rounds the conv outputs that become q, k and v as well (each 2^-11
 *   relative); the output, a convex combination of v rows, moves by about that much, and the scores by
 *   |q||k| 2^-10: 4 roundings of max|ref| allowed (2e-3; lavapipe: up to 4e-4).
 * - every case in shared and staging memory, and with float16 storage in shared memory (test_fp16:
 *   the cases of head dimension 32, 64 and 102; a pipeline per head dimension compiles for seconds)
 * - bindings too small for the batch (cd_nn_vk_test_limits): attention and the copies run in chunks of
 *   images with the same result; one image past the binding fails with CD_ERR_LIMIT naming the node; a
 *   head dimension past the kernel's 128 fails with CD_ERR_LIMIT naming the node
 * - CIRRDATA_NN_VK_PIECE_FLOP=1 (every node its own piece): the same result.
 * Exits 77 (skipped) only when there is no Vulkan device at all and none is required. */
#include "test_util.h"

#include <math.h>
#include <stdbool.h>

#include "cirrdata/gpu.h"
#include "gpu_test_util.h"
#include "nn/graph.h"
#include "nn/vk_exec.h"
#include "nn_vk_test_util.h"

/* Under AddressSanitizer (-O0, and each pipeline's compile on lavapipe several times slower with the
 * runtime's allocator) only the cases marked for test_fp16 run (one per head dimension: 32, 64, 102),
 * and test_fp16 none: the host paths the others take are the same. */
#if defined(__SANITIZE_ADDRESS__)
#define ATTN_ASAN 1
#else
#define ATTN_ASAN 0
#endif

#define ATTN_REL 1e-5
#define ATTN_REL16 (4 * 0x1p-11)

static cd_nn_node *add_slice(cd_nn_graph *g, int in, int start, int len, const char *name) {
    cd_nn_node *nd = add_node(g, CD_NN_SLICE, in, -1, name);
    nd->slice_start = start;
    nd->slice_len = len;
    return nd;
}

/* Attention over c channels in `heads` heads with PyTorch's scale d^-0.5. */
static cd_nn_node *add_attention(cd_nn_graph *g, int q, int k, int v, int c, int heads, const char *name) {
    cd_nn_node *nd = add_node(g, CD_NN_ATTENTION, q, k, name);
    nd->in[2] = v;
    nd->n_in = 3;
    nd->heads = heads;
    nd->attn_scale = 1.0f / sqrtf((float)(c / heads));
    return nd;
}

/* x (n, c, h, w) -> qkv 1x1 conv (3c) -> q, k, v slices -> attention -> concat(attention, x). */
static cd_nn_graph *window_graph(int c, int heads) {
    cd_nn_graph *g = new_graph(8, c);
    add_conv(g, 0, c, 3 * c, 1, 1, 0, 1, 1, true, false, "qkv");
    add_slice(g, 1, 0, c, "q");
    add_slice(g, 1, c, c, "k");
    add_slice(g, 1, 2 * c, c, "v");
    add_attention(g, 2, 3, 4, c, heads, "attn");
    add_node(g, CD_NN_CONCAT, 5, 0, "cat");
    return g;
}

/* x -> q 1x1 conv; x -> sr conv (k = s = sr) -> kv 1x1 conv (2c) -> k, v slices; attention(q, k, v). */
static cd_nn_graph *sr_graph(int c, int heads, int sr) {
    cd_nn_graph *g = new_graph(8, c);
    add_conv(g, 0, c, c, 1, 1, 0, 1, 1, true, false, "q");
    add_conv(g, 0, c, c, sr, sr, 0, 1, 1, true, false, "sr");
    add_conv(g, 2, c, 2 * c, 1, 1, 0, 1, 1, true, false, "kv");
    add_slice(g, 3, 0, c, "k");
    add_slice(g, 3, c, c, "v");
    add_attention(g, 1, 4, 5, c, heads, "attn");
    return g;
}

typedef struct attn_case {
    int n, c, h, w, heads, sr; /* sr 0: window attention */
    bool fp16;                 /* run in test_fp16 too (one case per kind: each head dimension compiles) */
} attn_case;

static const attn_case g_cases[] = {
    {2, 64, 7, 7, 2, 0, true},    /* MambaVision's 7x7 window: 49 tokens, d 32, batch 2 */
    {1, 64, 14, 14, 2, 0, true},  /* 14x14 window: 196 tokens */
    {3, 40, 7, 7, 5, 0, false},   /* 5 heads of 8, C = 40, batch 3 */
    {2, 24, 5, 9, 3, 0, false},   /* 3 heads of 8, 45 tokens */
    {2, 40, 16, 16, 5, 4, false}, /* spatial reduction: Lq = 256, Lk = 16, 5 heads */
    {1, 64, 16, 16, 1, 4, true},  /* Lq = 256, Lk = 16, d = 64 (PVTv2 stage 1) */
    {2, 16, 13, 11, 2, 4, false}, /* odd map: Lq = 143, Lk = 3x2 = 6 */
    {2, 30, 7, 7, 5, 0, false},   /* d = 6: not a multiple of 4 (padded in shared memory) */
    {1, 102, 4, 6, 1, 3, true},   /* one head of 102: q not staged in lavapipe's 32 KiB; padded; Lk = 1x2 = 2 */
};

static cd_nn_graph *case_graph(const attn_case *c) {
    cd_nn_graph *g = c->sr ? sr_graph(c->c, c->heads, c->sr) : window_graph(c->c, c->heads);
    finish(g, c->n, c->h, c->w);
    return g;
}

static void copy_cases(cd_gpu_context *ctx) {
    /* slice channels [3, 7) of 9, batch 3 */
    cd_nn_graph *g = new_graph(2, 9);
    add_slice(g, 0, 3, 4, "slice");
    finish(g, 3, 5, 7);
    run_and_compare(ctx, g, 1e-6, "slice");
    cd_nn_graph_free(g);
    /* concat(conv(x), x), batch 2 */
    g = new_graph(3, 5);
    add_conv(g, 0, 5, 3, 3, 1, 1, 1, 1, true, false, "conv");
    add_node(g, CD_NN_CONCAT, 1, 0, "cat");
    finish(g, 2, 6, 5);
    run_and_compare16(ctx, g, 1e-4, ATTN_REL16, "concat");
    cd_nn_graph_free(g);
}

static void attn_cases(cd_gpu_memory_mode mode) {
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(mode, 0);
    copy_cases(ctx);
    for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++) {
        if ((g_fp16 || ATTN_ASAN) && !g_cases[i].fp16) continue;
        cd_nn_graph *g = case_graph(&g_cases[i]);
        char what[96];
        snprintf(what, sizeof what, "attention case %zu (%s, %d heads)", i, g_cases[i].sr ? "sr" : "window",
                 g_cases[i].heads);
        run_and_compare16(ctx, g, ATTN_REL, ATTN_REL16, what);
        cd_nn_graph_free(g);
    }
    destroy_ctx(ctx);
}

static void test_shared(void **state) {
    (void)state;
    attn_cases(CD_GPU_MEMORY_SHARED);
}

static void test_staging(void **state) {
    (void)state;
    attn_cases(CD_GPU_MEMORY_STAGING);
}

static void test_fp16(void **state) {
    (void)state;
    if (ATTN_ASAN) return;
    g_fp16 = true; /* shared memory only: the host's float16 conversions are test_nn_vk's, in both modes */
    attn_cases(CD_GPU_MEMORY_SHARED);
    g_fp16 = false;
}

/* Expects cd_nn_vk_run to fail with `want` and a message naming node `name`. */
static void expect_run_error(cd_gpu_context *ctx, cd_nn_graph *g, cd_status want, const char *name,
                             const char *needle) {
    cd_nn_vk *vk = make_vk(ctx, g);
    const int64_t nin = numel(&g->input_shape), nout = numel(&g->nodes[g->output].shape);
    float *x = rand_array(nin, -1, 1), *got = malloc(sizeof(float) * (size_t)nout);
    assert_non_null(got);
    cd_error err;
    cd_error_clear(&err);
    assert_int_equal(cd_nn_vk_run(vk, g, x, got, &err), want);
    char node[160];
    snprintf(node, sizeof node, "node %s:", name);
    if (!strstr(err.message, node) || !strstr(err.message, needle))
        fail_msg("message '%s' lacks '%s' / '%s'", err.message, node, needle);
    cd_nn_vk_destroy(vk);
    check_validation(ctx);
    free(x);
    free(got);
}

/* Bindings of 24 KiB: in a batch of 5 the window graph's qkv (18816 bytes per image) and concat
 * (12544) run an image at a time, the slices and the attention (6272) 3 images at a time: the same
 * result.
 * 2 KiB: one image of attention(x, x, x) or of a slice does not fit, CD_ERR_LIMIT naming the node. A
 * head dimension of 130 is past the kernel's 128: CD_ERR_LIMIT naming the node. Then every node its
 * own piece of the pass. */
static void test_limits(void **state) {
    (void)state;
    require_vulkan();
    cd_gpu_context *ctx = make_ctx(CD_GPU_MEMORY_AUTO, 0);
    cd_nn_vk_test_limits(24 << 10, 0);
    cd_nn_graph *g = window_graph(32, 1);
    finish(g, 5, 7, 7);
    run_and_compare(ctx, g, ATTN_REL, "attention in chunks of images");
    cd_nn_graph_free(g);
    cd_nn_vk_test_limits(2 << 10, 0);
    g = new_graph(2, 16);
    add_attention(g, 0, 0, 0, 16, 2, "attn");
    finish(g, 2, 7, 7);
    expect_run_error(ctx, g, CD_ERR_LIMIT, "attn", "one image");
    cd_nn_graph_free(g);
    g = new_graph(2, 16);
    add_slice(g, 0, 2, 3, "slice");
    finish(g, 2, 7, 7);
    expect_run_error(ctx, g, CD_ERR_LIMIT, "slice", "one image");
    cd_nn_graph_free(g);
    cd_nn_vk_test_limits(0, 0);
    /* head dimension 130 */
    g = new_graph(2, 130);
    add_attention(g, 0, 0, 0, 130, 1, "wide");
    finish(g, 1, 3, 3);
    expect_run_error(ctx, g, CD_ERR_LIMIT, "wide", "head dimension 130");
    cd_nn_graph_free(g);
    /* every dispatched node its own piece of the pass */
    setenv("CIRRDATA_NN_VK_PIECE_FLOP", "1", 1);
    g = case_graph(&g_cases[5]);
    run_and_compare(ctx, g, ATTN_REL, "attention, a piece per node");
    unsetenv("CIRRDATA_NN_VK_PIECE_FLOP");
    cd_nn_graph_free(g);
    destroy_ctx(ctx);
}

int main(void) {
    if (gpu_test_init()) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared),
        cmocka_unit_test(test_staging),
        cmocka_unit_test(test_fp16),
        cmocka_unit_test(test_limits),
    };
    return gpu_test_result(cmocka_run_group_tests(tests, NULL, NULL));
}
