#!/bin/bash
# Read-only mounts (-o ro, --read-only): reads work, every kind of write fails with EROFS, and not
# one byte of the image changes, not even for a dirty image (no repair on a read-only open).
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img qemu-io sha256sum python3 xxd

IMG=$TMP/img.qed MNT=$TMP/disk.raw
qemu-img create -q -f qed "$IMG" 32M
qemu-io -f qed -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 5M 64k' "$IMG" >/dev/null
qemu-img convert -f qed -O raw "$IMG" "$TMP/expect.raw"

check_read_only_mount() {
  local before after
  before=$(sha256sum <"$IMG")
  mount_image "$@" "$IMG" "$MNT"
  [ "$(stat -c %a "$MNT")" = 400 ] || fail "mode of a read-only mount is not 0400"
  cmp "$TMP/expect.raw" "$MNT" || fail "read-only content differs"
  python3 - "$MNT" <<'PY' || fail "write attempts did not all fail with EROFS"
import errno, os, sys
path = sys.argv[1]
def expect_erofs(what, fn):
    try:
        fn()
    except OSError as e:
        assert e.errno == errno.EROFS, f"{what}: {e}"
        return
    raise AssertionError(f"{what} succeeded")
expect_erofs("open O_WRONLY", lambda: os.open(path, os.O_WRONLY))
expect_erofs("open O_RDWR|O_DIRECT", lambda: os.open(path, os.O_RDWR | os.O_DIRECT))
expect_erofs("truncate", lambda: os.truncate(path, 64 << 20))
fd = os.open(path, os.O_RDONLY)
os.fsync(fd)  # fsync of a read-only file is harmless
os.close(fd)
PY
  if dd if=/dev/zero of="$MNT" bs=4k count=1 conv=notrunc 2>"$TMP/err"; then fail "dd succeeded"; fi
  grep -q "Read-only file system" "$TMP/err" || fail "dd: $(cat "$TMP/err")"
  unmount_image "$MNT"
  after=$(sha256sum <"$IMG")
  [ "$before" = "$after" ] || fail "a read-only mount changed the image"
}

log "-o ro"
check_read_only_mount -o ro
log "--read-only"
check_read_only_mount --read-only

log "dirty image, read-only: mounts, is not repaired, stays byte-identical"
(qemu-io -f qed -c 'write -P 0x11 8M 64k' -c abort "$IMG" >/dev/null 2>&1 || true) 2>/dev/null
need_check_set "$IMG" || fail "qemu-io abort did not leave NEED_CHECK set"
qemu-img convert -U -f qed -O raw "$IMG" "$TMP/expect.raw"
before=$(sha256sum <"$IMG")
FUSE_MOUNTS+=("$MNT")
"$QEDFUSE" -o ro "$IMG" "$MNT" 2>"$TMP/err"
grep -q "not closed cleanly" "$TMP/err" || fail "dirty read-only open not reported: $(cat "$TMP/err")"
cmp "$TMP/expect.raw" "$MNT" || fail "dirty read-only content differs"
unmount_image "$MNT"
[ "$before" = "$(sha256sum <"$IMG")" ] || fail "read-only mount of a dirty image changed it"
need_check_set "$IMG" || fail "NEED_CHECK cleared by a read-only mount"
echo PASS
