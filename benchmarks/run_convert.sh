#!/bin/sh
# Convert benchmark driver: `cirrdata convert` vs a Python peer (nibabel + scipy + numpy +
# python-zstandard, multiprocessing) and vs the inflate + zstd bound, on a synthetic CirrMRI600+ set.
#
#   benchmarks/run_convert.sh [BUILDDIR]        (default BUILDDIR: build)
#
# Environment: ROUNDS (default 3) alternating rounds; RECIPES (default "raw nnunet-3d"); THREADS
# (default: nproc) for ours, the peer's process pool and the bound alike; CASES (24) and SEED (7) of
# the synthetic set; ORDER3_ROUNDS (default 1): in the first ORDER3_ROUNDS rounds the nnunet-3d peer
# also runs with scipy zoom order 3 (cubic, as our recipe), which is slow; PYTHON (default
# /usr/bin/python3, the Debian python with numpy, scipy, nibabel and zstandard).
#
# Configures BUILDDIR with --buildtype=release if it does not exist, builds it, writes the synthetic
# dataset under benchmarks/.data (git-ignored; reused if present), warms the page cache, then per
# round and recipe runs ours and the peer (which one goes first alternates by round), each into a
# fresh output directory, plus the bounds; every run's JSON (with wall/user/sys seconds from
# /usr/bin/time) goes to benchmarks/.data/convert_results.jsonl; prints the summary table.
#
# Bounds (convert_bound): "voxels" (raw only) inflates the files and zstd-compresses the NIfTI voxel
# bytes in 64^3 chunks as they are in the files; "stored" (raw and nnunet-3d) inflates the files and
# zstd-compresses exactly the chunks the recipe stores (dtype, chunking, C order), decoded beforehand
# from one untimed reference conversion of ours per recipe (convert_bound --dataset). "stored" is the
# issue's "inflate + zstd-compress bound of the same bytes"; for nnunet-3d it is the floor of any
# converter that stores the same tensors, so bound / peer says whether ">= 8x the peer" is reachable.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
. "$here/bench_lib.sh"
build=${1:-build}
rounds=${ROUNDS:-3}
recipes=${RECIPES:-raw nnunet-3d}
threads=${THREADS:-$(nproc)}
cases=${CASES:-24}
seed=${SEED:-7}
order3_rounds=${ORDER3_ROUNDS:-1}
py=${PYTHON:-/usr/bin/python3}

bench_build "$build"
cli="$build/tools/cirrdata"
bound="$build/benchmarks/convert_bound"
bench_require run_convert.sh "$cli" "$bound"

bench_source "$cli" "$cases" "$seed"
# The files our converter reads by default (Healthy_subjects is skipped): the bound's input.
files=$(find "$src/Cirrhosis_T1_3D" "$src/Cirrhosis_T2_3D" -name '*.nii*' -type f | sort)
echo "dataset: $src ($(echo "$files" | grep -c _images/) cirrhosis scans, $(du -sh "$src" | cut -f1) with healthy subjects)"

# Warm the page cache and the binaries.
cat $files "$cli" "$bound" > /dev/null

tmp=$(mktemp -d /tmp/cd-convert-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM
results="$data/convert_results.jsonl"
: > "$results"

# run TOOL ROUND RECIPE VARIANT CMD...: runs CMD under /usr/bin/time, appends one JSON line.
run() {
    tool=$1 round=$2 recipe=$3 variant=$4
    shift 4
    out=$("/usr/bin/time" -f '%e %U %S' -o "$tmp/time" "$@")
    set -- $(tail -n 1 "$tmp/time")
    printf '{"round":%d,"tool":"%s","recipe":"%s","variant":"%s","wall_s":%s,"user_s":%s,"sys_s":%s,"load":"%s","result":%s}\n' \
        "$round" "$tool" "$recipe" "$variant" "$1" "$2" "$3" "$(cut -d' ' -f1 /proc/loadavg)" \
        "$(echo "$out" | tr -d '\n')" >> "$results"
}

ours() { # ROUND RECIPE
    rm -rf "$tmp/ours"
    run ours "$1" "$2" "" "$cli" convert --layout cirrmri600 "$src" --out "$tmp/ours" --recipe "$2" \
        --threads "$threads" --quiet --json
    if [ "$2" = nnunet-3d ]; then
        "$py" -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["resolved"]))' \
            "$tmp/ours/manifest.json" > "$tmp/resolved.json"
    fi
    rm -rf "$tmp/ours"
}

