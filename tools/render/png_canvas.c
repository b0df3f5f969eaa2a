/* RGB canvas and PNG writer for the CLI's pictures (see png_canvas.h). */
#include "png_canvas.h"

#include "../atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "font.h"

#define CANVAS_MAX_SIDE 32768

static cd_status fail(cd_error *err, cd_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static cd_status fail(cd_error *err, cd_status st, const char *fmt, ...) {
    if (err) {
        err->status = st;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return st;
}

cd_status png_canvas_init(png_canvas *c, int width, int height, png_rgb bg, cd_error *err) {
    c->width = c->height = 0;
    c->pixels = NULL;
    if (width < 1 || height < 1 || width > CANVAS_MAX_SIDE || height > CANVAS_MAX_SIDE)
        return fail(err, CD_ERR_ARG, "picture size %d x %d is outside 1..%d pixels per side", width, height,
                    CANVAS_MAX_SIDE);
    c->pixels = malloc((size_t)width * (size_t)height * 3);
    if (!c->pixels) return fail(err, CD_ERR_NOMEM, "out of memory for a %d x %d picture", width, height);
    c->width = width;
    c->height = height;
    png_canvas_fill(c, 0, 0, width, height, bg);
    return CD_OK;
}

void png_canvas_free(png_canvas *c) {
    free(c->pixels);
    c->pixels = NULL;
    c->width = c->height = 0;
}

static inline uint8_t *px(const png_canvas *c, int x, int y) {
    return c->pixels + ((size_t)y * (size_t)c->width + (size_t)x) * 3;
}

void png_canvas_set(png_canvas *c, int x, int y, png_rgb colour) {
    if (x < 0 || y < 0 || x >= c->width || y >= c->height) return;
    uint8_t *p = px(c, x, y);
    p[0] = colour.r;
    p[1] = colour.g;
    p[2] = colour.b;
}

void png_canvas_fill(png_canvas *c, int x, int y, int w, int h, png_rgb colour) {
    int x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
    int x1 = x + w > c->width ? c->width : x + w, y1 = y + h > c->height ? c->height : y + h;
    for (int j = y0; j < y1; j++)
        for (int i = x0; i < x1; i++) {
            uint8_t *p = px(c, i, j);
            p[0] = colour.r;
            p[1] = colour.g;
            p[2] = colour.b;
        }
}

void png_canvas_grey(png_canvas *c, int x, int y, int w, int h, const float *values, float lo, float hi) {
    float range = hi - lo;
    if (!(range > 0)) range = 1;
    for (int j = 0; j < h; j++) {
        int cy = y + j;
        if (cy < 0 || cy >= c->height) continue;
        for (int i = 0; i < w; i++) {
            int cx = x + i;
            if (cx < 0 || cx >= c->width) continue;
            float v = values[(size_t)j * (size_t)w + (size_t)i];
            float t = isfinite(v) ? (v - lo) / range : 0.0f;
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            uint8_t g = (uint8_t)lrintf(t * 255.0f);
            uint8_t *p = px(c, cx, cy);
            p[0] = p[1] = p[2] = g;
        }
    }
}

void png_canvas_outline(png_canvas *c, int x, int y, int w, int h, const uint8_t *mask, png_rgb colour) {
    for (int j = 0; j < h; j++)
        for (int i = 0; i < w; i++) {
            if (!mask[(size_t)j * (size_t)w + (size_t)i]) continue;
            bool edge =
                i == 0 || j == 0 || i == w - 1 || j == h - 1 || !mask[(size_t)j * (size_t)w + (size_t)(i - 1)] ||
                !mask[(size_t)j * (size_t)w + (size_t)(i + 1)] || !mask[(size_t)(j - 1) * (size_t)w + (size_t)i] ||
                !mask[(size_t)(j + 1) * (size_t)w + (size_t)i];
            if (edge) png_canvas_set(c, x + i, y + j, colour);
        }
}

int png_canvas_text_width(const char *text, int scale) {
    int best = 0, n = 0;
    for (const char *s = text; *s; s++) {
        if (*s == '\n') {
            n = 0;
            continue;
        }
        n++;
        if (n > best) best = n;
    }
    return best ? (best * FONT_CELL_W - 1) * scale : 0;
}

int png_canvas_text_height(const char *text, int scale) {
    int lines = 1;
    for (const char *s = text; *s; s++) lines += *s == '\n';
    return ((lines - 1) * FONT_CELL_H + FONT_GLYPH_H) * scale;
}

int png_canvas_text(png_canvas *c, int x, int y, const char *text, int scale, png_rgb colour) {
    if (scale < 1) scale = 1;
    int cx = x, cy = y;
    for (const unsigned char *s = (const unsigned char *)text; *s; s++) {
        if (*s == '\n') {
            cx = x;
            cy += FONT_CELL_H * scale;
            continue;
        }
        const uint8_t *g = font_glyph(*s);
        for (int r = 0; r < FONT_GLYPH_H; r++)
            for (int col = 0; col < FONT_GLYPH_W; col++)
                if (g[r] & (0x10 >> col)) png_canvas_fill(c, cx + col * scale, cy + r * scale, scale, scale, colour);
        cx += FONT_CELL_W * scale;
    }
    return png_canvas_text_width(text, scale);
}

/* libpng reports errors through longjmp; the message is kept for the cd_error. */
typedef struct png_errctx {
    jmp_buf jmp;
    char message[200];
} png_errctx;

static void on_png_error(png_structp png, png_const_charp msg) {
    png_errctx *ctx = png_get_error_ptr(png);
    snprintf(ctx->message, sizeof ctx->message, "%s", msg);
    longjmp(ctx->jmp, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

/* The picture goes to "<path>.tmp-<pid>", created exclusively and never through a link planted at that
 * name, and is renamed onto path when complete: a reader never sees half a PNG, and a link at path is
 * replaced, not written through. */
static cd_status write_png(const png_canvas *c, const char *path, const char *tmp, cd_error *err);

cd_status png_canvas_write(const png_canvas *c, const char *path, cd_error *err) {
    if (!c->pixels) return fail(err, CD_ERR_ARG, "cannot write %s: empty picture", path);
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return fail(err, CD_ERR_ARG, "cannot write %.100s...: path too long", path);
    cd_status st = write_png(c, path, tmp, err);
    if (st == CD_OK && rename(tmp, path) != 0) {
        st = fail(err, CD_ERR_IO, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
    }
    return st;
}

static cd_status write_png(const png_canvas *c, const char *path, const char *tmp, cd_error *err) {
    FILE *f = atomic_open_temporary(tmp);
    if (!f) return fail(err, CD_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    png_errctx ctx;
    ctx.message[0] = '\0';
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        fclose(f);
        unlink(tmp);
        return fail(err, CD_ERR_NOMEM, "cannot write %s: out of memory in libpng", path);
    }
    /* Everything the longjmp may come back to is set before setjmp and not changed after it. */
    png_bytep *volatile rows = malloc((size_t)c->height * sizeof *rows);
    if (!rows) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        unlink(tmp);
        return fail(err, CD_ERR_NOMEM, "cannot write %s: out of memory", path);
    }
    for (int y = 0; y < c->height; y++) rows[y] = c->pixels + (size_t)y * (size_t)c->width * 3;
    if (setjmp(ctx.jmp)) {
        png_destroy_write_struct(&png, &info);
        free(rows);
        int e = errno;
        fclose(f);
        unlink(tmp);
        return fail(err, CD_ERR_IO, "cannot write %s: %s", path, ctx.message[0] ? ctx.message : strerror(e));
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)c->width, (png_uint_32)c->height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_text text;
    memset(&text, 0, sizeof text);
    text.compression = PNG_TEXT_COMPRESSION_NONE;
    text.key = (png_charp) "Software";
    text.text = (png_charp) "cirrdata preview";
    png_set_text(png, info, &text, 1);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(rows);
    errno = 0;
    bool bad = fflush(f) != 0 || ferror(f);
    int e = errno;
    if (fclose(f) != 0 && !bad) {
        bad = true;
        e = errno;
    }
    if (bad) {
        unlink(tmp);
        return fail(err, CD_ERR_IO, "cannot write %s: %s", path, strerror(e ? e : EIO));
    }
    return CD_OK;
}
