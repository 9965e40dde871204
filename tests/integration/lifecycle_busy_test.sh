#!/bin/bash
# SIGTERM/SIGINT while the mounted file is in use: the daemon writes back the kernel cache, finds
# the mount busy (a non-lazy unmount fails with EBUSY), says so and keeps serving; the user of the
# file notices nothing (ext4 on a loop device stays writable and fsck-clean). Once the file is
# free, the next signal unmounts and the daemon exits with a clean image. For each aio backend,
# with and without the kernel write-back cache; fio verify=crc32c through repeated signals; then as
# an unprivileged user (fusermount3), with an open file as the user.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img qemu-io losetup mkfs.ext4 e2fsck findmnt python3

FS=$TMP/fs
mkdir "$FS"

busy_loop_ext4() {  # AIO WRITEBACK_CACHE
  local aio=$1 wb=$2 pid loop
  local img=$TMP/$aio-$wb.qed mnt=$TMP/$aio-$wb.raw log=$TMP/$aio-$wb.log
  log "busy: loop device + ext4, --aio=$aio --writeback-cache=$wb"
  qemu-img create -q -f qed "$img" 128M
  mount_image --aio="$aio" --writeback-cache="$wb" --log-file="$log" "$img" "$mnt"
  pid=$DAEMON_PID
  loop=$(losetup -f --show "$mnt")
  LOOPS+=("$loop")
  mkfs.ext4 -q -F "$loop"
  mount "$loop" "$FS"
  OTHER_MOUNTS+=("$FS")
  head -c 4M /dev/urandom >"$FS/before"
  sync

  kill -TERM "$pid"
  wait_for_line "$log" "still in use (loop device $loop); keeping it mounted"
  kill -0 "$pid" || fail "the daemon exited although its mount is in use"
  is_mounted "$mnt" || fail "$mnt was unmounted although it is in use"
  # The filesystem on top keeps working: no I/O error, not remounted read-only.
  head -c 4M /dev/urandom >"$FS/after"
  sync
  findmnt -n -o OPTIONS --mountpoint "$FS" | grep -q '^rw' || fail "ext4 went read-only"
  (cd "$FS" && sha256sum before after >"$TMP/sums")

  # A later signal tries again (and the mount is still busy).
  kill -INT "$pid"
  wait_for_line "$log" "still in use (loop device $loop)" 2
  kill -0 "$pid" || fail "the daemon exited on the second signal"

  umount "$FS"
  e2fsck -fn "$loop" >"$TMP/fsck" 2>&1 || { cat "$TMP/fsck"; fail "e2fsck after busy SIGTERM"; }
  mount -o ro "$loop" "$FS"
  (cd "$FS" && sha256sum -c --quiet "$TMP/sums") || fail "ext4 data changed"
  umount "$FS"
  losetup -d "$loop"
  kill -TERM "$pid"
  wait_pid_gone "$pid"
  ! is_mounted "$mnt" || fail "still mounted after SIGTERM of a free mount"
  grep -q "unmounted $mnt" "$log" || fail "no 'unmounted' in the log: $(cat "$log")"
  qemu_check_clean "$img"
}

busy_loop_ext4 io_uring on
busy_loop_ext4 io_uring off
busy_loop_ext4 threads on
busy_loop_ext4 threads off

log "busy: data cached in the kernel is written back at the signal even though the mount stays"
IMG=$TMP/cached.qed MNT=$TMP/cached.raw LOG=$TMP/cached.log
qemu-img create -q -f qed "$IMG" 16M
mount_image --writeback-cache=on --need-check-delay=600000 --log-file="$LOG" "$IMG" "$MNT"
pid=$DAEMON_PID
exec 7<>"$MNT"
python3 -c 'import os; os.pwrite(7, b"cached-in-the-kernel", 1 << 20)'
kill -TERM "$pid"
wait_for_line "$LOG" "still in use"
# The daemon has the data: read the image file beside the mount (shared, read-only).
qemu-img convert -U -f qed -O raw "$IMG" "$TMP/cached.out"
[ "$(dd if="$TMP/cached.out" bs=1 skip=$((1 << 20)) count=20 status=none)" = \
  "cached-in-the-kernel" ] || fail "the kernel cache was not written back at SIGTERM"
exec 7>&-
kill -TERM "$pid"
wait_pid_gone "$pid"
! is_mounted "$MNT" || fail "still mounted"
! need_check_set "$IMG" || fail "NEED_CHECK still set after the unmount"
qemu_check_clean "$IMG"

log "busy: fio verify=crc32c keeps running through repeated signals (O_DIRECT and buffered)"
IMG=$TMP/fio.qed MNT=$TMP/fio.raw LOG=$TMP/fio.log
qemu-img create -q -f qed "$IMG" 64M
require_tools fio
mount_image --log-file="$LOG" "$IMG" "$MNT"
pid=$DAEMON_PID
exec 8<"$MNT"  # busy for certain, even once fio has closed the file
fio --output="$TMP/fio.out" --filename="$MNT" --size=32M --ioengine=libaio --iodepth=16 \
  --bs=4k --rw=randwrite --verify=crc32c --verify_fatal=1 --randrepeat=0 --time_based --runtime=3 \
  --name=direct --direct=1 --name=buffered --direct=0 --offset=32M &
fio_pid=$!
for i in 1 2 3 4 5; do
  sleep 0.3
  kill -0 "$fio_pid" 2>/dev/null || break
  kill -TERM "$pid"
done
rc=0
wait "$fio_pid" || rc=$?
[ "$rc" = 0 ] || { cat "$TMP/fio.out"; fail "fio failed ($rc) while the daemon was signalled"; }
wait_for_line "$LOG" "still in use"
kill -0 "$pid" || fail "the daemon exited while the file was open"
exec 8<&-
# An attempt started before the close may still find the file busy: signal until it is gone.
for ((i = 0; i < 60; i++)); do
  kill -TERM "$pid" 2>/dev/null || break
  sleep 1
done
wait_pid_gone "$pid"
! is_mounted "$MNT" || fail "still mounted"
qemu_check_clean "$IMG"

log "busy: unprivileged user, a file kept open"
prepare_user_image
U=$TMP/user
mount_user_image --log-file="$U/log"
pid=$DAEMON_PID
# The holder writes its pid once it has the file open (as_user runs in a subshell here).
as_user bash -c 'exec 7<>"$1"; echo "pid $$" >"$2"; exec sleep 600' - "$USER_MNT" "$U/held" &
wait_for_line "$U/held" pid
holder=$(awk '{print $2}' "$U/held")
KILL_PIDS+=("$holder")
kill -TERM "$pid"
wait_for_line "$U/log" "still in use (an open file or a mapping); keeping it mounted"
kill -0 "$pid" || fail "the unprivileged daemon exited although its mount is in use"
is_mounted "$USER_MNT" || fail "unmounted although in use"
as_user dd if=/dev/zero of="$USER_MNT" bs=4k count=4 conv=notrunc,fsync status=none ||
  fail "writing the busy mount failed"
kill "$holder"
wait_pid_gone "$holder"
kill -TERM "$pid"
wait_pid_gone "$pid"
! is_mounted "$USER_MNT" || fail "still mounted after SIGTERM"
qemu_check_clean "$USER_IMG"

log "unprivileged fusermount3 -u still ends the daemon cleanly"
mount_user_image --log-file="$U/log"
pid=$DAEMON_PID
as_user fusermount3 -u "$USER_MNT"
wait_pid_gone "$pid"
qemu_check_clean "$USER_IMG"
echo PASS
