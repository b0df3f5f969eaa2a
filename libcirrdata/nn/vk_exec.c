/* The Vulkan executor of the inference graph (nn/vk_exec.h).
 *
 * Memory: the parameters live in buffers of their own (device-local, uploaded once at create
 * through a host-visible staging buffer; in the context's shared mode host-visible and written
 * directly), convolution and linear weights transposed to [group][k][out channel] for the GEMM
 * shader. A dispatch may bind at most maxStorageBufferRange bytes per binding (128 MiB on lavapipe,
 * less than VGG-19's 392 MiB fc weight) and a buffer may be at most maxMemoryAllocationSize: a layer
 * whose weight exceeds either is stored as blocks of output channels, each [k][channels of the
 * block] and bound on its own, one dispatch per block (see node_w); the weights fill as many buffers
 * as the allocation size requires. Activations live in one arena buffer planned like the graph's (nn/graph.c's first
 * fit over
 * the same lifetimes, see plan()) but aware of fusion; in staging mode small upload/readback buffers
 * carry the input and the output. These buffers are the executor's own (cd_vk_buffer_create), not
 * the context's per-batch arenas, so the augmentation kernels sharing the context cannot clobber
 * them; they count against the context's memory limit.
 *
 * Kernels and commands come from the runtime (gpu/gpu_impl.h): the kernels are an op family of the
 * context (their layouts at first use, the pipelines of a storage precision with its first executor,
 * the GEMM's per kernel size at record time), shared by the executors of a context and kept until it
 * goes. The executor owns command objects (cd_vk_cmd: command buffer, fence, timestamps, the
 * runtime's timeout) and a descriptor pool (one set per dispatch, allocated at record time). The
 * forward pass is recorded once per shaped graph (a hash of the plan detects a new shape) and
 * replayed; everything runs under the context's lock, shared with the other users of the context.
 * The pass is recorded in pieces of bounded work (piece_budget), all submitted at once and waited
 * for one by one, each wait with the runtime's timeout: a slow but working device (VGG-19 at batch 2,
 * 256 x 256, takes minutes on lavapipe) completes, a hung one still times out.
 *
 * Barriers: a compute->compute memory barrier is recorded before a dispatch only when it reads a
 * range written since the last barrier (RAW) or writes a range read or written since then (WAR,
 * WAW: the plan reuses arena space), so independent branches (a ResNet block's downsample) run
 * without one. The dispatches of one node (batch chunks, output-channel blocks) write disjoint
 * elements and read nothing their siblings write: no barrier between them (span.tag).
 *
 * Bindings too large: a node whose input or output tensor is more than one binding may hold runs in
 * chunks of whole images (the tensors are image-major), each binding its images' sub-ranges; a node
 * where one image is too much fails with CD_ERR_LIMIT naming it.
 *
 * Depthwise convolutions (cd_nn_ref_conv2d_is_depthwise, the C executor's rule) have a kernel of their
 * own (shaders/nn_dwconv.comp: one invocation per output element, the GEMM's bindings and epilogue)
 * instead of the GEMM per group, whose 64 x 64 tile would hold one output channel and K = kh*kw;
 * CIRRDATA_NN_NO_DWCONV at create keeps them on the GEMM (tests, benchmarks).
 *
 * MambaVision's ops (softplus, dwconv1d, selective_scan, window_partition / window_reverse; C twins in
 * nn/ref_scan.c): dwconv1d's and the scan's parameters are one float32 piece per node in both
 * precisions (aux_floats: small, and the scan's decay is sensitive to A); the scan binds six buffers
 * (u, delta, B, C, parameters, output). The window ops change N, a sample's windows being contiguous:
 * they run over chunks of whole original samples.
 * Layer norm, mul and scale (shaders/nn_layer_norm.comp, nn_mul.comp, nn_scale.comp) run over chunks
 * of whole images like the elementwise ops; their per-channel weight and bias are float32 pieces of the
 * weight buffers (fp16 too, like the biases). A linear over (N, I, H, W) is the GEMM as a 1x1
 * convolution, as it is for (N, I, 1, 1).
 *
 * Fusion at record time: a conv2d/linear whose only reader is an add, with the add's other operand
 * computed earlier, writes the sum (and the add's ReLU) straight into the add's tensor; the add is
 * not dispatched (a ResNet block's residual add costs no pass of its own).
 *
 * float16 storage (fp16, where the context enabled storageBuffer16BitAccess): the same kernels compiled
 * with CD_FP16 (shaders/meson.build) store weights and activations as IEEE binary16 and compute in
 * float32 (GEMM accumulators, pool sums, softmax); biases stay float32 (a few KiB). Everything sized
 * in elements here is then `esize` = 2 bytes instead of 4: the arena, the weight pieces, the
 * bindings, the chunking. The input is converted to float16 on the host as it is written to the
 * upload buffer (half the bytes to move; F16C where the CPU has it) and the logits back to float32
 * after the readback, so cd_nn_vk_run stays float32 in and out. binary16's range bounds the stored
 * values: one beyond +-65504 becomes infinite (float32 is then the option to use). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu_impl.h"
#include "nn/vk_exec.h"

enum {
    K_GEMM,
    K_MAXPOOL,
    K_AVGPOOL,
    K_ADAPTIVE,
    K_ADD,
    K_SOFTMAX,
    K_DWCONV,
    K_GELU,
    K_GELU_TANH,
    K_SILU,
    K_HARDSWISH,
    K_HARDSIGMOID,
    K_SOFTPLUS,
    K_DWCONV1D,
    K_SCAN,
    K_WIN_PART,
    K_WIN_REV,
    K_LAYER_NORM,
    K_MUL,
    K_SCALE,
    K_COPY, /* slice and concat: channel ranges copied */
    K_ATTN, /* attention; a pipeline per head dimension (like the GEMM's per kernel size) */
    K_COUNT
};
enum { MAX_BIND = 6, GEMM_TILE = 64, GEMM_THREADS = 256 };

/* Push constants, as the shaders declare them. */
typedef struct gemm_push {
    uint32_t x_off, w_off, b_off, r_off, y_off;
    uint32_t C, H, W, O, OH, OW, Cg, Og, K, ntotal, n_base;
    uint32_t sh, sw, ph, pw, dh, dw, flags;
    uint32_t g_base, m_base, m_end, w_ld; /* this dispatch's group and channel block, weight row length */
} gemm_push;
typedef struct pool_push {
    uint32_t x_off, y_off, total, groups_x, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw;
} pool_push;
typedef struct add_push {
    uint32_t a_off, b_off, y_off, total, groups_x, flags;
} add_push;
typedef struct unary_push {
    uint32_t x_off, y_off, total, groups_x;
} unary_push;
typedef struct softmax_push {
    uint32_t x_off, y_off, total, groups_x, C, HW;
} softmax_push;
typedef struct softplus_push {
    uint32_t x_off, y_off, total, groups_x;
    float beta, threshold;
} softplus_push;
typedef struct dw1d_push {
    uint32_t x_off, y_off, w_off, b_off, total, groups_x, C, L, K, pl, flags;
} dw1d_push;
typedef struct scan_push {
    uint32_t u_off, d_off, b_off, c_off, y_off, a_off, dskip_off, dbias_off, channels, groups_x, D, S, L, cpw, flags;
} scan_push;
typedef struct window_push {
    uint32_t x_off, y_off, total, groups_x, C, H, W, ws, nh, nw;
} window_push;
typedef struct ln_push {
    uint32_t x_off, w_off, b_off, y_off, total, groups_x, C, HW, flags;
    float eps;
} ln_push;
typedef struct mul_push {
    uint32_t a_off, b_off, y_off, total, groups_x, HW;
} mul_push;
typedef struct scale_push {
    uint32_t x_off, w_off, b_off, y_off, total, groups_x, C, HW, flags;
} scale_push;
typedef struct copy_push {
    uint32_t x_off, y_off, total, groups_x, len, x_img, x_base, y_img, y_base;
} copy_push;
typedef struct attn_push {
    uint32_t q_off, k_off, v_off, y_off, C, Lq, Lk;
    float scale;
} attn_push;
typedef struct dw_push {
    uint32_t x_off, w_off, b_off, r_off, y_off, total, groups_x;
    uint32_t C, H, W, O, OH, OW, m, kh, kw, sh, sw, ph, pw, dh, dw, flags;
} dw_push;

/* shader: the float32 kernel, shader16: its float16-storage variant. */
static const struct {
    cd_shader_id shader, shader16;
    uint32_t bindings, push;
} g_shaders[K_COUNT] = {
    [K_GEMM] = {CD_SHADER_NN_CONV_GEMM, CD_SHADER_NN_CONV_GEMM_FP16, 5, sizeof(gemm_push)},
    [K_MAXPOOL] = {CD_SHADER_NN_MAXPOOL, CD_SHADER_NN_MAXPOOL_FP16, 2, sizeof(pool_push)},
    [K_AVGPOOL] = {CD_SHADER_NN_AVGPOOL, CD_SHADER_NN_AVGPOOL_FP16, 2, sizeof(pool_push)},
    [K_ADAPTIVE] = {CD_SHADER_NN_ADAPTIVE_AVGPOOL, CD_SHADER_NN_ADAPTIVE_AVGPOOL_FP16, 2, 8 * sizeof(uint32_t)},
    [K_ADD] = {CD_SHADER_NN_ADD, CD_SHADER_NN_ADD_FP16, 3, sizeof(add_push)},
    [K_SOFTMAX] = {CD_SHADER_NN_SOFTMAX, CD_SHADER_NN_SOFTMAX_FP16, 2, sizeof(softmax_push)},
    [K_DWCONV] = {CD_SHADER_NN_DWCONV, CD_SHADER_NN_DWCONV_FP16, 5, sizeof(dw_push)},
    [K_GELU] = {CD_SHADER_NN_GELU, CD_SHADER_NN_GELU_FP16, 2, sizeof(unary_push)},
    [K_GELU_TANH] = {CD_SHADER_NN_GELU_TANH, CD_SHADER_NN_GELU_TANH_FP16, 2, sizeof(unary_push)},
    [K_SILU] = {CD_SHADER_NN_SILU, CD_SHADER_NN_SILU_FP16, 2, sizeof(unary_push)},
    [K_HARDSWISH] = {CD_SHADER_NN_HARDSWISH, CD_SHADER_NN_HARDSWISH_FP16, 2, sizeof(unary_push)},
    [K_HARDSIGMOID] = {CD_SHADER_NN_HARDSIGMOID, CD_SHADER_NN_HARDSIGMOID_FP16, 2, sizeof(unary_push)},
    [K_SOFTPLUS] = {CD_SHADER_NN_SOFTPLUS, CD_SHADER_NN_SOFTPLUS_FP16, 2, sizeof(softplus_push)},
    [K_DWCONV1D] = {CD_SHADER_NN_DWCONV1D, CD_SHADER_NN_DWCONV1D_FP16, 3, sizeof(dw1d_push)},
    [K_SCAN] = {CD_SHADER_NN_SELECTIVE_SCAN, CD_SHADER_NN_SELECTIVE_SCAN_FP16, 6, sizeof(scan_push)},
    [K_WIN_PART] = {CD_SHADER_NN_WINDOW_PARTITION, CD_SHADER_NN_WINDOW_PARTITION_FP16, 2, sizeof(window_push)},
    [K_WIN_REV] = {CD_SHADER_NN_WINDOW_REVERSE, CD_SHADER_NN_WINDOW_REVERSE_FP16, 2, sizeof(window_push)},
    [K_LAYER_NORM] = {CD_SHADER_NN_LAYER_NORM, CD_SHADER_NN_LAYER_NORM_FP16, 4, sizeof(ln_push)},
    [K_MUL] = {CD_SHADER_NN_MUL, CD_SHADER_NN_MUL_FP16, 3, sizeof(mul_push)},
    [K_SCALE] = {CD_SHADER_NN_SCALE, CD_SHADER_NN_SCALE_FP16, 4, sizeof(scale_push)},
    [K_COPY] = {CD_SHADER_NN_CHANNEL_COPY, CD_SHADER_NN_CHANNEL_COPY_FP16, 2, sizeof(copy_push)},
    [K_ATTN] = {CD_SHADER_NN_ATTENTION, CD_SHADER_NN_ATTENTION_FP16, 4, sizeof(attn_push)},
};

/* A byte range of a buffer as a dispatch binds it; tag: the node whose dispatch bound it. */
typedef struct span {
    VkBuffer buffer;
    VkDeviceSize lo, hi;
    int tag;
} span;

/* Where a weight piece lives: buffer index into wbuf, byte offset (aligned). */
typedef struct wplace {
    int buf;
    VkDeviceSize off;
} wplace;

/* A conv/linear node's parameters on the device. whole: one piece, every group [group][k][og], bound
 * by one dispatch. Otherwise blocks of `ob` output channels per group, blk[g * nblk + j] holding
 * channels [j*ob, min((j+1)*ob, og)) of group g as [k][width], one dispatch each. */
typedef struct node_w {
    bool whole;
    int64_t ob;
    int nblk;
    wplace *blk;
    wplace bias; /* buf < 0: no bias */
    wplace aux;  /* dwconv1d, selective_scan: their parameters as float32 (aux_floats); buf < 0: none */
} node_w;

/* Test overrides of maxStorageBufferRange and maxMemoryAllocationSize (0: the device's). */
static _Atomic uint64_t g_test_range, g_test_buffer;

void cd_nn_vk_test_limits(uint64_t max_range, uint64_t max_buffer) {
    atomic_store(&g_test_range, max_range);
    atomic_store(&g_test_buffer, max_buffer);
}

/* ---------------------------------------------------------------- the kernels (an op family) */

