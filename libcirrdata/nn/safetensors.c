/* Safetensors reader: validates the whole header up front so later accessors can trust every field. */
#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "io/file.h"
#include "nn/safetensors.h"

struct cd_st_file {
    char *path; /* file path or caller's name, for messages */
    void *map;  /* mmap'ed file, NULL for cd_st_open_memory or an empty file */
    size_t map_size;
    int count;
    cd_st_tensor *tensors;        /* names owned here (malloc'ed) */
    const cd_st_tensor **by_name; /* sorted by name: lookups stay O(log n) on files with many tensors */
    int nmeta;
    char **meta_keys;
    char **meta_values;
};

static const char *const dtype_names[] = {"F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"};
static const size_t dtype_sizes[] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};
#define N_DTYPES ((int)(sizeof dtype_sizes / sizeof dtype_sizes[0]))

size_t cd_st_dtype_size(cd_st_dtype d) { return (int)d >= 0 && (int)d < N_DTYPES ? dtype_sizes[d] : 0; }

const char *cd_st_dtype_name(cd_st_dtype d) { return (int)d >= 0 && (int)d < N_DTYPES ? dtype_names[d] : "?"; }

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

void cd_st_close(cd_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->count; i++) free((char *)f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    if (f->map) munmap(f->map, f->map_size);
    free(f->path);
    free(f);
}

const char *cd_st_path(const cd_st_file *f) { return f->path; }
int cd_st_count(const cd_st_file *f) { return f->count; }
const cd_st_tensor *cd_st_at(const cd_st_file *f, int i) { return i >= 0 && i < f->count ? &f->tensors[i] : NULL; }

static int cmp_by_name(const void *a, const void *b) {
    return strcmp((*(const cd_st_tensor *const *)a)->name, (*(const cd_st_tensor *const *)b)->name);
}

const cd_st_tensor *cd_st_find(const cd_st_file *f, const char *name) {
    if (!f || !name || f->count == 0) return NULL;
    cd_st_tensor key = {.name = name};
    const cd_st_tensor *kp = &key;
    const cd_st_tensor **hit = bsearch(&kp, f->by_name, (size_t)f->count, sizeof *f->by_name, cmp_by_name);
    return hit ? *hit : NULL;
}

static cd_status index_names(cd_st_file *f, cd_error *err) {
    if (f->count == 0) return CD_OK;
    f->by_name = malloc((size_t)f->count * sizeof *f->by_name);
    if (!f->by_name) return cd_fail(err, CD_ERR_NOMEM, "%s: out of memory", f->path);
    for (int i = 0; i < f->count; i++) f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, (size_t)f->count, sizeof *f->by_name, cmp_by_name);
    return CD_OK;
}

