/* Applying a recipe to one image and mask: the deterministic preprocessing done at conversion. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cirrdata/orient.h"
#include "cirrdata/preprocess.h"
#include "cirrdata/resample.h"
#include "core/internal.h"

void cd_sample_destroy(cd_sample *s) {
    if (!s) return;
    free(s->image);
    free(s->mask);
    free(s);
}

/* ---- percentiles (numpy 'linear': a[floor(h)] + (h - floor(h)) * (a[floor(h)+1] - a[floor(h)])) ---- */

static void swapf(float *a, float *b) {
    float t = *a;
    *a = *b;
    *b = t;
}

/* Quickselect: afterwards v[k] is the k-th smallest, smaller ones before it, larger after. */
static void select_kth(float *v, size_t n, size_t k) {
    size_t lo = 0, hi = n - 1;
    while (hi > lo) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] < v[lo]) swapf(&v[mid], &v[lo]);
        if (v[hi] < v[lo]) swapf(&v[hi], &v[lo]);
        if (v[hi] < v[mid]) swapf(&v[hi], &v[mid]);
        float pivot = v[mid];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                swapf(&v[i], &v[j]);
                i++;
                if (j == 0) break;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return;
    }
}

double cd_percentile_f32(float *v, size_t n, double p) {
    if (n == 0) return 0.0;
    double h = (double)(n - 1) * p / 100.0;
    size_t k = (size_t)floor(h);
    if (k >= n - 1) k = n - 1;
    select_kth(v, n, k);
    double a = v[k];
    if (k + 1 >= n) return a;
    float b = v[k + 1];
    for (size_t i = k + 2; i < n; i++)
        if (v[i] < b) b = v[i];
    return a + (h - (double)k) * ((double)b - a);
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

/* Transposes a NIfTI-order (x fastest) volume into C-order (channels, X, Y, Z), casting to dtype and
 * repeating the grey values over the channels. */
/* The transpose reads x-fastest rows and writes z-fastest rows: blocks of 16 x values keep both
 * sides in cache (a plain z-inner loop strides X*Y elements per read). */
#define STORE_BLOCK 16
#define STORE_LOOP(SRC_T, DST_T, CONVERT)                                                          \
    do {                                                                                           \
        const SRC_T *s = (const SRC_T *)src;                                                       \
        DST_T *o = (DST_T *)dst;                                                                   \
        for (int64_t x0 = 0; x0 < d[0]; x0 += STORE_BLOCK) {                                       \
            int64_t x1 = x0 + STORE_BLOCK < d[0] ? x0 + STORE_BLOCK : d[0];                        \
            for (int64_t y = 0; y < d[1]; y++)                                                     \
                for (int64_t z = 0; z < d[2]; z++) {                                               \
                    const SRC_T *row = s + d[0] * (y + d[1] * z);                                  \
                    for (int64_t x = x0; x < x1; x++) {                                            \
                        SRC_T v = row[x];                                                          \
                        o[(x * d[1] + y) * d[2] + z] = CONVERT;                                    \
                    }                                                                              \
                }                                                                                  \
        }                                                                                          \
    } while (0)

static int16_t round_i16(double v) { return (int16_t)(v < -32768 ? -32768 : v > 32767 ? 32767 : lrint(v)); }
static uint8_t round_u8(double v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lrint(v)); }

