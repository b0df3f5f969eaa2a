/* The confusion matrix as a picture (see confusion.h). */
#include "confusion.h"

#include <stdio.h>

#include "png_canvas.h"

#define CELL 96
#define LEFT 150
#define TOP 120
#define SCALE 2

static const png_rgb C_BG = {250, 250, 252}, C_INK = {20, 20, 28}, C_DIM = {96, 96, 110}, C_FRAME = {180, 180, 190};

/* Cell (t, p) with its count: diagonal in blue, errors in orange; darker = larger share of the row. */
static void draw_cell(png_canvas *cv, int t, int p, int64_t count, int64_t row) {
    double share = row ? (double)count / (double)row : 0.0;
    png_rgb base = t == p ? (png_rgb){33, 102, 172} : (png_rgb){230, 97, 1};
    png_rgb c = {(uint8_t)(255 - share * (255 - base.r)), (uint8_t)(255 - share * (255 - base.g)),
                 (uint8_t)(255 - share * (255 - base.b))};
    int x = LEFT + p * CELL, y = TOP + t * CELL;
    png_canvas_fill(cv, x, y, CELL, CELL, C_FRAME);
    png_canvas_fill(cv, x + 1, y + 1, CELL - 2, CELL - 2, c);
    char buf[48];
    snprintf(buf, sizeof buf, "%lld", (long long)count);
    png_rgb tc = share > 0.55 ? (png_rgb){255, 255, 255} : C_INK;
    png_canvas_text(cv, x + CELL / 2 - png_canvas_text_width(buf, 3) / 2, y + CELL / 2 - 14, buf, 3, tc);
}

/* Row t: its class name, its cells and its total; adds to the totals. */
static void draw_row(png_canvas *cv, int C, int t, const int64_t cm[CONFUSION_MAX_CLASSES][CONFUSION_MAX_CLASSES],
                     const char *name, int64_t *total, int64_t *correct) {
    int64_t row = 0;
    for (int p = 0; p < C; p++) row += cm[t][p];
    *total += row;
    *correct += cm[t][t];
    png_canvas_text(cv, 16, TOP + t * CELL + CELL / 2 - 8, name, SCALE, C_INK);
    char buf[48];
    snprintf(buf, sizeof buf, "n=%lld", (long long)row);
    png_canvas_text(cv, LEFT + C * CELL + 14, TOP + t * CELL + CELL / 2 - 8, buf, SCALE, C_DIM);
    for (int p = 0; p < C; p++) draw_cell(cv, t, p, cm[t][p], row);
}

cd_status confusion_draw(const char *path, int C, const int64_t cm[CONFUSION_MAX_CLASSES][CONFUSION_MAX_CLASSES],
                         const char *const *names, const char *caption, cd_error *err) {
    int W = LEFT + C * CELL + 130;
    if (W < png_canvas_text_width(caption, 1) + 32) W = png_canvas_text_width(caption, 1) + 32;
    const int H = TOP + C * CELL + 40 + png_canvas_text_height(caption, 1) + 20;
    png_canvas cv;
    cd_status st = png_canvas_init(&cv, W, H, C_BG, err);
    if (st != CD_OK) return st;
    png_canvas_text(&cv, 16, 14, "cirrhosis stage: confusion matrix", SCALE, C_INK);
    png_canvas_text(&cv, LEFT + C * CELL / 2 - png_canvas_text_width("predicted", SCALE) / 2, TOP - 56, "predicted",
                    SCALE, C_DIM);
    png_canvas_text(&cv, 16, TOP - 28, "true", SCALE, C_DIM);
    int64_t total = 0, correct = 0;
    for (int t = 0; t < C; t++) draw_row(&cv, C, t, cm, names[t], &total, &correct);
    for (int p = 0; p < C; p++)
        png_canvas_text(&cv, LEFT + p * CELL + CELL / 2 - png_canvas_text_width(names[p], SCALE) / 2, TOP - 26,
                        names[p], SCALE, C_INK);
    char acc[96];
    snprintf(acc, sizeof acc, "accuracy %lld/%lld = %.1f %%", (long long)correct, (long long)total,
             total ? 100.0 * (double)correct / (double)total : 0.0);
    png_canvas_text(&cv, LEFT, TOP + C * CELL + 12, acc, SCALE, C_INK);
    png_canvas_text(&cv, 16, TOP + C * CELL + 40, caption, 1, C_DIM);
    st = png_canvas_write(&cv, path, err);
    png_canvas_free(&cv);
    return st;
}
