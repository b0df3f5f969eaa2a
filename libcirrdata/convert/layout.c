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

#include "cirrdata/nifti.h"
#include "convert/layout.h"
#include "convert/nnunet_split.h"
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
        for (int k = 0; k < CD_CASE_CHANNELS_MAX; k++) free(l->cases[i].image_paths[k]);
        free(l->cases[i].mask_path);
    }
    for (size_t i = 0; i < l->nskipped; i++) {
        free(l->skipped[i].path);
        free(l->skipped[i].reason);
    }
    for (size_t i = 0; i < l->nclasses; i++) free(l->classes[i]);
    free(l->classes);
    free(l->split_source);
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
    c->nimages = 1;
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

/* Sorted NIfTI file names of a directory (no directories). links: symbolic links to files are listed
 * too (the caller checks where they lead); otherwise they are left out. */
static cd_status list_nifti(const char *dir, bool links, char ***names, size_t *count, cd_error *err) {
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
        if (lstat(path, &sb) != 0 || S_ISDIR(sb.st_mode) || (S_ISLNK(sb.st_mode) && !links)) continue;
        if (S_ISLNK(sb.st_mode) && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) continue;
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
    cd_status st = list_nifti(mask_dir, false, &names, &n, err);
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
    cd_status st = list_nifti(img_dir, false, &names, &n, err);
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
        c->image_paths[0] = strdup(path);
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
        if (!c->image_paths[0] || !c->mask_path) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
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
    return c ? c : strcmp(x->image_paths[0], y->image_paths[0]);
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
                         a->sequence, a->patient_id, a->split, a->image_paths[0], b->split, b->image_paths[0]);
        else
            st = cd_fail(err, CD_ERR_FORMAT, "%s patient %s has two images in %s: %s and %s; remove one", a->sequence,
                         a->patient_id, a->split, a->image_paths[0], b->image_paths[0]);
    }
    free(v);
    return st;
}

