// How the inference kernels store tensors: ACT is the element type of activations and weights --
// float, or float16_t in the fp16 variant (CD_FP16, shaders/meson.build: GL_EXT_shader_16bit_storage,
// core in Vulkan 1.1). Arithmetic stays float32: values are converted on load and store.
#ifdef CD_FP16
#extension GL_EXT_shader_16bit_storage : require
#define ACT float16_t
#else
#define ACT float
#endif
