/* Inflating gzip data held in memory (internal). */
#ifndef CD_IO_GZIP_READER_H
#define CD_IO_GZIP_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

/* Deflate cannot expand data by more than about 1032:1, so a gzip file of n bytes cannot hold more
 * than this many bytes: anything a header claims above it is a lie (truncation or a "bomb"). */
CD_INTERNAL uint64_t cd_gzip_max_inflated(uint64_t compressed_bytes);

/* True when in starts with the gzip magic bytes. */
CD_INTERNAL bool cd_gzip_is_gzip(const uint8_t *in, size_t in_len);

/* Inflates the gzip data in[0..in_len) (one or more members) into out[0..want).
 * - total: how many bytes the whole stream should inflate to (what the header describes). When
 *   want == total and the last member's ISIZE agrees, the fast whole-buffer path (libdeflate) runs;
 *   otherwise zlib streams.
 * - allow_short: a stream ending before want bytes is not an error (*got says how many); used to
 *   read a header prefix. Otherwise that is CD_ERR_TRUNCATED.
 * When want == total, the stream is read to its end so the CRC32 and ISIZE trailers are checked;
 * data past total (at most 64 MiB) is checked and ignored.
 * Errors name path: truncated data, corrupt deflate data, CRC or length mismatches. */
CD_INTERNAL cd_status cd_gzip_inflate(const char *path, const uint8_t *in, size_t in_len, void *out, size_t want,
                                      uint64_t total, bool allow_short, size_t *got, cd_error *err);

#endif
