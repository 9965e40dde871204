#!/bin/bash
# SEEK_DATA/SEEK_HOLE on the mount agree with `qemu-img map` (hole = reads as zeros and holds no
# data: "zero": true, "data": false), for data, zero clusters, unallocated space and a hole
# punched through the mount; punched ranges read back as zeros and the image stays clean.
# fallocate past the end grows the disk; unsupported modes fail with EOPNOTSUPP. With the kernel
# write-back cache, data written (or mmap-written) into a hole or past the end and not yet
# written back is found by SEEK_DATA on the same and on another descriptor: as root and as an
# unprivileged user on their own mount, on both aio backends.
QEDFUSE_TEST_USER_MOUNTS=1
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img qemu-io python3 fallocate
enable_user_mounts

IMG=$TMP/img.qed MNT=$TMP/disk.raw
qemu-img create -q -f qed "$IMG" 64M
qemu-io -f qed -c 'write -P 0xab 0 64k' -c 'write -P 0xcd 70000 5000' -c 'write -z 1M 128k' \
  -c 'write -P 0x11 4M 1M' -c 'write -P 0 8M 64k' -c 'write -z 3M 64k' \
  -c 'write -P 0x22 63M 1M' "$IMG" >/dev/null

# compare_with_map: lseek answers on the mount vs the extents of `qemu-img map`.
compare_with_map() {
  qemu-img map -U --output=json -f qed "$IMG" >"$TMP/map.json"
  python3 - "$MNT" "$TMP/map.json" <<'PY'
import errno, json, os, sys
path, map_path = sys.argv[1], sys.argv[2]
extents = json.load(open(map_path))
size = os.stat(path).st_size
# The image's size is the file's rounded up to 512.
assert extents[-1]["start"] + extents[-1]["length"] == (size + 511) // 512 * 512, \
    "map does not cover the file"
def is_hole(e):
    return e["zero"] and not e["data"]
def expected(off, whence):
    for e in extents:
        if e["start"] + e["length"] <= off or e["start"] >= size:
            continue
        if is_hole(e) == (whence == os.SEEK_HOLE):
            return max(off, e["start"])
    return size if whence == os.SEEK_HOLE else None
probes = set()
for e in extents:
    for off in (e["start"], e["start"] + 1, e["start"] + e["length"] // 2,
                e["start"] + e["length"] - 1):
        if 0 <= off < size:
            probes.add(off)
fd = os.open(path, os.O_RDONLY)
checked = 0
for off in sorted(probes):
    for whence in (os.SEEK_DATA, os.SEEK_HOLE):
        want = expected(off, whence)
        try:
            got = os.lseek(fd, off, whence)
        except OSError as e:
            assert e.errno == errno.ENXIO, e
            got = None
        assert got == want, f"lseek({off}, {'DATA' if whence == os.SEEK_DATA else 'HOLE'}) = {got}, qemu-img map says {want}"
        checked += 1
try:
    os.lseek(fd, size, os.SEEK_DATA)
    raise AssertionError("SEEK_DATA at EOF did not fail")
except OSError as e:
    assert e.errno == errno.ENXIO
print(f"{checked} lseek probes agree with qemu-img map ({len(extents)} extents)")
PY
}

mount_image "$IMG" "$MNT"
log "image written by qemu-io"
compare_with_map

log "punch a hole and zero a range through the mount"
fallocate --punch-hole --offset $((4 << 20)) --length $((512 << 10)) "$MNT"
fallocate --zero-range --keep-size --offset $((63 << 20)) --length $((128 << 10)) "$MNT"
cmp -n $((512 << 10)) /dev/zero <(dd if="$MNT" bs=64k skip=64 count=8 status=none) ||
  fail "punched range does not read back as zeros"
cmp -n $((128 << 10)) /dev/zero <(dd if="$MNT" bs=64k skip=1008 count=2 status=none) ||
  fail "zeroed range does not read back as zeros"
python3 - "$MNT" <<'PY' || fail "fallocate modes"
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_COLLAPSE_RANGE = 0x01, 0x02, 0x08
FALLOC_FL_INSERT_RANGE, FALLOC_FL_UNSHARE_RANGE = 0x20, 0x40
fd = os.open(sys.argv[1], os.O_RDWR)
size = os.fstat(fd).st_size
os.posix_fallocate(fd, 0, size)  # mode 0 inside the disk: nothing to do
for mode in (FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE, FALLOC_FL_UNSHARE_RANGE,
             FALLOC_FL_PUNCH_HOLE):  # a punch needs KEEP_SIZE
    assert libc.fallocate(fd, mode, 1 << 20, 1 << 20) != 0, f"mode {mode:#x} succeeded"
    assert ctypes.get_errno() == errno.EOPNOTSUPP, (mode, os.strerror(ctypes.get_errno()))
