/* The pictures of `cirrdata preview`: one record's three planes per channel, a loader batch's middle
 * axial slices, and a case's augmented copies side by side, each with its caption, written as PNG. */
#ifndef CD_TOOLS_RENDER_PREVIEW_DRAW_H
#define CD_TOOLS_RENDER_PREVIEW_DRAW_H

#include <jansson.h>
#include <stdint.h>

#include <cirrdata/cirrdata.h>

/* A record to draw: its image as float32, channels x (X, Y, Z) in C order, its foreground mask
 * (X, Y, Z; nonzero inside) or NULL, and its metadata. Borrowed by the drawing functions. */
typedef struct preview_record {
    json_t *meta;
    int64_t d[3];
    uint32_t channels;
    cd_dtype dtype; /* as stored (the caption says it) */
    float *image;
    uint8_t *mask;
} preview_record;

/* The dataset a picture comes from, for its caption. */
typedef struct preview_source {
    const char *dir;  /* shown as an absolute path */
    json_t *manifest; /* borrowed; NULL: "?" where the caption quotes it */
} preview_source;

/* A written picture: its size and, from preview_draw_sample, each channel's window (lo, hi), which
 * the caller frees. */
typedef struct preview_picture {
    int width, height;
    float *windows;
} preview_picture;

/* The spacing of a record: metadata "spacing", else the column norms of "affine", else 1 mm. */
void preview_record_spacing(json_t *meta, double sp[3]);

/* Record n (of count) at out: per channel (at most 8) a row of the axial, coronal and sagittal planes
 * through the middle of the mask's bounding box (or of the volume), one millimetre scale with `size`
 * pixels for the longest extent, windowed to the channel's 0.5..99.5 percentiles, the mask outlined,
 * and a caption. Errors: CD_ERR_NOMEM, and png_canvas's (the picture's size, writing out). */
cd_status preview_draw_sample(const preview_source *src, const preview_record *s, uint64_t n, uint64_t count, int size,
                              const char *out, preview_picture *pic, cd_error *err);

/* What the caption of a batch says about the loader. */
typedef struct preview_batch_info {
    const char *augment; /* its pipeline; "none": orientation letters are drawn */
    uint64_t seed;
    const char *mode;   /* patch, volume or slice */
    const char *splits; /* as the loader resolved them */
} preview_batch_info;

/* Loader batch b at out: the middle axial slice of every sample (sp: one spacing per sample), four to
 * a row, with headers and a caption. Errors as preview_draw_sample. */
cd_status preview_draw_batch(const preview_source *src, const cd_batch *b, const double (*sp)[3],
                             const preview_batch_info *bi, int size, const char *out, preview_picture *pic,
                             cd_error *err);

/* Case case_no's records (recs[0..n), n >= 1, records index[] of a dataset written by 'convert
 * --augment') at out: the middle axial slice of each side by side, with what was drawn for each copy.
 * Errors as preview_draw_sample. */
cd_status preview_draw_variants(const preview_source *src, const preview_record *recs, const uint64_t *index, int n,
                                uint64_t case_no, int size, const char *out, preview_picture *pic, cd_error *err);

#endif
