/* World-space resampling onto a voxel grid: nearest, trilinear and cubic B-spline interpolation with
 * the semantics of scipy.ndimage.map_coordinates(mode='constant', prefilter=True), multithreaded over
 * output z-slices.
 *
 * Semantics (per output voxel v, c = M * v with M = inv(A_src) * A_grid, computed once):
 *  - an axis position outside [-EDGE_TOL, n-1+EDGE_TOL] makes the voxel take the fill value; within
 *    the tolerance band it is snapped onto the edge (0 or n-1). scipy has no band: a position 1e-15
 *    past the last voxel centre is "outside" there, which turns round-off in affine products (and
 *    float32-stored sforms) into spurious fill on the border slices of same-grid resampling.
 *  - order 0: index floor(c + 0.5), exactly as scipy computes it (ties at .5 go up).
 *  - order 1: trilinear on [0, n-1]; at c == n-1 the last voxel's value.
 *  - order 3: cubic B-spline on coefficients prefiltered with mirror boundaries (scipy's spline_filter
 *    with mode 'mirror', which is what mode 'constant' uses); the 4-tap footprint near the edges reads
 *    mirrored coefficients, as scipy does.
 * Coordinates are formed per row as base + i * step (no running sum, so no drift along x); M's
 * entries within 1e-12 of a multiple of 1/1024 are snapped onto it (see snap_entry).
 * Arithmetic is double; float32 cubic coefficients are used for sources that float32 holds exactly. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cirrdata/resample.h"
#include "core/internal.h"
#include "core/volume_impl.h"
#include "transform/resample_impl.h"

#define EDGE_TOL 1e-4
#define MAX_THREADS 256
/* |z|^40 < 1e-22: beyond this many terms the mirror initialisation of the causal filter is exact in
 * double, so long lines need not sum every sample. */
#define SPLINE_HORIZON 40

/* ---- small linear algebra ---------------------------------------------------------------------- */

static bool affine_finite(const double a[4][4]) {
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            if (!isfinite(a[i][j])) return false;
    return true;
}

/* Inverse of the affine's 3x3 part and translation; false when singular. */
static bool invert_affine(const double a[4][4], double inv[3][4]) {
    double c00 = a[1][1] * a[2][2] - a[1][2] * a[2][1];
    double c01 = a[1][2] * a[2][0] - a[1][0] * a[2][2];
    double c02 = a[1][0] * a[2][1] - a[1][1] * a[2][0];
    double det = a[0][0] * c00 + a[0][1] * c01 + a[0][2] * c02;
    if (!(fabs(det) > 0) || !isfinite(det)) return false;
    double r[3][3] = {
        {c00, a[0][2] * a[2][1] - a[0][1] * a[2][2], a[0][1] * a[1][2] - a[0][2] * a[1][1]},
        {c01, a[0][0] * a[2][2] - a[0][2] * a[2][0], a[0][2] * a[1][0] - a[0][0] * a[1][2]},
        {c02, a[0][1] * a[2][0] - a[0][0] * a[2][1], a[0][0] * a[1][1] - a[0][1] * a[1][0]},
    };
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) inv[i][j] = r[i][j] / det;
        inv[i][3] = -(inv[i][0] * a[0][3] + inv[i][1] * a[1][3] + inv[i][2] * a[2][3]);
    }
    return true;
}

/* Grids related by whole-voxel shifts or simple zooms give M entries like 1, 0.5 or 3 that affine
 * round-off leaves 1e-16 away (inv(A) * A is not exactly I), which makes trilinear weights 1e-16
 * instead of 0 and order-0 ties at .5 fall either way. Entries within 1e-12 (relative) of a multiple
 * of 1/1024 are therefore snapped onto it; any other entry is far from such noise and kept. */
static double snap_entry(double m) {
    double q = round(m * 1024.0) / 1024.0;
    return fabs(m - q) <= 1e-12 * fmax(1.0, fabs(m)) ? q : m;
}

static double column_norm(const double a[4][4], int j) {
    return sqrt(a[0][j] * a[0][j] + a[1][j] * a[1][j] + a[2][j] * a[2][j]);
}

/* ---- grids ------------------------------------------------------------------------------------- */

void cd_grid_of_volume(const cd_volume *vol, cd_grid *out) {
    memcpy(out->dims, vol->dims, sizeof out->dims);
    memcpy(out->affine, vol->affine, sizeof out->affine);
}

/* Same directions and centre as vol, new dims and spacing. */
static cd_status rescaled_grid(const cd_volume *vol, const int64_t dims[3], const double spacing[3], cd_grid *out,
                               cd_error *err) {
    const double(*a)[4] = vol->affine;
    double g[4][4] = {{0}};
    for (int r = 0; r < 3; r++) {
        double centre = a[r][3], t = 0;
        for (int i = 0; i < 3; i++) centre += a[r][i] * 0.5 * (double)(vol->dims[i] - 1);
        for (int i = 0; i < 3; i++) {
            g[r][i] = a[r][i] / column_norm(a, i) * spacing[i];
            t += g[r][i] * 0.5 * (double)(dims[i] - 1);
        }
        g[r][3] = centre - t;
    }
    g[3][3] = 1.0;
    if (!affine_finite(g)) return cd_fail(err, CD_ERR_ARG, "resampling grid: the new affine is not finite");
    memcpy(out->dims, dims, sizeof out->dims);
    memcpy(out->affine, g, sizeof g);
    return CD_OK;
}

static cd_status check_axes(const cd_volume *vol, const char *fn, cd_error *err) {
    if (!affine_finite(vol->affine)) return cd_fail(err, CD_ERR_ARG, "%s: the volume's affine is not finite", fn);
    for (int i = 0; i < 3; i++)
        if (!(column_norm(vol->affine, i) > 0))
            return cd_fail(err, CD_ERR_ARG, "%s: array axis %d has no direction in the affine", fn, i);
    return CD_OK;
}

/* Output dims beyond this are a mistake (spacing in the wrong unit), not a request. */
#define GRID_DIM_MAX ((double)(1 << 24))

cd_status cd_grid_for_spacing(const cd_volume *vol, const double spacing[3], cd_grid *out, cd_error *err) {
    if (!vol || !spacing || !out) return cd_fail(err, CD_ERR_ARG, "cd_grid_for_spacing: NULL argument");
    cd_status st = check_axes(vol, "cd_grid_for_spacing", err);
    if (st != CD_OK) return st;
    int64_t dims[3];
    for (int i = 0; i < 3; i++) {
        if (!(spacing[i] > 0) || !isfinite(spacing[i]))
            return cd_fail(err, CD_ERR_ARG, "cd_grid_for_spacing: spacing %g along axis %d (must be finite, > 0)",
                           spacing[i], i);
        double n = round((double)vol->dims[i] * column_norm(vol->affine, i) / spacing[i]);
        if (!(n <= GRID_DIM_MAX))
            return cd_fail(err, CD_ERR_LIMIT, "cd_grid_for_spacing: spacing %g along axis %d gives %.0f voxels",
                           spacing[i], i, n);
        dims[i] = n < 1 ? 1 : (int64_t)n;
    }
    return rescaled_grid(vol, dims, spacing, out, err);
}

