/* nnU-Net's folds: its splits_final.json, or its default 5-fold split reproduced bit for bit (numpy's
 * legacy MT19937 RandomState shuffle and sklearn's KFold fold sizes). */
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "convert/nnunet_split.h"
#include "io/file.h"

#define NNUNET_FOLDS 5
#define NNUNET_SEED 12345u
#define SPLITS_MAX_BYTES ((size_t)64 << 20)

/* ---- numpy's legacy RandomState: MT19937 (init_genrand seeding) and random_interval ---- */

typedef struct mt19937 {
    uint32_t key[624];
    int pos;
} mt19937;

static void mt_seed(mt19937 *m, uint32_t seed) {
    for (int i = 0; i < 624; i++) {
        m->key[i] = seed;
        seed = 1812433253u * (seed ^ (seed >> 30)) + (uint32_t)i + 1u;
    }
    m->pos = 624;
}

static void mt_generate(mt19937 *m) {
    static const uint32_t mag01[2] = {0u, 0x9908b0dfu};
    int i;
    uint32_t y;
    for (i = 0; i < 624 - 397; i++) {
        y = (m->key[i] & 0x80000000u) | (m->key[i + 1] & 0x7fffffffu);
        m->key[i] = m->key[i + 397] ^ (y >> 1) ^ mag01[y & 1u];
    }
    for (; i < 623; i++) {
        y = (m->key[i] & 0x80000000u) | (m->key[i + 1] & 0x7fffffffu);
        m->key[i] = m->key[i + (397 - 624)] ^ (y >> 1) ^ mag01[y & 1u];
    }
    y = (m->key[623] & 0x80000000u) | (m->key[0] & 0x7fffffffu);
    m->key[623] = m->key[396] ^ (y >> 1) ^ mag01[y & 1u];
    m->pos = 0;
}

