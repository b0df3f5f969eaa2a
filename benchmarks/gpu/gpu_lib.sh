# shellcheck shell=bash
# Shell functions the GPU benchmark drivers (run.sh, run_model.sh) share; sourced
# (`. "$here/gpu_lib.sh"`) after `set -euo pipefail`, with $here set to benchmarks/gpu and the
# working directory at the repository root.
#
#   gpu_build_dir BINARY [BUILD_DIR]
#       sets $build: BUILD_DIR when given, else the first of build-gpu, build that holds
#       benchmarks/gpu/BINARY, else build-gpu
#   gpu_require BINARY
#       $build/benchmarks/gpu/BINARY must run here: built when missing (only when meson, ninja and
#       glslc are all there; else exits 1 saying what to carry), and needing no library this machine
#       lacks (it should need only libc and libm; exits 1 otherwise)
#   gpu_vulkan_env
#       the Vulkan loader and driver: every .gl/*.deb unpacked into / (the loader and the glvnd
#       libraries NVIDIA's ICD needs), NVIDIA's ICD from /usr/local/nvidia when no ICD variable is
#       set. Skipped when CIRRDATA_GPU_ENV_READY is set (run.sh did it before calling run_model.sh)
#   gpu_torch_python
#       sets $py: $PYTHON (default python3) when it imports torch, else /usr/bin/python3 when that
#       does, else empty

gpu_build_dir() {
  build=${2:-}
  if [ -z "$build" ]; then
    for b in build-gpu build; do
      if [ -x "$b/benchmarks/gpu/$1" ]; then build=$b; break; fi
    done
    build=${build:-build-gpu}
  fi
}

gpu_require() {
  local bin="$build/benchmarks/gpu/$1"
  if [ ! -x "$bin" ]; then
    if command -v meson >/dev/null && command -v ninja >/dev/null && command -v glslc >/dev/null; then
      echo "== building $bin"
      [ -f "$build/build.ninja" ] || meson setup "$build" -Dtests=false >/dev/null
      ninja -C "$build" "benchmarks/gpu/$1" >/dev/null
    else
      echo "error: $bin is missing and meson/ninja/glslc are not all available to build it;" >&2
      echo "       build it elsewhere (meson setup build-gpu && ninja -C build-gpu benchmarks/gpu/$1)" >&2
      echo "       and carry build-gpu/benchmarks/gpu" >&2
      exit 1
    fi
  fi
  if ldd "$bin" 2>/dev/null | grep 'not found' >&2; then
    echo "error: $bin needs libraries this machine lacks (above); it should need only libc and libm:" >&2
    echo "       check benchmarks/gpu/meson.build (static jansson, --as-needed) and rebuild" >&2
    exit 1
  fi
}

gpu_vulkan_env() {
  if [ -n "${CIRRDATA_GPU_ENV_READY:-}" ]; then return 0; fi
  if compgen -G ".gl/*.deb" >/dev/null; then
    echo "== unpacking the Vulkan loader and glvnd from .gl/"
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  elif ! ldconfig -p 2>/dev/null | grep 'libvulkan.so.1' >/dev/null; then
    echo "warning: no libvulkan.so.1 on this machine and no .gl/*.deb to unpack: the GPU path will be unavailable" >&2
  fi
  local nv_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f "$nv_icd" ]; then
    export VK_DRIVER_FILES=$nv_icd VK_ICD_FILENAMES=$nv_icd
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  fi
}

gpu_torch_python() {
  py=${PYTHON:-python3}
  if ! "$py" -c 'import torch' 2>/dev/null; then
    if /usr/bin/python3 -c 'import torch' 2>/dev/null; then py=/usr/bin/python3; else py=""; fi
  fi
}
