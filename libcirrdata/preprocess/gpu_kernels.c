/* The recipe's preprocessing on the device: cd_gpu_resample (shaders/pp_resample.comp), the twin of
 * cd_resample (transform/resample.c), and cd_gpu_normalize (shaders/pp_reduce.comp,
 * pp_normalize.comp), the twin of the normalisation step of cd_preprocess (cd_pp_normalize_cpu, normalize.c);
 * and cd_pp_device, through which `cirrdata convert --device vulkan` runs them with a per-call CPU
 * fallback.
 *
 * Resampling: the host computes what the reference computes once per call or per row, from the
 * same code: M = inv(A_src) * A_grid with its snapped entries (cd_resample_voxel_map), each output
 * row's base position in double exactly as the reference's ROW_SETUP, and for order 3 the spline
 * coefficients with the reference's own recursive prefilter (cd_resample_spline_f32: cheap and
 * sequential, a poor fit for a GPU). The device adds i * step to the row base:
 *  - in double where the device has shaderFloat64 (the same IEEE operations, no FMA): positions,
 *    edge-band tests and nearest indices are bit for bit the reference's;
 *  - else in exact 32.32 fixed point (positions within < 1e-7 voxel of the reference's). Where the
 *    rounding to 2^-32 could flip one of the reference's decisions systematically (a half-integer
 *    position: the centre of an even axis under an odd one), the host hands over the reference's
 *    decisions: nudged row bases for axes constant along a row, tables for axes that depend on the
 *    position in the row alone (axis-aligned grids, i.e. every recipe grid). Rotated grids keep a
 *    ~1e-9 chance per voxel of a nearest index one off.
 * Interpolated values differ by float32 rounding only (~1e-7 of the data range for orders 0/1,
 * ~1e-6 for order 3). Masks by per-label linear interpolation decide near-ties again on the host.
 *
 * One call = one command buffer: [copy in ->] dispatch(es) [-> copy out], a barrier at each arrow
 * and between dependent dispatches only. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cirrdata/preprocess.h"
#include "core/volume_impl.h"
#include "gpu/gpu_impl.h"
#include "preprocess/preprocess_impl.h"
#include "transform/resample_impl.h"

#define EDGE_TOL 1e-4          /* transform/resample.c's band around the edge voxels */
#define FIXED_MAX 1073741824.0 /* |positions| below 2^30 voxels: 32.32 fixed point cannot overflow */
#define REDUCE_LOCAL_MAX 256u  /* the shared arrays of pp_reduce.comp */
#define REDUCE_PARTS_MAX 4096u

typedef struct resample_push {
    uint32_t onx, nout, groups_x, order;
    int32_t n0, n1, n2;
    float fill;
    uint32_t step[6], lo[2], hi[6];
    uint32_t tables, table_at;
} resample_push;

typedef struct reduce_push {
    uint32_t n, parts, region, mode;
} reduce_push;

typedef struct normalize_push {
    uint32_t n, groups_x, mode, then, stats_at;
    float lo, scale, r0, cmin, cmax, then_mean, then_std;
} normalize_push;

/* The preprocessing kernels of a context (a cd_vk_family of the runtime): resample, reduce, normalize,
 * created on the context's first preprocessing call. */
typedef struct pp_kernels {
    cd_vk_kernel k[3];
} pp_kernels;

static cd_status pp_kernels_init(cd_gpu_context *ctx, void *state, cd_error *err) {
    cd_vk_kernel *pp = ((pp_kernels *)state)->k;
    const VkPhysicalDeviceLimits *l = cd_vk_limits(ctx);
    uint32_t ls = 64, lr = REDUCE_LOCAL_MAX;
    if (ls > l->maxComputeWorkGroupSize[0]) ls = l->maxComputeWorkGroupSize[0];
    if (ls > l->maxComputeWorkGroupInvocations) ls = l->maxComputeWorkGroupInvocations;
    if (lr > l->maxComputeWorkGroupSize[0]) lr = l->maxComputeWorkGroupSize[0];
    if (lr > l->maxComputeWorkGroupInvocations) lr = l->maxComputeWorkGroupInvocations;
    if (sizeof(resample_push) > l->maxPushConstantsSize || sizeof(normalize_push) > l->maxPushConstantsSize)
        return cd_fail(err, CD_ERR_UNSUPPORTED, "Vulkan: %s allows too few push constants", cd_vk_name(ctx));
    cd_status st =
        cd_vk_kernel_create(ctx, &pp[0], cd_vk_float64(ctx) ? CD_SHADER_PP_RESAMPLE_FP64 : CD_SHADER_PP_RESAMPLE, 3,
                            sizeof(resample_push), ls, err);
    if (st == CD_OK) st = cd_vk_kernel_create(ctx, &pp[1], CD_SHADER_PP_REDUCE, 3, sizeof(reduce_push), lr, err);
    if (st == CD_OK) st = cd_vk_kernel_create(ctx, &pp[2], CD_SHADER_PP_NORMALIZE, 2, sizeof(normalize_push), ls, err);
    return st;
}

static void pp_kernels_destroy(cd_gpu_context *ctx, void *state) {
    for (int i = 0; i < 3; i++) cd_vk_kernel_destroy(ctx, &((pp_kernels *)state)->k[i]);
}

static const cd_vk_family pp_family = {"preprocessing", sizeof(pp_kernels), pp_kernels_init, pp_kernels_destroy};

