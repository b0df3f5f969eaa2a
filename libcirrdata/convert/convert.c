/* The converter: layout -> cases -> (parallel) read, preprocess, compress -> (in order) shards ->
 * manifest. Restartable through a journal of finished shards; deterministic shard bytes. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cirrdata/convert.h"
#include "cirrdata/nifti.h"
#include "cirrdata/orient.h"
#include "cirrdata/preprocess.h"
#include "cirrdata/version.h"
#include "convert/augment_copies.h"
#include "convert/identity.h"
#include "preprocess/image_view.h"
#include "convert/journal.h"
#include "convert/layout.h"
#include "convert/record_meta.h"
#include "core/json_check.h"
#include "dataset/manifest.h"
#include "preprocess/nonfinite.h"
#include "convert/resume.h"
#include "preprocess/preprocess_impl.h"
#include "io/dir_lock.h"
#include "shard/record_impl.h"

#define PATH_CAP 4200

void cd_convert_options_init(cd_convert_options *o) {
    memset(o, 0, sizeof *o);
    o->layout = "cirrmri600";
    cd_recipe_preset("raw", &o->recipe, NULL);
    o->healthy = false;
}

static uint64_t file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* ---- one case's work (in a worker thread) ---- */

/* A case yields one record, or with augmented copies up to K + 1 (all in one shard). */
typedef struct case_result {
    bool ready;
    bool skipped;
    cd_status status;
    char message[CD_ERROR_MESSAGE_MAX];
    size_t nrec;
    cd_record_builder **builders;
    json_t **entries;
    uint64_t bytes_read;
    double augment_seconds;
} case_result;

static void case_result_clear(case_result *r) {
    for (size_t i = 0; i < r->nrec; i++) {
        cd_record_builder_destroy(r->builders[i]);
        json_decref(r->entries[i]);
    }
    free(r->builders);
    free(r->entries);
    memset(r, 0, sizeof *r);
}

