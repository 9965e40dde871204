#!/bin/bash
# fallocate --punch-hole / --zero-range through the mount free whole clusters: the range reads as
# zeros, SEEK_HOLE reports it, `qemu-img map` shows no data there, the image file uses less space,
# a later write reuses the freed clusters instead of growing the file, and after unmount
# `qemu-img check` exits 0 (close compacted the freed clusters away). As root and as an
# unprivileged user, with and without the kernel writeback cache, on both aio backends. Then
# fstrim of ext4 on a loop device over the mount, and punched holes of the raw format.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img qemu-io python3 fallocate setpriv losetup mkfs.ext4 fstrim

chmod 755 "$TMP"
M=$((1 << 20))

as_user() {  # WHO COMMAND...: runs COMMAND as root or as nobody
  local who=$1
  shift
  if [ "$who" = root ]; then "$@"; else setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; fi
}

# no_data_in IMG FMT START END: qemu-img map shows no data extent overlapping [START, END).
no_data_in() {
  qemu-img map -U --output=json -f "$2" "$1" >"$TMP/map.json"
  python3 - "$TMP/map.json" "$3" "$4" <<'PY' || fail "qemu-img map shows data in [$3, $4) of $1"
import json, sys
start, end = int(sys.argv[2]), int(sys.argv[3])
for e in json.load(open(sys.argv[1])):
    if e["data"] and e["start"] < end and e["start"] + e["length"] > start:
        sys.exit(f"data extent {e}")
PY
}

# hole_at MNT OFF END WHO: SEEK_HOLE from OFF finds OFF, SEEK_DATA from OFF finds END.
hole_at() {
  as_user "$4" /usr/bin/python3 - "$1" "$2" "$3" <<'PY' || fail "SEEK_HOLE/SEEK_DATA at $2 on $1"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
off, end = int(sys.argv[2]), int(sys.argv[3])
assert os.lseek(fd, off, os.SEEK_HOLE) == off, os.lseek(fd, off, os.SEEK_HOLE)
assert os.lseek(fd, off, os.SEEK_DATA) == end, os.lseek(fd, off, os.SEEK_DATA)
PY
}

