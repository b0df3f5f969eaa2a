/* What the library asks of the system in one place: the thread count for "0 = all CPUs" and the
 * monotonic clock its timings use. */
#include <time.h>
#include <unistd.h>

#include "core/internal.h"

int cd_thread_count(int requested) {
    if (requested > 0) return requested;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

double cd_now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

double cd_now_ms(void) { return 1e3 * cd_now_s(); }
