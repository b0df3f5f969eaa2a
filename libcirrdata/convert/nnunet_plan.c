/* The cases of an nnU-Net export (nnunet_export.h): read through the converter's layouts or from a
 * converted dataset's manifest, one sequence (or the T1+T2 pairs) selected, named as nnU-Net cases. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/layout.h"
#include "convert/nnunet_export.h"
#include "io/file.h"

static cd_nn_case *new_case(cd_nn_plan *p, size_t *cap, cd_error *err) {
    if (p->n == *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        cd_nn_case *v = realloc(p->cases, c * sizeof *v);
        if (!v) {
            cd_fail(err, CD_ERR_NOMEM, "out of memory");
            return NULL;
        }
        p->cases = v;
        *cap = c;
    }
    cd_nn_case *c = &p->cases[p->n++];
    memset(c, 0, sizeof *c);
    c->record = -1;
    return c;
}

/* "<prefix>_[healthy]<patient>" with characters other than letters, digits and '_.-' as '-'; keep: the
 * patient id as it is (an nnU-Net source's own identifiers). */
static cd_status make_id(char *out, size_t cap, const char *prefix, bool healthy, const char *patient, bool keep,
                         cd_error *err) {
    int n = keep ? snprintf(out, cap, "%s", patient)
                 : snprintf(out, cap, "%s_%s%s", prefix, healthy ? "healthy" : "", patient);
    if (n < 0 || (size_t)n >= cap)
        return cd_fail(err, CD_ERR_ARG, "case identifier for patient '%.100s' is too long", patient);
    for (char *s = out + (keep ? 0 : strlen(prefix) + 1); *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '.' || *s == '-'))
            *s = '-';
    return CD_OK;
}

/* Channel names from a sequence: "T1+T2" -> T1, T2. */
static cd_status set_channels(cd_nn_plan *p, const char *sequence, cd_error *err) {
    snprintf(p->sequence, sizeof p->sequence, "%s", sequence);
    char buf[128];
    snprintf(buf, sizeof buf, "%s", sequence);
    char *save = NULL;
    for (char *t = strtok_r(buf, "+", &save); t; t = strtok_r(NULL, "+", &save)) {
        if (p->nchannels == CD_NN_MAX_CHANNELS)
            return cd_fail(err, CD_ERR_UNSUPPORTED, "sequence '%s': more than %d channels", sequence,
                           CD_NN_MAX_CHANNELS);
        if (!(p->channel_names[p->nchannels++] = strdup(t))) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    if (!p->nchannels && !(p->channel_names[p->nchannels++] = strdup(sequence)))
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    return CD_OK;
}

/* The sequence to export among those present (names: distinct, in order): the asked one, or the only one. */
static cd_status choose_sequence(const char *const *names, size_t n, const char *want, const char *source,
                                 const char **out, cd_error *err) {
    char all[512] = "";
    for (size_t i = 0; i < n; i++)
        snprintf(all + strlen(all), sizeof all - strlen(all), "%s%s", i ? ", " : "", names[i]);
    if (want) {
        for (size_t i = 0; i < n; i++)
            if (!strcmp(names[i], want)) {
                *out = names[i];
                return CD_OK;
            }
        return cd_fail(err, CD_ERR_ARG, "%s: no cases of sequence '%s' (it has: %s)", source, want, n ? all : "none");
    }
    if (n == 1) {
        *out = names[0];
        return CD_OK;
    }
    if (n == 0) return cd_fail(err, CD_ERR_FORMAT, "%s: no cases to export", source);
    return cd_fail(err, CD_ERR_ARG,
                   "%s: has the sequences %s: choose one with --sequence (one nnU-Net dataset each) or pair T1 and T2 "
                   "with --pair-t1t2",
                   source, all);
}

static bool has_name(const char *const *names, size_t n, const char *s) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(names[i], s)) return true;
    return false;
}

/* The one place that reads the layouts' cd_case (its channel files and mask). Channels that are volumes
 * of one 4D file (MSD) cannot be copied file by file. */
