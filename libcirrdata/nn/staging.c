/* Cirrhosis staging of a scan: the cirrhosisstage-2d preprocessing, batched inference, softmax and
 * the mean of the slice probabilities (see cirrdata/staging.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cirrdata/preprocess.h"
#include "cirrdata/recipe.h"
#include "cirrdata/staging.h"
#include "preprocess/nonfinite.h"
#include "core/internal.h"

#define DEFAULT_BATCH 16
#define MAX_BATCH 4096

void cd_stage_input_destroy(cd_stage_input *in) {
    if (!in) return;
    free(in->z);
    free(in->x);
    free(in);
}

void cd_stage_result_destroy(cd_stage_result *r) {
    if (!r) return;
    free(r->probs);
    free(r->z);
    free(r->slice_logits);
    free(r->slice_probs);
    free(r);
}

const char *cd_stage_name(int stage) {
    static const char *const names[] = {"mild", "moderate", "severe", "healthy"};
    static _Thread_local char buf[24];
    if (stage >= 0 && stage < 4) return names[stage];
    snprintf(buf, sizeof buf, "class %d", stage);
    return buf;
}

/* The mask as uint8 0/1 on the image's grid (cd_preprocess takes uint8 only; NIfTI masks come as
 * any dtype). */
static cd_status binary_mask(const cd_volume *mask, cd_volume **out, cd_error *err) {
    int64_t d[3];
    cd_volume_dims(mask, d);
    const size_t n = cd_volume_count(mask);
    float *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return cd_fail(err, CD_ERR_NOMEM, "out of memory for the mask");
    cd_volume_to_float32(mask, v);
    cd_volume *m = NULL;
    cd_status st = cd_volume_create(d, CD_DTYPE_UINT8, &m, err);
    if (st == CD_OK) {
        uint8_t *o = cd_volume_data(m);
        size_t liver = 0;
        for (size_t i = 0; i < n; i++) liver += (o[i] = v[i] != 0.0f);
        double a[4][4], sp[3];
        cd_volume_affine(mask, a);
        cd_volume_set_affine(m, a);
        cd_volume_spacing(mask, sp);
        cd_volume_set_spacing(m, sp);
        if (liver == 0) st = cd_fail(err, CD_ERR_ARG, "the mask has no liver voxel (all %zu voxels are 0)", n);
    }
    free(v);
    if (st != CD_OK) {
        cd_volume_destroy(m);
        return st;
    }
    *out = m;
    return CD_OK;
}