peer() { # ROUND RECIPE [ORDER]
    rm -rf "$tmp/peer"
    order=${3:-1}
    run peer "$1" "$2" "order$order" "$py" "$here/convert_peer.py" "$src" "$tmp/peer" --recipe "$2" \
        --processes "$threads" --order "$order"
    rm -rf "$tmp/peer"
}

# The reference conversions whose stored chunks the "stored" bounds compress (untimed).
for recipe in $recipes; do
    "$cli" convert --layout cirrmri600 "$src" --out "$tmp/ref-$recipe" --recipe "$recipe" --threads "$threads" --quiet > /dev/null
done

r=1
while [ "$r" -le "$rounds" ]; do
    for recipe in $recipes; do
        if [ $((r % 2)) = 1 ]; then
            ours "$r" "$recipe"
            peer "$r" "$recipe"
        else
            peer "$r" "$recipe"
            ours "$r" "$recipe"
        fi
        # One warm-up pass and one timed pass over every image and mask.
        if [ "$recipe" = raw ]; then
            # shellcheck disable=SC2086
            run bound "$r" raw voxels "$bound" --threads "$threads" --repeat 1 --json $files
        fi
        # shellcheck disable=SC2086
        run bound "$r" "$recipe" stored "$bound" --threads "$threads" --repeat 1 --json --dataset "$tmp/ref-$recipe" $files
        if [ "$recipe" = nnunet-3d ] && [ "$r" -le "$order3_rounds" ]; then
            peer "$r" "$recipe" 3
        fi
        echo "round $r/$rounds $recipe done" >&2
    done
    r=$((r + 1))
done
[ -s "$tmp/resolved.json" ] && echo "ours resolved: $(cat "$tmp/resolved.json")"

"$py" - "$results" "$threads" <<'EOF'
import json, statistics, sys

path, threads = sys.argv[1], sys.argv[2]
rows = [json.loads(line) for line in open(path)]
med = statistics.median

def get(tool, recipe, variant=None):
    out = {}
    for r in rows:
        if r["tool"] == tool and r["recipe"] == recipe and (variant is None or r["variant"] == variant):
            out[r["round"]] = r
    return out

def cases_of(r):
    res = r["result"]
    return res.get("records", res.get("cases"))

def cps(r):  # cases per second from the tool's own clock
    res = r["result"]
    return cases_of(r) / (res["seconds"] if "seconds" in res else res["median_s"])

def cpu_per_case(r):
    return (r["user_s"] + r["sys_s"]) / cases_of(r)

def bound_cpu_per_case(r):  # thread CPU of inflate + gather + zstd in the timed pass
    c = r["result"]["cpu_s"]
    return (c["inflate"] + c["gather"] + c["zstd"]) / cases_of(r)

def fmt(xs, p=2):
    return " ".join(f"{x:.{p}f}" for x in xs)

print(f"\nconvert: {threads} threads / processes; cases/s from each tool's own clock "
      "(ours: convert --json 'seconds'; peer: after imports; bound: timed pass); CPU = user+sys of the process (bound: thread CPU of the timed pass)")
