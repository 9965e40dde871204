#!/bin/bash
# /etc/fstab-style mounts through mount(8) and mount.fuse3, which runs
# `qedfuse IMAGE MOUNTPOINT -o OPTS` (options after the positionals, fstab-only options mixed
# in); umount(8) unmounts; `mount -o remount,ro|rw` switches the live mount. Uses `mount -T FILE`
# so the real /etc/fstab is not touched.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img mount umount mount.fuse3 cmp

IMG=$TMP/img.qed MNT=$TMP/disk.raw
qemu-img create -q -f qed "$IMG" 32M
touch "$MNT"
head -c 4M /dev/urandom >"$TMP/data"

log "mount.fuse3 IMAGE MOUNTPOINT -t fuse.qedfuse -o fstab options (what mount(8) runs)"
FUSE_MOUNTS+=("$MNT")
PATH="$(dirname "$QEDFUSE"):$PATH" mount.fuse3 "$IMG" "$MNT" -t fuse.qedfuse \
  -o rw,defaults,noauto,_netdev,nofail,x-systemd.automount
is_mounted "$MNT" || fail "not mounted"
dd if="$TMP/data" of="$MNT" bs=1M conv=notrunc status=none
pid=$(daemon_pids "$MNT" | head -n1)
umount "$MNT"
wait_pid_gone "$pid"
qemu_check_clean "$IMG"

# mount(8) runs its helpers without PATH, so /bin/sh uses its default search path, which starts
# with /usr/local/sbin: a temporary link there stands in for an installed qedfuse.
LINK=/usr/local/sbin/qedfuse
if [ -e "$LINK" ] || [ -L "$LINK" ]; then
  [ "$(readlink -f "$LINK")" = "$(readlink -f "$QEDFUSE")" ] ||
    skip "$LINK exists and is not this build; cannot test mount(8) with this build"
else
  mkdir -p /usr/local/sbin
  REMOVE_FILES+=("$LINK")
  ln -s "$(readlink -f "$QEDFUSE")" "$LINK"
fi
printf '%s %s fuse.qedfuse defaults,noauto,_netdev,nofail,x-systemd.automount 0 0\n' \
  "$IMG" "$MNT" >"$TMP/fstab"

log "mount -T fstab MOUNTPOINT"
mount -T "$TMP/fstab" "$MNT"
is_mounted "$MNT" || fail "not mounted"
[ "$(findmnt -n -o FSTYPE --mountpoint "$MNT")" = fuse.qedfuse ] || fail "fstype"
[ "$(findmnt -n -o SOURCE --mountpoint "$MNT")" = "$IMG" ] || fail "source"
cmp -n $((4 << 20)) "$TMP/data" "$MNT" || fail "content"

# mount(8) hands a remount to mount.fuse3, which runs
# `qedfuse IMAGE MOUNTPOINT -o ro,nosuid,nodev,relatime,remount,user_id=0,group_id=0,...`.
log "mount -o remount,ro MOUNTPOINT, then remount,rw (with and without the fstab line)"
mount -o remount,ro "$MNT"
findmnt -n -o OPTIONS --mountpoint "$MNT" | grep -q '^ro,' || fail "remount,ro"
if dd if=/dev/zero of="$MNT" bs=4k count=1 conv=notrunc 2>/dev/null; then fail "ro write worked"; fi
mount -T "$TMP/fstab" -o remount,rw "$MNT"
findmnt -n -o OPTIONS --mountpoint "$MNT" | grep -q '^rw,' || fail "remount,rw"
dd if="$TMP/data" of="$MNT" bs=1M conv=notrunc,fsync status=none || fail "write after remount,rw"
mount -T "$TMP/fstab" -o remount,ro "$MNT"
findmnt -n -o OPTIONS --mountpoint "$MNT" | grep -q '^ro,' || fail "remount,ro through fstab"
cmp -n $((4 << 20)) "$TMP/data" "$MNT" || fail "content after remounts"
pid=$(daemon_pids "$MNT" | head -n1)
umount "$MNT"
wait_pid_gone "$pid"
qemu_check_clean "$IMG"

log "fstab with ro"
printf '%s %s fuse.qedfuse ro,noauto,user 0 0\n' "$IMG" "$MNT" >"$TMP/fstab"
mount -T "$TMP/fstab" "$MNT"
[ "$(stat -c %a "$MNT")" = 400 ] || fail "ro via fstab"
cmp -n $((4 << 20)) "$TMP/data" "$MNT" || fail "content (ro)"
if dd if=/dev/zero of="$MNT" bs=4k count=1 conv=notrunc 2>/dev/null; then fail "ro write worked"; fi
pid=$(daemon_pids "$MNT" | head -n1)
umount "$MNT"
wait_pid_gone "$pid"

log "mount -t fuse.qedfuse with options"
mount -t fuse.qedfuse -o cache=none,nosuid "$IMG" "$MNT"
findmnt -n -o OPTIONS --mountpoint "$MNT" | grep -q nosuid || fail "nosuid not applied"
cmp -n $((4 << 20)) "$TMP/data" "$MNT" || fail "content (cache=none)"
pid=$(daemon_pids "$MNT" | head -n1)
umount "$MNT"
wait_pid_gone "$pid"
qemu_check_clean "$IMG"
echo PASS
