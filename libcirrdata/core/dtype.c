#include <string.h>

#include "cirrdata/dtype.h"

static const struct {
    cd_dtype dtype;
    size_t size;
    const char *name;
} dtype_table[] = {
    {CD_DTYPE_UINT8, 1, "uint8"},     {CD_DTYPE_INT8, 1, "int8"},       {CD_DTYPE_UINT16, 2, "uint16"},
    {CD_DTYPE_INT16, 2, "int16"},     {CD_DTYPE_UINT32, 4, "uint32"},   {CD_DTYPE_INT32, 4, "int32"},
    {CD_DTYPE_UINT64, 8, "uint64"},   {CD_DTYPE_INT64, 8, "int64"},     {CD_DTYPE_FLOAT16, 2, "float16"},
    {CD_DTYPE_FLOAT32, 4, "float32"}, {CD_DTYPE_FLOAT64, 8, "float64"},
};

size_t cd_dtype_size(cd_dtype dtype) {
    for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++)
        if (dtype_table[i].dtype == dtype) return dtype_table[i].size;
    return 0;
}

const char *cd_dtype_name(cd_dtype dtype) {
    for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++)
        if (dtype_table[i].dtype == dtype) return dtype_table[i].name;
    return "invalid";
}

cd_dtype cd_dtype_from_name(const char *name) {
    if (!name) return CD_DTYPE_INVALID;
    for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++)
        if (strcmp(dtype_table[i].name, name) == 0) return dtype_table[i].dtype;
    return CD_DTYPE_INVALID;
}
