/* The loader's resume state: where the next delivered batch starts (seed, epoch, position). */
#include "loader/loader_impl.h"

void cd_loader_get_state(const cd_loader *l, cd_loader_state *out) {
    pthread_mutex_lock((pthread_mutex_t *)&l->mu);
    out->seed = l->o.seed;
    out->epoch = l->deliver_epoch;
    out->position = l->deliver_pos;
    pthread_mutex_unlock((pthread_mutex_t *)&l->mu);
}

static cd_status check_state(const cd_loader *l, const cd_loader_state *state, cd_error *err) {
    if (state->seed != l->o.seed)
        return cd_fail(err, CD_ERR_ARG, "state was saved with seed %llu, this loader has seed %llu",
                       (unsigned long long)state->seed, (unsigned long long)l->o.seed);
    if (state->epoch > CD_LOADER_MAX_EPOCH)
        return cd_fail(err, CD_ERR_ARG, "state epoch must be in 0..%llu (got %llu)", CD_LOADER_MAX_EPOCH,
                       (unsigned long long)state->epoch);
    if (state->position >= l->per_rank)
        return cd_fail(err, CD_ERR_ARG,
                       "state position must be in 0..%llu, the samples of an epoch of this rank (got %llu)",
                       (unsigned long long)l->per_rank - 1, (unsigned long long)state->position);
    const uint64_t B = l->o.batch_size, stride = l->o.batch_stride;
    if (stride > 1 && (state->position % B || (state->position / B) % stride != l->o.batch_offset))
        return cd_fail(err, CD_ERR_ARG,
                       "state position %llu does not start one of this loader's batches (batch_size %llu, batches "
                       "%u + k x %llu)",
                       (unsigned long long)state->position, (unsigned long long)B, l->o.batch_offset,
                       (unsigned long long)stride);
    return CD_OK;
}

cd_status cd_loader_set_state(cd_loader *l, const cd_loader_state *state, cd_error *err) {
    if (!l || !state) return cd_fail(err, CD_ERR_ARG, "cd_loader_set_state: NULL argument");
    if (l->closed) return cd_fail(err, CD_ERR_ARG, "the loader is closed");
    cd_status st = check_state(l, state, err);
    if (st != CD_OK) return st;
    pthread_mutex_lock(&l->mu);
    if (l->borrowed) {
        pthread_mutex_unlock(&l->mu);
        return cd_fail(err, CD_ERR_ARG, "%u borrowed batch(es) not released: release them before setting the state",
                       l->borrowed);
    }
    /* Stop handing out work, let samples in progress finish, then restart the schedule (lent slots stay
     * out until their flags say they are back). */
    for (uint32_t i = 0; i < l->ring; i++)
        if (!l->slots[i].lent) l->slots[i].assigned = false;
    l->deliver_seq = l->assign_seq;
    l->resetting = true; /* no lent slot is assigned from the old schedule meanwhile (ring.c) */
    while (l->busy > 0) pthread_cond_wait(&l->cv, &l->mu);
    l->resetting = false;
    if (l->closed) {
        pthread_mutex_unlock(&l->mu);
        return cd_fail(err, CD_ERR_ARG, "the loader is closed");
    }
    l->failed = CD_OK;
    l->sched_epoch = l->deliver_epoch = l->current_epoch = state->epoch;
    l->sched_pos = l->deliver_pos = state->position;
    l->epoch_end_reported = false;
    cd_loader_assign_batches(l);
    pthread_mutex_unlock(&l->mu);
    return CD_OK;
}
