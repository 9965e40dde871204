#!/usr/bin/env bash
# Soak test: a bounded mixed workload on a qedfuse mount, then the image is verified.
#
#   scripts/soak.sh [OPTIONS] [SECONDS]      (default 180 seconds; run as root)
#
#   --qedfuse PATH      daemon to test (default: $QEDFUSE, else build/fusefs/qedfuse)
#   --workers N         worker processes (default 4)
#   --seed N            workload seed (default 1)
#   --cache MODE        qedfuse --cache= mode: writeback (default) or none
#   --rss-limit-mib M   bound on the daemon's resident memory (default 512)
#   --keep DIR          work in DIR and keep it (image, model, daemon log) instead of a temp dir
#
# scripts/soak.py runs the workload (buffered and O_DIRECT reads and writes, hole punches and
# zero ranges, fsyncs from several processes, growing truncates from a coordinator) on a 128 MiB
# QED image that grows towards 512 MiB, checks every read against its model, and samples the
# daemon's resident memory. Afterwards: the mounted file equals the model, the image is
# unmounted cleanly, `qemu-img check` is clean and `qemu-img convert -O raw` of it equals the
# model byte for byte. The last line is
#   COUNTS: soak: N ops (R reads, W writes, Z zero writes, F fsyncs, T truncates), max RSS X MiB, 0 mismatches
# Exit status 0 only if everything held.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=180 workers=4 seed=1 cache=writeback rss_limit=512 keep=""
qedfuse=${QEDFUSE:-$root/build/fusefs/qedfuse}
while [ $# -gt 0 ]; do
  case $1 in
    --qedfuse) qedfuse=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --rss-limit-mib) rss_limit=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "soak.sh: unknown option $1" >&2; exit 2 ;;
    *) seconds=$1; shift ;;
  esac
done
[[ $seconds =~ ^[0-9]+$ ]] || { echo "soak.sh: SECONDS must be a number" >&2; exit 2; }
[ -x "$qedfuse" ] || { echo "soak.sh: no qedfuse binary at $qedfuse (use --qedfuse)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "soak.sh: must run as root (FUSE mounts)" >&2; exit 2; }
for t in qemu-img python3 fusermount3 cmp; do
  command -v $t >/dev/null || { echo "soak.sh: $t is not installed" >&2; exit 2; }
done

if [ -n "$keep" ]; then
  mkdir -p "$keep"
  dir=$(cd "$keep" && pwd)
else
  dir=$(mktemp -d /tmp/qedfuse-soak.XXXXXX)
fi
img=$dir/img.qed mnt=$dir/disk.raw model=$dir/model.raw log=$dir/daemon.log
pid=""
cleanup() {
  local rc=$?
  set +e
  if awk -v p="$mnt" '$5 == p { f = 1 } END { exit !f }' /proc/self/mountinfo; then
    fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt"
  fi
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  [ -z "$keep" ] && rm -rf "$dir"
  exit "$rc"
}
trap cleanup EXIT
fail() {
  echo "soak: FAIL: $*" >&2
  exit 1
}

rm -f "$img" "$mnt" "$model" "$dir/image.raw"
qemu-img create -q -f qed "$img" 128M
# Foreground daemon in the background, so its log (and exit status) stay with us.
"$qedfuse" -f --cache="$cache" --need-check-delay=2000 "$img" "$mnt" 2>"$log" &
pid=$!
for ((i = 0; i < 300; i++)); do
  awk -v p="$mnt" '$5 == p { f = 1 } END { exit !f }' /proc/self/mountinfo && break
  kill -0 "$pid" 2>/dev/null || fail "qedfuse exited: $(cat "$log")"
  sleep 0.1
done
echo "soak: $seconds s, $workers workers, seed $seed, cache=$cache, daemon pid $pid"

rc=0
python3 "$root/scripts/soak.py" "$mnt" "$model" --seconds "$seconds" --workers "$workers" \
  --seed "$seed" --pid "$pid" --rss-limit-mib "$rss_limit" | tee "$dir/workload.out" || rc=$?
[ "$rc" = 0 ] || fail "the workload reported problems"
result=$(sed -n 's/^RESULT //p' "$dir/workload.out")
declare -A r
for kv in $result; do r[${kv%%=*}]=${kv#*=}; done

cmp "$mnt" "$model" || fail "the mounted file differs from the model"
echo "soak: mounted file equals the model"
fusermount3 -u "$mnt"
wait "$pid" || fail "qedfuse exited with status $?: $(tail -5 "$log")"
pid=""
echo "soak: daemon: $(grep -m1 unmounted "$log" || true)"

out=$(qemu-img check -f qed "$img" 2>&1) || { echo "$out" >&2; fail "qemu-img check is not clean"; }
echo "soak: qemu-img check clean ($(grep -m1 allocated <<<"$out" || true))"
qemu-img convert -f qed -O raw "$img" "$dir/image.raw"
[ "$(stat -c %s "$dir/image.raw")" = "${r[size]}" ] || fail "image size differs from the model"
cmp "$dir/image.raw" "$model" || fail "qemu-img convert output differs from the model"
echo "soak: qemu-img convert -O raw equals the model (${r[size]} bytes)"
echo "COUNTS: soak: ${r[ops]} ops (${r[reads]} reads, ${r[writes]} writes, ${r[zeros]} zero writes," \
  "${r[fsyncs]} fsyncs, ${r[truncates]} truncates), max RSS ${r[rss_max_mib]} MiB" \
  "(final ${r[rss_final_mib]} MiB), ${r[mismatches]} mismatches"
