#!/bin/bash
# Page cache coherence between buffered and O_DIRECT descriptors of the mounted file, with the
# kernel write-back cache (default options) and with --cache=none:
#  (a) data written buffered through one fd and not yet fsynced (the fd stays open, so nothing
#      forces writeback) is what an O_DIRECT read through another fd returns;
#  (b) an O_DIRECT write over a range that another, still open fd wrote buffered (dirty or
#      cached pages) wins: a buffered read on a fresh fd, a read after dropping the page cache,
#      and the image after unmount (qemu-io as the oracle) all show the O_DIRECT data.
# The O_DIRECT fd is opened before the buffered I/O, like a loop device's or a VM's long-lived
# descriptor: opening a file (without FOPEN_KEEP_CACHE) writes back and drops its cached pages,
# which would hide the problem if the O_DIRECT fd were opened last.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img qemu-io python3

IMG=$TMP/img.qed MNT=$TMP/disk.raw
MiB=$((1 << 20))

cat >"$TMP/coh.py" <<'PY'
import mmap, os, sys

def pattern(byte, n):
    return bytes([byte]) * n

def direct_buf(n):
    return mmap.mmap(-1, n)  # page aligned, as O_DIRECT needs

def direct_read_fd(fd, off, n):
    buf = direct_buf(n)
    got = os.preadv(fd, [buf], off)
    assert got == n, f"short O_DIRECT read: {got}"
    return bytes(buf)

def direct_write_fd(fd, off, byte, n):
    buf = direct_buf(n)
    buf.write(pattern(byte, n))
    got = os.pwritev(fd, [buf], off)
    assert got == n, f"short O_DIRECT write: {got}"

def direct_read(path, off, n):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        return direct_read_fd(fd, off, n)
    finally:
        os.close(fd)

def buffered_read(path, off, n):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, off)
    finally:
        os.close(fd)

def check(what, data, byte):
    want = pattern(byte, len(data))
    if data != want:
        bad = next(i for i in range(len(data)) if data[i] != byte)
        sys.exit(f"{what}: byte {bad} is {data[bad]:#04x}, expected {byte:#04x}")

mode, path, off, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode == "dirty-then-direct-read":
    # (a): buffered write, no fsync, writer still open; O_DIRECT read on another fd.
    d = os.open(path, os.O_RDWR | os.O_DIRECT)
    w = os.open(path, os.O_RDWR)
    os.pwrite(w, pattern(0x11, n), off)  # old content, also cached
    os.fsync(w)
    check("O_DIRECT read after fsync", direct_read_fd(d, off, n), 0x11)
    os.pwrite(w, pattern(0xA1, n), off)
    check("O_DIRECT read after an unsynced buffered write", direct_read_fd(d, off, n), 0xA1)
    os.close(w)
    os.close(d)
elif mode == "dirty-then-direct-write":
    # (b): pattern A buffered and left dirty in an open fd; pattern B by O_DIRECT on another
    # fd; then A's fd is closed (which writes back whatever is still dirty).
    d = os.open(path, os.O_RDWR | os.O_DIRECT)
    w = os.open(path, os.O_RDWR)
    os.pwrite(w, pattern(0xAA, n), off)
    direct_write_fd(d, off, 0xBB, n)
    check("buffered read on the writer fd after the O_DIRECT write", os.pread(w, n, off), 0xBB)
    os.close(w)
    check("buffered read on a fresh fd", buffered_read(path, off, n), 0xBB)
    check("O_DIRECT read on the O_DIRECT fd", direct_read_fd(d, off, n), 0xBB)
    os.close(d)
elif mode == "cached-then-direct-write":
    # (b'): pattern A written and fsynced, its pages cached by a reader that stays open;
    # pattern B by O_DIRECT; readers must not see A any more.
    d = os.open(path, os.O_RDWR | os.O_DIRECT)
    w = os.open(path, os.O_RDWR)
    os.pwrite(w, pattern(0xAC, n), off)
    os.fsync(w)
    os.pread(w, n, off)
    direct_write_fd(d, off, 0xBC, n)
    check("buffered read on the open fd after the O_DIRECT write", os.pread(w, n, off), 0xBC)
    os.close(w)
    check("buffered read on a fresh fd", buffered_read(path, off, n), 0xBC)
    os.close(d)
elif mode == "expect":
    check(f"buffered read at {off}", buffered_read(path, off, n), int(sys.argv[5], 0))
else:
    sys.exit(f"unknown mode {mode}")
PY

coh() { python3 "$TMP/coh.py" "$@" || fail "$1 ($*)"; }

# The image after unmount, read by QEMU: LEN bytes at OFF must all be BYTE.
image_has() {
  local out
  out=$(qemu-io -f qed -r -c "read -P $3 $1 $2" "$IMG" 2>&1) || fail "qemu-io: $out"
  grep -q "Pattern verification failed" <<<"$out" && fail "image at $1+$2 is not $3: $out"
  grep -q "read $2/$2 bytes" <<<"$out" || fail "qemu-io: $out"
}

run_case() {  # MOUNT-OPTIONS...
  log "mount $*"
  rm -f "$IMG"
  qemu-img create -q -f qed "$IMG" 64M
  mount_image "$@" "$IMG" "$MNT"
  log "(a) unsynced buffered write, O_DIRECT read on another fd"
  coh dirty-then-direct-read "$MNT" $((1 * MiB)) $MiB
  log "(b) O_DIRECT write over dirty buffered data of an open fd"
  coh dirty-then-direct-write "$MNT" $((4 * MiB)) $MiB
  log "(b') O_DIRECT write over cached (clean) data of an open fd"
  coh cached-then-direct-write "$MNT" $((8 * MiB)) $((256 << 10))
  log "after dropping the page cache"
  sync
  echo 3 >/proc/sys/vm/drop_caches
  coh expect "$MNT" $((1 * MiB)) $MiB 0xA1
  coh expect "$MNT" $((4 * MiB)) $MiB 0xBB
  coh expect "$MNT" $((8 * MiB)) $((256 << 10)) 0xBC
  unmount_image "$MNT"
  log "after unmount, read by qemu-io"
  image_has $((1 * MiB)) $MiB 0xa1
  image_has $((4 * MiB)) $MiB 0xbb
  image_has $((8 * MiB)) $((256 << 10)) 0xbc
  qemu_check_clean "$IMG"
}

run_case
run_case --cache=none
echo PASS