/* Masks come in any integer or float dtype: labels as uint8. */
static cd_status mask_to_u8(const cd_volume *m, cd_volume **out, cd_error *err) {
    int64_t d[3];
    cd_volume_dims(m, d);
    cd_status st = cd_volume_create(d, CD_DTYPE_UINT8, out, err);
    if (st != CD_OK) return st;
    size_t n = cd_volume_count(m);
    double *v = malloc(n * sizeof *v);
    if (!v) {
        cd_volume_destroy(*out);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    cd_volume_to_float64(m, v);
    uint8_t *o = cd_volume_data(*out);
    for (size_t i = 0; i < n; i++) o[i] = (uint8_t)(!(v[i] > 0) ? 0 : v[i] >= 255 ? 255 : lrint(v[i]));
    free(v);
    double a[4][4], sp[3];
    cd_volume_affine(m, a);
    cd_volume_spacing(m, sp);
    cd_volume_set_affine(*out, a);
    cd_volume_set_spacing(*out, sp);
    return CD_OK;
}

typedef struct pipeline pipeline;

typedef struct job {
    const cd_convert_options *opts;
    const cd_case_list *cases;
    const double *target_spacing;
    cd_aug_copies *aug;        /* NULL: plain conversion */
    cd_pp_device *pp;          /* what resamples and normalises (--device) */
} job;

static uint64_t resolve_case(pipeline *p, size_t i, bool ok);

/* Builds one record from a (possibly augmented) sample and its metadata. view: where the image's chunks
 * come from when the sample has no image buffer (else NULL). */
static cd_status build_record(const cd_recipe *r, const cd_sample *s, const cd_image_view *view, json_t *meta,
                              cd_record_builder **out, cd_error *err) {
    char *text = json_dumps(meta, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    cd_status st = text ? cd_record_builder_create(text, out, err) : cd_fail(err, CD_ERR_NOMEM, "out of memory");
    free(text);
    if (st == CD_OK && view)
        st = cd_record_builder_add_tensor_fill(*out, "image", s->dtype, s->channels, s->shape, r->chunk, CD_CODEC_ZSTD,
                                               r->zstd_level, cd_image_view_fill, view, err);
    else if (st == CD_OK)
        st = cd_record_builder_add_tensor(*out, "image", s->dtype, s->channels, s->shape, r->chunk, CD_CODEC_ZSTD, r->zstd_level, s->image,
                                          err);
    if (st == CD_OK && s->mask)
        st = cd_record_builder_add_tensor(*out, "mask", CD_DTYPE_UINT8, 1, s->shape, r->chunk, CD_CODEC_ZSTD, r->zstd_level, s->mask, err);
    return st;
}

static cd_status add_record(case_result *res, cd_record_builder *b, json_t *entry) {
    cd_record_builder **nb = realloc(res->builders, (res->nrec + 1) * sizeof *nb);
    if (nb) res->builders = nb;
    json_t **ne = nb ? realloc(res->entries, (res->nrec + 1) * sizeof *ne) : NULL;
    if (ne) res->entries = ne;
    if (!nb || !ne || !entry) {
        cd_record_builder_destroy(b);
        json_decref(entry);
        return CD_ERR_NOMEM;
    }
    res->builders[res->nrec] = b;
    res->entries[res->nrec++] = entry;
    return CD_OK;
}

static void process_case(const job *jb, const cd_case *c, case_result *res, pipeline *p, size_t case_no) {
    cd_error err;
    cd_error_clear(&err);
    cd_volume *img = NULL, *msk_raw = NULL, *msk = NULL;
    cd_sample *s = NULL;
    cd_image_view view;
    bool view_used = false;
    cd_nifti_read_options ro = CD_NIFTI_READ_OPTIONS_INIT;
    ro.max_bytes = jb->opts->max_bytes;
    cd_status st = cd_nifti_read(c->image_path, &ro, &img, NULL, &err);
    res->bytes_read = file_size(c->image_path);
    cd_volume *img2 = NULL;
    if (st == CD_OK && c->image2_path) {
        st = cd_nifti_read(c->image2_path, &ro, &img2, NULL, &err);
        res->bytes_read += file_size(c->image2_path);
    }
    if (st == CD_OK && c->mask_path) {
        st = cd_nifti_read(c->mask_path, &ro, &msk_raw, NULL, &err);
        res->bytes_read += file_size(c->mask_path);
        /* NaN or infinite labels: the case is refused, or they become 0 (recipe non_finite). */
        if (st == CD_OK) st = cd_non_finite_resolve(jb->opts->recipe.non_finite, &msk_raw, c->mask_path, "the mask", &err);
        /* Masks are usually uint8 already: use them as they are. */
        if (st == CD_OK && (cd_volume_dtype(msk_raw) != CD_DTYPE_UINT8 || cd_volume_has_scaling(msk_raw)))
            st = mask_to_u8(msk_raw, &msk, &err);
    }
    const cd_volume *mask_u8 = msk ? msk : msk_raw;
    if (st == CD_OK) {
        const cd_volume *images[2] = {img, img2};
        /* Without augmented copies (which render from the sample's image) a raw image is chunked
         * straight from the source volume. */
        st = cd_preprocess_multi_view(&jb->opts->recipe, jb->target_spacing, images, img2 ? 2 : 1, mask_u8, 1, jb->pp,
                                      jb->aug ? NULL : &view, &view_used, &s, &err);
        if (st != CD_OK) {
            /* Name the files: preprocessing messages do not know them. */
            char m[CD_ERROR_MESSAGE_MAX];
            snprintf(m, sizeof m, "%s", err.message);
            cd_fail(&err, st, "%s: %s", c->image_path, m);
        }
    }
    if (st == CD_OK) {
        /* With augmented copies the sample index of this case (the plain dataset's record index)
         * is known once every earlier case has succeeded or failed. */
        uint64_t index = jb->aug ? resolve_case(p, case_no, true) : 0;
        cd_source_stats stats;
        cd_source_stats_compute(img, mask_u8, &stats);
        const char *cls = c->label >= 0 && (size_t)c->label < jb->cases->nclasses ? jb->cases->classes[c->label] : NULL;
        const cd_recipe *r = &jb->opts->recipe;
        json_t *meta = cd_record_metadata_json(c, jb->opts->root, cls, img, img2, s);
        if (!jb->aug || !jb->aug->no_original) {
            cd_record_builder *b = NULL;
            st = build_record(r, s, view_used ? &view : NULL, meta, &b, &err);
            json_t *entry = st == CD_OK ? cd_manifest_entry(c, s, &stats) : NULL;
            if (entry && jb->aug) {
                json_object_set_new(entry, "case", json_integer((json_int_t)index));
                json_object_set_new(entry, "copy", json_integer(-1));
            }
            if (st != CD_OK)
                cd_record_builder_destroy(b);
            else if (add_record(res, b, entry) != CD_OK)
                st = cd_fail(&err, CD_ERR_NOMEM, "out of memory");
        }
        if (st == CD_OK && jb->aug) {
            const uint32_t K = jb->aug->copies;
            cd_aug_copy *copies = calloc(K, sizeof *copies);
            st = copies ? cd_aug_copies_render(jb->aug, s, json_object_get(meta, "fg_locations"), index, copies, &res->augment_seconds, &err)
                        : cd_fail(&err, CD_ERR_NOMEM, "out of memory");
            for (uint32_t k = 0; st == CD_OK && k < K; k++) {
                /* The plain metadata, described anew for the copy's grid and mask, plus what was drawn. */
                json_t *cm = cd_record_metadata_json(c, jb->opts->root, cls, img, img2, &copies[k].s);
                char key[600];
                snprintf(key, sizeof key, "%s:aug%u", c->key, k);
                json_object_set_new(cm, "key", json_string(key));
                json_object_set(cm, "augmentation", copies[k].meta);
                cd_record_builder *b = NULL;
                st = build_record(r, &copies[k].s, NULL, cm, &b, &err);
                json_decref(cm);
                json_t *entry = st == CD_OK ? cd_manifest_entry(c, &copies[k].s, &stats) : NULL;
                if (entry) {
                    json_object_set_new(entry, "key", json_string(key));
                    json_object_set_new(entry, "case", json_integer((json_int_t)index));
                    json_object_set_new(entry, "copy", json_integer(k));
                }
                if (st != CD_OK)
                    cd_record_builder_destroy(b);
                else if (add_record(res, b, entry) != CD_OK)
                    st = cd_fail(&err, CD_ERR_NOMEM, "out of memory");
            }
            for (uint32_t k = 0; copies && k < K; k++) cd_aug_copy_clear(&copies[k]);
            free(copies);
        }
        json_decref(meta);
    } else if (jb->aug) {
        resolve_case(p, case_no, false);
    }
    cd_sample_destroy(s);
    cd_volume_destroy(img);
    cd_volume_destroy(img2);
    cd_volume_destroy(msk_raw);
    cd_volume_destroy(msk);
    res->status = st;
    if (st != CD_OK) {
        /* A bad input file is a skip; running out of memory or disk is not. */
        double secs = res->augment_seconds;
        uint64_t bytes = res->bytes_read;
        case_result_clear(res);
        res->augment_seconds = secs;
        res->bytes_read = bytes;
        res->status = st;
        res->skipped = st == CD_ERR_FORMAT || st == CD_ERR_UNSUPPORTED || st == CD_ERR_TRUNCATED || st == CD_ERR_CORRUPT ||
                       st == CD_ERR_LIMIT || st == CD_ERR_IO;
        snprintf(res->message, sizeof res->message, "%s", err.message);
    }
}

/* ---- the pipeline: workers fill a window of slots, the writer drains them in case order ---- */

struct pipeline {
    job jb;
    size_t lo, hi;            /* cases to do: [lo, hi) */
    size_t window;
    case_result *slots;       /* slot of case i: slots[i % window] */
    size_t next_claim;        /* next case a worker takes */
    size_t next_write;        /* next case the writer needs */
    bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Augmented copies: the outcome of each case's preprocessing, in case order, gives every case
     * its sample index (the count of good cases before it) without waiting for the writer. */
    size_t *res_case;         /* per window slot: the case that resolved there */
    int8_t *res_state;        /* 1 good, 2 failed, 0 not yet */
    uint64_t *res_index;
    size_t resolved_upto;     /* every case before it is resolved */
    uint64_t good;            /* good cases before resolved_upto (plus the base) */
};

/* Records case i's outcome and, for a good case, waits until every earlier case is resolved and
 * returns its sample index. */
static uint64_t resolve_case(pipeline *p, size_t i, bool ok) {
    pthread_mutex_lock(&p->mu);
    size_t w = i % p->window;
    p->res_case[w] = i;
    p->res_state[w] = ok ? 1 : 2;
    while (p->resolved_upto < p->hi && p->res_case[p->resolved_upto % p->window] == p->resolved_upto &&
           p->res_state[p->resolved_upto % p->window]) {
        size_t q = p->resolved_upto % p->window;
        if (p->res_state[q] == 1) p->res_index[q] = p->good++;
        p->resolved_upto++;
    }
    pthread_cond_broadcast(&p->cv);
    while (ok && !p->stop && p->resolved_upto <= i) pthread_cond_wait(&p->cv, &p->mu);
    uint64_t index = p->res_index[w];
    pthread_mutex_unlock(&p->mu);
    return index;
}

static void *worker_main(void *arg) {
    pipeline *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->next_claim < p->hi && p->next_claim >= p->next_write + p->window) pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop || p->next_claim >= p->hi) break;
        size_t i = p->next_claim++;
        pthread_mutex_unlock(&p->mu);
        case_result r;
        memset(&r, 0, sizeof r);
        process_case(&p->jb, &p->jb.cases->cases[i], &r, p, i);
        pthread_mutex_lock(&p->mu);
        r.ready = true;
        p->slots[i % p->window] = r;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- the conversion's state: what is written, journaled as shards finish ---- */

#define DIR_CAP 3800

typedef struct convert_state {
    const cd_convert_options *opts;
    const cd_conv_identity *id;
    char dir[DIR_CAP];
    cd_journal journal;
    json_t *shards;     /* finished: [{path, size, records, xxh3_128, end_case}] */
    json_t *entries;    /* manifest entries of the records in finished shards */
    json_t *skipped;    /* [{case, path, reason}] */
    size_t journaled_entries, journaled_skipped; /* how many of each the journal holds */
    json_t *resolved;
    json_t *augmentation; /* the manifest's "augmentation" object, or NULL */
    const char *device;   /* what preprocessed: "cpu" or "vulkan" (the manifest's "device") */
} convert_state;

/* A finished shard, its records' entries and the skips since the last one, as one journal line. */
static cd_status journal_shard(convert_state *cs, json_t *shard, cd_error *err) {
    json_t *entries = json_array(), *skipped = json_array();
    for (size_t i = cs->journaled_entries; i < json_array_size(cs->entries); i++) json_array_append(entries, json_array_get(cs->entries, i));
    for (size_t i = cs->journaled_skipped; i < json_array_size(cs->skipped); i++) json_array_append(skipped, json_array_get(cs->skipped, i));
    json_t *line = json_pack("{sOsoso}", "shard", shard, "entries", entries, "skipped", skipped);
    cd_status st = line ? cd_journal_append(&cs->journal, line, err) : cd_fail(err, CD_ERR_NOMEM, "out of memory");
    json_decref(line);
    cs->journaled_entries = json_array_size(cs->entries);
    cs->journaled_skipped = json_array_size(cs->skipped);
    return st;
}

/* Takes over the shards an interrupted run finished (cd_resume_prepare kept them). */
static void take_over(convert_state *cs, json_t *lines) {
    size_t i, j;
    json_t *line, *x;
    json_array_foreach(lines, i, line) {
        json_array_append(cs->shards, json_object_get(line, "shard"));
        json_array_foreach(json_object_get(line, "entries"), j, x) json_array_append(cs->entries, x);
        json_array_foreach(json_object_get(line, "skipped"), j, x) json_array_append(cs->skipped, x);
    }
    cs->journaled_entries = json_array_size(cs->entries);
    cs->journaled_skipped = json_array_size(cs->skipped);
}

static cd_status make_dir(const char *p, cd_error *err) {
    if (mkdir(p, 0755) != 0 && errno != EEXIST) return cd_fail(err, CD_ERR_IO, "%s: cannot create directory: %s", p, strerror(errno));
    return CD_OK;
}

/* shards/ must be a folder of the output, not a link that would put the shards elsewhere. */
static cd_status make_shard_dir(const char *p, cd_error *err) {
    cd_status st = make_dir(p, err);
    struct stat sb;
    if (st == CD_OK && (lstat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)))
        st = cd_fail(err, CD_ERR_ARG, "%s: not a folder (a symbolic link or a file): convert writes shards only inside --out", p);
    return st;
}

