#!/bin/sh
# Depthwise convolution benchmark: the depthwise kernels of the C and Vulkan executors against the
# grouped GEMM path they replaced (CIRRDATA_NN_NO_DWCONV=1 forces it: the library's switch for tests
# and comparisons) and against PyTorch on the CPU, on MobileNet- and ConvNeXt-like layers.
#
#   benchmarks/run_dwconv.sh [BUILDDIR]        (default BUILDDIR: build)
#
# Environment: LAYERS (default "96,112,112,3,1,1 96,112,112,3,2,1 144,56,56,3,1,1 240,28,28,3,1,1
# 128,56,56,7,1,0": C,H,W,K,S,R = channels, height, width, K x K kernel, stride S, padding K/2, ReLU
# fused when R is 1; every layer has a bias), BATCH (8), THREADS (2: the C executor's threads and
# torch.set_num_threads), ROUNDS (5), ITERS (5 timed calls per run), WARMUP (2 untimed before them),
# VULKAN (auto: after the rounds, one depthwise and one GEMM run per layer on the default Vulkan device,
# lavapipe on a CPU-only machine; 0: skip), VK_ITERS (3), PYTHON (/usr/bin/python3, with torch).
#
# ROUNDS rounds; in each, for every layer, bench_dwconv with the depthwise kernel, bench_dwconv on the
# GEMM path and benchmarks/dwconv_peer.py (torch.nn.functional.conv2d with groups) run back to back,
# one process each, the order rotated by round and layer. Each run reports the median of its ITERS
# timed calls; the ratios (GEMM / depthwise, torch / depthwise) are taken per round and summarised as
# the median (min-max) over the rounds, as run_model.sh does. Results go to
# benchmarks/.data/dwconv_results.jsonl with the load average at each run's start.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
. "$here/bench_lib.sh"
build=${1:-build}
layers=${LAYERS:-96,112,112,3,1,1 96,112,112,3,2,1 144,56,56,3,1,1 240,28,28,3,1,1 128,56,56,7,1,0}
batch=${BATCH:-8}
threads=${THREADS:-2}
rounds=${ROUNDS:-5}
iters=${ITERS:-5}
warmup=${WARMUP:-2}
vk_iters=${VK_ITERS:-3}
vulkan=${VULKAN:-auto}
py=${PYTHON:-/usr/bin/python3}

bench_build "$build" -Dtests=false
bench="$build/benchmarks/bench_dwconv"
bench_require run_dwconv.sh "$bench"
data="$here/.data"
mkdir -p "$data"
results="$data/dwconv_results.jsonl"
: > "$results"

load() { cut -d' ' -f1 /proc/loadavg; }
record() { # round json
    printf '{"round":%d,"load":%s,"result":%s}\n' "$1" "$(load)" "$2" >> "$results"
}
run() { # round layer which
    case $3 in
    dw) out=$(env -u CIRRDATA_NN_NO_DWCONV "$bench" --layer "$2" --device cpu --threads "$threads" --batch "$batch" \
        --iters "$iters" --warmup "$warmup" --json) ;;
    gemm) out=$(CIRRDATA_NN_NO_DWCONV=1 "$bench" --layer "$2" --device cpu --threads "$threads" --batch "$batch" \
        --iters "$iters" --warmup "$warmup" --json) ;;
    torch) out=$("$py" "$here/dwconv_peer.py" --layer "$2" --batch "$batch" --threads "$threads" --iters "$iters" \
        --warmup "$warmup") ;;
    esac
    record "$1" "$out"
}

echo "uptime at start: $(uptime)" >&2
r=1
while [ "$r" -le "$rounds" ]; do
    k=0
    for layer in $layers; do
        case $(((r + k) % 3)) in
        0) run "$r" "$layer" dw; run "$r" "$layer" gemm; run "$r" "$layer" torch ;;
        1) run "$r" "$layer" gemm; run "$r" "$layer" torch; run "$r" "$layer" dw ;;
        *) run "$r" "$layer" torch; run "$r" "$layer" dw; run "$r" "$layer" gemm ;;
        esac
        k=$((k + 1))
    done
    echo "round $r/$rounds done (load $(load))" >&2
    r=$((r + 1))
