/* The end of a conversion: what computed (cpu or vulkan) reported, the manifest written, the resume
 * journal removed, the result's counts. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cirrdata/version.h"
#include "convert/convert_impl.h"
#include "dataset/manifest.h"
#include "dataset/partition.h"

/* The manifest's "source": layout, root, fingerprint, options, skipped files and inputs. */
static json_t *manifest_source(const convert_state *cs, const cd_case_list *l) {
    const cd_convert_options *o = cs->opts;
    json_t *src = json_object();
    json_object_set_new(src, "layout", json_string(o->layout));
    json_object_set_new(src, "root", json_string(o->root));
    if (!strcmp(o->layout, "cirrmri600"))
        json_object_set_new(src, "healthy", json_string(o->healthy ? "class" : "skip"));
    if (o->pair_sequences) json_object_set_new(src, "pairing", json_string("T1+T2"));
    if (l->fold >= 0) {
        /* Which nnU-Net fold made the valid split, and from what. */
        json_t *sp = json_object();
        json_object_set_new(sp, "fold", json_integer(l->fold));
        json_object_set_new(sp, "source", json_string(l->split_source ? "file" : "default"));
        if (l->split_source) json_object_set_new(sp, "file", json_string(l->split_source));
        json_object_set_new(src, "split", sp);
    }
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
    return src;
}

/* The manifest's "tensors": image and mask, their dtype, channels and chunk. */
static json_t *manifest_tensors(const convert_state *cs, const cd_case_list *l) {
    const cd_convert_options *o = cs->opts;
    json_t *tensors = json_object(), *ti = json_object(), *tm = json_object();
    json_object_set_new(ti, "dtype", json_string(cd_manifest_image_dtype(cs->entries)));
    json_object_set_new(ti, "channels",
                        json_integer(l->n && l->cases[0].nimages > 1 ? l->cases[0].nimages
                                     : o->recipe.slices              ? o->recipe.slice_channels
                                                                     : 1));
    json_t *chunk = json_array();
    for (int a = 0; a < 3; a++) json_array_append_new(chunk, json_integer(o->recipe.chunk[a]));
    json_object_set_new(ti, "chunk", chunk);
    json_object_set_new(tm, "dtype", json_string("uint8"));
    json_object_set_new(tm, "channels", json_integer(1));
    json_object_set(tm, "chunk", chunk);
    json_object_set_new(tensors, "image", ti);
    json_object_set_new(tensors, "mask", tm);
    return tensors;
}

/* The manifest's "shards" (without the journal's end_case). */
static json_t *manifest_shards(const convert_state *cs) {
    json_t *shards = json_array();
    size_t i;
    json_t *x;
    json_array_foreach(cs->shards, i, x) {
        json_t *e = json_object();
        json_object_set(e, "path", json_object_get(x, "path"));
        json_object_set(e, "size", json_object_get(x, "size"));
        json_object_set(e, "records", json_object_get(x, "records"));
        json_object_set(e, "xxh3_128", json_object_get(x, "xxh3_128"));
        json_array_append_new(shards, e);
    }
    return shards;
}

/* The manifest's head: format, creator, recipe, resolved values, augmentation and device. */
static void manifest_head(json_t *m, const convert_state *cs) {
    json_object_set_new(m, "format", json_string("cirrdata-dataset"));
    json_object_set_new(m, "format_version", json_integer(CD_MANIFEST_FORMAT_VERSION));
    char by[64];
    snprintf(by, sizeof by, "libcirrdata %s", cd_version());
    json_object_set_new(m, "created_by", json_string(by));
    char *recipe = cd_recipe_to_json(&cs->opts->recipe);
    json_object_set_new(m, "recipe", recipe ? json_loads(recipe, 0, NULL) : json_null());
    free(recipe);
    json_object_set(m, "resolved", cs->resolved);
    if (cs->augmentation) json_object_set(m, "augmentation", cs->augmentation);
    if (cs->device) json_object_set_new(m, "device", json_string(cs->device));
}

/* The manifest's "part": which cases this part holds and what merge needs to lay out the shards of all
 * the parts as one conversion would (schemas/shard-format.md, "Parts of a conversion"). */