typedef struct gemm_pipe {
    int kind; /* K_GEMM (kh, kw: the kernel size) or K_ATTN (kh, kw: head dimension, staged q's) */
    uint32_t kh, kw;
    VkPipeline pipe;
} gemm_pipe;

/* The inference kernels of a context: per op its layouts (created with the family), and per storage
 * precision (index: fp16) the pipelines, created on first use; the GEMM's per kernel size (KH and KW
 * are specialization constants). They serve every executor of the context, so the GEMM's list grows
 * with the kernel sizes of all its models rather than stopping at a fixed count. */
typedef struct nn_kernels {
    cd_vk_kernel k[K_COUNT];     /* layouts */
    VkPipeline pipe[2][K_COUNT]; /* all but K_GEMM and K_ATTN */
    gemm_pipe *gemm[2];          /* K_GEMM's and K_ATTN's, per specialization */
    int ngemm[2], capgemm[2];
    uint32_t local; /* workgroup size of the elementwise kernels */
} nn_kernels;

static cd_status nn_kernels_init(cd_gpu_context *ctx, void *state, cd_error *err) {
    nn_kernels *K = state;
    const VkPhysicalDeviceLimits *l = cd_vk_limits(ctx);
    K->local = 256;
    if (K->local > l->maxComputeWorkGroupSize[0]) K->local = l->maxComputeWorkGroupSize[0];
    if (K->local > l->maxComputeWorkGroupInvocations) K->local = l->maxComputeWorkGroupInvocations;
    cd_status st = CD_OK;
    for (int k = 0; k < K_COUNT && st == CD_OK; k++)
        st = cd_vk_layout_create(ctx, &K->k[k], g_shaders[k].bindings, g_shaders[k].push, err);
    return st;
}

static void nn_kernels_destroy(cd_gpu_context *ctx, void *state) {
    nn_kernels *K = state;
    for (int p = 0; p < 2; p++) {
        for (int k = 0; k < K_COUNT; k++) cd_vk_pipeline_destroy(ctx, K->pipe[p][k]);
        for (int i = 0; i < K->ngemm[p]; i++) cd_vk_pipeline_destroy(ctx, K->gemm[p][i].pipe);
        free(K->gemm[p]);
    }
    for (int k = 0; k < K_COUNT; k++) cd_vk_kernel_destroy(ctx, &K->k[k]);
}

static const cd_vk_family nn_family = {"inference", sizeof(nn_kernels), nn_kernels_init, nn_kernels_destroy};

/* The kernels of ctx with the pipelines of one precision ready (the context's lock held). */
static cd_status nn_kernels_ready(cd_gpu_context *ctx, bool fp16, nn_kernels **out, cd_error *err) {
    void *state;
    cd_status st = cd_vk_family_state(ctx, &nn_family, &state, err);
    if (st != CD_OK) return st;
    nn_kernels *K = state;
    for (int k = 0; k < K_COUNT && st == CD_OK; k++)
        if (k != K_GEMM && k != K_ATTN && !K->pipe[fp16][k])
            st = cd_vk_pipeline_create(ctx, &K->k[k], fp16 ? g_shaders[k].shader16 : g_shaders[k].shader, &K->local, 1,
                                       &K->pipe[fp16][k], err);
    *out = K;
    return st;
}

/* The pipeline of kind (K_GEMM or K_ATTN) for specialization constants 0, 1 = kh, kw (the GEMM's
 * kernel size; attention: the head dimension and whether q is staged, see record_attention), created
 * on first use. */
static cd_status gemm_pipeline(cd_gpu_context *ctx, nn_kernels *K, int kind, bool fp16, uint32_t kh, uint32_t kw,
                               VkPipeline *out, cd_error *err) {
    for (int i = 0; i < K->ngemm[fp16]; i++)
        if (K->gemm[fp16][i].kind == kind && K->gemm[fp16][i].kh == kh && K->gemm[fp16][i].kw == kw) {
            *out = K->gemm[fp16][i].pipe;
            return CD_OK;
        }
    if (K->ngemm[fp16] == K->capgemm[fp16]) {
        const int c = K->capgemm[fp16] ? 2 * K->capgemm[fp16] : 8;
        gemm_pipe *ng = realloc(K->gemm[fp16], (size_t)c * sizeof *ng);
        if (!ng) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
        K->gemm[fp16] = ng;
        K->capgemm[fp16] = c;
    }
    const uint32_t spec[2] = {kh, kw};
    cd_status st = cd_vk_pipeline_create(ctx, &K->k[kind], fp16 ? g_shaders[kind].shader16 : g_shaders[kind].shader,
                                         spec, 2, out, err);
    if (st != CD_OK) return st;
    K->gemm[fp16][K->ngemm[fp16]++] = (gemm_pipe){kind, kh, kw, *out};
    return CD_OK;
}

struct cd_nn_vk {
    cd_gpu_context *ctx;
    nn_kernels *K;           /* the context's (they live as long as it) */
    bool shared;             /* the context's memory mode: the activations are host-visible */
    VkDeviceSize align;      /* of the weight pieces */
    VkDeviceSize bind_align; /* minStorageBufferOffsetAlignment (at least 1): where a binding may start */
    bool fp16;               /* float16 storage of weights and activations (the *_fp16 kernels) */
    bool no_dw;              /* CIRRDATA_NN_NO_DWCONV at create: depthwise convolutions take the GEMM */
    VkDeviceSize esize;      /* bytes per stored weight or activation element: 2 with fp16, else 4 */

    VkDeviceSize range;   /* bytes one binding may span (maxStorageBufferRange, or the test override) */
    VkDeviceSize max_buf; /* bytes one weight buffer may hold (a multiple of align) */
    cd_vk_buffer *wbuf;   /* the weight buffers; wbuf[0] starts with `align` zero bytes (unused bindings) */
    VkDeviceSize *wsize;  /* bytes laid out in each */
    int nwbuf, capwbuf;
    node_w *nw; /* per node */
    int nodes;

    cd_vk_buffer arena, upload, readback;
    cd_vk_cmd cmd;         /* the weight upload's */
    cd_vk_cmd *piece;      /* the recorded forward pass, in pieces of bounded work (see piece_budget) */
    int npiece, cap_piece; /* pieces the pass uses, command objects made */
    cd_vk_cmd *rec;        /* the piece being recorded */
    VkDescriptorPool dpool;
    bool recorded;
    uint64_t key; /* hash of the plan the command buffer was recorded for */
    double last_ms;

    /* record-time state */
    int64_t *off; /* per node: arena offset (elements) of the tensor it owns (the executor's plan) */
    int *owner;   /* per node: the node owning its tensor (views: their input's owner) */
    int64_t arena_floats;
    int *fused_add; /* per node: the add a conv/linear writes into, or -1 */
    bool *skip;     /* per node: not dispatched (fused away) */
    span *pend_r, *pend_w;
    int npend_r, npend_w, cap_r, cap_w;
    int dispatches, barriers;
    int dw_nodes;  /* nodes recorded with the depthwise kernel (cd_nn_vk_depthwise_nodes) */
    int tag;       /* the node being recorded + 1 (0: none) */
    bool counting; /* dry run: dispatch() only counts (sizes the descriptor pool) */
};

/* ---------------------------------------------------------------- small helpers */

static int64_t numel(const cd_nn_shape *s) { return s->n * s->c * s->h * s->w; }

/* The arena offset (elements) of node i's tensor in the executor's plan (views resolve to their owner). */
static int64_t tensor_off(const cd_nn_vk *vk, int i) { return vk->off[vk->owner[i]]; }

