#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "loader/chunk_cache.h"

struct cd_cached_chunk {
    uint64_t key;
    void *data;
    size_t len;
    int pins;
    bool cached;                     /* false: a private entry (over budget), freed on unpin */
    struct cd_cached_chunk *hnext;   /* hash chain */
    struct cd_cached_chunk *prev, *next; /* LRU list, most recent first */
};

struct cd_chunk_cache {
    uint64_t budget, bytes;
    size_t nbuckets;
    cd_cached_chunk **buckets;
    cd_cached_chunk *head, *tail;
    pthread_mutex_t mu;
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
        free(e->data);
        free(e);
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void lru_unlink(cd_chunk_cache *c, cd_cached_chunk *e) {
    if (e->prev) e->prev->next = e->next; else c->head = e->next;
    if (e->next) e->next->prev = e->prev; else c->tail = e->prev;
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

const cd_cached_chunk *cd_chunk_cache_get(cd_chunk_cache *c, uint64_t key, const void **data) {
    pthread_mutex_lock(&c->mu);
    cd_cached_chunk *e = c->buckets[bucket_of(c, key)];
    while (e && e->key != key) e = e->hnext;
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
    cd_cached_chunk *dup = c->buckets[bucket_of(c, key)];
    while (dup && dup->key != key) dup = dup->hnext;
    if (!dup && len <= c->budget) {
        /* Evict unpinned entries from the cold end until it fits. */
        for (cd_cached_chunk *v = c->tail; v && c->bytes + len > c->budget;) {
            cd_cached_chunk *prev = v->prev;
            if (v->pins == 0) {
                lru_unlink(c, v);
                hash_remove(c, v);
                c->bytes -= v->len;
                free(v->data);
                free(v);
            }
            v = prev;
        }
        if (c->bytes + len <= c->budget) {
            e->cached = true;
            size_t b = bucket_of(c, key);
            e->hnext = c->buckets[b];
            c->buckets[b] = e;
            lru_front(c, e);
            c->bytes += len;
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
        free(e->data);
        free(e);
    }
}

uint64_t cd_chunk_cache_bytes(const cd_chunk_cache *c) {
    pthread_mutex_lock((pthread_mutex_t *)&c->mu);
    uint64_t b = c->bytes;
    pthread_mutex_unlock((pthread_mutex_t *)&c->mu);
    return b;
}
