#!/bin/bash
# Image locking is compatible with QEMU's in both directions: QEMU refuses to write an image
# qedfuse has mounted, and qedfuse refuses an image QEMU holds for writing, with a clear message.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img qemu-io mkfifo

IMG=$TMP/img.qed MNT=$TMP/disk.raw
qemu-img create -q -f qed "$IMG" 16M

log "mounted by qedfuse: qemu-io cannot write, qemu-img without -U cannot even read"
mount_image "$IMG" "$MNT"
if qemu-io -f qed -c 'write 0 4k' "$IMG" >"$TMP/out" 2>&1; then fail "qemu-io wrote a mounted image"; fi
grep -q 'Failed to get "write" lock' "$TMP/out" || fail "qemu-io: $(cat "$TMP/out")"
if qemu-img info "$IMG" >"$TMP/out" 2>&1; then fail "qemu-img info opened a mounted image"; fi
grep -q 'lock' "$TMP/out" || fail "qemu-img info: $(cat "$TMP/out")"
qemu-img info -U "$IMG" >/dev/null || fail "qemu-img info -U (force-share) failed"
unmount_image "$MNT"
qemu-io -f qed -c 'write -P 0x5a 0 4k' "$IMG" >/dev/null || fail "qemu-io cannot write after unmount"

log "held for writing by qemu-io: qedfuse refuses (read-write and read-only)"
mkfifo "$TMP/fifo"
qemu-io -f qed "$IMG" <"$TMP/fifo" >"$TMP/qemu-io.out" 2>&1 &
qemu_pid=$!
KILL_PIDS+=("$qemu_pid")
exec 8>"$TMP/fifo"  # keeps qemu-io waiting for commands, with the image open
echo 'read -P 0x5a 0 4k' >&8
for ((i = 0; i < 600; i++)); do
  grep -q "read 4096/4096" "$TMP/qemu-io.out" && break
  sleep 0.1
done
grep -q "read 4096/4096" "$TMP/qemu-io.out" || fail "qemu-io did not open the image"
for args in "" "-o ro"; do
  rc=0
  # shellcheck disable=SC2086
  "$QEDFUSE" $args "$IMG" "$MNT" 2>"$TMP/err" || rc=$?
  [ "$rc" -ne 0 ] || fail "qedfuse $args mounted an image qemu-io holds for writing"
  grep -q "locked" "$TMP/err" || fail "qedfuse $args: unclear message: $(cat "$TMP/err")"
  echo "ok: qedfuse $args -> $(cat "$TMP/err")"
  ! is_mounted "$MNT" || fail "mounted anyway"
done
echo quit >&8
exec 8>&-
wait "$qemu_pid" || true
log "after qemu-io exits, the mount works"
mount_image "$IMG" "$MNT"
cmp -n 4096 <(head -c 4096 /dev/zero | tr '\0' '\132') "$MNT" || fail "content"
unmount_image "$MNT"
qemu_check_clean "$IMG"
echo PASS
