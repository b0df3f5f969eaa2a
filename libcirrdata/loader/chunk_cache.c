#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "loader/chunk_cache.h"

/* Entry memory. Slabs of SLAB bytes, 2 MiB aligned and advised MADV_HUGEPAGE, are carved in blocks
 * rounded up to GRAIN; a freed block goes on the free list of its size (a dataset's chunks come in a
 * few sizes: interior and edge chunks of each tensor), and is reused by the next entry of that size.
 * Slabs stay until the cache is destroyed; their total is capped at budget + 2 slabs, past which
 * (sizes shifting over a long run) entries come from malloc: memory stays bounded. */
#define SLAB ((size_t)32 << 20)
#define HUGE_ALIGN ((size_t)2 << 20)
#define GRAIN ((size_t)16 << 10)
#define MAX_CLASSES 64
#define MAX_SLABS 4096

typedef struct free_class {
    size_t size;
    void *head; /* next pointer in each free block's first bytes */
} free_class;

static size_t block_size(size_t len) { return len ? (len + GRAIN - 1) / GRAIN * GRAIN : GRAIN; }

struct cd_cached_chunk {
    uint64_t key;
    void *data;
    size_t len;
    int pins;
    bool cached;                         /* false: a private entry (over budget), freed on unpin */
    struct cd_cached_chunk *hnext;       /* hash chain */
    struct cd_cached_chunk *prev, *next; /* LRU list, most recent first */
};

struct cd_chunk_cache {
    uint64_t budget, bytes;
    size_t nbuckets;
    cd_cached_chunk **buckets;
    cd_cached_chunk *head, *tail;
    pthread_mutex_t mu;
    /* entry memory (see SLAB) */
    char *slab[MAX_SLABS];
    size_t nslabs, slab_used; /* bytes carved from the last slab */
    free_class classes[MAX_CLASSES];
    size_t nclasses;
};

static size_t bucket_of(const cd_chunk_cache *c, uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return (size_t)(key & (c->nbuckets - 1));
}