done

if [ "$vulkan" != 0 ]; then
    for layer in $layers; do
        for which in dw gemm; do
            echo "== $layer: Vulkan executor, $which path, $vk_iters timed call(s)" >&2
            if [ "$which" = gemm ]; then flag=1; else flag=0; fi
            if line=$(CIRRDATA_NN_NO_DWCONV=$flag "$bench" --layer "$layer" --device vulkan --batch "$batch" \
                    --iters "$vk_iters" --warmup 1 --json 2>&1); then
                record 0 "$line"
            else
                echo "skipped: $line" >&2
            fi
        done
    done
fi
echo "uptime at end: $(uptime)" >&2

"$py" - "$results" "$batch" "$threads" <<'PYEOF'
import json, statistics, sys

path, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [json.loads(line) for line in open(path)]
med = statistics.median
rounds = sorted({r["round"] for r in rows if r["round"] > 0})
layers = list(dict.fromkeys(r["result"]["layer"] for r in rows))

def get(p, layer, rnd):
    for r in rows:
        x = r["result"]
        if r["round"] == rnd and x["path"] == p and x["layer"] == layer and "Vulkan" not in x["device"]:
            return x
    raise SystemExit(f"missing result: {p} {layer} round {rnd}")

def name(layer):
    c, h, w, k, s, r = layer.split(",")
    return f"{k}x{k}/{s} {h}x{w}x{c}" + (" relu" if r == "1" else "")

print(f"\ndepthwise conv2d layers: batch {batch}, float32, {threads} CPU threads; {len(rounds)} interleaved rounds, "
      f"each run the median of {len(rows[0]['result']['times_s'])} timed calls after {rows[0]['result']['warmup']} "
      "untimed")
print(f"  {'ms (median over rounds)':<28}{'C dwconv':>10}{'C GEMM':>10}{'torch':>10}"
      f"{'GEMM/dw':>18}{'torch/dw':>18}")
for layer in layers:
    t = {p: [get(p, layer, i)["median_s"] for i in rounds] for p in ("dwconv", "gemm", "torch")}
    g = [a / b for a, b in zip(t["gemm"], t["dwconv"])]
    q = [a / b for a, b in zip(t["torch"], t["dwconv"])]
    fmt = lambda v: f"{med(v):.2f} ({min(v):.2f}-{max(v):.2f})"
    print(f"  {name(layer):<28}" + "".join(f"{1e3 * med(t[p]):>10.2f}" for p in ("dwconv", "gemm", "torch"))
          + f"{fmt(g):>18}{fmt(q):>18}")
loads = [r["load"] for r in rows if r["round"] > 0]
print(f"\n  load average (1 min) at the start of the runs: {min(loads):.2f}-{max(loads):.2f}")
vk = [r["result"] for r in rows if r["round"] == 0]
if vk:
    print(f"\n  Vulkan executor ({vk[0]['device']}), median of {len(vk[0]['times_s'])} calls, wall time per call "
          "(not interleaved)")
    print(f"  {'':<28}{'dwconv ms':>12}{'GEMM ms':>12}{'GEMM/dw':>10}")
    for layer in layers:
        d = [x["median_s"] for x in vk if x["layer"] == layer and x["path"] == "dwconv"]
        g = [x["median_s"] for x in vk if x["layer"] == layer and x["path"] == "gemm"]
        if d and g:
            print(f"  {name(layer):<28}{1e3 * d[0]:>12.1f}{1e3 * g[0]:>12.1f}{g[0] / d[0]:>10.1f}")
print(f"\nraw results: {path}")
PYEOF
