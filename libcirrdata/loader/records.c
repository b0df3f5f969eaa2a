/* The loader's records: the selected splits' records with what sampling needs of their metadata, and
 * the sample shape the mode gives them. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "loader/loader_impl.h"

/* The foreground locations (metadata "fg_locations": voxels inside the record) and the mask's
 * bounding box ("mask_bbox") of a record. */
static void read_sampling_meta(rec_info *ri) {
    json_t *meta = json_loads(cd_record_metadata(ri->rec), 0, NULL);
    json_t *fg = json_object_get(meta, "fg_locations"), *bb = json_object_get(meta, "mask_bbox");
    if (json_is_array(fg) && json_array_size(fg)) {
        ri->fg = calloc(json_array_size(fg), sizeof *ri->fg);
        size_t k;
        json_t *p;
        json_array_foreach(fg, k, p) {
            bool okp = ri->fg && json_array_size(p) == 3;
            for (int a = 0; okp && a < 3; a++) {
                json_int_t v = json_integer_value(json_array_get(p, (size_t)a));
                okp = v >= 0 && v < (json_int_t)ri->img.shape[a];
                if (okp) ri->fg[ri->nfg][a] = (int32_t)v;
            }
            if (okp) ri->nfg++;
        }
    }
    if (json_is_array(bb) && json_array_size(bb) == 3) {
        ri->has_bbox = true;
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 2; b++)
                ri->bbox[a][b] = json_integer_value(json_array_get(json_array_get(bb, (size_t)a), (size_t)b));
    }
    json_decref(meta);
}

/* Record i of the manifest (entry e) as the next rec_info. */
static cd_status load_record(cd_loader *l, size_t i, json_t *e, cd_error *err) {
    rec_info *ri = &l->recs[l->nrecs];
    ri->dataset_index = i;
    ri->label = (int32_t)json_integer_value(json_object_get(e, "label"));
    cd_status st = cd_dataset_read_record(l->ds, i, &ri->rec, &ri->shard, err);
    if (st != CD_OK) return st;
    l->nrecs++;
    ri->image_t = cd_record_find_tensor(ri->rec, "image");
    ri->mask_t = cd_record_find_tensor(ri->rec, "mask");
    if (ri->image_t < 0)
        return cd_fail(err, CD_ERR_FORMAT, "%s: record %zu has no 'image' tensor", cd_shard_path(ri->shard), i);
    cd_record_tensor_info(ri->rec, (uint32_t)ri->image_t, &ri->img);
    read_sampling_meta(ri);
    return CD_OK;
}

cd_status cd_loader_records_load(cd_loader *l, cd_error *err) {
    json_t *m = json_loads(cd_dataset_manifest(l->ds), 0, NULL);
    json_t *entries = json_object_get(m, "records");
    size_t n = json_array_size(entries);
    l->recs = calloc(n ? n : 1, sizeof *l->recs);
    if (!l->recs) {
        json_decref(m);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    cd_status st = CD_OK;
    for (size_t i = 0; i < n && st == CD_OK; i++) {
        json_t *e = json_array_get(entries, i);
        const char *split = json_string_value(json_object_get(e, "split"));
        if (!cd_dataset_split_selected(l->o.splits, split ? split : "")) continue;
        st = load_record(l, i, e, err);
    }
    json_decref(m);
    return st;
}

void cd_loader_records_free(cd_loader *l) {
    for (size_t i = 0; l->recs && i < l->nrecs; i++) {
        cd_record_destroy(l->recs[i].rec);
        free(l->recs[i].fg);
    }
    free(l->recs);
    l->recs = NULL;
}

/* Volume mode: a fixed size, else each record's own (then a batch of several needs one shape). */
static cd_status volume_shape(cd_loader *l, cd_error *err) {
    const uint32_t *s0 = l->recs[0].img.shape;
    bool fixed = l->o.patch[0] > 0 && l->o.patch[1] > 0 && l->o.patch[2] > 0;
    for (int a = 0; a < 3; a++) l->patch[a] = fixed ? l->o.patch[a] : s0[a];
    l->per_record_shape = !fixed;
    for (size_t i = 0; i < l->nrecs && !fixed && l->o.batch_size > 1; i++)
        if (memcmp(l->recs[i].img.shape, s0, sizeof(uint32_t[3])))
            return cd_fail(
                err, CD_ERR_ARG,
                "%s: volume mode with batch_size > 1 needs records of one shape (record %llu is %ux%ux%u, record %llu "
                "%ux%ux%u); give a fixed size (patch) to crop/pad",
                l->o.dataset, (unsigned long long)l->recs[0].dataset_index, s0[0], s0[1], s0[2],
                (unsigned long long)l->recs[i].dataset_index, l->recs[i].img.shape[0], l->recs[i].img.shape[1],
                l->recs[i].img.shape[2]);
    return CD_OK;
}

/* Slice mode: one in-plane size for every record; a sample is one slice. */
static cd_status slice_shape(cd_loader *l, cd_error *err) {
    const uint32_t *s0 = l->recs[0].img.shape;
    l->patch[0] = s0[0];
    l->patch[1] = s0[1];
    l->patch[2] = 1;
    for (size_t i = 0; i < l->nrecs; i++)
        if (l->recs[i].img.shape[0] != s0[0] || l->recs[i].img.shape[1] != s0[1])
            return cd_fail(err, CD_ERR_ARG,
                           "%s: slice mode needs one in-plane size (a 2D recipe such as cirrhosisstage-2d)",
                           l->o.dataset);
    return CD_OK;
}

cd_status cd_loader_records_shape(cd_loader *l, cd_error *err) {
    cd_status st = CD_OK;
    l->channels = l->recs[0].img.channels;
    l->has_mask = true;
    for (size_t i = 0; i < l->nrecs; i++) { /* the message names the last record that differs */
        if (l->recs[i].img.channels != l->channels)
            st = cd_fail(err, CD_ERR_FORMAT, "%s: records have different channel counts (%u and %u)", l->o.dataset,
                         l->channels, l->recs[i].img.channels);
        if (l->recs[i].mask_t < 0) l->has_mask = false;
    }
    if (st != CD_OK) return st;
    if (l->o.mode == CD_LOADER_PATCH) {
        memcpy(l->patch, l->o.patch, sizeof l->patch); /* checked by cd_loader_check_options */
        return CD_OK;
    }
    return l->o.mode == CD_LOADER_VOLUME ? volume_shape(l, err) : slice_shape(l, err);
}
