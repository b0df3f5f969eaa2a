/* Parts of a conversion balanced by input bytes (see partition.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "dataset/partition.h"

uint64_t cd_part_input_bytes(json_t *input) {
    uint64_t n = 0;
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(input, "files"), i, f) {
        json_int_t size = json_integer_value(json_array_get(f, 1));
        if (size > 0) n += (uint64_t)size;
    }
    return n;
}

/* Cut k of count: see partition.h. The products are exact in 128 bits (bytes * count never overflows). */
static size_t cut(const uint64_t *bytes, size_t n, uint64_t total, int k, int count) {
    if (k <= 0) return 0;
    if (k >= count) return n;
    if (total == 0) return (size_t)((unsigned __int128)n * (unsigned)k / (unsigned)count);
    const unsigned __int128 target = (unsigned __int128)total * (unsigned)k;
    unsigned __int128 prev = 0, sum = 0; /* prefix sums times count, before case j-1 and before case j */
    size_t j = 0;
    while (j < n && sum < target) {
        prev = sum;
        sum += (unsigned __int128)bytes[j] * (unsigned)count;
        j++;
    }
    if (j > 0 && sum >= target && target - prev <= sum - target) j--;
    while (j > 0 && bytes[j - 1] == 0) j--; /* the same prefix sum: the smallest j */
    return j;
}

void cd_part_range(const uint64_t *bytes, size_t n, int index, int count, size_t *lo, size_t *hi) {
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) total += bytes[i];
    *lo = cut(bytes, n, total, index - 1, count);
    *hi = cut(bytes, n, total, index, count);
    if (*hi < *lo) *hi = *lo;
}

cd_status cd_part_range_of_inputs(json_t *inputs, int index, int count, size_t *lo, size_t *hi, uint64_t *part_bytes,
                                  cd_error *err) {
    size_t n = json_array_size(inputs);
    uint64_t *b = malloc((n ? n : 1) * sizeof *b);
    if (!b) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) b[i] = cd_part_input_bytes(json_array_get(inputs, i));
    cd_part_range(b, n, index, count, lo, hi);
    if (part_bytes) {
        *part_bytes = 0;
        for (size_t i = *lo; i < *hi; i++) *part_bytes += b[i];
    }
    free(b);
    return CD_OK;
}

void cd_part_keys_hash(json_t *inputs, size_t lo, size_t hi, char out[17]) {
    XXH3_state_t *s = XXH3_createState();
    uint64_t h = 0;
    if (s) {
        XXH3_64bits_reset(s);
        for (size_t i = lo; i < hi; i++) {
            const char *k = json_string_value(json_object_get(json_array_get(inputs, i), "key"));
            if (k) XXH3_64bits_update(s, k, strlen(k));
            XXH3_64bits_update(s, "\n", 1);
        }
        h = XXH3_64bits_digest(s);
        XXH3_freeState(s);
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}
