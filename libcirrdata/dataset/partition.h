/* The parts of a conversion (internal; `convert --part I/N`, checked again by merge): contiguous ranges
 * of the layout's sorted case list, cut where the cumulative input bytes come closest to k/N of the
 * total, so that every part reads about total/N bytes and an array of N tasks finishes together. A pure
 * function of the case list and the input file sizes (the manifest's source.inputs), so every task and a
 * later merge compute the same cuts. */
#ifndef CD_DATASET_PARTITION_H
#define CD_DATASET_PARTITION_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

/* What a part manifest's "split" says about how its range was chosen. */
#define CD_PART_SPLIT "input-bytes"

/* Case i's input bytes: the sum of the sizes in a source.inputs entry's files (-1, unreadable: 0). */
CD_INTERNAL uint64_t cd_part_input_bytes(json_t *input);

/* Part index (1..count) of the cases whose input bytes are bytes[0..n): its cases [*lo, *hi). Cut k
 * (0 < k < count) is the j in 0..n whose prefix sum bytes[0] + ... + bytes[j-1] is nearest to
 * k * total / count (the smaller j on a tie); with total 0, the case counts are split evenly. */
CD_INTERNAL void cd_part_range(const uint64_t *bytes, size_t n, int index, int count, size_t *lo, size_t *hi);

/* cd_part_range over the bytes of a source.inputs array. CD_ERR_NOMEM only. */
CD_INTERNAL cd_status cd_part_range_of_inputs(json_t *inputs, int index, int count, size_t *lo, size_t *hi,
                                              uint64_t *part_bytes, cd_error *err);

/* XXH3-64 (16 hex digits) of the keys of inputs[lo, hi), each followed by LF: which cases a part holds. */
CD_INTERNAL void cd_part_keys_hash(json_t *inputs, size_t lo, size_t hi, char out[17]);

#endif
