/* A small CSV reader for dataset metadata tables (internal): RFC 4180 quoting, CRLF or LF, an optional
 * UTF-8 byte-order mark, a header row. Bounded: at most 64 MiB, 1,000,000 rows, 256 columns. */
#ifndef CD_IO_CSV_H
#define CD_IO_CSV_H

#include <stddef.h>

#include "core/internal.h"

typedef struct cd_csv {
    size_t nrows, ncols; /* data rows (the header excluded) */
    char **header;       /* ncols names, trimmed */
    char ***rows;        /* rows[i][j]; short rows are padded with "" */
} cd_csv;

CD_INTERNAL cd_status cd_csv_read(const char *path, cd_csv *out, cd_error *err);
CD_INTERNAL void cd_csv_free(cd_csv *csv);
/* Column whose trimmed name equals name (ASCII case-insensitive), or -1. */
CD_INTERNAL int cd_csv_column(const cd_csv *csv, const char *name);

#endif
