#!/bin/sh
# Decode benchmark driver: cirrdata vs libdeflate vs nibabel on a 512x512x72 int16 phantom.
#
#   benchmarks/run_decode.sh [BUILDDIR]        (default BUILDDIR: build)
#
# Environment: ROUNDS (default 3) alternating rounds of bench_decode and bench_nibabel per file;
# REPEAT (default 15) timed repetitions inside each round; PYTHON (default /usr/bin/python3, the
# Debian python that has numpy and nibabel); SHAPE (default 512,512,72); DIAG=1 adds bench_decode's
# diagnostic candidates.
#
# Configures BUILDDIR with --buildtype=release if it does not exist, builds it, writes the phantom
# (.nii.gz, gzip level 6, and the same data as .nii) under benchmarks/.data (git-ignored), warms the
# page cache, alternates the C and Python benchmarks, and prints one summary table with the ratios.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
. "$here/bench_lib.sh"
build=${1:-build}
rounds=${ROUNDS:-3}
repeat=${REPEAT:-15}
py=${PYTHON:-/usr/bin/python3}
shape=${SHAPE:-512,512,72}
diag=
[ "${DIAG:-0}" = 1 ] && diag=--diag

bench_build "$build"
bench="$build/benchmarks/bench_decode"
bench_require run_decode.sh "$bench"

data="$here/.data"
mkdir -p "$data"
tag=$(echo "$shape" | tr , x)
gz="$data/phantom_$tag.nii.gz"
nii="$data/phantom_$tag.nii"
if [ ! -s "$gz" ] || [ "$here/make_phantom.py" -nt "$gz" ]; then
    "$py" "$here/make_phantom.py" "$gz" --shape "$shape"
    rm -f "$nii"
fi
if [ ! -s "$nii" ]; then
    gzip -dc "$gz" > "$nii.tmp" && mv "$nii.tmp" "$nii"
fi
ls -l "$gz" "$nii"

# Warm the page cache (and the binaries).
cat "$gz" "$nii" "$bench" > /dev/null
"$bench" "$gz" --repeat 1 > /dev/null
"$bench" "$nii" --repeat 1 > /dev/null

results="$data/results.jsonl"
: > "$results"
r=1
while [ "$r" -le "$rounds" ]; do
    for f in "$gz" "$nii"; do
        printf '{"round":%d,"tool":"bench_decode","result":%s}\n' "$r" \
            "$("$bench" "$f" --repeat "$repeat" --json $diag)" >> "$results"
        printf '{"round":%d,"tool":"nibabel","result":%s}\n' "$r" \
            "$("$py" "$here/bench_nibabel.py" "$f" --repeat "$repeat")" >> "$results"
    done
    echo "round $r/$rounds done" >&2
    r=$((r + 1))
done

"$py" - "$results" "$gz" "$nii" <<'EOF'
import json, statistics, sys

path, gz, nii = sys.argv[1:4]
rows = [json.loads(line) for line in open(path)]
med = statistics.median

def runs(tool, f):
    return [r["result"] for r in rows if r["tool"] == tool and r["result"]["file"] == f]

def candidates(result):
    return [(k, v["name"]) for k, v in result.items() if isinstance(v, dict) and "name" in v]

def table(f, label, targets):
    c = runs("bench_decode", f)
    n = runs("nibabel", f)
    mb = c[0]["voxel_bytes"] / 1e6
    print(f"\n{label}: {f.rsplit('/', 1)[-1]}, {c[0]['file_bytes']} bytes on disk, "
          f"{mb:.2f} MB voxels; {len(c)} rounds x {c[0]['repeat']} reps")
    print(f"  {'candidate':<22}{'median ms':>11}{'best ms':>10}{'MB/s':>9}"
          "   (ms: median over rounds of the per-round medians; best: minimum; MB/s from the median)")
    for k, name in candidates(c[0]) + [("nibabel", "nibabel")]:
        src = [x[k] for x in c] if k != "nibabel" else n
        m = med([x["median_s"] for x in src])
        b = min([x["min_s"] for x in src])
        print(f"  {name:<22}{m * 1e3:>11.2f}{b * 1e3:>10.2f}{mb / m:>9.0f}")
    print(f"  {'ratio (from per-round medians)':<36}{'per round':<24}{'median':>8}  target")
    for what, num, den, target, kind in targets:
        per = []
        for i in range(len(c)):
            tn = n[i]["median_s"] if num == "nibabel" else c[i][num]["median_s"]
            td = c[i][den]["median_s"]
            per.append(tn / td)
        m = med(per)
        verdict = "" if target is None else ("PASS" if m >= target else "FAIL")
        tgt = "" if target is None else f">= {target:g}{kind}"
        print(f"  {what:<36}{' '.join(f'{p:.3f}' for p in per):<24}{m:>8.3f}  {tgt} {verdict}".rstrip())

table(gz, ".nii.gz",
      [("cirrdata / libdeflate raw (thrpt)", "libdeflate_raw", "cirrdata", 0.85, ""),
       ("cirrdata / libdeflate+file (thrpt)", "libdeflate_file", "cirrdata", None, ""),
       ("cirrdata speed-up vs nibabel", "nibabel", "cirrdata", 3.0, "x")])
table(nii, ".nii (uncompressed)",
      [("cirrdata / pread raw (thrpt)", "pread_raw", "cirrdata", None, ""),
       ("cirrdata / malloc+pread (thrpt)", "malloc_pread", "cirrdata", None, ""),
       ("cirrdata speed-up vs nibabel", "nibabel", "cirrdata", None, "x")])
print(f"\nraw results: {path}")
EOF
