/* cd_nnunet_verify: nnU-Net's verify_dataset_integrity rules, every failure listed (cirrdata/nnunet.h). */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cirrdata/nnunet.h"
#include "convert/nnunet_check.h"
#include "io/file.h"

#define PATH_CAP 4096
#define MAX_CHANNEL 10000 /* four digits */

typedef struct channel_file {
    int index;
    char *path;
} channel_file;

typedef struct vcase {
    char id[256];
    channel_file *ch;
    size_t nch, capch;
    char *label; /* NULL: none */
    bool test;
} vcase;

typedef struct vrun {
    const char *dir;
    cd_nnunet_report *r;
    size_t capf;
    bool oom;
    const char *ending;
    int nchannels; /* len(channel_names); 0: unknown */
    bool labels_ok, nifti;
    cd_nn_labels labels;
    vcase *cases;
    size_t ncases, capcases;
    cd_progress_fn progress;
    void *user;
    uint64_t bytes;
} vrun;

static void add(vrun *v, bool warning, const char *rule, const char *case_id, const char *file, const char *fmt, ...)
    CD_PRINTF(6, 7);
static void add(vrun *v, bool warning, const char *rule, const char *case_id, const char *file, const char *fmt, ...) {
    cd_nnunet_report *r = v->r;
    if (r->nfindings == v->capf) {
        size_t cap = v->capf ? 2 * v->capf : 16;
        cd_nnunet_finding *f = realloc(r->findings, cap * sizeof *f);
        if (!f) {
            v->oom = true;
            return;
        }
        r->findings = f;
        v->capf = cap;
    }
    cd_nnunet_finding *f = &r->findings[r->nfindings++];
    memset(f, 0, sizeof *f);
    f->warning = warning;
    snprintf(f->rule, sizeof f->rule, "%s", rule);
    snprintf(f->case_id, sizeof f->case_id, "%s", case_id ? case_id : "");
    snprintf(f->file, sizeof f->file, "%s", file ? file : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof f->message, fmt, ap);
    va_end(ap);
    if (warning)
        r->warnings++;
    else
        r->failures++;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static vcase *find_case(vrun *v, const char *id, bool test, bool create) {
    for (size_t i = v->ncases; i-- > 0;)
        if (v->cases[i].test == test && !strcmp(v->cases[i].id, id)) return &v->cases[i];
    if (!create) return NULL;
    if (v->ncases == v->capcases) {
        size_t cap = v->capcases ? 2 * v->capcases : 64;
        vcase *c = realloc(v->cases, cap * sizeof *c);
        if (!c) {
            v->oom = true;
            return NULL;
        }
        v->cases = c;
        v->capcases = cap;
    }
    vcase *c = &v->cases[v->ncases++];
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "%s", id);
    c->test = test;
    return c;
}

