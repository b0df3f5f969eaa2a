/* cirrdata export-batch: a converted dataset's records as plain .npy or .nii.gz files, for tools
 * that read only files (a closed training service, a JAX or TensorFlow job elsewhere). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic_file.h"
#include "cli.h"
#include "cli_progress.h"

static const char export_batch_help[] =
    "usage: cirrdata export-batch DATASET --out DIR [--split NAMES] [--format npy|nifti] [--overwrite] [--quiet]\n\n"
    "Writes every record of the chosen splits as files: DIR/<patient>_<sequence>_<copy>_image.<ext> and\n"
    "..._mask.<ext>, where <copy> is 'orig' for a plain record and 'augK' for augmented copy K\n"
    "(convert --augment). Characters other than letters, digits and '.+-' become '_'. When that name is\n"
    "already taken by an earlier record (keys 'a b' and 'a_b', or a healthy and a cirrhotic patient\n"
    "with one id) or is longer than 200 bytes, the record's index in the manifest is appended\n"
    "(<...>_r<index>, a long name cut before it) and a note on stderr says so: no file is written twice.\n"
    "A file that already exists in DIR is an error unless --overwrite.\n\n"
    "  --out DIR        output folder (created if missing)\n"
    "  --split NAMES    comma-separated splits (default train; * = all)\n"
    "  --format F       npy (default): the tensor as stored, shape (C, X, Y, Z), C order, stored dtype,\n"
    "                   and a JSON sidecar per record (<...>.json: key, patient, sequence, split, label,\n"
    "                   copy, affine, spacing, the files and tensors, the record's metadata);\n"
    "                   nifti: .nii.gz, shape (X, Y, Z), the record's affine (voxel -> RAS mm) in sform\n"
    "                   and qform; float16 images are widened to float32 (NIfTI-1 has no float16);\n"
    "                   images with C > 1 channels are written one file per channel (_image_cN)\n"
    "  --overwrite      replace files that exist in DIR (from an earlier export)\n"
    "  --quiet          no progress on stderr (a bar on a terminal, else a line every 10 s or 5 %)\n\n"
    "The affine is the record's 'affine' metadata: for plain records the stored grid after\n"
    "preprocessing; for augmented copies the grid that was sampled (rotation, scaling, mirroring\n"
    "and the crop included) where that grid is affine, else the undeformed grid (see\n"
    "schemas/shard-format.md, 'Augmented records').\n";

enum { O_OUT = 1000, O_SPLIT, O_FORMAT, O_OVERWRITE, O_QUIET, O_HELP };

/* A file name is at most 255 bytes: the record's part stays below this, leaving room for the tensor
 * name (16), the channel suffix and the extension. */
#define BASE_MAX 200

/* Appends s to out (capacity cap, NUL-terminated at *len) with characters other than letters, digits
 * and '.+-' as '_' ("" , "." and ".." become "_"); false when it does not fit. */
static bool append_safe(char *out, size_t cap, size_t *len, const char *s) {
    size_t start = *len;
    for (; s && *s; s++) {
        char c = *s;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '+' ||
                  c == '-';
        if (*len + 2 > cap) {
            out[*len] = '\0';
            return false;
        }
        out[(*len)++] = ok ? c : '_';
    }
    out[*len] = '\0';
    if (*len == start || !strcmp(out + start, ".") || !strcmp(out + start, "..")) {
        if (start + 2 > cap) return false;
        out[start] = '_';
        out[start + 1] = '\0';
        *len = start + 1;
    }
    return true;
}

/* The record's part of its file names, unique among the names given so far (used: name -> record
 * index). A taken or too long name gets "_r<index>" (a long one is cut before it); *renamed says so. */
