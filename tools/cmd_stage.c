/* cirrdata stage: cirrhosis stage of MRI scans with a staging network (cirrdata/staging.h), for NIfTI
 * files or for every scan of a converted dataset's split, with a confusion matrix against the
 * dataset's labels (text, JSON and a PNG picture). */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_progress.h"
#include "render/confusion.h"

static const char stage_help[] =
    "usage: cirrdata stage VOLUME.nii.gz [VOLUME ...] --model WEIGHTS [--mask MASK.nii.gz ...]\n"
    "                      [--device vulkan|cpu|auto] [--batch N] [--threads N] [--json]\n"
    "       cirrdata stage --dataset DIR [--split NAME] --model WEIGHTS [--png CONFUSION.png]\n"
    "                      [--no-mask] [--device ...] [--batch N] [--threads N] [--json] [--quiet]\n\n"
    "Stages cirrhosis (mild, moderate, severe) with a 2D staging network exported by\n"
    "tools/scripts/export_weights.py: the scan is reoriented to RAS+, its axial slices are resized to\n"
    "256x256, mapped to [0,1] by the volume's 0.5/99.5 percentiles, given 3 channels and normalised as\n"
    "(x - 0.5) / 0.5 (the cirrhosisstage-2d recipe; cirrdata/staging.h). With a liver mask only the\n"
    "slices containing liver are used. Each slice's softmax probabilities are averaged into the scan's.\n\n"
    "  --model FILE      the model file (.safetensors from tools/scripts/export_weights.py)\n"
    "  --mask FILE       liver mask of the volume (same grid); repeat once per volume, in order\n"
    "  --device D        cpu, vulkan (a Vulkan device is required) or auto (default: a hardware GPU when\n"
    "                    there is one, else the CPU); what the device cannot do runs on the CPU, saying why\n"
    "  --batch N         slices per inference call (default 16)\n"
    "  --threads N       CPU threads for preprocessing and the CPU executor (default: online CPUs)\n"
    "  --json            JSON on stdout, with the per-slice results (z, logits, probabilities)\n"
    "  --dataset DIR     stage every record of a dataset converted with a recipe that keeps the scans as\n"
    "                    acquired (e.g. raw), using its masks; compares with the records' labels and\n"
    "                    prints the confusion matrix and the accuracy\n"
    "  --split NAME      --dataset: the split to evaluate (default test; * = all)\n"
    "  --no-mask         --dataset: use all slices, not only those with liver\n"
    "  --png FILE        --dataset: also draw the confusion matrix as a PNG picture\n"
    "  --quiet           --dataset: no progress on stderr (a bar on a terminal, else a line every 10 s)\n";

enum {
    O_MODEL = 1000,
    O_MASK,
    O_DEVICE,
    O_BATCH,
    O_THREADS,
    O_JSON,
    O_DATASET,
    O_SPLIT,
    O_PNG,
    O_NOMASK,
    O_HELP,
    O_QUIET
};

#define MAX_CLASSES CONFUSION_MAX_CLASSES

typedef struct stage_opts {
    const char *model, *dataset, *split, *png;
    const char *device;
    int batch, threads;
    bool json, no_mask, quiet;
} stage_opts;

/* ---- the model ---- */

/* Opens the model on the requested device (cirrdata/device.h: vulkan requires one, auto uses a
 * hardware GPU when there is one). */
static int open_model(const stage_opts *o, cd_model **m) {
    cd_model_options mo = {0};
    mo.threads = o->threads;
    cd_error err;
    cd_error_clear(&err);
    cd_status st = cd_device_parse(o->device, &mo.device, &err);
    if (st == CD_OK) st = cd_model_open(o->model, &mo, m, &err);
    if (st != CD_OK) return cli_fail_error(&err);
    if (cd_model_classes(*m) > MAX_CLASSES) {
        fprintf(stderr, "cirrdata: %s: the model has %d classes (staging prints at most %d)\n", o->model,
                cd_model_classes(*m), MAX_CLASSES);
        cd_model_close(*m);
        *m = NULL;
        return CLI_FAIL;
    }
    return CLI_OK;
}

