/* The inference graph: parsing "cirrdata.graph" (schemas/model-graph.md), checking it against the
 * parameter tensors, simplifying it (batch norm folded into convolutions or else made a scale, scales
 * folded into convolutions and linears, ReLU fused, dropout and dead nodes removed), shape
 * propagation with PyTorch's output-size formulas, and the first-fit arena plan. Node 0 is always the
 * graph input (CD_NN_INPUT). */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/graph.h"

#define GRAPH_MAX_NODES 4096
#define GRAPH_MAX_PARAM_DIM (1 << 30)
/* Input sizes beyond these are refused before any product is formed (no overflow below). */
#define SHAPE_MAX_N (1 << 20)
#define SHAPE_MAX_HW (1 << 20)
#define ARENA_ALIGN 64

static const char *const op_names[CD_NN_OP_COUNT] = {
    [CD_NN_INPUT] = "input",
    [CD_NN_CONV2D] = "conv2d",
    [CD_NN_BATCHNORM] = "batch_norm",
    [CD_NN_RELU] = "relu",
    [CD_NN_MAXPOOL2D] = "max_pool2d",
    [CD_NN_AVGPOOL2D] = "avg_pool2d",
    [CD_NN_ADAPTIVE_AVGPOOL2D] = "adaptive_avg_pool2d",
    [CD_NN_FLATTEN] = "flatten",
    [CD_NN_LINEAR] = "linear",
    [CD_NN_ADD] = "add",
    [CD_NN_SOFTMAX] = "softmax",
    [CD_NN_DROPOUT] = "dropout",
    [CD_NN_GELU] = "gelu",
    [CD_NN_GELU_TANH] = "gelu_tanh",
    [CD_NN_SILU] = "silu",
    [CD_NN_HARDSWISH] = "hardswish",
    [CD_NN_HARDSIGMOID] = "hardsigmoid",
    [CD_NN_SOFTPLUS] = "softplus",
    [CD_NN_DWCONV1D] = "dwconv1d",
    [CD_NN_SELECTIVE_SCAN] = "selective_scan",
    [CD_NN_WINDOW_PARTITION] = "window_partition",
    [CD_NN_WINDOW_REVERSE] = "window_reverse",
    [CD_NN_LAYER_NORM] = "layer_norm",
    [CD_NN_MUL] = "mul",
    [CD_NN_SCALE] = "scale",
    [CD_NN_SLICE] = "slice",
    [CD_NN_CONCAT] = "concat",
    [CD_NN_ATTENTION] = "attention",
};

const char *cd_nn_op_name(cd_nn_op op) {
    if ((int)op < 0 || op >= CD_NN_OP_COUNT) return "unknown";
    return op_names[op];
}

static void free_node_params(cd_nn_node *nd) {
    free(nd->weight);
    free(nd->bias);
    free(nd->bn_mean);
    free(nd->bn_var);
    free(nd->packed);
    free(nd->delta_bias);
    nd->weight = nd->bias = nd->bn_mean = nd->bn_var = nd->packed = nd->delta_bias = NULL;
}

void cd_nn_graph_free(cd_nn_graph *g) {
    if (!g) return;
    for (int i = 0; i < g->count; i++) free_node_params(&g->nodes[i]);
    free(g->nodes);
    free(g);
}

/* "<file>: graph node 'name' (op): <message>" */
CD_PRINTF(5, 6)
static cd_status node_fail(cd_error *err, cd_status st, const cd_nn_graph *g, const cd_nn_node *nd, const char *fmt,
                           ...) {
    char msg[CD_ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return cd_fail(err, st, "%s: graph node '%s' (%s): %s", g->source, nd->name, cd_nn_op_name(nd->op), msg);
}

/* ---- JSON field readers (every one names the node and the field on failure) ---- */

typedef struct parse_ctx {
    const cd_st_file *f;
    cd_nn_graph *g;
    cd_error *err;
} parse_ctx;

static cd_status get_int(parse_ctx *p, cd_nn_node *nd, json_t *obj, const char *key, long long lo, long long hi,
                         long long *out) {
    json_t *v = json_object_get(obj, key);
    if (!v) return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "missing field '%s'", key);
    if (!json_is_integer(v)) return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field '%s' is not an integer", key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field '%s' is %lld, outside %lld..%lld", key, x, lo, hi);
    *out = x;
    return CD_OK;
}

/* [h, w] or a single integer meaning both (PyTorch accepts either). When null_default is non-NULL
 * a null (or absent) field takes that value (pool stride defaults to the kernel). */
static cd_status get_pair(parse_ctx *p, cd_nn_node *nd, json_t *obj, const char *key, int lo, int hi,
                          const int *null_default, int *h, int *w) {
    json_t *v = json_object_get(obj, key);
    if ((!v || json_is_null(v) || (json_is_array(v) && json_array_size(v) == 0)) && null_default) {
        *h = null_default[0];
        *w = null_default[1];
        return CD_OK;
    }
    if (!v) return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "missing field '%s'", key);
    long long a, b;
    if (json_is_integer(v)) {
        a = b = json_integer_value(v);
    } else if (json_is_array(v) && json_array_size(v) == 2 && json_is_integer(json_array_get(v, 0)) &&
               json_is_integer(json_array_get(v, 1))) {
        a = json_integer_value(json_array_get(v, 0));
        b = json_integer_value(json_array_get(v, 1));
    } else {
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field '%s' is not [h, w] integers", key);
    }
    if (a < lo || a > hi || b < lo || b > hi)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field '%s' is [%lld, %lld], outside %d..%d", key, a, b, lo,
                         hi);
    *h = (int)a;
    *w = (int)b;
    return CD_OK;
}

static cd_status get_bool(parse_ctx *p, cd_nn_node *nd, json_t *obj, const char *key, bool *out) {
    json_t *v = json_object_get(obj, key);
    if (!v) return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "missing field '%s'", key);
    if (!json_is_boolean(v)) return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field '%s' is not a boolean", key);
    *out = json_is_true(v);
    return CD_OK;
}

/* A tensor-name field: a string, or null when allow_null (then *out = NULL). */
static cd_status get_tensor_name(parse_ctx *p, cd_nn_node *nd, json_t *obj, const char *key, bool allow_null,
                                 const char **out) {
    json_t *v = json_object_get(obj, key);
    if (!v) return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "missing field '%s'", key);
    if (json_is_null(v) && allow_null) {
        *out = NULL;
        return CD_OK;
    }
    if (!json_is_string(v) || json_string_length(v) == 0)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field '%s' is not a tensor name%s", key,
                         allow_null ? " or null" : "");
    *out = json_string_value(v);
    return CD_OK;
}

/* Fetches a float32 copy of a parameter tensor with an exact shape. */
static cd_status fetch(parse_ctx *p, cd_nn_node *nd, const char *field, const char *tensor, int rank,
                       const int64_t *shape, float **out) {
    cd_error e;
    cd_error_clear(&e);
    cd_status st = cd_st_get_f32(p->f, tensor, rank, shape, out, &e);
    if (st != CD_OK)
        return cd_fail(p->err, st, "%s (graph node '%s' (%s), field '%s')", e.message, nd->name, cd_nn_op_name(nd->op),
                       field);
    return CD_OK;
}

/* Looks a tensor up to learn its shape before fetching it. */
static cd_status find_param(parse_ctx *p, cd_nn_node *nd, const char *field, const char *tensor, int rank,
                            const cd_st_tensor **out) {
    const cd_st_tensor *t = cd_st_find(p->f, tensor);
    if (!t) return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field '%s': missing tensor '%s'", field, tensor);
    if (t->rank != rank)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field '%s': tensor '%s' has rank %d, expected %d", field,
                         tensor, t->rank, rank);
    for (int i = 0; i < rank; i++)
        if (t->shape[i] < 1 || t->shape[i] > GRAPH_MAX_PARAM_DIM)
            return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field '%s': tensor '%s' has dimension %d of size %lld",
                             field, tensor, i, (long long)t->shape[i]);
    *out = t;
    return CD_OK;
}

static bool parse_op(const char *s, cd_nn_op *op) {
    for (int i = CD_NN_CONV2D; i < CD_NN_OP_COUNT; i++)
        if (strcmp(s, op_names[i]) == 0) {
            *op = (cd_nn_op)i;
            return true;
        }
    return false;
}

