/* libFuzzer target: the internal CSV reader (io/csv.c) for dataset metadata tables. */
#include <stdint.h>

#include "fuzz_common.h"
#include "io/csv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path(0, "f.csv");
    fuzz_write(path, data, size);
    cd_error err;
    cd_csv csv;
    memset(&csv, 0, sizeof csv);
    if (cd_csv_read(path, &csv, &err) == CD_OK) {
        size_t total = 0;
        for (size_t j = 0; j < csv.ncols; j++) total += strlen(csv.header[j]);
        for (size_t i = 0; i < csv.nrows; i++)
            for (size_t j = 0; j < csv.ncols; j++) total += strlen(csv.rows[i][j]);
        if (total == SIZE_MAX) abort();
        (void)cd_csv_column(&csv, "case_id");
        (void)cd_csv_column(&csv, "");
        if (csv.ncols) (void)cd_csv_column(&csv, csv.header[0]);
        cd_csv_free(&csv);
    }
    return 0;
}