/* A class name: the dataset's, else the staging names. */
static const char *class_name(json_t *names, int c) {
    json_t *n = names ? json_array_get(names, (size_t)c) : NULL;
    return n && json_is_string(n) ? json_string_value(n) : cd_stage_name(c);
}

static json_t *result_json(const cd_stage_result *r, json_t *names, bool per_slice) {
    json_t *o = json_object(), *p = json_object();
    json_object_set_new(o, "stage", json_string(class_name(names, r->stage)));
    json_object_set_new(o, "stage_index", json_integer(r->stage));
    for (int c = 0; c < r->classes; c++) json_object_set_new(p, class_name(names, c), json_real(r->probs[c]));
    json_object_set_new(o, "probabilities", p);
    json_object_set_new(o, "slices", json_integer(r->n));
    if (per_slice) {
        json_t *arr = json_array();
        for (int64_t i = 0; i < r->n; i++) {
            json_t *s = json_object(), *pl = json_array(), *ll = json_array();
            for (int c = 0; c < r->classes; c++) {
                json_array_append_new(pl, json_real(r->slice_probs[i * r->classes + c]));
                json_array_append_new(ll, json_real(r->slice_logits[i * r->classes + c]));
            }
            json_object_set_new(s, "z", json_integer(r->z[i]));
            json_object_set_new(s, "probabilities", pl);
            json_object_set_new(s, "logits", ll);
            json_array_append_new(arr, s);
        }
        json_object_set_new(o, "per_slice", arr);
    }
    return o;
}

static void print_probs(const cd_stage_result *r, json_t *names) {
    printf("(");
    for (int c = 0; c < r->classes; c++) printf("%s%s %.3f", c ? "  " : "", class_name(names, c), r->probs[c]);
    printf(")");
}

static json_t *model_json(cd_model *m, const char *path) {
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(path));
    json_object_set_new(o, "arch", json_string(cd_model_arch(m)));
    json_object_set_new(o, "classes", json_integer(cd_model_classes(m)));
    json_object_set_new(o, "device", json_string(cd_model_device_used(m) == CD_DEVICE_VULKAN ? "vulkan" : "cpu"));
    json_object_set_new(o, "executor", json_string(cd_model_device_name(m)));
    return o;
}

/* ---- NIfTI files ---- */

/* Prefixes err's message with the file it concerns unless the message already names it. */
static int fail_with_file(const char *path, const cd_error *err) {
    if (strstr(err->message, path)) return cli_fail_error(err);
    fprintf(stderr, "cirrdata: %s: %s\n", path, err->message);
    return CLI_FAIL;
}

static int stage_files(const stage_opts *o, char **vols, int nvol, char **masks, int nmask) {
    cd_model *m = NULL;
    int rc = open_model(o, &m);
    if (rc != CLI_OK) return rc;
    json_t *out = o->json ? json_object() : NULL, *scans = json_array();
    for (int i = 0; i < nvol && rc == CLI_OK; i++) {
        cd_error err;
        cd_error_clear(&err);
        cd_volume *img = NULL, *msk = NULL;
        cd_stage_result *r = NULL;
        const char *mpath = nmask ? masks[i] : NULL;
        if (cd_nifti_read(vols[i], NULL, &img, NULL, &err) != CD_OK) {
            rc = fail_with_file(vols[i], &err);
        } else if (mpath && cd_nifti_read(mpath, NULL, &msk, NULL, &err) != CD_OK) {
            rc = fail_with_file(mpath, &err);
        } else if (cd_stage_volume(m, img, msk, o->batch, o->threads, &r, &err) != CD_OK) {
            /* Preprocessing errors concern the pair (shape, grid, empty mask, non-finite voxels); the model's
             * name its file. */
            if (mpath && err.status == CD_ERR_ARG && strstr(err.message, "mask"))
                rc = fail_with_file(mpath, &err);
            else if (mpath && err.status == CD_ERR_FORMAT && strstr(err.message, "in the mask"))
                rc = fail_with_file(mpath, &err);
            else if (mpath && err.status == CD_ERR_FORMAT && strstr(err.message, "grids differ"))
                rc = fail_with_file(mpath, &err);
            else
                rc = fail_with_file(vols[i], &err);
        } else if (o->json) {
            json_t *s = result_json(r, NULL, true);
            json_object_set_new(s, "image", json_string(vols[i]));
            json_object_set_new(s, "mask", mpath ? json_string(mpath) : json_null());
            json_array_append_new(scans, s);
        } else {
            printf("%s: %s ", vols[i], cd_stage_name(r->stage));
            print_probs(r, NULL);
            printf("  %lld %s\n", (long long)r->n, mpath ? "slices with liver" : "slices");
        }
        cd_stage_result_destroy(r);
        cd_volume_destroy(img);
        cd_volume_destroy(msk);
    }
    if (rc == CLI_OK && o->json) {
        json_object_set_new(out, "model", model_json(m, o->model));
        json_object_set_new(out, "scans", scans);
        cli_json_print(out);
        out = NULL;
        scans = NULL;
    } else if (rc == CLI_OK) {
        printf("model %s (%s) on %s\n", o->model, cd_model_arch(m), cd_model_device_name(m));
    }
    json_decref(scans);
    json_decref(out);
    cd_model_close(m);
    return rc;
}