/* Channel bookkeeping while parsing: a tensor is 4-D (N, C, H, W) with known C, or "flat" (N, F)
 * after a flatten, with F known only after a linear (else -1 until shaping). A linear keeps its
 * input's kind: on a 4-D tensor it works over C at every position. */
typedef struct chan_info {
    int64_t ch;
    bool flat;
} chan_info;

static cd_status parse_conv(parse_ctx *p, cd_nn_node *nd, json_t *j, const chan_info *in) {
    cd_status st;
    const char *wname = NULL, *bname = NULL;
    long long groups;
    if ((st = get_tensor_name(p, nd, j, "weight", false, &wname)) ||
        (st = get_tensor_name(p, nd, j, "bias", true, &bname)) ||
        (st = get_pair(p, nd, j, "stride", 1, 64, NULL, &nd->sh, &nd->sw)) ||
        (st = get_pair(p, nd, j, "padding", 0, 64, NULL, &nd->ph, &nd->pw)) ||
        (st = get_pair(p, nd, j, "dilation", 1, 64, NULL, &nd->dh, &nd->dw)) ||
        (st = get_int(p, nd, j, "groups", 1, INT_MAX, &groups)))
        return st;
    json_t *pm = json_object_get(j, "padding_mode");
    if (pm && !(json_is_string(pm) && strcmp(json_string_value(pm), "zeros") == 0))
        return node_fail(p->err, CD_ERR_UNSUPPORTED, p->g, nd, "padding_mode other than 'zeros' is not supported");
    if (in->flat) return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "input is flattened, conv2d needs (N, C, H, W)");
    int64_t c = in->ch;
    if (c % groups != 0)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "groups %lld does not divide the %lld input channels", groups,
                         (long long)c);
    const cd_st_tensor *t = NULL;
    if ((st = find_param(p, nd, "weight", wname, 4, &t))) return st;
    int64_t o = t->shape[0];
    if (o % groups != 0)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "groups %lld does not divide the %lld output channels",
                         groups, (long long)o);
    if (t->shape[2] > 64 || t->shape[3] > 64)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "kernel %lldx%lld is outside 1..64", (long long)t->shape[2],
                         (long long)t->shape[3]);
    nd->groups = (int)groups;
    nd->kh = (int)t->shape[2];
    nd->kw = (int)t->shape[3];
    json_t *k = json_object_get(j, "kernel");
    if (k) { /* optional; must agree with the weight when present */
        int kh, kw;
        if ((st = get_pair(p, nd, j, "kernel", 1, 64, NULL, &kh, &kw))) return st;
        if (kh != nd->kh || kw != nd->kw)
            return node_fail(p->err, CD_ERR_FORMAT, p->g, nd,
                             "field 'kernel' [%d, %d] disagrees with the weight's %dx%d", kh, kw, nd->kh, nd->kw);
    }
    int64_t wshape[4] = {o, c / groups, nd->kh, nd->kw};
    if ((st = fetch(p, nd, "weight", wname, 4, wshape, &nd->weight))) return st;
    if (bname && (st = fetch(p, nd, "bias", bname, 1, &o, &nd->bias))) return st;
    nd->in_ch = (int)c;
    nd->out_ch = (int)o;
    return CD_OK;
}

/* Field 'eps': a finite number > 0 (also as a float32). */
static cd_status get_eps(parse_ctx *p, cd_nn_node *nd, json_t *j, double *out) {
    json_t *e = json_object_get(j, "eps");
    if (!e) return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "missing field 'eps'");
    double eps = json_is_number(e) ? json_number_value(e) : NAN;
    if (!isfinite(eps) || eps <= 0 || (float)eps <= 0)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field 'eps' must be a finite number > 0");
    *out = eps;
    return CD_OK;
}

static cd_status parse_bn(parse_ctx *p, cd_nn_node *nd, json_t *j, const chan_info *in) {
    cd_status st;
    const char *wn = NULL, *bn = NULL, *mn = NULL, *vn = NULL;
    double eps;
    if ((st = get_tensor_name(p, nd, j, "weight", true, &wn)) || (st = get_tensor_name(p, nd, j, "bias", true, &bn)) ||
        (st = get_tensor_name(p, nd, j, "running_mean", false, &mn)) ||
        (st = get_tensor_name(p, nd, j, "running_var", false, &vn)) || (st = get_eps(p, nd, j, &eps)))
        return st;
    if (in->flat)
        return node_fail(p->err, CD_ERR_UNSUPPORTED, p->g, nd, "batch_norm over a flattened tensor is not supported");
    int64_t c = in->ch;
    if ((st = fetch(p, nd, "running_mean", mn, 1, &c, &nd->bn_mean)) ||
        (st = fetch(p, nd, "running_var", vn, 1, &c, &nd->bn_var)))
        return st;
    if (wn) {
        if ((st = fetch(p, nd, "weight", wn, 1, &c, &nd->weight))) return st;
    }
    if (bn) {
        if ((st = fetch(p, nd, "bias", bn, 1, &c, &nd->bias))) return st;
    }
    for (int64_t i = 0; i < c; i++)
        if (!((double)nd->bn_var[i] + eps > 0))
            return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "running_var[%lld] + eps = %g is not > 0", (long long)i,
                             (double)nd->bn_var[i] + eps);
    nd->eps = (float)eps;
    nd->in_ch = nd->out_ch = (int)c;
    return CD_OK;
}

static cd_status parse_pool(parse_ctx *p, cd_nn_node *nd, json_t *j, const chan_info *in) {
    cd_status st;
    if (in->flat) return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "input is flattened, pooling needs (N, C, H, W)");
    if (nd->op == CD_NN_ADAPTIVE_AVGPOOL2D)
        return get_pair(p, nd, j, "output_size", 1, 64, NULL, &nd->out_h, &nd->out_w);
    if ((st = get_pair(p, nd, j, "kernel", 1, 64, NULL, &nd->kh, &nd->kw))) return st;
    int kdef[2] = {nd->kh, nd->kw};
    if ((st = get_pair(p, nd, j, "stride", 1, 64, kdef, &nd->sh, &nd->sw)) ||
        (st = get_pair(p, nd, j, "padding", 0, 64, NULL, &nd->ph, &nd->pw)) ||
        (st = get_bool(p, nd, j, "ceil_mode", &nd->ceil_mode)))
        return st;
    if (nd->ph > nd->kh / 2 || nd->pw > nd->kw / 2)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "padding [%d, %d] is more than half the kernel [%d, %d]",
                         nd->ph, nd->pw, nd->kh, nd->kw);
    if (nd->op == CD_NN_MAXPOOL2D) {
        if ((st = get_pair(p, nd, j, "dilation", 1, 64, NULL, &nd->dh, &nd->dw))) return st;
    } else {
        nd->dh = nd->dw = 1;
        if ((st = get_bool(p, nd, j, "count_include_pad", &nd->count_include_pad))) return st;
        json_t *d = json_object_get(j, "divisor_override");
        if (d && !json_is_null(d))
            return node_fail(p->err, CD_ERR_UNSUPPORTED, p->g, nd, "divisor_override is not supported");
    }
    return CD_OK;
}

static cd_status parse_linear(parse_ctx *p, cd_nn_node *nd, json_t *j, const chan_info *in) {
    cd_status st;
    const char *wname = NULL, *bname = NULL;
    if ((st = get_tensor_name(p, nd, j, "weight", false, &wname)) ||
        (st = get_tensor_name(p, nd, j, "bias", true, &bname)))
        return st;
    /* A flattened input (N, I, 1, 1), or (N, I, H, W): over C at every position. */
    const cd_st_tensor *t = NULL;
    if ((st = find_param(p, nd, "weight", wname, 2, &t))) return st;
    int64_t o = t->shape[0], i = t->shape[1];
    if (in->ch >= 0 && in->ch != i)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "weight '%s' expects %lld inputs, its input has %lld%s",
                         wname, (long long)i, (long long)in->ch, in->flat ? "" : " channels");
    int64_t wshape[2] = {o, i};
    if ((st = fetch(p, nd, "weight", wname, 2, wshape, &nd->weight))) return st;
    if (bname && (st = fetch(p, nd, "bias", bname, 1, &o, &nd->bias))) return st;
    nd->in_ch = (int)i;
    nd->out_ch = (int)o;
    /* the (O, I) weight is an (O, I, 1, 1) kernel: the convolution path runs a per-position linear */
    nd->kh = nd->kw = nd->sh = nd->sw = nd->dh = nd->dw = nd->groups = 1;
    return CD_OK;
}

