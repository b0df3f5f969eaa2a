/* Record metadata, manifest entries, dataset statistics. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "cirrdata/orient.h"
#include "cirrdata/version.h"
#include "convert/manifest.h"
#include "io/file.h"

static json_t *mat4(const double m[4][4]) {
    json_t *a = json_array();
    for (int i = 0; i < 4; i++) {
        json_t *row = json_array();
        for (int j = 0; j < 4; j++) json_array_append_new(row, json_real(m[i][j]));
        json_array_append_new(a, row);
    }
    return a;
}

static json_t *vec3d(const double *v) {
    json_t *a = json_array();
    for (int i = 0; i < 3; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

static json_t *vec3i(const int64_t *v) {
    json_t *a = json_array();
    for (int i = 0; i < 3; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

/* Unscaled integer images: the sums in int64 (no double conversion or finiteness test per voxel), the
 * mask read row by row (a row without mask voxels is skipped after a branch-free count), and the rows'
 * in-mask counts kept so that the sample pass scans only the rows that hold a sample. The double loop's
 * sums are exact, hence equal to these, while count * max|x|^2 < 2^53 (every partial sum and square is
 * then an integer below 2^53); false (nothing set) when that does not hold. */
#define INT_STATS(T)                                                                                       \
    do {                                                                                                   \
        const T *src = cd_volume_data_const(image);                                                        \
        uint64_t cnt = 0;                                                                                  \
        int64_t sum = 0, mn = INT64_MAX, mx = INT64_MIN;                                                   \
        uint64_t sq = 0;                                                                                   \
        for (size_t r = 0; r < nrows; r++) {                                                               \
            const size_t i0 = r * row;                                                                     \
            uint32_t c = (uint32_t)row;                                                                    \
            if (m) {                                                                                       \
                c = 0;                                                                                     \
                for (size_t i = i0; i < i0 + row; i++) c += m[i] != 0;                                     \
            }                                                                                              \
            rows[r] = c;                                                                                   \
            if (!c) continue;                                                                              \
            cnt += c;                                                                                      \
            for (size_t i = i0; i < i0 + row; i++) {                                                       \
                if (m && !m[i]) continue;                                                                  \
                const int64_t x = src[i];                                                                  \
                sum += x;                                                                                  \
                sq += (uint64_t)(x * x);                                                                   \
                mn = x < mn ? x : mn;                                                                      \
                mx = x > mx ? x : mx;                                                                      \
            }                                                                                              \
        }                                                                                                  \
        const double amax = cnt ? fmax(fabs((double)mn), fabs((double)mx)) : 0.0;                         \
        if ((double)cnt * amax * amax >= 9007199254740992.0) return false;                                 \
        out->count = cnt;                                                                                  \
        out->sum = (double)sum;                                                                            \
        out->sumsq = (double)sq;                                                                           \
        out->min = cnt ? (double)mn : INFINITY;                                                            \
        out->max = cnt ? (double)mx : -INFINITY;                                                           \
        if (!cnt) return true;                                                                             \
        const size_t want = cnt < CD_STATS_SAMPLES ? (size_t)cnt : CD_STATS_SAMPLES;                      \
        uint64_t k = 0, target = 0;                                                                        \
        size_t next = 0;                                                                                   \
        for (size_t r = 0; r < nrows && next < want; r++) {                                                \
            if (k + rows[r] <= target) {                                                                   \
                k += rows[r];                                                                              \
                continue;                                                                                  \
            }                                                                                              \
            for (size_t i = r * row; i < (r + 1) * row && next < want; i++) {                              \
                if (m && !m[i]) continue;                                                                  \
                if (k == target) {                                                                         \
                    out->samples[next++] = (double)src[i];                                                 \
                    target = (uint64_t)next * cnt / want;                                                  \
                }                                                                                          \
                k++;                                                                                       \
            }                                                                                              \
        }                                                                                                  \
        out->nsamples = next;                                                                              \
        return true;                                                                                       \
    } while (0)

