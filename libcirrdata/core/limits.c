/* Process-wide caps (cirrdata/limits.h): built-in defaults, environment overrides read once, values
 * set by the program. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cirrdata/limits.h"
#include "core/internal.h"

/* Larger values are refused: byte caps get +1 for a terminating NUL, and products of caps stay far
 * from 64-bit overflow. */
#define LIMIT_MAX ((uint64_t)1 << 62)

static const struct {
    const char *env;
    const char *what; /* "the <what> cap" */
    bool bytes;       /* printed as a byte size */
    uint64_t dflt;
} info[CD_LIMIT_COUNT] = {
    [CD_LIMIT_DIM] = {"CIRRDATA_MAX_DIM", "NIfTI dimension", false, (uint64_t)1 << 20},
    [CD_LIMIT_VOXELS] = {"CIRRDATA_MAX_VOXELS", "voxel count", false, (uint64_t)1 << 31},
    [CD_LIMIT_BYTES] = {"CIRRDATA_MAX_BYTES", "decompressed size", true, CD_LIMIT_DEFAULT_MAX_BYTES},
    [CD_LIMIT_JSON] = {"CIRRDATA_MAX_JSON_BYTES", "JSON size", true, (uint64_t)512 << 20},
    [CD_LIMIT_CSV] = {"CIRRDATA_MAX_CSV_BYTES", "CSV size", true, (uint64_t)64 << 20},
};

static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static uint64_t env_value[CD_LIMIT_COUNT]; /* 0: not set */
static char env_bad[CD_LIMIT_COUNT][64];   /* the malformed text ("" when fine) */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t set_value[CD_LIMIT_COUNT]; /* 0: not set by the program */

bool cd_parse_bytes(const char *s, uint64_t *out) {
    if (!s || *s < '0' || *s > '9') return false;
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (v > (UINT64_MAX - 9) / 10) return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    unsigned shift = 0;
    switch (*s) {
    case 'K':
    case 'k':
        shift = 10;
        s++;
        break;
    case 'M':
    case 'm':
        shift = 20;
        s++;
        break;
    case 'G':
    case 'g':
        shift = 30;
        s++;
        break;
    case 'T':
    case 't':
        shift = 40;
        s++;
        break;
    default: break;
    }
    if (shift && *s == 'i' && s[1] == 'B')
        s += 2; /* 8GiB */
    else if (shift && *s == 'B')
        s++; /* 8GB: binary multiples all the same */
    if (*s || v == 0 || v > (UINT64_MAX >> shift)) return false;
    *out = v << shift;
    return true;
}

bool cd_limit_parse(const char *s, uint64_t *out) {
    uint64_t v;
    if (!cd_parse_bytes(s, &v) || v > LIMIT_MAX) return false;
    *out = v;
    return true;
}

static void read_env(void) {
    for (int i = 0; i < CD_LIMIT_COUNT; i++) {
        const char *s = getenv(info[i].env);
        if (!s || !*s) continue; /* unset or empty: the default */
        if (!cd_limit_parse(s, &env_value[i])) {
            env_value[i] = 0;
            /* Kept for the message; "%.40s" bounds what a hostile environment can put in it. */
            snprintf(env_bad[i], sizeof env_bad[i], "%.40s%s", s, strlen(s) > 40 ? "..." : "");
        }
    }
}

cd_status cd_limit(cd_limit_id id, uint64_t *value, cd_error *err) {
    pthread_once(&env_once, read_env);
    pthread_mutex_lock(&mu);
    uint64_t v = set_value[id];
    pthread_mutex_unlock(&mu);
    if (v) {
        *value = v;
        return CD_OK;
    }
    *value = env_value[id] ? env_value[id] : info[id].dflt;
    if (env_bad[id][0])
        return cd_fail(err, CD_ERR_ARG,
                       "%s='%s' is not a valid cap: give a number above zero with an optional K, M, G or T suffix "
                       "(KiB, MB, ... too) "
                       "(e.g. 512M), or unset it for the default",
                       info[id].env, env_bad[id]);
    return CD_OK;
}

const char *cd_limit_describe(cd_limit_id id, uint64_t cap, char *buf, size_t buflen) {
    char v[32];
    if (info[id].bytes)
        cd_format_bytes(cap, v, sizeof v);
    else
        snprintf(v, sizeof v, "%llu", (unsigned long long)cap);
    snprintf(buf, buflen, "the %s cap of %s (raise it with %s)", info[id].what, v, info[id].env);
    return buf;
}

const char *cd_limit_env(cd_limit_id id) { return info[id].env; }

cd_status cd_resolve_max_bytes(uint64_t requested, uint64_t *out, cd_error *err) {
    if (requested) {
        *out = requested;
        return CD_OK;
    }
    return cd_limit(CD_LIMIT_BYTES, out, err);
}

/* cd_limits field order = cd_limit_id order. */
static uint64_t *field(cd_limits *l, int id) {
    switch (id) {
    case CD_LIMIT_DIM: return &l->max_dim;
    case CD_LIMIT_VOXELS: return &l->max_voxels;
    case CD_LIMIT_BYTES: return &l->max_decompressed_bytes;
    case CD_LIMIT_JSON: return &l->max_json_bytes;
    default: return &l->max_csv_bytes;
    }
}

static const char *const field_names[CD_LIMIT_COUNT] = {"max_dim", "max_voxels", "max_decompressed_bytes",
                                                        "max_json_bytes", "max_csv_bytes"};

void cd_limits_defaults(cd_limits *out) {
    if (!out) return;
    for (int i = 0; i < CD_LIMIT_COUNT; i++) *field(out, i) = info[i].dflt;
}

cd_status cd_limits_get(cd_limits *out, cd_error *err) {
    if (!out) return cd_fail(err, CD_ERR_ARG, "cd_limits_get: NULL argument");
    cd_status first = CD_OK;
    for (int i = 0; i < CD_LIMIT_COUNT; i++) {
        cd_error e;
        cd_status st = cd_limit((cd_limit_id)i, field(out, i), &e);
        if (st != CD_OK && first == CD_OK) {
            first = st;
            if (err) *err = e;
        }
    }
    if (first == CD_OK) cd_error_clear(err);
    return first;
}

cd_status cd_limits_set(const cd_limits *limits, cd_error *err) {
    cd_limits l;
    if (limits)
        l = *limits;
    else
        memset(&l, 0, sizeof l);
    for (int i = 0; i < CD_LIMIT_COUNT; i++) {
        uint64_t v = *field(&l, i);
        uint64_t top = LIMIT_MAX;
        if (info[i].bytes && (uint64_t)(SIZE_MAX / 2) < top) top = (uint64_t)(SIZE_MAX / 2);
        if (v > top)
            return cd_fail(err, CD_ERR_ARG, "cd_limits_set: %s = %llu is above the largest accepted value, %llu",
                           field_names[i], (unsigned long long)v, (unsigned long long)top);
    }
    pthread_mutex_lock(&mu);
    for (int i = 0; i < CD_LIMIT_COUNT; i++) set_value[i] = *field(&l, i);
    pthread_mutex_unlock(&mu);
    cd_error_clear(err);
    return CD_OK;
}
