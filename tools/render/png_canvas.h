/* An RGB canvas for the CLI's pictures (`cirrdata preview`, `cirrdata stage --png`): fill, grey images
 * with an intensity window, mask outlines, text in the built-in font, and writing the result as a PNG
 * (libpng). */
#ifndef CD_TOOLS_PNG_CANVAS_H
#define CD_TOOLS_PNG_CANVAS_H

#include <stdint.h>

#include <cirrdata/status.h>

typedef struct png_rgb {
    uint8_t r, g, b;
} png_rgb;

typedef struct png_canvas {
    int width, height;
    uint8_t *pixels; /* width * height * 3 bytes, rows top to bottom */
} png_canvas;

/* Allocates a width x height canvas filled with bg. Errors: CD_ERR_ARG (bad size), CD_ERR_NOMEM. */
cd_status png_canvas_init(png_canvas *c, int width, int height, png_rgb bg, cd_error *err);
void png_canvas_free(png_canvas *c);

/* Drawing clips to the canvas; nothing outside it is touched. */
void png_canvas_set(png_canvas *c, int x, int y, png_rgb colour);
void png_canvas_fill(png_canvas *c, int x, int y, int w, int h, png_rgb colour);
/* Draws values (w * h floats, row-major, top row first) at (x, y) as grey: lo -> black, hi -> white,
 * clamped; non-finite values are drawn black. */
void png_canvas_grey(png_canvas *c, int x, int y, int w, int h, const float *values, float lo, float hi);
/* Outlines mask (w * h bytes, row-major, nonzero = inside) at (x, y): an inside pixel with an outside
 * 4-neighbour (or at the edge of the w x h box) is set to colour; the inside is left as it is. */
void png_canvas_outline(png_canvas *c, int x, int y, int w, int h, const uint8_t *mask, png_rgb colour);
/* Draws printable ASCII with its top-left corner at (x, y), each font pixel as a scale x scale block;
 * '\n' starts a new line. Returns the width drawn in pixels (of the longest line). */
int png_canvas_text(png_canvas *c, int x, int y, const char *text, int scale, png_rgb colour);
/* Width and height that png_canvas_text would use. */
int png_canvas_text_width(const char *text, int scale);
int png_canvas_text_height(const char *text, int scale);

/* Writes the canvas as an 8-bit RGB PNG (no timestamp: equal canvases give equal files). Errors name
 * path: CD_ERR_IO when it cannot be created or written. A failed write leaves no file behind. */
cd_status png_canvas_write(const png_canvas *c, const char *path, cd_error *err);

#endif
