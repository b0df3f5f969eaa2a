#include <libdeflate.h>
#include <string.h>
#include <zlib.h>

#include "io/gzip_reader.h"

#define MAX_EXTRA_BYTES ((uint64_t)64 << 20)

uint64_t cd_gzip_max_inflated(uint64_t compressed_bytes) {
    /* 1032:1 is deflate's limit (258-byte matches coded in 2 bits); add slack for tiny files. */
    if (compressed_bytes > UINT64_MAX / 1032) return UINT64_MAX;
    return compressed_bytes * 1032 + 4096;
}

bool cd_gzip_is_gzip(const uint8_t *in, size_t in_len) { return in_len >= 2 && in[0] == 0x1f && in[1] == 0x8b; }

static uint32_t read_le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Whole-buffer inflate with libdeflate, member by member. Returns true when exactly total bytes
 * came out and nothing but zero padding follows; false means "let zlib redo it and diagnose". */
static bool inflate_libdeflate(const uint8_t *in, size_t in_len, uint8_t *out, size_t total) {
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    if (!d) return false;
    size_t in_off = 0, out_off = 0;
    bool ok = false;
    for (;;) {
        size_t in_used = 0, out_got = 0;
        enum libdeflate_result r = libdeflate_gzip_decompress_ex(d, in + in_off, in_len - in_off, out + out_off,
                                                                 total - out_off, &in_used, &out_got);
        if (r != LIBDEFLATE_SUCCESS || in_used == 0) break;
        in_off += in_used;
        out_off += out_got;
        if (out_off == total) {
            /* Anything after the last member other than zero padding goes through zlib's checks. */
            ok = true;
            for (size_t i = in_off; i < in_len; i++)
                if (in[i] != 0) {
                    ok = false;
                    break;
                }
            break;
        }
        if (in_off >= in_len) break;
    }
    libdeflate_free_decompressor(d);
    return ok;
}

static cd_status zlib_error(const char *path, int rc, const z_stream *zs, uint64_t produced, cd_error *err) {
    const char *msg = zs->msg ? zs->msg : "invalid compressed data";
    if (rc == Z_MEM_ERROR) return cd_fail(err, CD_ERR_NOMEM, "%s: out of memory while inflating", path);
    if (strstr(msg, "length check"))
        return cd_fail(err, CD_ERR_CORRUPT,
                       "%s: corrupt gzip: the ISIZE trailer disagrees with the inflated size (%llu bytes)", path,
                       (unsigned long long)produced);
    if (strstr(msg, "data check")) return cd_fail(err, CD_ERR_CORRUPT, "%s: corrupt gzip: CRC32 mismatch", path);
    return cd_fail(err, CD_ERR_CORRUPT, "%s: corrupt gzip data after %llu inflated bytes: %s", path,
                   (unsigned long long)produced, msg);
}

cd_status cd_gzip_inflate(const char *path, const uint8_t *in, size_t in_len, void *out, size_t want, uint64_t total,
                          bool allow_short, size_t *got, cd_error *err) {
    if (!cd_gzip_is_gzip(in, in_len)) return cd_fail(err, CD_ERR_FORMAT, "%s: not gzip data", path);
    if (want == total && in_len >= 18 && read_le32(in + in_len - 4) == (uint32_t)total &&
        inflate_libdeflate(in, in_len, out, want)) {
        if (got) *got = want;
        return CD_OK;
    }

    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) return cd_fail(err, CD_ERR_NOMEM, "%s: cannot start zlib", path);
    const bool verify_end = (want == total);
    uint8_t scratch[16384];
    uint64_t produced = 0, extra = 0;
    size_t in_off = 0;
    cd_status st = CD_OK;
    for (;;) {
        /* zlib counts in uInt: feed at most 1 GiB at a time. */
        size_t in_chunk = in_len - in_off;
        if (in_chunk > (1u << 30)) in_chunk = 1u << 30;
        zs.next_in = (Bytef *)(uintptr_t)(in + in_off);
        zs.avail_in = (uInt)in_chunk;
        uint8_t *dst;
        size_t room;
        if (produced < want) {
            dst = (uint8_t *)out + produced;
            room = want - produced;
            if (room > (1u << 30)) room = 1u << 30;
        } else if (!verify_end) {
            break;
        } else {
            dst = scratch;
            room = sizeof scratch;
        }
        zs.next_out = dst;
        zs.avail_out = (uInt)room;
        int rc = inflate(&zs, Z_NO_FLUSH);
        size_t used_in = in_chunk - zs.avail_in, made = room - zs.avail_out;
        in_off += used_in;
        if (produced < want)
            produced += made;
        else
            extra += made;
        if (extra > MAX_EXTRA_BYTES) {
            st = cd_fail(err, CD_ERR_FORMAT,
                         "%s: gzip stream holds more than 64 MiB past the data the header describes", path);
            break;
        }
        if (rc == Z_STREAM_END) {
            /* Another member may follow (multi-member gzip, e.g. from pigz or appends). */
            if (in_len - in_off >= 2 && in[in_off] == 0x1f && in[in_off + 1] == 0x8b) {
                inflateReset(&zs);
                continue;
            }
            break;
        }
        if (rc == Z_OK) continue;
        if (rc == Z_BUF_ERROR && zs.avail_in == 0 && in_off >= in_len) {
            if (allow_short) break;
            st = cd_fail(err, CD_ERR_TRUNCATED, "%s: truncated gzip: data ends after %llu of %llu bytes", path,
                         (unsigned long long)produced, (unsigned long long)want);
            break;
        }
        if (rc == Z_BUF_ERROR) continue; /* no progress possible with this output room: loop refills */
        st = zlib_error(path, rc, &zs, produced + extra, err);
        break;
    }
    inflateEnd(&zs);
    if (st != CD_OK) return st;
    if (produced < want && !allow_short)
        return cd_fail(err, CD_ERR_TRUNCATED, "%s: truncated: gzip data holds %llu bytes, the header needs %llu", path,
                       (unsigned long long)produced, (unsigned long long)want);
    if (got) *got = (size_t)produced;
    return CD_OK;
}
