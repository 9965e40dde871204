#!/usr/bin/env bash
# Where does a FUSE daemon spend its time? Mounts one target on a fresh QED image, fills it,
# runs one fio workload and profiles the daemon while it serves it.
#
# Usage: scripts/bench/profile.sh [--target qedfuse|qsd|null] [--workload NAME] [--tool TOOL]
#                                 [--qedfuse PATH] [--qedfuse-opt OPT]... [--ios N]
#                                 [--seconds S] [--out DIR] [--loop] [--size SIZE]
#                                 [--work DIR]
#   workloads: rr1 rr32 rw32 (4 KiB random read/write, qd 1/32, over allocated data),
#              alloc64 (64 KiB random allocating writes, qd16), seqw (1 MiB sequential
#              allocating writes, qd8), seqr (1 MiB sequential reads, qd8)
#   tools:     perf      perf record -g (cpu-clock: this VM has no hardware counters) for
#                        --seconds, then the hottest symbols with and without children
#              callgrind valgrind --tool=callgrind on the daemon for exactly --ios requests:
#                        instruction counts do not drift with machine load; prints total
#                        instructions per request and the top functions
#              strace    strace -c -f: system calls per request
#              none      just the fio result and the daemon's CPU time per request
#   --loop     run the workload through `losetup --direct-io=on` on the mount
#   --size     the image (and data region) size, e.g. 4G as in `bench.sh --full` (default: 1G,
#              4G for the allocating workloads)
#   --work     the directory for the image and mount point (default: /var/tmp); point it at a
#              tmpfs to take the host file system's write path out of the measurement
# Needs root. Everything it mounts or starts is undone on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
target=qedfuse
workload=rr32
tool=perf
qedfuse=$root/build-bench/fusefs/qedfuse
qopts=()
ios=20000
seconds=5
out=""
loop=0
size_opt=""
workdir=/var/tmp
while (($#)); do
  case $1 in
    --target) target=$2; shift 2 ;;
    --workload) workload=$2; shift 2 ;;
    --tool) tool=$2; shift 2 ;;
    --qedfuse) qedfuse=$2; shift 2 ;;
    --qedfuse-opt) qopts+=("$2"); shift 2 ;;
    --qedfuse-opt=*) qopts+=("${1#--qedfuse-opt=}"); shift ;;
    --ios) ios=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --loop) loop=1; shift ;;
    --size) size_opt=$2; shift 2 ;;
    --work) workdir=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "profile.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d "$workdir/qedfuse-profile.XXXXXX")
