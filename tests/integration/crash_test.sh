#!/bin/bash
# kill -9 of the daemon in the middle of a workload that fsyncs: the dead mount is lazily
# unmounted, the next mount repairs the dirty image and says so, every block whose fsync was
# acknowledged is intact, and qemu-img check finds no corruption. Leaked clusters (exit code 3)
# are the expected cost of a crash between allocation and the L2 update, as with QEMU.
# Once with buffered writes (kernel write-back cache), once with cache=none.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img python3 xxd

IMG=$TMP/img.qed MNT=$TMP/disk.raw
WRITER=$(dirname "$0")/crash_writer.py
NBLOCKS=1024  # 64 MiB of 64 KiB blocks

run_round() {
  local round=$1
  shift
  log "round $round: writer running, then kill -9 ($*)"
  mount_image --need-check-delay=600000 "$@" "$IMG" "$MNT"
  python3 "$WRITER" write "$MNT" "$TMP/log$round" "$NBLOCKS" >"$TMP/writer$round.out" 2>&1 &
  local writer=$! i n
  KILL_PIDS+=("$writer")
  for ((i = 0; i < 600; i++)); do
    n=$(grep -c '^ack' "$TMP/log$round" 2>/dev/null) || true
    [ "${n:-0}" -ge 300 ] && break
    sleep 0.1
  done
  kill -9 "$DAEMON_PID"
  wait "$writer" || true
  wait_pid_gone "$DAEMON_PID"
  need_check_set "$IMG" || fail "NEED_CHECK not set after a crash during allocating writes"
  fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT"
  ! is_mounted "$MNT" || fail "dead mount still present"

  log "round $round: remount repairs and reports it"
  "$QEDFUSE" "$IMG" "$MNT" 2>"$TMP/mount$round.err"
  grep -q "not closed cleanly; repaired" "$TMP/mount$round.err" ||
    fail "repair not reported: $(cat "$TMP/mount$round.err")"
  echo "reported: $(cat "$TMP/mount$round.err")"
  ! need_check_set "$IMG" || fail "NEED_CHECK still set after the repairing mount"
  python3 "$WRITER" verify "$MNT" "$TMP/log$round" "$NBLOCKS" || fail "acknowledged data lost"
  unmount_image "$MNT"
  qemu_check_no_corruption "$IMG"
}

qemu-img create -q -f qed "$IMG" 96M
run_round 1
run_round 2 --cache=none
echo PASS
