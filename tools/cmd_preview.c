/* cirrdata preview: a converted dataset's samples, or a loader batch, drawn as a PNG picture.
 *
 * One sample: for every channel a row of three orthogonal planes through the liver (axial, coronal,
 * sagittal), sampled onto a common millimetre grid so the physical aspect ratio is right, windowed
 * to the channel's 0.5..99.5 percentiles, with the mask drawn as an outline, and a caption saying
 * what the picture is. --batch: the first (or N-th) batch of cd_loader, the middle axial slice of
 * every sample side by side. --variants: a case's augmented copies side by side. This file parses the
 * options and reads what the pictures show (records, a loader batch); render/preview_draw.c draws them
 * (radiological convention: patient right on the image left). */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "render/preview_draw.h"

static const char preview_help[] =
    "usage: cirrdata preview DATASET --sample N -o OUT.png [--size PX]\n"
    "       cirrdata preview DATASET --batch -o OUT.png [--augment nnunet|cirrhosisstage|none|FILE]\n"
    "                        [--seed S] [--batch-size B] [--patch X,Y,Z] [--mode patch|volume|slice]\n"
    "                        [--split NAMES] [--sample N] [--size PX]\n"
    "       cirrdata preview DATASET --variants N -o OUT.png [--size PX]\n\n"
    "Draws a converted dataset's sample as a PNG: per channel, the axial, coronal and sagittal planes\n"
    "through the middle of the mask's bounding box (or of the volume), in millimetre proportions\n"
    "(spacing from the record), windowed to the sample's 0.5..99.5 percentiles per channel, with the\n"
    "mask outlined in red and a caption: label, patient, sequence, split, shape, spacing, recipe,\n"
    "dataset. Radiological convention: the patient's right is on the image's left; axial views have\n"
    "anterior up, coronal and sagittal views superior up (sagittal: anterior on the left). Yellow\n"
    "letters mark the directions, blue ticks where the other two planes cut.\n\n"
    "  --sample N        record N of the dataset (0-based)\n"
    "  -o, --out FILE    the PNG to write\n"
    "  --size PX         pixels for the longest physical extent of a view (default 320; --batch 256)\n"
    "  --batch           draw a training batch from the loader instead: the middle axial slice of\n"
    "                    every sample side by side (with --sample N: batch N of epoch 0, default 0)\n"
    "  --augment NAME    --batch: none (default), nnunet, cirrhosisstage or a pipeline JSON file\n"
    "  --seed S          --batch: loader seed (default 0)\n"
    "  --batch-size B    --batch: samples per batch, 1..64 (default 4)\n"
    "  --patch X,Y,Z     --batch: patch size (patch mode; default 96,96,32) or fixed volume size\n"
    "  --mode MODE       --batch: patch (default), volume or slice\n"
    "  --split NAMES     --batch: comma-separated splits to draw from (default train; * = all)\n"
    "  --variants N      a dataset written by 'convert --augment': case N's original and its K\n"
    "                    augmented copies side by side (middle axial slice of each), with what was\n"
    "                    drawn for each copy\n";

enum {
    O_SAMPLE = 1000,
    O_OUT,
    O_SIZE,
    O_BATCH,
    O_AUGMENT,
    O_SEED,
    O_BSIZE,
    O_PATCH,
    O_MODE,
    O_SPLIT,
    O_HELP,
    O_VARIANTS
};

/* ---- reading a record ---- */

