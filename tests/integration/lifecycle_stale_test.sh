#!/bin/bash
# Mounting over a mount point is refused (a live mount is never stacked over, nor hidden), and a
# dead mount left by a killed daemon is reported with the commands that remove it. With
# -o auto_unmount, the mount of a killed daemon is removed by itself, and the image is free again
# at once (the watcher holds nothing of the daemon's). As root and as an unprivileged user
# (where fusermount3 3.14's own auto_unmount would leave the mount).
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img cmp

mounts_at() { awk -v p="$1" '$5 == p' /proc/self/mountinfo | wc -l; }

# mount_check_unmount RUN...: mounts $img on $mnt again (through the prefix RUN), checks that the
# fsync'd data survived, unmounts, and checks the image.
mount_check_unmount() {
  "$@" "$QEDFUSE" "$img" "$mnt"
  "$@" cmp -n 1M "$TMP/data" "$mnt" || fail "data lost (it was fsync'd)"
  unmount_image "$mnt"
  qemu_check_clean "$img"
}

# mount_watched RUN...: mounts $img on $mnt with -o auto_unmount (through the prefix RUN); sets
# pid (the daemon) and watcher (its auto_unmount watcher).
mount_watched() {
  "$@" "$QEDFUSE" -o auto_unmount "$img" "$mnt"
  pid=$(daemon_pids "$mnt" | head -n1)
  watcher=$(pgrep -x qedfuse-watch -P "$pid" || true)
  [ -n "$watcher" ] || fail "no auto_unmount watcher beside the daemon"
}

# stale_and_stacked DIR UMOUNT_CMD RUN...: the whole sequence in DIR, with the commands run
# through the prefix RUN.
stale_and_stacked() {
  local dir=$1 umount_cmd=$2
  shift 2
  local run=("$@")
  local img=$dir/img.qed other=$dir/other.qed mnt=$dir/disk.raw pid
  "${run[@]}" qemu-img create -q -f qed "$img" 16M
  "${run[@]}" qemu-img create -q -f qed "$other" 8M
  FUSE_MOUNTS+=("$mnt")

  log "stacked mount refused (${run[*]:-root})"
  "${run[@]}" "$QEDFUSE" "$img" "$mnt"
  pid=$(daemon_pids "$mnt" | head -n1)
  head -c 1M /dev/urandom >"$TMP/data"
  "${run[@]}" dd if="$TMP/data" of="$mnt" bs=1M conv=notrunc,fsync status=none
  expect_refused "mountpoint '$mnt' is already a mount point (fuse.qedfuse of $img)" \
    "${run[@]}" "$QEDFUSE" "$other" "$mnt"
  grep -qF "unmount it first (umount $mnt or fusermount3 -u $mnt)" "$TMP/err" ||
    fail "the message does not say how to unmount"
  # Through a symbolic link to the mounted file, and with a relative path.
  ln -sf "$mnt" "$dir/link.raw"
  expect_refused "is already a mount point" "${run[@]}" "$QEDFUSE" "$other" "$dir/link.raw"
  (cd "$dir" && expect_refused "is already a mount point" "${run[@]}" "$QEDFUSE" "$other" disk.raw)
  [ "$(mounts_at "$mnt")" = 1 ] || fail "a second mount was stacked on $mnt"
  [ -z "$(daemon_pids "$other")" ] || fail "a daemon for the refused mount is running"
  "${run[@]}" cmp -n 1M "$TMP/data" "$mnt" || fail "the first mount no longer serves its image"

  log "stale mount after kill -9 is reported with the fix (${run[*]:-root})"
  kill -KILL "$pid"
  wait_pid_gone "$pid"
  is_mounted "$mnt" || fail "the dead mount vanished by itself"
  expect_refused "mountpoint '$mnt' is a stale mount" "${run[@]}" "$QEDFUSE" "$img" "$mnt"
  for hint in "Transport endpoint is not connected" "umount $mnt" "fusermount3 -u $mnt" \
    "auto_unmount"; do
    grep -qF -- "$hint" "$TMP/err" || fail "the stale-mount message lacks '$hint'"
  done
  [ "$(mounts_at "$mnt")" = 1 ] || fail "a mount was stacked on the dead one"
  # The named fix works, and the image (killed with allocations in flight) mounts again.
  $umount_cmd "$mnt"
  mount_check_unmount "${run[@]}"

  log "-o auto_unmount: the mount of a killed daemon is removed (${run[*]:-root})"
  local watcher
  mount_watched "${run[@]}"
  ! ls -l "/proc/$watcher/fd" | grep -qF "$img" || fail "the auto_unmount watcher holds the image"
  "${run[@]}" dd if="$TMP/data" of="$mnt" bs=1M conv=notrunc,fsync status=none
  kill -KILL "$pid"
  wait_unmounted "$mnt"
  # Mounting again right away works: nothing holds the image's lock any more.
  mount_check_unmount "${run[@]}"
  log "-o auto_unmount: an orderly unmount or SIGTERM is unaffected (${run[*]:-root})"
  mount_watched "${run[@]}"
  unmount_image "$mnt"
  wait_pid_gone "$watcher"
  qemu_check_clean "$img"
  mount_watched "${run[@]}"
  kill -TERM "$pid"
  wait_pid_gone "$watcher"
  ! is_mounted "$mnt" || fail "still mounted after SIGTERM"
  "${run[@]}" "$QEDFUSE" "$img" "$mnt"
  unmount_image "$mnt"
  qemu_check_clean "$img"
}

stale_and_stacked "$TMP" "umount"
require_user_mounts
stale_and_stacked "$TMP/user" "as_user fusermount3 -u" "${AS_USER[@]}"

log "--help documents auto_unmount"
"$QEDFUSE" --help | grep -q "auto_unmount" || fail "--help does not mention auto_unmount"
echo PASS
