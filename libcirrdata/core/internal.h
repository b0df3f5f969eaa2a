/* Internal helpers shared by the library's source files (not installed). */
#ifndef CD_INTERNAL_H
#define CD_INTERNAL_H

#include <stdarg.h>
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

/* Builds a volume around a buffer from cd_buffer_alloc of alloc_bytes bytes whose voxels start at
 * data_offset. Takes ownership of the buffer in every case (freed on failure). */
CD_INTERNAL cd_status cd_volume_wrap_buffer(void *buffer, size_t alloc_bytes, size_t data_offset,
                                            const int64_t dims[3], cd_dtype dtype, cd_volume **out,
                                            cd_error *err);

/* The allocation cap: explicit value if non-zero, else $CIRRDATA_MAX_BYTES, else the default. */
CD_INTERNAL uint64_t cd_resolve_max_bytes(uint64_t requested);

/* Formats a byte count as "1.5 GiB" into buf. */
CD_INTERNAL const char *cd_format_bytes(uint64_t bytes, char *buf, size_t buflen);

/* IEEE binary16 <-> float32 (round to nearest even). */
CD_INTERNAL float cd_half_to_float(uint16_t h);
CD_INTERNAL uint16_t cd_float_to_half(float f);

#endif