static uint64_t fnv(uint64_t h, int64_t v) {
    for (int i = 0; i < 8; i++) {
        h ^= (uint64_t)v >> (8 * i) & 0xff;
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t plan_key(const cd_nn_graph *g) {
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv(h, g->count);
    h = fnv(h, g->arena_floats);
    h = fnv(h, g->input_offset);
    h = fnv(h, g->output);
    for (int i = 0; i < g->count; i++) {
        const cd_nn_node *nd = &g->nodes[i];
        h = fnv(h, nd->shape.n);
        h = fnv(h, nd->shape.c);
        h = fnv(h, nd->shape.h);
        h = fnv(h, nd->shape.w);
        h = fnv(h, nd->offset);
    }
    return h;
}

/* ---------------------------------------------------------------- weights */

static VkDeviceSize round_up(VkDeviceSize v, VkDeviceSize a) { return (v + a - 1) / a * a; }

static bool has_params(const cd_nn_node *nd) { return nd->op == CD_NN_CONV2D || nd->op == CD_NN_LINEAR; }

/* The parameters of dwconv1d and selective_scan, kept float32 in both precisions (a few KiB; the
 * scan's decay exp(dt A) is sensitive to A): dwconv1d [weight (C, K)][bias (C)], selective_scan
 * [A (D, S)][D skip (D)][delta_bias (D)], the absent ones left out. Their element count (0: none), and
 * where each starts in off[]: weight or A, bias or D skip, delta_bias. */
static int64_t aux_floats(const cd_nn_node *nd, int64_t off[3]) {
    int64_t n = 0, c = nd->out_ch;
    off[0] = off[1] = off[2] = 0;
    if (nd->op == CD_NN_DWCONV1D)
        n = c * nd->kw;
    else if (nd->op == CD_NN_SELECTIVE_SCAN)
        n = c * nd->states;
    else
        return 0;
    off[1] = n;
    if (nd->bias) n += c;
    off[2] = n;
    if (nd->delta_bias) n += c;
    return n;
}

static void write_aux(const cd_nn_node *nd, float *dst) {
    int64_t off[3];
    const int64_t c = nd->out_ch;
    aux_floats(nd, off);
    memcpy(dst, nd->weight, (size_t)off[1] * sizeof(float));
    if (nd->bias) memcpy(dst + off[1], nd->bias, (size_t)c * sizeof(float));
    if (nd->delta_bias) memcpy(dst + off[2], nd->delta_bias, (size_t)c * sizeof(float));
}
/* layer_norm and scale: per-channel float32 vectors (weight in blk[0] when present, bias), in_ch of
 * each, kept float32 with fp16 storage too (like the biases). */
static bool has_vectors(const cd_nn_node *nd) { return nd->op == CD_NN_LAYER_NORM || nd->op == CD_NN_SCALE; }

/* K (the reduction length) of a conv/linear node. */
static int64_t node_k(const cd_nn_node *nd) {
    if (nd->op == CD_NN_LINEAR) return nd->in_ch;
    return (int64_t)(nd->in_ch / nd->groups) * nd->kh * nd->kw;
}

/* Writes channels [m_lo, m_lo + width) of group g of nd's weight transposed to [k][width] into dst:
 * float32, or float16 (round to nearest even) with fp16. */
static void write_block(const cd_nn_node *nd, int64_t g, int64_t m_lo, int64_t width, bool fp16, void *dst) {
    const int64_t groups = nd->op == CD_NN_LINEAR ? 1 : nd->groups;
    const int64_t og = nd->out_ch / groups, k = node_k(nd);
    for (int64_t m = 0; m < width; m++) {
        const float *src = nd->weight + (g * og + m_lo + m) * k;
        if (fp16) {
            uint16_t *d = (uint16_t *)dst + m;
            for (int64_t j = 0; j < k; j++) d[j * width] = cd_float_to_half(src[j]);
        } else {
            float *d = (float *)dst + m;
            for (int64_t j = 0; j < k; j++) d[j * width] = src[j];
        }
    }
}

/* The input and output of a float16 run: n values converted at the host boundary, with F16C (8 per
 * instruction, round to nearest even like cd_float_to_half) where the CPU has it. */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define VK_F16C 1
/* F16C is VEX-encoded, so it also needs the OS to save YMM state (what "avx" checks); cpuid
 * rather than the builtin's "f16c" name, which clang 14 does not know. */
static bool cpu_has_f16c(void) {
    unsigned a, b, c, d;
    return __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
__attribute__((target("f16c"))) static void to_half_f16c(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = cd_float_to_half(src[i]);
}
__attribute__((target("f16c"))) static void from_half_f16c(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = cd_half_to_float(src[i]);
}
#endif

static void to_half(const float *src, uint16_t *dst, size_t n) {
#ifdef VK_F16C
    if (cpu_has_f16c()) {
        to_half_f16c(src, dst, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = cd_float_to_half(src[i]);
}

static void from_half(const uint16_t *src, float *dst, size_t n) {
#ifdef VK_F16C
    if (cpu_has_f16c()) {
        from_half_f16c(src, dst, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = cd_half_to_float(src[i]);
}

/* Puts `bytes` at the end of the last weight buffer, or at the start of a new one when it would pass
 * max_buf (bytes <= max_buf). */
static cd_status place(cd_nn_vk *vk, VkDeviceSize bytes, wplace *p, cd_error *err) {
    int b = vk->nwbuf - 1;
    if (b < 0 || round_up(vk->wsize[b], vk->align) + bytes > vk->max_buf) {
        if (vk->nwbuf == vk->capwbuf) {
            const int c = vk->capwbuf ? 2 * vk->capwbuf : 4;
            cd_vk_buffer *nb = realloc(vk->wbuf, (size_t)c * sizeof *nb);
            if (nb) vk->wbuf = nb;
            VkDeviceSize *ns = nb ? realloc(vk->wsize, (size_t)c * sizeof *ns) : NULL;
            if (!ns) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
            vk->wsize = ns;
            vk->capwbuf = c;
        }
        b = vk->nwbuf++;
        memset(&vk->wbuf[b], 0, sizeof vk->wbuf[b]);
        vk->wsize[b] = 0;
    }
    p->buf = b;
    p->off = round_up(vk->wsize[b], vk->align);
    vk->wsize[b] = p->off + bytes;
    return CD_OK;
}

/* Decides every conv/linear node's pieces (node_w) and places them in the weight buffers. */
static cd_status layout_weights(cd_nn_vk *vk, const cd_nn_graph *g, cd_error *err) {
    char b1[32], b2[32];
    wplace zeros;
    cd_status st = place(vk, vk->align, &zeros, err); /* wbuf[0] at 0: zeros for unused bindings */
    /* a piece must fit one binding and one buffer; a block's bias slice may start up to an alignment
     * unit before its first channel */
    const VkDeviceSize limit = vk->range < vk->max_buf ? vk->range : vk->max_buf;
    const VkDeviceSize al = vk->bind_align;
    for (int i = 0; i < g->count && st == CD_OK; i++) {
        const cd_nn_node *nd = &g->nodes[i];
        node_w *w = &vk->nw[i];
        w->bias.buf = -1;
        w->aux.buf = -1;
        int64_t aoff[3];
        const int64_t an = aux_floats(nd, aoff);
        if (an > 0) {
            if (!nd->weight || (VkDeviceSize)an * 4 > limit)
                return cd_fail(err, CD_ERR_LIMIT, "%s: node %s: the parameters (%s) are more than %s can bind",
                               g->source, nd->name, cd_format_bytes((VkDeviceSize)an * 4, b1, sizeof b1),
                               cd_vk_name(vk->ctx));
            st = place(vk, (VkDeviceSize)an * 4, &w->aux, err);
            continue;
        }
        if (has_vectors(nd) && (nd->weight || nd->bias)) {
            if ((VkDeviceSize)nd->in_ch * 4 > limit || nd->in_ch < 1)
                return cd_fail(err, CD_ERR_LIMIT, "%s: node %s: %d channels are more than %s can bind", g->source,
                               nd->name, nd->in_ch, cd_vk_name(vk->ctx));
            w->whole = true;
            w->ob = nd->in_ch;
            w->nblk = 1;
            w->blk = malloc(sizeof *w->blk);
            if (!w->blk) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
            w->blk[0].buf = -1;
            if (nd->weight) st = place(vk, (VkDeviceSize)nd->in_ch * 4, &w->blk[0], err);
            if (st == CD_OK && nd->bias) st = place(vk, (VkDeviceSize)nd->in_ch * 4, &w->bias, err);
            continue;
        }
        if (!has_params(nd)) continue;
        if (!nd->weight) return cd_fail(err, CD_ERR_ARG, "%s: node %s has no weight", g->source, nd->name);
        const int64_t groups = nd->op == CD_NN_LINEAR ? 1 : nd->groups, og = nd->out_ch / groups, K = node_k(nd);
        const VkDeviceSize total = (VkDeviceSize)nd->out_ch * (VkDeviceSize)K * vk->esize;
        w->whole = total <= limit;
        w->ob = og;
        w->nblk = 1;
        if (!w->whole) {
            int64_t ob = (int64_t)(limit / ((VkDeviceSize)K * vk->esize));
            const int64_t ob_bias = (int64_t)((limit - (al < limit ? al : limit)) / 4);
            if (ob > ob_bias) ob = ob_bias;
            if (ob < 1)
                return cd_fail(err, CD_ERR_LIMIT,
                               "%s: node %s: one output channel's weights (%s) are more than %s can bind "
                               "(maxStorageBufferRange or "
                               "maxMemoryAllocationSize %s)",
                               g->source, nd->name, cd_format_bytes((VkDeviceSize)K * vk->esize, b1, sizeof b1),
                               cd_vk_name(vk->ctx), cd_format_bytes(limit, b2, sizeof b2));
            if (ob >= og)
                ob = og;
            else if (ob >= GEMM_TILE)
                ob = ob / GEMM_TILE * GEMM_TILE; /* whole tiles */
            w->ob = ob;
            w->nblk = (int)((og + ob - 1) / ob);
        }
        const int64_t pieces = w->whole ? 1 : groups * w->nblk;
        w->blk = malloc((size_t)pieces * sizeof *w->blk);
        if (!w->blk) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
        for (int64_t p = 0; p < pieces && st == CD_OK; p++) {
            const int64_t j = p % w->nblk, width = og - j * w->ob < w->ob ? og - j * w->ob : w->ob;
            st = place(vk, w->whole ? total : (VkDeviceSize)width * (VkDeviceSize)K * vk->esize, &w->blk[p], err);
        }
        if (st == CD_OK && nd->bias) {
            if ((VkDeviceSize)nd->out_ch * 4 > vk->max_buf)
                return cd_fail(err, CD_ERR_LIMIT, "%s: node %s: the bias is more than one buffer may hold on %s",
                               g->source, nd->name, cd_vk_name(vk->ctx));
            st = place(vk, (VkDeviceSize)nd->out_ch * 4, &w->bias, err);
        }
    }
    return st;
}

/* Where the upload writes the next piece: the mapped weight buffer (shared memory) or the staging
 * buffer, whose pieces go over with one copy each when it is full or at the end. */
typedef struct uploader {
    cd_vk_buffer stage;
    VkDeviceSize used;
    bool open; /* the command buffer has copies recorded */
} uploader;

static cd_status up_flush(cd_nn_vk *vk, uploader *u, cd_error *err) {
    if (!u->open) return CD_OK;
    u->open = false;
    u->used = 0;
    /* the host rewrites the staging buffer only after the copies read it: the fence wait */
    return cd_vk_cmd_submit_wait(&vk->cmd, "the weight upload", NULL, err);
}

static cd_status up_piece(cd_nn_vk *vk, uploader *u, wplace p, VkDeviceSize bytes, void **dst, cd_error *err) {
    cd_vk_buffer *b = &vk->wbuf[p.buf];
    if (b->mapped) {
        *dst = (char *)b->mapped + p.off;
        return CD_OK;
    }
    if (u->used + bytes > u->stage.size) {
        cd_status st = up_flush(vk, u, err);
        if (st != CD_OK) return st;
    }
    if (!u->open) {
        cd_status st = cd_vk_cmd_begin(&vk->cmd, false, err);
        if (st != CD_OK) return st;
        u->open = true;
    }
    VkBufferCopy region = {.srcOffset = u->used, .dstOffset = p.off, .size = bytes};
    cd_vk_cmd_copy(&vk->cmd, u->stage.buffer, b->buffer, 1, &region);
    *dst = (char *)u->stage.mapped + u->used;
    u->used = round_up(u->used + bytes, 16);
    return CD_OK;
}

/* Lays out, allocates and uploads every parameter once; call with the context's lock held. */
static cd_status upload_weights(cd_nn_vk *vk, const cd_nn_graph *g, cd_error *err) {
    cd_gpu_context *ctx = vk->ctx;
    cd_status st = layout_weights(vk, g, err);
    VkDeviceSize sum = 0, largest = vk->align;
    for (int b = 0; b < vk->nwbuf && st == CD_OK; b++) {
        st = cd_vk_buffer_create(ctx, CD_VK_DEVICE, vk->wsize[b], &vk->wbuf[b], err);
        sum += vk->wsize[b];
    }
    if (st != CD_OK) return st;
    uploader u = {.used = 0, .open = false};
    if (!vk->wbuf[0].mapped) { /* staging: at least 64 MiB (and the largest piece) per round trip */
        for (int i = 0; i < g->count; i++) {
            const node_w *w = &vk->nw[i];
            int64_t aoff[3];
            const VkDeviceSize aux = (VkDeviceSize)aux_floats(&g->nodes[i], aoff) * 4;
            if (aux > largest) largest = aux;
            if (has_vectors(&g->nodes[i]) && (VkDeviceSize)g->nodes[i].in_ch * 4 > largest)
                largest = (VkDeviceSize)g->nodes[i].in_ch * 4;
            if (!has_params(&g->nodes[i])) continue;
            const VkDeviceSize piece =
                (VkDeviceSize)(w->whole ? g->nodes[i].out_ch : w->ob) * node_k(&g->nodes[i]) * vk->esize;
            if (piece > largest) largest = piece;
            if ((VkDeviceSize)g->nodes[i].out_ch * 4 > largest) largest = (VkDeviceSize)g->nodes[i].out_ch * 4;
        }
        VkDeviceSize chunk = (VkDeviceSize)64 << 20;
        if (chunk > sum) chunk = sum;
        if (chunk < largest) chunk = largest;
        st = cd_vk_buffer_create(ctx, CD_VK_UPLOAD, chunk, &u.stage, err);
        if (st != CD_OK) return st;
    }
    void *dst;
    st = up_piece(vk, &u, (wplace){0, 0}, vk->align, &dst, err);
    if (st == CD_OK) memset(dst, 0, vk->align);
    for (int i = 0; i < g->count && st == CD_OK; i++) {
        const cd_nn_node *nd = &g->nodes[i];
        const node_w *w = &vk->nw[i];
        if (w->aux.buf >= 0) {
            int64_t aoff[3];
            st = up_piece(vk, &u, w->aux, (VkDeviceSize)aux_floats(nd, aoff) * 4, &dst, err);
            if (st == CD_OK) write_aux(nd, dst);
            continue;
        }
        if (has_vectors(nd)) {
            const VkDeviceSize bytes = (VkDeviceSize)nd->in_ch * 4;
            if (nd->weight && st == CD_OK) {
                st = up_piece(vk, &u, w->blk[0], bytes, &dst, err);
                if (st == CD_OK) memcpy(dst, nd->weight, bytes);
            }
            if (nd->bias && st == CD_OK) {
                st = up_piece(vk, &u, w->bias, bytes, &dst, err);
                if (st == CD_OK) memcpy(dst, nd->bias, bytes);
            }
            continue;
        }
        if (!has_params(nd)) continue;
        const int64_t groups = nd->op == CD_NN_LINEAR ? 1 : nd->groups, og = nd->out_ch / groups, K = node_k(nd);
        if (w->whole) {
            st = up_piece(vk, &u, w->blk[0], (VkDeviceSize)nd->out_ch * K * vk->esize, &dst, err);
            for (int64_t gi = 0; gi < groups && st == CD_OK; gi++)
                write_block(nd, gi, 0, og, vk->fp16, (char *)dst + (size_t)(gi * K * og) * vk->esize);
        } else
            for (int64_t p = 0; p < groups * w->nblk && st == CD_OK; p++) {
                const int64_t gi = p / w->nblk, j = p % w->nblk,
                              width = og - j * w->ob < w->ob ? og - j * w->ob : w->ob;
                st = up_piece(vk, &u, w->blk[p], (VkDeviceSize)width * K * vk->esize, &dst, err);
                if (st == CD_OK) write_block(nd, gi, j * w->ob, width, vk->fp16, dst);
            }
        if (st == CD_OK && nd->bias) {
            st = up_piece(vk, &u, w->bias, (VkDeviceSize)nd->out_ch * 4, &dst, err);
            if (st == CD_OK) memcpy(dst, nd->bias, (size_t)nd->out_ch * 4);
        }
    }
    if (st == CD_OK)
        st = up_flush(vk, &u, err);
    else if (u.open) {
        cd_vk_cmd_end(&vk->cmd, NULL);
        u.open = false;
    }
    if (st != CD_OK) cd_vk_wait_idle(ctx); /* a copy that timed out may still read the stage */
    cd_vk_buffer_destroy(ctx, &u.stage);
    return st;
}

/* ---------------------------------------------------------------- create / destroy */

cd_status cd_nn_vk_create(cd_gpu_context *ctx, const cd_nn_graph *g, bool fp16, bool *fp16_used, cd_nn_vk **out,
                          cd_error *err) {
    if (fp16_used) *fp16_used = false;
    if (!out) return cd_fail(err, CD_ERR_ARG, "cd_nn_vk_create: NULL argument");
    *out = NULL;
    if (!ctx || !g) return cd_fail(err, CD_ERR_ARG, "cd_nn_vk_create: NULL argument");
    const VkPhysicalDeviceLimits *l = cd_vk_limits(ctx);
    if (l->maxComputeWorkGroupInvocations < GEMM_THREADS || l->maxComputeWorkGroupSize[0] < GEMM_THREADS ||
        l->maxComputeSharedMemorySize < 8192 || l->maxPushConstantsSize < sizeof(gemm_push))
        return cd_fail(
            err, CD_ERR_UNSUPPORTED,
            "Vulkan inference: %s allows %u invocations per workgroup and %u bytes of shared memory; the convolution "
            "kernel needs 256 and 8 KiB",
            cd_vk_name(ctx), l->maxComputeWorkGroupInvocations, l->maxComputeSharedMemorySize);
    for (int i = 0; i < g->count; i++) {
        const cd_nn_node *nd = &g->nodes[i];
        if (nd->op == CD_NN_BATCHNORM)
            return cd_fail(err, CD_ERR_UNSUPPORTED,
                           "%s: node %s: batch_norm that was not folded into a convolution is not supported on Vulkan",
                           g->source, nd->name);
        if (has_params(nd) && (nd->in_ch <= 0 || nd->out_ch <= 0 ||
                               (nd->op == CD_NN_CONV2D && (nd->groups <= 0 || nd->kh <= 0 || nd->kw <= 0))))
            return cd_fail(err, CD_ERR_ARG, "%s: node %s: bad parameter shape", g->source, nd->name);
    }
    cd_nn_vk *vk = calloc(1, sizeof *vk);
    if (!vk) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    vk->ctx = ctx;
    vk->nodes = g->count;
    vk->shared = cd_gpu_shared_memory(ctx);
    /* CIRRDATA_NN_NO_FP16: behave as on a device without 16-bit storage (tests, comparisons) */
    const char *no16 = getenv("CIRRDATA_NN_NO_FP16");
    vk->fp16 = fp16 && cd_vk_storage16(ctx) && !(no16 && *no16 && strcmp(no16, "0"));
    vk->esize = vk->fp16 ? 2 : 4;
    vk->no_dw = cd_nn_dwconv_disabled();
    vk->nw = calloc((size_t)g->count + 1, sizeof *vk->nw);
    vk->fused_add = calloc((size_t)g->count + 1, sizeof *vk->fused_add);
    vk->off = calloc((size_t)g->count + 1, sizeof *vk->off);
    vk->owner = calloc((size_t)g->count + 1, sizeof *vk->owner);
    vk->skip = calloc((size_t)g->count + 1, sizeof *vk->skip);
    if (!vk->nw || !vk->fused_add || !vk->skip || !vk->off || !vk->owner) {
        cd_nn_vk_destroy(vk);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    vk->bind_align = l->minStorageBufferOffsetAlignment ? l->minStorageBufferOffsetAlignment : 1;
    vk->align = l->minStorageBufferOffsetAlignment > 256 ? l->minStorageBufferOffsetAlignment : 256;
    vk->range = l->maxStorageBufferRange;
    vk->max_buf = cd_vk_max_allocation(ctx);
    const uint64_t tr = atomic_load(&g_test_range), tb = atomic_load(&g_test_buffer);
    if (tr && tr < vk->range) vk->range = tr;
    if (tb && tb < vk->max_buf) vk->max_buf = tb;
    vk->max_buf = vk->max_buf / vk->align * vk->align;
    if (vk->range < 4 * vk->align || vk->max_buf < 4 * vk->align) {
        cd_nn_vk_destroy(vk);
        return cd_fail(err, CD_ERR_UNSUPPORTED, "Vulkan inference: %s allows too small storage buffers",
                       cd_vk_name(ctx));
    }
    cd_vk_lock(ctx); /* the kernels, memory accounting, the command pool and the queue */
    cd_status st = cd_vk_usable(ctx, err);
    if (st == CD_OK) st = nn_kernels_ready(ctx, vk->fp16, &vk->K, err);
    if (st == CD_OK) st = cd_vk_cmd_create(ctx, &vk->cmd, err);
    if (st == CD_OK) st = upload_weights(vk, g, err);
    cd_vk_unlock(ctx);
    if (st != CD_OK) {
        cd_nn_vk_destroy(vk);
        return st;
    }
    if (fp16_used) *fp16_used = vk->fp16;
    *out = vk;
    return CD_OK;
}

static void free_plan_buffers(cd_nn_vk *vk) {
    cd_gpu_context *ctx = vk->ctx;
    cd_vk_buffer_destroy(ctx, &vk->arena);
    cd_vk_buffer_destroy(ctx, &vk->upload);
    cd_vk_buffer_destroy(ctx, &vk->readback);
    cd_vk_sets_destroy(ctx, &vk->dpool);
    vk->recorded = false;
}

void cd_nn_vk_destroy(cd_nn_vk *vk) {
    if (!vk) return;
    cd_gpu_context *ctx = vk->ctx;
    cd_vk_lock(ctx);
    /* A submission that timed out is still running and uses the buffers and the command buffer freed
     * below: wait for the device first. After a successful run the device is idle already. (The
     * kernels are the context's and go with it.) */
    cd_vk_wait_idle(ctx);
    free_plan_buffers(vk);
    for (int b = 0; b < vk->nwbuf; b++) cd_vk_buffer_destroy(ctx, &vk->wbuf[b]);
    cd_vk_cmd_destroy(&vk->cmd);
    for (int p = 0; p < vk->cap_piece; p++) cd_vk_cmd_destroy(&vk->piece[p]);
    cd_vk_unlock(ctx);
    free(vk->piece);
    if (vk->nw)
        for (int i = 0; i < vk->nodes; i++) free(vk->nw[i].blk);
    free(vk->nw);
    free(vk->wbuf);
    free(vk->wsize);
    free(vk->fused_add);
    free(vk->skip);
    free(vk->off);
    free(vk->owner);
    free(vk->pend_r);
    free(vk->pend_w);
    free(vk);
}

/* ---------------------------------------------------------------- recording */

/* One binding: a buffer range and the element offset of the tensor inside it. */
typedef struct bind {
    VkDescriptorBufferInfo info;
    uint32_t elem;
    bool arena, write;
} bind;

/* Binds `floats` elements at arena offset `off` (elements of esize bytes): the range starts at the
 * offset rounded down to the device's alignment, the rest goes to the shader as an element offset. */
static cd_status arena_bind(cd_nn_vk *vk, const cd_nn_graph *g, int node, int64_t off, int64_t floats, bool write,
                            bind *b, cd_error *err) {
    const VkDeviceSize al = vk->bind_align;
    const VkDeviceSize byte = (VkDeviceSize)off * vk->esize, base = byte / al * al;
    const VkDeviceSize range = byte + (VkDeviceSize)floats * vk->esize - base;
    if (off < 0 || floats <= 0 || (VkDeviceSize)(off + floats) * vk->esize > vk->arena.size)
        return cd_fail(err, CD_ERR_INTERNAL, "%s: node %s: tensor outside the activation arena", g->source,
                       g->nodes[node].name);
    if (range > vk->range) { /* chunk() keeps bindings under the range: a planning error */
        char b1[32], b2[32];
        return cd_fail(err, CD_ERR_INTERNAL,
                       "%s: node %s: a %s tensor is more than %s can bind (maxStorageBufferRange %s)", g->source,
                       g->nodes[node].name, cd_format_bytes(range, b1, sizeof b1), cd_vk_name(vk->ctx),
                       cd_format_bytes(vk->range, b2, sizeof b2));
    }
    if ((byte - base) / vk->esize > UINT32_MAX || (uint64_t)floats > UINT32_MAX)
        return cd_fail(err, CD_ERR_LIMIT, "%s: node %s: tensor too large for 32-bit indexing", g->source,
                       g->nodes[node].name);
    *b = (bind){.info = {.buffer = vk->arena.buffer, .offset = base, .range = range},
                .elem = (uint32_t)((byte - base) / vk->esize),
                .arena = true,
                .write = write};
    return CD_OK;
}

/* Binds `bytes` of a weight piece (aligned: element offset 0). */
static bind weight_bind(cd_nn_vk *vk, wplace p, VkDeviceSize bytes) {
    return (bind){.info = {.buffer = vk->wbuf[p.buf].buffer, .offset = p.off, .range = bytes}};
}

/* Binds channels [o_lo, o_lo + count) of a bias piece: from its offset rounded down to the device's
 * alignment; *elem: where channel o_lo is in the binding. */
static bind bias_bind(cd_nn_vk *vk, wplace p, int64_t o_lo, int64_t count, uint32_t *elem) {
    const VkDeviceSize al = vk->bind_align;
    const VkDeviceSize byte = p.off + (VkDeviceSize)o_lo * 4, base = byte / al * al;
    *elem = (uint32_t)((byte - base) / 4);
    return (bind){
        .info = {.buffer = vk->wbuf[p.buf].buffer, .offset = base, .range = byte + (VkDeviceSize)count * 4 - base}};
}

static bind dummy_bind(cd_nn_vk *vk) { return weight_bind(vk, (wplace){0, 0}, 16); }

/* Images per dispatch of node `node` over a batch of n whose largest tensor takes `img_floats`
 * elements per image: all of them when every binding fits the range, else as many as fit after an
 * alignment unit of slack (a binding starts at its offset rounded down); CD_ERR_LIMIT when one
 * image does not fit. */
static cd_status chunk(cd_nn_vk *vk, const cd_nn_graph *g, int node, int64_t img_floats, int64_t n, int64_t *per,
                       cd_error *err) {
    const VkDeviceSize al = vk->bind_align;
    const VkDeviceSize img = (VkDeviceSize)img_floats * vk->esize, room = vk->range - al;
    if (img * (VkDeviceSize)n <= room) {
        *per = n;
        return CD_OK;
    }
    if (img > room) {
        char b1[32], b2[32];
        return cd_fail(err, CD_ERR_LIMIT,
                       "%s: node %s: one image's %s tensor is more than %s can bind (maxStorageBufferRange %s); use a "
                       "smaller input size",
                       g->source, g->nodes[node].name, cd_format_bytes(img, b1, sizeof b1), cd_vk_name(vk->ctx),
                       cd_format_bytes(vk->range, b2, sizeof b2));
    }
    *per = (int64_t)(room / img);
    return CD_OK;
}

static bool overlap(const span *a, const span *b) {
    return a->buffer == b->buffer && a->lo < b->hi && b->lo < a->hi && (a->tag == 0 || a->tag != b->tag);
}

static cd_status pend_add(span **list, int *n, int *cap, span v) {
    if (*n == *cap) {
        int c = *cap ? *cap * 2 : 64;
        span *r = realloc(*list, (size_t)c * sizeof *r);
        if (!r) return CD_ERR_NOMEM;
        *list = r;
        *cap = c;
    }
    (*list)[(*n)++] = v;
    return CD_OK;
}

/* Records one dispatch (or several along x when the grid is too long: `chunks` pushes with n_base). */
static cd_status dispatch(cd_nn_vk *vk, int kind, VkPipeline pipe, const bind *b, uint32_t nb, void *push, uint32_t gx,
                          uint32_t gy, uint32_t gz, cd_error *err) {
    cd_gpu_context *ctx = vk->ctx;
    const cd_vk_kernel *k = &vk->K->k[kind];
    if (vk->counting) {
        vk->dispatches++;
        return CD_OK;
    }
    /* hazards against what ran since the last barrier (not the same node's: disjoint writes) */
    bool need = false;
    for (uint32_t i = 0; i < nb && !need; i++) {
        if (!b[i].arena) continue;
        span s = {b[i].info.buffer, b[i].info.offset, b[i].info.offset + b[i].info.range, vk->tag};
        for (int j = 0; j < vk->npend_w && !need; j++) need = overlap(&s, &vk->pend_w[j]);
        if (b[i].write)
            for (int j = 0; j < vk->npend_r && !need; j++) need = overlap(&s, &vk->pend_r[j]);
    }
    if (need) {
        cd_vk_cmd_barrier(vk->rec, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                          VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
        vk->npend_r = vk->npend_w = 0;
        vk->barriers++;
    }
    for (uint32_t i = 0; i < nb; i++) {
        if (!b[i].arena) continue;
        span s = {b[i].info.buffer, b[i].info.offset, b[i].info.offset + b[i].info.range, vk->tag};
        cd_status ps = b[i].write ? pend_add(&vk->pend_w, &vk->npend_w, &vk->cap_w, s)
                                  : pend_add(&vk->pend_r, &vk->npend_r, &vk->cap_r, s);
        if (ps != CD_OK) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    VkDescriptorBufferInfo info[MAX_BIND];
    for (uint32_t i = 0; i < nb; i++) info[i] = b[i].info;
    VkDescriptorSet set;
    cd_status st = cd_vk_set_alloc(ctx, vk->dpool, k, info, &set, err);
    if (st != CD_OK) return st;
    cd_vk_cmd_bind(vk->rec, k, pipe, set);
    const VkPhysicalDeviceLimits *l = cd_vk_limits(ctx);
    const uint32_t maxx = l->maxComputeWorkGroupCount[0];
    if (gy > l->maxComputeWorkGroupCount[1] || gz > l->maxComputeWorkGroupCount[2])
        return cd_fail(err, CD_ERR_LIMIT, "Vulkan inference: a %u x %u x %u grid exceeds the limits of %s", gx, gy, gz,
                       cd_vk_name(ctx));
    if (kind == K_GEMM) { /* long grids: several dispatches, each told its first column */
        gemm_push *pc = push;
        for (uint32_t x0 = 0; x0 < gx; x0 += maxx) {
            const uint32_t n = gx - x0 < maxx ? gx - x0 : maxx;
            pc->n_base = x0 * GEMM_TILE;
            cd_vk_cmd_push(vk->rec, k, pc);
            cd_vk_cmd_dispatch(vk->rec, n, gy, gz);
        }
    } else {
        cd_vk_cmd_push(vk->rec, k, push);
        cd_vk_cmd_dispatch(vk->rec, gx, gy, gz);
    }
    vk->dispatches++;
    return CD_OK;
}

/* Grid of an elementwise kernel over `total` invocations: x as long as allowed, then y. */
static cd_status grid_1d(cd_nn_vk *vk, const cd_nn_graph *g, int node, uint64_t total, uint32_t *gx, uint32_t *gy,
                         cd_error *err) {
    const uint64_t groups = (total + vk->K->local - 1) / vk->K->local;
    const VkPhysicalDeviceLimits *l = cd_vk_limits(vk->ctx);
    const uint64_t maxx = l->maxComputeWorkGroupCount[0];
    const uint64_t x = groups < maxx ? groups : maxx, y = (groups + x - 1) / x;
    if (total > UINT32_MAX || y > l->maxComputeWorkGroupCount[1])
        return cd_fail(err, CD_ERR_LIMIT,
                       "%s: node %s: %llu elements are too many for one dispatch; use a smaller batch", g->source,
                       g->nodes[node].name, (unsigned long long)total);
    *gx = (uint32_t)(x ? x : 1);
    *gy = (uint32_t)(y ? y : 1);
    return CD_OK;
}

/* The epilogue flags of conv-like node i writing out_node's tensor (bias 1, residual add 2, ReLU 4) and
 * the residual operand of a fused add (*other, else -1): the GEMM's and the depthwise kernel's. */
static uint32_t epilogue(const cd_nn_node *nd, const cd_nn_node *on, int i, int out_node, int *other) {
    uint32_t flags = (nd->bias ? 1u : 0u) | (nd->relu ? 4u : 0u);
    if (out_node != i) flags |= 2u | (on->relu ? 4u : 0u);
    *other = out_node != i ? (on->in[0] == i ? on->in[1] : on->in[0]) : -1;
    return flags;
}

/* The input, residual (or a dummy) and output bindings (b[0], b[3], b[4]) of images [b0, b0 + nimg) of
 * conv-like node i. */
static cd_status bind_images(cd_nn_vk *vk, const cd_nn_graph *g, int i, int src, int other, int out_node, int64_t b0,
                             int64_t nimg, int64_t in_img, int64_t out_img, bind *b, cd_error *err) {
    cd_status st = arena_bind(vk, g, i, tensor_off(vk, src) + b0 * in_img, nimg * in_img, false, &b[0], err);
    if (st == CD_OK && other >= 0)
        st = arena_bind(vk, g, i, tensor_off(vk, other) + b0 * out_img, nimg * out_img, false, &b[3], err);
    else
        b[3] = dummy_bind(vk);
    if (st == CD_OK)
        st = arena_bind(vk, g, i, tensor_off(vk, out_node) + b0 * out_img, nimg * out_img, true, &b[4], err);
    return st;
}

static cd_status record_gemm(cd_nn_vk *vk, const cd_nn_graph *g, int i, cd_error *err) {
    const cd_nn_node *nd = &g->nodes[i];
    const node_w *w = &vk->nw[i];
    const int src = nd->in[0];
    const cd_nn_shape *is = &g->nodes[src].shape;
    const int out_node = vk->fused_add[i] >= 0 ? vk->fused_add[i] : i;
    const cd_nn_node *on = &g->nodes[out_node];
    const bool lin = nd->op == CD_NN_LINEAR;
    const int64_t groups = lin ? 1 : nd->groups;
    /* a linear is a 1x1 convolution: over (N, I, 1, 1) after a flatten, or over C at every (h, w) */
    const int64_t C = is->c, H = is->h, W = is->w;
    const int64_t OH = nd->shape.h, OW = nd->shape.w, O = nd->out_ch, og = O / groups;
    const int64_t K = node_k(nd), n = nd->shape.n;
    if (C != nd->in_ch)
        return cd_fail(err, CD_ERR_ARG, "%s: node %s: input has %lld channels, the weight %d", g->source, nd->name,
                       (long long)C, nd->in_ch);
    if (!w->blk) return cd_fail(err, CD_ERR_INTERNAL, "%s: node %s: no weights on the device", g->source, nd->name);
    const int64_t in_img = C * H * W, out_img = O * OH * OW;
    int64_t per = 0;
    cd_status st = chunk(vk, g, i, in_img > out_img ? in_img : out_img, n, &per, err);
    if (st != CD_OK) return st;
    if (per * OH * OW > UINT32_MAX - 64 * (int64_t)GEMM_TILE)
        return cd_fail(err, CD_ERR_LIMIT, "%s: node %s: too large for one dispatch; use a smaller batch", g->source,
                       nd->name);
    VkPipeline pipe;
    st = gemm_pipeline(vk->ctx, vk->K, K_GEMM, vk->fp16, lin ? 1 : (uint32_t)nd->kh, lin ? 1 : (uint32_t)nd->kw, &pipe,
                       err);
    if (st != CD_OK) return st;
    int other;
    const uint32_t flags = epilogue(nd, on, i, out_node, &other);
    vk->tag = i + 1;
    for (int64_t b0 = 0; b0 < n && st == CD_OK; b0 += per) {
        const int64_t nimg = n - b0 < per ? n - b0 : per, ntotal = nimg * OH * OW;
        bind b[5];
        st = bind_images(vk, g, i, src, other, out_node, b0, nimg, in_img, out_img, b, err);
        if (st != CD_OK) break;
        gemm_push pc = {.x_off = b[0].elem,
                        .w_off = 0,
                        .b_off = 0,
                        .r_off = b[3].elem,
                        .y_off = b[4].elem,
                        .C = (uint32_t)C,
                        .H = (uint32_t)H,
                        .W = (uint32_t)W,
                        .O = (uint32_t)O,
                        .OH = (uint32_t)OH,
                        .OW = (uint32_t)OW,
                        .Cg = (uint32_t)(C / groups),
                        .Og = (uint32_t)og,
                        .K = (uint32_t)K,
                        .ntotal = (uint32_t)ntotal,
                        .sh = lin ? 1 : (uint32_t)nd->sh,
                        .sw = lin ? 1 : (uint32_t)nd->sw,
                        .ph = lin ? 0 : (uint32_t)nd->ph,
                        .pw = lin ? 0 : (uint32_t)nd->pw,
                        .dh = lin ? 1 : (uint32_t)nd->dh,
                        .dw = lin ? 1 : (uint32_t)nd->dw,
                        .flags = flags};
        const uint64_t gx = ((uint64_t)ntotal + GEMM_TILE - 1) / GEMM_TILE;
        if (w->whole) { /* every group in z */
            b[1] = weight_bind(vk, w->blk[0], (VkDeviceSize)O * K * vk->esize);
            b[2] = nd->bias ? bias_bind(vk, w->bias, 0, O, &pc.b_off) : dummy_bind(vk);
            pc.m_end = pc.w_ld = (uint32_t)og;
            st = dispatch(vk, K_GEMM, pipe, b, 5, &pc, (uint32_t)gx, (uint32_t)((og + GEMM_TILE - 1) / GEMM_TILE),
                          (uint32_t)groups, err);
            continue;
        }
        for (int64_t p = 0; p < groups * w->nblk && st == CD_OK; p++) { /* one output-channel block each */
            const int64_t gi = p / w->nblk, m_lo = p % w->nblk * w->ob, width = og - m_lo < w->ob ? og - m_lo : w->ob;
            b[1] = weight_bind(vk, w->blk[p], (VkDeviceSize)width * K * vk->esize);
            b[2] = nd->bias ? bias_bind(vk, w->bias, gi * og + m_lo, width, &pc.b_off) : dummy_bind(vk);
            pc.g_base = (uint32_t)gi;
            pc.m_base = (uint32_t)m_lo;
            pc.m_end = (uint32_t)(m_lo + width);
            pc.w_ld = (uint32_t)width;
            st = dispatch(vk, K_GEMM, pipe, b, 5, &pc, (uint32_t)gx, (uint32_t)((width + GEMM_TILE - 1) / GEMM_TILE), 1,
                          err);
        }
    }
    vk->tag = 0;
    return st;
}

/* Whether node i runs on the depthwise kernel: the C executor's rule (cd_nn_ref_conv2d_is_depthwise,
 * not disabled), with its weights in one piece (always, in practice: kh*kw*O elements; a layer split
 * into blocks stays on the GEMM, which handles blocks). */
static bool use_dw(const cd_nn_vk *vk, const cd_nn_graph *g, int i) {
    return !vk->no_dw && cd_nn_ref_conv2d_is_depthwise(&g->nodes[i]) && vk->nw[i].whole && vk->nw[i].blk;
}

/* Depthwise conv2d (use_dw): one invocation per output element over chunks of whole images, with the
 * GEMM's bindings (input, weights, bias, residual, output) and epilogue, fusion included. */
static cd_status record_dwconv(cd_nn_vk *vk, const cd_nn_graph *g, int i, cd_error *err) {
    const cd_nn_node *nd = &g->nodes[i];
    const node_w *w = &vk->nw[i];
    const int src = nd->in[0];
    const cd_nn_shape *is = &g->nodes[src].shape;
    const int out_node = vk->fused_add[i] >= 0 ? vk->fused_add[i] : i;
    const cd_nn_node *on = &g->nodes[out_node];
    const int64_t C = is->c, O = nd->out_ch, n = nd->shape.n, K = node_k(nd);
    if (C != nd->in_ch)
        return cd_fail(err, CD_ERR_ARG, "%s: node %s: input has %lld channels, the weight %d", g->source, nd->name,
                       (long long)C, nd->in_ch);
    const int64_t in_img = C * is->h * is->w, out_img = O * nd->shape.h * nd->shape.w;
    int64_t per = 0;
    cd_status st = chunk(vk, g, i, in_img > out_img ? in_img : out_img, n, &per, err);
    int other;
    const uint32_t flags = epilogue(nd, on, i, out_node, &other);
    if (!vk->counting) vk->dw_nodes++;
    vk->tag = i + 1;
    for (int64_t b0 = 0; b0 < n && st == CD_OK; b0 += per) {
        const int64_t nimg = n - b0 < per ? n - b0 : per;
        bind b[5];
        st = bind_images(vk, g, i, src, other, out_node, b0, nimg, in_img, out_img, b, err);
        uint32_t gx = 0, gy = 0;
        if (st == CD_OK) st = grid_1d(vk, g, i, (uint64_t)(nimg * out_img), &gx, &gy, err);
        if (st != CD_OK) break;
        b[1] = weight_bind(vk, w->blk[0], (VkDeviceSize)O * K * vk->esize);
        dw_push pc = {.x_off = b[0].elem,
                      .r_off = b[3].elem,
                      .y_off = b[4].elem,
                      .total = (uint32_t)(nimg * out_img),
                      .groups_x = gx,
                      .C = (uint32_t)C,
                      .H = (uint32_t)is->h,
                      .W = (uint32_t)is->w,
                      .O = (uint32_t)O,
                      .OH = (uint32_t)nd->shape.h,
                      .OW = (uint32_t)nd->shape.w,
                      .m = (uint32_t)(O / C),
                      .kh = (uint32_t)nd->kh,
                      .kw = (uint32_t)nd->kw,
                      .sh = (uint32_t)nd->sh,
                      .sw = (uint32_t)nd->sw,
                      .ph = (uint32_t)nd->ph,
                      .pw = (uint32_t)nd->pw,
                      .dh = (uint32_t)nd->dh,
                      .dw = (uint32_t)nd->dw,
                      .flags = flags};
        b[2] = nd->bias ? bias_bind(vk, w->bias, 0, O, &pc.b_off) : dummy_bind(vk);
        st = dispatch(vk, K_DWCONV, vk->K->pipe[vk->fp16][K_DWCONV], b, 5, &pc, gx, gy, 1, err);
    }
    vk->tag = 0;
    return st;
}

/* Pools and softmax: image-major in and out, dispatched over chunks of whole images. */
static cd_status record_per_image(cd_nn_vk *vk, const cd_nn_graph *g, int i, cd_error *err) {
    const cd_nn_node *nd = &g->nodes[i];
    const cd_nn_shape *is = &g->nodes[nd->in[0]].shape;
    const int64_t n = nd->shape.n, in_img = is->c * is->h * is->w, out_img = nd->shape.c * nd->shape.h * nd->shape.w;
    int64_t per = 0;
    cd_status st = chunk(vk, g, i, in_img > out_img ? in_img : out_img, n, &per, err);
    vk->tag = i + 1;
    for (int64_t b0 = 0; b0 < n && st == CD_OK; b0 += per) {
        const int64_t nimg = n - b0 < per ? n - b0 : per;
        bind b[2];
        st = arena_bind(vk, g, i, tensor_off(vk, nd->in[0]) + b0 * in_img, nimg * in_img, false, &b[0], err);
        if (st == CD_OK) st = arena_bind(vk, g, i, tensor_off(vk, i) + b0 * out_img, nimg * out_img, true, &b[1], err);
        if (st != CD_OK) break;
        uint32_t gx = 0, gy = 0;
        if (nd->op == CD_NN_SOFTMAX) {
            const uint64_t pos = (uint64_t)(nimg * nd->shape.h * nd->shape.w);
            st = grid_1d(vk, g, i, pos, &gx, &gy, err);
            if (st != CD_OK) break;
            softmax_push pc = {
                b[0].elem, b[1].elem, (uint32_t)pos, gx, (uint32_t)nd->shape.c, (uint32_t)(nd->shape.h * nd->shape.w)};
            st = dispatch(vk, K_SOFTMAX, vk->K->pipe[vk->fp16][K_SOFTMAX], b, 2, &pc, gx, gy, 1, err);
            continue;
        }
        st = grid_1d(vk, g, i, (uint64_t)(nimg * out_img), &gx, &gy, err);
        if (st != CD_OK) break;
        pool_push pc = {.x_off = b[0].elem,
                        .y_off = b[1].elem,
                        .total = (uint32_t)(nimg * out_img),
                        .groups_x = gx,
                        .H = (uint32_t)is->h,
                        .W = (uint32_t)is->w,
                        .OH = (uint32_t)nd->shape.h,
                        .OW = (uint32_t)nd->shape.w};
        int kind = K_ADAPTIVE;
        if (nd->op != CD_NN_ADAPTIVE_AVGPOOL2D) {
            pc.kh = (uint32_t)nd->kh;
            pc.kw = (uint32_t)nd->kw;
            pc.sh = (uint32_t)nd->sh;
            pc.sw = (uint32_t)nd->sw;
            pc.ph = (uint32_t)nd->ph;
            pc.pw = (uint32_t)nd->pw;
            if (nd->op == CD_NN_MAXPOOL2D) {
                kind = K_MAXPOOL;
                pc.dh = (uint32_t)nd->dh;
                pc.dw = (uint32_t)nd->dw;
            } else {
                kind = K_AVGPOOL;
                pc.dh = nd->count_include_pad ? 1u : 0u; /* the avg-pool shader's count_include_pad word */
                pc.dw = 0;
            }
        }
        st = dispatch(vk, kind, vk->K->pipe[vk->fp16][kind], b, 2, &pc, gx, gy, 1, err);
    }
    vk->tag = 0;
    return st;
}

/* Elementwise nodes over chunks of whole images like the rest: add and ReLU through the add kernel
 * (kind K_ADD), the other activations through their own kernel (one input, one output). */
static cd_status record_elementwise(cd_nn_vk *vk, const cd_nn_graph *g, int i, int kind, cd_error *err) {
    const cd_nn_node *nd = &g->nodes[i];
    const bool add = kind == K_ADD;
    const int64_t n = nd->shape.n, img = nd->shape.c * nd->shape.h * nd->shape.w;
    int64_t per = 0;
    cd_status st = chunk(vk, g, i, img, n, &per, err);
    vk->tag = i + 1;
    for (int64_t b0 = 0; b0 < n && st == CD_OK; b0 += per) {
        const int64_t cnt = (n - b0 < per ? n - b0 : per) * img;
        bind b[3];
        const uint32_t nb = add ? 3 : 2;
        st = arena_bind(vk, g, i, tensor_off(vk, nd->in[0]) + b0 * img, cnt, false, &b[0], err);
        if (add && st == CD_OK && nd->op == CD_NN_ADD)
            st = arena_bind(vk, g, i, tensor_off(vk, nd->in[1]) + b0 * img, cnt, false, &b[1], err);
        else if (add)
            b[1] = dummy_bind(vk);
        if (st == CD_OK) st = arena_bind(vk, g, i, tensor_off(vk, i) + b0 * img, cnt, true, &b[nb - 1], err);
        uint32_t gx = 0, gy = 0;
        if (st == CD_OK) st = grid_1d(vk, g, i, (uint64_t)cnt, &gx, &gy, err);
        if (st != CD_OK) break;
        if (add) {
            add_push pc = {b[0].elem, b[1].elem,
                           b[2].elem, (uint32_t)cnt,
                           gx,        (nd->op == CD_NN_RELU || nd->relu ? 1u : 0u) | (nd->op == CD_NN_RELU ? 2u : 0u)};
            st = dispatch(vk, kind, vk->K->pipe[vk->fp16][kind], b, nb, &pc, gx, gy, 1, err);
        } else if (kind == K_SOFTPLUS) {
            softplus_push pc = {b[0].elem, b[1].elem, (uint32_t)cnt, gx, nd->beta, nd->threshold};
            st = dispatch(vk, kind, vk->K->pipe[vk->fp16][kind], b, nb, &pc, gx, gy, 1, err);
        } else {
            unary_push pc = {b[0].elem, b[1].elem, (uint32_t)cnt, gx};
            st = dispatch(vk, kind, vk->K->pipe[vk->fp16][kind], b, nb, &pc, gx, gy, 1, err);
        }
    }
    vk->tag = 0;
    return st;
}

/* Layer norm, mul and scale over chunks of whole images: bindings (input, [weight, bias,] [b,] output). */
static cd_status record_channelwise(cd_nn_vk *vk, const cd_nn_graph *g, int i, cd_error *err) {
    const cd_nn_node *nd = &g->nodes[i];
    const node_w *w = &vk->nw[i];
    const cd_nn_shape *is = &g->nodes[nd->in[0]].shape;
    const int64_t n = nd->shape.n, HW = nd->shape.h * nd->shape.w, img = nd->shape.c * HW;
    const cd_nn_shape *bs = nd->op == CD_NN_MUL ? &g->nodes[nd->in[1]].shape : NULL;
    const bool bcast = bs && (bs->h != is->h || bs->w != is->w);
    const int64_t b_img = bcast ? nd->shape.c : img;
    if (has_vectors(nd) && nd->in_ch > 0 && nd->in_ch != is->c)
        return cd_fail(err, CD_ERR_ARG, "%s: node %s: input has %lld channels, the parameters %d", g->source, nd->name,
                       (long long)is->c, nd->in_ch);
    if (has_vectors(nd) && (nd->weight || nd->bias) && !w->blk)
        return cd_fail(err, CD_ERR_INTERNAL, "%s: node %s: no parameters on the device", g->source, nd->name);
    int64_t per = 0;
    cd_status st = chunk(vk, g, i, img, n, &per, err);
    vk->tag = i + 1;
    for (int64_t b0 = 0; b0 < n && st == CD_OK; b0 += per) {
        const int64_t nimg = n - b0 < per ? n - b0 : per;
        bind b[4];
        st = arena_bind(vk, g, i, tensor_off(vk, nd->in[0]) + b0 * img, nimg * img, false, &b[0], err);
        const int nb = nd->op == CD_NN_MUL ? 3 : 4;
        if (st == CD_OK) st = arena_bind(vk, g, i, tensor_off(vk, i) + b0 * img, nimg * img, true, &b[nb - 1], err);
        if (st == CD_OK && bs)
            st = arena_bind(vk, g, i, tensor_off(vk, nd->in[1]) + b0 * b_img, nimg * b_img, false, &b[1], err);
        const uint64_t total = (uint64_t)(nd->op == CD_NN_LAYER_NORM ? nimg * HW : nimg * img);
        uint32_t gx = 0, gy = 0;
        if (st == CD_OK) st = grid_1d(vk, g, i, total, &gx, &gy, err);
        if (st != CD_OK) break;
        if (nd->op == CD_NN_MUL) {
            mul_push pc = {b[0].elem, b[1].elem, b[2].elem, (uint32_t)total, gx, bcast ? (uint32_t)HW : 0u};
            st = dispatch(vk, K_MUL, vk->K->pipe[vk->fp16][K_MUL], b, 3, &pc, gx, gy, 1, err);
            continue;
        }
        uint32_t w_off = 0, b_off = 0;
        b[1] = nd->weight ? bias_bind(vk, w->blk[0], 0, nd->in_ch, &w_off) : dummy_bind(vk);
        b[2] = nd->bias ? bias_bind(vk, w->bias, 0, nd->in_ch, &b_off) : dummy_bind(vk);
        const uint32_t flags = (nd->weight ? 1u : 0u) | (nd->bias ? 2u : 0u);
        if (nd->op == CD_NN_LAYER_NORM) {
            ln_push pc = {b[0].elem, w_off,           b_off,        b[3].elem, (uint32_t)total,
                          gx,        (uint32_t)is->c, (uint32_t)HW, flags,     nd->eps};
            st = dispatch(vk, K_LAYER_NORM, vk->K->pipe[vk->fp16][K_LAYER_NORM], b, 4, &pc, gx, gy, 1, err);
        } else {
            scale_push pc = {b[0].elem, w_off,           b_off,        b[3].elem, (uint32_t)total,
                             gx,        (uint32_t)is->c, (uint32_t)HW, flags};
            st = dispatch(vk, K_SCALE, vk->K->pipe[vk->fp16][K_SCALE], b, 4, &pc, gx, gy, 1, err);
        }
    }
    vk->tag = 0;
    return st;
}

/* The activations other than ReLU: one kernel each. */
static cd_status record_unary(cd_nn_vk *vk, const cd_nn_graph *g, int i, cd_error *err) {
    const cd_nn_node *nd = &g->nodes[i];
    switch (nd->op) {
    case CD_NN_GELU: return record_elementwise(vk, g, i, K_GELU, err);
    case CD_NN_GELU_TANH: return record_elementwise(vk, g, i, K_GELU_TANH, err);
    case CD_NN_SILU: return record_elementwise(vk, g, i, K_SILU, err);
    case CD_NN_HARDSWISH: return record_elementwise(vk, g, i, K_HARDSWISH, err);
    case CD_NN_HARDSIGMOID: return record_elementwise(vk, g, i, K_HARDSIGMOID, err);
    case CD_NN_SOFTPLUS: return record_elementwise(vk, g, i, K_SOFTPLUS, err);
    default: return cd_fail(err, CD_ERR_INTERNAL, "%s: node %s: not an activation", g->source, nd->name);
    }
}

/* dwconv1d: one invocation per output element over chunks of whole images (a token sequence is one
 * (n, c) plane), the parameters bound as one float32 piece. */
static cd_status record_dwconv1d(cd_nn_vk *vk, const cd_nn_graph *g, int i, cd_error *err) {
    const cd_nn_node *nd = &g->nodes[i];
    const node_w *w = &vk->nw[i];
    const cd_nn_shape *s = &nd->shape;
    const int64_t n = s->n, L = s->h * s->w, img = s->c * L;
    int64_t off[3];
    const int64_t an = aux_floats(nd, off);
    if (w->aux.buf < 0 || s->c != nd->in_ch)
        return cd_fail(err, CD_ERR_INTERNAL, "%s: node %s: no parameters on the device", g->source, nd->name);
    int64_t per = 0;
    cd_status st = chunk(vk, g, i, img, n, &per, err);
    vk->tag = i + 1;
    for (int64_t b0 = 0; b0 < n && st == CD_OK; b0 += per) {
        const int64_t cnt = (n - b0 < per ? n - b0 : per) * img;
        bind b[3];
        st = arena_bind(vk, g, i, tensor_off(vk, nd->in[0]) + b0 * img, cnt, false, &b[0], err);
        if (st == CD_OK) st = arena_bind(vk, g, i, tensor_off(vk, i) + b0 * img, cnt, true, &b[2], err);
        uint32_t gx = 0, gy = 0;
        if (st == CD_OK) st = grid_1d(vk, g, i, (uint64_t)cnt, &gx, &gy, err);
        if (st != CD_OK) break;
        b[1] = weight_bind(vk, w->aux, (VkDeviceSize)an * 4);
        dw1d_push pc = {b[0].elem,      b[2].elem,   (uint32_t)off[0], (uint32_t)off[1], (uint32_t)cnt,     gx,
                        (uint32_t)s->c, (uint32_t)L, (uint32_t)nd->kw, (uint32_t)nd->pw, nd->bias ? 1u : 0u};
        st = dispatch(vk, K_DWCONV1D, vk->K->pipe[vk->fp16][K_DWCONV1D], b, 3, &pc, gx, gy, 1, err);
    }
    vk->tag = 0;
    return st;
}

/* The selective scan over chunks of whole images: u, delta, B, C and the output bound per chunk, one
 * invocation per (n, d, s), local / S channels per workgroup (shaders/nn_selective_scan.comp). */
static cd_status record_scan(cd_nn_vk *vk, const cd_nn_graph *g, int i, cd_error *err) {
    const cd_nn_node *nd = &g->nodes[i];
    const node_w *w = &vk->nw[i];
    const cd_nn_shape *s = &nd->shape;
    const int64_t n = s->n, L = s->h * s->w, D = s->c, S = nd->states;
    int64_t off[3];
    const int64_t an = aux_floats(nd, off);
    if (w->aux.buf < 0 || D != nd->in_ch)
        return cd_fail(err, CD_ERR_INTERNAL, "%s: node %s: no parameters on the device", g->source, nd->name);
    const uint32_t local = vk->K->local;
    if (S > (int64_t)local)
        return cd_fail(err, CD_ERR_UNSUPPORTED,
                       "%s: node %s: %lld states are more than the %u invocations of a workgroup the scan uses on %s",
                       g->source, nd->name, (long long)S, local, cd_vk_name(vk->ctx));
    const uint32_t cpw = local / (uint32_t)S;
    int64_t per = 0;
    cd_status st = chunk(vk, g, i, (D > S ? D : S) * L, n, &per, err);
    vk->tag = i + 1;
    for (int64_t b0 = 0; b0 < n && st == CD_OK; b0 += per) {
        const int64_t nimg = n - b0 < per ? n - b0 : per, du = D * L, sl = S * L;
        bind b[6];
        st = arena_bind(vk, g, i, tensor_off(vk, nd->in[0]) + b0 * du, nimg * du, false, &b[0], err);
        if (st == CD_OK) st = arena_bind(vk, g, i, tensor_off(vk, nd->in[1]) + b0 * du, nimg * du, false, &b[1], err);
        if (st == CD_OK) st = arena_bind(vk, g, i, tensor_off(vk, nd->in[2]) + b0 * sl, nimg * sl, false, &b[2], err);
        if (st == CD_OK) st = arena_bind(vk, g, i, tensor_off(vk, nd->in[3]) + b0 * sl, nimg * sl, false, &b[3], err);
        if (st == CD_OK) st = arena_bind(vk, g, i, tensor_off(vk, i) + b0 * du, nimg * du, true, &b[5], err);
        const uint64_t channels = (uint64_t)(nimg * D), groups = (channels + cpw - 1) / cpw;
        uint32_t gx = 0, gy = 0;
        if (st == CD_OK) st = grid_1d(vk, g, i, groups * local, &gx, &gy, err);
        if (st != CD_OK) break;
        b[4] = weight_bind(vk, w->aux, (VkDeviceSize)an * 4);
        scan_push pc = {.u_off = b[0].elem,
                        .d_off = b[1].elem,
                        .b_off = b[2].elem,
                        .c_off = b[3].elem,
                        .y_off = b[5].elem,
                        .a_off = (uint32_t)off[0],
                        .dskip_off = (uint32_t)off[1],
                        .dbias_off = (uint32_t)off[2],
                        .channels = (uint32_t)channels,
                        .groups_x = gx,
                        .D = (uint32_t)D,
                        .S = (uint32_t)S,
                        .L = (uint32_t)L,
                        .cpw = cpw,
                        .flags = (nd->bias ? 1u : 0u) | (nd->delta_bias ? 2u : 0u) | (nd->delta_softplus ? 4u : 0u)};
        st = dispatch(vk, K_SCAN, vk->K->pipe[vk->fp16][K_SCAN], b, 6, &pc, gx, gy, 1, err);
    }
    vk->tag = 0;
    return st;
}

/* window_partition / window_reverse change N: a sample's windows are contiguous, so both run over
 * chunks of whole original samples (image side: the partition's input, the reverse's output). */
static cd_status record_window(cd_nn_vk *vk, const cd_nn_graph *g, int i, cd_error *err) {
    const cd_nn_node *nd = &g->nodes[i];
    const bool part = nd->op == CD_NN_WINDOW_PARTITION;
    const cd_nn_shape *is = part ? &g->nodes[nd->in[0]].shape : &nd->shape;
    const int64_t ws = nd->window, nh = (is->h + ws - 1) / ws, nw = (is->w + ws - 1) / ws, n = is->n;
    const int64_t img = is->c * is->h * is->w, wins = nh * nw * is->c * ws * ws;
    const int64_t in_img = part ? img : wins, out_img = part ? wins : img;
    int64_t per = 0;
    cd_status st = chunk(vk, g, i, in_img > out_img ? in_img : out_img, n, &per, err);
    vk->tag = i + 1;
    for (int64_t b0 = 0; b0 < n && st == CD_OK; b0 += per) {
        const int64_t nimg = n - b0 < per ? n - b0 : per, cnt = nimg * out_img;
        bind b[2];
        st = arena_bind(vk, g, i, tensor_off(vk, nd->in[0]) + b0 * in_img, nimg * in_img, false, &b[0], err);
        if (st == CD_OK) st = arena_bind(vk, g, i, tensor_off(vk, i) + b0 * out_img, cnt, true, &b[1], err);
        uint32_t gx = 0, gy = 0;
        if (st == CD_OK) st = grid_1d(vk, g, i, (uint64_t)cnt, &gx, &gy, err);
        if (st != CD_OK) break;
        window_push pc = {b[0].elem,       b[1].elem,       (uint32_t)cnt, gx,           (uint32_t)is->c,
                          (uint32_t)is->h, (uint32_t)is->w, (uint32_t)ws,  (uint32_t)nh, (uint32_t)nw};
        const int kind = part ? K_WIN_PART : K_WIN_REV;
        st = dispatch(vk, kind, vk->K->pipe[vk->fp16][kind], b, 2, &pc, gx, gy, 1, err);
    }
    vk->tag = 0;
    return st;
}

/* Slice and concat (K_COPY): per chunk of whole images, one dispatch per operand copying its
 * channels into the output's range (concat: two disjoint ranges, no barrier between them). */
static cd_status record_copy(cd_nn_vk *vk, const cd_nn_graph *g, int i, cd_error *err) {
    const cd_nn_node *nd = &g->nodes[i];
    const int64_t n = nd->shape.n, plane = nd->shape.h * nd->shape.w, out_img = nd->shape.c * plane;
    const int nops = nd->op == CD_NN_CONCAT ? 2 : 1;
    int64_t img = out_img;
    for (int k = 0; k < nops; k++) {
        const cd_nn_shape *s = &g->nodes[nd->in[k]].shape;
        if (s->c * s->h * s->w > img) img = s->c * s->h * s->w;
    }
    int64_t per = 0;
    cd_status st = chunk(vk, g, i, img, n, &per, err);
    vk->tag = i + 1;
    for (int64_t b0 = 0; b0 < n && st == CD_OK; b0 += per) {
        const int64_t nimg = n - b0 < per ? n - b0 : per;
        int64_t y_base = 0;
        for (int k = 0; k < nops && st == CD_OK; k++) {
            const cd_nn_shape *s = &g->nodes[nd->in[k]].shape;
            const int64_t in_img = s->c * s->h * s->w;
            const int64_t x_base = nd->op == CD_NN_SLICE ? (int64_t)nd->slice_start * plane : 0;
            const int64_t len = nd->op == CD_NN_SLICE ? out_img : in_img;
            bind b[2];
            st = arena_bind(vk, g, i, tensor_off(vk, nd->in[k]) + b0 * in_img, nimg * in_img, false, &b[0], err);
            if (st == CD_OK)
                st = arena_bind(vk, g, i, tensor_off(vk, i) + b0 * out_img, nimg * out_img, true, &b[1], err);
            uint32_t gx = 0, gy = 0;
            if (st == CD_OK) st = grid_1d(vk, g, i, (uint64_t)(nimg * len), &gx, &gy, err);
            if (st != CD_OK) break;
            copy_push pc = {b[0].elem,       b[1].elem,        (uint32_t)(nimg * len), gx,
                            (uint32_t)len,   (uint32_t)in_img, (uint32_t)x_base,       (uint32_t)out_img,
                            (uint32_t)y_base};
            st = dispatch(vk, K_COPY, vk->K->pipe[vk->fp16][K_COPY], b, 2, &pc, gx, gy, 1, err);
            y_base += len;
        }
    }
    vk->tag = 0;
    return st;
}

/* The largest head dimension the attention kernel takes: each invocation keeps D of the output in
 * registers, and its k and v tiles take 128 D bytes of shared memory (20.5 KiB in all at D = 128). */
#define ATTN_MAX_D 128

/* Shared memory of shaders/nn_attention.comp for head dimension d: the k and v tiles (16 keys, v's
 * features padded to a multiple of 4), the scores, two per-row vectors, and the staged q (64 rows)
 * when `stage_q`. */
static uint64_t attn_shared(int64_t d, bool stage_q) {
    const uint64_t dp = (uint64_t)(d + 3) / 4 * 4;
    return 64 * (uint64_t)d + 64 * dp + 4096 + 512 + 256 * (stage_q ? (uint64_t)d : 1);
}

/* Attention (K_ATTN, a pipeline per head dimension and q staging): per chunk of whole images one
 * dispatch of (query blocks of 64, heads, images) workgroups. q is staged in shared memory where the
 * device has room (maxComputeSharedMemorySize: 32 KiB on lavapipe, so up to D = 72); without it the
 * kernel reads q from the buffer at every tile of keys (about half the speed on lavapipe). */
static cd_status record_attention(cd_nn_vk *vk, const cd_nn_graph *g, int i, cd_error *err) {
    const cd_nn_node *nd = &g->nodes[i];
    const cd_nn_shape *qs = &g->nodes[nd->in[0]].shape, *ks = &g->nodes[nd->in[1]].shape;
    const int64_t n = nd->shape.n, C = qs->c, Lq = qs->h * qs->w, Lk = ks->h * ks->w;
    const int64_t d = nd->heads > 0 ? C / nd->heads : 0;
    if (d < 1 || d > ATTN_MAX_D || d * nd->heads != C)
        return cd_fail(err, CD_ERR_LIMIT,
                       "%s: node %s: head dimension %lld (%lld channels, %d heads) is outside the Vulkan attention "
                       "kernel's 1..%d; run it on the CPU",
                       g->source, nd->name, (long long)d, (long long)C, nd->heads, ATTN_MAX_D);
    const VkPhysicalDeviceLimits *l = cd_vk_limits(vk->ctx);
    const bool stage_q = attn_shared(d, true) <= l->maxComputeSharedMemorySize;
    if (attn_shared(d, false) > l->maxComputeSharedMemorySize)
        return cd_fail(err, CD_ERR_LIMIT,
                       "%s: node %s: head dimension %lld needs %llu bytes of shared memory, %s offers %u; run it on "
                       "the CPU",
                       g->source, nd->name, (long long)d, (unsigned long long)attn_shared(d, false),
                       cd_vk_name(vk->ctx), l->maxComputeSharedMemorySize);
    const uint64_t gx = ((uint64_t)Lq + 63) / 64;
    if (gx > l->maxComputeWorkGroupCount[0] || (uint64_t)nd->heads > l->maxComputeWorkGroupCount[1])
        return cd_fail(err, CD_ERR_LIMIT, "%s: node %s: %lld query tokens in %d heads are too many for one dispatch",
                       g->source, nd->name, (long long)Lq, nd->heads);
    const int64_t q_img = C * Lq, kv_img = C * Lk;
    int64_t per = 0;
    cd_status st = chunk(vk, g, i, q_img > kv_img ? q_img : kv_img, n, &per, err);
    if (st == CD_OK && (uint64_t)per > l->maxComputeWorkGroupCount[2]) per = l->maxComputeWorkGroupCount[2];
    VkPipeline pipe = VK_NULL_HANDLE;
    if (st == CD_OK)
        st = gemm_pipeline(vk->ctx, vk->K, K_ATTN, vk->fp16, (uint32_t)d, stage_q ? (uint32_t)d : 1, &pipe, err);
    vk->tag = i + 1;
    for (int64_t b0 = 0; b0 < n && st == CD_OK; b0 += per) {
        const int64_t nimg = n - b0 < per ? n - b0 : per;
        bind b[4];
        st = arena_bind(vk, g, i, tensor_off(vk, nd->in[0]) + b0 * q_img, nimg * q_img, false, &b[0], err);
        if (st == CD_OK)
            st = arena_bind(vk, g, i, tensor_off(vk, nd->in[1]) + b0 * kv_img, nimg * kv_img, false, &b[1], err);
        if (st == CD_OK)
            st = arena_bind(vk, g, i, tensor_off(vk, nd->in[2]) + b0 * kv_img, nimg * kv_img, false, &b[2], err);
        if (st == CD_OK) st = arena_bind(vk, g, i, tensor_off(vk, i) + b0 * q_img, nimg * q_img, true, &b[3], err);
        if (st != CD_OK) break;
        attn_push pc = {b[0].elem,   b[1].elem,    b[2].elem,    b[3].elem,
                        (uint32_t)C, (uint32_t)Lq, (uint32_t)Lk, nd->attn_scale};
        st = dispatch(vk, K_ATTN, pipe, b, 4, &pc, (uint32_t)gx, (uint32_t)nd->heads, (uint32_t)nimg, err);
    }
    vk->tag = 0;
    return st;
}

static cd_status record_node(cd_nn_vk *vk, const cd_nn_graph *g, int i, cd_error *err) {
    const cd_nn_node *nd = &g->nodes[i];
    if (vk->skip[i]) return CD_OK;
    switch (nd->op) {
    case CD_NN_INPUT: return CD_OK;
    case CD_NN_FLATTEN:
    case CD_NN_DROPOUT: return CD_OK; /* views: tensor_off resolves them */
    case CD_NN_CONV2D: return use_dw(vk, g, i) ? record_dwconv(vk, g, i, err) : record_gemm(vk, g, i, err);
    case CD_NN_LINEAR: return record_gemm(vk, g, i, err);
    case CD_NN_MAXPOOL2D:
    case CD_NN_AVGPOOL2D:
    case CD_NN_ADAPTIVE_AVGPOOL2D:
    case CD_NN_SOFTMAX: return record_per_image(vk, g, i, err);
    case CD_NN_ADD:
    case CD_NN_RELU: return record_elementwise(vk, g, i, K_ADD, err);
    case CD_NN_GELU:
    case CD_NN_GELU_TANH:
    case CD_NN_SILU:
    case CD_NN_HARDSWISH:
    case CD_NN_HARDSIGMOID:
    case CD_NN_SOFTPLUS: return record_unary(vk, g, i, err);
    case CD_NN_DWCONV1D: return record_dwconv1d(vk, g, i, err);
    case CD_NN_SELECTIVE_SCAN: return record_scan(vk, g, i, err);
    case CD_NN_WINDOW_PARTITION:
    case CD_NN_WINDOW_REVERSE: return record_window(vk, g, i, err);
    case CD_NN_LAYER_NORM:
    case CD_NN_MUL:
    case CD_NN_SCALE: return record_channelwise(vk, g, i, err);
    case CD_NN_SLICE:
    case CD_NN_CONCAT: return record_copy(vk, g, i, err);
    case CD_NN_ATTENTION: return record_attention(vk, g, i, err);
    default:
        return cd_fail(err, CD_ERR_UNSUPPORTED, "%s: node %s: op %d is not supported by the Vulkan executor", g->source,
                       nd->name, (int)nd->op);
    }
}

static bool is_view(const cd_nn_node *nd) { return nd->op == CD_NN_FLATTEN || nd->op == CD_NN_DROPOUT; }

typedef struct block {
    int64_t offset, size;
    int tensor;
} block;

/* Fusion and the arena plan. A conv2d/linear without its own ReLU whose only reader is an add, the
 * add's other operand computed before it, writes the add's tensor (residual and the add's ReLU in
 * its epilogue) and the add is not dispatched. The plan is graph.c's (greedy first fit in execution
 * order, blocks rounded to 64 floats, a block freed once its last reader ran, a node's inputs kept
 * while it runs), with the fused add's tensor produced, and its operands read, at the conv's step:
 * so that tensor never overlaps anything the steps in between read or write. */
static cd_status plan(cd_nn_vk *vk, const cd_nn_graph *g, cd_error *err) {
    const int n = g->count;
    for (int i = 0; i < n; i++) {
        vk->fused_add[i] = -1;
        vk->skip[i] = false;
        vk->owner[i] = is_view(&g->nodes[i]) && g->nodes[i].in[0] >= 0 ? vk->owner[g->nodes[i].in[0]] : i;
    }
    const bool fuse = !getenv("CIRRDATA_NN_NO_FUSE");
    for (int j = 0; j < n && fuse; j++) {
        const cd_nn_node *a = &g->nodes[j];
        if (a->op != CD_NN_ADD || a->n_in != 2) continue;
        for (int s = 0; s < 2; s++) {
            const int p = a->in[s], q = a->in[1 - s];
            if (p < 0 || q < 0 || q >= p || vk->owner[p] != p) continue;
            const cd_nn_node *c = &g->nodes[p];
            if ((c->op != CD_NN_CONV2D && c->op != CD_NN_LINEAR) || c->relu || vk->fused_add[p] >= 0 || p == g->output)
                continue;
            int readers = 0;
            for (int m = 0; m < n; m++)
                for (int k = 0; k < g->nodes[m].n_in; k++) readers += g->nodes[m].in[k] == p;
            if (readers != 1) continue;
            vk->fused_add[p] = j;
            vk->skip[j] = true;
            break;
        }
    }
    int *last = malloc((size_t)n * sizeof *last), *step_of = malloc((size_t)n * sizeof *step_of);
    int64_t *size = malloc((size_t)n * sizeof *size);
    block *live = malloc((size_t)n * sizeof *live);
    if (!last || !step_of || !size || !live) {
        free(last);
        free(step_of);
        free(size);
        free(live);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        step_of[i] = i;
        last[i] = -1;
        size[i] = (numel(&g->nodes[i].shape) + 63) / 64 * 64;
    }
    for (int p = 0; p < n; p++)
        if (vk->fused_add[p] >= 0) step_of[vk->fused_add[p]] = p; /* the add's reads happen at the conv's step */
    for (int r = 0; r < n; r++) {
        if (is_view(&g->nodes[r])) continue;
        for (int k = 0; k < g->nodes[r].n_in; k++) {
            const int o = vk->owner[g->nodes[r].in[k]];
            if (last[o] < step_of[r]) last[o] = step_of[r];
        }
    }
    last[vk->owner[g->output]] = n;
    int nlive = 0;
    int64_t arena = 0;
    for (int t = 0; t < n; t++) {
        if (is_view(&g->nodes[t]) || vk->skip[t]) continue;
        const int tensor = vk->fused_add[t] >= 0 ? vk->fused_add[t] : t;
        int kept = 0;
        for (int b = 0; b < nlive; b++)
            if (last[live[b].tensor] >= t) live[kept++] = live[b];
        nlive = kept;
        int64_t at = 0;
        int pos = 0;
        for (; pos < nlive; pos++) {
            if (live[pos].offset - at >= size[tensor]) break;
            if (live[pos].offset + live[pos].size > at) at = live[pos].offset + live[pos].size;
        }
        memmove(&live[pos + 1], &live[pos], (size_t)(nlive - pos) * sizeof *live);
        live[pos] = (block){at, size[tensor], tensor};
        nlive++;
        vk->off[tensor] = at;
        if (at + size[tensor] > arena) arena = at + size[tensor];
    }
    vk->arena_floats = arena;
    free(last);
    free(step_of);
    free(size);
    free(live);
    return CD_OK;
}

/* Work of node i in floating-point operations (a multiply-add counts two), by which the pass is cut
 * into pieces; 0 for what is not dispatched. A depthwise conv's K is kh*kw, the work its own kernel
 * does (the GEMM path would spend most of its tiles on padding, but is only taken when disabled). */
static double node_work(const cd_nn_vk *vk, const cd_nn_graph *g, int i) {
    const cd_nn_node *nd = &g->nodes[i];
    if (vk->skip[i] || nd->op == CD_NN_INPUT || is_view(nd)) return 0;
    const double out = (double)numel(&nd->shape);
    if (nd->op == CD_NN_CONV2D || nd->op == CD_NN_LINEAR) return 2.0 * out * (double)node_k(nd);
    if (nd->op == CD_NN_ATTENTION) { /* q.k and p.v: two multiply-adds per (n, channel, query, key) */
        const cd_nn_shape *k = &g->nodes[nd->in[1]].shape;
        return 4.0 * out * (double)(k->h * k->w);
    }
    if (nd->op == CD_NN_DWCONV1D) return 2.0 * out * nd->kw;
    /* per token and state: the decay's exp (~10), the state update and C h (~5); the softplus is per channel */
    if (nd->op == CD_NN_SELECTIVE_SCAN) return 15.0 * out * nd->states;
    if (nd->op == CD_NN_WINDOW_REVERSE) return 2.0 * out; /* `like` is not read */
    double in = 0;
    for (int k = 0; k < nd->n_in; k++) in += (double)numel(&g->nodes[nd->in[k]].shape);
    return in + out;
}

/* The most work one piece of the pass holds (a node alone may exceed it): 2 GFLOP, well under a
 * second on a GPU and a few seconds on a CPU Vulkan driver (lavapipe), so that each piece finishes
 * long before CIRRDATA_VK_TIMEOUT_S on a slow but working device while a hung one still times out.
 * CIRRDATA_NN_VK_PIECE_FLOP overrides it (tests; 1 makes every dispatched node its own piece). */
static double piece_budget(void) {
    const char *v = getenv("CIRRDATA_NN_VK_PIECE_FLOP");
    const double b = v && *v ? atof(v) : 0;
    return b > 0 ? b : 2e9;
}

/* Begins recording piece p (making its command object on first use); vk->rec is then p's. */
static cd_status begin_piece(cd_nn_vk *vk, int p, cd_error *err) {
    if (p == vk->cap_piece) {
        const int cap = vk->cap_piece ? vk->cap_piece * 2 : 8;
        cd_vk_cmd *r = realloc(vk->piece, (size_t)cap * sizeof *r);
        if (!r) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
        memset(r + vk->cap_piece, 0, (size_t)(cap - vk->cap_piece) * sizeof *r);
        vk->piece = r;
        for (; vk->cap_piece < cap; vk->cap_piece++) {
            cd_status st = cd_vk_cmd_create(vk->ctx, &vk->piece[vk->cap_piece], err);
            if (st != CD_OK) {
                cd_vk_cmd_destroy(&vk->piece[vk->cap_piece]);
                return st;
            }
        }
    }
    vk->rec = &vk->piece[p];
    vk->npiece = p + 1;
    return cd_vk_cmd_begin(vk->rec, true, err); /* submitted once per run */
}

/* Records the nodes, starting a new piece before a node that would take the current one past the
 * budget. Barriers carry over between pieces: a barrier orders everything earlier in submission
 * order, the previous pieces included. */
static cd_status record_pieces(cd_nn_vk *vk, const cd_nn_graph *g, cd_error *err) {
    const double budget = piece_budget();
    double work = 0;
    cd_status st = CD_OK;
    for (int i = 0; i < g->count && st == CD_OK; i++) {
        const double w = node_work(vk, g, i);
        if (work > 0 && w > 0 && work + w > budget) {
            cd_vk_cmd_timestamp(vk->rec, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 1);
            st = cd_vk_cmd_end(vk->rec, err);
            if (st == CD_OK) st = begin_piece(vk, vk->npiece, err);
            if (st != CD_OK) break;
            cd_vk_cmd_timestamp(vk->rec, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, 0);
            work = 0;
        }
        work += w;
        st = record_node(vk, g, i, err);
    }
    return st;
}

/* (Re)allocates the plan's buffers and records the forward pass for the graph's current shape. */
static cd_status record(cd_nn_vk *vk, const cd_nn_graph *g, cd_error *err) {
    cd_gpu_context *ctx = vk->ctx;
    const uint64_t key = plan_key(g);
    if (vk->recorded && key == vk->key) return CD_OK;
    if (g->count != vk->nodes)
        return cd_fail(err, CD_ERR_ARG, "cd_nn_vk_run: not the graph the executor was created for");
    if (g->output < 0 || g->output >= g->count || g->arena_floats <= 0)
        return cd_fail(err, CD_ERR_ARG, "cd_nn_vk_run: %s: the graph is not shaped (cd_nn_graph_shape)", g->source);
    free_plan_buffers(vk);
    cd_status st = plan(vk, g, err);
    if (st != CD_OK) return st;
    const VkDeviceSize in_bytes = (VkDeviceSize)numel(&g->input_shape) * vk->esize,
                       out_bytes = (VkDeviceSize)numel(&g->nodes[g->output].shape) * vk->esize;
    st = cd_vk_buffer_create(ctx, CD_VK_DEVICE, (VkDeviceSize)vk->arena_floats * vk->esize, &vk->arena, err);
    if (st == CD_OK && !vk->shared) st = cd_vk_buffer_create(ctx, CD_VK_UPLOAD, in_bytes, &vk->upload, err);
    if (st == CD_OK && !vk->shared) st = cd_vk_buffer_create(ctx, CD_VK_READBACK, out_bytes, &vk->readback, err);
    if (st != CD_OK) {
        free_plan_buffers(vk);
        return st;
    }
    /* a dry run counts the dispatches (one descriptor set each; chunks and blocks add to the nodes) */
    vk->counting = true;
    vk->dispatches = 0;
    for (int i = 0; i < g->count && st == CD_OK; i++) st = record_node(vk, g, i, err);
    vk->counting = false;
    const uint32_t ndisp = (uint32_t)vk->dispatches + 1;
    if (st == CD_OK) st = cd_vk_sets_create(ctx, ndisp, ndisp * MAX_BIND, &vk->dpool, err);
    if (st == CD_OK) st = begin_piece(vk, 0, err);
    if (st != CD_OK) {
        free_plan_buffers(vk);
        return st;
    }
    cd_vk_cmd *cmd = vk->rec;
    /* the previous submission's accesses (the last dispatches, the readback copy) before this one's */
    cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                      VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                      VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                          VK_ACCESS_TRANSFER_WRITE_BIT);
    if (!vk->shared) {
        VkBufferCopy region = {
            .srcOffset = 0, .dstOffset = (VkDeviceSize)tensor_off(vk, 0) * vk->esize, .size = in_bytes};
        cd_vk_cmd_copy(cmd, vk->upload.buffer, vk->arena.buffer, 1, &region);
        cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                          VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    }
    cd_vk_cmd_timestamp(cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, 0);
    vk->npend_r = vk->npend_w = 0;
    vk->dispatches = vk->barriers = vk->dw_nodes = 0;
    st = record_pieces(vk, g, err);
    cmd = vk->rec; /* the last piece */
    if (st == CD_OK) {
        cd_vk_cmd_timestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 1);
        const int64_t out_off = tensor_off(vk, g->output);
        if (!vk->shared) {
            cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                              VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
            VkBufferCopy region = {.srcOffset = (VkDeviceSize)out_off * vk->esize, .dstOffset = 0, .size = out_bytes};
            cd_vk_cmd_copy(cmd, vk->arena.buffer, vk->readback.buffer, 1, &region);
            cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                              VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
        } else
            cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                              VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
        st = cd_vk_cmd_end(cmd, err);
    } else
        cd_vk_cmd_end(cmd, NULL);
    if (st != CD_OK) {
        free_plan_buffers(vk);
        return st;
    }
    if (getenv("CIRRDATA_NN_VK_VERBOSE"))
        fprintf(stderr,
                "cirrdata: Vulkan inference: recorded %d dispatches, %d barriers in %d pieces for %lld x %lld x %lld x "
                "%lld\n",
                vk->dispatches, vk->barriers, vk->npiece, (long long)g->input_shape.n, (long long)g->input_shape.c,
                (long long)g->input_shape.h, (long long)g->input_shape.w);
    vk->recorded = true;
    vk->key = key;
    return CD_OK;
}

/* Submits every piece, then waits for each in turn, each wait with the whole timeout: the device runs
 * the pieces back to back, and only a piece that does not finish within the timeout after the one
 * before it (a hung device) fails the pass. */
static cd_status submit_pieces(cd_nn_vk *vk, cd_error *err) {
    int sent = 0;
    cd_status st = CD_OK;
    for (; sent < vk->npiece && st == CD_OK; sent++) st = cd_vk_cmd_submit(&vk->piece[sent], err);
    if (st != CD_OK) sent--; /* the one that failed was not submitted */
    for (int p = 0; p < sent; p++) {
        char what[64];
        snprintf(what, sizeof what, "piece %d of %d of the forward pass", p + 1, vk->npiece);
        double ms = 0;
        const cd_status ws = cd_vk_cmd_wait(&vk->piece[p], what, &ms, st == CD_OK ? err : NULL);
        vk->last_ms += ms;
        if (ws != CD_OK && st == CD_OK) st = ws;
        if (ws != CD_OK) break; /* timed out or lost: the context is unusable, destroy waits for the rest */
    }
    return st;
}

/* ---------------------------------------------------------------- run */

cd_status cd_nn_vk_run(cd_nn_vk *vk, const cd_nn_graph *g, const float *input, float *output, cd_error *err) {
    if (!vk || !g || !input || !output) return cd_fail(err, CD_ERR_ARG, "cd_nn_vk_run: NULL argument");
    cd_gpu_context *ctx = vk->ctx;
    cd_vk_lock(ctx);
    vk->last_ms = 0;
    cd_status st = cd_vk_usable(ctx, err);
    if (st == CD_OK) st = record(vk, g, err);
    if (st == CD_OK) {
        const size_t nin = (size_t)numel(&g->input_shape), nout = (size_t)numel(&g->nodes[g->output].shape);
        void *dst = vk->shared ? (char *)vk->arena.mapped + tensor_off(vk, 0) * vk->esize : vk->upload.mapped;
        if (vk->fp16)
            to_half(input, dst, nin);
        else
            memcpy(dst, input, nin * 4);
        st = submit_pieces(vk, err);
        if (st == CD_OK) {
            const void *src = vk->shared ? (const char *)vk->arena.mapped + tensor_off(vk, g->output) * vk->esize
                                         : vk->readback.mapped;
            if (vk->fp16)
                from_half(src, output, nout);
            else
                memcpy(output, src, nout * 4);
        }
    }
    cd_vk_unlock(ctx);
    return st;
}

double cd_nn_vk_last_kernel_ms(const cd_nn_vk *vk) { return vk ? vk->last_ms : 0; }

int cd_nn_vk_depthwise_nodes(const cd_nn_vk *vk) { return vk && vk->recorded ? vk->dw_nodes : 0; }
