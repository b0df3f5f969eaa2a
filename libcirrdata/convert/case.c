/* One case's work in a conversion (in a worker thread): its files read, preprocessed with the recipe,
 * and its records built (the plain record, then any augmented copies), each with its manifest entry. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cirrdata/nifti.h"
#include "convert/convert_impl.h"
#include "convert/record_meta.h"
#include "dataset/manifest.h"
#include "preprocess/image_view.h"
#include "preprocess/nonfinite.h"

static uint64_t file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
}

void cd_conv_case_result_clear(case_result *r) {
    for (size_t i = 0; i < r->nrec; i++) {
        cd_record_builder_destroy(r->builders[i]);
        json_decref(r->entries[i]);
    }
    free(r->builders);
    free(r->entries);
    memset(r, 0, sizeof *r);
}

/* Masks come in any integer or float dtype: labels as uint8. */
static cd_status mask_to_u8(const cd_volume *m, cd_volume **out, cd_error *err) {
    int64_t d[3];
    cd_volume_dims(m, d);
    cd_status st = cd_volume_create(d, CD_DTYPE_UINT8, out, err);
    if (st != CD_OK) return st;
    size_t n = cd_volume_count(m);
    double *v = malloc(n * sizeof *v);
    if (!v) {
        cd_volume_destroy(*out);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    cd_volume_to_float64(m, v);
    uint8_t *o = cd_volume_data(*out);
    for (size_t i = 0; i < n; i++) o[i] = (uint8_t)(!(v[i] > 0) ? 0 : v[i] >= 255 ? 255 : lrint(v[i]));
    free(v);
    double a[4][4], sp[3];
    cd_volume_affine(m, a);
    cd_volume_spacing(m, sp);
    cd_volume_set_affine(*out, a);
    cd_volume_set_spacing(*out, sp);
    return CD_OK;
}

/* Builds one record from a (possibly augmented) sample and its metadata. view: where the image's chunks
 * come from when the sample has no image buffer (else NULL). */
static cd_status build_record(const cd_recipe *r, const cd_sample *s, const cd_image_view *view, json_t *meta,
                              cd_record_builder **out, cd_error *err) {
    char *text = json_dumps(meta, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    cd_status st = text ? cd_record_builder_create(text, out, err) : cd_fail(err, CD_ERR_NOMEM, "out of memory");
    free(text);
    if (st == CD_OK && view)
        st = cd_record_builder_add_tensor_fill(*out, "image", s->dtype, s->channels, s->shape, r->chunk, CD_CODEC_ZSTD,
                                               r->zstd_level, cd_image_view_fill, view, err);
    else if (st == CD_OK)
        st = cd_record_builder_add_tensor(*out, "image", s->dtype, s->channels, s->shape, r->chunk, CD_CODEC_ZSTD,
                                          r->zstd_level, s->image, err);
    if (st == CD_OK && s->mask)
        st = cd_record_builder_add_tensor(*out, "mask", CD_DTYPE_UINT8, 1, s->shape, r->chunk, CD_CODEC_ZSTD,
                                          r->zstd_level, s->mask, err);
    return st;
}

static cd_status add_record(case_result *res, cd_record_builder *b, json_t *entry) {
    cd_record_builder **nb = realloc(res->builders, (res->nrec + 1) * sizeof *nb);
    if (nb) res->builders = nb;
    json_t **ne = nb ? realloc(res->entries, (res->nrec + 1) * sizeof *ne) : NULL;
    if (ne) res->entries = ne;
    if (!nb || !ne || !entry) {
        cd_record_builder_destroy(b);
        json_decref(entry);
        return CD_ERR_NOMEM;
    }
    res->builders[res->nrec] = b;
    res->entries[res->nrec++] = entry;
    return CD_OK;
}

/* The volumes of a case: its images (channels), mask (raw, and as uint8 when it was not). */
typedef struct case_volumes {
    cd_volume *img[CD_CASE_CHANNELS_MAX], *msk_raw, *msk;
    int nimg;
} case_volumes;

static const cd_volume *case_mask(const case_volumes *v) { return v->msk ? v->msk : v->msk_raw; }

static void case_volumes_free(case_volumes *v) {
    for (int k = 0; k < CD_CASE_CHANNELS_MAX; k++) cd_volume_destroy(v->img[k]);
    cd_volume_destroy(v->msk_raw);
    cd_volume_destroy(v->msk);
}

/* Channel k of an nnU-Net case lies on channel 0's grid (the layout checked the headers; the files may
 * have changed since): it takes channel 0's affine and spacing, so that the recipe stacks the voxels as
 * nnU-Net does, with no interpolation. */
static cd_status same_grid_channel(const cd_case *c, case_volumes *v, int k, cd_error *err) {
    int64_t a[3], b[3];
    cd_volume_dims(v->img[0], a);
    cd_volume_dims(v->img[k], b);
    if (a[0] != b[0] || a[1] != b[1] || a[2] != b[2])
        return cd_fail(err, CD_ERR_FORMAT,
                       "case '%s': channel %d (%s) has shape %lldx%lldx%lld, channel 0 (%s) %lldx%lldx%lld; nnU-Net "
                       "needs every channel of a case on one grid",
                       c->patient_id, k, c->image_paths[k], (long long)b[0], (long long)b[1], (long long)b[2],
                       c->image_paths[0], (long long)a[0], (long long)a[1], (long long)a[2]);
    double aff[4][4], sp[3];
    cd_volume_affine(v->img[0], aff);
    cd_volume_spacing(v->img[0], sp);
    cd_volume_set_affine(v->img[k], aff);
    cd_volume_set_spacing(v->img[k], sp);
    return CD_OK;
}

/* Reads the case's files (counting their bytes in res->bytes_read). */
static cd_status read_case(const conv_job *jb, const cd_case *c, case_volumes *v, case_result *res, cd_error *err) {
    cd_nifti_read_options ro;
    cd_nifti_read_options_init(&ro);
    ro.max_bytes = jb->opts->max_bytes;
    cd_status st = CD_OK;
    res->bytes_read = 0;
    for (int k = 0; k < c->nimages && st == CD_OK; k++) {
        ro.volume = c->image_volumes[k];
        st = cd_nifti_read(c->image_paths[k], &ro, &v->img[k], NULL, err);
        /* A 4D file holding every channel is counted once. */
        if (k == 0 || strcmp(c->image_paths[k], c->image_paths[k - 1])) res->bytes_read += file_size(c->image_paths[k]);
        v->nimg = k + 1;
        if (st == CD_OK && k > 0 && c->same_grid) st = same_grid_channel(c, v, k, err);
    }
    ro.volume = 0;
    if (st == CD_OK && c->mask_path) {
        st = cd_nifti_read(c->mask_path, &ro, &v->msk_raw, NULL, err);
        res->bytes_read += file_size(c->mask_path);
        /* NaN or infinite labels: the case is refused, or they become 0 (recipe non_finite). */
        if (st == CD_OK)
            st = cd_non_finite_resolve(jb->opts->recipe.non_finite, &v->msk_raw, c->mask_path, "the mask", err);
        /* Masks are usually uint8 already: use them as they are. */
        if (st == CD_OK && (cd_volume_dtype(v->msk_raw) != CD_DTYPE_UINT8 || cd_volume_has_scaling(v->msk_raw)))
            st = mask_to_u8(v->msk_raw, &v->msk, err);
    }
    return st;
}

/* The recipe applied to the case. Without augmented copies (which render from the sample's image) a
 * raw image is chunked straight from the source volume (*view_used). */
static cd_status preprocess_case(const conv_job *jb, const cd_case *c, const case_volumes *v, cd_image_view *view,
                                 bool *view_used, cd_sample **s, cd_error *err) {
    const cd_volume *images[CD_CASE_CHANNELS_MAX];
    for (int k = 0; k < v->nimg; k++) images[k] = v->img[k];
    cd_status st = cd_preprocess_multi_view(&jb->opts->recipe, jb->target_spacing, images, v->nimg, case_mask(v), 1,
                                            jb->pp, jb->aug ? NULL : view, view_used, s, err);
    if (st != CD_OK) {
        /* Name the files: preprocessing messages do not know them. */
        char m[CD_ERROR_MESSAGE_MAX];
        snprintf(m, sizeof m, "%s", err->message);
        cd_fail(err, st, "%s: %s", c->image_paths[0], m);
    }
    return st;
}

/* What the records of one preprocessed case share. */
typedef struct case_ctx {
    const conv_job *jb;
    const cd_case *c;
    const case_volumes *v;
    const char *cls; /* class name, or NULL */
    cd_source_stats stats;
    uint64_t index; /* sample index (augmented copies) */
} case_ctx;

/* The plain record (with augmented copies: marked as copy -1 of its case). */
static cd_status add_plain_record(const case_ctx *cx, const cd_sample *s, const cd_image_view *view, json_t *meta,
                                  case_result *res, cd_error *err) {
    cd_record_builder *b = NULL;
    cd_status st = build_record(&cx->jb->opts->recipe, s, view, meta, &b, err);
    json_t *entry = st == CD_OK ? cd_manifest_entry(cx->c, s, &cx->stats) : NULL;
    if (entry && cx->jb->aug) {
        json_object_set_new(entry, "case", json_integer((json_int_t)cx->index));
        json_object_set_new(entry, "copy", json_integer(-1));
    }
    if (st != CD_OK)
        cd_record_builder_destroy(b);
    else if (add_record(res, b, entry) != CD_OK)
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
    return st;
}

/* Augmented copy k: the plain metadata, described anew for the copy's grid and mask, plus what was drawn. */
static cd_status add_copy_record(const case_ctx *cx, const cd_aug_copy *cp, uint32_t k, case_result *res,
                                 cd_error *err) {
    const conv_job *jb = cx->jb;
    json_t *cm = cd_record_metadata_json(cx->c, jb->opts->root, cx->cls, (const cd_volume *const *)cx->v->img, &cp->s);
    char key[600];
    snprintf(key, sizeof key, "%s:aug%u", cx->c->key, k);
    json_object_set_new(cm, "key", json_string(key));
    json_object_set(cm, "augmentation", cp->meta);
    cd_record_builder *b = NULL;
    cd_status st = build_record(&jb->opts->recipe, &cp->s, NULL, cm, &b, err);
    json_decref(cm);
    json_t *entry = st == CD_OK ? cd_manifest_entry(cx->c, &cp->s, &cx->stats) : NULL;
    if (entry) {
        json_object_set_new(entry, "key", json_string(key));
        json_object_set_new(entry, "case", json_integer((json_int_t)cx->index));
        json_object_set_new(entry, "copy", json_integer(k));
    }
    if (st != CD_OK)
        cd_record_builder_destroy(b);
    else if (add_record(res, b, entry) != CD_OK)
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
    return st;
}

/* The K augmented copies of the case, rendered and added as records. */
static cd_status add_copies(const case_ctx *cx, const cd_sample *s, json_t *meta, case_result *res, cd_error *err) {
    cd_aug_copies *aug = cx->jb->aug;
    const uint32_t K = aug->copies;
    cd_aug_copy *copies = calloc(K, sizeof *copies);
    cd_status st = copies ? cd_aug_copies_render(aug, s, json_object_get(meta, "fg_locations"), cx->index, copies,
                                                 &res->augment_seconds, err)
                          : cd_fail(err, CD_ERR_NOMEM, "out of memory");
    for (uint32_t k = 0; st == CD_OK && k < K; k++) st = add_copy_record(cx, &copies[k], k, res, err);
    for (uint32_t k = 0; copies && k < K; k++) cd_aug_copy_clear(&copies[k]);
    free(copies);
    return st;
}

/* The records of a preprocessed case. */
static cd_status build_case_records(const conv_job *jb, const cd_case *c, const case_volumes *v, const cd_sample *s,
                                    const cd_image_view *view, conv_pipeline *p, size_t case_no, case_result *res,
                                    cd_error *err) {
    /* With augmented copies the sample index of this case (the plain dataset's record index)
     * is known once every earlier case has succeeded or failed. */
    case_ctx cx = {.jb = jb, .c = c, .v = v};
    cx.index = jb->aug ? cd_conv_resolve_case(p, case_no, true) : 0;
    cd_source_stats_compute(v->img[0], case_mask(v), &cx.stats);
    cx.cls = c->label >= 0 && (size_t)c->label < jb->cases->nclasses ? jb->cases->classes[c->label] : NULL;
    json_t *meta = cd_record_metadata_json(c, jb->opts->root, cx.cls, (const cd_volume *const *)v->img, s);
    cd_status st = CD_OK;
    if (!jb->aug || !jb->aug->no_original) st = add_plain_record(&cx, s, view, meta, res, err);
    if (st == CD_OK && jb->aug) st = add_copies(&cx, s, meta, res, err);
    json_decref(meta);
    return st;
}

/* A failed case keeps only its status, message, bytes read and time: a bad input file is a skip;
 * running out of memory or disk is not. */
static void case_failed(case_result *res, cd_status st, const cd_error *err) {
    double secs = res->augment_seconds;
    uint64_t bytes = res->bytes_read;
    cd_conv_case_result_clear(res);
    res->augment_seconds = secs;
    res->bytes_read = bytes;
    res->status = st;
    res->skipped = st == CD_ERR_FORMAT || st == CD_ERR_UNSUPPORTED || st == CD_ERR_TRUNCATED || st == CD_ERR_CORRUPT ||
                   st == CD_ERR_LIMIT || st == CD_ERR_IO;
    snprintf(res->message, sizeof res->message, "%s", err->message);
}

void cd_conv_process_case(const conv_job *jb, const cd_case *c, case_result *res, conv_pipeline *p, size_t case_no) {
    cd_error err;
    cd_error_clear(&err);
    case_volumes v = {0};
    cd_sample *s = NULL;
    cd_image_view view;
    bool view_used = false;
    cd_status st = read_case(jb, c, &v, res, &err);
    if (st == CD_OK) st = preprocess_case(jb, c, &v, &view, &view_used, &s, &err);
    if (st == CD_OK)
        st = build_case_records(jb, c, &v, s, view_used ? &view : NULL, p, case_no, res, &err);
    else if (jb->aug)
        cd_conv_resolve_case(p, case_no, false);
    cd_sample_destroy(s);
    case_volumes_free(&v);
    res->status = st;
    if (st != CD_OK) case_failed(res, st, &err);
}
