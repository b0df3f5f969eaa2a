/* Output folder state before a conversion: finished, resumable, or someone else's (refused). */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert/journal.h"
#include "dataset/manifest.h"
#include "convert/resume.h"
#include "io/file.h"

#define PATH_CAP 4200

static void note(cd_resume *r, const char *fmt, ...) CD_PRINTF(2, 3);
static void note(cd_resume *r, const char *fmt, ...) {
    size_t n = strlen(r->note);
    if (n && n + 2 < sizeof r->note) {
        memcpy(r->note + n, "; ", 3);
        n += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->note + n, sizeof r->note - n, fmt, ap);
    va_end(ap);
}

json_t *cd_resume_journal_header(const cd_conv_identity *id) {
    json_t *in = json_array();
    for (size_t i = id->lo; i < id->hi; i++) json_array_append(in, json_array_get(id->inputs, i));
    return json_pack("{sssisssss[ii]s[III]so}", "journal", "cirrdata-convert", "version", 1, "options", id->options,
                     "fingerprint", id->fingerprint, "part", id->part_index, id->part_count, "cases",
                     (json_int_t)id->lo, (json_int_t)id->hi, (json_int_t)id->ncases, "inputs", in);
}

void cd_resume_free(cd_resume *r) {
    json_decref(r->manifest);
    json_decref(r->lines);
    r->manifest = r->lines = NULL;
}

static const char *source_str(json_t *m, const char *k) {
    return json_string_value(json_object_get(json_object_get(m, "source"), k));
}

static bool part_matches(json_t *m, const cd_conv_identity *id) {
    json_t *p = json_object_get(m, "part");
    if (!p) return id->part_count == 0;
    return id->part_count > 0 && json_integer_value(json_object_get(p, "index")) == id->part_index &&
           json_integer_value(json_object_get(p, "count")) == id->part_count;
}

static void describe_part(json_t *m, char *buf, size_t cap) {
    json_t *p = json_object_get(m, "part");
    if (p)
        snprintf(buf, cap, "part %lld/%lld", (long long)json_integer_value(json_object_get(p, "index")),
                 (long long)json_integer_value(json_object_get(p, "count")));
    else
        snprintf(buf, cap, "a whole conversion");
}

/* An intact manifest of another conversion: say what differs. */
static cd_status refuse_other(const char *dir, json_t *m, const cd_conv_identity *id, cd_error *err) {
    static const char *const head = "holds a dataset converted from other inputs or with another recipe";
    if (!part_matches(m, id)) {
        char held[64], want[64];
        describe_part(m, held, sizeof held);
        if (id->part_count)
            snprintf(want, sizeof want, "part %d/%d", id->part_index, id->part_count);
        else
            snprintf(want, sizeof want, "a whole conversion");
        return cd_fail(err, CD_ERR_ARG, "%s: %s (it holds %s, this command writes %s); choose another --out", dir, head,
                       held, want);
    }
    const char *opt = source_str(m, "options");
    if (!opt || strcmp(opt, id->options) || !json_is_array(json_object_get(json_object_get(m, "source"), "inputs")))
        return cd_fail(err, CD_ERR_ARG,
                       "%s: %s (layout, recipe, shard size or augmentation differ); choose another --out", dir, head);
    char change[600];
    if (cd_inputs_first_change(json_object_get(json_object_get(m, "source"), "inputs"), id->inputs, change,
                               sizeof change) == SIZE_MAX)
        snprintf(change, sizeof change, "the fingerprints differ");
    return cd_fail(
        err, CD_ERR_ARG,
        "%s: %s: the source changed since it was converted (%s); choose another --out, or delete the folder to "
        "convert again",
        dir, head, change);
}

static bool shard_file_name(const char *n) {
    size_t len = strlen(n);
    return !strncmp(n, "shard-", 6) &&
           ((len > 4 && !strcmp(n + len - 4, ".cds")) || (len > 8 && !strcmp(n + len - 8, ".cds.tmp")));
}

/* "shards/NAME" of a manifest or journal shard path, or NULL when it is not one of our shard names. */
static const char *shard_base(const char *rel) {
    if (!rel || strncmp(rel, "shards/", 7) || strchr(rel + 7, '/') || !shard_file_name(rel + 7)) return NULL;
    return rel + 7;
}

static bool same_file(const char *dir, json_t *sh) {
    const char *rel = json_string_value(json_object_get(sh, "path"));
    const char *hash = json_string_value(json_object_get(sh, "xxh3_128"));
    if (!shard_base(rel) || !hash) return false;
    char full[PATH_CAP], hex[33];
    uint64_t size = 0;
    snprintf(full, sizeof full, "%.3800s/%s", dir, rel);
    struct stat st;
    if (lstat(full, &st) != 0 || !S_ISREG(st.st_mode) ||
        (uint64_t)st.st_size != (uint64_t)json_integer_value(json_object_get(sh, "size")))
        return false;
    return cd_file_xxh3_128(full, hex, &size, NULL) == CD_OK && !strcmp(hex, hash);
}

