/* Applying a recipe to one image and mask: the deterministic preprocessing done at conversion. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cirrdata/orient.h"
#include "cirrdata/preprocess.h"
#include "cirrdata/resample.h"
#include "core/internal.h"
#include "preprocess/image_view.h"
#include "preprocess/nonfinite.h"
#include "preprocess/preprocess_impl.h"

/* Bytes of a sample's image and mask buffers (cd_buffer_alloc: big ones are 2 MiB-aligned huge-page
 * mappings, which take 1/512 of the page faults of malloc'd memory on first touch). */
static size_t sample_voxels(const cd_sample *s) { return (size_t)s->shape[0] * s->shape[1] * s->shape[2]; }

void cd_sample_destroy(cd_sample *s) {
    if (!s) return;
    cd_buffer_free(s->image, sample_voxels(s) * s->channels * cd_dtype_size(s->dtype));
    cd_buffer_free(s->mask, sample_voxels(s));
    free(s);
}

/* ---- helpers ---- */

static bool same_grid(const cd_volume *a, const cd_volume *b) {
    int64_t da[3], db[3];
    cd_volume_dims(a, da);
    cd_volume_dims(b, db);
    if (memcmp(da, db, sizeof da)) return false;
    double aa[4][4], ab[4][4];
    cd_volume_affine(a, aa);
    cd_volume_affine(b, ab);
    /* Masks are often saved with float32-rounded or slightly different xforms: 1e-3 mm is the same grid. */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            if (fabs(aa[i][j] - ab[i][j]) > 1e-3 * fmax(1.0, fabs(aa[i][j]))) return false;
    return true;
}

static double raw_max(const cd_volume *v) {
    size_t n = cd_volume_count(v);
    double m = -INFINITY;
    switch (cd_volume_dtype(v)) {
    case CD_DTYPE_UINT16: {
        const uint16_t *d = cd_volume_data_const(v);
        for (size_t i = 0; i < n; i++) m = d[i] > m ? d[i] : m;
        break;
    }
    default: break;
    }
    return m;
}

cd_dtype cd_recipe_output_dtype(const cd_recipe *r, const cd_volume *image) {
    if (r->dtype != CD_DTYPE_INVALID) return r->dtype;
    if (r->resample != CD_RESAMPLE_NONE || r->normalize != CD_NORM_NONE || cd_volume_has_scaling(image))
        return CD_DTYPE_FLOAT32;
    switch (cd_volume_dtype(image)) {
    case CD_DTYPE_UINT8: return CD_DTYPE_UINT8;
    case CD_DTYPE_INT8:
    case CD_DTYPE_INT16: return CD_DTYPE_INT16;
    case CD_DTYPE_UINT16: return raw_max(image) <= 32767 ? CD_DTYPE_INT16 : CD_DTYPE_FLOAT32;
    default: return CD_DTYPE_FLOAT32;
    }
}

/* Physical float32 values of a volume (scaling applied). */
static cd_status to_float_volume(const cd_volume *v, cd_volume **out, cd_error *err) {
    int64_t d[3];
    cd_volume_dims(v, d);
    cd_status st = cd_volume_create(d, CD_DTYPE_FLOAT32, out, err);
    if (st != CD_OK) return st;
    cd_volume_to_float32(v, cd_volume_data(*out));
    double a[4][4], sp[3];
    cd_volume_affine(v, a);
    cd_volume_spacing(v, sp);
    cd_volume_set_affine(*out, a);
    cd_volume_set_spacing(*out, sp);
    return CD_OK;
}

