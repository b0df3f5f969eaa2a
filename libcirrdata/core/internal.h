/* Internal helpers shared by the library's source files (not installed). */
#ifndef CD_INTERNAL_H
#define CD_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cirrdata/status.h"
#include "cirrdata/volume.h"

#if defined(__GNUC__)
#define CD_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define CD_INTERNAL __attribute__((visibility("hidden")))
#else
#define CD_PRINTF(a, b)
#define CD_INTERNAL
/* IEEE binary16 <-> float32 (round to nearest even). */
CD_INTERNAL float cd_half_to_float(uint16_t h);
CD_INTERNAL uint16_t cd_float_to_half(float f);

#endif

/* Sets err (when non-NULL) to status and a formatted message; returns status. */
CD_INTERNAL cd_status cd_fail(cd_error *err, cd_status status, const char *fmt, ...) CD_PRINTF(3, 4);

/* Allocation of large voxel buffers: big buffers are mmap'ed and advised for transparent huge pages
 * (page faults dominate filling fresh memory at GB/s otherwise). Free with cd_buffer_free and the
 * same size. Returns NULL on failure. */
CD_INTERNAL void *cd_buffer_alloc(size_t nbytes);
CD_INTERNAL void cd_buffer_free(void *ptr, size_t nbytes);
/* While on (calls nest), freed big buffers are kept (up to 1 GiB) and handed out again by
 * cd_buffer_alloc instead of fresh mappings; the last cd_buffer_cache_end unmaps them (core/buffer.c).
 * Reused memory is not zeroed, as malloc's is not. */
CD_INTERNAL void cd_buffer_cache_begin(void);
CD_INTERNAL void cd_buffer_cache_end(void);

/* Builds a volume around a buffer from cd_buffer_alloc of alloc_bytes bytes whose voxels start at
 * data_offset. Takes ownership of the buffer in every case (freed on failure). */
CD_INTERNAL cd_status cd_volume_wrap_buffer(void *buffer, size_t alloc_bytes, size_t data_offset, const int64_t dims[3],
                                            cd_dtype dtype, cd_volume **out, cd_error *err);

/* "threads 0 = all CPUs": requested when above 0, else the online CPUs (at least 1) (core/system.c). */
CD_INTERNAL int cd_thread_count(int requested);
/* The monotonic clock the library's timings use, in seconds and milliseconds. */
CD_INTERNAL double cd_now_s(void);
CD_INTERNAL double cd_now_ms(void);

/* numpy's default ('linear') percentile p (0..100) of n doubles (sorts a copy; NaN when out of memory);
 * cirrdata/volume.h has the float32 one (core/percentile.c). */
CD_INTERNAL double cd_percentile_f64(const double *v, size_t n, double p);

/* The caps of cirrdata/limits.h, by name (core/limits.c). */
typedef enum cd_limit_id {
    CD_LIMIT_DIM,    /* max_dim */
    CD_LIMIT_VOXELS, /* max_voxels */
    CD_LIMIT_BYTES,  /* max_decompressed_bytes */
    CD_LIMIT_JSON,   /* max_json_bytes */
    CD_LIMIT_CSV,    /* max_csv_bytes */
    CD_LIMIT_COUNT
} cd_limit_id;

/* The value of one cap in effect now; CD_ERR_ARG (naming the variable) when it comes from a malformed
 * environment variable (*value is then the default). */
CD_INTERNAL cd_status cd_limit(cd_limit_id id, uint64_t *value, cd_error *err);

/* "the JSON size cap of 512.0 MiB (raise it with CIRRDATA_MAX_JSON_BYTES)", for limit messages. */
CD_INTERNAL const char *cd_limit_describe(cd_limit_id id, uint64_t cap, char *buf, size_t buflen);

/* The environment variable of a cap. */
CD_INTERNAL const char *cd_limit_env(cd_limit_id id);

/* Parses a cap: decimal digits, an optional K/M/G/T (binary) suffix, nothing else; above zero. */
CD_INTERNAL bool cd_limit_parse(const char *s, uint64_t *out);

/* The NIfTI byte cap: requested when non-zero, else the max_decompressed_bytes cap. */
CD_INTERNAL cd_status cd_resolve_max_bytes(uint64_t requested, uint64_t *out, cd_error *err);

/* Formats a byte count as "1.5 GiB" into buf. */
CD_INTERNAL const char *cd_format_bytes(uint64_t bytes, char *buf, size_t buflen);

/* IEEE binary16 <-> float32 (round to nearest even). */
CD_INTERNAL float cd_half_to_float(uint16_t h);
CD_INTERNAL uint16_t cd_float_to_half(float f);

#endif
