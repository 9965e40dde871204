#!/bin/bash
# -o remount: what mount(8) runs for `mount -o remount,ro MOUNTPOINT` (through mount.fuse3:
# `qedfuse IMAGE MOUNTPOINT -o ro,nosuid,nodev,relatime,remount,user_id=0,group_id=0,...`).
# ro writes back what the kernel caches and makes the live mount read-only (EROFS for writers)
# unless a writer has it open; rw makes it writable again if the daemon opened the image
# read-write. Flags like nosuid survive. Refusals name the reason: nothing mounted, a writer,
# an image opened read-only, an unprivileged user. (mount(8) itself: fstab_test.sh.)
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img losetup findmnt python3

IMG=$TMP/img.qed MNT=$TMP/disk.raw
qemu-img create -q -f qed "$IMG" 16M

opts() { findmnt -n -o OPTIONS --mountpoint "$MNT"; }

for wb in on off; do
  log "remount,ro and back to rw (--writeback-cache=$wb)"
  mount_image --writeback-cache="$wb" --need-check-delay=600000 -o nosuid,noexec "$IMG" "$MNT"
  exec 7<>"$MNT"
  python3 -c 'import os; os.pwrite(7, b"written-before-remount", 4096)'
  exec 7>&-
  "$QEDFUSE" "$IMG" "$MNT" -o remount,ro
  opts | grep -q '^ro,' || fail "not read-only after remount,ro: $(opts)"
  opts | grep -q 'noexec' || fail "noexec lost by the remount: $(opts)"
  if dd if=/dev/zero of="$MNT" bs=4k count=1 conv=notrunc status=none 2>"$TMP/err"; then
    fail "a write succeeded on the read-only remount"
  fi
  grep -q "Read-only file system" "$TMP/err" || fail "expected EROFS, got: $(cat "$TMP/err")"
  [ "$(dd if="$MNT" bs=1 skip=4096 count=22 status=none)" = written-before-remount ] ||
    fail "reading the read-only remount"
  # What was written before is in the image now (read beside the mount, shared).
  qemu-img convert -U -f qed -O raw "$IMG" "$TMP/out.raw"
  [ "$(dd if="$TMP/out.raw" bs=1 skip=4096 count=22 status=none)" = written-before-remount ] ||
    fail "the data was not written back at remount,ro"

  # The exact option list mount(8) and mount.fuse3 pass for `mount -o remount,rw`.
  "$QEDFUSE" "$IMG" "$MNT" -o "rw,nosuid,nodev,noexec,relatime,remount,user_id=0,group_id=0,default_permissions"
  opts | grep -q '^rw,' || fail "not writable after remount,rw: $(opts)"
  dd if=/dev/zero of="$MNT" bs=4k count=1 seek=8 conv=notrunc,fsync status=none ||
    fail "a write failed after remount,rw"
  unmount_image "$MNT"
  qemu_check_clean "$IMG"
done

log "remount,ro is refused while the file is open for writing (a process, a loop device)"
mount_image "$IMG" "$MNT"
exec 7<>"$MNT"
expect_refused "cannot remount $MNT read-only: it is open for writing (by a process)" \
  "$QEDFUSE" -o remount,ro "$IMG" "$MNT"
exec 7>&-
LOOP=$(losetup -f --show "$MNT")
LOOPS+=("$LOOP")
expect_refused "it is open for writing (by loop device $LOOP)" "$QEDFUSE" -o remount,ro "$IMG" "$MNT"
losetup -d "$LOOP"
opts | grep -q '^rw,' || fail "a refused remount changed the mount: $(opts)"

log "settings that apply at mount time only are reported as unchanged"
"$QEDFUSE" -o remount,ro,cache=none "$IMG" "$MNT" 2>"$TMP/err"
grep -qF "stay as they are: cache=none" "$TMP/err" || fail "no note about cache=none: $(cat "$TMP/err")"
opts | grep -q '^ro,' || fail "not read-only"
unmount_image "$MNT"

log "remount,rw of an image opened read-only is refused"
mount_image -r "$IMG" "$MNT"
expect_refused "was opened read-only when it was mounted" "$QEDFUSE" -o remount,rw "$IMG" "$MNT"
opts | grep -q '^ro,' || fail "the refused remount changed the mount"
unmount_image "$MNT"

log "remount of something that is not a qedfuse mount"
touch "$MNT"
expect_refused "cannot remount $MNT: nothing is mounted there" "$QEDFUSE" -o remount,ro "$IMG" "$MNT"
rm "$MNT"

log "options a remount brings along are refused without remount"
expect_refused "unknown mount option 'user_id=0'" "$QEDFUSE" -o user_id=0 "$IMG" "$MNT"
[ ! -e "$MNT" ] || fail "mountpoint created for a bad option"

log "an unprivileged user cannot remount (fusermount3 cannot); the message says what to do"
prepare_user_image
mount_user_image
expect_refused "only root may remount (fusermount3 cannot); unmount it with \`fusermount3 -u $USER_MNT\`" \
  as_user "$QEDFUSE" -o remount,ro "$USER_IMG" "$USER_MNT"
as_user dd if=/dev/zero of="$USER_MNT" bs=4k count=1 conv=notrunc,fsync status=none ||
  fail "the mount changed after a refused remount"
as_user fusermount3 -u "$USER_MNT"
wait_pid_gone "$DAEMON_PID"
qemu_check_clean "$USER_IMG"
echo PASS
