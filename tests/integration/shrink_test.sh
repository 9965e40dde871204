#!/bin/bash
# Every way of shrinking the mounted disk fails with EPERM and changes nothing: `cat x > disk`,
# `cp`, plain `dd of=` (all open with O_TRUNC), `truncate -s 0`, `truncate -s -1M`, ftruncate,
# truncate(2), and `qedimg create` / `qemu-img create` onto the live mount. A truncate to the
# current size succeeds; a growing one sets the size exactly (the image's rounded up to 512).
# With the kernel write-back cache, data
# written past the image's end but not yet written back counts: a truncate below it is a shrink
# too, and the data survives. Checked as root and as an unprivileged user on their own mount,
# with the write-back cache on and off, on both aio backends; after a remount the disk is intact.
QEDFUSE_TEST_USER_MOUNTS=1
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img python3 dd cp truncate sha256sum
enable_user_mounts

IMG=$TMP/user/img.qed
head -c 100000 /dev/urandom >"$TMP/user/junk"
chmod 644 "$TMP/user/junk"
cases=0

# refused DESCRIPTION CMD...: CMD must fail with "Operation not permitted".
refused() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1 </dev/null); then fail "$what succeeded"; fi
  grep -q "Operation not permitted" <<<"$out" || fail "$what: unexpected error: $out"
}

run_case() {
  local who=$1 run=() mount=mount_image unmount=unmount_image
  local MNT=$TMP/user/$who.raw
  shift
  if [ "$who" = user ]; then run=(as_user) mount=user_mount unmount=user_unmount; fi
  log "$who: $*"
  rm -f "$IMG"
  "${run[@]}" qemu-img create -q -f qed "$IMG" 4M
  "${run[@]}" qemu-io -f qed -c 'write -P 0xeb 0 512' -c 'write -P 0x11 64k 64k' "$IMG" >/dev/null
  $mount "$@" "$IMG" "$MNT"
  local size sum
  size=$("${run[@]}" stat -c %s "$MNT")
  sum=$("${run[@]}" sha256sum "$MNT" | cut -d' ' -f1)

  refused "cat > disk" "${run[@]}" sh -c 'cat "$1" > "$2"' sh "$TMP/user/junk" "$MNT"
  refused "cp" "${run[@]}" cp "$TMP/user/junk" "$MNT"
  refused "dd without conv=notrunc" "${run[@]}" dd if="$TMP/user/junk" of="$MNT" status=none
  refused "truncate -s 0" "${run[@]}" truncate -s 0 "$MNT"
  refused "truncate -s -1M" "${run[@]}" truncate -s -1M "$MNT"
  refused "qemu-img create onto the mount" "${run[@]}" qemu-img create -q -f qed "$MNT" 10G
  if [ -n "${QEDIMG:-}" ]; then
    refused "qedimg create onto the mount" "${run[@]}" "$QEDIMG" create -q "$MNT" 10G
  fi
  "${run[@]}" python3 - "$MNT" <<'PY' || fail "$who $*: system calls"
import errno, os, sys
path = sys.argv[1]
size = os.stat(path).st_size
fd = os.open(path, os.O_RDWR)
os.ftruncate(fd, size)  # the current size: fine
os.truncate(path, size)
assert os.fstat(fd).st_size == size
shrinks = {
    "ftruncate(0)": lambda: os.ftruncate(fd, 0),
    "ftruncate(size - 1)": lambda: os.ftruncate(fd, size - 1),
    "truncate(size - 512)": lambda: os.truncate(path, size - 512),
    "open(O_WRONLY|O_TRUNC)": lambda: os.open(path, os.O_WRONLY | os.O_TRUNC),
    "open(O_RDWR|O_TRUNC|O_DIRECT)": lambda: os.open(path, os.O_RDWR | os.O_TRUNC | os.O_DIRECT),
    # Written past the end, not synced: with the write-back cache only the kernel has it yet.
    "ftruncate below unsynced data": lambda: (os.pwrite(fd, b"k" * 100, size),
                                              os.ftruncate(fd, size + 50)),
}
for what, shrink in shrinks.items():
    try:
        shrink()
        raise AssertionError(f"{what} succeeded")
    except OSError as e:
        assert e.errno == errno.EPERM, f"{what}: {e}"
assert os.pread(fd, 100, size) == b"k" * 100
os.close(fd)
assert os.stat(path).st_size == size + 100, os.stat(path).st_size
os.truncate(path, size + 1512)  # grows the file exactly (the image to size + 1536)
assert os.stat(path).st_size == size + 1512, os.stat(path).st_size
print("system calls: ok")
PY
  "${run[@]}" python3 - "$MNT" "$size" "$sum" <<'PY' || fail "$who $*: content after the refusals"
import hashlib, sys
path, size, digest = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = open(path, "rb").read()
assert len(data) == size + 1512, len(data)
assert hashlib.sha256(data[:size]).hexdigest() == digest, "the disk changed"
assert data[size:size + 100] == b"k" * 100 and data[size + 100:] == bytes(1412)
PY
  $unmount "$MNT"
  qemu_check_clean "$IMG"
  $mount "$@" "$IMG" "$MNT"
  [ "$("${run[@]}" stat -c %s "$MNT")" = $((size + 1536)) ] || fail "$who $*: size after remount"
  [ "$("${run[@]}" head -c "$size" "$MNT" | sha256sum | cut -d' ' -f1)" = "$sum" ] || fail "$who $*: content after remount"
  $unmount "$MNT"
  cases=$((cases + 1))
}

for who in root user; do
  run_case "$who" --aio=io_uring
  run_case "$who" --aio=threads
  run_case "$who" --aio=io_uring --writeback-cache=off
  run_case "$who" --aio=threads --cache=none
done
echo "COUNTS: shrink: $cases mounts, 0 failed"
echo PASS