const char *cd_st_metadata(const cd_st_file *f, const char *key) {
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

static cd_status parse_metadata(cd_st_file *f, json_t *meta, cd_error *err) {
    if (!json_is_object(meta))
        return cd_fail(err, CD_ERR_FORMAT, "%s: header field '__metadata__' is not an object", f->path);
    size_t n = json_object_size(meta);
    if (n == 0) return CD_OK;
    f->meta_keys = calloc(n, sizeof *f->meta_keys);
    f->meta_values = calloc(n, sizeof *f->meta_values);
    if (!f->meta_keys || !f->meta_values) return cd_fail(err, CD_ERR_NOMEM, "%s: out of memory", f->path);
    const char *key;
    json_t *v;
    json_object_foreach(meta, key, v) {
        if (!json_is_string(v))
            return cd_fail(err, CD_ERR_FORMAT, "%s: metadata value '%s' is not a string", f->path, key);
        f->meta_keys[f->nmeta] = dup_str(key);
        f->meta_values[f->nmeta] = dup_str(json_string_value(v));
        f->nmeta++; /* counted before the check so cd_st_close frees a partial pair */
        if (!f->meta_keys[f->nmeta - 1] || !f->meta_values[f->nmeta - 1])
            return cd_fail(err, CD_ERR_NOMEM, "%s: out of memory", f->path);
    }
    return CD_OK;
}

static cd_status parse_dtype(const cd_st_file *f, const char *name, json_t *v, cd_st_dtype *out, cd_error *err) {
    if (!json_is_string(v)) return cd_fail(err, CD_ERR_FORMAT, "%s: tensor '%s': dtype is not a string", f->path, name);
    const char *s = json_string_value(v);
    for (int d = 0; d < N_DTYPES; d++)
        if (strcmp(s, dtype_names[d]) == 0) {
            *out = (cd_st_dtype)d;
            return CD_OK;
        }
    /* Valid safetensors dtypes that no cirrdata model uses. */
    static const char *const other[] = {"U16", "U32", "U64", "F8_E4M3", "F8_E5M2"};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        if (strcmp(s, other[i]) == 0)
            return cd_fail(err, CD_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s is not supported", f->path, name, s);
    return cd_fail(err, CD_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%.32s'", f->path, name, s);
}

static cd_status parse_tensor(const cd_st_file *f, const char *name, json_t *obj, const uint8_t *buffer,
                              uint64_t buffer_size, cd_st_tensor *t, cd_error *err) {
    if (!json_is_object(obj))
        return cd_fail(err, CD_ERR_FORMAT, "%s: tensor '%s': entry is not an object", f->path, name);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 && strcmp(key, "data_offsets") != 0)
            return cd_fail(err, CD_ERR_FORMAT, "%s: tensor '%s': unknown key '%s'", f->path, name, key);
    }
    json_t *dt = json_object_get(obj, "dtype"), *shape = json_object_get(obj, "shape"),
           *offs = json_object_get(obj, "data_offsets");
    if (!dt || !shape || !offs)
        return cd_fail(err, CD_ERR_FORMAT, "%s: tensor '%s': missing '%s'", f->path, name,
                       !dt      ? "dtype"
                       : !shape ? "shape"
                                : "data_offsets");
    cd_status st = parse_dtype(f, name, dt, &t->dtype, err);
    if (st != CD_OK) return st;

    if (!json_is_array(shape))
        return cd_fail(err, CD_ERR_FORMAT, "%s: tensor '%s': shape is not an array", f->path, name);
    size_t rank = json_array_size(shape);
    if (rank > CD_ST_MAX_RANK)
        return cd_fail(err, CD_ERR_LIMIT, "%s: tensor '%s': rank %zu is above the maximum of %d", f->path, name, rank,
                       CD_ST_MAX_RANK);
    t->rank = (int)rank;
    /* The element count times the dtype size must fit in int64. The product of the non-zero dims is
     * bounded the same way, so no product of dims overflows later even for an empty tensor. */
    uint64_t cap = (uint64_t)INT64_MAX / dtype_sizes[t->dtype];
    uint64_t elements = 1, nonzero = 1;
    for (size_t i = 0; i < rank; i++) {
        json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d))
            return cd_fail(err, CD_ERR_FORMAT, "%s: tensor '%s': shape[%zu] is not an integer", f->path, name, i);
        json_int_t n = json_integer_value(d);
        if (n < 0)
            return cd_fail(err, CD_ERR_FORMAT, "%s: tensor '%s': shape[%zu] is negative (%lld)", f->path, name, i,
                           (long long)n);
        t->shape[i] = (int64_t)n;
        if (n != 0 && nonzero > cap / (uint64_t)n)
            return cd_fail(err, CD_ERR_FORMAT, "%s: tensor '%s': element count overflows", f->path, name);
        if (n != 0) nonzero *= (uint64_t)n;
        elements *= (uint64_t)n;
    }
    t->elements = (int64_t)elements;
    uint64_t nbytes = elements * dtype_sizes[t->dtype];

    if (!json_is_array(offs) || json_array_size(offs) != 2 || !json_is_integer(json_array_get(offs, 0)) ||
        !json_is_integer(json_array_get(offs, 1)))
        return cd_fail(err, CD_ERR_FORMAT, "%s: tensor '%s': data_offsets is not [begin, end]", f->path, name);
    json_int_t b = json_integer_value(json_array_get(offs, 0)), e = json_integer_value(json_array_get(offs, 1));
    if (b < 0 || e < b)
        return cd_fail(err, CD_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets [%lld, %lld] are not an ordered pair of "
                       "non-negative offsets",
                       f->path, name, (long long)b, (long long)e);
    if ((uint64_t)e > buffer_size)
        return cd_fail(err, CD_ERR_TRUNCATED,
                       "%s: tensor '%s': data_offsets end %lld is past the %llu-byte data buffer", f->path, name,
                       (long long)e, (unsigned long long)buffer_size);
    if ((uint64_t)(e - b) != nbytes)
        return cd_fail(err, CD_ERR_FORMAT, "%s: tensor '%s': data_offsets span %lld bytes, but %s shape needs %llu",
                       f->path, name, (long long)(e - b), dtype_names[t->dtype], (unsigned long long)nbytes);
    t->data = buffer + b;
    t->nbytes = (size_t)nbytes;
    t->name = dup_str(name);
    if (!t->name) return cd_fail(err, CD_ERR_NOMEM, "%s: out of memory", f->path);
    return CD_OK;
}

