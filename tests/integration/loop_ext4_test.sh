#!/bin/bash
# A loop device on the mounted file (buffered, then --direct-io=on) carrying ext4: mkfs, files
# written and read back across remounts, e2fsck clean; then the QED image is clean too.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img losetup mkfs.ext4 e2fsck sha256sum

IMG=$TMP/img.qed MNT=$TMP/disk.raw FS=$TMP/fs
qemu-img create -q -f qed "$IMG" 256M
mkdir "$FS"

log "qedfuse && losetup, no sleep in between"
FUSE_MOUNTS+=("$MNT")
"$QEDFUSE" "$IMG" "$MNT" && LOOP=$(losetup -f --show "$MNT")
LOOPS+=("$LOOP")
mkfs.ext4 -q -F "$LOOP"
mount "$LOOP" "$FS"
OTHER_MOUNTS+=("$FS")
head -c 24M /dev/urandom >"$FS/a"
mkdir "$FS/dir"
for i in $(seq 1 50); do head -c $((i * 1000)) /dev/urandom >"$FS/dir/f$i"; done
(cd "$FS" && find . -type f -exec sha256sum {} + | sort -k2) >"$TMP/sums"
umount "$FS"
mount "$LOOP" "$FS"
(cd "$FS" && sha256sum -c --quiet "$TMP/sums") || fail "files differ after remount"
umount "$FS"
e2fsck -fn "$LOOP" >"$TMP/fsck" 2>&1 || { cat "$TMP/fsck"; fail "e2fsck (buffered loop)"; }
losetup -d "$LOOP"

log "loop with --direct-io=on"
LOOP=$(losetup -f --show --direct-io=on "$MNT")
LOOPS+=("$LOOP")
losetup -l -n -O DIO "$LOOP" | grep -q 1 || fail "direct I/O not enabled on $LOOP"
mount "$LOOP" "$FS"
(cd "$FS" && sha256sum -c --quiet "$TMP/sums") || fail "files differ (direct loop)"
head -c 16M /dev/urandom >"$FS/b"
cp -r "$FS/dir" "$FS/dir2"
(cd "$FS" && find . -type f -exec sha256sum {} + | sort -k2) >"$TMP/sums"
umount "$FS"
mount "$LOOP" "$FS"
(cd "$FS" && sha256sum -c --quiet "$TMP/sums") || fail "files differ after direct remount"
umount "$FS"
e2fsck -fn "$LOOP" >"$TMP/fsck" 2>&1 || { cat "$TMP/fsck"; fail "e2fsck (direct loop)"; }
losetup -d "$LOOP"

unmount_image "$MNT"
qemu_check_clean "$IMG"
echo PASS
