/* Reading converted datasets: manifest validation, lazy shard opening, verification, merging parts. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cirrdata/dataset.h"
#include "cirrdata/version.h"
#include "dataset/manifest.h"
#include "core/fs.h"
#include "io/dir_lock.h"
#include "io/file.h"

#define PATH_CAP 4200

typedef struct record_loc {
    uint32_t shard;
    uint64_t index;
    uint64_t fields; /* entry_fields() of the manifest entry, checked against the record's own metadata */
} record_loc;

struct cd_dataset {
    char *dir;
    char *manifest_text;
    size_t nshards;
    char **shard_paths; /* absolute (dir-joined) */
    uint64_t *shard_records;
    cd_shard **shards; /* opened on first use */
    uint64_t nrecords;
    record_loc *records;
    pthread_mutex_t mu;
};

/* A shard path from a manifest: relative, '/'-separated, no '..' component, no odd characters. */
static bool safe_relative(const char *p) {
    if (!p || !*p || p[0] == '/' || strlen(p) > 255) return false;
    for (const char *c = p; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' ||
              *c == '_' || *c == '-' || *c == '/'))
            return false;
    const char *s = p;
    while (*s) {
        const char *slash = strchr(s, '/');
        size_t len = slash ? (size_t)(slash - s) : strlen(s);
        if (len == 0 || (len == 2 && s[0] == '.' && s[1] == '.') || (len == 1 && s[0] == '.')) return false;
        s += len;
        if (*s == '/') s++;
    }
    return true;
}

/* FNV-1a over the fields that the manifest entry repeats from the record's metadata (key, patient_id,
 * sequence, split, label). Comparing these when a record is read catches an entry that points at another
 * record (a manifest whose checksum was recomputed after an edit, or a shard swapped for another). */
static uint64_t entry_fields(json_t *o) {
    static const char *const keys[] = {"key", "patient_id", "sequence", "split", "label"};
    uint64_t h = 1469598103934665603ULL;
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        json_t *v = json_object_get(o, keys[k]);
        char buf[32];
        const char *s = buf;
        if (json_is_string(v))
            s = json_string_value(v);
        else if (json_is_integer(v))
            snprintf(buf, sizeof buf, "#%lld", (long long)json_integer_value(v));
        else
            snprintf(buf, sizeof buf, "?%d", v ? (int)json_typeof(v) : -1);
        for (const unsigned char *c = (const unsigned char *)s;; c++) {
            h = (h ^ *c) * 1099511628211ULL;
            if (!*c) break;
        }
    }
    return h;
}

