/* The inference graph: a list of nodes in execution (topological) order over NCHW float32 tensors,
 * built from the "cirrdata.graph" JSON in a safetensors file's metadata, simplified (batch norm
 * folded into the preceding convolution, ReLU fused into its producer, dropout removed), shaped for
 * an input size, and planned into one activation arena from the tensors' lifetimes.
 *
 * The op set covers torchvision ResNet and VGG; it is deliberately a general graph (named tensors,
 * any fan-in/fan-out) so that layer norm, GELU, depthwise convolution and attention (PVTv2) are new
 * ops, not a redesign. Both executors walk the same node list: nn/ref_*.c (plain C, the correctness
 * baseline and the CPU fallback) and nn/vk_*.c (Vulkan). Not installed. */
#ifndef CD_NN_GRAPH_H
#define CD_NN_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"
#include "nn/safetensors.h"

typedef enum cd_nn_op {
    CD_NN_INPUT = 0, /* the network input (N, C, H, W) */
    CD_NN_CONV2D,    /* weight (O, C/groups, KH, KW), optional bias (O) */
    CD_NN_BATCHNORM, /* only before simplification: folded into the preceding conv, or made a scale */
    CD_NN_RELU,      /* only before simplification where it follows a conv/linear/add */
    CD_NN_MAXPOOL2D,
    CD_NN_AVGPOOL2D,
    CD_NN_ADAPTIVE_AVGPOOL2D,
    CD_NN_FLATTEN, /* (N, C, H, W) -> (N, C*H*W, 1, 1): a view, no copy */
    CD_NN_LINEAR,  /* weight (O, I), optional bias (O); input (N, I, 1, 1), or (N, I, H, W): over C at
                    * every (h, w), a 1x1 convolution (kh..dw set to 1 / 0 so the conv path runs it) */
    CD_NN_ADD,     /* elementwise sum of two equal-shaped tensors */
    CD_NN_SOFTMAX, /* over C */
    CD_NN_DROPOUT, /* identity at inference; removed by simplification */
    /* elementwise activations, one input, output shape = input shape */
    CD_NN_GELU,        /* exact: x * 0.5 * (1 + erf(x / sqrt(2))) */
    CD_NN_GELU_TANH,   /* PyTorch approximate='tanh': 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    CD_NN_SILU,        /* x * sigmoid(x) */
    CD_NN_HARDSWISH,   /* x * relu6(x + 3) / 6 */
    CD_NN_HARDSIGMOID, /* relu6(x + 3) / 6 */
    CD_NN_SOFTPLUS,    /* x * beta > threshold ? x : log1p(exp(beta * x)) / beta (PyTorch's F.softplus) */
    /* MambaVision's mixer and windows (nn/ref_scan.c); a token sequence is an image's H*W pixels in
     * row-major order, its features the channels */
    CD_NN_DWCONV1D,         /* depthwise conv1d over each (n, c)'s tokens: weight (C, K), zero padding */
    CD_NN_SELECTIVE_SCAN,   /* inputs u, delta (N, D, H, W), B, C (N, S, H, W): mamba's selective scan */
    CD_NN_WINDOW_PARTITION, /* (N, C, H, W) zero-padded to multiples of the window, cut into windows */
    CD_NN_WINDOW_REVERSE,   /* inputs windows, like: the windows reassembled and cropped to like's N, H, W */
    CD_NN_LAYER_NORM,       /* over C at each (n, h, w), biased variance; optional weight/bias (C); eps */
    CD_NN_MUL,              /* a * b, b of a's shape or (N, C, 1, 1) broadcast over H, W */
    CD_NN_SCALE,            /* x * weight[c] (+ bias[c]): layer scale, and a batch norm no conv takes */
    CD_NN_SLICE,            /* channels [slice_start, slice_start + slice_len) of the input */
    CD_NN_CONCAT,           /* two inputs along C (equal N, H, W) */
    CD_NN_ATTENTION,        /* q, k, v: softmax(scale q.k) v per head over the tokens (schemas/model-graph.md) */
    CD_NN_OP_COUNT
} cd_nn_op;

/* "conv2d", "batch_norm", ... (the JSON spelling). */
CD_INTERNAL const char *cd_nn_op_name(cd_nn_op op);

typedef struct cd_nn_shape {
    int64_t n, c, h, w;
} cd_nn_shape;

/* The most inputs an op takes (the selective scan: u, delta, B, C). */
#define CD_NN_MAX_INPUTS 4

