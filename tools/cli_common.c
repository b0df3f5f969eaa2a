#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

int cli_fail_error(const cd_error *err) {
    fprintf(stderr, "cirrdata: %s\n", err->message[0] ? err->message : cd_status_name(err->status));
    return CLI_FAIL;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cirrdata %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'cirrdata %s --help')\n", cmd);
    va_end(ap);
    return CLI_USAGE;
}

bool cli_parse_int64(const char *s, int64_t *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

json_t *cli_json_real(double v) { return isfinite(v) ? json_real(v) : json_null(); }

json_t *cli_json_doubles(const double *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, cli_json_real(v[i]));
    return a;
}

json_t *cli_json_int64s(const int64_t *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

json_t *cli_json_matrix4(const double m[4][4]) {
    json_t *a = json_array();
    for (int i = 0; i < 4; i++) json_array_append_new(a, cli_json_doubles(m[i], 4));
    return a;
}

void cli_json_print(json_t *obj) {
    /* JSON_REAL_PRECISION(17): doubles round-trip exactly. */
    json_dumpf(obj, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(17) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(obj);
}

double cli_now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
