/* The manifest: counts and statistics of the record entries, the checksum member, reading and writing. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "cirrdata/orient.h"
#include "cirrdata/version.h"
#include "core/json_check.h"
#include "dataset/manifest.h"
#include "io/file.h"

static void incr(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    json_object_set_new(obj, key, json_integer((v ? json_integer_value(v) : 0) + 1));
}

json_t *cd_manifest_counts(json_t *entries) {
    json_t *o = json_object(), *bs = json_object(), *bq = json_object(), *bl = json_object(), *bss = json_object();
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        const char *split = json_string_value(json_object_get(e, "split"));
        const char *seq = json_string_value(json_object_get(e, "sequence"));
        char label[32];
        snprintf(label, sizeof label, "%lld", (long long)json_integer_value(json_object_get(e, "label")));
        incr(bs, split ? split : "?");
        incr(bq, seq ? seq : "?");
        incr(bl, label);
        json_t *inner = json_object_get(bss, split ? split : "?");
        if (!inner) {
            inner = json_object();
            json_object_set_new(bss, split ? split : "?", inner);
        }
        incr(inner, seq ? seq : "?");
    }
    json_object_set_new(o, "records", json_integer((json_int_t)json_array_size(entries)));
    json_object_set_new(o, "by_split", bs);
    json_object_set_new(o, "by_sequence", bq);
    json_object_set_new(o, "by_label", bl);
    json_object_set_new(o, "by_split_sequence", bss);
    return o;
}

/* Per-axis summary of a list of 3-vectors. */
static json_t *axis_summary(const double *v, size_t n, bool percentiles) {
    json_t *o = json_object();
    static const struct {
        const char *key;
        double p;
    } qs[] = {{"median", 50}, {"p10", 10}, {"p90", 90}, {"min", 0}, {"max", 100}};
    double *col = malloc((n ? n : 1) * sizeof *col);
    for (size_t q = 0; q < sizeof qs / sizeof qs[0]; q++) {
        if (!percentiles && (qs[q].p == 10 || qs[q].p == 90)) continue;
        double r[3];
        for (int a = 0; a < 3; a++) {
            for (size_t i = 0; i < n; i++) col[i] = v[3 * i + a];
            r[a] = cd_percentile_f64(col, n, qs[q].p);
        }
        json_object_set_new(o, qs[q].key, cd_json_vec3(r));
    }
    free(col);
    return o;
}

