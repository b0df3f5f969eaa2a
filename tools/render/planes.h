/* Planes of a volume for the preview pictures: the three radiological views, sampling a plane onto
 * display pixels in millimetre proportions, intensity windows, and drawing a plane with its mask
 * outline, orientation letters and ticks. */
#ifndef CD_TOOLS_RENDER_PLANES_H
#define CD_TOOLS_RENDER_PLANES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "png_canvas.h"

typedef struct plane_view {
    const char *name;
    int fixed, col, row; /* axis held fixed, axis along columns, axis along rows */
    bool col_flip, row_flip;
    const char *left, *right, *top, *bottom;
} plane_view;

/* Axial, coronal and sagittal, in the radiological convention on RAS+ voxels (x: left -> right, y:
 * posterior -> anterior, z: inferior -> superior). */
extern const plane_view PLANE_VIEWS[3];
/* 'x', 'y', 'z'. */
extern const char PLANE_AXIS_NAME[3];

/* Index of voxel (x, y, z) in a C-order (X, Y, Z) volume of dims d. */
static inline size_t plane_vidx(const int64_t d[3], int64_t x, int64_t y, int64_t z) {
    return ((size_t)x * (size_t)d[1] + (size_t)y) * (size_t)d[2] + (size_t)z;
}

/* Display pixel of voxel index i (of n) along an axis drawn w pixels wide. */
int plane_voxel_to_pixel(int64_t i, int64_t n, int w, bool flip);
/* Samples the plane (fixed axis at index pos) of one channel (C order, dims d) onto w x h display
 * pixels: bilinear for the image, nearest for the mask (mask/mout may be NULL). */
void plane_sample(const float *img, const uint8_t *mask, const int64_t d[3], const plane_view *vw, int64_t pos, int w,
                  int h, float *out, uint8_t *mout);
/* The p_lo-th and p_hi-th percentiles (NumPy's default, linear) of the finite values of v[0..n): a
 * window with *hi > *lo (0..1 when none is finite). False when out of memory. */
bool plane_window(const float *v, size_t n, double p_lo, double p_hi, float *lo, float *hi);
/* A text with a one-pixel shadow, readable on any grey. */
void plane_shadow_text(png_canvas *cv, int x, int y, const char *s, int scale, png_rgb colour);
/* Draws one plane at (x, y): grey image (windowed to lo..hi), mask outline (mpix non-NULL), frame,
 * orientation letters (when letters and it is large enough); ticks (tick_col / tick_row >= 0) mark
 * where the other planes cut. ts: font scale. */
void plane_draw(png_canvas *cv, int x, int y, int w, int h, const float *pix, const uint8_t *mpix, float lo, float hi,
                const plane_view *vw, bool letters, int tick_col, int tick_row, int ts);

#endif