/* A per-channel vector field (weight or bias of layer_norm / scale): null when allowed, else a tensor
 * of C elements shaped (C) or, when allow_c11, (C, 1, 1) (torchvision's layer_scale). *c: C, learnt
 * here when still < 0, else checked. */
static cd_status get_vector(parse_ctx *p, cd_nn_node *nd, json_t *j, const char *field, bool allow_null, bool allow_c11,
                            int64_t *c, float **out) {
    const char *name = NULL;
    cd_status st = get_tensor_name(p, nd, j, field, allow_null, &name);
    if (st != CD_OK || !name) return st;
    const cd_st_tensor *t = cd_st_find(p->f, name);
    if (!t) return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field '%s': missing tensor '%s'", field, name);
    const bool c11 = allow_c11 && t->rank == 3 && t->shape[1] == 1 && t->shape[2] == 1;
    if (t->rank != 1 && !c11)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field '%s': tensor '%s' has rank %d, expected (C)%s", field,
                         name, t->rank, allow_c11 ? " or (C, 1, 1)" : "");
    if (t->shape[0] < 1 || t->shape[0] > GRAPH_MAX_PARAM_DIM)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field '%s': tensor '%s' has %lld elements", field, name,
                         (long long)t->shape[0]);
    if (*c >= 0 && t->shape[0] != *c)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field '%s': tensor '%s' has %lld elements, expected %lld",
                         field, name, (long long)t->shape[0], (long long)*c);
    *c = t->shape[0];
    const int64_t shape[3] = {*c, 1, 1};
    return fetch(p, nd, field, name, t->rank, shape, out);
}

/* layer_norm (weight, bias: (C) or null; eps) and scale (weight (C) or (C, 1, 1); bias (C) or null). */
static cd_status parse_channelwise(parse_ctx *p, cd_nn_node *nd, json_t *j, const chan_info *in) {
    int64_t c = in->ch; /* -1: a flattened input of unknown width */
    const bool ln = nd->op == CD_NN_LAYER_NORM;
    double eps = 0;
    cd_status st;
    if ((st = get_vector(p, nd, j, "weight", ln, !ln, &c, &nd->weight)) ||
        (st = get_vector(p, nd, j, "bias", true, false, &c, &nd->bias)))
        return st;
    if (ln) {
        if ((st = get_eps(p, nd, j, &eps))) return st;
        nd->eps = (float)eps;
    }
    nd->in_ch = nd->out_ch = c < 0 ? 0 : (int)c;
    return CD_OK;
}

/* ---- MambaVision's ops: softplus, dwconv1d, selective_scan, window_partition / window_reverse ---- */

/* A finite number (as float32 too). */
static cd_status get_finite(parse_ctx *p, cd_nn_node *nd, json_t *obj, const char *key, double *out) {
    json_t *v = json_object_get(obj, key);
    if (!v) return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "missing field '%s'", key);
    const double x = json_is_number(v) ? json_number_value(v) : NAN;
    if (!isfinite(x) || !isfinite((float)x))
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field '%s' must be a finite number", key);
    *out = x;
    return CD_OK;
}

static cd_status parse_softplus(parse_ctx *p, cd_nn_node *nd, json_t *j) {
    double beta, threshold;
    cd_status st;
    if ((st = get_finite(p, nd, j, "beta", &beta)) || (st = get_finite(p, nd, j, "threshold", &threshold))) return st;
    if (!(beta > 0) || (float)beta <= 0)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field 'beta' is %g, must be > 0", beta);
    nd->beta = (float)beta;
    nd->threshold = (float)threshold;
    return CD_OK;
}

/* weight (C, 1, K), K 1..64, padding [left, right] summing to K - 1 (PyTorch's 'same'), bias (C) or null. */
static cd_status parse_dwconv1d(parse_ctx *p, cd_nn_node *nd, json_t *j, const chan_info *in) {
    cd_status st;
    const char *wname = NULL, *bname = NULL;
    if ((st = get_tensor_name(p, nd, j, "weight", false, &wname)) ||
        (st = get_tensor_name(p, nd, j, "bias", true, &bname)))
        return st;
    if (in->flat)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "input is flattened, dwconv1d needs (N, C, H, W) tokens");
    const cd_st_tensor *t = NULL;
    if ((st = find_param(p, nd, "weight", wname, 3, &t))) return st;
    const int64_t c = t->shape[0], k = t->shape[2];
    if (t->shape[1] != 1)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "weight '%s' is (%lld, %lld, %lld), not depthwise (C, 1, K)",
                         wname, (long long)c, (long long)t->shape[1], (long long)k);
    if (c != in->ch)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "weight '%s' has %lld channels, its input has %lld", wname,
                         (long long)c, (long long)in->ch);
    if (k > 64) return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "kernel size %lld is outside 1..64", (long long)k);
    json_t *pad = json_object_get(j, "padding");
    if (!json_is_array(pad) || json_array_size(pad) != 2 || !json_is_integer(json_array_get(pad, 0)) ||
        !json_is_integer(json_array_get(pad, 1)))
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field 'padding' is not [left, right] integers");
    const long long l = json_integer_value(json_array_get(pad, 0)), r = json_integer_value(json_array_get(pad, 1));
    if (l < 0 || r < 0 || l + r != k - 1)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd,
                         "padding [%lld, %lld] must be >= 0 and sum to kernel size - 1 = %lld (output length = input "
                         "length)",
                         l, r, (long long)(k - 1));
    int64_t wshape[3] = {c, 1, k};
    if ((st = fetch(p, nd, "weight", wname, 3, wshape, &nd->weight))) return st;
    if (bname && (st = fetch(p, nd, "bias", bname, 1, &c, &nd->bias))) return st;
    nd->kh = 1;
    nd->kw = (int)k;
    nd->pw = (int)l;
    nd->in_ch = nd->out_ch = (int)c;
    return CD_OK;
}

/* Inputs u, delta (D channels), B, C (S channels); A_log (D, S) with S 1..256, D (D) or null,
 * delta_bias (D) or null, delta_softplus. The node keeps A = -exp(A_log) in float32 (mamba's
 * -torch.exp(A_log.float())). */
static cd_status parse_selective_scan(parse_ctx *p, cd_nn_node *nd, json_t *j, const chan_info *chans) {
    cd_status st;
    const char *aname = NULL, *dname = NULL, *bname = NULL;
    if ((st = get_tensor_name(p, nd, j, "A_log", false, &aname)) ||
        (st = get_tensor_name(p, nd, j, "D", true, &dname)) ||
        (st = get_tensor_name(p, nd, j, "delta_bias", true, &bname)) ||
        (st = get_bool(p, nd, j, "delta_softplus", &nd->delta_softplus)))
        return st;
    static const char *const role[4] = {"u", "delta", "B", "C"};
    for (int k = 0; k < 4; k++)
        if (chans[nd->in[k]].flat)
            return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "input %s '%s' is flattened, needs (N, C, H, W) tokens",
                             role[k], p->g->nodes[nd->in[k]].name);
    const cd_st_tensor *t = NULL;
    if ((st = find_param(p, nd, "A_log", aname, 2, &t))) return st;
    const int64_t d = t->shape[0], s = t->shape[1];
    if (s > 256)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "A_log '%s' has %lld states, outside 1..256", aname,
                         (long long)s);
    const int64_t want[4] = {d, d, s, s};
    for (int k = 0; k < 4; k++)
        if (chans[nd->in[k]].ch != want[k])
            return node_fail(p->err, CD_ERR_FORMAT, p->g, nd,
                             "input %s '%s' has %lld channels; A_log '%s' (%lld, %lld) needs %lld", role[k],
                             p->g->nodes[nd->in[k]].name, (long long)chans[nd->in[k]].ch, aname, (long long)d,
                             (long long)s, (long long)want[k]);
    int64_t ashape[2] = {d, s};
    if ((st = fetch(p, nd, "A_log", aname, 2, ashape, &nd->weight))) return st;
    for (int64_t i = 0; i < d * s; i++) {
        if (!isfinite(nd->weight[i]))
            return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "A_log '%s' holds a non-finite value at %lld", aname,
                             (long long)i);
        nd->weight[i] = -expf(nd->weight[i]);
    }
    if (dname && (st = fetch(p, nd, "D", dname, 1, &d, &nd->bias))) return st;
    if (bname && (st = fetch(p, nd, "delta_bias", bname, 1, &d, &nd->delta_bias))) return st;
    nd->states = (int)s;
    nd->in_ch = nd->out_ch = (int)d;
    return CD_OK;
}

