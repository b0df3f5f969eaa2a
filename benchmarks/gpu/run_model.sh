#!/usr/bin/env bash
# Inference benchmark: ResNet-18 and ResNet-50 (random weights and random batch-norm statistics,
# exported by tools/export_weights.py) at batch 32, 3x256x256, through cd_model on Vulkan
# (bench_model) against PyTorch eager float32 on the same card (torch_model.py), with the parity of
# the logits against PyTorch (strict float32) and against the C executor (first images). run.sh calls
# it after the warp benchmark; it also runs alone:
#
#   benchmarks/gpu/run_model.sh [BUILD_DIR]     (default BUILD_DIR: build-gpu, else build)
#
# Environment: MODEL_ARCHS ("resnet18 resnet50"), MODEL_BATCH (32), MODEL_SIZE (256), MODEL_ITERS (20),
# MODEL_WARMUP (3), MODEL_CPU_CHECK (2 images against the C executor; 0: off), RESULTS_DIR (default
# $OUT, else a temporary folder: model_<arch>_vk.json, model_<arch>_torch_{cuda,cpu}.json,
# model_summary.txt), PYTHON (a python3 with torch; torchvision too, else benchmarks/gpu/tv_shim
# stands in for it), CIRRDATA_VK_DEVICE (the Vulkan device). Here, on lavapipe:
#   CIRRDATA_VK_DEVICE=llvmpipe MODEL_BATCH=2 MODEL_SIZE=64 MODEL_ITERS=1 MODEL_WARMUP=0 \
#     benchmarks/gpu/run_model.sh build-h3
# Exit status 1 when a model could not run on Vulkan or parity (1e-4 of the largest logit) fails.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
build=${1:-}
if [ -z "$build" ]; then
  for b in build-gpu build; do
    if [ -x "$b/benchmarks/gpu/bench_model" ]; then build=$b; break; fi
  done
  build=${build:-build-gpu}
fi
archs=${MODEL_ARCHS:-resnet18 resnet50}
batch=${MODEL_BATCH:-32}
size=${MODEL_SIZE:-256}
iters=${MODEL_ITERS:-20}
warmup=${MODEL_WARMUP:-3}
cpu_check=${MODEL_CPU_CHECK:-2}
results=${RESULTS_DIR:-${OUT:-$(mktemp -d /tmp/cirrdata-model-bench.XXXXXX)}}
mkdir -p "$results"
bench="$build/benchmarks/gpu/bench_model"

if [ ! -x "$bench" ]; then
  if command -v meson >/dev/null && command -v ninja >/dev/null && command -v glslc >/dev/null; then
    echo "== building $bench"
    [ -f "$build/build.ninja" ] || meson setup "$build" -Dtests=false >/dev/null
    ninja -C "$build" benchmarks/gpu/bench_model >/dev/null
  else
    echo "error: $bench is missing and meson/ninja/glslc are not all available to build it;" >&2
    echo "       build it elsewhere (meson setup build-gpu && ninja -C build-gpu benchmarks/gpu/bench_model)" >&2
    echo "       and carry build-gpu/benchmarks/gpu" >&2
    exit 1
  fi
fi
if ldd "$bench" 2>/dev/null | grep 'not found' >&2; then
  echo "error: $bench needs libraries this machine lacks (above); it should need only libc and libm" >&2
  exit 1
fi

# The Vulkan loader and NVIDIA's ICD, as run.sh sets them up (skipped when run.sh did already).
if [ -z "${CIRRDATA_GPU_ENV_READY:-}" ]; then
  if compgen -G ".gl/*.deb" >/dev/null && ! ldconfig -p 2>/dev/null | grep 'libvulkan.so.1' >/dev/null; then
    echo "== unpacking the Vulkan loader and glvnd from .gl/"
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  nv_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f "$nv_icd" ]; then
    export VK_DRIVER_FILES=$nv_icd VK_ICD_FILENAMES=$nv_icd
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  fi
fi

# Python with torch; without torchvision (the lent GPU machines ship torch alone) the ResNets come
# from benchmarks/gpu/tv_shim, a minimal torchvision stand-in (MODEL_TV_SHIM=1 forces it).
py=${PYTHON:-python3}
for cand in "$py" /usr/bin/python3; do
  if "$cand" -c 'import torch' 2>/dev/null; then py=$cand; break; fi
  py=""
done
if [ -z "$py" ]; then
  echo "error: no python3 with torch (needed to export the weights and for the comparison)" >&2
  exit 1
fi
if [ "${MODEL_TV_SHIM:-0}" = 1 ] || ! "$py" -c 'import torchvision' 2>/dev/null; then
  echo "== no torchvision: using the ResNet stand-in benchmarks/gpu/tv_shim"
  export PYTHONPATH="$here/tv_shim${PYTHONPATH:+:$PYTHONPATH}"
fi
cuda=0
"$py" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && cuda=1

work=$(mktemp -d /tmp/cirrdata-model-work.XXXXXX)
trap 'rm -rf "$work"' EXIT
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$work/cache}
rc=0
for arch in $archs; do
  model="$work/$arch.safetensors"
  echo "== $arch: exporting random weights (random batch-norm statistics)"
  "$py" tools/export_weights.py --arch "$arch" --random --random-bn --seed 1 -o "$model" --quiet
  echo "== $arch: bench_model on Vulkan, batch $batch, ${size}x${size}, $iters calls"
  set +e
  "$bench" --model "$model" --batch "$batch" --size "$size" --iters "$iters" --warmup "$warmup" --cpu-check "$cpu_check" \
    --input-out "$work/x.bin" --logits-out "$work/logits.bin" >"$results/model_${arch}_vk.json" 2>"$results/model_${arch}_vk.err"
  brc=$?
  set -e
  cat "$results/model_${arch}_vk.err" >&2
  if [ "$brc" -ne 0 ]; then
    echo "error: bench_model failed for $arch (exit $brc)" >&2
    rc=1
    continue
  fi
  if [ "$cuda" = 1 ]; then
    echo "== $arch: PyTorch on CUDA"
    "$py" "$here/torch_model.py" run --model "$model" --input "$work/x.bin" --logits "$work/logits.bin" --batch "$batch" \
      --size "$size" --device cuda --iters "$iters" --warmup "$warmup" >"$results/model_${arch}_torch_cuda.json" ||
      { echo "error: torch on CUDA failed for $arch" >&2; rc=1; }
  else
    echo "== $arch: PyTorch on the CPU (no CUDA here)"
    "$py" "$here/torch_model.py" run --model "$model" --input "$work/x.bin" --logits "$work/logits.bin" --batch "$batch" \
      --size "$size" --device cpu --iters 1 --warmup 0 >"$results/model_${arch}_torch_cpu.json" ||
      { echo "error: torch on the CPU failed for $arch" >&2; rc=1; }
  fi
  rm -f "$model"
done
"$py" "$here/torch_model.py" summary "$results" | tee "$results/model_summary.txt" || rc=1
echo "(model results in $results)"
exit $rc