/* row: voxels per row (dims[0]); nrows rows; rows[]: scratch for the rows' in-mask counts. */
static bool int_stats(const cd_volume *image, const uint8_t *m, size_t row, size_t nrows, uint32_t *rows,
                      cd_source_stats *out) {
    switch (cd_volume_dtype(image)) {
    case CD_DTYPE_UINT8: INT_STATS(uint8_t);
    case CD_DTYPE_INT8: INT_STATS(int8_t);
    case CD_DTYPE_UINT16: INT_STATS(uint16_t);
    case CD_DTYPE_INT16: INT_STATS(int16_t);
    default: return false;
    }
}
#undef INT_STATS

void cd_source_stats_compute(const cd_volume *image, const cd_volume *mask, cd_source_stats *out) {
    memset(out, 0, sizeof *out);
    cd_orientation o;
    int64_t dims[3];
    double sp[3], aff[4][4];
    cd_volume_dims(image, dims);
    cd_volume_spacing(image, sp);
    cd_volume_affine(image, aff);
    if (cd_orientation_from_affine(aff, &o, NULL) == CD_OK && o.world_axis[0] >= 0 && o.world_axis[1] >= 0 &&
        o.world_axis[2] >= 0) {
        for (int i = 0; i < 3; i++) {
            out->spacing_ras[o.world_axis[i]] = sp[i];
            out->shape_ras[o.world_axis[i]] = dims[i];
        }
    } else {
        memcpy(out->spacing_ras, sp, sizeof sp);
        memcpy(out->shape_ras, dims, sizeof dims);
    }
    /* Typed loops over the stored values (no converted copy of the volume). */
    const size_t n = cd_volume_count(image);
    const uint8_t *m = mask ? cd_volume_data_const(mask) : NULL;
    double slope, inter;
    cd_volume_scaling(image, &slope, &inter);
    const bool scaled = cd_volume_has_scaling(image);
    out->min = INFINITY;
    out->max = -INFINITY;
    if (!scaled && dims[0] > 0 && (uint64_t)dims[0] <= UINT32_MAX) {
        const size_t row = (size_t)dims[0], nrows = n / row;
        uint32_t *rows = malloc((nrows ? nrows : 1) * sizeof *rows);
        bool done = rows && int_stats(image, m, row, nrows, rows, out);
        free(rows);
        if (done) {
            if (!out->count) out->min = out->max = 0;
            return;
        }
        out->count = 0;
        out->sum = out->sumsq = 0;
        out->min = INFINITY;
        out->max = -INFINITY;
        out->nsamples = 0;
    }
#define STATS_LOOP(T)                                                                              \
    do {                                                                                           \
        const T *src = cd_volume_data_const(image);                                                \
        for (size_t i = 0; i < n; i++) {                                                           \
            if (m && !m[i]) continue;                                                              \
            double x = scaled ? (double)src[i] * slope + inter : (double)src[i];                   \
            if (!isfinite(x)) continue;                                                            \
            out->count++;                                                                          \
            out->sum += x;                                                                         \
            out->sumsq += x * x;                                                                   \
            if (x < out->min) out->min = x;                                                        \
            if (x > out->max) out->max = x;                                                        \
        }                                                                                          \
        if (!out->count) break;                                                                    \
        /* Evenly spaced samples of the in-mask voxels, for dataset percentiles. */                \
        size_t want = out->count < CD_STATS_SAMPLES ? (size_t)out->count : CD_STATS_SAMPLES;       \
        uint64_t k = 0;                                                                            \
        size_t next = 0;                                                                           \
        for (size_t i = 0; i < n && next < want; i++) {                                            \
            if (m && !m[i]) continue;                                                              \
            double x = scaled ? (double)src[i] * slope + inter : (double)src[i];                   \
            if (!isfinite(x)) continue;                                                            \
            if (k == (uint64_t)next * out->count / want) out->samples[next++] = x;                 \
            k++;                                                                                   \
        }                                                                                          \
        out->nsamples = next;                                                                      \
    } while (0)
    switch (cd_volume_dtype(image)) {
    case CD_DTYPE_UINT8: STATS_LOOP(uint8_t); break;
    case CD_DTYPE_INT8: STATS_LOOP(int8_t); break;
    case CD_DTYPE_UINT16: STATS_LOOP(uint16_t); break;
    case CD_DTYPE_INT16: STATS_LOOP(int16_t); break;
    case CD_DTYPE_UINT32: STATS_LOOP(uint32_t); break;
    case CD_DTYPE_INT32: STATS_LOOP(int32_t); break;
    case CD_DTYPE_UINT64: STATS_LOOP(uint64_t); break;
    case CD_DTYPE_INT64: STATS_LOOP(int64_t); break;
    case CD_DTYPE_FLOAT32: STATS_LOOP(float); break;
    case CD_DTYPE_FLOAT64: STATS_LOOP(double); break;
    default: break;
    }
#undef STATS_LOOP
    if (!out->count) out->min = out->max = 0;
}