/* ---- a converted dataset ---- */

/* Builds a volume (x fastest) from a record's C-order (1, X, Y, Z) tensor and its affine. */
/* *nbytes grows by the tensor's bytes read (for the progress's MB/s). */
static cd_status record_volume(const cd_shard *sh, const cd_record *rec, const char *tensor, const double affine[4][4],
                               cd_volume **out, uint64_t *nbytes, cd_error *err) {
    int t = cd_record_find_tensor(rec, tensor);
    if (t < 0) {
        snprintf(err->message, sizeof err->message, "the record has no tensor '%s'", tensor);
        return err->status = CD_ERR_FORMAT;
    }
    cd_tensor_info ti;
    cd_record_tensor_info(rec, (uint32_t)t, &ti);
    if (ti.channels != 1 ||
        (ti.dtype != CD_DTYPE_UINT8 && ti.dtype != CD_DTYPE_INT16 && ti.dtype != CD_DTYPE_FLOAT32)) {
        snprintf(err->message, sizeof err->message,
                 "tensor '%s' is %u channels of %s; staging needs one channel of "
                 "uint8, int16 or float32 (a 3D recipe such as raw)",
                 tensor, ti.channels, cd_dtype_name(ti.dtype));
        err->status = CD_ERR_UNSUPPORTED;
        return CD_ERR_UNSUPPORTED;
    }
    const int64_t d[3] = {ti.shape[0], ti.shape[1], ti.shape[2]};
    const size_t es = cd_dtype_size(ti.dtype), n = (size_t)d[0] * d[1] * d[2];
    uint8_t *buf = malloc(n ? n * es : 1);
    if (!buf) {
        snprintf(err->message, sizeof err->message, "out of memory for a %lldx%lldx%lld tensor", (long long)d[0],
                 (long long)d[1], (long long)d[2]);
        err->status = CD_ERR_NOMEM;
        return CD_ERR_NOMEM;
    }
    cd_volume *v = NULL;
    cd_status st = cd_record_read_tensor(sh, rec, (uint32_t)t, buf, err);
    if (st == CD_OK) *nbytes += n * es;
    if (st == CD_OK) st = cd_volume_create(d, ti.dtype, &v, err);
    if (st == CD_OK) {
        uint8_t *dst = cd_volume_data(v);
        for (int64_t x = 0; x < d[0]; x++)
            for (int64_t y = 0; y < d[1]; y++)
                for (int64_t z = 0; z < d[2]; z++)
                    memcpy(dst + ((size_t)x + (size_t)d[0] * ((size_t)y + (size_t)d[1] * (size_t)z)) * es,
                           buf + (((size_t)x * d[1] + (size_t)y) * d[2] + (size_t)z) * es, es);
        cd_volume_set_affine(v, affine);
        double sp[3];
        for (int a = 0; a < 3; a++) {
            double s2 = 0;
            for (int r = 0; r < 3; r++) s2 += affine[r][a] * affine[r][a];
            sp[a] = sqrt(s2);
        }
        cd_volume_set_spacing(v, sp);
    }
    free(buf);
    if (st != CD_OK) {
        cd_volume_destroy(v);
        return st;
    }
    *out = v;
    return CD_OK;
}

