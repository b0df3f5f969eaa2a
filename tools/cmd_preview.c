/* cirrdata preview: a converted dataset's samples, or a loader batch, drawn as a PNG picture.
 *
 * One sample: for every channel a row of three orthogonal planes through the liver (axial, coronal,
 * sagittal), sampled onto a common millimetre grid so the physical aspect ratio is right, windowed
 * to the channel's 0.5..99.5 percentiles, with the mask drawn as an outline, and a caption saying
 * what the picture is. --batch: the first (or N-th) batch of cd_loader, the middle axial slice of
 * every sample side by side. Display convention: radiological (patient right on the image left,
 * anterior up in axial views; superior up and anterior left in the others). */
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "font.h"
#include "png_canvas.h"

static const char preview_help[] =
    "usage: cirrdata preview DATASET --sample N -o OUT.png [--size PX]\n"
    "       cirrdata preview DATASET --batch -o OUT.png [--augment nnunet|cirrhosisstage|none|FILE]\n"
    "                        [--seed S] [--batch-size B] [--patch X,Y,Z] [--mode patch|volume|slice]\n"
    "                        [--split NAMES] [--sample N] [--size PX]\n"
    "       cirrdata preview DATASET --variants N -o OUT.png [--size PX]\n\n"
    "Draws a converted dataset's sample as a PNG: per channel, the axial, coronal and sagittal planes\n"
    "through the middle of the mask's bounding box (or of the volume), in millimetre proportions\n"
    "(spacing from the record), windowed to the sample's 0.5..99.5 percentiles per channel, with the\n"
    "mask outlined in red and a caption: label, patient, sequence, split, shape, spacing, recipe,\n"
    "dataset. Radiological convention: the patient's right is on the image's left; axial views have\n"
    "anterior up, coronal and sagittal views superior up (sagittal: anterior on the left). Yellow\n"
    "letters mark the directions, blue ticks where the other two planes cut.\n\n"
    "  --sample N        record N of the dataset (0-based)\n"
    "  -o, --out FILE    the PNG to write\n"
    "  --size PX         pixels for the longest physical extent of a view (default 320; --batch 256)\n"
    "  --batch           draw a training batch from the loader instead: the middle axial slice of\n"
    "                    every sample side by side (with --sample N: batch N of epoch 0, default 0)\n"
    "  --augment NAME    --batch: none (default), nnunet, cirrhosisstage or a pipeline JSON file\n"
    "  --seed S          --batch: loader seed (default 0)\n"
    "  --batch-size B    --batch: samples per batch, 1..64 (default 4)\n"
    "  --patch X,Y,Z     --batch: patch size (patch mode; default 96,96,32) or fixed volume size\n"
    "  --mode MODE       --batch: patch (default), volume or slice\n"
    "  --split NAMES     --batch: comma-separated splits to draw from (default train; * = all)\n"
    "  --variants N      a dataset written by 'convert --augment': case N's original and its K\n"
    "                    augmented copies side by side (middle axial slice of each), with what was\n"
    "                    drawn for each copy\n";

enum { O_SAMPLE = 1000, O_OUT, O_SIZE, O_BATCH, O_AUGMENT, O_SEED, O_BSIZE, O_PATCH, O_MODE, O_SPLIT, O_HELP, O_VARIANTS };

/* ---- colours and layout ---- */

static const png_rgb C_BG = {18, 18, 22}, C_TEXT = {232, 232, 232}, C_DIM = {160, 160, 172}, C_TITLE = {255, 255, 255},
                     C_OUTLINE = {255, 48, 48}, C_ORIENT = {255, 214, 0}, C_TICK = {40, 170, 255}, C_SHADOW = {0, 0, 0},
                     C_FRAME = {70, 70, 80};
#define MARGIN 16
#define GAP 24
#define MIN_CHARS 48 /* the caption gets at least this many characters per line */

/* ---- voxel helpers ---- */

/* Converts n elements of dtype to float; false for a dtype we do not draw. */
static bool to_float(const void *raw, cd_dtype dt, size_t n, float *out) {
    switch (dt) {
#define CONV(T)                                                                                                                            \
    do {                                                                                                                                   \
        const T *s = raw;                                                                                                                  \
        for (size_t i = 0; i < n; i++) out[i] = (float)s[i];                                                                               \
    } while (0)
    case CD_DTYPE_UINT8: CONV(uint8_t); return true;
    case CD_DTYPE_INT8: CONV(int8_t); return true;
    case CD_DTYPE_UINT16: CONV(uint16_t); return true;
    case CD_DTYPE_INT16: CONV(int16_t); return true;
    case CD_DTYPE_UINT32: CONV(uint32_t); return true;
    case CD_DTYPE_INT32: CONV(int32_t); return true;
    case CD_DTYPE_FLOAT32: CONV(float); return true;
    case CD_DTYPE_FLOAT64: CONV(double); return true;
#undef CONV
    case CD_DTYPE_FLOAT16: {
        cd_float16_to_float32(raw, out, n);
        return true;
    }
    default: return false;
    }
}

/* The p-th percentile (NumPy's default, linear) of the finite values of v[0..n). */
static bool percentile_pair(const float *v, size_t n, double p_lo, double p_hi, float *lo, float *hi) {
    float *a = malloc((n ? n : 1) * sizeof *a);
    if (!a) return false;
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i])) a[m++] = v[i];
    if (m == 0) {
        *lo = 0;
        *hi = 1;
        free(a);
        return true;
    }
    float r[2] = {(float)cd_percentile_f32(a, m, p_lo), (float)cd_percentile_f32(a, m, p_hi)};
    free(a);
    *lo = r[0];
    *hi = r[1] > r[0] ? r[1] : r[0] + 1.0f;
    return true;
}

/* ---- planes ---- */

typedef struct view {
    const char *name;
    int fixed, col, row;   /* axis held fixed, axis along columns, axis along rows */
    bool col_flip, row_flip;
    const char *left, *right, *top, *bottom;
} view;

/* Radiological convention on RAS+ voxels (x: left -> right, y: posterior -> anterior, z: inferior -> superior). */
static const view VIEWS[3] = {
    {"axial", 2, 0, 1, true, true, "R", "L", "A", "P"},
    {"coronal", 1, 0, 2, true, true, "R", "L", "S", "I"},
    {"sagittal", 0, 1, 2, true, true, "A", "P", "S", "I"},
};
static const char AXIS_NAME[3] = {'x', 'y', 'z'};

/* Continuous voxel coordinate of display pixel u (of w) along an axis of n voxels. */
static double pixel_to_voxel(int u, int w, int64_t n, bool flip) {
    double f = ((double)u + 0.5) / (double)w;
    return (flip ? 1.0 - f : f) * (double)n - 0.5;
}

/* Display pixel of voxel index i (of n) along an axis drawn w pixels wide. */
static int voxel_to_pixel(int64_t i, int64_t n, int w, bool flip) {
    double f = ((double)i + 0.5) / (double)n;
    int u = (int)floor((flip ? 1.0 - f : f) * (double)w);
    return u < 0 ? 0 : u >= w ? w - 1 : u;
}

static inline size_t vidx(const int64_t d[3], int64_t x, int64_t y, int64_t z) {
    return ((size_t)x * (size_t)d[1] + (size_t)y) * (size_t)d[2] + (size_t)z;
}