/* The kernels of ctx, after pp_ready succeeded (the context's lock held). */
static cd_vk_kernel *PP(cd_gpu_context *ctx) { return ((pp_kernels *)cd_vk_family_find(ctx, &pp_family))->k; }

static cd_status pp_ready(cd_gpu_context *ctx, cd_error *err) {
    void *state;
    return cd_vk_family_state(ctx, &pp_family, &state, err);
}

static int64_t fixed32(double v) { return (int64_t)floor(v * 4294967296.0 + 0.5); }

static void put64(uint32_t *w, int64_t v) {
    w[0] = (uint32_t)(uint64_t)v;
    w[1] = (uint32_t)((uint64_t)v >> 32);
}

static void put_double(uint32_t *w, double v) {
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    put64(w, (int64_t)u);
}

/* The reference's decisions for a position c on an axis of n voxels: inside the edge band, and the
 * nearest index (transform/resample.c: axis_pos, then (int64_t)(x + 0.5)). */
static void ref_decide(double c, int64_t n, bool *inside, int64_t *q) {
    const double hi = (double)(n - 1);
    *inside = c >= -EDGE_TOL && c <= hi + EDGE_TOL;
    const double x = c < 0 ? 0 : c > hi ? hi : c;
    *q = *inside ? (int64_t)(x + 0.5) : 0;
}

/* The same decisions as pp_resample.comp takes them for a 32.32 position p. */
static void fixed_decide(int64_t p, int64_t n, int64_t lo, int64_t hi, bool *inside, int64_t *q) {
    *inside = p >= lo && p <= hi;
    const int64_t top = (int64_t)((uint64_t)(n - 1) << 32), x = p < 0 ? 0 : p > top ? top : p;
    *q = *inside ? (x + (INT64_C(1) << 31)) >> 32 : 0;
}

/* A row base in 32.32 for an axis whose positions along the row are all c (step 0): where rounding
 * to 2^-32 would cross one of the reference's decision boundaries (the edge band, a nearest index
 * tie such as the centre of an even axis), the value moves by 2^-32 to the reference's side. */
static int64_t fixed_constant(double c, int64_t n, int64_t lo, int64_t hi) {
    int64_t p = fixed32(c);
    bool ri, fi;
    int64_t rq, fq;
    ref_decide(c, n, &ri, &rq);
    for (int k = 0; k < 4; k++) {
        fixed_decide(p, n, lo, hi, &fi, &fq);
        if (ri == fi && rq == fq) break;
        if (ri != fi)
            p += ri ? (p < lo ? 1 : -1) : (c < 0 ? -1 : 1);
        else
            p += rq > fq ? 1 : -1;
    }
    return p;
}

/* A 1D or 2D grid of workgroups covering `items` invocations of local size ls; false when even the
 * 2D grid is too small. */
static bool grid2d(const cd_gpu_context *ctx, uint64_t items, uint32_t ls, uint32_t *gx, uint32_t *gy) {
    const uint64_t groups = (items + ls - 1) / ls;
    const VkPhysicalDeviceLimits *l = cd_vk_limits(ctx);
    const uint32_t maxx = l->maxComputeWorkGroupCount[0];
    *gx = (uint32_t)(groups < maxx ? (groups ? groups : 1) : maxx);
    const uint64_t y = (groups + *gx - 1) / *gx;
    *gy = (uint32_t)(y ? y : 1);
    return y <= l->maxComputeWorkGroupCount[1];
}

static bool float32_exact(cd_dtype dt) {
    return dt == CD_DTYPE_UINT8 || dt == CD_DTYPE_INT8 || dt == CD_DTYPE_UINT16 || dt == CD_DTYPE_INT16 ||
           dt == CD_DTYPE_FLOAT16 || dt == CD_DTYPE_FLOAT32;
}

static double column_norm(const double a[4][4], int j) {
    return sqrt(a[0][j] * a[0][j] + a[1][j] * a[1][j] + a[2][j] * a[2][j]);
}

/* Copies in (staging), the recorded dispatches, copies out: the frame of every call here. */
static void copy_in(cd_vk_cmd *cmd, cd_vk_range host, cd_vk_range dev) {
    if (cd_gpu_shared_memory(cmd->ctx) || !host.size) return;
    VkBufferCopy region = {.srcOffset = host.offset, .dstOffset = dev.offset, .size = host.size};
    cd_vk_cmd_copy(cmd, cd_vk_arena_buffer(cmd->ctx, CD_VK_UPLOAD), cd_vk_arena_buffer(cmd->ctx, CD_VK_DEVICE), 1,
                   &region);
    cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
}

static void copy_out(cd_vk_cmd *cmd, cd_vk_range dev, cd_vk_range host) {
    if (!cd_gpu_shared_memory(cmd->ctx)) {
        cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                          VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
        VkBufferCopy region = {.srcOffset = dev.offset, .dstOffset = host.offset, .size = dev.size};
        cd_vk_cmd_copy(cmd, cd_vk_arena_buffer(cmd->ctx, CD_VK_DEVICE), cd_vk_arena_buffer(cmd->ctx, CD_VK_READBACK), 1,
                       &region);
        cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                          VK_ACCESS_HOST_READ_BIT);
    } else {
        cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                          VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    }
}

static void dispatch(cd_vk_cmd *cmd, const cd_vk_kernel *k, const void *push, uint32_t gx, uint32_t gy) {
    cd_vk_cmd_bind(cmd, k, VK_NULL_HANDLE, VK_NULL_HANDLE);
    cd_vk_cmd_push(cmd, k, push);
    cd_vk_cmd_dispatch(cmd, gx, gy, 1);
}

