/* libFuzzer target: the safetensors reader (nn/safetensors.c). The bytes are a model file: open it
 * from memory and, when it opens, look every tensor up by name, convert each to float32 with its own
 * shape (and once with a wrong one, for the error path), and read the metadata keys a model uses. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/safetensors.h"

static const char *const meta_keys[] = {
    "cirrdata.format",      "cirrdata.arch",  "cirrdata.classes", "cirrdata.in_channels", "cirrdata.input_size",
    "cirrdata.class_names", "cirrdata.graph", "cirrdata.source",  "cirrdata.torch",       ""};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cd_st_file *f = NULL;
    cd_error err;
    if (cd_st_open_memory(data, size, "fuzz.safetensors", &f, &err) != CD_OK) return 0;
    volatile size_t sink = 0;
    for (size_t k = 0; k < sizeof meta_keys / sizeof meta_keys[0]; k++) {
        const char *v = cd_st_metadata(f, meta_keys[k]);
        if (v) sink += strlen(v);
    }
    int n = cd_st_count(f);
    for (int i = 0; i < n; i++) {
        const cd_st_tensor *t = cd_st_at(f, i);
        if (cd_st_find(f, t->name) != t) abort(); /* names are unique (duplicates are rejected) */
        if (t->nbytes != (size_t)t->elements * cd_st_dtype_size(t->dtype)) abort();
        /* touch every byte the reader claims is inside the input */
        const uint8_t *p = t->data;
        for (size_t b = 0; b < t->nbytes; b += 4096) sink += p[b];
        if (t->nbytes) sink += p[t->nbytes - 1];
        float *v = NULL;
        if (cd_st_get_f32(f, t->name, t->rank, t->shape, &v, &err) == CD_OK) {
            if (t->elements) sink += (size_t)(v[t->elements - 1] != 0.0f);
            free(v);
        }
        int64_t wrong[CD_ST_MAX_RANK];
        memcpy(wrong, t->shape, sizeof wrong);
        if (t->rank) wrong[0] = t->shape[0] ? t->shape[0] - 1 : 1;
        if (cd_st_get_f32(f, t->name, t->rank, wrong, &v, &err) == CD_OK) {
            if (t->rank) abort(); /* a mismatching shape must be refused */
            free(v);
        }
    }
    (void)cd_st_at(f, n);
    (void)cd_st_find(f, "__metadata__");
    (void)sink;
    cd_st_close(f);
    return 0;
}