static bool affine_from_json(json_t *a, double out[4][4]) {
    if (!json_is_array(a) || json_array_size(a) != 4) return false;
    for (int r = 0; r < 4; r++) {
        json_t *row = json_array_get(a, (size_t)r);
        if (!json_is_array(row) || json_array_size(row) != 4) return false;
        for (int c = 0; c < 4; c++) {
            json_t *v = json_array_get(row, (size_t)c);
            if (!json_is_number(v)) return false;
            out[r][c] = json_number_value(v);
        }
    }
    return true;
}

static bool split_matches(const char *want, const char *split) {
    if (!strcmp(want, "*")) return true;
    size_t n = strlen(split);
    for (const char *p = want; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, split, n)) return true;
        p += len + (e != NULL);
    }
    return false;
}

/* Staging a dataset's split: the model, the dataset's class names and the tallies so far. */
typedef struct stage_eval {
    const stage_opts *o;
    cd_model *m;
    json_t *names; /* the manifest's "classes" (borrowed), or NULL */
    int C;         /* the model's classes */
    int64_t cm[MAX_CLASSES][MAX_CLASSES];
    int64_t seq_total[2], seq_correct[2]; /* T1, T2 */
    json_t *scans;                        /* --json: one object per scan */
    uint64_t done, bytes;                 /* scans staged, tensor bytes read */
    cli_progress *bar;
} stage_eval;

/* Staging needs the scans as acquired: a recipe that resampled, normalised or sliced them is refused. */
static int check_recipe(const stage_opts *o, json_t *man) {
    json_t *recipe = man ? json_object_get(man, "recipe") : NULL;
    const char *rname = json_string_value(json_object_get(recipe, "name"));
    const char *norm = json_string_value(json_object_get(json_object_get(recipe, "normalize"), "mode"));
    const char *res = json_string_value(json_object_get(json_object_get(recipe, "resample"), "mode"));
    if (!recipe || json_object_get(recipe, "slices") || (norm && strcmp(norm, "none")) ||
        (res && strcmp(res, "none"))) {
        fprintf(stderr,
                "cirrdata: %s: recipe '%s' has resampled, normalised or sliced the scans; staging needs them as "
                "acquired (convert with --recipe raw)\n",
                o->dataset, rname ? rname : "?");
        return CLI_FAIL;
    }
    return CLI_OK;
}

/* Adds scan i's result r (true class t) to the tallies, and prints it or keeps it for the JSON. */
static void tally(stage_eval *ev, uint64_t i, json_t *meta, int t, const cd_stage_result *r) {
    const char *key = json_string_value(json_object_get(meta, "key"));
    const char *seq = json_string_value(json_object_get(meta, "sequence"));
    ev->cm[t][r->stage]++;
    int q = seq && !strcmp(seq, "T2");
    ev->seq_total[q]++;
    ev->seq_correct[q] += t == r->stage;
    ev->done++;
    if (ev->o->json) {
        json_t *s = result_json(r, ev->names, false);
        json_object_set_new(s, "record", json_integer((json_int_t)i));
        json_object_set_new(s, "key", json_string(key ? key : ""));
        json_object_set(s, "patient_id", json_object_get(meta, "patient_id"));
        json_object_set(s, "sequence", json_object_get(meta, "sequence"));
        json_object_set_new(s, "true", json_string(class_name(ev->names, t)));
        json_object_set_new(s, "true_index", json_integer(t));
        json_array_append_new(ev->scans, s);
    } else {
        printf("  %-10s true %-8s -> %-8s %s ", key ? key : "?", class_name(ev->names, t),
               class_name(ev->names, r->stage), t == r->stage ? "ok " : "err");
        print_probs(r, ev->names);
        printf("  %lld slices\n", (long long)r->n);
        fflush(stdout);
    }
}