static void compute_barrier(cd_vk_cmd *cmd) {
    cd_vk_cmd_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
}

/* The bytes one buffer of `bytes` may take: within maxStorageBufferRange, else CD_ERR_LIMIT. */
static cd_status check_range(const cd_gpu_context *ctx, uint64_t bytes, const char *fn, const char *what,
                             cd_error *err) {
    const uint64_t range = cd_vk_limits(ctx)->maxStorageBufferRange;
    if (bytes <= range) return CD_OK;
    char b1[32], b2[32];
    return cd_fail(err, CD_ERR_LIMIT, "%s: the %s needs a %s buffer, more than %s can bind (maxStorageBufferRange %s)",
                   fn, what, cd_format_bytes(bytes, b1, sizeof b1), cd_vk_name(ctx),
                   cd_format_bytes(range, b2, sizeof b2));
}

/* ---- resampling ---- */

/* The device part of cd_gpu_resample: vals = the source's float32 values (or spline coefficients),
 * x fastest; writes the output grid's float32 values to out. Call with the context's lock held. */
static cd_status resample_locked(cd_gpu_context *ctx, const float *vals, const int64_t n[3], const double m[3][4],
                                 const cd_grid *grid, int order, float fill, float *out, cd_error *err) {
    const int64_t onx = grid->dims[0], ny = grid->dims[1], nz = grid->dims[2];
    const uint64_t nsrc = (uint64_t)(n[0] * n[1] * n[2]), nout = (uint64_t)(onx * ny * nz);
    /* fixed point: axes whose position depends on i alone (zero row terms) take the reference's
     * decisions from a table of onx ints each, after the row bases */
    const bool f64 = cd_vk_float64(ctx), shared = cd_gpu_shared_memory(ctx);
    uint32_t tables = 0;
    for (int a = 0; a < 3 && !f64; a++)
        if (m[a][0] != 0 && m[a][1] == 0 && m[a][2] == 0) tables |= 1u << a;
    const uint64_t nrows =
        (uint64_t)(ny * nz) + (tables ? (uint64_t)(onx + 1) / 2 : 0); /* 6 uints each: 3 tables of onx */
    cd_status st;
    if ((st = check_range(ctx, nsrc * 4, "cd_gpu_resample", "source", err)) != CD_OK) return st;
    if ((st = check_range(ctx, nout * 4, "cd_gpu_resample", "output", err)) != CD_OK) return st;
    if ((st = check_range(ctx, nrows * 24, "cd_gpu_resample", "row table", err)) != CD_OK) return st;
    uint32_t gx, gy;
    if (!grid2d(ctx, nout, PP(ctx)[0].local_size, &gx, &gy))
        return cd_fail(err, CD_ERR_LIMIT, "cd_gpu_resample: %llu output voxels are too many for one dispatch on %s",
                       (unsigned long long)nout, cd_vk_name(ctx));
    const VkDeviceSize s_src = cd_vk_padded(ctx, nsrc * 4), s_rows = cd_vk_padded(ctx, nrows * 24),
                       s_out = cd_vk_padded(ctx, nout * 4);
    VkDeviceSize need[CD_VK_NKINDS] = {s_src + s_rows + s_out, shared ? 0 : s_src + s_rows, shared ? 0 : s_out};
    if ((st = cd_vk_arenas_reserve(ctx, need, err)) != CD_OK) return st;
    cd_vk_range dev[3], hin[2], hout;
    dev[0] = cd_vk_alloc(ctx, CD_VK_DEVICE, nsrc * 4);
    dev[1] = cd_vk_alloc(ctx, CD_VK_DEVICE, nrows * 24);
    dev[2] = cd_vk_alloc(ctx, CD_VK_DEVICE, nout * 4);
    if (shared) {
        hin[0] = dev[0];
        hin[1] = dev[1];
        hout = dev[2];
    } else {
        hin[0] = cd_vk_alloc(ctx, CD_VK_UPLOAD, nsrc * 4);
        hin[1] = cd_vk_alloc(ctx, CD_VK_UPLOAD, nrows * 24);
        hout = cd_vk_alloc(ctx, CD_VK_READBACK, nout * 4);
    }
    memcpy(cd_vk_host(ctx, hin[0]), vals, nsrc * 4);
    /* row bases: the reference's ROW_SETUP expression, in double; as such (float64 devices) or
     * rounded once to 32.32 */
    resample_push pc = {(uint32_t)onx,
                        (uint32_t)nout,
                        gx,
                        (uint32_t)order,
                        (int32_t)n[0],
                        (int32_t)n[1],
                        (int32_t)n[2],
                        fill,
                        {0},
                        {0},
                        {0},
                        tables,
                        (uint32_t)(ny * nz * 6)};
    int64_t flo = fixed32(-EDGE_TOL), fhi[3];
    for (int a = 0; a < 3; a++) fhi[a] = fixed32((double)(n[a] - 1) + EDGE_TOL);
    uint32_t *rows = cd_vk_host(ctx, hin[1]);
    for (int64_t k = 0; k < nz; k++)
        for (int64_t j = 0; j < ny; j++, rows += 6)
            for (int a = 0; a < 3; a++) {
                const double b = m[a][1] * (double)j + m[a][2] * (double)k + m[a][3];
                if (f64)
                    put_double(rows + 2 * a, b);
                else
                    put64(rows + 2 * a, m[a][0] == 0 ? fixed_constant(b, n[a], flo, fhi[a]) : fixed32(b));
            }
    for (int a = 0; a < 3; a++) {
        if (f64) {
            put_double(pc.step + 2 * a, m[a][0]);
            put_double(pc.hi + 2 * a, (double)(n[a] - 1) + EDGE_TOL);
        } else {
            put64(pc.step + 2 * a, fixed32(m[a][0]));
            put64(pc.hi + 2 * a, fhi[a]);
        }
    }
    if (f64)
        put_double(pc.lo, -EDGE_TOL);
    else
        put64(pc.lo, flo);
    for (int a = 0; a < 3; a++) {
        if (!(tables & (1u << a))) continue;
        int32_t *t = (int32_t *)rows + a * onx; /* rows now points past the row bases */
        const double b = m[a][1] * 0.0 + m[a][2] * 0.0 + m[a][3];
        for (int64_t i = 0; i < onx; i++) {
            bool in;
            int64_t q;
            ref_decide(b + (double)i * m[a][0], n[a], &in, &q); /* the reference's VOXEL_POS */
            t[i] = in ? (int32_t)q : -1;
        }
    }

    cd_vk_cmd *cmd = cd_vk_batch(ctx);
    if ((st = cd_vk_cmd_begin(cmd, false, err)) != CD_OK) return st;
    if (!shared) { /* source and rows are adjacent in both arenas: one copy */
        cd_vk_range h = hin[0], d = dev[0];
        h.size = d.size = dev[0].size + dev[1].size;
        copy_in(cmd, h, d);
    }
    cd_vk_kernel_bind(ctx, &PP(ctx)[0], dev);
    cd_vk_cmd_timestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0);
    dispatch(cmd, &PP(ctx)[0], &pc, gx, gy);
    cd_vk_cmd_timestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 1);
    copy_out(cmd, dev[2], hout);
    double kms = 0;
    if ((st = cd_vk_cmd_submit_wait(cmd, "a batch", &kms, err)) != CD_OK) return st;
    cd_vk_count_batch(ctx, kms, s_src + s_rows, s_out);
    memcpy(out, cd_vk_host(ctx, hout), nout * 4);
    return CD_OK;
}