cd_status cd_grid_for_shape(const cd_volume *vol, const int64_t shape[3], cd_grid *out, cd_error *err) {
    if (!vol || !shape || !out) return cd_fail(err, CD_ERR_ARG, "cd_grid_for_shape: NULL argument");
    cd_status st = check_axes(vol, "cd_grid_for_shape", err);
    if (st != CD_OK) return st;
    double spacing[3];
    for (int i = 0; i < 3; i++) {
        if (shape[i] < 1 || (double)shape[i] > GRID_DIM_MAX)
            return cd_fail(err, CD_ERR_ARG, "cd_grid_for_shape: shape %lld along axis %d (must be 1..%.0f)",
                           (long long)shape[i], i, GRID_DIM_MAX);
        spacing[i] = (double)vol->dims[i] * column_norm(vol->affine, i) / (double)shape[i];
    }
    return rescaled_grid(vol, shape, spacing, out, err);
}

/* ---- a deterministic parallel for ------------------------------------------------------------- */

/* Items are independent and each is computed by exactly one thread, so results do not depend on the
 * thread count; the shared counter only balances load. */
typedef void (*par_fn)(void *ctx, int64_t item, void *scratch);

typedef struct par_pool {
    par_fn fn;
    void *ctx;
    int64_t n;
    atomic_llong next;
    char *scratch;
    size_t scratch_bytes;
} par_pool;

typedef struct par_worker {
    par_pool *pool;
    int id;
} par_worker;

static void *par_run(void *arg) {
    par_worker *w = arg;
    par_pool *p = w->pool;
    void *scratch = p->scratch + (size_t)w->id * p->scratch_bytes;
    for (;;) {
        int64_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n) break;
        p->fn(p->ctx, i, scratch);
    }
    return NULL;
}

static int resolve_threads(int threads) {
    threads = cd_thread_count(threads);
    return threads > MAX_THREADS ? MAX_THREADS : threads;
}

static cd_status parallel_for(int threads, int64_t n, size_t scratch_bytes, par_fn fn, void *ctx, cd_error *err) {
    if (n <= 0) return CD_OK;
    if (threads > n) threads = (int)n;
    if (threads < 1) threads = 1;
    if (scratch_bytes == 0) scratch_bytes = 1;
    par_pool pool = {fn, ctx, n, 0, NULL, scratch_bytes};
    pool.scratch = malloc(scratch_bytes * (size_t)threads);
    pthread_t *tids = malloc(sizeof *tids * (size_t)threads);
    par_worker *workers = malloc(sizeof *workers * (size_t)threads);
    if (!pool.scratch || !tids || !workers) {
        free(pool.scratch);
        free(tids);
        free(workers);
        return cd_fail(err, CD_ERR_NOMEM, "resample: cannot allocate %zu bytes of thread scratch",
                       scratch_bytes * (size_t)threads);
    }
    atomic_init(&pool.next, 0);
    int started = 0;
    for (int t = 1; t < threads; t++) {
        workers[t] = (par_worker){&pool, t};
        /* A thread that cannot start just leaves its share to the others. */
        if (pthread_create(&tids[started + 1], NULL, par_run, &workers[t]) != 0) break;
        started++;
    }
    workers[0] = (par_worker){&pool, 0};
    par_run(&workers[0]);
    for (int t = 1; t <= started; t++) pthread_join(tids[t], NULL);
    free(pool.scratch);
    free(tids);
    free(workers);
    return CD_OK;
}

/* ---- output conversion ------------------------------------------------------------------------- */

/* scipy's output rounding: half away from zero (t +- 0.5, truncated), clamped to the type's range;
 * NaN becomes 0 (a C cast of NaN to an integer is undefined). */
#define STORE_INT(T, LO, HI)                                                                                           \
    do {                                                                                                               \
        T *o = (T *)out;                                                                                               \
        for (int64_t i = 0; i < n; i++) {                                                                              \
            double t = v[i];                                                                                           \
            t = t > 0 ? t + 0.5 : t - 0.5;                                                                             \
            o[i] = t >= (HI) ? (T)(HI) : t <= (LO) ? (T)(LO) : t == t ? (T)t : (T)0;                                   \
        }                                                                                                              \
    } while (0)

#define STORE_UINT(T, HI)                                                                                              \
    do {                                                                                                               \
        T *o = (T *)out;                                                                                               \
        for (int64_t i = 0; i < n; i++) {                                                                              \
            double t = v[i];                                                                                           \
            t = t > 0 ? t + 0.5 : 0;                                                                                   \
            o[i] = t >= (HI) ? (T)(HI) : (T)t;                                                                         \
        }                                                                                                              \
    } while (0)

static void store_row(const double *v, int64_t n, cd_dtype dt, void *out) {
    switch (dt) {
    case CD_DTYPE_UINT8: STORE_UINT(uint8_t, 255.0); break;
    case CD_DTYPE_UINT16: STORE_UINT(uint16_t, 65535.0); break;
    case CD_DTYPE_UINT32: STORE_UINT(uint32_t, 4294967295.0); break;
    case CD_DTYPE_INT8: STORE_INT(int8_t, -128.0, 127.0); break;
    case CD_DTYPE_INT16: STORE_INT(int16_t, -32768.0, 32767.0); break;
    case CD_DTYPE_INT32: STORE_INT(int32_t, -2147483648.0, 2147483647.0); break;
    /* 2^63 and 2^64 are the first doubles outside the 64-bit ranges. */
    case CD_DTYPE_INT64: {
        int64_t *o = out;
        for (int64_t i = 0; i < n; i++) {
            double t = v[i];
            t = t > 0 ? t + 0.5 : t - 0.5;
            o[i] = t >= 9223372036854775808.0    ? INT64_MAX
                   : t <= -9223372036854775808.0 ? INT64_MIN
                   : t == t                      ? (int64_t)t
                                                 : 0;
        }
        break;
    }
    case CD_DTYPE_UINT64: {
        uint64_t *o = out;
        for (int64_t i = 0; i < n; i++) {
            double t = v[i];
            t = t > 0 ? t + 0.5 : 0;
            o[i] = t >= 18446744073709551616.0 ? UINT64_MAX : (uint64_t)t;
        }
        break;
    }
    case CD_DTYPE_FLOAT16: {
        uint16_t *o = out;
        for (int64_t i = 0; i < n; i++) o[i] = cd_float_to_half((float)v[i]);
        break;
    }
    case CD_DTYPE_FLOAT32: {
        float *o = out;
        for (int64_t i = 0; i < n; i++) o[i] = (float)v[i];
        break;
    }
    case CD_DTYPE_FLOAT64: memcpy(out, v, sizeof(double) * (size_t)n); break;
    case CD_DTYPE_INVALID: break;
    }
}

