/* Reading dataset layouts into case lists. Paths from metadata files never leave the dataset root. */
#include <ctype.h>
#include <stdarg.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "convert/layout.h"
#include "io/csv.h"
#include "io/file.h"

#define PATH_CAP 4096

/* snprintf for paths: false when the result would not fit (callers then skip or fail). */
static bool pathf(char *out, size_t n, const char *fmt, ...) CD_PRINTF(3, 4);
static bool pathf(char *out, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(out, n, fmt, ap);
    va_end(ap);
    return r >= 0 && (size_t)r < n;
}

void cd_case_list_free(cd_case_list *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->cases[i].image_path);
        free(l->cases[i].mask_path);
        free(l->cases[i].image2_path);
    }
    for (size_t i = 0; i < l->nskipped; i++) {
        free(l->skipped[i].path);
        free(l->skipped[i].reason);
    }
    for (size_t i = 0; i < l->nclasses; i++) free(l->classes[i]);
    free(l->classes);
    free(l->cases);
    free(l->skipped);
    memset(l, 0, sizeof *l);
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}
/* Present and no directory: a FIFO or device in a file's place is then refused by its reader, naming it,
 * instead of being taken for a missing file. */
static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && !S_ISDIR(st.st_mode);
}

static cd_status add_skip(cd_case_list *l, const char *path, const char *reason, bool strict, cd_error *err) {
    if (strict) return cd_fail(err, CD_ERR_FORMAT, "%s: %s", path, reason);
    if (l->nskipped == l->capskipped) {
        size_t cap = l->capskipped ? 2 * l->capskipped : 16;
        cd_skip *s = realloc(l->skipped, cap * sizeof *s);
        if (!s) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
        l->skipped = s;
        l->capskipped = cap;
    }
    l->skipped[l->nskipped].path = strdup(path);
    l->skipped[l->nskipped].reason = strdup(reason);
    l->nskipped++;
    return CD_OK;
}

static cd_case *add_case(cd_case_list *l, cd_error *err) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        cd_case *c = realloc(l->cases, cap * sizeof *c);
        if (!c) {
            cd_fail(err, CD_ERR_NOMEM, "out of memory");
            return NULL;
        }
        l->cases = c;
        l->cap = cap;
    }
    cd_case *c = &l->cases[l->n++];
    memset(c, 0, sizeof *c);
    c->label = -1;
    c->age = NAN;
    c->gender = -1;
    return c;
}

static cd_status set_classes(cd_case_list *l, const char *const *names, size_t n, cd_error *err) {
    l->classes = calloc(n, sizeof(char *));
    if (!l->classes) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) l->classes[i] = strdup(names[i]);
    l->nclasses = n;
    return CD_OK;
}

/* "304.nii.gz" -> "304"; false for names that are not NIfTI files. */
static bool nifti_stem(const char *name, char *stem, size_t n) {
    size_t len = strlen(name);
    size_t cut = 0;
    if (len > 7 && !strcmp(name + len - 7, ".nii.gz"))
        cut = 7;
    else if (len > 4 && !strcmp(name + len - 4, ".nii"))
        cut = 4;
    if (!cut || name[0] == '.' || len - cut >= n) return false;
    memcpy(stem, name, len - cut);
    stem[len - cut] = '\0';
    return true;
}

/* Numeric ids sort as numbers, others after them as strings. */
static int id_cmp(const char *a, const char *b) {
    char *ea, *eb;
    long long x = strtoll(a, &ea, 10), y = strtoll(b, &eb, 10);
    bool na = *a && !*ea, nb = *b && !*eb;
    if (na && nb) return x < y ? -1 : x > y;
    if (na != nb) return na ? -1 : 1;
    return strcmp(a, b);
}

static int name_cmp(const void *a, const void *b) {
    char sa[256], sb[256];
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    if (!nifti_stem(x, sa, sizeof sa) || !nifti_stem(y, sb, sizeof sb)) return strcmp(x, y);
    return id_cmp(sa, sb);
}