json_t *cd_manifest_statistics(json_t *entries) {
    json_t *out = json_object();
    /* Sequences in first-seen order. */
    json_t *seqs = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        const char *s = json_string_value(json_object_get(e, "sequence"));
        bool seen = false;
        size_t j;
        json_t *x;
        json_array_foreach(seqs, j, x) seen |= !strcmp(json_string_value(x), s ? s : "?");
        if (!seen) json_array_append_new(seqs, json_string(s ? s : "?"));
    }
    size_t q;
    json_t *seqv;
    json_array_foreach(seqs, q, seqv) {
        const char *seq = json_string_value(seqv);
        size_t n = 0, ns = 0;
        json_array_foreach(entries, i, e) {
            const char *s = json_string_value(json_object_get(e, "sequence"));
            if (!strcmp(s ? s : "?", seq)) {
                n++;
                ns += json_array_size(json_object_get(json_object_get(e, "stats"), "samples"));
            }
        }
        double *sp = malloc(3 * n * sizeof *sp), *sh = malloc(3 * n * sizeof *sh), *st = malloc(3 * n * sizeof *st);
        double *samples = malloc((ns ? ns : 1) * sizeof *samples);
        double sum = 0, sumsq = 0, mn = INFINITY, mx = -INFINITY;
        uint64_t count = 0;
        size_t k = 0, m = 0;
        json_array_foreach(entries, i, e) {
            const char *s = json_string_value(json_object_get(e, "sequence"));
            if (strcmp(s ? s : "?", seq)) continue;
            json_t *src = json_object_get(e, "source"), *stats = json_object_get(e, "stats");
            for (int a = 0; a < 3; a++) {
                sp[3 * k + a] = json_number_value(json_array_get(json_object_get(src, "spacing_ras"), (size_t)a));
                sh[3 * k + a] = json_number_value(json_array_get(json_object_get(src, "shape_ras"), (size_t)a));
                st[3 * k + a] = json_number_value(json_array_get(json_object_get(e, "shape"), (size_t)a));
            }
            k++;
            json_int_t c = json_integer_value(json_object_get(stats, "count"));
            if (c > 0) {
                count += (uint64_t)c;
                sum += json_number_value(json_object_get(stats, "sum"));
                sumsq += json_number_value(json_object_get(stats, "sumsq"));
                mn = fmin(mn, json_number_value(json_object_get(stats, "min")));
                mx = fmax(mx, json_number_value(json_object_get(stats, "max")));
            }
            size_t j;
            json_t *x;
            json_array_foreach(json_object_get(stats, "samples"), j, x) samples[m++] = json_number_value(x);
        }
        json_t *o = json_object();
        json_object_set_new(o, "cases", json_integer((json_int_t)n));
        json_object_set_new(o, "spacing", axis_summary(sp, n, true));
        json_object_set_new(o, "shape", axis_summary(sh, n, false));
        json_t *sts = axis_summary(st, n, false);
        json_object_del(sts, "median");
        json_object_set_new(o, "stored_shape", sts);
        json_t *in = json_object();
        double mean = count ? sum / (double)count : 0.0;
        double var = count ? sumsq / (double)count - mean * mean : 0.0;
        json_object_set_new(in, "voxels", json_integer((json_int_t)count));
        json_object_set_new(in, "mean", json_real(mean));
        json_object_set_new(in, "std", json_real(var > 0 ? sqrt(var) : 0.0));
        json_object_set_new(in, "min", json_real(count ? mn : 0.0));
        json_object_set_new(in, "max", json_real(count ? mx : 0.0));
        json_t *pct = json_object();
        static const char *const keys[] = {"0.5", "1", "5", "25", "50", "75", "95", "99", "99.5"};
        for (size_t p = 0; p < 9; p++)
            json_object_set_new(pct, keys[p], json_real(cd_percentile_f64(samples, m, atof(keys[p]))));
        json_object_set_new(in, "percentiles", pct);
        json_object_set_new(o, "intensity_in_mask", in);
        json_object_set_new(out, seq, o);
        free(sp);
        free(sh);
        free(st);
        free(samples);
    }
    json_decref(seqs);
    return out;
}

json_t *cd_manifest_case_statistics(json_t *entries, json_t *augmentation) {
    const json_int_t plain = json_object_get(augmentation, "no_original") == json_true() ? 0 : -1;
    json_t *per_case = json_array();
    size_t i;
    json_t *x;
    json_array_foreach(entries, i, x) {
        json_t *cp = json_object_get(x, "copy");
        if (!cp || json_integer_value(cp) == plain) json_array_append(per_case, x);
    }
    json_t *stats = cd_manifest_statistics(per_case);
    json_decref(per_case);
    return stats;
}

const char *cd_manifest_image_dtype(json_t *entries) {
    const char *dt = NULL;
    json_t *x;
    size_t i;
    json_array_foreach(entries, i, x) {
        const char *d = json_string_value(json_object_get(x, "dtype"));
        if (!d) continue;
        if (dt && strcmp(dt, d)) return "mixed";
        if (!dt) dt = d;
    }
    return dt ? dt : "float32";
}

/* Writes len bytes of text durably beside path and renames it to path (io/file.h). */
static cd_status write_text_atomic(const char *path, const char *text, size_t len, cd_error *err) {
    cd_write_piece piece = {text, len};
    return cd_file_write_atomic_ex(path, &piece, 1, true, err);
}