assert os.fstat(fd).st_size == size
os.posix_fallocate(fd, size - 4096, 8192 + 100)  # grows the disk
os.close(fd)
assert os.stat(sys.argv[1]).st_size == size + 4196, os.stat(sys.argv[1]).st_size
with open(sys.argv[1], "rb") as f:
    f.seek(size)
    assert f.read() == bytes(4196)
PY
compare_with_map
unmount_image "$MNT"
qemu_check_clean "$IMG"
qemu-io -f qed -r -c 'read -P 0 4M 512k' -c 'read -P 0x11 4608k 512k' -c 'read -P 0 63M 128k' \
  -c 'read -P 0x22 64640k 896k' "$IMG" | grep -q "read" || fail "qemu-io read-back"
if qemu-io -f qed -r -c 'read -P 0 4M 512k' -c 'read -P 0x11 4608k 512k' -c 'read -P 0 63M 128k' \
  -c 'read -P 0x22 64640k 896k' "$IMG" | grep -q "Pattern verification failed"; then
  fail "qemu-io sees wrong data after punch/zero"
fi

# fresh_data WHO OPTIONS...: data in the kernel's cache only is found by SEEK_DATA.
fresh_data() {
  local who=$1 run=() mount=mount_image unmount=unmount_image
  local img=$TMP/user/fresh.qed mnt=$TMP/user/$who.raw
  shift
  if [ "$who" = user ]; then run=(as_user) mount=user_mount unmount=user_unmount; fi
  log "$who $*: SEEK_DATA finds data not yet written back"
  rm -f "$img"
  "${run[@]}" qemu-img create -q -f qed "$img" 32M
  $mount "$@" "$img" "$mnt"
  "${run[@]}" python3 - "$mnt" <<'PY' || fail "$who $*: fresh data missed by SEEK_DATA/SEEK_HOLE"
import errno, mmap, os, sys
path = sys.argv[1]
M = 1 << 20
fd = os.open(path, os.O_RDWR)
size = os.fstat(fd).st_size
assert os.pwrite(fd, b"d" * 65536, 8 * M) == 65536  # into a hole, no fsync
assert os.lseek(fd, 0, os.SEEK_DATA) == 8 * M, "same descriptor"
other = os.open(path, os.O_RDONLY)
assert os.lseek(other, 0, os.SEEK_DATA) == 8 * M, "other descriptor"
assert os.lseek(other, 8 * M, os.SEEK_HOLE) == 8 * M + 65536
m = mmap.mmap(fd, size)
m[16 * M:16 * M + 4096] = b"m" * 4096  # a dirty page through mmap
assert os.lseek(other, 8 * M + 65536, os.SEEK_DATA) == 16 * M, "mmap-written data"
m.close()
assert os.pwrite(fd, b"e" * 1000, size + M) == 1000  # past the end, not written back
assert os.lseek(other, 16 * M + 65536, os.SEEK_DATA) == size + M, "data past the old end"
try:
    os.lseek(other, size + M + 1000 + 512, os.SEEK_DATA)
    raise AssertionError("SEEK_DATA past the last data succeeded")
except OSError as e:
    assert e.errno == errno.ENXIO, e
os.close(other)
if os.getuid() != 0:
    # The owner takes every permission away: the daemon (running as the owner) cannot open the
    # file to have the kernel write back, so lseek calls everything up to the end data.
    os.chmod(path, 0)
    end = os.fstat(fd).st_size
    assert os.lseek(fd, 4096, os.SEEK_DATA) == 4096, "conservative SEEK_DATA"
    assert os.lseek(fd, 4096, os.SEEK_HOLE) == end, "conservative SEEK_HOLE"
    os.chmod(path, 0o600)
os.close(fd)
PY
  $unmount "$mnt"
  qemu_check_clean "$img"
  qemu-img map --output=json -f qed "$img" | python3 -c '
import json, sys
data = [(e["start"], e["length"]) for e in json.load(sys.stdin) if e["data"]]
M = 1 << 20
for off in (8 * M, 16 * M, 33 * M):
    assert any(s <= off < s + n for s, n in data), f"no data at {off}: {data}"
' || fail "$who $*: qemu-img map"
}
for who in root user; do
  fresh_data "$who" --aio=io_uring
  fresh_data "$who" --aio=threads
done
fresh_data root --writeback-cache=off
echo PASS