out=${out:-$work/out}
mkdir -p "$out"
img=$work/img.qed
mnt=$work/mnt.raw
pid=""
loopdev=""
cleanup() {
  set +e
  [[ -z $loopdev ]] || losetup -d "$loopdev"
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  if grep -q " $mnt " /proc/mounts; then fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"; fi
  rm -f "$img" "$mnt"
  [[ $out == "$work"/* ]] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

size=1G
case $workload in
  rr1) rw=randread; bs=4k; qd=1; fill=1 ;;
  rr32) rw=randread; bs=4k; qd=32; fill=1 ;;
  rw32) rw=randwrite; bs=4k; qd=32; fill=1 ;;
  seqr) rw=read; bs=1M; qd=8; fill=1 ;;
  alloc64) rw=randwrite; bs=64k; qd=16; fill=0; size=4G ;;
  seqw) rw=write; bs=1M; qd=8; fill=0; size=4G ;;
  *) echo "profile.sh: unknown workload $workload" >&2; exit 2 ;;
esac
[[ -z $size_opt ]] || size=$size_opt

[[ $target == null ]] || qemu-img create -q -f qed -o cluster_size=65536,table_size=4 "$img" $size
touch "$mnt"
wrap=()
if [[ $tool == callgrind ]]; then
  # Instrumentation is switched on only around the measured fio job.
  wrap=(valgrind --tool=callgrind "--callgrind-out-file=$out/callgrind.out" --instr-atstart=no)
fi
case $target in
  qedfuse) cmd=("$qedfuse" -f "${qopts[@]}" "$img" "$mnt") ;;
  qsd) cmd=(qemu-storage-daemon --blockdev "driver=file,node-name=file,filename=$img"
            --blockdev driver=qed,node-name=qed,file=file
            --export "type=fuse,id=exp,node-name=qed,mountpoint=$mnt,writable=on") ;;
  null) cmd=(qemu-storage-daemon --blockdev "driver=null-co,node-name=null,size=$(numfmt --from=iec "$size"),read-zeroes=on"
             --export "type=fuse,id=exp,node-name=null,mountpoint=$mnt,writable=on") ;;
  *) echo "profile.sh: unknown target $target" >&2; exit 2 ;;
esac
"${wrap[@]}" "${cmd[@]}" >"$out/daemon.log" 2>&1 &
pid=$!
waits=600
[[ $tool == callgrind ]] && waits=3000  # valgrind starts slowly
for _ in $(seq $waits); do
  grep -q " $mnt " /proc/mounts && break
  kill -0 "$pid" 2>/dev/null || { echo "daemon exited:"; cat "$out/daemon.log"; exit 1; }
  sleep 0.1
done
grep -q " $mnt " /proc/mounts || { echo "profile.sh: mount did not appear" >&2; exit 1; }

fio_base=(fio --name=p "--filename=$mnt" --ioengine=libaio --direct=1 --fallocate=none --thread)
if ((fill)); then
  "${fio_base[@]}" --rw=write --bs=1M --iodepth=8 --size=$size --output=/dev/null
  sync
fi

dev=$mnt
if ((loop)); then
  loopdev=$(losetup -f --show --direct-io=on "$mnt")
  dev=$loopdev
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
job=(fio --name=p "--filename=$dev" --ioengine=libaio --direct=1 --fallocate=none --thread --rw=$rw --bs=$bs --iodepth=$qd --size=$size --output-format=json)
[[ $rw == rand* ]] && job+=(--norandommap)
case $tool in
  callgrind)
    callgrind_control -i on "$pid" >/dev/null
    "${job[@]}" --number_ios="$ios" --output="$out/fio.json"
    callgrind_control -i off "$pid" >/dev/null
    callgrind_control -d "$pid" >/dev/null
    [[ -z $loopdev ]] || { losetup -d "$loopdev"; loopdev=""; sleep 0.2; }
    if [[ $target == qedfuse ]]; then
      # Unmount rather than signal: valgrind runs a thread's close() of the mounted file (the
      # daemon's shutdown fsync) without releasing its big lock, so the daemon could never
      # answer the FLUSH that close() sends.
      fusermount3 -u "$mnt"
    else
      kill -TERM "$pid"  # qemu-storage-daemon does not exit when its export is unmounted
    fi
    ;;
  perf)
    perf record -e cpu-clock -g -p "$pid" -o "$out/perf.data" -- sleep "$seconds" \
      >"$out/perf.log" 2>&1 &
    ppid=$!
    "${job[@]}" --time_based --runtime="$seconds" --output="$out/fio.json"
    wait $ppid || true
    ;;
  strace)
    strace -c -f -p "$pid" -o "$out/strace.txt" &
    spid=$!
    sleep 0.5
    "${job[@]}" --time_based --runtime="$seconds" --output="$out/fio.json"
    kill -INT $spid; wait $spid || true
    ;;
  none)
    t0=$(cpu_ticks)
    "${job[@]}" --time_based --runtime="$seconds" --output="$out/fio.json"
    t1=$(cpu_ticks)
    ;;
  *) echo "profile.sh: unknown tool $tool" >&2; exit 2 ;;
esac

read -r iops nios < <(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
s = j["write"] if j["write"]["total_ios"] else j["read"]
print(round(s["iops"]), s["total_ios"])' "$out/fio.json")
echo "== $target $workload: $iops IOPS, $nios requests (fio)"
case $tool in
  none)
    echo "daemon CPU: $(( (t1 - t0) * 1000000 / hz / (nios > 0 ? nios : 1) )) us per request" ;;
  perf)
    perf report -i "$out/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null |
      grep -v '^#' | grep '%' | head -40
    echo "-- with children (inclusive):"
    perf report -i "$out/perf.data" --children --sort sym --stdio -g none 2>/dev/null |
      grep -v '^#' | grep '%' | head -40 ;;
  strace)
    head -30 "$out/strace.txt" ;;
  callgrind)
    wait "$pid" || true; pid=""
    f=$(ls -t "$out"/callgrind.out.* | tail -1)
    total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
    echo "instructions in the daemon: $total = $((total / (nios > 0 ? nios : 1))) per request"
    callgrind_annotate --inclusive=no "$f" 2>/dev/null | sed -n '/^-* *$/,$p' | head -45 ;;
esac
echo "(output in $out)"