/* ---- the per-row kernels ----------------------------------------------------------------------- */

typedef struct rjob {
    const void *data; /* source voxels (raw), or the spline coefficients for cubic */
    cd_dtype dtype;   /* of data */
    int64_t n[3];     /* source dims */
    int64_t sy, sz;   /* source strides (elements) */
    double m[3][4];   /* output voxel -> source voxel */
    bool scaled;      /* apply slope/inter to interpolated raw values */
    double slope, inter, fill;
    cd_interp interp;
    bool raw_copy;                          /* nearest into the source dtype: copy elements, keep scaling */
    _Alignas(8) unsigned char fill_elem[8]; /* store_row writes it as the output type */
    size_t esize;
    cd_dtype out_dtype;
    void *out;
    int64_t on[3];
} rjob;

/* Position on one axis: false when outside; otherwise *c is snapped into [0, hi]. */
static inline bool axis_pos(double *c, double hi) {
    double v = *c;
    if (!(v >= -EDGE_TOL && v <= hi + EDGE_TOL)) return false;
    *c = v < 0 ? 0 : v > hi ? hi : v;
    return true;
}

/* Source position of output voxel (i, j, k) from the row bases; false when outside. */
#define ROW_SETUP()                                                                                                    \
    double b0 = jb->m[0][1] * (double)j + jb->m[0][2] * (double)k + jb->m[0][3];                                       \
    double b1 = jb->m[1][1] * (double)j + jb->m[1][2] * (double)k + jb->m[1][3];                                       \
    double b2 = jb->m[2][1] * (double)j + jb->m[2][2] * (double)k + jb->m[2][3];                                       \
    const double s0 = jb->m[0][0], s1 = jb->m[1][0], s2 = jb->m[2][0];                                                 \
    const double h0 = (double)(jb->n[0] - 1), h1 = (double)(jb->n[1] - 1), h2 = (double)(jb->n[2] - 1)

#define VOXEL_POS(I, X, Y, Z)                                                                                          \
    double X = b0 + (double)(I)*s0, Y = b1 + (double)(I)*s1, Z = b2 + (double)(I)*s2;                                  \
    bool inside_ = axis_pos(&X, h0) & axis_pos(&Y, h1) & axis_pos(&Z, h2)

/* Nearest: the source element index of each output voxel of row (j, k), -1 outside. */
static void nearest_index_row(const rjob *jb, int64_t j, int64_t k, int64_t *idx) {
    ROW_SETUP();
    for (int64_t i = 0; i < jb->on[0]; i++) {
        VOXEL_POS(i, x, y, z);
        /* x >= 0 here, so truncation is scipy's floor(c + 0.5). */
        idx[i] = inside_ ? (int64_t)(x + 0.5) + jb->sy * (int64_t)(y + 0.5) + jb->sz * (int64_t)(z + 0.5) : -1;
    }
}

#define GATHER_ROW(T)                                                                                                  \
    do {                                                                                                               \
        const T *src = (const T *)jb->data;                                                                            \
        for (int64_t i = 0; i < n; i++) {                                                                              \
            if (idx[i] < 0)                                                                                            \
                v[i] = jb->fill;                                                                                       \
            else if (jb->scaled)                                                                                       \
                v[i] = (double)src[idx[i]] * jb->slope + jb->inter;                                                    \
            else                                                                                                       \
                v[i] = (double)src[idx[i]];                                                                            \
        }                                                                                                              \
    } while (0)

/* Nearest into another dtype: physical values. */
static void nearest_value_row(const rjob *jb, const int64_t *idx, double *v) {
    int64_t n = jb->on[0];
    switch (jb->dtype) {
    case CD_DTYPE_UINT8: GATHER_ROW(uint8_t); break;
    case CD_DTYPE_INT8: GATHER_ROW(int8_t); break;
    case CD_DTYPE_UINT16: GATHER_ROW(uint16_t); break;
    case CD_DTYPE_INT16: GATHER_ROW(int16_t); break;
    case CD_DTYPE_UINT32: GATHER_ROW(uint32_t); break;
    case CD_DTYPE_INT32: GATHER_ROW(int32_t); break;
    case CD_DTYPE_UINT64: GATHER_ROW(uint64_t); break;
    case CD_DTYPE_INT64: GATHER_ROW(int64_t); break;
    case CD_DTYPE_FLOAT32: GATHER_ROW(float); break;
    case CD_DTYPE_FLOAT64: GATHER_ROW(double); break;
    case CD_DTYPE_FLOAT16: /* converted to float32 before the kernels run */
    case CD_DTYPE_INVALID: break;
    }
}

/* Nearest into the source dtype: element copies, so 64-bit integers stay exact. */
static void nearest_copy_row(const rjob *jb, const int64_t *idx, void *out) {
    const unsigned char *src = jb->data;
    unsigned char *o = out;
    size_t es = jb->esize;
    for (int64_t i = 0; i < jb->on[0]; i++, o += es)
        memcpy(o, idx[i] < 0 ? jb->fill_elem : src + (size_t)idx[i] * es, es);
}

/* The span [*lo, *hi) of row positions i where every axis position b + i*s lies in [lo_c, n - 1 - hi_c)
 * (lo_c <= x < n-1-hi_c), where the kernels need neither snapping nor clamping nor mirroring.
 * b + (double)i * s is monotone in i (rounding is monotone), so checking the two ends of a candidate
 * span with the very expression the kernels evaluate makes it exact; the candidate comes from real
 * arithmetic and is only shrunk. */
static bool span_ok(const double b[3], const double st[3], const double lim_lo[3], const double lim_hi[3], int64_t i) {
    for (int a = 0; a < 3; a++) {
        double c = b[a] + (double)i * st[a];
        if (!(c >= lim_lo[a] && c < lim_hi[a])) return false;
    }
    return true;
}

static void interior_span(const rjob *jb, const double b[3], const double st[3], double lo_c, double hi_c, int64_t *lo,
                          int64_t *hi) {
    const int64_t nx = jb->on[0];
    double lim_lo[3], lim_hi[3];
    int64_t l = 0, h = nx;
    for (int a = 0; a < 3; a++) {
        lim_lo[a] = lo_c;
        lim_hi[a] = (double)(jb->n[a] - 1) - hi_c;
        if (!(lim_hi[a] > lim_lo[a])) {
            *lo = *hi = 0;
            return;
        }
        double A = (lim_lo[a] - b[a]), B = (lim_hi[a] - b[a]);
        double fl, fh; /* real-valued span of i */
        if (st[a] > 0) {
            fl = ceil(A / st[a]);
            fh = ceil(B / st[a]);
        } else if (st[a] < 0) {
            fl = floor(B / st[a]) + 1;
            fh = floor(A / st[a]) + 1;
        } else {
            fl = (b[a] >= lim_lo[a] && b[a] < lim_hi[a]) ? 0 : (double)nx;
            fh = (double)nx;
        }
        if (fl > (double)l) l = fl >= (double)nx ? nx : (int64_t)fl;
        if (fh < (double)h) h = fh <= 0 ? 0 : (int64_t)fh;
    }
    while (l < h && !span_ok(b, st, lim_lo, lim_hi, l)) l++;
    while (h > l && !span_ok(b, st, lim_lo, lim_hi, h - 1)) h--;
    *lo = l;
    *hi = h < l ? l : h;
}