cd_status cd_layout_cirrmri600(const char *root, bool healthy_class, bool strict, cd_case_list *out, cd_error *err) {
    memset(out, 0, sizeof *out);
    out->fold = -1;
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
 * imagesTr/<case>_0000<ending>. */
static cd_status skip_labels_without_image(cd_case_list *l, const char *root, const char *ending, bool strict,
                                           cd_error *err) {
    char ldir[PATH_CAP];
    if (!pathf(ldir, sizeof ldir, "%s/labelsTr", root) || !is_dir(ldir)) return CD_OK;
    char **names;
    size_t n;
    cd_status st = list_nifti(ldir, true, &names, &n, err);
    const size_t elen = strlen(ending);
    for (size_t i = 0; i < n && st == CD_OK; i++) {
        size_t len = strlen(names[i]);
        if (len <= elen || strcmp(names[i] + len - elen, ending)) continue;
        char c[256], a[PATH_CAP], lp[PATH_CAP], why[PATH_CAP + 64];
        snprintf(c, sizeof c, "%.*s", (int)(len - elen), names[i]);
        if (pathf(a, sizeof a, "%s/imagesTr/%s_0000%s", root, c, ending) && is_file(a)) continue;
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
    return c ? c : strcmp(x->image_paths[0], y->image_paths[0]);
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
                         v[i - 1]->image_paths[0], v[i]->image_paths[0]);
    free(v);
    return st;
}

/* What dataset.json says about the files of an nnU-Net dataset. */
typedef struct nn_desc {
    const char *root;
    const char *json_path;
    char root_real[PATH_MAX];
    char ending[8]; /* ".nii.gz" or ".nii" */
    int nch;
    char names[CD_CASE_CHANNELS_MAX][CD_CASE_SEQUENCE_MAX]; /* channel names */
    char sequence[CD_CASE_SEQUENCE_MAX];                    /* the names joined by '+' */
    bool strict;
} nn_desc;

/* file_ending, regions_class_order and the channels (v2 channel_names, v1/MSD modality: keys "0".."N-1"). */
static cd_status nn_read_desc(json_t *ds, nn_desc *d, cd_error *err) {
    const char *path = d->json_path;
    if (json_object_get(ds, "regions_class_order"))
        return cd_fail(err, CD_ERR_UNSUPPORTED,
                       "%s: regions_class_order: region-based training (overlapping label regions) is not supported; "
                       "convert reads plain label maps",
                       path);
    json_t *fe = json_object_get(ds, "file_ending");
    const char *ending = json_is_string(fe) ? json_string_value(fe) : ".nii.gz";
    if (fe && !json_is_string(fe)) return cd_fail(err, CD_ERR_FORMAT, "%s: file_ending is not a string", path);
    if (strchr(ending, '/') || strlen(ending) > 32)
        return cd_fail(err, CD_ERR_FORMAT, "%s: file_ending '%.40s' is not a plain file name suffix", path, ending);
    if (strcmp(ending, ".nii.gz") && strcmp(ending, ".nii"))
        return cd_fail(err, CD_ERR_UNSUPPORTED,
                       "%s: file_ending '%s' is not supported: convert reads NIfTI datasets (.nii.gz or .nii)", path,
                       ending);
    snprintf(d->ending, sizeof d->ending, "%s", ending);
    json_t *ch = json_object_get(ds, "channel_names");
    if (!ch) ch = json_object_get(ds, "modality");
    if (!json_is_object(ch) || !json_object_size(ch)) {
        d->nch = 1; /* no channel names: one image per case */
        snprintf(d->names[0], sizeof d->names[0], "image");
        snprintf(d->sequence, sizeof d->sequence, "image");
        return CD_OK;
    }
    size_t n = json_object_size(ch);
    if (n > CD_CASE_CHANNELS_MAX)
        return cd_fail(err, CD_ERR_UNSUPPORTED, "%s: %zu channels; at most %d are supported", path, n,
                       CD_CASE_CHANNELS_MAX);
    d->nch = (int)n;
    size_t used = 0;
    for (int k = 0; k < d->nch; k++) {
        char key[16];
        snprintf(key, sizeof key, "%d", k);
        const char *name = json_string_value(json_object_get(ch, key));
        if (!name)
            return cd_fail(err, CD_ERR_FORMAT, "%s: channel_names has no channel \"%d\" (expected the keys 0..%d)",
                           path, k, d->nch - 1);
        size_t len = strlen(name);
        if (len >= CD_CASE_SEQUENCE_MAX || used + len + (k > 0) >= CD_CASE_SEQUENCE_MAX)
            return cd_fail(err, CD_ERR_FORMAT,
                           "%s: channel name '%.40s...' (the names joined by '+') is longer than %d bytes", path, name,
                           CD_CASE_SEQUENCE_MAX - 1);
        memcpy(d->names[k], name, len + 1);
        if (k) d->sequence[used++] = '+';
        memcpy(d->sequence + used, name, len + 1);
        used += len;
    }
    return CD_OK;
}

/* Within np.allclose's tolerance (rtol 1e-5, atol 1e-8), as nnU-Net compares channel geometry. */
static bool allclose(double a, double b) { return fabs(a - b) <= 1e-8 + 1e-5 * fabs(b); }

/* Every channel of c on channel 0's grid (shape exact, spacing and affine as nnU-Net's readers check
 * them). A header that cannot be read is left to the reader (the case is skipped then, naming it). */
static cd_status nn_check_channels(const cd_case *c, cd_error *err) {
    if (c->nimages < 2 || !strcmp(c->image_paths[0], c->image_paths[1])) return CD_OK; /* one 4D file */
    cd_nifti_header h0, hk;
    cd_error e;
    if (cd_nifti_read_header(c->image_paths[0], &h0, &e) != CD_OK) return CD_OK;
    for (int k = 1; k < c->nimages; k++) {
        if (cd_nifti_read_header(c->image_paths[k], &hk, &e) != CD_OK) continue;
        bool shape = true, geom = true;
        for (int a = 1; a <= 3; a++) shape = shape && hk.dim[a] == h0.dim[a];
        for (int a = 1; a <= 3; a++) geom = geom && allclose(hk.pixdim[a], h0.pixdim[a]);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) geom = geom && allclose(hk.affine[i][j], h0.affine[i][j]);
        if (!shape)
            return cd_fail(err, CD_ERR_FORMAT,
                           "case '%s': channel %d (%s) has shape %lldx%lldx%lld, channel 0 (%s) %lldx%lldx%lld; "
                           "nnU-Net needs every channel of a case on one grid",
                           c->patient_id, k, c->image_paths[k], (long long)hk.dim[1], (long long)hk.dim[2],
                           (long long)hk.dim[3], c->image_paths[0], (long long)h0.dim[1], (long long)h0.dim[2],
                           (long long)h0.dim[3]);
        if (!geom)
            return cd_fail(err, CD_ERR_FORMAT,
                           "case '%s': channel %d (%s) has another spacing or affine than channel 0 (%s); nnU-Net "
                           "needs every channel of a case on one grid",
                           c->patient_id, k, c->image_paths[k], c->image_paths[0]);
    }
    return CD_OK;
}

