/* Resume journal: checksummed JSON lines, appended with fdatasync. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "convert/journal.h"
#include "io/file.h"

/* "<16 hex> <json>\n" in a malloc'ed string. */
static char *format_line(json_t *obj, size_t *len) {
    char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    if (!text) return NULL;
    size_t n = strlen(text);
    char *line = malloc(n + 19);
    if (line) {
        snprintf(line, 18, "%016llx ", (unsigned long long)XXH3_64bits(text, n));
        memcpy(line + 17, text, n);
        line[17 + n] = '\n';
        line[18 + n] = '\0';
        *len = n + 18;
    }
    free(text);
    return line;
}

cd_status cd_journal_start(const char *path, json_t *header, json_t *lines, cd_journal *j, cd_error *err) {
    j->fd = -1;
    if (snprintf(j->path, sizeof j->path, "%s", path) >= (int)sizeof j->path)
        return cd_fail(err, CD_ERR_ARG, "%.100s...: path too long", path);
    size_t n = 1 + json_array_size(lines);
    cd_write_piece *pieces = calloc(n, sizeof *pieces);
    if (!pieces) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    cd_status st = CD_OK;
    for (size_t i = 0; i < n && st == CD_OK; i++) {
        size_t len = 0;
        char *line = format_line(i ? json_array_get(lines, i - 1) : header, &len);
        if (!line) st = cd_fail(err, CD_ERR_NOMEM, "%s: cannot serialise the journal", path);
        pieces[i].data = line;
        pieces[i].len = len;
    }
    if (st == CD_OK) st = cd_file_write_atomic_ex(path, pieces, n, true, err);
    for (size_t i = 0; i < n; i++) free((void *)pieces[i].data);
    free(pieces);
    if (st != CD_OK) return st;
    j->fd = open(path, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
    if (j->fd < 0) return cd_fail(err, CD_ERR_IO, "%s: cannot open for appending: %s", path, strerror(errno));
    return CD_OK;
}

cd_status cd_journal_append(cd_journal *j, json_t *obj, cd_error *err) {
    size_t len = 0;
    char *line = format_line(obj, &len);
    if (!line) return cd_fail(err, CD_ERR_NOMEM, "%s: cannot serialise the journal", j->path);
    cd_status st = cd_file_write_full(j->fd, line, len, j->path, err);
    free(line);
    if (st == CD_OK && fdatasync(j->fd) != 0)
        st = cd_fail(err, CD_ERR_IO, "%s: write failed: %s", j->path, strerror(errno));
    return st;
}

void cd_journal_close(cd_journal *j) {
    if (j && j->fd >= 0) {
        close(j->fd);
        j->fd = -1;
    }
}

/* The object of one line, or NULL when the line is damaged or incomplete. */
static json_t *parse_line(const char *p, size_t n) {
    if (n < 19 || p[16] != ' ') return NULL;
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH3_64bits(p + 17, n - 17));
    if (memcmp(hex, p, 16)) return NULL;
    json_t *o = json_loadb(p + 17, n - 17, JSON_REJECT_DUPLICATES, NULL);
    if (o && !json_is_object(o)) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

cd_status cd_journal_read(const char *path, bool *exists, json_t **header, json_t **lines, size_t *bad_line,
                          bool *damaged, cd_error *err) {
    *header = NULL;
    *lines = json_array();
    *bad_line = 0;
    *damaged = false;
    struct stat sb;
    *exists = lstat(path, &sb) == 0;
    if (!*exists) return CD_OK;
    char *text;
    size_t len;
    cd_status st = cd_read_text_file_len(path, 0, "resume journal", &text, &len, err);
    if (st != CD_OK) return st;
    size_t no = 0;
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(text + at, '\n', len - at);
        no++;
        json_t *o = nl ? parse_line(text + at, (size_t)(nl - (text + at))) : NULL; /* no LF: torn */
        if (!o) {
            *bad_line = no;
            *damaged = nl != NULL;
            break;
        }
        if (no == 1)
            *header = o;
        else
            json_array_append_new(*lines, o);
        at = (size_t)(nl - text) + 1;
    }
    if (no == 0) *bad_line = 1; /* empty (a kill before the header was written is not possible: it is renamed in) */
    if (no == 0) *damaged = true;
    free(text);
    return CD_OK;
}
