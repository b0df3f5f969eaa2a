/* Conversion identity: options hash, input file stamps (size, mtime), fingerprint, first change. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "convert/identity.h"
#include "dataset/partition.h"

static void hex64(uint64_t h, char out[17]) { snprintf(out, 17, "%016llx", (unsigned long long)h); }

static const char *relative_to(const char *root, const char *path) {
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/') n--;
    return !strncmp(path, root, n) && path[n] == '/' ? path + n + 1 : path;
}

/* [relative path, size, mtime_ns]; a file that cannot be stat'ed gets size -1 (the case is skipped when
 * read, and its appearance later changes the fingerprint). */
static json_t *file_stamp(const char *root, const char *path) {
    struct stat st;
    json_int_t size = -1, mtime = 0;
    if (stat(path, &st) == 0) {
        size = (json_int_t)st.st_size;
        mtime = (json_int_t)st.st_mtim.tv_sec * 1000000000 + (json_int_t)st.st_mtim.tv_nsec;
    }
    return json_pack("[sII]", relative_to(root, path), size, mtime);
}

static char *options_text(const cd_convert_options *o, uint64_t shard_size, json_t *aug) {
    char *recipe = cd_recipe_to_json(&o->recipe);
    char *pj = aug ? json_dumps(aug, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    size_t n = 256 + (recipe ? strlen(recipe) : 0) + (pj ? strlen(pj) : 0);
    char *t = malloc(n);
    if (t)
        snprintf(t, n, "cirrdata-convert 2|%s|%llu|%d|%d|%s|augment|%s", o->layout, (unsigned long long)shard_size,
                 o->healthy, o->pair_sequences, recipe ? recipe : "", pj ? pj : "none");
    free(recipe);
    free(pj);
    return t;
}

cd_status cd_conv_identity_init(cd_conv_identity *id, const cd_convert_options *o, const cd_case_list *l,
                                uint64_t shard_size, json_t *aug, cd_error *err) {
    memset(id, 0, sizeof *id);
    id->part_index = o->part_count > 0 ? o->part_index : 0;
    id->part_count = o->part_count > 0 ? o->part_count : 0;
    id->ncases = l->n;
    id->shard_size = shard_size;
    char *opt = options_text(o, shard_size, aug);
    id->inputs = json_array();
    if (!opt || !id->inputs) {
        free(opt);
        json_decref(id->inputs);
        id->inputs = NULL;
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    hex64(XXH3_64bits(opt, strlen(opt)), id->options);
    for (size_t i = 0; i < l->n; i++) {
        const cd_case *c = &l->cases[i];
        json_t *files = json_array();
        /* Channel 0, the mask, the other channels (the order of the earlier image, mask, image2). */
        json_array_append_new(files, file_stamp(o->root, c->image_paths[0]));
        if (c->mask_path) json_array_append_new(files, file_stamp(o->root, c->mask_path));
        for (int k = 1; k < c->nimages; k++) json_array_append_new(files, file_stamp(o->root, c->image_paths[k]));
        json_array_append_new(id->inputs, json_pack("{sssssssiso}", "key", c->key, "split", c->split, "sequence",
                                                    c->sequence, "label", c->label, "files", files));
    }
    char *in = json_dumps(id->inputs, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!in) {
        free(opt);
        cd_conv_identity_free(id);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    XXH3_state_t *s = XXH3_createState();
    XXH3_64bits_reset(s);
    XXH3_64bits_update(s, opt, strlen(opt));
    XXH3_64bits_update(s, "|inputs|", 8);
    XXH3_64bits_update(s, in, strlen(in));
    hex64(XXH3_64bits_digest(s), id->fingerprint);
    XXH3_freeState(s);
    free(in);
    free(opt);
    cd_status st = cd_part_range_of_inputs(id->inputs, id->part_count ? id->part_index : 1,
                                           id->part_count ? id->part_count : 1, &id->lo, &id->hi, &id->part_bytes, err);
    if (st != CD_OK) cd_conv_identity_free(id);
    return st;
}

void cd_conv_identity_free(cd_conv_identity *id) {
    json_decref(id->inputs);
    id->inputs = NULL;
}

static uint64_t size_or_zero(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
}

char *cd_conv_legacy_fingerprint(const cd_convert_options *o, const cd_case_list *l, size_t lo, size_t hi,
                                 uint64_t shard_size, json_t *aug) {
    XXH3_state_t *s = XXH3_createState();
    if (!s) return NULL;
    XXH3_64bits_reset(s);
    char buf[1024]; /* a case's line: key (< 400 bytes, layout.h) and the fields after it, never cut */
    char *recipe = cd_recipe_to_json(&o->recipe);
    snprintf(buf, sizeof buf, "cirrdata-convert 1|%s|%llu|%d/%d|%d|%d|%zu-%zu|", o->layout,
             (unsigned long long)shard_size, o->part_index, o->part_count, o->healthy, o->pair_sequences, lo, hi);
    XXH3_64bits_update(s, buf, strlen(buf));
    if (recipe) XXH3_64bits_update(s, recipe, strlen(recipe));
    free(recipe);
    if (aug) {
        char *pj = json_dumps(aug, JSON_COMPACT | JSON_SORT_KEYS);
        XXH3_64bits_update(s, "|augment|", 9);
        if (pj) XXH3_64bits_update(s, pj, strlen(pj));
        free(pj);
    }
    for (size_t i = 0; i < l->n; i++) {
        const cd_case *c = &l->cases[i];
        snprintf(buf, sizeof buf, "|%s|%s|%s|%d|%llu|%llu", c->key, c->split, c->sequence, c->label,
                 (unsigned long long)size_or_zero(c->image_paths[0]),
                 (unsigned long long)(c->mask_path ? size_or_zero(c->mask_path) : 0));
        XXH3_64bits_update(s, buf, strlen(buf));
    }
    char *out = malloc(17);
    if (out) hex64(XXH3_64bits_digest(s), out);
    XXH3_freeState(s);
    return out;
}