/* What the device takes: sources whose values float32 holds exactly (as the reference's float32
 * coefficient path), float32 output, or uint8 -> uint8 nearest copies without scaling (masks). */
static bool gpu_takes(const cd_volume *src, const cd_grid *grid, const cd_resample_options *o, cd_dtype odt,
                      const double m[3][4]) {
    if (!float32_exact(src->dtype)) return false;
    if (odt != CD_DTYPE_FLOAT32 &&
        !(o->interp == CD_INTERP_NEAREST && odt == CD_DTYPE_UINT8 && src->dtype == CD_DTYPE_UINT8 && !src->scaled))
        return false;
    /* a nearest copy into the source dtype keeps the source's scaling (cd_resample): not this path */
    if (o->interp == CD_INTERP_NEAREST && odt == src->dtype && src->scaled) return false;
    for (int a = 0; a < 3; a++) {
        if (src->dims[a] > INT32_MAX / 4) return false;
        double ext = fabs(m[a][3]) + 1.0;
        for (int j = 0; j < 3; j++) ext += fabs(m[a][j]) * (double)(grid->dims[j] - 1);
        if (!(ext < FIXED_MAX)) return false;
    }
    return (uint64_t)src->count < (UINT64_C(1) << 31) &&
           (double)grid->dims[0] * (double)grid->dims[1] * (double)grid->dims[2] < 4294967295.0;
}