/* Stages record i (of the chosen split) of rec's metadata meta. */
static int stage_record(stage_eval *ev, uint64_t i, const cd_shard *sh, const cd_record *rec, json_t *meta) {
    const stage_opts *o = ev->o;
    json_t *lab = json_object_get(meta, "label");
    const char *key = json_string_value(json_object_get(meta, "key"));
    char where[256];
    snprintf(where, sizeof where, "%s: record %llu (%s)", o->dataset, (unsigned long long)i, key ? key : "?");
    double aff[4][4];
    if (!json_is_integer(lab) || json_integer_value(lab) < 0 || json_integer_value(lab) >= ev->C ||
        !affine_from_json(json_object_get(meta, "affine"), aff)) {
        fprintf(stderr, "cirrdata: %s: no label in 0..%d or no affine in the record's metadata\n", where, ev->C - 1);
        return CLI_FAIL;
    }
    cd_error err;
    cd_error_clear(&err);
    cd_volume *img = NULL, *msk = NULL;
    cd_stage_result *r = NULL;
    int rc = CLI_OK;
    if (record_volume(sh, rec, "image", aff, &img, &ev->bytes, &err) != CD_OK ||
        (!o->no_mask && cd_record_find_tensor(rec, "mask") >= 0 &&
         record_volume(sh, rec, "mask", aff, &msk, &ev->bytes, &err) != CD_OK) ||
        cd_stage_volume(ev->m, img, msk, o->batch, o->threads, &r, &err) != CD_OK) {
        fprintf(stderr, "cirrdata: %s: %s\n", where, err.message);
        rc = CLI_FAIL;
    } else {
        tally(ev, i, meta, (int)json_integer_value(lab), r);
        cli_progress_update(ev->bar, ev->done, ev->bytes);
    }
    cd_stage_result_destroy(r);
    cd_volume_destroy(img);
    cd_volume_destroy(msk);
    return rc;
}

/* The records of the chosen split, by the manifest (the progress's total). */
static uint64_t split_records(json_t *man, const char *want) {
    uint64_t n = 0;
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(man, "records"), i, r) {
        const char *split = json_string_value(json_object_get(r, "split"));
        n += split && split_matches(want, split);
    }
    return n;
}

/* Every record of the chosen split, in order, until one fails. */
static int stage_records(stage_eval *ev, cd_dataset *ds) {
    uint64_t n = cd_dataset_record_count(ds);
    int rc = CLI_OK;
    for (uint64_t i = 0; i < n && rc == CLI_OK; i++) {
        cd_record *rec = NULL;
        const cd_shard *sh = NULL;
        cd_error err;
        cd_error_clear(&err);
        if (cd_dataset_read_record(ds, i, &rec, &sh, &err) != CD_OK) return cli_fail_error(&err);
        json_t *meta = json_loads(cd_record_metadata(rec), 0, NULL);
        const char *split = json_string_value(json_object_get(meta, "split"));
        if (split && split_matches(ev->o->split, split)) rc = stage_record(ev, i, sh, rec, meta);
        json_decref(meta);
        cd_record_destroy(rec);
    }
    if (rc == CLI_OK && ev->done == 0) {
        fprintf(stderr, "cirrdata: %s: no records in split '%s'\n", ev->o->dataset, ev->o->split);
        rc = CLI_FAIL;
    }
    return rc;
}

/* --png: the confusion matrix as a picture. */
static int draw_confusion(const stage_eval *ev) {
    const stage_opts *o = ev->o;
    char caption[512];
    snprintf(caption, sizeof caption,
             "%llu scans of split '%s' of %s\nmodel %s (%s) on %s; mean of slice probabilities",
             (unsigned long long)ev->done, o->split, o->dataset, o->model, cd_model_arch(ev->m),
             cd_model_device_name(ev->m));
    const char *cnames[MAX_CLASSES];
    for (int t = 0; t < ev->C; t++) cnames[t] = class_name(ev->names, t);
    cd_error err;
    if (confusion_draw(o->png, ev->C, ev->cm, cnames, caption, &err) != CD_OK) return cli_fail_error(&err);
    return CLI_OK;
}