static int by_location(const void *a, const void *b) {
    const record_loc *x = *(record_loc *const *)a, *y = *(record_loc *const *)b;
    if (x->shard != y->shard) return x->shard < y->shard ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Every record of every shard is referenced by exactly one manifest entry: no entry twice (a record read
 * twice per epoch), none missing (a record never read, e.g. "records": []). Entries are already known to
 * be in range, so no duplicate plus equal counts means a one-to-one match. */
static cd_status check_references(const cd_dataset *ds, const char *path, cd_error *err) {
    uint64_t total = 0;
    for (size_t s = 0; s < ds->nshards; s++) {
        if (ds->shard_records[s] > UINT64_MAX - total)
            return cd_fail(err, CD_ERR_FORMAT, "%s: shard record counts overflow", path);
        total += ds->shard_records[s];
    }
    if (ds->nrecords > 1) {
        const record_loc **order = malloc(ds->nrecords * sizeof *order);
        if (!order) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
        for (uint64_t i = 0; i < ds->nrecords; i++) order[i] = &ds->records[i];
        qsort(order, ds->nrecords, sizeof *order, by_location);
        for (uint64_t i = 1; i < ds->nrecords; i++)
            if (!by_location(&order[i - 1], &order[i])) {
                uint64_t a = (uint64_t)(order[i - 1] - ds->records), b = (uint64_t)(order[i] - ds->records);
                cd_status st =
                    cd_fail(err, CD_ERR_FORMAT, "%s: records %llu and %llu both refer to record %llu of shard %u (%s)",
                            path, (unsigned long long)(a < b ? a : b), (unsigned long long)(a < b ? b : a),
                            (unsigned long long)order[i]->index, order[i]->shard, ds->shard_paths[order[i]->shard]);
                free(order);
                return st;
            }
        free(order);
    }
    if (total != ds->nrecords)
        return cd_fail(
            err, CD_ERR_FORMAT,
            "%s: its shards hold %llu records but it lists %llu: some records are not referenced by any entry", path,
            (unsigned long long)total, (unsigned long long)ds->nrecords);
    return CD_OK;
}

void cd_dataset_close(cd_dataset *ds) {
    if (!ds) return;
    for (size_t i = 0; i < ds->nshards; i++) {
        if (ds->shards) cd_shard_close(ds->shards[i]);
        if (ds->shard_paths) free(ds->shard_paths[i]);
    }
    free(ds->shards);
    free(ds->shard_paths);
    free(ds->shard_records);
    free(ds->records);
    free(ds->manifest_text);
    free(ds->dir);
    pthread_mutex_destroy(&ds->mu);
    free(ds);
}

cd_status cd_dataset_open(const char *dir, cd_dataset **out, cd_error *err) {
    if (!dir || !out) return cd_fail(err, CD_ERR_ARG, "cd_dataset_open: NULL argument");
    *out = NULL;
    if (strlen(dir) > 3800) return cd_fail(err, CD_ERR_ARG, "%.100s...: path too long", dir);
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    cd_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&ds->mu, NULL);
    ds->dir = strdup(dir);
    cd_status st = CD_OK;
    json_t *m = NULL;
    /* Its own checksum first: no byte of a damaged manifest is acted on. */
    size_t manifest_len;
    if ((st = cd_manifest_read(path, &ds->manifest_text, &manifest_len, err)) != CD_OK) goto fail;
    json_error_t jerr;
    m = json_loadb(ds->manifest_text, manifest_len, JSON_REJECT_DUPLICATES, &jerr);
#define BAD(...)                                                                                                       \
    do {                                                                                                               \
        st = cd_fail(err, CD_ERR_FORMAT, __VA_ARGS__);                                                                 \
        goto fail;                                                                                                     \
    } while (0)
    if (!m) BAD("%s: invalid JSON at line %d: %s", path, jerr.line, jerr.text);
    if (!json_is_object(m) ||
        strcmp(json_string_value(json_object_get(m, "format")) ? json_string_value(json_object_get(m, "format")) : "",
               "cirrdata-dataset"))
        BAD("%s: not a cirrdata dataset manifest", path);
    if (json_integer_value(json_object_get(m, "format_version")) != CD_MANIFEST_FORMAT_VERSION)
        BAD("%s: format_version %lld is not supported (this library reads %d)", path,
            (long long)json_integer_value(json_object_get(m, "format_version")), CD_MANIFEST_FORMAT_VERSION);
    json_t *shards = json_object_get(m, "shards"), *records = json_object_get(m, "records");
    if (!json_is_array(shards) || !json_is_array(records)) BAD("%s: 'shards' and 'records' must be arrays", path);
    ds->nshards = json_array_size(shards);
    ds->shard_paths = calloc(ds->nshards ? ds->nshards : 1, sizeof(char *));
    ds->shard_records = calloc(ds->nshards ? ds->nshards : 1, sizeof(uint64_t));
    ds->shards = calloc(ds->nshards ? ds->nshards : 1, sizeof(cd_shard *));
    if (!ds->shard_paths || !ds->shard_records || !ds->shards) {
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
        goto fail;
    }
    char root_real[PATH_MAX], real[PATH_MAX];
    if (!realpath(dir, root_real)) {
        st = cd_fail(err, CD_ERR_IO, "%s: cannot resolve: %s", dir, strerror(errno));
        goto fail;
    }
    size_t i;
    json_t *e;
    json_array_foreach(shards, i, e) {
        const char *rel = json_string_value(json_object_get(e, "path"));
        if (!safe_relative(rel))
            BAD("%s: shard %zu: path '%s' is not a plain relative path inside the dataset", path, i,
                rel ? rel : "(missing)");
        json_t *nr = json_object_get(e, "records");
        if (!json_is_integer(nr) || json_integer_value(nr) < 0) BAD("%s: shard %zu: bad 'records'", path, i);
        ds->shard_records[i] = (uint64_t)json_integer_value(nr);
        char full[PATH_CAP];
        snprintf(full, sizeof full, "%s/%.255s", dir, rel);
        /* A symbolic link (the shard or shards/) leading out of the dataset is refused; a missing shard is
         * reported when it is read. */
        size_t rn = strlen(root_real);
        if (realpath(full, real) && rn > 1 && (strncmp(real, root_real, rn) || real[rn] != '/'))
            BAD("%s: shard %zu: '%s' resolves to %s, outside the dataset (a symbolic link leading out)", path, i, rel,
                real);
        ds->shard_paths[i] = strdup(full);
    }
    ds->nrecords = json_array_size(records);
    ds->records = calloc(ds->nrecords ? ds->nrecords : 1, sizeof *ds->records);
    if (!ds->records) {
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
        goto fail;
    }
    json_array_foreach(records, i, e) {
        json_t *sh = json_object_get(e, "shard"), *ix = json_object_get(e, "index");
        if (!json_is_integer(sh) || !json_is_integer(ix) || json_integer_value(sh) < 0 ||
            (size_t)json_integer_value(sh) >= ds->nshards || json_integer_value(ix) < 0 ||
            (uint64_t)json_integer_value(ix) >= ds->shard_records[json_integer_value(sh)])
            BAD("%s: record %zu: 'shard'/'index' out of range", path, i);
        ds->records[i].shard = (uint32_t)json_integer_value(sh);
        ds->records[i].index = (uint64_t)json_integer_value(ix);
        ds->records[i].fields = entry_fields(e);
    }
    if ((st = check_references(ds, path, err)) != CD_OK) goto fail;
#undef BAD
    json_decref(m);
    *out = ds;
    return CD_OK;
fail:
    json_decref(m);
    cd_dataset_close(ds);
    return st;
}

