#!/usr/bin/env bash
# Bounded libFuzzer run of one target, as a meson test (suite 'fuzz') or from scripts/fuzz.sh.
#
# Usage: fuzz_run.sh FUZZER SEED-CORPUS DICT WORK-DIR [SECONDS [JOBS]]
#   SECONDS defaults to $QEDFUSE_FUZZ_SECONDS, else 30. JOBS (default 1) > 1 runs libFuzzer's
#   -jobs/-workers mode. $QEDFUSE_FUZZ_EXTRA_CORPUS, if set, names a directory whose inputs are
#   added to the starting corpus.
# The seed corpus is never modified: it is copied to WORK-DIR/corpus (emptied first), where new
# inputs go. Crashes, leaks, timeouts (-timeout=10 per input), out-of-memory inputs and
# sanitizer reports are written to WORK-DIR/artifacts/ and fail the run. libFuzzer's output goes
# to WORK-DIR/fuzz.log; its tail is printed on failure. On success the last line is
#   COUNTS: fuzz <target>: N inputs executed, cov C, ft F, corpus K (M files)
set -uo pipefail

if (($# < 4)); then
  echo "usage: $0 FUZZER SEED-CORPUS DICT WORK-DIR [SECONDS [JOBS]]" >&2
  exit 2
fi
fuzzer=$(realpath "$1") seeds=$(realpath "$2") dict=$(realpath -m "$3") work=$(realpath -m "$4")
seconds=${5:-${QEDFUSE_FUZZ_SECONDS:-30}}
jobs=${6:-1}
name=$(basename "$fuzzer")

case $name in
  qed_header_fuzz) max_len=8192 ;;
  qed_ops_fuzz) max_len=2048 ;;
  fuse_codec_fuzz) max_len=4096 ;;
  *) max_len=65536 ;;
esac

rm -rf "$work/corpus" "$work/artifacts"
mkdir -p "$work/corpus" "$work/artifacts"
cp -r "$seeds"/. "$work/corpus/"
# scripts/fuzz.sh carries the corpus of an earlier campaign over.
if [[ -n ${QEDFUSE_FUZZ_EXTRA_CORPUS:-} && -d $QEDFUSE_FUZZ_EXTRA_CORPUS ]]; then
  cp -rn "$QEDFUSE_FUZZ_EXTRA_CORPUS"/. "$work/corpus/"
fi
log=$work/fuzz.log

# Leak checking and fatal UB reports, whatever the caller's environment says otherwise.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1:abort_on_error=1:symbolize=1
export UBSAN_OPTIONS=${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}halt_on_error=1:abort_on_error=1:print_stacktrace=1

args=(
  -max_total_time="$seconds"
  -max_len="$max_len"
  -timeout=10
  -rss_limit_mb=2560
  -malloc_limit_mb=1024
  -print_final_stats=1
  -close_fd_mask=2
  -artifact_prefix="$work/artifacts/"
)
[[ -f $dict ]] && args+=(-dict="$dict")
if ((jobs > 1)); then
  args+=(-jobs="$jobs" -workers="$jobs")
fi

echo "fuzz_run: $name for ${seconds}s over a copy of $seeds (log $log)"
start=$(date +%s)
(cd "$work" && "$fuzzer" "${args[@]}" "$work/corpus") >"$log" 2>&1
rc=$?
end=$(date +%s)
# (In -jobs mode libFuzzer copies each worker's fuzz-N.log into its own output when it ends.)
rm -f "$work"/fuzz-*.log

artifacts=$(find "$work/artifacts" -type f | sort)
if ((rc != 0)) || [[ -n $artifacts ]]; then
  echo "fuzz_run: $name FAILED (exit status $rc after $((end - start))s)"
  tail -n 120 "$log"
  for a in $artifacts; do
    echo "fuzz_run: reproducer $a ($(stat -c %s "$a") bytes); rerun with: $fuzzer $a"
  done
  exit 1
fi

# Final stats: "stat::number_of_executed_units: N" and the last "#N DONE cov: C ft: F corp: K/..."
# line (K: the inputs libFuzzer keeps; executions are summed over the workers in -jobs mode).
python3 - "$name" "$log" "$work/corpus" <<'PY'
import os, re, sys

name, log, corpus = sys.argv[1:4]
execs = 0
cov = ft = corp = 0
for line in open(log, errors="replace"):
    m = re.match(r"stat::number_of_executed_units:\s*(\d+)", line)
    if m:
        execs += int(m.group(1))
    m = re.search(r"\bDONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/", line)
    if m:
        cov = max(cov, int(m.group(1)))
        ft = max(ft, int(m.group(2)))
        corp = max(corp, int(m.group(3)))
files = len(os.listdir(corpus))
if execs == 0:
    print(f"fuzz_run: {name}: no final stats in {log}")
    sys.exit(1)
print(f"COUNTS: fuzz {name}: {execs} inputs executed, cov {cov}, ft {ft}, corpus {corp}"
      f" ({files} files)")
PY