/* Skips path (a case's file) when it leads out of the dataset or is missing: *ok false then. */
static cd_status nn_check_file(cd_case_list *l, const nn_desc *d, const char *path, const char *what, bool *ok,
                               cd_error *err) {
    *ok = false;
    if (!inside_root(d->root_real, path)) {
        char real[PATH_MAX], why[PATH_MAX + 96];
        if (!realpath(path, real)) snprintf(real, sizeof real, "?");
        snprintf(why, sizeof why, "the %s escapes the dataset (a symbolic link leading out, to %s)", what, real);
        return add_skip(l, path, why, d->strict, err);
    }
    if (!is_file(path)) {
        char why[128];
        snprintf(why, sizeof why, "missing %s (or a symbolic link to nothing)", what);
        return add_skip(l, path, why, d->strict, err);
    }
    *ok = true;
    return CD_OK;
}

/* A case of id with its nch channel files (owned by the case from here) and its label (NULL: none). */
static cd_status nn_add_case(cd_case_list *l, const nn_desc *d, const char *id, const char *split, char **paths,
                             const int64_t *volumes, const char *label, cd_error *err) {
    cd_case *c = add_case(l, err);
    if (!c) {
        for (int k = 0; k < d->nch; k++) free(paths[k]);
        return CD_ERR_NOMEM;
    }
    bool fit = pathf(c->patient_id, sizeof c->patient_id, "%s", id) && pathf(c->key, sizeof c->key, "%s", id);
    snprintf(c->sequence, sizeof c->sequence, "%s", d->sequence);
    snprintf(c->split, sizeof c->split, "%s", split);
    c->nimages = d->nch;
    c->same_grid = true;
    bool mem = true;
    for (int k = 0; k < d->nch; k++) {
        c->image_paths[k] = paths[k];
        c->image_volumes[k] = volumes ? volumes[k] : 0;
        mem = mem && paths[k];
    }
    c->mask_path = label ? strdup(label) : NULL;
    if (!mem || (label && !c->mask_path)) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    if (!fit) return cd_fail(err, CD_ERR_FORMAT, "%s: the case name is too long for a case key", paths[0]);
    cd_status st = nn_check_channels(c, err);
    return st;
}

/* One file of a v2 images folder: <id>_<kkkk><ending>. */
typedef struct nn_file {
    const char *name;
    char id[CD_CASE_ID_MAX];
    int ch;
    bool other_ending; /* .nii beside a dataset of .nii.gz, or the other way round */
} nn_file;

/* The order of the earlier one-channel scan: by "<id>_0000", then channel. */
static int nn_file_cmp(const void *a, const void *b) {
    const nn_file *x = a, *y = b;
    char sx[CD_CASE_ID_MAX + 8], sy[CD_CASE_ID_MAX + 8];
    snprintf(sx, sizeof sx, "%s_0000", x->id);
    snprintf(sy, sizeof sy, "%s_0000", y->id);
    int c = strcmp(sx, sy);
    if (!c) c = (x->ch > y->ch) - (x->ch < y->ch);
    return c ? c : (x->other_ending > y->other_ending) - (x->other_ending < y->other_ending);
}