/* g * a + f * b (g = 1 - f) where a tap of weight exactly 0 is left out rather than multiplied: 0 * NaN
 * (or 0 * inf) is NaN, and a non-finite neighbour would otherwise reach voxels that do not depend on
 * it (every same-grid voxel, every slice next to one, for a single NaN). For finite taps the result is
 * the same number (up to the sign of a zero). */
static inline double lerp_taps(double g, double f, double a, double b) {
    return f == 0.0 ? a : g == 0.0 ? b : g * a + f * b;
}

/* Trilinear. The lower corner is clamped to n-2 so the upper neighbour exists; at c == n-1 the
 * weight of the upper neighbour is then exactly 1 (scipy reads the last voxel with weight 1 there).
 * A single-voxel axis has step 0. CHECKED = 0 is the interior loop (0 <= c < n-1 on every axis). */
#define LINEAR_LOOP(T, I0, I1, CHECKED)                                                                                \
    for (int64_t i = (I0); i < (I1); i++) {                                                                            \
        double x = b0 + (double)i * s0, y = b1 + (double)i * s1, z = b2 + (double)i * s2;                              \
        int64_t ix, iy, iz;                                                                                            \
        if (CHECKED) {                                                                                                 \
            if (!(axis_pos(&x, h0) & axis_pos(&y, h1) & axis_pos(&z, h2))) {                                           \
                v[i] = jb->fill;                                                                                       \
                continue;                                                                                              \
            }                                                                                                          \
            ix = (int64_t)x, iy = (int64_t)y, iz = (int64_t)z;                                                         \
            ix = ix > lx ? lx : ix;                                                                                    \
            iy = iy > ly ? ly : iy;                                                                                    \
            iz = iz > lz ? lz : iz;                                                                                    \
        } else {                                                                                                       \
            ix = (int64_t)x, iy = (int64_t)y, iz = (int64_t)z;                                                         \
        }                                                                                                              \
        double fx = x - (double)ix, fy = y - (double)iy, fz = z - (double)iz;                                          \
        double gx = 1.0 - fx, gy = 1.0 - fy, gz = 1.0 - fz;                                                            \
        const T *p = src + ix + sy * iy + sz * iz;                                                                     \
        double c00 = lerp_taps(gx, fx, (double)p[0], (double)p[dx]);                                                   \
        double c10 = lerp_taps(gx, fx, (double)p[dy], (double)p[dy + dx]);                                             \
        double c01 = lerp_taps(gx, fx, (double)p[dz], (double)p[dz + dx]);                                             \
        double c11 = lerp_taps(gx, fx, (double)p[dz + dy], (double)p[dz + dy + dx]);                                   \
        double t = lerp_taps(gz, fz, lerp_taps(gy, fy, c00, c10), lerp_taps(gy, fy, c01, c11));                        \
        v[i] = scaled ? t * slope + inter : t;                                                                         \
    }

#define LINEAR_ROW(T)                                                                                                  \
    do {                                                                                                               \
        const T *src = (const T *)jb->data;                                                                            \
        const int64_t lx = jb->n[0] > 1 ? jb->n[0] - 2 : 0, ly = jb->n[1] > 1 ? jb->n[1] - 2 : 0;                      \
        const int64_t lz = jb->n[2] > 1 ? jb->n[2] - 2 : 0, sy = jb->sy, sz = jb->sz;                                  \
        const int64_t dx = jb->n[0] > 1 ? 1 : 0, dy = jb->n[1] > 1 ? sy : 0;                                           \
        const int64_t dz = jb->n[2] > 1 ? sz : 0;                                                                      \
        const bool scaled = jb->scaled;                                                                                \
        const double slope = jb->slope, inter = jb->inter;                                                             \
        LINEAR_LOOP(T, 0, lo, 1)                                                                                       \
        LINEAR_LOOP(T, lo, hi, 0)                                                                                      \
        LINEAR_LOOP(T, hi, nx, 1)                                                                                      \
    } while (0)

static void linear_row(const rjob *jb, int64_t j, int64_t k, double *v) {
    ROW_SETUP();
    const int64_t nx = jb->on[0];
    int64_t lo, hi;
    const double bb[3] = {b0, b1, b2}, ss[3] = {s0, s1, s2};
    interior_span(jb, bb, ss, 0.0, 0.0, &lo, &hi);
    switch (jb->dtype) {
    case CD_DTYPE_UINT8: LINEAR_ROW(uint8_t); break;
    case CD_DTYPE_INT8: LINEAR_ROW(int8_t); break;
    case CD_DTYPE_UINT16: LINEAR_ROW(uint16_t); break;
    case CD_DTYPE_INT16: LINEAR_ROW(int16_t); break;
    case CD_DTYPE_UINT32: LINEAR_ROW(uint32_t); break;
    case CD_DTYPE_INT32: LINEAR_ROW(int32_t); break;
    case CD_DTYPE_UINT64: LINEAR_ROW(uint64_t); break;
    case CD_DTYPE_INT64: LINEAR_ROW(int64_t); break;
    case CD_DTYPE_FLOAT32: LINEAR_ROW(float); break;
    case CD_DTYPE_FLOAT64: LINEAR_ROW(double); break;
    case CD_DTYPE_FLOAT16:
    case CD_DTYPE_INVALID: break;
    }
}

/* scipy's mirror extension of an integer index (period 2n - 2). */
static inline int64_t mirror_index(int64_t i, int64_t n) {
    if (n <= 1) return 0;
    int64_t p = 2 * n - 2;
    i %= p;
    if (i < 0) i += p;
    return i >= n ? p - i : i;
}

static inline void cubic_weights(double t, double w[4]) {
    double s = 1.0 - t;
    w[0] = s * s * s / 6.0;
    w[1] = (4.0 + t * t * (3.0 * t - 6.0)) / 6.0;
    w[2] = (4.0 + s * s * (3.0 * s - 6.0)) / 6.0;
    w[3] = t * t * t / 6.0;
}

/* Cubic B-spline weights and mirrored tap indices along one axis, for c in [0, n-1]. */
static inline void cubic_axis(double c, int64_t n, int64_t stride, double w[4], int64_t off[4]) {
    int64_t f = (int64_t)c; /* c >= 0 */
    cubic_weights(c - (double)f, w);
    if (f >= 1 && f + 2 < n) {
        for (int q = 0; q < 4; q++) off[q] = (f - 1 + q) * stride;
    } else {
        for (int q = 0; q < 4; q++) off[q] = mirror_index(f - 1 + q, n) * stride;
    }
}