/* nnU-Net's target spacing: per-axis median of the (RAS) source spacings; when the dataset is
 * anisotropic (max/min median > threshold) the coarse axis takes its 10th percentile instead. */
static cd_status resolve_median_spacing(const cd_convert_options *o, cd_case_list *l, double out[3], cd_error *err) {
    double *sp = malloc((l->n ? l->n : 1) * 3 * sizeof *sp);
    if (!sp) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++) {
        cd_nifti_header h;
        cd_error e;
        if (cd_nifti_read_header(l->cases[i].image_path, &h, &e) != CD_OK) continue; /* reported when processed */
        cd_orientation ornt;
        if (cd_orientation_from_affine(h.affine, &ornt, NULL) != CD_OK || ornt.world_axis[0] < 0 || ornt.world_axis[1] < 0 ||
            ornt.world_axis[2] < 0)
            continue;
        for (int a = 0; a < 3; a++) sp[3 * k + ornt.world_axis[a]] = a < h.ndim ? h.pixdim[a + 1] : 1.0;
        k++;
    }
    if (!k) {
        free(sp);
        return cd_fail(err, CD_ERR_FORMAT, "%s: no readable image headers to compute the median spacing from", o->root);
    }
    double *col = malloc(k * sizeof *col);
    double p10[3];
    for (int a = 0; a < 3; a++) {
        for (size_t i = 0; i < k; i++) col[i] = sp[3 * i + a];
        out[a] = cd_percentile_f64(col, k, 50);
        p10[a] = cd_percentile_f64(col, k, 10);
    }
    int coarse = 0, fine = 0;
    for (int a = 1; a < 3; a++) {
        if (out[a] > out[coarse]) coarse = a;
        if (out[a] < out[fine]) fine = a;
    }
    if (out[coarse] / out[fine] > o->recipe.anisotropy_threshold) out[coarse] = p10[coarse];
    free(col);
    free(sp);
    return CD_OK;
}

