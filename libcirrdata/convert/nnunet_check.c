/* nnU-Net's per-file dataset rules (nnunet_check.h): labels, NaN, label values, geometry. */
#include "convert/nnunet_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cirrdata/dtype.h"

static int i64_cmp(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* An integer label value (JSON integer, or a real with an integral value as Python's int() takes it). */
static bool label_int(json_t *v, int64_t *out) {
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != floor(d) || fabs(d) > 1e15) return false;
        *out = (int64_t)d;
        return true;
    }
    return false;
}

bool cd_nn_labels_parse(json_t *labels, json_t *regions_class_order, cd_nn_labels *out, char *why, size_t whylen) {
    memset(out, 0, sizeof *out);
    if (!json_is_object(labels)) {
        snprintf(why, whylen, "\"labels\" is not an object of name -> value");
        return false;
    }
    json_t *bg = json_object_get(labels, "background");
    int64_t b;
    if (!bg) {
        snprintf(why, whylen, "background label not declared (\"background\": 0)");
        return false;
    }
    if (json_is_array(bg) || !label_int(bg, &b) || b != 0) {
        snprintf(why, whylen, "the background label must be 0 (not a list, not another value)");
        return false;
    }
    size_t cap = 0, nregions = 0;
    const char *key;
    json_t *v;
    json_object_foreach(labels, key, v) cap += json_is_array(v) ? json_array_size(v) : 1;
    out->values = malloc((cap + 1) * sizeof *out->values);
    if (!out->values) {
        snprintf(why, whylen, "out of memory");
        return false;
    }
    bool has_ignore = false;
    int64_t ignore = 0;
    json_object_foreach(labels, key, v) {
        int64_t x;
        if (!strcmp(key, "ignore")) {
            if (!json_is_integer(v)) {
                snprintf(why, whylen, "the ignore label must be an integer (not a region)");
                goto fail;
            }
            has_ignore = true;
            ignore = (int64_t)json_integer_value(v);
            continue;
        }
        if (json_is_array(v)) {
            size_t i;
            json_t *e;
            if (json_array_size(v) > 1) nregions++;
            json_array_foreach(v, i, e) {
                if (!label_int(e, &x)) {
                    snprintf(why, whylen, "label '%.100s' has a non-integer value", key);
                    goto fail;
                }
                out->values[out->n++] = x;
            }
            /* A region of background only is no region (LabelManager._get_regions). */
            bool all_zero = json_array_size(v) > 0;
            json_array_foreach(v, i, e) if (!label_int(e, &x) || x != 0) all_zero = false;
            if (all_zero && json_array_size(v) > 1) nregions--;
        } else if (label_int(v, &x)) {
            out->values[out->n++] = x;
        } else {
            snprintf(why, whylen, "label '%.100s' is neither an integer nor a list of integers", key);
            goto fail;
        }
    }
    qsort(out->values, out->n, sizeof *out->values, i64_cmp);
    size_t k = 0;
    for (size_t i = 0; i < out->n; i++)
        if (!k || out->values[k - 1] != out->values[i]) out->values[k++] = out->values[i];
    out->n = k;
    if (has_ignore) {
        if (ignore != out->values[out->n - 1] + 1) {
            snprintf(why, whylen, "the ignore label (%lld) must be the highest label value, %lld", (long long)ignore,
                     (long long)(out->values[out->n - 1] + 1));
            goto fail;
        }
        out->values[out->n++] = ignore;
    }
    for (size_t i = 1; i < out->n; i++)
        if (out->values[i] != out->values[i - 1] + 1) {
            snprintf(why, whylen, "labels must be consecutive (0, 1, 2, ...): %lld follows %lld",
                     (long long)out->values[i], (long long)out->values[i - 1]);
            goto fail;
        }
    if (nregions) {
        /* Region-based training: every region needs its place in regions_class_order. */
        if (!json_is_array(regions_class_order)) {
            snprintf(why, whylen, "labels define regions but regions_class_order is missing");
            goto fail;
        }
        size_t want = 0;
        json_object_foreach(labels, key, v) {
            if (!strcmp(key, "ignore")) continue;
            int64_t x;
            bool bgonly = json_is_array(v) ? true : (label_int(v, &x) && x == 0);
            if (json_is_array(v)) {
                size_t i;
                json_t *e;
                json_array_foreach(v, i, e) if (!label_int(e, &x) || x != 0) bgonly = false;
            }
            want += !bgonly;
        }
        if (json_array_size(regions_class_order) != want) {
            snprintf(why, whylen, "regions_class_order has %zu entries for %zu regions",
                     json_array_size(regions_class_order), want);
            goto fail;
        }
    }
    return true;
fail:
    cd_nn_labels_free(out);
    return false;
}

