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
    "  --format F       npy (default): the tensor as stored, shape (C, X, Y, Z), C order, stored dtype;\n"
    "                   nifti: .nii.gz, shape (X, Y, Z), the record's affine (voxel -> RAS mm) in sform\n"
    "                   and qform; float16 images are widened to float32 (NIfTI-1 has no float16);\n"
    "                   images with C > 1 channels are written one file per channel (_image_cN)\n"
    "  --overwrite      replace files that exist in DIR (from an earlier export)\n"
    "  --quiet          no progress bar\n\n"
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
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '+' || c == '-';
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
static cd_status write_nifti(const char *path, const void *data, cd_dtype dt, uint32_t c, const cd_tensor_info *ti,
                             const double affine[4][4], const double spacing[3], cd_error *err) {
    const size_t X = ti->shape[0], Y = ti->shape[1], Z = ti->shape[2], n = X * Y * Z;
    const cd_dtype out_dt = dt == CD_DTYPE_FLOAT16 ? CD_DTYPE_FLOAT32 : dt;
    int64_t dims[3] = {(int64_t)X, (int64_t)Y, (int64_t)Z};
    cd_volume *v;
    cd_status st = cd_volume_create(dims, out_dt, &v, err);
    if (st != CD_OK) return st;
    uint8_t *dst = cd_volume_data(v);
    const size_t es = cd_dtype_size(dt), oes = cd_dtype_size(out_dt);
    const uint8_t *src = (const uint8_t *)data + (size_t)c * n * es;
    for (size_t x = 0; x < X; x++)
        for (size_t y = 0; y < Y; y++)
            for (size_t z = 0; z < Z; z++) {
                const uint8_t *s = src + ((x * Y + y) * Z + z) * es;
                uint8_t *d = dst + (x + X * (y + Y * z)) * oes;
                if (dt == CD_DTYPE_FLOAT16) {
                    uint16_t h;
                    float f;
                    memcpy(&h, s, 2);
                    cd_float16_to_float32(&h, &f, 1);
                    memcpy(d, &f, 4);
                } else {
                    memcpy(d, s, es);
                }
            }
    cd_volume_set_affine(v, affine);
    cd_volume_set_spacing(v, spacing);
    st = cd_nifti_write(path, v, NULL, err);
    cd_volume_destroy(v);
    return st;
}

