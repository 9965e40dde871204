#!/bin/bash
# SEEK_DATA/SEEK_HOLE on the mount agree with `qemu-img map` (hole = reads as zeros and holds no
# data: "zero": true, "data": false), for data, zero clusters, unallocated space and a hole
# punched through the mount; punched ranges read back as zeros and the image stays clean.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img qemu-io python3 fallocate

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
assert extents[-1]["start"] + extents[-1]["length"] == size, "map does not cover the file"
def is_hole(e):
    return e["zero"] and not e["data"]
def expected(off, whence):
    for e in extents:
        if e["start"] + e["length"] <= off:
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
python3 - "$MNT" <<'PY' || fail "fallocate refusals"
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
size = os.fstat(fd).st_size
os.posix_fallocate(fd, 0, size)  # mode 0 inside the device: nothing to do
try:
    os.posix_fallocate(fd, size - 4096, 8192)  # would extend the device
    raise AssertionError("fallocate past the end succeeded")
except OSError as e:
    assert e.errno == errno.ENOSPC, e
assert os.fstat(fd).st_size == size
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
echo PASS
