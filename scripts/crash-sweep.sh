#!/usr/bin/env bash
# Longer crash-state sweep campaigns (the test command checks about 240 states only).
#
# Usage: scripts/crash-sweep.sh [ROUNDS] [SCALE] [PER_INTERVAL]
#   ROUNDS        workload rounds (default 6); each round runs the fio, ext4 and kill -9
#                 workloads of tests/integration/crash_sweep_test.sh with its own seed and checks
#                 every crash state of its plan (no sampling)
#   SCALE         workload size factor (default 2: twice the data, image and files)
#   PER_INTERVAL  random in-between states per flush interval (default 8)
# Rounds rotate through the mount variants: default, --cache=none, --aio=threads,
# --need-check-delay=0 (the flag is cleared as soon as allocations pause).
# Environment: QEDFUSE / QEDIMG (default: build/fusefs/qedfuse, build/src/tools/qedimg),
# QEDFUSE_SEED (seed of the first round; round i uses SEED + i).
# Needs root, /dev/fuse, fio, qemu-img, e2fsprogs. Prints each round's COUNTS lines and a total;
# exits 1 if any state failed (its images are kept in /tmp/qedfuse-crash-sweep-failed.SEED/).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=${1:-6}
scale=${2:-2}
per_interval=${3:-8}
if ! [[ $rounds =~ ^[0-9]+$ && $scale =~ ^[0-9]+$ && $per_interval =~ ^[0-9]+$ ]] ||
  ((rounds < 1 || scale < 1)); then
  echo "usage: $0 [ROUNDS] [SCALE] [PER_INTERVAL]" >&2
  exit 2
fi
export QEDFUSE=${QEDFUSE:-$root/build/fusefs/qedfuse}
export QEDIMG=${QEDIMG:-$root/build/src/tools/qedimg}
for b in "$QEDFUSE" "$QEDIMG"; do
  [ -x "$b" ] || { echo "crash-sweep.sh: $b not built (set QEDFUSE / QEDIMG)" >&2; exit 2; }
done
seed0=${QEDFUSE_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
variants=("" "--cache=none" "--aio=threads" "--need-check-delay=0")

total=0 failed=0 leaks=0 boundary=0 between=0 start=$SECONDS
for ((i = 0; i < rounds; i++)); do
  seed=$(((seed0 + i) % 2147483647))
  opts=${variants[i % ${#variants[@]}]}
  echo "=== round $((i + 1))/$rounds: seed $seed, mount options '${opts}'"
  out=$(mktemp)
  QEDFUSE_SEED=$seed CRASH_SWEEP_KILL=1 CRASH_SWEEP_STATES=0 CRASH_SWEEP_SCALE=$scale \
    CRASH_SWEEP_PER_INTERVAL=$per_interval CRASH_SWEEP_MOUNT_OPTS=$opts \
    bash "$root/tests/integration/crash_sweep_test.sh" >"$out" 2>&1
  rc=$?
  grep -E '^(COUNTS|FAIL|SKIP|PASS)' "$out"
  if ((rc != 0)); then
    failed=$((failed + 1))
    tail -n 40 "$out"
  fi
  while read -r n b r l; do
    total=$((total + n)) boundary=$((boundary + b)) between=$((between + r)) leaks=$((leaks + l))
  done < <(sed -nE 's/^COUNTS: crash_sweep: (fio|ext4|kill): ([0-9]+) crash states checked \(([0-9]+) at flush boundaries, ([0-9]+) reordered or dropped.*, ([0-9]+) with leaks only.*/\2 \3 \4 \5/p' "$out")
  rm -f "$out"
done
echo "COUNTS: crash-sweep campaign: $rounds rounds, $total crash states checked ($boundary at" \
  "flush boundaries, $between reordered or dropped), $leaks with leaks only, $failed rounds" \
  "failed, $((SECONDS - start)) s"
((failed == 0))
