/* Large voxel buffers: 2 MiB-aligned huge-page mappings, and a cache of freed ones that a conversion
 * turns on so that each case reuses the memory of earlier cases instead of mapping fresh pages (the
 * kernel zeroes every fresh huge page, and that costs about as much as one pass over the data). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/internal.h"

/* Below this size malloc is as fast; above it, huge pages cut page-fault time when filling. */
#define CD_MMAP_THRESHOLD ((size_t)4 << 20)
#define CD_HUGE_PAGE ((size_t)2 << 20)
/* What the cache may hold while on: enough for the buffers of the cases a conversion has in flight. */
#define CACHE_SLOTS 48
#define CACHE_MAX_BYTES ((size_t)1 << 30)
/* While the cache is on, buffers from this size up are mappings too (kept and reused like big ones):
 * glibc maps and unmaps blocks of these sizes anew, which costs page faults on every fill. */
#define CACHE_MIN ((size_t)256 << 10)
/* Live mappings whose length is not mmap_length(the size the caller frees): handed out from a longer
 * cached mapping, or below CD_MMAP_THRESHOLD (a size the caller's free would route to free()). */
#define LENDS 256

typedef struct mapping {
    void *p;
    size_t len; /* a multiple of CD_HUGE_PAGE */
} mapping;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int users;                  /* cd_buffer_cache_begin calls not yet ended */
static mapping cache[CACHE_SLOTS]; /* freed mappings kept for reuse */
static size_t ncache, cache_bytes;
static mapping lent[LENDS]; /* live buffers whose mapping is longer than mmap_length(their size) */
static size_t nlent;

static size_t mmap_length(size_t nbytes) { return (nbytes + CD_HUGE_PAGE - 1) & ~(CD_HUGE_PAGE - 1); }

static void *map_fresh(size_t len) {
    /* Map 2 MiB more and trim to a 2 MiB boundary: kernels before 6.7 do not align large anonymous
     * mappings themselves, and an unaligned start cannot use huge pages. */
    uint8_t *raw = mmap(NULL, len + CD_HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    uint8_t *p = (uint8_t *)(((uintptr_t)raw + CD_HUGE_PAGE - 1) & ~(uintptr_t)(CD_HUGE_PAGE - 1));
    size_t head = (size_t)(p - raw), tail = CD_HUGE_PAGE - head;
    if (head) munmap(raw, head);
    if (tail) munmap(p + len, tail);
#ifdef MADV_HUGEPAGE
    madvise(p, len, MADV_HUGEPAGE);
#endif
    return p;
}

/* The smallest cached mapping of at least len bytes (under mu); its length in *got. Reusing one up to
 * twice as long keeps its pages; a longer one is trimmed to len (the tail is unmapped). */
static void *take_cached(size_t len, size_t *got) {
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < ncache; i++)
        if (cache[i].len >= len && (best == SIZE_MAX || cache[i].len < cache[best].len)) best = i;
    if (best == SIZE_MAX) return NULL;
    mapping m = cache[best];
    cache[best] = cache[--ncache];
    cache_bytes -= m.len;
    if (m.len > 2 * len || (m.len > len && nlent == LENDS)) {
        munmap((uint8_t *)m.p + len, m.len - len);
        m.len = len;
    }
    if (m.len > len) lent[nlent++] = m;
    *got = m.len;
    return m.p;
}

/* A mid-sized buffer (CACHE_MIN .. CD_MMAP_THRESHOLD) as a mapping while the cache is on (under mu);
 * NULL: use malloc. */
static void *mid_alloc(size_t nbytes) {
    if (users == 0 || nlent == LENDS) return NULL;
    size_t got = 0, len = mmap_length(nbytes);
    void *p = ncache ? take_cached(len, &got) : NULL;
    if (!p) {
        if (!(p = map_fresh(len))) return NULL;
        got = len;
    }
    /* take_cached recorded it when it was longer than len; else record it here. */
    if (got == len) {
        if (nlent == LENDS) {
            munmap(p, got);
            return NULL;
        }
        lent[nlent++] = (mapping){p, got};
    }
    return p;
}

void *cd_buffer_alloc(size_t nbytes) {
    if (nbytes == 0) nbytes = 1;
    if (nbytes < CACHE_MIN) return malloc(nbytes);
    if (nbytes < CD_MMAP_THRESHOLD) {
        pthread_mutex_lock(&mu);
        void *p = mid_alloc(nbytes);
        pthread_mutex_unlock(&mu);
        return p ? p : malloc(nbytes);
    }
    const size_t len = mmap_length(nbytes);
    pthread_mutex_lock(&mu);
    size_t got = 0;
    void *p = ncache ? take_cached(len, &got) : NULL;
    pthread_mutex_unlock(&mu);
    return p ? p : map_fresh(len);
}

void cd_buffer_free(void *ptr, size_t nbytes) {
    if (!ptr) return;
    if (nbytes == 0) nbytes = 1;
    if (nbytes < CACHE_MIN) {
        free(ptr);
        return;
    }
    mapping m = {ptr, mmap_length(nbytes)};
    bool mapped = nbytes >= CD_MMAP_THRESHOLD;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < nlent; i++)
        if (lent[i].p == ptr) {
            m.len = lent[i].len;
            lent[i] = lent[--nlent];
            mapped = true;
            break;
        }
    if (!mapped) { /* a mid-sized buffer from malloc */
        pthread_mutex_unlock(&mu);
        free(ptr);
        return;
    }
    if (users > 0) {
        /* Make room by dropping the smallest mappings (the least likely to fit a later request). */
        while (ncache > 0 && (ncache == CACHE_SLOTS || cache_bytes + m.len > CACHE_MAX_BYTES)) {
            size_t s = 0;
            for (size_t i = 1; i < ncache; i++)
                if (cache[i].len < cache[s].len) s = i;
            if (cache[s].len > m.len) break;
            munmap(cache[s].p, cache[s].len);
            cache_bytes -= cache[s].len;
            cache[s] = cache[--ncache];
        }
        if (ncache < CACHE_SLOTS && cache_bytes + m.len <= CACHE_MAX_BYTES) {
            cache[ncache++] = m;
            cache_bytes += m.len;
            m.p = NULL;
        }
    }
    pthread_mutex_unlock(&mu);
    if (m.p) munmap(m.p, m.len);
}

void cd_buffer_cache_begin(void) {
    pthread_mutex_lock(&mu);
    users++;
    pthread_mutex_unlock(&mu);
}

void cd_buffer_cache_end(void) {
    mapping drop[CACHE_SLOTS];
    size_t n = 0;
    pthread_mutex_lock(&mu);
    if (users > 0 && --users == 0) {
        n = ncache;
        memcpy(drop, cache, n * sizeof *drop);
        ncache = 0;
        cache_bytes = 0;
    }
    pthread_mutex_unlock(&mu);
    for (size_t i = 0; i < n; i++) munmap(drop[i].p, drop[i].len);
}