typedef struct cd_nn_node {
    cd_nn_op op;
    char name[128];           /* the node's name in the JSON (used in messages) */
    int in[CD_NN_MAX_INPUTS]; /* producer node indices; -1 unused */
    int n_in;

    /* conv2d / pools */
    int kh, kw, sh, sw, ph, pw, dh, dw;
    int groups;             /* conv2d */
    bool ceil_mode;         /* max/avg pool */
    bool count_include_pad; /* avg pool */
    int out_h, out_w;       /* adaptive avg pool: output size */
    int in_ch, out_ch;      /* conv2d, linear: from the weight shapes; layer_norm, scale: C (layer_norm
                             * without weight or bias on an input of unknown width: 0, any C) */

    /* slice: channels [slice_start, slice_start + slice_len); attention: `heads` dividing C, head h on
     * channels [h*C/heads, (h+1)*C/heads), attn_scale the factor on q.k before the softmax */
    int slice_start, slice_len;
    int heads;
    float attn_scale;

    /* Parameters as float32, owned by the graph (malloc). After simplification a conv's weight and
     * bias include the folded batch norm (bias is then never NULL). */
    float *weight, *bias;
    float *bn_mean, *bn_var; /* batch norm before folding (weight/bias are gamma/beta); NULL after */
    float eps;

    /* softplus */
    float beta, threshold;
    /* dwconv1d: weight (C, K) with kw = K, pw = left padding (the right one is K - 1 - pw), bias (C) or
     * NULL, in_ch = out_ch = C. selective_scan: weight = A = -exp(A_log) (D, S), bias = the D skip (D)
     * or NULL, delta_bias (D) or NULL, in_ch = out_ch = D, states = S. window_*: window. */
    float *delta_bias;
    bool delta_softplus;
    int states;
    int window;

    bool relu;     /* fused ReLU on the output (conv2d, linear, add) */
    float *packed; /* conv2d: nn/ref_ops.c's packed weights and padded bias, made on the first
                                 * run (aligned_alloc; freed with the parameters) */

    /* Filled by cd_nn_graph_shape for the current input. */
    cd_nn_shape shape;
    int64_t offset; /* floats from the arena's start of this node's output (flatten: its input's) */
    int last_use;   /* index of the last node reading this output (planning) */
} cd_nn_node;

typedef struct cd_nn_graph {
    cd_nn_node *nodes;
    int count;
    int output;           /* the node whose tensor is the result (logits, or probabilities) */
    char arch[64];        /* metadata "cirrdata.arch", e.g. "resnet18" */
    int classes;          /* output channels */
    int in_channels;      /* 3 for the staging models */
    int64_t arena_floats; /* activation arena size for the current shape (floats) */
    int64_t input_offset; /* where the input goes in the arena (floats) */
    cd_nn_shape input_shape;
    char source[512]; /* file path, for messages */
} cd_nn_graph;

/* Builds the graph from an open safetensors file: parses metadata "cirrdata.graph" (format in
 * schemas/model-graph.md), checks every node (op known, inputs defined earlier, parameter tensors
 * present with the right shapes and float dtypes, parameters in range), copies the parameters, then
 * simplifies (folds batch norm, fuses ReLU, drops dropout). Errors name the file and the node or
 * tensor. */
CD_INTERNAL cd_status cd_nn_graph_load(const cd_st_file *f, cd_nn_graph **out, cd_error *err);
CD_INTERNAL void cd_nn_graph_free(cd_nn_graph *g);

/* Propagates shapes from an input (n, in_channels, h, w), checks every op's constraints (positive
 * output sizes, linear input width == in_ch, add operands equal), and plans the arena: every output
 * gets an offset so that no two tensors alive at once overlap (greedy first fit in execution order,
 * sizes rounded up to 64 floats). Errors (CD_ERR_ARG for a bad input size, CD_ERR_LIMIT past
 * max_arena_bytes when non-zero) name the node. */
CD_INTERNAL cd_status cd_nn_graph_shape(cd_nn_graph *g, int64_t n, int64_t h, int64_t w, uint64_t max_arena_bytes,
                                        cd_error *err);

/* Plain C executor: runs the shaped graph on `arena` (g->arena_floats floats); the input must be at
 * arena + g->input_offset, the result is read at arena + g->nodes[g->output].offset. threads <= 0:
 * online CPUs. */
CD_INTERNAL cd_status cd_nn_ref_run(const cd_nn_graph *g, float *arena, int threads, cd_error *err);

/* The reference ops, one call each over NCHW float32 (used by cd_nn_ref_run and by the Vulkan tests
 * as the baseline). `out` never aliases an input. */
CD_INTERNAL void cd_nn_ref_conv2d(const cd_nn_node *node, const cd_nn_shape *in_shape, const float *in, float *out,
                                  int threads);
/* Depthwise convolution (cd_nn_ref_conv2d_is_depthwise: groups == in_ch > 1, out_ch a multiple of
 * in_ch) by a direct per-plane kernel; cd_nn_ref_conv2d takes it for such nodes unless
 * cd_nn_dwconv_disabled (CIRRDATA_NN_NO_DWCONV set: the grouped GEMM, for tests and benchmarks; the
 * Vulkan executor follows the same rule). Any other node: no effect. */
CD_INTERNAL void cd_nn_ref_dwconv2d(const cd_nn_node *node, const cd_nn_shape *in_shape, const float *in, float *out,
                                    int threads);
CD_INTERNAL bool cd_nn_ref_conv2d_is_depthwise(const cd_nn_node *node);
CD_INTERNAL bool cd_nn_dwconv_disabled(void);
CD_INTERNAL void cd_nn_ref_linear(const cd_nn_node *node, const cd_nn_shape *in_shape, const float *in, float *out,
                                  int threads);
