#include <stdio.h>
#include <string.h>

#include "core/internal.h"

const char *cd_status_name(cd_status status) {
    switch (status) {
    case CD_OK: return "ok";
    case CD_ERR_ARG: return "argument";
    case CD_ERR_IO: return "io";
    case CD_ERR_FORMAT: return "format";
    case CD_ERR_UNSUPPORTED: return "unsupported";
    case CD_ERR_TRUNCATED: return "truncated";
    case CD_ERR_CORRUPT: return "corrupt";
    case CD_ERR_LIMIT: return "limit";
    case CD_ERR_NOMEM: return "nomem";
    case CD_ERR_INTERNAL: return "internal";
    }
    return "unknown";
}

void cd_error_clear(cd_error *err) {
    if (err) {
        err->status = CD_OK;
        err->message[0] = '\0';
    }
}

cd_status cd_fail(cd_error *err, cd_status status, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        /* Messages are one line: a newline from a file name or strerror would break that. */
        for (char *p = err->message; *p; p++)
            if (*p == '\n' || *p == '\r') *p = ' ';
        err->status = status;
    }
    return status;
}

const char *cd_format_bytes(uint64_t bytes, char *buf, size_t buflen) {
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 6) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, buflen, "%llu B", (unsigned long long)bytes);
    else
        snprintf(buf, buflen, "%.1f %s", v, units[u]);
    return buf;
}
