/* cd_nnunet_export: a source dataset as an nnU-Net v2 raw dataset (cirrdata/nnunet.h). The cases come
 * from nnunet_plan.c, the output folder from nnunet_files.c; each case is checked with nnU-Net's rules
 * (nnunet_check.c) before its files are written. */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cirrdata/nifti.h"
#include "cirrdata/nnunet.h"
#include "cirrdata/resample.h"
#include "cirrdata/shard.h"
#include "convert/nnunet_check.h"
#include "convert/nnunet_export.h"
#include "io/file.h"

void cd_nnunet_export_options_init(cd_nnunet_export_options *o) { memset(o, 0, sizeof *o); }

typedef struct ex_run {
    const cd_nnunet_export_options *o;
    cd_nn_plan plan;
    cd_nn_labels labels;
    json_t *labels_json;
    char tmp[PATH_MAX];
    int level;
    cd_nnunet_export_result res;
    json_t *cases, *warnings; /* cirrdata_export.json */
} ex_run;

/* "DatasetNNN_Name": nnU-Net finds a dataset by its three-or-more-digit id and needs a name after it. */
static bool dataset_name_ok(const char *out_dir) {
    size_t len = strlen(out_dir);
    while (len > 1 && out_dir[len - 1] == '/') len--;
    const char *s = out_dir + len;
    while (s > out_dir && s[-1] != '/') s--;
    if (strncmp(s, "Dataset", 7)) return false;
    const char *d = s + 7;
    size_t nd = 0;
    while (d + nd < out_dir + len && isdigit((unsigned char)d[nd])) nd++;
    return nd >= 3 && d + nd < out_dir + len - 1 && d[nd] == '_';
}

static void warn(ex_run *x, const char *fmt, ...) CD_PRINTF(2, 3);
static void warn(ex_run *x, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_array_append_new(x->warnings, json_string(msg));
    x->res.warnings++;
}

/* Reads one source file and applies the per-file rules: one volume, no NaN (images and masks). */
static cd_status read_checked(ex_run *x, const char *path, cd_volume **vol, cd_nifti_header *h, cd_error *err) {
    cd_nifti_read_options ro;
    cd_nifti_read_options_init(&ro);
    ro.max_bytes = x->o->max_bytes;
    cd_status st = cd_nifti_read(path, &ro, vol, h, err);
    if (st != CD_OK) return st;
    if (h->nvolumes > 1) {
        cd_volume_destroy(*vol);
        *vol = NULL;
        return cd_fail(err, CD_ERR_FORMAT, "%s: holds %lld volumes (4D); nnU-Net takes one volume per channel file",
                       path, (long long)h->nvolumes);
    }
    uint64_t nan = cd_nn_count_nan(*vol);
    if (nan) {
        cd_volume_destroy(*vol);
        *vol = NULL;
        return cd_fail(err, CD_ERR_FORMAT, "%s: %llu NaN voxels (nnU-Net's rule 'nan': replace them first)", path,
                       (unsigned long long)nan);
    }
    return CD_OK;
}

static cd_status check_labels(ex_run *x, const cd_volume *mask, const char *what, cd_error *err) {
    char found[256], want[256];
    if (cd_nn_label_values_ok(mask, &x->labels, found, sizeof found)) return CD_OK;
    cd_nn_labels_format(&x->labels, want, sizeof want);
    return cd_fail(err, CD_ERR_FORMAT,
                   "%s: mask values %s are not declared in labels %s (nnU-Net's rule 'label_values'; declare them "
                   "with --labels)",
                   what, found, want);
}

