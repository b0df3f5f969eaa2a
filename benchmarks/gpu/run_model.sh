#!/usr/bin/env bash
# Inference benchmark: ResNet-18, ResNet-50 and the staging paper's MobileNetV3-Small, ConvNeXt-Base,
# PVTv2-b2 and MambaVision-T (random weights and random normalisation statistics,
# exported by tools/scripts/export_weights.py) at batch 32, 3x256x256, through cd_model on Vulkan
# (bench_model) in float32 and with float16 storage (--fp16), against PyTorch eager float32 and
# autocast float16 on the same card (torch_model.py), with the parity of the logits against PyTorch
# (strict float32; 1e-4, fp16 1e-2) and against the C executor (first images). run.sh calls it after
# the warp benchmark; it also runs alone:
#
#   benchmarks/gpu/run_model.sh [BUILD_DIR]     (default BUILD_DIR: build-gpu, else build)
#
# Environment: MODEL_ARCHS ("resnet18 resnet50 mobilenet_v3_small convnext_base pvt_v2_b2 mambavision_t";
# with the tv_shim stand-in the two torchvision-only ones are skipped, saying so), MODEL_PRECISIONS ("fp32 fp16"), MODEL_BATCH (32), MODEL_SIZE (256), MODEL_ITERS (20),
# MODEL_WARMUP (3), MODEL_CPU_CHECK (2 images against the C executor; 0: off), RESULTS_DIR (default
# $OUT, else a temporary folder: model_<arch>[_fp16]_vk.json, model_<arch>_torch_{cuda,cpu}.json,
# model_summary.txt), PYTHON (a python3 with torch; torchvision too, else benchmarks/gpu/tv_shim
# stands in for it), CIRRDATA_VK_DEVICE (the Vulkan device). Here, on lavapipe:
#   CIRRDATA_VK_DEVICE=llvmpipe MODEL_BATCH=2 MODEL_SIZE=64 MODEL_ITERS=1 MODEL_WARMUP=0 \
#     benchmarks/gpu/run_model.sh build-h3
# Exit status 1 when a model could not run on Vulkan or parity (1e-4 of the largest logit; 1e-2 with
# float16 storage) fails.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
. "$here/gpu_lib.sh"
gpu_build_dir bench_model "${1:-}"
archs=${MODEL_ARCHS:-resnet18 resnet50 mobilenet_v3_small convnext_base pvt_v2_b2 mambavision_t}
precisions=${MODEL_PRECISIONS:-fp32 fp16}
batch=${MODEL_BATCH:-32}
size=${MODEL_SIZE:-256}
iters=${MODEL_ITERS:-20}
warmup=${MODEL_WARMUP:-3}
cpu_check=${MODEL_CPU_CHECK:-2}
results=${RESULTS_DIR:-${OUT:-$(mktemp -d /tmp/cirrdata-model-bench.XXXXXX)}}
mkdir -p "$results"
bench="$build/benchmarks/gpu/bench_model"
gpu_require bench_model
# The Vulkan loader and NVIDIA's ICD, as run.sh sets them up (skipped when run.sh did already).
gpu_vulkan_env

# Python with torch; without torchvision (the lent GPU machines ship torch alone) the ResNets come
# from benchmarks/gpu/tv_shim, a minimal torchvision stand-in (MODEL_TV_SHIM=1 forces it), and
# MobileNetV3-Small and ConvNeXt-Base, which only the real torchvision defines, are skipped. PVTv2-b2 and
# MambaVision-T are the project's own definitions (python/cirrdata): they need torch alone.
gpu_torch_python
if [ -z "$py" ]; then
  echo "error: no python3 with torch (needed to export the weights and for the comparison)" >&2
  exit 1
fi
if [ "${MODEL_TV_SHIM:-0}" = 1 ] || ! "$py" -c 'import torchvision' 2>/dev/null; then
  echo "== no torchvision: using the ResNet stand-in benchmarks/gpu/tv_shim"
  export PYTHONPATH="$here/tv_shim${PYTHONPATH:+:$PYTHONPATH}"
  kept=
  for arch in $archs; do
    case $arch in
    mobilenet_v3_small | convnext_base) echo "== $arch: skipped (torchvision defines it; this python has none)" ;;
    *) kept="$kept $arch" ;;
    esac
  done
  archs=$kept
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
  "$py" tools/scripts/export_weights.py --arch "$arch" --random --random-bn --seed 1 -o "$model" --quiet
  logits=()
  for prec in $precisions; do
    tag=$arch flag=() lflag=--logits
    if [ "$prec" = fp16 ]; then tag=${arch}_fp16 flag=(--fp16) lflag=--logits-fp16; fi
    echo "== $arch: bench_model on Vulkan ($prec), batch $batch, ${size}x${size}, $iters calls"
    set +e
    "$bench" --model "$model" --batch "$batch" --size "$size" --iters "$iters" --warmup "$warmup" --cpu-check "$cpu_check" \
      ${flag[@]+"${flag[@]}"} --input-out "$work/x.bin" --logits-out "$work/logits_$prec.bin" \
      >"$results/model_${tag}_vk.json" 2>"$results/model_${tag}_vk.err"
    brc=$?
    set -e
    cat "$results/model_${tag}_vk.err" >&2
    if [ "$brc" -ne 0 ]; then
      echo "error: bench_model failed for $arch $prec (exit $brc)" >&2
      rc=1
      continue
    fi
    logits+=("$lflag" "$work/logits_$prec.bin")
  done
  if [ "${#logits[@]}" -eq 0 ]; then continue; fi
  if [ "$cuda" = 1 ]; then
    echo "== $arch: PyTorch on CUDA"
    "$py" "$here/torch_model.py" run --model "$model" --input "$work/x.bin" "${logits[@]}" --batch "$batch" \
      --size "$size" --device cuda --iters "$iters" --warmup "$warmup" >"$results/model_${arch}_torch_cuda.json" ||
      { echo "error: torch on CUDA failed for $arch" >&2; rc=1; }
  else
    echo "== $arch: PyTorch on the CPU (no CUDA here)"
    "$py" "$here/torch_model.py" run --model "$model" --input "$work/x.bin" "${logits[@]}" --batch "$batch" \
      --size "$size" --device cpu --iters 1 --warmup 0 >"$results/model_${arch}_torch_cpu.json" ||
      { echo "error: torch on the CPU failed for $arch" >&2; rc=1; }
  fi
  rm -f "$model"
done
"$py" "$here/torch_model.py" summary "$results" | tee "$results/model_summary.txt" || rc=1
echo "(model results in $results)"
exit $rc
