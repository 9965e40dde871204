#!/bin/bash
# qedimg convert onto targets it did not create, which hold old data: a qedimg convert must leave
# exactly the source in them (qemu-img compare), never old bytes where the source has zeros.
#  - loop devices of the same size, bigger (the rest is left alone) and smaller (refused with
#    qemu-img's message, nothing written), with and without -n; a QED target on a device is
#    refused as qemu-img refuses it;
#  - a live qedfuse mount, as root and as an unprivileged user, with and without the kernel
#    write-back cache, on both aio backends: without -n the mounted disk cannot be emptied (it
#    never shrinks) and convert fails with a clear message, leaving the disk alone; with -n the
#    disk becomes an exact copy; the image under the mount is locked against create/convert;
#  - targets that cannot punch holes (ramfs, and a loop device over it), where zero ranges are
#    zeroed by the fallbacks: zeroing in place, then writing zeros.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img qemu-io losetup blockdev cmp setpriv python3
QEDIMG=${QEDIMG:?QEDIMG must point at the qedimg binary}

M=1048576
SRC=$TMP/src.qed
qemu-img create -q -f qed "$SRC" 8M
# Data, a range written as zeros, unallocated ranges, data in the last sector.
qemu-io -c 'write -P 0x11 0 64k' -c 'write -P 0x22 1M 1M' -c 'write -z 3M 1M' \
  -c 'write -P 0x33 7M 512k' -c 'write -P 0x44 8388096 512' "$SRC" >/dev/null

fill() {  # FILE-OR-DEVICE: random bytes over all of it
  local n
  n=$(blockdev --getsize64 "$1" 2>/dev/null || stat -c %s "$1")
  head -c "$n" /dev/urandom | dd of="$1" bs=1M conv=notrunc,fsync status=none
}
attach_loop() {  # FILE: attaches a loop device, records it for cleanup, prints its name
  local dev
  dev=$(losetup -f --show "$1")
  LOOPS+=("$dev")
  echo "$dev"
}
detach_loop() { losetup -d "$1"; }
exact_copy() {  # TARGET: the first 8 MiB of TARGET are the source's content
  head -c $((8 * M)) "$1" >"$TMP/head.raw"
  qemu-img compare -q -f qed -F raw "$SRC" "$TMP/head.raw" ||
    fail "$1 is not an exact copy of the source"
}
run() {  # WANT-RC CMD...: output in $TMP/out, $TMP/err
  local want=$1 rc=0
  shift
  "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
  [ "$rc" = "$want" ] || { cat "$TMP/out" "$TMP/err" >&2; fail "'$*' exited with $rc, not $want"; }
}

log "loop device of the same size, without -n (no create, no resize; zeros zeroed)"
truncate -s 8M "$TMP/same.img"
DEV=$(attach_loop "$TMP/same.img")
fill "$DEV"
run 0 "$QEDIMG" convert -O raw "$SRC" "$DEV"
exact_copy "$DEV"
qemu-img compare -q -f qed -F raw "$SRC" "$DEV" || fail "qemu-img compare on the device"
log "and with -n"
fill "$DEV"
run 0 "$QEDIMG" convert -n -O raw "$SRC" "$DEV"
exact_copy "$DEV"
log "a QED target on a block device is refused, as qemu-img refuses it, and nothing is written"
fill "$DEV"
sum=$(md5sum <"$DEV")
run 1 "$QEDIMG" convert -O qed "$SRC" "$DEV"
grep -q "^qedimg: $DEV: error while converting qed: Cannot resize device files" "$TMP/err" ||
  fail "QED onto a device: $(cat "$TMP/err")"
run 1 "$QEDIMG" create "$DEV" 1M
[ "$(md5sum <"$DEV")" = "$sum" ] || fail "a refused QED target was written"
detach_loop "$DEV"

log "a bigger loop device: the image is copied, the rest is left alone"
truncate -s 12M "$TMP/big.img"
DEV=$(attach_loop "$TMP/big.img")
fill "$DEV"
tail -c $((4 * M)) "$DEV" >"$TMP/big.tail"
run 0 "$QEDIMG" convert -O raw "$SRC" "$DEV"
exact_copy "$DEV"
tail -c $((4 * M)) "$DEV" | cmp - "$TMP/big.tail" || fail "bytes past the image's end changed"
detach_loop "$DEV"

log "a smaller loop device is refused (qemu-img's message), with and without -n"
truncate -s 4M "$TMP/small.img"
DEV=$(attach_loop "$TMP/small.img")
fill "$DEV"
sum=$(md5sum <"$DEV")
run 1 "$QEDIMG" convert -O raw "$SRC" "$DEV"
grep -q "^qedimg: $DEV: error while converting raw: Cannot grow device files" "$TMP/err" ||
  fail "smaller device: $(cat "$TMP/err")"
run 1 "$QEDIMG" convert -n -O raw "$SRC" "$DEV"
grep -q "^qedimg: output file is smaller than input file" "$TMP/err" ||
  fail "smaller device, -n: $(cat "$TMP/err")"
[ "$(md5sum <"$DEV")" = "$sum" ] || fail "a refused convert wrote to the device"
detach_loop "$DEV"