/* Samples the plane (fixed axis at index pos) of one channel onto w x h display pixels: bilinear for
 * the image, nearest for the mask (mask/mout may be NULL). */
static void sample_plane(const float *img, const uint8_t *mask, const int64_t d[3], const view *vw, int64_t pos, int w, int h,
                         float *out, uint8_t *mout) {
    for (int v = 0; v < h; v++) {
        double rc = pixel_to_voxel(v, h, d[vw->row], vw->row_flip);
        rc = rc < 0 ? 0 : rc > (double)(d[vw->row] - 1) ? (double)(d[vw->row] - 1) : rc;
        int64_t r0 = (int64_t)floor(rc), r1 = r0 + 1 < d[vw->row] ? r0 + 1 : r0, rn = (int64_t)floor(rc + 0.5);
        double fr = rc - (double)r0;
        for (int u = 0; u < w; u++) {
            double cc = pixel_to_voxel(u, w, d[vw->col], vw->col_flip);
            cc = cc < 0 ? 0 : cc > (double)(d[vw->col] - 1) ? (double)(d[vw->col] - 1) : cc;
            int64_t c0 = (int64_t)floor(cc), c1 = c0 + 1 < d[vw->col] ? c0 + 1 : c0, cn = (int64_t)floor(cc + 0.5);
            double fc = cc - (double)c0;
            int64_t p[3];
            p[vw->fixed] = pos;
            double acc = 0;
            const int64_t rs[2] = {r0, r1}, cs[2] = {c0, c1};
            const double wr[2] = {1 - fr, fr}, wc[2] = {1 - fc, fc};
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++) {
                    double wt = wr[a] * wc[b];
                    if (wt == 0) continue;
                    p[vw->row] = rs[a];
                    p[vw->col] = cs[b];
                    acc += wt * img[vidx(d, p[0], p[1], p[2])];
                }
            out[(size_t)v * (size_t)w + (size_t)u] = (float)acc;
            if (mask) {
                p[vw->row] = rn;
                p[vw->col] = cn;
                mout[(size_t)v * (size_t)w + (size_t)u] = mask[vidx(d, p[0], p[1], p[2])] != 0;
            }
        }
    }
}

/* A letter with a one-pixel shadow, readable on any grey. */
static void shadow_text(png_canvas *cv, int x, int y, const char *s, int scale, png_rgb colour) {
    png_canvas_text(cv, x + 1, y + 1, s, scale, C_SHADOW);
    png_canvas_text(cv, x, y, s, scale, colour);
}

/* Draws one plane at (x, y): grey image, outline, frame, orientation letters; ticks (tick_col / tick_row
 * >= 0) mark where the other planes cut. */
static void draw_plane(png_canvas *cv, int x, int y, int w, int h, const float *pix, const uint8_t *mpix, float lo, float hi,
                       const view *vw, bool letters, int tick_col, int tick_row, int ts) {
    png_canvas_fill(cv, x - 1, y - 1, w + 2, h + 2, C_FRAME);
    png_canvas_grey(cv, x, y, w, h, pix, lo, hi);
    if (mpix) png_canvas_outline(cv, x, y, w, h, mpix, C_OUTLINE);
    int lw = FONT_GLYPH_W * ts, lh = FONT_CAP_H * ts, pad = 3;
    if (letters && w >= 3 * lw + 4 * pad && h >= 3 * lh + 4 * pad) {
        shadow_text(cv, x + pad, y + (h - lh) / 2, vw->left, ts, C_ORIENT);
        shadow_text(cv, x + w - pad - lw - 1, y + (h - lh) / 2, vw->right, ts, C_ORIENT);
        shadow_text(cv, x + (w - lw) / 2, y + pad, vw->top, ts, C_ORIENT);
        shadow_text(cv, x + (w - lw) / 2, y + h - pad - lh - 1, vw->bottom, ts, C_ORIENT);
    }
    int tl = 6;
    if (tick_col >= 0) {
        png_canvas_fill(cv, x + tick_col, y - 1 - tl, 1 + (ts > 1), tl, C_TICK);
        png_canvas_fill(cv, x + tick_col, y + h + 1, 1 + (ts > 1), tl, C_TICK);
    }
    if (tick_row >= 0) {
        png_canvas_fill(cv, x - 1 - tl, y + tick_row, tl, 1 + (ts > 1), C_TICK);
        png_canvas_fill(cv, x + w + 1, y + tick_row, tl, 1 + (ts > 1), C_TICK);
    }
}

/* ---- captions ---- */

typedef struct lines {
    char *text[64];
    png_rgb colour[64];
    int n;
} lines;