/* A path relative to root when it lies under it (provenance without machine-specific prefixes). */
static const char *relative_to(const char *path, const char *root) {
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/') n--;
    if (!strncmp(path, root, n) && path[n] == '/') return path + n + 1;
    return path;
}

/* Where a source volume came from and what it was like before preprocessing. */
static json_t *original_json(const char *path, const char *root, const cd_volume *src) {
    json_t *orig = json_object();
    int64_t dims[3];
    double sp[3], aff[4][4];
    char codes[4];
    cd_volume_dims(src, dims);
    cd_volume_spacing(src, sp);
    cd_volume_affine(src, aff);
    cd_volume_axcodes(src, codes);
    json_object_set_new(orig, "path", json_string(relative_to(path, root)));
    json_object_set_new(orig, "shape", vec3i(dims));
    json_object_set_new(orig, "spacing", vec3d(sp));
    json_object_set_new(orig, "affine", mat4(aff));
    json_object_set_new(orig, "orientation", json_string(codes));
    json_object_set_new(orig, "dtype", json_string(cd_dtype_name(cd_volume_dtype(src))));
    if (cd_volume_has_scaling(src)) {
        double sl, in;
        cd_volume_scaling(src, &sl, &in);
        json_object_set_new(orig, "scl_slope", json_real(sl));
        json_object_set_new(orig, "scl_inter", json_real(in));
    }
    return orig;
}

