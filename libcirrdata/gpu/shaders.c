/* The shader registry: the SPIR-V of every compute shader, generated from the one list in
 * shaders/meson.build and embedded at build time; the op families look their kernels up by name. */
#define CD_SHADER_REGISTRY_TABLE
#include "gpu/gpu_impl.h"

const cd_shader *cd_shader_get(cd_shader_id id) { return (unsigned)id < CD_SHADER_COUNT ? &g_shader_table[id] : NULL; }
