/* The confusion matrix of `cirrdata stage --dataset --png` as a picture. */
#ifndef CD_TOOLS_RENDER_CONFUSION_H
#define CD_TOOLS_RENDER_CONFUSION_H

#include <stdint.h>

#include <cirrdata/status.h>

#define CONFUSION_MAX_CLASSES 16

/* Writes the C x C matrix cm (rows: true class, columns: predicted; C <= CONFUSION_MAX_CLASSES) to
 * path: cells shaded by the share of their row, with counts, row totals, accuracy, the class names
 * (names[0..C)) and caption (lines separated by '\n') below. Errors: png_canvas's. */
cd_status confusion_draw(const char *path, int C, const int64_t cm[CONFUSION_MAX_CLASSES][CONFUSION_MAX_CLASSES],
                         const char *const *names, const char *caption, cd_error *err);

#endif
