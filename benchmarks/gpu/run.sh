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
# else a temporary folder) receives bench.json, bench.err, torch_cuda.json, torch_cpu.json, summary.txt,
# and for the fused augmentation (bench_augment, torch_augment.py; AUG_CASES=<BxXxYxZ,...> overrides its
# cases) augment.json and augment_summary.txt (the table, then torch's raw JSON: two files, as the device
# machine returns few).
# Exit status: 1 when parity fails or the GPU path could not run.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
. "$here/gpu_lib.sh"
gpu_build_dir bench_warp "${1:-}"
per=${SECONDS_PER:-2}
results=${RESULTS_DIR:-${OUT:-$(mktemp -d /tmp/cirrdata-gpu-bench.XXXXXX)}}
mkdir -p "$results"
bench="$build/benchmarks/gpu/bench_warp"
gpu_require bench_warp
# Vulkan loader and driver. The NVIDIA ICD (libGLX_nvidia) needs the glvnd libraries as well as the
# loader, so every package carried in .gl/ is unpacked (the device README's list: libvulkan1 libegl1
# libglvnd0 libopengl0 libgl1 libglx0 libgles2).
gpu_vulkan_env
export CIRRDATA_GPU_ENV_READY=1 # for run_model.sh below
gpu_torch_python

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
    echo "== torch warp on CUDA (device clock: CUDA-graph replays between CUDA events; host clock: end to end)"
    "$py" "$here/torch_warp.py" --bench "$results/bench.json" --dump "$dump" --device cuda --seconds 1 >"$results/torch_cuda.json" ||
      echo "warning: torch on CUDA failed" >&2
  else
    echo "== torch has no CUDA device here: the GPU comparison is skipped (torch runs on the CPU only)"
  fi
  echo "== torch warp on the CPU (wall clock)"
  "$py" "$here/torch_warp.py" --bench "$results/bench.json" --dump "$dump" --device cpu --seconds 1 >"$results/torch_cpu.json" ||
    echo "warning: torch on the CPU failed" >&2
  gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
  GPU_NAME="$gpu_name" "$py" "$here/summary.py" "$results" | tee "$results/summary.txt"
else
  echo "warning: no python3 with torch: no comparison" >&2
  cat "$results/bench.json"
fi

# The whole augmentation: warp + every intensity op fused into one command buffer (bench_augment),
# against the same chain in torch (torch_augment.py). AUG_CASES=<BxXxYxZ,...> overrides the cases.
aug="$build/benchmarks/gpu/bench_augment"
if [ ! -x "$aug" ] && [ -f "$build/build.ninja" ] && command -v ninja >/dev/null; then
  ninja -C "$build" benchmarks/gpu/bench_augment >/dev/null || true
fi
aug_rc=0
if [ -x "$aug" ]; then
  echo "== bench_augment (fused warp + intensity vs the C reference), ${per} s per candidate"
  set +e
  "$aug" --json --seconds "$per" ${AUG_CASES:+--cases "$AUG_CASES"} --dump "$dump" >"$work/augment.json" 2>"$work/augment.err"
  aug_rc=$?
  set -e
  cat "$work/augment.err" >&2
  cp "$work/augment.json" "$results/augment.json"
  if [ -n "$py" ] && [ -s "$work/augment.json" ]; then
    for d in cuda cpu; do
      if [ $d = cuda ] && ! "$py" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then continue; fi
      echo "== torch augmentation chain on $d"
      "$py" "$here/torch_augment.py" --bench "$work/augment.json" --dump "$dump" --device $d --seconds 1 \
        >"$work/augment_torch_$d.json" || echo "warning: torch_augment.py on $d failed" >&2
    done
    { "$py" "$here/torch_augment.py" --summary "$work"; echo "raw torch results:"; cat "$work"/augment_torch_*.json 2>/dev/null || true; } |
      tee "$results/augment_summary.txt"
  fi
else
  echo "warning: $aug is missing: no augmentation benchmark (carry $build/benchmarks/gpu with it)" >&2
  aug_rc=1
fi

# Inference: ResNet-18 and ResNet-50 through cd_model on Vulkan against PyTorch on the same card
# (run_model.sh: MODEL_ARCHS, MODEL_BATCH, MODEL_SIZE, MODEL_ITERS there); MODELS=0 skips it.
model_rc=0
if [ "${MODELS:-1}" != 0 ]; then
  RESULTS_DIR="$results" PYTHON="${py:-python3}" bash "$here/run_model.sh" "$build" || model_rc=1
fi

echo "(results in $results)"
if [ "$model_rc" -ne 0 ]; then
  echo "PARITY FAILED or a model did not run on Vulkan (run_model.sh; model_summary.txt)" >&2
  exit 1
fi
if [ "$aug_rc" -ne 0 ]; then
  echo "PARITY FAILED or the GPU path did not run (bench_augment exit $aug_rc)" >&2
  exit 1
fi
if [ "$bench_rc" -ne 0 ]; then
  echo "PARITY FAILED or the GPU path did not run (bench_warp exit $bench_rc)" >&2
  exit 1
fi
if grep -q '"device": ""' "$results/bench.json"; then
  echo "error: the GPU path was not available (see the message above)" >&2
  exit 1
fi
