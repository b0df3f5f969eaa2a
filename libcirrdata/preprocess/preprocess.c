/* Applying a recipe to one image and mask: the deterministic preprocessing done at conversion, as named
 * steps over one run's state. nnU-Net's resampling rules (nnunet_resample.c), the crop (crop.c), the
 * normalisation (normalize.c) and the C-order store with its cast (store.c) have files of their own. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cirrdata/orient.h"
#include "cirrdata/preprocess.h"
#include "cirrdata/resample.h"
#include "core/internal.h"
#include "preprocess/crop.h"
#include "preprocess/image_view.h"
#include "preprocess/nnunet_resample.h"
#include "preprocess/nonfinite.h"
#include "preprocess/normalize.h"
#include "preprocess/preprocess_impl.h"
#include "preprocess/store.h"

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

cd_status cd_preprocess(const cd_recipe *r, const double target_spacing[3], const cd_volume *image,
                        const cd_volume *mask, int threads, cd_sample **out, cd_error *err) {
    const cd_volume *images[1] = {image};
    return cd_preprocess_multi(r, target_spacing, images, 1, mask, threads, out, err);
}

cd_status cd_preprocess_multi(const cd_recipe *r, const double target_spacing[3], const cd_volume *const *images,
                              int nimages, const cd_volume *mask, int threads, cd_sample **out, cd_error *err) {
    return cd_preprocess_multi_dev(r, target_spacing, images, nimages, mask, threads, NULL, out, err);
}

cd_status cd_preprocess_multi_dev(const cd_recipe *r, const double target_spacing[3], const cd_volume *const *images,
                                  int nimages, const cd_volume *mask, int threads, cd_pp_device *dev, cd_sample **out,
                                  cd_error *err) {
    return cd_preprocess_multi_view(r, target_spacing, images, nimages, mask, threads, dev, NULL, NULL, out, err);
}

/* ---- the steps of cd_preprocess_multi_view ---- */

#define MAX_CHANNELS 8

/* One preprocessing call: its inputs, and the volumes each step hands to the next (owned by the run,
 * freed by run_free). */
typedef struct pp_run {
    const cd_recipe *r;
    const double *target_spacing;
    const cd_volume *images[MAX_CHANNELS]; /* the inputs, or their finite copies (step 0) */
    int nimages;
    const cd_volume *mask;
    int threads;
    cd_pp_device *dev;
    cd_volume *finite[MAX_CHANNELS];   /* float32 copies with the non-finite voxels set to 0, or NULL */
    cd_volume *ch[MAX_CHANNELS], *msk; /* the channels and the mask as the steps leave them */
    cd_dtype out_dtype;                /* stored */
    bool keep_raw;                     /* the source's values are stored (no float path) */
    bool in_place;                     /* stored straight from the source: reorientation and cast only */
    cd_orientation ornt;               /* in_place: the reorientation folded into the store */
    double in_place_affine[4][4];      /* in_place: the stored affine */
} pp_run;

static void destroy_all(cd_volume **v, int n) {
    for (int i = 0; i < n; i++) {
        cd_volume_destroy(v[i]);
        v[i] = NULL;
    }
}

static void run_free(pp_run *p) {
    destroy_all(p->ch, MAX_CHANNELS);
    destroy_all(p->finite, MAX_CHANNELS);
    cd_volume_destroy(p->msk);
    p->msk = NULL;
}

/* Replaces *v by result. */
static void replace(cd_volume **v, cd_volume *result) {
    cd_volume_destroy(*v);
    *v = result;
}