static cd_status case_inputs(cd_nn_case *d, const cd_case *c, cd_error *err) {
    for (int k = 0; k < c->nimages && k < CD_NN_MAX_CHANNELS; k++) {
        if (c->image_volumes[k] != 0 || (k > 0 && !strcmp(c->image_paths[k], c->image_paths[0])))
            return cd_fail(err, CD_ERR_UNSUPPORTED,
                           "%s: the case's channels are volumes of one 4D file (MSD), and export-nnunet copies one "
                           "file per channel: convert the dataset first (cirrdata convert --layout nnunet) and export "
                           "the converted dataset",
                           c->image_paths[k]);
        if (!(d->image[d->nimages++] = strdup(c->image_paths[k]))) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    if (c->mask_path && !(d->mask = strdup(c->mask_path))) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    return CD_OK;
}

/* dataset.json "labels" of an nnunet source: v2 (name -> value) as it is, MSD ("0" -> name) inverted. */
static json_t *source_labels(const char *root) {
    char path[4200];
    snprintf(path, sizeof path, "%s/dataset.json", root);
    char *text;
    size_t len;
    cd_error e;
    if (cd_read_text_file_len(path, 0, "dataset description", &text, &len, &e) != CD_OK) return NULL;
    json_t *ds = json_loadb(text, len, 0, NULL);
    free(text);
    json_t *l = json_object_get(ds, "labels"), *out = NULL;
    if (json_is_object(l)) {
        const char *k;
        json_t *v;
        bool msd = json_object_size(l) > 0;
        json_object_foreach(l, k, v) if (!json_is_string(v)) msd = false;
        if (!msd) {
            out = json_deep_copy(l);
        } else {
            out = json_object();
            json_object_foreach(l, k, v) {
                char *end;
                long x = strtol(k, &end, 10);
                if (*end || end == k) {
                    json_decref(out);
                    out = NULL;
                    break;
                }
                json_object_set_new(out, json_string_value(v), json_integer(x));
            }
        }
    }
    json_decref(ds);
    return out;
}

static cd_status from_layout(const cd_nnunet_export_options *o, const char *layout, cd_nn_plan *p, cd_error *err) {
    cd_case_list l;
    cd_status st;
    const bool nnunet = !strcmp(layout, "nnunet");
    if (nnunet)
        st = cd_layout_nnunet(o->source, !o->skip_bad, -1, NULL, &l, err); /* every case, imagesTs as test */
    else
        st = cd_layout_cirrmri600(o->source, o->healthy, !o->skip_bad, &l, err);
    if (st != CD_OK) return st;
    if (o->pair_t1t2) {
        if (nnunet) {
            cd_case_list_free(&l);
            return cd_fail(err, CD_ERR_ARG, "--pair-t1t2 needs the cirrmri600 layout or a converted dataset");
        }
        /* Patients with one sequence only cannot be paired: listed as skipped whatever skip_bad says. */
        if ((st = cd_layout_pair_sequences(&l, "T1", "T2", false, err)) != CD_OK) return st;
    }
    const char **names = calloc(l.n + 1, sizeof *names);
    size_t nn = 0, cap = 0;
    if (!names) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; names && i < l.n; i++)
        if (!has_name(names, nn, l.cases[i].sequence)) names[nn++] = l.cases[i].sequence;
    const char *seq = NULL;
    if (st == CD_OK) st = choose_sequence(names, nn, o->pair_t1t2 ? "T1+T2" : o->sequence, o->source, &seq, err);
    if (st == CD_OK) st = set_channels(p, seq, err);
    for (size_t i = 0; st == CD_OK && i < l.n; i++) {
        const cd_case *c = &l.cases[i];
        if (strcmp(c->sequence, seq)) continue;
        cd_nn_case *d = new_case(p, &cap, err);
        if (!d) {
            st = CD_ERR_NOMEM;
            break;
        }
        snprintf(d->split, sizeof d->split, "%s", c->split);
        st = make_id(d->id, sizeof d->id, o->prefix ? o->prefix : "case", !strncmp(c->key, "healthy-", 8),
                     c->patient_id, nnunet && !o->prefix, err);
        if (st == CD_OK) st = case_inputs(d, c, err);
    }
    free(names);
    if (st == CD_OK && l.nskipped) {
        p->skipped = calloc(l.nskipped, sizeof *p->skipped);
        if (!p->skipped) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
        for (size_t i = 0; st == CD_OK && i < l.nskipped; i++) {
            p->skipped[i].path = strdup(l.skipped[i].path ? l.skipped[i].path : "");
            p->skipped[i].reason = strdup(l.skipped[i].reason ? l.skipped[i].reason : "");
            p->nskipped++;
        }
    }
    p->paired = o->pair_t1t2;
    if (nnunet) p->labels = source_labels(o->source);
    cd_case_list_free(&l);
    return st;
}

