/* The parts' records laid out as one conversion writes them (see merge_impl.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cirrdata/shard.h"
#include "dataset/merge_impl.h"
#include "shard/format.h"
#include "shard/record_copy.h"

/* One record of a part: where it is and what it takes in a shard. */
typedef struct in_rec {
    int part;
    size_t shard;    /* in the part's "shards" */
    uint64_t index;  /* in that shard */
    uint64_t bytes;  /* cd_shard_record_bytes */
    bool case_start; /* the first record of its case (a case's records stay in one shard) */
    json_t *entry;   /* the part manifest's entry (borrowed) */
} in_rec;

typedef struct pack {
    const char *out_dir;
    json_t *const *pm;
    const char *const *pdir;
    in_rec *recs;
    size_t n;
    cd_shard *open; /* the part shard being copied from */
    int open_part;
    size_t open_shard;
} pack;

static json_t *part_shard(const pack *p, int part, size_t shard) {
    return json_array_get(json_object_get(p->pm[part], "shards"), shard);
}

static void part_shard_path(const pack *p, int part, size_t shard, char *out, size_t cap) {
    snprintf(out, cap, "%.3800s/%.255s", p->pdir[part],
             json_string_value(json_object_get(part_shard(p, part, shard), "path")));
}

/* The records of part i in manifest order, checked against its shards' indexes: the entries must list
 * every record of every shard once, shard by shard, in index order. */
static cd_status collect_part(pack *p, int i, size_t *at, cd_error *err) {
    json_t *m = p->pm[i], *entries = json_object_get(m, "records"), *list = json_object_get(m, "shards");
    size_t e = 0;
    for (size_t j = 0; j < json_array_size(list); j++) {
        char path[CD_MERGE_PATH_CAP];
        part_shard_path(p, i, j, path, sizeof path);
        cd_shard *s;
        cd_status st = cd_shard_open(path, &s, err);
        if (st != CD_OK) return st;
        uint64_t n = cd_shard_record_count(s);
        for (uint64_t k = 0; k < n; k++, e++) {
            json_t *x = json_array_get(entries, e);
            if (!x || json_integer_value(json_object_get(x, "shard")) != (json_int_t)j ||
                json_integer_value(json_object_get(x, "index")) != (json_int_t)k) {
                cd_shard_close(s);
                return cd_fail(err, CD_ERR_CORRUPT,
                               "%s: the manifest's record %zu is not record %llu of %s: a part's manifest must list "
                               "its shards' records in order",
                               p->pdir[i], e, (unsigned long long)k, path);
            }
            json_t *c = json_object_get(x, "case"),
                   *prev = e ? json_object_get(json_array_get(entries, e - 1), "case") : NULL;
            p->recs[*at] = (in_rec){.part = i,
                                    .shard = j,
                                    .index = k,
                                    .bytes = cd_shard_record_bytes(s, k),
                                    .case_start = !c || !prev || !json_equal(c, prev),
                                    .entry = x};
            (*at)++;
        }
        cd_shard_close(s);
    }
    if (e != json_array_size(entries))
        return cd_fail(err, CD_ERR_CORRUPT, "%s: the manifest lists %zu records, its shards hold %zu", p->pdir[i],
                       json_array_size(entries), e);
    return CD_OK;
}

/* Record k's builder, copied from its part's shard (kept open for the records after it). */
static cd_status copy_record(pack *p, const in_rec *r, cd_record_builder **b, cd_error *err) {
    if (!p->open || p->open_part != r->part || p->open_shard != r->shard) {
        cd_shard_close(p->open);
        p->open = NULL;
        char path[CD_MERGE_PATH_CAP];
        part_shard_path(p, r->part, r->shard, path, sizeof path);
        cd_status st = cd_shard_open(path, &p->open, err);
        if (st != CD_OK) return st;
        p->open_part = r->part;
        p->open_shard = r->shard;
    }
    cd_record *rec;
    cd_status st = cd_shard_read_record(p->open, r->index, &rec, err);
    if (st != CD_OK) return st;
    st = cd_record_builder_copy(p->open, rec, b, err);
    cd_record_destroy(rec);
    return st;
}

/* Records [a, b) written anew as the shard at `to` (through `to`.merge when a file is there already,
 * which must then hold the same bytes). */
static cd_status write_shard(pack *p, size_t a, size_t b, const char *to, uint64_t *size, char hex[33], cd_error *err) {
    struct stat sb;
    const bool exists = lstat(to, &sb) == 0;
    char path[CD_MERGE_PATH_CAP];
    snprintf(path, sizeof path, "%.4000s%s", to, exists ? ".merge" : "");
    cd_shard_writer *w = NULL;
    cd_status st = cd_shard_writer_create(path, &w, err);
    for (size_t k = a; st == CD_OK && k < b; k++) {
        cd_record_builder *rb;
        if ((st = copy_record(p, &p->recs[k], &rb, err)) != CD_OK) break;
        st = cd_shard_writer_append(w, rb, err);
        cd_record_builder_destroy(rb);
    }
    if (st == CD_OK) st = cd_shard_writer_finish(w, size, hex, err);
    if (w) cd_shard_writer_destroy(w);
    if (st != CD_OK || !exists) return st;
    char have[33];
    uint64_t have_size = 0;
    bool same = S_ISREG(sb.st_mode) && cd_file_xxh3_128(to, have, &have_size, NULL) == CD_OK && !strcmp(have, hex) &&
                have_size == *size;
    unlink(path);
    if (!same)
        return cd_fail(err, CD_ERR_ARG,
                       "%s: exists and is not the merged shard; merge never overwrites: choose an empty output folder",
                       to);
    return CD_OK;
}