/* Parses a v2 image name; false when it is no <id>_<kkkk>.nii[.gz]. */
static bool nn_parse_name(const char *name, const char *ending, nn_file *f) {
    char stem[256];
    if (!nifti_stem(name, stem, sizeof stem)) return false;
    size_t len = strlen(stem);
    if (len < 6 || stem[len - 5] != '_') return false;
    for (size_t i = len - 4; i < len; i++)
        if (stem[i] < '0' || stem[i] > '9') return false;
    f->name = name;
    f->ch = atoi(stem + len - 4);
    stem[len - 5] = '\0';
    snprintf(f->id, sizeof f->id, "%s", stem);
    size_t nl = strlen(name), el = strlen(ending);
    f->other_ending = nl < el || strcmp(name + nl - el, ending) != 0;
    return true;
}

/* One case of a v2 folder: files[0..n) share its id (sorted by channel). */
static cd_status nn_v2_case(cd_case_list *l, const nn_desc *d, const char *dir, const char *split, const nn_file *files,
                            size_t n, cd_error *err) {
    const char *id = files[0].id;
    char path[PATH_CAP];
    bool any = false;
    for (size_t i = 0; i < n; i++) any = any || !files[i].other_ending;
    if (!any) { /* only files of the other NIfTI ending: not this dataset's files */
        cd_status st = CD_OK;
        for (size_t i = 0; i < n && st == CD_OK; i++) {
            char why[96];
            pathf(path, sizeof path, "%s/%s", dir, files[i].name);
            snprintf(why, sizeof why, "the file does not end in dataset.json's file_ending '%s'", d->ending);
            st = add_skip(l, path, why, d->strict, err);
        }
        return st;
    }
    /* Sorted by channel, the dataset's ending first: a file of the other ending meets its twin. */
    const char *by_ch[CD_CASE_CHANNELS_MAX] = {0};
    for (size_t i = 0; i < n; i++) {
        const nn_file *f = &files[i];
        if (f->ch >= d->nch)
            return cd_fail(err, CD_ERR_FORMAT, "%s/%s: channel %d of case '%s', but %s names channels 0..%d", dir,
                           f->name, f->ch, id, d->json_path, d->nch - 1);
        if (f->other_ending && by_ch[f->ch]) {
            char a[PATH_CAP];
            pathf(a, sizeof a, "%s/%s", dir, by_ch[f->ch]);
            pathf(path, sizeof path, "%s/%s", dir, f->name);
            return cd_fail(err, CD_ERR_FORMAT, "two cases have the key '%s' (channel %d): %s and %s; remove one", id,
                           f->ch, a, path);
        }
        if (!f->other_ending) by_ch[f->ch] = f->name;
    }
    for (int k = 0; k < d->nch; k++)
        if (!by_ch[k])
            return cd_fail(err, CD_ERR_FORMAT, "case '%s' has no channel %d ('%s'): %s/%s_%04d%s is missing", id, k,
                           d->names[k], dir, id, k, d->ending);
    char *paths[CD_CASE_CHANNELS_MAX] = {0};
    cd_status st = CD_OK;
    bool ok = true;
    for (int k = 0; k < d->nch && st == CD_OK && ok; k++) {
        pathf(path, sizeof path, "%s/%s", dir, by_ch[k]);
        if ((st = nn_check_file(l, d, path, "image", &ok, err)) == CD_OK && ok) paths[k] = strdup(path);
    }
    char lp[PATH_CAP];
    bool labelled = !strcmp(split, "train");
    if (st == CD_OK && ok && labelled) {
        pathf(lp, sizeof lp, "%s/labelsTr/%s%s", d->root, id, d->ending);
        if (!inside_root(d->root_real, lp) || !is_file(lp)) {
            pathf(path, sizeof path, "%s/%s", dir, by_ch[0]);
            st = inside_root(d->root_real, lp)
                     ? add_skip(l, path, "missing label file in labelsTr", d->strict, err)
                     : add_skip(l, path, "the label escapes the dataset (a symbolic link leading out)", d->strict, err);
            ok = false;
        }
    }
    if (st != CD_OK || !ok) {
        for (int k = 0; k < d->nch; k++) free(paths[k]);
        return st;
    }
    return nn_add_case(l, d, id, split, paths, NULL, labelled ? lp : NULL, err);
}

