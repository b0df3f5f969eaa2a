/* Drives the training loader through its public C API for the valgrind tests (tests/python/test_valgrind.py):
 * loader_walk DATASET uring|pread|auto BATCHES AUGMENT. Creates a loader (2 threads, patch mode), takes
 * BATCHES batches across an epoch boundary, saves the state, continues in a second loader from it, takes
 * one more batch, closes that loader (cd_loader_close) and reads the batch after the close (the ring
 * outlives it until cd_loader_destroy), and destroys both. Prints the io backend used and a checksum of
 * the voxels; exit 1 on any error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cirrdata/cirrdata.h>

static int walk(cd_loader *l, int n, double *sum, cd_error *err) {
    for (int i = 0; i < n; i++) {
        cd_batch *b;
        if (cd_loader_next(l, &b, err) != CD_OK) return 1;
        if (!b) continue; /* end of an epoch: the next call starts the next one */
        size_t nv = (size_t)b->size * b->channels * (size_t)(b->shape[0] * b->shape[1] * b->shape[2]);
        for (size_t k = 0; k < nv; k++) *sum += b->image[k];
        cd_loader_release(l, b);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: loader_walk DATASET uring|pread|auto BATCHES AUGMENT\n");
        return 2;
    }
    cd_loader_options o;
    cd_loader_options_init(&o);
    o.dataset = argv[1];
    o.io = !strcmp(argv[2], "uring") ? CD_IO_URING : !strcmp(argv[2], "pread") ? CD_IO_PREAD : CD_IO_AUTO;
    o.mode = CD_LOADER_PATCH;
    o.patch[0] = 24, o.patch[1] = 24, o.patch[2] = 8;
    o.batch_size = 2;
    o.seed = 3;
    o.splits = "*";
    o.augment = argv[4];
    o.threads = 2;
    o.world_size = 1;
    int n = atoi(argv[3]);
    cd_error err;
    cd_loader *l = NULL, *l2 = NULL;
    double sum = 0;
    int rc = 1;
    if (cd_loader_create(&o, &l, &err) != CD_OK || walk(l, n, &sum, &err)) goto out;
    printf("io %s\n", cd_loader_io_name(l));
    cd_loader_state st;
    cd_loader_get_state(l, &st);
    o.threads = 1;
    if (cd_loader_create(&o, &l2, &err) != CD_OK || cd_loader_set_state(l2, &st, &err) != CD_OK ||
        walk(l2, n, &sum, &err))
        goto out;
    cd_batch *b = NULL;
    while (!b)
        if (cd_loader_next(l2, &b, &err) != CD_OK) goto out;
    cd_loader_close(l2);
    size_t nv = (size_t)b->size * b->channels * (size_t)(b->shape[0] * b->shape[1] * b->shape[2]);
    double after = 0;
    for (size_t k = 0; k < nv; k++) after += b->image[k]; /* the ring is still there */
    cd_batch *b2 = NULL;
    cd_error e2;
    cd_error_clear(&e2);
    if (cd_loader_next(l2, &b2, &e2) != CD_ERR_ARG || b2 || !strstr(e2.message, "closed")) {
        snprintf(err.message, sizeof err.message, "cd_loader_next after cd_loader_close must fail: '%.200s'",
                 e2.message);
        goto out;
    }
    cd_loader_release(l2, b); /* does nothing after the close */
    printf("sum %.6g after close %.6g\n", sum, after);
    rc = 0;
out:
    if (rc) fprintf(stderr, "loader_walk: %s\n", err.message);
    cd_loader_destroy(l);
    cd_loader_destroy(l2);
    return rc;
}