/* Shape and spacing must agree (nnU-Net fails); origin and direction only warn, as nnU-Net does. */
static cd_status check_geometry(ex_run *x, const cd_nifti_header *a, const char *pa, const cd_nifti_header *b,
                                const char *pb, cd_error *err) {
    cd_nn_geometry ga, gb;
    cd_nn_geometry_of(a, &ga);
    cd_nn_geometry_of(b, &gb);
    unsigned d = cd_nn_geometry_diff(&ga, &gb);
    char msg[512];
    if (d & (CD_NN_DIFF_SHAPE | CD_NN_DIFF_SPACING)) {
        cd_nn_geometry_message(d & CD_NN_DIFF_SHAPE ? CD_NN_DIFF_SHAPE : CD_NN_DIFF_SPACING, &ga, pa, &gb, pb, msg,
                               sizeof msg);
        return cd_fail(err, CD_ERR_FORMAT, "%s (nnU-Net needs the mask on its image's grid)", msg);
    }
    static const unsigned warn_bits[] = {CD_NN_DIFF_ORIGIN, CD_NN_DIFF_DIRECTION};
    for (int i = 0; i < 2; i++)
        if (d & warn_bits[i]) {
            cd_nn_geometry_message(warn_bits[i], &ga, pa, &gb, pb, msg, sizeof msg);
            warn(x, "%s", msg);
        }
    return CD_OK;
}

static const char *out_sub(const cd_nn_case *c, bool label) {
    bool test = !strcmp(c->split, "test");
    return label ? (test ? "labelsTs" : "labelsTr") : (test ? "imagesTs" : "imagesTr");
}

/* Where a case's file goes: channel k >= 0, or the label (k < 0). */
static cd_status out_path(ex_run *x, const cd_nn_case *c, int k, char *path, size_t cap, cd_error *err) {
    int n = k >= 0 ? snprintf(path, cap, "%s/%s/%s_%04d.nii.gz", x->tmp, out_sub(c, false), c->id, k)
                   : snprintf(path, cap, "%s/%s/%s.nii.gz", x->tmp, out_sub(c, true), c->id);
    if (n < 0 || (size_t)n >= cap) return cd_fail(err, CD_ERR_ARG, "%s: output path too long", c->id);
    return CD_OK;
}

/* A source file into the dataset as it is: copied (gzip already) or gzipped. */
static cd_status put_source(ex_run *x, const char *src, const cd_nifti_header *h, const char *dst, json_t *files,
                            cd_error *err) {
    uint64_t bytes;
    cd_status st = cd_nn_copy_file(src, dst, !h->compressed, x->level, 0, &bytes, err);
    if (st != CD_OK) return st;
    x->res.bytes_written += bytes;
    if (h->compressed)
        x->res.copied++;
    else
        x->res.gzipped++;
    json_array_append_new(files, json_pack("{s:s,s:s,s:s}", "file", dst + strlen(x->tmp) + 1, "source", src, "how",
                                           h->compressed ? "copied" : "gzipped"));
    return CD_OK;
}

static cd_status put_volume(ex_run *x, const cd_volume *v, const char *dst, const char *how, const char *source,
                            json_t *files, cd_error *err) {
    cd_nifti_write_options wo;
    cd_nifti_write_options_init(&wo);
    wo.compression_level = x->level;
    cd_status st = cd_nifti_write(dst, v, &wo, err);
    if (st != CD_OK) return st;
    struct stat sb;
    if (stat(dst, &sb) == 0) x->res.bytes_written += (uint64_t)sb.st_size;
    x->res.written++;
    json_array_append_new(files,
                          json_pack("{s:s,s:s,s:s}", "file", dst + strlen(x->tmp) + 1, "source", source, "how", how));
    return CD_OK;
}

