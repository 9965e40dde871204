#!/bin/bash
# Cancelling the mount command (Ctrl-C = SIGINT, `timeout` = SIGTERM, a hangup, the command
# killed outright) cancels the mount and leaves nothing behind: no mount, no qedfuse process, no
# mountpoint file it created, and the image's lock released. Opening the image is made slow with
# a --debug-fault delay rule, or stalled for real on a backing file served by a stopped FUSE
# daemon (a wait only SIGKILL ends); cancels at random moments also hit the mount itself.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img timeout python3

SLOW=--debug-fault=io=read,delay=60000

# nothing_left IMAGE MOUNTPOINT [OWNER_CMD...]: the cancelled command left nothing behind.
nothing_left() {
  local img=$1 mnt=$2 i
  for ((i = 0; i < 100; i++)); do
    [ -z "$(daemon_pids "$mnt")" ] && break
    sleep 0.1
  done
  [ -z "$(daemon_pids "$mnt")" ] || fail "a qedfuse process is left for $mnt"
  ! is_mounted "$mnt" || fail "$mnt is mounted after the cancel"
  [ ! -e "$mnt" ] || fail "the mountpoint file $mnt the command created is left behind"
  # Locked images are refused by qemu-img; this one must be free (and clean).
  qemu_check_clean "$img"
}

# cancel_with SIGNAL ARGS...: runs `timeout -s SIGNAL 1 ARGS...` (the command must be cancelled).
cancel_with() {
  local sig=$1 rc=0
  shift
  timeout -s "$sig" -k 30 1 "$@" 2>"$TMP/err" || rc=$?
  [ "$rc" = 124 ] || fail "expected a timeout (124), got $rc: $(cat "$TMP/err")"
  cat "$TMP/err"
}

IMG=$TMP/img.qed MNT=$TMP/disk.raw
qemu-img create -q -f qed "$IMG" 16M
FUSE_MOUNTS+=("$MNT")

for sig in INT TERM HUP; do
  log "SIG$sig to the command while it opens the image"
  cancel_with "$sig" "$QEDFUSE" "$SLOW" "$IMG" "$MNT"
  grep -q "cancelled" "$TMP/err" || fail "no 'cancelled' message"
  nothing_left "$IMG" "$MNT"
done

log "SIGINT to a foreground daemon while it opens the image"
cancel_with INT "$QEDFUSE" -f "$SLOW" "$IMG" "$MNT"
grep -q "cancelled; nothing was mounted" "$TMP/err" || fail "no 'cancelled' message"
nothing_left "$IMG" "$MNT"

# kill_command_while_opening IMAGE MOUNTPOINT: SIGKILL to the command (run through the prefix in
# RUN) once its daemon is opening the image; the daemon must notice and leave nothing behind.
RUN=()
kill_command_while_opening() {
  local img=$1 mnt=$2 parent i
  "${RUN[@]}" "$QEDFUSE" "$SLOW" "$img" "$mnt" 2>"$TMP/err" &
  parent=$!
  for ((i = 0; i < 600; i++)); do
    (($(daemon_pids "$mnt" | wc -l) >= 2)) && break
    sleep 0.1
  done
  (($(daemon_pids "$mnt" | wc -l) >= 2)) || fail "the daemon did not start"
  [ -e "$mnt" ] || fail "the mountpoint was not created"
  kill -KILL "$parent"
  wait "$parent" 2>/dev/null || true
  nothing_left "$img" "$mnt"
}

log "the command killed with SIGKILL while the daemon opens the image"
kill_command_while_opening "$IMG" "$MNT"

log "a pre-existing mountpoint file is kept"
touch "$MNT"
cancel_with TERM "$QEDFUSE" "$SLOW" "$IMG" "$MNT"
[ -f "$MNT" ] || fail "a mountpoint file the user made was removed"
! is_mounted "$MNT" || fail "mounted after the cancel"
rm "$MNT"

