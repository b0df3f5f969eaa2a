/* The conversion's plan: the case list, the identity of the conversion with this part's cases (what the
 * output folder and its journal are checked against), the output folder prepared (locked, finished,
 * resumed or new) and the dataset's target spacing. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cirrdata/nifti.h"
#include "cirrdata/orient.h"
#include "convert/convert_impl.h"
#include "core/json_check.h"

cd_status cd_conv_plan_cases(conversion *cv, cd_error *err) {
    const cd_convert_options *o = cv->o;
    cd_status st;
    if (!strcmp(o->layout, "cirrmri600"))
        st = cd_layout_cirrmri600(o->root, o->healthy, o->strict, &cv->cases, err);
    else if (!strcmp(o->layout, "nnunet"))
        st = cd_layout_nnunet(o->root, o->strict, o->fold, o->splits_file, &cv->cases, err);
    else
        return cd_fail(err, CD_ERR_ARG, "unknown layout '%s' (cirrmri600 or nnunet)", o->layout);
    if (st == CD_OK && strcmp(o->layout, "nnunet") && (o->fold >= 0 || o->splits_file)) {
        cd_case_list_free(&cv->cases);
        return cd_fail(err, CD_ERR_ARG, "a fold or splits file needs the nnunet layout");
    }
    if (st == CD_OK && o->pair_sequences) {
        if (strcmp(o->layout, "cirrmri600")) {
            cd_case_list_free(&cv->cases);
            return cd_fail(err, CD_ERR_ARG, "sequence pairing needs the cirrmri600 layout");
        }
        st = cd_layout_pair_sequences(&cv->cases, "T1", "T2", o->strict, err);
    }
    return st;
}

/* The augmented copies (their options, pipeline and device) and the identity of the conversion. What
 * was used to compute is not part of what was computed: the device stays out of the identity. */
static cd_status plan_identity(conversion *cv, cd_error *err) {
    const cd_convert_options *o = cv->o;
    if (cv->augmenting) {
        cd_status st = cd_aug_copies_init(&cv->ac, o, &cv->policy, &cv->slot, err);
        if (st != CD_OK) {
            cv->augmenting = false; /* nothing of the copies to free */
            return st;
        }
    }
    json_t *aug_id = NULL;
    if (cv->augmenting) {
        cv->cs.augmentation = cd_aug_copies_manifest(&cv->ac);
        aug_id = json_deep_copy(cv->cs.augmentation);
        json_object_del(aug_id, "device");
    }
    /* The part's cases come with the identity: balanced by the input sizes it read (dataset/partition.h). */
    cd_status st = cd_conv_identity_init(&cv->id, o, &cv->cases, cv->shard_size, aug_id, err);
    if (st == CD_OK) {
        cv->lo = cv->id.lo;
        cv->hi = cv->id.hi;
        cv->legacy = cd_conv_legacy_fingerprint(o, &cv->cases, cv->lo, cv->hi, cv->shard_size, aug_id);
        cv->cs.id = &cv->id;
    }
    json_decref(aug_id);
    return st;
}

static cd_status make_dir(const char *p, cd_error *err) {
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
        return cd_fail(err, CD_ERR_IO, "%s: cannot create directory: %s", p, strerror(errno));
    return CD_OK;
}

/* shards/ must be a folder of the output, not a link that would put the shards elsewhere. */
static cd_status make_shard_dir(const char *p, cd_error *err) {
    cd_status st = make_dir(p, err);
    struct stat sb;
    if (st == CD_OK && (lstat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)))
        st = cd_fail(err, CD_ERR_ARG,
                     "%s: not a folder (a symbolic link or a file): convert writes shards only inside --out", p);
    return st;
}

/* Takes over the shards an interrupted run finished (cd_resume_prepare kept them). */
static void take_over(convert_state *cs, json_t *lines) {
    size_t i, j;
    json_t *line, *x;
    json_array_foreach(lines, i, line) {
        json_array_append(cs->shards, json_object_get(line, "shard"));
        json_array_foreach(json_object_get(line, "entries"), j, x) json_array_append(cs->entries, x);
        json_array_foreach(json_object_get(line, "skipped"), j, x) json_array_append(cs->skipped, x);
    }
    cs->journaled_entries = json_array_size(cs->entries);
    cs->journaled_skipped = json_array_size(cs->skipped);
}

