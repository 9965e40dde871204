#!/usr/bin/env bash
# The project's test command (README: "scripts/test.sh").
#
# Installs the build dependencies, then configures, builds and tests three trees:
#   build/       the normal debugoptimized build
#   build-asan/  AddressSanitizer + UndefinedBehaviorSanitizer (every UB report is fatal)
#   build-fuzz/  clang with libFuzzer + ASan + UBSan: only the fuzz targets are built, and only
#                the 'fuzz' suite runs (a bounded run of each target over a copy of its corpus)
# The first two run the whole `meson test` suite. Extra arguments go to `meson test` in the
# first two trees (e.g. `scripts/test.sh --suite unit`). Re-runnable: existing build dirs are
# reconfigured. Exits non-zero if a configure step, a build or a test fails. Before the summary,
# every "COUNTS: " line that a test printed is repeated, prefixed by its tree. The last line of
# output is "N passed, N failed, N skipped" over all trees.
#
# Environment: JOBS (default 2) bounds build and test parallelism; QEDFUSE_TEST_TREES selects
# trees ("plain asan fuzz", the default, or a subset); QEDFUSE_BUILD_DIR, QEDFUSE_ASAN_BUILD_DIR
# and QEDFUSE_FUZZ_BUILD_DIR override the build directories (relative to the source root);
# QEDFUSE_FUZZ_SECONDS (default 30) is the run time of each fuzz target.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

"$root/scripts/install-deps.sh" || { echo "test.sh: installing dependencies failed" >&2; exit 1; }

jobs=${JOBS:-2}
trees=${QEDFUSE_TEST_TREES:-plain asan fuzz}
plain_dir=$root/${QEDFUSE_BUILD_DIR:-build}
asan_dir=$root/${QEDFUSE_ASAN_BUILD_DIR:-build-asan}
fuzz_dir=$root/${QEDFUSE_FUZZ_BUILD_DIR:-build-fuzz}

# Sanitizer reports abort the test that triggered them, with a stack trace.
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1:print_summary=1:strict_init_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1:print_summary=1}

build_failures=0

# configure DIR MESON-OPTIONS...: fresh setup, or reconfigure with the same options.
configure() {
  local dir=$1
  shift
  if [[ -f "$dir/meson-private/coredata.dat" ]]; then
    meson setup --reconfigure "$dir" "$@" && return 0
    echo "test.sh: reconfiguring $dir failed; wiping it" >&2
    meson setup --wipe "$dir" "$@"
  else
    meson setup "$dir" "$@"
  fi
}

# run_tree NAME DIR MESON-OPTIONS...: configure, build and test one tree. The fuzz tree builds
# only the fuzz targets and runs only the 'fuzz' suite.
run_tree() {
  local name=$1 dir=$2
  shift 2
  echo "=== [$name] configure $dir"
  if ! configure "$dir" "$@"; then
    echo "test.sh: [$name] configure FAILED" >&2
    build_failures=$((build_failures + 1))
    return
  fi
  echo "=== [$name] build $dir"
  local targets=() args=("${test_args[@]}")
  if [[ $name == fuzz ]]; then
    targets=(tests/fuzz/qed_open_fuzz tests/fuzz/qed_header_fuzz tests/fuzz/qed_ops_fuzz
      tests/fuzz/fuse_codec_fuzz)
    args=(--suite fuzz)
  fi
  if ! ninja -C "$dir" -j "$jobs" "${targets[@]}"; then
    echo "test.sh: [$name] build FAILED" >&2
    build_failures=$((build_failures + 1))
    return
  fi
  echo "=== [$name] test $dir"
  rm -f "$dir/meson-logs/testlog.json"
  local multiplier=1
  [[ $name == asan ]] && multiplier=3
  if ! meson test -C "$dir" --no-rebuild --print-errorlogs --num-processes "$jobs" \
      --timeout-multiplier "$multiplier" "${args[@]}" </dev/null; then
    echo "test.sh: [$name] meson test reported failures" >&2
    if [[ ! -s "$dir/meson-logs/testlog.json" ]]; then
      build_failures=$((build_failures + 1))  # meson test itself failed before running tests
    fi
  fi
}

test_args=("$@")
dirs=()
for t in $trees; do
  case $t in
    plain)
      # -O2 with assertions on; no debug info (a third of the build's time; the sanitizer
      # trees carry line tables for stack traces).
      run_tree plain "$plain_dir" --buildtype=debugoptimized -Ddebug=false
      dirs+=("plain=$plain_dir")
      ;;
    asan)
      # -O1: far faster to build than -O2 and several times faster to run than -O0.
      run_tree asan "$asan_dir" -Dbuildtype=debug -Doptimization=1 \
        -Db_sanitize=address,undefined -Db_lundef=false \
        "-Dcpp_args=['-g1','-fno-sanitize-recover=all','-fno-omit-frame-pointer']"
      dirs+=("asan=$asan_dir")
      ;;
    fuzz)
      # -fno-sanitize=function: clang 14 cannot emit its prologue data next to the coverage
      # tables of coroutine functions ("Cannot represent a difference across sections").
      CC=clang CXX=clang++ run_tree fuzz "$fuzz_dir" -Dfuzz=true -Dbuildtype=debug \
        -Doptimization=1 -Db_sanitize=address,undefined -Db_lundef=false \
        "-Dcpp_args=['-g1','-fsanitize=fuzzer-no-link','-fno-sanitize=function','-fno-sanitize-recover=all','-fno-omit-frame-pointer']"
      dirs+=("fuzz=$fuzz_dir")
      ;;
    *)
      echo "test.sh: unknown tree '$t' in QEDFUSE_TEST_TREES" >&2
      build_failures=$((build_failures + 1))
      ;;
  esac
done

# Summarise the runs from meson's machine-readable logs: the COUNTS lines tests printed, the
# failures, then the totals.
python3 - "$build_failures" "${dirs[@]}" <<'PY'
import json, os, sys

build_failures = int(sys.argv[1])
passed = failed = skipped = 0
failures = []
counts = []
for arg in sys.argv[2:]:
    tree, d = arg.split("=", 1)
    log = os.path.join(d, "meson-logs", "testlog.json")
    if not os.path.exists(log):
        continue
    with open(log) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            for out in (r.get("stdout") or "").splitlines():
                if out.startswith("COUNTS: "):
                    counts.append(f"[{tree}] {out}")
            res = r.get("result", "")
            if res in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif res == "SKIP":
                skipped += 1
            else:
                failed += 1
                failures.append(f"{os.path.basename(d)}: {r.get('name')} ({res})")
for c in counts:
    print(c)
for f in failures:
    print("FAILED:", f)
if build_failures:
    print(f"FAILED: {build_failures} configure/build step(s)")
print(f"{passed} passed, {failed + build_failures} failed, {skipped} skipped")
sys.exit(1 if failed or build_failures else 0)
PY
