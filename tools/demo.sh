#!/usr/bin/env bash
# The main job on built-in synthetic data: installs what is missing, builds, generates a synthetic
# CirrMRI600+ dataset, reads it exactly, converts it with three recipes, verifies and inspects it,
# reads it back from Python, streams augmented batches, draws pictures, then trains a small staging
# network in PyTorch fed only by cirrdata.Loader, exports it, stages the held-out test scans with
# `cirrdata stage` through Vulkan and prints the confusion matrix and the accuracy.
# Everything lands in demo-out/ (or $CIRRDATA_DEMO_OUT). Environment: CIRRDATA_DEMO_CASES (patients,
# default 120), CIRRDATA_DEMO_STEPS (optimizer steps, default 800: the result does not depend on the
# machine's speed), CIRRDATA_DEMO_TRAIN_S (wall-clock safety cap on training in seconds, default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${CIRRDATA_DEMO_OUT:-$root/demo-out}
cases=${CIRRDATA_DEMO_CASES:-120}
steps=${CIRRDATA_DEMO_STEPS:-800}
train_s=${CIRRDATA_DEMO_TRAIN_S:-600}
t_start=$(date +%s)
tools/deps.sh demo

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "build (meson + ninja, release)"
if [ -f build-release/build.ninja ]; then meson setup --reconfigure build-release >/dev/null; else
  meson setup build-release --buildtype=release -Dtests=false >/dev/null; fi
ninja -C build-release >/dev/null
cli=$root/build-release/tools/cirrdata
"$cli" --version

rm -rf "$out"
mkdir -p "$out"
step "synthetic CirrMRI600+ (published layout: T1 double nested, T2, Healthy_subjects, Metadata CSVs)"
"$cli" synth --layout cirrmri600 "$out/CirrMRI600+" --cases "$cases" --seed 42

case1=$(ls "$out/CirrMRI600+/Cirrhosis_T1_3D/Cirrhosis_T1_3D/train_images/" | head -n 1)
img="$out/CirrMRI600+/Cirrhosis_T1_3D/Cirrhosis_T1_3D/train_images/$case1"
step "read one scan exactly (header as nibabel sees it; voxels exported to .npy, reoriented to RAS+)"
"$cli" info "$img"
"$cli" export "$img" --canonical -o "$out/${case1%.nii.gz}_ras.npy" --json | /usr/bin/python3 -c \
  'import json,sys; j=json.load(sys.stdin); print("exported", j["output"], "shape", j["shape"], j["dtype"], "orientation", j["orientation"])'

for recipe in raw nnunet-3d cirrhosisstage-2d; do
  step "convert with recipe $recipe (sharded, chunked, zstd, XXH3 checksums; progress bar on a terminal)"
  "$cli" convert --layout cirrmri600 "$out/CirrMRI600+" --out "$out/dataset-$recipe" --recipe "$recipe"
  "$cli" verify "$out/dataset-$recipe"
done
step "inspect the nnunet-3d dataset (counts, statistics, resolved target spacing)"
"$cli" inspect "$out/dataset-nnunet-3d"

step "read records from Python (python/cirrdata, over the shared library)"
CIRRDATA_LIB=$root/build-release/libcirrdata/libcirrdata.so PYTHONPATH=$root/python /usr/bin/python3 - "$out/dataset-nnunet-3d" <<'PY'
import sys
import cirrdata
with cirrdata.Dataset(sys.argv[1]) as ds:
    print(f"{len(ds)} records; classes {ds.manifest['classes']}")
    for i in (0, len(ds) - 1):
        r = ds[i]
        print(f"  record {i}: patient {r['patient_id']} {r['sequence']} {r['split']} stage label {r['label']}"
              f" image {r['image'].shape} {r['image'].dtype} mask {r['mask'].shape} liver voxels {int(r['mask'].sum())}")
PY