static void add_channel(vrun *v, vcase *c, int index, const char *path) {
    if (c->nch == c->capch) {
        size_t cap = c->capch ? 2 * c->capch : 4;
        channel_file *f = realloc(c->ch, cap * sizeof *f);
        if (!f) {
            v->oom = true;
            return;
        }
        c->ch = f;
        c->capch = cap;
    }
    c->ch[c->nch].index = index;
    c->ch[c->nch].path = strdup(path);
    if (!c->ch[c->nch].path) v->oom = true;
    c->nch++;
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The regular files of dir (symbolic links followed, as nnU-Net's isfile), sorted; NULL-terminated. */
static char **list_files(const char *dir, size_t *n) {
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    size_t cap = 16;
    char **names = malloc(cap * sizeof *names);
    struct dirent *e;
    char path[PATH_CAP];
    while (names && (e = readdir(d))) {
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path || !is_file(path)) continue;
        if (*n + 1 == cap) {
            char **m = realloc(names, 2 * cap * sizeof *m);
            if (!m) break;
            names = m;
            cap *= 2;
        }
        names[(*n)++] = strdup(e->d_name);
    }
    closedir(d);
    if (!names) return NULL;
    names[*n] = NULL;
    qsort(names, *n, sizeof *names, name_cmp);
    return names;
}

static void free_list(char **names, size_t n) {
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Another NIfTI spelling than file_ending: nnU-Net does not see the file. */
static bool other_nifti(const char *name, const char *ending) {
    return (ends_with(name, ".nii") || ends_with(name, ".nii.gz")) && !ends_with(name, ending);
}

/* imagesTr / imagesTs: <case>_<XXXX><ending> files into cases. */
static void scan_images(vrun *v, const char *sub, bool test) {
    char dir[PATH_CAP], path[PATH_CAP + 256];
    snprintf(dir, sizeof dir, "%s/%s", v->dir, sub);
    size_t n;
    char **names = list_files(dir, &n);
    const size_t elen = strlen(v->ending);
    for (size_t i = 0; names && i < n; i++) {
        const char *nm = names[i];
        snprintf(path, sizeof path, "%s/%s", dir, nm);
        if (!ends_with(nm, v->ending)) {
            if (other_nifti(nm, v->ending))
                add(v, true, "file_ending", "", path, "%s/%s does not end in file_ending '%s': nnU-Net ignores it", sub,
                    nm, v->ending);
            continue;
        }
        size_t stem = strlen(nm) - elen;
        if (nm[0] == '.') {
            add(v, false, "stray_file", "", path,
                "%s/%s is a hidden file: nnU-Net lists every file ending in '%s' as a case image", sub, nm, v->ending);
            continue;
        }
        bool digits = stem >= 6 && nm[stem - 5] == '_';
        for (size_t k = stem - 4; digits && k < stem; k++) digits = nm[k] >= '0' && nm[k] <= '9';
        if (!digits) {
            add(v, false, "stray_file", "", path,
                "%s/%s is not named <case>_<XXXX>%s: nnU-Net would take it for a case image", sub, nm, v->ending);
            continue;
        }
        char id[256];
        if (stem - 5 >= sizeof id) {
            add(v, false, "stray_file", "", path, "%s/%s: the case identifier is longer than 255 bytes", sub, nm);
            continue;
        }
        memcpy(id, nm, stem - 5);
        id[stem - 5] = '\0';
        vcase *c = find_case(v, id, test, true);
        if (c) add_channel(v, c, atoi(nm + stem - 4), path);
    }
    free_list(names, n);
}

static int case_cmp(const void *a, const void *b) {
    const vcase *x = a, *y = b;
    if (x->test != y->test) return x->test ? 1 : -1;
    return strcmp(x->id, y->id);
}

static int channel_cmp(const void *a, const void *b) {
    return ((const channel_file *)a)->index - ((const channel_file *)b)->index;
}

/* labelsTr / labelsTs: each case's label, and labels without a case (warnings). */
static void scan_labels(vrun *v, const char *sub, bool test, bool required) {
    char dir[PATH_CAP], path[PATH_CAP + 256];
    snprintf(dir, sizeof dir, "%s/%s", v->dir, sub);
    for (size_t i = 0; i < v->ncases; i++) {
        vcase *c = &v->cases[i];
        if (c->test != test) continue;
        snprintf(path, sizeof path, "%s/%s%s", dir, c->id, v->ending);
        if (is_file(path)) {
            if (!(c->label = strdup(path))) v->oom = true;
        } else if (required) {
            add(v, false, "missing_label", c->id, path, "case %s has no label %s/%s%s", c->id, sub, c->id, v->ending);
        }
    }
    size_t n;
    char **names = list_files(dir, &n);
    const size_t elen = strlen(v->ending);
    for (size_t i = 0; names && i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (!ends_with(names[i], v->ending)) {
            if (other_nifti(names[i], v->ending))
                add(v, true, "file_ending", "", path, "%s/%s does not end in file_ending '%s': nnU-Net ignores it", sub,
                    names[i], v->ending);
            continue;
        }
        char id[256];
        snprintf(id, sizeof id, "%.*s", (int)(strlen(names[i]) - elen), names[i]);
        if (!find_case(v, id, test, false))
            add(v, true, "stray_file", id, path, "%s/%s is a label without an image in %s", sub, names[i],
                test ? "imagesTs" : "imagesTr");
    }
    free_list(names, n);
}

/* Reads one file for the checks: NULL (a finding made) when it cannot be used. */
static cd_volume *read_file(vrun *v, const vcase *c, const char *path, cd_nifti_header *h) {
    cd_volume *vol = NULL;
    cd_error err;
    if (cd_nifti_read(path, NULL, &vol, h, &err) != CD_OK) {
        add(v, false, "unreadable", c->id, path, "%s", err.message);
        return NULL;
    }
    v->bytes += cd_volume_nbytes(vol);
    if (h->nvolumes > 1) {
        add(v, false, "not_3d", c->id, path, "%s holds %lld volumes (a 4D file); nnU-Net expects one per channel file",
            path, (long long)h->nvolumes);
        cd_volume_destroy(vol);
        return NULL;
    }
    return vol;
}

static void geometry_findings(vrun *v, const vcase *c, const cd_nn_geometry *a, const char *pa, const cd_nn_geometry *b,
                              const char *pb) {
    unsigned d = cd_nn_geometry_diff(a, b);
    static const unsigned bits[] = {CD_NN_DIFF_SHAPE, CD_NN_DIFF_SPACING, CD_NN_DIFF_ORIGIN, CD_NN_DIFF_DIRECTION};
    for (size_t i = 0; i < sizeof bits / sizeof *bits; i++) {
        if (!(d & bits[i])) continue;
        char msg[512];
        const char *rule = cd_nn_geometry_message(bits[i], a, pa, b, pb, msg, sizeof msg);
        add(v, bits[i] > CD_NN_DIFF_SPACING, rule, c->id, pb, "case %s: %s", c->id, msg);
    }
}

static void check_case(vrun *v, vcase *c) {
    qsort(c->ch, c->nch, sizeof *c->ch, channel_cmp);
    const char *images = c->test ? "imagesTs" : "imagesTr";
    for (int k = 0; k < v->nchannels; k++) {
        bool have = false;
        for (size_t i = 0; i < c->nch && !have; i++) have = c->ch[i].index == k;
        if (!have)
            add(v, false, "missing_channel", c->id, "", "case %s has no channel %04d (%s/%s_%04d%s)", c->id, k, images,
                c->id, k, v->ending);
    }
    for (size_t i = 0; v->nchannels && i < c->nch; i++)
        if (c->ch[i].index >= v->nchannels)
            add(v, false, "extra_channel", c->id, c->ch[i].path,
                "case %s has channel %04d but channel_names declares %d channel%s (0000..%04d)", c->id, c->ch[i].index,
                v->nchannels, v->nchannels == 1 ? "" : "s", v->nchannels - 1);
    if (!v->nifti) return;
    cd_nn_geometry first;
    const char *first_path = NULL;
    for (size_t i = 0; i < c->nch; i++) {
        cd_nifti_header h;
        cd_volume *vol = read_file(v, c, c->ch[i].path, &h);
        if (!vol) continue;
        uint64_t nan = cd_nn_count_nan(vol);
        if (nan)
            add(v, false, "nan", c->id, c->ch[i].path, "case %s: %llu NaN voxels in image %s", c->id,
                (unsigned long long)nan, c->ch[i].path);
        cd_volume_destroy(vol);
        cd_nn_geometry g;
        cd_nn_geometry_of(&h, &g);
        if (!first_path) {
            first = g;
            first_path = c->ch[i].path;
        } else {
            geometry_findings(v, c, &first, first_path, &g, c->ch[i].path);
        }
    }
    if (!c->label) return;
    cd_nifti_header h;
    cd_volume *seg = read_file(v, c, c->label, &h);
    if (!seg) return;
    uint64_t nan = cd_nn_count_nan(seg);
    if (nan)
        add(v, false, "nan", c->id, c->label, "case %s: %llu NaN voxels in label %s", c->id, (unsigned long long)nan,
            c->label);
    char found[256], want[256];
    if (v->labels_ok && !cd_nn_label_values_ok(seg, &v->labels, found, sizeof found)) {
        cd_nn_labels_format(&v->labels, want, sizeof want);
        add(v, false, "label_values", c->id, c->label, "case %s: label %s holds values not declared in labels %s: %s",
            c->id, c->label, want, found);
    }
    cd_volume_destroy(seg);
    cd_nn_geometry g;
    cd_nn_geometry_of(&h, &g);
    if (first_path) geometry_findings(v, c, &first, first_path, &g, c->label);
}

/* dataset.json "dataset": explicit {"images": [...], "label": ...} per case, paths relative to dir. */
static void explicit_cases(vrun *v, json_t *dataset) {
    const char *id;
    json_t *e;
    char path[PATH_CAP + 256];
    json_object_foreach(dataset, id, e) {
        vcase *c = find_case(v, id, false, true);
        if (!c) return;
        json_t *imgs = json_object_get(e, "images");
        const char *lab = json_string_value(json_object_get(e, "label"));
        size_t i;
        json_t *im;
        json_array_foreach(imgs, i, im) {
            const char *p = json_string_value(im);
            if (!p) continue;
            snprintf(path, sizeof path, "%s%s%s", p[0] == '/' ? "" : v->dir, p[0] == '/' ? "" : "/", p);
            if (is_file(path))
                add_channel(v, c, (int)i, path);
            else
                add(v, false, "missing_channel", id, path, "case %s: image %s is missing", id, path);
        }
        if (!lab) {
            add(v, false, "missing_label", id, "", "case %s has no \"label\" in dataset.json's \"dataset\"", id);
            continue;
        }
        snprintf(path, sizeof path, "%s%s%s", lab[0] == '/' ? "" : v->dir, lab[0] == '/' ? "" : "/", lab);
        if (is_file(path)) {
            if (!(c->label = strdup(path))) v->oom = true;
        } else {
            add(v, false, "missing_label", id, path, "case %s: label %s is missing", id, path);
        }
    }
}

/* dataset.json: the required keys and their types; false when nothing else can be checked. */
static bool read_dataset_json(vrun *v, json_t **out) {
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/dataset.json", v->dir);
    *out = NULL;
    if (!is_file(path)) {
        add(v, false, "dataset_json", "", path, "%s: there needs to be a dataset.json", v->dir);
        return false;
    }
    char *text;
    size_t len;
    cd_error err;
    if (cd_read_text_file_len(path, 0, "dataset description", &text, &len, &err) != CD_OK) {
        add(v, false, "dataset_json", "", path, "%s", err.message);
        return false;
    }
    json_error_t je;
    json_t *ds = json_loadb(text, len, 0, &je);
    free(text);
    if (!json_is_object(ds)) {
        add(v, false, "dataset_json", "", path, "%s: not a JSON object (line %d: %s)", path, je.line,
            ds ? "not an object" : je.text);
        json_decref(ds);
        return false;
    }
    static const char *const required[] = {"labels", "channel_names", "numTraining", "file_ending"};
    char missing[128] = "";
    for (size_t i = 0; i < 4; i++)
        if (!json_object_get(ds, required[i]))
            snprintf(missing + strlen(missing), sizeof missing - strlen(missing), "%s%s", *missing ? ", " : "",
                     required[i]);
    if (*missing)
        add(v, false, "dataset_json", "", path,
            "%s: required keys missing: %s (required: labels, channel_names, numTraining, file_ending)", path, missing);
    json_t *ch = json_object_get(ds, "channel_names");
    if (ch && (!json_is_object(ch) || !json_object_size(ch)))
        add(v, false, "dataset_json", "", path, "%s: channel_names is not a non-empty object", path);
    else if (ch)
        v->nchannels = json_object_size(ch) < MAX_CHANNEL ? (int)json_object_size(ch) : MAX_CHANNEL;
    json_t *nt = json_object_get(ds, "numTraining");
    if (nt && (!json_is_integer(nt) || json_integer_value(nt) < 0))
        add(v, false, "dataset_json", "", path, "%s: numTraining is not a non-negative integer", path);
    json_t *fe = json_object_get(ds, "file_ending");
    if (fe && (!json_is_string(fe) || json_string_value(fe)[0] != '.' || strchr(json_string_value(fe), '/')))
        add(v, false, "dataset_json", "", path, "%s: file_ending is not a file name ending such as \".nii.gz\"", path);
    json_t *labels = json_object_get(ds, "labels");
    if (labels) {
        char why[256];
        v->labels_ok =
            cd_nn_labels_parse(labels, json_object_get(ds, "regions_class_order"), &v->labels, why, sizeof why);
        if (!v->labels_ok) add(v, false, "labels", "", path, "%s: labels: %s", path, why);
    }
    *out = ds;
    if (!json_is_string(fe) || json_string_value(fe)[0] != '.') return false;
    v->ending = json_string_value(fe);
    v->nifti = !strcmp(v->ending, ".nii.gz") || !strcmp(v->ending, ".nii");
    if (!v->nifti)
        add(v, false, "file_ending", "", path,
            "%s: file_ending '%s': cirrdata verify-raw checks the contents of .nii.gz and .nii files only (file names "
            "and counts were checked)",
            path, v->ending);
    return true;
}

cd_status cd_nnunet_verify(const char *dir, cd_progress_fn progress, void *user, cd_nnunet_report **report,
                           cd_error *err) {
    *report = NULL;
    if (!dir) return cd_fail(err, CD_ERR_ARG, "cd_nnunet_verify: no folder");
    vrun v = {.dir = dir, .progress = progress, .user = user};
    v.r = calloc(1, sizeof *v.r);
    if (!v.r) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    json_t *ds = NULL;
    char path[PATH_CAP];
    if (!is_dir(dir)) {
        add(&v, false, "folders", "", dir, "%s: not a folder", dir);
    } else if (read_dataset_json(&v, &ds)) {
        json_t *explicit = json_object_get(ds, "dataset");
        if (json_is_object(explicit)) {
            explicit_cases(&v, explicit);
        } else {
            static const char *const need[] = {"imagesTr", "labelsTr"};
            for (int i = 0; i < 2; i++) {
                snprintf(path, sizeof path, "%s/%s", dir, need[i]);
                if (!is_dir(path))
                    add(&v, false, "folders", "", path, "%s: there needs to be a %s folder", dir, need[i]);
            }
            scan_images(&v, "imagesTr", false);
            scan_images(&v, "imagesTs", true);
            qsort(v.cases, v.ncases, sizeof *v.cases, case_cmp);
            scan_labels(&v, "labelsTr", false, true);
            snprintf(path, sizeof path, "%s/labelsTs", dir);
            if (is_dir(path)) scan_labels(&v, "labelsTs", true, false);
        }
        for (size_t i = 0; i < v.ncases; i++) {
            if (v.cases[i].test)
                v.r->test_cases++;
            else
                v.r->training_cases++;
        }
        json_t *nt = json_object_get(ds, "numTraining");
        if (json_is_integer(nt) && (uint64_t)json_integer_value(nt) != v.r->training_cases)
            add(&v, false, "num_training", "", "", "numTraining is %lld but %s holds %llu training case%s",
                (long long)json_integer_value(nt), json_is_object(explicit) ? "\"dataset\"" : "imagesTr",
                (unsigned long long)v.r->training_cases, v.r->training_cases == 1 ? "" : "s");
        for (size_t i = 0; i < v.ncases && !v.oom; i++) {
            check_case(&v, &v.cases[i]);
            if (progress) progress(user, i + 1, v.ncases, v.bytes);
        }
    }
    for (size_t i = 0; i < v.ncases; i++) {
        for (size_t k = 0; k < v.cases[i].nch; k++) free(v.cases[i].ch[k].path);
        free(v.cases[i].ch);
        free(v.cases[i].label);
    }
    free(v.cases);
    cd_nn_labels_free(&v.labels);
    json_decref(ds);
    if (v.oom) {
        cd_nnunet_report_free(v.r);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    *report = v.r;
    return CD_OK;
}

void cd_nnunet_report_free(cd_nnunet_report *report) {
    if (!report) return;
    free(report->findings);
    free(report);
}