static cd_status parse_window(parse_ctx *p, cd_nn_node *nd, json_t *j, const chan_info *chans) {
    long long ws;
    cd_status st = get_int(p, nd, j, "window", 1, 64, &ws);
    if (st != CD_OK) return st;
    for (int k = 0; k < nd->n_in; k++)
        if (chans[nd->in[k]].flat)
            return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "input '%s' is flattened, needs (N, C, H, W)",
                             p->g->nodes[nd->in[k]].name);
    nd->window = (int)ws;
    return CD_OK;
}

static int find_node(const cd_nn_graph *g, int before, const char *name) {
    for (int i = before - 1; i >= 0; i--)
        if (strcmp(g->nodes[i].name, name) == 0) return i;
    return -1;
}

static int expected_inputs(cd_nn_op op) {
    switch (op) {
    case CD_NN_ADD:
    case CD_NN_MUL:
    case CD_NN_WINDOW_REVERSE:
    case CD_NN_CONCAT: return 2;
    case CD_NN_ATTENTION: return 3;
    case CD_NN_SELECTIVE_SCAN: return 4;
    default: return 1;
    }
}

/* Bounds of the slice and attention fields (schemas/model-graph.md). */
#define GRAPH_MAX_CHANNELS (1 << 30)
#define GRAPH_MAX_HEADS 1024

static cd_status parse_slice(parse_ctx *p, cd_nn_node *nd, json_t *j, const chan_info *in, chan_info *out) {
    long long start, length;
    cd_status st;
    if ((st = get_int(p, nd, j, "start", 0, GRAPH_MAX_CHANNELS - 1, &start)) ||
        (st = get_int(p, nd, j, "length", 1, GRAPH_MAX_CHANNELS, &length)))
        return st;
    if (in->ch >= 0 && start + length > in->ch)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "channels [%lld, %lld) are outside the %lld of input '%s'",
                         start, start + length, (long long)in->ch, p->g->nodes[nd->in[0]].name);
    nd->slice_start = (int)start;
    nd->slice_len = (int)length;
    out->ch = length;
    return CD_OK;
}

/* q, k and v have the same channels (where known), which `heads` divides; the output has q's. */
static cd_status parse_attention(parse_ctx *p, cd_nn_node *nd, json_t *j, const chan_info *chans) {
    long long heads;
    cd_status st = get_int(p, nd, j, "heads", 1, GRAPH_MAX_HEADS, &heads);
    if (st != CD_OK) return st;
    json_t *sc = json_object_get(j, "scale");
    if (!sc) return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "missing field 'scale'");
    double scale = json_is_number(sc) ? json_number_value(sc) : NAN;
    if (!isfinite(scale) || scale <= 0 || !isfinite((float)scale) || (float)scale <= 0)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "field 'scale' must be a finite number > 0");
    static const char *const role[3] = {"q", "k", "v"};
    const int64_t cq = chans[nd->in[0]].ch;
    for (int k = 1; k < 3; k++) {
        const int64_t c = chans[nd->in[k]].ch;
        if (cq >= 0 && c >= 0 && c != cq)
            return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "%s '%s' has %lld channels, q '%s' has %lld", role[k],
                             p->g->nodes[nd->in[k]].name, (long long)c, p->g->nodes[nd->in[0]].name, (long long)cq);
    }
    if (cq >= 0 && cq % heads != 0)
        return node_fail(p->err, CD_ERR_FORMAT, p->g, nd, "%lld heads do not divide the %lld channels of q '%s'", heads,
                         (long long)cq, p->g->nodes[nd->in[0]].name);
    nd->heads = (int)heads;
    nd->attn_scale = (float)scale;
    return CD_OK;
}

/* Parses node `idx` from JSON object j; chans[] holds the channel info of nodes before it. */
static cd_status parse_node(parse_ctx *p, int idx, json_t *j, chan_info *chans) {
    cd_nn_graph *g = p->g;
    cd_nn_node *nd = &g->nodes[idx];
    memset(nd, 0, sizeof *nd);
    for (int k = 0; k < CD_NN_MAX_INPUTS; k++) nd->in[k] = -1;
    nd->last_use = -1;
    snprintf(nd->name, sizeof nd->name, "#%d", idx - 1);
    nd->op = CD_NN_INPUT; /* for messages until the op is known */
    if (!json_is_object(j))
        return cd_fail(p->err, CD_ERR_FORMAT, "%s: graph node #%d is not an object", g->source, idx - 1);
    json_t *name = json_object_get(j, "name");
    if (!json_is_string(name) || json_string_length(name) == 0 || json_string_length(name) > 127 ||
        strlen(json_string_value(name)) != json_string_length(name))
        return cd_fail(p->err, CD_ERR_FORMAT, "%s: graph node #%d: 'name' must be a string of 1..127 bytes", g->source,
                       idx - 1);
    snprintf(nd->name, sizeof nd->name, "%s", json_string_value(name));
    if (find_node(g, idx, nd->name) >= 0)
        return cd_fail(p->err, CD_ERR_FORMAT, "%s: graph node '%s': duplicate node name", g->source, nd->name);
    json_t *op = json_object_get(j, "op");
    if (!json_is_string(op))
        return cd_fail(p->err, CD_ERR_FORMAT, "%s: graph node '%s': missing or non-string 'op'", g->source, nd->name);
    if (!parse_op(json_string_value(op), &nd->op))
        return cd_fail(p->err, CD_ERR_UNSUPPORTED, "%s: graph node '%s': unknown op '%s'", g->source, nd->name,
                       json_string_value(op));

    json_t *ins = json_object_get(j, "inputs");
    int want = expected_inputs(nd->op);
    if (!json_is_array(ins) || (int)json_array_size(ins) != want)
        return node_fail(p->err, CD_ERR_FORMAT, g, nd, "'inputs' must be an array of %d name%s", want,
                         want > 1 ? "s" : "");
    for (int k = 0; k < want; k++) {
        json_t *s = json_array_get(ins, (size_t)k);
        if (!json_is_string(s)) return node_fail(p->err, CD_ERR_FORMAT, g, nd, "input %d is not a string", k);
        int src = find_node(g, idx, json_string_value(s));
        if (src < 0)
            return node_fail(
                p->err, CD_ERR_FORMAT, g, nd,
                "input '%s' is neither the graph input nor an earlier node (nodes must be in execution order)",
                json_string_value(s));
        nd->in[k] = src;
    }
    nd->n_in = want;
    const chan_info *in = &chans[nd->in[0]];
    chan_info *out = &chans[idx];
    *out = *in;
    cd_status st = CD_OK;
    switch (nd->op) {
    case CD_NN_CONV2D:
        if ((st = parse_conv(p, nd, j, in))) return st;
        out->ch = nd->out_ch;
        break;
    case CD_NN_BATCHNORM: st = parse_bn(p, nd, j, in); break;
    case CD_NN_MAXPOOL2D:
    case CD_NN_AVGPOOL2D:
    case CD_NN_ADAPTIVE_AVGPOOL2D: st = parse_pool(p, nd, j, in); break;
    case CD_NN_FLATTEN: {
        long long sd;
        if ((st = get_int(p, nd, j, "start_dim", LLONG_MIN, LLONG_MAX, &sd))) return st;
        if (sd != 1)
            return node_fail(p->err, CD_ERR_UNSUPPORTED, g, nd, "start_dim %lld is not supported (must be 1)", sd);
        json_t *ed = json_object_get(j, "end_dim");
        if (ed && !(json_is_integer(ed) && (json_integer_value(ed) == -1 || json_integer_value(ed) == 3)))
            return node_fail(p->err, CD_ERR_UNSUPPORTED, g, nd, "end_dim must be -1");
        if (!in->flat) out->ch = -1; /* C*H*W: known after shaping */
        out->flat = true;
        break;
    }
    case CD_NN_LINEAR:
        if ((st = parse_linear(p, nd, j, in))) return st;
        out->ch = nd->out_ch; /* flat as its input */
        break;
    case CD_NN_LAYER_NORM:
    case CD_NN_SCALE:
        if ((st = parse_channelwise(p, nd, j, in))) return st;
        if (nd->in_ch > 0) out->ch = nd->in_ch;
        break;
    case CD_NN_MUL: {
        /* b: a's shape, or (N, C, 1, 1); channel counts must agree where known (H, W at shaping) */
        const chan_info *b = &chans[nd->in[1]];
        if (in->ch >= 0 && b->ch >= 0 && in->ch != b->ch)
            return node_fail(p->err, CD_ERR_FORMAT, g, nd,
                             "operands '%s' (%lld channels) and '%s' (%lld channels) cannot broadcast",
                             g->nodes[nd->in[0]].name, (long long)in->ch, g->nodes[nd->in[1]].name, (long long)b->ch);
        break;
    }
    case CD_NN_ADD: {
        const chan_info *b = &chans[nd->in[1]];
        if (in->flat != b->flat || (in->ch >= 0 && b->ch >= 0 && in->ch != b->ch))
            return node_fail(p->err, CD_ERR_FORMAT, g, nd, "operands '%s' and '%s' have different shapes",
                             g->nodes[nd->in[0]].name, g->nodes[nd->in[1]].name);
        if (out->ch < 0) out->ch = b->ch;
        break;
    }
    case CD_NN_SLICE: st = parse_slice(p, nd, j, in, out); break;
    case CD_NN_CONCAT: {
        const chan_info *b = &chans[nd->in[1]];
        if (in->flat != b->flat)
            return node_fail(p->err, CD_ERR_FORMAT, g, nd, "operands '%s' and '%s' have different shapes",
                             g->nodes[nd->in[0]].name, g->nodes[nd->in[1]].name);
        out->ch = in->ch >= 0 && b->ch >= 0 ? in->ch + b->ch : -1;
        break;
    }
    case CD_NN_ATTENTION: st = parse_attention(p, nd, j, chans); break;
    case CD_NN_SOFTMAX: {
        long long dim;
        if ((st = get_int(p, nd, j, "dim", LLONG_MIN, LLONG_MAX, &dim))) return st;
        if (!(dim == 1 || (dim == -1 && in->flat)))
            return node_fail(p->err, CD_ERR_UNSUPPORTED, g, nd, "softmax over dim %lld is not supported (must be 1)",
                             dim);
        break;
    }
    case CD_NN_RELU:
    case CD_NN_GELU:
    case CD_NN_GELU_TANH:
    case CD_NN_SILU:
    case CD_NN_HARDSWISH:
    case CD_NN_HARDSIGMOID:
    case CD_NN_DROPOUT: break;
    case CD_NN_SOFTPLUS: st = parse_softplus(p, nd, j); break;
    case CD_NN_DWCONV1D: st = parse_dwconv1d(p, nd, j, in); break;
    case CD_NN_SELECTIVE_SCAN: st = parse_selective_scan(p, nd, j, chans); break;
    case CD_NN_WINDOW_PARTITION:
    case CD_NN_WINDOW_REVERSE: st = parse_window(p, nd, j, chans); break;
    default: return node_fail(p->err, CD_ERR_INTERNAL, g, nd, "unhandled op");
    }
    return st;
}