/* Converts n elements of dtype to float; false for a dtype we do not draw. */
static bool to_float(const void *raw, cd_dtype dt, size_t n, float *out) {
    switch (dt) {
#define CONV(T)                                                                                                        \
    do {                                                                                                               \
        const T *s = raw;                                                                                              \
        for (size_t i = 0; i < n; i++) out[i] = (float)s[i];                                                           \
    } while (0)
    case CD_DTYPE_UINT8: CONV(uint8_t); return true;
    case CD_DTYPE_INT8: CONV(int8_t); return true;
    case CD_DTYPE_UINT16: CONV(uint16_t); return true;
    case CD_DTYPE_INT16: CONV(int16_t); return true;
    case CD_DTYPE_UINT32: CONV(uint32_t); return true;
    case CD_DTYPE_INT32: CONV(int32_t); return true;
    case CD_DTYPE_FLOAT32: CONV(float); return true;
    case CD_DTYPE_FLOAT64: CONV(double); return true;
#undef CONV
    case CD_DTYPE_FLOAT16: {
        cd_float16_to_float32(raw, out, n);
        return true;
    }
    default: return false;
    }
}

static int fail_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail_msg(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("cirrdata: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_FAIL;
}

/* Frees what read_record read and clears s (a second call does nothing). */
static void record_free(preview_record *s) {
    json_decref(s->meta);
    free(s->image);
    free(s->mask);
    memset(s, 0, sizeof *s);
}

/* Where a record is read from, for the messages. */
typedef struct record_src {
    const char *dir;
    uint64_t n;
    const cd_shard *sh;
    const cd_record *rec;
} record_src;

/* The record's "image" tensor (index ti) as float. */
static int read_image(const record_src *rs, int ti, preview_record *s) {
    cd_tensor_info info;
    cd_record_tensor_info(rs->rec, (uint32_t)ti, &info);
    for (int a = 0; a < 3; a++) s->d[a] = info.shape[a];
    s->channels = info.channels;
    s->dtype = info.dtype;
    size_t nel = (size_t)s->d[0] * (size_t)s->d[1] * (size_t)s->d[2] * s->channels;
    if (nel == 0) return fail_msg("%s: record %llu: empty image tensor", rs->dir, (unsigned long long)rs->n);
    void *raw = malloc(nel * cd_dtype_size(info.dtype));
    s->image = malloc(nel * sizeof *s->image);
    int rc = CLI_OK;
    cd_error err;
    if (!raw || !s->image)
        rc = fail_msg("%s: record %llu: out of memory for the image", rs->dir, (unsigned long long)rs->n);
    else if (cd_record_read_tensor(rs->sh, rs->rec, (uint32_t)ti, raw, &err) != CD_OK)
        rc = cli_fail_error(&err);
    else if (!to_float(raw, info.dtype, nel, s->image))
        rc = fail_msg("%s: record %llu: cannot draw an image of dtype %s", rs->dir, (unsigned long long)rs->n,
                      cd_dtype_name(info.dtype));
    free(raw);
    return rc;
}

/* One channel: nonzero is foreground; one-hot channels: a foreground channel beats channel 0. */
static void mask_foreground(const float *mf, size_t nvox, uint32_t channels, uint8_t *mask) {
    for (size_t i = 0; i < nvox; i++) {
        if (channels <= 1) {
            mask[i] = mf[i] > 0;
            continue;
        }
        float best = mf[i];
        uint8_t fg = 0;
        for (uint32_t c = 1; c < channels; c++)
            if (mf[c * nvox + i] > best) {
                best = mf[c * nvox + i];
                fg = 1;
            }
        mask[i] = fg;
    }
}

/* The record's "mask" tensor (index mi) as foreground bytes. */
static int read_mask(const record_src *rs, int mi, preview_record *s) {
    cd_tensor_info info;
    cd_record_tensor_info(rs->rec, (uint32_t)mi, &info);
    if (info.shape[0] != s->d[0] || info.shape[1] != s->d[1] || info.shape[2] != s->d[2])
        return fail_msg("%s: record %llu: mask shape differs from the image's", rs->dir, (unsigned long long)rs->n);
    size_t nvox = (size_t)s->d[0] * (size_t)s->d[1] * (size_t)s->d[2], mel = nvox * info.channels;
    void *raw = malloc(mel * cd_dtype_size(info.dtype));
    float *mf = malloc(mel * sizeof *mf);
    s->mask = malloc(nvox);
    int rc = CLI_OK;
    cd_error err;
    cd_error_clear(&err);
    if (!raw || !mf || !s->mask)
        rc = fail_msg("%s: record %llu: out of memory for the mask", rs->dir, (unsigned long long)rs->n);
    else if (cd_record_read_tensor(rs->sh, rs->rec, (uint32_t)mi, raw, &err) != CD_OK ||
             !to_float(raw, info.dtype, mel, mf))
        rc = err.status != CD_OK
                 ? cli_fail_error(&err)
                 : fail_msg("%s: record %llu: cannot read the mask", rs->dir, (unsigned long long)rs->n);
    else
        mask_foreground(mf, nvox, info.channels, s->mask);
    free(mf);
    free(raw);
    return rc;
}

/* Record n of ds with its metadata, image and mask (if any), for record_free to free (on failure it is
 * freed already). */
static int read_record(cd_dataset *ds, const char *dir, uint64_t n, preview_record *s) {
    memset(s, 0, sizeof *s);
    cd_error err;
    cd_record *rec;
    const cd_shard *sh;
    if (cd_dataset_read_record(ds, n, &rec, &sh, &err) != CD_OK) return cli_fail_error(&err);
    const record_src rs = {dir, n, sh, rec};
    int rc = CLI_OK;
    s->meta = json_loads(cd_record_metadata(rec), 0, NULL);
    int ti = cd_record_find_tensor(rec, "image"), mi = cd_record_find_tensor(rec, "mask");
    if (!s->meta)
        rc = fail_msg("%s: record %llu: metadata is not JSON", dir, (unsigned long long)n);
    else if (ti < 0)
        rc = fail_msg("%s: record %llu has no 'image' tensor", dir, (unsigned long long)n);
    else
        rc = read_image(&rs, ti, s);
    if (rc == CLI_OK && mi >= 0) rc = read_mask(&rs, mi, s);
    cd_record_destroy(rec);
    if (rc != CLI_OK) record_free(s);
    return rc;
}

/* ---- one sample ---- */

static int preview_sample(const char *dir, uint64_t n, const char *out, int size) {
    cd_dataset *ds;
    cd_error err;
    if (cd_dataset_open(dir, &ds, &err) != CD_OK) return cli_fail_error(&err);
    uint64_t count = cd_dataset_record_count(ds);
    if (n >= count) {
        cd_dataset_close(ds);
        if (count == 0)
            return fail_msg("%s: sample %llu is out of range: the dataset holds no records", dir,
                            (unsigned long long)n);
        return fail_msg("%s: sample %llu is out of range: the dataset holds %llu records (0..%llu)", dir,
                        (unsigned long long)n, (unsigned long long)count, (unsigned long long)(count - 1));
    }
    const preview_source src = {dir, json_loads(cd_dataset_manifest(ds), 0, NULL)};
    preview_record s;
    int rc = read_record(ds, dir, n, &s);
    cd_dataset_close(ds);
    preview_picture pic;
    if (rc == CLI_OK && preview_draw_sample(&src, &s, n, count, size, out, &pic, &err) != CD_OK) {
        rc = cli_fail_error(&err);
    } else if (rc == CLI_OK) {
        const char *key = json_string_value(json_object_get(s.meta, "key"));
        printf("wrote %s (%d x %d): record %llu, %s, window", out, pic.width, pic.height, (unsigned long long)n,
               key ? key : "?");
        for (uint32_t c = 0; c < s.channels; c++) printf(" %.9g..%.9g", pic.windows[2 * c], pic.windows[2 * c + 1]);
        printf("\n");
        free(pic.windows);
    }
    record_free(&s);
    json_decref(src.manifest);
    return rc;
}

/* ---- a loader batch ---- */

typedef struct batch_opts {
    const char *augment, *splits;
    uint64_t seed, number;
    uint32_t batch_size;
    int64_t patch[3];
    bool patch_set;
    cd_loader_mode mode;
} batch_opts;

static const char *mode_name(cd_loader_mode m) {
    return m == CD_LOADER_VOLUME ? "volume" : m == CD_LOADER_SLICE ? "slice" : "patch";
}

static void batch_loader_options(const char *dir, const batch_opts *bo, cd_loader_options *lo) {
    cd_loader_options_init(lo);
    lo->dataset = dir;
    lo->mode = bo->mode;
    if (bo->patch_set)
        memcpy(lo->patch, bo->patch, sizeof lo->patch);
    else if (bo->mode != CD_LOADER_PATCH)
        memset(lo->patch, 0, sizeof lo->patch);
    lo->batch_size = bo->batch_size;
    lo->seed = bo->seed;
    lo->augment = bo->augment;
    if (bo->splits) lo->splits = bo->splits;
    lo->world_size = 1;
    lo->rank = 0;
}

/* Batch bo->number of epoch 0 (*b, to release), after the batches before it. */
static int batch_fetch(cd_loader *ld, const char *dir, const batch_opts *bo, const cd_loader_options *lo,
                       cd_batch **b) {
    cd_error err;
    uint64_t nbatches = cd_loader_epoch_batches(ld);
    if (bo->number >= nbatches)
        return fail_msg("%s: batch %llu is out of range: an epoch of split '%s' has %llu batch%s of %u", dir,
                        (unsigned long long)bo->number, lo->splits, (unsigned long long)nbatches,
                        nbatches == 1 ? "" : "es", lo->batch_size);
    for (uint64_t k = 0; k <= bo->number; k++) {
        if (*b) cd_loader_release(ld, *b);
        *b = NULL;
        if (cd_loader_next(ld, b, &err) != CD_OK) return cli_fail_error(&err);
        if (!*b)
            return fail_msg("%s: the loader ended the epoch before batch %llu", dir, (unsigned long long)bo->number);
    }
    return CLI_OK;
}

/* The spacing of each sample of b, from its record (*sp: b->size entries, the caller frees it). */
static int batch_spacings(cd_dataset *ds, const cd_batch *b, double (**sp)[3]) {
    *sp = calloc(b->size ? b->size : 1, sizeof **sp);
    if (!*sp) return fail_msg("out of memory");
    for (uint32_t i = 0; i < b->size; i++) {
        cd_record *rec;
        const cd_shard *sh;
        cd_error err;
        if (cd_dataset_read_record(ds, (uint64_t)b->index[i], &rec, &sh, &err) != CD_OK) return cli_fail_error(&err);
        json_t *meta = json_loads(cd_record_metadata(rec), 0, NULL);
        preview_record_spacing(meta, (*sp)[i]);
        json_decref(meta);
        cd_record_destroy(rec);
    }
    return CLI_OK;
}

static int preview_batch(const char *dir, const batch_opts *bo, const char *out, int size) {
    cd_error err;
    cd_dataset *ds;
    if (cd_dataset_open(dir, &ds, &err) != CD_OK) return cli_fail_error(&err);
    const preview_source src = {dir, json_loads(cd_dataset_manifest(ds), 0, NULL)};
    cd_loader_options lo;
    batch_loader_options(dir, bo, &lo);
    cd_loader *ld = NULL;
    cd_batch *b = NULL;
    double(*sp)[3] = NULL;
    int rc = cd_loader_create(&lo, &ld, &err) != CD_OK ? cli_fail_error(&err) : batch_fetch(ld, dir, bo, &lo, &b);
    if (rc == CLI_OK) rc = batch_spacings(ds, b, &sp);
    const preview_batch_info bi = {bo->augment, bo->seed, mode_name(bo->mode), lo.splits};
    preview_picture pic;
    if (rc == CLI_OK && preview_draw_batch(&src, b, (const double(*)[3])sp, &bi, size, out, &pic, &err) != CD_OK)
        rc = cli_fail_error(&err);
    else if (rc == CLI_OK)
        printf("wrote %s (%d x %d): batch %llu, %u sample%s\n", out, pic.width, pic.height,
               (unsigned long long)b->number, b->size, b->size == 1 ? "" : "s");
    free(sp);
    if (b) cd_loader_release(ld, b);
    cd_loader_destroy(ld);
    json_decref(src.manifest);
    cd_dataset_close(ds);
    return rc;
}

/* ---- the augmented copies of one case ---- */

enum { MAX_VARIANTS = 16 }; /* the original and the first copies are enough to see the spread */

/* The records of case case_no (at most MAX_VARIANTS): *n of them, at dataset indices idx[]. */
static int variant_records(cd_dataset *ds, const char *dir, json_t *manifest, uint64_t case_no, preview_record *recs,
                           uint64_t *idx, int *n) {
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(manifest, "records"), i, e) {
        json_t *cs = json_object_get(e, "case");
        if (!json_is_integer(cs) || (uint64_t)json_integer_value(cs) != case_no) continue;
        if (*n == MAX_VARIANTS) break;
        if (read_record(ds, dir, i, &recs[*n]) != CLI_OK) return CLI_FAIL;
        idx[(*n)++] = i;
    }
    if (*n) return CLI_OK;
    json_t *aug = json_object_get(manifest, "augmentation");
    return fail_msg("%s: no records of case %llu (cases are 0..%lld)", dir, (unsigned long long)case_no,
                    (long long)json_integer_value(json_object_get(json_object_get(manifest, "counts"), "records")) /
                            (json_integer_value(json_object_get(aug, "copies")) +
                             !json_is_true(json_object_get(aug, "no_original"))) -
                        1);
}