static cd_status check_inputs(const cd_recipe *r, const cd_volume *const *images, int nimages, const cd_volume *mask,
                              cd_sample **out, cd_error *err) {
    if (!r || !images || nimages < 1 || nimages > MAX_CHANNELS || !images[0] || !out)
        return cd_fail(err, CD_ERR_ARG, "cd_preprocess: invalid argument");
    *out = NULL;
    for (int c = 0; c < nimages; c++)
        if (!images[c]) return cd_fail(err, CD_ERR_ARG, "cd_preprocess: image %d is NULL", c);
    const cd_volume *image = images[0];
    if (mask && cd_volume_dtype(mask) != CD_DTYPE_UINT8)
        return cd_fail(err, CD_ERR_ARG, "cd_preprocess: the mask must be uint8 (got %s)",
                       cd_dtype_name(cd_volume_dtype(mask)));
    if (mask && !same_grid(image, mask)) {
        int64_t a[3], b[3];
        cd_volume_dims(image, a);
        cd_volume_dims(mask, b);
        return cd_fail(
            err, CD_ERR_FORMAT, "image and mask grids differ (image %lldx%lldx%lld, mask %lldx%lldx%lld, or affines)",
            (long long)a[0], (long long)a[1], (long long)a[2], (long long)b[0], (long long)b[1], (long long)b[2]);
    }
    return CD_OK;
}

/* 0. Non-finite voxels: the case is refused, or they become 0 in float32 copies that stand in for the
 *    images from here on (a cubic prefilter, a z-score or a percentile would spread one NaN to every
 *    voxel). The copies are freed at the end, so no view into them is handed out. */
static cd_status replace_non_finite(pp_run *p, const cd_volume *const *images, cd_error *err) {
    for (int c = 0; c < p->nimages; c++) {
        char what[48];
        if (p->nimages > 1)
            snprintf(what, sizeof what, "the image of channel %d", c + 1);
        else
            snprintf(what, sizeof what, "the image");
        cd_status st = cd_non_finite_apply(p->r->non_finite, images[c], what, NULL, &p->finite[c], err);
        if (st != CD_OK) return st;
        p->images[c] = p->finite[c] ? p->finite[c] : images[c];
    }
    return CD_OK;
}

static bool has_finite_copies(const pp_run *p) {
    for (int c = 0; c < p->nimages; c++)
        if (p->finite[c]) return true;
    return false;
}

/* The stored dtype, and whether the raw values are kept (keep_raw) or stored straight from the source
 * without crop (in_place: raw, or scaled to float32 without normalisation; nothing but the
 * reorientation and the cast happen, and both are folded into the C-order store, with no reoriented
 * or float copies of image and mask). */
static void choose_storage(pp_run *p) {
    const cd_recipe *r = p->r;
    const cd_volume *image = p->images[0];
    /* Resampled extra channels are never lossless in the stored dtype: "auto" means float32 then. */
    p->out_dtype = p->nimages > 1 && r->dtype == CD_DTYPE_INVALID ? CD_DTYPE_FLOAT32 : cd_recipe_output_dtype(r, image);
    p->keep_raw = p->nimages == 1 && p->out_dtype != CD_DTYPE_FLOAT32 && p->out_dtype != CD_DTYPE_FLOAT16 &&
                  r->resample == CD_RESAMPLE_NONE && r->normalize == CD_NORM_NONE && !r->has_then &&
                  !cd_volume_has_scaling(image) && r->dtype == CD_DTYPE_INVALID;
    const cd_dtype sdt = cd_volume_dtype(image);
    p->in_place = p->nimages == 1 && r->resample == CD_RESAMPLE_NONE && r->normalize == CD_NORM_NONE && !r->has_then &&
                  r->dtype == CD_DTYPE_INVALID && r->crop == CD_CROP_NONE &&
                  (p->keep_raw || (p->out_dtype == CD_DTYPE_FLOAT32 &&
                                   (sdt == CD_DTYPE_FLOAT32 || sdt == CD_DTYPE_UINT8 || sdt == CD_DTYPE_INT8 ||
                                    sdt == CD_DTYPE_INT16 || sdt == CD_DTYPE_UINT16)));
}

/* in_place with reorientation: the orientation the store folds in, with the checks and messages of
 * cd_volume_reorient_canonical. */
