/* The resume journal of a conversion (internal): a header line, then one line per finished shard, each
 * line carrying its own checksum, appended as shards finish. Appending keeps the cost of a conversion
 * linear in its shard count; the checksums make a damaged or torn line a place to stop, never a source
 * of duplicated or missing records. Line format: 16 lowercase hex digits of the XXH3-64 of the JSON
 * text, one space, the JSON text (one object, no newline), LF. */
#ifndef CD_CONVERT_JOURNAL_H
#define CD_CONVERT_JOURNAL_H

#include <jansson.h>
#include <stdbool.h>

#include "core/internal.h"

#define CD_JOURNAL_NAME ".convert-journal.jsonl"

typedef struct cd_journal {
    int fd; /* -1: closed */
    char path[4200];
} cd_journal;

/* Writes the header and lines (an array of objects, may be NULL) to path durably (temporary file,
 * fsync, rename), then opens it for appending. */
CD_INTERNAL cd_status cd_journal_start(const char *path, json_t *header, json_t *lines, cd_journal *j, cd_error *err);

/* Appends one line and waits until it is on disk (fdatasync). */
CD_INTERNAL cd_status cd_journal_append(cd_journal *j, json_t *line, cd_error *err);
CD_INTERNAL void cd_journal_close(cd_journal *j);

/* Reads a journal. *exists: whether path exists. *header: its first line when intact, else NULL. *lines:
 * the intact lines after it, up to the first damaged or incomplete one (a kill during an append leaves an
 * incomplete last line). *bad_line: the 1-based number of that first bad line, 0 when there is none;
 * *damaged: that line is complete (ends with LF) but fails its checksum or is not a JSON object, which
 * a kill cannot cause. Errors only for a file that exists but cannot be read. */
CD_INTERNAL cd_status cd_journal_read(const char *path, bool *exists, json_t **header, json_t **lines, size_t *bad_line,
                                      bool *damaged, cd_error *err);

#endif