/* nnU-Net v2: <dir>/<case>_<kkkk><ending>, one case per id, every channel present. */
static cd_status nn_scan_v2(cd_case_list *l, const nn_desc *d, const char *folder, const char *split, cd_error *err) {
    char dir[PATH_CAP];
    pathf(dir, sizeof dir, "%s/%s", d->root, folder);
    if (!strcmp(split, "test") && !is_dir(dir)) return CD_OK; /* imagesTs is optional */
    char **names;
    size_t n;
    cd_status st = list_nifti(dir, true, &names, &n, err);
    if (st != CD_OK) return st;
    nn_file *files = calloc(n ? n : 1, sizeof *files);
    size_t nf = 0;
    if (!files) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n && st == CD_OK; i++)
        if (nn_parse_name(names[i], d->ending, &files[nf])) nf++;
    if (st == CD_OK) qsort(files, nf, sizeof *files, nn_file_cmp);
    for (size_t i = 0; i < nf && st == CD_OK;) {
        size_t j = i + 1;
        while (j < nf && !strcmp(files[j].id, files[i].id)) j++;
        st = nn_v2_case(l, d, dir, split, files + i, j - i, err);
        i = j;
    }
    free(files);
    free_names(names, n);
    return st;
}

/* nnU-Net v1 / MSD: a listed image "./imagesTr/<case>.nii.gz" is that file (its nch 3D volumes, the MSD
 * release's 4D files) when it exists, else the per-channel files <case>_<kkkk>.nii.gz (nnU-Net v1). */
static cd_status nn_msd_entry(cd_case_list *l, const nn_desc *d, const char *img, const char *lab, const char *split,
                              size_t index, cd_error *err) {
    char ip[PATH_CAP], lp[PATH_CAP];
    if (!safe_join(d->root, d->root_real, img, ip, sizeof ip) ||
        (lab && !safe_join(d->root, d->root_real, lab, lp, sizeof lp)))
        return add_skip(l, d->json_path,
                        "an entry's path is absolute, escapes the dataset (.. or a symbolic link leading out) or is "
                        "missing",
                        d->strict, err);
    if (lab && !is_file(lp)) return add_skip(l, lp, "file listed in dataset.json is missing", d->strict, err);
    const char *base = strrchr(ip, '/') + 1;
    char stem[CD_CASE_ID_MAX];
    if (!nifti_stem(base, stem, sizeof stem)) snprintf(stem, sizeof stem, "%zu", index);
    char *paths[CD_CASE_CHANNELS_MAX] = {0};
    int64_t vols[CD_CASE_CHANNELS_MAX] = {0};
    if (is_file(ip)) {
        cd_nifti_header h;
        cd_error e;
        if (d->nch > 1 && cd_nifti_read_header(ip, &h, &e) == CD_OK && h.nvolumes != d->nch)
            return cd_fail(err, CD_ERR_FORMAT, "%s: case '%s' holds %lld volume(s), %s names %d channels", ip, stem,
                           (long long)h.nvolumes, d->json_path, d->nch);
        for (int k = 0; k < d->nch; k++) {
            paths[k] = strdup(ip);
            vols[k] = k;
        }
        return nn_add_case(l, d, stem, split, paths, vols, lab ? lp : NULL, err);
    }
    /* <dir>/<stem>_<kkkk><ext>, ext the listed name's own NIfTI ending. */
    size_t dirlen = (size_t)(base - ip), stemlen = strlen(stem);
    const char *ext = base + stemlen;
    char cp[PATH_CAP];
    bool ok = true;
    cd_status st = CD_OK;
    for (int k = 0; k < d->nch && st == CD_OK && ok; k++) {
        if (!pathf(cp, sizeof cp, "%.*s%s_%04d%s", (int)dirlen, ip, stem, k, ext) || !inside_root(d->root_real, cp)) {
            st = add_skip(l, ip, "a channel file escapes the dataset (a symbolic link leading out)", d->strict, err);
            ok = false;
        } else if (!is_file(cp)) {
            if (k == 0)
                st = add_skip(l, ip, "file listed in dataset.json is missing", d->strict, err);
            else
                st = cd_fail(err, CD_ERR_FORMAT, "case '%s' has no channel %d ('%s'): %s is missing", stem, k,
                             d->names[k], cp);
            ok = false;
        } else {
            paths[k] = strdup(cp);
        }
    }
    if (st != CD_OK || !ok) {
        for (int k = 0; k < d->nch; k++) free(paths[k]);
        return st;
    }
    return nn_add_case(l, d, stem, split, paths, NULL, lab ? lp : NULL, err);
}

