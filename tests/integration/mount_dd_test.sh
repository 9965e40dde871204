#!/bin/bash
# dd through the mount, buffered and O_DIRECT; read back; resize; writes past the end grow the
# disk; plain dd (O_TRUNC) and shrinking are refused; after unmount the image is clean for
# qemu-img and identical to a raw reference.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img dd cmp xxd truncate python3

IMG=$TMP/img.qed MNT=$TMP/disk.raw REF=$TMP/ref.raw
qemu-img create -q -f qed "$IMG" 128M
truncate -s 128M "$REF"
head -c 64M /dev/urandom >"$TMP/a"
head -c 32M /dev/urandom >"$TMP/b"

log "mount (mountpoint created)"
mount_image "$IMG" "$MNT"
[ "$(stat -c %s "$MNT")" = $((128 << 20)) ] || fail "size is not the virtual size"

log "plain dd opens with O_TRUNC: refused (it would empty the disk); conv=notrunc works"
if dd if="$TMP/a" of="$MNT" bs=1M count=1 status=none 2>"$TMP/err"; then fail "O_TRUNC accepted"; fi
grep -q "Operation not permitted" "$TMP/err" || fail "unexpected error: $(cat "$TMP/err")"
[ "$(stat -c %s "$MNT")" = $((128 << 20)) ] || fail "size changed after a refused O_TRUNC"
log "buffered dd of 64 MiB"
dd if="$TMP/a" of="$MNT" bs=1M conv=notrunc status=none
dd if="$TMP/a" of="$REF" bs=1M conv=notrunc status=none
log "O_DIRECT dd of 32 MiB at 80 MiB, and 4 KiB direct writes"
dd if="$TMP/b" of="$MNT" bs=1M seek=80 oflag=direct conv=notrunc status=none
dd if="$TMP/b" of="$REF" bs=1M seek=80 conv=notrunc status=none
dd if="$TMP/b" of="$MNT" bs=4k count=64 seek=4097 oflag=direct conv=notrunc status=none
dd if="$TMP/b" of="$REF" bs=4k count=64 seek=4097 conv=notrunc status=none
log "unaligned buffered write"
printf 'unaligned-bytes' | dd of="$MNT" bs=1 seek=1000003 conv=notrunc status=none
printf 'unaligned-bytes' | dd of="$REF" bs=1 seek=1000003 conv=notrunc status=none

log "read back buffered and O_DIRECT"
cmp "$REF" "$MNT" || fail "buffered read differs"
dd if="$MNT" bs=1M iflag=direct status=none | cmp - "$REF" || fail "direct read differs"

log "an O_DIRECT write straddling the end is whole and grows the disk (grow_test.sh has more)"
python3 - "$MNT" <<'PY' || fail "straddling write"
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 8192)
buf.write(b"x" * 8192)
n = os.pwritev(fd, [buf], (128 << 20) - 4096)
assert n == 8192, n
os.close(fd)
assert os.stat(sys.argv[1]).st_size == (128 << 20) + 4096
PY
head -c 8192 /dev/zero | tr '\0' x | dd of="$REF" bs=4096 seek=32767 conv=notrunc status=none

log "shrinking is refused (EPERM), the size stays"
if truncate -s 64M "$MNT" 2>"$TMP/err"; then fail "shrink succeeded"; fi
grep -q "Operation not permitted" "$TMP/err" || fail "unexpected error: $(cat "$TMP/err")"
[ "$(stat -c %s "$MNT")" = $(((128 << 20) + 4096)) ] || fail "size changed after refused shrink"

log "growing resizes the image"
truncate -s 160M "$MNT"
truncate -s 160M "$REF"
[ "$(stat -c %s "$MNT")" = $((160 << 20)) ] || fail "size after grow"
dd if="$TMP/b" of="$MNT" bs=1M count=8 seek=150 conv=notrunc,fsync status=none
dd if="$TMP/b" of="$REF" bs=1M count=8 seek=150 conv=notrunc status=none
cmp "$REF" "$MNT" || fail "content after grow differs"

log "unmount; qemu-img check and compare"
unmount_image "$MNT"
! need_check_set "$IMG" || fail "NEED_CHECK still set after unmount"
qemu_check_clean "$IMG"
[ "$(qemu-img info --output=json "$IMG" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = $((160 << 20)) ] || fail "virtual size"
qemu-img compare -q -f qed -F raw "$IMG" "$REF" || fail "image differs from the reference"

log "mount over the image file itself"
mount_image "$IMG" "$IMG"
[ "$(stat -c %s "$IMG")" = $((160 << 20)) ] || fail "size of the raw view over the image"
cmp "$REF" "$IMG" || fail "raw view over the image differs"
dd if="$TMP/a" of="$IMG" bs=1M count=4 seek=100 oflag=direct conv=notrunc status=none
dd if="$TMP/a" of="$REF" bs=1M count=4 seek=100 conv=notrunc status=none
unmount_image "$IMG"
qemu_check_clean "$IMG"
qemu-img compare -q -f qed -F raw "$IMG" "$REF" || fail "image differs after mounting over itself"
echo PASS