static void unique_base(json_t *used, size_t index, const char *pid, const char *seq, const char *copy, char *base,
                        size_t cap, bool *renamed, long long *taken_by) {
    char full[4096];
    size_t n = 0;
    bool fit = append_safe(full, sizeof full, &n, pid) && append_safe(full, sizeof full, &n, "_") &&
               append_safe(full, sizeof full, &n, seq) && n + strlen(copy) + 2 < sizeof full;
    if (fit) snprintf(full + n, sizeof full - n, "_%s", copy);
    *taken_by = -1;
    json_t *prev = fit && strlen(full) <= BASE_MAX ? json_object_get(used, full) : NULL;
    *renamed = !fit || strlen(full) > BASE_MAX || prev;
    if (!*renamed) {
        snprintf(base, cap, "%s", full);
    } else {
        if (prev) *taken_by = (long long)json_integer_value(prev);
        char suffix[32];
        snprintf(suffix, sizeof suffix, "_r%zu", index);
        size_t keep = strlen(full) + strlen(suffix) > BASE_MAX ? BASE_MAX - strlen(suffix) : strlen(full);
        snprintf(base, cap, "%.*s%s", (int)keep, full, suffix);
        /* A dataset could hold a name that already ends like this ("x_r7" beside a second "x" at 7). */
        while (json_object_get(used, base) && strlen(base) + strlen(suffix) < cap) strcat(base, suffix);
    }
    json_object_set_new(used, base, json_integer((json_int_t)index));
}

/* Claims path for this export: created empty with O_EXCL (the write then replaces it), so no file
 * in DIR is written twice, and one that was there before is an error unless overwrite. */
static bool claim(const char *path, bool overwrite, cd_error *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) {
        close(fd);
        return true;
    }
    if (errno == EEXIST && overwrite) return true;
    err->status = CD_ERR_IO;
    if (errno == EEXIST)
        snprintf(err->message, sizeof err->message,
                 "%.380s: already exists (an earlier export?); use an empty --out folder or --overwrite", path);
    else
        snprintf(err->message, sizeof err->message, "%.380s: cannot create: %.100s", path, strerror(errno));
    return false;
}

/* One channel of a C-order (C, X, Y, Z) tensor as a NIfTI volume (x fastest). */
static cd_status write_nifti(const char *path, const void *data, uint32_t c, const cd_tensor_info *ti,
                             const double affine[4][4], const double spacing[3], cd_error *err) {
    cd_volume *v;
    cd_status st = cd_tensor_channel_volume(data, ti, c, affine, spacing, &v, err);
    if (st != CD_OK) return st;
    st = cd_nifti_write(path, v, NULL, err);
    cd_volume_destroy(v);
    return st;
}

/* One export: what was asked for, the dataset, and the counts so far. */
typedef struct export_job {
    const char *dir, *out, *splits;
    bool nifti, quiet, overwrite;
    cd_dataset *ds;
    json_t *used; /* base name -> record index */
    void *buf;    /* the tensor being written */
    size_t done, files, sidecars, renamed_records;
    uint64_t bytes;
} export_job;