/* Mask resampling with linear interpolation per label (one-hot) and argmax, as nnU-Net does. */
static cd_status resample_mask_linear(const cd_volume *mask, const cd_grid *grid, int threads, cd_volume **out,
                                      cd_error *err) {
    const uint8_t *m = cd_volume_data_const(mask);
    size_t n = cd_volume_count(mask);
    bool present[256] = {false};
    for (size_t i = 0; i < n; i++) present[m[i]] = true;
    int nlabels = 0;
    for (int v = 0; v < 256; v++) nlabels += present[v];
    if (nlabels <= 2 && (present[0] || nlabels == 1)) {
        /* Binary (0 and one label): one linear pass of the label's indicator, kept where it exceeds
         * 0.5 -- what one-hot + argmax gives, since inside the source p0 = 1 - p1 (ties go to 0). */
        int label = 0;
        for (int v = 1; v < 256; v++)
            if (present[v]) label = v;
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
        cd_resample_options ro = CD_RESAMPLE_OPTIONS_INIT;
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
    cd_resample_options ro = CD_RESAMPLE_OPTIONS_INIT;
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

/* ---- nnU-Net's separate resampling of the low-resolution axis ---- */

static double col_norm(const double a[4][4], int j) { return sqrt(a[0][j] * a[0][j] + a[1][j] * a[1][j] + a[2][j] * a[2][j]); }

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

static int separate_axis(const cd_recipe *r, const cd_volume *src, const cd_grid *grid) {
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
static void copy_plane(uint8_t *vol, const int64_t d[3], int axis, int64_t k, uint8_t *plane, size_t es, bool to_plane) {
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
static cd_status slice_image(const cd_recipe *r, const cd_volume *slice, const cd_grid *grid, int threads, cd_volume **out,
                             cd_error *err) {
    cd_resample_options ro = CD_RESAMPLE_OPTIONS_INIT;
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

static cd_status slice_mask(const cd_recipe *r, const cd_volume *slice, const cd_grid *grid, int threads, cd_volume **out,
                            cd_error *err) {
    if (r->mask_order == 1) return resample_mask_linear(slice, grid, threads, out, err);
    cd_resample_options ro = CD_RESAMPLE_OPTIONS_INIT;
    ro.interp = CD_INTERP_NEAREST;
    ro.out_dtype = CD_DTYPE_UINT8;
    ro.threads = threads;
    return cd_resample(slice, grid, &ro, out, err);
}

/* nnU-Net's resample_data_or_seg with do_separate_z, in world space: every source slice across `axis`
 * is resampled in 2D onto the grid's in-plane positions (fn: image or mask kernels), then the grid's
 * planes are interpolated from those along the axis (order_z 0 or 1 on float32, 0 on uint8), the
 * position clamped into the source's slice range (map_coordinates mode 'nearest'). The grid's axes must
 * be parallel to the source's (true of the spacing and shape grids, which keep the axis directions).
 * *done is false (and nothing happens) when they are not. */
static cd_status resample_separate(const cd_recipe *r, const cd_volume *src, const cd_grid *grid, int axis, int threads,
                                   slice_resample_fn fn, int order_z, cd_volume **out, bool *done, cd_error *err) {
    *done = false;
    double A[4][4];
    const double (*G)[4] = grid->affine;
    cd_volume_affine(src, A);
    const int u = axis == 0 ? 1 : 0, v = axis == 2 ? 1 : 2;
    double gu[3], gv[3], ga[3], g0[3];
    for (int i = 0; i < 3; i++) {
        gu[i] = G[i][u], gv[i] = G[i][v], ga[i] = G[i][axis];
        g0[i] = G[i][3] - A[i][3];
    }
    /* Grid position K along the axis is source slice coordinate c0 + K * q; in-plane steps must not move
     * across slices. */
    const double q = voxel_component(A, axis, ga), c0 = voxel_component(A, axis, g0);
    if (!(fabs(voxel_component(A, axis, gu)) < 1e-9 && fabs(voxel_component(A, axis, gv)) < 1e-9 && q > 0 && isfinite(c0)))
        return CD_OK;
    *done = true;
    int64_t sd[3], id[3];
    cd_volume_dims(src, sd);
    memcpy(id, grid->dims, sizeof id);
    id[axis] = sd[axis];
    const cd_dtype sdt = cd_volume_dtype(src), odt = fn == slice_mask ? CD_DTYPE_UINT8 : CD_DTYPE_FLOAT32;
    const size_t ses = cd_dtype_size(sdt), oes = cd_dtype_size(odt);
    /* The intermediate and the result, against the allocation cap (each slice is checked by cd_resample). */
    uint64_t cap;
    cd_status st = cd_resolve_max_bytes(0, &cap, err);
    if (st != CD_OK) return st;
    const double need = ((double)id[0] * (double)id[1] * (double)id[2] +
                         (double)grid->dims[0] * (double)grid->dims[1] * (double)grid->dims[2]) * (double)oes;
    if (need > (double)cap)
        return cd_fail(err, CD_ERR_LIMIT, "resampling with a separate axis %d needs %.0f bytes, above the cap of %llu", axis,
                       need, (unsigned long long)cap);
    cd_volume *inter = NULL, *slice = NULL, *res = NULL;
    st = cd_volume_create(id, odt, &inter, err);
    const int64_t slice_dims[3] = {sd[u], sd[v], 1};
    if (st == CD_OK) st = cd_volume_create(slice_dims, sdt, &slice, err);
    /* The slice's affine: the source's in-plane columns and its axis column, origin on slice k. The
     * slice grid: the grid's in-plane columns, origin where the grid's line through its origin along the
     * axis meets slice k (so in-plane positions are the grid's, for every k). */
    double sa[4][4] = {{0}}, ga4[4][4] = {{0}};
    sa[3][3] = ga4[3][3] = 1.0;
    for (int i = 0; i < 3; i++) {
        sa[i][0] = A[i][u], sa[i][1] = A[i][v], sa[i][2] = A[i][axis];
        ga4[i][0] = G[i][u], ga4[i][1] = G[i][v], ga4[i][2] = A[i][axis];
    }
    for (int64_t k = 0; k < sd[axis] && st == CD_OK; k++) {
        for (int i = 0; i < 3; i++) {
            sa[i][3] = A[i][3] + (double)k * A[i][axis];
            ga4[i][3] = G[i][3] + ((double)k - c0) / q * G[i][axis];
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
    if (st == CD_OK && (st = cd_volume_create(grid->dims, odt, out, err)) == CD_OK) {
        cd_volume_set_affine(*out, grid->affine);
        const int64_t *od = grid->dims, n = sd[axis];
        const int64_t ist[3] = {1, id[0], id[0] * id[1]}, ost[3] = {1, od[0], od[0] * od[1]};
        const uint8_t *ib = cd_volume_data_const(inter);
        uint8_t *ob = cd_volume_data(*out);
        for (int64_t K = 0; K < od[axis]; K++) {
            double c = c0 + (double)K * q;
            c = c < 0 ? 0 : c > (double)(n - 1) ? (double)(n - 1) : c;
            int64_t f = (int64_t)floor(c + 0.5); /* scipy's order 0 */
            int64_t lo = (int64_t)c < n - 1 ? (int64_t)c : (n > 1 ? n - 2 : 0);
            double w = n > 1 ? c - (double)lo : 0.0;
            for (int64_t qq = 0; qq < od[v]; qq++)
                for (int64_t p = 0; p < od[u]; p++) {
                    const int64_t io = p * ist[u] + qq * ist[v], oo = p * ost[u] + qq * ost[v] + K * ost[axis];
                    if (odt == CD_DTYPE_UINT8)
                        ob[oo] = ib[io + f * ist[axis]];
                    else if (order_z == 0)
                        ((float *)ob)[oo] = ((const float *)ib)[io + f * ist[axis]];
                    else {
                        const float *pl = (const float *)ib + io + lo * ist[axis];
                        double b = n > 1 ? (double)pl[ist[axis]] : (double)pl[0];
                        /* a slice of weight exactly 0 is not read: 0 * NaN would be NaN */
                        ((float *)ob)[oo] = (float)(w == 0.0 ? (double)pl[0] : w == 1.0 ? b : (1.0 - w) * (double)pl[0] + w * b);
                    }
                }
        }
    }
    cd_volume_destroy(inter);
    return st;
}

static void bbox_of(const cd_volume *v, bool from_float, int64_t lo[3], int64_t hi[3], bool *found) {
    int64_t d[3];
    cd_volume_dims(v, d);
    *found = false;
    for (int a = 0; a < 3; a++) {
        lo[a] = d[a];
        hi[a] = 0;
    }
    const uint8_t *m = from_float ? NULL : cd_volume_data_const(v);
    const float *f = from_float ? cd_volume_data_const(v) : NULL;
    size_t i = 0;
    for (int64_t z = 0; z < d[2]; z++)
        for (int64_t y = 0; y < d[1]; y++)
            for (int64_t x = 0; x < d[0]; x++, i++) {
                if (from_float ? f[i] == 0.0f : m[i] == 0) continue;
                const int64_t p[3] = {x, y, z};
                for (int a = 0; a < 3; a++) {
                    if (p[a] < lo[a]) lo[a] = p[a];
                    if (p[a] + 1 > hi[a]) hi[a] = p[a] + 1;
                }
                *found = true;
            }
}

/* Copies the box [lo, hi) of a volume into a new one with the affine moved to the box origin. */
static cd_status crop_volume(const cd_volume *v, const int64_t lo[3], const int64_t hi[3], cd_volume **out, cd_error *err) {
    int64_t d[3], nd[3] = {hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]};
    cd_volume_dims(v, d);
    cd_status st = cd_volume_create(nd, cd_volume_dtype(v), out, err);
    if (st != CD_OK) return st;
    size_t es = cd_dtype_size(cd_volume_dtype(v));
    const uint8_t *s = cd_volume_data_const(v);
    uint8_t *o = cd_volume_data(*out);
    for (int64_t z = 0; z < nd[2]; z++)
        for (int64_t y = 0; y < nd[1]; y++) {
            size_t src = (size_t)(lo[0] + d[0] * (lo[1] + y + d[1] * (lo[2] + z)));
            memcpy(o + (size_t)(nd[0] * (y + nd[1] * z)) * es, s + src * es, (size_t)nd[0] * es);
        }
    double a[4][4], sp[3], slope, inter;
    cd_volume_affine(v, a);
    for (int r = 0; r < 3; r++) a[r][3] += a[r][0] * (double)lo[0] + a[r][1] * (double)lo[1] + a[r][2] * (double)lo[2];
    cd_volume_set_affine(*out, a);
    cd_volume_spacing(v, sp);
    cd_volume_set_spacing(*out, sp);
    cd_volume_scaling(v, &slope, &inter);
    cd_volume_set_scaling(*out, slope, inter);
    return CD_OK;
}

static void normalize(const cd_recipe *r, float *x, size_t n, const uint8_t *mask) {
    if (r->normalize == CD_NORM_NONE) goto then;
    /* The region's voxels define the statistics; an empty region falls back to the whole volume. */
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += r->region == CD_REGION_VOLUME || (r->region == CD_REGION_MASK ? (mask && mask[i]) : x[i] != 0.0f);
    bool all = count == 0 || r->region == CD_REGION_VOLUME;
    if (all) count = n;
#define IN_REGION(i) (all || (r->region == CD_REGION_MASK ? (mask && mask[i]) : x[i] != 0.0f))
    if (r->normalize == CD_NORM_ZSCORE) {
        double sum = 0, sumsq = 0;
        for (size_t i = 0; i < n; i++)
            if (IN_REGION(i)) sum += x[i];
        double mean = sum / (double)count;
        for (size_t i = 0; i < n; i++)
            if (IN_REGION(i)) sumsq += ((double)x[i] - mean) * ((double)x[i] - mean);
        double sd = sqrt(sumsq / (double)count);
        if (sd < 1e-8) sd = 1e-8;
        for (size_t i = 0; i < n; i++) x[i] = (float)(((double)x[i] - mean) / sd);
    } else {
        float *v = malloc(count * sizeof *v);
        if (!v) return; /* cannot happen in practice: checked by the caller's allocation budget */
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (IN_REGION(i)) v[k++] = x[i];
        double lo = cd_percentile_f32(v, count, r->percentiles[0]);
        double hi = cd_percentile_f32(v, count, r->percentiles[1]);
        free(v);
        double r0 = r->range[0], r1 = r->range[1], scale = hi > lo ? (r1 - r0) / (hi - lo) : 0.0;
        double cmin = fmin(r0, r1), cmax = fmax(r0, r1);
        for (size_t i = 0; i < n; i++) {
            double y = r0 + ((double)x[i] - lo) * scale;
            x[i] = (float)(y < cmin ? cmin : y > cmax ? cmax : y);
        }
    }
#undef IN_REGION
then:
    if (r->has_then)
        for (size_t i = 0; i < n; i++) x[i] = (float)(((double)x[i] - r->then_mean) / r->then_std);
}

/* Stores a volume in C order (X, Y, Z; z fastest), casting to dtype. The source is read through signed
 * element steps per stored axis, so a reorientation (axis permutation and flips) is folded into the
 * copy instead of being a volume copy of its own. The axis with a unit source step (the source's x) is
 * walked in blocks of one cache line: every source line is read once, and the block's destination rows
 * (z fastest) fill line by line as the other two axes advance. */
typedef struct store_src {
    const void *data;
    cd_dtype dtype;
    int64_t d[3];    /* stored dims */
    int64_t step[3]; /* source elements per step along stored axis a (signed) */
    int64_t base;    /* source element of stored voxel (0, 0, 0) */
    bool scaled;     /* stored as float32 with the source's NIfTI scaling: (float)(v * slope + inter) in double */
    double slope, inter;
} store_src;

/* When the unit-step axis f is not the stored z (the usual case: x), the values of an f-block x z-block
 * tile are transposed in a small L1-resident buffer and written out as whole z-runs; otherwise (source x
 * became the stored z) the plain loop already writes contiguously. */
#define STORE_TILE_Z 32
#define STORE_LOOP(SRC_T, DST_T, CONVERT)                                                          \
    do {                                                                                           \
        const SRC_T *s = (const SRC_T *)src->data + src->base;                                     \
        DST_T *o = (DST_T *)dst;                                                                   \
        const int64_t B = 64 / (int64_t)sizeof(SRC_T), tf = t[f];                                  \
        for (int64_t f0 = 0; f0 < d[f]; f0 += B) {                                                 \
            const int64_t f1 = f0 + B < d[f] ? f0 + B : d[f];                                      \
            if (ost[b] == 1) {                                                                     \
                DST_T tile[64][STORE_TILE_Z];                                                      \
                for (int64_t pa = 0; pa < d[a]; pa++)                                              \
                    for (int64_t b0 = 0; b0 < d[b]; b0 += STORE_TILE_Z) {                          \
                        const int64_t b1 = b0 + STORE_TILE_Z < d[b] ? b0 + STORE_TILE_Z : d[b];    \
                        for (int64_t pb = b0; pb < b1; pb++) {                                     \
                            const SRC_T *row = s + pa * t[a] + pb * t[b];                          \
                            /* The next tile's source lines (every row a different line: the      \
                             * hardware prefetchers do not follow this pattern). */                \
                            if (pa + 1 < d[a]) {                                                   \
                                __builtin_prefetch(row + t[a] + f0 * tf);                          \
                                __builtin_prefetch(row + t[a] + (f1 - 1) * tf);                    \
                            }                                                                      \
                            for (int64_t pf = f0; pf < f1; pf++) {                                 \
                                SRC_T v = row[pf * tf];                                            \
                                tile[pf - f0][pb - b0] = CONVERT;                                  \
                            }                                                                      \
                        }                                                                          \
                        for (int64_t pf = f0; pf < f1; pf++) {                                     \
                            DST_T *orow = o + pa * ost[a] + b0 + pf * ost[f];                      \
                            for (int64_t k = 0; k < b1 - b0; k++) orow[k] = tile[pf - f0][k];      \
                        }                                                                          \
                    }                                                                              \
                continue;                                                                          \
            }                                                                                      \
            for (int64_t pa = 0; pa < d[a]; pa++)                                                  \
                for (int64_t pb = 0; pb < d[b]; pb++) {                                            \
                    const SRC_T *row = s + pa * t[a] + pb * t[b];                                  \
                    DST_T *orow = o + pa * ost[a] + pb * ost[b];                                   \
                    for (int64_t pf = f0; pf < f1; pf++) {                                         \
                        SRC_T v = row[pf * tf];                                                    \
                        orow[pf * ost[f]] = CONVERT;                                               \
                    }                                                                              \
                }                                                                                  \
        }                                                                                          \
    } while (0)

static int16_t round_i16(double v) { return (int16_t)(v < -32768 ? -32768 : v > 32767 ? 32767 : lrint(v)); }
static uint8_t round_u8(double v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lrint(v)); }

static void store_c_order_src(const store_src *src, cd_dtype out_dtype, void *dst) {
    const int64_t *d = src->d, *t = src->step;
    const int64_t ost[3] = {d[1] * d[2], d[2], 1};
    int f = 0;
    for (int i = 0; i < 3; i++)
        if (t[i] == 1 || t[i] == -1) {
            f = i;
            break;
        }
    const int a = f == 0 ? 1 : 0, b = f == 2 ? 1 : 2;
    if (out_dtype == CD_DTYPE_FLOAT32 && (src->scaled || src->dtype != CD_DTYPE_FLOAT32)) {
        /* Physical values, as cd_volume_to_float32 computes them. */
        const double slope = src->scaled ? src->slope : 1.0, inter = src->scaled ? src->inter : 0.0;
        switch (src->dtype) {
        case CD_DTYPE_FLOAT32: STORE_LOOP(float, float, (float)((double)v * slope + inter)); break;
        case CD_DTYPE_UINT8: STORE_LOOP(uint8_t, float, (float)((double)v * slope + inter)); break;
        case CD_DTYPE_INT8: STORE_LOOP(int8_t, float, (float)((double)v * slope + inter)); break;
        case CD_DTYPE_INT16: STORE_LOOP(int16_t, float, (float)((double)v * slope + inter)); break;
        case CD_DTYPE_UINT16: STORE_LOOP(uint16_t, float, (float)((double)v * slope + inter)); break;
        default: break;
        }
        return;
    }
    switch (src->dtype) {
    case CD_DTYPE_FLOAT32:
        switch (out_dtype) {
        case CD_DTYPE_FLOAT32: STORE_LOOP(float, float, v); break;
        case CD_DTYPE_FLOAT16: STORE_LOOP(float, uint16_t, cd_float_to_half(v)); break;
        case CD_DTYPE_INT16: STORE_LOOP(float, int16_t, round_i16(v)); break;
        case CD_DTYPE_UINT8: STORE_LOOP(float, uint8_t, round_u8(v)); break;
        default: break;
        }
        break;
    case CD_DTYPE_UINT8:
        if (out_dtype == CD_DTYPE_UINT8) STORE_LOOP(uint8_t, uint8_t, v);
        else STORE_LOOP(uint8_t, int16_t, (int16_t)v);
        break;
    case CD_DTYPE_INT8: STORE_LOOP(int8_t, int16_t, (int16_t)v); break;
    case CD_DTYPE_INT16: STORE_LOOP(int16_t, int16_t, v); break;
    case CD_DTYPE_UINT16: STORE_LOOP(uint16_t, int16_t, (int16_t)v); break;
    default: break;
    }
}

/* A volume as it is (NIfTI order). */
static store_src plain_src(const cd_volume *vol) {
    store_src s = {cd_volume_data_const(vol), cd_volume_dtype(vol), {0, 0, 0}, {0, 0, 0}, 0, false, 1.0, 0.0};
    cd_volume_dims(vol, s.d);
    s.step[0] = 1;
    s.step[1] = s.d[0];
    s.step[2] = s.d[0] * s.d[1];
    return s;
}

/* A volume as cd_volume_reorient_canonical would return it (same permutation, flips and affine), read
 * in place: stored axis o->world_axis[i] walks source axis i, backwards where flipped. */
static store_src reoriented_src(const cd_volume *vol, const cd_orientation *o, double affine[4][4]) {
    int64_t n[3];
    cd_volume_dims(vol, n);
    store_src s = {cd_volume_data_const(vol), cd_volume_dtype(vol), {0, 0, 0}, {0, 0, 0}, 0, false, 1.0, 0.0};
    const int64_t sst[3] = {1, n[0], n[0] * n[1]};
    s.scaled = cd_volume_has_scaling(vol);
    cd_volume_scaling(vol, &s.slope, &s.inter);
    double a[4][4];
    cd_volume_affine(vol, a);
    memset(affine, 0, sizeof(double[4][4]));
    for (int i = 0; i < 3; i++) {
        const int w = o->world_axis[i];
        s.d[w] = n[i];
        s.step[w] = o->flip[i] * sst[i];
        if (o->flip[i] < 0) s.base += sst[i] * (n[i] - 1);
    }
    for (int r = 0; r < 3; r++) {
        double t = a[r][3];
        for (int i = 0; i < 3; i++) {
            affine[r][o->world_axis[i]] = o->flip[i] * a[r][i];
            if (o->flip[i] < 0) t += a[r][i] * (double)(n[i] - 1);
        }
        affine[r][3] = t;
    }
    affine[3][3] = 1.0;
    return s;
}

/* Half-open box of nonzero voxels and their count, of a C-order (X, Y, Z) uint8 array. Row by row (z
 * runs): a row's nonzero count is a branch-free loop, and only a row with any updates the box, from its
 * first and last nonzero z. */
static void bbox_c_order(const uint8_t *m, const uint32_t d[3], int64_t lo[3], int64_t hi[3], bool *found, uint64_t *count) {
    *found = false;
    *count = 0;
    for (int a = 0; a < 3; a++) {
        lo[a] = d[a];
        hi[a] = 0;
    }
    const size_t Z = d[2];
    for (int64_t x = 0; x < d[0]; x++)
        for (int64_t y = 0; y < d[1]; y++) {
            const uint8_t *row = m + ((size_t)x * d[1] + (size_t)y) * Z;
            size_t c = 0;
            for (size_t z = 0; z < Z; z++) c += row[z] != 0;
            if (!c) continue;
            *count += c;
            size_t z0 = 0, z1 = Z;
            while (!row[z0]) z0++;
            while (!row[z1 - 1]) z1--;
            if (x < lo[0]) lo[0] = x;
            if (x + 1 > hi[0]) hi[0] = x + 1;
            if (y < lo[1]) lo[1] = y;
            if (y + 1 > hi[1]) hi[1] = y + 1;
            if ((int64_t)z0 < lo[2]) lo[2] = (int64_t)z0;
            if ((int64_t)z1 > hi[2]) hi[2] = (int64_t)z1;
            *found = true;
        }
}

#define MAX_CHANNELS 8

static void destroy_all(cd_volume **v, int n) {
    for (int i = 0; i < n; i++) {
        cd_volume_destroy(v[i]);
        v[i] = NULL;
    }
}

/* Replaces *v by op's result when op succeeds. */
static cd_status replace(cd_volume **v, cd_volume *result) {
    cd_volume_destroy(*v);
    *v = result;
    return CD_OK;
}

cd_status cd_preprocess(const cd_recipe *r, const double target_spacing[3], const cd_volume *image, const cd_volume *mask,
                        int threads, cd_sample **out, cd_error *err) {
    const cd_volume *images[1] = {image};
    return cd_preprocess_multi(r, target_spacing, images, 1, mask, threads, out, err);
}

cd_status cd_preprocess_multi(const cd_recipe *r, const double target_spacing[3], const cd_volume *const *images, int nimages,
                              const cd_volume *mask, int threads, cd_sample **out, cd_error *err) {
    return cd_preprocess_multi_dev(r, target_spacing, images, nimages, mask, threads, NULL, out, err);
}

cd_status cd_preprocess_multi_dev(const cd_recipe *r, const double target_spacing[3], const cd_volume *const *images, int nimages,
                              const cd_volume *mask, int threads, cd_pp_device *dev, cd_sample **out, cd_error *err) {
    return cd_preprocess_multi_view(r, target_spacing, images, nimages, mask, threads, dev, NULL, NULL, out, err);
}

void cd_image_view_fill(const void *user, const cd_tensor_info *ti, const cd_chunk_info *ci, void *dst) {
    const cd_image_view *v = user;
    (void)ti;
    /* The chunk is the C-order store of a sub-box of the view. */
    store_src sub = {v->data, v->src_dtype, {ci->extent[0], ci->extent[1], ci->extent[2]},
                     {v->step[0], v->step[1], v->step[2]}, v->base, v->scaled, v->slope, v->inter};
    for (int a = 0; a < 3; a++) sub.base += (int64_t)ci->start[a] * v->step[a];
    store_c_order_src(&sub, v->dtype, dst);
}

cd_status cd_preprocess_multi_view(const cd_recipe *r, const double target_spacing[3], const cd_volume *const *images,
                                   int nimages, const cd_volume *mask, int threads, cd_pp_device *dev, cd_image_view *view,
                                   bool *used, cd_sample **out, cd_error *err) {
    if (used) *used = false;
    if (!r || !images || nimages < 1 || nimages > MAX_CHANNELS || !images[0] || !out)
        return cd_fail(err, CD_ERR_ARG, "cd_preprocess: invalid argument");
    *out = NULL;
    for (int c = 0; c < nimages; c++)
        if (!images[c]) return cd_fail(err, CD_ERR_ARG, "cd_preprocess: image %d is NULL", c);
    const cd_volume *image = images[0];
    if (mask && cd_volume_dtype(mask) != CD_DTYPE_UINT8)
        return cd_fail(err, CD_ERR_ARG, "cd_preprocess: the mask must be uint8 (got %s)", cd_dtype_name(cd_volume_dtype(mask)));
    if (mask && !same_grid(image, mask)) {
        int64_t a[3], b[3];
        cd_volume_dims(image, a);
        cd_volume_dims(mask, b);
        return cd_fail(err, CD_ERR_FORMAT, "image and mask grids differ (image %lldx%lldx%lld, mask %lldx%lldx%lld, or affines)",
                       (long long)a[0], (long long)a[1], (long long)a[2], (long long)b[0], (long long)b[1], (long long)b[2]);
    }
    /* 0. Non-finite voxels: the case is refused, or they become 0 in float32 copies that stand in for
     *    the images from here on (a cubic prefilter, a z-score or a percentile would spread one NaN to
     *    every voxel). The copies are freed at the end, so no view into them is handed out. */
    cd_volume *finite[MAX_CHANNELS] = {NULL};
    const cd_volume *inputs[MAX_CHANNELS];
    for (int c = 0; c < nimages; c++) {
        char what[48];
        if (nimages > 1) snprintf(what, sizeof what, "the image of channel %d", c + 1);
        else snprintf(what, sizeof what, "the image");
        cd_status nst = cd_non_finite_apply(r->non_finite, images[c], what, NULL, &finite[c], err);
        if (nst != CD_OK) {
            destroy_all(finite, nimages);
            return nst;
        }
        inputs[c] = finite[c] ? finite[c] : images[c];
        if (finite[c]) view = NULL;
    }
    images = inputs;
    image = images[0];
    /* Resampled extra channels are never lossless in the stored dtype: "auto" means float32 then. */
    const cd_dtype out_dtype = nimages > 1 && r->dtype == CD_DTYPE_INVALID ? CD_DTYPE_FLOAT32 : cd_recipe_output_dtype(r, image);
    const bool keep_raw = nimages == 1 && out_dtype != CD_DTYPE_FLOAT32 && out_dtype != CD_DTYPE_FLOAT16 &&
                          r->resample == CD_RESAMPLE_NONE && r->normalize == CD_NORM_NONE && !r->has_then &&
                          !cd_volume_has_scaling(image) && r->dtype == CD_DTYPE_INVALID;
    cd_volume *ch[MAX_CHANNELS] = {NULL}, *msk = NULL, *tmp = NULL;
    cd_status st = CD_OK;
    cd_sample *s = NULL;
    cd_resample_options ro = CD_RESAMPLE_OPTIONS_INIT;
    ro.threads = threads;

    /* Source values stored without crop (raw, or scaled to float32 without normalisation): nothing but
     *    the reorientation and the cast happen, and both are folded into the C-order store below (no
     *    reoriented or float copies of image and mask). */
    const cd_dtype sdt = cd_volume_dtype(image);
    const bool in_place = nimages == 1 && r->resample == CD_RESAMPLE_NONE && r->normalize == CD_NORM_NONE && !r->has_then &&
                          r->dtype == CD_DTYPE_INVALID && r->crop == CD_CROP_NONE &&
                          (keep_raw || (out_dtype == CD_DTYPE_FLOAT32 &&
                                        (sdt == CD_DTYPE_FLOAT32 || sdt == CD_DTYPE_UINT8 || sdt == CD_DTYPE_INT8 ||
                                         sdt == CD_DTYPE_INT16 || sdt == CD_DTYPE_UINT16)));
    double in_place_affine[4][4];
    cd_orientation ornt = {{0, 1, 2}, {1, 1, 1}};

    /* 1. Reorient the first image (exact) and its mask; work on physical float values unless the raw
     *    values are stored. Further images (other sequences) are resampled onto the first one's grid
     *    in world space, through their affines, with trilinear interpolation. */
    if (in_place) {
        double a[4][4];
        cd_volume_affine(image, a);
        if (r->reorient) {
            /* The checks and messages of cd_volume_reorient_canonical. */
            if (cd_orientation_from_affine(a, &ornt, err) != CD_OK) {
                st = cd_fail(err, CD_ERR_FORMAT, "cannot reorient: the affine has non-finite entries");
                goto done;
            }
            for (int i = 0; i < 3; i++)
                if (ornt.world_axis[i] < 0) {
                    st = cd_fail(err, CD_ERR_FORMAT, "cannot reorient: array axis %d has no direction in the affine", i);
                    goto done;
                }
        }
    } else if (r->reorient) {
        if ((st = cd_volume_reorient_canonical(image, &ch[0], err)) != CD_OK) goto done;
        if (mask && (st = cd_volume_reorient_canonical(mask, &msk, err)) != CD_OK) goto done;
    } else {
        if ((st = cd_volume_clone(image, &ch[0], err)) != CD_OK) goto done;
        if (mask && (st = cd_volume_clone(mask, &msk, err)) != CD_OK) goto done;
    }
    if (!keep_raw && !in_place) {
        if ((st = to_float_volume(ch[0], &tmp, err)) != CD_OK) goto done;
        replace(&ch[0], tmp);
        tmp = NULL;
    }
    if (nimages > 1) {
        cd_grid base;
        cd_grid_of_volume(ch[0], &base);
        ro.interp = CD_INTERP_LINEAR;
        ro.out_dtype = CD_DTYPE_FLOAT32;
        for (int c = 1; c < nimages && st == CD_OK; c++) st = cd_pp_resample(dev, images[c], &base, &ro, &ch[c], err);
        if (st != CD_OK) goto done;
    }

    /* 2. Resample onto the recipe's grid. */
    if (r->resample != CD_RESAMPLE_NONE) {
        cd_grid grid;
        int64_t dims[3];
        cd_volume_dims(ch[0], dims);
        if (r->resample == CD_RESAMPLE_SHAPE) {
            int64_t shape[3] = {r->shape[0], r->shape[1], r->shape[2] > 0 ? r->shape[2] : dims[2]};
            st = cd_grid_for_shape(ch[0], shape, &grid, err);
        } else {
            const double *sp = r->resample == CD_RESAMPLE_SPACING ? r->spacing : target_spacing;
            if (!sp) {
                st = cd_fail(err, CD_ERR_ARG, "cd_preprocess: recipe '%s' needs the dataset's target spacing", r->name);
                goto done;
            }
            st = cd_grid_for_spacing(ch[0], sp, &grid, err);
        }
        if (st != CD_OK) goto done;
        /* nnU-Net's anisotropy rule: the coarse axis apart (in-plane slices, then along the axis). The
         * axis is decided on the first image's grid; every channel and the mask follow it. */
        const int sep_axis = separate_axis(r, ch[0], &grid);
        bool sep_done = false;
        ro.interp = (cd_interp)r->image_order;
        ro.out_dtype = CD_DTYPE_FLOAT32;
        for (int c = 0; c < nimages && st == CD_OK; c++) {
            if (sep_axis >= 0)
                st = resample_separate(r, ch[c], &grid, sep_axis, threads, slice_image, r->order_z, &tmp, &sep_done, err);
            if (st == CD_OK && !sep_done) st = cd_pp_resample(dev, ch[c], &grid, &ro, &tmp, err);
            if (st == CD_OK) {
                replace(&ch[c], tmp);
                tmp = NULL;
            }
        }
        if (st != CD_OK) goto done;
        if (msk && sep_axis >= 0) {
            st = resample_separate(r, msk, &grid, sep_axis, threads, slice_mask, 0, &tmp, &sep_done, err);
            if (st != CD_OK) goto done;
            if (sep_done) {
                replace(&msk, tmp);
                tmp = NULL;
            }
        }
        if (msk && !sep_done) {
            if (r->mask_order == 1) {
                if (!cd_pp_resample_mask_linear(dev, msk, &grid, &tmp)) st = resample_mask_linear(msk, &grid, threads, &tmp, err);
            } else {
                ro.interp = CD_INTERP_NEAREST;
                ro.out_dtype = CD_DTYPE_UINT8;
                st = cd_pp_resample(dev, msk, &grid, &ro, &tmp, err);
            }
            if (st != CD_OK) goto done;
            replace(&msk, tmp);
            tmp = NULL;
        }
    }

    /* 3. Crop every channel and the mask to the mask's (or the first image's nonzero) bounding box
     *    plus margin. */
    if (r->crop != CD_CROP_NONE && (r->crop == CD_CROP_NONZERO || msk)) {
        int64_t lo[3], hi[3], d[3];
        bool found;
        if (r->crop == CD_CROP_MASK)
            bbox_of(msk, false, lo, hi, &found);
        else if (!keep_raw)
            bbox_of(ch[0], true, lo, hi, &found);
        else {
            if ((st = to_float_volume(ch[0], &tmp, err)) != CD_OK) goto done;
            bbox_of(tmp, true, lo, hi, &found);
            cd_volume_destroy(tmp);
            tmp = NULL;
        }
        cd_volume_dims(ch[0], d);
        if (found) {
            for (int a = 0; a < 3; a++) {
                lo[a] = lo[a] - r->margin[a] < 0 ? 0 : lo[a] - r->margin[a];
                hi[a] = hi[a] + r->margin[a] > d[a] ? d[a] : hi[a] + r->margin[a];
            }
            for (int c = 0; c < nimages && st == CD_OK; c++)
                if ((st = crop_volume(ch[c], lo, hi, &tmp, err)) == CD_OK) {
                    replace(&ch[c], tmp);
                    tmp = NULL;
                }
            if (st == CD_OK && msk && (st = crop_volume(msk, lo, hi, &tmp, err)) == CD_OK) {
                replace(&msk, tmp);
                tmp = NULL;
            }
            if (st != CD_OK) goto done;
        }
    }

    /* 4. Normalise each channel on its own statistics (float path only). */
    if (!keep_raw && !in_place)
        for (int c = 0; c < nimages; c++)
            if (!cd_pp_normalize(dev, r, cd_volume_data(ch[c]), cd_volume_count(ch[c]), msk ? cd_volume_data(msk) : NULL))
                normalize(r, cd_volume_data(ch[c]), cd_volume_count(ch[c]), msk ? cd_volume_data(msk) : NULL);

    /* 4b. float16 storage turns |x| >= 65520 into infinities: refused, not stored (a float16 recipe
     *     without normalisation meets them in raw intensities). in_place never stores float16. */
    if (out_dtype == CD_DTYPE_FLOAT16 && !in_place) {
        uint64_t over = 0;
        for (int c = 0; c < nimages; c++) {
            const float *x = cd_volume_data_const(ch[c]);
            for (size_t i = 0, n = cd_volume_count(ch[c]); i < n; i++) over += !(fabsf(x[i]) < 65520.0f);
        }
        if (over) {
            st = cd_fail(err, CD_ERR_FORMAT, "%llu preprocessed voxel%s outside the float16 range (|x| >= 65520 would be stored as "
                         "infinite); use \"dtype\": \"float32\" or a normalisation", (unsigned long long)over, over == 1 ? "" : "s");
            goto done;
        }
    }

    /* 5. Store: C order, channels (sequences, or copies of one grey image for 2D backbones), cast. */
    s = calloc(1, sizeof *s);
    if (!s) {
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
        goto done;
    }
    store_src img_src[MAX_CHANNELS];
    for (int c = 0; c < nimages; c++) img_src[c] = in_place ? reoriented_src(images[c], &ornt, in_place_affine) : plain_src(ch[c]);
    const int64_t *d = img_src[0].d;
    for (int a = 0; a < 3; a++) {
        if (d[a] > UINT32_MAX) {
            st = cd_fail(err, CD_ERR_LIMIT, "preprocessed volume too large");
            goto done;
        }
        s->shape[a] = (uint32_t)d[a];
    }
    s->channels = nimages > 1 ? (uint32_t)nimages : r->slices ? (uint32_t)r->slice_channels : 1;
    s->dtype = out_dtype;
    const size_t nvox = (size_t)d[0] * (size_t)d[1] * (size_t)d[2], es = cd_dtype_size(out_dtype);
    if (view && in_place && s->channels == 1) {
        /* The chunks come straight from the source (cd_image_view_fill): no C-order image. */
        *view = (cd_image_view){img_src[0].data, img_src[0].dtype, out_dtype, {d[0], d[1], d[2]},
                                {img_src[0].step[0], img_src[0].step[1], img_src[0].step[2]}, img_src[0].base,
                                img_src[0].scaled, img_src[0].slope, img_src[0].inter};
        if (used) *used = true;
    } else if (!(s->image = cd_buffer_alloc(nvox * es * s->channels))) {
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory for the preprocessed image");
        goto done;
    }
    for (uint32_t c = 0; s->image && c < s->channels; c++) {
        uint8_t *dst = (uint8_t *)s->image + c * nvox * es;
        if (nimages > 1 || c == 0)
            store_c_order_src(&img_src[nimages > 1 ? c : 0], out_dtype, dst);
        else
            memcpy(dst, s->image, nvox * es);
    }
    if (in_place)
        memcpy(s->affine, in_place_affine, sizeof s->affine);
    else
        cd_volume_affine(ch[0], s->affine);
    for (int a = 0; a < 3; a++)
        s->spacing[a] = sqrt(s->affine[0][a] * s->affine[0][a] + s->affine[1][a] * s->affine[1][a] +
                             s->affine[2][a] * s->affine[2][a]);
    cd_orientation so;
    if (cd_orientation_from_affine(s->affine, &so, NULL) == CD_OK) /* = cd_volume_axcodes */
        cd_orientation_codes(&so, s->orientation);
    else
        memcpy(s->orientation, "???", 4);
    const cd_volume *mask_vol = in_place ? mask : msk;
    if (mask_vol) {
        s->mask = cd_buffer_alloc(nvox);
        if (!s->mask) {
            st = cd_fail(err, CD_ERR_NOMEM, "out of memory for the preprocessed mask");
            goto done;
        }
        double unused[4][4];
        const store_src ms = in_place ? reoriented_src(mask, &ornt, unused) : plain_src(msk);
        store_c_order_src(&ms, CD_DTYPE_UINT8, s->mask);
        int64_t lo[3], hi[3];
        bool found;
        bbox_c_order(s->mask, s->shape, lo, hi, &found, &s->foreground);
        s->has_bbox = found;
        for (int a = 0; a < 3 && found; a++) {
            s->bbox[a][0] = lo[a];
            s->bbox[a][1] = hi[a];
        }
    }
done:
    destroy_all(ch, MAX_CHANNELS);
    destroy_all(finite, MAX_CHANNELS);
    cd_volume_destroy(msk);
    cd_volume_destroy(tmp);
    if (st != CD_OK) {
        cd_sample_destroy(s);
        return st;
    }
    *out = s;
    return CD_OK;
}