for who in root nobody; do
  for wbc in on off; do
    for aio in io_uring threads; do
      log "$who, writeback cache $wbc, aio $aio"
      IMG=$TMP/p-$who-$wbc-$aio.qed MNT=$TMP/p-$who-$wbc-$aio.raw
      qemu-img create -q -f qed "$IMG" 16M
      qemu-io -f qed -c 'write -P 0x11 0 8M' "$IMG" >/dev/null
      touch "$MNT"
      if [ "$who" = nobody ]; then chown 65534:65534 "$IMG" "$MNT"; fi
      FUSE_MOUNTS+=("$MNT")
      as_user "$who" "$QEDFUSE" --writeback-cache="$wbc" --aio="$aio" "$IMG" "$MNT"
      is_mounted "$MNT" || fail "not mounted"
      blocks=$(stat -c %b "$IMG")
      size=$(stat -c %s "$IMG")
      as_user "$who" fallocate --punch-hole --offset $((1 * M)) --length $((2 * M)) "$MNT"
      as_user "$who" fallocate --zero-range --keep-size --offset $((4 * M)) --length $((1 * M)) \
        "$MNT"
      # Unaligned: the partial clusters at both ends are zeroed in place, the rest is freed.
      as_user "$who" fallocate --punch-hole --offset $((6 * M + 512)) --length $((300 << 10)) \
        "$MNT"
      cmp -n $((2 * M)) /dev/zero <(as_user "$who" dd if="$MNT" bs=1M skip=1 \
        count=2 status=none) || fail "punched range does not read as zeros"
      cmp -n $((1 * M)) /dev/zero <(as_user "$who" dd if="$MNT" bs=1M skip=4 \
        count=1 status=none) || fail "zeroed range does not read as zeros"
      hole_at "$MNT" $((1 * M)) $((3 * M)) "$who"
      hole_at "$MNT" $((4 * M)) $((5 * M)) "$who"
      no_data_in "$IMG" qed $((1 * M)) $((3 * M))
      no_data_in "$IMG" qed $((4 * M)) $((5 * M))
      no_data_in "$IMG" qed $((6 * M + 65536)) $((6 * M + (256 << 10)))
      [ "$(stat -c %b "$IMG")" -lt "$blocks" ] || fail "freed clusters still use host space"
      # Once the frees are durable (fsync), new data goes into the freed clusters.
      as_user "$who" /usr/bin/python3 -c "import os,sys; fd=os.open(sys.argv[1], os.O_RDWR); os.fsync(fd)" \
        "$MNT"
      dd if=/dev/urandom of="$TMP/new.bin" bs=1M count=1 status=none
      as_user "$who" dd if="$TMP/new.bin" of="$MNT" bs=1M seek=10 conv=notrunc,fsync status=none
      [ "$(stat -c %s "$IMG")" = "$size" ] || fail "the image grew although freed clusters were free"
      cmp "$TMP/new.bin" <(as_user "$who" dd if="$MNT" bs=1M skip=10 count=1 status=none) ||
        fail "new data does not read back"
      unmount_image "$MNT"
      qemu_check_clean "$IMG"
      [ "$(stat -c %s "$IMG")" -lt "$size" ] || fail "close did not compact the freed clusters"
      qemu-io -f qed -r -c 'read -P 0x11 0 1M' -c 'read -P 0 1M 2M' -c 'read -P 0x11 3M 1M' \
        -c 'read -P 0 4M 1M' -c 'read -P 0x11 5M 1049088' -c 'read -P 0 6291968 307200' \
        -c 'read -P 0x11 6599168 1789440' "$IMG" >"$TMP/qio" 2>&1 || fail "qemu-io read-back"
      [ "$(grep -c '^read ' "$TMP/qio")" = 7 ] || fail "qemu-io: $(cat "$TMP/qio")"
      ! grep -q "Pattern verification failed" "$TMP/qio" || fail "qemu-io: $(cat "$TMP/qio")"
      qemu-img convert -f qed -O raw "$IMG" "$TMP/out.raw"
      cmp <(dd if="$TMP/out.raw" bs=1M skip=10 count=1 status=none) "$TMP/new.bin" ||
        fail "qemu-img reads different new data"
      rm -f "$TMP/out.raw" "$TMP/new.bin"
    done
  done
done

log "fstrim of ext4 on a loop device over the mount"
IMG=$TMP/trim.qed MNT=$TMP/trim.raw FS=$TMP/fs
mkdir "$FS"
qemu-img create -q -f qed "$IMG" 128M
mount_image "$IMG" "$MNT"
LOOP=$(losetup -f --show "$MNT")
LOOPS+=("$LOOP")
mkfs.ext4 -q -F -E nodiscard "$LOOP"
mount "$LOOP" "$FS"
OTHER_MOUNTS+=("$FS")
head -c 48M /dev/urandom >"$FS/big"
sync
used=$(stat -c %b "$IMG")
rm "$FS/big"
sync  # ext4 trims only blocks whose freeing transaction has committed
fstrim "$FS"
umount "$FS"
e2fsck -fn "$LOOP" >"$TMP/fsck" 2>&1 || { cat "$TMP/fsck"; fail "e2fsck"; }
losetup -d "$LOOP"
[ "$(stat -c %b "$IMG")" -lt $((used - 40 * M / 512)) ] || fail "fstrim freed no host space"
unmount_image "$MNT"
qemu_check_clean "$IMG"
size=$(stat -c %s "$IMG")
[ "$size" -lt $((40 * M)) ] || fail "close left the trimmed clusters in the file ($size bytes)"

log "raw format: punched ranges are holes"
RAW=$TMP/disk.img MNT=$TMP/rawdisk.raw
head -c $((8 * M)) /dev/urandom >"$RAW"
mount_image --format=raw "$RAW" "$MNT"
fallocate --punch-hole --offset $((2 * M)) --length $((1 * M)) "$MNT"
hole_at "$MNT" $((2 * M)) $((3 * M)) root
no_data_in "$RAW" raw $((2 * M)) $((3 * M))
unmount_image "$MNT"
echo PASS
