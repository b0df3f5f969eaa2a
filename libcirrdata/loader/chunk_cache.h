/* A shared, bounded cache of decoded chunks (internal). Later epochs sample the same records again:
 * keeping decoded chunks (up to a byte budget, least recently used evicted) turns their cost from
 * read + verify + decompress into a copy, as peers that hold whole volumes in memory do, but bounded. */
#ifndef CD_LOADER_CHUNK_CACHE_H
#define CD_LOADER_CHUNK_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

typedef struct cd_chunk_cache cd_chunk_cache;
typedef struct cd_cached_chunk cd_cached_chunk;

/* budget 0: a cache that keeps nothing (every get misses). */
CD_INTERNAL cd_chunk_cache *cd_chunk_cache_create(uint64_t budget_bytes);
CD_INTERNAL void cd_chunk_cache_destroy(cd_chunk_cache *c);

/* A pinned entry's bytes, or NULL on a miss. Pinned entries are never evicted; unpin when done. */
CD_INTERNAL const cd_cached_chunk *cd_chunk_cache_get(cd_chunk_cache *c, uint64_t key, const void **data);
/* Memory for an entry of len bytes (NULL when out of memory): from the cache's slabs, which are
 * advised for transparent huge pages and recycle evicted entries' blocks, so that filling the cache
 * does not take a page fault per 4 KiB (about 10 us each on VMs) and eviction does not unmap. Pass
 * it to cd_chunk_cache_put, or give it back with cd_chunk_cache_free(c, data, len). */
CD_INTERNAL void *cd_chunk_cache_alloc(cd_chunk_cache *c, size_t len);
CD_INTERNAL void cd_chunk_cache_free(cd_chunk_cache *c, void *data, size_t len);
/* Inserts bytes (the cache takes ownership of data, from cd_chunk_cache_alloc with this len) and
 * returns the pinned entry; when the budget cannot hold it, data is still returned pinned in a
 * private entry freed on unpin. */
CD_INTERNAL const cd_cached_chunk *cd_chunk_cache_put(cd_chunk_cache *c, uint64_t key, void *data, size_t len);
CD_INTERNAL void cd_chunk_cache_unpin(cd_chunk_cache *c, const cd_cached_chunk *e);
CD_INTERNAL uint64_t cd_chunk_cache_bytes(const cd_chunk_cache *c);

/* Preloading (cd_loader_options.preload): whether key is cached; the budget left; and an insert that
 * never evicts and leaves the entry unpinned. True: the cache took data (from cd_chunk_cache_alloc
 * with this len); false (already cached, or no room left without evicting): the caller still owns it. */
CD_INTERNAL bool cd_chunk_cache_has(cd_chunk_cache *c, uint64_t key);
CD_INTERNAL uint64_t cd_chunk_cache_room(const cd_chunk_cache *c);
CD_INTERNAL bool cd_chunk_cache_preload(cd_chunk_cache *c, uint64_t key, void *data, size_t len);

#endif
