/* nnU-Net's train/validation split of a dataset's training cases (internal). */
#ifndef CD_CONVERT_NNUNET_SPLIT_H
#define CD_CONVERT_NNUNET_SPLIT_H

#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

/* What a fold makes of a training case. */
enum { CD_FOLD_NONE = 0, CD_FOLD_TRAIN = 1, CD_FOLD_VAL = 2 };

/* Fold `fold` of the n training case identifiers ids (any order): role[i] receives CD_FOLD_TRAIN,
 * CD_FOLD_VAL, or CD_FOLD_NONE when a splits file's fold lists the case in neither list.
 * splits_file: nnU-Net's splits_final.json (a list of {"train": [ids], "val": [ids]}, one per fold);
 * NULL: nnU-Net v2's default split (nnunetv2/utilities/crossval_split.py), sklearn's KFold(n_splits=5,
 * shuffle=True, random_state=12345) over the identifiers sorted as np.sort sorts them (by code point):
 * numpy's legacy RandomState(12345) shuffles 0..n-1, and fold f validates on the f-th run of
 * n/5 (+1 for the first n%5 folds) shuffled positions.
 * Errors (naming the file and the case): a fold outside 0..4 (the default) or outside the file's list,
 * a malformed file, a case listed twice in the fold (in one list or in both), a listed case that is not
 * among ids; the default split with fewer than 5 cases (as KFold). */
CD_INTERNAL cd_status cd_nnunet_split(const char *const *ids, size_t n, int fold, const char *splits_file,
                                      uint8_t *role, cd_error *err);

#endif