json_t *cd_record_metadata_json(const cd_case *c, const char *root, const char *class_name, const cd_volume *src,
                                const cd_volume *src2, const cd_sample *s) {
    json_t *o = json_object();
    json_object_set_new(o, "key", json_string(c->key));
    json_object_set_new(o, "patient_id", json_string(c->patient_id));
    json_object_set_new(o, "sequence", json_string(c->sequence));
    json_object_set_new(o, "split", json_string(c->split));
    json_object_set_new(o, "label", json_integer(c->label));
    if (class_name) json_object_set_new(o, "class_name", json_string(class_name));
    if (c->stage) json_object_set_new(o, "stage", json_integer(c->stage));
    if (isfinite(c->age)) json_object_set_new(o, "age", json_real(c->age));
    if (c->gender >= 0) json_object_set_new(o, "gender", json_integer(c->gender));
    json_object_set_new(o, "affine", mat4(s->affine));
    json_object_set_new(o, "spacing", vec3d(s->spacing));
    json_object_set_new(o, "orientation", json_string(s->orientation));
    json_object_set_new(o, "original", original_json(c->image_path, root, src));
    if (src2 && c->image2_path) json_object_set_new(o, "paired_original", original_json(c->image2_path, root, src2));
    if (c->mask_path) json_object_set_new(o, "mask_path", json_string(relative_to(c->mask_path, root)));
    if (s->has_bbox) {
        json_t *b = json_array();
        for (int a = 0; a < 3; a++) {
            json_t *p = json_array();
            json_array_append_new(p, json_integer(s->bbox[a][0]));
            json_array_append_new(p, json_integer(s->bbox[a][1]));
            json_array_append_new(b, p);
        }
        json_object_set_new(o, "mask_bbox", b);
    } else {
        json_object_set_new(o, "mask_bbox", json_null());
    }
    json_object_set_new(o, "foreground_voxels", json_integer((json_int_t)s->foreground));
    /* Evenly spaced foreground voxels: patch samplers centre patches on them without reading the mask. */
    if (s->mask && s->foreground) {
        json_t *fg = json_array();
        const uint64_t want = s->foreground < CD_FG_LOCATIONS ? s->foreground : CD_FG_LOCATIONS;
        uint64_t k = 0, next = 0;
        const size_t Y = s->shape[1], Z = s->shape[2];
        /* Every foreground voxel lies in the mask's box: visiting the box in C order meets them in the
         * same order as the whole array. */
        size_t b[3][2] = {{0, s->shape[0]}, {0, Y}, {0, Z}};
        for (int a = 0; a < 3 && s->has_bbox; a++)
            if (s->bbox[a][0] >= 0 && s->bbox[a][0] < s->bbox[a][1] && s->bbox[a][1] <= (int64_t)s->shape[a]) {
                b[a][0] = (size_t)s->bbox[a][0];
                b[a][1] = (size_t)s->bbox[a][1];
            }
        for (size_t x = b[0][0]; x < b[0][1] && next < want; x++)
            for (size_t y = b[1][0]; y < b[1][1] && next < want; y++) {
                const uint8_t *row = s->mask + (x * Y + y) * Z;
                for (size_t z = b[2][0]; z < b[2][1] && next < want; z++) {
                    if (!row[z]) continue;
                    if (k == next * s->foreground / want) {
                        json_t *p = json_array();
                        json_array_append_new(p, json_integer((json_int_t)x));
                        json_array_append_new(p, json_integer((json_int_t)y));
                        json_array_append_new(p, json_integer((json_int_t)z));
                        json_array_append_new(fg, p);
                        next++;
                    }
                    k++;
                }
            }
        json_object_set_new(o, "fg_locations", fg);
    }
    if (s->channels > 1) {
        /* Channel names: the sequences of a pair ("T1+T2"), or copies of one sequence. */
        json_t *ch = json_array();
        const char *plus = strchr(c->sequence, '+');
        for (uint32_t i = 0; i < s->channels; i++) {
            if (plus && src2)
                json_array_append_new(ch, i == 0 ? json_stringn(c->sequence, (size_t)(plus - c->sequence)) : json_string(plus + 1));
            else
                json_array_append_new(ch, json_string(c->sequence));
        }
        json_object_set_new(o, "channels", ch);
    }
    return o;
}

json_t *cd_manifest_entry(const cd_case *c, const cd_sample *s, const cd_source_stats *st) {
    json_t *o = json_object();
    json_object_set_new(o, "key", json_string(c->key));
    json_object_set_new(o, "shard", json_integer(0));
    json_object_set_new(o, "index", json_integer(0));
    json_object_set_new(o, "patient_id", json_string(c->patient_id));
    json_object_set_new(o, "sequence", json_string(c->sequence));
    json_object_set_new(o, "split", json_string(c->split));
    json_object_set_new(o, "label", json_integer(c->label));
    int64_t shape[3] = {s->shape[0], s->shape[1], s->shape[2]};
    json_object_set_new(o, "shape", vec3i(shape));
    json_object_set_new(o, "foreground_voxels", json_integer((json_int_t)s->foreground));
    json_object_set_new(o, "dtype", json_string(cd_dtype_name(s->dtype)));
    json_object_set_new(o, "channels", json_integer(s->channels));
    json_t *src = json_object();
    json_object_set_new(src, "spacing_ras", vec3d(st->spacing_ras));
    json_object_set_new(src, "shape_ras", vec3i(st->shape_ras));
    json_object_set_new(o, "source", src);
    json_t *stats = json_object();
    json_object_set_new(stats, "count", json_integer((json_int_t)st->count));
    json_object_set_new(stats, "sum", json_real(st->sum));
    json_object_set_new(stats, "sumsq", json_real(st->sumsq));
    json_object_set_new(stats, "min", json_real(st->min));
    json_object_set_new(stats, "max", json_real(st->max));
    json_t *smp = json_array();
    for (size_t i = 0; i < st->nsamples; i++) json_array_append_new(smp, json_real(st->samples[i]));
    json_object_set_new(stats, "samples", smp);
    json_object_set_new(o, "stats", stats);
    return o;
}