cd_status cd_gpu_resample(cd_gpu_context *ctx, const cd_volume *src, const cd_grid *grid,
                          const cd_resample_options *opts, cd_volume **out, cd_error *err) {
    if (!ctx || !src || !grid || !out) return cd_fail(err, CD_ERR_ARG, "cd_gpu_resample: NULL argument");
    *out = NULL;
    cd_resample_options o;
    cd_resample_options_init(&o);
    if (opts) o = *opts;
    if (o.interp != CD_INTERP_NEAREST && o.interp != CD_INTERP_LINEAR && o.interp != CD_INTERP_CUBIC)
        return cd_fail(err, CD_ERR_ARG, "cd_gpu_resample: interpolation order %d (must be 0, 1 or 3)", (int)o.interp);
    if (o.threads < 0) return cd_fail(err, CD_ERR_ARG, "cd_gpu_resample: threads is %d (must be >= 0)", o.threads);
    for (int i = 0; i < 3; i++)
        if (grid->dims[i] < 1)
            return cd_fail(err, CD_ERR_ARG, "cd_gpu_resample: grid dim %d is %lld (must be >= 1)", i,
                           (long long)grid->dims[i]);
    double m[3][4];
    cd_status st = cd_resample_voxel_map(src, grid, m, err);
    if (st != CD_OK) return st;
    cd_dtype odt = o.out_dtype;
    if (odt == CD_DTYPE_INVALID) odt = o.interp == CD_INTERP_NEAREST ? src->dtype : CD_DTYPE_FLOAT32;
    const double t0 = cd_now_ms();
    if (!gpu_takes(src, grid, &o, odt, m)) {
        /* the reference, which also reports bad options the same way */
        st = cd_resample(src, grid, &o, out, err);
        cd_vk_call_begin(ctx);
        cd_vk_count_fallback(ctx, 1);
        cd_vk_call_end(ctx, t0);
        return st;
    }
    if (isnan(o.fill) && odt != CD_DTYPE_FLOAT32)
        return cd_fail(err, CD_ERR_ARG, "cd_gpu_resample: a NaN fill needs a floating-point output dtype");
    /* the values the device interpolates: physical float32 values, or the reference's coefficients */
    const size_t nsrc = (size_t)src->count;
    float *vals = NULL;
    bool own = false;
    if (src->dtype == CD_DTYPE_FLOAT32 && !src->scaled && o.interp != CD_INTERP_CUBIC) {
        vals = (float *)src->data;
    } else {
        vals = malloc((nsrc ? nsrc : 1) * sizeof *vals);
        if (!vals) return cd_fail(err, CD_ERR_NOMEM, "cd_gpu_resample: cannot allocate %zu bytes", nsrc * sizeof *vals);
        own = true;
        if (o.interp == CD_INTERP_CUBIC)
            st = cd_resample_spline_f32(src, o.threads, vals, err);
        else
            cd_volume_to_float32(src, vals);
    }
    cd_volume *res = NULL;
    float *fout = NULL;
    if (st == CD_OK) st = cd_volume_create(grid->dims, odt, &res, err);
    if (st == CD_OK) {
        fout = odt == CD_DTYPE_FLOAT32 ? (float *)res->data : malloc((size_t)res->count * sizeof *fout);
        if (!fout) st = cd_fail(err, CD_ERR_NOMEM, "cd_gpu_resample: out of memory");
    }
    if (st == CD_OK) {
        cd_vk_call_begin(ctx);
        st = cd_vk_usable(ctx, err);
        if (st == CD_OK) st = pp_ready(ctx, err);
        if (st == CD_OK) st = resample_locked(ctx, vals, src->dims, m, grid, (int)o.interp, (float)o.fill, fout, err);
        cd_vk_call_end(ctx, t0);
    }
    if (st == CD_OK && odt == CD_DTYPE_UINT8) {
        /* values are source bytes or the fill: stored as the reference stores (half up, clamped, NaN 0) */
        uint8_t *o8 = res->data;
        for (size_t i = 0; i < res->count; i++) {
            const float v = fout[i];
            const double t = v > 0 ? (double)v + 0.5 : 0;
            o8[i] = t >= 255.0 ? 255 : (uint8_t)t;
        }
    }
    if (fout && odt != CD_DTYPE_FLOAT32) free(fout);
    if (own) free(vals);
    if (st != CD_OK) {
        cd_volume_destroy(res);
        return st;
    }
    cd_volume_set_affine(res, grid->affine);
    double sp[3];
    for (int i = 0; i < 3; i++) sp[i] = column_norm(grid->affine, i);
    cd_volume_set_spacing(res, sp);
    *out = res;
    return CD_OK;
}

/* ---- normalisation ---- */

static uint64_t pad4(uint64_t n) { return (n + 3) & ~(uint64_t)3; }

/* The device part of cd_gpu_normalize. zscore: reduce then map; otherwise the map with pc's values. */
static cd_status normalize_locked(cd_gpu_context *ctx, float *x, size_t n, const uint8_t *mask, uint32_t region,
                                  bool zscore, normalize_push pc, cd_error *err) {
    cd_status st;
    if ((st = check_range(ctx, (uint64_t)n * 4, "cd_gpu_normalize", "volume", err)) != CD_OK) return st;
    uint32_t gx, gy;
    if (!grid2d(ctx, n, PP(ctx)[2].local_size, &gx, &gy))
        return cd_fail(err, CD_ERR_LIMIT, "cd_gpu_normalize: %zu voxels are too many for one dispatch on %s", n,
                       cd_vk_name(ctx));
    const uint32_t lr = PP(ctx)[1].local_size;
    uint64_t parts = ((uint64_t)n + (uint64_t)lr * 64 - 1) / ((uint64_t)lr * 64);
    if (parts < 1) parts = 1;
    if (parts > REDUCE_PARTS_MAX) parts = REDUCE_PARTS_MAX;
    const bool with_mask = zscore && region == 1, shared = cd_gpu_shared_memory(ctx);
    const VkDeviceSize s_data = cd_vk_padded(ctx, (uint64_t)n * 4), s_mask = with_mask ? cd_vk_padded(ctx, pad4(n)) : 0,
                       s_stats = cd_vk_padded(ctx, (parts * 6 + 2) * 4);
    VkDeviceSize need[CD_VK_NKINDS] = {s_data + s_mask + s_stats, shared ? 0 : s_data + s_mask, shared ? 0 : s_data};
    if ((st = cd_vk_arenas_reserve(ctx, need, err)) != CD_OK) return st;
    cd_vk_range data = cd_vk_alloc(ctx, CD_VK_DEVICE, (uint64_t)n * 4), mrange = {CD_VK_DEVICE, 0, 0}, hin,
                hmask = {CD_VK_UPLOAD, 0, 0}, hout;
    if (with_mask) mrange = cd_vk_alloc(ctx, CD_VK_DEVICE, pad4(n));
    cd_vk_range stats = cd_vk_alloc(ctx, CD_VK_DEVICE, (parts * 6 + 2) * 4);
    if (shared) {
        hin = hout = data;
        hmask = mrange;
    } else {
        hin = cd_vk_alloc(ctx, CD_VK_UPLOAD, (uint64_t)n * 4);
        if (with_mask) hmask = cd_vk_alloc(ctx, CD_VK_UPLOAD, pad4(n));
        hout = cd_vk_alloc(ctx, CD_VK_READBACK, (uint64_t)n * 4);
    }
    memcpy(cd_vk_host(ctx, hin), x, n * 4);
    if (with_mask) {
        uint8_t *hm = cd_vk_host(ctx, hmask);
        memcpy(hm, mask, n);
        memset(hm + n, 0, pad4(n) - n);
    }
    cd_vk_cmd *cmd = cd_vk_batch(ctx);
    if ((st = cd_vk_cmd_begin(cmd, false, err)) != CD_OK) return st;
    if (!shared) {
        cd_vk_range h = hin, d = data;
        h.size = d.size = data.size + (with_mask ? mrange.size : 0); /* adjacent in both arenas */
        copy_in(cmd, h, d);
    }
    cd_vk_cmd_timestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0);
    if (zscore) {
        /* the mask binding must name a buffer even when the region does not read it */
        const cd_vk_range rb[3] = {data, with_mask ? mrange : data, stats};
        cd_vk_kernel_bind(ctx, &PP(ctx)[1], rb);
        reduce_push rp = {(uint32_t)n, (uint32_t)parts, region, 0};
        dispatch(cmd, &PP(ctx)[1], &rp, (uint32_t)parts, 1);
        compute_barrier(cmd);
        rp.mode = 1;
        dispatch(cmd, &PP(ctx)[1], &rp, 1, 1);
        compute_barrier(cmd);
        pc.stats_at = (uint32_t)(parts * 6);
    }
    const cd_vk_range nb[2] = {data, stats};
    cd_vk_kernel_bind(ctx, &PP(ctx)[2], nb);
    pc.n = (uint32_t)n;
    pc.groups_x = gx;
    dispatch(cmd, &PP(ctx)[2], &pc, gx, gy);
    cd_vk_cmd_timestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 1);
    copy_out(cmd, data, hout);
    double kms = 0;
    if ((st = cd_vk_cmd_submit_wait(cmd, "a batch", &kms, err)) != CD_OK) return st;
    cd_vk_count_batch(ctx, kms, s_data + s_mask, s_data);
    memcpy(x, cd_vk_host(ctx, hout), n * 4);
    return CD_OK;
}