/* ---- simplification ---- */

static int resolve(const int *alias, int i) {
    while (alias[i] != i) i = alias[i];
    return i;
}

/* Folds batch norm into its convolution in double: w' = w * s, b' = (b - mean) * s + beta with
 * s = gamma / sqrt(var + eps). */
static cd_status fold_bn(cd_nn_node *conv, cd_nn_node *bn, cd_error *err, const cd_nn_graph *g) {
    int64_t o = conv->out_ch, per = (int64_t)(conv->in_ch / conv->groups) * conv->kh * conv->kw;
    if (!conv->bias) {
        conv->bias = calloc((size_t)o, sizeof(float));
        if (!conv->bias) return node_fail(err, CD_ERR_NOMEM, g, conv, "out of memory folding '%s'", bn->name);
    }
    for (int64_t c = 0; c < o; c++) {
        double gamma = bn->weight ? bn->weight[c] : 1.0, beta = bn->bias ? bn->bias[c] : 0.0;
        double s = gamma / sqrt((double)bn->bn_var[c] + (double)bn->eps);
        float *w = conv->weight + c * per;
        for (int64_t k = 0; k < per; k++) w[k] = (float)((double)w[k] * s);
        conv->bias[c] = (float)(((double)conv->bias[c] - (double)bn->bn_mean[c]) * s + beta);
    }
    return CD_OK;
}

/* A batch norm no convolution takes becomes a scale in place (in double): weight = gamma / sqrt(var +
 * eps), bias = beta - mean * weight. */
static cd_status bn_to_scale(cd_nn_node *bn, cd_error *err, const cd_nn_graph *g) {
    const int64_t c = bn->in_ch;
    float *w = malloc((size_t)c * sizeof(float)), *b = malloc((size_t)c * sizeof(float));
    if (!w || !b) {
        free(w);
        free(b);
        return node_fail(err, CD_ERR_NOMEM, g, bn, "out of memory");
    }
    for (int64_t i = 0; i < c; i++) {
        double gamma = bn->weight ? bn->weight[i] : 1.0, beta = bn->bias ? bn->bias[i] : 0.0;
        double s = gamma / sqrt((double)bn->bn_var[i] + (double)bn->eps);
        w[i] = (float)s;
        b[i] = (float)(beta - (double)bn->bn_mean[i] * s);
    }
    free_node_params(bn);
    bn->weight = w;
    bn->bias = b;
    bn->op = CD_NN_SCALE;
    return CD_OK;
}

/* Folds a scale into the conv/linear before it (in double): w' = w * s per output channel, b' = b * s
 * + beta. */
static cd_status fold_scale(cd_nn_node *conv, cd_nn_node *sc, cd_error *err, const cd_nn_graph *g) {
    const int64_t o = conv->out_ch;
    const int64_t per =
        conv->op == CD_NN_LINEAR ? conv->in_ch : (int64_t)(conv->in_ch / conv->groups) * conv->kh * conv->kw;
    if (!conv->bias && sc->bias) {
        conv->bias = calloc((size_t)o, sizeof(float));
        if (!conv->bias) return node_fail(err, CD_ERR_NOMEM, g, conv, "out of memory folding '%s'", sc->name);
    }
    for (int64_t c = 0; c < o; c++) {
        const double s = sc->weight[c];
        float *w = conv->weight + c * per;
        for (int64_t k = 0; k < per; k++) w[k] = (float)((double)w[k] * s);
        if (conv->bias) conv->bias[c] = (float)((double)conv->bias[c] * s + (sc->bias ? (double)sc->bias[c] : 0.0));
    }
    return CD_OK;
}

static cd_status simplify(cd_nn_graph *g, cd_error *err) {
    int n = g->count;
    int *alias = malloc((size_t)n * sizeof(int)), *uses = calloc((size_t)n, sizeof(int)), *map = NULL;
    bool *keep = calloc((size_t)n, sizeof(bool));
    cd_nn_node *nodes = NULL;
    cd_status st = CD_OK;
    if (!alias || !uses || !keep) {
        st = cd_fail(err, CD_ERR_NOMEM, "%s: out of memory simplifying the graph", g->source);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        alias[i] = i;
        for (int k = 0; k < g->nodes[i].n_in; k++) uses[g->nodes[i].in[k]]++;
    }
    uses[g->output]++; /* the result counts as a use: nothing is fused into it from outside */

    /* One pass in order; a removed node's uses move to the node it aliases, so counts stay exact. */
    for (int i = 1; i < n; i++) {
        cd_nn_node *nd = &g->nodes[i];
        for (int k = 0; k < nd->n_in; k++) nd->in[k] = resolve(alias, nd->in[k]);
        int p = nd->in[0];
        cd_nn_node *src = &g->nodes[p];
        if (nd->op == CD_NN_DROPOUT) {
            alias[i] = p;
            uses[p] += uses[i] - 1;
        } else if (nd->op == CD_NN_BATCHNORM) {
            if (src->op != CD_NN_CONV2D || src->relu || uses[p] != 1) {
                /* not after a convolution used only by it (MambaVision's head): a per-channel scale */
                if ((st = bn_to_scale(nd, err, g))) goto done;
                continue;
            }
            if ((st = fold_bn(src, nd, err, g))) goto done;
            free_node_params(nd);
            alias[i] = p;
            uses[p] = uses[i];
        } else if (nd->op == CD_NN_SCALE && !src->relu && uses[p] == 1 && p != 0 &&
                   (src->op == CD_NN_CONV2D || src->op == CD_NN_LINEAR) && src->out_ch == nd->in_ch) {
            /* layer scale after the block's last linear (ConvNeXt): into its weights */
            if ((st = fold_scale(src, nd, err, g))) goto done;
            free_node_params(nd);
            alias[i] = p;
            uses[p] = uses[i];
        } else if (nd->op == CD_NN_RELU && !src->relu && uses[p] == 1 &&
                   (src->op == CD_NN_CONV2D || src->op == CD_NN_LINEAR || src->op == CD_NN_ADD)) {
            src->relu = true;
            alias[i] = p;
            uses[p] = uses[i];
        }
    }
    g->output = resolve(alias, g->output);

    /* Keep what the output depends on (and the input, always node 0). */
    keep[0] = true;
    keep[g->output] = true;
    for (int i = g->output; i > 0; i--)
        if (keep[i] && alias[i] == i)
            for (int k = 0; k < g->nodes[i].n_in; k++) keep[g->nodes[i].in[k]] = true;
    map = malloc((size_t)n * sizeof(int));
    nodes = calloc((size_t)n, sizeof(cd_nn_node));
    if (!map || !nodes) {
        st = cd_fail(err, CD_ERR_NOMEM, "%s: out of memory simplifying the graph", g->source);
        goto done;
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (keep[i] && alias[i] == i) {
            map[i] = m;
            nodes[m] = g->nodes[i];
            for (int k = 0; k < nodes[m].n_in; k++) nodes[m].in[k] = map[nodes[m].in[k]];
            m++;
        } else {
            map[i] = -1;
            free_node_params(&g->nodes[i]);
        }
    }
    g->output = map[g->output];
    free(g->nodes);
    g->nodes = nodes;
    g->count = m;
    nodes = NULL;
done:
    free(alias);
    free(uses);
    free(keep);
    free(map);
    free(nodes);
    return st;
}

