/* nnU-Net's resampling rules for preprocessing (see nnunet_resample.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "preprocess/nnunet_resample.h"

/* Binary masks (0 and one label): one linear pass of the label's indicator, kept where it exceeds 0.5
 * -- what one-hot + argmax gives, since inside the source p0 = 1 - p1 (ties go to 0). */
static cd_status mask_linear_binary(const cd_volume *mask, const cd_grid *grid, int threads, int label, cd_volume **out,
                                    cd_error *err) {
    const uint8_t *m = cd_volume_data_const(mask);
    size_t n = cd_volume_count(mask);
    cd_volume *ind;
    int64_t md[3];
    cd_volume_dims(mask, md);
    cd_status st = cd_volume_create(md, CD_DTYPE_FLOAT32, &ind, err);
    if (st != CD_OK) return st;
    double a[4][4];
    cd_volume_affine(mask, a);
    cd_volume_set_affine(ind, a);
    float *h = cd_volume_data(ind);
    for (size_t i = 0; i < n; i++) h[i] = (label && m[i] == label) ? 1.0f : 0.0f;
    cd_resample_options ro;
    cd_resample_options_init(&ro);
    ro.interp = CD_INTERP_LINEAR;
    ro.threads = threads;
    cd_volume *res;
    st = cd_resample(ind, grid, &ro, &res, err);
    cd_volume_destroy(ind);
    if (st != CD_OK) return st;
    if ((st = cd_volume_create(grid->dims, CD_DTYPE_UINT8, out, err)) != CD_OK) {
        cd_volume_destroy(res);
        return st;
    }
    cd_volume_set_affine(*out, grid->affine);
    const float *p = cd_volume_data_const(res);
    uint8_t *o = cd_volume_data(*out);
    for (size_t i = 0, on = cd_volume_count(*out); i < on; i++) o[i] = p[i] > 0.5f ? (uint8_t)label : 0;
    cd_volume_destroy(res);
    return CD_OK;
}

/* Several labels: one linear pass per label's indicator, each voxel taking the label of the largest
 * (strictly: ties keep the lower label, as argmax). */
