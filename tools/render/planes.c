/* Planes of a volume for the preview pictures (see planes.h). */
#include "planes.h"

#include <math.h>
#include <stdlib.h>

#include <cirrdata/volume.h>

#include "font.h"

static const png_rgb C_OUTLINE = {255, 48, 48}, C_ORIENT = {255, 214, 0}, C_TICK = {40, 170, 255}, C_SHADOW = {0, 0, 0},
                     C_FRAME = {70, 70, 80};

const plane_view PLANE_VIEWS[3] = {
    {"axial", 2, 0, 1, true, true, "R", "L", "A", "P"},
    {"coronal", 1, 0, 2, true, true, "R", "L", "S", "I"},
    {"sagittal", 0, 1, 2, true, true, "A", "P", "S", "I"},
};
const char PLANE_AXIS_NAME[3] = {'x', 'y', 'z'};

bool plane_window(const float *v, size_t n, double p_lo, double p_hi, float *lo, float *hi) {
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

/* Continuous voxel coordinate of display pixel u (of w) along an axis of n voxels. */
static double pixel_to_voxel(int u, int w, int64_t n, bool flip) {
    double f = ((double)u + 0.5) / (double)w;
    return (flip ? 1.0 - f : f) * (double)n - 0.5;
}

int plane_voxel_to_pixel(int64_t i, int64_t n, int w, bool flip) {
    double f = ((double)i + 0.5) / (double)n;
    int u = (int)floor((flip ? 1.0 - f : f) * (double)w);
    return u < 0 ? 0 : u >= w ? w - 1 : u;
}

void plane_sample(const float *img, const uint8_t *mask, const int64_t d[3], const plane_view *vw, int64_t pos, int w,
                  int h, float *out, uint8_t *mout) {
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
                    acc += wt * img[plane_vidx(d, p[0], p[1], p[2])];
                }
            out[(size_t)v * (size_t)w + (size_t)u] = (float)acc;
            if (mask) {
                p[vw->row] = rn;
                p[vw->col] = cn;
                mout[(size_t)v * (size_t)w + (size_t)u] = mask[plane_vidx(d, p[0], p[1], p[2])] != 0;
            }
        }
    }
}

void plane_shadow_text(png_canvas *cv, int x, int y, const char *s, int scale, png_rgb colour) {
    png_canvas_text(cv, x + 1, y + 1, s, scale, C_SHADOW);
    png_canvas_text(cv, x, y, s, scale, colour);
}

void plane_draw(png_canvas *cv, int x, int y, int w, int h, const float *pix, const uint8_t *mpix, float lo, float hi,
                const plane_view *vw, bool letters, int tick_col, int tick_row, int ts) {
    png_canvas_fill(cv, x - 1, y - 1, w + 2, h + 2, C_FRAME);
    png_canvas_grey(cv, x, y, w, h, pix, lo, hi);
    if (mpix) png_canvas_outline(cv, x, y, w, h, mpix, C_OUTLINE);
    int lw = FONT_GLYPH_W * ts, lh = FONT_CAP_H * ts, pad = 3;
    if (letters && w >= 3 * lw + 4 * pad && h >= 3 * lh + 4 * pad) {
        plane_shadow_text(cv, x + pad, y + (h - lh) / 2, vw->left, ts, C_ORIENT);
        plane_shadow_text(cv, x + w - pad - lw - 1, y + (h - lh) / 2, vw->right, ts, C_ORIENT);
        plane_shadow_text(cv, x + (w - lw) / 2, y + pad, vw->top, ts, C_ORIENT);
        plane_shadow_text(cv, x + (w - lw) / 2, y + h - pad - lh - 1, vw->bottom, ts, C_ORIENT);
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