uint64_t cd_dataset_record_count(const cd_dataset *ds) { return ds->nrecords; }
const char *cd_dataset_manifest(const cd_dataset *ds) { return ds->manifest_text; }

cd_status cd_dataset_read_record(cd_dataset *ds, uint64_t i, cd_record **rec, const cd_shard **shard, cd_error *err) {
    if (!ds || !rec) return cd_fail(err, CD_ERR_ARG, "cd_dataset_read_record: NULL argument");
    if (i >= ds->nrecords)
        return cd_fail(err, CD_ERR_ARG, "%s: record %llu does not exist (the dataset has %llu)", ds->dir,
                       (unsigned long long)i, (unsigned long long)ds->nrecords);
    const record_loc *l = &ds->records[i];
    pthread_mutex_lock(&ds->mu);
    cd_status st = CD_OK;
    if (!ds->shards[l->shard]) {
        st = cd_shard_open(ds->shard_paths[l->shard], &ds->shards[l->shard], err);
        if (st == CD_OK && cd_shard_record_count(ds->shards[l->shard]) != ds->shard_records[l->shard]) {
            st = cd_fail(err, CD_ERR_CORRUPT, "%s: holds %llu records, the manifest says %llu",
                         ds->shard_paths[l->shard], (unsigned long long)cd_shard_record_count(ds->shards[l->shard]),
                         (unsigned long long)ds->shard_records[l->shard]);
            cd_shard_close(ds->shards[l->shard]);
            ds->shards[l->shard] = NULL;
        }
    }
    cd_shard *s = ds->shards[l->shard];
    pthread_mutex_unlock(&ds->mu);
    if (st != CD_OK) return st;
    if (shard) *shard = s;
    if ((st = cd_shard_read_record(s, l->index, rec, err)) != CD_OK) return st;
    json_t *meta = json_loads(cd_record_metadata(*rec), 0, NULL);
    bool same = meta && entry_fields(meta) == l->fields;
    json_decref(meta);
    if (!same) {
        cd_record_destroy(*rec);
        *rec = NULL;
        return cd_fail(
            err, CD_ERR_CORRUPT,
            "%s/manifest.json: record %llu: key, patient_id, sequence, split or label differ from the metadata of "
            "record %llu in %s (a damaged manifest)",
            ds->dir, (unsigned long long)i, (unsigned long long)l->index, ds->shard_paths[l->shard]);
    }
    return CD_OK;
}