static void add_line(lines *L, png_rgb colour, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add_line(lines *L, png_rgb colour, const char *fmt, ...) {
    if (L->n >= 64) return;
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    if (!s) return;
    L->text[L->n] = s;
    L->colour[L->n++] = colour;
}

/* Wraps every line to at most maxc characters (at a space where there is one). */
static void wrap_lines(lines *L, int maxc) {
    if (maxc < 8) maxc = 8;
    lines out = {.n = 0};
    for (int i = 0; i < L->n; i++) {
        const char *s = L->text[i];
        int indent = 0;
        while (*s) {
            int room = maxc - indent, len = (int)strlen(s);
            int take = len <= room ? len : room;
            if (take < len) {
                int sp = take;
                while (sp > room / 2 && s[sp] != ' ') sp--;
                if (s[sp] == ' ') take = sp;
            }
            add_line(&out, L->colour[i], "%*s%.*s", indent, "", take, s);
            s += take;
            while (*s == ' ') s++;
            indent = 2;
        }
        free(L->text[i]);
    }
    *L = out;
}

static int lines_height(const lines *L, int ts) { return L->n * FONT_CELL_H * ts; }

static void draw_lines(png_canvas *cv, const lines *L, int x, int y, int ts) {
    for (int i = 0; i < L->n; i++) png_canvas_text(cv, x, y + i * FONT_CELL_H * ts, L->text[i], ts, L->colour[i]);
}

static void free_lines(lines *L) {
    for (int i = 0; i < L->n; i++) free(L->text[i]);
    L->n = 0;
}

/* ---- reading a record ---- */

static const char *jstr(json_t *o, const char *key, const char *fallback) {
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : fallback;
}

/* The spacing of a record: metadata "spacing", else the column norms of "affine", else 1 mm. */
static void record_spacing(json_t *meta, double sp[3]) {
    json_t *a = json_object_get(meta, "spacing"), *aff = json_object_get(meta, "affine");
    for (int i = 0; i < 3; i++) {
        double v = json_number_value(json_array_get(a, (size_t)i));
        if (!(v > 0) && json_is_array(aff)) {
            double s = 0;
            for (int r = 0; r < 3; r++) {
                double e = json_number_value(json_array_get(json_array_get(aff, (size_t)r), (size_t)i));
                s += e * e;
            }
            v = sqrt(s);
        }
        sp[i] = v > 0 && isfinite(v) ? v : 1.0;
    }
}

static const char *class_name(json_t *manifest, json_t *meta, long label) {
    const char *s = json_string_value(json_object_get(meta, "class_name"));
    if (s) return s;
    s = label >= 0 ? json_string_value(json_array_get(json_object_get(manifest, "classes"), (size_t)label)) : NULL;
    return s ? s : "?";
}

static int fail_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail_msg(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("cirrdata: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_FAIL;
}

typedef struct sample {
    json_t *meta;
    int64_t d[3];
    uint32_t channels;
    cd_dtype dtype;
    float *image;   /* (C, X, Y, Z) */
    uint8_t *mask;  /* (X, Y, Z): foreground, or NULL */
} sample;

static void sample_free(sample *s) {
    json_decref(s->meta);
    free(s->image);
    free(s->mask);
}

static int read_sample(cd_dataset *ds, const char *dir, uint64_t n, sample *s) {
    memset(s, 0, sizeof *s);
    cd_error err;
    cd_record *rec;
    const cd_shard *sh;
    if (cd_dataset_read_record(ds, n, &rec, &sh, &err) != CD_OK) return cli_fail_error(&err);
    int rc = CLI_FAIL;
    void *raw = NULL;
    s->meta = json_loads(cd_record_metadata(rec), 0, NULL);
    int ti = cd_record_find_tensor(rec, "image"), mi = cd_record_find_tensor(rec, "mask");
    if (!s->meta) {
        fail_msg("%s: record %llu: metadata is not JSON", dir, (unsigned long long)n);
        goto done;
    }
    if (ti < 0) {
        fail_msg("%s: record %llu has no 'image' tensor", dir, (unsigned long long)n);
        goto done;
    }
    cd_tensor_info ti_info;
    cd_record_tensor_info(rec, (uint32_t)ti, &ti_info);
    for (int a = 0; a < 3; a++) s->d[a] = ti_info.shape[a];
    s->channels = ti_info.channels;
    s->dtype = ti_info.dtype;
    size_t nvox = (size_t)s->d[0] * (size_t)s->d[1] * (size_t)s->d[2], nel = nvox * s->channels;
    if (nel == 0) {
        fail_msg("%s: record %llu: empty image tensor", dir, (unsigned long long)n);
        goto done;
    }
    raw = malloc(nel * cd_dtype_size(ti_info.dtype));
    s->image = malloc(nel * sizeof *s->image);
    if (!raw || !s->image) {
        fail_msg("%s: record %llu: out of memory for the image", dir, (unsigned long long)n);
        goto done;
    }
    if (cd_record_read_tensor(sh, rec, (uint32_t)ti, raw, &err) != CD_OK) {
        rc = cli_fail_error(&err);
        goto done;
    }
    if (!to_float(raw, ti_info.dtype, nel, s->image)) {
        fail_msg("%s: record %llu: cannot draw an image of dtype %s", dir, (unsigned long long)n, cd_dtype_name(ti_info.dtype));
        goto done;
    }
    free(raw);
    raw = NULL;
    if (mi >= 0) {
        cd_tensor_info mi_info;
        cd_record_tensor_info(rec, (uint32_t)mi, &mi_info);
        if (mi_info.shape[0] != ti_info.shape[0] || mi_info.shape[1] != ti_info.shape[1] || mi_info.shape[2] != ti_info.shape[2]) {
            fail_msg("%s: record %llu: mask shape differs from the image's", dir, (unsigned long long)n);
            goto done;
        }
        size_t mel = nvox * mi_info.channels;
        raw = malloc(mel * cd_dtype_size(mi_info.dtype));
        float *mf = malloc(mel * sizeof *mf);
        s->mask = malloc(nvox);
        if (!raw || !mf || !s->mask) {
            free(mf);
            fail_msg("%s: record %llu: out of memory for the mask", dir, (unsigned long long)n);
            goto done;
        }
        if (cd_record_read_tensor(sh, rec, (uint32_t)mi, raw, &err) != CD_OK || !to_float(raw, mi_info.dtype, mel, mf)) {
            free(mf);
            rc = err.status != CD_OK ? cli_fail_error(&err) : fail_msg("%s: record %llu: cannot read the mask", dir, (unsigned long long)n);
            goto done;
        }
        /* One channel: nonzero is foreground; one-hot channels: a foreground channel beats channel 0. */
        for (size_t i = 0; i < nvox; i++) {
            if (mi_info.channels <= 1) {
                s->mask[i] = mf[i] > 0;
            } else {
                float best = mf[i];
                uint8_t fg = 0;
                for (uint32_t c = 1; c < mi_info.channels; c++)
                    if (mf[c * nvox + i] > best) {
                        best = mf[c * nvox + i];
                        fg = 1;
                    }
                s->mask[i] = fg;
            }
        }
        free(mf);
    }
    rc = CLI_OK;
done:
    free(raw);
    cd_record_destroy(rec);
    if (rc != CLI_OK) sample_free(s);
    return rc;
}

/* Channel names from a sequence like "T1+T2". */
static void channel_name(const char *sequence, uint32_t c, uint32_t channels, char *out, size_t cap) {
    if (channels <= 1) {
        snprintf(out, cap, "%s", "");
        return;
    }
    const char *p = sequence;
    for (uint32_t i = 0; i < c && p; i++) {
        p = strchr(p, '+');
        if (p) p++;
    }
    size_t len = p ? strcspn(p, "+") : 0;
    if (p && len > 0 && len < 16 && strchr(sequence, '+')) snprintf(out, cap, "ch%u %.*s  ", c, (int)len, p);
    else snprintf(out, cap, "ch%u  ", c);
}

static const char *abs_path(const char *p, char *buf) {
    char *r = realpath(p, buf);
    return r ? r : p;
}

/* ---- one sample ---- */

static int preview_sample(const char *dir, uint64_t n, const char *out, int size) {
    cd_dataset *ds;
    cd_error err;
    if (cd_dataset_open(dir, &ds, &err) != CD_OK) return cli_fail_error(&err);
    uint64_t count = cd_dataset_record_count(ds);
    if (n >= count) {
        cd_dataset_close(ds);
        if (count == 0) return fail_msg("%s: sample %llu is out of range: the dataset holds no records", dir, (unsigned long long)n);
        return fail_msg("%s: sample %llu is out of range: the dataset holds %llu records (0..%llu)", dir, (unsigned long long)n,
                        (unsigned long long)count, (unsigned long long)(count - 1));
    }
    json_t *manifest = json_loads(cd_dataset_manifest(ds), 0, NULL);
    sample s;
    int rc = read_sample(ds, dir, n, &s);
    cd_dataset_close(ds);
    if (rc != CLI_OK) {
        json_decref(manifest);
        return rc;
    }
    double sp[3];
    record_spacing(s.meta, sp);
    const int64_t *d = s.d;
    size_t nvox = (size_t)d[0] * (size_t)d[1] * (size_t)d[2];

    /* Where to cut: the middle of the mask's bounding box, else of the volume. */
    int64_t lo[3] = {INT64_MAX, INT64_MAX, INT64_MAX}, hi[3] = {-1, -1, -1}, centre[3];
    if (s.mask)
        for (int64_t x = 0; x < d[0]; x++)
            for (int64_t y = 0; y < d[1]; y++)
                for (int64_t z = 0; z < d[2]; z++)
                    if (s.mask[vidx(d, x, y, z)]) {
                        int64_t p[3] = {x, y, z};
                        for (int a = 0; a < 3; a++) {
                            if (p[a] < lo[a]) lo[a] = p[a];
                            if (p[a] > hi[a]) hi[a] = p[a];
                        }
                    }
    bool has_fg = hi[0] >= 0;
    for (int a = 0; a < 3; a++) centre[a] = has_fg ? (lo[a] + hi[a]) / 2 : d[a] / 2;

    /* One millimetre scale for all views: the longest extent gets `size` pixels. */
    double ext[3], longest = 0;
    for (int a = 0; a < 3; a++) {
        ext[a] = (double)d[a] * sp[a];
        if (ext[a] > longest) longest = ext[a];
    }
    double scale = (double)size / longest;
    int pw[3], ph[3];
    for (int v = 0; v < 3; v++) {
        pw[v] = (int)lround(ext[VIEWS[v].col] * scale);
        ph[v] = (int)lround(ext[VIEWS[v].row] * scale);
        if (pw[v] < 1) pw[v] = 1;
        if (ph[v] < 1) ph[v] = 1;
    }
    int row_h = 0, panels_w = 0;
    for (int v = 0; v < 3; v++) {
        if (ph[v] > row_h) row_h = ph[v];
        panels_w += pw[v] + (v ? GAP : 0);
    }
    int ts = panels_w >= 360 ? 2 : 1;
    /* Panel headers, e.g. "ch1 T2  coronal y 106/192"; a column is as wide as its panel or header. */
    char heads[8][3][96];
    int colw[3], cpc = s.channels < 8 ? (int)s.channels : 8;
    const char *seq = jstr(s.meta, "sequence", "?");
    panels_w = 0;
    for (int v = 0; v < 3; v++) {
        colw[v] = pw[v];
        for (int c = 0; c < cpc; c++) {
            char cname[32];
            channel_name(seq, (uint32_t)c, s.channels, cname, sizeof cname);
            snprintf(heads[c][v], sizeof heads[c][v], "%s%s %c %lld/%lld", cname, VIEWS[v].name, AXIS_NAME[VIEWS[v].fixed],
                     (long long)centre[VIEWS[v].fixed], (long long)d[VIEWS[v].fixed]);
            int tw = png_canvas_text_width(heads[c][v], ts);
            if (tw > colw[v]) colw[v] = tw;
        }
        panels_w += colw[v] + (v ? GAP : 0);
    }
    int width = panels_w + 2 * MARGIN;
    if (width < MIN_CHARS * FONT_CELL_W * ts + 2 * MARGIN) width = MIN_CHARS * FONT_CELL_W * ts + 2 * MARGIN;
    int maxc = (width - 2 * MARGIN) / (FONT_CELL_W * ts);

    long label = (long)json_integer_value(json_object_get(s.meta, "label"));
    char pathbuf[PATH_MAX];
    lines title = {.n = 0}, cap = {.n = 0};
    add_line(&title, C_TITLE, "%s (label %ld)   patient %s   %s   %s", class_name(manifest, s.meta, label), label,
             jstr(s.meta, "patient_id", "?"), seq, jstr(s.meta, "split", "?"));
    add_line(&cap, C_TEXT, "record %llu of %llu (%s): %lld x %lld x %lld voxels, %u channel%s, %s", (unsigned long long)n,
             (unsigned long long)count, jstr(s.meta, "key", "?"), (long long)d[0], (long long)d[1], (long long)d[2], s.channels,
             s.channels == 1 ? "" : "s", cd_dtype_name(s.dtype));
    add_line(&cap, C_TEXT, "spacing %.4g x %.4g x %.4g mm (%.0f x %.0f x %.0f mm), recipe %s", sp[0], sp[1], sp[2], ext[0], ext[1],
             ext[2], jstr(json_object_get(manifest, "recipe"), "name", "?"));
    float *win = malloc(2 * s.channels * sizeof *win);
    if (!win) {
        rc = fail_msg("out of memory");
        goto done_nocanvas;
    }
    for (uint32_t c = 0; c < s.channels; c++)
        if (!percentile_pair(s.image + (size_t)c * nvox, nvox, 0.5, 99.5, &win[2 * c], &win[2 * c + 1])) {
            free(win);
            rc = fail_msg("out of memory");
            goto done_nocanvas;
        }
    {
        char buf[512];
        int len = snprintf(buf, sizeof buf, "window p0.5..p99.5:");
        for (uint32_t c = 0; c < s.channels && len < (int)sizeof buf - 64; c++)
        {
            char cn[16] = "";
            if (s.channels > 1) snprintf(cn, sizeof cn, "ch%u ", c);
            len += snprintf(buf + len, sizeof buf - (size_t)len, "%s %s%.5g .. %.5g", c ? "," : "", cn, win[2 * c], win[2 * c + 1]);
        }
        add_line(&cap, C_TEXT, "%s", buf);
        if ((int)s.channels > cpc) add_line(&cap, C_TEXT, "showing channels 0..%d of %u", cpc - 1, s.channels);
    }
    if (s.mask)
        add_line(&cap, C_TEXT, has_fg ? "mask outlined in red; planes cut through the middle of its bounding box"
                                      : "mask is empty; planes cut through the middle of the volume");
    else add_line(&cap, C_TEXT, "no mask; planes cut through the middle of the volume");
    add_line(&cap, C_DIM, "radiological view: patient right on image left; blue ticks: the other planes");
    add_line(&cap, C_DIM, "dataset %s", abs_path(dir, pathbuf));
    int tts = png_canvas_text_width(title.text[0], ts + 1) <= width - 2 * MARGIN ? ts + 1 : ts;
    wrap_lines(&title, (width - 2 * MARGIN) / (FONT_CELL_W * tts));
    wrap_lines(&cap, maxc);

    int head_h = FONT_GLYPH_H * ts + 10; /* panel header plus room for the ticks */
    int rows_h = cpc * (head_h + row_h + GAP);
    int height = MARGIN + lines_height(&title, tts) + 6 + rows_h + lines_height(&cap, ts) + MARGIN;
    png_canvas cv;
    if (png_canvas_init(&cv, width, height, C_BG, &err) != CD_OK) {
        free(win);
        rc = cli_fail_error(&err);
        goto done_nocanvas;
    }
    int y = MARGIN;
    draw_lines(&cv, &title, MARGIN, y, tts);
    y += lines_height(&title, tts) + 6;

    size_t maxpix = 0;
    for (int v = 0; v < 3; v++)
        if ((size_t)pw[v] * (size_t)ph[v] > maxpix) maxpix = (size_t)pw[v] * (size_t)ph[v];
    float *pix = malloc(maxpix * sizeof *pix);
    uint8_t *mpix = malloc(maxpix);
    if (!pix || !mpix) {
        free(pix);
        free(mpix);
        free(win);
        png_canvas_free(&cv);
        rc = fail_msg("out of memory");
        goto done_nocanvas;
    }
    for (uint32_t c = 0; c < (uint32_t)cpc; c++) {
        int x = MARGIN;
        for (int v = 0; v < 3; v++) {
            const view *vw = &VIEWS[v];
            int64_t pos = centre[vw->fixed];
            png_canvas_text(&cv, x, y, heads[c][v], ts, C_TEXT);
            int py = y + head_h + (row_h - ph[v]) / 2;
            sample_plane(s.image + (size_t)c * nvox, s.mask, d, vw, pos, pw[v], ph[v], pix, s.mask ? mpix : NULL);
            /* Ticks: where the two other planes (fixed along this view's column and row axes) cut. */
            int tc = voxel_to_pixel(centre[vw->col], d[vw->col], pw[v], vw->col_flip);
            int tr = voxel_to_pixel(centre[vw->row], d[vw->row], ph[v], vw->row_flip);
            draw_plane(&cv, x, py, pw[v], ph[v], pix, s.mask ? mpix : NULL, win[2 * c], win[2 * c + 1], vw, true, tc, tr, ts);
            x += colw[v] + GAP;
        }
        y += head_h + row_h + GAP;
    }
    draw_lines(&cv, &cap, MARGIN, y, ts);
    free(pix);
    free(mpix);
    if (png_canvas_write(&cv, out, &err) != CD_OK) rc = cli_fail_error(&err);
    else {
        printf("wrote %s (%d x %d): record %llu, %s, window", out, width, height, (unsigned long long)n, jstr(s.meta, "key", "?"));
        for (uint32_t c = 0; c < s.channels; c++) printf(" %.9g..%.9g", win[2 * c], win[2 * c + 1]);
        printf("\n");
    }
    png_canvas_free(&cv);
    free(win);
done_nocanvas:
    free_lines(&title);
    free_lines(&cap);
    sample_free(&s);
    json_decref(manifest);
    return rc;
}

/* ---- a loader batch ---- */

typedef struct batch_opts {
    const char *augment, *splits;
    uint64_t seed, number;
    uint32_t batch_size;
    int64_t patch[3];
    bool patch_set;
    cd_loader_mode mode;
} batch_opts;

static const char *mode_name(cd_loader_mode m) { return m == CD_LOADER_VOLUME ? "volume" : m == CD_LOADER_SLICE ? "slice" : "patch"; }

static int preview_batch(const char *dir, const batch_opts *bo, const char *out, int size) {
    cd_error err;
    cd_dataset *ds;
    if (cd_dataset_open(dir, &ds, &err) != CD_OK) return cli_fail_error(&err);
    json_t *manifest = json_loads(cd_dataset_manifest(ds), 0, NULL);
    cd_loader_options lo;
    cd_loader_options_init(&lo);
    lo.dataset = dir;
    lo.mode = bo->mode;
    if (bo->patch_set) memcpy(lo.patch, bo->patch, sizeof lo.patch);
    else if (bo->mode != CD_LOADER_PATCH) memset(lo.patch, 0, sizeof lo.patch);
    lo.batch_size = bo->batch_size;
    lo.seed = bo->seed;
    lo.augment = bo->augment;
    if (bo->splits) lo.splits = bo->splits;
    lo.world_size = 1;
    lo.rank = 0;
    int rc = CLI_FAIL;
    cd_loader *ld = NULL;
    cd_batch *b = NULL;
    png_canvas cv = {0};
    lines title = {.n = 0}, cap = {.n = 0};
    float *pix = NULL;
    uint8_t *mpix = NULL;
    if (cd_loader_create(&lo, &ld, &err) != CD_OK) {
        rc = cli_fail_error(&err);
        goto done;
    }
    uint64_t nbatches = cd_loader_epoch_batches(ld);
    if (bo->number >= nbatches) {
        rc = fail_msg("%s: batch %llu is out of range: an epoch of split '%s' has %llu batch%s of %u", dir, (unsigned long long)bo->number,
                      lo.splits, (unsigned long long)nbatches, nbatches == 1 ? "" : "es", lo.batch_size);
        goto done;
    }
    for (uint64_t k = 0; k <= bo->number; k++) {
        if (b) cd_loader_release(ld, b);
        b = NULL;
        if (cd_loader_next(ld, &b, &err) != CD_OK) {
            rc = cli_fail_error(&err);
            goto done;
        }
        if (!b) {
            rc = fail_msg("%s: the loader ended the epoch before batch %llu", dir, (unsigned long long)bo->number);
            goto done;
        }
    }
    uint32_t B = b->size, C = b->channels;
    int64_t d[3] = {b->shape[0], b->shape[1], b->shape[2]};
    size_t nvox = (size_t)d[0] * (size_t)d[1] * (size_t)d[2];
    int64_t zmid = d[2] / 2;
    /* Spacing per sample from its record, one millimetre scale for all. */
    double (*sp)[3] = calloc(B ? B : 1, sizeof *sp);
    if (!sp) {
        rc = fail_msg("out of memory");
        goto done;
    }
    double longest = 0;
    for (uint32_t i = 0; i < B; i++) {
        cd_record *rec;
        const cd_shard *sh;
        if (cd_dataset_read_record(ds, (uint64_t)b->index[i], &rec, &sh, &err) != CD_OK) {
            free(sp);
            rc = cli_fail_error(&err);
            goto done;
        }
        json_t *meta = json_loads(cd_record_metadata(rec), 0, NULL);
        record_spacing(meta, sp[i]);
        json_decref(meta);
        cd_record_destroy(rec);
        for (int a = 0; a < 2; a++)
            if ((double)d[a] * sp[i][a] > longest) longest = (double)d[a] * sp[i][a];
    }
    double scale = (double)size / longest;
    int cols = B < 4 ? (int)B : 4, grid_rows = ((int)B + cols - 1) / cols;
    int cell_w = 0, panel_h = 0;
    for (uint32_t i = 0; i < B; i++) {
        int w = (int)lround((double)d[0] * sp[i][0] * scale), h = (int)lround((double)d[1] * sp[i][1] * scale);
        if (w > cell_w) cell_w = w;
        if (h > panel_h) panel_h = h;
    }
    if (cell_w < 1) cell_w = 1;
    if (panel_h < 1) panel_h = 1;
    int grid_w = cols * cell_w + (cols - 1) * GAP;
    int ts = grid_w >= 360 ? 2 : 1;
    json_t *classes = json_object_get(manifest, "classes");
    /* Cell headers: "#0  record 3" and "label 1 moderate  z 16/32"; a cell is as wide as its longest. */
    char (*heads)[2][96] = calloc(B ? B : 1, sizeof *heads);
    if (!heads) {
        free(sp);
        rc = fail_msg("out of memory");
        goto done;
    }
    for (uint32_t i = 0; i < B; i++) {
        const char *cn = b->label[i] >= 0 ? json_string_value(json_array_get(classes, (size_t)b->label[i])) : NULL;
        snprintf(heads[i][0], sizeof heads[i][0], "#%u  record %lld", i, (long long)b->index[i]);
        if (b->slice[i] >= 0)
            snprintf(heads[i][1], sizeof heads[i][1], "label %d %s  slice z %lld", b->label[i], cn ? cn : "?", (long long)b->slice[i]);
        else snprintf(heads[i][1], sizeof heads[i][1], "label %d %s  z %lld/%lld", b->label[i], cn ? cn : "?", (long long)zmid, (long long)d[2]);
        for (int k = 0; k < 2; k++) {
            int tw = png_canvas_text_width(heads[i][k], ts);
            if (tw > cell_w) cell_w = tw;
        }
    }
    grid_w = cols * cell_w + (cols - 1) * GAP;
    int width = grid_w + 2 * MARGIN;
    if (width < MIN_CHARS * FONT_CELL_W * ts + 2 * MARGIN) width = MIN_CHARS * FONT_CELL_W * ts + 2 * MARGIN;
    int maxc = (width - 2 * MARGIN) / (FONT_CELL_W * ts);

    add_line(&title, C_TITLE, "batch %llu of epoch %llu: %u sample%s, augment %s, seed %llu", (unsigned long long)b->number,
             (unsigned long long)b->epoch, B, B == 1 ? "" : "s", bo->augment, (unsigned long long)bo->seed);
    {
        char idx[400], lab[600];
        int li = 0, ll = 0;
        idx[0] = lab[0] = '\0';
        for (uint32_t i = 0; i < B && li < (int)sizeof idx - 32 && ll < (int)sizeof lab - 48; i++) {
            const char *cn = b->label[i] >= 0 ? json_string_value(json_array_get(classes, (size_t)b->label[i])) : NULL;
            li += snprintf(idx + li, sizeof idx - (size_t)li, "%s%lld", i ? ", " : "", (long long)b->index[i]);
            ll += snprintf(lab + ll, sizeof lab - (size_t)ll, "%s%d %s", i ? ", " : "", b->label[i], cn ? cn : "?");
        }
        add_line(&cap, C_TEXT, "indices %s", idx);
        add_line(&cap, C_TEXT, "labels %s", lab);
    }
    add_line(&cap, C_TEXT, "mode %s, samples %lld x %lld x %lld, %u channel%s, splits %s, recipe %s", mode_name(bo->mode), (long long)d[0],
             (long long)d[1], (long long)d[2], C, C == 1 ? "" : "s", lo.splits, jstr(json_object_get(manifest, "recipe"), "name", "?"));
    add_line(&cap, C_TEXT, "%s; window p0.5..p99.5 of each sample; mask outlined in red",
             d[2] > 1 ? "middle axial slice of each sample" : "each sample's axial slice");
    bool letters = !strcmp(bo->augment, "none");
    add_line(&cap, C_DIM, letters ? "radiological view: patient right on image left, anterior up"
                                  : "radiological view as stored (patient right on image left, anterior up) before augmentation; "
                                    "its flips and rotations move the directions, so no R/L/A/P letters");
    char pathbuf[PATH_MAX];
    add_line(&cap, C_DIM, "dataset %s", abs_path(dir, pathbuf));
    int tts = png_canvas_text_width(title.text[0], ts + 1) <= width - 2 * MARGIN ? ts + 1 : ts;
    wrap_lines(&title, (width - 2 * MARGIN) / (FONT_CELL_W * tts));
    wrap_lines(&cap, maxc);

    int head_h = 2 * FONT_CELL_H * ts + 4;
    int cell_h = head_h + (int)C * (panel_h + 8) - 8;
    int height = MARGIN + lines_height(&title, tts) + 8 + grid_rows * (cell_h + GAP) + lines_height(&cap, ts) + MARGIN;
    if (png_canvas_init(&cv, width, height, C_BG, &err) != CD_OK) {
        free(sp);
        free(heads);
        rc = cli_fail_error(&err);
        goto done;
    }
    int y0 = MARGIN;
    draw_lines(&cv, &title, MARGIN, y0, tts);
    y0 += lines_height(&title, tts) + 8;
    pix = malloc((size_t)cell_w * (size_t)panel_h * sizeof *pix);
    mpix = malloc((size_t)cell_w * (size_t)panel_h);
    if (!pix || !mpix) {
        free(sp);
        free(heads);
        rc = fail_msg("out of memory");
        goto done;
    }
    const view *ax = &VIEWS[0];
    for (uint32_t i = 0; i < B; i++) {
        int gx = MARGIN + (int)(i % (uint32_t)cols) * (cell_w + GAP), gy = y0 + (int)(i / (uint32_t)cols) * (cell_h + GAP);
        png_canvas_text(&cv, gx, gy, heads[i][0], ts, C_TEXT);
        png_canvas_text(&cv, gx, gy + FONT_CELL_H * ts, heads[i][1], ts, C_DIM);
        int w = (int)lround((double)d[0] * sp[i][0] * scale), h = (int)lround((double)d[1] * sp[i][1] * scale);
        if (w < 1) w = 1;
        if (h < 1) h = 1;
        for (uint32_t c = 0; c < C; c++) {
            const float *img = b->image + ((size_t)i * C + c) * nvox;
            const uint8_t *msk = b->mask ? b->mask + (size_t)i * nvox : NULL;
            float wlo, whi;
            if (!percentile_pair(img, nvox, 0.5, 99.5, &wlo, &whi)) {
                free(sp);
                free(heads);
                rc = fail_msg("out of memory");
                goto done;
            }
            sample_plane(img, msk, d, ax, zmid, w, h, pix, msk ? mpix : NULL);
            int py = gy + head_h + (int)c * (panel_h + 8);
            draw_plane(&cv, gx, py, w, h, pix, msk ? mpix : NULL, wlo, whi, ax, letters, -1, -1, ts);
            if (C > 1) {
                char chl[16];
                snprintf(chl, sizeof chl, "ch%u", c);
                shadow_text(&cv, gx + 3, py + h - FONT_GLYPH_H * ts - 3, chl, ts, C_TEXT);
            }
        }
    }
    free(sp);
    free(heads);
    draw_lines(&cv, &cap, MARGIN, height - MARGIN - lines_height(&cap, ts), ts);
    if (png_canvas_write(&cv, out, &err) != CD_OK) {
        rc = cli_fail_error(&err);
        goto done;
    }
    printf("wrote %s (%d x %d): batch %llu, %u sample%s\n", out, width, height, (unsigned long long)b->number, B, B == 1 ? "" : "s");
    rc = CLI_OK;
done:
    free(pix);
    free(mpix);
    png_canvas_free(&cv);
    free_lines(&title);
    free_lines(&cap);
    if (b) cd_loader_release(ld, b);
    cd_loader_destroy(ld);
    json_decref(manifest);
    cd_dataset_close(ds);
    return rc;
}

/* ---- the augmented copies of one case ---- */

/* "rot 3,-12,0 deg  scale 1.12  mirror xz  gamma 0.81": what was drawn for a copy, briefly. */
static void describe_params(json_t *aug, char *out, size_t cap) {
    json_t *p = json_object_get(aug, "params");
    size_t k = 0;
    out[0] = 0;
    if (!p) {
        json_t *sl = json_object_get(aug, "slices");
        snprintf(out, cap, "%zu slices, each with its own draw", json_array_size(sl));
        return;
    }
    json_t *rot = json_object_get(p, "rotation_rad"), *mi = json_object_get(p, "mirror");
    double r[3];
    for (int a = 0; a < 3; a++) r[a] = json_number_value(json_array_get(rot, (size_t)a)) * 180.0 / M_PI;
    if (r[0] != 0 || r[1] != 0 || r[2] != 0) k += (size_t)snprintf(out + k, cap - k, "rot %.0f,%.0f,%.0f deg ", r[0], r[1], r[2]);
    double sc = json_number_value(json_object_get(p, "scale"));
    if (k < cap && sc != 1.0 && sc != 0) k += (size_t)snprintf(out + k, cap - k, "scale %.2f ", sc);
    char m[4] = "";
    int nm = 0;
    for (int a = 0; a < 3; a++)
        if (json_is_true(json_array_get(mi, (size_t)a))) m[nm++] = "xyz"[a];
    m[nm] = 0;
    if (k < cap && nm) k += (size_t)snprintf(out + k, cap - k, "mirror %s ", m);
    static const char *const scalars[] = {"gamma", "brightness", "contrast", "lowres_zoom"};
    for (size_t i = 0; i < 4 && k < cap; i++) {
        json_t *v = json_object_get(p, scalars[i]);
        if (v) k += (size_t)snprintf(out + k, cap - k, "%s %.2f ", scalars[i], json_number_value(v));
    }
    if (k < cap && json_object_get(p, "noise")) k += (size_t)snprintf(out + k, cap - k, "noise ");
    if (k < cap && json_object_get(p, "blur")) k += (size_t)snprintf(out + k, cap - k, "blur ");
    if (k < cap && json_object_get(p, "elastic")) k += (size_t)snprintf(out + k, cap - k, "elastic ");
    if (!k) snprintf(out, cap, "identity (nothing drawn applied)");
}

static int preview_variants(const char *dir, uint64_t case_no, const char *out, int size) {
    cd_error err;
    cd_dataset *ds;
    if (cd_dataset_open(dir, &ds, &err) != CD_OK) return cli_fail_error(&err);
    json_t *manifest = json_loads(cd_dataset_manifest(ds), 0, NULL);
    json_t *aug = json_object_get(manifest, "augmentation");
    int rc = CLI_FAIL;
    enum { MAXV = 16 };
    sample sm[MAXV];
    uint64_t idx[MAXV];
    int n = 0;
    png_canvas cv = {0};
    lines title = {.n = 0}, cap = {.n = 0};
    float *pix = NULL;
    uint8_t *mpix = NULL;
    if (!aug) {
        rc = fail_msg("%s: not written by 'convert --augment' (no 'augmentation' in the manifest): nothing to compare", dir);
        goto done;
    }
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(manifest, "records"), i, e) {
        json_t *cs = json_object_get(e, "case");
        if (!json_is_integer(cs) || (uint64_t)json_integer_value(cs) != case_no) continue;
        if (n == MAXV) break; /* the original and the first copies are enough to see the spread */
        if (read_sample(ds, dir, i, &sm[n]) != CLI_OK) goto done;
        idx[n++] = i;
    }
    if (!n) {
        rc = fail_msg("%s: no records of case %llu (cases are 0..%lld)", dir, (unsigned long long)case_no,
                      (long long)json_integer_value(json_object_get(json_object_get(manifest, "counts"), "records")) /
                              (json_integer_value(json_object_get(aug, "copies")) + !json_is_true(json_object_get(aug, "no_original"))) -
                          1);
        goto done;
    }
    /* One millimetre scale for all cells; each record's own spacing. */
    double sp[MAXV][3], longest = 0;
    for (int k = 0; k < n; k++) {
        record_spacing(sm[k].meta, sp[k]);
        for (int a = 0; a < 2; a++)
            if ((double)sm[k].d[a] * sp[k][a] > longest) longest = (double)sm[k].d[a] * sp[k][a];
    }
    double scale = (double)size / (longest > 0 ? longest : 1);
    int cols = n < 4 ? n : 4, grid_rows = (n + cols - 1) / cols, cell_w = 1, panel_h = 1;
    for (int k = 0; k < n; k++) {
        int w = (int)lround((double)sm[k].d[0] * sp[k][0] * scale), h = (int)lround((double)sm[k].d[1] * sp[k][1] * scale);
        if (w > cell_w) cell_w = w;
        if (h > panel_h) panel_h = h;
    }
    int ts = cols * cell_w >= 360 ? 2 : 1;
    char heads[MAXV][2][160];
    for (int k = 0; k < n; k++) {
        json_t *a = json_object_get(sm[k].meta, "augmentation");
        if (!a) snprintf(heads[k][0], sizeof heads[k][0], "original  record %llu", (unsigned long long)idx[k]);
        else
            snprintf(heads[k][0], sizeof heads[k][0], "copy %lld (epoch %lld)  record %llu", (long long)json_integer_value(json_object_get(a, "copy")),
                     (long long)json_integer_value(json_object_get(a, "epoch")), (unsigned long long)idx[k]);
        if (a) describe_params(a, heads[k][1], sizeof heads[k][1]);
        else snprintf(heads[k][1], sizeof heads[k][1], "as preprocessed");
        int cap_c = 48;
        if ((int)strlen(heads[k][1]) > cap_c) heads[k][1][cap_c] = 0; /* the caption has the rest */
        for (int q = 0; q < 2; q++) {
            int tw = png_canvas_text_width(heads[k][q], ts);
            if (tw > cell_w) cell_w = tw;
        }
    }
    int grid_w = cols * cell_w + (cols - 1) * GAP, width = grid_w + 2 * MARGIN;
    if (width < MIN_CHARS * FONT_CELL_W * ts + 2 * MARGIN) width = MIN_CHARS * FONT_CELL_W * ts + 2 * MARGIN;
    const char *key = jstr(sm[0].meta, "key", "?");
    json_t *pipe = json_object_get(aug, "pipeline");
    add_line(&title, C_TITLE, "case %llu (%s): %d record%s, pipeline %s, seed %lld", (unsigned long long)case_no, key, n, n == 1 ? "" : "s",
             jstr(pipe, "name", "?"), (long long)json_integer_value(json_object_get(aug, "seed")));
    add_line(&cap, C_TEXT, "patient %s, sequence %s, split %s, label %lld; mode %s; recipe %s", jstr(sm[0].meta, "patient_id", "?"),
             jstr(sm[0].meta, "sequence", "?"), jstr(sm[0].meta, "split", "?"), (long long)json_integer_value(json_object_get(sm[0].meta, "label")),
             jstr(aug, "mode", "?"), jstr(json_object_get(manifest, "recipe"), "name", "?"));
    add_line(&cap, C_TEXT, "copy k = the loader's sample for (seed, epoch k, this case) in the same mode; middle axial slice of each record, "
                           "window p0.5..p99.5 of each, mask outlined in red");
    add_line(&cap, C_DIM, "copies are drawn on the grid they were sampled on (flips and rotations included), so no R/L/A/P letters");
    char pathbuf[PATH_MAX];
    add_line(&cap, C_DIM, "dataset %s", abs_path(dir, pathbuf));
    int tts = png_canvas_text_width(title.text[0], ts + 1) <= width - 2 * MARGIN ? ts + 1 : ts;
    wrap_lines(&title, (width - 2 * MARGIN) / (FONT_CELL_W * tts));
    wrap_lines(&cap, (width - 2 * MARGIN) / (FONT_CELL_W * ts));
    uint32_t C = sm[0].channels;
    for (int k = 1; k < n; k++)
        if (sm[k].channels > C) C = sm[k].channels;
    int head_h = 2 * FONT_CELL_H * ts + 4, cell_h = head_h + (int)C * (panel_h + 8) - 8;
    int height = MARGIN + lines_height(&title, tts) + 8 + grid_rows * (cell_h + GAP) + lines_height(&cap, ts) + MARGIN;
    if (png_canvas_init(&cv, width, height, C_BG, &err) != CD_OK) {
        rc = cli_fail_error(&err);
        goto done;
    }
    int y0 = MARGIN;
    draw_lines(&cv, &title, MARGIN, y0, tts);
    y0 += lines_height(&title, tts) + 8;
    pix = malloc((size_t)cell_w * (size_t)panel_h * sizeof *pix);
    mpix = malloc((size_t)cell_w * (size_t)panel_h);
    if (!pix || !mpix) {
        rc = fail_msg("out of memory");
        goto done;
    }
    for (int k = 0; k < n; k++) {
        int gx = MARGIN + (k % cols) * (cell_w + GAP), gy = y0 + (k / cols) * (cell_h + GAP);
        png_canvas_text(&cv, gx, gy, heads[k][0], ts, C_TEXT);
        png_canvas_text(&cv, gx, gy + FONT_CELL_H * ts, heads[k][1], ts, C_DIM);
        const int64_t *d = sm[k].d;
        const size_t nvox = (size_t)d[0] * (size_t)d[1] * (size_t)d[2];
        int w = (int)lround((double)d[0] * sp[k][0] * scale), h = (int)lround((double)d[1] * sp[k][1] * scale);
        if (w < 1) w = 1;
        if (h < 1) h = 1;
        bool letters = !json_object_get(sm[k].meta, "augmentation");
        for (uint32_t c = 0; c < sm[k].channels; c++) {
            const float *img = sm[k].image + (size_t)c * nvox;
            float wlo, whi;
            if (!percentile_pair(img, nvox, 0.5, 99.5, &wlo, &whi)) {
                rc = fail_msg("out of memory");
                goto done;
            }
            sample_plane(img, sm[k].mask, d, &VIEWS[0], d[2] / 2, w, h, pix, sm[k].mask ? mpix : NULL);
            int py = gy + head_h + (int)c * (panel_h + 8);
            draw_plane(&cv, gx, py, w, h, pix, sm[k].mask ? mpix : NULL, wlo, whi, &VIEWS[0], letters, -1, -1, ts);
        }
    }
    draw_lines(&cv, &cap, MARGIN, height - MARGIN - lines_height(&cap, ts), ts);
    if (png_canvas_write(&cv, out, &err) != CD_OK) {
        rc = cli_fail_error(&err);
        goto done;
    }
    printf("wrote %s (%d x %d): case %llu, %d record%s\n", out, width, height, (unsigned long long)case_no, n, n == 1 ? "" : "s");
    rc = CLI_OK;
done:
    for (int k = 0; k < n; k++) sample_free(&sm[k]);
    free(pix);
    free(mpix);
    png_canvas_free(&cv);
    free_lines(&title);
    free_lines(&cap);
    json_decref(manifest);
    cd_dataset_close(ds);
    return rc;
}

/* ---- command ---- */

static bool parse_patch(const char *s, int64_t out[3]) {
    long long a, b, c;
    char tail;
    if (sscanf(s, "%lld,%lld,%lld%c", &a, &b, &c, &tail) != 3) return false;
    if (a < 1 || b < 1 || c < 1 || a > 4096 || b > 4096 || c > 4096) return false;
    out[0] = a;
    out[1] = b;
    out[2] = c;
    return true;
}

int cmd_preview(int argc, char **argv) {
    static const struct option opts[] = {
        {"sample", required_argument, NULL, O_SAMPLE}, {"out", required_argument, NULL, O_OUT},
        {"size", required_argument, NULL, O_SIZE},     {"batch", no_argument, NULL, O_BATCH},
        {"augment", required_argument, NULL, O_AUGMENT}, {"seed", required_argument, NULL, O_SEED},
        {"batch-size", required_argument, NULL, O_BSIZE}, {"patch", required_argument, NULL, O_PATCH},
        {"mode", required_argument, NULL, O_MODE},     {"split", required_argument, NULL, O_SPLIT},
        {"variants", required_argument, NULL, O_VARIANTS},
        {"help", no_argument, NULL, O_HELP},           {NULL, 0, NULL, 0}};
    const char *out = NULL;
    int64_t sample_n = -1, size = -1, v, variants = -1;
    bool batch = false, batch_only = false;
    const char *batch_only_name = NULL;
    batch_opts bo = {.augment = "none", .splits = NULL, .seed = 0, .number = 0, .batch_size = 4, .mode = CD_LOADER_PATCH};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (c) {
        case O_SAMPLE:
            if (!cli_parse_int64(optarg, &v) || v < 0) return cli_usage_error("preview", "bad --sample '%s' (a record number >= 0)", optarg);
            sample_n = v;
            break;
        case 'o':
        case O_OUT: out = optarg; break;
        case O_SIZE:
            if (!cli_parse_int64(optarg, &v) || v < 16 || v > 4096) return cli_usage_error("preview", "bad --size '%s' (16..4096 pixels)", optarg);
            size = v;
            break;
        case O_BATCH: batch = true; break;
        case O_AUGMENT:
            bo.augment = optarg;
            batch_only = true;
            batch_only_name = "--augment";
            break;
        case O_SEED:
            if (!cli_parse_int64(optarg, &v) || v < 0) return cli_usage_error("preview", "bad --seed '%s'", optarg);
            bo.seed = (uint64_t)v;
            batch_only = true;
            batch_only_name = "--seed";
            break;
        case O_BSIZE:
            if (!cli_parse_int64(optarg, &v) || v < 1 || v > 64) return cli_usage_error("preview", "bad --batch-size '%s' (1..64)", optarg);
            bo.batch_size = (uint32_t)v;
            batch_only = true;
            batch_only_name = "--batch-size";
            break;
        case O_PATCH:
            if (!parse_patch(optarg, bo.patch)) return cli_usage_error("preview", "bad --patch '%s' (expected X,Y,Z, each 1..4096)", optarg);
            bo.patch_set = true;
            batch_only = true;
            batch_only_name = "--patch";
            break;
        case O_MODE:
            if (!strcmp(optarg, "patch")) bo.mode = CD_LOADER_PATCH;
            else if (!strcmp(optarg, "volume")) bo.mode = CD_LOADER_VOLUME;
            else if (!strcmp(optarg, "slice")) bo.mode = CD_LOADER_SLICE;
            else return cli_usage_error("preview", "bad --mode '%s' (patch, volume or slice)", optarg);
            batch_only = true;
            batch_only_name = "--mode";
            break;
        case O_SPLIT:
            bo.splits = optarg;
            batch_only = true;
            batch_only_name = "--split";
            break;
        case O_VARIANTS:
            if (!cli_parse_int64(optarg, &v) || v < 0) return cli_usage_error("preview", "bad --variants '%s' (a case number >= 0)", optarg);
            variants = v;
            break;
        case 'h':
        case O_HELP: fputs(preview_help, stdout); return CLI_OK;
        default: return cli_usage_error("preview", "unknown option or missing value '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage_error("preview", "expected exactly one DATASET");
    if (!out) return cli_usage_error("preview", "missing -o OUT.png");
    if (batch_only && !batch) return cli_usage_error("preview", "%s needs --batch", batch_only_name);
    const char *dir = argv[optind];
    if (variants >= 0) {
        if (batch || sample_n >= 0) return cli_usage_error("preview", "--variants goes without --batch and --sample");
        return preview_variants(dir, (uint64_t)variants, out, size > 0 ? (int)size : 256);
    }
    if (batch) {
        if (sample_n >= 0) bo.number = (uint64_t)sample_n;
        return preview_batch(dir, &bo, out, size > 0 ? (int)size : 256);
    }
    if (sample_n < 0) return cli_usage_error("preview", "missing --sample N (or --batch)");
    return preview_sample(dir, (uint64_t)sample_n, out, size > 0 ? (int)size : 320);
}
