/* The loader's sampling order: the items of an epoch (records, or slices in slice mode), their
 * Philox-seeded permutation per epoch and this rank's disjoint share of it. */
#include <stdlib.h>

#include "cirrdata/rng.h"
#include "loader/loader_impl.h"

/* Philox stream id of the epoch permutation (the patch centre's is in augment/sample_plan.c,
 * augmentation ops' in augment/draw.c). */
#define OP_PERMUTATION 0x70657270u

/* This rank's item order for an epoch: a Philox-seeded Fisher-Yates permutation of all items, then
 * positions rank, rank + W, ... (disjoint across ranks, together the whole epoch). */
const uint32_t *cd_loader_epoch_order(cd_loader *l, uint64_t epoch) {
    if (l->order_valid && l->order_epoch == epoch) return l->order;
    uint32_t *perm = malloc(l->nitems * sizeof *perm);
    if (!perm) return NULL;
    for (uint64_t i = 0; i < l->nitems; i++) perm[i] = (uint32_t)i;
    cd_rng rng;
    cd_rng_init(&rng, l->o.seed, (uint32_t)epoch, OP_PERMUTATION);
    for (uint64_t i = l->nitems; i > 1; i--) {
        uint64_t j = cd_rng_below(&rng, i);
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
    uint64_t k = 0;
    for (uint64_t i = (uint64_t)l->o.rank; i < l->nitems; i += (uint64_t)l->o.world_size) l->order[k++] = perm[i];
    free(perm);
    l->order_epoch = epoch;
    l->order_valid = true;
    return l->order;
}

/* The slices [z0, z1) of record i that slice mode samples: all, or (slices_with_mask_only) those of
 * the mask's bounding box; false when the record has none. */
static bool slice_range(const cd_loader *l, size_t i, int64_t *z0, int64_t *z1) {
    *z0 = 0;
    *z1 = l->recs[i].img.shape[2];
    if (!l->o.slices_with_mask_only) return true;
    if (!l->recs[i].has_bbox) return false;
    *z0 = l->recs[i].bbox[2][0];
    *z1 = l->recs[i].bbox[2][1];
    return true;
}

/* The epoch's items: one per record, or in slice mode one per slice. */
static cd_status make_items(cd_loader *l, cd_error *err) {
    uint64_t n = 0;
    for (size_t i = 0; i < l->nrecs; i++) {
        if (l->o.mode != CD_LOADER_SLICE) {
            n++;
        } else if (l->o.slices_with_mask_only) {
            if (l->recs[i].has_bbox) n += (uint64_t)(l->recs[i].bbox[2][1] - l->recs[i].bbox[2][0]);
        } else {
            n += l->recs[i].img.shape[2];
        }
    }
    l->items = calloc(n ? n : 1, sizeof *l->items);
    if (!l->items) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < l->nrecs; i++) {
        if (l->o.mode != CD_LOADER_SLICE) {
            l->items[l->nitems++] = (item){(uint32_t)i, -1};
            continue;
        }
        int64_t z0, z1;
        if (!slice_range(l, i, &z0, &z1)) continue;
        for (int64_t z = z0; z < z1; z++) l->items[l->nitems++] = (item){(uint32_t)i, (int32_t)z};
    }
    return CD_OK;
}

cd_status cd_loader_order_plan(cd_loader *l, cd_error *err) {
    cd_status st = make_items(l, err);
    if (st != CD_OK) return st;
    l->per_rank = l->nitems / (uint64_t)l->o.world_size + ((uint64_t)l->o.rank < l->nitems % (uint64_t)l->o.world_size);
    if (l->per_rank == 0)
        st = cd_fail(err, CD_ERR_ARG, "%s: no samples for rank %d of %d", l->o.dataset, l->o.rank, l->o.world_size);
    l->bpe = l->o.drop_last ? l->per_rank / l->o.batch_size : (l->per_rank + l->o.batch_size - 1) / l->o.batch_size;
    if (st == CD_OK && l->bpe == 0) st = cd_fail(err, CD_ERR_ARG, "fewer samples than one batch with drop_last");
    if (st == CD_OK && l->o.batch_offset >= l->bpe)
        st = cd_fail(err, CD_ERR_ARG, "%s: batch_offset %u: an epoch of rank %d has only %llu batch(es)", l->o.dataset,
                     l->o.batch_offset, l->o.rank, (unsigned long long)l->bpe);
    l->order = calloc(l->per_rank ? l->per_rank : 1, sizeof *l->order);
    if (st == CD_OK && !l->order) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
    return st;
}