cd_status cd_dataset_verify(const char *dir, cd_progress_fn progress, void *user, cd_error *err) {
    cd_dataset *ds;
    cd_status st = cd_dataset_open(dir, &ds, err);
    if (st != CD_OK) return st;
    json_t *m = json_loads(ds->manifest_text, 0, NULL);
    json_t *shards = json_object_get(m, "shards");
    uint64_t checked = 0; /* shard bytes hashed so far */
    for (size_t i = 0; i < ds->nshards && st == CD_OK; i++) {
        json_t *e = json_array_get(shards, i);
        const char *want = json_string_value(json_object_get(e, "xxh3_128"));
        json_int_t want_size = json_integer_value(json_object_get(e, "size"));
        char hex[33];
        uint64_t size;
        if ((st = cd_file_xxh3_128(ds->shard_paths[i], hex, &size, err)) != CD_OK) break;
        if ((json_int_t)size != want_size) {
            st = cd_fail(err, size < (uint64_t)want_size ? CD_ERR_TRUNCATED : CD_ERR_CORRUPT,
                         "%s: %llu bytes, the manifest says %lld", ds->shard_paths[i], (unsigned long long)size,
                         (long long)want_size);
            /* Go on to name the damaged record, when the shard structure allows it. */
        } else if (!want || strcmp(hex, want)) {
            st = cd_fail(err, CD_ERR_CORRUPT, "%s: XXH3-128 %s differs from the manifest's %s", ds->shard_paths[i], hex,
                         want ? want : "(missing)");
        }
        int64_t bad = -1;
        cd_error detail;
        if (cd_shard_verify(ds->shard_paths[i], &bad, &detail) != CD_OK) {
            st = detail.status;
            if (err) *err = detail; /* the specific damage: shard, record, tensor, chunk */
        } else if (st == CD_OK) {
            cd_shard *s;
            if (cd_shard_open(ds->shard_paths[i], &s, NULL) == CD_OK) {
                if (cd_shard_record_count(s) != ds->shard_records[i])
                    st = cd_fail(err, CD_ERR_CORRUPT, "%s: holds %llu records, the manifest says %llu",
                                 ds->shard_paths[i], (unsigned long long)cd_shard_record_count(s),
                                 (unsigned long long)ds->shard_records[i]);
                cd_shard_close(s);
            }
        }
        checked += size;
        if (progress) progress(user, i + 1, ds->nshards, checked);
    }
    /* Every manifest entry against its record's header (the comparison is in cd_dataset_read_record). */
    for (uint64_t r = 0; r < ds->nrecords && st == CD_OK; r++) {
        cd_record *rec;
        if ((st = cd_dataset_read_record(ds, r, &rec, NULL, err)) == CD_OK) cd_record_destroy(rec);
    }
    json_decref(m);
    cd_dataset_close(ds);
    return st;
}

bool cd_dataset_split_selected(const char *splits, const char *split) {
    if (!splits || !strcmp(splits, "*")) return true;
    size_t n = strlen(split);
    for (const char *p = splits; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, split, n)) return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}