cd_status cd_gpu_normalize(cd_gpu_context *ctx, const cd_recipe *r, float *x, size_t n, const uint8_t *mask,
                           cd_error *err) {
    if (!ctx || !r || (n && !x)) return cd_fail(err, CD_ERR_ARG, "cd_gpu_normalize: NULL argument");
    if (r->normalize != CD_NORM_NONE && r->normalize != CD_NORM_ZSCORE && r->normalize != CD_NORM_PERCENTILE)
        return cd_fail(err, CD_ERR_ARG, "cd_gpu_normalize: unknown normalisation %d", (int)r->normalize);
    if (r->has_then && !(r->then_std != 0 && isfinite(r->then_std) && isfinite(r->then_mean)))
        return cd_fail(err, CD_ERR_ARG, "cd_gpu_normalize: 'then' needs a finite mean and a finite nonzero std");
    if (n == 0 || (r->normalize == CD_NORM_NONE && !r->has_then)) return CD_OK;
    if (n >= (size_t)UINT32_MAX)
        return cd_fail(err, CD_ERR_LIMIT, "cd_gpu_normalize: %zu voxels (at most 2^32 - 2)", n);
    const double t0 = cd_now_ms();
    /* the region as the reference resolves it: a mask region without a mask is empty, which means
     * the whole volume */
    uint32_t region = r->region == CD_REGION_MASK ? (mask ? 1 : 0) : r->region == CD_REGION_NONZERO ? 2 : 0;
    normalize_push pc;
    memset(&pc, 0, sizeof pc);
    pc.mode = r->normalize == CD_NORM_ZSCORE ? 0 : r->normalize == CD_NORM_PERCENTILE ? 1 : 2;
    pc.then = r->has_then;
    pc.then_mean = (float)r->then_mean;
    pc.then_std = (float)r->then_std;
    if (r->normalize == CD_NORM_PERCENTILE) {
        /* percentiles need an order statistic: the host computes them with the reference's own code
         * on the same values, so lo and hi are the reference's */
        size_t count = 0;
        for (size_t i = 0; i < n; i++) count += region == 0 || (region == 1 ? mask[i] != 0 : x[i] != 0.0f);
        const bool all = count == 0 || region == 0;
        if (all) count = n;
        float *v = malloc(count * sizeof *v);
        if (!v) return cd_fail(err, CD_ERR_NOMEM, "cd_gpu_normalize: cannot allocate %zu bytes", count * sizeof *v);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (all || (region == 1 ? mask[i] != 0 : x[i] != 0.0f)) v[k++] = x[i];
        const double lo = cd_percentile_f32(v, count, r->percentiles[0]);
        const double hi = cd_percentile_f32(v, count, r->percentiles[1]);
        free(v);
        const double r0 = r->range[0], r1 = r->range[1], scale = hi > lo ? (r1 - r0) / (hi - lo) : 0.0;
        pc.lo = (float)lo;
        pc.scale = (float)scale;
        pc.r0 = (float)r0;
        pc.cmin = (float)fmin(r0, r1);
        pc.cmax = (float)fmax(r0, r1);
    }
    cd_vk_call_begin(ctx);
    cd_status st = cd_vk_usable(ctx, err);
    if (st == CD_OK) st = pp_ready(ctx, err);
    if (st == CD_OK) st = normalize_locked(ctx, x, n, mask, region, r->normalize == CD_NORM_ZSCORE, pc, err);
    cd_vk_call_end(ctx, t0);
    return st;
}