static int cmp_by_offset(const void *a, const void *b) {
    const cd_st_tensor *x = *(const cd_st_tensor *const *)a, *y = *(const cd_st_tensor *const *)b;
    if (x->data != y->data) return (const uint8_t *)x->data < (const uint8_t *)y->data ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static cd_status check_overlap(const cd_st_file *f, cd_error *err) {
    if (f->count < 2) return CD_OK;
    const cd_st_tensor **order = malloc((size_t)f->count * sizeof *order);
    if (!order) return cd_fail(err, CD_ERR_NOMEM, "%s: out of memory", f->path);
    for (int i = 0; i < f->count; i++) order[i] = &f->tensors[i];
    qsort(order, (size_t)f->count, sizeof *order, cmp_by_offset);
    cd_status st = CD_OK;
    for (int i = 1; i < f->count; i++) {
        const uint8_t *prev_end = (const uint8_t *)order[i - 1]->data + order[i - 1]->nbytes;
        if ((const uint8_t *)order[i]->data < prev_end) {
            st = cd_fail(err, CD_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data buffer", f->path,
                         order[i - 1]->name, order[i]->name);
            break;
        }
    }
    free(order);
    return st;
}

static cd_status parse(cd_st_file *f, const uint8_t *data, size_t size, cd_error *err) {
    if (size < 8)
        return cd_fail(err, CD_ERR_TRUNCATED, "%s: truncated: %zu bytes, too short for the 8-byte header length",
                       f->path, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | data[i];
    if (n > CD_ST_MAX_HEADER)
        return cd_fail(err, CD_ERR_LIMIT, "%s: header length %llu is above the limit of %u bytes", f->path,
                       (unsigned long long)n, CD_ST_MAX_HEADER);
    if (n > size - 8)
        return cd_fail(err, CD_ERR_TRUNCATED, "%s: truncated: header length %llu is past the end of the %zu-byte file",
                       f->path, (unsigned long long)n, size);
    if (n < 2 || data[8] != '{')
        return cd_fail(err, CD_ERR_FORMAT, "%s: not a safetensors file (the header is not a JSON object)", f->path);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return cd_fail(err, CD_ERR_FORMAT, "%s: header is not valid JSON: %s (line %d, column %d)", f->path, jerr.text,
                       jerr.line, jerr.column);
    cd_status st = CD_OK;
    if (!json_is_object(root)) {
        st = cd_fail(err, CD_ERR_FORMAT, "%s: header is not a JSON object", f->path);
        goto done;
    }
    const uint8_t *buffer = data + 8 + n;
    uint64_t buffer_size = size - 8 - n;
    size_t entries = json_object_size(root);
    if (entries > (size_t)INT32_MAX) { /* cannot happen under the header cap; keeps the int count honest */
        st = cd_fail(err, CD_ERR_LIMIT, "%s: too many tensors", f->path);
        goto done;
    }
    if (entries) {
        f->tensors = calloc(entries, sizeof *f->tensors);
        if (!f->tensors) {
            st = cd_fail(err, CD_ERR_NOMEM, "%s: out of memory", f->path);
            goto done;
        }
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            st = parse_metadata(f, v, err);
        } else {
            st = parse_tensor(f, key, v, buffer, buffer_size, &f->tensors[f->count], err);
            if (st == CD_OK) f->count++;
        }
        if (st != CD_OK) goto done;
    }
    st = check_overlap(f, err);
    if (st == CD_OK) st = index_names(f, err);
done:
    json_decref(root);
    return st;
}

static cd_status open_common(const uint8_t *data, size_t size, const char *name, void *map, size_t map_size,
                             cd_st_file **out, cd_error *err) {
    cd_st_file *f = calloc(1, sizeof *f);
    char *path = f ? dup_str(name) : NULL;
    if (!path) {
        free(f);
        if (map) munmap(map, map_size);
        return cd_fail(err, CD_ERR_NOMEM, "%s: out of memory", name);
    }
    f->path = path;
    f->map = map;
    f->map_size = map_size;
    cd_status st = parse(f, data, size, err);
    if (st != CD_OK) {
        cd_st_close(f);
        return st;
    }
    *out = f;
    return CD_OK;
}

cd_status cd_st_open_memory(const void *data, size_t size, const char *name, cd_st_file **out, cd_error *err) {
    if (!out || (!data && size) || !name) return cd_fail(err, CD_ERR_ARG, "cd_st_open_memory: NULL argument");
    *out = NULL;
    return open_common(data, size, name, NULL, 0, out, err);
}

cd_status cd_st_open(const char *path, cd_st_file **out, cd_error *err) {
    if (!path || !out) return cd_fail(err, CD_ERR_ARG, "cd_st_open: NULL argument");
    *out = NULL;
    cd_file file;
    cd_status st = cd_file_open(path, &file, err);
    if (st != CD_OK) return st;
    if (file.size > SIZE_MAX) {
        cd_file_close(&file);
        return cd_fail(err, CD_ERR_LIMIT, "%s: file too large to map", path);
    }
    size_t size = (size_t)file.size;
    void *map = NULL;
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, file.fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            cd_file_close(&file);
            return cd_fail(err, CD_ERR_IO, "%s: cannot map: %s", path, strerror(e));
        }
    }
    cd_file_close(&file); /* the mapping stays valid after close */
    return open_common(map, size, path, map, size, out, err);
}