/* Output shard number seq from records [a, b). */
static cd_status emit_shard(pack *p, size_t a, size_t b, size_t seq, json_t *shards, json_t *records, cd_error *err) {
    char rel[64], to[CD_MERGE_PATH_CAP];
    snprintf(rel, sizeof rel, "shards/shard-000-%05zu.cds", seq);
    snprintf(to, sizeof to, "%.3800s/%s", p->out_dir, rel);
    const in_rec *first = &p->recs[a];
    json_t *listing = part_shard(p, first->part, first->shard);
    bool whole = first->index == 0 && (json_int_t)(b - a) == json_integer_value(json_object_get(listing, "records"));
    for (size_t k = a; whole && k < b; k++) whole = p->recs[k].part == first->part && p->recs[k].shard == first->shard;
    uint64_t size = 0;
    char hex[33];
    cd_status st;
    if (whole) { /* the same records in the same order: the same bytes */
        char from[CD_MERGE_PATH_CAP];
        part_shard_path(p, first->part, first->shard, from, sizeof from);
        st = cd_merge_link_or_copy(from, to, listing, err);
        size = (uint64_t)json_integer_value(json_object_get(listing, "size"));
        snprintf(hex, sizeof hex, "%s", json_string_value(json_object_get(listing, "xxh3_128")));
    } else {
        st = write_shard(p, a, b, to, &size, hex, err);
    }
    if (st != CD_OK) return st;
    json_array_append_new(shards, json_pack("{sssIsIss}", "path", rel, "size", (json_int_t)size, "records",
                                            (json_int_t)(b - a), "xxh3_128", hex));
    for (size_t k = a; k < b; k++) {
        json_t *c = json_deep_copy(p->recs[k].entry);
        json_object_set_new(c, "shard", json_integer((json_int_t)seq));
        json_object_set_new(c, "index", json_integer((json_int_t)(k - a)));
        json_array_append_new(records, c);
    }
    return CD_OK;
}

/* run.c's rule, case by case: a new shard when the case's records would pass shard_size. Writes the
 * first record of every output shard to starts (at least n + 1 entries); returns how many shards. */
static size_t plan_shards(const pack *p, size_t n, uint64_t shard_size, size_t *starts) {
    size_t start = 0, count = 0;
    uint64_t bytes = 0; /* of the shard being filled, as cd_shard_writer_bytes counts them */
    for (size_t k = 0; k < n;) {
        size_t end = k + 1;
        while (end < n && !p->recs[end].case_start) end++;
        uint64_t rsize = 0;
        for (size_t q = k; q < end; q++) rsize += p->recs[q].bytes;
        if (k > start && bytes + rsize > shard_size) {
            starts[count++] = start;
            start = k;
        }
        if (k == start) bytes = CD_SHARD_HEADER_SIZE; /* written last, counted from the start */
        bytes += rsize;
        k = end;
    }
    if (n > start) starts[count++] = start;
    starts[count] = n;
    return count;
}

cd_status cd_merge_pack(const char *out_dir, json_t *const *pm, const char *const *pdir, int nparts,
                        uint64_t shard_size, json_t *shards, json_t *records, cd_progress_fn progress, void *user,
                        cd_error *err) {
    pack p = {.out_dir = out_dir, .pm = pm, .pdir = pdir};
    for (int i = 0; i < nparts; i++) p.n += json_array_size(json_object_get(pm[i], "records"));
    p.recs = calloc(p.n ? p.n : 1, sizeof *p.recs);
    size_t *starts = calloc(p.n + 2, sizeof *starts);
    if (!p.recs || !starts) {
        free(p.recs);
        free(starts);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    size_t at = 0;
    cd_status st = CD_OK;
    for (int i = 0; i < nparts && st == CD_OK; i++) st = collect_part(&p, i, &at, err);
    const size_t nshards = st == CD_OK ? plan_shards(&p, at, shard_size, starts) : 0;
    uint64_t written = 0;
    for (size_t seq = 0; st == CD_OK && seq < nshards; seq++) {
        st = emit_shard(&p, starts[seq], starts[seq + 1], seq, shards, records, err);
        written += (uint64_t)json_integer_value(json_object_get(json_array_get(shards, seq), "size"));
        if (st == CD_OK && progress) progress(user, seq + 1, nshards, written);
    }
    cd_shard_close(p.open);
    free(p.recs);
    free(starts);
    return st;
}
