#!/bin/sh
# Augmented-shards benchmark: what `convert --augment nnunet --copies 4` costs against its two parts,
# the plain conversion and the augmentation work alone, on a synthetic CirrMRI600+ set.
#
#   benchmarks/run_augshards.sh [BUILDDIR]        (default BUILDDIR: build)
#
# Goal (issue 9): T(convert --copies 4) <= 1.5 x (T(plain convert) + T(augmentation alone)).
# "Augmentation alone" is measured two ways, both reported:
#   loader   a loader pass producing exactly the stored copies: the plain dataset, volume mode,
#            batch 1, all splits, same seed and pipeline, epochs 0..K-1 (this also reads and decodes
#            the plain records from the shards);
#   inside   the convert's own per-thread CPU timer around drawing, warping and intensity ops.
# Every step is timed in wall seconds and in CPU seconds (user + sys of all threads): on a shared
# machine the CPU ratio is the stable one.
#
# Environment: ROUNDS (default 3), CASES (8) and SEED (7) of the synthetic set, K (4), RECIPE
# (nnunet-3d), THREADS (default: nproc) for the converter and the loader alike, PYTHON
# (/usr/bin/python3), DEVICE (cpu). Writes every run as a JSON line to
# benchmarks/.data/augshards_results.jsonl and prints the summary.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
. "$here/bench_lib.sh"
build=${1:-build}
rounds=${ROUNDS:-3}
cases=${CASES:-8}
seed=${SEED:-7}
K=${K:-4}
recipe=${RECIPE:-nnunet-3d}
threads=${THREADS:-$(nproc)}
py=${PYTHON:-/usr/bin/python3}
device=${DEVICE:-cpu}

bench_build "$build"
cli="$build/tools/cirrdata"
lib="$build/libcirrdata/libcirrdata.so"

bench_source "$cli" "$cases" "$seed"
files=$(find "$src/Cirrhosis_T1_3D" "$src/Cirrhosis_T2_3D" -name '*.nii*' -type f | sort)
cat $files "$cli" "$lib" > /dev/null

tmp=$(mktemp -d /tmp/cd-augshards-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM
results="$data/augshards_results.jsonl"
: > "$results"

# One round in Python: wall and CPU seconds (user + sys, all threads) of each step; CPU seconds are
# what the work costs whatever else the machine runs, wall seconds what a user waits.
for r in $(seq 1 "$rounds"); do
    CIRRDATA_LIB="$lib" PYTHONPATH="$root/python" "$py" - "$r" "$cli" "$src" "$tmp" "$recipe" "$threads" "$K" "$seed" "$device" \
        >> "$results" <<'EOF'
import json, os, resource, shutil, subprocess, sys, time
r, cli, src, tmp, recipe, threads, K, seed, device = sys.argv[1:]
K, threads = int(K), int(threads)

def child(cmd):
    c0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - t0, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime), out

def shard_bytes(d):
    return sum(os.path.getsize(os.path.join(d, "shards", f)) for f in os.listdir(os.path.join(d, "shards")))

plain, aug = os.path.join(tmp, "plain-" + r), os.path.join(tmp, "aug-" + r)
base = [cli, "convert", "--layout", "cirrmri600", src, "--recipe", recipe, "--threads", str(threads)]
w_plain, c_plain, _ = child(base + ["--out", plain, "--quiet"])
# The augmentation alone: the loader producing exactly the copies (plain dataset, batch 1, epochs 0..K-1).
import cirrdata
s0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
n = 0
with cirrdata.Loader(plain, batch_size=1, mode="volume", patch=None, augment="nnunet", seed=int(seed), split="*",
                     threads=threads) as l:
    for k in range(K):
        for b in l:
            n += 1
s1 = resource.getrusage(resource.RUSAGE_SELF)
w_loader, c_loader = time.perf_counter() - t0, (s1.ru_utime - s0.ru_utime) + (s1.ru_stime - s0.ru_stime)
w_aug, c_aug, out = child(base + ["--out", aug, "--augment", "nnunet", "--copies", str(K), "--seed", seed, "--device", device,
                                  "--json"])
a = json.loads(out)
row = {"round": int(r), "plain_wall": round(w_plain, 3), "plain_cpu": round(c_plain, 3), "loader_wall": round(w_loader, 3),
       "loader_cpu": round(c_loader, 3), "loader_samples": n, "augmented_wall": round(w_aug, 3), "augmented_cpu": round(c_aug, 3),
       "inside_augment_cpu": round(a["augment_seconds"], 3), "records": a["records"], "device": a["device"], "copies": K,
       "threads": threads, "plain_bytes": shard_bytes(plain), "augmented_bytes": shard_bytes(aug),
       "ratio_wall": round(w_aug / (w_plain + w_loader), 3), "ratio_cpu": round(c_aug / (c_plain + c_loader), 3),
       "ratio_cpu_inside": round(c_aug / (c_plain + a["augment_seconds"]), 3)}
shutil.rmtree(plain)
shutil.rmtree(aug)
print(json.dumps(row))
EOF
    tail -n 1 "$results"
done

"$py" - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda k: statistics.median(r[k] for r in rows)
r0 = rows[0]
print("\nmedian of %d rounds (%d records written with K = %d, %d threads, warp on %s):" % (
    len(rows), r0["records"], r0["copies"], r0["threads"], r0["device"]))
print("                              wall s    CPU s")
print("  plain convert              %7.2f  %7.2f   (%.0f MB of shards)" % (med("plain_wall"), med("plain_cpu"), r0["plain_bytes"] / 1e6))
print("  augmentation (loader pass) %7.2f  %7.2f   (%d samples)" % (med("loader_wall"), med("loader_cpu"), r0["loader_samples"]))
print("  augmentation (inside)            -  %7.2f" % med("inside_augment_cpu"))
print("  convert --copies %d         %7.2f  %7.2f   (%.0f MB of shards)" % (r0["copies"], med("augmented_wall"), med("augmented_cpu"),
                                                               r0["augmented_bytes"] / 1e6))
print("  ratio to plain + loader pass:  wall %.2f, CPU %.2f  (goal <= 1.5)" % (med("ratio_wall"), med("ratio_cpu")))
print("  ratio to plain + inside timer: CPU %.2f" % med("ratio_cpu_inside"))
EOF