/* Checked voxels: snapping and mirrored taps. */
#define CUBIC_EDGE_LOOP(C, I0, I1)                                                                                     \
    for (int64_t i = (I0); i < (I1); i++) {                                                                            \
        VOXEL_POS(i, x, y, z);                                                                                         \
        if (!inside_) {                                                                                                \
            v[i] = jb->fill;                                                                                           \
            continue;                                                                                                  \
        }                                                                                                              \
        double wx[4], wy[4], wz[4];                                                                                    \
        int64_t ox[4], oy[4], oz[4];                                                                                   \
        cubic_axis(x, jb->n[0], 1, wx, ox);                                                                            \
        cubic_axis(y, jb->n[1], jb->sy, wy, oy);                                                                       \
        cubic_axis(z, jb->n[2], jb->sz, wz, oz);                                                                       \
        double t = 0.0;                                                                                                \
        for (int c = 0; c < 4; c++) {                                                                                  \
            double ty = 0.0;                                                                                           \
            for (int b = 0; b < 4; b++) {                                                                              \
                const C *p = cf + oz[c] + oy[b];                                                                       \
                ty += wy[b] * (wx[0] * (double)p[ox[0]] + wx[1] * (double)p[ox[1]] + wx[2] * (double)p[ox[2]] +        \
                               wx[3] * (double)p[ox[3]]);                                                              \
            }                                                                                                          \
            t += wz[c] * ty;                                                                                           \
        }                                                                                                              \
        v[i] = t;                                                                                                      \
    }

/* Interior voxels (1 <= c < n-2 on every axis): the 4x4x4 footprint is inside, no mirroring. */
#define CUBIC_INNER_LOOP(C, I0, I1)                                                                                    \
    for (int64_t i = (I0); i < (I1); i++) {                                                                            \
        double x = b0 + (double)i * s0, y = b1 + (double)i * s1, z = b2 + (double)i * s2;                              \
        int64_t fx = (int64_t)x, fy = (int64_t)y, fz = (int64_t)z;                                                     \
        double wx[4], wy[4], wz[4];                                                                                    \
        cubic_weights(x - (double)fx, wx);                                                                             \
        cubic_weights(y - (double)fy, wy);                                                                             \
        cubic_weights(z - (double)fz, wz);                                                                             \
        const C *p0 = cf + (fx - 1) + sy * (fy - 1) + sz * (fz - 1);                                                   \
        double t = 0.0;                                                                                                \
        for (int c = 0; c < 4; c++) {                                                                                  \
            double ty = 0.0;                                                                                           \
            for (int b = 0; b < 4; b++) {                                                                              \
                const C *p = p0 + c * sz + b * sy;                                                                     \
                ty += wy[b] *                                                                                          \
                      (wx[0] * (double)p[0] + wx[1] * (double)p[1] + wx[2] * (double)p[2] + wx[3] * (double)p[3]);     \
            }                                                                                                          \
            t += wz[c] * ty;                                                                                           \
        }                                                                                                              \
        v[i] = t;                                                                                                      \
    }

#define CUBIC_ROW(C)                                                                                                   \
    do {                                                                                                               \
        const C *cf = (const C *)jb->data;                                                                             \
        const int64_t sy = jb->sy, sz = jb->sz;                                                                        \
        CUBIC_EDGE_LOOP(C, 0, lo)                                                                                      \
        CUBIC_INNER_LOOP(C, lo, hi)                                                                                    \
        CUBIC_EDGE_LOOP(C, hi, nx)                                                                                     \
    } while (0)

/* Rows whose y and z positions are constant (every axis-aligned grid: resampling to a spacing or a
 * shape, the nnU-Net and 2D recipes): the 4x4 (y, z) footprint has the same taps and weights for the
 * whole row, so it is reduced once per source x, col[x] = sum_c wz[c] sum_b wy[b] f(x, y_b, z_c), in
 * lanes along x (the loops vectorise), and each output voxel then needs only its 4 x taps:
 * sum_a wx[a] col[x_a]. 16 + 4 multiply-adds per voxel at unit zoom instead of 64; the sum is the
 * same, in another order (differences of a few double ulp). col covers the source x range the row
 * touches, with 3 voxels of margin for the mirrored taps. Scratch: col and one row of partial sums,
 * each n[0] doubles. */
#define CUBIC_SEPARABLE_ROW(C)                                                                                         \
    do {                                                                                                               \
        const C *cf = (const C *)jb->data;                                                                             \
        for (int64_t x = xa; x <= xb; x++) col[x] = 0.0;                                                               \
        for (int c = 0; c < 4; c++) {                                                                                  \
            const C *r0 = cf + oz[c] + oy[0], *r1 = cf + oz[c] + oy[1];                                                \
            const C *r2 = cf + oz[c] + oy[2], *r3 = cf + oz[c] + oy[3];                                                \
            const double y0 = wy[0], y1 = wy[1], y2 = wy[2], y3 = wy[3], zc = wz[c];                                   \
            for (int64_t x = xa; x <= xb; x++)                                                                         \
                ty[x] = y0 * (double)r0[x] + y1 * (double)r1[x] + y2 * (double)r2[x] + y3 * (double)r3[x];             \
            for (int64_t x = xa; x <= xb; x++) col[x] += zc * ty[x];                                                   \
        }                                                                                                              \
    } while (0)

static bool cubic_row_separable(const rjob *jb, int64_t j, int64_t k, double *v, double *col, double *ty) {
    ROW_SETUP();
    if (s1 != 0.0 || s2 != 0.0) return false;
    const int64_t nx = jb->on[0], n0 = jb->n[0];
    double y = b1, z = b2;
    if (!(axis_pos(&y, h1) & axis_pos(&z, h2))) {
        for (int64_t i = 0; i < nx; i++) v[i] = jb->fill;
        return true;
    }
    double wy[4], wz[4];
    int64_t oy[4], oz[4];
    cubic_axis(y, jb->n[1], jb->sy, wy, oy);
    cubic_axis(z, jb->n[2], jb->sz, wz, oz);
    /* the source x range of the row (positions are monotone in i) */
    double e0 = b0, e1 = b0 + (double)(nx - 1) * s0;
    double lo_x = e0 < e1 ? e0 : e1, hi_x = e0 < e1 ? e1 : e0;
    lo_x = lo_x < 0 ? 0 : lo_x > h0 ? h0 : lo_x;
    hi_x = hi_x < 0 ? 0 : hi_x > h0 ? h0 : hi_x;
    int64_t xa = (int64_t)lo_x - 3, xb = (int64_t)hi_x + 3;
    xa = xa < 0 ? 0 : xa;
    xb = xb > n0 - 1 ? n0 - 1 : xb;
    if (jb->dtype == CD_DTYPE_FLOAT32)
        CUBIC_SEPARABLE_ROW(float);
    else
        CUBIC_SEPARABLE_ROW(double);
    for (int64_t i = 0; i < nx; i++) {
        double x = b0 + (double)i * s0;
        if (!axis_pos(&x, h0)) {
            v[i] = jb->fill;
            continue;
        }
        double wx[4];
        int64_t ox[4];
        cubic_axis(x, n0, 1, wx, ox);
        v[i] = wx[0] * col[ox[0]] + wx[1] * col[ox[1]] + wx[2] * col[ox[2]] + wx[3] * col[ox[3]];
    }
    return true;
}