static uint32_t mt_next32(mt19937 *m) {
    if (m->pos == 624) mt_generate(m);
    uint32_t y = m->key[m->pos++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

static uint64_t mt_next64(mt19937 *m) {
    uint64_t hi = mt_next32(m);
    return hi << 32 | mt_next32(m);
}

/* Uniform in 0..max by masked rejection (numpy's random_interval, the legacy shuffle's draw). */
static uint64_t random_interval(mt19937 *m, uint64_t max) {
    if (max == 0) return 0;
    uint64_t mask = max, v;
    mask |= mask >> 1;
    mask |= mask >> 2;
    mask |= mask >> 4;
    mask |= mask >> 8;
    mask |= mask >> 16;
    mask |= mask >> 32;
    if (max <= 0xffffffffu) {
        while ((v = (mt_next32(m) & mask)) > max) {}
    } else {
        while ((v = (mt_next64(m) & mask)) > max) {}
    }
    return v;
}

typedef struct id_ref {
    const char *id;
    size_t i;
} id_ref;

static int by_id(const void *a, const void *b) { return strcmp(((const id_ref *)a)->id, ((const id_ref *)b)->id); }

/* ids' indices sorted by identifier (strcmp on UTF-8 is code point order, as np.sort). */
static size_t *sorted_index(const char *const *ids, size_t n) {
    id_ref *r = malloc((n ? n : 1) * sizeof *r);
    size_t *ix = malloc((n ? n : 1) * sizeof *ix);
    if (r && ix) {
        for (size_t i = 0; i < n; i++) r[i] = (id_ref){ids[i], i};
        qsort(r, n, sizeof *r, by_id);
        for (size_t i = 0; i < n; i++) ix[i] = r[i].i;
    } else {
        free(ix);
        ix = NULL;
    }
    free(r);
    return ix;
}

static cd_status default_split(const char *const *ids, size_t n, int fold, uint8_t *role, cd_error *err) {
    if (fold < 0 || fold >= NNUNET_FOLDS)
        return cd_fail(err, CD_ERR_ARG, "fold %d is out of range: nnU-Net's default split has folds 0..%d", fold,
                       NNUNET_FOLDS - 1);
    if (n < NNUNET_FOLDS)
        return cd_fail(err, CD_ERR_FORMAT,
                       "nnU-Net's default %d-fold split needs at least %d training cases, found %zu (give a "
                       "splits_final.json)",
                       NNUNET_FOLDS, NNUNET_FOLDS, n);
    size_t *ix = sorted_index(ids, n), *perm = malloc(n * sizeof *perm);
    mt19937 *m = malloc(sizeof *m);
    if (!ix || !perm || !m) {
        free(ix);
        free(perm);
        free(m);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    /* RandomState(12345).shuffle(np.arange(n)): Fisher-Yates from the end. */
    mt_seed(m, NNUNET_SEED);
    for (size_t i = 0; i < n; i++) perm[i] = i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)random_interval(m, i), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    /* KFold: fold f tests on the f-th consecutive run; the first n % 5 runs are one longer. */
    size_t start = 0;
    for (int f = 0; f < fold; f++) start += n / NNUNET_FOLDS + ((size_t)f < n % NNUNET_FOLDS);
    size_t len = n / NNUNET_FOLDS + ((size_t)fold < n % NNUNET_FOLDS);
    for (size_t i = 0; i < n; i++) role[i] = CD_FOLD_TRAIN;
    for (size_t k = start; k < start + len; k++) role[ix[perm[k]]] = CD_FOLD_VAL;
    free(ix);
    free(perm);
    free(m);
    return CD_OK;
}

/* The index of identifier id among ids (ix: sorted index), or n. */
static size_t find_id(const char *const *ids, const size_t *ix, size_t n, const char *id) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ids[ix[mid]], id);
        if (!c) return ix[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return n;
}

static cd_status file_split(const char *const *ids, size_t n, int fold, const char *path, uint8_t *role,
                            cd_error *err) {
    char *text;
    size_t len;
    cd_status st = cd_read_text_file_len(path, SPLITS_MAX_BYTES, "splits file", &text, &len, err);
    if (st != CD_OK) return st;
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!doc) return cd_fail(err, CD_ERR_FORMAT, "%s: invalid JSON at line %d: %s", path, jerr.line, jerr.text);
    if (!json_is_array(doc) || !json_array_size(doc)) {
        json_decref(doc);
        return cd_fail(err, CD_ERR_FORMAT, "%s: expected a list of folds ({\"train\": [...], \"val\": [...]})", path);
    }
    if (fold < 0 || (size_t)fold >= json_array_size(doc)) {
        size_t k = json_array_size(doc);
        json_decref(doc);
        return cd_fail(err, CD_ERR_ARG, "fold %d is out of range: %s has folds 0..%zu", fold, path, k - 1);
    }
    json_t *f = json_array_get(doc, (size_t)fold);
    static const char *const lists[2] = {"train", "val"};
    size_t *ix = sorted_index(ids, n);
    if (!ix) st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) role[i] = CD_FOLD_NONE;
    for (int l = 0; l < 2 && st == CD_OK; l++) {
        json_t *a = json_object_get(f, lists[l]);
        if (!json_is_array(a)) {
            st = cd_fail(err, CD_ERR_FORMAT, "%s: fold %d has no \"%s\" list", path, fold, lists[l]);
            break;
        }
        size_t i;
        json_t *x;
        json_array_foreach(a, i, x) {
            const char *id = json_string_value(x);
            if (!id) {
                st = cd_fail(err, CD_ERR_FORMAT, "%s: fold %d \"%s\" item %zu is not a case name", path, fold, lists[l],
                             i);
                break;
            }
            size_t k = find_id(ids, ix, n, id);
            if (k == n) {
                st = cd_fail(err, CD_ERR_FORMAT,
                             "%s: fold %d \"%s\" names case '%.300s', which the dataset's training cases do not have",
                             path, fold, lists[l], id);
                break;
            }
            if (role[k] != CD_FOLD_NONE) {
                st = cd_fail(err, CD_ERR_FORMAT, "%s: fold %d lists case '%.300s' twice (in \"%s\" and \"%s\")", path,
                             fold, id, role[k] == CD_FOLD_VAL ? "val" : "train", lists[l]);
                break;
            }
            role[k] = l ? CD_FOLD_VAL : CD_FOLD_TRAIN;
        }
    }
    free(ix);
    json_decref(doc);
    return st;
}

cd_status cd_nnunet_split(const char *const *ids, size_t n, int fold, const char *splits_file, uint8_t *role,
                          cd_error *err) {
    return splits_file ? file_split(ids, n, fold, splits_file, role, err) : default_split(ids, n, fold, role, err);
}
