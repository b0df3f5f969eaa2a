/* cirrdata/status.h — status codes and error messages shared by every fallible call.
 *
 * Every fallible function returns a cd_status and, when given a non-NULL cd_error*, fills it with
 * the same status and a one-line, human-readable message that names the file (where there is one)
 * and the problem. cd_error is a plain caller-owned struct: no allocation, safe to reuse. */
#ifndef CIRRDATA_STATUS_H
#define CIRRDATA_STATUS_H

#include "cirrdata/api.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cd_status {
    CD_OK = 0,
    CD_ERR_ARG,         /* invalid argument from the caller (a bug in the calling code) */
    CD_ERR_IO,          /* the operating system refused: open, read, write, missing file */
    CD_ERR_FORMAT,      /* not the expected format: wrong magic, bad header field */
    CD_ERR_UNSUPPORTED, /* valid format, but a feature we do not handle (e.g. complex datatype) */
    CD_ERR_TRUNCATED,   /* the file ends before the data its header describes */
    CD_ERR_CORRUPT,     /* checksum or compressed-stream failure */
    CD_ERR_LIMIT,       /* a size above a configured limit (allocation cap, dims cap) */
    CD_ERR_NOMEM,       /* memory allocation failed */
    CD_ERR_INTERNAL     /* should not happen; please report */
} cd_status;

#define CD_ERROR_MESSAGE_MAX 512

typedef struct cd_error {
    cd_status status;
    char message[CD_ERROR_MESSAGE_MAX];
} cd_error;

/* Short stable name of a status ("ok", "io", "format", ...). Never NULL. */
CD_API const char *cd_status_name(cd_status status);

/* Resets err to CD_OK with an empty message. err may be NULL. */
CD_API void cd_error_clear(cd_error *err);

#ifdef __cplusplus
}
#endif
#endif