static void cubic_row(const rjob *jb, int64_t j, int64_t k, double *v) {
    ROW_SETUP();
    const int64_t nx = jb->on[0];
    int64_t lo, hi;
    const double bb[3] = {b0, b1, b2}, ss[3] = {s0, s1, s2};
    interior_span(jb, bb, ss, 1.0, 1.0, &lo, &hi);
    if (jb->dtype == CD_DTYPE_FLOAT32)
        CUBIC_ROW(float);
    else
        CUBIC_ROW(double);
}

/* One output z-slice. Scratch: nx doubles and nx indices, then (cubic) 2 n[0] doubles. */
static size_t resample_scratch_bytes(const rjob *jb) {
    return (sizeof(double) + sizeof(int64_t)) * (size_t)jb->on[0] +
           (jb->interp == CD_INTERP_CUBIC ? 2 * sizeof(double) * (size_t)jb->n[0] : 0);
}

static void resample_slice(void *ctx, int64_t k, void *scratch) {
    const rjob *jb = ctx;
    const int64_t nx = jb->on[0], ny = jb->on[1];
    double *v = scratch;
    int64_t *idx = (int64_t *)(v + nx);
    double *col = (double *)(idx + nx), *ty = col + jb->n[0];
    size_t oes = cd_dtype_size(jb->out_dtype);
    for (int64_t j = 0; j < ny; j++) {
        unsigned char *out = (unsigned char *)jb->out + (size_t)(nx * (j + ny * k)) * oes;
        switch (jb->interp) {
        case CD_INTERP_NEAREST:
            nearest_index_row(jb, j, k, idx);
            if (jb->raw_copy) {
                nearest_copy_row(jb, idx, out);
                continue;
            }
            nearest_value_row(jb, idx, v);
            break;
        case CD_INTERP_LINEAR: linear_row(jb, j, k, v); break;
        case CD_INTERP_CUBIC:
            if (!cubic_row_separable(jb, j, k, v, col, ty)) cubic_row(jb, j, k, v);
            break;
        }
        store_row(v, nx, jb->out_dtype, out);
    }
}

/* ---- cubic prefilter --------------------------------------------------------------------------- */

/* In-place cubic B-spline prefilter along the rows of c[r * w + x] (n rows, w independent columns),
 * mirror boundaries; the recursion of scipy's apply_filter (gain, causal pass with the exact mirror
 * initialisation, anticausal pass), vectorised over the columns. */
static void spline_filter_rows(double *c, int64_t n, int64_t w) {
    if (n < 2) return;
    const double z = sqrt(3.0) - 2.0, gain = (1.0 - z) * (1.0 - 1.0 / z);
    for (int64_t i = 0; i < n * w; i++) c[i] *= gain;
    /* Causal initialisation: sum over the mirrored signal of period 2n-2, / (1 - z^(2n-2)). */
    double *c0 = c;
    if (n - 1 > SPLINE_HORIZON) {
        double zi = z;
        for (int64_t r = 1; r <= SPLINE_HORIZON; r++, zi *= z)
            for (int64_t x = 0; x < w; x++) c0[x] += zi * c[r * w + x];
    } else {
        const double zn1 = pow(z, (double)(n - 1));
        const double *last = c + (n - 1) * w;
        double zi = z;
        /* Kept in a temporary: the sum reads c0's original value only once. */
        for (int64_t x = 0; x < w; x++) {
            double s = c0[x] + zn1 * last[x];
            double zz = zi;
            for (int64_t r = 1; r < n - 1; r++, zz *= z) s += zz * (c[r * w + x] + zn1 * c[(n - 1 - r) * w + x]);
            c0[x] = s / (1.0 - zn1 * zn1);
        }
    }
    for (int64_t r = 1; r < n; r++) {
        double *cur = c + r * w;
        const double *prev = cur - w;
        for (int64_t x = 0; x < w; x++) cur[x] += z * prev[x];
    }
    double *cl = c + (n - 1) * w;
    const double *cp = cl - w;
    for (int64_t x = 0; x < w; x++) cl[x] = (z * cp[x] + cl[x]) * z / (z * z - 1.0);
    for (int64_t r = n - 2; r >= 0; r--) {
        double *cur = c + r * w;
        const double *next = cur + w;
        for (int64_t x = 0; x < w; x++) cur[x] = z * (next[x] - cur[x]);
    }
}

typedef struct pjob {
    void *coef;
    bool single; /* float32 storage, else float64 */
    int64_t n[3];
} pjob;

/* Copies `rows` rows of `w` elements at `stride` into/out of a dense double block. */
static void load_rows(const pjob *pj, int64_t start, int64_t rows, int64_t stride, int64_t w, double *blk) {
    for (int64_t r = 0; r < rows; r++) {
        int64_t at = start + r * stride;
        if (pj->single) {
            const float *s = (const float *)pj->coef + at;
            for (int64_t x = 0; x < w; x++) blk[r * w + x] = s[x];
        } else {
            memcpy(blk + r * w, (const double *)pj->coef + at, sizeof(double) * (size_t)w);
        }
    }
}

static void save_rows(const pjob *pj, int64_t start, int64_t rows, int64_t stride, int64_t w, const double *blk) {
    for (int64_t r = 0; r < rows; r++) {
        int64_t at = start + r * stride;
        if (pj->single) {
            float *d = (float *)pj->coef + at;
            for (int64_t x = 0; x < w; x++) d[x] = (float)blk[r * w + x];
        } else {
            memcpy((double *)pj->coef + at, blk + r * w, sizeof(double) * (size_t)w);
        }
    }
}

/* x then y within z-slice k (scratch: nx*ny doubles). */
static void prefilter_xy(void *ctx, int64_t k, void *scratch) {
    const pjob *pj = ctx;
    const int64_t nx = pj->n[0], ny = pj->n[1];
    double *blk = scratch;
    load_rows(pj, nx * ny * k, ny, nx, nx, blk);
    if (nx > 1)
        for (int64_t j = 0; j < ny; j++) spline_filter_rows(blk + j * nx, nx, 1);
    spline_filter_rows(blk, ny, nx);
    save_rows(pj, nx * ny * k, ny, nx, nx, blk);
}

/* z within the x-z plane at row j (scratch: nx*nz doubles). */
static void prefilter_z(void *ctx, int64_t j, void *scratch) {
    const pjob *pj = ctx;
    const int64_t nx = pj->n[0], ny = pj->n[1], nz = pj->n[2];
    double *blk = scratch;
    load_rows(pj, nx * j, nz, nx * ny, nx, blk);
    spline_filter_rows(blk, nz, nx);
    save_rows(pj, nx * j, nz, nx * ny, nx, blk);
}

/* ---- cd_resample ------------------------------------------------------------------------------- */

