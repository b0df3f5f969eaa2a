#!/bin/sh
# Scaling benchmark (issue 18): conversion split into parts (convert --part I/N + merge) and conversion
# time against dataset size.
#
#   benchmarks/run_scaling.sh [BUILDDIR]        (default BUILDDIR: build)
#
# Environment: ROUNDS (default 3) rounds of the parts runs; THREADS (2) --threads of every conversion;
# PART_CASES (24) patients of the parts data set; SIZES ("30 60 120 240") patients of the size sweep;
# RECIPE (raw) the recipe of every conversion; PYTHON (/usr/bin/python3, with numpy and matplotlib).
#
# Parts: a synthetic CirrMRI600+ set of PART_CASES patients (seed 7) converted whole, then as 2 and as 4
# parts, per round in that order. The parts of one N run one after the other, each with all THREADS: on a
# 2-core machine N concurrent parts could only share the same 2 cores (each part a fraction of a core),
# which measures the cores, not the split; run alone, a part's time is what one task of an N-task array
# on N machines of this kind takes, so the slowest part is the array's wall time, the sum of the parts
# is the total work (against the one-machine time: the cost of splitting), and slowest / mean is the
# balance of the byte-balanced cuts. Then merge of the N parts, timed, as a fraction of the one-machine
# conversion. Every merged dataset is compared byte for byte with the one-machine conversion (cmp).
# Size sweep: SIZE_ROUNDS (default 1) conversions of each of SIZES synthetic sets (seed 7), timed; a
# least-squares line of CPU time and one of wall time against patients with their R^2, and the plot
# benchmarks/.data/scaling.png (matplotlib). Every run records wall and CPU seconds (user + system): on a
# shared machine the CPU seconds, the work done, move much less with the other users' load than the wall
# time does.
#
# Configures BUILDDIR with --buildtype=release -Dtests=false if it does not exist, builds it; data
# sets under benchmarks/.data (git-ignored; synthesised once and reused), each read once before it is
# timed (page cache warm). Results (one JSON line per
# timed run, with the load average at its start) go to benchmarks/.data/scaling_results.jsonl; prints
# the summary.
# $conv and the list of part folders are split into words on purpose (paths without spaces):
# shellcheck disable=SC2086,SC2046
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
. "$here/bench_lib.sh"
build=${1:-build}
rounds=${ROUNDS:-3}
threads=${THREADS:-2}
part_cases=${PART_CASES:-24}
sizes=${SIZES:-30 60 120 240}
size_rounds=${SIZE_ROUNDS:-1}
recipe=${RECIPE:-raw}
py=${PYTHON:-/usr/bin/python3}
seed=7

bench_build "$build" -Dtests=false
cli="$build/tools/cirrdata"
bench_require run_scaling.sh "$cli"

results="$here/.data/scaling_results.jsonl"
mkdir -p "$here/.data"
: > "$results"
work="$here/.data/scaling-work"
rm -rf "$work"
mkdir -p "$work"
load() { cut -d' ' -f1 /proc/loadavg; }
bytes_of() { du -sb "$1" | cut -f1; }
# timed KIND ROUND N PART CASES CMD...: runs CMD, appends its wall time and CPU time (user + system of
# the process and its threads) as one JSON line; a failed CMD stops the script.
timed() {
    kind=$1 r=$2 n=$3 part=$4 cases=$5
    shift 5
    l=$(load)
    t=$("$py" -c '
import json, resource, subprocess, sys, time
t = time.monotonic()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.monotonic() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": wall, "cpu_seconds": ru.ru_utime + ru.ru_stime}))
sys.exit(rc)' "$@")
    printf '{"kind":"%s","round":%d,"n":%d,"part":%d,"cases":%d,"load":%s,"time":%s}\n' \
        "$kind" "$r" "$n" "$part" "$cases" "$l" "$t" >> "$results"
}

echo "uptime at start: $(uptime)" >&2
bench_source "$cli" "$part_cases" "$seed"
psrc=$src
conv="$cli convert --layout cirrmri600 --recipe $recipe --threads $threads --quiet"
warm() { find "$1" -type f -exec cat {} + > /dev/null; } # the page cache: no run pays for the first read
warm "$psrc"
r=1
while [ "$r" -le "$rounds" ]; do
    rm -rf "$work/r$r"
    mkdir -p "$work/r$r"
    timed convert "$r" 1 0 "$part_cases" $conv "$psrc" --out "$work/r$r/whole"
    for n in 2 4; do
        i=1
        while [ "$i" -le "$n" ]; do
            timed part "$r" "$n" "$i" "$part_cases" $conv "$psrc" --out "$work/r$r/p$n-$i" --part "$i/$n"
            i=$((i + 1))
        done
        timed merge "$r" "$n" 0 "$part_cases" "$cli" merge "$work/r$r/m$n" $(i=1; while [ "$i" -le "$n" ]; do
            echo "$work/r$r/p$n-$i"; i=$((i + 1)); done)
        # The merged dataset is the one-machine conversion, byte for byte.
        (cd "$work/r$r/whole" && find . -type f | sort) > "$work/files-whole"
        (cd "$work/r$r/m$n" && find . -type f | sort) > "$work/files-m$n"
        cmp -s "$work/files-whole" "$work/files-m$n" || { echo "N=$n: merged files differ from one machine" >&2; exit 1; }
        while read -r f; do
            cmp -s "$work/r$r/whole/$f" "$work/r$r/m$n/$f" || { echo "N=$n: $f differs" >&2; exit 1; }
        done < "$work/files-whole"
        printf '{"kind":"parts","round":%d,"n":%d,"bytes":[%s]}\n' "$r" "$n" "$(i=1; sep=; while [ "$i" -le "$n" ]; do
            printf '%s%s' "$sep" "$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['part']['bytes'])" \
                "$work/r$r/p$n-$i/manifest.json")"; sep=,; i=$((i + 1)); done)" >> "$results"
    done
    rm -rf "$work/r$r"
    echo "parts round $r/$rounds done (load $(load))" >&2
    r=$((r + 1))
done

for cases in $sizes; do
    bench_source "$cli" "$cases" "$seed"
done
r=1
while [ "$r" -le "$size_rounds" ]; do
    for cases in $sizes; do
        src="$here/.data/cirrmri600-$cases-s$seed"
        rm -rf "$work/size-$cases"
        warm "$src"
        timed size "$r" 1 0 "$cases" $conv "$src" --out "$work/size-$cases"
        [ "$r" -gt 1 ] || printf '{"kind":"size_bytes","cases":%d,"input_bytes":%s,"output_bytes":%s}\n' "$cases" "$(bytes_of "$src")" \
            "$(bytes_of "$work/size-$cases")" >> "$results"
        rm -rf "$work/size-$cases"
        echo "size $cases round $r done (load $(load))" >&2
    done
    r=$((r + 1))
done
echo "uptime at end: $(uptime)" >&2
rm -rf "$work"
"$py" "$here/scaling_summary.py" "$results" --png "$here/.data/scaling.png" --threads "$threads" --recipe "$recipe"
