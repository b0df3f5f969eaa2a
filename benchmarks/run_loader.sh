#!/bin/sh
# Loader benchmark driver: cirrdata's Loader vs a PyTorch DataLoader peer (numpy/scipy nnU-Net
# augmentation on volumes cached in memory), the zstd-decode bound, and the RSS check.
#
#   benchmarks/run_loader.sh [BUILDDIR]        (default BUILDDIR: build)
#
# Environment: ROUNDS (default 5) interleaved rounds; MIN_SECONDS (5): every timed measurement lasts
# at least this long (ours and the peer: batches until MIN_SECONDS have passed, and at least BATCHES
# (20); the bound: whole passes over its sample list until MIN_SECONDS have passed, per candidate);
# WARMUP (20) untimed batches first; THREADS (2) loader threads = DataLoader workers = bound threads; RSS_AT (1000,10000) batch counts at
# which the RSS run reads /proc/self/status; RSS_AUGMENT (none); PYTHON (default /usr/bin/python3,
# the Debian python with numpy, scipy, nibabel and torch).
#
# Patch mode, 96x96x32 float32 patches, batch 2, split 'train', seeds fixed. Configures BUILDDIR with
# --buildtype=release -Dtests=false if it does not exist, builds it, synthesises a CirrMRI600+-layout
# source (24 cases, seed 7) and converts it with the nnunet-3d recipe under benchmarks/.data
# (git-ignored; reused when present), warms the page cache, then per round runs three adjacent pairs:
# ours (augment nnunet) and the peer (nnunet), ours (augment none) and the peer (none), in both pairs
# alternating by round which goes first; ours (augment none with the decoded-chunk cache off, dumping
# the timed samples' corners) and the bound on exactly those samples; then ours (augment nnunet
# without preload). Ratios are taken per round between the runs of a pair (adjacent in time, so both
# see about the same load) and summarised as the median (min-max) over rounds. Then the RSS run
# (library-default cache). Ours runs with the library's default decoded-chunk cache (min(2 GiB, RAM/8): the whole
# 24-case dataset fits) unless marked "cache off", and, for the nnunet and none rows, with --preload:
# the cache is filled before the first batch (untimed), as the peer loads its volumes into memory
# before timing; one "no preload" nnunet row shows the cache filling during the run instead. Every JSON result goes to
# benchmarks/.data/loader_results.jsonl; prints the summary table.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
. "$here/bench_lib.sh"
build=${1:-build}
rounds=${ROUNDS:-5}
min_s=${MIN_SECONDS:-5}
batches=${BATCHES:-20}
warmup=${WARMUP:-20}
threads=${THREADS:-2}
rss_at=${RSS_AT:-1000,10000}
rss_aug=${RSS_AUGMENT:-none}
py=${PYTHON:-/usr/bin/python3}
cases=24
seed=7

bench_build "$build" -Dtests=false
cli="$build/tools/cirrdata"
bound="$build/benchmarks/loader_bound"
bench_require run_loader.sh "$cli" "$bound"
CIRRDATA_LIB=$(cd "$build" && pwd)/libcirrdata/libcirrdata.so
export CIRRDATA_LIB

