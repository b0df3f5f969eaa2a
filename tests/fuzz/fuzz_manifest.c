/* libFuzzer target: the dataset manifest parser (convert/dataset.c, convert/manifest.c). The bytes
 * are DIR/manifest.json; no shard exists, so reading a record reaches the manifest's shard table and
 * then fails to open the shard (which must be reported, not crash). */
#include <stdint.h>

#include "cirrdata/cirrdata.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path(0, "manifest.json");
    fuzz_write(path, data, size);
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
