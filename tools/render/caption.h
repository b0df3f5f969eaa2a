/* Caption lines of the CLI's pictures: printf-formatted lines, each with its colour, wrapped to a width
 * in characters and drawn in the built-in font. */
#ifndef CD_TOOLS_RENDER_CAPTION_H
#define CD_TOOLS_RENDER_CAPTION_H

#include "png_canvas.h"

#define CAPTION_MAX_LINES 64

typedef struct caption {
    char *text[CAPTION_MAX_LINES]; /* owned */
    png_rgb colour[CAPTION_MAX_LINES];
    int n;
} caption;

/* Appends a line (dropped when the caption is full or out of memory). */
void caption_add(caption *L, png_rgb colour, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Wraps every line to at most maxc characters (at least 8), at a space where there is one; the
 * continuation lines are indented by two. */
void caption_wrap(caption *L, int maxc);
/* Height in pixels at font scale ts. */
int caption_height(const caption *L, int ts);
/* Draws the lines with the top-left corner at (x, y). */
void caption_draw(png_canvas *cv, const caption *L, int x, int y, int ts);
void caption_free(caption *L);

#endif