static cd_status nn_read_msd(cd_case_list *l, const nn_desc *d, json_t *ds, cd_error *err) {
    cd_status st = CD_OK;
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(ds, "training"), i, item) {
        const char *img = json_string_value(json_object_get(item, "image"));
        const char *lab = json_string_value(json_object_get(item, "label"));
        if (!lab) lab = ""; /* refused by safe_join, as a missing label */
        if ((st = nn_msd_entry(l, d, img, lab, "train", i, err)) != CD_OK) return st;
    }
    json_array_foreach(json_object_get(ds, "test"), i, item) {
        const char *img =
            json_is_string(item) ? json_string_value(item) : json_string_value(json_object_get(item, "image"));
        if ((st = nn_msd_entry(l, d, img, NULL, "test", i, err)) != CD_OK) return st;
    }
    return st;
}

/* The fold's validation cases get split "valid"; training cases the splits file leaves out are skipped. */
static cd_status nn_apply_fold(cd_case_list *l, const nn_desc *d, int fold, const char *splits_file, cd_error *err) {
    char dflt[PATH_CAP];
    if (!splits_file && pathf(dflt, sizeof dflt, "%s/splits_final.json", d->root) && is_file(dflt)) splits_file = dflt;
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++) n += !strcmp(l->cases[i].split, "train");
    const char **ids = malloc((n ? n : 1) * sizeof *ids);
    size_t *where = malloc((n ? n : 1) * sizeof *where);
    uint8_t *role = malloc(n ? n : 1);
    cd_status st = ids && where && role ? CD_OK : cd_fail(err, CD_ERR_NOMEM, "out of memory");
    for (size_t i = 0, k = 0; i < l->n && st == CD_OK; i++)
        if (!strcmp(l->cases[i].split, "train")) {
            ids[k] = l->cases[i].patient_id;
            where[k++] = i;
        }
    if (st == CD_OK) st = cd_nnunet_split(ids, n, fold, splits_file, role, err);
    for (size_t k = 0; k < n && st == CD_OK; k++) {
        cd_case *c = &l->cases[where[k]];
        if (role[k] == CD_FOLD_VAL) snprintf(c->split, sizeof c->split, "valid");
        if (role[k] != CD_FOLD_NONE) continue;
        char why[PATH_CAP + 64];
        snprintf(why, sizeof why, "not in fold %d of %s (neither train nor val)", fold, splits_file);
        if ((st = add_skip(l, c->image_paths[0], why, d->strict, err)) != CD_OK) break;
        snprintf(c->split, sizeof c->split, "-"); /* removed below */
    }
    /* Drop the left-out cases, keeping the order. */
    size_t o = 0;
    for (size_t i = 0; i < l->n && st == CD_OK; i++) {
        if (strcmp(l->cases[i].split, "-")) {
            l->cases[o++] = l->cases[i];
            continue;
        }
        for (int k = 0; k < CD_CASE_CHANNELS_MAX; k++) free(l->cases[i].image_paths[k]);
        free(l->cases[i].mask_path);
    }
    if (st == CD_OK) {
        l->n = o;
        l->fold = fold;
        l->split_source = splits_file ? strdup(splits_file) : NULL;
        if (splits_file && !l->split_source) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    free(ids);
    free(where);
    free(role);
    return st;
}