static cd_status write_manifest(convert_state *cs, const cd_case_list *l, cd_error *err) {
    const cd_convert_options *o = cs->opts;
    json_t *m = json_object();
    json_object_set_new(m, "format", json_string("cirrdata-dataset"));
    json_object_set_new(m, "format_version", json_integer(CD_MANIFEST_FORMAT_VERSION));
    char by[64];
    snprintf(by, sizeof by, "libcirrdata %s", cd_version());
    json_object_set_new(m, "created_by", json_string(by));
    char *recipe = cd_recipe_to_json(&o->recipe);
    json_object_set_new(m, "recipe", recipe ? json_loads(recipe, 0, NULL) : json_null());
    free(recipe);
    json_object_set(m, "resolved", cs->resolved);
    if (cs->augmentation) json_object_set(m, "augmentation", cs->augmentation);
    if (cs->device) json_object_set_new(m, "device", json_string(cs->device));
    json_t *src = json_object();
    json_object_set_new(src, "layout", json_string(o->layout));
    json_object_set_new(src, "root", json_string(o->root));
    if (!strcmp(o->layout, "cirrmri600")) json_object_set_new(src, "healthy", json_string(o->healthy ? "class" : "skip"));
    if (o->pair_sequences) json_object_set_new(src, "pairing", json_string("T1+T2"));
    json_object_set_new(src, "fingerprint", json_string(cs->id->fingerprint));
    json_object_set_new(src, "options", json_string(cs->id->options));
    json_t *sk = json_array();
    size_t i;
    json_t *x;
    json_array_foreach(cs->skipped, i, x) {
        json_t *e = json_object();
        json_object_set(e, "path", json_object_get(x, "path"));
        json_object_set(e, "reason", json_object_get(x, "reason"));
        json_array_append_new(sk, e);
    }
    for (i = 0; i < l->nskipped; i++) {
        json_t *e = json_object();
        json_object_set_new(e, "path", json_string(l->skipped[i].path));
        json_object_set_new(e, "reason", json_string(l->skipped[i].reason));
        json_array_append_new(sk, e);
    }
    json_object_set_new(src, "skipped", sk);
    json_object_set(src, "inputs", cs->id->inputs);
    json_object_set_new(m, "source", src);
    if (o->part_count > 0)
        json_object_set_new(m, "part", json_pack("{sisisIsIsI}", "index", o->part_index, "count", o->part_count, "first_case",
                                                 (json_int_t)cs->id->lo, "end_case", (json_int_t)cs->id->hi, "cases",
                                                 (json_int_t)cs->id->ncases));
    json_t *classes = json_array();
    for (i = 0; i < l->nclasses; i++) json_array_append_new(classes, json_string(l->classes[i]));
    json_object_set_new(m, "classes", classes);
    json_object_set_new(m, "counts", cd_manifest_counts(cs->entries));
    /* Statistics describe the source cases: one entry per case (copies repeat the case's source). */
    json_t *per_case = json_array();
    json_array_foreach(cs->entries, i, x) {
        json_t *cp = json_object_get(x, "copy");
        if (!cp || json_integer_value(cp) == (json_object_get(cs->augmentation, "no_original") == json_true() ? 0 : -1))
            json_array_append(per_case, x);
    }
    json_object_set_new(m, "statistics", cd_manifest_statistics(per_case));
    json_decref(per_case);
    json_t *tensors = json_object(), *ti = json_object(), *tm = json_object();
    /* The image dtype the records really have ("auto" recipes keep each source's lossless dtype). */
    const char *dt = NULL;
    bool mixed = false;
    json_t *x2;
    size_t i2;
    json_array_foreach(cs->entries, i2, x2) {
        const char *d = json_string_value(json_object_get(x2, "dtype"));
        if (!d) continue;
        if (dt && strcmp(dt, d)) mixed = true;
        if (!dt) dt = d;
    }
    json_object_set_new(ti, "dtype", json_string(mixed ? "mixed" : dt ? dt : "float32"));
    json_object_set_new(ti, "channels", json_integer(o->pair_sequences ? 2 : o->recipe.slices ? o->recipe.slice_channels : 1));
    json_t *chunk = json_array();
    for (int a = 0; a < 3; a++) json_array_append_new(chunk, json_integer(o->recipe.chunk[a]));
    json_object_set_new(ti, "chunk", chunk);
    json_object_set_new(tm, "dtype", json_string("uint8"));
    json_object_set_new(tm, "channels", json_integer(1));
    json_object_set(tm, "chunk", chunk);
    json_object_set_new(tensors, "image", ti);
    json_object_set_new(tensors, "mask", tm);
    json_object_set_new(m, "tensors", tensors);
    json_t *shards = json_array();
    json_array_foreach(cs->shards, i, x) {
        json_t *e = json_object();
        json_object_set(e, "path", json_object_get(x, "path"));
        json_object_set(e, "size", json_object_get(x, "size"));
        json_object_set(e, "records", json_object_get(x, "records"));
        json_object_set(e, "xxh3_128", json_object_get(x, "xxh3_128"));
        json_array_append_new(shards, e);
    }
    json_object_set_new(m, "shards", shards);
    json_object_set(m, "records", cs->entries);
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/manifest.json", cs->dir);
    cd_status st = cd_manifest_write_atomic(path, m, err);
    json_decref(m);
    return st;
}