/* A case read through a layout: files copied as they are, T2 of a pair resampled onto T1's grid. */
static cd_status export_layout_case(ex_run *x, const cd_nn_case *c, json_t *files, cd_error *err) {
    cd_volume *img[CD_NN_MAX_CHANNELS] = {0}, *mask = NULL, *res = NULL;
    cd_nifti_header h[CD_NN_MAX_CHANNELS], hm;
    char dst[PATH_MAX];
    cd_status st = CD_OK;
    for (int k = 0; k < c->nimages && st == CD_OK; k++) st = read_checked(x, c->image[k], &img[k], &h[k], err);
    /* a test case may come without labels (nnU-Net's imagesTs has none): images only */
    if (st == CD_OK && !c->mask && strcmp(c->split, "test"))
        st = cd_fail(err, CD_ERR_FORMAT, "%s: no mask", c->image[0]);
    if (st == CD_OK && c->mask) st = read_checked(x, c->mask, &mask, &hm, err);
    if (st == CD_OK && c->mask) st = check_labels(x, mask, c->mask, err);
    if (st == CD_OK && c->mask) st = check_geometry(x, &h[0], c->image[0], &hm, c->mask, err);
    for (int k = 0; k < c->nimages && st == CD_OK; k++) {
        if ((st = out_path(x, c, k, dst, sizeof dst, err)) != CD_OK) break;
        if (k == 0 || !x->plan.paired) {
            if (k > 0) st = check_geometry(x, &h[0], c->image[0], &h[k], c->image[k], err);
            if (st == CD_OK) st = put_source(x, c->image[k], &h[k], dst, files, err);
            continue;
        }
        /* The pairing of convert: trilinear in world space onto the first image's grid, 0 outside. */
        cd_grid grid;
        cd_grid_of_volume(img[0], &grid);
        cd_resample_options ro;
        cd_resample_options_init(&ro);
        ro.interp = CD_INTERP_LINEAR;
        ro.out_dtype = CD_DTYPE_FLOAT32;
        st = cd_resample(img[k], &grid, &ro, &res, err);
        if (st != CD_OK) break;
        double sp[3];
        cd_volume_spacing(img[0], sp); /* pixdim as the first image's, so nnU-Net's spacing check agrees */
        cd_volume_set_spacing(res, sp);
        st = put_volume(x, res, dst, "resampled onto channel 0000's grid (trilinear, 0 outside)", c->image[k], files,
                        err);
        cd_volume_destroy(res);
        res = NULL;
    }
    if (st == CD_OK && c->mask && (st = out_path(x, c, -1, dst, sizeof dst, err)) == CD_OK)
        st = put_source(x, c->mask, &hm, dst, files, err);
    for (int k = 0; k < c->nimages; k++) cd_volume_destroy(img[k]);
    cd_volume_destroy(mask);
    return st;
}

/* Reads tensor `name` of a record whole (the caller frees *data). */
static cd_status read_tensor(const cd_shard *sh, const cd_record *rec, const char *name, cd_tensor_info *ti,
                             void **data, cd_error *err) {
    *data = NULL;
    int t = cd_record_find_tensor(rec, name);
    if (t < 0)
        return cd_fail(err, CD_ERR_FORMAT, "%s: record %llu has no '%s' tensor", cd_shard_path(sh),
                       (unsigned long long)cd_record_number(rec), name);
    cd_record_tensor_info(rec, (uint32_t)t, ti);
    size_t n = (size_t)ti->channels * ti->shape[0] * ti->shape[1] * ti->shape[2] * cd_dtype_size(ti->dtype);
    if (!(*data = malloc(n ? n : 1))) return cd_fail(err, CD_ERR_NOMEM, "out of memory (%zu bytes)", n);
    cd_status st = cd_record_read_tensor(sh, rec, (uint32_t)t, *data, err);
    if (st != CD_OK) {
        free(*data);
        *data = NULL;
    }
    return st;
}

