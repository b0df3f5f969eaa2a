/* A built-in 5x7 bitmap font (printable ASCII) for the PNG pictures of the CLI (render/png_canvas.h). */
#ifndef CD_TOOLS_FONT_H
#define CD_TOOLS_FONT_H

#include <stdint.h>

#define FONT_GLYPH_W 5
#define FONT_GLYPH_H 8 /* 7 rows above the baseline, 1 for descenders */
#define FONT_CAP_H 7   /* height of capitals and digits */
/* Advance per character and per line at scale 1. */
#define FONT_CELL_W 6
#define FONT_CELL_H 10

/* The FONT_GLYPH_H rows of character c, top first; bit 4 of each row is the leftmost column. Characters
 * outside 32..126 give the glyph of '?'. */
const uint8_t *font_glyph(unsigned char c);

#endif