/* Records the skip of case i (with its reason) in the state. */
static void note_skip(convert_state *cs, size_t i, const char *path, const char *reason) {
    json_t *e = json_object();
    json_object_set_new(e, "case", json_integer((json_int_t)i));
    json_object_set_new(e, "path", json_string(path));
    json_object_set_new(e, "reason", json_string(reason));
    json_array_append_new(cs->skipped, e);
}

static cd_status finish_shard(convert_state *cs, cd_shard_writer **w, const char *rel, size_t end_case, cd_convert_result *res,
                              cd_error *err) {
    uint64_t size;
    char hex[33];
    cd_status st = cd_shard_writer_finish(*w, &size, hex, err);
    uint64_t nrec = cd_shard_writer_records(*w);
    cd_shard_writer_destroy(*w);
    *w = NULL;
    if (st != CD_OK) return st;
    json_t *e = json_object();
    json_object_set_new(e, "path", json_string(rel));
    json_object_set_new(e, "size", json_integer((json_int_t)size));
    json_object_set_new(e, "records", json_integer((json_int_t)nrec));
    json_object_set_new(e, "xxh3_128", json_string(hex));
    json_object_set_new(e, "end_case", json_integer((json_int_t)end_case));
    json_array_append_new(cs->shards, e);
    res->bytes_written += size;
    return journal_shard(cs, e, err);
}

