#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "io/csv.h"
#include "io/file.h"

#define CSV_MAX_ROWS 1000000u
#define CSV_MAX_COLS 256u

void cd_csv_free(cd_csv *csv) {
    if (!csv) return;
    for (size_t j = 0; j < csv->ncols; j++) free(csv->header ? csv->header[j] : NULL);
    free(csv->header);
    for (size_t i = 0; i < csv->nrows; i++) {
        for (size_t j = 0; j < csv->ncols; j++) free(csv->rows[i][j]);
        free(csv->rows[i]);
    }
    free(csv->rows);
    memset(csv, 0, sizeof *csv);
}

static char *trim_dup(const char *s, size_t n) {
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* Parses one record starting at *pos; fields are malloc'ed into fields[0..*nf). */
static int parse_record(const char *buf, size_t len, size_t *pos, char **fields, size_t *nf, size_t maxf) {
    size_t p = *pos;
    *nf = 0;
    char *field = malloc(len - p + 1);
    if (!field) return -1;
    for (;;) {
        size_t fl = 0;
        bool quoted = false;
        if (p < len && buf[p] == '"') {
            quoted = true;
            p++;
            for (;;) {
                if (p >= len) break; /* unterminated quote: take what is there */
                if (buf[p] == '"') {
                    if (p + 1 < len && buf[p + 1] == '"') {
                        field[fl++] = '"';
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                field[fl++] = buf[p++];
            }
        }
        while (p < len && buf[p] != ',' && buf[p] != '\n' && buf[p] != '\r') field[fl++] = buf[p++];
        (void)quoted;
        int fail = *nf >= maxf ? -2 : (fields[*nf] = trim_dup(field, fl)) == NULL ? -1 : 0;
        if (fail) { /* the caller gets no fields on failure: free those taken so far */
            free(field);
            for (size_t j = 0; j < *nf; j++) free(fields[j]);
            *nf = 0;
            return fail;
        }
        (*nf)++;
        if (p < len && buf[p] == ',') {
            p++;
            continue;
        }
        if (p < len && buf[p] == '\r') p++;
        if (p < len && buf[p] == '\n') p++;
        break;
    }
    free(field);
    *pos = p;
    return 0;
}

cd_status cd_csv_read(const char *path, cd_csv *out, cd_error *err) {
    memset(out, 0, sizeof *out);
    uint64_t max_bytes;
    cd_status lst = cd_limit(CD_LIMIT_CSV, &max_bytes, err);
    if (lst != CD_OK) return lst;
    cd_file f;
    cd_status fst = cd_file_open(path, &f, err); /* a FIFO is refused, not waited on */
    if (fst != CD_OK) return fst;
    if (f.size > max_bytes) {
        cd_file_close(&f);
        char a[32], c[160];
        return cd_fail(err, CD_ERR_LIMIT, "%s: %s is above %s", path, cd_format_bytes(f.size, a, sizeof a),
                       cd_limit_describe(CD_LIMIT_CSV, max_bytes, c, sizeof c));
    }
    /* Sized from the file; one byte more than its size tells whether it grew meanwhile. */
    const size_t bufcap = (size_t)f.size;
    char *buf = malloc(bufcap + 1);
    size_t len = 0;
    fst = buf ? cd_file_pread_some(&f, buf, bufcap + 1, 0, &len, err) : cd_fail(err, CD_ERR_NOMEM, "out of memory");
    cd_file_close(&f);
    if (fst == CD_OK && len != bufcap) fst = cd_fail(err, CD_ERR_IO, "%s: CSV file changed while being read", path);
    if (fst != CD_OK) {
        free(buf);
        return fst;
    }
    buf[len] = '\0';
    size_t pos = 0;
    if (len >= 3 && (unsigned char)buf[0] == 0xEF && (unsigned char)buf[1] == 0xBB && (unsigned char)buf[2] == 0xBF)
        pos = 3; /* UTF-8 byte-order mark, as some of the dataset's CSVs have */
    char *fields[CSV_MAX_COLS];
    size_t nf;
    cd_status st = CD_OK;
    int rc = parse_record(buf, len, &pos, fields, &nf, CSV_MAX_COLS);
    if (rc != 0 || nf == 0) {
        for (size_t j = 0; rc == 0 && j < nf; j++) free(fields[j]);
        free(buf);
        return cd_fail(err, rc == -1 ? CD_ERR_NOMEM : CD_ERR_FORMAT, "%s: no CSV header row", path);
    }
    out->ncols = nf;
    out->header = malloc(nf * sizeof(char *));
    if (!out->header) {
        for (size_t j = 0; j < nf; j++) free(fields[j]);
        free(buf);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    memcpy(out->header, fields, nf * sizeof(char *));
    size_t cap = 0;
    size_t line = 1;
    while (pos < len && st == CD_OK) {
        line++;
        rc = parse_record(buf, len, &pos, fields, &nf, CSV_MAX_COLS);
        if (rc == -2) {
            st = cd_fail(err, CD_ERR_LIMIT, "%s: line %zu: more than %u columns", path, line, CSV_MAX_COLS);
            break;
        }
        if (rc != 0) {
            st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
            break;
        }
        bool blank = true;
        for (size_t j = 0; j < nf; j++) blank &= fields[j][0] == '\0';
        if (blank) {
            for (size_t j = 0; j < nf; j++) free(fields[j]);
            continue;
        }
        if (out->nrows >= CSV_MAX_ROWS) {
            for (size_t j = 0; j < nf; j++) free(fields[j]);
            st = cd_fail(err, CD_ERR_LIMIT, "%s: more than %u rows", path, CSV_MAX_ROWS);
            break;
        }
        if (out->nrows == cap) {
            cap = cap ? cap * 2 : 64;
            char ***rows = realloc(out->rows, cap * sizeof *rows);
            if (!rows) {
                for (size_t j = 0; j < nf; j++) free(fields[j]);
                st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
                break;
            }
            out->rows = rows;
        }
        char **row = calloc(out->ncols, sizeof(char *));
        if (!row) {
            for (size_t j = 0; j < nf; j++) free(fields[j]);
            st = cd_fail(err, CD_ERR_NOMEM, "out of memory");
            break;
        }
        for (size_t j = 0; j < out->ncols; j++) row[j] = j < nf ? fields[j] : strdup("");
        for (size_t j = out->ncols; j < nf; j++) free(fields[j]); /* extra trailing fields are ignored */
        out->rows[out->nrows++] = row;
    }
    free(buf);
    if (st != CD_OK) cd_csv_free(out);
    return st;
}

int cd_csv_column(const cd_csv *csv, const char *name) {
    for (size_t j = 0; j < csv->ncols; j++)
        if (!strcasecmp(csv->header[j], name)) return (int)j;
    return -1;
}
