/* libFuzzer target: the NIfTI-1/NIfTI-2 reader (io/nifti_header.c, io/nifti_read.c, io/gzip_reader.c).
 * The bytes are read as a single .nii file, gzip-wrapped as a .nii.gz, and as the .hdr of a .hdr/.img
 * pair whose .img holds the same bytes; each through cd_nifti_read_header and cd_nifti_read with a
 * 64 MiB cap. */
#include <stdint.h>
#include <zlib.h>

#include "cirrdata/cirrdata.h"
#include "fuzz_common.h"

#define FUZZ_MAX_BYTES ((uint64_t)64 << 20)

static void read_one(const char *path) {
    cd_error err;
    cd_nifti_header hdr;
    cd_nifti_read_header(path, &hdr, &err);
    cd_nifti_read_options opts = CD_NIFTI_READ_OPTIONS_INIT;
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