static void incr(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    json_object_set_new(obj, key, json_integer((v ? json_integer_value(v) : 0) + 1));
}

json_t *cd_manifest_counts(json_t *entries) {
    json_t *o = json_object(), *bs = json_object(), *bq = json_object(), *bl = json_object(), *bss = json_object();
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        const char *split = json_string_value(json_object_get(e, "split"));
        const char *seq = json_string_value(json_object_get(e, "sequence"));
        char label[32];
        snprintf(label, sizeof label, "%lld", (long long)json_integer_value(json_object_get(e, "label")));
        incr(bs, split ? split : "?");
        incr(bq, seq ? seq : "?");
        incr(bl, label);
        json_t *inner = json_object_get(bss, split ? split : "?");
        if (!inner) {
            inner = json_object();
            json_object_set_new(bss, split ? split : "?", inner);
        }
        incr(inner, seq ? seq : "?");
    }
    json_object_set_new(o, "records", json_integer((json_int_t)json_array_size(entries)));
    json_object_set_new(o, "by_split", bs);
    json_object_set_new(o, "by_sequence", bq);
    json_object_set_new(o, "by_label", bl);
    json_object_set_new(o, "by_split_sequence", bss);
    return o;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double cd_percentile_f64(const double *v, size_t n, double p) {
    if (!n) return 0.0;
    double *c = malloc(n * sizeof *c);
    if (!c) return NAN;
    memcpy(c, v, n * sizeof *c);
    qsort(c, n, sizeof *c, cmp_double);
    double h = (double)(n - 1) * p / 100.0;
    size_t k = (size_t)floor(h);
    double r = k + 1 < n ? c[k] + (h - (double)k) * (c[k + 1] - c[k]) : c[n - 1];
    free(c);
    return r;
}

/* Per-axis summary of a list of 3-vectors. */
static json_t *axis_summary(const double *v, size_t n, bool percentiles) {
    json_t *o = json_object();
    static const struct {
        const char *key;
        double p;
    } qs[] = {{"median", 50}, {"p10", 10}, {"p90", 90}, {"min", 0}, {"max", 100}};
    double *col = malloc((n ? n : 1) * sizeof *col);
    for (size_t q = 0; q < sizeof qs / sizeof qs[0]; q++) {
        if (!percentiles && (qs[q].p == 10 || qs[q].p == 90)) continue;
        double r[3];
        for (int a = 0; a < 3; a++) {
            for (size_t i = 0; i < n; i++) col[i] = v[3 * i + a];
            r[a] = cd_percentile_f64(col, n, qs[q].p);
        }
        json_object_set_new(o, qs[q].key, vec3d(r));
    }
    free(col);
    return o;
}