CD_INTERNAL void cd_nn_ref_maxpool2d(const cd_nn_node *node, const cd_nn_shape *in_shape, const float *in, float *out);
CD_INTERNAL void cd_nn_ref_avgpool2d(const cd_nn_node *node, const cd_nn_shape *in_shape, const float *in, float *out);
CD_INTERNAL void cd_nn_ref_adaptive_avgpool2d(const cd_nn_node *node, const cd_nn_shape *in_shape, const float *in,
                                              float *out);
CD_INTERNAL void cd_nn_ref_add(const cd_nn_node *node, int64_t count, const float *a, const float *b, float *out);
/* An elementwise activation (relu, gelu, gelu_tanh, silu, hardswish, hardsigmoid) over count floats;
 * other ops: no effect. NaN stays NaN. */
CD_INTERNAL void cd_nn_ref_unary(cd_nn_op op, int64_t count, const float *in, float *out);
CD_INTERNAL void cd_nn_ref_softmax(const cd_nn_shape *shape, const float *in, float *out);
/* softplus with the node's beta and threshold over count floats (NaN stays NaN). */
CD_INTERNAL void cd_nn_ref_softplus(const cd_nn_node *node, int64_t count, const float *in, float *out);

/* nn/ref_scan.c: MambaVision's ops. in_shape is the (first) input's; threads as cd_nn_ref_run's. */
CD_INTERNAL void cd_nn_ref_dwconv1d(const cd_nn_node *node, const cd_nn_shape *in_shape, const float *in, float *out,
                                    int threads);
/* u, delta (N, D, H, W) as in_shape; b, c (N, S, H, W); out (N, D, H, W). Sequential over the tokens
 * with a float32 state, threads over (n, d). */
CD_INTERNAL void cd_nn_ref_selective_scan(const cd_nn_node *node, const cd_nn_shape *in_shape, const float *u,
                                          const float *delta, const float *b, const float *c, float *out, int threads);
/* in_shape: the image (N, C, H, W); out: the node's shape (N * windows, C, ws, ws). */
CD_INTERNAL void cd_nn_ref_window_partition(const cd_nn_node *node, const cd_nn_shape *in_shape, const float *in,
                                            float *out);
/* in_shape: the windows (N * windows, C, ws, ws); out: the node's shape (N, C, H, W). */
CD_INTERNAL void cd_nn_ref_window_reverse(const cd_nn_node *node, const cd_nn_shape *in_shape, const float *in,
                                          float *out);
/* nn/ref_norm.c. Layer norm over C at every (n, h, w) of `shape` (node: weight/bias or NULL, eps,
 * in_ch == shape->c), sums in double. */
CD_INTERNAL void cd_nn_ref_layer_norm(const cd_nn_node *node, const cd_nn_shape *shape, const float *in, float *out,
                                      int threads);
/* out = a * b over a's shape; b has a's shape, or is (a.n, a.c, 1, 1) when b_shape says so. */
CD_INTERNAL void cd_nn_ref_mul(const cd_nn_shape *a_shape, const cd_nn_shape *b_shape, const float *a, const float *b,
                               float *out);
/* out = in * weight[c] (+ bias[c]) (node: weight (C), bias or NULL). */
CD_INTERNAL void cd_nn_ref_scale(const cd_nn_node *node, const cd_nn_shape *shape, const float *in, float *out);

/* Runs fn over contiguous ranges of [0, count), one per thread (threads <= 0: online CPUs), the caller
 * taking the first; nn/ref_ops.c's pool of the reference ops. */
typedef void (*cd_nn_range_fn)(void *ctx, int64_t begin, int64_t end);
CD_INTERNAL void cd_nn_parallel_for(int64_t count, int threads, cd_nn_range_fn fn, void *ctx);

/* nn/ref_attention.c. Slice: channels [slice_start, +slice_len) of `in` (shape in_shape) into out.
 * Concat: a (N, Ca, H, W) then b (N, Cb, H, W) along C. Attention: q (q_shape), k and v (kv_shape,
 * equal), out of q's shape; per (n, head) the softmax over keys with the row maximum subtracted,
 * float32 sums; scratch is bounded per thread (a block of query rows times the keys), none over the
 * whole batch. CD_ERR_NOMEM (naming the node) when the scratch cannot be allocated. */
CD_INTERNAL void cd_nn_ref_slice(const cd_nn_node *node, const cd_nn_shape *in_shape, const float *in, float *out);
CD_INTERNAL void cd_nn_ref_concat(const cd_nn_shape *a_shape, const float *a, const cd_nn_shape *b_shape,
                                  const float *b, float *out);
CD_INTERNAL cd_status cd_nn_ref_attention(const cd_nn_node *node, const cd_nn_shape *q_shape, const float *q,
                                          const cd_nn_shape *kv_shape, const float *k, const float *v, float *out,
                                          int threads, cd_error *err);

#endif