static cd_status from_dataset(const cd_nnunet_export_options *o, cd_nn_plan *p, cd_error *err) {
    cd_status st = cd_dataset_open(o->source, &p->ds, err);
    if (st != CD_OK) return st;
    json_t *m = json_loads(cd_dataset_manifest(p->ds), 0, NULL);
    json_t *recs = json_object_get(m, "records");
    size_t nrec = json_array_size(recs), nn = 0, cap = 0;
    const char **names = calloc(nrec + 1, sizeof *names);
    if (!names) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; names && i < nrec; i++) {
        const char *s = json_string_value(json_object_get(json_array_get(recs, i), "sequence"));
        if (s && !has_name(names, nn, s)) names[nn++] = s;
    }
    const char *seq = NULL;
    if (st == CD_OK) st = choose_sequence(names, nn, o->pair_t1t2 ? "T1+T2" : o->sequence, o->source, &seq, err);
    if (st == CD_OK) st = set_channels(p, seq, err);
    for (size_t i = 0; st == CD_OK && i < nrec; i++) {
        json_t *e = json_array_get(recs, i);
        json_t *copy = json_object_get(e, "copy");
        const char *s = json_string_value(json_object_get(e, "sequence"));
        if ((json_is_integer(copy) && json_integer_value(copy) >= 0) || !s || strcmp(s, seq)) continue;
        const char *key = json_string_value(json_object_get(e, "key")),
                   *sp = json_string_value(json_object_get(e, "split"));
        const char *pid = json_string_value(json_object_get(e, "patient_id"));
        cd_nn_case *d = new_case(p, &cap, err);
        if (!d) {
            st = CD_ERR_NOMEM;
            break;
        }
        d->record = (int64_t)i;
        snprintf(d->split, sizeof d->split, "%s", sp ? sp : "train");
        st = make_id(d->id, sizeof d->id, o->prefix ? o->prefix : "case", key && !strncmp(key, "healthy-", 8),
                     pid ? pid : "", false, err);
    }
    free(names);
    json_decref(m);
    return st;
}

static int id_cmp(const void *a, const void *b) {
    return strcmp((*(const cd_nn_case *const *)a)->id, (*(const cd_nn_case *const *)b)->id);
}

static const char *first_source(const cd_nn_case *c) { return c->nimages ? c->image[0] : "a converted record"; }

cd_status cd_nn_plan_make(const cd_nnunet_export_options *opts, const char *layout, cd_nn_plan *plan, cd_error *err) {
    memset(plan, 0, sizeof *plan);
    cd_status st = !strcmp(layout, "dataset") ? from_dataset(opts, plan, err) : from_layout(opts, layout, plan, err);
    if (st == CD_OK && plan->n == 0) st = cd_fail(err, CD_ERR_FORMAT, "%s: no cases to export", opts->source);
    if (st == CD_OK) {
        const cd_nn_case **v = malloc(plan->n * sizeof *v);
        if (!v) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
        for (size_t i = 0; v && i < plan->n; i++) v[i] = &plan->cases[i];
        if (v) qsort(v, plan->n, sizeof *v, id_cmp);
        for (size_t i = 1; v && i < plan->n && st == CD_OK; i++)
            if (!strcmp(v[i - 1]->id, v[i]->id))
                st = cd_fail(err, CD_ERR_ARG, "two cases would have the identifier '%s': %s and %s", v[i]->id,
                             first_source(v[i - 1]), first_source(v[i]));
        free(v);
    }
    if (st != CD_OK) cd_nn_plan_free(plan);
    return st;
}

void cd_nn_plan_free(cd_nn_plan *p) {
    for (size_t i = 0; i < p->n; i++) {
        for (int k = 0; k < p->cases[i].nimages; k++) free(p->cases[i].image[k]);
        free(p->cases[i].mask);
    }
    free(p->cases);
    for (size_t i = 0; i < p->nskipped; i++) {
        free(p->skipped[i].path);
        free(p->skipped[i].reason);
    }
    free(p->skipped);
    for (int k = 0; k < p->nchannels; k++) free(p->channel_names[k]);
    json_decref(p->labels);
    if (p->ds) cd_dataset_close(p->ds);
    memset(p, 0, sizeof *p);
}