json_t *cd_manifest_statistics(json_t *entries) {
    json_t *out = json_object();
    /* Sequences in first-seen order. */
    json_t *seqs = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        const char *s = json_string_value(json_object_get(e, "sequence"));
        bool seen = false;
        size_t j;
        json_t *x;
        json_array_foreach(seqs, j, x) seen |= !strcmp(json_string_value(x), s ? s : "?");
        if (!seen) json_array_append_new(seqs, json_string(s ? s : "?"));
    }
    size_t q;
    json_t *seqv;
    json_array_foreach(seqs, q, seqv) {
        const char *seq = json_string_value(seqv);
        size_t n = 0, ns = 0;
        json_array_foreach(entries, i, e) {
            const char *s = json_string_value(json_object_get(e, "sequence"));
            if (!strcmp(s ? s : "?", seq)) {
                n++;
                ns += json_array_size(json_object_get(json_object_get(e, "stats"), "samples"));
            }
        }
        double *sp = malloc(3 * n * sizeof *sp), *sh = malloc(3 * n * sizeof *sh), *st = malloc(3 * n * sizeof *st);
        double *samples = malloc((ns ? ns : 1) * sizeof *samples);
        double sum = 0, sumsq = 0, mn = INFINITY, mx = -INFINITY;
        uint64_t count = 0;
        size_t k = 0, m = 0;
        json_array_foreach(entries, i, e) {
            const char *s = json_string_value(json_object_get(e, "sequence"));
            if (strcmp(s ? s : "?", seq)) continue;
            json_t *src = json_object_get(e, "source"), *stats = json_object_get(e, "stats");
            for (int a = 0; a < 3; a++) {
                sp[3 * k + a] = json_number_value(json_array_get(json_object_get(src, "spacing_ras"), (size_t)a));
                sh[3 * k + a] = json_number_value(json_array_get(json_object_get(src, "shape_ras"), (size_t)a));
                st[3 * k + a] = json_number_value(json_array_get(json_object_get(e, "shape"), (size_t)a));
            }
            k++;
            json_int_t c = json_integer_value(json_object_get(stats, "count"));
            if (c > 0) {
                count += (uint64_t)c;
                sum += json_number_value(json_object_get(stats, "sum"));
                sumsq += json_number_value(json_object_get(stats, "sumsq"));
                mn = fmin(mn, json_number_value(json_object_get(stats, "min")));
                mx = fmax(mx, json_number_value(json_object_get(stats, "max")));
            }
            size_t j;
            json_t *x;
            json_array_foreach(json_object_get(stats, "samples"), j, x) samples[m++] = json_number_value(x);
        }
        json_t *o = json_object();
        json_object_set_new(o, "cases", json_integer((json_int_t)n));
        json_object_set_new(o, "spacing", axis_summary(sp, n, true));
        json_object_set_new(o, "shape", axis_summary(sh, n, false));
        json_t *sts = axis_summary(st, n, false);
        json_object_del(sts, "median");
        json_object_set_new(o, "stored_shape", sts);
        json_t *in = json_object();
        double mean = count ? sum / (double)count : 0.0;
        double var = count ? sumsq / (double)count - mean * mean : 0.0;
        json_object_set_new(in, "voxels", json_integer((json_int_t)count));
        json_object_set_new(in, "mean", json_real(mean));
        json_object_set_new(in, "std", json_real(var > 0 ? sqrt(var) : 0.0));
        json_object_set_new(in, "min", json_real(count ? mn : 0.0));
        json_object_set_new(in, "max", json_real(count ? mx : 0.0));
        json_t *pct = json_object();
        static const char *const keys[] = {"0.5", "1", "5", "25", "50", "75", "95", "99", "99.5"};
        for (size_t p = 0; p < 9; p++) json_object_set_new(pct, keys[p], json_real(cd_percentile_f64(samples, m, atof(keys[p]))));
        json_object_set_new(in, "percentiles", pct);
        json_object_set_new(o, "intensity_in_mask", in);
        json_object_set_new(out, seq, o);
        free(sp);
        free(sh);
        free(st);
        free(samples);
    }
    json_decref(seqs);
    return out;
}

/* Writes len bytes of text durably beside path and renames it to path (io/file.h). */
static cd_status write_text_atomic(const char *path, const char *text, size_t len, cd_error *err) {
    cd_write_piece piece = {text, len};
    return cd_file_write_atomic_ex(path, &piece, 1, true, err);
}

static char *dump(json_t *value) { return json_dumps(value, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17)); }

cd_status cd_json_write_atomic(const char *path, json_t *value, cd_error *err) {
    char *text = dump(value);
    if (!text) return cd_fail(err, CD_ERR_NOMEM, "%s: cannot serialise JSON", path);
    size_t len = strlen(text);
    text[len] = '\n'; /* replaces the NUL: the file ends with a newline */
    cd_status st = write_text_atomic(path, text, len + 1, err);
    free(text);
    return st;
}

/* ---- the manifest's own checksum (schemas/shard-format.md, "Manifest checksum") ----
 * The file ends with the 54 bytes  "manifest_xxh3": "<32 lowercase hex>"<LF>}<LF>  and the hex digits are
 * the XXH3-128 (canonical, as xxhsum -H2 prints it) of every byte before them. */
