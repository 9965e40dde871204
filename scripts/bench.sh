#!/usr/bin/env bash
# Side-by-side benchmark: qedfuse over both FUSE transports (/dev/fuse and FUSE over io_uring)
# vs qemu-storage-daemon's FUSE export (QED image and null device) vs a plain file, with the
# same fio/dd workloads, each target on a fresh image. The io_uring column needs Linux >= 6.14
# with CONFIG_FUSE_IO_URING: the kernel's switch (/sys/module/fuse/parameters/enable_uring) is
# turned on for the run and restored afterwards; without it the column is skipped with the reason.
#
# Usage: scripts/bench.sh [--quick|--full] [--out DIR] [options passed to scripts/bench/bench.py]
#   --quick         the default: 1 GiB data region, every job best of 3 (about 6 minutes)
#   --full          4 GiB data region, timed jobs 15 s, every job best of 3 (about 30 minutes)
#   --out DIR       where results.json, results.png and the fio JSON go
#                   (default: ./bench-results/<timestamp>)
#   --qedfuse PATH  the binary to measure (default: build-bench/fusefs/qedfuse, built in release
#                   mode when missing; --no-build skips the qedfuse target instead of building)
#   --qedfuse-opt=OPT  extra qedfuse option, repeatable (e.g. --qedfuse-opt=--aio=threads)
#   --targets LIST  subset of qedfuse,qedfuse_uring,qsd,null,plain
#   --only LIST     subset of workloads
#   --cold          also drop the page cache before every read phase
#   --keep          keep the scratch directory (images, daemon logs)
#
# Needs root (FUSE mounts, loop devices, /proc/sys/vm/drop_caches). Cleans up mounts, loop devices
# and daemons on failure and on SIGINT/SIGTERM. Prints a table of IOPS / MiB/s with each qedfuse
# column's ratios against qemu-storage-daemon and the null-device ceiling (and io_uring against
# /dev/fuse), daemon CPU per request, the daemons' resident memory,
# and writes results.json plus a gnuplot PNG.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

orig_command="scripts/bench.sh $*"
qedfuse=""
build=1
pass=()
while (($#)); do
  case $1 in
    --qedfuse) qedfuse=$2; shift 2 ;;
    --qedfuse=*) qedfuse=${1#--qedfuse=}; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) pass+=("$1"); shift ;;
  esac
done

if [[ $(id -u) -ne 0 ]]; then
  echo "bench.sh: must run as root (FUSE mounts, loop devices, drop_caches)" >&2
  exit 1
fi

missing=()
for tool in fio qemu-img qemu-storage-daemon losetup fusermount3 python3 gnuplot dd; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "bench.sh: missing ${missing[*]}; installing dependencies" >&2
  "$root/scripts/install-deps.sh"
fi

skip_reason=""
if [[ -z $qedfuse ]]; then
  qedfuse="$root/build-bench/fusefs/qedfuse"
  if [[ ! -x $qedfuse && $build -eq 1 ]]; then
    # An optimized build of just the daemon; the benchmark never measures a debug build.
    echo "bench.sh: building $qedfuse (release)" >&2
    if [[ ! -f $root/build-bench/meson-private/coredata.dat ]]; then
      meson setup "$root/build-bench" "$root" --buildtype=release -Dtests=false >&2 ||
        skip_reason="meson setup of build-bench failed"
    fi
    if [[ -z $skip_reason ]]; then
      ninja -C "$root/build-bench" -j "${JOBS:-2}" fusefs/qedfuse >&2 ||
        skip_reason="building fusefs/qedfuse failed (see the ninja output above)"
    fi
  fi
fi
if [[ -z $skip_reason && ! -x $qedfuse ]]; then
  skip_reason="no qedfuse binary at $qedfuse"
fi

export BENCH_COMMAND="${orig_command% }"
args=(--qedfuse "$qedfuse")
[[ -n $skip_reason ]] && args+=(--skip-reason "$skip_reason")
exec python3 "$root/scripts/bench/bench.py" "${args[@]}" "${pass[@]}"
