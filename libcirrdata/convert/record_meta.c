/* What convert writes about each case: its record's metadata, its manifest entry and the statistics of
 * its source image. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cirrdata/orient.h"
#include "cirrdata/version.h"
#include "convert/record_meta.h"
#include "core/json_check.h"

/* Unscaled integer images: the sums in int64 (no double conversion or finiteness test per voxel), the
 * mask read row by row (a row without mask voxels is skipped after a branch-free count), and the rows'
 * in-mask counts kept so that the sample pass scans only the rows that hold a sample. The double loop's
 * sums are exact, hence equal to these, while count * max|x|^2 < 2^53 (every partial sum and square is
 * then an integer below 2^53); false (nothing set) when that does not hold. */
#define INT_STATS(T)                                                                                                   \
    do {                                                                                                               \
        const T *src = cd_volume_data_const(image);                                                                    \
        uint64_t cnt = 0;                                                                                              \
        int64_t sum = 0, mn = INT64_MAX, mx = INT64_MIN;                                                               \
        uint64_t sq = 0;                                                                                               \
        for (size_t r = 0; r < nrows; r++) {                                                                           \
            const size_t i0 = r * row;                                                                                 \
            uint32_t c = (uint32_t)row;                                                                                \
            if (m) {                                                                                                   \
                c = 0;                                                                                                 \
                for (size_t i = i0; i < i0 + row; i++) c += m[i] != 0;                                                 \
            }                                                                                                          \
            rows[r] = c;                                                                                               \
            if (!c) continue;                                                                                          \
            cnt += c;                                                                                                  \
            for (size_t i = i0; i < i0 + row; i++) {                                                                   \
                if (m && !m[i]) continue;                                                                              \
                const int64_t x = src[i];                                                                              \
                sum += x;                                                                                              \
                sq += (uint64_t)(x * x);                                                                               \
                mn = x < mn ? x : mn;                                                                                  \
                mx = x > mx ? x : mx;                                                                                  \
            }                                                                                                          \
        }                                                                                                              \
        const double amax = cnt ? fmax(fabs((double)mn), fabs((double)mx)) : 0.0;                                      \
        if ((double)cnt * amax * amax >= 9007199254740992.0) return false;                                             \
        out->count = cnt;                                                                                              \
        out->sum = (double)sum;                                                                                        \
        out->sumsq = (double)sq;                                                                                       \
        out->min = cnt ? (double)mn : INFINITY;                                                                        \
        out->max = cnt ? (double)mx : -INFINITY;                                                                       \
        if (!cnt) return true;                                                                                         \
        const size_t want = cnt < CD_STATS_SAMPLES ? (size_t)cnt : CD_STATS_SAMPLES;                                   \
        uint64_t k = 0, target = 0;                                                                                    \
        size_t next = 0;                                                                                               \
        for (size_t r = 0; r < nrows && next < want; r++) {                                                            \
            if (k + rows[r] <= target) {                                                                               \
                k += rows[r];                                                                                          \
                continue;                                                                                              \
            }                                                                                                          \
            for (size_t i = r * row; i < (r + 1) * row && next < want; i++) {                                          \
                if (m && !m[i]) continue;                                                                              \
                if (k == target) {                                                                                     \
                    out->samples[next++] = (double)src[i];                                                             \
                    target = (uint64_t)next * cnt / want;                                                              \
                }                                                                                                      \
                k++;                                                                                                   \
            }                                                                                                          \
        }                                                                                                              \
        out->nsamples = next;                                                                                          \
        return true;                                                                                                   \
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
#define STATS_LOOP(T)                                                                                                  \
    do {                                                                                                               \
        const T *src = cd_volume_data_const(image);                                                                    \
        for (size_t i = 0; i < n; i++) {                                                                               \
            if (m && !m[i]) continue;                                                                                  \
            double x = scaled ? (double)src[i] * slope + inter : (double)src[i];                                       \
            if (!isfinite(x)) continue;                                                                                \
            out->count++;                                                                                              \
            out->sum += x;                                                                                             \
            out->sumsq += x * x;                                                                                       \
            if (x < out->min) out->min = x;                                                                            \
            if (x > out->max) out->max = x;                                                                            \
        }                                                                                                              \
        if (!out->count) break;                                                                                        \
        /* Evenly spaced samples of the in-mask voxels, for dataset percentiles. */                                    \
        size_t want = out->count < CD_STATS_SAMPLES ? (size_t)out->count : CD_STATS_SAMPLES;                           \
        uint64_t k = 0;                                                                                                \
        size_t next = 0;                                                                                               \
        for (size_t i = 0; i < n && next < want; i++) {                                                                \
            if (m && !m[i]) continue;                                                                                  \
            double x = scaled ? (double)src[i] * slope + inter : (double)src[i];                                       \
            if (!isfinite(x)) continue;                                                                                \
            if (k == (uint64_t)next * out->count / want) out->samples[next++] = x;                                     \
            k++;                                                                                                       \
        }                                                                                                              \
        out->nsamples = next;                                                                                          \
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
    json_object_set_new(orig, "shape", cd_json_vec3i(dims));
    json_object_set_new(orig, "spacing", cd_json_vec3(sp));
    json_object_set_new(orig, "affine", cd_json_mat4(aff));
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

json_t *cd_record_metadata_json(const cd_case *c, const char *root, const char *class_name, const cd_volume *const *src,
                                const cd_sample *s) {
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
    json_object_set_new(o, "affine", cd_json_mat4(s->affine));
    json_object_set_new(o, "spacing", cd_json_vec3(s->spacing));
    json_object_set_new(o, "orientation", json_string(s->orientation));
    json_object_set_new(o, "original", original_json(c->image_paths[0], root, src[0]));
    if (c->nimages == 2 && !c->same_grid)
        json_object_set_new(o, "paired_original", original_json(c->image_paths[1], root, src[1]));
    if (c->nimages > 1 && c->same_grid) {
        /* nnU-Net channels: every channel's file (and its volume, for a 4D file). */
        json_t *files = json_array();
        for (int k = 0; k < c->nimages; k++) {
            json_t *f = json_object();
            json_object_set_new(f, "path", json_string(relative_to(c->image_paths[k], root)));
            json_object_set_new(f, "volume", json_integer(c->image_volumes[k]));
            json_array_append_new(files, f);
        }
        json_object_set_new(o, "channel_files", files);
    }
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
        /* Channel names: the sequences of a pair or nnU-Net's channels ("T1+T2", one name per image), or
         * copies of one sequence (slices). */
        json_t *ch = json_array();
        const char *p = c->sequence;
        for (uint32_t i = 0; i < s->channels; i++) {
            if (c->nimages > 1) {
                const char *plus = strchr(p, '+');
                size_t len = plus && (int)i < c->nimages - 1 ? (size_t)(plus - p) : strlen(p);
                json_array_append_new(ch, json_stringn(p, len));
                p += len + (p[len] == '+');
            } else {
                json_array_append_new(ch, json_string(c->sequence));
            }
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
    json_object_set_new(o, "shape", cd_json_vec3i(shape));
    json_object_set_new(o, "foreground_voxels", json_integer((json_int_t)s->foreground));
    json_object_set_new(o, "dtype", json_string(cd_dtype_name(s->dtype)));
    json_object_set_new(o, "channels", json_integer(s->channels));
    json_t *src = json_object();
    json_object_set_new(src, "spacing_ras", cd_json_vec3(st->spacing_ras));
    json_object_set_new(src, "shape_ras", cd_json_vec3i(st->shape_ras));
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