static json_t *manifest_part(const convert_state *cs) {
    const cd_conv_identity *id = cs->id;
    char keys[17];
    cd_part_keys_hash(id->inputs, id->lo, id->hi, keys);
    return json_pack("{sisisIsIsIsssIsssIsI}", "index", id->part_index, "count", id->part_count, "first_case",
                     (json_int_t)id->lo, "end_case", (json_int_t)id->hi, "cases", (json_int_t)id->ncases, "split",
                     CD_PART_SPLIT, "bytes", (json_int_t)id->part_bytes, "keys_xxh3", keys, "shard_size",
                     (json_int_t)id->shard_size, "skipped_cases", (json_int_t)json_array_size(cs->skipped));
}

static cd_status write_manifest(const convert_state *cs, const cd_case_list *l, cd_error *err) {
    const cd_convert_options *o = cs->opts;
    json_t *m = json_object();
    manifest_head(m, cs);
    json_object_set_new(m, "source", manifest_source(cs, l));
    if (o->part_count > 0) json_object_set_new(m, "part", manifest_part(cs));
    json_t *classes = json_array();
    for (size_t i = 0; i < l->nclasses; i++) json_array_append_new(classes, json_string(l->classes[i]));
    json_object_set_new(m, "classes", classes);
    json_object_set_new(m, "counts", cd_manifest_counts(cs->entries));
    json_object_set_new(m, "statistics", cd_manifest_case_statistics(cs->entries, cs->augmentation));
    json_object_set_new(m, "tensors", manifest_tensors(cs, l));
    json_object_set_new(m, "shards", manifest_shards(cs));
    json_object_set(m, "records", cs->entries);
    char path[CD_CONV_PATH_CAP];
    snprintf(path, sizeof path, "%s/manifest.json", cs->dir);
    cd_status st = cd_manifest_write_atomic(path, m, err);
    json_decref(m);
    return st;
}

void cd_conv_result_from_manifest(json_t *m, cd_convert_result *res) {
    res->records = json_array_size(json_object_get(m, "records"));
    res->shards = json_array_size(json_object_get(m, "shards"));
    res->resumed_records = res->records;
    const char *dev = json_string_value(json_object_get(json_object_get(m, "augmentation"), "device"));
    if (!dev) dev = json_string_value(json_object_get(m, "device"));
    snprintf(res->device, sizeof res->device, "%s", dev ? dev : "");
}

/* What computed: the copies' warp (augmenting) and the recipe's resampling and normalisation (not
 * part of the fingerprint: same data either way). */
static void report_device(conversion *cv) {
    cd_convert_result *res = cv->res;
    if (cv->augmenting) {
        snprintf(res->device, sizeof res->device, "%s", cd_aug_copies_device(&cv->ac));
        if (cv->cs.augmentation) json_object_set_new(cv->cs.augmentation, "device", json_string(res->device));
    }
    cv->cs.device = cd_pp_device_used(&cv->pp);
    if (!cv->augmenting) snprintf(res->device, sizeof res->device, "%s", cv->cs.device);
    if (cv->policy.ready) {
        char name[320];
        cd_device_policy_describe(&cv->policy, res->device_note, sizeof res->device_note, name, sizeof name);
        if (!res->device_note[0] && !strncmp(name, "cpu (", 5)) /* auto without a hardware GPU: why */
            snprintf(res->device_note, sizeof res->device_note, "%.255s", name);
    }
}

cd_status cd_conv_finish(conversion *cv, cd_status st, cd_error *err) {
    report_device(cv);
    if (st == CD_OK) st = write_manifest(&cv->cs, &cv->cases, err);
    cd_journal_close(&cv->cs.journal);
    if (st != CD_OK) return st;
    char path[CD_CONV_PATH_CAP];
    snprintf(path, sizeof path, "%s/" CD_JOURNAL_NAME, cv->cs.dir);
    unlink(path);
    cv->res->records = json_array_size(cv->cs.entries);
    cv->res->shards = json_array_size(cv->cs.shards);
    cv->res->skipped = json_array_size(cv->cs.skipped) + cv->cases.nskipped;
    return CD_OK;
}
