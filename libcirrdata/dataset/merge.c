/* Merging the parts of a conversion (`convert --part I/N`) into one dataset. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cirrdata/dataset.h"
#include "cirrdata/version.h"
#include "core/fs.h"
#include "dataset/manifest.h"
#include "io/dir_lock.h"
#include "io/file.h"

#define PATH_CAP 4200

/* A shard of a part into the merged folder: a hard link where possible, else a copy (temporary created
 * exclusively, fsync, rename). A target that exists already is accepted only when it is that very shard
 * (a merge killed after linking it); anything else there is refused, never overwritten. */
static cd_status link_or_copy(const char *from, const char *to, json_t *listing, cd_error *err) {
    struct stat a, b;
    if (lstat(to, &b) == 0) {
        char hex[33];
        uint64_t size = 0;
        const char *want = json_string_value(json_object_get(listing, "xxh3_128"));
        if (stat(from, &a) == 0 && S_ISREG(b.st_mode) && a.st_dev == b.st_dev && a.st_ino == b.st_ino) return CD_OK;
        if (S_ISREG(b.st_mode) && want && cd_file_xxh3_128(to, hex, &size, NULL) == CD_OK && !strcmp(hex, want) &&
            (json_int_t)size == json_integer_value(json_object_get(listing, "size")))
            return CD_OK;
        return cd_fail(err, CD_ERR_ARG,
                       "%s: exists and is not the shard %s; merge never overwrites: choose an empty output folder", to,
                       from);
    }
    cd_file in; /* opened first: a FIFO (or other non-file) is refused, never linked or waited on */
    cd_status st = cd_file_open(from, &in, err);
    if (st != CD_OK) return st;
    if (link(from, to) == 0) {
        cd_file_close(&in);
        return CD_OK;
    }
    char tmp[PATH_CAP];
    snprintf(tmp, sizeof tmp, "%.4100s.tmp", to);
    int outfd;
    if ((st = cd_file_create_exclusive(tmp, &outfd, err)) != CD_OK) {
        cd_file_close(&in);
        return st;
    }
    char *buf = malloc(1 << 20);
    if (!buf) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
    for (uint64_t at = 0; st == CD_OK && at < in.size;) {
        size_t want = in.size - at < (1u << 20) ? (size_t)(in.size - at) : (1u << 20);
        if ((st = cd_file_pread_exact(&in, buf, want, at, err)) == CD_OK)
            st = cd_file_write_full(outfd, buf, want, tmp, err);
        at += want;
    }
    free(buf);
    if (st == CD_OK && fsync(outfd) != 0) st = cd_fail(err, CD_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    cd_file_close(&in);
    if (close(outfd) != 0 && st == CD_OK) st = cd_fail(err, CD_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (st == CD_OK && rename(tmp, to) != 0) st = cd_fail(err, CD_ERR_IO, "%s: cannot rename: %s", to, strerror(errno));
    if (st != CD_OK) unlink(tmp);
    return st;
}

/* Augmented parts join only when their copies were drawn alike (the device that ran may differ). */
static bool same_augmentation(json_t *a, json_t *b) {
    if (!a || !b) return !a && !b;
    json_t *x = json_deep_copy(a), *y = json_deep_copy(b);
    json_object_del(x, "device");
    json_object_del(y, "device");
    bool same = json_equal(x, y);
    json_decref(x);
    json_decref(y);
    return same;
}

static const char *src_str(json_t *m, const char *k) {
    const char *s = json_string_value(json_object_get(json_object_get(m, "source"), k));
    return s ? s : "(none)";
}

/* Part i (index i + 1) against part 1: the same conversion, or what differs. */
static cd_status same_conversion(json_t *const *pm, const char *const *pdir, int i, cd_error *err) {
    json_t *a = pm[0], *b = pm[i];
    static const char *const fields[] = {"layout", "healthy", "pairing"};
    for (size_t f = 0; f < sizeof fields / sizeof *fields; f++)
        if (strcmp(src_str(a, fields[f]), src_str(b, fields[f])))
            return cd_fail(err, CD_ERR_ARG,
                           "%s: part %d is not part of the same conversion as part 1 (%s): source %s '%s', part 1 '%s'",
                           pdir[i], i + 1, pdir[0], fields[f], src_str(b, fields[f]), src_str(a, fields[f]));
    if (!json_equal(json_object_get(b, "recipe"), json_object_get(a, "recipe")) ||
        !json_equal(json_object_get(b, "resolved"), json_object_get(a, "resolved")))
        return cd_fail(err, CD_ERR_ARG, "%s: part %d was converted with another recipe than part 1 (%s)", pdir[i],
                       i + 1, pdir[0]);
    if (!same_augmentation(json_object_get(b, "augmentation"), json_object_get(a, "augmentation")))
        return cd_fail(err, CD_ERR_ARG,
                       "%s: part %d has other augmented copies (pipeline, copies, seed or mode) than part 1 (%s)",
                       pdir[i], i + 1, pdir[0]);
    if (strcmp(src_str(a, "options"), src_str(b, "options")))
        return cd_fail(err, CD_ERR_ARG,
                       "%s: part %d was converted with other options (shard size, layout options) than part 1 (%s)",
                       pdir[i], i + 1, pdir[0]);
    if (strcmp(src_str(a, "fingerprint"), src_str(b, "fingerprint"))) {
        char change[600];
        if (cd_inputs_first_change(json_object_get(json_object_get(a, "source"), "inputs"),
                                   json_object_get(json_object_get(b, "source"), "inputs"), change,
                                   sizeof change) == SIZE_MAX)
            snprintf(change, sizeof change, "their fingerprints differ");
        return cd_fail(
            err, CD_ERR_ARG,
            "%s: part %d was converted from another source tree, or from the source in another state, than part 1 "
            "(%s): %s",
            pdir[i], i + 1, pdir[0], change);
    }
    return CD_OK;
}

/* The parts' case ranges must tile [0, cases). pm is in part order. */
static cd_status cover_every_case(json_t *const *pm, const char *const *pdir, int nparts, cd_error *err) {
    json_int_t expect = 0, total = json_integer_value(json_object_get(json_object_get(pm[0], "part"), "cases"));
    for (int i = 0; i < nparts; i++) {
        json_t *p = json_object_get(pm[i], "part");
        json_int_t first = json_integer_value(json_object_get(p, "first_case")),
                   end = json_integer_value(json_object_get(p, "end_case"));
        if (json_integer_value(json_object_get(p, "cases")) != total || first != expect || end < first || end > total)
            return cd_fail(err, CD_ERR_ARG,
                           "%s: part %d covers cases %lld..%lld of %lld, but the parts before it end at case %lld: the "
                           "parts do not "
                           "cover every case exactly once",
                           pdir[i], i + 1, (long long)first, (long long)end,
                           (long long)json_integer_value(json_object_get(p, "cases")), (long long)expect);
        expect = end;
    }
    if (expect != total)
        return cd_fail(err, CD_ERR_ARG, "%s: the parts end at case %lld of %lld: cases are missing", pdir[nparts - 1],
                       (long long)expect, (long long)total);
    return CD_OK;
}

cd_status cd_dataset_merge(const char *out_dir, const char *const *parts, int nparts, cd_error *err) {
    return cd_dataset_merge_with_progress(out_dir, parts, nparts, NULL, NULL, err);
}

cd_status cd_dataset_merge_with_progress(const char *out_dir, const char *const *parts, int nparts,
                                         cd_progress_fn progress, void *user, cd_error *err) {
    if (!out_dir || !parts || nparts < 1)
        return cd_fail(err, CD_ERR_ARG, "merge: need an output and at least one part");
    if (strlen(out_dir) > 3800) return cd_fail(err, CD_ERR_ARG, "%.100s...: path too long", out_dir);
    json_t **pm = calloc((size_t)nparts, sizeof *pm);
    const char **pdir = calloc((size_t)nparts, sizeof *pdir); /* part directory by part index */
    if (!pm || !pdir) {
        free(pm);
        free(pdir);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    cd_status st = CD_OK;
    char path[PATH_CAP];
    cd_dir_lock lock = {.fd = -1};
    /* Load, validate and order the parts by their index. */
    for (int i = 0; i < nparts && st == CD_OK; i++) {
        cd_dataset *ds;
        if ((st = cd_dataset_open(parts[i], &ds, err)) != CD_OK) break;
        json_t *m = json_loads(cd_dataset_manifest(ds), 0, NULL);
        cd_dataset_close(ds);
        json_t *part = json_object_get(m, "part");
        int idx = (int)json_integer_value(json_object_get(part, "index"));
        int cnt = (int)json_integer_value(json_object_get(part, "count"));
        if (!part || cnt != nparts || idx < 1 || idx > nparts || pm[idx - 1]) {
            st = cd_fail(err, CD_ERR_ARG, "%s: not part of a %d-part conversion, or a part given twice (part %d/%d)",
                         parts[i], nparts, idx, cnt);
            json_decref(m);
            break;
        }
        if (!json_is_integer(json_object_get(part, "first_case")) ||
            !json_is_string(json_object_get(json_object_get(m, "source"), "options"))) {
            st = cd_fail(
                err, CD_ERR_ARG,
                "%s: a part converted by an older libcirrdata (its manifest does not say which cases it holds): "
                "convert the parts again",
                parts[i]);
            json_decref(m);
            break;
        }
        pm[idx - 1] = m;
        pdir[idx - 1] = parts[i];
    }
    for (int i = 1; i < nparts && st == CD_OK; i++) st = same_conversion(pm, pdir, i, err);
    if (st == CD_OK) st = cover_every_case(pm, pdir, nparts, err);
    if (st == CD_OK) {
        if (mkdir(out_dir, 0755) != 0 && errno != EEXIST)
            st = cd_fail(err, CD_ERR_IO, "%s: cannot create: %s", out_dir, strerror(errno));
        if (st == CD_OK) st = cd_dir_lock_acquire(out_dir, "merge", &lock, err);
        snprintf(path, sizeof path, "%s/shards", out_dir);
        if (st == CD_OK && mkdir(path, 0755) != 0 && errno != EEXIST)
            st = cd_fail(err, CD_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        struct stat sb;
        if (st == CD_OK && (lstat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)))
            st = cd_fail(err, CD_ERR_ARG,
                         "%s: not a folder (a symbolic link or a file): merge writes shards only inside the output",
                         path);
        snprintf(path, sizeof path, "%s/manifest.json", out_dir);
        if (st == CD_OK && lstat(path, &sb) == 0)
            st = cd_fail(err, CD_ERR_ARG, "%s: already exists; merge into a new directory", path);
    }
    json_t *shards = json_array(), *records = json_array(), *skipped = json_array(), *seen = json_object();
    size_t shard_base = 0;
    uint64_t linked = 0, linked_bytes = 0, nshards = 0; /* progress: shards done of all the parts' */
    for (int i = 0; i < nparts && st == CD_OK; i++) nshards += json_array_size(json_object_get(pm[i], "shards"));
    for (int i = 0; i < nparts && st == CD_OK; i++) {
        json_t *m = pm[i];
        const char *dir = pdir[i];
        size_t j;
        json_t *e;
        json_array_foreach(json_object_get(m, "shards"), j, e) {
            const char *rel = json_string_value(json_object_get(e, "path"));
            char from[PATH_CAP], to[PATH_CAP];
            snprintf(from, sizeof from, "%.3800s/%.255s", dir, rel);
            snprintf(to, sizeof to, "%.3800s/%.255s", out_dir, rel);
            if ((st = link_or_copy(from, to, e, err)) != CD_OK) break;
            json_array_append(shards, e);
            linked_bytes += (uint64_t)json_integer_value(json_object_get(e, "size"));
            if (progress) progress(user, ++linked, nshards, linked_bytes);
        }
        json_array_foreach(json_object_get(m, "records"), j, e) {
            json_t *c = json_deep_copy(e);
            json_object_set_new(
                c, "shard",
                json_integer((json_int_t)(shard_base + (size_t)json_integer_value(json_object_get(e, "shard")))));
            json_array_append_new(records, c);
        }
        /* The layout's own skips are in every part: keep each once (a set, not a scan per entry). */
        json_array_foreach(json_object_get(json_object_get(m, "source"), "skipped"), j, e) {
            char *k = json_dumps(e, JSON_COMPACT | JSON_SORT_KEYS);
            if (k && !json_object_get(seen, k)) {
                json_object_set_new(seen, k, json_true());
                json_array_append(skipped, e);
            }
            free(k);
        }
        shard_base += json_array_size(json_object_get(m, "shards"));
    }
    if (st == CD_OK) {
        json_t *out = json_deep_copy(pm[0]);
        json_object_del(out, "part");
        char by[64];
        snprintf(by, sizeof by, "libcirrdata %s", cd_version());
        json_object_set_new(out, "created_by", json_string(by));
        json_t *src = json_object_get(out, "source");
        json_object_set_new(src, "skipped", skipped);
        skipped = NULL;
        json_object_set_new(out, "counts", cd_manifest_counts(records));
        json_object_set_new(out, "statistics", cd_manifest_statistics(records));
        json_object_set(out, "shards", shards);
        json_object_set(out, "records", records);
        snprintf(path, sizeof path, "%s/manifest.json", out_dir);
        st = cd_manifest_write_atomic(path, out, err);
        json_decref(out);
    }
    cd_dir_lock_release(&lock);
    json_decref(shards);
    json_decref(records);
    json_decref(skipped);
    json_decref(seen);
    for (int i = 0; i < nparts; i++) json_decref(pm[i]);
    free(pm);
    free(pdir);
    return st;
}
