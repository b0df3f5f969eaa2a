#!/usr/bin/env bash
# The fused spatial warp on a GPU: parity with the C reference and speed against
# torch.nn.functional.grid_sample, in one table. About a minute; designed for a machine with an
# NVIDIA GPU and PyTorch+CUDA in python3, and runs anywhere (lavapipe and torch on the CPU here).
#
#   benchmarks/gpu/run.sh [BUILD_DIR]        (run from anywhere; default BUILD_DIR: build-gpu, else build)
#
# Only runs binaries: BUILD_DIR/benchmarks/gpu/bench_warp, linked so that it needs nothing but the C
# library and a Vulkan loader (readelf -d shows libc and libm). When it is missing and meson, ninja
# and glslc are all there, the script builds it; otherwise it says what to carry.
# Vulkan loader: when ldconfig knows no libvulkan.so.1 and the repository has .gl/*.deb (the loader
# packages, see the device notes), they are unpacked into / first. NVIDIA's ICD is used from
# /usr/local/nvidia when no other ICD file names it.
# Environment: SECONDS_PER=<s> time per candidate (default 2); RESULTS_DIR=<dir> (default $OUT if set,
# else a temporary folder) receives bench.json, bench.err, torch_cuda.json, torch_cpu.json, summary.txt.
# Exit status: 1 when parity fails or the GPU path could not run.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
build=${1:-}
if [ -z "$build" ]; then
  for b in build-gpu build; do
    if [ -x "$b/benchmarks/gpu/bench_warp" ]; then build=$b; break; fi
  done
  build=${build:-build-gpu}
fi
per=${SECONDS_PER:-2}
results=${RESULTS_DIR:-${OUT:-$(mktemp -d /tmp/cirrdata-gpu-bench.XXXXXX)}}
mkdir -p "$results"
bench="$build/benchmarks/gpu/bench_warp"

if [ ! -x "$bench" ]; then
  if command -v meson >/dev/null && command -v ninja >/dev/null && command -v glslc >/dev/null; then
    echo "== building $bench"
    [ -f "$build/build.ninja" ] || meson setup "$build" -Dtests=false >/dev/null
    ninja -C "$build" benchmarks/gpu/bench_warp >/dev/null
  else
    echo "error: $bench is missing and meson/ninja/glslc are not all available to build it;" >&2
    echo "       build it elsewhere (meson setup build-gpu && ninja -C build-gpu benchmarks/gpu/bench_warp)" >&2
    echo "       and carry build-gpu/benchmarks/gpu" >&2
    exit 1
  fi
fi

if ldd "$bench" 2>/dev/null | grep 'not found' >&2; then
  echo "error: $bench needs libraries this machine lacks (above); it should need only libc and libm:" >&2
  echo "       check benchmarks/gpu/meson.build (static jansson, --as-needed) and rebuild" >&2
  exit 1
fi

# Vulkan loader and driver. The NVIDIA ICD (libGLX_nvidia) needs the glvnd libraries as well as the
# loader, so every package carried in .gl/ is unpacked (the device README's list: libvulkan1 libegl1
# libglvnd0 libopengl0 libgl1 libglx0 libgles2).
if compgen -G ".gl/*.deb" >/dev/null; then
  echo "== unpacking the Vulkan loader and glvnd from .gl/"
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
elif ! ldconfig -p 2>/dev/null | grep 'libvulkan.so.1' >/dev/null; then
  echo "warning: no libvulkan.so.1 on this machine and no .gl/*.deb to unpack: the GPU path will be unavailable" >&2
fi
nv_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f "$nv_icd" ]; then
  export VK_DRIVER_FILES=$nv_icd VK_ICD_FILENAMES=$nv_icd
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi

# python with torch
py=${PYTHON:-python3}
if ! "$py" -c 'import torch' 2>/dev/null; then
  if /usr/bin/python3 -c 'import torch' 2>/dev/null; then py=/usr/bin/python3; else py=""; fi
fi

work=$(mktemp -d /tmp/cirrdata-gpu-work.XXXXXX) # the dumped volumes and the pipeline cache: not results
trap 'rm -rf "$work"' EXIT
dump="$work/dump"
mkdir -p "$dump"
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$work/cache}
echo "== bench_warp (Vulkan vs the C reference), ${per} s per candidate"
set +e
"$bench" --json --seconds "$per" --dump "$dump" >"$results/bench.json" 2>"$results/bench.err"
bench_rc=$?
set -e
cat "$results/bench.err" >&2
if [ ! -s "$results/bench.json" ]; then
  echo "error: bench_warp produced no result (exit $bench_rc)" >&2
  exit 1
fi

if [ -n "$py" ]; then
  if "$py" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "== torch grid_sample on CUDA"
    "$py" "$here/torch_warp.py" --bench "$results/bench.json" --dump "$dump" --device cuda --seconds 1 >"$results/torch_cuda.json" ||
      echo "warning: torch on CUDA failed" >&2
  fi
  echo "== torch grid_sample on the CPU"
  "$py" "$here/torch_warp.py" --bench "$results/bench.json" --dump "$dump" --device cpu --seconds 1 >"$results/torch_cpu.json" ||
    echo "warning: torch on the CPU failed" >&2
  gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
  GPU_NAME="$gpu_name" "$py" "$here/summary.py" "$results" | tee "$results/summary.txt"
else
  echo "warning: no python3 with torch: no comparison" >&2
  cat "$results/bench.json"
fi
echo "(results in $results)"
if [ "$bench_rc" -ne 0 ]; then
  echo "PARITY FAILED or the GPU path did not run (bench_warp exit $bench_rc)" >&2
  exit 1
fi
if grep -q '"device": ""' "$results/bench.json"; then
  echo "error: the GPU path was not available (see the message above)" >&2
  exit 1
fi
