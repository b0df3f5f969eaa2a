/* The pictures of `cirrdata preview` (see preview_draw.h). Display convention: radiological (patient
 * right on the image left, anterior up in axial views; superior up and anterior left in the others). */
#include "preview_draw.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caption.h"
#include "font.h"
#include "planes.h"
#include "png_canvas.h"

/* ---- colours, layout and shared pieces ---- */

static const png_rgb C_BG = {18, 18, 22}, C_TEXT = {232, 232, 232}, C_DIM = {160, 160, 172}, C_TITLE = {255, 255, 255};
#define MARGIN 16
#define GAP 24
#define MIN_CHARS 48 /* the caption gets at least this many characters per line */
#define MAX_ROWS 8   /* channels drawn of one record */

static cd_status out_of_memory(cd_error *err) {
    err->status = CD_ERR_NOMEM;
    snprintf(err->message, sizeof err->message, "out of memory");
    return CD_ERR_NOMEM;
}

static const char *jstr(json_t *o, const char *key, const char *fallback) {
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : fallback;
}

static const char *abs_path(const char *p, char *buf) {
    char *r = realpath(p, buf);
    return r ? r : p;
}

void preview_record_spacing(json_t *meta, double sp[3]) {
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

/* A picture as wide as its content, or as the caption's minimum of characters at font scale ts. */
static int picture_width(int content_w, int ts) {
    int width = content_w + 2 * MARGIN;
    if (width < MIN_CHARS * FONT_CELL_W * ts + 2 * MARGIN) width = MIN_CHARS * FONT_CELL_W * ts + 2 * MARGIN;
    return width;
}

/* Wraps title and caption to the picture's width; returns the title's font scale (one larger than
 * the caption's when its first line fits). */
static int wrap_captions(caption *title, caption *cap, int width, int ts) {
    int tts = png_canvas_text_width(title->text[0], ts + 1) <= width - 2 * MARGIN ? ts + 1 : ts;
    caption_wrap(title, (width - 2 * MARGIN) / (FONT_CELL_W * tts));
    caption_wrap(cap, (width - 2 * MARGIN) / (FONT_CELL_W * ts));
    return tts;
}

/* ---- one record: three planes per channel ---- */

typedef struct sample_layout {
    double sp[3], ext[3]; /* spacing, extent in mm */
    int64_t centre[3];    /* where the planes cut */
    bool has_fg;
    int pw[3], ph[3];   /* each view's panel */
    int colw[3];        /* each view's column: its panel or its widest header */
    int row_h, cpc, ts; /* row height, channels drawn, font scale */
    int head_h, width, height;
    char heads[MAX_ROWS][3][96];
} sample_layout;

/* Where to cut: the middle of the mask's bounding box, else of the volume. */
static void sample_centre(const preview_record *s, sample_layout *L) {
    const int64_t *d = s->d;
    int64_t lo[3] = {INT64_MAX, INT64_MAX, INT64_MAX}, hi[3] = {-1, -1, -1};
    if (s->mask)
        for (int64_t x = 0; x < d[0]; x++)
            for (int64_t y = 0; y < d[1]; y++)
                for (int64_t z = 0; z < d[2]; z++)
                    if (s->mask[plane_vidx(d, x, y, z)]) {
                        int64_t p[3] = {x, y, z};
                        for (int a = 0; a < 3; a++) {
                            if (p[a] < lo[a]) lo[a] = p[a];
                            if (p[a] > hi[a]) hi[a] = p[a];
                        }
                    }
    L->has_fg = hi[0] >= 0;
    for (int a = 0; a < 3; a++) L->centre[a] = L->has_fg ? (lo[a] + hi[a]) / 2 : d[a] / 2;
}

/* One millimetre scale for all views: the longest extent gets `size` pixels. */
static void sample_panels(const preview_record *s, int size, sample_layout *L) {
    double longest = 0;
    for (int a = 0; a < 3; a++) {
        L->ext[a] = (double)s->d[a] * L->sp[a];
        if (L->ext[a] > longest) longest = L->ext[a];
    }
    double scale = (double)size / longest;
    for (int v = 0; v < 3; v++) {
        L->pw[v] = (int)lround(L->ext[PLANE_VIEWS[v].col] * scale);
        L->ph[v] = (int)lround(L->ext[PLANE_VIEWS[v].row] * scale);
        if (L->pw[v] < 1) L->pw[v] = 1;
        if (L->ph[v] < 1) L->ph[v] = 1;
    }
    int panels_w = 0;
    L->row_h = 0;
    for (int v = 0; v < 3; v++) {
        if (L->ph[v] > L->row_h) L->row_h = L->ph[v];
        panels_w += L->pw[v] + (v ? GAP : 0);
    }
    L->ts = panels_w >= 360 ? 2 : 1;
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
    if (p && len > 0 && len < 16 && strchr(sequence, '+'))
        snprintf(out, cap, "ch%u %.*s  ", c, (int)len, p);
    else
        snprintf(out, cap, "ch%u  ", c);
}

/* Panel headers, e.g. "ch1 T2  coronal y 106/192"; a column is as wide as its panel or header. */
static void sample_headers(const preview_record *s, sample_layout *L) {
    L->cpc = s->channels < MAX_ROWS ? (int)s->channels : MAX_ROWS;
    const char *seq = jstr(s->meta, "sequence", "?");
    int panels_w = 0;
    for (int v = 0; v < 3; v++) {
        const plane_view *vw = &PLANE_VIEWS[v];
        L->colw[v] = L->pw[v];
        for (int c = 0; c < L->cpc; c++) {
            char cname[32];
            channel_name(seq, (uint32_t)c, s->channels, cname, sizeof cname);
            snprintf(L->heads[c][v], sizeof L->heads[c][v], "%s%s %c %lld/%lld", cname, vw->name,
                     PLANE_AXIS_NAME[vw->fixed], (long long)L->centre[vw->fixed], (long long)s->d[vw->fixed]);
            int tw = png_canvas_text_width(L->heads[c][v], L->ts);
            if (tw > L->colw[v]) L->colw[v] = tw;
        }
        panels_w += L->colw[v] + (v ? GAP : 0);
    }
    L->width = picture_width(panels_w, L->ts);
}

/* Each channel's window: its 0.5..99.5 percentiles (2 floats per channel, the caller frees *win). */
static cd_status sample_windows(const preview_record *s, float **win, cd_error *err) {
    const size_t nvox = (size_t)s->d[0] * (size_t)s->d[1] * (size_t)s->d[2];
    *win = malloc(2 * s->channels * sizeof **win);
    if (!*win) return out_of_memory(err);
    for (uint32_t c = 0; c < s->channels; c++)
        if (!plane_window(s->image + (size_t)c * nvox, nvox, 0.5, 99.5, &(*win)[2 * c], &(*win)[2 * c + 1])) {
            free(*win);
            *win = NULL;
            return out_of_memory(err);
        }
    return CD_OK;
}

static const char *class_name(json_t *manifest, json_t *meta, long label) {
    const char *s = json_string_value(json_object_get(meta, "class_name"));
    if (s) return s;
    s = label >= 0 ? json_string_value(json_array_get(json_object_get(manifest, "classes"), (size_t)label)) : NULL;
    return s ? s : "?";
}

/* The caption's line of windows, e.g. "window p0.5..p99.5: ch0 -1 .. 2, ch1 0 .. 3". */
static void add_windows_line(caption *cap, const preview_record *s, const float *win) {
    char buf[512];
    int len = snprintf(buf, sizeof buf, "window p0.5..p99.5:");
    for (uint32_t c = 0; c < s->channels && len < (int)sizeof buf - 64; c++) {
        char cn[16] = "";
        if (s->channels > 1) snprintf(cn, sizeof cn, "ch%u ", c);
        len += snprintf(buf + len, sizeof buf - (size_t)len, "%s %s%.5g .. %.5g", c ? "," : "", cn, win[2 * c],
                        win[2 * c + 1]);
    }
    caption_add(cap, C_TEXT, "%s", buf);
}

/* Title and caption: label, patient, sequence, split, shape, spacing, recipe, windows, dataset. */
static void sample_captions(const preview_source *src, const preview_record *s, uint64_t n, uint64_t count,
                            const sample_layout *L, const float *win, caption *title, caption *cap) {
    const double *sp = L->sp, *ext = L->ext;
    const int64_t *d = s->d;
    long label = (long)json_integer_value(json_object_get(s->meta, "label"));
    caption_add(title, C_TITLE, "%s (label %ld)   patient %s   %s   %s", class_name(src->manifest, s->meta, label),
                label, jstr(s->meta, "patient_id", "?"), jstr(s->meta, "sequence", "?"), jstr(s->meta, "split", "?"));
    caption_add(cap, C_TEXT, "record %llu of %llu (%s): %lld x %lld x %lld voxels, %u channel%s, %s",
                (unsigned long long)n, (unsigned long long)count, jstr(s->meta, "key", "?"), (long long)d[0],
                (long long)d[1], (long long)d[2], s->channels, s->channels == 1 ? "" : "s", cd_dtype_name(s->dtype));
    caption_add(cap, C_TEXT, "spacing %.4g x %.4g x %.4g mm (%.0f x %.0f x %.0f mm), recipe %s", sp[0], sp[1], sp[2],
                ext[0], ext[1], ext[2], jstr(json_object_get(src->manifest, "recipe"), "name", "?"));
    add_windows_line(cap, s, win);
    if ((int)s->channels > L->cpc) caption_add(cap, C_TEXT, "showing channels 0..%d of %u", L->cpc - 1, s->channels);
    if (s->mask)
        caption_add(cap, C_TEXT,
                    L->has_fg ? "mask outlined in red; planes cut through the middle of its bounding box"
                              : "mask is empty; planes cut through the middle of the volume");
    else
        caption_add(cap, C_TEXT, "no mask; planes cut through the middle of the volume");
    caption_add(cap, C_DIM, "radiological view: patient right on image left; blue ticks: the other planes");
    char pathbuf[PATH_MAX];
    caption_add(cap, C_DIM, "dataset %s", abs_path(src->dir, pathbuf));
}

/* Draws one row per channel from y on; *y ends below the last. */
static cd_status sample_rows(png_canvas *cv, const preview_record *s, const sample_layout *L, const float *win, int *y,
                             cd_error *err) {
    const size_t nvox = (size_t)s->d[0] * (size_t)s->d[1] * (size_t)s->d[2];
    size_t maxpix = 0;
    for (int v = 0; v < 3; v++)
        if ((size_t)L->pw[v] * (size_t)L->ph[v] > maxpix) maxpix = (size_t)L->pw[v] * (size_t)L->ph[v];
    float *pix = malloc(maxpix * sizeof *pix);
    uint8_t *mpix = malloc(maxpix);
    if (!pix || !mpix) {
        free(pix);
        free(mpix);
        return out_of_memory(err);
    }
    uint8_t *mp = s->mask ? mpix : NULL;
    for (uint32_t c = 0; c < (uint32_t)L->cpc; c++) {
        int x = MARGIN;
        for (int v = 0; v < 3; v++) {
            const plane_view *vw = &PLANE_VIEWS[v];
            png_canvas_text(cv, x, *y, L->heads[c][v], L->ts, C_TEXT);
            int py = *y + L->head_h + (L->row_h - L->ph[v]) / 2;
            plane_sample(s->image + (size_t)c * nvox, s->mask, s->d, vw, L->centre[vw->fixed], L->pw[v], L->ph[v], pix,
                         mp);
            /* Ticks: where the two other planes (fixed along this view's column and row axes) cut. */
            int tc = plane_voxel_to_pixel(L->centre[vw->col], s->d[vw->col], L->pw[v], vw->col_flip);
            int tr = plane_voxel_to_pixel(L->centre[vw->row], s->d[vw->row], L->ph[v], vw->row_flip);
            plane_draw(cv, x, py, L->pw[v], L->ph[v], pix, mp, win[2 * c], win[2 * c + 1], vw, true, tc, tr, L->ts);
            x += L->colw[v] + GAP;
        }
        *y += L->head_h + L->row_h + GAP;
    }
    free(pix);
    free(mpix);
    return CD_OK;
}

/* The picture: title, the rows, the caption; written to out. */
static cd_status sample_picture(const preview_record *s, sample_layout *L, const float *win, caption *title,
                                caption *cap, const char *out, cd_error *err) {
    int tts = wrap_captions(title, cap, L->width, L->ts);
    L->head_h = FONT_GLYPH_H * L->ts + 10; /* panel header plus room for the ticks */
    L->height = MARGIN + caption_height(title, tts) + 6 + L->cpc * (L->head_h + L->row_h + GAP) +
                caption_height(cap, L->ts) + MARGIN;
    png_canvas cv;
    cd_status st = png_canvas_init(&cv, L->width, L->height, C_BG, err);
    if (st != CD_OK) return st;
    caption_draw(&cv, title, MARGIN, MARGIN, tts);
    int y = MARGIN + caption_height(title, tts) + 6;
    st = sample_rows(&cv, s, L, win, &y, err);
    if (st == CD_OK) {
        caption_draw(&cv, cap, MARGIN, y, L->ts);
        st = png_canvas_write(&cv, out, err);
    }
    png_canvas_free(&cv);
    return st;
}

cd_status preview_draw_sample(const preview_source *src, const preview_record *s, uint64_t n, uint64_t count, int size,
                              const char *out, preview_picture *pic, cd_error *err) {
    sample_layout L;
    preview_record_spacing(s->meta, L.sp);
    sample_centre(s, &L);
    sample_panels(s, size, &L);
    sample_headers(s, &L);
    float *win;
    cd_status st = sample_windows(s, &win, err);
    if (st != CD_OK) return st;
    caption title = {.n = 0}, cap = {.n = 0};
    sample_captions(src, s, n, count, &L, win, &title, &cap);
    st = sample_picture(s, &L, win, &title, &cap, out, err);
    caption_free(&title);
    caption_free(&cap);
    if (st != CD_OK) {
        free(win);
        return st;
    }
    *pic = (preview_picture){L.width, L.height, win};
    return CD_OK;
}

/* ---- grids of axial slices: a batch, a case's copies ---- */

/* One cell of a grid: two header lines over the middle axial slice of each channel. */
typedef struct grid_cell {
    char head[2][160];
    const float *image;  /* channels x (X, Y, Z) */
    const uint8_t *mask; /* or NULL */
    const int64_t *d;    /* dims */
    const double *sp;    /* spacing */
    uint32_t channels;
    bool letters; /* orientation letters (not after a flip or rotation) */
} grid_cell;

typedef struct grid_layout {
    double scale;        /* pixels per mm */
    int cols, rows;      /* cells per row, rows */
    int cell_w, panel_h; /* the widest cell (panel or header), the tallest panel */
    int ts, tts;         /* font scale of headers and caption, of the title */
    int head_h, cell_h, width, height;
    bool channel_labels; /* "chN" on the panels of cells with several channels */
} grid_layout;

/* The longest in-plane extent (mm) of the cells. */
static double cells_longest(const grid_cell *cells, int n) {
    double longest = 0;
    for (int k = 0; k < n; k++)
        for (int a = 0; a < 2; a++)
            if ((double)cells[k].d[a] * cells[k].sp[a] > longest) longest = (double)cells[k].d[a] * cells[k].sp[a];
    return longest;
}

/* A cell's panel at g's scale, at least one pixel each way. */
static void cell_panel(const grid_layout *g, const grid_cell *c, int *w, int *h) {
    *w = (int)lround((double)c->d[0] * c->sp[0] * g->scale);
    *h = (int)lround((double)c->d[1] * c->sp[1] * g->scale);
    if (*w < 1) *w = 1;
    if (*h < 1) *h = 1;
}

/* Rows of at most four cells, each as wide and tall as the largest panel. */
static void grid_panels(const grid_cell *cells, int n, grid_layout *g) {
    g->cols = n < 4 ? n : 4;
    g->rows = (n + g->cols - 1) / g->cols;
    g->cell_w = g->panel_h = 1;
    for (int k = 0; k < n; k++) {
        int w, h;
        cell_panel(g, &cells[k], &w, &h);
        if (w > g->cell_w) g->cell_w = w;
        if (h > g->panel_h) g->panel_h = h;
    }
}

/* Cells as wide as their widest header too; the picture's width and height. C: most channels. */
static void grid_size(const grid_cell *cells, int n, uint32_t C, grid_layout *g, caption *title, caption *cap) {
    for (int k = 0; k < n; k++)
        for (int q = 0; q < 2; q++) {
            int tw = png_canvas_text_width(cells[k].head[q], g->ts);
            if (tw > g->cell_w) g->cell_w = tw;
        }
    g->width = picture_width(g->cols * g->cell_w + (g->cols - 1) * GAP, g->ts);
    g->tts = wrap_captions(title, cap, g->width, g->ts);
    g->head_h = 2 * FONT_CELL_H * g->ts + 4;
    g->cell_h = g->head_h + (int)C * (g->panel_h + 8) - 8;
    g->height =
        MARGIN + caption_height(title, g->tts) + 8 + g->rows * (g->cell_h + GAP) + caption_height(cap, g->ts) + MARGIN;
}

/* Cell c's headers and panels with their top-left corner at (gx, gy); pix and mpix hold a panel. */
static cd_status grid_cell_draw(png_canvas *cv, const grid_layout *g, const grid_cell *c, int gx, int gy, float *pix,
                                uint8_t *mpix, cd_error *err) {
    png_canvas_text(cv, gx, gy, c->head[0], g->ts, C_TEXT);
    png_canvas_text(cv, gx, gy + FONT_CELL_H * g->ts, c->head[1], g->ts, C_DIM);
    const size_t nvox = (size_t)c->d[0] * (size_t)c->d[1] * (size_t)c->d[2];
    int w, h;
    cell_panel(g, c, &w, &h);
    for (uint32_t ch = 0; ch < c->channels; ch++) {
        const float *img = c->image + (size_t)ch * nvox;
        float wlo, whi;
        if (!plane_window(img, nvox, 0.5, 99.5, &wlo, &whi)) return out_of_memory(err);
        plane_sample(img, c->mask, c->d, &PLANE_VIEWS[0], c->d[2] / 2, w, h, pix, c->mask ? mpix : NULL);
        int py = gy + g->head_h + (int)ch * (g->panel_h + 8);
        plane_draw(cv, gx, py, w, h, pix, c->mask ? mpix : NULL, wlo, whi, &PLANE_VIEWS[0], c->letters, -1, -1, g->ts);
        if (g->channel_labels && c->channels > 1) {
            char chl[16];
            snprintf(chl, sizeof chl, "ch%u", ch);
            plane_shadow_text(cv, gx + 3, py + h - FONT_GLYPH_H * g->ts - 3, chl, g->ts, C_TEXT);
        }
    }
    return CD_OK;
}

/* Title, the cells, the caption at the bottom; written to out. */
static cd_status grid_picture(const grid_layout *g, const grid_cell *cells, int n, const caption *title,
                              const caption *cap, const char *out, cd_error *err) {
    png_canvas cv;
    cd_status st = png_canvas_init(&cv, g->width, g->height, C_BG, err);
    if (st != CD_OK) return st;
    caption_draw(&cv, title, MARGIN, MARGIN, g->tts);
    const int y0 = MARGIN + caption_height(title, g->tts) + 8;
    float *pix = malloc((size_t)g->cell_w * (size_t)g->panel_h * sizeof *pix);
    uint8_t *mpix = malloc((size_t)g->cell_w * (size_t)g->panel_h);
    if (!pix || !mpix) st = out_of_memory(err);
    for (int k = 0; k < n && st == CD_OK; k++)
        st = grid_cell_draw(&cv, g, &cells[k], MARGIN + (k % g->cols) * (g->cell_w + GAP),
                            y0 + (k / g->cols) * (g->cell_h + GAP), pix, mpix, err);
    free(pix);
    free(mpix);
    if (st == CD_OK) {
        caption_draw(&cv, cap, MARGIN, g->height - MARGIN - caption_height(cap, g->ts), g->ts);
        st = png_canvas_write(&cv, out, err);
    }
    png_canvas_free(&cv);
    return st;
}

/* ---- a loader batch ---- */

/* The batch's cells; headers "#0  record 3" and "label 1 moderate  z 16/32". */
static void batch_cells(const cd_batch *b, const double (*sp)[3], json_t *classes, bool letters, grid_cell *cells) {
    const size_t nvox = (size_t)b->shape[0] * (size_t)b->shape[1] * (size_t)b->shape[2];
    for (uint32_t i = 0; i < b->size; i++) {
        grid_cell *c = &cells[i];
        const char *cn = b->label[i] >= 0 ? json_string_value(json_array_get(classes, (size_t)b->label[i])) : NULL;
        snprintf(c->head[0], 96, "#%u  record %lld", i, (long long)b->index[i]);
        if (b->slice[i] >= 0)
            snprintf(c->head[1], 96, "label %d %s  slice z %lld", b->label[i], cn ? cn : "?", (long long)b->slice[i]);
        else
            snprintf(c->head[1], 96, "label %d %s  z %lld/%lld", b->label[i], cn ? cn : "?",
                     (long long)(b->shape[2] / 2), (long long)b->shape[2]);
        c->image = b->image + (size_t)i * b->channels * nvox;
        c->mask = b->mask ? b->mask + (size_t)i * nvox : NULL;
        c->d = b->shape;
        c->sp = sp[i];
        c->channels = b->channels;
        c->letters = letters;
    }
}

/* "3, 17, 4" and "1 moderate, 2 severe, 1 moderate": the batch's records and labels. */
static void batch_lists(const cd_batch *b, json_t *classes, caption *cap) {
    char idx[400], lab[600];
    int li = 0, ll = 0;
    idx[0] = lab[0] = '\0';
    for (uint32_t i = 0; i < b->size && li < (int)sizeof idx - 32 && ll < (int)sizeof lab - 48; i++) {
        const char *cn = b->label[i] >= 0 ? json_string_value(json_array_get(classes, (size_t)b->label[i])) : NULL;
        li += snprintf(idx + li, sizeof idx - (size_t)li, "%s%lld", i ? ", " : "", (long long)b->index[i]);
        ll += snprintf(lab + ll, sizeof lab - (size_t)ll, "%s%d %s", i ? ", " : "", b->label[i], cn ? cn : "?");
    }
    caption_add(cap, C_TEXT, "indices %s", idx);
    caption_add(cap, C_TEXT, "labels %s", lab);
}

static void batch_captions(const preview_source *src, const cd_batch *b, const preview_batch_info *bi, bool letters,
                           caption *title, caption *cap) {
    const uint32_t B = b->size, C = b->channels;
    const int64_t *d = b->shape;
    caption_add(title, C_TITLE, "batch %llu of epoch %llu: %u sample%s, augment %s, seed %llu",
                (unsigned long long)b->number, (unsigned long long)b->epoch, B, B == 1 ? "" : "s", bi->augment,
                (unsigned long long)bi->seed);
    batch_lists(b, json_object_get(src->manifest, "classes"), cap);
    caption_add(cap, C_TEXT, "mode %s, samples %lld x %lld x %lld, %u channel%s, splits %s, recipe %s", bi->mode,
                (long long)d[0], (long long)d[1], (long long)d[2], C, C == 1 ? "" : "s", bi->splits,
                jstr(json_object_get(src->manifest, "recipe"), "name", "?"));
    caption_add(cap, C_TEXT, "%s; window p0.5..p99.5 of each sample; mask outlined in red",
                d[2] > 1 ? "middle axial slice of each sample" : "each sample's axial slice");
    caption_add(cap, C_DIM,
                letters ? "radiological view: patient right on image left, anterior up"
                        : "radiological view as stored (patient right on image left, anterior up) before augmentation; "
                          "its flips and rotations move the directions, so no R/L/A/P letters");
    char pathbuf[PATH_MAX];
    caption_add(cap, C_DIM, "dataset %s", abs_path(src->dir, pathbuf));
}

cd_status preview_draw_batch(const preview_source *src, const cd_batch *b, const double (*sp)[3],
                             const preview_batch_info *bi, int size, const char *out, preview_picture *pic,
                             cd_error *err) {
    const int n = (int)b->size;
    grid_cell *cells = calloc(n ? (size_t)n : 1, sizeof *cells);
    if (!cells) return out_of_memory(err);
    const bool letters = !strcmp(bi->augment, "none");
    batch_cells(b, sp, json_object_get(src->manifest, "classes"), letters, cells);
    /* One millimetre scale for all samples, each with its record's spacing. */
    grid_layout g = {.scale = (double)size / cells_longest(cells, n), .channel_labels = true};
    grid_panels(cells, n, &g);
    g.ts = g.cols * g.cell_w + (g.cols - 1) * GAP >= 360 ? 2 : 1;
    caption title = {.n = 0}, cap = {.n = 0};
    batch_captions(src, b, bi, letters, &title, &cap);
    grid_size(cells, n, b->channels, &g, &title, &cap);
    cd_status st = grid_picture(&g, cells, n, &title, &cap, out, err);
    caption_free(&title);
    caption_free(&cap);
    free(cells);
    if (st == CD_OK) *pic = (preview_picture){g.width, g.height, NULL};
    return st;
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
    if (r[0] != 0 || r[1] != 0 || r[2] != 0)
        k += (size_t)snprintf(out + k, cap - k, "rot %.0f,%.0f,%.0f deg ", r[0], r[1], r[2]);
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

/* The records' cells: "original  record 12" or "copy 1 (epoch 1)  record 13" over what was drawn. */
static void variant_cells(const preview_record *recs, const uint64_t *index, int n, grid_cell *cells, double (*sp)[3]) {
    for (int k = 0; k < n; k++) {
        grid_cell *c = &cells[k];
        json_t *a = json_object_get(recs[k].meta, "augmentation");
        if (!a)
            snprintf(c->head[0], sizeof c->head[0], "original  record %llu", (unsigned long long)index[k]);
        else
            snprintf(c->head[0], sizeof c->head[0], "copy %lld (epoch %lld)  record %llu",
                     (long long)json_integer_value(json_object_get(a, "copy")),
                     (long long)json_integer_value(json_object_get(a, "epoch")), (unsigned long long)index[k]);
        if (a)
            describe_params(a, c->head[1], sizeof c->head[1]);
        else
            snprintf(c->head[1], sizeof c->head[1], "as preprocessed");
        if ((int)strlen(c->head[1]) > 48) c->head[1][48] = 0; /* the caption has the rest */
        preview_record_spacing(recs[k].meta, sp[k]);
        c->image = recs[k].image;
        c->mask = recs[k].mask;
        c->d = recs[k].d;
        c->sp = sp[k];
        c->channels = recs[k].channels;
        c->letters = !a;
    }
}

static void variant_captions(const preview_source *src, const preview_record *first, int n, uint64_t case_no,
                             caption *title, caption *cap) {
    json_t *aug = json_object_get(src->manifest, "augmentation");
    json_t *meta = first->meta;
    caption_add(title, C_TITLE, "case %llu (%s): %d record%s, pipeline %s, seed %lld", (unsigned long long)case_no,
                jstr(meta, "key", "?"), n, n == 1 ? "" : "s", jstr(json_object_get(aug, "pipeline"), "name", "?"),
                (long long)json_integer_value(json_object_get(aug, "seed")));
    caption_add(cap, C_TEXT, "patient %s, sequence %s, split %s, label %lld; mode %s; recipe %s",
                jstr(meta, "patient_id", "?"), jstr(meta, "sequence", "?"), jstr(meta, "split", "?"),
                (long long)json_integer_value(json_object_get(meta, "label")), jstr(aug, "mode", "?"),
                jstr(json_object_get(src->manifest, "recipe"), "name", "?"));
    caption_add(cap, C_TEXT,
                "copy k = the loader's sample for (seed, epoch k, this case) in the same mode; middle axial slice of "
                "each record, "
                "window p0.5..p99.5 of each, mask outlined in red");
    caption_add(
        cap, C_DIM,
        "copies are drawn on the grid they were sampled on (flips and rotations included), so no R/L/A/P letters");
    char pathbuf[PATH_MAX];
    caption_add(cap, C_DIM, "dataset %s", abs_path(src->dir, pathbuf));
}

cd_status preview_draw_variants(const preview_source *src, const preview_record *recs, const uint64_t *index, int n,
                                uint64_t case_no, int size, const char *out, preview_picture *pic, cd_error *err) {
    grid_cell *cells = calloc((size_t)n, sizeof *cells);
    double(*sp)[3] = calloc((size_t)n, sizeof *sp);
    if (!cells || !sp) {
        free(cells);
        free(sp);
        return out_of_memory(err);
    }
    variant_cells(recs, index, n, cells, sp);
    /* One millimetre scale for all cells; each record's own spacing. */
    double longest = cells_longest(cells, n);
    grid_layout g = {.scale = (double)size / (longest > 0 ? longest : 1)};
    grid_panels(cells, n, &g);
    g.ts = g.cols * g.cell_w >= 360 ? 2 : 1;
    caption title = {.n = 0}, cap = {.n = 0};
    variant_captions(src, &recs[0], n, case_no, &title, &cap);
    uint32_t C = recs[0].channels;
    for (int k = 1; k < n; k++)
        if (recs[k].channels > C) C = recs[k].channels;
    grid_size(cells, n, C, &g, &title, &cap);
    cd_status st = grid_picture(&g, cells, n, &title, &cap, out, err);
    caption_free(&title);
    caption_free(&cap);
    free(cells);
    free(sp);
    if (st == CD_OK) *pic = (preview_picture){g.width, g.height, NULL};
    return st;
}