/* The options into j; CLI_OK, a usage error, or -1 after --help. */
static int parse_options(int argc, char **argv, export_job *j) {
    static const struct option opts[] = {{"out", required_argument, NULL, O_OUT},
                                         {"split", required_argument, NULL, O_SPLIT},
                                         {"format", required_argument, NULL, O_FORMAT},
                                         {"overwrite", no_argument, NULL, O_OVERWRITE},
                                         {"quiet", no_argument, NULL, O_QUIET},
                                         {"help", no_argument, NULL, O_HELP},
                                         {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
        case O_OUT: j->out = optarg; break;
        case O_SPLIT: j->splits = optarg; break;
        case O_FORMAT:
            if (!strcmp(optarg, "npy"))
                j->nifti = false;
            else if (!strcmp(optarg, "nifti"))
                j->nifti = true;
            else
                return cli_usage_error("export-batch", "bad --format '%s' (npy or nifti)", optarg);
            break;
        case O_OVERWRITE: j->overwrite = true; break;
        case O_QUIET: j->quiet = true; break;
        case 'h':
        case O_HELP: fputs(export_batch_help, stdout); return -1;
        default: return cli_usage_error("export-batch", "unknown option or missing value '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage_error("export-batch", "expected exactly one DATASET");
    if (!j->out) return cli_usage_error("export-batch", "missing --out DIR");
    j->dir = argv[optind];
    return CLI_OK;
}

static bool selected(const export_job *j, json_t *entry) {
    const char *sp = json_string_value(json_object_get(entry, "split"));
    return cd_dataset_split_selected(j->splits, sp ? sp : "");
}

/* Records to export (at least one), the output folder (created) and its lock. */
static int prepare_output(export_job *j, json_t *entries, size_t *total, cd_folder_lock **lock) {
    size_t i;
    json_t *e;
    *total = 0;
    json_array_foreach(entries, i, e) *total += selected(j, e);
    cd_error err;
    if (!*total) {
        err.status = CD_ERR_ARG;
        snprintf(err.message, sizeof err.message, "%.300s: no records in split(s) '%.100s'", j->dir, j->splits);
        return cli_fail_error(&err);
    }
    if (mkdir(j->out, 0755) != 0 && errno != EEXIST) {
        err.status = CD_ERR_IO;
        snprintf(err.message, sizeof err.message, "%.300s: cannot create directory: %.100s", j->out, strerror(errno));
        return cli_fail_error(&err);
    }
    /* One writer per folder: a second export into it would mix its files with ours. */
    if (cd_folder_lock_acquire(j->out, "export-batch", lock, &err) != CD_OK) return cli_fail_error(&err);
    return CLI_OK;
}

/* The record's affine and spacing from its metadata (identity and 1 mm without it). */
static void record_geometry(json_t *meta, double affine[4][4], double spacing[3]) {
    for (int r = 0; r < 4; r++)
        for (int k = 0; k < 4; k++) affine[r][k] = r == k;
    for (int a = 0; a < 3; a++) spacing[a] = 1;
    for (int r = 0; meta && r < 4; r++)
        for (int k = 0; k < 4; k++)
            affine[r][k] = json_number_value(
                json_array_get(json_array_get(json_object_get(meta, "affine"), (size_t)r), (size_t)k));
    for (int a = 0; meta && a < 3; a++)
        spacing[a] = json_number_value(json_array_get(json_object_get(meta, "spacing"), (size_t)a));
}

/* Manifest entry i's part of its file names (unique so far), with a note on stderr when renamed. */
static void record_base(export_job *j, size_t i, json_t *e, char *base, size_t cap) {
    char copy[32];
    json_t *cp = json_object_get(e, "copy");
    if (json_is_integer(cp) && json_integer_value(cp) >= 0)
        snprintf(copy, sizeof copy, "aug%lld", (long long)json_integer_value(cp));
    else
        snprintf(copy, sizeof copy, "orig");
    bool renamed;
    long long taken_by;
    unique_base(j->used, i, json_string_value(json_object_get(e, "patient_id")),
                json_string_value(json_object_get(e, "sequence")), copy, base, cap, &renamed, &taken_by);
    if (!renamed) return;
    const char *key = json_string_value(json_object_get(e, "key"));
    j->renamed_records++;
    if (taken_by >= 0)
        fprintf(stderr,
                "export-batch: record %zu (key '%.200s'): its file name is taken by record %lld; written as %s_*\n", i,
                key ? key : "", taken_by, base);
    else
        fprintf(stderr, "export-batch: record %zu (key '%.200s'): its file name is too long; written as %s_*\n", i,
                key ? key : "", base);
}

/* Writes channel ch of the tensor in j->buf (all channels in one .npy) to a file it claims. */
static cd_status write_file(export_job *j, const char *base, const char *tname, const cd_tensor_info *ti, uint32_t ch,
                            const double affine[4][4], const double spacing[3], cd_error *err) {
    char path[4400];
    int len;
    if (!j->nifti)
        len = snprintf(path, sizeof path, "%s/%s_%s.npy", j->out, base, tname);
    else if (ti->channels == 1)
        len = snprintf(path, sizeof path, "%s/%s_%s.nii.gz", j->out, base, tname);
    else
        len = snprintf(path, sizeof path, "%s/%s_%s_c%u.nii.gz", j->out, base, tname, ch);
    if (len < 0 || (size_t)len >= sizeof path) {
        snprintf(err->message, sizeof err->message, "%.300s: output folder name too long", j->out);
        return err->status = CD_ERR_ARG;
    }
    if (!claim(path, j->overwrite, err)) return err->status;
    cd_status st;
    if (!j->nifti) {
        int64_t dims[4] = {ti->channels, ti->shape[0], ti->shape[1], ti->shape[2]};
        st = cd_npy_write(path, j->buf, ti->dtype, 4, dims, false, err);
    } else {
        st = write_nifti(path, j->buf, ch, ti, affine, spacing, err);
    }
    if (st == CD_OK)
        j->files++;
    else
        unlink(path); /* the empty claim, or what the failed write left */
    return st;
}

/* Tensor t of record i: read, then written as one file (npy) or one per channel (nifti). */
static cd_status export_tensor(export_job *j, size_t i, const cd_shard *sh, const cd_record *rec, uint32_t t,
                               const char *base, const double affine[4][4], const double spacing[3], cd_error *err) {
    cd_tensor_info ti;
    cd_record_tensor_info(rec, t, &ti);
    char tname[CD_TENSOR_NAME_MAX + 2];
    size_t tlen = 0;
    append_safe(tname, sizeof tname, &tlen, ti.name);
    const size_t nbytes = (size_t)ti.channels * ti.shape[0] * ti.shape[1] * ti.shape[2] * cd_dtype_size(ti.dtype);
    free(j->buf);
    if (!(j->buf = malloc(nbytes ? nbytes : 1))) {
        snprintf(err->message, sizeof err->message, "out of memory (%zu bytes for record %zu)", nbytes, i);
        return err->status = CD_ERR_NOMEM;
    }
    cd_status st = cd_record_read_tensor(sh, rec, t, j->buf, err);
    for (uint32_t ch = 0; st == CD_OK && ch < (j->nifti ? ti.channels : 1); ch++)
        st = write_file(j, base, tname, &ti, ch, affine, spacing, err);
    j->bytes += nbytes;
    return st;
}

/* The record's JSON sidecar (npy): what the .npy files cannot say. */
static json_t *sidecar(size_t i, json_t *e, json_t *meta, const cd_record *rec, const char *base,
                       const double affine[4][4], const double spacing[3]) {
    json_t *o = json_object();
    static const char *const fields[] = {"key", "patient_id", "sequence", "split", "label", "copy"};
    for (size_t f = 0; f < sizeof fields / sizeof *fields; f++) {
        json_t *v = json_object_get(e, fields[f]);
        if (v) json_object_set(o, fields[f], v);
    }
    json_object_set_new(o, "record_index", json_integer((json_int_t)i));
    json_t *a = json_array();
    for (int r = 0; r < 4; r++) {
        json_t *row = json_array();
        for (int k = 0; k < 4; k++) json_array_append_new(row, json_real(affine[r][k]));
        json_array_append_new(a, row);
    }
    json_object_set_new(o, "affine", a);
    json_t *sp = json_array();
    for (int k = 0; k < 3; k++) json_array_append_new(sp, json_real(spacing[k]));
    json_object_set_new(o, "spacing", sp);
    json_t *tensors = json_object();
    for (uint32_t t = 0; t < cd_record_tensor_count(rec); t++) {
        cd_tensor_info ti;
        cd_record_tensor_info(rec, t, &ti);
        char tname[CD_TENSOR_NAME_MAX + 2], file[BASE_MAX + 96];
        size_t tlen = 0;
        append_safe(tname, sizeof tname, &tlen, ti.name);
        snprintf(file, sizeof file, "%s_%s.npy", base, tname);
        json_t *d = json_object();
        json_object_set_new(d, "file", json_string(file));
        json_object_set_new(d, "dtype", json_string(cd_dtype_name(ti.dtype)));
        json_object_set_new(d, "shape",
                            json_pack("[IIII]", (json_int_t)ti.channels, (json_int_t)ti.shape[0],
                                      (json_int_t)ti.shape[1], (json_int_t)ti.shape[2]));
        json_object_set_new(tensors, ti.name, d);
    }
    json_object_set_new(o, "tensors", tensors);
    if (meta) json_object_set(o, "metadata", meta);
    return o;
}

/* Writes the sidecar of record i to DIR/<base>.json, a file it claims. */
static cd_status write_sidecar(export_job *j, size_t i, json_t *e, json_t *meta, const cd_record *rec, const char *base,
                               const double affine[4][4], const double spacing[3], cd_error *err) {
    char path[4400];
    int len = snprintf(path, sizeof path, "%s/%s.json", j->out, base);
    if (len < 0 || (size_t)len >= sizeof path) {
        snprintf(err->message, sizeof err->message, "%.300s: output folder name too long", j->out);
        return err->status = CD_ERR_ARG;
    }
    if (!claim(path, j->overwrite, err)) return err->status;
    json_t *o = sidecar(i, e, meta, rec, base, affine, spacing);
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(o);
    cd_status st = CD_OK;
    if (!text) {
        snprintf(err->message, sizeof err->message, "out of memory (the sidecar of record %zu)", i);
        st = err->status = CD_ERR_NOMEM;
    } else {
        size_t n = strlen(text);
        char *full = realloc(text, n + 2); /* ends with a newline, as text files do */
        if (full) {
            text = full;
            text[n++] = '\n';
        }
        st = atomic_write_file(path, text, n, err);
    }
    free(text);
    if (st == CD_OK)
        j->sidecars++;
    else
        unlink(path);
    return st;
}

/* Manifest entry i (record i): its files. */
static cd_status export_record(export_job *j, size_t i, json_t *e, cd_error *err) {
    cd_record *rec = NULL;
    const cd_shard *sh = NULL;
    cd_status st = cd_dataset_read_record(j->ds, i, &rec, &sh, err);
    json_t *meta = st == CD_OK ? json_loads(cd_record_metadata(rec), 0, NULL) : NULL;
    double affine[4][4], spacing[3];
    record_geometry(meta, affine, spacing);
    char base[BASE_MAX + 64];
    record_base(j, i, e, base, sizeof base);
    for (uint32_t t = 0; st == CD_OK && t < cd_record_tensor_count(rec); t++)
        st = export_tensor(j, i, sh, rec, t, base, (const double(*)[4])affine, spacing, err);
    if (st == CD_OK && !j->nifti)
        st = write_sidecar(j, i, e, meta, rec, base, (const double(*)[4])affine, spacing, err);
    json_decref(meta);
    cd_record_destroy(rec);
    return st;
}

int cmd_export_batch(int argc, char **argv) {
    export_job j = {.splits = "train"};
    int rc = parse_options(argc, argv, &j);
    if (rc != CLI_OK) return rc < 0 ? CLI_OK : rc;
    cd_error err;
    if (cd_dataset_open(j.dir, &j.ds, &err) != CD_OK) return cli_fail_error(&err);
    json_t *m = json_loads(cd_dataset_manifest(j.ds), 0, NULL);
    json_t *entries = json_object_get(m, "records");
    size_t total, i;
    cd_folder_lock *lock = NULL;
    rc = prepare_output(&j, entries, &total, &lock);
    cli_progress *bar = rc == CLI_OK ? cli_progress_start("export-batch", "records", total, j.quiet) : NULL;
    j.used = json_object();
    json_t *e;
    json_array_foreach(entries, i, e) {
        if (rc != CLI_OK) break;
        if (!selected(&j, e)) continue;
        if (export_record(&j, i, e, &err) != CD_OK) rc = cli_fail_error(&err);
        cli_progress_update(bar, ++j.done, j.bytes);
    }
    free(j.buf);
    json_decref(j.used);
    cd_folder_lock_release(lock);
    cli_progress_finish(bar);
    if (rc == CLI_OK) {
        printf("exported %zu record%s of split(s) '%s' as %zu %s file%s", j.done, j.done == 1 ? "" : "s", j.splits,
               j.files, j.nifti ? "NIfTI" : "npy", j.files == 1 ? "" : "s");
        if (!j.nifti) printf(" and %zu JSON sidecar%s", j.sidecars, j.sidecars == 1 ? "" : "s");
        printf(" into %s", j.out);
        if (j.renamed_records)
            printf(" (%zu record%s renamed with _r<index> to keep names unique)", j.renamed_records,
                   j.renamed_records == 1 ? "" : "s");
        printf("\n");
    }
    json_decref(m);
    cd_dataset_close(j.ds);
    return rc;
}
