/* The converter: layout -> cases -> (parallel) read, preprocess, compress -> (in order) shards ->
 * manifest. Restartable through a journal of finished shards; deterministic shard bytes. The steps
 * live in plan.c, run.c (with case.c) and finish.c (see convert_impl.h). */
#include <stdlib.h>
#include <string.h>

#include "convert/convert_impl.h"

void cd_convert_options_init(cd_convert_options *o) {
    memset(o, 0, sizeof *o);
    o->layout = "cirrmri600";
    cd_recipe_preset("raw", &o->recipe, NULL);
    o->healthy = false;
    o->fold = -1;
}

static cd_status check_options(const cd_convert_options *o, cd_error *err) {
    if (!o || !o->root || !o->out_dir || !o->layout)
        return cd_fail(err, CD_ERR_ARG, "cd_convert: missing root, out_dir or layout");
    if (strlen(o->out_dir) >= CD_CONV_DIR_CAP)
        return cd_fail(err, CD_ERR_ARG, "%.100s...: output path too long", o->out_dir);
    if (o->part_count < 0 || o->part_count > 65536 ||
        (o->part_count > 0 && (o->part_index < 1 || o->part_index > o->part_count)))
        return cd_fail(err, CD_ERR_ARG, "part %d/%d: I must be in 1..N, N in 1..65536", o->part_index, o->part_count);
    return CD_OK;
}

static void conversion_init(conversion *cv, const cd_convert_options *o, cd_convert_result *res) {
    memset(cv, 0, sizeof *cv);
    cv->o = o;
    cv->res = res;
    cv->shard_size = o->shard_size ? o->shard_size : ((uint64_t)256 << 20);
    cv->cs.opts = o;
    cv->cs.journal.fd = -1;
    snprintf(cv->cs.dir, sizeof cv->cs.dir, "%s", o->out_dir);
    cv->cs.shards = json_array();
    cv->cs.entries = json_array();
    cv->cs.skipped = json_array();
    cv->cs.resolved = json_object();
    cv->augmenting = o->augment && strcmp(o->augment, "none");
    cv->lock = (cd_dir_lock){.fd = -1};
}

static void conversion_free(conversion *cv) {
    if (cv->buffer_cache) cd_buffer_cache_end();
    json_decref(cv->cs.augmentation);
    if (cv->augmenting) cd_aug_copies_free(&cv->ac);
    cd_device_slot_close(&cv->slot);
    cd_device_policy_free(&cv->policy);
    cd_journal_close(&cv->cs.journal);
    cd_dir_lock_release(&cv->lock);
    cd_resume_free(&cv->rs);
    cd_conv_identity_free(&cv->id);
    free(cv->legacy);
    json_decref(cv->cs.shards);
    json_decref(cv->cs.entries);
    json_decref(cv->cs.skipped);
    json_decref(cv->cs.resolved);
    cd_case_list_free(&cv->cases);
}

cd_status cd_convert(const cd_convert_options *o, cd_convert_result *res, cd_error *err) {
    cd_convert_result local;
    if (!res) res = &local;
    memset(res, 0, sizeof *res);
    cd_status st = check_options(o, err);
    if (st != CD_OK) return st;
    const double t0 = cd_now_s();
    conversion cv;
    conversion_init(&cv, o, res);
    if ((st = cd_conv_plan_cases(&cv, err)) != CD_OK) {
        conversion_free(&cv);
        return st;
    }
    st = cd_conv_plan(&cv, err);
    if (st == CD_OK && cv.rs.finished)
        cd_conv_result_from_manifest(cv.rs.manifest, res);
    else if (st == CD_OK)
        st = cd_conv_run(&cv, err);
    if (cv.ran) st = cd_conv_finish(&cv, st, err);
    conversion_free(&cv);
    res->seconds = cd_now_s() - t0;
    return st;
}