cd_chunk_cache *cd_chunk_cache_create(uint64_t budget) {
    cd_chunk_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->budget = budget;
    c->nbuckets = 1 << 14;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void cd_chunk_cache_destroy(cd_chunk_cache *c) {
    if (!c) return;
    for (cd_cached_chunk *e = c->head, *n; e; e = n) {
        n = e->next;
        cd_chunk_cache_free(c, e->data, e->len);
        free(e);
    }
    for (size_t i = 0; i < c->nslabs; i++) munmap(c->slab[i], SLAB);
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static bool in_slabs(const cd_chunk_cache *c, const void *p) {
    for (size_t i = 0; i < c->nslabs; i++)
        if ((const char *)p >= c->slab[i] && (const char *)p < c->slab[i] + SLAB) return true;
    return false;
}

/* A SLAB-sized mapping aligned to HUGE_ALIGN (over-map, trim), advised for huge pages; NULL if none. */
static char *map_slab(void) {
    char *p = mmap(NULL, SLAB + HUGE_ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    char *a = (char *)(((uintptr_t)p + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1));
    if (a > p) munmap(p, (size_t)(a - p));
    if (a + SLAB < p + SLAB + HUGE_ALIGN) munmap(a + SLAB, (size_t)(p + SLAB + HUGE_ALIGN - (a + SLAB)));
#ifdef MADV_HUGEPAGE
    madvise(a, SLAB, MADV_HUGEPAGE); /* advice only: without it, 4 KiB pages */
#endif
    return a;
}

/* Caller holds mu. */
static void *slab_alloc(cd_chunk_cache *c, size_t len) {
    const size_t b = block_size(len);
    if (b > SLAB / 4) return NULL;
    for (size_t i = 0; i < c->nclasses; i++)
        if (c->classes[i].size == b && c->classes[i].head) {
            void *p = c->classes[i].head;
            c->classes[i].head = *(void **)p;
            return p;
        }
    if (!c->nslabs || c->slab_used + b > SLAB) {
        if (c->nslabs == MAX_SLABS || (uint64_t)(c->nslabs + 1) * SLAB > c->budget + 2 * SLAB) return NULL;
        char *s = map_slab();
        if (!s) return NULL;
        c->slab[c->nslabs++] = s;
        c->slab_used = 0;
    }
    void *p = c->slab[c->nslabs - 1] + c->slab_used;
    c->slab_used += b;
    return p;
}

void *cd_chunk_cache_alloc(cd_chunk_cache *c, size_t len) {
    void *p = NULL;
    if (c->budget > 0) { /* without a budget nothing is kept: plain malloc */
        pthread_mutex_lock(&c->mu);
        p = slab_alloc(c, len);
        pthread_mutex_unlock(&c->mu);
    }
    return p ? p : malloc(len ? len : 1);
}

/* Caller holds mu or is the only user. */
static void block_free(cd_chunk_cache *c, void *data, size_t len) {
    if (!data) return;
    if (!in_slabs(c, data)) {
        free(data);
        return;
    }
    const size_t b = block_size(len);
    size_t i = 0;
    while (i < c->nclasses && c->classes[i].size != b) i++;
    if (i == c->nclasses) {
        if (c->nclasses == MAX_CLASSES) return; /* too many sizes: the block stays unused (bounded by the slab cap) */
        c->classes[c->nclasses++] = (free_class){b, NULL};
    }
    *(void **)data = c->classes[i].head;
    c->classes[i].head = data;
}

void cd_chunk_cache_free(cd_chunk_cache *c, void *data, size_t len) {
    pthread_mutex_lock(&c->mu);
    block_free(c, data, len);
    pthread_mutex_unlock(&c->mu);
}

static void lru_unlink(cd_chunk_cache *c, cd_cached_chunk *e) {
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front(cd_chunk_cache *c, cd_cached_chunk *e) {
    e->next = c->head;
    e->prev = NULL;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

static void hash_remove(cd_chunk_cache *c, cd_cached_chunk *e) {
    cd_cached_chunk **p = &c->buckets[bucket_of(c, e->key)];
    while (*p && *p != e) p = &(*p)->hnext;
    if (*p) *p = e->hnext;
}

/* The entry of key, or NULL (caller holds mu). */
static cd_cached_chunk *hash_find(const cd_chunk_cache *c, uint64_t key) {
    cd_cached_chunk *e = c->buckets[bucket_of(c, key)];
    while (e && e->key != key) e = e->hnext;
    return e;
}

/* Enter e into the hash and the byte count (caller holds mu; e->key and e->len set). */
static void hash_insert(cd_chunk_cache *c, cd_cached_chunk *e) {
    const size_t b = bucket_of(c, e->key);
    e->cached = true;
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    c->bytes += e->len;
}

const cd_cached_chunk *cd_chunk_cache_get(cd_chunk_cache *c, uint64_t key, const void **data) {
    pthread_mutex_lock(&c->mu);
    cd_cached_chunk *e = hash_find(c, key);
    if (e) {
        e->pins++;
        lru_unlink(c, e);
        lru_front(c, e);
        *data = e->data;
    }
    pthread_mutex_unlock(&c->mu);
    return e;
}

const cd_cached_chunk *cd_chunk_cache_put(cd_chunk_cache *c, uint64_t key, void *data, size_t len) {
    cd_cached_chunk *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->key = key;
    e->data = data;
    e->len = len;
    e->pins = 1;
    pthread_mutex_lock(&c->mu);
    /* Another thread may have decoded the same chunk meanwhile: keep one copy. */
    if (!hash_find(c, key) && len <= c->budget) {
        /* Evict unpinned entries from the cold end until it fits. */
        for (cd_cached_chunk *v = c->tail; v && c->bytes + len > c->budget;) {
            cd_cached_chunk *prev = v->prev;
            if (v->pins == 0) {
                lru_unlink(c, v);
                hash_remove(c, v);
                c->bytes -= v->len;
                block_free(c, v->data, v->len);
                free(v);
            }
            v = prev;
        }
        if (c->bytes + len <= c->budget) {
            hash_insert(c, e);
            lru_front(c, e);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return e;
}

void cd_chunk_cache_unpin(cd_chunk_cache *c, const cd_cached_chunk *ce) {
    cd_cached_chunk *e = (cd_cached_chunk *)ce;
    pthread_mutex_lock(&c->mu);
    e->pins--;
    bool drop = !e->cached && e->pins == 0;
    pthread_mutex_unlock(&c->mu);
    if (drop) {
        cd_chunk_cache_free(c, e->data, e->len);
        free(e);
    }
}

uint64_t cd_chunk_cache_bytes(const cd_chunk_cache *c) {
    pthread_mutex_lock((pthread_mutex_t *)&c->mu);
    uint64_t b = c->bytes;
    pthread_mutex_unlock((pthread_mutex_t *)&c->mu);
    return b;
}

bool cd_chunk_cache_has(cd_chunk_cache *c, uint64_t key) {
    pthread_mutex_lock(&c->mu);
    const bool found = hash_find(c, key) != NULL;
    pthread_mutex_unlock(&c->mu);
    return found;
}

uint64_t cd_chunk_cache_room(const cd_chunk_cache *c) {
    pthread_mutex_lock((pthread_mutex_t *)&c->mu);
    uint64_t r = c->bytes < c->budget ? c->budget - c->bytes : 0;
    pthread_mutex_unlock((pthread_mutex_t *)&c->mu);
    return r;
}

bool cd_chunk_cache_preload(cd_chunk_cache *c, uint64_t key, void *data, size_t len) {
    cd_cached_chunk *e = calloc(1, sizeof *e);
    if (!e) return false;
    pthread_mutex_lock(&c->mu);
    /* Never evicts: preloaded chunks would only push out other preloaded chunks. */
    const bool ok = !hash_find(c, key) && c->bytes + len <= c->budget;
    if (ok) {
        *e = (cd_cached_chunk){.key = key, .data = data, .len = len};
        hash_insert(c, e);
        /* at the cold end: chunks the sampling reads (moved to the front) outlive ones never read */
        e->prev = c->tail;
        if (c->tail)
            c->tail->next = e;
        else
            c->head = e;
        c->tail = e;
    }
    pthread_mutex_unlock(&c->mu);
    if (!ok) free(e);
    return ok;
}
