#!/usr/bin/env bash
# Runs the whole test suite twice: a normal build (build/, which also runs the valgrind memcheck tests)
# and an AddressSanitizer + UndefinedBehaviorSanitizer build (build-asan/); then fuzzes each libFuzzer
# target for 30 s (clang build in build-fuzz/; CIRRDATA_FUZZ_SECONDS=N changes it, 0 skips the stage).
# Installs missing Debian packages first. Ends with one summary line "N passed, M failed"; exits
# non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh test || exit 1

jobs=$(nproc 2>/dev/null || echo 2)
summary() { # count OK/FAIL results in a meson testlog.json
  /usr/bin/python3 - "$1" <<'PY'
import json, sys
ok = fail = skip = 0
for line in open(sys.argv[1]):
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"): ok += 1
    elif r == "SKIP": skip += 1
    else: fail += 1
print(ok, fail, skip)
PY
}

setup() { # builddir, extra meson args...
  local dir=$1; shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi || { echo "meson setup $dir failed" >&2; return 1; }
}

total_ok=0; total_fail=0; total_skip=0; rc=0
run_suite() { # label, builddir, meson setup args...
  local label=$1 dir=$2; shift 2
  echo "== $label: configure and build ($dir)"
  if ! setup "$dir" "$@" || ! ninja -C "$dir" >"$dir.build.log" 2>&1; then
    tail -n 40 "$dir.build.log" 2>/dev/null
    echo "== $label: build FAILED"; total_fail=$((total_fail + 1)); rc=1; return
  fi
  echo "== $label: meson test"
  meson test -C "$dir" --print-errorlogs --num-processes "$jobs" --no-rebuild || rc=1
  read -r ok fail skip < <(summary "$dir/meson-logs/testlog.json")
  echo "== $label: $ok passed, $fail failed, $skip skipped"
  total_ok=$((total_ok + ok)); total_fail=$((total_fail + fail)); total_skip=$((total_skip + skip))
}

run_suite "release build" build --buildtype=debugoptimized
# Sanitizers: any report aborts the process, so the test fails.
export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1:strict_string_checks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
run_suite "ASan+UBSan build" build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false -Dbenchmarks=false

# Fuzzing: replays every saved crasher and seed, then runs each target (two at a time on 2 CPUs). The
# sanitizer options above are for the test builds; the fuzz targets use libFuzzer's own defaults.
fuzz_secs=${CIRRDATA_FUZZ_SECONDS:-30}
if [ "$fuzz_secs" != 0 ]; then
  echo "== fuzz: build-fuzz (clang), each target ${fuzz_secs}s"
  mkdir -p build-fuzz
  env -u ASAN_OPTIONS -u UBSAN_OPTIONS tests/fuzz/run.sh "$fuzz_secs" build-fuzz 2>&1 | tee build-fuzz/run.log
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
  read -r fok ffail < <(sed -n 's/^fuzz: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' build-fuzz/run.log | tail -1)
  [ -n "${fok:-}" ] || { fok=0; ffail=1; }   # run.sh stopped before fuzzing (setup or build failed)
  echo "== fuzz: $fok passed, $ffail failed"
  total_ok=$((total_ok + fok)); total_fail=$((total_fail + ffail))
fi

echo
echo "tests: $total_ok passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ] && [ $rc -eq 0 ]