static bool float32_exact(cd_dtype dt) {
    return dt == CD_DTYPE_UINT8 || dt == CD_DTYPE_INT8 || dt == CD_DTYPE_UINT16 || dt == CD_DTYPE_INT16 ||
           dt == CD_DTYPE_FLOAT16 || dt == CD_DTYPE_FLOAT32;
}

void cd_resample_options_init(cd_resample_options *o) {
    memset(o, 0, sizeof *o);
    o->interp = CD_INTERP_LINEAR;
}

/* The options (opts NULL: defaults) into *o, the grid and both affines checked; inv: the source's
 * inverse affine. */
static cd_status check_arguments(const cd_volume *src, const cd_grid *grid, const cd_resample_options *opts,
                                 cd_resample_options *o, double inv[3][4], cd_error *err) {
    cd_resample_options_init(o);
    if (opts) *o = *opts;
    if (o->interp != CD_INTERP_NEAREST && o->interp != CD_INTERP_LINEAR && o->interp != CD_INTERP_CUBIC)
        return cd_fail(err, CD_ERR_ARG, "cd_resample: interpolation order %d (must be 0, 1 or 3)", (int)o->interp);
    if (o->out_dtype != CD_DTYPE_INVALID && cd_dtype_size(o->out_dtype) == 0)
        return cd_fail(err, CD_ERR_ARG, "cd_resample: invalid output dtype %d", (int)o->out_dtype);
    if (o->threads < 0) return cd_fail(err, CD_ERR_ARG, "cd_resample: threads is %d (must be >= 0)", o->threads);
    for (int i = 0; i < 3; i++)
        if (grid->dims[i] < 1)
            return cd_fail(err, CD_ERR_ARG, "cd_resample: grid dim %d is %lld (must be >= 1)", i,
                           (long long)grid->dims[i]);
    if (!affine_finite(grid->affine)) return cd_fail(err, CD_ERR_ARG, "cd_resample: the grid's affine is not finite");
    if (!affine_finite(src->affine) || !invert_affine(src->affine, inv))
        return cd_fail(err, CD_ERR_ARG, "cd_resample: the source affine is singular or not finite");
    return CD_OK;
}

/* M = inv(A_src) * A_grid (output voxel -> source voxel), once, its entries snapped. */
static cd_status voxel_transform(const double inv[3][4], const cd_grid *grid, double m[3][4], cd_error *err) {
    for (int r = 0; r < 3; r++) {
        for (int c = 0; c < 4; c++) {
            double s = 0;
            for (int q = 0; q < 3; q++) s += inv[r][q] * grid->affine[q][c];
            m[r][c] = s;
        }
        m[r][3] += inv[r][3];
        for (int c = 0; c < 4; c++) {
            if (!isfinite(m[r][c]))
                return cd_fail(err, CD_ERR_ARG, "cd_resample: the voxel-to-voxel transform is not finite");
            m[r][c] = snap_entry(m[r][c]);
        }
    }
    return CD_OK;
}

/* Allocation cap: the output plus, for cubic, the coefficient copy (for float16, its float32 copy). */
static cd_status check_caps(const cd_volume *src, const cd_grid *grid, const cd_resample_options *o, cd_dtype odt,
                            cd_error *err) {
    uint64_t cap, max_vox;
    cd_status cst;
    if ((cst = cd_resolve_max_bytes(0, &cap, err)) != CD_OK ||
        (cst = cd_limit(CD_LIMIT_VOXELS, &max_vox, err)) != CD_OK)
        return cst;
    const double ovox = (double)grid->dims[0] * (double)grid->dims[1] * (double)grid->dims[2];
    if (ovox > (double)max_vox) {
        char c[160];
        return cd_fail(err, CD_ERR_LIMIT, "cd_resample: an output of %lld x %lld x %lld voxels is above %s",
                       (long long)grid->dims[0], (long long)grid->dims[1], (long long)grid->dims[2],
                       cd_limit_describe(CD_LIMIT_VOXELS, max_vox, c, sizeof c));
    }
    double obytes = (double)grid->dims[0] * (double)grid->dims[1] * (double)grid->dims[2] * (double)cd_dtype_size(odt);
    double cbytes = o->interp == CD_INTERP_CUBIC     ? (double)src->count * (float32_exact(src->dtype) ? 4.0 : 8.0)
                    : src->dtype == CD_DTYPE_FLOAT16 ? (double)src->count * 4.0
                                                     : 0.0;
    if (obytes + cbytes > (double)cap) {
        char b1[32], b2[160];
        return cd_fail(err, CD_ERR_LIMIT, "cd_resample: needs %s (output %lld x %lld x %lld %s), above %s",
                       cd_format_bytes((uint64_t)(obytes + cbytes), b1, sizeof b1), (long long)grid->dims[0],
                       (long long)grid->dims[1], (long long)grid->dims[2], cd_dtype_name(odt),
                       cd_limit_describe(CD_LIMIT_BYTES, cap, b2, sizeof b2));
    }
    return CD_OK;
}

/* The output volume on grid. Not zero-filled: the kernels write every voxel, and the first touch of
 * the pages then happens in the worker threads, in parallel. */
static cd_status alloc_output(const cd_grid *grid, cd_dtype odt, cd_volume **res, cd_error *err) {
    size_t nbytes = (size_t)grid->dims[0] * (size_t)grid->dims[1] * (size_t)grid->dims[2] * cd_dtype_size(odt);
    void *obuf = cd_buffer_alloc(nbytes);
    if (!obuf) return cd_fail(err, CD_ERR_NOMEM, "cd_resample: cannot allocate %zu bytes for the output", nbytes);
    cd_status st = cd_volume_wrap_buffer(obuf, nbytes, 0, grid->dims, odt, res, err);
    if (st != CD_OK) return st;
    memcpy((*res)->affine, grid->affine, sizeof(*res)->affine);
    for (int i = 0; i < 3; i++) (*res)->spacing[i] = column_norm(grid->affine, i);
    return CD_OK;
}

/* The job reading src's voxels into res. */
static void job_init(rjob *jb, const cd_volume *src, const cd_grid *grid, const cd_resample_options *o, cd_dtype odt,
                     cd_volume *res) {
    memcpy(jb->n, src->dims, sizeof jb->n);
    jb->sy = src->dims[0];
    jb->sz = src->dims[0] * src->dims[1];
    jb->interp = o->interp;
    jb->fill = o->fill;
    jb->out_dtype = odt;
    jb->out = res->data;
    memcpy(jb->on, grid->dims, sizeof jb->on);
    jb->data = src->data;
    jb->dtype = src->dtype;
    jb->scaled = src->scaled;
    jb->slope = src->slope;
    jb->inter = src->inter;
}

/* Cubic: the B-spline coefficients of src's physical values (scaling goes into them: the prefilter
 * and the spline act on physical values), in *tmp (tmp_bytes; the caller frees it). */
