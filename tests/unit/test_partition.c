/* dataset/partition.h: the cuts of convert --part I/N. Every N tiles the cases exactly once with contiguous
 * ranges; each cut is the prefix sum nearest to k/N of the total (checked against a brute-force search);
 * the edge cases: no cases, all sizes 0 (even split by count), more parts than cases, one case heavier
 * than a share. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "dataset/partition.h"

/* The nearest prefix sum to k/n of the total, the smaller j on a tie (doubles suffice for these sizes). */
static size_t brute_cut(const uint64_t *b, size_t n, int k, int parts) {
    if (k == 0) return 0;
    if (k == parts) return n;
    double total = 0, target, best = -1;
    for (size_t i = 0; i < n; i++) total += (double)b[i];
    target = total * k / parts;
    size_t arg = 0;
    double prefix = 0;
    for (size_t j = 0; j <= n; j++) {
        double d = prefix > target ? prefix - target : target - prefix;
        if (best < 0 || d < best) {
            best = d;
            arg = j;
        }
        if (j < n) prefix += (double)b[j];
    }
    return arg;
}

/* Parts 1..parts tile [0, n) in order; returns the ranges in lo/hi. */
static void check_tiling(const uint64_t *b, size_t n, int parts, size_t *lo, size_t *hi) {
    size_t expect = 0;
    for (int i = 1; i <= parts; i++) {
        cd_part_range(b, n, i, parts, &lo[i - 1], &hi[i - 1]);
        assert_int_equal(lo[i - 1], expect);
        assert_true(hi[i - 1] >= lo[i - 1]);
        expect = hi[i - 1];
    }
    assert_int_equal(expect, n);
}

static void test_nearest_cuts(void **state) {
    (void)state;
    uint64_t b[40];
    size_t lo[9], hi[9];
    srand(5);
    for (int trial = 0; trial < 200; trial++) {
        size_t n = 1 + (size_t)(rand() % 40);
        for (size_t i = 0; i < n; i++) b[i] = (uint64_t)(rand() % 1000) * (uint64_t)(1 + rand() % 50);
        for (int parts = 1; parts <= 9; parts++) {
            check_tiling(b, n, parts, lo, hi);
            uint64_t total = 0;
            for (size_t i = 0; i < n; i++) total += b[i];
            if (!total) continue;
            for (int k = 1; k < parts; k++) assert_int_equal(hi[k - 1], brute_cut(b, n, k, parts));
        }
    }
}

static void test_balance(void **state) {
    (void)state;
    /* 160 bytes in 8 cases, one of 80. 2 parts: the prefix sums nearest 80 are 30 (cases 0..2) and 110
     * (0..3): 110 is nearer. 4 parts: the cuts nearest 40, 80, 120 are after cases 2, 3 and 4, so the heavy
     * case is a part of its own. */
    const uint64_t b[8] = {10, 10, 10, 80, 10, 10, 10, 20};
    size_t lo[4], hi[4];
    check_tiling(b, 8, 2, lo, hi);
    assert_int_equal(hi[0], 4);
    check_tiling(b, 8, 4, lo, hi);
    assert_int_equal(hi[0], 3);
    assert_int_equal(hi[1], 4);
    assert_int_equal(hi[2], 5);
    /* Zero-byte cases (unreadable files) before a cut on a tie: the smallest j, as for any tie. */
    const uint64_t z[3] = {0, 0, 10};
    check_tiling(z, 3, 2, lo, hi);
    assert_int_equal(hi[0], 0);
}

static void test_edges(void **state) {
    (void)state;
    size_t lo[8], hi[8];
    check_tiling(NULL, 0, 3, lo, hi); /* no cases: every part empty */
    for (int i = 0; i < 3; i++) assert_int_equal(hi[i], 0);
    const uint64_t zero[6] = {0};
    check_tiling(zero, 6, 3, lo, hi); /* no bytes: by count, 2 each */
    for (int i = 0; i < 3; i++) assert_int_equal(hi[i] - lo[i], 2);
    const uint64_t two[2] = {5, 5};
    check_tiling(two, 2, 5, lo, hi); /* more parts than cases: some empty, still a tiling */
    size_t nonempty = 0;
    for (int i = 0; i < 5; i++) nonempty += hi[i] > lo[i];
    assert_int_equal(nonempty, 2);
    const uint64_t huge[5] = {1, 1, 1000, 1, 1};
    check_tiling(huge, 5, 3, lo, hi);
    assert_int_equal(lo[1], 2); /* the heavy case starts part 2 ... */
    assert_int_equal(hi[1], 3); /* ... and is alone in it */
    const uint64_t tie[2] = {5, 5};
    check_tiling(tie, 2, 2, lo, hi);
    assert_int_equal(hi[0], 1); /* exactly half: one case each */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nearest_cuts),
        cmocka_unit_test(test_balance),
        cmocka_unit_test(test_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