static cd_status in_place_orientation(pp_run *p, cd_error *err) {
    double a[4][4];
    cd_volume_affine(p->images[0], a);
    if (cd_orientation_from_affine(a, &p->ornt, err) != CD_OK)
        return cd_fail(err, CD_ERR_FORMAT, "cannot reorient: the affine has non-finite entries");
    for (int i = 0; i < 3; i++)
        if (p->ornt.world_axis[i] < 0)
            return cd_fail(err, CD_ERR_FORMAT, "cannot reorient: array axis %d has no direction in the affine", i);
    return CD_OK;
}

/* 1. Reorient the first image (exact) and its mask; work on physical float values unless the raw
 *    values are stored. */
static cd_status reorient(pp_run *p, cd_error *err) {
    if (p->in_place) return p->r->reorient ? in_place_orientation(p, err) : CD_OK;
    cd_status st;
    if (p->r->reorient) {
        if ((st = cd_volume_reorient_canonical(p->images[0], &p->ch[0], err)) != CD_OK) return st;
        if (p->mask && (st = cd_volume_reorient_canonical(p->mask, &p->msk, err)) != CD_OK) return st;
    } else {
        if ((st = cd_volume_clone(p->images[0], &p->ch[0], err)) != CD_OK) return st;
        if (p->mask && (st = cd_volume_clone(p->mask, &p->msk, err)) != CD_OK) return st;
    }
    if (p->keep_raw) return CD_OK;
    cd_volume *f;
    if ((st = to_float_volume(p->ch[0], &f, err)) != CD_OK) return st;
    replace(&p->ch[0], f);
    return CD_OK;
}

/* 1b. Further images (other sequences) are resampled onto the first one's grid in world space, through
 *     their affines, with trilinear interpolation. */
static cd_status resample_extra_channels(pp_run *p, cd_error *err) {
    if (p->nimages < 2) return CD_OK;
    cd_grid base;
    cd_grid_of_volume(p->ch[0], &base);
    cd_resample_options ro;
    cd_resample_options_init(&ro);
    ro.threads = p->threads;
    ro.interp = CD_INTERP_LINEAR;
    ro.out_dtype = CD_DTYPE_FLOAT32;
    for (int c = 1; c < p->nimages; c++) {
        cd_status st = cd_pp_resample(p->dev, p->images[c], &base, &ro, &p->ch[c], err);
        if (st != CD_OK) return st;
    }
    return CD_OK;
}

/* The recipe's grid for the first channel: a shape, a spacing, or the dataset's target spacing. */
static cd_status recipe_grid(const pp_run *p, cd_grid *grid, cd_error *err) {
    const cd_recipe *r = p->r;
    int64_t dims[3];
    cd_volume_dims(p->ch[0], dims);
    if (r->resample == CD_RESAMPLE_SHAPE) {
        int64_t shape[3] = {r->shape[0], r->shape[1], r->shape[2] > 0 ? r->shape[2] : dims[2]};
        return cd_grid_for_shape(p->ch[0], shape, grid, err);
    }
    const double *sp = r->resample == CD_RESAMPLE_SPACING ? r->spacing : p->target_spacing;
    if (!sp) return cd_fail(err, CD_ERR_ARG, "cd_preprocess: recipe '%s' needs the dataset's target spacing", r->name);
    return cd_grid_for_spacing(p->ch[0], sp, grid, err);
}

/* Every channel onto grid: the separate axis apart when there is one (and the grid allows it), else
 * in one pass on the device or the CPU. */
static cd_status resample_channels(pp_run *p, const cd_grid *grid, int sep_axis, cd_error *err) {
    cd_resample_options ro;
    cd_resample_options_init(&ro);
    ro.threads = p->threads;
    ro.interp = (cd_interp)p->r->image_order;
    ro.out_dtype = CD_DTYPE_FLOAT32;
    for (int c = 0; c < p->nimages; c++) {
        cd_volume *res = NULL;
        bool done = false;
        cd_status st = CD_OK;
        if (sep_axis >= 0)
            st = cd_pp_resample_separate(p->r, p->ch[c], grid, sep_axis, p->threads, false, &res, &done, err);
        if (st == CD_OK && !done) st = cd_pp_resample(p->dev, p->ch[c], grid, &ro, &res, err);
        if (st != CD_OK) {
            cd_volume_destroy(res);
            return st;
        }
        replace(&p->ch[c], res);
    }
    return CD_OK;
}