# mount_case USER MOUNT-OPTIONS...: converts onto a live mount of an image full of old data.
mount_case() {
  local user=$1 dir img mnt pfx=()
  shift
  dir=$(mktemp -d "$TMP/mnt.XXXXXX")
  if [ "$user" != root ]; then
    chmod 755 "$dir"
    chown 65534:65534 "$dir"
    pfx=(setpriv --reuid=65534 --regid=65534 --clear-groups)
  fi
  img=$dir/disk.qed mnt=$dir/disk.raw
  "${pfx[@]}" qemu-img create -q -f qed "$img" 8M
  "${pfx[@]}" qemu-io -c 'write -P 0x99 0 8M' "$img" >/dev/null
  FUSE_MOUNTS+=("$mnt")
  "${pfx[@]}" "$QEDFUSE" "$@" "$img" "$mnt"
  is_mounted "$mnt" || fail "$mnt is not mounted"
  # Reads go through the mounting user: the mount is private to them (root included).
  "${pfx[@]}" cat "$mnt" >"$TMP/old"

  log "  without -n: the disk cannot be emptied; a clear error, the disk untouched"
  run 1 "${pfx[@]}" "$QEDIMG" convert -O raw "$SRC" "$mnt"
  grep -q "^qedimg: $mnt: error while converting raw: Could not resize file: Operation not permitted" \
    "$TMP/err" || fail "no clear error: $(cat "$TMP/err")"
  grep -q "Use -n to convert into it" "$TMP/err" || fail "no advice: $(cat "$TMP/err")"
  "${pfx[@]}" cat "$mnt" | cmp - "$TMP/old" || fail "a failed convert changed the mounted disk"
  run 1 "${pfx[@]}" "$QEDIMG" create "$mnt" 1M
  "${pfx[@]}" cat "$mnt" | cmp - "$TMP/old" || fail "a failed create changed the mounted disk"

  log "  the image under the mount is in use: create and convert refuse it"
  run 1 "${pfx[@]}" "$QEDIMG" convert -O qed "$SRC" "$img"
  grep -q "stop that process or unmount it first" "$TMP/err" || fail "busy: $(cat "$TMP/err")"
  run 1 "${pfx[@]}" "$QEDIMG" create "$img" 1M

  log "  with -n: an exact copy"
  run 0 "${pfx[@]}" "$QEDIMG" convert -n -O raw "$SRC" "$mnt"
  "${pfx[@]}" cat "$mnt" >"$TMP/new"
  exact_copy "$TMP/new"
  "${pfx[@]}" fusermount3 -u "$mnt"
  for _ in $(seq 100); do is_mounted "$mnt" || break; sleep 0.1; done
  for _ in $(seq 100); do qemu-img check -q "$img" 2>/dev/null && break; sleep 0.1; done
  qemu_check_clean "$img"
  qemu-img compare -q "$SRC" "$img" || fail "the image differs from the source after unmount"
}
chmod 755 "$TMP"
chmod 644 "$SRC"  # the unprivileged user reads the source too
for opts in "--writeback-cache=on --aio=io_uring" "--writeback-cache=off --aio=threads" \
  "--writeback-cache=on --aio=threads" "--writeback-cache=off --aio=io_uring"; do
  log "live mount as root, $opts"
  # shellcheck disable=SC2086
  mount_case root $opts
done
log "live mount as an unprivileged user"
mount_case nobody --writeback-cache=on
mount_case nobody --writeback-cache=off --aio=threads

log "a file system without hole punching or zeroing in place (ramfs): zeros are written"
RAMFS=$TMP/ramfs
mkdir "$RAMFS"
mount -t ramfs -o size=64m none "$RAMFS"
OTHER_MOUNTS+=("$RAMFS")
head -c $((8 * M)) /dev/urandom >"$RAMFS/target.raw"
TRACE=()
if command -v strace >/dev/null; then
  # LeakSanitizer cannot run under ptrace: leaks are checked by the untraced runs.
  TRACE=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
    strace -f -qq -e trace=fallocate -o "$TMP/trace")
fi
run 0 "${TRACE[@]}" "$QEDIMG" convert -n -O raw "$SRC" "$RAMFS/target.raw"
exact_copy "$RAMFS/target.raw"
if [ ${#TRACE[@]} -gt 0 ]; then  # the fallbacks did run
  grep -q "PUNCH_HOLE.*EOPNOTSUPP" "$TMP/trace" || fail "no refused hole punch: $(cat "$TMP/trace")"
  grep -q "FALLOC_FL_ZERO_RANGE.*EOPNOTSUPP" "$TMP/trace" || fail "$(cat "$TMP/trace")"
fi
log "a loop device over ramfs (no discard): zeroed in place"
truncate -s 8M "$RAMFS/dev.img"
DEV=$(attach_loop "$RAMFS/dev.img")
fill "$DEV"
run 0 "${TRACE[@]}" "$QEDIMG" convert -O raw "$SRC" "$DEV"
exact_copy "$DEV"
if [ ${#TRACE[@]} -gt 0 ]; then
  grep -q "PUNCH_HOLE.*EOPNOTSUPP" "$TMP/trace" || fail "no refused hole punch: $(cat "$TMP/trace")"
  grep -q "FALLOC_FL_ZERO_RANGE, [0-9]*, [0-9]*) = 0" "$TMP/trace" ||
    fail "the device was not zeroed in place: $(cat "$TMP/trace")"
fi
detach_loop "$DEV"
umount "$RAMFS"
echo PASS