/* ---- loading ---- */

static cd_status meta_int(const cd_st_file *f, const char *src, const char *key, long lo, long hi, bool required,
                          long *out, cd_error *err) {
    const char *s = cd_st_metadata(f, key);
    if (!s) {
        if (required) return cd_fail(err, CD_ERR_FORMAT, "%s: metadata '%s' is missing", src, key);
        return CD_OK;
    }
    char *end = NULL;
    long v = (*s >= '0' && *s <= '9') ? strtol(s, &end, 10) : -1;
    if (!end || *end || v < lo || v > hi)
        return cd_fail(err, CD_ERR_FORMAT, "%s: metadata '%s' is '%.40s', expected an integer %ld..%ld", src, key, s,
                       lo, hi);
    *out = v;
    return CD_OK;
}

/* The model's metadata: format 1, its architecture, classes and input channels. */
static cd_status load_metadata(const cd_st_file *f, cd_nn_graph *g, long *classes, long *in_ch, cd_error *err) {
    const char *src = g->source;
    const char *fmt = cd_st_metadata(f, "cirrdata.format");
    if (!fmt)
        return cd_fail(err, CD_ERR_FORMAT, "%s: not a cirrdata model: metadata 'cirrdata.format' is missing", src);
    if (strcmp(fmt, "1") != 0)
        return cd_fail(err, CD_ERR_UNSUPPORTED, "%s: model format '%.20s' is not supported (expected '1')", src, fmt);
    const char *arch = cd_st_metadata(f, "cirrdata.arch");
    if (!arch || !*arch || strlen(arch) >= sizeof g->arch)
        return cd_fail(err, CD_ERR_FORMAT, "%s: metadata 'cirrdata.arch' is missing or longer than %zu bytes", src,
                       sizeof g->arch - 1);
    snprintf(g->arch, sizeof g->arch, "%s", arch);
    cd_status st;
    if ((st = meta_int(f, src, "cirrdata.classes", 1, 1000000, true, classes, err)) ||
        (st = meta_int(f, src, "cirrdata.in_channels", 1, 4096, true, in_ch, err)))
        return st;
    g->classes = (int)*classes;
    g->in_channels = (int)*in_ch;
    return CD_OK;
}

/* The graph document (metadata 'cirrdata.graph', within the JSON cap) parsed into *root, version 1. */
static cd_status load_document(const cd_st_file *f, const char *src, json_t **root, cd_error *err) {
    const char *text = cd_st_metadata(f, "cirrdata.graph");
    if (!text) return cd_fail(err, CD_ERR_FORMAT, "%s: metadata 'cirrdata.graph' is missing", src);
    size_t len = strlen(text);
    uint64_t max_json;
    cd_status st = cd_limit(CD_LIMIT_JSON, &max_json, err);
    if (st != CD_OK) return st;
    if (len > max_json) {
        char a[32], c[160];
        return cd_fail(err, CD_ERR_LIMIT, "%s: metadata 'cirrdata.graph' of %s is above %s", src,
                       cd_format_bytes(len, a, sizeof a), cd_limit_describe(CD_LIMIT_JSON, max_json, c, sizeof c));
    }
    json_error_t jerr;
    *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!*root)
        return cd_fail(err, CD_ERR_FORMAT, "%s: metadata 'cirrdata.graph' is not valid JSON: %s (line %d, column %d)",
                       src, jerr.text, jerr.line, jerr.column);
    json_t *ver = json_object_get(*root, "version");
    if (!json_is_object(*root) || !json_is_integer(ver) || json_integer_value(ver) != 1)
        return cd_fail(err, CD_ERR_UNSUPPORTED, "%s: graph 'version' must be 1", src);
    return CD_OK;
}

/* The document's input (name, in_ch channels), its 1..GRAPH_MAX_NODES nodes and its output name. */
static cd_status check_document(json_t *root, const char *src, long in_ch, cd_error *err) {
    json_t *input = json_object_get(root, "input"), *jnodes = json_object_get(root, "nodes"),
           *joutput = json_object_get(root, "output");
    json_t *iname = json_object_get(input, "name"), *ich = json_object_get(input, "channels");
    if (!json_is_object(input) || !json_is_string(iname) || json_string_length(iname) == 0 ||
        json_string_length(iname) > 127 || strlen(json_string_value(iname)) != json_string_length(iname))
        return cd_fail(err, CD_ERR_FORMAT, "%s: graph 'input' must be {\"name\": 1..127 bytes, \"channels\": n}", src);
    if (!json_is_integer(ich) || json_integer_value(ich) != in_ch)
        return cd_fail(err, CD_ERR_FORMAT,
                       "%s: graph input 'channels' disagrees with metadata cirrdata.in_channels = %ld", src, in_ch);
    if (!json_is_array(jnodes) || json_array_size(jnodes) == 0 || json_array_size(jnodes) > GRAPH_MAX_NODES)
        return cd_fail(err, CD_ERR_FORMAT, "%s: graph 'nodes' must be an array of 1..%d nodes", src, GRAPH_MAX_NODES);
    if (!json_is_string(joutput)) return cd_fail(err, CD_ERR_FORMAT, "%s: graph 'output' must be a node name", src);
    return CD_OK;
}

/* The input node and every node of the document, in order (*chans: each node's channels; the caller
 * frees it). */
static cd_status build_nodes(const cd_st_file *f, cd_nn_graph *g, json_t *root, long in_ch, chan_info **chans,
                             cd_error *err) {
    json_t *jnodes = json_object_get(root, "nodes");
    int n = (int)json_array_size(jnodes) + 1;
    g->nodes = calloc((size_t)n, sizeof(cd_nn_node));
    *chans = calloc((size_t)n, sizeof(chan_info));
    if (!g->nodes || !*chans) return cd_fail(err, CD_ERR_NOMEM, "%s: out of memory for %d graph nodes", g->source, n);
    cd_nn_node *in0 = &g->nodes[0];
    in0->op = CD_NN_INPUT;
    for (int k = 0; k < CD_NN_MAX_INPUTS; k++) in0->in[k] = -1;
    in0->out_ch = (int)in_ch;
    snprintf(in0->name, sizeof in0->name, "%s",
             json_string_value(json_object_get(json_object_get(root, "input"), "name")));
    (*chans)[0].ch = in_ch;
    g->count = 1;
    parse_ctx p = {f, g, err};
    cd_status st;
    for (int i = 1; i < n; i++) {
        g->count = i + 1; /* so that a failure frees this node's parameters */
        if ((st = parse_node(&p, i, json_array_get(jnodes, (size_t)i - 1), *chans))) return st;
    }
    return CD_OK;
}

