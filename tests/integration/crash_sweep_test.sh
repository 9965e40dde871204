#!/bin/bash
# Crash-state sweep (the dm-log-writes / CrashMonkey method): real workloads run on a mount with
# --debug-log-writes, which records every write and flush that reaches the image file and every
# write and flush the guest was promised. crash_replay.py then rebuilds the image as a crash would
# have left it at every flush boundary and at random points in between (unflushed writes dropped,
# whole or in 4 KiB pieces), opens each state with a read-write qedfuse mount (which repairs it),
# and requires: qemu-img check clean (the repair compacts leaks), every fsync-acknowledged write
# read back (through qedfuse and through qemu-img), and for the ext4 workload e2fsck clean after
# its journal replay. Workloads: (a) fio random writes with fsync/fdatasync, allocating and
# overwriting, plus a zero-range; (b) ext4 on a loop device: files written, sync, more files,
# sync -f, unmount.
#
# Environment: CRASH_SWEEP_STATES (states per workload, 0 = all; default 60, 20 under
# sanitizers), CRASH_SWEEP_SCALE (workload size factor, default 1), CRASH_SWEEP_PER_INTERVAL
# (random states per flush interval, default 3), CRASH_SWEEP_MOUNT_OPTS (extra qedfuse options
# for the workload mounts, e.g. --cache=none), CRASH_SWEEP_KILL=1 (a third workload: fio until
# the daemon is killed with -9, the log prefix replayed), QEDFUSE_SEED (replay a run),
# QEDIMG (qedimg binary, default: next to qedfuse in the build tree).
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img python3 fio losetup mkfs.ext4 e2fsck blockdev

log() { echo "--- $(date +%T) $*"; }
HERE=$(dirname "$0")
REPLAY=$HERE/crash_replay.py
QEDIMG=${QEDIMG:-$(dirname "$QEDFUSE")/../src/tools/qedimg}
[ -x "$QEDIMG" ] || skip "qedimg not found (set QEDIMG)"
if [ "${QEDFUSE_TEST_SANITIZED:-0}" = 1 ]; then
  STATES=${CRASH_SWEEP_STATES:-20}
else
  STATES=${CRASH_SWEEP_STATES:-60}