int cmd_export_batch(int argc, char **argv) {
    static const struct option opts[] = {{"out", required_argument, NULL, O_OUT},       {"split", required_argument, NULL, O_SPLIT},
                                         {"format", required_argument, NULL, O_FORMAT}, {"overwrite", no_argument, NULL, O_OVERWRITE},
                                         {"quiet", no_argument, NULL, O_QUIET},         {"help", no_argument, NULL, O_HELP},
                                         {NULL, 0, NULL, 0}};
    const char *out = NULL, *splits = "train";
    bool nifti = false, quiet = false, overwrite = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
        case O_OUT: out = optarg; break;
        case O_SPLIT: splits = optarg; break;
        case O_FORMAT:
            if (!strcmp(optarg, "npy")) nifti = false;
            else if (!strcmp(optarg, "nifti")) nifti = true;
            else return cli_usage_error("export-batch", "bad --format '%s' (npy or nifti)", optarg);
            break;
        case O_OVERWRITE: overwrite = true; break;
        case O_QUIET: quiet = true; break;
        case 'h':
        case O_HELP: fputs(export_batch_help, stdout); return CLI_OK;
        default: return cli_usage_error("export-batch", "unknown option or missing value '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage_error("export-batch", "expected exactly one DATASET");
    if (!out) return cli_usage_error("export-batch", "missing --out DIR");
    const char *dir = argv[optind];
    cd_error err;
    cd_dataset *ds;
    if (cd_dataset_open(dir, &ds, &err) != CD_OK) return cli_fail_error(&err);
    json_t *m = json_loads(cd_dataset_manifest(ds), 0, NULL);
    json_t *entries = json_object_get(m, "records");
    size_t total = 0, i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        const char *sp = json_string_value(json_object_get(e, "split"));
        total += cd_dataset_split_selected(splits, sp ? sp : "");
    }
    int rc = CLI_OK;
    if (!total) {
        err.status = CD_ERR_ARG;
        snprintf(err.message, sizeof err.message, "%.300s: no records in split(s) '%.100s'", dir, splits);
        rc = cli_fail_error(&err);
    } else if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        err.status = CD_ERR_IO;
        snprintf(err.message, sizeof err.message, "%.300s: cannot create directory: %.100s", out, strerror(errno));
        rc = cli_fail_error(&err);
    }
    /* One writer per folder: a second export into it would mix its files with ours. */
    cd_folder_lock *lock = NULL;
    if (rc == CLI_OK && cd_folder_lock_acquire(out, "export-batch", &lock, &err) != CD_OK) rc = cli_fail_error(&err);
    cli_progress *bar = rc == CLI_OK ? cli_progress_start("export", total, quiet) : NULL;
    size_t done = 0, files = 0, renamed_records = 0;
    uint64_t bytes = 0;
    void *buf = NULL;
    json_t *used = json_object(); /* base name -> record index */
    json_array_foreach(entries, i, e) {
        if (rc != CLI_OK) break;
        const char *sp = json_string_value(json_object_get(e, "split"));
        if (!cd_dataset_split_selected(splits, sp ? sp : "")) continue;
        cd_record *rec = NULL;
        const cd_shard *sh = NULL;
        cd_status st = cd_dataset_read_record(ds, i, &rec, &sh, &err);
        json_t *meta = st == CD_OK ? json_loads(cd_record_metadata(rec), 0, NULL) : NULL;
        double affine[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}}, spacing[3] = {1, 1, 1};
        for (int r = 0; meta && r < 4; r++)
            for (int k = 0; k < 4; k++) affine[r][k] = json_number_value(json_array_get(json_array_get(json_object_get(meta, "affine"), (size_t)r), (size_t)k));
        for (int a = 0; meta && a < 3; a++) spacing[a] = json_number_value(json_array_get(json_object_get(meta, "spacing"), (size_t)a));
        char base[BASE_MAX + 64], copy[32];
        json_t *cp = json_object_get(e, "copy");
        if (json_is_integer(cp) && json_integer_value(cp) >= 0) snprintf(copy, sizeof copy, "aug%lld", (long long)json_integer_value(cp));
        else snprintf(copy, sizeof copy, "orig");
        bool renamed;
        long long taken_by;
        unique_base(used, i, json_string_value(json_object_get(e, "patient_id")), json_string_value(json_object_get(e, "sequence")),
                    copy, base, sizeof base, &renamed, &taken_by);
        if (renamed) {
            const char *key = json_string_value(json_object_get(e, "key"));
            renamed_records++;
            if (taken_by >= 0)
                fprintf(stderr, "export-batch: record %zu (key '%.200s'): its file name is taken by record %lld; written as %s_*\n", i,
                        key ? key : "", taken_by, base);
            else
                fprintf(stderr, "export-batch: record %zu (key '%.200s'): its file name is too long; written as %s_*\n", i,
                        key ? key : "", base);
        }
        for (uint32_t t = 0; st == CD_OK && t < cd_record_tensor_count(rec); t++) {
            cd_tensor_info ti;
            cd_record_tensor_info(rec, t, &ti);
            char tname[CD_TENSOR_NAME_MAX + 2];
            size_t tlen = 0;
            append_safe(tname, sizeof tname, &tlen, ti.name);
            const size_t nbytes = (size_t)ti.channels * ti.shape[0] * ti.shape[1] * ti.shape[2] * cd_dtype_size(ti.dtype);
            free(buf);
            if (!(buf = malloc(nbytes ? nbytes : 1))) {
                st = err.status = CD_ERR_NOMEM;
                snprintf(err.message, sizeof err.message, "out of memory (%zu bytes for record %zu)", nbytes, i);
                break;
            }
            st = cd_record_read_tensor(sh, rec, t, buf, &err);
            char path[4400];
            for (uint32_t ch = 0; st == CD_OK && ch < (nifti ? ti.channels : 1); ch++) {
                int len;
                if (!nifti) len = snprintf(path, sizeof path, "%s/%s_%s.npy", out, base, tname);
                else if (ti.channels == 1) len = snprintf(path, sizeof path, "%s/%s_%s.nii.gz", out, base, tname);
                else len = snprintf(path, sizeof path, "%s/%s_%s_c%u.nii.gz", out, base, tname, ch);
                if (len < 0 || (size_t)len >= sizeof path) {
                    st = err.status = CD_ERR_ARG;
                    snprintf(err.message, sizeof err.message, "%.300s: output folder name too long", out);
                    break;
                }
                if (!claim(path, overwrite, &err)) {
                    st = err.status;
                    break;
                }
                if (!nifti) {
                    int64_t dims[4] = {ti.channels, ti.shape[0], ti.shape[1], ti.shape[2]};
                    st = cd_npy_write(path, buf, ti.dtype, 4, dims, false, &err);
                } else {
                    st = write_nifti(path, buf, ti.dtype, ch, &ti, affine, spacing, &err);
                }
                if (st == CD_OK) files++;
                else unlink(path); /* the empty claim, or what the failed write left */
            }
            bytes += nbytes;
        }
        json_decref(meta);
        cd_record_destroy(rec);
        if (st != CD_OK) rc = cli_fail_error(&err);
        cli_progress_update(bar, ++done, bytes);
    }
    free(buf);
    json_decref(used);
    cd_folder_lock_release(lock);
    cli_progress_finish(bar);
    if (rc == CLI_OK) {
        printf("exported %zu record%s of split(s) '%s' as %zu %s file%s into %s", done, done == 1 ? "" : "s", splits, files,
               nifti ? "NIfTI" : "npy", files == 1 ? "" : "s", out);
        if (renamed_records)
            printf(" (%zu record%s renamed with _r<index> to keep names unique)", renamed_records, renamed_records == 1 ? "" : "s");
        printf("\n");
    }
    json_decref(m);
    cd_dataset_close(ds);
    return rc;
}
