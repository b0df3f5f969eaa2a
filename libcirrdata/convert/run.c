/* The conversion's run: worker threads process cases (case.c) into a window of slots, the writer
 * drains them in case order into shards (a new one when the next case would pass the target size),
 * journaling each finished shard so that a killed run resumes at a case boundary. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/convert_impl.h"

struct conv_pipeline {
    conv_job jb;
    size_t lo, hi; /* cases to do: [lo, hi) */
    size_t window;
    case_result *slots; /* slot of case i: slots[i % window] */
    size_t next_claim;  /* next case a worker takes */
    size_t next_write;  /* next case the writer needs */
    bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Augmented copies: the outcome of each case's preprocessing, in case order, gives every case
     * its sample index (the count of good cases before it) without waiting for the writer. */
    size_t *res_case;  /* per window slot: the case that resolved there */
    int8_t *res_state; /* 1 good, 2 failed, 0 not yet */
    uint64_t *res_index;
    size_t resolved_upto; /* every case before it is resolved */
    uint64_t good;        /* good cases before resolved_upto (plus the base) */
    pthread_t *threads;
    int started;
};

uint64_t cd_conv_resolve_case(conv_pipeline *p, size_t i, bool ok) {
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
    conv_pipeline *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->next_claim < p->hi && p->next_claim >= p->next_write + p->window)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop || p->next_claim >= p->hi) break;
        size_t i = p->next_claim++;
        pthread_mutex_unlock(&p->mu);
        case_result r;
        memset(&r, 0, sizeof r);
        cd_conv_process_case(&p->jb, &p->jb.cases->cases[i], &r, p, i);
        pthread_mutex_lock(&p->mu);
        r.ready = true;
        p->slots[i % p->window] = r;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- the pipeline ---- */

/* The job, the window and (augmented copies) the sample-index bookkeeping; threads not started yet. */
static cd_status pipeline_init(conversion *cv, conv_pipeline *p, int nthreads, cd_error *err) {
    const cd_convert_options *o = cv->o;
    p->jb.opts = o;
    p->jb.cases = &cv->cases;
    p->jb.target_spacing = cv->target;
    p->jb.pp = &cv->pp;
    p->lo = cv->rs.resume_case;
    p->hi = cv->hi;
    p->next_claim = p->next_write = p->lo;
    p->window = 2 * (size_t)nthreads;
    p->slots = calloc(p->window, sizeof *p->slots);
    p->threads = calloc((size_t)nthreads, sizeof *p->threads);
    p->res_case = calloc(p->window, sizeof *p->res_case);
    p->res_state = calloc(p->window, sizeof *p->res_state);
    p->res_index = calloc(p->window, sizeof *p->res_index);
    if (cv->augmenting) {
        p->jb.aug = &cv->ac;
        p->resolved_upto = p->lo;
        /* Sample indices go on from the last case already written (a resumed run), else from the
         * part's first case (see schemas/shard-format.md on --part). */
        size_t ne = json_array_size(cv->cs.entries);
        p->good = ne ? (uint64_t)json_integer_value(json_object_get(json_array_get(cv->cs.entries, ne - 1), "case")) + 1
                     : (uint64_t)cv->lo;
        for (size_t k = 0; k < p->window; k++) p->res_case[k] = SIZE_MAX;
    }
    if (!p->slots || !p->threads || !p->res_case || !p->res_state || !p->res_index)
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    return CD_OK;
}

/* Stops and joins the workers; frees what they left in the window. */
static void pipeline_stop(conv_pipeline *p) {
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int t = 0; t < p->started; t++) pthread_join(p->threads[t], NULL);
    for (size_t k = 0; k < p->window; k++) cd_conv_case_result_clear(&p->slots[k]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
}

static void pipeline_free(conv_pipeline *p) {
    free(p->slots);
    free(p->res_case);
    free(p->res_state);
    free(p->res_index);
    free(p->threads);
}

/* Case i's result, once a worker has made it (the writer's turn moves on). */
static case_result take_result(conv_pipeline *p, size_t i) {
    pthread_mutex_lock(&p->mu);
    while (!p->slots[i % p->window].ready) pthread_cond_wait(&p->cv, &p->mu);
    case_result r = p->slots[i % p->window];
    memset(&p->slots[i % p->window], 0, sizeof r);
    p->next_write = i + 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return r;
}

/* ---- the writer ---- */

typedef struct writer {
    cd_shard_writer *w; /* the shard being written, or NULL */
    size_t seq;         /* its number */
    char rel[256];      /* its path under the output folder */
    int part;           /* --part I (0: none), in the shard names */
} writer;

/* A finished shard, its records' entries and the skips since the last one, as one journal line. */
static cd_status journal_shard(convert_state *cs, json_t *shard, cd_error *err) {
    json_t *entries = json_array(), *skipped = json_array();
    for (size_t i = cs->journaled_entries; i < json_array_size(cs->entries); i++)
        json_array_append(entries, json_array_get(cs->entries, i));
    for (size_t i = cs->journaled_skipped; i < json_array_size(cs->skipped); i++)
        json_array_append(skipped, json_array_get(cs->skipped, i));
    json_t *line = json_pack("{sOsoso}", "shard", shard, "entries", entries, "skipped", skipped);
    cd_status st = line ? cd_journal_append(&cs->journal, line, err) : cd_fail(err, CD_ERR_NOMEM, "out of memory");
    json_decref(line);
    cs->journaled_entries = json_array_size(cs->entries);
    cs->journaled_skipped = json_array_size(cs->skipped);
    return st;
}