static int preview_variants(const char *dir, uint64_t case_no, const char *out, int size) {
    cd_error err;
    cd_dataset *ds;
    if (cd_dataset_open(dir, &ds, &err) != CD_OK) return cli_fail_error(&err);
    const preview_source src = {dir, json_loads(cd_dataset_manifest(ds), 0, NULL)};
    preview_record recs[MAX_VARIANTS];
    uint64_t idx[MAX_VARIANTS];
    int n = 0, rc;
    if (!json_object_get(src.manifest, "augmentation"))
        rc = fail_msg("%s: not written by 'convert --augment' (no 'augmentation' in the manifest): nothing to compare",
                      dir);
    else
        rc = variant_records(ds, dir, src.manifest, case_no, recs, idx, &n);
    preview_picture pic;
    if (rc == CLI_OK && preview_draw_variants(&src, recs, idx, n, case_no, size, out, &pic, &err) != CD_OK)
        rc = cli_fail_error(&err);
    else if (rc == CLI_OK)
        printf("wrote %s (%d x %d): case %llu, %d record%s\n", out, pic.width, pic.height, (unsigned long long)case_no,
               n, n == 1 ? "" : "s");
    for (int k = 0; k < n; k++) record_free(&recs[k]);
    json_decref(src.manifest);
    cd_dataset_close(ds);
    return rc;
}