#define SUM_KEY "\"manifest_xxh3\": \"" /* 18 bytes */
#define SUM_END "\"\n}\n"                /* 4 bytes */
#define SUM_KEY_LEN 18
#define SUM_END_LEN 4
#define SUM_TAIL_LEN (SUM_KEY_LEN + 32 + SUM_END_LEN)

static void xxh3_128_hex(const void *data, size_t len, char hex[33]) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(data, len));
    for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", c.digest[i]);
}

cd_status cd_manifest_write_atomic(const char *path, json_t *manifest, cd_error *err) {
    json_object_del(manifest, CD_MANIFEST_SUM_MEMBER); /* a copied manifest's old checksum */
    char *text = dump(manifest);
    if (!text) return cd_fail(err, CD_ERR_NOMEM, "%s: cannot serialise JSON", path);
    size_t len = strlen(text);
    /* jansson ends an indented non-empty object with "\n}": the checksum becomes its last member, laid
     * out as jansson would have written it. */
    if (len < 4 || strcmp(text + len - 2, "\n}")) {
        free(text);
        return cd_fail(err, CD_ERR_INTERNAL, "%s: the manifest is not a non-empty JSON object", path);
    }
    size_t body = len - 2;
    char *out = malloc(body + 3 + SUM_TAIL_LEN + 1);
    if (!out) {
        free(text);
        return cd_fail(err, CD_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(out, text, body);
    memcpy(out + body, ",\n ", 3);
    body += 3;
    free(text);
    char hex[33];
    xxh3_128_hex(out, body, hex);
    memcpy(out + body, SUM_KEY, SUM_KEY_LEN);
    memcpy(out + body + SUM_KEY_LEN, hex, 32);
    memcpy(out + body + SUM_KEY_LEN + 32, SUM_END, SUM_END_LEN);
    cd_status st = write_text_atomic(path, out, body + SUM_TAIL_LEN, err);
    free(out);
    return st;
}

cd_status cd_manifest_check_sum(const char *path, const char *text, size_t len, cd_error *err) {
    bool shaped = len >= SUM_TAIL_LEN + 2 && !memcmp(text + len - SUM_TAIL_LEN, SUM_KEY, SUM_KEY_LEN) &&
                  !memcmp(text + len - SUM_END_LEN, SUM_END, SUM_END_LEN);
    const char *want = text + len - SUM_TAIL_LEN + SUM_KEY_LEN;
    for (int i = 0; shaped && i < 32; i++) shaped = (want[i] >= '0' && want[i] <= '9') || (want[i] >= 'a' && want[i] <= 'f');
    if (shaped) {
        char hex[33];
        xxh3_128_hex(text, len - SUM_TAIL_LEN, hex);
        if (memcmp(hex, want, 32))
            return cd_fail(err, CD_ERR_CORRUPT, "%s: damaged: the XXH3-128 of its bytes is %s, its manifest_xxh3 says %.32s", path, hex,
                           want);
        return CD_OK;
    }
    /* No checksum: an old manifest (format_version 1) gets a message that says what to do. */
    json_t *m = json_loadb(text, len, 0, NULL);
    json_int_t version = json_integer_value(json_object_get(m, "format_version"));
    bool old = m && version == 1 && !json_object_get(m, CD_MANIFEST_SUM_MEMBER);
    json_decref(m);
    if (old)
        return cd_fail(err, CD_ERR_UNSUPPORTED,
                       "%s: format_version 1, from before manifests carried a checksum of their own: run the same "
                       "`cirrdata convert` command again (it rewrites the dataset in place), or convert into a new directory",
                       path);
    return cd_fail(err, CD_ERR_CORRUPT,
                   "%s: damaged or truncated: it does not end with its manifest_xxh3 checksum (schemas/shard-format.md)", path);
}

cd_status cd_manifest_read(const char *path, char **text, size_t *len, cd_error *err) {
    char *t;
    size_t n;
    cd_status st = cd_read_text_file_len(path, 0, "manifest", &t, &n, err);
    if (st != CD_OK) return st;
    if ((st = cd_manifest_check_sum(path, t, n, err)) != CD_OK || !text) {
        free(t);
        return st;
    }
    *text = t;
    if (len) *len = n;
    return CD_OK;
}
