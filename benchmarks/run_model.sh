#!/bin/sh
# Model inference benchmark: images/s of cirrdata.Model's C executor (and the Vulkan executor on
# whatever device is there: lavapipe on a CPU-only machine) against PyTorch eval() on the CPU.
#
#   benchmarks/run_model.sh [BUILDDIR]        (default BUILDDIR: build)
#
# Environment: ARCHS (default "resnet18 resnet50"; add vgg19), BATCH (8), SIZE (256), THREADS (2: our
# executor's threads and torch.set_num_threads), ITERS (5 timed batches after 1 warm-up), VULKAN
# (auto: run the Vulkan executor when a device exists; 0: skip), VK_ITERS (2; lavapipe is slow),
# PYTHON (/usr/bin/python3, with torch and torchvision).
#
# Per architecture: exports random weights with random batch-norm statistics
# (tools/export_weights.py --random --random-bn, cached under benchmarks/.data), then runs
# build/benchmarks/bench_model (one batch of BATCH x 3 x SIZE x SIZE, median of ITERS) for the CPU,
# the same for PyTorch in the same round (torch.no_grad, eval, the same input size), then Vulkan.
# Prints one line per run and a table of images/s with ours / torch. Machines are noisy: compare the
# ratio from one run, not numbers across runs.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
build=${1:-build}
archs=${ARCHS:-resnet18 resnet50}
batch=${BATCH:-8}
size=${SIZE:-256}
threads=${THREADS:-2}
iters=${ITERS:-5}
vk_iters=${VK_ITERS:-2}
vulkan=${VULKAN:-auto}
py=${PYTHON:-/usr/bin/python3}

if [ ! -d "$build" ]; then
    meson setup "$build" --buildtype=release -Dtests=false
fi
ninja -C "$build"
bench="$build/benchmarks/bench_model"
if [ ! -x "$bench" ]; then
    echo "run_model.sh: $bench not built (is the 'benchmarks' option on?)" >&2
    exit 1
fi
data="$here/.data"
mkdir -p "$data"
results="$data/model_results.txt"
: > "$results"

for arch in $archs; do
    model="$data/model-$arch-s1.safetensors"
    if [ ! -s "$model" ]; then
        "$py" tools/export_weights.py --arch "$arch" --random --random-bn --seed 1 -o "$model"
    fi
    echo "== $arch: ours (C executor, $threads threads)"
    line=$("$bench" "$model" --device cpu --threads "$threads" --batch "$batch" --size "$size,$size" --iters "$iters")
    echo "$line"
    echo "$arch ours $(echo "$line" | sed 's/.*images_per_s=//')" >> "$results"

    echo "== $arch: torch $("$py" -c 'import torch; print(torch.__version__)') CPU, $threads threads"
    "$py" - "$arch" "$model" "$batch" "$size" "$threads" "$iters" <<'PY' | tee -a "$results"
import os, sys, time
sys.path.insert(0, os.path.join(os.getcwd(), 'python'))
import numpy as np
import torch
from cirrdata import models, safetensors_io  # noqa: E402  (no libcirrdata needed)
arch, path, batch, size, threads, iters = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
torch.set_num_threads(threads)
tensors, meta = safetensors_io.read(path)
net = models.build(arch, int(meta['cirrdata.classes']))
net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()}, strict=False)
net.eval()
x = torch.from_numpy(np.random.default_rng(0).uniform(-2, 2, (batch, 3, size, size)).astype(np.float32))
times = []
with torch.no_grad():
    net(x)  # warm-up
    for _ in range(iters):
        t0 = time.perf_counter()
        net(x)
        times.append(time.perf_counter() - t0)
med = float(np.median(times))
print('torch: best_s=%.4f median_s=%.4f images_per_s=%.2f' % (min(times), med, batch / med), file=sys.stderr, flush=True)
print('%s torch %.2f' % (arch, batch / med), flush=True)
PY

    if [ "$vulkan" != 0 ]; then
        echo "== $arch: ours (Vulkan executor)"
        if line=$("$bench" "$model" --device vulkan --batch "$batch" --size "$size,$size" --iters "$vk_iters" 2>&1); then
            echo "$line"
            echo "$arch vulkan $(echo "$line" | sed 's/.*images_per_s=//')" >> "$results"
        else
            echo "skipped: $line"
        fi
    fi
done

echo
echo "images/s, batch $batch, 3x${size}x${size}, $threads CPU threads ($(nproc) online CPUs)"
"$py" - "$results" <<'PY'
import sys
r = {}
for line in open(sys.argv[1]):
    arch, who, v = line.split()
    r.setdefault(arch, {})[who] = float(v)
print('  %-10s %10s %10s %10s %14s' % ('model', 'ours C', 'torch', 'vulkan', 'ours C / torch'))
for arch, d in r.items():
    vk = '%10.2f' % d['vulkan'] if 'vulkan' in d else '%10s' % '-'
    print('  %-10s %10.2f %10.2f %s %14.2f' % (arch, d['ours'], d['torch'], vk, d['ours'] / d['torch']))
PY
