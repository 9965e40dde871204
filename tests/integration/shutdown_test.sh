#!/bin/bash
# Orderly shutdown: SIGTERM unmounts and exits once the file is free (while it is open the daemon
# keeps serving, after writing back what the kernel caches; a later signal tries again), and
# fusermount3 -u ends the daemon too; either way NEED_CHECK is cleared and the image left clean.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img xxd cmp python3

IMG=$TMP/img.qed MNT=$TMP/disk.raw
qemu-img create -q -f qed "$IMG" 64M
head -c 8M /dev/urandom >"$TMP/data"

log "SIGTERM twice on a foreground daemon with a file still open and dirty in the kernel cache"
FUSE_MOUNTS+=("$MNT")
touch "$MNT"
"$QEDFUSE" -f --need-check-delay=600000 "$IMG" "$MNT" 2>"$TMP/log" &
pid=$!
KILL_PIDS+=("$pid")
for ((i = 0; i < 600; i++)); do
  is_mounted "$MNT" && [ "$(stat -c %s "$MNT")" = $((64 << 20)) ] && break
  sleep 0.1
done
is_mounted "$MNT" || fail "foreground mount did not appear"
dd if="$TMP/data" of="$MNT" bs=1M conv=notrunc,fsync status=none
need_check_set "$IMG" || fail "NEED_CHECK not set while allocating writes are recent"
# Buffered data, fd kept open: with the write-back cache it may live only in the kernel.
exec 7<>"$MNT"
python3 -c 'import os; os.pwrite(7, b"still-cached-in-the-kernel", 10 << 20)'
kill -TERM "$pid"
kill -TERM "$pid"
wait_for_line "$TMP/log" "is still in use"
kill -0 "$pid" || fail "the daemon exited while its file is open: $(cat "$TMP/log")"
qemu-img convert -U -f qed -O raw "$IMG" "$TMP/out.raw"
[ "$(dd if="$TMP/out.raw" bs=1 skip=$((10 << 20)) count=26 status=none)" = "still-cached-in-the-kernel" ] ||
  fail "kernel-cached write was not written back at SIGTERM"
exec 7>&-
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
[ "$rc" = 0 ] || fail "daemon exited with $rc after SIGTERM: $(cat "$TMP/log")"
! is_mounted "$MNT" || fail "still mounted after SIGTERM"
! need_check_set "$IMG" || fail "NEED_CHECK still set after SIGTERM"
qemu_check_clean "$IMG"
qemu-img convert -f qed -O raw "$IMG" "$TMP/out.raw"
cmp -n $((8 << 20)) "$TMP/data" "$TMP/out.raw" || fail "data lost"
[ "$(dd if="$TMP/out.raw" bs=1 skip=$((10 << 20)) count=26 status=none)" = "still-cached-in-the-kernel" ] ||
  fail "kernel-cached write lost"
# The two signals may be merged by the kernel; a second attempt while the first runs is absorbed.
grep -q "already trying to unmount" "$TMP/log" && echo "second signal arrived during the first attempt"

log "fusermount3 -u of a daemonised mount"
mount_image --need-check-delay=600000 "$IMG" "$MNT"
dd if="$TMP/data" of="$MNT" bs=1M seek=32 conv=notrunc status=none
need_check_set "$IMG" || fail "NEED_CHECK not set while allocating writes are recent"
unmount_image "$MNT"
! need_check_set "$IMG" || fail "NEED_CHECK still set after fusermount3 -u"
qemu_check_clean "$IMG"
qemu-img convert -f qed -O raw "$IMG" "$TMP/out.raw"
cmp -n $((8 << 20)) "$TMP/data" <(dd if="$TMP/out.raw" bs=1M skip=32 status=none) ||
  fail "data lost at fusermount3 -u"

log "SIGTERM of a daemonised mount"
mount_image "$IMG" "$MNT"
kill -TERM "$DAEMON_PID"
wait_pid_gone "$DAEMON_PID"
! is_mounted "$MNT" || fail "still mounted after SIGTERM"
! need_check_set "$IMG" || fail "NEED_CHECK set"
qemu_check_clean "$IMG"
echo PASS
