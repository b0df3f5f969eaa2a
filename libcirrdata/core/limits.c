#include <errno.h>
#include <stdlib.h>

#include "cirrdata/nifti.h"
#include "core/internal.h"

uint64_t cd_resolve_max_bytes(uint64_t requested) {
    if (requested) return requested;
    const char *env = getenv("CIRRDATA_MAX_BYTES");
    if (env && *env) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(env, &end, 10);
        if (errno == 0 && end != env && v > 0) {
            /* Optional binary suffix: K, M, G, T. */
            unsigned shift = 0;
            switch (*end) {
            case 'K': case 'k': shift = 10; break;
            case 'M': case 'm': shift = 20; break;
            case 'G': case 'g': shift = 30; break;
            case 'T': case 't': shift = 40; break;
            default: break;
            }
            if (v <= (UINT64_MAX >> shift)) return (uint64_t)v << shift;
        }
    }
    return CD_NIFTI_DEFAULT_MAX_BYTES;
}