static char *dump(json_t *value) {
    return json_dumps(value, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
}

cd_status cd_json_write_atomic(const char *path, json_t *value, cd_error *err) {
    char *text = dump(value);
    if (!text) return cd_fail(err, CD_ERR_NOMEM, "%s: cannot serialise JSON", path);
    size_t len = strlen(text);
    text[len] = '\n'; /* replaces the NUL: the file ends with a newline */
    cd_status st = write_text_atomic(path, text, len + 1, err);
    free(text);
    return st;
}

/* ---- the manifest's own checksum (schemas/shard-format.md, "Manifest checksum") ----
 * The file ends with the 54 bytes  "manifest_xxh3": "<32 lowercase hex>"<LF>}<LF>  and the hex digits are
 * the XXH3-128 (canonical, as xxhsum -H2 prints it) of every byte before them. */
#define SUM_KEY "\"manifest_xxh3\": \"" /* 18 bytes */
#define SUM_END "\"\n}\n"               /* 4 bytes */
#define SUM_KEY_LEN 18
#define SUM_END_LEN 4
#define SUM_TAIL_LEN (SUM_KEY_LEN + 32 + SUM_END_LEN)

static void xxh3_128_hex(const void *data, size_t len, char hex[33]) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(data, len));
    for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", c.digest[i]);
}

