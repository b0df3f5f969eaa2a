/* Merging the parts of a conversion (`convert --part I/N`) into one dataset: the parts checked (one
 * conversion, every part once, every case once), their records laid out as one conversion writes them
 * (merge_pack.c), the manifest written last. */
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
#include "dataset/merge_impl.h"
#include "dataset/partition.h"
#include "io/dir_lock.h"
#include "io/file.h"

#define PATH_CAP CD_MERGE_PATH_CAP

/* merge_impl.h. The copy: a temporary created exclusively, fsync, rename. A target that exists already is
 * accepted only when it is that very shard (a merge killed after linking it); anything else there is
 * refused, never overwritten. */
cd_status cd_merge_link_or_copy(const char *from, const char *to, json_t *listing, cd_error *err) {
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

/* Every part holds the cases a count-part conversion of this source gives it (dataset/partition.h), so
 * together they hold every case exactly once. pm is in part order; all parts have part 1's inputs (their
 * fingerprints are equal). */
static cd_status cover_every_case(json_t *const *pm, const char *const *pdir, int nparts, cd_error *err) {
    json_t *inputs = json_object_get(json_object_get(pm[0], "source"), "inputs");
    const json_int_t total = (json_int_t)json_array_size(inputs);
    for (int i = 0; i < nparts; i++) {
        json_t *p = json_object_get(pm[i], "part");
        json_int_t first = json_integer_value(json_object_get(p, "first_case")),
                   end = json_integer_value(json_object_get(p, "end_case"));
        size_t lo, hi;
        cd_status st = cd_part_range_of_inputs(inputs, i + 1, nparts, &lo, &hi, NULL, err);
        if (st != CD_OK) return st;
        if (json_integer_value(json_object_get(p, "cases")) != total || first != (json_int_t)lo ||
            end != (json_int_t)hi)
            return cd_fail(err, CD_ERR_ARG,
                           "%s: part %d/%d holds cases %lld..%lld of %lld, but part %d of a %d-part conversion of "
                           "this source holds cases %zu..%zu of %lld: the parts do not cover every case exactly once",
                           pdir[i], i + 1, nparts, (long long)first, (long long)end,
                           (long long)json_integer_value(json_object_get(p, "cases")), i + 1, nparts, lo, hi,
                           (long long)total);
        char keys[17];
        cd_part_keys_hash(inputs, lo, hi, keys);
        const char *have = json_string_value(json_object_get(p, "keys_xxh3"));
        if (!have || strcmp(have, keys))
            return cd_fail(err, CD_ERR_ARG,
                           "%s: part %d/%d's case keys (keys_xxh3 %s) are not those of cases %zu..%zu of the source "
                           "(%s)",
                           pdir[i], i + 1, nparts, have ? have : "(none)", lo, hi, keys);
    }
    return CD_OK;
}

/* A part's manifest: it must be a part (index, count), written by a libcirrdata that records what merge
 * needs (which cases it holds, how they were chosen, the shard size). */
static cd_status part_fields(const char *dir, json_t *m, int *idx, int *cnt, cd_error *err) {
    json_t *part = json_object_get(m, "part");
    if (!json_is_object(part))
        return cd_fail(err, CD_ERR_ARG,
                       "%s: not a part of a conversion (its manifest has no \"part\"): merge joins the "
                       "outputs of 'cirrdata convert --part I/N'",
                       dir);
    json_t *ji = json_object_get(part, "index"), *jc = json_object_get(part, "count");
    const char *split = json_string_value(json_object_get(part, "split"));
    if (!json_is_integer(json_object_get(part, "first_case")) ||
        !json_is_string(json_object_get(json_object_get(m, "source"), "options")) || !split ||
        !json_is_integer(json_object_get(part, "shard_size")) ||
        !json_is_integer(json_object_get(part, "skipped_cases")))
        return cd_fail(err, CD_ERR_ARG,
                       "%s: a part converted by an older libcirrdata (its manifest does not say which cases it holds, "
                       "split by input bytes): convert the parts again",
                       dir);
    if (strcmp(split, CD_PART_SPLIT))
        return cd_fail(err, CD_ERR_ARG,
                       "%s: a part split by '%s' (this libcirrdata splits by %s): convert the parts "
                       "again",
                       dir, split, CD_PART_SPLIT);
    if (!json_is_integer(ji) || !json_is_integer(jc) || json_integer_value(jc) < 1 || json_integer_value(jc) > 65536 ||
        json_integer_value(ji) < 1 || json_integer_value(ji) > json_integer_value(jc))
        return cd_fail(err, CD_ERR_ARG, "%s: part %lld/%lld: the index must be in 1..N (N at most 65536)", dir,
                       (long long)json_integer_value(ji), (long long)json_integer_value(jc));
    *idx = (int)json_integer_value(ji);
    *cnt = (int)json_integer_value(jc);
    return CD_OK;
}

/* Loads the parts and orders them by index: every part of one count, each once, none missing. On CD_OK
 * (*pm)[i] and (*pdir)[i] are part i + 1 and *count is N. */
static cd_status load_parts(const char *const *parts, int nparts, json_t ***pm_out, const char ***pdir_out, int *count,
                            cd_error *err) {
    json_t **pm = NULL;
    const char **pdir = NULL;
    const char *first_dir = NULL;
    cd_status st = CD_OK;
    int n = 0;
    for (int i = 0; i < nparts && st == CD_OK; i++) {
        cd_dataset *ds;
        if ((st = cd_dataset_open(parts[i], &ds, err)) != CD_OK) break;
        json_t *m = json_loads(cd_dataset_manifest(ds), 0, NULL);
        cd_dataset_close(ds);
        int idx = 0, cnt = 0;
        if (!m) {
            st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
            break;
        }
        if ((st = part_fields(parts[i], m, &idx, &cnt, err)) == CD_OK && !pm) {
            n = cnt;
            first_dir = parts[i];
            pm = calloc((size_t)n, sizeof *pm);
            pdir = calloc((size_t)n, sizeof *pdir);
            if (!pm || !pdir) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
        }
        if (st == CD_OK && cnt != n)
            st = cd_fail(err, CD_ERR_ARG,
                         "%s: part %d/%d of a %d-part conversion, but %s is a part of a %d-part conversion: parts of "
                         "one --part I/N conversion only",
                         parts[i], idx, cnt, cnt, first_dir, n);
        else if (st == CD_OK && pm[idx - 1])
            st = cd_fail(err, CD_ERR_ARG, "%s: part %d/%d given twice (also %s)", parts[i], idx, n, pdir[idx - 1]);
        if (st != CD_OK) {
            json_decref(m);
            break;
        }
        pm[idx - 1] = m;
        pdir[idx - 1] = parts[i];
    }
    for (int i = 0; i < n && st == CD_OK; i++)
        if (!pm[i]) {
            char given[512];
            size_t at = 0;
            given[0] = 0;
            for (int k = 0; k < n && at < sizeof given - 16; k++)
                if (pm[k]) at += (size_t)snprintf(given + at, sizeof given - at, "%s%d", at ? ", " : "", k + 1);
            st = cd_fail(err, CD_ERR_ARG,
                         "merge: part %d/%d is missing (given: part%s %s of %d): every part of the conversion is "
                         "needed",
                         i + 1, n, nparts > 1 ? "s" : "", given, n);
        }
    *pm_out = pm;
    *pdir_out = pdir;
    *count = n;
    return st;
}

/* The merged "source.skipped": the cases each part skipped while reading, in part order, then the
 * layout's own skips (the same in every part: part 1's after its own cases), as one conversion lists them. */
static json_t *merged_skipped(json_t *const *pm, int nparts) {
    json_t *out = json_array();
    for (int i = 0; i < nparts; i++) {
        json_t *sk = json_object_get(json_object_get(pm[i], "source"), "skipped");
        size_t own = (size_t)json_integer_value(json_object_get(json_object_get(pm[i], "part"), "skipped_cases"));
        for (size_t j = 0; j < own && j < json_array_size(sk); j++) json_array_append(out, json_array_get(sk, j));
    }
    json_t *sk = json_object_get(json_object_get(pm[0], "source"), "skipped");
    size_t own = (size_t)json_integer_value(json_object_get(json_object_get(pm[0], "part"), "skipped_cases"));
    for (size_t j = own; j < json_array_size(sk); j++) json_array_append(out, json_array_get(sk, j));
    return out;
}

cd_status cd_dataset_merge(const char *out_dir, const char *const *parts, int nparts, cd_error *err) {
    return cd_dataset_merge_with_progress(out_dir, parts, nparts, NULL, NULL, err);
}

cd_status cd_dataset_merge_with_progress(const char *out_dir, const char *const *parts, int nparts,
                                         cd_progress_fn progress, void *user, cd_error *err) {
    if (!out_dir || !parts || nparts < 1)
        return cd_fail(err, CD_ERR_ARG, "merge: need an output and at least one part");
    if (strlen(out_dir) > 3800) return cd_fail(err, CD_ERR_ARG, "%.100s...: path too long", out_dir);
    json_t **pm = NULL;
    const char **pdir = NULL;
    int n = 0;
    cd_status st = load_parts(parts, nparts, &pm, &pdir, &n, err);
    char path[PATH_CAP];
    cd_dir_lock lock = {.fd = -1};
    for (int i = 1; i < n && st == CD_OK; i++) st = same_conversion(pm, pdir, i, err);
    if (st == CD_OK) st = cover_every_case(pm, pdir, n, err);
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
    json_t *shards = json_array(), *records = json_array();
    if (st == CD_OK) {
        uint64_t shard_size =
            (uint64_t)json_integer_value(json_object_get(json_object_get(pm[0], "part"), "shard_size"));
        st = cd_merge_pack(out_dir, pm, pdir, n, shard_size, shards, records, progress, user, err);
    }
    if (st == CD_OK) {
        /* One conversion's manifest: part 1's, less its part, with everything that depends on the records
         * computed from all of them as finish.c does. */
        json_t *out = json_deep_copy(pm[0]);
        json_object_del(out, "part");
        char by[64];
        snprintf(by, sizeof by, "libcirrdata %s", cd_version());
        json_object_set_new(out, "created_by", json_string(by));
        json_object_set_new(json_object_get(out, "source"), "skipped", merged_skipped(pm, n));
        json_object_set_new(out, "counts", cd_manifest_counts(records));
        json_object_set_new(out, "statistics",
                            cd_manifest_case_statistics(records, json_object_get(out, "augmentation")));
        json_object_set_new(json_object_get(json_object_get(out, "tensors"), "image"), "dtype",
                            json_string(cd_manifest_image_dtype(records)));
        json_object_set(out, "shards", shards);
        json_object_set(out, "records", records);
        snprintf(path, sizeof path, "%s/manifest.json", out_dir);
        st = cd_manifest_write_atomic(path, out, err);
        json_decref(out);
    }
    cd_dir_lock_release(&lock);
    json_decref(shards);
    json_decref(records);
    for (int i = 0; i < n && pm; i++) json_decref(pm[i]);
    free(pm);
    free(pdir);
    return st;
}
