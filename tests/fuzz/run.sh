#!/usr/bin/env bash
# Runs every libFuzzer target of tests/fuzz (one per tests/fuzz/fuzz_*.c) for SECONDS each (default 300),
# FUZZ_JOBS at a time (default nproc), on a copy of its seed corpus (new corpus entries never go into the
# source tree), with the dictionary tests/fuzz/<target>.dict where there is one. First each target
# replays its regression inputs (tests/fuzz/regressions/<target>/) and its seed corpus once. Prints
# executions and time per target and a last line "fuzz: N passed, M failed"; exits 1 on any crash,
# timeout, leak or out-of-memory, printing the reproducer path.
#
# Usage: tests/fuzz/run.sh [SECONDS] [BUILDDIR]     (BUILDDIR default: build-fuzz, relative to the repo)
# Needs clang and libFuzzer (Debian: clang, libclang-rt-14-dev). Environment: FUZZ_TARGETS="nifti csv"
# to run only some targets; FUZZ_KEEP=1 keeps the work folder (corpus, logs) even when all pass.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${1:-300}
build=${2:-build-fuzz}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
all_targets=$(cd "$here" && for f in fuzz_*.c; do t=${f#fuzz_}; echo "${t%.c}"; done)
targets=(${FUZZ_TARGETS:-$all_targets})
# -max_len per target; others (e.g. safetensors) get 64 KiB.
declare -A max_len=([nifti]=65536 [shard]=65536 [manifest]=65536 [recipe]=8192 [augment]=8192 [csv]=16384)

if ! command -v clang >/dev/null; then
  echo "error: clang not found (apt-get install clang libclang-rt-14-dev)" >&2
  exit 2
fi
if [ ! -f "$build/build.ninja" ]; then
  # The fuzz targets add their own -fsanitize=fuzzer,address,undefined; the rest of the build stays
  # unsanitized. b_lundef only affects shared libraries, and the fuzz targets are executables.
  CC=clang meson setup "$build" "$root" -Dfuzz=true -Db_sanitize=none -Dtests=false -Dbenchmarks=false >/dev/null ||
    { echo "error: meson setup failed" >&2; exit 2; }
fi
ninja -C "$build" $(for t in "${targets[@]}"; do echo "tests/fuzz/fuzz_$t"; done) >/dev/null ||
  { echo "error: building the fuzz targets failed (ninja -C $build)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/cirrdata-fuzz.XXXXXX")
echo "fuzzing ${targets[*]} for ${secs}s each (work folder $work)"
fail=0

# 1. regressions and seeds: every saved crasher and every corpus file must pass, each run once.
for t in "${targets[@]}"; do
  files=()
  for f in "$here/regressions/$t"/* "$here/corpus/$t"/*; do [ -f "$f" ] && files+=("$f"); done
  [ ${#files[@]} -gt 0 ] || continue
  if ! "$build/tests/fuzz/fuzz_$t" -runs=1 -rss_limit_mb=4096 "${files[@]}" >"$work/regress-$t.log" 2>&1; then
    echo "REGRESSION $t: a saved input fails again; see $work/regress-$t.log"
    grep -E "^Running: |SUMMARY" "$work/regress-$t.log" | tail -2
    fail=1
  else
    echo "replay $t: ${#files[@]} regression and corpus input(s) pass"
  fi
done

# 2. fuzzing, FUZZ_JOBS targets at a time (default: the number of CPUs), one process each.
jobs_max=${FUZZ_JOBS:-$(nproc)}
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n; done
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  [ -d "$here/corpus/$t" ] && cp "$here/corpus/$t"/* "$work/corpus/$t/" 2>/dev/null
  dict=(); [ -f "$here/$t.dict" ] && dict=(-dict="$here/$t.dict")
  ("$build/tests/fuzz/fuzz_$t" -max_total_time="$secs" -max_len="${max_len[$t]:-65536}" -timeout=25 -rss_limit_mb=4096 \
    "${dict[@]}" -print_final_stats=1 -artifact_prefix="$work/artifacts/$t/" "$work/corpus/$t" >"$work/fuzz-$t.log" 2>&1
   echo $? >"$work/rc-$t") &
done
wait
printf '%-12s %14s %9s %8s  %s\n' target executions seconds exec/s result
npass=0; nfail=0
for t in "${targets[@]}"; do
  rc=$(cat "$work/rc-$t" 2>/dev/null || echo 99)
  log="$work/fuzz-$t.log"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1)
  s=$(echo "$done_line" | sed -n 's/.* in \([0-9]*\) second.*/\1/p')
  [ -n "$runs" ] || runs=$(echo "$done_line" | sed -n 's/^Done \([0-9]*\) runs.*/\1/p')
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  if [ "$rc" -eq 0 ]; then
    printf '%-12s %14s %9s %8s  %s\n' "$t" "${runs:-?}" "${s:-$secs}" "${rate:-?}" ok
    npass=$((npass + 1))
  else
    repro=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    printf '%-12s %14s %9s %8s  %s\n' "$t" "${runs:-?}" "${s:-?}" "${rate:-?}" "FAILED (exit $rc)"
    nfail=$((nfail + 1))
    grep -E "SUMMARY|ERROR: libFuzzer|ERROR: AddressSanitizer|runtime error" "$log" | head -3 | sed 's/^/    /'
    echo "    reproducer: ${repro:-none written; see $log}"
    echo "    replay:     $build/tests/fuzz/fuzz_$t ${repro:-INPUT}"
    fail=1
  fi
done

[ "$fail" -ne 0 ] && [ "$nfail" -eq 0 ] && nfail=1   # a failed replay counts too
echo "fuzz: $npass passed, $nfail failed"
if [ "$fail" -eq 0 ] && [ "${FUZZ_KEEP:-0}" != 1 ]; then
  rm -rf "$work"
else
  echo "logs, grown corpus and crash inputs kept in $work"
fi
exit "$fail"
