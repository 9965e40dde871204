#!/usr/bin/env bash
# Longer fuzzing campaigns (the test command runs each target for about a minute only).
#
# Usage: scripts/fuzz.sh [TARGET|all] [SECONDS] [JOBS]
#   TARGET   qed_open_fuzz, qed_header_fuzz, qed_ops_fuzz, fuse_codec_fuzz or all (default all, one after another)
#   SECONDS  run time per target (default 600)
#   JOBS     parallel libFuzzer workers per target (default 1)
#
# Configures and builds the clang fuzz tree (build-fuzz/, or $QEDFUSE_FUZZ_BUILD_DIR) when
# needed. The campaign corpus lives in build-fuzz/campaign/<target>/corpus: it starts from the
# committed seeds (tests/fuzz/corpus/<target>, never modified) and keeps growing across
# campaigns. Every crash, leak, timeout or sanitizer report is copied to
# build-fuzz/findings/<target>/ (kept across runs) and fails the script. Prints libFuzzer's final
# stats and a COUNTS line per target.
#
# Reproduce a finding:  build-fuzz/tests/fuzz/<target> FILE
# Minimise it:          build-fuzz/tests/fuzz/<target> -minimize_crash=1 -runs=10000 FILE
# A fixed finding belongs in tests/fuzz/corpus/<target>/regress-<name> with a regression test.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${1:-all}
seconds=${2:-600}
jobs=${3:-1}
dir=$root/${QEDFUSE_FUZZ_BUILD_DIR:-build-fuzz}
all_targets=(qed_open_fuzz qed_header_fuzz qed_ops_fuzz fuse_codec_fuzz)

case $target in
  all) targets=("${all_targets[@]}") ;;
  qed_open_fuzz | qed_header_fuzz | qed_ops_fuzz | fuse_codec_fuzz) targets=("$target") ;;
  *)
    echo "fuzz.sh: unknown target '$target' (expected: ${all_targets[*]} or all)" >&2
    exit 2
    ;;
esac
if ! [[ $seconds =~ ^[0-9]+$ && $jobs =~ ^[0-9]+$ ]] || ((seconds < 1 || jobs < 1)); then
  echo "usage: $0 [TARGET|all] [SECONDS] [JOBS]" >&2
  exit 2
fi

# Same configuration as the fuzz tree of scripts/test.sh. -fno-sanitize=function: clang 14
# cannot emit its prologue data next to the coverage tables of coroutine functions.
opts=(-Dfuzz=true -Dbuildtype=debug -Doptimization=1 -Db_sanitize=address,undefined
  -Db_lundef=false
  "-Dcpp_args=['-fsanitize=fuzzer-no-link','-fno-sanitize=function','-fno-sanitize-recover=all','-fno-omit-frame-pointer']")
if [[ ! -f $dir/meson-private/coredata.dat ]]; then
  CC=clang CXX=clang++ meson setup "$dir" "$root" "${opts[@]}" || exit 1
fi
ninja -C "$dir" -j 2 "${targets[@]/#/tests/fuzz/}" || exit 1

failed=0
for t in "${targets[@]}"; do
  work=$dir/campaign/$t
  findings=$dir/findings/$t
  mkdir -p "$work" "$findings"
  # Carry the corpus of earlier campaigns over (fuzz_run.sh starts from the seeds).
  if [[ -d $work/corpus ]]; then
    rm -rf "$work/previous"
    mv "$work/corpus" "$work/previous"
  fi
  echo "=== $t: ${seconds}s, $jobs job(s)"
  dict=$root/tests/fuzz/qed.dict
  [[ $t == fuse_* ]] && dict=$root/tests/fuzz/fuse.dict
  QEDFUSE_FUZZ_EXTRA_CORPUS=$work/previous "$root/tests/fuzz/fuzz_run.sh" \
    "$dir/tests/fuzz/$t" "$root/tests/fuzz/corpus/$t" "$dict" "$work" \
    "$seconds" "$jobs"
  rc=$?
  grep -h '^stat::' "$work/fuzz.log" | sort | uniq
  found=0
  for a in "$work"/artifacts/*; do
    [[ -f $a ]] || continue
    cp "$a" "$findings/"
    found=$((found + 1))
  done
  if ((rc != 0 || found > 0)); then
    echo "fuzz.sh: $t: FAILED, $found finding(s) copied to $findings"
    failed=1
  fi
done
exit $failed