/* The output: a node other than the input, with `classes` channels where they are known. */
static cd_status resolve_output(cd_nn_graph *g, json_t *root, const chan_info *chans, long classes, cd_error *err) {
    const char *name = json_string_value(json_object_get(root, "output"));
    g->output = find_node(g, g->count, name);
    if (g->output < 0) return cd_fail(err, CD_ERR_FORMAT, "%s: graph 'output' '%s' names no node", g->source, name);
    if (g->output == 0) return cd_fail(err, CD_ERR_FORMAT, "%s: graph 'output' is the graph input", g->source);
    if (chans[g->output].ch >= 0 && chans[g->output].ch != classes)
        return node_fail(err, CD_ERR_FORMAT, g, &g->nodes[g->output],
                         "the output has %lld channels, metadata says %ld classes", (long long)chans[g->output].ch,
                         classes);
    return CD_OK;
}

cd_status cd_nn_graph_load(const cd_st_file *f, cd_nn_graph **out, cd_error *err) {
    *out = NULL;
    cd_nn_graph *g = calloc(1, sizeof *g);
    if (!g) return cd_fail(err, CD_ERR_NOMEM, "out of memory loading a graph");
    snprintf(g->source, sizeof g->source, "%s", cd_st_path(f) ? cd_st_path(f) : "(model)");
    json_t *root = NULL;
    chan_info *chans = NULL;
    long classes = 0, in_ch = 0;
    cd_status st = load_metadata(f, g, &classes, &in_ch, err);
    if (st == CD_OK) st = load_document(f, g->source, &root, err);
    if (st == CD_OK) st = check_document(root, g->source, in_ch, err);
    if (st == CD_OK) st = build_nodes(f, g, root, in_ch, &chans, err);
    if (st == CD_OK) st = resolve_output(g, root, chans, classes, err);
    if (st == CD_OK) st = simplify(g, err);
    json_decref(root);
    free(chans);
    if (st != CD_OK) {
        cd_nn_graph_free(g);
        return st;
    }
    *out = g;
    return CD_OK;
}

/* ---- shapes and the arena plan ---- */

/* PyTorch's pooling_output_shape: floor (or ceil) division, and in ceil mode the last window must
 * start inside the input or its left padding. */
static int64_t pool_out(int64_t in, int k, int s, int pad, int dil, bool ceil_mode) {
    int64_t num = in + 2 * pad - (int64_t)dil * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    int64_t q = num >= 0 ? num / s : -((-num + s - 1) / s);
    int64_t out = q + 1;
    if (ceil_mode && (out - 1) * s >= in + pad) out--;
    return out;
}

static cd_status shape_node(cd_nn_graph *g, int i, cd_error *err) {
    cd_nn_node *nd = &g->nodes[i];
    const cd_nn_shape *a = &g->nodes[nd->in[0]].shape;
    cd_nn_shape o = *a;
    switch (nd->op) {
    case CD_NN_CONV2D:
        if (a->c != nd->in_ch)
            return node_fail(err, CD_ERR_FORMAT, g, nd, "input has %lld channels, the weight expects %d",
                             (long long)a->c, nd->in_ch);
        o.c = nd->out_ch;
        o.h = pool_out(a->h, nd->kh, nd->sh, nd->ph, nd->dh, false);
        o.w = pool_out(a->w, nd->kw, nd->sw, nd->pw, nd->dw, false);
        break;
    case CD_NN_MAXPOOL2D:
    case CD_NN_AVGPOOL2D:
        o.h = pool_out(a->h, nd->kh, nd->sh, nd->ph, nd->dh, nd->ceil_mode);
        o.w = pool_out(a->w, nd->kw, nd->sw, nd->pw, nd->dw, nd->ceil_mode);
        break;
    case CD_NN_ADAPTIVE_AVGPOOL2D:
        o.h = nd->out_h;
        o.w = nd->out_w;
        break;
    case CD_NN_FLATTEN:
        o.c = a->c * a->h * a->w;
        o.h = o.w = 1;
        break;
    case CD_NN_LINEAR: /* (N, I, 1, 1) after a flatten, or over C at every (h, w) */
        if (a->c != nd->in_ch)
            return node_fail(
                err, CD_ERR_FORMAT, g, nd,
                "input '%s' has %lld features (%lldx%lldx%lld), the weight expects %d (input size %lldx%lld)",
                g->nodes[nd->in[0]].name, (long long)a->c, (long long)a->c, (long long)a->h, (long long)a->w, nd->in_ch,
                (long long)g->input_shape.h, (long long)g->input_shape.w);
        o.c = nd->out_ch;
        break;
    case CD_NN_LAYER_NORM:
    case CD_NN_SCALE:
        if (nd->in_ch > 0 && a->c != nd->in_ch)
            return node_fail(err, CD_ERR_FORMAT, g, nd, "input '%s' has %lld channels, the parameters %d",
                             g->nodes[nd->in[0]].name, (long long)a->c, nd->in_ch);
        break;
    case CD_NN_MUL: {
        const cd_nn_shape *b = &g->nodes[nd->in[1]].shape;
        if (a->n != b->n || a->c != b->c || !((b->h == a->h && b->w == a->w) || (b->h == 1 && b->w == 1)))
            return node_fail(err, CD_ERR_FORMAT, g, nd,
                             "operands '%s' (%lldx%lldx%lld) and '%s' (%lldx%lldx%lld) cannot broadcast (the second "
                             "must have the first's shape or be %lldx1x1)",
                             g->nodes[nd->in[0]].name, (long long)a->c, (long long)a->h, (long long)a->w,
                             g->nodes[nd->in[1]].name, (long long)b->c, (long long)b->h, (long long)b->w,
                             (long long)a->c);
        break;
    }
    case CD_NN_ADD: {
        const cd_nn_shape *b = &g->nodes[nd->in[1]].shape;
        if (a->c != b->c || a->h != b->h || a->w != b->w)
            return node_fail(err, CD_ERR_FORMAT, g, nd,
                             "operands '%s' (%lldx%lldx%lld) and '%s' (%lldx%lldx%lld) differ",
                             g->nodes[nd->in[0]].name, (long long)a->c, (long long)a->h, (long long)a->w,
                             g->nodes[nd->in[1]].name, (long long)b->c, (long long)b->h, (long long)b->w);
        break;
    }
    case CD_NN_SLICE:
        if ((int64_t)nd->slice_start + nd->slice_len > a->c)
            return node_fail(err, CD_ERR_FORMAT, g, nd, "channels [%d, %lld) are outside input '%s' (%lldx%lldx%lld)",
                             nd->slice_start, (long long)nd->slice_start + nd->slice_len, g->nodes[nd->in[0]].name,
                             (long long)a->c, (long long)a->h, (long long)a->w);
        o.c = nd->slice_len;
        break;
    case CD_NN_CONCAT: {
        const cd_nn_shape *b = &g->nodes[nd->in[1]].shape;
        if (a->n != b->n || a->h != b->h || a->w != b->w)
            return node_fail(err, CD_ERR_FORMAT, g, nd,
                             "operands '%s' (%lldx%lldx%lldx%lld) and '%s' (%lldx%lldx%lldx%lld) differ in N, H or W",
                             g->nodes[nd->in[0]].name, (long long)a->n, (long long)a->c, (long long)a->h,
                             (long long)a->w, g->nodes[nd->in[1]].name, (long long)b->n, (long long)b->c,
                             (long long)b->h, (long long)b->w);
        o.c = a->c + b->c;
        break;
    }
    case CD_NN_ATTENTION: {
        const cd_nn_shape *k = &g->nodes[nd->in[1]].shape, *v = &g->nodes[nd->in[2]].shape;
        if (k->n != a->n || v->n != a->n || k->c != a->c || v->c != a->c || k->h != v->h || k->w != v->w)
            return node_fail(
                err, CD_ERR_FORMAT, g, nd,
                "q '%s' (%lldx%lldx%lldx%lld), k '%s' (%lldx%lldx%lldx%lld) and v '%s' (%lldx%lldx%lldx%lld) "
                "disagree: q, k, v need equal N and C, k and v equal H and W",
                g->nodes[nd->in[0]].name, (long long)a->n, (long long)a->c, (long long)a->h, (long long)a->w,
                g->nodes[nd->in[1]].name, (long long)k->n, (long long)k->c, (long long)k->h, (long long)k->w,
                g->nodes[nd->in[2]].name, (long long)v->n, (long long)v->c, (long long)v->h, (long long)v->w);
        if (nd->heads < 1 || a->c % nd->heads != 0)
            return node_fail(err, CD_ERR_FORMAT, g, nd, "%d heads do not divide the %lld channels of q '%s'", nd->heads,
                             (long long)a->c, g->nodes[nd->in[0]].name);
        break;
    }
    case CD_NN_RELU:
    case CD_NN_GELU:
    case CD_NN_GELU_TANH:
    case CD_NN_SILU:
    case CD_NN_HARDSWISH:
    case CD_NN_HARDSIGMOID:
    case CD_NN_SOFTPLUS:
    case CD_NN_SOFTMAX: break;
    case CD_NN_DWCONV1D:
        if (a->c != nd->in_ch)
            return node_fail(err, CD_ERR_FORMAT, g, nd, "input has %lld channels, the weight %d", (long long)a->c,
                             nd->in_ch);
        break;
    case CD_NN_SELECTIVE_SCAN: {
        static const char *const role[4] = {"u", "delta", "B", "C"};
        for (int k = 0; k < 4; k++) {
            const cd_nn_shape *b = &g->nodes[nd->in[k]].shape;
            const int64_t want = k < 2 ? nd->in_ch : nd->states;
            if (b->n != a->n || b->h != a->h || b->w != a->w || b->c != want)
                return node_fail(err, CD_ERR_FORMAT, g, nd,
                                 "input %s '%s' is %lldx%lldx%lldx%lld, expected %lldx%lldx%lldx%lld", role[k],
                                 g->nodes[nd->in[k]].name, (long long)b->n, (long long)b->c, (long long)b->h,
                                 (long long)b->w, (long long)a->n, (long long)want, (long long)a->h, (long long)a->w);
        }
        break;
    }
    case CD_NN_WINDOW_PARTITION: {
        const int64_t ws = nd->window, nh = (a->h + ws - 1) / ws, nw = (a->w + ws - 1) / ws;
        if (__builtin_mul_overflow(a->n, nh * nw, &o.n)) return node_fail(err, CD_ERR_LIMIT, g, nd, "too many windows");
        o.h = o.w = ws;
        break;
    }
    case CD_NN_WINDOW_REVERSE: {
        const cd_nn_shape *like = &g->nodes[nd->in[1]].shape;
        const int64_t ws = nd->window, nwin = ((like->h + ws - 1) / ws) * ((like->w + ws - 1) / ws);
        int64_t want;
        if (__builtin_mul_overflow(like->n, nwin, &want)) want = -1;
        if (a->h != ws || a->w != ws || a->n != want)
            return node_fail(err, CD_ERR_FORMAT, g, nd,
                             "windows '%s' (%lld of %lldx%lld) do not tile like '%s' (%lld of %lldx%lld: %lld "
                             "windows of %lldx%lld)",
                             g->nodes[nd->in[0]].name, (long long)a->n, (long long)a->h, (long long)a->w,
                             g->nodes[nd->in[1]].name, (long long)like->n, (long long)like->h, (long long)like->w,
                             (long long)want, (long long)ws, (long long)ws);
        o.n = like->n;
        o.h = like->h;
        o.w = like->w;
        break;
    }
    default: return node_fail(err, CD_ERR_INTERNAL, g, nd, "op left after simplification");
    }
    if (o.h < 1 || o.w < 1)
        return node_fail(err, CD_ERR_ARG, g, nd,
                         "input %lldx%lld is too small: output would be %lldx%lld (network input %lldx%lld)",
                         (long long)a->h, (long long)a->w, (long long)o.h, (long long)o.w, (long long)g->input_shape.h,
                         (long long)g->input_shape.w);
    nd->shape = o;
    return CD_OK;
}