cd_status cd_stage_preprocess(const cd_volume *image, const cd_volume *mask, int threads, cd_stage_input **out,
                              cd_error *err) {
    if (!image || !out) return cd_fail(err, CD_ERR_ARG, "cd_stage_preprocess: NULL argument");
    *out = NULL;
    if (mask) {
        int64_t a[3], b[3];
        cd_volume_dims(image, a);
        cd_volume_dims(mask, b);
        if (memcmp(a, b, sizeof a))
            return cd_fail(err, CD_ERR_ARG, "mask shape %lldx%lldx%lld differs from the image's %lldx%lldx%lld",
                           (long long)b[0], (long long)b[1], (long long)b[2], (long long)a[0], (long long)a[1],
                           (long long)a[2]);
    }
    /* NaN or infinite voxels are refused here, where they can be named: the network would turn them
     * into NaN outputs and the slice it blamed would be the wrong one. A NaN label would count as liver. */
    cd_volume *unused = NULL;
    cd_status st =
        cd_non_finite_apply(CD_NON_FINITE_ERROR, image, "the image", "staging needs finite values", &unused, err);
    if (st == CD_OK && mask)
        st = cd_non_finite_apply(CD_NON_FINITE_ERROR, mask, "the mask", "staging needs finite values", &unused, err);
    if (st != CD_OK) return st;
    cd_recipe r;
    st = cd_recipe_preset("cirrhosisstage-2d", &r, err);
    if (st != CD_OK) return st;
    cd_volume *m01 = NULL;
    if (mask && (st = binary_mask(mask, &m01, err)) != CD_OK) return st;
    cd_sample *s = NULL;
    st = cd_preprocess(&r, NULL, image, m01, threads, &s, err);
    cd_volume_destroy(m01);
    if (st != CD_OK) return st;
    cd_stage_input *in = calloc(1, sizeof *in);
    const int64_t X = s->shape[0], Y = s->shape[1], Z = s->shape[2];
    if (!in) {
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (s->channels != CD_STAGE_CHANNELS || X != CD_STAGE_SIZE || Y != CD_STAGE_SIZE || s->dtype != CD_DTYPE_FLOAT16) {
        st = cd_fail(err, CD_ERR_ARG, "cd_stage_preprocess: the cirrhosisstage-2d recipe gave %ux%ux%u x %u channels",
                     s->shape[0], s->shape[1], s->shape[2], s->channels);
        goto done;
    }
    in->depth = Z;
    in->z = malloc((size_t)Z * sizeof *in->z);
    if (!in->z) {
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
        goto done;
    }
    /* Slices with liver in the resized mask (stored C-order (1, X, Y, Z): z fastest). */
    for (int64_t z = 0; z < Z; z++) {
        bool keep = !s->mask;
        for (int64_t xy = 0; !keep && xy < X * Y; xy++) keep = s->mask[xy * Z + z] != 0;
        if (keep) in->z[in->n++] = z;
    }
    if (in->n == 0) {
        st = cd_fail(err, CD_ERR_ARG,
                     "the mask's liver vanishes when its slices are resized to %dx%d (fewer than one pixel)",
                     CD_STAGE_SIZE, CD_STAGE_SIZE);
        goto done;
    }
    const size_t per = (size_t)CD_STAGE_CHANNELS * X * Y;
    in->x = malloc((size_t)in->n * per * sizeof *in->x);
    if (!in->x) {
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory for %lld preprocessed slices", (long long)in->n);
        goto done;
    }
    const uint16_t *h = s->image;
    for (int64_t i = 0; i < in->n; i++) {
        float *o = in->x + (size_t)i * per;
        const int64_t z = in->z[i];
        for (size_t cxy = 0; cxy < per; cxy++) o[cxy] = cd_half_to_float(h[cxy * (size_t)Z + (size_t)z]);
    }
done:
    cd_sample_destroy(s);
    if (st != CD_OK) {
        cd_stage_input_destroy(in);
        return st;
    }
    *out = in;
    return CD_OK;
}

cd_status cd_stage_run(cd_model *m, const cd_stage_input *in, int batch, cd_stage_result **out, cd_error *err) {
    if (!m || !in || !out || in->n < 1 || !in->x || !in->z)
        return cd_fail(err, CD_ERR_ARG, "cd_stage_run: NULL argument or no slices");
    *out = NULL;
    if (batch <= 0) batch = DEFAULT_BATCH;
    if (batch > MAX_BATCH) return cd_fail(err, CD_ERR_ARG, "cd_stage_run: batch %d is over %d", batch, MAX_BATCH);
    const int C = cd_model_classes(m);
    if (cd_model_in_channels(m) != CD_STAGE_CHANNELS)
        return cd_fail(err, CD_ERR_ARG, "the model (%s) takes %d input channels; staging gives %d", cd_model_arch(m),
                       cd_model_in_channels(m), CD_STAGE_CHANNELS);
    if (C < 2 || C > 1024)
        return cd_fail(err, CD_ERR_ARG, "the model (%s) has %d classes; staging needs 2..1024", cd_model_arch(m), C);
    cd_stage_result *r = calloc(1, sizeof *r);
    if (!r) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    r->classes = C;
    r->n = in->n;
    r->probs = calloc((size_t)C, sizeof *r->probs);
    r->z = malloc((size_t)in->n * sizeof *r->z);
    r->slice_logits = malloc((size_t)in->n * C * sizeof *r->slice_logits);
    r->slice_probs = malloc((size_t)in->n * C * sizeof *r->slice_probs);
    cd_status st = CD_OK;
    if (!r->probs || !r->z || !r->slice_logits || !r->slice_probs) {
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory for the results of %lld slices", (long long)in->n);
        goto done;
    }
    memcpy(r->z, in->z, (size_t)in->n * sizeof *r->z);
    const size_t per = (size_t)CD_STAGE_CHANNELS * CD_STAGE_SIZE * CD_STAGE_SIZE;
    /* Equal batches (the last one shorter) so the model plans at most two shapes. */
    for (int64_t i0 = 0; i0 < in->n && st == CD_OK; i0 += batch) {
        int64_t nb = in->n - i0 < batch ? in->n - i0 : batch;
        st = cd_model_predict(m, in->x + (size_t)i0 * per, nb, CD_STAGE_SIZE, CD_STAGE_SIZE,
                              r->slice_logits + (size_t)i0 * C, err);
    }
    if (st != CD_OK) goto done;
    /* Softmax in double with the maximum subtracted; the scan's probabilities are the mean. */
    double *acc = calloc((size_t)C, sizeof *acc);
    if (!acc) {
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < in->n && st == CD_OK; i++) {
        const float *l = r->slice_logits + (size_t)i * C;
        float *p = r->slice_probs + (size_t)i * C;
        double mx = l[0], sum = 0;
        for (int c = 0; c < C; c++) {
            if (!isfinite(l[c])) {
                st = cd_fail(err, CD_ERR_FORMAT, "the model (%s) gave a non-finite output for slice z=%lld",
                             cd_model_arch(m), (long long)in->z[i]);
                break;
            }
            if (l[c] > mx) mx = l[c];
        }
        if (st != CD_OK) break;
        for (int c = 0; c < C; c++) sum += exp((double)l[c] - mx);
        for (int c = 0; c < C; c++) {
            double q = exp((double)l[c] - mx) / sum;
            p[c] = (float)q;
            acc[c] += q;
        }
    }
    for (int c = 0; c < C && st == CD_OK; c++) {
        r->probs[c] = (float)(acc[c] / (double)in->n);
        if (r->probs[c] > r->probs[r->stage]) r->stage = c;
    }
    free(acc);
done:
    if (st != CD_OK) {
        cd_stage_result_destroy(r);
        return st;
    }
    *out = r;
    return CD_OK;
}

cd_status cd_stage_volume(cd_model *m, const cd_volume *image, const cd_volume *mask, int batch, int threads,
                          cd_stage_result **out, cd_error *err) {
    cd_stage_input *in = NULL;
    cd_status st = cd_stage_preprocess(image, mask, threads, &in, err);
    if (st == CD_OK) st = cd_stage_run(m, in, batch, out, err);
    cd_stage_input_destroy(in);
    return st;
}