/* One writer per output folder; then what the folder holds decides: done, resume, or refuse. */
static cd_status plan_folder(conversion *cv, cd_error *err) {
    convert_state *cs = &cv->cs;
    char path[CD_CONV_PATH_CAP];
    cd_status st = make_dir(cs->dir, err);
    if (st == CD_OK) st = cd_dir_lock_acquire(cs->dir, "convert", &cv->lock, err);
    snprintf(path, sizeof path, "%s/shards", cs->dir);
    if (st == CD_OK) st = make_shard_dir(path, err);
    if (st == CD_OK) st = cd_resume_prepare(cs->dir, &cv->id, cv->legacy, &cv->rs, err);
    return st;
}

/* The resume journal, holding the shards taken over from an interrupted run. */
static cd_status start_journal(conversion *cv, cd_error *err) {
    convert_state *cs = &cv->cs;
    take_over(cs, cv->rs.lines);
    json_t *header = cd_resume_journal_header(&cv->id);
    char path[CD_CONV_PATH_CAP];
    snprintf(path, sizeof path, "%s/" CD_JOURNAL_NAME, cs->dir);
    cd_status st = header ? cd_journal_start(path, header, cv->rs.lines, &cs->journal, err)
                          : cd_fail(err, CD_ERR_NOMEM, "out of memory");
    json_decref(header);
    return st;
}

/* nnU-Net's target spacing: per-axis median of the (RAS) source spacings; when the dataset is
 * anisotropic (max/min median > threshold) the coarse axis takes its 10th percentile instead. */
static cd_status resolve_median_spacing(const cd_convert_options *o, cd_case_list *l, double out[3], cd_error *err) {
    double *sp = malloc((l->n ? l->n : 1) * 3 * sizeof *sp);
    if (!sp) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++) {
        cd_nifti_header h;
        cd_error e;
        if (cd_nifti_read_header(l->cases[i].image_paths[0], &h, &e) != CD_OK) continue; /* reported when processed */
        cd_orientation ornt;
        if (cd_orientation_from_affine(h.affine, &ornt, NULL) != CD_OK || ornt.world_axis[0] < 0 ||
            ornt.world_axis[1] < 0 || ornt.world_axis[2] < 0)
            continue;
        for (int a = 0; a < 3; a++) sp[3 * k + ornt.world_axis[a]] = a < h.ndim ? h.pixdim[a + 1] : 1.0;
        k++;
    }
    if (!k) {
        free(sp);
        return cd_fail(err, CD_ERR_FORMAT, "%s: no readable image headers to compute the median spacing from", o->root);
    }
    double *col = malloc(k * sizeof *col);
    double p10[3];
    for (int a = 0; a < 3; a++) {
        for (size_t i = 0; i < k; i++) col[i] = sp[3 * i + a];
        out[a] = cd_percentile_f64(col, k, 50);
        p10[a] = cd_percentile_f64(col, k, 10);
    }
    int coarse = 0, fine = 0;
    for (int a = 1; a < 3; a++) {
        if (out[a] > out[coarse]) coarse = a;
        if (out[a] < out[fine]) fine = a;
    }
    if (out[coarse] / out[fine] > o->recipe.anisotropy_threshold) out[coarse] = p10[coarse];
    free(col);
    free(sp);
    return CD_OK;
}

/* options.device through the device policy: one slot (context) for preprocessing and the copies. */
static cd_status plan_device(conversion *cv, cd_error *err) {
    cd_status st = cd_device_policy_init(&cv->policy, cv->o->device, NULL, cv->o->out_dir, err);
    if (st == CD_OK) st = cd_device_slot_open(&cv->policy, &cv->slot, err);
    cd_pp_device_init(&cv->pp, &cv->policy, &cv->slot);
    return st;
}

cd_status cd_conv_plan(conversion *cv, cd_error *err) {
    cd_status st = plan_device(cv, err);
    if (st == CD_OK) st = plan_identity(cv, err);
    if (st == CD_OK) st = plan_folder(cv, err);
    if (st != CD_OK) return st;
    snprintf(cv->res->note, sizeof cv->res->note, "%s", cv->rs.note);
    if (cv->rs.finished) return CD_OK;
    if ((st = start_journal(cv, err)) != CD_OK) return st;
    if (cv->o->recipe.resample == CD_RESAMPLE_MEDIAN_SPACING) {
        if ((st = resolve_median_spacing(cv->o, &cv->cases, cv->target, err)) != CD_OK) return st;
        json_object_set_new(cv->cs.resolved, "target_spacing", cd_json_vec3(cv->target));
    }
    cv->res->resumed_records = json_array_size(cv->cs.entries);
    return CD_OK;
}