/* The mask onto grid, as the channels: linear per label (mask_order 1) or nearest. */
static cd_status resample_mask(pp_run *p, const cd_grid *grid, int sep_axis, cd_error *err) {
    cd_volume *res = NULL;
    bool done = false;
    cd_status st = CD_OK;
    if (sep_axis >= 0) st = cd_pp_resample_separate(p->r, p->msk, grid, sep_axis, p->threads, true, &res, &done, err);
    if (st == CD_OK && !done) {
        if (p->r->mask_order == 1) {
            if (!cd_pp_resample_mask_linear(p->dev, p->msk, grid, &res))
                st = cd_pp_mask_linear(p->msk, grid, p->threads, &res, err);
        } else {
            cd_resample_options ro;
            cd_resample_options_init(&ro);
            ro.threads = p->threads;
            ro.interp = CD_INTERP_NEAREST;
            ro.out_dtype = CD_DTYPE_UINT8;
            st = cd_pp_resample(p->dev, p->msk, grid, &ro, &res, err);
        }
    }
    if (st != CD_OK) {
        cd_volume_destroy(res);
        return st;
    }
    replace(&p->msk, res);
    return CD_OK;
}

/* 2. Resample onto the recipe's grid. nnU-Net's anisotropy rule: the coarse axis apart (in-plane
 *    slices, then along the axis). The axis is decided on the first image's grid; every channel and
 *    the mask follow it. */
static cd_status resample_to_recipe(pp_run *p, cd_error *err) {
    if (p->r->resample == CD_RESAMPLE_NONE) return CD_OK;
    cd_grid grid;
    cd_status st = recipe_grid(p, &grid, err);
    if (st != CD_OK) return st;
    const int sep_axis = cd_pp_separate_axis(p->r, p->ch[0], &grid);
    if ((st = resample_channels(p, &grid, sep_axis, err)) != CD_OK) return st;
    return p->msk ? resample_mask(p, &grid, sep_axis, err) : CD_OK;
}

/* The box to crop to: the mask's, or the first image's nonzero voxels (of its physical values). */
static cd_status crop_box(const pp_run *p, int64_t lo[3], int64_t hi[3], bool *found, cd_error *err) {
    if (p->r->crop == CD_CROP_MASK) {
        cd_pp_bbox(p->msk, false, lo, hi, found);
        return CD_OK;
    }
    if (!p->keep_raw) {
        cd_pp_bbox(p->ch[0], true, lo, hi, found);
        return CD_OK;
    }
    cd_volume *f;
    cd_status st = to_float_volume(p->ch[0], &f, err);
    if (st != CD_OK) return st;
    cd_pp_bbox(f, true, lo, hi, found);
    cd_volume_destroy(f);
    return CD_OK;
}

/* 3. Crop every channel and the mask to the mask's (or the first image's nonzero) bounding box plus
 *    margin. */
static cd_status crop(pp_run *p, cd_error *err) {
    const cd_recipe *r = p->r;
    if (r->crop == CD_CROP_NONE || !(r->crop == CD_CROP_NONZERO || p->msk)) return CD_OK;
    int64_t lo[3], hi[3], d[3];
    bool found;
    cd_status st = crop_box(p, lo, hi, &found, err);
    if (st != CD_OK) return st;
    cd_volume_dims(p->ch[0], d);
    if (!found) return CD_OK;
    for (int a = 0; a < 3; a++) {
        lo[a] = lo[a] - r->margin[a] < 0 ? 0 : lo[a] - r->margin[a];
        hi[a] = hi[a] + r->margin[a] > d[a] ? d[a] : hi[a] + r->margin[a];
    }
    cd_volume *box;
    for (int c = 0; c < p->nimages; c++) {
        if ((st = cd_pp_crop_volume(p->ch[c], lo, hi, &box, err)) != CD_OK) return st;
        replace(&p->ch[c], box);
    }
    if (p->msk) {
        if ((st = cd_pp_crop_volume(p->msk, lo, hi, &box, err)) != CD_OK) return st;
        replace(&p->msk, box);
    }
    return CD_OK;
}

