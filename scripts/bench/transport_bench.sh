#!/usr/bin/env bash
# Transport cost per request: tests/fusefs/codec_server (one in-memory file, no block layer)
# mounted over /dev/fuse and over FUSE over io_uring, read with fio (4 KiB random O_DIRECT reads,
# libaio, one job pinned to CPU 0) at iodepth 1 and 32. For each run it prints IOPS, mean
# completion latency, and the daemon's CPU time per request (utime + stime from /proc/PID/stat
# over the run, divided by the requests fio completed).
#
# Usage: scripts/bench/transport_bench.sh [SECONDS] [BUILD-DIR]   (root; default 10 s, build/)
# Needs /sys/module/fuse/parameters/enable_uring (turned on for the run and restored).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
seconds=${1:-10}
server=$root/${2:-build}/tests/fusefs/codec_server
[ -x "$server" ] || { echo "transport_bench: build $server first" >&2; exit 1; }
param=/sys/module/fuse/parameters/enable_uring
restore=
tmp=$(mktemp -d /tmp/qedfuse-tbench.XXXXXX)
pid=
cleanup() {
  set +e
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  [ -n "$restore" ] && echo "$restore" >"$param"
  rm -rf "$tmp"
}
trap cleanup EXIT
if [ -e "$param" ] && [ "$(cat "$param")" != Y ]; then
  restore=$(cat "$param")
  echo Y >"$param"
fi
hz=$(getconf CLK_TCK)

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

printf '%-10s %3s %9s %10s %14s\n' transport qd IOPS "lat(us)" "daemon us/req"
for mode in off on; do
  [ "$mode" = on ] && [ ! -e "$param" ] && { echo "no FUSE over io_uring here"; continue; }
  for qd in 1 32; do
    mnt=$tmp/disk-$mode-$qd
    "$server" --io-uring=$mode --size=256M --sync-replies "$mnt" 2>"$tmp/log-$mode-$qd" &
    pid=$!
    for _ in $(seq 100); do grep -q "ready on" "$tmp/log-$mode-$qd" && break; sleep 0.1; done
    # Touch every block once, so reads find resident pages.
    dd if=/dev/zero of="$mnt" bs=1M count=256 conv=notrunc oflag=direct status=none
    before=$(cpu_ticks "$pid")
    fio --name=r --filename="$mnt" --rw=randread --bs=4k --direct=1 --ioengine=libaio \
      --iodepth="$qd" --numjobs=1 --cpus_allowed=0 --time_based --runtime="$seconds" \
      --size=256M --output-format=json --output="$tmp/fio.json"
    after=$(cpu_ticks "$pid")
    fusermount3 -u "$mnt"
    wait "$pid"
    pid=
    python3 - "$tmp/fio.json" "$mode" "$qd" "$before" "$after" "$hz" <<'PY'
import json, sys
f, mode, qd, before, after, hz = sys.argv[1:]
r = json.load(open(f))["jobs"][0]["read"]
ios = r["total_ios"]
cpu_us = (int(after) - int(before)) / int(hz) * 1e6
name = "io_uring" if mode == "on" else "/dev/fuse"
print(f"{name:<10} {qd:>3} {r['iops']:9.0f} {r['clat_ns']['mean'] / 1000:10.1f} {cpu_us / ios:14.2f}")
PY
  done
done