static cd_status spline_coefficients(const cd_volume *src, int threads, rjob *jb, void **tmp, size_t *tmp_bytes,
                                     cd_error *err) {
    bool single = float32_exact(src->dtype);
    *tmp_bytes = src->count * (single ? sizeof(float) : sizeof(double));
    *tmp = cd_buffer_alloc(*tmp_bytes);
    if (!*tmp)
        return cd_fail(err, CD_ERR_NOMEM, "cd_resample: cannot allocate %zu bytes of spline coefficients", *tmp_bytes);
    if (single)
        cd_volume_to_float32(src, *tmp);
    else
        cd_volume_to_float64(src, *tmp);
    pjob pj = {*tmp, single, {src->dims[0], src->dims[1], src->dims[2]}};
    cd_status st = parallel_for(threads, src->dims[2], sizeof(double) * (size_t)(src->dims[0] * src->dims[1]),
                                prefilter_xy, &pj, err);
    if (st == CD_OK && src->dims[2] > 1)
        st = parallel_for(threads, src->dims[1], sizeof(double) * (size_t)(src->dims[0] * src->dims[2]), prefilter_z,
                          &pj, err);
    jb->data = *tmp;
    jb->dtype = single ? CD_DTYPE_FLOAT32 : CD_DTYPE_FLOAT64;
    jb->scaled = false;
    return st;
}

/* What the kernels read, by case: the source's elements copied as they are (nearest into its own
 * dtype: the result keeps the source's scaling, and the fill is stored as the raw value that scales
 * to it), spline coefficients (cubic), a float32 copy (half floats: the kernels read native types
 * only), or the source itself. *tmp: a copy to free (tmp_bytes), or NULL. */
static cd_status prepare_source(const cd_volume *src, const cd_resample_options *o, cd_dtype odt, int threads,
                                cd_volume *res, rjob *jb, void **tmp, size_t *tmp_bytes, cd_error *err) {
    if (o->interp == CD_INTERP_NEAREST && odt == src->dtype) {
        jb->raw_copy = true;
        jb->esize = cd_dtype_size(odt);
        double raw = src->scaled ? (o->fill - src->inter) / src->slope : o->fill;
        store_row(&raw, 1, odt, jb->fill_elem);
        res->slope = src->slope;
        res->inter = src->inter;
        res->scaled = src->scaled;
        return CD_OK;
    }
    if (o->interp == CD_INTERP_CUBIC) return spline_coefficients(src, threads, jb, tmp, tmp_bytes, err);
    if (src->dtype != CD_DTYPE_FLOAT16) return CD_OK;
    *tmp_bytes = src->count * sizeof(float);
    *tmp = cd_buffer_alloc(*tmp_bytes);
    if (!*tmp) return cd_fail(err, CD_ERR_NOMEM, "cd_resample: cannot allocate %zu bytes", *tmp_bytes);
    cd_volume_to_float32(src, *tmp);
    jb->data = *tmp;
    jb->dtype = CD_DTYPE_FLOAT32;
    jb->scaled = false;
    return CD_OK;
}

cd_status cd_resample(const cd_volume *src, const cd_grid *grid, const cd_resample_options *opts, cd_volume **out,
                      cd_error *err) {
    if (!src || !grid || !out) return cd_fail(err, CD_ERR_ARG, "cd_resample: NULL argument");
    *out = NULL;
    cd_resample_options o;
    double inv[3][4];
    cd_status st = check_arguments(src, grid, opts, &o, inv, err);
    if (st != CD_OK) return st;
    rjob jb;
    memset(&jb, 0, sizeof jb);
    if ((st = voxel_transform(inv, grid, jb.m, err)) != CD_OK) return st;
    cd_dtype odt = o.out_dtype;
    if (odt == CD_DTYPE_INVALID) odt = o.interp == CD_INTERP_NEAREST ? src->dtype : CD_DTYPE_FLOAT32;
    if (isnan(o.fill) && odt < CD_DTYPE_FLOAT16)
        return cd_fail(err, CD_ERR_ARG, "cd_resample: a NaN fill needs a floating-point output dtype");
    if ((st = check_caps(src, grid, &o, odt, err)) != CD_OK) return st;
    int threads = resolve_threads(o.threads);
    cd_volume *res = NULL;
    if ((st = alloc_output(grid, odt, &res, err)) != CD_OK) return st;
    job_init(&jb, src, grid, &o, odt, res);
    void *tmp = NULL; /* converted source or spline coefficients */
    size_t tmp_bytes = 0;
    st = prepare_source(src, &o, odt, threads, res, &jb, &tmp, &tmp_bytes, err);
    if (st == CD_OK) st = parallel_for(threads, grid->dims[2], resample_scratch_bytes(&jb), resample_slice, &jb, err);
    cd_buffer_free(tmp, tmp_bytes);
    if (st != CD_OK) {
        cd_volume_destroy(res);
        return st;
    }
    *out = res;
    return CD_OK;
}

/* ---- internal: the pieces the Vulkan resampler shares (preprocess/gpu_kernels.c) ----------------------- */

cd_status cd_resample_voxel_map(const cd_volume *src, const cd_grid *grid, double m[3][4], cd_error *err) {
    double inv[3][4];
    if (!affine_finite(grid->affine)) return cd_fail(err, CD_ERR_ARG, "cd_resample: the grid's affine is not finite");
    if (!affine_finite(src->affine) || !invert_affine(src->affine, inv))
        return cd_fail(err, CD_ERR_ARG, "cd_resample: the source affine is singular or not finite");
    /* exactly cd_resample's M = inv(A_src) * A_grid, snapped */
    for (int r = 0; r < 3; r++) {
        for (int c = 0; c < 4; c++) {
            double s = 0;
            for (int q = 0; q < 3; q++) s += inv[r][q] * grid->affine[q][c];
            m[r][c] = s;
        }
        m[r][3] += inv[r][3];
        for (int c = 0; c < 4; c++) {
            if (!isfinite(m[r][c]))
                return cd_fail(err, CD_ERR_ARG, "cd_resample: the voxel-to-voxel transform is not finite");
            m[r][c] = snap_entry(m[r][c]);
        }
    }
    return CD_OK;
}

cd_status cd_resample_spline_f32(const cd_volume *src, int threads, float *coef, cd_error *err) {
    if (!float32_exact(src->dtype))
        return cd_fail(err, CD_ERR_ARG, "cd_resample_spline_f32: %s coefficients are float64",
                       cd_dtype_name(src->dtype));
    cd_volume_to_float32(src, coef);
    threads = resolve_threads(threads);
    pjob pj = {coef, true, {src->dims[0], src->dims[1], src->dims[2]}};
    cd_status st = parallel_for(threads, src->dims[2], sizeof(double) * (size_t)(src->dims[0] * src->dims[1]),
                                prefilter_xy, &pj, err);
    if (st == CD_OK && src->dims[2] > 1)
        st = parallel_for(threads, src->dims[1], sizeof(double) * (size_t)(src->dims[0] * src->dims[2]), prefilter_z,
                          &pj, err);
    return st;
}