log "the daemon stalled in a wait only SIGKILL ends (backing file on a stopped FUSE daemon)"
qemu-img create -q -f raw "$TMP/base.img" 16M
mount_image --format=raw "$TMP/base.img" "$TMP/base.raw"
stalled=$DAEMON_PID
qemu-img create -q -f qed -b "$TMP/base.raw" -F raw "$TMP/top.qed" 16M
kill -STOP "$stalled"
KILL_PIDS+=("$stalled")
start=$SECONDS
cancel_with INT "$QEDFUSE" "$TMP/top.qed" "$MNT"
grep -q "did not stop within 2 s while opening the image; killing it" "$TMP/err" ||
  fail "the command did not kill the stalled daemon"
((SECONDS - start < 30)) || fail "cancelling took $((SECONDS - start)) s"
for ((i = 0; i < 100; i++)); do
  [ -z "$(daemon_pids "$TMP/top.qed")" ] && break
  sleep 0.1
done
[ -z "$(daemon_pids "$TMP/top.qed")" ] || fail "the stalled daemon is left"
! is_mounted "$MNT" || fail "mounted after the cancel"
[ ! -e "$MNT" ] || fail "created mountpoint left behind"
kill -CONT "$stalled"
unmount_image "$TMP/base.raw"
qemu_check_clean "$TMP/top.qed"

# cancel_at_random_moments N IMAGE MOUNTPOINT: SIGTERM to the command (run through the command
# prefix in RUN) 0-15 or 0-100 ms after it starts, N times. Either the mount completed first
# (exit 0: it is live and serves the image) or it was cancelled (killed by SIGTERM: nothing
# left); never anything in between.
cancel_at_random_moments() {
  local n=$1 img=$2 mnt=$3 i rc cancelled=0 completed=0 delay pid d
  for ((i = 0; i < n; i++)); do
    # Every other run early (almost surely cancelled), the others anywhere in the mount.
    delay=$(python3 -c "import random; print(f'{random.uniform(0, 0.1 if $i % 2 else 0.015):.4f}')")
    "${RUN[@]}" "$QEDFUSE" "$img" "$mnt" 2>>"$TMP/random.err" &
    pid=$!
    sleep "$delay"
    kill -TERM "$pid" 2>/dev/null || true
    rc=0
    wait "$pid" || rc=$?
    if [ "$rc" = 0 ]; then
      completed=$((completed + 1))
      is_mounted "$mnt" || fail "the command succeeded but nothing is mounted"
      [ "$("${RUN[@]}" stat -c %s "$mnt")" = $((16 << 20)) ] || fail "the mount does not serve the image"
      d=$(daemon_pids "$mnt" | head -n1)
      "${RUN[@]}" fusermount3 -u "$mnt"
      wait_pid_gone "$d"
      rm -f "$mnt"
    elif [ "$rc" = 143 ]; then
      cancelled=$((cancelled + 1))
      nothing_left "$img" "$mnt"
    else
      fail "exit code $rc: $(tail -n3 "$TMP/random.err")"
    fi
  done
  echo "$cancelled cancelled, $completed completed before the signal"
  ((cancelled > 0)) || fail "no run was cancelled"
}

log "SIGTERM at random moments of the mount"
cancel_at_random_moments 12 "$IMG" "$MNT"
qemu_check_clean "$IMG"

log "unprivileged user (fusermount3): SIGINT while opening, SIGKILL of the command, random SIGTERM"
prepare_user_image
cancel_with INT "${AS_USER[@]}" "$QEDFUSE" "$SLOW" "$USER_IMG" "$USER_MNT"
nothing_left "$USER_IMG" "$USER_MNT"
RUN=("${AS_USER[@]}")
kill_command_while_opening "$USER_IMG" "$USER_MNT"
cancel_at_random_moments 6 "$USER_IMG" "$USER_MNT"
echo PASS