/* A converted record: its image channels and mask written from the stored arrays and their affine. */
static cd_status export_record(ex_run *x, const cd_nn_case *c, json_t *files, cd_error *err) {
    cd_record *rec = NULL;
    const cd_shard *sh = NULL;
    cd_status st = cd_dataset_read_record(x->plan.ds, (uint64_t)c->record, &rec, &sh, err);
    if (st != CD_OK) return st;
    json_t *meta = json_loads(cd_record_metadata(rec), 0, NULL);
    double aff[4][4], sp[3];
    for (int r = 0; r < 4; r++)
        for (int k = 0; k < 4; k++) {
            json_t *v = json_array_get(json_array_get(json_object_get(meta, "affine"), (size_t)r), (size_t)k);
            aff[r][k] = v ? json_number_value(v) : (r == k);
        }
    for (int a = 0; a < 3; a++) {
        json_t *v = json_array_get(json_object_get(meta, "spacing"), (size_t)a);
        sp[a] = v ? json_number_value(v) : 1;
    }
    json_decref(meta);
    char what[512], dst[PATH_MAX];
    snprintf(what, sizeof what, "%s record %lld", x->o->source, (long long)c->record);
    cd_tensor_info ti, tm;
    void *img = NULL, *msk = NULL;
    st = read_tensor(sh, rec, "image", &ti, &img, err);
    if (st == CD_OK && (int)ti.channels != x->plan.nchannels)
        st = cd_fail(err, CD_ERR_FORMAT, "%s: %u image channels where the first record of sequence '%s' has %d", what,
                     ti.channels, x->plan.sequence, x->plan.nchannels);
    if (st == CD_OK) st = read_tensor(sh, rec, "mask", &tm, &msk, err);
    if (st == CD_OK && (tm.channels != 1 || memcmp(tm.shape, ti.shape, sizeof ti.shape)))
        st = cd_fail(err, CD_ERR_FORMAT, "%s: the mask tensor is not one channel of the image's shape", what);
    for (uint32_t ch = 0; st == CD_OK && ch < ti.channels; ch++) {
        cd_volume *v = NULL;
        st = cd_tensor_channel_volume(img, &ti, ch, (const double(*)[4])aff, sp, &v, err);
        uint64_t nan = st == CD_OK ? cd_nn_count_nan(v) : 0;
        if (nan)
            st = cd_fail(err, CD_ERR_FORMAT, "%s: channel %u has %llu NaN voxels", what, ch, (unsigned long long)nan);
        if (st == CD_OK) st = out_path(x, c, (int)ch, dst, sizeof dst, err);
        if (st == CD_OK) st = put_volume(x, v, dst, "written from the record", what, files, err);
        cd_volume_destroy(v);
    }
    if (st == CD_OK) {
        cd_volume *m = NULL;
        st = cd_tensor_channel_volume(msk, &tm, 0, (const double(*)[4])aff, sp, &m, err);
        if (st == CD_OK) st = check_labels(x, m, what, err);
        if (st == CD_OK) st = out_path(x, c, -1, dst, sizeof dst, err);
        if (st == CD_OK) st = put_volume(x, m, dst, "written from the record", what, files, err);
        cd_volume_destroy(m);
    }
    free(img);
    free(msk);
    cd_record_destroy(rec);
    return st;
}

static cd_status write_json(const char *dir, const char *name, json_t *obj, cd_error *err) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = json_dumps(obj, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    if (!text) return cd_fail(err, CD_ERR_NOMEM, "out of memory (%s)", name);
    cd_write_piece pieces[2] = {{text, strlen(text)}, {"\n", 1}};
    cd_status st = cd_file_write_atomic(path, pieces, 2, err);
    free(text);
    return st;
}

/* dataset.json as nnU-Net's dataset_format.md describes it. */
static cd_status write_dataset_json(ex_run *x, cd_error *err) {
    json_t *ch = json_object();
    for (int k = 0; k < x->plan.nchannels; k++) {
        char key[16];
        snprintf(key, sizeof key, "%d", k);
        json_object_set_new(ch, key, json_string(x->plan.channel_names[k]));
    }
    json_t *ds = json_object();
    json_object_set_new(ds, "channel_names", ch);
    json_object_set(ds, "labels", x->labels_json);
    json_object_set_new(ds, "numTraining", json_integer((json_int_t)x->res.training));
    json_object_set_new(ds, "file_ending", json_string(".nii.gz"));
    json_object_set_new(ds, "description", json_sprintf("exported by cirrdata from %s", x->o->source));
    cd_status st = write_json(x->tmp, "dataset.json", ds, err);
    json_decref(ds);
    return st;
}

