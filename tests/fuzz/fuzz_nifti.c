/* libFuzzer target: the NIfTI-1/NIfTI-2 reader (io/nifti_header.c, io/nifti_read.c, io/gzip_reader.c).
 * Each read goes through cd_nifti_read_header, cd_nifti_read and cd_nifti_read_all (every volume into a
 * caller buffer, sized by its first call) with a 64 MiB cap.
 *
 * Plain input (not starting with the gzip magic 1f 8b): read as a single .nii file, gzip-wrapped (valid
 * gzip written here) as a .nii.gz, and as the .hdr of a .hdr/.img pair whose .img holds the same bytes.
 *
 * Compressed input (starting with 1f 8b): the bytes are a compressed file and are read as they are, as
 * f.nii.gz and as a compressed .hdr/.img pair (the reader goes by the magic), so mutations reach the
 * gzip header flags, the deflate stream and the trailer. A member whose deflate data ends cleanly and
 * whose CRC32/ISIZE trailer holds 8 zero bytes gets the right trailer first (what it inflates to, up
 * to 16 MiB), so mutated deflate data still reaches the whole decode, libdeflate's fast path included;
 * any other trailer exercises the trailer checks. The seeds include compressed files, valid ones,
 * ones with zero trailers and damaged ones (make_seeds.py). */
#include <stdint.h>
#include <stdlib.h>
#include <zlib.h>

#include "cirrdata/cirrdata.h"
#include "fuzz_common.h"

#define FUZZ_MAX_BYTES ((uint64_t)64 << 20)

static void read_one(const char *path) {
    cd_error err;
    cd_nifti_header hdr;
    cd_nifti_read_header(path, &hdr, &err);
    cd_nifti_read_options opts;
    cd_nifti_read_options_init(&opts);
    opts.max_bytes = FUZZ_MAX_BYTES;
    cd_volume *vol = NULL;
    if (cd_nifti_read(path, &opts, &vol, &hdr, &err) == CD_OK) {
        /* touch the result: the whole buffer must be addressable */
        size_t n = cd_volume_nbytes(vol);
        const unsigned char *p = cd_volume_data_const(vol);
        volatile unsigned char sink = 0;
        if (n) sink ^= p[0] ^ p[n - 1];
        (void)sink;
        double a[4][4];
        cd_volume_affine(vol, a);
        cd_volume_destroy(vol);
        /* a second volume of a 4D file, when there is one */
        if (hdr.nvolumes > 1) {
            opts.volume = hdr.nvolumes - 1;
            if (cd_nifti_read(path, &opts, &vol, NULL, &err) == CD_OK) cd_volume_destroy(vol);
        }
    }
    /* every volume into a caller buffer: sized by the first call, filled by the second */
    opts.volume = 0;
    size_t need = 0, offset = 0;
    if (cd_nifti_read_all(path, &opts, NULL, 0, &need, NULL, NULL, &err) == CD_OK && need <= FUZZ_MAX_BYTES + 64) {
        unsigned char *buf = malloc(need ? need : 1);
        if (buf && cd_nifti_read_all(path, &opts, buf, need, &need, &offset, NULL, &err) == CD_OK && need) {
            volatile unsigned char sink = buf[0] ^ buf[need - 1];
            (void)sink;
        }
        free(buf);
    }
}

#define SEAL_CAP ((uint64_t)16 << 20)

static bool is_gzip(const uint8_t *p, size_t n) { return n >= 2 && p[0] == 0x1f && p[1] == 0x8b; }

/* Bytes of the gzip member header at p (RFC 1952: FEXTRA, FNAME, FCOMMENT, FHCRC), 0 if it does not fit. */
static size_t gz_header_len(const uint8_t *p, size_t n) {
    if (n < 10 || !is_gzip(p, n) || p[2] != 8) return 0;
    const uint8_t flg = p[3];
    size_t i = 10;
    if (flg & 4) {
        if (i + 2 > n) return 0;
        i += 2 + (size_t)(p[i] | (p[i + 1] << 8));
    }
    for (int bit = 8; bit <= 16; bit *= 2)
        if (flg & bit) {
            while (i < n && p[i]) i++;
            i++;
        }
    if (flg & 2) i += 2;
    return i <= n ? i : 0;
}

/* Fills the zero trailers of d's gzip members in order (see the top); stops at the first member that
 * does not inflate cleanly. */
static void seal_gzip(uint8_t *d, size_t n) {
    static uint8_t scratch[1 << 16];
    size_t off = 0;
    for (int m = 0; m < 16; m++) {
        const size_t h = gz_header_len(d + off, n - off);
        if (!h) return;
        z_stream zs;
        memset(&zs, 0, sizeof zs);
        if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) abort();
        zs.next_in = d + off + h;
        zs.avail_in = (uInt)(n - off - h);
        uLong crc = crc32(0, Z_NULL, 0);
        uint64_t total = 0;
        int rc;
        do {
            zs.next_out = scratch;
            zs.avail_out = sizeof scratch;
            rc = inflate(&zs, Z_NO_FLUSH);
            const size_t made = sizeof scratch - zs.avail_out;
            crc = crc32(crc, scratch, (uInt)made);
            total += made;
        } while (rc == Z_OK && total <= SEAL_CAP);
        const size_t end = n - zs.avail_in;
        inflateEnd(&zs);
        if (rc != Z_STREAM_END || end + 8 > n) return;
        static const uint8_t zero[8] = {0};
        if (!memcmp(d + end, zero, 8))
            for (int i = 0; i < 4; i++) {
                d[end + i] = (uint8_t)(crc >> (8 * i));
                d[end + 4 + i] = (uint8_t)(total >> (8 * i));
            }
        off = end + 8;
        if (!is_gzip(d + off, n - off)) return;
    }
}

static size_t gzip_wrap(const uint8_t *data, size_t size, uint8_t **out) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
    size_t cap = deflateBound(&zs, size) + 64;
    *out = malloc(cap);
    if (!*out) abort();
    zs.next_in = (Bytef *)data;
    zs.avail_in = (uInt)size;
    zs.next_out = *out;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) abort();
    size_t n = zs.total_out;
    deflateEnd(&zs);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (is_gzip(data, size)) {
        uint8_t *d = malloc(size);
        if (!d) abort();
        memcpy(d, data, size);
        seal_gzip(d, size);
        const char *niigz = fuzz_path(1, "f.nii.gz");
        fuzz_write(niigz, d, size);
        read_one(niigz);
        const char *hdr = fuzz_path(2, "p.hdr");
        fuzz_write(hdr, d, size);
        fuzz_write(fuzz_path(3, "p.img"), d, size);
        read_one(hdr);
        free(d);
        return 0;
    }
    const char *nii = fuzz_path(0, "f.nii");
    fuzz_write(nii, data, size);
    read_one(nii);

    uint8_t *gz = NULL;
    size_t gzn = gzip_wrap(data, size, &gz);
    const char *niigz = fuzz_path(1, "f.nii.gz");
    fuzz_write(niigz, gz, gzn);
    free(gz);
    read_one(niigz);

    const char *hdr = fuzz_path(2, "p.hdr");
    fuzz_write(hdr, data, size);
    fuzz_write(fuzz_path(3, "p.img"), data, size);
    read_one(hdr);
    return 0;
}