/* ---- command ---- */

static bool parse_patch(const char *s, int64_t out[3]) {
    long long a, b, c;
    char tail;
    if (sscanf(s, "%lld,%lld,%lld%c", &a, &b, &c, &tail) != 3) return false;
    if (a < 1 || b < 1 || c < 1 || a > 4096 || b > 4096 || c > 4096) return false;
    out[0] = a;
    out[1] = b;
    out[2] = c;
    return true;
}

int cmd_preview(int argc, char **argv) {
    static const struct option opts[] = {{"sample", required_argument, NULL, O_SAMPLE},
                                         {"out", required_argument, NULL, O_OUT},
                                         {"size", required_argument, NULL, O_SIZE},
                                         {"batch", no_argument, NULL, O_BATCH},
                                         {"augment", required_argument, NULL, O_AUGMENT},
                                         {"seed", required_argument, NULL, O_SEED},
                                         {"batch-size", required_argument, NULL, O_BSIZE},
                                         {"patch", required_argument, NULL, O_PATCH},
                                         {"mode", required_argument, NULL, O_MODE},
                                         {"split", required_argument, NULL, O_SPLIT},
                                         {"variants", required_argument, NULL, O_VARIANTS},
                                         {"help", no_argument, NULL, O_HELP},
                                         {NULL, 0, NULL, 0}};
    const char *out = NULL;
    int64_t sample_n = -1, size = -1, v, variants = -1;
    bool batch = false, batch_only = false;
    const char *batch_only_name = NULL;
    batch_opts bo = {
        .augment = "none", .splits = NULL, .seed = 0, .number = 0, .batch_size = 4, .mode = CD_LOADER_PATCH};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (c) {
        case O_SAMPLE:
            if (!cli_parse_int64(optarg, &v) || v < 0)
                return cli_usage_error("preview", "bad --sample '%s' (a record number >= 0)", optarg);
            sample_n = v;
            break;
        case 'o':
        case O_OUT: out = optarg; break;
        case O_SIZE:
            if (!cli_parse_int64(optarg, &v) || v < 16 || v > 4096)
                return cli_usage_error("preview", "bad --size '%s' (16..4096 pixels)", optarg);
            size = v;
            break;
        case O_BATCH: batch = true; break;
        case O_AUGMENT:
            bo.augment = optarg;
            batch_only = true;
            batch_only_name = "--augment";
            break;
        case O_SEED:
            if (!cli_parse_int64(optarg, &v) || v < 0) return cli_usage_error("preview", "bad --seed '%s'", optarg);
            bo.seed = (uint64_t)v;
            batch_only = true;
            batch_only_name = "--seed";
            break;
        case O_BSIZE:
            if (!cli_parse_int64(optarg, &v) || v < 1 || v > 64)
                return cli_usage_error("preview", "bad --batch-size '%s' (1..64)", optarg);
            bo.batch_size = (uint32_t)v;
            batch_only = true;
            batch_only_name = "--batch-size";
            break;
        case O_PATCH:
            if (!parse_patch(optarg, bo.patch))
                return cli_usage_error("preview", "bad --patch '%s' (expected X,Y,Z, each 1..4096)", optarg);
            bo.patch_set = true;
            batch_only = true;
            batch_only_name = "--patch";
            break;
        case O_MODE:
            if (!strcmp(optarg, "patch"))
                bo.mode = CD_LOADER_PATCH;
            else if (!strcmp(optarg, "volume"))
                bo.mode = CD_LOADER_VOLUME;
            else if (!strcmp(optarg, "slice"))
                bo.mode = CD_LOADER_SLICE;
            else
                return cli_usage_error("preview", "bad --mode '%s' (patch, volume or slice)", optarg);
            batch_only = true;
            batch_only_name = "--mode";
            break;
        case O_SPLIT:
            bo.splits = optarg;
            batch_only = true;
            batch_only_name = "--split";
            break;
        case O_VARIANTS:
            if (!cli_parse_int64(optarg, &v) || v < 0)
                return cli_usage_error("preview", "bad --variants '%s' (a case number >= 0)", optarg);
            variants = v;
            break;
        case 'h':
        case O_HELP: fputs(preview_help, stdout); return CLI_OK;
        default: return cli_usage_error("preview", "unknown option or missing value '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage_error("preview", "expected exactly one DATASET");
    if (!out) return cli_usage_error("preview", "missing -o OUT.png");
    if (batch_only && !batch) return cli_usage_error("preview", "%s needs --batch", batch_only_name);
    const char *dir = argv[optind];
    if (variants >= 0) {
        if (batch || sample_n >= 0) return cli_usage_error("preview", "--variants goes without --batch and --sample");
        return preview_variants(dir, (uint64_t)variants, out, size > 0 ? (int)size : 256);
    }
    if (batch) {
        if (sample_n >= 0) bo.number = (uint64_t)sample_n;
        return preview_batch(dir, &bo, out, size > 0 ? (int)size : 256);
    }
    if (sample_n < 0) return cli_usage_error("preview", "missing --sample N (or --batch)");
    return preview_sample(dir, (uint64_t)sample_n, out, size > 0 ? (int)size : 320);
}