/* splits_final.json: one fold, the source's own train/valid split (nnU-Net's list of {"train", "val"}). */
static cd_status write_splits(ex_run *x, cd_error *err) {
    json_t *tr = json_array(), *va = json_array();
    for (size_t i = 0; i < x->plan.n; i++) {
        const cd_nn_case *c = &x->plan.cases[i];
        if (!strcmp(c->split, "valid") || !strcmp(c->split, "val"))
            json_array_append_new(va, json_string(c->id));
        else if (strcmp(c->split, "test"))
            json_array_append_new(tr, json_string(c->id));
    }
    cd_status st = CD_OK;
    if (json_array_size(va)) {
        json_t *fold = json_pack("[{s:O,s:O}]", "train", tr, "val", va);
        st = write_json(x->tmp, "splits_final.json", fold, err);
        json_decref(fold);
        x->res.splits = st == CD_OK;
    }
    json_decref(tr);
    json_decref(va);
    return st;
}

static cd_status write_provenance(ex_run *x, const char *layout, cd_error *err) {
    json_t *sk = json_array();
    for (size_t i = 0; i < x->plan.nskipped; i++)
        json_array_append_new(
            sk, json_pack("{s:s,s:s}", "path", x->plan.skipped[i].path, "reason", x->plan.skipped[i].reason));
    json_t *o = json_pack("{s:s,s:s,s:s,s:b,s:b,s:O,s:o,s:O}", "source", x->o->source, "layout", layout, "sequence",
                          x->plan.sequence, "pair_t1t2", x->plan.paired, "healthy", x->o->healthy, "cases", x->cases,
                          "skipped", sk, "warnings", x->warnings);
    cd_status st = o ? write_json(x->tmp, "cirrdata_export.json", o, err) : cd_fail(err, CD_ERR_NOMEM, "out of memory");
    json_decref(o);
    return st;
}

static cd_status make_dirs(ex_run *x, cd_error *err) {
    bool test = false, test_labels = false;
    for (size_t i = 0; i < x->plan.n; i++)
        if (!strcmp(x->plan.cases[i].split, "test")) {
            test = true;
            test_labels = test_labels || x->plan.cases[i].mask || x->plan.cases[i].record >= 0;
        }
    const char *subs[] = {"imagesTr", "labelsTr", test ? "imagesTs" : NULL, test_labels ? "labelsTs" : NULL};
    for (int i = 0; i < 4; i++) {
        char p[PATH_MAX + 16];
        if (!subs[i]) continue;
        snprintf(p, sizeof p, "%s/%s", x->tmp, subs[i]);
        if (mkdir(p, 0755) != 0) return cd_fail(err, CD_ERR_IO, "%s: cannot create: %s", p, strerror(errno));
    }
    return CD_OK;
}

/* The layout named, or "dataset" for a folder with manifest.json. */
static cd_status resolve_layout(const cd_nnunet_export_options *o, const char **layout, cd_error *err) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/manifest.json", o->source);
    struct stat sb;
    bool converted = stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
    if (!o->layout) {
        if (!converted)
            return cd_fail(err, CD_ERR_ARG,
                           "%s: no manifest.json (not a converted dataset): name the source's layout (--layout "
                           "cirrmri600 or nnunet)",
                           o->source);
        *layout = "dataset";
        return CD_OK;
    }
    if (strcmp(o->layout, "cirrmri600") && strcmp(o->layout, "nnunet") && strcmp(o->layout, "dataset"))
        return cd_fail(err, CD_ERR_ARG, "unknown layout '%s' (cirrmri600, nnunet or dataset)", o->layout);
    *layout = o->layout;
    return CD_OK;
}

