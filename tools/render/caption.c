/* Caption lines of the CLI's pictures (see caption.h). */
#include "caption.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "font.h"

void caption_add(caption *L, png_rgb colour, const char *fmt, ...) {
    if (L->n >= CAPTION_MAX_LINES) return;
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    if (!s) return;
    L->text[L->n] = s;
    L->colour[L->n++] = colour;
}

void caption_wrap(caption *L, int maxc) {
    if (maxc < 8) maxc = 8;
    caption out = {.n = 0};
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
            caption_add(&out, L->colour[i], "%*s%.*s", indent, "", take, s);
            s += take;
            while (*s == ' ') s++;
            indent = 2;
        }
        free(L->text[i]);
    }
    *L = out;
}

int caption_height(const caption *L, int ts) { return L->n * FONT_CELL_H * ts; }

void caption_draw(png_canvas *cv, const caption *L, int x, int y, int ts) {
    for (int i = 0; i < L->n; i++) png_canvas_text(cv, x, y + i * FONT_CELL_H * ts, L->text[i], ts, L->colour[i]);
}

void caption_free(caption *L) {
    for (int i = 0; i < L->n; i++) free(L->text[i]);
    L->n = 0;
}