/* The manifest: finished, refused, or (damaged but ours) its shards vouched for. */
/* Whether a damaged manifest's text holds `"fingerprint": "<fp>"`. */
static bool text_has_fingerprint(const char *text, size_t len, const char *fp) {
    static const char key[] = "\"fingerprint\": \"";
    const size_t kn = sizeof key - 1, fn = strlen(fp);
    for (const char *p = text; p + kn + fn < text + len; p++) {
        p = memmem(p, (size_t)(text + len - p), key, kn);
        if (!p || p + kn + fn >= text + len) break;
        if (!memcmp(p + kn, fp, fn) && p[kn + fn] == '"') return true;
    }
    return false;
}

static cd_status look_at_manifest(const char *dir, const cd_conv_identity *id, const char *legacy, cd_resume *r,
                                  bool *vouches, cd_error *err) {
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%.3800s/manifest.json", dir);
    struct stat sb;
    if (lstat(path, &sb) != 0) return CD_OK;
    char *text;
    size_t len;
    cd_status st = cd_read_text_file_len(path, 0, "manifest", &text, &len, err);
    if (st != CD_OK) return st;
    cd_error why;
    bool intact = cd_manifest_check_sum(path, text, len, &why) == CD_OK;
    json_t *m = json_loadb(text, len, 0, NULL);
    const char *fp = source_str(m, "fingerprint");
    bool ours =
        fp && part_matches(m, id) &&
        (!strcmp(fp, id->fingerprint) ||
         (!intact && legacy && json_integer_value(json_object_get(m, "format_version")) == 1 && !strcmp(fp, legacy)));
    /* Damage can make the JSON unreadable: the fingerprint's text still says whose the folder was. */
    if (!m && !intact) ours = text_has_fingerprint(text, len, id->fingerprint);
    free(text);
    if (intact) {
        if (!ours) {
            st = refuse_other(dir, m, id, err);
            json_decref(m);
            return st;
        }
        r->finished = true;
        r->manifest = m;
        return CD_OK;
    }
    json_decref(m);
    if (!ours)
        return cd_fail(
            err, CD_ERR_ARG,
            "%s; it is not the output of this conversion, and convert never replaces a dataset it cannot vouch for: "
            "move it away or choose another --out",
            why.message);
    /* Damaged (or from before manifests had a checksum) but of this very conversion: its shard files (this
     * part's names) are ours to write again. */
    *vouches = true;
    note(r, "%s: converting again in place", why.message);
    if (unlink(path) != 0) return cd_fail(err, CD_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
    return CD_OK;
}

/* The journal: the shards kept, whether it vouches for our part's shard files. */
static cd_status look_at_journal(const char *dir, const cd_conv_identity *id, cd_resume *r, bool *vouches,
                                 bool *damaged_journal, json_t *kept, cd_error *err) {
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%.3800s/" CD_JOURNAL_NAME, dir);
    bool exists, damaged;
    json_t *header, *lines;
    size_t bad;
    cd_status st = cd_journal_read(path, &exists, &header, &lines, &bad, &damaged, err);
    if (st != CD_OK) return st;
    *vouches = false;
    *damaged_journal = false;
    if (!exists) {
        json_decref(lines);
        return CD_OK;
    }
    if (!header) {
        *damaged_journal = true;
        note(r, "%s: damaged (line 1 fails its checksum): the interrupted run cannot be resumed", path);
        json_decref(lines);
        return CD_OK;
    }
    json_t *part = json_object_get(header, "part"), *cases = json_object_get(header, "cases");
    const char *opt = json_string_value(json_object_get(header, "options"));
    if (!opt || strcmp(opt, id->options) || json_integer_value(json_array_get(part, 0)) != id->part_index ||
        json_integer_value(json_array_get(part, 1)) != id->part_count) {
        json_decref(header);
        json_decref(lines);
        return cd_fail(
            err, CD_ERR_ARG,
            "%s: holds an unfinished conversion with other options or of another part (%s); choose another --out, or "
            "delete the folder to start over",
            dir, path);
    }
    *vouches = true;
    size_t limit = id->hi;
    if ((size_t)json_integer_value(json_array_get(cases, 0)) != id->lo ||
        (size_t)json_integer_value(json_array_get(cases, 1)) != id->hi ||
        (size_t)json_integer_value(json_array_get(cases, 2)) != id->ncases) {
        limit = id->lo;
        note(r, "the source's case list changed since the interrupted run: converting %s again",
             id->part_count ? "this part" : "everything");
    } else {
        json_t *now = json_array();
        for (size_t i = id->lo; i < id->hi; i++) json_array_append(now, json_array_get(id->inputs, i));
        char change[600];
        size_t k = cd_inputs_first_change(json_object_get(header, "inputs"), now, change, sizeof change);
        json_decref(now);
        if (k != SIZE_MAX) {
            limit = id->lo + k;
            note(r, "the source changed since the interrupted run (%s): converting again from that case", change);
        }
    }
    if (damaged) note(r, "%s: line %zu is damaged: converting again from the shard it describes", path, bad);
    size_t i;
    json_t *line;
    json_array_foreach(lines, i, line) {
        json_t *sh = json_object_get(line, "shard");
        json_int_t end = json_integer_value(json_object_get(sh, "end_case"));
        if (!json_is_object(sh) || end < (json_int_t)r->resume_case || (size_t)end > limit ||
            !json_is_array(json_object_get(line, "entries")))
            break;
        if (!same_file(dir, sh)) {
            note(r, "%s/%s differs from what the journal recorded: converting again from it", dir,
                 json_string_value(json_object_get(sh, "path")));
            break;
        }
        json_array_append(kept, line);
        r->resume_case = (size_t)end;
    }
    json_decref(header);
    json_decref(lines);
    return CD_OK;
}

cd_status cd_resume_prepare(const char *dir, const cd_conv_identity *id, const char *legacy, cd_resume *r,
                            cd_error *err) {
    memset(r, 0, sizeof *r);
    r->lines = json_array();
    r->resume_case = id->lo;
    bool manifest_vouches = false; /* a damaged manifest of this conversion: this part's shard files are ours */
    cd_status st = look_at_manifest(dir, id, legacy, r, &manifest_vouches, err);
    char path[PATH_CAP];
    if (st == CD_OK && r->finished) {
        /* A kill between the manifest and the journal's removal leaves the journal: ours, stale. */
        snprintf(path, sizeof path, "%.3800s/" CD_JOURNAL_NAME, dir);
        unlink(path);
        return CD_OK;
    }
    bool journal_vouches = false, damaged_journal = false;
    if (st == CD_OK) st = look_at_journal(dir, id, r, &journal_vouches, &damaged_journal, r->lines, err);
    if (st != CD_OK) return st;
    json_t *kept = json_object();
    size_t i;
    json_t *line;
    json_array_foreach(r->lines, i, line) {
        const char *base = shard_base(json_string_value(json_object_get(json_object_get(line, "shard"), "path")));
        if (base) json_object_set_new(kept, base, json_true());
    }
    /* Every shard file in shards/: kept, ours to remove, or someone else's. */
    char prefix[32];
    snprintf(prefix, sizeof prefix, "shard-%03d-", id->part_index);
    snprintf(path, sizeof path, "%.3800s/shards", dir);
    json_t *remove = json_array(), *foreign = json_array();
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!shard_file_name(e->d_name) || json_object_get(kept, e->d_name)) continue;
        /* A temporary is never data (no manifest lists one) and no other writer is at work (the lock):
         * unlinking its name removes a killed run's leftover, or a link planted there, never its target. */
        size_t n = strlen(e->d_name);
        bool temporary = n > 4 && !strcmp(e->d_name + n - 4, ".tmp");
        bool ours = temporary || ((manifest_vouches || journal_vouches) && !strncmp(e->d_name, prefix, strlen(prefix)));
        json_array_append_new(ours ? remove : foreign, json_string(e->d_name));
    }
    if (d) closedir(d);
    size_t nf = json_array_size(foreign);
    if (nf) {
        char names[600] = "";
        for (i = 0; i < nf && i < 4; i++) {
            size_t n = strlen(names);
            snprintf(names + n, sizeof names - n, "%s%s", i ? ", " : "", json_string_value(json_array_get(foreign, i)));
        }
        st = cd_fail(
            err, CD_ERR_ARG,
            "%s: holds %zu shard file%s that no manifest or resume journal of this conversion accounts for (%s%s)%s; "
            "convert never deletes data it cannot vouch for: move them away or choose another --out",
            path, nf, nf == 1 ? "" : "s", names, nf > 4 ? ", ..." : "",
            damaged_journal ? " (its resume journal " CD_JOURNAL_NAME " is damaged)" : "");
    }
    for (i = 0; st == CD_OK && i < json_array_size(remove); i++) {
        char full[PATH_CAP];
        snprintf(full, sizeof full, "%.3800s/shards/%.255s", dir, json_string_value(json_array_get(remove, i)));
        if (unlink(full) != 0 && errno != ENOENT)
            st = cd_fail(err, CD_ERR_IO, "%s: cannot remove: %s", full, strerror(errno));
    }
    json_decref(remove);
    json_decref(foreign);
    json_decref(kept);
    return st;
}