typedef struct block {
    int64_t offset, size;
    int owner;
} block;

cd_status cd_nn_graph_shape(cd_nn_graph *g, int64_t n, int64_t h, int64_t w, uint64_t max_arena_bytes, cd_error *err) {
    g->arena_floats = 0;
    if (n < 1 || n > SHAPE_MAX_N || h < 1 || h > SHAPE_MAX_HW || w < 1 || w > SHAPE_MAX_HW)
        return cd_fail(err, CD_ERR_ARG, "%s: input size n=%lld h=%lld w=%lld is outside 1..%d x 1..%d x 1..%d",
                       g->source, (long long)n, (long long)h, (long long)w, SHAPE_MAX_N, SHAPE_MAX_HW, SHAPE_MAX_HW);
    g->input_shape = (cd_nn_shape){n, g->in_channels, h, w};
    g->nodes[0].shape = g->input_shape;
    /* Element counts: every dimension is bounded (channels by the parameter sizes, spatial sizes by
     * the input), but products are checked anyway. */
    const int64_t max_floats = (int64_t)1 << 50;
    int64_t *size = calloc((size_t)g->count, sizeof(int64_t));
    int *owner = malloc((size_t)g->count * sizeof(int));
    block *live = malloc((size_t)g->count * sizeof(block));
    cd_status st = CD_OK;
    if (!size || !owner || !live) {
        st = cd_fail(err, CD_ERR_NOMEM, "%s: out of memory planning the graph", g->source);
        goto done;
    }
    for (int i = 0; i < g->count; i++) {
        cd_nn_node *nd = &g->nodes[i];
        if (i > 0 && (st = shape_node(g, i, err))) goto done;
        int64_t e = nd->shape.n, t;
        if (__builtin_mul_overflow(e, nd->shape.c, &t) || __builtin_mul_overflow(t, nd->shape.h, &t) ||
            __builtin_mul_overflow(t, nd->shape.w, &t) || t > max_floats) {
            st = node_fail(err, CD_ERR_LIMIT, g, nd, "output tensor is too large");
            goto done;
        }
        size[i] = (t + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
        owner[i] = nd->op == CD_NN_FLATTEN ? owner[nd->in[0]] : i;
        nd->last_use = i;
    }
    /* Lifetimes: a tensor lives until its last reader (a view's readers count for its owner); the
     * output lives to the end. */
    for (int i = 1; i < g->count; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++) {
            int s = g->nodes[i].in[k];
            if (g->nodes[s].last_use < i) g->nodes[s].last_use = i;
            if (g->nodes[owner[s]].last_use < i) g->nodes[owner[s]].last_use = i;
        }
    g->nodes[g->output].last_use = g->count;
    if (g->nodes[owner[g->output]].last_use < g->count) g->nodes[owner[g->output]].last_use = g->count;

    int nlive = 0;
    int64_t arena = 0;
    for (int i = 0; i < g->count; i++) {
        cd_nn_node *nd = &g->nodes[i];
        if (owner[i] != i) {
            nd->offset = g->nodes[owner[i]].offset;
            continue;
        }
        /* Blocks whose last reader ran before node i are free (node i's own inputs stay). */
        int kept = 0;
        for (int b = 0; b < nlive; b++)
            if (g->nodes[live[b].owner].last_use >= i) live[kept++] = live[b];
        nlive = kept;
        /* First fit over the gaps between live blocks (sorted by offset). */
        int64_t at = 0;
        int pos = 0;
        for (; pos < nlive; pos++) {
            if (live[pos].offset - at >= size[i]) break;
            if (live[pos].offset + live[pos].size > at) at = live[pos].offset + live[pos].size;
        }
        memmove(&live[pos + 1], &live[pos], (size_t)(nlive - pos) * sizeof(block));
        live[pos] = (block){at, size[i], i};
        nlive++;
        nd->offset = at;
        if (at + size[i] > arena) arena = at + size[i];
        if (arena > max_floats) {
            st = node_fail(err, CD_ERR_LIMIT, g, nd, "activation memory is too large");
            goto done;
        }
    }
    if (max_arena_bytes && (uint64_t)arena > max_arena_bytes / sizeof(float)) {
        char need[32], cap[32];
        st =
            cd_fail(err, CD_ERR_LIMIT, "%s: input %lldx%lldx%lldx%lld needs %s of activation memory, over the %s limit",
                    g->source, (long long)n, (long long)g->in_channels, (long long)h, (long long)w,
                    cd_format_bytes((uint64_t)arena * sizeof(float), need, sizeof need),
                    cd_format_bytes(max_arena_bytes, cap, sizeof cap));
        goto done;
    }
    g->arena_floats = arena;
    g->input_offset = g->nodes[0].offset;
done:
    free(size);
    free(owner);
    free(live);
    return st;
}