void cd_nn_labels_free(cd_nn_labels *l) {
    free(l->values);
    memset(l, 0, sizeof *l);
}

void cd_nn_labels_format(const cd_nn_labels *l, char *out, size_t cap) {
    size_t len = (size_t)snprintf(out, cap, "[");
    for (size_t i = 0; i < l->n && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%lld", i ? ", " : "", (long long)l->values[i]);
    if (len < cap) snprintf(out + len, cap - len, "]");
}

uint64_t cd_nn_count_nan(const cd_volume *v) {
    const size_t n = cd_volume_count(v);
    const void *d = cd_volume_data_const(v);
    uint64_t nan = 0;
    switch (cd_volume_dtype(v)) {
    case CD_DTYPE_FLOAT32:
        for (size_t i = 0; i < n; i++) nan += isnan(((const float *)d)[i]);
        break;
    case CD_DTYPE_FLOAT64:
        for (size_t i = 0; i < n; i++) nan += isnan(((const double *)d)[i]);
        break;
    case CD_DTYPE_FLOAT16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = ((const uint16_t *)d)[i];
            nan += (h & 0x7c00) == 0x7c00 && (h & 0x03ff);
        }
        break;
    default: break;
    }
    return nan;
}

/* Element i as a double (raw, unscaled). */
static double element(const void *d, cd_dtype t, size_t i) {
    switch (t) {
    case CD_DTYPE_UINT8: return ((const uint8_t *)d)[i];
    case CD_DTYPE_INT8: return ((const int8_t *)d)[i];
    case CD_DTYPE_UINT16: return ((const uint16_t *)d)[i];
    case CD_DTYPE_INT16: return ((const int16_t *)d)[i];
    case CD_DTYPE_UINT32: return ((const uint32_t *)d)[i];
    case CD_DTYPE_INT32: return ((const int32_t *)d)[i];
    case CD_DTYPE_UINT64: return (double)((const uint64_t *)d)[i];
    case CD_DTYPE_INT64: return (double)((const int64_t *)d)[i];
    case CD_DTYPE_FLOAT16: {
        float f;
        cd_float16_to_float32((const uint16_t *)d + i, &f, 1);
        return f;
    }
    case CD_DTYPE_FLOAT32: return ((const float *)d)[i];
    case CD_DTYPE_FLOAT64: return ((const double *)d)[i];
    default: return NAN;
    }
}

static bool declared(const cd_nn_labels *l, double x) {
    if (x != floor(x)) return false;
    int64_t k = (int64_t)x;
    return bsearch(&k, l->values, l->n, sizeof *l->values, i64_cmp) != NULL;
}

bool cd_nn_label_values_ok(const cd_volume *v, const cd_nn_labels *l, char *found, size_t cap) {
    const size_t n = cd_volume_count(v);
    const void *d = cd_volume_data_const(v);
    const cd_dtype t = cd_volume_dtype(v);
    double slope = 1, inter = 0;
    const bool scaled = cd_volume_has_scaling(v);
    if (scaled) cd_volume_scaling(v, &slope, &inter);
    enum { KEEP = 8 };
    double bad[KEEP];
    size_t nbad = 0;
    bool more = false;
    double last = NAN; /* masks are long runs of one value: check each run once */
    bool last_ok = false;
    for (size_t i = 0; i < n; i++) {
        double raw = element(d, t, i);
        if (raw == last) {
            if (last_ok) continue;
        } else {
            last = raw;
            /* nnU-Net reads segmentations as float32, scaled. */
            const float x = (float)(scaled ? raw * slope + inter : raw);
            last_ok = !isnan(x) && declared(l, x);
            if (last_ok) continue;
        }
        const float x = (float)(scaled ? raw * slope + inter : raw);
        bool seen = false;
        for (size_t k = 0; k < nbad && !seen; k++) seen = bad[k] == x || (isnan(bad[k]) && isnan(x));
        if (seen) continue;
        if (nbad < KEEP)
            bad[nbad++] = x;
        else
            more = true;
    }
    if (!nbad) return true;
    size_t len = 0;
    for (size_t k = 0; k < nbad && len < cap; k++)
        len += (size_t)snprintf(found + len, cap - len, "%s%.9g", k ? ", " : "", bad[k]);
    if (more && len < cap) snprintf(found + len, cap - len, ", ...");
    return false;
}