/* ---- masks by linear interpolation per label (nnU-Net's one-hot + argmax) ---- */

/* One output voxel (i, j, k) of cd_resample's trilinear path over the indicator of `label` in the
 * mask mk (x fastest, dims n, fill 0), in the reference's own double arithmetic and evaluation order
 * (transform/resample.c: ROW_SETUP, VOXEL_POS, axis_pos, LINEAR_LOOP), rounded to float as the
 * reference stores it. */
static float linear_voxel(const uint8_t *mk, int label, const int64_t n[3], const double m[3][4], int64_t i, int64_t j,
                          int64_t k) {
    double c[3];
    int64_t ic[3];
    for (int a = 0; a < 3; a++) {
        const double b = m[a][1] * (double)j + m[a][2] * (double)k + m[a][3];
        double v = b + (double)i * m[a][0];
        const double hi = (double)(n[a] - 1);
        if (!(v >= -EDGE_TOL && v <= hi + EDGE_TOL)) return 0.0f;
        v = v < 0 ? 0 : v > hi ? hi : v;
        const int64_t l = n[a] > 1 ? n[a] - 2 : 0;
        ic[a] = (int64_t)v;
        ic[a] = ic[a] > l ? l : ic[a];
        c[a] = v;
    }
    const int64_t sy = n[0], sz = n[0] * n[1];
    const int64_t dx = n[0] > 1 ? 1 : 0, dy = n[1] > 1 ? sy : 0, dz = n[2] > 1 ? sz : 0;
    const double fx = c[0] - (double)ic[0], fy = c[1] - (double)ic[1], fz = c[2] - (double)ic[2];
    const double gx = 1.0 - fx, gy = 1.0 - fy, gz = 1.0 - fz;
    const uint8_t *p = mk + ic[0] + sy * ic[1] + sz * ic[2];
#define IND(o) (p[o] == label ? 1.0 : 0.0)
    const double c00 = gx * IND(0) + fx * IND(dx);
    const double c10 = gx * IND(dy) + fx * IND(dy + dx);
    const double c01 = gx * IND(dz) + fx * IND(dz + dx);
    const double c11 = gx * IND(dz + dy) + fx * IND(dz + dy + dx);
#undef IND
    return (float)(gz * (gy * c00 + fy * c10) + fz * (gy * c01 + fy * c11));
}

/* Values this close to a decision (0.5, or another label's value) are decided again on the host:
 * the device's float lerps are within ~1e-6 of the reference's. */
#define MASK_AMBIGUOUS 1e-5f

static void indicator(const uint8_t *m, size_t n, int label, float *h) {
    for (size_t i = 0; i < n; i++) h[i] = m[i] == label ? 1.0f : 0.0f;
}

/* The labels of a uint8 mask resampled as the reference's cd_pp_mask_linear (nnunet_resample.c):
 * one trilinear pass per present label (binary masks: the label's indicator, kept where > 0.5),
 * argmax with ties to the lower label; the device interpolates, the host decides, and re-decides
 * every voxel whose values lie within MASK_AMBIGUOUS of a decision with the reference's arithmetic,
 * so that the result equals the reference's. */