static cd_status setup(ex_run *x, const char *layout, bool *exists, cd_error *err) {
    const cd_nnunet_export_options *o = x->o;
    if (!dataset_name_ok(o->out_dir))
        return cd_fail(
            err, CD_ERR_ARG,
            "%s: nnU-Net finds a raw dataset by its folder name DatasetNNN_Name (e.g. Dataset601_CirrMRI_T1)",
            o->out_dir);
    if (o->prefix &&
        (!*o->prefix ||
         strspn(o->prefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != strlen(o->prefix) ||
         strlen(o->prefix) > 64))
        return cd_fail(err, CD_ERR_ARG, "prefix '%.80s': use 1 to 64 letters, digits or '-'", o->prefix);
    x->level = o->compression_level ? o->compression_level : 6;
    if (x->level < 1 || x->level > 12) return cd_fail(err, CD_ERR_ARG, "gzip level %d is not in 1..12", x->level);
    cd_status st = cd_nn_out_check(o->out_dir, o->force, exists, err);
    if (st != CD_OK) return st;
    /* --force deletes the old out_dir after the swap: never when the source lies in it. */
    char rs[PATH_MAX], ro[PATH_MAX];
    if (*exists && realpath(o->source, rs) && realpath(o->out_dir, ro)) {
        size_t n = strlen(ro);
        if (!strncmp(rs, ro, n) && (rs[n] == '/' || rs[n] == '\0'))
            return cd_fail(err, CD_ERR_ARG, "%s: the source %s lies in it; replacing it would delete the source",
                           o->out_dir, o->source);
    }
    if ((st = cd_nn_plan_make(o, layout, &x->plan, err)) != CD_OK) return st;
    if (!o->skip_bad && x->plan.nskipped && !x->plan.paired)
        return cd_fail(err, CD_ERR_FORMAT, "%s: %s (and %zu more); --skip-bad exports the other cases",
                       x->plan.skipped[0].path, x->plan.skipped[0].reason, x->plan.nskipped - 1);
    if (o->labels_json) {
        json_error_t je;
        x->labels_json = json_loads(o->labels_json, 0, &je);
        if (!x->labels_json) return cd_fail(err, CD_ERR_ARG, "labels: not JSON: %s", je.text);
    } else if (x->plan.labels) {
        x->labels_json = json_incref(x->plan.labels);
    } else {
        x->labels_json = json_pack("{s:i,s:i}", "background", 0, "liver", 1);
    }
    char why[256];
    if (!cd_nn_labels_parse(x->labels_json, NULL, &x->labels, why, sizeof why))
        return cd_fail(err, CD_ERR_ARG, "labels %s: %s", o->labels_json ? o->labels_json : "of the source", why);
    return CD_OK;
}

cd_status cd_nnunet_export(const cd_nnunet_export_options *opts, cd_nnunet_export_result *result, cd_error *err) {
    if (result) memset(result, 0, sizeof *result);
    if (!opts || !opts->source || !opts->out_dir)
        return cd_fail(err, CD_ERR_ARG, "cd_nnunet_export: source and out_dir are required");
    ex_run x = {.o = opts};
    x.cases = json_object();
    x.warnings = json_array();
    const char *layout = NULL;
    bool exists = false, began = false;
    cd_status st = resolve_layout(opts, &layout, err);
    if (st == CD_OK) st = setup(&x, layout, &exists, err);
    if (st == CD_OK && (st = cd_nn_out_begin(opts->out_dir, x.tmp, sizeof x.tmp, err)) == CD_OK) began = true;
    if (st == CD_OK) st = make_dirs(&x, err);
    for (size_t i = 0; st == CD_OK && i < x.plan.n; i++) {
        const cd_nn_case *c = &x.plan.cases[i];
        json_t *files = json_array();
        st = c->record >= 0 ? export_record(&x, c, files, err) : export_layout_case(&x, c, files, err);
        json_object_set_new(x.cases, c->id, json_pack("{s:s,s:o}", "split", c->split, "files", files));
        if (!strcmp(c->split, "test"))
            x.res.test++;
        else
            x.res.training++;
        if (opts->progress) opts->progress(opts->progress_user, i + 1, x.plan.n, x.res.bytes_written);
    }
    x.res.skipped = x.plan.nskipped;
    if (st == CD_OK) st = write_dataset_json(&x, err);
    if (st == CD_OK) st = write_splits(&x, err);
    if (st == CD_OK) st = write_provenance(&x, layout, err);
    if (st == CD_OK) st = cd_nn_out_commit(x.tmp, opts->out_dir, exists, err);
    if (st != CD_OK && began) cd_nn_remove_tree(x.tmp);
    if (st == CD_OK && result) *result = x.res;
    cd_nn_plan_free(&x.plan);
    cd_nn_labels_free(&x.labels);
    json_decref(x.labels_json);
    json_decref(x.cases);
    json_decref(x.warnings);
    return st;
}
