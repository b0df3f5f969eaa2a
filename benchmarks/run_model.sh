#!/bin/sh
# Model inference benchmark: images/s of cirrdata.Model's C executor against PyTorch eval() on the
# CPU, interleaved round by round (and optionally the Vulkan executor on whatever device is there:
# lavapipe on a CPU-only machine).
#
#   benchmarks/run_model.sh [BUILDDIR]        (default BUILDDIR: build)
#
# Environment: ARCHS (default "resnet18 resnet50 vgg19"), BATCH (8), SIZE (256), THREADS (2: our
# executor's threads and torch.set_num_threads), ROUNDS (5), ITERS (3 timed batches per run), WARMUP (2
# untimed batches before them: torch's first two calls are still slow), VULKAN (auto: one Vulkan run per architecture after the rounds when a device exists; 0:
# skip; lavapipe is a CPU driver and needs minutes per batch), VK_ITERS (1), PYTHON (/usr/bin/python3,
# with torch and torchvision).
#
# Per architecture: exports random weights with random batch-norm statistics
# (tools/scripts/export_weights.py --random --random-bn --seed 1, cached under benchmarks/.data). Then ROUNDS
# rounds; in each, for every architecture, bench_model (C executor) and benchmarks/model_peer.py
# (PyTorch) run back to back, one process each, on the same file, batch and input size, and which of
# the two goes first alternates (by round and by architecture). Each run reports the median of its
# ITERS timed calls. The ratio ours / torch is taken per round (torch's median time / ours, adjacent
# in time, so both see about the same machine load) and summarised as the median (min-max) over the
# rounds: the decode benchmark's method. Every result goes to benchmarks/.data/model_results.jsonl
# with the load average at its start. The summary names the BLAS library torch loaded (model_peer.py
# reads it from /proc/self/maps): Debian's torch runs nn.Linear and matmul on libblas.so.3, the
# reference BLAS unless another is installed or put first on LD_LIBRARY_PATH (benchmarks/README.md,
# "Model inference").
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
. "$here/bench_lib.sh"
build=${1:-build}
archs=${ARCHS:-resnet18 resnet50 vgg19}
batch=${BATCH:-8}
size=${SIZE:-256}
threads=${THREADS:-2}
rounds=${ROUNDS:-5}
iters=${ITERS:-3}
warmup=${WARMUP:-2}
vk_iters=${VK_ITERS:-1}
vulkan=${VULKAN:-auto}
py=${PYTHON:-/usr/bin/python3}

bench_build "$build" -Dtests=false
bench="$build/benchmarks/bench_model"
bench_require run_model.sh "$bench"
CIRRDATA_LIB=$(cd "$build" && pwd)/libcirrdata/libcirrdata.so # the Python package loads it on import
export CIRRDATA_LIB
data="$here/.data"
mkdir -p "$data"
results="$data/model_results.jsonl"
: > "$results"

for arch in $archs; do
    model="$data/model-$arch-s1.safetensors"
    if [ ! -s "$model" ]; then
        "$py" tools/scripts/export_weights.py --arch "$arch" --random --random-bn --seed 1 -o "$model"
    fi
    cat "$model" > /dev/null # page cache
done

load() { cut -d' ' -f1 /proc/loadavg; }
# One run each; a failed run stops the script (set -e sees the assignment's status).
ours() { # round arch
    l=$(load)
    out=$("$bench" "$data/model-$2-s1.safetensors" --device cpu --threads "$threads" --batch "$batch" \
        --size "$size,$size" --iters "$iters" --warmup "$warmup" --json)
    printf '{"round":%d,"load":%s,"result":%s}\n' "$1" "$l" "$out" >> "$results"
}
torch() { # round arch
    l=$(load)
    out=$("$py" "$here/model_peer.py" "$data/model-$2-s1.safetensors" --arch "$2" --batch "$batch" --size "$size" \
        --threads "$threads" --iters "$iters" --warmup "$warmup")
    printf '{"round":%d,"load":%s,"result":%s}\n' "$1" "$l" "$out" >> "$results"
}

echo "uptime at start: $(uptime)" >&2
r=1
while [ "$r" -le "$rounds" ]; do
    k=0
    for arch in $archs; do
        if [ $(((r + k) % 2)) = 1 ]; then
            ours "$r" "$arch"; torch "$r" "$arch"
        else
            torch "$r" "$arch"; ours "$r" "$arch"
        fi
        k=$((k + 1))
    done
    echo "round $r/$rounds done (load $(load))" >&2
    r=$((r + 1))
done

if [ "$vulkan" != 0 ]; then
    for arch in $archs; do
        echo "== $arch: Vulkan executor, $vk_iters timed batch(es)" >&2
        l=$(load)
        if line=$("$bench" "$data/model-$arch-s1.safetensors" --device vulkan --batch "$batch" --size "$size,$size" \
                --iters "$vk_iters" --json 2>&1); then
            printf '{"round":0,"load":%s,"result":%s}\n' "$l" "$line" >> "$results"
        else
            echo "skipped: $line" >&2
        fi
    done
fi
echo "uptime at end: $(uptime)" >&2

"$py" - "$results" "$batch" "$size" "$threads" <<'EOF'
import json, statistics, sys

path, batch, size, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(line) for line in open(path)]
med = statistics.median
rounds = sorted({r["round"] for r in rows if r["round"] > 0})
archs = list(dict.fromkeys(r["result"]["model"] for r in rows))

def get(tool, arch, rnd):
    for r in rows:
        x = r["result"]
        if r["round"] == rnd and x["tool"] == tool and x["model"] == arch and "vulkan" not in x["device"].lower():
            return x
    return None

print(f"\nmodel inference: batch {batch}, 3x{size}x{size} float32, {threads} CPU threads; {len(rounds)} interleaved rounds, "
      f"each run the median of {len(rows[0]['result']['times_s'])} timed batches after "
      f"{rows[0]['result']['warmup']} untimed")
print(f"  {'images/s per round':<22}" + "".join(f"{'r' + str(i):>8}" for i in rounds) + f"{'median':>9}")
for arch in archs:
    for tool, label in (("ours", "ours C"), ("torch", "torch")):
        v = [get(tool, arch, i)["images_per_s"] for i in rounds]
        print(f"  {arch + ' ' + label:<22}" + "".join(f"{x:>8.2f}" for x in v) + f"{med(v):>9.2f}")
print(f"\n  {'ours / torch (per round)':<22}" + "".join(f"{'r' + str(i):>8}" for i in rounds)
      + f"{'median':>9}{'min':>8}{'max':>8}")
for arch in archs:
    v = [get("torch", arch, i)["median_s"] / get("ours", arch, i)["median_s"] for i in rounds]
    print(f"  {arch:<22}" + "".join(f"{x:>8.2f}" for x in v) + f"{med(v):>9.2f}{min(v):>8.2f}{max(v):>8.2f}")
blas = sorted({r["result"].get("blas", "not recorded") for r in rows if r["result"]["tool"] == "torch"})
print(f"\n  torch's BLAS (nn.Linear, matmul): {'; '.join(blas)}")
loads = [r["load"] for r in rows]
print(f"\n  load average (1 min) at the start of the runs: {min(loads):.2f}-{max(loads):.2f}")
vk = [r["result"] for r in rows if r["round"] == 0]
for x in vk:
    print(f"  Vulkan executor ({x['device']}), {x['model']}: {x['images_per_s']:.3f} images/s "
          f"(median of {len(x['times_s'])} batches; not interleaved, no ratio: on lavapipe this is a CPU driver)")
print(f"\nraw results: {path}")
EOF