static void store_c_order(const cd_volume *vol, cd_dtype out_dtype, void *dst) {
    int64_t d[3];
    cd_volume_dims(vol, d);
    const void *src = cd_volume_data_const(vol);
    switch (cd_volume_dtype(vol)) {
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
    if (!r || !images || nimages < 1 || nimages > MAX_CHANNELS || !images[0] || !out)
        return cd_fail(err, CD_ERR_ARG, "cd_preprocess: invalid argument");
    *out = NULL;
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

    /* 1. Reorient the first image (exact) and its mask; work on physical float values unless the raw
     *    values are stored. Further images (other sequences) are resampled onto the first one's grid
     *    in world space, through their affines, with trilinear interpolation. */
    if (r->reorient) {
        if ((st = cd_volume_reorient_canonical(image, &ch[0], err)) != CD_OK) goto done;
        if (mask && (st = cd_volume_reorient_canonical(mask, &msk, err)) != CD_OK) goto done;
    } else {
        if ((st = cd_volume_clone(image, &ch[0], err)) != CD_OK) goto done;
        if (mask && (st = cd_volume_clone(mask, &msk, err)) != CD_OK) goto done;
    }
    if (!keep_raw) {
        if ((st = to_float_volume(ch[0], &tmp, err)) != CD_OK) goto done;
        replace(&ch[0], tmp);
        tmp = NULL;
    }
    if (nimages > 1) {
        cd_grid base;
        cd_grid_of_volume(ch[0], &base);
        ro.interp = CD_INTERP_LINEAR;
        ro.out_dtype = CD_DTYPE_FLOAT32;
        for (int c = 1; c < nimages && st == CD_OK; c++) {
            if (!images[c]) {
                st = cd_fail(err, CD_ERR_ARG, "cd_preprocess: image %d is NULL", c);
                break;
            }
            st = cd_resample(images[c], &base, &ro, &ch[c], err);
        }
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
        ro.interp = (cd_interp)r->image_order;
        ro.out_dtype = CD_DTYPE_FLOAT32;
        for (int c = 0; c < nimages && st == CD_OK; c++)
            if ((st = cd_resample(ch[c], &grid, &ro, &tmp, err)) == CD_OK) {
                replace(&ch[c], tmp);
                tmp = NULL;
            }
        if (st != CD_OK) goto done;
        if (msk) {
            if (r->mask_order == 1) {
                st = resample_mask_linear(msk, &grid, threads, &tmp, err);
            } else {
                ro.interp = CD_INTERP_NEAREST;
                ro.out_dtype = CD_DTYPE_UINT8;
                st = cd_resample(msk, &grid, &ro, &tmp, err);
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
    if (!keep_raw)
        for (int c = 0; c < nimages; c++)
            normalize(r, cd_volume_data(ch[c]), cd_volume_count(ch[c]), msk ? cd_volume_data(msk) : NULL);

    /* 5. Store: C order, channels (sequences, or copies of one grey image for 2D backbones), cast. */
    s = calloc(1, sizeof *s);
    if (!s) {
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
        goto done;
    }
    int64_t d[3];
    cd_volume_dims(ch[0], d);
    for (int a = 0; a < 3; a++) {
        if (d[a] > UINT32_MAX) {
            st = cd_fail(err, CD_ERR_LIMIT, "preprocessed volume too large");
            goto done;
        }
        s->shape[a] = (uint32_t)d[a];
    }
    s->channels = nimages > 1 ? (uint32_t)nimages : r->slices ? (uint32_t)r->slice_channels : 1;
    s->dtype = out_dtype;
    const size_t nvox = cd_volume_count(ch[0]), es = cd_dtype_size(out_dtype);
    s->image = malloc(nvox * es * s->channels);
    if (!s->image) {
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory for the preprocessed image");
        goto done;
    }
    for (uint32_t c = 0; c < s->channels; c++) {
        uint8_t *dst = (uint8_t *)s->image + c * nvox * es;
        if (nimages > 1 || c == 0)
            store_c_order(ch[nimages > 1 ? c : 0], out_dtype, dst);
        else
            memcpy(dst, s->image, nvox * es);
    }
    cd_volume_affine(ch[0], s->affine);
    for (int a = 0; a < 3; a++)
        s->spacing[a] = sqrt(s->affine[0][a] * s->affine[0][a] + s->affine[1][a] * s->affine[1][a] +
                             s->affine[2][a] * s->affine[2][a]);
    cd_volume_axcodes(ch[0], s->orientation);
    if (msk) {
        s->mask = malloc(nvox);
        if (!s->mask) {
            st = cd_fail(err, CD_ERR_NOMEM, "out of memory for the preprocessed mask");
            goto done;
        }
        store_c_order(msk, CD_DTYPE_UINT8, s->mask);
        int64_t lo[3], hi[3];
        bool found;
        bbox_of(msk, false, lo, hi, &found);
        s->has_bbox = found;
        for (int a = 0; a < 3 && found; a++) {
            s->bbox[a][0] = lo[a];
            s->bbox[a][1] = hi[a];
        }
        const uint8_t *m = cd_volume_data_const(msk);
        for (size_t i = 0; i < nvox; i++) s->foreground += m[i] != 0;
    }
done:
    destroy_all(ch, MAX_CHANNELS);
    cd_volume_destroy(msk);
    cd_volume_destroy(tmp);
    if (st != CD_OK) {
        cd_sample_destroy(s);
        return st;
    }
    *out = s;
    return CD_OK;
}