fi
SCALE=${CRASH_SWEEP_SCALE:-1}
PER_INTERVAL=${CRASH_SWEEP_PER_INTERVAL:-3}
MOUNT_OPTS=${CRASH_SWEEP_MOUNT_OPTS:-}
SEED=${QEDFUSE_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
SEED=$((SEED % 2147483647))
echo "seed $SEED (QEDFUSE_SEED=$SEED to replay), $STATES states per workload"
MNT=$TMP/disk.raw FS=$TMP/fs
mkdir "$FS"
# Images, their copies and the logs live in memory when possible: the workloads fsync a lot and
# the crash model does not depend on the host file system.
W=$TMP
if [ -d /dev/shm ] && [ -w /dev/shm ]; then W=/dev/shm/qedfuse-crash-sweep.$$; fi

# new_image NAME: a 64 MiB image with 64 KiB clusters and its pre-mount copy NAME.base.
new_image() {
  REMOVE_FILES+=("$W.$1.qed" "$W.$1.base" "$W.$1.log")
  qemu-img create -q -f qed -o cluster_size=65536 "$W.$1.qed" $((64 * SCALE))M
  cp "$W.$1.qed" "$W.$1.base"
}

# replay NAME [ARGS...]: sweeps NAME's log; prints the COUNTS line; fails on any failed state.
TOTAL=0
replay() {
  local name=$1 out
  shift
  log "$name: replaying crash states"
  out=$TMP/$name.replay
  if ! python3 "$REPLAY" --name="$name" --seed="$SEED" --qedimg="$QEDIMG" --qedfuse="$QEDFUSE" \
    --max-states="$STATES" --per-interval="$PER_INTERVAL" --self-check --keep-failed="/tmp/qedfuse-crash-sweep-failed.$SEED/$name" "$@" \
    "$W.$name.base" "$W.$name.log" >"$out" 2>&1; then
    cat "$out"
    fail "$name: crash states failed (QEDFUSE_SEED=$SEED; state images kept in" \
      "/tmp/qedfuse-crash-sweep-failed.$SEED)"
  fi
  grep -v '^RESULT' "$out"
  python3 - "$name" "$out" <<'EOF'
import json, sys
name, path = sys.argv[1], sys.argv[2]
st = json.loads([l for l in open(path) if l.startswith("RESULT ")][-1][7:])
print("COUNTS: crash_sweep: %s: %d crash states checked (%d at flush boundaries, %d reordered "
      "or dropped, %d torn), %d with leaks only, %d repaired at open, %d failed"
      % (name, st["states"], st["boundary"], st["between"], st["torn"], st["leaks"],
         st["repaired"], st["failed"]))
EOF
  TOTAL=$((TOTAL + $(python3 -c 'import json,sys; print(json.loads([l for l in open(sys.argv[1]) if l.startswith("RESULT ")][-1][7:])["states"])' "$out")))
}

log "workload (a): fio random writes with fsync / fdatasync"
new_image fio
mount_image $MOUNT_OPTS --debug-log-writes="$W.fio.log" --need-check-delay=10 "$W.fio.qed" "$MNT"
fio_run() {
  fio --output="$TMP/fio.out" --filename="$MNT" --randrepeat=0 --exitall_on_error "$@" ||
    { cat "$TMP/fio.out"; fail "fio $*"; }
}
fio_run --name=alloc --ioengine=psync --rw=randwrite --bs=64k --size=$((8 * SCALE))M --fsync=4
fio_run --name=mixed --ioengine=psync --rw=randwrite --bsrange=4k-64k --offset=4M \
  --size=$((12 * SCALE))M --fdatasync=3
# Queued O_DIRECT writes (several in flight, no two overlapping within a pass) with fsync.
fio_run --name=queued --ioengine=libaio --direct=1 --iodepth=8 --rw=randwrite --bsrange=4k-64k \
  --offset=$((12 * SCALE))M --size=$((8 * SCALE))M --fsync=16
python3 - "$MNT" <<'EOF'
import ctypes, os, sys
# A zero-range and a punched hole inside written data, each followed by fsync; then a write
# that is never synced (it may or may not survive a crash).
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
fd = os.open(sys.argv[1], os.O_RDWR)
for mode, off in ((0x10, 5 << 20), (0x03, 6 << 20)):  # ZERO_RANGE; PUNCH_HOLE | KEEP_SIZE
    if libc.fallocate(fd, mode, off, 256 << 10) != 0:
        sys.exit("fallocate mode %#x: %s" % (mode, os.strerror(ctypes.get_errno())))
    os.fsync(fd)
os.pwrite(fd, os.urandom(8192), 7 << 20)
os.close(fd)
EOF
unmount_image "$MNT"
qemu_check_clean "$W.fio.qed"
replay fio

log "workload (b): ext4 on a loop device on the mount"
new_image ext4
mount_image $MOUNT_OPTS --debug-log-writes="$W.ext4.log" --need-check-delay=100 "$W.ext4.qed" "$MNT"
LOOP=$(losetup -f --show "$MNT")
LOOPS+=("$LOOP")
mkfs.ext4 -q -F -b 4096 "$LOOP"
blockdev --flushbufs "$LOOP"
# Crash states before this point may hold no file system yet: e2fsck checks the later ones.
FS_FLUSHES=$(python3 "$REPLAY" --count-guest-flushes "$W.ext4.base" "$W.ext4.log")
mount "$LOOP" "$FS"
OTHER_MOUNTS+=("$FS")
head -c $((4 * SCALE))M /dev/urandom >"$FS/big"
mkdir "$FS/dir"
for i in $(seq 1 $((20 * SCALE))); do head -c $((i * 3000)) /dev/urandom >"$FS/dir/f$i"; done
sync
cp "$FS/big" "$FS/big.copy"
dd if=/dev/urandom of="$FS/big" bs=64k count=16 seek=8 conv=notrunc status=none
rm "$FS/dir/f1" "$FS/dir/f2"
sync -f "$FS/big"
for i in $(seq 1 $((10 * SCALE))); do head -c 20000 /dev/urandom >"$FS/late$i"; done
umount "$FS"
losetup -d "$LOOP"
unmount_image "$MNT"
qemu_check_clean "$W.ext4.qed"
replay ext4 --e2fsck --e2fsck-from="$FS_FLUSHES"

if [ "${CRASH_SWEEP_KILL:-0}" = 1 ]; then
  log "workload (c): fio, then kill -9 of the daemon: the log prefix is replayed"
  new_image kill
  mount_image $MOUNT_OPTS --debug-log-writes="$W.kill.log" "$W.kill.qed" "$MNT"
  fio --output="$TMP/kill.out" --filename="$MNT" --name=kill --ioengine=psync --rw=randwrite \
    --bsrange=4k-64k --size=$((16 * SCALE))M --fsync=2 --loops=100 >/dev/null 2>&1 &
  FIO=$!
  KILL_PIDS+=("$FIO")
  # Kill once the log holds about 8 MiB per scale step (the workload is then well under way).
  for ((i = 0; i < 600; i++)); do
    [ "$(stat -c %s "$W.kill.log")" -ge $((8 * SCALE << 20)) ] && break
    sleep 0.1
  done
  kill -9 "$DAEMON_PID"
  wait "$FIO" || true
  wait_pid_gone "$DAEMON_PID"
  fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT"
  replay kill --allow-truncated
fi

echo "COUNTS: crash_sweep: $TOTAL crash states checked in total, 0 failed"
echo PASS