/* The summary as one JSON object (with the scans, which it takes). */
static void print_json_summary(stage_eval *ev, double acc, int64_t majority) {
    const stage_opts *o = ev->o;
    json_t *out = json_object(), *mat = json_array(), *cls = json_array();
    for (int t = 0; t < ev->C; t++) {
        json_t *row = json_array();
        for (int p = 0; p < ev->C; p++) json_array_append_new(row, json_integer(ev->cm[t][p]));
        json_array_append_new(mat, row);
        json_array_append_new(cls, json_string(class_name(ev->names, t)));
    }
    json_object_set_new(out, "model", model_json(ev->m, o->model));
    json_object_set_new(out, "dataset", json_string(o->dataset));
    json_object_set_new(out, "split", json_string(o->split));
    json_object_set_new(out, "classes", cls);
    json_object_set_new(out, "confusion", mat);
    json_object_set_new(out, "scans_evaluated", json_integer((json_int_t)ev->done));
    json_object_set_new(out, "accuracy", json_real(acc));
    json_object_set_new(out, "majority_class_rate", json_real(ev->done ? (double)majority / (double)ev->done : 0.0));
    json_object_set_new(out, "png", o->png ? json_string(o->png) : json_null());
    json_object_set_new(out, "scans", ev->scans);
    ev->scans = NULL;
    cli_json_print(out);
}

static void print_text_summary(const stage_eval *ev, int64_t correct, double acc, int64_t majority) {
    const int C = ev->C;
    printf("\nconfusion matrix (rows: true stage, columns: predicted), %llu scans:\n%-10s",
           (unsigned long long)ev->done, "");
    for (int p = 0; p < C; p++) printf("%10s", class_name(ev->names, p));
    printf("\n");
    for (int t = 0; t < C; t++) {
        printf("%-10s", class_name(ev->names, t));
        for (int p = 0; p < C; p++) printf("%10lld", (long long)ev->cm[t][p]);
        printf("\n");
    }
    printf("held-out accuracy: %lld/%llu = %.1f %% (chance %.1f %%, majority class %.1f %%)", (long long)correct,
           (unsigned long long)ev->done, 100.0 * acc, 100.0 / C, 100.0 * (double)majority / (double)ev->done);
    for (int q = 0; q < 2; q++)
        if (ev->seq_total[q])
            printf("%s T%d %lld/%lld", q ? "," : ";", q + 1, (long long)ev->seq_correct[q],
                   (long long)ev->seq_total[q]);
    printf("\n");
    if (ev->o->png) printf("confusion matrix picture: %s\n", ev->o->png);
}

/* Accuracy, the picture and the summary of a finished evaluation. */
static int report(stage_eval *ev) {
    int64_t correct = 0, majority = 0;
    for (int t = 0; t < ev->C; t++) {
        int64_t row = 0;
        for (int p = 0; p < ev->C; p++) row += ev->cm[t][p];
        if (row > majority) majority = row;
        correct += ev->cm[t][t];
    }
    const double acc = ev->done ? (double)correct / (double)ev->done : 0.0;
    int rc = ev->o->png ? draw_confusion(ev) : CLI_OK;
    if (rc == CLI_OK && ev->o->json)
        print_json_summary(ev, acc, majority);
    else if (rc == CLI_OK)
        print_text_summary(ev, correct, acc, majority);
    return rc;
}

static int stage_dataset(const stage_opts *o) {
    cd_error err;
    cd_error_clear(&err);
    cd_dataset *ds = NULL;
    if (cd_dataset_open(o->dataset, &ds, &err) != CD_OK) return cli_fail_error(&err);
    json_t *man = json_loads(cd_dataset_manifest(ds), 0, NULL);
    stage_eval ev = {.o = o, .names = man ? json_object_get(man, "classes") : NULL, .scans = json_array()};
    int rc = check_recipe(o, man);
    if (rc == CLI_OK) rc = open_model(o, &ev.m);
    ev.C = ev.m ? cd_model_classes(ev.m) : 0;
    if (rc == CLI_OK && !o->json)
        printf("staging the '%s' split of %s with %s on %s\n", o->split, o->dataset, cd_model_arch(ev.m),
               cd_model_device_name(ev.m));
    if (rc == CLI_OK) {
        ev.bar = cli_progress_start("stage", "scans", split_records(man, o->split), o->quiet);
        rc = stage_records(&ev, ds);
        cli_progress_finish(ev.bar);
    }
    if (rc == CLI_OK) rc = report(&ev);
    json_decref(ev.scans);
    json_decref(man);
    cd_model_close(ev.m);
    cd_dataset_close(ds);
    return rc;
}