/* 4. Normalise each channel on its own statistics (float path only), on the device when it can. */
static void normalize_channels(pp_run *p) {
    if (p->keep_raw || p->in_place) return;
    const uint8_t *m = p->msk ? cd_volume_data(p->msk) : NULL;
    for (int c = 0; c < p->nimages; c++)
        if (!cd_pp_normalize(p->dev, p->r, cd_volume_data(p->ch[c]), cd_volume_count(p->ch[c]), m))
            cd_pp_normalize_cpu(p->r, cd_volume_data(p->ch[c]), cd_volume_count(p->ch[c]), m);
}

/* 4b. float16 storage turns |x| >= 65520 into infinities: refused, not stored (a float16 recipe without
 *     normalisation meets them in raw intensities). in_place never stores float16. */
static cd_status check_float16_range(const pp_run *p, cd_error *err) {
    if (p->out_dtype != CD_DTYPE_FLOAT16 || p->in_place) return CD_OK;
    uint64_t over = 0;
    for (int c = 0; c < p->nimages; c++) {
        const float *x = cd_volume_data_const(p->ch[c]);
        for (size_t i = 0, n = cd_volume_count(p->ch[c]); i < n; i++) over += !(fabsf(x[i]) < 65520.0f);
    }
    if (!over) return CD_OK;
    return cd_fail(err, CD_ERR_FORMAT,
                   "%llu preprocessed voxel%s outside the float16 range (|x| >= 65520 would be stored as "
                   "infinite); use \"dtype\": \"float32\" or a normalisation",
                   (unsigned long long)over, over == 1 ? "" : "s");
}

/* The image's channels (sequences, or copies of one grey image for 2D backbones) in C order, cast;
 * with view (in_place, one channel) no C-order image: *view describes it. src: channel c's source. */
static cd_status store_image(pp_run *p, const cd_store_src *src, cd_sample *s, cd_image_view *view, bool *used,
                             cd_error *err) {
    const int64_t *d = src[0].d;
    const size_t nvox = (size_t)d[0] * (size_t)d[1] * (size_t)d[2], es = cd_dtype_size(p->out_dtype);
    if (view && p->in_place && s->channels == 1) {
        /* The chunks come straight from the source (cd_image_view_fill): no C-order image. */
        *view = (cd_image_view){src[0].data,
                                src[0].dtype,
                                p->out_dtype,
                                {d[0], d[1], d[2]},
                                {src[0].step[0], src[0].step[1], src[0].step[2]},
                                src[0].base,
                                src[0].scaled,
                                src[0].slope,
                                src[0].inter};
        if (used) *used = true;
        return CD_OK;
    }
    if (!(s->image = cd_buffer_alloc(nvox * es * s->channels)))
        return cd_fail(err, CD_ERR_NOMEM, "out of memory for the preprocessed image");
    for (uint32_t c = 0; c < s->channels; c++) {
        uint8_t *dst = (uint8_t *)s->image + c * nvox * es;
        if (p->nimages > 1 || c == 0)
            cd_store_c_order(&src[p->nimages > 1 ? c : 0], p->out_dtype, dst);
        else
            memcpy(dst, s->image, nvox * es);
    }
    return CD_OK;
}

/* The sample's affine, spacing (column norms) and orientation codes. */
static void store_geometry(const pp_run *p, cd_sample *s) {
    if (p->in_place)
        memcpy(s->affine, p->in_place_affine, sizeof s->affine);
    else
        cd_volume_affine(p->ch[0], s->affine);
    for (int a = 0; a < 3; a++)
        s->spacing[a] = sqrt(s->affine[0][a] * s->affine[0][a] + s->affine[1][a] * s->affine[1][a] +
                             s->affine[2][a] * s->affine[2][a]);
    cd_orientation so;
    if (cd_orientation_from_affine(s->affine, &so, NULL) == CD_OK) /* = cd_volume_axcodes */
        cd_orientation_codes(&so, s->orientation);
    else
        memcpy(s->orientation, "???", 4);
}

