/* The Vulkan executor of an inference graph (nn/graph.h): weights uploaded once into device memory,
 * activations in one arena laid out by the graph's plan, the forward pass recorded once per input
 * shape into one command buffer and replayed. Every op has its C reference in nn/ref_ops.c and a
 * lavapipe test against it. Not installed. */
#ifndef CD_NN_VK_EXEC_H
#define CD_NN_VK_EXEC_H

#include <stdbool.h>

#include "cirrdata/gpu.h"
#include "nn/graph.h"

typedef struct cd_nn_vk cd_nn_vk;

/* Creates the executor on ctx (which it does not own; ctx must outlive it) and uploads g's
 * parameters. fp16: store weights and activations as float16 when the device supports 16-bit storage
 * buffers (accumulate in float32); otherwise float32 and *fp16_used = false. */
CD_INTERNAL cd_status cd_nn_vk_create(cd_gpu_context *ctx, const cd_nn_graph *g, bool fp16, bool *fp16_used,
                                      cd_nn_vk **out, cd_error *err);
CD_INTERNAL void cd_nn_vk_destroy(cd_nn_vk *vk);

/* Runs the graph, shaped by cd_nn_graph_shape (a new shape re-plans device memory and re-records):
 * copies `input` (g->input_shape, NCHW float32) in, `output` (the output node's shape) out. */
CD_INTERNAL cd_status cd_nn_vk_run(cd_nn_vk *vk, const cd_nn_graph *g, const float *input, float *output,
                                   cd_error *err);

/* Tests only: pretend the device allows at most max_range bytes per storage-buffer binding and
 * max_buffer bytes per weight buffer (0: the device's own limits), so that small graphs exercise the
 * splitting that large layers need. Read by cd_nn_vk_create; process-wide. */
CD_INTERNAL void cd_nn_vk_test_limits(uint64_t max_range, uint64_t max_buffer);

/* Milliseconds of the last run's dispatches from GPU timestamps (0 when unavailable). */
CD_INTERNAL double cd_nn_vk_last_kernel_ms(const cd_nn_vk *vk);

/* Conv2d nodes the last recorded pass runs on the depthwise kernel (tests: the kernel was taken). */
CD_INTERNAL int cd_nn_vk_depthwise_nodes(const cd_nn_vk *vk);

#endif