cd_status cd_layout_nnunet(const char *root, bool strict, int fold, const char *splits_file, cd_case_list *out,
                           cd_error *err) {
    memset(out, 0, sizeof *out);
    out->fold = -1;
    char path[PATH_CAP];
    pathf(path, sizeof path, "%s/dataset.json", root);
    nn_desc d = {.root = root, .json_path = path, .strict = strict};
    if (!realpath(root, d.root_real)) return cd_fail(err, CD_ERR_IO, "%s: cannot resolve: %s", root, strerror(errno));
    json_error_t jerr;
    char *text;
    size_t text_len;
    cd_status st = cd_read_text_file_len(path, 0, "dataset description", &text, &text_len, err);
    if (st != CD_OK) return st;
    json_t *ds = json_loadb(text, text_len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!ds) return cd_fail(err, CD_ERR_FORMAT, "%s: invalid JSON at line %d: %s", path, jerr.line, jerr.text);
    st = nn_read_desc(ds, &d, err);
    json_t *training = json_object_get(ds, "training");
    if (st == CD_OK && json_is_array(training) && json_array_size(training) > 0) {
        st = nn_read_msd(out, &d, ds, err); /* MSD / nnU-Net v1: explicit entries */
    } else if (st == CD_OK) {
        st = nn_scan_v2(out, &d, "imagesTr", "train", err);
        if (st == CD_OK) st = nn_scan_v2(out, &d, "imagesTs", "test", err);
        if (st == CD_OK) st = skip_labels_without_image(out, root, d.ending, strict, err);
    }
    json_decref(ds);
    if (st == CD_OK) st = check_unique_keys(out, err);
    size_t ntrain = 0;
    for (size_t i = 0; i < out->n; i++) ntrain += !strcmp(out->cases[i].split, "train");
    if (st == CD_OK && ntrain == 0)
        st = out->nskipped
                 ? cd_fail(err, CD_ERR_FORMAT, "%s: no training cases found (%zu file(s) skipped; the first: %s: %s)",
                           root, out->nskipped, out->skipped[0].path, out->skipped[0].reason)
                 : cd_fail(err, CD_ERR_FORMAT, "%s: no training cases found", root);
    if (st == CD_OK && (fold >= 0 || splits_file)) {
        if (fold < 0)
            st = cd_fail(err, CD_ERR_ARG, "%s: a splits file needs a fold", splits_file);
        else
            st = nn_apply_fold(out, &d, fold, splits_file, err);
    }
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
    out.fold = l->fold;
    out.split_source = l->split_source;
    l->split_source = NULL;
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
            st = add_skip(&out, x->image_paths[0], why, strict, err);
            continue;
        }
        if (is_b) continue; /* the pair is made from its first sequence */
        if (partner->label != x->label) {
            st = add_skip(&out, x->image_paths[0], "the two sequences of this patient have different labels", strict,
                          err);
            continue;
        }
        char seq[CD_CASE_SEQUENCE_MAX], key[CD_CASE_KEY_MAX];
        if (!pathf(seq, sizeof seq, "%s+%s", a, b) ||
            !pathf(key, sizeof key, "%s%s+%s/%s", strncmp(x->key, "healthy-", 8) ? "" : "healthy-", a, b,
                   x->patient_id)) {
            st =
                add_skip(&out, x->image_paths[0], "the paired sequence names are too long for a case key", strict, err);
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
        c->nimages = 2;
        c->image_paths[0] = x->image_paths[0];
        c->mask_path = x->mask_path;
        c->image_paths[1] = partner->image_paths[0];
        x->image_paths[0] = x->mask_path = NULL;
        partner->image_paths[0] = NULL;
    }
    cd_case_list_free(l);
    if (st != CD_OK) {
        cd_case_list_free(&out);
        return st;
    }
    *l = out;
    return CD_OK;
}
