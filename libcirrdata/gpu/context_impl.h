/* Declarations shared by the runtime's own files in gpu/ (not by the op families, which use
 * gpu/gpu_impl.h). */
#ifndef CD_GPU_CONTEXT_IMPL_H
#define CD_GPU_CONTEXT_IMPL_H

#include "gpu/gpu_impl.h"

/* Frees an arena's block and buffer (memory.c). */
CD_INTERNAL void cd_vk_arena_free(cd_gpu_context *ctx, cd_vk_arena *a);
/* The pipeline cache: opened from its file (if any, and this device's) at creation; written back (when
 * pipelines were built and the device was not lost) and destroyed when the context goes (pipeline.c). */
CD_INTERNAL void cd_vk_cache_open(cd_gpu_context *ctx, const cd_gpu_options *options);
CD_INTERNAL void cd_vk_cache_close(cd_gpu_context *ctx);

#endif