bench_loader_dataset "$cli" "$cases" "$seed"
echo "dataset: $ds ($(du -sh "$ds" | cut -f1))"
cat "$ds"/shards/*.cds "$cli" "$bound" "$CIRRDATA_LIB" > /dev/null

results="$data/loader_results.jsonl"
: > "$results"
common="--min-seconds $min_s --batches $batches --warmup $warmup --batch-size 2 --patch 96,96,32 --seed 0 --split train"
load() { cut -d' ' -f1 /proc/loadavg; }
# One run each, its JSON line with the round and the load average at its start; a failed run stops
# the script (set -e sees the assignment's status).
ours() { # round augment [extra args]
    r=$1 aug=$2 l=$(load)
    shift 2
    out=$("$py" "$here/loader_bench.py" "$ds" $common --threads "$threads" --augment "$aug" "$@")
    printf '{"round":%d,"load":%s,"result":%s}\n' "$r" "$l" "$out" >> "$results"
}
peer() { # round augment
    l=$(load)
    out=$("$py" "$here/loader_peer.py" "$ds" $common --workers "$threads" --augment "$2")
    printf '{"round":%d,"load":%s,"result":%s}\n' "$1" "$l" "$out" >> "$results"
}
echo "uptime at start: $(uptime)" >&2
r=1
while [ "$r" -le "$rounds" ]; do
    corners="$data/loader_corners_r$r.txt"
    for aug in nnunet none; do
        if [ $((r % 2)) = 1 ]; then
            ours "$r" "$aug" --preload; peer "$r" "$aug"
        else
            peer "$r" "$aug"; ours "$r" "$aug" --preload
        fi
    done
    ours "$r" none --cache-bytes 0 --dump-corners "$corners"
    l=$(load)
    out=$("$bound" "$ds" "$corners" --patch 96,96,32 --threads "$threads" --repeat 1 --min-seconds "$min_s" --json)
    printf '{"round":%d,"load":%s,"result":%s}\n' "$r" "$l" "$out" >> "$results"
    ours "$r" nnunet
    echo "round $r/$rounds done (load $(load))" >&2
    r=$((r + 1))
done
echo "RSS run: $rss_at batches, augment $rss_aug ..." >&2
l=$(load)
out=$("$py" "$here/loader_bench.py" "$ds" --rss --rss-at "$rss_at" --threads "$threads" --augment "$rss_aug" \
    --batch-size 2 --patch 96,96,32 --seed 0 --split train)
printf '{"round":0,"load":%s,"result":%s}\n' "$l" "$out" >> "$results"
echo "uptime at end: $(uptime)" >&2

"$py" - "$results" "$threads" <<'EOF'
import json, statistics, sys

path, threads = sys.argv[1], int(sys.argv[2])
rows = [json.loads(line) for line in open(path)]
med = statistics.median
rounds = sorted({r["round"] for r in rows if r["round"] > 0})

def get(tool, aug, rnd, cache="default", preload=None):
    """preload None: either; True/False: ours with/without --preload."""
    for r in rows:
        x = r["result"]
        if (r["round"] == rnd and x["tool"] == tool and x.get("augment", aug) == aug
                and x.get("cache", "default") == cache and (preload is None or x.get("preload", False) == preload)):
            return x
    return None

def rows_bound_min(rows):
    return max(r["result"].get("min_seconds", 0) for r in rows if r["result"]["tool"] == "bound")

def verdict(ok):
    return "PASS" if ok else "FAIL"

timed = [r["result"]["seconds"] for r in rows if r["round"] > 0 and "seconds" in r["result"]]
print(f"\nloader benchmark: patch 96x96x32 float32, batch 2, {threads} loader threads / DataLoader workers / "
      f"bound threads; {len(rounds)} interleaved rounds; timed windows {min(timed):.1f}-{max(timed):.1f} s "
      f"(bound: >= {rows_bound_min(rows)} s per candidate)")
print(f"  {'samples/s per round':<34}" + "".join(f"{'r' + str(i):>9}" for i in rounds) + f"{'median':>9}")
lines = [("ours, augment nnunet (preload)", "ours", "nnunet", "default", True),
         ("ours, augment nnunet, no preload", "ours", "nnunet", "default", False),
         ("peer, augment nnunet", "peer", "nnunet", "default", None),
         ("ours, augment none (preload)", "ours", "none", "default", True),
         ("ours, augment none, cache off", "ours", "none", 0, False),
         ("peer, augment none (crop only)", "peer", "none", "default", None)]
for label, tool, aug, cache, pre in lines:
    v = [get(tool, aug, i, cache, pre)["samples_per_s"] for i in rounds]
    print(f"  {label:<34}" + "".join(f"{x:>9.1f}" for x in v) + f"{med(v):>9.1f}")
for label, key in [("bound: zstd decode (in memory)", "decode"), ("bound: xxh3 + decode", "xxh3_decode"),
                   ("bound: pread + decode", "pread_decode")]:
    v = [get("bound", None, i)[key]["samples_per_s"] for i in rounds]
    print(f"  {label:<34}" + "".join(f"{x:>9.1f}" for x in v) + f"{med(v):>9.1f}")
b = get("bound", None, rounds[0])
print(f"  (bound input: the timed samples of 'ours, augment none, cache off' of the same round; {b['chunks'] / b['samples']:.2f} "
      f"chunks, {b['stored_bytes'] / b['samples'] / 1e6:.2f} MB stored, {b['raw_bytes'] / b['samples'] / 1e6:.2f} MB "
      f"decoded per sample)")

print(f"\n  {'ratio (per round)':<42}" + "".join(f"{'r' + str(i):>8}" for i in rounds)
      + f"{'median':>8}{'min':>8}{'max':>8}  target")
def ratio(label, num, den, target, unit):
    v = [num(i) / den(i) for i in rounds]
    m = med(v)
    tgt = f">= {target:g}{unit} {verdict(m >= target)}" if target is not None else ""
    print(f"  {label:<42}" + "".join(f"{x:>8.3f}" for x in v) + f"{m:>8.3f}{min(v):>8.3f}{max(v):>8.3f}  {tgt}".rstrip())
    return m
ratio("ours / peer, nnunet", lambda i: get("ours", "nnunet", i, preload=True)["samples_per_s"],
      lambda i: get("peer", "nnunet", i)["samples_per_s"], 10, "x")
ratio("ours / peer, nnunet, ours w/o preload (*)", lambda i: get("ours", "nnunet", i, preload=False)["samples_per_s"],
      lambda i: get("peer", "nnunet", i)["samples_per_s"], None, "")
ratio("ours / peer, none", lambda i: get("ours", "none", i, preload=True)["samples_per_s"],
      lambda i: get("peer", "none", i)["samples_per_s"], None, "")
ratio("ours none cache off / decode bound", lambda i: get("ours", "none", i, 0)["samples_per_s"],
      lambda i: get("bound", None, i)["decode"]["samples_per_s"], 0.8, "")
ratio("ours none cache off / pread+decode", lambda i: get("ours", "none", i, 0)["samples_per_s"],
      lambda i: get("bound", None, i)["pread_decode"]["samples_per_s"], None, "")
ratio("ours none (cache) / decode bound (*)", lambda i: get("ours", "none", i, preload=True)["samples_per_s"],
      lambda i: get("bound", None, i)["decode"]["samples_per_s"], None, "")
ratio("ours nnunet / zstd-decode bound (*)", lambda i: get("ours", "nnunet", i, preload=True)["samples_per_s"],
      lambda i: get("bound", None, i)["decode"]["samples_per_s"], None, "")

print("  (*) runs not adjacent in time (other runs between them): less robust to load changes")
loads = [r["load"] for r in rows]
print(f"  load average (1 min) at the start of the runs: {min(loads):.2f}-{max(loads):.2f}")

rss = [r["result"] for r in rows if r["round"] == 0][0]
print(f"\n  RSS (augment {rss['augment']}, cache {rss['cache']}, {rss['samples_per_s']:.1f} samples/s over the run)")
for m in rss["rss"]:
    print(f"    after batch {m['batch']:>6}: VmHWM {m['VmHWM_kB'] / 1024:8.1f} MiB   VmRSS {m['VmRSS_kB'] / 1024:8.1f} MiB"
          f"   cache {m['cache_bytes'] / 2**20:7.1f} MiB   ({m['seconds']:.1f} s)")
a, z = rss["rss"][0], rss["rss"][-1]
g = z["VmHWM_kB"] / a["VmHWM_kB"] - 1
print(f"  peak RSS growth batch {a['batch']} -> {z['batch']}: {100 * g:+.2f} %   (target within 5 %) "
      f"{verdict(abs(g) <= 0.05)}")
print(f"\nraw results: {path}")
EOF