/* Fills res from a finished dataset of this conversion found in the output folder. */
static void result_from_manifest(json_t *m, cd_convert_result *res) {
    res->records = json_array_size(json_object_get(m, "records"));
    res->shards = json_array_size(json_object_get(m, "shards"));
    res->resumed_records = res->records;
    const char *dev = json_string_value(json_object_get(json_object_get(m, "augmentation"), "device"));
    if (!dev) dev = json_string_value(json_object_get(m, "device"));
    snprintf(res->device, sizeof res->device, "%s", dev ? dev : "");
}

cd_status cd_convert(const cd_convert_options *o, cd_convert_result *res, cd_error *err) {
    cd_convert_result local;
    if (!res) res = &local;
    memset(res, 0, sizeof *res);
    if (!o || !o->root || !o->out_dir || !o->layout) return cd_fail(err, CD_ERR_ARG, "cd_convert: missing root, out_dir or layout");
    if (strlen(o->out_dir) >= DIR_CAP) return cd_fail(err, CD_ERR_ARG, "%.100s...: output path too long", o->out_dir);
    if (o->part_count < 0 || (o->part_count > 0 && (o->part_index < 1 || o->part_index > o->part_count)))
        return cd_fail(err, CD_ERR_ARG, "part %d/%d: I must be in 1..N", o->part_index, o->part_count);
    const double t0 = cd_now_s();
    const uint64_t shard_size = o->shard_size ? o->shard_size : ((uint64_t)256 << 20);
    cd_case_list cases;
    cd_status st;
    if (!strcmp(o->layout, "cirrmri600"))
        st = cd_layout_cirrmri600(o->root, o->healthy, o->strict, &cases, err);
    else if (!strcmp(o->layout, "nnunet"))
        st = cd_layout_nnunet(o->root, o->strict, &cases, err);
    else
        return cd_fail(err, CD_ERR_ARG, "unknown layout '%s' (cirrmri600 or nnunet)", o->layout);
    if (st == CD_OK && o->pair_sequences) {
        if (strcmp(o->layout, "cirrmri600")) {
            cd_case_list_free(&cases);
            return cd_fail(err, CD_ERR_ARG, "sequence pairing needs the cirrmri600 layout");
        }
        st = cd_layout_pair_sequences(&cases, "T1", "T2", o->strict, err);
    }
    if (st != CD_OK) return st;

    size_t lo = 0, hi = cases.n;
    if (o->part_count > 0) {
        lo = cases.n * (size_t)(o->part_index - 1) / (size_t)o->part_count;
        hi = cases.n * (size_t)o->part_index / (size_t)o->part_count;
    }
    convert_state cs;
    memset(&cs, 0, sizeof cs);
    cs.opts = o;
    cs.journal.fd = -1;
    snprintf(cs.dir, sizeof cs.dir, "%s", o->out_dir);
    cs.shards = json_array();
    cs.entries = json_array();
    cs.skipped = json_array();
    cs.resolved = json_object();
    bool augmenting = o->augment && strcmp(o->augment, "none");
    cd_aug_copies ac;
    memset(&ac, 0, sizeof ac);
    cd_conv_identity id;
    memset(&id, 0, sizeof id);
    cd_resume rs;
    memset(&rs, 0, sizeof rs);
    cd_dir_lock lock = {.fd = -1};
    char *legacy = NULL;
    cd_pp_device pp;
    memset(&pp, 0, sizeof pp);
    cd_shard_writer *w = NULL;
    pipeline p;
    memset(&p, 0, sizeof p);
    pthread_t *threads = NULL;
    int nthreads = 0;
    double target[3] = {0, 0, 0};
    char path[PATH_CAP];
    bool buffer_cache = false;
    if (augmenting && (st = cd_aug_copies_init(&ac, o, err)) != CD_OK) {
        augmenting = false;
        goto done;
    }
    /* What was used to compute is not part of what was computed: the device stays out of the identity. */
    json_t *aug_id = NULL;
    if (augmenting) {
        cs.augmentation = cd_aug_copies_manifest(&ac);
        aug_id = json_deep_copy(cs.augmentation);
        json_object_del(aug_id, "device");
    }
    st = cd_conv_identity_init(&id, o, &cases, shard_size, aug_id, lo, hi, err);
    legacy = cd_conv_legacy_fingerprint(o, &cases, lo, hi, shard_size, aug_id);
    json_decref(aug_id);
    if (st != CD_OK) goto done;
    cs.id = &id;

    /* One writer per output folder; then what the folder holds decides: done, resume, or refuse. */
    if ((st = make_dir(cs.dir, err)) != CD_OK) goto done;
    if ((st = cd_dir_lock_acquire(cs.dir, "convert", &lock, err)) != CD_OK) goto done;
    snprintf(path, sizeof path, "%s/shards", cs.dir);
    if ((st = make_shard_dir(path, err)) != CD_OK) goto done;
    if ((st = cd_resume_prepare(cs.dir, &id, legacy, &rs, err)) != CD_OK) goto done;
    snprintf(res->note, sizeof res->note, "%s", rs.note);
    if (rs.finished) {
        result_from_manifest(rs.manifest, res);
        goto done;
    }
    take_over(&cs, rs.lines);
    json_t *header = cd_resume_journal_header(&id);
    snprintf(path, sizeof path, "%s/" CD_JOURNAL_NAME, cs.dir);
    st = header ? cd_journal_start(path, header, rs.lines, &cs.journal, err) : cd_fail(err, CD_ERR_NOMEM, "out of memory");
    json_decref(header);
    if (st != CD_OK) goto done;

    if (o->recipe.resample == CD_RESAMPLE_MEDIAN_SPACING) {
        if ((st = resolve_median_spacing(o, &cases, target, err)) != CD_OK) goto done;
        json_object_set_new(cs.resolved, "target_spacing", cd_json_vec3(target));
    }
    res->resumed_records = json_array_size(cs.entries);

    /* Workers. Each case's big buffers (file, voxels, sample, compressed chunks) reuse the memory of
     * earlier cases: fresh mappings would be zeroed by the kernel page by page. */
    cd_buffer_cache_begin();
    buffer_cache = true;
    nthreads = o->threads > 0 ? o->threads : cd_thread_count(0);
    p.jb.opts = o;
    p.jb.cases = &cases;
    p.jb.target_spacing = target;
    if ((st = cd_pp_device_init(&pp, o->device, err)) != CD_OK) goto done;
    p.jb.pp = &pp;
    p.lo = rs.resume_case;
    p.hi = hi;
    p.next_claim = p.next_write = p.lo;
    p.window = 2 * (size_t)nthreads;
    p.slots = calloc(p.window, sizeof *p.slots);
    threads = calloc((size_t)nthreads, sizeof *threads);
    p.res_case = calloc(p.window, sizeof *p.res_case);
    p.res_state = calloc(p.window, sizeof *p.res_state);
    p.res_index = calloc(p.window, sizeof *p.res_index);
    if (augmenting) {
        p.jb.aug = &ac;
        p.resolved_upto = p.lo;
        /* Sample indices go on from the last case already written (a resumed run), else from the
         * part's first case (see schemas/shard-format.md on --part). */
        size_t ne = json_array_size(cs.entries);
        p.good = ne ? (uint64_t)json_integer_value(json_object_get(json_array_get(cs.entries, ne - 1), "case")) + 1 : (uint64_t)lo;
        for (size_t k = 0; k < p.window; k++) p.res_case[k] = SIZE_MAX;
    }
    if (!p.slots || !threads || !p.res_case || !p.res_state || !p.res_index) {
        st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
        goto done;
    }
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    int started = 0;
    for (; started < nthreads; started++)
        if (pthread_create(&threads[started], NULL, worker_main, &p) != 0) break;
    if (started == 0) {
        st = cd_fail(err, CD_ERR_INTERNAL, "cannot start worker threads");
        goto join;
    }

    /* The writer: cases in order; a new shard when the next record would pass the target size. */
    size_t seq = json_array_size(cs.shards);
    char rel[256];
    const int part = o->part_count > 0 ? o->part_index : 0;
    for (size_t i = p.lo; i < hi && st == CD_OK; i++) {
        case_result r;
        pthread_mutex_lock(&p.mu);
        while (!p.slots[i % p.window].ready) pthread_cond_wait(&p.cv, &p.mu);
        r = p.slots[i % p.window];
        memset(&p.slots[i % p.window], 0, sizeof r);
        p.next_write = i + 1;
        pthread_cond_broadcast(&p.cv);
        pthread_mutex_unlock(&p.mu);
        res->bytes_read += r.bytes_read;
        if (r.status != CD_OK) {
            if (!r.skipped || o->strict)
                st = cd_fail(err, r.status, "%s", r.message);
            else
                note_skip(&cs, i, cases.cases[i].image_path, r.message);
            case_result_clear(&r);
            if (o->progress) o->progress(o->progress_user, i + 1 - lo, hi - lo, res->bytes_read);
            continue;
        }
        /* A case's records stay together in one shard (the journal resumes at case boundaries). */
        uint64_t rsize = 0;
        for (size_t k = 0; k < r.nrec; k++) rsize += cd_record_builder_size(r.builders[k]);
        res->augment_seconds += r.augment_seconds;
        if (w && cd_shard_writer_records(w) > 0 && cd_shard_writer_bytes(w) + rsize > shard_size) {
            st = finish_shard(&cs, &w, rel, i, res, err);
            seq++;
        }
        if (st == CD_OK && !w) {
            snprintf(rel, sizeof rel, "shards/shard-%03d-%05zu.cds", part, seq);
            snprintf(path, sizeof path, "%s/%.255s", cs.dir, rel);
            st = cd_shard_writer_create(path, &w, err);
        }
        for (size_t k = 0; st == CD_OK && k < r.nrec; k++) {
            json_object_set_new(r.entries[k], "shard", json_integer((json_int_t)seq));
            json_object_set_new(r.entries[k], "index", json_integer((json_int_t)cd_shard_writer_records(w)));
            st = cd_shard_writer_append(w, r.builders[k], err);
            if (st == CD_OK) json_array_append(cs.entries, r.entries[k]);
        }
        case_result_clear(&r);
        if (o->progress) o->progress(o->progress_user, i + 1 - lo, hi - lo, res->bytes_read);
    }
    if (st == CD_OK && w) st = finish_shard(&cs, &w, rel, hi, res, err);

join:
    pthread_mutex_lock(&p.mu);
    p.stop = true;
    pthread_cond_broadcast(&p.cv);
    pthread_mutex_unlock(&p.mu);
    for (int t = 0; t < started; t++) pthread_join(threads[t], NULL);
    for (size_t k = 0; k < p.window; k++) case_result_clear(&p.slots[k]);
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.cv);
    if (augmenting) {
        snprintf(res->device, sizeof res->device, "%s", ac.gpu && !atomic_load(&ac.gpu_failed) ? "vulkan" : "cpu");
        snprintf(res->device_note, sizeof res->device_note, "%s", ac.device_note);
        if (cs.augmentation) json_object_set_new(cs.augmentation, "device", json_string(res->device));
    }
    /* the recipe's resampling and normalisation (not part of the fingerprint: same data either way) */
    cs.device = cd_pp_device_used(&pp);
    if (!augmenting) snprintf(res->device, sizeof res->device, "%s", cs.device);
    if (!res->device_note[0]) snprintf(res->device_note, sizeof res->device_note, "%s", pp.note);
    if (st == CD_OK) st = write_manifest(&cs, &cases, err);
    cd_journal_close(&cs.journal);
    if (st == CD_OK) {
        snprintf(path, sizeof path, "%s/" CD_JOURNAL_NAME, cs.dir);
        unlink(path);
        res->records = json_array_size(cs.entries);
        res->shards = json_array_size(cs.shards);
        res->skipped = json_array_size(cs.skipped) + cases.nskipped;
    }
done:
    cd_shard_writer_destroy(w); /* removes an unfinished shard's temporary file */
    if (buffer_cache) cd_buffer_cache_end();
    free(p.slots);
    free(p.res_case);
    free(p.res_state);
    free(p.res_index);
    free(threads);
    json_decref(cs.augmentation);
    if (augmenting) cd_aug_copies_free(&ac);
    cd_pp_device_free(&pp);
    cd_journal_close(&cs.journal);
    cd_dir_lock_release(&lock);
    cd_resume_free(&rs);
    cd_conv_identity_free(&id);
    free(legacy);
    json_decref(cs.shards);
    json_decref(cs.entries);
    json_decref(cs.skipped);
    json_decref(cs.resolved);
    cd_case_list_free(&cases);
    res->seconds = cd_now_s() - t0;
    return st;
}