cd_status cd_gpu_resample_mask_linear(cd_gpu_context *ctx, const cd_volume *mask, const cd_grid *grid, cd_volume **out,
                                      cd_error *err) {
    if (!ctx || !mask || !grid || !out) return cd_fail(err, CD_ERR_ARG, "cd_gpu_resample_mask_linear: NULL argument");
    *out = NULL;
    if (mask->dtype != CD_DTYPE_UINT8 || mask->scaled)
        return cd_fail(err, CD_ERR_ARG, "cd_gpu_resample_mask_linear: the mask must be unscaled uint8 (got %s)",
                       cd_dtype_name(mask->dtype));
    const uint8_t *m = mask->data;
    const size_t n = mask->count;
    bool present[256] = {false};
    for (size_t i = 0; i < n; i++) present[m[i]] = true;
    int nlabels = 0, labels[256];
    for (int v = 0; v < 256; v++)
        if (present[v]) labels[nlabels++] = v;
    const bool binary = nlabels <= 2 && (present[0] || nlabels == 1);
    double mm[3][4];
    cd_status st = cd_resample_voxel_map(mask, grid, mm, err);
    if (st != CD_OK) return st;
    cd_volume *ind = NULL, *res = NULL;
    if ((st = cd_volume_create(mask->dims, CD_DTYPE_FLOAT32, &ind, err)) != CD_OK) return st;
    cd_volume_set_affine(ind, mask->affine);
    if ((st = cd_volume_create(grid->dims, CD_DTYPE_UINT8, out, err)) != CD_OK) {
        cd_volume_destroy(ind);
        return st;
    }
    cd_volume_set_affine(*out, grid->affine);
    uint8_t *o = (*out)->data;
    const size_t on = (*out)->count;
    float *best = binary ? NULL : malloc(on * sizeof *best);
    uint8_t *again = calloc(on ? on : 1, 1);
    if ((!binary && !best) || !again) st = cd_fail(err, CD_ERR_NOMEM, "cd_gpu_resample: out of memory (mask)");
    cd_resample_options ro;
    cd_resample_options_init(&ro);
    ro.interp = CD_INTERP_LINEAR;
    ro.threads = 1;
    if (st == CD_OK && binary) {
        const int label = present[0] ? (nlabels == 2 ? labels[1] : 0) : labels[0];
        indicator(m, n, label ? label : -1, ind->data); /* label 0 alone: an all-zero indicator */
        if ((st = cd_gpu_resample(ctx, ind, grid, &ro, &res, err)) == CD_OK) {
            const float *p = res->data;
            for (size_t i = 0; i < on; i++) {
                o[i] = p[i] > 0.5f ? (uint8_t)label : 0;
                again[i] = fabsf(p[i] - 0.5f) <= MASK_AMBIGUOUS;
            }
        }
    } else if (st == CD_OK) {
        for (size_t i = 0; i < on; i++) best[i] = -1.0f;
        memset(o, 0, on);
        for (int l = 0; l < nlabels && st == CD_OK; l++) {
            indicator(m, n, labels[l], ind->data);
            if ((st = cd_gpu_resample(ctx, ind, grid, &ro, &res, err)) != CD_OK) break;
            const float *p = res->data;
            for (size_t i = 0; i < on; i++) {
                again[i] |= fabsf(p[i] - best[i]) <= MASK_AMBIGUOUS;
                if (p[i] > best[i]) {
                    best[i] = p[i];
                    o[i] = (uint8_t)labels[l];
                }
            }
            cd_volume_destroy(res);
            res = NULL;
        }
    }
    /* the near decisions, again with the reference's numbers */
    const int64_t onx = grid->dims[0], ony = grid->dims[1];
    for (size_t q = 0; st == CD_OK && q < on; q++) {
        if (!again[q]) continue;
        const int64_t i = (int64_t)q % onx, j = ((int64_t)q / onx) % ony, k = (int64_t)q / (onx * ony);
        if (binary) {
            const int label = present[0] ? (nlabels == 2 ? labels[1] : 0) : labels[0];
            o[q] = linear_voxel(m, label ? label : -1, mask->dims, mm, i, j, k) > 0.5f ? (uint8_t)label : 0;
        } else {
            float b = -1.0f;
            for (int l = 0; l < nlabels; l++) {
                const float v = linear_voxel(m, labels[l], mask->dims, mm, i, j, k);
                if (v > b) {
                    b = v;
                    o[q] = (uint8_t)labels[l];
                }
            }
        }
    }
    free(best);
    free(again);
    cd_volume_destroy(res);
    cd_volume_destroy(ind);
    if (st != CD_OK) {
        cd_volume_destroy(*out);
        *out = NULL;
    }
    return st;
}

/* ---- the converter's device ---- */

void cd_pp_device_init(cd_pp_device *d, cd_device_policy *policy, cd_device_slot *slot) {
    memset(d, 0, sizeof *d);
    d->policy = policy;
    d->slot = slot;
    atomic_init(&d->gpu_calls, 0);
}

const char *cd_pp_device_used(const cd_pp_device *d) { return d && atomic_load(&d->gpu_calls) > 0 ? "vulkan" : "cpu"; }

/* The arguments of the three device calls (each uses its own). */
typedef struct pp_args {
    const cd_volume *src;
    const cd_grid *grid;
    const cd_resample_options *o;
    cd_volume **out;
    const cd_recipe *r;
    float *x;
    size_t n;
    const uint8_t *mask;
} pp_args;

/* One call under the device policy; true when the device did it. */
static bool on_device(cd_pp_device *d, cd_device_fn call, pp_args *a, const char *what) {
    if (!d || !d->policy || !cd_device_slot_run(d->policy, d->slot, call, a, what, 1)) return false;
    atomic_fetch_add(&d->gpu_calls, 1);
    return true;
}

static cd_status call_resample(cd_gpu_context *g, void *args, cd_error *err) {
    const pp_args *a = args;
    return cd_gpu_resample(g, a->src, a->grid, a->o, a->out, err);
}

static cd_status call_mask_linear(cd_gpu_context *g, void *args, cd_error *err) {
    const pp_args *a = args;
    return cd_gpu_resample_mask_linear(g, a->src, a->grid, a->out, err);
}

static cd_status call_normalize(cd_gpu_context *g, void *args, cd_error *err) {
    const pp_args *a = args;
    return cd_gpu_normalize(g, a->r, a->x, a->n, a->mask, err);
}

cd_status cd_pp_resample(cd_pp_device *d, const cd_volume *src, const cd_grid *grid, const cd_resample_options *o,
                         cd_volume **out, cd_error *err) {
    pp_args a = {.src = src, .grid = grid, .o = o, .out = out};
    if (on_device(d, call_resample, &a, "resample a volume")) return CD_OK;
    return cd_resample(src, grid, o, out, err);
}

bool cd_pp_resample_mask_linear(cd_pp_device *d, const cd_volume *mask, const cd_grid *grid, cd_volume **out) {
    pp_args a = {.src = mask, .grid = grid, .out = out};
    return on_device(d, call_mask_linear, &a, "resample a mask");
}

bool cd_pp_normalize(cd_pp_device *d, const cd_recipe *r, float *x, size_t n, const uint8_t *mask) {
    if (r->normalize == CD_NORM_NONE && !r->has_then) return false;
    /* cd_gpu_normalize writes x only once the device has finished: after a failure x is intact */
    pp_args a = {.r = r, .x = x, .n = n, .mask = mask};
    return on_device(d, call_normalize, &a, "normalise a volume");
}
