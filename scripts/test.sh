#!/usr/bin/env bash
# The project's test command (README: "scripts/test.sh").
#
# Installs the build dependencies, then configures, builds and tests two trees:
#   build/       the normal debugoptimized build
#   build-asan/  AddressSanitizer + UndefinedBehaviorSanitizer (every UB report is fatal)
# Both run the whole `meson test` suite. Extra arguments go to `meson test` in both trees
# (e.g. `scripts/test.sh --suite unit`). Re-runnable: existing build dirs are reconfigured.
# Exits non-zero if a configure step, a build or a test fails. The last line of output is
# "N passed, N failed, N skipped" over both trees.
#
# Environment: JOBS (default 2) bounds build and test parallelism; QEDFUSE_TEST_TREES selects
# trees ("plain asan", the default, or just one of them); QEDFUSE_BUILD_DIR and
# QEDFUSE_ASAN_BUILD_DIR override the two build directories (relative to the source root).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

"$root/scripts/install-deps.sh" || { echo "test.sh: installing dependencies failed" >&2; exit 1; }

jobs=${JOBS:-2}
trees=${QEDFUSE_TEST_TREES:-plain asan}
plain_dir=$root/${QEDFUSE_BUILD_DIR:-build}
asan_dir=$root/${QEDFUSE_ASAN_BUILD_DIR:-build-asan}

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

# run_tree NAME DIR MESON-OPTIONS...: configure, build and test one tree.
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
  if ! ninja -C "$dir" -j "$jobs"; then
    echo "test.sh: [$name] build FAILED" >&2
    build_failures=$((build_failures + 1))
    return
  fi
  echo "=== [$name] test $dir"
  rm -f "$dir/meson-logs/testlog.json"
  local multiplier=1
  [[ $name == asan ]] && multiplier=3
  if ! meson test -C "$dir" --no-rebuild --print-errorlogs --num-processes "$jobs" \
      --timeout-multiplier "$multiplier" "${test_args[@]}" </dev/null; then
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
      run_tree plain "$plain_dir" --buildtype=debugoptimized
      dirs+=("$plain_dir")
      ;;
    asan)
      # -O1: far faster to build than -O2 and several times faster to run than -O0.
      run_tree asan "$asan_dir" -Dbuildtype=debug -Doptimization=1 \
        -Db_sanitize=address,undefined -Db_lundef=false \
        "-Dcpp_args=['-fno-sanitize-recover=all','-fno-omit-frame-pointer']"
      dirs+=("$asan_dir")
      ;;
    *)
      echo "test.sh: unknown tree '$t' in QEDFUSE_TEST_TREES" >&2
      build_failures=$((build_failures + 1))
      ;;
  esac
done

# Summarise both runs from meson's machine-readable logs.
python3 - "$build_failures" "${dirs[@]}" <<'PY'
import json, os, sys

build_failures = int(sys.argv[1])
passed = failed = skipped = 0
failures = []
for d in sys.argv[2:]:
    log = os.path.join(d, "meson-logs", "testlog.json")
    if not os.path.exists(log):
        continue
    with open(log) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            res = r.get("result", "")
            if res in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif res == "SKIP":
                skipped += 1
            else:
                failed += 1
                failures.append(f"{os.path.basename(d)}: {r.get('name')} ({res})")
for f in failures:
    print("FAILED:", f)
if build_failures:
    print(f"FAILED: {build_failures} configure/build step(s)")
print(f"{passed} passed, {failed + build_failures} failed, {skipped} skipped")
sys.exit(1 if failed or build_failures else 0)
PY
