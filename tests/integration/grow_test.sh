#!/bin/bash
# Writes past the end grow the mounted disk (grow_model.py: shell appends, dd seek=END
# conv=notrunc, a pwrite straddling the end, O_DIRECT writes past it, O_APPEND, fallocate mode 0
# and ZERO_RANGE past it, 8 threads writing past it at once) to exactly that end, and the image
# to that end rounded up to 512; after fsync, unmount and remount every byte written reads back
# and the size is the model's rounded up to 512 (qemu-img agrees). With the
# kernel write-back cache on and off and with cache=none, on both aio backends, as root and as an
# unprivileged user on their own mount. Then the limits: a write past the largest size the
# format can address fails with EFBIG (O_DIRECT at once; buffered with the write-back cache at
# fsync) and the image stays clean.
QEDFUSE_TEST_USER_MOUNTS=1
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img qemu-io python3 dd
enable_user_mounts

MODEL=$(cd "$(dirname "$0")" && pwd)/grow_model.py
IMG=$TMP/user/img.qed EXPECT=$TMP/user/expect
cases=0

# run_case WHO OPTIONS...: WHO is root or user.
run_case() {
  local who=$1 mount=mount_image unmount=unmount_image run=()
  local MNT=$TMP/user/$who.raw  # created by the user who mounts
  shift
  if [ "$who" = user ]; then mount=user_mount unmount=user_unmount run=(as_user); fi
  log "$who: ${*:-default options}"
  rm -f "$IMG" "$EXPECT"
  "${run[@]}" qemu-img create -q -f qed "$IMG" 1M
  "${run[@]}" qemu-io -f qed -c 'write -P 0x5a 4k 8k' -c 'write -P 0xa5 1020k 4k' "$IMG" >/dev/null
  $mount "$@" "$IMG" "$MNT"
  "${run[@]}" python3 "$MODEL" run "$MNT" "$EXPECT" || fail "$who $*: model run"
  $unmount "$MNT"
  qemu_check_clean "$IMG"
  local size
  size=$(qemu-img info --output=json "$IMG" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
  [ "$size" = "$(stat -c %s "$EXPECT")" ] || fail "$who $*: virtual size $size, model $(stat -c %s "$EXPECT")"
  qemu-img compare -q -f qed -F raw "$IMG" "$EXPECT" || fail "$who $*: qemu-img sees other data"
  $mount "$@" "$IMG" "$MNT"
  "${run[@]}" python3 "$MODEL" verify "$MNT" "$EXPECT" || fail "$who $*: after remount"
  $unmount "$MNT"
  cases=$((cases + 1))
}

for who in root user; do
  for aio in io_uring threads; do
    run_case "$who" --aio=$aio
    run_case "$who" --aio=$aio --writeback-cache=off
    run_case "$who" --aio=$aio --cache=none
  done
done

log "past the largest size the format addresses (4 KiB clusters, 2-cluster tables: 4 GiB)"
qemu-img create -q -f qed -o cluster_size=4096,table_size=2 "$TMP/small.qed" 4000M
for opts in "" --writeback-cache=off; do
  mount_image $opts "$TMP/small.qed" "$TMP/small.raw"
  python3 - "$TMP/small.raw" "$opts" <<'PY' || fail "EFBIG past the format's maximum ($opts)"
import errno, mmap, os, sys
path, wb = sys.argv[1], sys.argv[2] == ""
limit = 4 << 30
size = os.stat(path).st_size
fd = os.open(path, os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, 8192)
buf.write(b"q" * 8192)
try:
    os.pwritev(fd, [buf], limit - 4096)
    raise AssertionError("O_DIRECT write past the maximum succeeded")
except OSError as e:
    assert e.errno == errno.EFBIG, e
assert os.pwritev(fd, [buf], limit - 8192) == 8192  # up to the maximum is fine
os.close(fd)
assert os.stat(path).st_size == limit, os.stat(path).st_size
fd = os.open(path, os.O_RDWR)
try:
    # Without the write-back cache the write fails; with it, the write-back of it does.
    os.pwrite(fd, b"z" * 100, limit + 10)
    assert wb, "buffered write past the maximum succeeded"
    os.fsync(fd)
    raise AssertionError("fsync of a write past the maximum succeeded")
except OSError as e:
    assert e.errno in (errno.EFBIG, errno.EIO), e
os.close(fd)
print("EFBIG past the maximum: ok")
PY
  unmount_image "$TMP/small.raw"
  qemu_check_clean "$TMP/small.qed"
  [ "$(qemu-img info --output=json "$TMP/small.qed" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = $((4 << 30)) ] ||
    fail "the image did not grow to exactly its maximum"
done
echo "COUNTS: grow: $cases model runs, 0 failed"
echo PASS