step "stream augmented training batches (io_uring reads, nnU-Net augmentation, 2 worker threads)"
CIRRDATA_LIB=$root/build-release/libcirrdata/libcirrdata.so PYTHONPATH=$root/python /usr/bin/python3 - "$out/dataset-nnunet-3d" <<'PY'
import sys, time
from cirrdata.loader import Loader
with Loader(sys.argv[1], batch_size=2, mode="patch", patch=(96, 96, 32), augment="nnunet", seed=42, threads=2) as loader:
    for batch in loader:  # warm up: one epoch
        pass
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 5.0:
        for batch in loader:
            n += len(batch["index"])
            if time.perf_counter() - t0 >= 5.0:
                break
    dt = time.perf_counter() - t0
    print(f"{n} augmented 96x96x32 patches in {dt:.1f} s: {n / dt:.0f} samples/s (io: {loader.io});"
          f" last batch image {batch['image'].shape}, labels {batch['label'].tolist()}")
    print("resume state after it:", loader.state_dict())
PY

step "pictures: a sample (three planes, mask outline) and an augmented batch"
"$cli" preview "$out/dataset-raw" --sample 0 -o "$out/preview-sample0.png"
"$cli" preview "$out/dataset-nnunet-3d" --batch --augment nnunet --seed 42 --batch-size 4 -o "$out/preview-batch.png"

export CIRRDATA_LIB=$root/build-release/libcirrdata/libcirrdata.so PYTHONPATH=$root/python
mkdir -p "$out/staging"
step "train the staging network (cirrnet-small, PyTorch, fed only by cirrdata.Loader: liver slices, staging augmentation; ${steps} steps)"
/usr/bin/python3 tools/scripts/train_staging.py "$out/dataset-cirrhosisstage-2d" -o "$out/staging/cirrnet-small.pt" \
  --steps "$steps" --time-budget "$train_s" | tee "$out/staging/train.log"

step "export the weights (safetensors + graph, schemas/model-graph.md)"
/usr/bin/python3 tools/scripts/export_weights.py --arch cirrnet-small "$out/staging/cirrnet-small.pt" -o "$out/staging/cirrnet-small.safetensors"

test_img=$(ls "$out/CirrMRI600+/Cirrhosis_T1_3D/Cirrhosis_T1_3D/test_images/" | head -n 1)
step "stage one held-out scan (reorient, 256x256 slices with liver, network per slice, mean of probabilities)"
"$cli" stage "$out/CirrMRI600+/Cirrhosis_T1_3D/Cirrhosis_T1_3D/test_images/$test_img" \
  --mask "$out/CirrMRI600+/Cirrhosis_T1_3D/Cirrhosis_T1_3D/test_masks/$test_img" \
  --model "$out/staging/cirrnet-small.safetensors" --device vulkan --batch 8

step "stage every held-out test scan through Vulkan; confusion matrix and accuracy (labels from the dataset)"
"$cli" stage --dataset "$out/dataset-raw" --split test --model "$out/staging/cirrnet-small.safetensors" \
  --device vulkan --batch 8 --png "$out/staging/confusion-test.png" | tee "$out/staging/test-results.txt"
# The validation split is held out too: training only reports on it (no early stopping, no checkpoint
# picked by it), so it doubles the scans behind the number.
step "stage the validation scans the same way (held out as well: training only reported on them)"
"$cli" stage --dataset "$out/dataset-raw" --split valid --model "$out/staging/cirrnet-small.safetensors" \
  --device vulkan --batch 8 --png "$out/staging/confusion-valid.png" | tee "$out/staging/valid-results.txt" | tail -n 6

step "done in $(( $(date +%s) - t_start )) s"
echo "outputs under $out:"
echo "  synthetic source     $out/CirrMRI600+  ($cases patients)"
echo "  exported volume      $out/${case1%.nii.gz}_ras.npy"
echo "  converted datasets   $out/dataset-raw, $out/dataset-nnunet-3d, $out/dataset-cirrhosisstage-2d (manifest.json + shards/)"
echo "  pictures             $out/preview-sample0.png, $out/preview-batch.png"
echo "  training log         $out/staging/train.log"
echo "  checkpoint, model    $out/staging/cirrnet-small.pt, $out/staging/cirrnet-small.safetensors"
echo "  held-out results     $out/staging/test-results.txt, $out/staging/valid-results.txt"
echo "  confusion matrices   $out/staging/confusion-test.png, $out/staging/confusion-valid.png"