static cd_status finish_shard(convert_state *cs, writer *wr, size_t end_case, cd_convert_result *res, cd_error *err) {
    uint64_t size;
    char hex[33];
    cd_status st = cd_shard_writer_finish(wr->w, &size, hex, err);
    uint64_t nrec = cd_shard_writer_records(wr->w);
    cd_shard_writer_destroy(wr->w);
    wr->w = NULL;
    if (st != CD_OK) return st;
    json_t *e = json_object();
    json_object_set_new(e, "path", json_string(wr->rel));
    json_object_set_new(e, "size", json_integer((json_int_t)size));
    json_object_set_new(e, "records", json_integer((json_int_t)nrec));
    json_object_set_new(e, "xxh3_128", json_string(hex));
    json_object_set_new(e, "end_case", json_integer((json_int_t)end_case));
    json_array_append_new(cs->shards, e);
    res->bytes_written += size;
    return journal_shard(cs, e, err);
}

/* Records the skip of case i (with its reason) in the state. */
static void note_skip(convert_state *cs, size_t i, const char *path, const char *reason) {
    json_t *e = json_object();
    json_object_set_new(e, "case", json_integer((json_int_t)i));
    json_object_set_new(e, "path", json_string(path));
    json_object_set_new(e, "reason", json_string(reason));
    json_array_append_new(cs->skipped, e);
}

/* Case i's records into the shard being written; a new shard when they would pass the target size
 * (a case's records stay together in one shard: the journal resumes at case boundaries). */
static cd_status write_case(conversion *cv, writer *wr, size_t i, case_result *r, cd_error *err) {
    convert_state *cs = &cv->cs;
    uint64_t rsize = 0;
    for (size_t k = 0; k < r->nrec; k++) rsize += cd_record_builder_size(r->builders[k]);
    cv->res->augment_seconds += r->augment_seconds;
    cd_status st = CD_OK;
    if (wr->w && cd_shard_writer_records(wr->w) > 0 && cd_shard_writer_bytes(wr->w) + rsize > cv->shard_size) {
        st = finish_shard(cs, wr, i, cv->res, err);
        wr->seq++;
    }
    if (st == CD_OK && !wr->w) {
        char path[CD_CONV_PATH_CAP];
        snprintf(wr->rel, sizeof wr->rel, "shards/shard-%03d-%05zu.cds", wr->part, wr->seq);
        snprintf(path, sizeof path, "%s/%.255s", cs->dir, wr->rel);
        st = cd_shard_writer_create(path, &wr->w, err);
    }
    for (size_t k = 0; st == CD_OK && k < r->nrec; k++) {
        json_object_set_new(r->entries[k], "shard", json_integer((json_int_t)wr->seq));
        json_object_set_new(r->entries[k], "index", json_integer((json_int_t)cd_shard_writer_records(wr->w)));
        st = cd_shard_writer_append(wr->w, r->builders[k], err);
        if (st == CD_OK) json_array_append(cs->entries, r->entries[k]);
    }
    return st;
}

/* The writer: cases in order, each written, skipped (a bad input) or failing the conversion. */
static cd_status write_cases(conversion *cv, conv_pipeline *p, cd_error *err) {
    const cd_convert_options *o = cv->o;
    cd_convert_result *res = cv->res;
    writer wr = {.seq = json_array_size(cv->cs.shards), .part = o->part_count > 0 ? o->part_index : 0};
    cd_status st = CD_OK;
    for (size_t i = p->lo; i < cv->hi && st == CD_OK; i++) {
        case_result r = take_result(p, i);
        res->bytes_read += r.bytes_read;
        if (r.status != CD_OK) {
            if (!r.skipped || o->strict)
                st = cd_fail(err, r.status, "%s", r.message);
            else
                note_skip(&cv->cs, i, cv->cases.cases[i].image_paths[0], r.message);
        } else {
            st = write_case(cv, &wr, i, &r, err);
        }
        cd_conv_case_result_clear(&r);
        if (o->progress) o->progress(o->progress_user, i + 1 - cv->lo, cv->hi - cv->lo, res->bytes_read);
    }
    if (st == CD_OK && wr.w) st = finish_shard(&cv->cs, &wr, cv->hi, res, err);
    cd_shard_writer_destroy(wr.w); /* removes an unfinished shard's temporary file */
    return st;
}

cd_status cd_conv_run(conversion *cv, cd_error *err) {
    /* Each case's big buffers (file, voxels, sample, compressed chunks) reuse the memory of earlier
     * cases: fresh mappings would be zeroed by the kernel page by page. */
    cd_buffer_cache_begin();
    cv->buffer_cache = true;
    const int nthreads = cv->o->threads > 0 ? cv->o->threads : cd_thread_count(0);
    conv_pipeline p;
    memset(&p, 0, sizeof p);
    cd_status st = pipeline_init(cv, &p, nthreads, err);
    if (st != CD_OK) {
        pipeline_free(&p);
        return st;
    }
    for (; p.started < nthreads; p.started++)
        if (pthread_create(&p.threads[p.started], NULL, worker_main, &p) != 0) break;
    if (p.started == 0)
        st = cd_fail(err, CD_ERR_INTERNAL, "cannot start worker threads");
    else
        st = write_cases(cv, &p, err);
    pipeline_stop(&p);
    pipeline_free(&p);
    cv->ran = true;
    return st;
}