/* The mask in C order, its foreground count and bounding box. */
static cd_status store_mask(const pp_run *p, cd_sample *s, cd_error *err) {
    const cd_volume *mask_vol = p->in_place ? p->mask : p->msk;
    if (!mask_vol) return CD_OK;
    s->mask = cd_buffer_alloc((size_t)s->shape[0] * s->shape[1] * s->shape[2]);
    if (!s->mask) return cd_fail(err, CD_ERR_NOMEM, "out of memory for the preprocessed mask");
    double unused[4][4];
    const cd_store_src ms =
        p->in_place ? cd_store_reoriented_src(p->mask, &p->ornt, unused) : cd_store_plain_src(p->msk);
    cd_store_c_order(&ms, CD_DTYPE_UINT8, s->mask);
    int64_t lo[3], hi[3];
    bool found;
    cd_bbox_c_order(s->mask, s->shape, lo, hi, &found, &s->foreground);
    s->has_bbox = found;
    for (int a = 0; a < 3 && found; a++) {
        s->bbox[a][0] = lo[a];
        s->bbox[a][1] = hi[a];
    }
    return CD_OK;
}

/* 5. Store: C order, channels, cast; the geometry and the mask. The caller owns *out. */
static cd_status store_sample(pp_run *p, cd_image_view *view, bool *used, cd_sample **out, cd_error *err) {
    cd_sample *s = calloc(1, sizeof *s);
    if (!s) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    cd_store_src src[MAX_CHANNELS];
    for (int c = 0; c < p->nimages; c++)
        src[c] = p->in_place ? cd_store_reoriented_src(p->images[c], &p->ornt, p->in_place_affine)
                             : cd_store_plain_src(p->ch[c]);
    cd_status st = CD_OK;
    for (int a = 0; a < 3 && st == CD_OK; a++) {
        if (src[0].d[a] > UINT32_MAX)
            st = cd_fail(err, CD_ERR_LIMIT, "preprocessed volume too large");
        else
            s->shape[a] = (uint32_t)src[0].d[a];
    }
    s->channels = p->nimages > 1 ? (uint32_t)p->nimages : p->r->slices ? (uint32_t)p->r->slice_channels : 1;
    s->dtype = p->out_dtype;
    if (st == CD_OK) st = store_image(p, src, s, view, used, err);
    if (st == CD_OK) {
        store_geometry(p, s);
        st = store_mask(p, s, err);
    }
    if (st != CD_OK) {
        cd_sample_destroy(s);
        return st;
    }
    *out = s;
    return CD_OK;
}

cd_status cd_preprocess_multi_view(const cd_recipe *r, const double target_spacing[3], const cd_volume *const *images,
                                   int nimages, const cd_volume *mask, int threads, cd_pp_device *dev,
                                   cd_image_view *view, bool *used, cd_sample **out, cd_error *err) {
    if (used) *used = false;
    cd_status st = check_inputs(r, images, nimages, mask, out, err);
    if (st != CD_OK) return st;
    pp_run p = {.r = r,
                .target_spacing = target_spacing,
                .nimages = nimages,
                .mask = mask,
                .threads = threads,
                .dev = dev,
                .ornt = {{0, 1, 2}, {1, 1, 1}}};
    st = replace_non_finite(&p, images, err);
    if (st == CD_OK) {
        if (has_finite_copies(&p)) view = NULL;
        choose_storage(&p);
        st = reorient(&p, err);
    }
    if (st == CD_OK) st = resample_extra_channels(&p, err);
    if (st == CD_OK) st = resample_to_recipe(&p, err);
    if (st == CD_OK) st = crop(&p, err);
    if (st == CD_OK) normalize_channels(&p);
    if (st == CD_OK) st = check_float16_range(&p, err);
    if (st == CD_OK) st = store_sample(&p, view, used, out, err);
    run_free(&p);
    return st;
}