print(f"  {'recipe':<11}{'candidate':<20}{'cases':>6}{'cases/s per round':>26}{'median':>8}{'CPU s/case':>12}  loads")
for recipe in ("raw", "nnunet-3d"):
    o = get("ours", recipe)
    if not o:
        continue
    cands = [("ours", o), ("peer (zoom order 1)" if recipe != "raw" else "peer", get("peer", recipe, "order1"))]
    if recipe == "nnunet-3d":
        cands.append(("peer (zoom order 3)", get("peer", recipe, "order3")))
    if recipe == "raw":
        cands.append(("bound (voxels)", get("bound", recipe, "voxels")))
    cands.append(("bound (stored)", get("bound", recipe, "stored")))
    for name, d in cands:
        if not d:
            continue
        rs = sorted(d)
        v = [cps(d[k]) for k in rs]
        cpu = med([cpu_per_case(d[k]) if not name.startswith("bound") else bound_cpu_per_case(d[k]) for k in rs])
        counts = sorted({cases_of(d[k]) for k in rs})
        print(f"  {recipe:<11}{name:<20}{','.join(map(str, counts)):>6}{' ' + fmt(v):>26}{med(v):>8.2f}"
              f"{cpu:>12.3f}  {' '.join(d[k]['load'] for k in rs)}")
print(f"\n  {'ratio':<44}{'per round':<26}{'median':>8}  target")
for recipe in ("raw", "nnunet-3d"):
    o = get("ours", recipe)
    if not o:
        continue
    for variant, label in (("order1", ""), ("order3", " (peer o3)")):
        p = get("peer", recipe, variant)
        ks = [k for k in sorted(o) if k in p]
        if not ks:
            continue
        per = [cps(o[k]) / cps(p[k]) for k in ks]
        cpu = [cpu_per_case(p[k]) / cpu_per_case(o[k]) for k in ks]
        if cases_of(o[ks[0]]) != cases_of(p[ks[0]]):
            print(f"  WARNING: {recipe}: ours converted {cases_of(o[ks[0]])} cases, the peer {cases_of(p[ks[0]])}")
        print(f"  {recipe + ' ours / peer' + label + ', cases/s':<44}{fmt(per):<26}{med(per):>8.2f}  >= 8x "
              f"{'PASS' if med(per) >= 8 else 'FAIL'}")
        print(f"  {recipe + ' peer' + label + ' / ours, CPU s/case':<44}{fmt(cpu):<26}{med(cpu):>8.2f}")
    for variant in ("stored", "voxels"):
        b = get("bound", recipe, variant)
        ks = [k for k in sorted(o) if k in b]
        if not ks:
            continue
        per = [cps(o[k]) / cps(b[k]) for k in ks]
        target = f"  >= 0.80 {'PASS' if med(per) >= 0.8 else 'FAIL'}" if recipe == "raw" else ""
        print(f"  {recipe + ' ours / bound (' + variant + '), cases/s':<44}{fmt(per, 3):<26}{med(per):>8.3f}{target}")
        cpu = [bound_cpu_per_case(b[k]) / cpu_per_case(o[k]) for k in ks]
        target = f"  >= 0.80 {'PASS' if med(cpu) >= 0.8 else 'FAIL'}" if recipe == "raw" else ""
        print(f"  {recipe + ' bound (' + variant + ') / ours, CPU s/case':<44}{fmt(cpu, 3):<26}{med(cpu):>8.3f}{target}")
        if variant == "stored":
            # Could any converter storing these tensors be 8x the peer? (the bound against the peer)
            p = get("peer", recipe, "order1")
            kp = [k for k in ks if k in p]
            if kp:
                per = [cps(b[k]) / cps(p[k]) for k in kp]
                print(f"  {recipe + ' bound (stored) / peer, cases/s':<44}{fmt(per):<26}{med(per):>8.2f}  "
                      f"8x {'reachable' if med(per) >= 8 else 'NOT reachable'}")
                cpu = [cpu_per_case(p[k]) / bound_cpu_per_case(b[k]) for k in kp]
                print(f"  {recipe + ' peer / bound (stored), CPU s/case':<44}{fmt(cpu):<26}{med(cpu):>8.2f}")
print(f"\nraw results: {path}")
EOF