void cd_nn_geometry_of(const cd_nifti_header *h, cd_nn_geometry *g) {
    for (int a = 0; a < 3; a++) {
        g->shape[a] = h->dim[a + 1];
        g->spacing[a] = fabs(h->pixdim[a + 1]);
        g->origin[a] = h->affine[a][3];
        double norm = 0;
        for (int r = 0; r < 3; r++) norm += h->affine[r][a] * h->affine[r][a];
        norm = sqrt(norm);
        for (int r = 0; r < 3; r++) g->direction[3 * r + a] = norm > 0 ? h->affine[r][a] / norm : 0;
    }
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) g->affine[4 * r + c] = h->affine[r][c];
}

bool cd_nn_allclose(const double *a, const double *b, int n) {
    for (int i = 0; i < n; i++)
        if (!(fabs(a[i] - b[i]) <= 1e-8 + 1e-5 * fabs(b[i]))) return false;
    return true;
}

unsigned cd_nn_geometry_diff(const cd_nn_geometry *a, const cd_nn_geometry *b) {
    unsigned d = 0;
    if (memcmp(a->shape, b->shape, sizeof a->shape)) d |= CD_NN_DIFF_SHAPE;
    if (!cd_nn_allclose(b->spacing, a->spacing, 3)) d |= CD_NN_DIFF_SPACING;
    if (!cd_nn_allclose(b->origin, a->origin, 3)) d |= CD_NN_DIFF_ORIGIN;
    if (!cd_nn_allclose(b->direction, a->direction, 9)) d |= CD_NN_DIFF_DIRECTION;
    if (!cd_nn_allclose(b->affine, a->affine, 16)) d |= CD_NN_DIFF_AFFINE;
    return d;
}

static void vec(char *out, size_t cap, const double *v, int n) {
    size_t len = (size_t)snprintf(out, cap, "(");
    for (int i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%.9g", i ? ", " : "", v[i]);
    if (len < cap) snprintf(out + len, cap - len, ")");
}

const char *cd_nn_geometry_message(unsigned bit, const cd_nn_geometry *a, const char *what_a, const cd_nn_geometry *b,
                                   const char *what_b, char *msg, size_t cap) {
    char x[400], y[400];
    const char *rule = "affine", *noun = "affine";
    switch (bit) {
    case CD_NN_DIFF_SHAPE:
        snprintf(x, sizeof x, "(%lld, %lld, %lld)", (long long)a->shape[0], (long long)a->shape[1],
                 (long long)a->shape[2]);
        snprintf(y, sizeof y, "(%lld, %lld, %lld)", (long long)b->shape[0], (long long)b->shape[1],
                 (long long)b->shape[2]);
        rule = noun = "shape";
        break;
    case CD_NN_DIFF_SPACING:
        vec(x, sizeof x, a->spacing, 3);
        vec(y, sizeof y, b->spacing, 3);
        rule = noun = "spacing";
        break;
    case CD_NN_DIFF_ORIGIN:
        vec(x, sizeof x, a->origin, 3);
        vec(y, sizeof y, b->origin, 3);
        rule = noun = "origin";
        break;
    case CD_NN_DIFF_DIRECTION:
        vec(x, sizeof x, a->direction, 9);
        vec(y, sizeof y, b->direction, 9);
        rule = noun = "direction";
        break;
    default:
        vec(x, sizeof x, a->affine, 12);
        vec(y, sizeof y, b->affine, 12);
        break;
    }
    snprintf(msg, cap, "%s mismatch: %.100s has %.150s, %.100s has %.150s", noun, what_a, x, what_b, y);
    return rule;
}