static cd_status mask_linear_labels(const cd_volume *mask, const cd_grid *grid, int threads, const bool present[256],
                                    cd_volume **out, cd_error *err) {
    const uint8_t *m = cd_volume_data_const(mask);
    size_t n = cd_volume_count(mask);
    cd_status st = cd_volume_create(grid->dims, CD_DTYPE_UINT8, out, err);
    if (st != CD_OK) return st;
    cd_volume_set_affine(*out, grid->affine);
    size_t on = cd_volume_count(*out);
    float *best = malloc(on * sizeof *best);
    cd_volume *onehot = NULL;
    int64_t md[3];
    cd_volume_dims(mask, md);
    if (!best || (st = cd_volume_create(md, CD_DTYPE_FLOAT32, &onehot, err)) != CD_OK) {
        free(best);
        cd_volume_destroy(*out);
        return st != CD_OK ? st : cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    double a[4][4];
    cd_volume_affine(mask, a);
    cd_volume_set_affine(onehot, a);
    for (size_t i = 0; i < on; i++) best[i] = -1.0f;
    uint8_t *o = cd_volume_data(*out);
    memset(o, 0, on);
    cd_resample_options ro;
    cd_resample_options_init(&ro);
    ro.interp = CD_INTERP_LINEAR;
    ro.threads = threads;
    for (int label = 0; label < 256 && st == CD_OK; label++) {
        if (!present[label]) continue;
        float *h = cd_volume_data(onehot);
        for (size_t i = 0; i < n; i++) h[i] = m[i] == label ? 1.0f : 0.0f;
        cd_volume *res;
        if ((st = cd_resample(onehot, grid, &ro, &res, err)) != CD_OK) break;
        const float *p = cd_volume_data_const(res);
        for (size_t i = 0; i < on; i++)
            if (p[i] > best[i]) { /* strict: ties keep the lower label, as argmax */
                best[i] = p[i];
                o[i] = (uint8_t)label;
            }
        cd_volume_destroy(res);
    }
    free(best);
    cd_volume_destroy(onehot);
    if (st != CD_OK) cd_volume_destroy(*out);
    return st;
}

cd_status cd_pp_mask_linear(const cd_volume *mask, const cd_grid *grid, int threads, cd_volume **out, cd_error *err) {
    const uint8_t *m = cd_volume_data_const(mask);
    size_t n = cd_volume_count(mask);
    bool present[256] = {false};
    for (size_t i = 0; i < n; i++) present[m[i]] = true;
    int nlabels = 0;
    for (int v = 0; v < 256; v++) nlabels += present[v];
    if (!(nlabels <= 2 && (present[0] || nlabels == 1)))
        return mask_linear_labels(mask, grid, threads, present, out, err);
    int label = 0;
    for (int v = 1; v < 256; v++)
        if (present[v]) label = v;
    return mask_linear_binary(mask, grid, threads, label, out, err);
}

/* ---- nnU-Net's separate resampling of the low-resolution axis ---- */

static double col_norm(const double a[4][4], int j) {
    return sqrt(a[0][j] * a[0][j] + a[1][j] * a[1][j] + a[2][j] * a[2][j]);
}

static double det3(const double c0[3], const double c1[3], const double c2[3]) {
    return c0[0] * (c1[1] * c2[2] - c1[2] * c2[1]) - c1[0] * (c0[1] * c2[2] - c0[2] * c2[1]) +
           c2[0] * (c0[1] * c1[2] - c0[2] * c1[1]);
}

/* Component `axis` of inv(A3) * w (Cramer's rule): the source voxel offset along that axis. */
static double voxel_component(const double a[4][4], int axis, const double w[3]) {
    double c[3][3];
    for (int j = 0; j < 3; j++)
        for (int r = 0; r < 3; r++) c[j][r] = j == axis ? w[r] : a[r][j];
    return det3(c[0], c[1], c[2]) / det3((double[3]){a[0][0], a[1][0], a[2][0]}, (double[3]){a[0][1], a[1][1], a[2][1]},
                                         (double[3]){a[0][2], a[1][2], a[2][2]});
}

/* nnU-Net's determine_do_sep_z_and_axis: the axis to resample on its own, or -1. Ties for the largest
 * spacing (two or three axes) mean no separate axis, as there. */
static int lowres_axis(const double sp[3]) {
    double m = fmax(sp[0], fmax(sp[1], sp[2]));
    int axis = -1, count = 0;
    for (int a = 0; a < 3; a++)
        if (sp[a] == m) axis = a, count++;
    return count == 1 ? axis : -1;
}

static bool anisotropic(const double sp[3], double threshold) {
    return fmax(sp[0], fmax(sp[1], sp[2])) / fmin(sp[0], fmin(sp[1], sp[2])) > threshold;
}

int cd_pp_separate_axis(const cd_recipe *r, const cd_volume *src, const cd_grid *grid) {
    if (r->separate_z == CD_SEPARATE_Z_OFF) return -1;
    double a[4][4], ss[3], ts[3];
    cd_volume_affine(src, a);
    for (int i = 0; i < 3; i++) {
        ss[i] = col_norm(a, i);
        ts[i] = col_norm(grid->affine, i);
    }
    if (r->separate_z == CD_SEPARATE_Z_ON || anisotropic(ss, r->anisotropy_threshold)) return lowres_axis(ss);
    return anisotropic(ts, r->anisotropy_threshold) ? lowres_axis(ts) : -1;
}

/* Copies plane k across `axis` between a volume (dims d) and a dense (d[u], d[v]) plane, u < v the
 * other axes. to_plane: volume -> plane, else plane -> volume. */
static void copy_plane(uint8_t *vol, const int64_t d[3], int axis, int64_t k, uint8_t *plane, size_t es,
                       bool to_plane) {
    const int u = axis == 0 ? 1 : 0, v = axis == 2 ? 1 : 2;
    const int64_t st[3] = {1, d[0], d[0] * d[1]};
    for (int64_t q = 0; q < d[v]; q++)
        for (int64_t p = 0; p < d[u]; p++) {
            uint8_t *e = vol + (size_t)(p * st[u] + q * st[v] + k * st[axis]) * es;
            uint8_t *f = plane + (size_t)(p + d[u] * q) * es;
            memcpy(to_plane ? f : e, to_plane ? e : f, es);
        }
}

typedef cd_status (*slice_resample_fn)(const cd_recipe *r, const cd_volume *slice, const cd_grid *grid, int threads,
                                       cd_volume **out, cd_error *err);

/* nnU-Net resizes each slice with skimage.transform.resize, whose clip=True default clamps the result
 * to the slice's value range (cubic overshoot); the fill 0 of positions outside the slice is kept when
 * 0 is outside that range, as skimage keeps cval in mode 'constant'. */
static cd_status slice_image(const cd_recipe *r, const cd_volume *slice, const cd_grid *grid, int threads,
                             cd_volume **out, cd_error *err) {
    cd_resample_options ro;
    cd_resample_options_init(&ro);
    ro.interp = (cd_interp)r->image_order;
    ro.out_dtype = CD_DTYPE_FLOAT32;
    ro.threads = threads;
    cd_status st = cd_resample(slice, grid, &ro, out, err);
    if (st != CD_OK) return st;
    const size_t n = cd_volume_count(slice), on = cd_volume_count(*out);
    float *v = malloc(n * sizeof *v);
    if (!v) {
        cd_volume_destroy(*out);
        *out = NULL;
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    cd_volume_to_float32(slice, v);
    float lo = v[0], hi = v[0];
    for (size_t i = 1; i < n; i++) {
        lo = fminf(lo, v[i]);
        hi = fmaxf(hi, v[i]);
    }
    free(v);
    const bool keep_fill = !(lo <= 0.0f && 0.0f <= hi);
    float *o = cd_volume_data(*out);
    for (size_t i = 0; i < on; i++)
        if (!(keep_fill && o[i] == 0.0f)) o[i] = fminf(fmaxf(o[i], lo), hi);
    return CD_OK;
}

static cd_status slice_mask(const cd_recipe *r, const cd_volume *slice, const cd_grid *grid, int threads,
                            cd_volume **out, cd_error *err) {
    if (r->mask_order == 1) return cd_pp_mask_linear(slice, grid, threads, out, err);
    cd_resample_options ro;
    cd_resample_options_init(&ro);
    ro.interp = CD_INTERP_NEAREST;
    ro.out_dtype = CD_DTYPE_UINT8;
    ro.threads = threads;
    return cd_resample(slice, grid, &ro, out, err);
}

/* Where a separate-axis resampling reads: grid position K along the axis is source slice coordinate
 * c0 + K * q. */
typedef struct sep_geom {
    double A[4][4]; /* the source's affine */
    int axis, u, v; /* the separate axis and the other two, u < v */
    double q, c0;
} sep_geom;

/* The geometry of resampling src onto grid with `axis` apart; false when the grid's in-plane steps
 * would move across the source's slices (the grid's axes are not parallel to the source's). */
static bool separate_geometry(const cd_volume *src, const cd_grid *grid, int axis, sep_geom *g) {
    const double(*G)[4] = grid->affine;
    cd_volume_affine(src, g->A);
    g->axis = axis;
    g->u = axis == 0 ? 1 : 0;
    g->v = axis == 2 ? 1 : 2;
    double gu[3], gv[3], ga[3], g0[3];
    for (int i = 0; i < 3; i++) {
        gu[i] = G[i][g->u], gv[i] = G[i][g->v], ga[i] = G[i][axis];
        g0[i] = G[i][3] - g->A[i][3];
    }
    g->q = voxel_component(g->A, axis, ga);
    g->c0 = voxel_component(g->A, axis, g0);
    return fabs(voxel_component(g->A, axis, gu)) < 1e-9 && fabs(voxel_component(g->A, axis, gv)) < 1e-9 && g->q > 0 &&
           isfinite(g->c0);
}

/* Every source slice across the axis resampled in 2D onto the grid's in-plane positions (fn), into
 * inter (dims id: the grid's in-plane dims, the source's along the axis). The slice's affine: the
 * source's in-plane columns and its axis column, origin on slice k. The slice grid: the grid's
 * in-plane columns, origin where the grid's line through its origin along the axis meets slice k (so
 * in-plane positions are the grid's, for every k). */
static cd_status resample_slices(const cd_recipe *r, const cd_volume *src, const cd_grid *grid, const sep_geom *g,
                                 int threads, slice_resample_fn fn, cd_volume *inter, cd_error *err) {
    const double(*G)[4] = grid->affine, (*A)[4] = g->A;
    const int axis = g->axis, u = g->u, v = g->v;
    int64_t sd[3], id[3];
    cd_volume_dims(src, sd);
    cd_volume_dims(inter, id);
    const cd_dtype sdt = cd_volume_dtype(src);
    const size_t ses = cd_dtype_size(sdt), oes = cd_dtype_size(cd_volume_dtype(inter));
    cd_volume *slice = NULL, *res = NULL;
    const int64_t slice_dims[3] = {sd[u], sd[v], 1};
    cd_status st = cd_volume_create(slice_dims, sdt, &slice, err);
    double sa[4][4] = {{0}}, ga4[4][4] = {{0}};
    sa[3][3] = ga4[3][3] = 1.0;
    for (int i = 0; i < 3; i++) {
        sa[i][0] = A[i][u], sa[i][1] = A[i][v], sa[i][2] = A[i][axis];
        ga4[i][0] = G[i][u], ga4[i][1] = G[i][v], ga4[i][2] = A[i][axis];
    }
    for (int64_t k = 0; k < sd[axis] && st == CD_OK; k++) {
        for (int i = 0; i < 3; i++) {
            sa[i][3] = A[i][3] + (double)k * A[i][axis];
            ga4[i][3] = G[i][3] + ((double)k - g->c0) / g->q * G[i][axis];
        }
        copy_plane((uint8_t *)cd_volume_data_const(src), sd, axis, k, cd_volume_data(slice), ses, true);
        cd_volume_set_affine(slice, sa);
        cd_grid sg = {{grid->dims[u], grid->dims[v], 1}, {{0}}};
        memcpy(sg.affine, ga4, sizeof ga4);
        if ((st = fn(r, slice, &sg, threads, &res, err)) != CD_OK) break;
        copy_plane(cd_volume_data(inter), id, axis, k, cd_volume_data(res), oes, false);
        cd_volume_destroy(res);
        res = NULL;
    }
    cd_volume_destroy(slice);
    return st;
}

/* The grid's planes interpolated from inter's along the axis (order_z 0 or 1 on float32, 0 on uint8),
 * the position clamped into the source's slice range (map_coordinates mode 'nearest'). */
static void interpolate_axis(const cd_volume *inter, const sep_geom *g, int order_z, cd_volume *out) {
    const int axis = g->axis, u = g->u, v = g->v;
    int64_t id[3], od[3];
    cd_volume_dims(inter, id);
    cd_volume_dims(out, od);
    const int64_t n = id[axis];
    const int64_t ist[3] = {1, id[0], id[0] * id[1]}, ost[3] = {1, od[0], od[0] * od[1]};
    const bool u8 = cd_volume_dtype(out) == CD_DTYPE_UINT8;
    const uint8_t *ib = cd_volume_data_const(inter);
    uint8_t *ob = cd_volume_data(out);
    for (int64_t K = 0; K < od[axis]; K++) {
        double c = g->c0 + (double)K * g->q;
        c = c < 0 ? 0 : c > (double)(n - 1) ? (double)(n - 1) : c;
        int64_t f = (int64_t)floor(c + 0.5); /* scipy's order 0 */
        int64_t lo = (int64_t)c < n - 1 ? (int64_t)c : (n > 1 ? n - 2 : 0);
        double w = n > 1 ? c - (double)lo : 0.0;
        for (int64_t qq = 0; qq < od[v]; qq++)
            for (int64_t p = 0; p < od[u]; p++) {
                const int64_t io = p * ist[u] + qq * ist[v], oo = p * ost[u] + qq * ost[v] + K * ost[axis];
                if (u8)
                    ob[oo] = ib[io + f * ist[axis]];
                else if (order_z == 0)
                    ((float *)ob)[oo] = ((const float *)ib)[io + f * ist[axis]];
                else {
                    const float *pl = (const float *)ib + io + lo * ist[axis];
                    double b = n > 1 ? (double)pl[ist[axis]] : (double)pl[0];
                    /* a slice of weight exactly 0 is not read: 0 * NaN would be NaN */
                    ((float *)ob)[oo] = (float)(w == 0.0   ? (double)pl[0]
                                                : w == 1.0 ? b
                                                           : (1.0 - w) * (double)pl[0] + w * b);
                }
            }
    }
}

/* nnU-Net's resample_data_or_seg with do_separate_z, in world space: every source slice across `axis`
 * is resampled in 2D onto the grid's in-plane positions (image or mask kernels), then the grid's
 * planes are interpolated from those along the axis (order_z for images, 0 for masks). The grid's
 * axes must be parallel to the source's (true of the spacing and shape grids, which keep the axis
 * directions). *done is false (and nothing happens) when they are not. */
cd_status cd_pp_resample_separate(const cd_recipe *r, const cd_volume *src, const cd_grid *grid, int axis, int threads,
                                  bool mask, cd_volume **out, bool *done, cd_error *err) {
    *done = false;
    sep_geom g;
    if (!separate_geometry(src, grid, axis, &g)) return CD_OK;
    *done = true;
    const slice_resample_fn fn = mask ? slice_mask : slice_image;
    int64_t sd[3], id[3];
    cd_volume_dims(src, sd);
    memcpy(id, grid->dims, sizeof id);
    id[axis] = sd[axis];
    const cd_dtype odt = mask ? CD_DTYPE_UINT8 : CD_DTYPE_FLOAT32;
    /* The intermediate and the result, against the allocation cap (each slice is checked by cd_resample). */
    uint64_t cap;
    cd_status st = cd_resolve_max_bytes(0, &cap, err);
    if (st != CD_OK) return st;
    const double need = ((double)id[0] * (double)id[1] * (double)id[2] +
                         (double)grid->dims[0] * (double)grid->dims[1] * (double)grid->dims[2]) *
                        (double)cd_dtype_size(odt);
    if (need > (double)cap)
        return cd_fail(err, CD_ERR_LIMIT, "resampling with a separate axis %d needs %.0f bytes, above the cap of %llu",
                       axis, need, (unsigned long long)cap);
    cd_volume *inter = NULL;
    st = cd_volume_create(id, odt, &inter, err);
    if (st == CD_OK) st = resample_slices(r, src, grid, &g, threads, fn, inter, err);
    if (st == CD_OK && (st = cd_volume_create(grid->dims, odt, out, err)) == CD_OK) {
        cd_volume_set_affine(*out, grid->affine);
        interpolate_axis(inter, &g, mask ? 0 : r->order_z, *out);
    }
    cd_volume_destroy(inter);
    return st;
}
