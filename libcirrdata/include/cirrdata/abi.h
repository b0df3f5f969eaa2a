/* cirrdata/abi.h — the sizes of the public structs as the loaded library was compiled with them.
 *
 * A binding that mirrors the public structs in another language (the Python package's ctypes classes,
 * python/cirrdata/_abi.py) asks the loaded library for each struct's size and compares it with its own
 * copy: a difference means that the two were built from different headers (a field added, removed or
 * retyped), and every field after the change would be read and written at the wrong offset. */
#ifndef CIRRDATA_ABI_H
#define CIRRDATA_ABI_H

#include <stddef.h>

#include "cirrdata/api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* sizeof of the public struct called name, its tag as the headers spell it (e.g. "cd_loader_options"),
 * as compiled into this library, the CIRRDATA_ADVANCED_API structs included. 0 when name is NULL or
 * names no public struct. Thread safe; no allocation. */
CD_API size_t cd_abi_struct_size(const char *name);

#ifdef __cplusplus
}
#endif
#endif