/* Sorted NIfTI file names of a directory (no directories; symlinks are not followed out). */
static cd_status list_nifti(const char *dir, char ***names, size_t *count, cd_error *err) {
    *names = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) return cd_fail(err, CD_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
    size_t cap = 0;
    struct dirent *e;
    cd_status st = CD_OK;
    char stem[256], path[PATH_CAP];
    while ((e = readdir(d))) {
        if (!nifti_stem(e->d_name, stem, sizeof stem)) continue;
        pathf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        /* A FIFO or device is listed: its reader refuses it by name (the case is skipped, not lost). */
        if (lstat(path, &sb) != 0 || S_ISDIR(sb.st_mode) || S_ISLNK(sb.st_mode)) continue;
        if (*count == cap) {
            cap = cap ? 2 * cap : 64;
            char **n = realloc(*names, cap * sizeof *n);
            if (!n) {
                st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
                break;
            }
            *names = n;
        }
        (*names)[(*count)++] = strdup(e->d_name);
    }
    closedir(d);
    if (st == CD_OK && *count) qsort(*names, *count, sizeof **names, name_cmp);
    return st;
}

static void free_names(char **names, size_t n) {
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Follows the published double nesting: ROOT/NAME/NAME/... */
static bool find_nested(const char *root, const char *name, char *out, size_t n) {
    pathf(out, n, "%s/%s", root, name);
    if (!is_dir(out)) return false;
    for (int depth = 0; depth < 4; depth++) {
        char inner[PATH_CAP];
        pathf(inner, sizeof inner, "%s/%s", out, name);
        if (!is_dir(inner)) break;
        pathf(out, n, "%s", inner);
    }
    return true;
}

/* id -> (age, gender, evaluation) from one metadata CSV. */
typedef struct label_row {
    char id[CD_CASE_ID_MAX];
    double age;
    int gender, evaluation;
    size_t row; /* 1-based data row of the CSV (the header not counted) */
} label_row;

typedef struct label_table {
    label_row *rows;
    size_t n;
} label_table;

static int row_cmp(const void *a, const void *b) {
    const label_row *x = a, *y = b;
    int c = id_cmp(x->id, y->id);
    return c ? c : (x->row > y->row) - (x->row < y->row);
}

static bool same_values(const label_row *a, const label_row *b) {
    bool age = (isnan(a->age) && isnan(b->age)) || a->age == b->age;
    return age && a->gender == b->gender && a->evaluation == b->evaluation;
}

/* Reads one metadata CSV into t, sorted by id. A patient listed twice with the same values is kept
 * once; with different values it is an error naming both rows (which one is right cannot be told). */
static cd_status read_labels(const char *path, bool need_eval, label_table *t, cd_error *err) {
    t->rows = NULL;
    t->n = 0;
    cd_csv csv;
    cd_status st = cd_csv_read(path, &csv, err);
    if (st != CD_OK) return st;
    int cid = cd_csv_column(&csv, "Patient ID"), cage = cd_csv_column(&csv, "Age"), cg = cd_csv_column(&csv, "Gender");
    int cev = cd_csv_column(&csv, "Radiological Evaluation");
    if (cid < 0 || (need_eval && cev < 0)) {
        cd_csv_free(&csv);
        return cd_fail(err, CD_ERR_FORMAT, "%s: missing column '%s'", path,
                       cid < 0 ? "Patient ID" : "Radiological Evaluation");
    }
    t->rows = calloc(csv.nrows ? csv.nrows : 1, sizeof *t->rows);
    if (!t->rows) {
        cd_csv_free(&csv);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < csv.nrows; i++) {
        label_row *r = &t->rows[t->n];
        if (!pathf(r->id, sizeof r->id, "%s", csv.rows[i][cid])) {
            cd_csv_free(&csv);
            free(t->rows);
            t->rows = NULL;
            return cd_fail(err, CD_ERR_FORMAT, "%s: data row %zu: Patient ID longer than %d bytes", path, i + 1,
                           CD_CASE_ID_MAX - 1);
        }
        if (!r->id[0]) continue;
        r->row = i + 1;
        char *end;
        r->age = cage >= 0 ? strtod(csv.rows[i][cage], &end) : NAN;
        if (cage >= 0 && (end == csv.rows[i][cage] || *end)) r->age = NAN;
        r->gender = cg >= 0 ? (int)strtol(csv.rows[i][cg], &end, 10) : -1;
        if (cg >= 0 && (end == csv.rows[i][cg] || *end)) r->gender = -1;
        r->evaluation = cev >= 0 ? (int)strtol(csv.rows[i][cev], &end, 10) : 0;
        if (cev >= 0 && (end == csv.rows[i][cev] || *end)) r->evaluation = 0;
        t->n++;
    }
    cd_csv_free(&csv);
    if (t->n) qsort(t->rows, t->n, sizeof *t->rows, row_cmp);
    size_t kept = 0;
    for (size_t i = 0; i < t->n; i++) {
        const label_row *a = kept ? &t->rows[kept - 1] : NULL, *b = &t->rows[i];
        if (a && !id_cmp(a->id, b->id)) {
            if (same_values(a, b)) continue; /* a repeated row: nothing to choose between */
            st = cd_fail(
                err, CD_ERR_FORMAT,
                "%s: patient %s has conflicting rows: data row %zu (Age %g, Gender %d, Radiological Evaluation "
                "%d) and data row %zu (Age %g, Gender %d, Radiological Evaluation %d)",
                path, a->id, a->row, a->age, a->gender, a->evaluation, b->row, b->age, b->gender, b->evaluation);
            free(t->rows);
            t->rows = NULL;
            t->n = 0;
            return st;
        }
        t->rows[kept++] = *b;
    }
    t->n = kept;
    return CD_OK;
}

static int find_cmp(const void *key, const void *row) { return id_cmp(key, ((const label_row *)row)->id); }

static const label_row *find_label(const label_table *t, const char *id) {
    return t->n ? bsearch(id, t->rows, t->n, sizeof *t->rows, find_cmp) : NULL;
}

/* Lists, as skipped, the masks of mask_dir whose image is not in img_dir: a case whose image is
 * missing must not vanish without a word. */
static cd_status skip_masks_without_image(cd_case_list *l, const char *img_dir, const char *mask_dir, bool strict,
                                          cd_error *err) {
    if (!is_dir(mask_dir)) return CD_OK;
    char **names;
    size_t n;
    cd_status st = list_nifti(mask_dir, &names, &n, err);
    char stem[256], a[PATH_CAP], b[PATH_CAP], why[PATH_CAP + 64];
    for (size_t i = 0; i < n && st == CD_OK; i++) {
        nifti_stem(names[i], stem, sizeof stem);
        bool fit = pathf(a, sizeof a, "%s/%s.nii.gz", img_dir, stem) && pathf(b, sizeof b, "%s/%s.nii", img_dir, stem);
        if (fit && (is_file(a) || is_file(b))) continue;
        pathf(a, sizeof a, "%s/%s", mask_dir, names[i]);
        snprintf(why, sizeof why, "mask without an image (no %s.nii.gz or %s.nii in %s)", stem, stem, img_dir);
        st = add_skip(l, a, why, strict, err);
    }
    free_names(names, n);
    return st;
}

/* Adds the cases of one images/masks folder pair. */
static cd_status scan_folder(cd_case_list *l, const char *img_dir, const char *mask_dir, const char *seq,
                             const char *split, const label_table *labels, bool healthy, bool strict, cd_error *err) {
    char **names;
    size_t n;
    cd_status st = list_nifti(img_dir, &names, &n, err);
    if (st != CD_OK) return st;
    char path[PATH_CAP], mpath[PATH_CAP], stem[256];
    for (size_t i = 0; i < n && st == CD_OK; i++) {
        nifti_stem(names[i], stem, sizeof stem);
        pathf(path, sizeof path, "%s/%s", img_dir, names[i]);
        pathf(mpath, sizeof mpath, "%s/%s", mask_dir, names[i]);
        if (!is_file(mpath)) {
            /* The mask may be compressed differently from the image. */
            size_t len = strlen(mpath);
            if (len > 3 && !strcmp(mpath + len - 3, ".gz"))
                mpath[len - 3] = '\0';
            else
                snprintf(mpath + len, sizeof mpath - len, ".gz");
        }
        if (!is_file(mpath)) {
            st = add_skip(l, path, "missing mask", strict, err);
            continue;
        }
        const label_row *lr = labels ? find_label(labels, stem) : NULL;
        if (!healthy && (!lr || lr->evaluation < 1 || lr->evaluation > 3)) {
            st = add_skip(l, path, lr ? "Radiological Evaluation is not 1, 2 or 3" : "no label in the metadata CSV",
                          strict, err);
            continue;
        }
        char key[CD_CASE_KEY_MAX];
        if (strlen(stem) >= CD_CASE_ID_MAX ||
            !pathf(key, sizeof key, "%s%s/%s", healthy ? "healthy-" : "", seq, stem)) {
            st = add_skip(l, path, "the file name is too long for a case key", strict, err);
            continue;
        }
        cd_case *c = add_case(l, err);
        if (!c) {
            st = CD_ERR_NOMEM;
            break;
        }
        pathf(c->patient_id, sizeof c->patient_id, "%s", stem);
        snprintf(c->sequence, sizeof c->sequence, "%s", seq);
        snprintf(c->split, sizeof c->split, "%s", split);
        memcpy(c->key, key, sizeof key);
        c->image_path = strdup(path);
        c->mask_path = strdup(mpath);
        if (lr) {
            c->age = lr->age;
            c->gender = lr->gender;
        }
        if (healthy) {
            c->label = 3;
            c->stage = 0;
        } else {
            c->stage = lr->evaluation;
            c->label = lr->evaluation - 1;
        }
        if (!c->image_path || !c->mask_path) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    free_names(names, n);
    if (st == CD_OK) st = skip_masks_without_image(l, img_dir, mask_dir, strict, err);
    return st;
}

static int case_id_cmp(const void *a, const void *b) {
    const cd_case *x = *(const cd_case *const *)a, *y = *(const cd_case *const *)b;
    int h = (strncmp(x->key, "healthy-", 8) == 0) - (strncmp(y->key, "healthy-", 8) == 0);
    if (h) return h;
    int c = strcmp(x->sequence, y->sequence);
    if (c) return c;
    c = id_cmp(x->patient_id, y->patient_id);
    return c ? c : strcmp(x->image_path, y->image_path);
}

/* The cases in cmp's order (pointers into l; free the array), or NULL when out of memory. */
static const cd_case **sorted_cases(const cd_case_list *l, int (*cmp)(const void *, const void *)) {
    const cd_case **v = malloc(l->n * sizeof *v);
    if (!v) return NULL;
    for (size_t i = 0; i < l->n; i++) v[i] = &l->cases[i];
    qsort(v, l->n, sizeof *v, cmp);
    return v;
}

/* One patient id (compared as numbers, like the CSV join) at most once per sequence: in two splits it
 * leaks between them, twice in one folder (304.nii and 304.nii.gz) nobody can tell which is meant.
 * Both are errors, strict or not. */
static cd_status check_unique_patients(const cd_case_list *l, cd_error *err) {
    if (l->n < 2) return CD_OK;
    const cd_case **v = sorted_cases(l, case_id_cmp);
    if (!v) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    cd_status st = CD_OK;
    for (size_t i = 1; i < l->n && st == CD_OK; i++) {
        const cd_case *a = v[i - 1], *b = v[i];
        if (strcmp(a->sequence, b->sequence) || id_cmp(a->patient_id, b->patient_id) ||
            (strncmp(a->key, "healthy-", 8) == 0) != (strncmp(b->key, "healthy-", 8) == 0))
            continue;
        if (strcmp(a->split, b->split))
            st = cd_fail(err, CD_ERR_FORMAT,
                         "%s patient %s is in two splits, %s (%s) and %s (%s): the same patient in two splits leaks "
                         "between them; remove one",
                         a->sequence, a->patient_id, a->split, a->image_path, b->split, b->image_path);
        else
            st = cd_fail(err, CD_ERR_FORMAT, "%s patient %s has two images in %s: %s and %s; remove one", a->sequence,
                         a->patient_id, a->split, a->image_path, b->image_path);
    }
    free(v);
    return st;
}

cd_status cd_layout_cirrmri600(const char *root, bool healthy_class, bool strict, cd_case_list *out, cd_error *err) {
    memset(out, 0, sizeof *out);
    if (!is_dir(root)) return cd_fail(err, CD_ERR_IO, "%s: not a directory", root);
    static const char *const classes3[] = {"mild", "moderate", "severe", "healthy"};
    cd_status st = set_classes(out, classes3, healthy_class ? 4 : 3, err);
    char meta[PATH_CAP], path[PATH_CAP];
    if (st == CD_OK && !find_nested(root, "Metadata", meta, sizeof meta))
        st = cd_fail(err, CD_ERR_FORMAT, "%s: no Metadata folder (expected the CirrMRI600+ layout)", root);
    static const char *const seqs[] = {"T1", "T2"};
    static const char *const splits[] = {"train", "valid", "test"};
    bool any = false;
    for (int q = 0; q < 2 && st == CD_OK; q++) {
        char name[64], seqdir[PATH_CAP];
        pathf(name, sizeof name, "Cirrhosis_%s_3D", seqs[q]);
        if (!find_nested(root, name, seqdir, sizeof seqdir)) continue;
        any = true;
        /* Labels: the sequence's own CSV, else the complete one. */
        label_table labels = {0};
        pathf(path, sizeof path, "%s/%s_age_gender_evaluation.csv", meta, seqs[q]);
        if (!is_file(path)) pathf(path, sizeof path, "%s/CirrMRI600+_CompleteData_age_gender_evaluation.csv", meta);
        if (!is_file(path)) {
            st = cd_fail(err, CD_ERR_FORMAT, "%s: no %s_age_gender_evaluation.csv or complete-data CSV", meta, seqs[q]);
            break;
        }
        if ((st = read_labels(path, true, &labels, err)) != CD_OK) break;
        for (int s = 0; s < 3 && st == CD_OK; s++) {
            char idir[PATH_CAP], mdir[PATH_CAP];
            pathf(idir, sizeof idir, "%s/%s_images", seqdir, splits[s]);
            pathf(mdir, sizeof mdir, "%s/%s_masks", seqdir, splits[s]);
            /* Without the images folder its masks are still listed, as masks without an image. */
            st = is_dir(idir) ? scan_folder(out, idir, mdir, seqs[q], splits[s], &labels, false, strict, err)
                              : skip_masks_without_image(out, idir, mdir, strict, err);
        }
        free(labels.rows);
    }
    if (st == CD_OK && !any)
        st = cd_fail(err, CD_ERR_FORMAT,
                     "%s: no Cirrhosis_T1_3D or Cirrhosis_T2_3D folder (expected the CirrMRI600+ layout)", root);
    if (st == CD_OK && healthy_class) {
        label_table demo = {0};
        pathf(path, sizeof path, "%s/Healthy_demographics.csv", meta);
        if (is_file(path) && (st = read_labels(path, false, &demo, err)) != CD_OK) goto done;
        for (int q = 0; q < 2 && st == CD_OK; q++) {
            char hdir[PATH_CAP], idir[PATH_CAP], mdir[PATH_CAP], name[64];
            pathf(name, sizeof name, "Healthy_subjects/%s_W_Healthy", seqs[q]);
            if (!find_nested(root, name, hdir, sizeof hdir)) continue;
            pathf(idir, sizeof idir, "%s/%s_images", hdir, seqs[q]);
            pathf(mdir, sizeof mdir, "%s/%s_masks", hdir, seqs[q]);
            if (!is_dir(idir)) {
                st = skip_masks_without_image(out, idir, mdir, strict, err);
                continue;
            }
            size_t first = out->n;
            st = scan_folder(out, idir, mdir, seqs[q], "train", &demo, true, strict, err);
            /* Healthy subjects have no official split: every tenth goes to valid, the next to test. */
            for (size_t i = first; i < out->n; i++) {
                size_t k = (i - first) % 10;
                snprintf(out->cases[i].split, sizeof out->cases[i].split, "%s",
                         k == 8   ? "valid"
                         : k == 9 ? "test"
                                  : "train");
            }
        }
        free(demo.rows);
    }
    if (st == CD_OK) st = check_unique_patients(out, err);
done:
    if (st != CD_OK) cd_case_list_free(out);
    return st;
}

/* Whether path, with symbolic links resolved, lies under root_real (a realpath). A path that does not
 * exist passes here; the caller reports it as missing. */
static bool inside_root(const char *root_real, const char *path) {
    char real[PATH_MAX];
    if (!realpath(path, real)) return errno == ENOENT || errno == ENOTDIR;
    size_t n = strlen(root_real);
    if (n == 1) return true; /* root is "/" */
    return !strncmp(real, root_real, n) && (real[n] == '/' || real[n] == '\0');
}

/* A relative path from dataset.json: no absolute paths, no "..", resolved under root, and no symbolic
 * link on the way that leads out of root. */
static bool safe_join(const char *root, const char *root_real, const char *rel, char *out, size_t n) {
    if (!rel || !*rel || rel[0] == '/') return false;
    const char *p = rel;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.') return false;
        p += len;
        if (*p == '/') p++;
    }
    if (rel[0] == '.' && rel[1] == '/') rel += 2;
    return pathf(out, n, "%s/%s", root, rel) && inside_root(root_real, out);
}

/* nnU-Net v2: lists, as skipped, the labels of labelsTr whose case has no image
 * imagesTr/<case>_0000 (with the dataset's ending, or .nii.gz / .nii as the image scan accepts). */
static cd_status skip_labels_without_image(cd_case_list *l, const char *root, const char *ending, bool strict,
                                           cd_error *err) {
    char ldir[PATH_CAP];
    if (!pathf(ldir, sizeof ldir, "%s/labelsTr", root) || !is_dir(ldir)) return CD_OK;
    char **names;
    size_t n;
    cd_status st = list_nifti(ldir, &names, &n, err);
    const size_t elen = strlen(ending);
    for (size_t i = 0; i < n && st == CD_OK; i++) {
        size_t len = strlen(names[i]);
        if (len <= elen || strcmp(names[i] + len - elen, ending)) continue;
        char c[256], a[PATH_CAP], b[PATH_CAP], e[PATH_CAP], lp[PATH_CAP], why[PATH_CAP + 64];
        snprintf(c, sizeof c, "%.*s", (int)(len - elen), names[i]);
        bool fit = pathf(a, sizeof a, "%s/imagesTr/%s_0000%s", root, c, ending) &&
                   pathf(b, sizeof b, "%s/imagesTr/%s_0000.nii.gz", root, c) &&
                   pathf(e, sizeof e, "%s/imagesTr/%s_0000.nii", root, c);
        if (fit && (is_file(a) || is_file(b) || is_file(e))) continue;
        pathf(lp, sizeof lp, "%s/%s", ldir, names[i]);
        snprintf(why, sizeof why, "label without an image (no imagesTr/%s_0000%s)", c, ending);
        st = add_skip(l, lp, why, strict, err);
    }
    free_names(names, n);
    return st;
}

static int case_key_cmp(const void *a, const void *b) {
    const cd_case *x = *(const cd_case *const *)a, *y = *(const cd_case *const *)b;
    int c = strcmp(x->key, y->key);
    return c ? c : strcmp(x->image_path, y->image_path);
}

/* Keys are unique in a dataset: two cases with one key (case_0000.nii beside case_0000.nii.gz, an MSD
 * entry listed twice) are an error naming both files. */
static cd_status check_unique_keys(const cd_case_list *l, cd_error *err) {
    if (l->n < 2) return CD_OK;
    const cd_case **v = sorted_cases(l, case_key_cmp);
    if (!v) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    cd_status st = CD_OK;
    for (size_t i = 1; i < l->n && st == CD_OK; i++)
        if (!strcmp(v[i - 1]->key, v[i]->key))
            st = cd_fail(err, CD_ERR_FORMAT, "two cases have the key '%s': %s and %s; remove one", v[i]->key,
                         v[i - 1]->image_path, v[i]->image_path);
    free(v);
    return st;
}

cd_status cd_layout_nnunet(const char *root, bool strict, cd_case_list *out, cd_error *err) {
    memset(out, 0, sizeof *out);
    char path[PATH_CAP];
    pathf(path, sizeof path, "%s/dataset.json", root);
    char root_real[PATH_MAX];
    if (!realpath(root, root_real)) return cd_fail(err, CD_ERR_IO, "%s: cannot resolve: %s", root, strerror(errno));
    json_error_t jerr;
    char *text;
    size_t text_len;
    cd_status rst = cd_read_text_file_len(path, 0, "dataset description", &text, &text_len, err);
    if (rst != CD_OK) return rst;
    json_t *ds = json_loadb(text, text_len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!ds) return cd_fail(err, CD_ERR_FORMAT, "%s: invalid JSON at line %d: %s", path, jerr.line, jerr.text);
    cd_status st = CD_OK;
    const char *modality = "image";
    json_t *ch = json_object_get(ds, "channel_names");
    if (!ch) ch = json_object_get(ds, "modality");
    if (json_is_object(ch) && json_is_string(json_object_get(ch, "0")))
        modality = json_string_value(json_object_get(ch, "0"));
    const char *ending = json_is_string(json_object_get(ds, "file_ending"))
                             ? json_string_value(json_object_get(ds, "file_ending"))
                             : ".nii.gz";
    if (strchr(ending, '/') || strlen(ending) > 32) {
        cd_fail(err, CD_ERR_FORMAT, "%s: file_ending '%.40s' is not a plain file name suffix", path, ending);
        json_decref(ds); /* after the message: ending points into ds */
        return CD_ERR_FORMAT;
    }
    if (strlen(modality) >= CD_CASE_SEQUENCE_MAX) {
        cd_fail(err, CD_ERR_FORMAT, "%s: channel name '%.40s...' is longer than %d bytes", path, modality,
                CD_CASE_SEQUENCE_MAX - 1);
        json_decref(ds);
        return CD_ERR_FORMAT;
    }
    json_t *training = json_object_get(ds, "training");
    if (json_is_array(training) && json_array_size(training) > 0) {
        /* MSD / nnU-Net v1: explicit image/label pairs. */
        size_t i;
        json_t *item;
        json_array_foreach(training, i, item) {
            const char *img = json_string_value(json_object_get(item, "image"));
            const char *lab = json_string_value(json_object_get(item, "label"));
            char ip[PATH_CAP], lp[PATH_CAP];
            if (!safe_join(root, root_real, img, ip, sizeof ip) || !safe_join(root, root_real, lab, lp, sizeof lp)) {
                st = add_skip(out, path,
                              "a training entry's path is absolute, escapes the dataset (.. or a symbolic link leading "
                              "out) or is missing",
                              strict, err);
                if (st != CD_OK) break;
                continue;
            }
            if (!is_file(ip) || !is_file(lp)) {
                st = add_skip(out, is_file(ip) ? lp : ip, "file listed in dataset.json is missing", strict, err);
                if (st != CD_OK) break;
                continue;
            }
            const char *base = strrchr(ip, '/') + 1;
            char stem[CD_CASE_ID_MAX];
            if (!nifti_stem(base, stem, sizeof stem)) snprintf(stem, sizeof stem, "%zu", i);
            cd_case *c = add_case(out, err);
            if (!c) {
                st = CD_ERR_NOMEM;
                break;
            }
            pathf(c->patient_id, sizeof c->patient_id, "%s", stem);
            snprintf(c->sequence, sizeof c->sequence, "%s", modality);
            snprintf(c->split, sizeof c->split, "train");
            pathf(c->key, sizeof c->key, "%s", stem);
            c->image_path = strdup(ip);
            c->mask_path = strdup(lp);
        }
    } else {
        /* nnU-Net v2: imagesTr/<case>_0000<ending>, labelsTr/<case><ending>. */
        char idir[PATH_CAP];
        pathf(idir, sizeof idir, "%s/imagesTr", root);
        char **names;
        size_t n;
        if ((st = list_nifti(idir, &names, &n, err)) == CD_OK) {
            for (size_t i = 0; i < n && st == CD_OK; i++) {
                char stem[256];
                nifti_stem(names[i], stem, sizeof stem);
                size_t len = strlen(stem);
                if (len < 6 || strcmp(stem + len - 5, "_0000")) continue; /* other channels: first only */
                stem[len - 5] = '\0';
                char ip[PATH_CAP], lp[PATH_CAP];
                pathf(ip, sizeof ip, "%s/%s", idir, names[i]);
                pathf(lp, sizeof lp, "%s/labelsTr/%s%s", root, stem, ending);
                if (!inside_root(root_real, ip) || !inside_root(root_real, lp)) {
                    st = add_skip(out, ip, "the image or its label escapes the dataset (a symbolic link leading out)",
                                  strict, err);
                    continue;
                }
                if (!is_file(lp)) {
                    st = add_skip(out, ip, "missing label file in labelsTr", strict, err);
                    continue;
                }
                cd_case *c = add_case(out, err);
                if (!c) {
                    st = CD_ERR_NOMEM;
                    break;
                }
                pathf(c->patient_id, sizeof c->patient_id, "%s", stem);
                snprintf(c->sequence, sizeof c->sequence, "%s", modality);
                snprintf(c->split, sizeof c->split, "train");
                pathf(c->key, sizeof c->key, "%s", stem);
                c->image_path = strdup(ip);
                c->mask_path = strdup(lp);
            }
            free_names(names, n);
        }
        if (st == CD_OK) st = skip_labels_without_image(out, root, ending, strict, err);
    }
    json_decref(ds);
    if (st == CD_OK) st = check_unique_keys(out, err);
    if (st == CD_OK && out->n == 0) st = cd_fail(err, CD_ERR_FORMAT, "%s: no training cases found", root);
    if (st != CD_OK) cd_case_list_free(out);
    return st;
}

cd_status cd_layout_pair_sequences(cd_case_list *l, const char *a, const char *b, bool strict, cd_error *err) {
    cd_case_list out;
    memset(&out, 0, sizeof out);
    cd_status st = CD_OK;
    /* Keep the class names and the earlier skips. */
    out.classes = l->classes;
    out.nclasses = l->nclasses;
    l->classes = NULL;
    l->nclasses = 0;
    out.skipped = l->skipped;
    out.nskipped = l->nskipped;
    out.capskipped = l->capskipped;
    l->skipped = NULL;
    l->nskipped = l->capskipped = 0;
    for (size_t i = 0; i < l->n && st == CD_OK; i++) {
        cd_case *x = &l->cases[i];
        bool is_a = !strcmp(x->sequence, a), is_b = !strcmp(x->sequence, b);
        if (!is_a && !is_b) continue;
        cd_case *partner = NULL;
        for (size_t j = 0; j < l->n && !partner; j++)
            if (j != i && !strcmp(l->cases[j].sequence, is_a ? b : a) &&
                !id_cmp(l->cases[j].patient_id, x->patient_id) &&
                strncmp(l->cases[j].key, "healthy-", 8) == strncmp(x->key, "healthy-", 8))
                partner = &l->cases[j];
        if (!partner) {
            char why[128];
            snprintf(why, sizeof why, "no %s scan of this patient to pair with (pairing %s+%s)", is_a ? b : a, a, b);
            st = add_skip(&out, x->image_path, why, strict, err);
            continue;
        }
        if (is_b) continue; /* the pair is made from its first sequence */
        if (partner->label != x->label) {
            st = add_skip(&out, x->image_path, "the two sequences of this patient have different labels", strict, err);
            continue;
        }
        char seq[CD_CASE_SEQUENCE_MAX], key[CD_CASE_KEY_MAX];
        if (!pathf(seq, sizeof seq, "%s+%s", a, b) ||
            !pathf(key, sizeof key, "%s%s+%s/%s", strncmp(x->key, "healthy-", 8) ? "" : "healthy-", a, b,
                   x->patient_id)) {
            st = add_skip(&out, x->image_path, "the paired sequence names are too long for a case key", strict, err);
            continue;
        }
        cd_case *c = add_case(&out, err);
        if (!c) {
            st = CD_ERR_NOMEM;
            break;
        }
        *c = *x;
        memcpy(c->sequence, seq, sizeof seq);
        memcpy(c->key, key, sizeof key);
        c->image_path = x->image_path;
        c->mask_path = x->mask_path;
        c->image2_path = partner->image_path;
        x->image_path = x->mask_path = NULL;
        partner->image_path = NULL;
    }
    cd_case_list_free(l);
    if (st != CD_OK) {
        cd_case_list_free(&out);
        return st;
    }
    *l = out;
    return CD_OK;
}