static void format_shape(char *buf, size_t cap, int rank, const int64_t *shape) {
    size_t at = 0;
    at += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < rank && at < cap; i++) {
        if (shape[i] < 0)
            at += (size_t)snprintf(buf + at, cap - at, "%s*", i ? ", " : "");
        else
            at += (size_t)snprintf(buf + at, cap - at, "%s%lld", i ? ", " : "", (long long)shape[i]);
    }
    if (at < cap) snprintf(buf + at, cap - at, "]");
}

cd_status cd_st_get_f32(const cd_st_file *f, const char *name, int expected_rank, const int64_t *expected, float **out,
                        cd_error *err) {
    if (!f || !name || !out || expected_rank < 0 || expected_rank > CD_ST_MAX_RANK || (expected_rank && !expected))
        return cd_fail(err, CD_ERR_ARG, "cd_st_get_f32: bad argument");
    *out = NULL;
    const cd_st_tensor *t = cd_st_find(f, name);
    if (!t) return cd_fail(err, CD_ERR_FORMAT, "%s: missing tensor '%s'", f->path, name);
    bool same = t->rank == expected_rank;
    for (int i = 0; same && i < expected_rank; i++)
        if (expected[i] >= 0 && expected[i] != t->shape[i]) same = false;
    if (!same) {
        char have[160], want[160];
        format_shape(have, sizeof have, t->rank, t->shape);
        format_shape(want, sizeof want, expected_rank, expected);
        return cd_fail(err, CD_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s", f->path, name, have, want);
    }
    if (t->dtype != CD_ST_F32 && t->dtype != CD_ST_F16 && t->dtype != CD_ST_BF16 && t->dtype != CD_ST_F64)
        return cd_fail(err, CD_ERR_FORMAT, "%s: tensor '%s': dtype %s where a float tensor is expected", f->path, name,
                       dtype_names[t->dtype]);
    /* elements * dtype size <= the file size, so this allocation is bounded by the input. */
    size_t n = (size_t)t->elements;
    float *dst = malloc(n ? n * sizeof(float) : 1);
    if (!dst) return cd_fail(err, CD_ERR_NOMEM, "%s: tensor '%s': cannot allocate %zu floats", f->path, name, n);
    const uint8_t *src = t->data;
    switch (t->dtype) {
    case CD_ST_F32:
        if (n) memcpy(dst, src, n * sizeof(float));
        break;
    case CD_ST_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(src[2 * i] | (src[2 * i + 1] << 8));
            dst[i] = cd_half_to_float(h);
        }
        break;
    case CD_ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)(src[2 * i] | (src[2 * i + 1] << 8)) << 16;
            memcpy(&dst[i], &bits, sizeof bits);
        }
        break;
    case CD_ST_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, sizeof d);
            /* Out-of-range doubles become infinities explicitly (the C conversion is undefined there). */
            if (d > FLT_MAX)
                dst[i] = INFINITY;
            else if (d < -FLT_MAX)
                dst[i] = -INFINITY;
            else
                dst[i] = (float)d;
        }
        break;
    default: break;
    }
    *out = dst;
    return CD_OK;
}
