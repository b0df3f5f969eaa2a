/* libFuzzer target: the dataset manifest parser (convert/dataset.c, convert/manifest.c). The bytes
 * are DIR/manifest.json; no shard exists, so reading a record reaches the manifest's shard table and
 * then fails to open the shard (which must be reported, not crash).
 *
 * The manifest's own checksum (schemas/shard-format.md, "Manifest checksum") would stop almost every
 * mutated input before the parser. So when the input ends like a checksum member (the 18-byte key, 32
 * bytes, the 4-byte end), the 32 bytes are replaced by the right XXH3-128 of what precedes them, and the
 * input reaches the parser; any other input is written as it is and exercises the checksum check. The
 * seeds are whole manifests with valid checksums. The library is not changed for fuzzing. */
#include <stdint.h>
#include <stdio.h>
#include <xxhash.h>

#include "cirrdata/cirrdata.h"
#include "fuzz_common.h"

#define SUM_KEY "\"manifest_xxh3\": \""
#define SUM_END "\"\n}\n"
#define TAIL (18 + 32 + 4)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path(0, "manifest.json");
    if (size >= TAIL && !memcmp(data + size - TAIL, SUM_KEY, 18) && !memcmp(data + size - 4, SUM_END, 4)) {
        uint8_t *sealed = malloc(size);
        if (!sealed) abort();
        memcpy(sealed, data, size);
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits(sealed, size - TAIL));
        char hex[33];
        for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", c.digest[i]);
        memcpy(sealed + size - TAIL + 18, hex, 32);
        fuzz_write(path, sealed, size);
        free(sealed);
    } else {
        fuzz_write(path, data, size);
    }
    cd_error err;
    cd_dataset *ds = NULL;
    if (cd_dataset_open(fuzz_tmpdir(), &ds, &err) == CD_OK) {
        uint64_t n = cd_dataset_record_count(ds);
        const char *m = cd_dataset_manifest(ds);
        if (m) (void)strlen(m);
        uint64_t probe[4] = {0, n / 2, n ? n - 1 : 0, n};
        for (int k = 0; k < 4; k++) {
            cd_record *r = NULL;
            const cd_shard *sh = NULL;
            if (cd_dataset_read_record(ds, probe[k], &r, &sh, &err) == CD_OK) cd_record_destroy(r);
        }
        cd_dataset_close(ds);
    }
    return 0;
}