int cmd_stage(int argc, char **argv) {
    stage_opts o = {.split = "test", .device = "auto"};
    static const struct option opts[] = {{"model", required_argument, NULL, O_MODEL},
                                         {"mask", required_argument, NULL, O_MASK},
                                         {"device", required_argument, NULL, O_DEVICE},
                                         {"batch", required_argument, NULL, O_BATCH},
                                         {"threads", required_argument, NULL, O_THREADS},
                                         {"json", no_argument, NULL, O_JSON},
                                         {"dataset", required_argument, NULL, O_DATASET},
                                         {"split", required_argument, NULL, O_SPLIT},
                                         {"png", required_argument, NULL, O_PNG},
                                         {"no-mask", no_argument, NULL, O_NOMASK},
                                         {"quiet", no_argument, NULL, O_QUIET},
                                         {"help", no_argument, NULL, O_HELP},
                                         {NULL, 0, NULL, 0}};
    char **masks = calloc((size_t)argc + 1, sizeof *masks);
    if (!masks) return CLI_FAIL;
    int nmask = 0, c, rc = CLI_OK;
    int64_t v;
    optind = 1;
    while (rc == CLI_OK && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: o.model = optarg; break;
        case O_MASK: masks[nmask++] = optarg; break;
        case O_DEVICE:
            if (strcmp(optarg, "vulkan") && strcmp(optarg, "cpu") && strcmp(optarg, "auto"))
                rc = cli_usage_error("stage", "--device must be vulkan, cpu or auto (not '%s')", optarg);
            o.device = optarg;
            break;
        case O_BATCH:
            if (!cli_parse_int64(optarg, &v) || v < 1 || v > 4096)
                rc = cli_usage_error("stage", "--batch must be 1..4096");
            else
                o.batch = (int)v;
            break;
        case O_THREADS:
            if (!cli_parse_int64(optarg, &v) || v < 0 || v > 1024)
                rc = cli_usage_error("stage", "--threads must be 0..1024");
            else
                o.threads = (int)v;
            break;
        case O_JSON: o.json = true; break;
        case O_DATASET: o.dataset = optarg; break;
        case O_SPLIT: o.split = optarg; break;
        case O_PNG: o.png = optarg; break;
        case O_NOMASK: o.no_mask = true; break;
        case O_QUIET: o.quiet = true; break;
        case O_HELP:
        case 'h':
            fputs(stage_help, stdout);
            free(masks);
            return CLI_OK;
        default: rc = cli_usage_error("stage", "unknown option"); break;
        }
    }
    const int nvol = argc - optind;
    if (rc != CLI_OK) {
    } else if (!o.model) {
        rc = cli_usage_error("stage", "--model is required");
    } else if (o.dataset) {
        if (nvol)
            rc = cli_usage_error("stage", "give volumes or --dataset, not both");
        else if (nmask)
            rc = cli_usage_error("stage", "--mask is for volumes; --dataset uses the records' masks");
        else
            rc = stage_dataset(&o);
    } else if (nvol == 0) {
        rc = cli_usage_error("stage", "give a volume (VOLUME.nii.gz) or --dataset DIR");
    } else if (nmask && nmask != nvol) {
        rc = cli_usage_error("stage", "%d --mask for %d volumes: give one per volume, or none", nmask, nvol);
    } else if (o.png || o.no_mask) {
        rc = cli_usage_error("stage", "--png and --no-mask go with --dataset");
    } else {
        rc = stage_files(&o, argv + optind, nvol, masks, nmask);
    }
    free(masks);
    return rc;
}