cd_status cd_manifest_write_atomic(const char *path, json_t *manifest, cd_error *err) {
    json_object_del(manifest, CD_MANIFEST_SUM_MEMBER); /* a copied manifest's old checksum */
    char *text = dump(manifest);
    if (!text) return cd_fail(err, CD_ERR_NOMEM, "%s: cannot serialise JSON", path);
    size_t len = strlen(text);
    /* jansson ends an indented non-empty object with "\n}": the checksum becomes its last member, laid
     * out as jansson would have written it. */
    if (len < 4 || strcmp(text + len - 2, "\n}")) {
        free(text);
        return cd_fail(err, CD_ERR_INTERNAL, "%s: the manifest is not a non-empty JSON object", path);
    }
    size_t body = len - 2;
    char *out = malloc(body + 3 + SUM_TAIL_LEN + 1);
    if (!out) {
        free(text);
        return cd_fail(err, CD_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(out, text, body);
    memcpy(out + body, ",\n ", 3);
    body += 3;
    free(text);
    char hex[33];
    xxh3_128_hex(out, body, hex);
    memcpy(out + body, SUM_KEY, SUM_KEY_LEN);
    memcpy(out + body + SUM_KEY_LEN, hex, 32);
    memcpy(out + body + SUM_KEY_LEN + 32, SUM_END, SUM_END_LEN);
    cd_status st = write_text_atomic(path, out, body + SUM_TAIL_LEN, err);
    free(out);
    return st;
}

cd_status cd_manifest_check_sum(const char *path, const char *text, size_t len, cd_error *err) {
    bool shaped = len >= SUM_TAIL_LEN + 2 && !memcmp(text + len - SUM_TAIL_LEN, SUM_KEY, SUM_KEY_LEN) &&
                  !memcmp(text + len - SUM_END_LEN, SUM_END, SUM_END_LEN);
    const char *want = text + len - SUM_TAIL_LEN + SUM_KEY_LEN;
    for (int i = 0; shaped && i < 32; i++)
        shaped = (want[i] >= '0' && want[i] <= '9') || (want[i] >= 'a' && want[i] <= 'f');
    if (shaped) {
        char hex[33];
        xxh3_128_hex(text, len - SUM_TAIL_LEN, hex);
        if (memcmp(hex, want, 32))
            return cd_fail(err, CD_ERR_CORRUPT,
                           "%s: damaged: the XXH3-128 of its bytes is %s, its manifest_xxh3 says %.32s", path, hex,
                           want);
        return CD_OK;
    }
    /* No checksum: an old manifest (format_version 1) gets a message that says what to do. */
    json_t *m = json_loadb(text, len, 0, NULL);
    json_int_t version = json_integer_value(json_object_get(m, "format_version"));
    bool old = m && version == 1 && !json_object_get(m, CD_MANIFEST_SUM_MEMBER);
    json_decref(m);
    if (old)
        return cd_fail(
            err, CD_ERR_UNSUPPORTED,
            "%s: format_version 1, from before manifests carried a checksum of their own: run the same "
            "`cirrdata convert` command again (it rewrites the dataset in place), or convert into a new directory",
            path);
    return cd_fail(
        err, CD_ERR_CORRUPT,
        "%s: damaged or truncated: it does not end with its manifest_xxh3 checksum (schemas/shard-format.md)", path);
}

cd_status cd_manifest_read(const char *path, char **text, size_t *len, cd_error *err) {
    char *t;
    size_t n;
    cd_status st = cd_read_text_file_len(path, 0, "manifest", &t, &n, err);
    if (st != CD_OK) return st;
    if ((st = cd_manifest_check_sum(path, t, n, err)) != CD_OK || !text) {
        free(t);
        return st;
    }
    *text = t;
    if (len) *len = n;
    return CD_OK;
}

/* ---- the source inputs a conversion records (source.inputs) ---- */

static const char *str(json_t *o, const char *k) {
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "?";
}

static void describe_file_change(json_t *a, json_t *b, const char *key, char *msg, size_t cap) {
    const char *pa = json_string_value(json_array_get(a, 0)), *pb = json_string_value(json_array_get(b, 0));
    json_int_t sa = json_integer_value(json_array_get(a, 1)), sb = json_integer_value(json_array_get(b, 1));
    json_int_t ta = json_integer_value(json_array_get(a, 2)), tb = json_integer_value(json_array_get(b, 2));
    if (!pa || !pb || strcmp(pa, pb))
        snprintf(msg, cap, "case %s: its file %s is now %s", key, pa ? pa : "?", pb ? pb : "?");
    else if (sb < 0)
        snprintf(msg, cap, "case %s: %s can no longer be read", key, pb);
    else
        snprintf(msg, cap, "case %s: %s was modified (size %lld -> %lld bytes, mtime %lld.%09lld -> %lld.%09lld s)",
                 key, pb, (long long)sa, (long long)sb, (long long)(ta / 1000000000), (long long)(ta % 1000000000),
                 (long long)(tb / 1000000000), (long long)(tb % 1000000000));
}

size_t cd_inputs_first_change(json_t *before, json_t *now, char *msg, size_t cap) {
    size_t na = json_array_size(before), nb = json_array_size(now);
    for (size_t i = 0; i < na || i < nb; i++) {
        json_t *a = json_array_get(before, i), *b = json_array_get(now, i);
        if (!a) {
            snprintf(msg, cap, "case %s is new", str(b, "key"));
            return i;
        }
        if (!b) {
            snprintf(msg, cap, "case %s is gone", str(a, "key"));
            return i;
        }
        if (json_equal(a, b)) continue;
        const char *key = str(b, "key");
        if (strcmp(str(a, "key"), key)) {
            snprintf(msg, cap, "the case list changed at %s (was %s)", key, str(a, "key"));
        } else if (strcmp(str(a, "split"), str(b, "split")) || strcmp(str(a, "sequence"), str(b, "sequence"))) {
            snprintf(msg, cap, "case %s: split or sequence changed (%s/%s -> %s/%s)", key, str(a, "split"),
                     str(a, "sequence"), str(b, "split"), str(b, "sequence"));
        } else if (!json_equal(json_object_get(a, "label"), json_object_get(b, "label"))) {
            snprintf(msg, cap, "case %s: label changed (%lld -> %lld)", key,
                     (long long)json_integer_value(json_object_get(a, "label")),
                     (long long)json_integer_value(json_object_get(b, "label")));
        } else {
            json_t *fa = json_object_get(a, "files"), *fb = json_object_get(b, "files");
            size_t k = 0;
            while (k < json_array_size(fa) && k < json_array_size(fb) &&
                   json_equal(json_array_get(fa, k), json_array_get(fb, k)))
                k++;
            if (k < json_array_size(fa) && k < json_array_size(fb))
                describe_file_change(json_array_get(fa, k), json_array_get(fb, k), key, msg, cap);
            else
                snprintf(msg, cap, "case %s: its files changed (a mask or paired image added or removed)", key);
        }
        return i;
    }
    if (cap) msg[0] = '\0';
    return SIZE_MAX;
}
