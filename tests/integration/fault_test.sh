#!/bin/bash
# Faults on a live mount: --debug-fault rules (armed by files, so each fires at a chosen step)
# fail image-file writes, reads and flushes with EIO or ENOSPC, and the image is then put on a
# small tmpfs that really fills up. Each time: the client sees exactly the errno, the daemon
# keeps serving (later reads and writes succeed), every acknowledged write reads back after a
# remount and matches a model of the device (also compared by qemu-img), and after a clean
# unmount `qemu-img check` is clean.
# The one accepted leak: a failed L2 entry write (event=l2_update) may or may not have reached
# the disk, so its data cluster can be neither reused nor cut off; it leaks, as in QEMU.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img python3

CLIENT=$(dirname "$0")/fault_client.py
ARM=$TMP/arm
mkdir "$ARM"
FAULTS=0 ERRORS=0 NOSPC=0

# mount_fg LOG [ARGS...] IMAGE MOUNTPOINT: a foreground daemon logging to LOG (its fault count is
# read from there at exit); returns once the mount is live. Sets DAEMON_PID.
mount_fg() {
  local log=$1 i
  shift
  local mnt=${*: -1}
  FUSE_MOUNTS+=("$mnt")
  "$QEDFUSE" -f "$@" 2>"$log" &
  DAEMON_PID=$!
  KILL_PIDS+=("$DAEMON_PID")
  for ((i = 0; i < 300; i++)); do
    is_mounted "$mnt" && return 0
    kill -0 "$DAEMON_PID" 2>/dev/null || fail "qedfuse exited: $(cat "$log")"
    sleep 0.1
  done
  fail "$mnt did not get mounted"
}

# unmount_fg MOUNTPOINT LOG: unmounts, requires exit status 0, adds the injected fault count.
unmount_fg() {
  local rc=0 n
  kill -0 "$DAEMON_PID" 2>/dev/null || fail "the daemon died: $(cat "$2")"
  fusermount3 -u "$1"
  wait "$DAEMON_PID" || rc=$?
  [ "$rc" = 0 ] || fail "qedfuse exited with $rc: $(cat "$2")"
  n=$(sed -n 's/.*debug-fault: \([0-9]*\) faults injected.*/\1/p' "$2")
  FAULTS=$((FAULTS + ${n:-0}))
  echo "daemon: ${n:-0} faults injected"
}

# client MOUNTPOINT MODEL OP...: runs fault_client.py and adds the errors it saw.
client() {
  local out n
  out=$(python3 "$CLIENT" "$1" "$2" "$ARM" "${@:3}") || {
    echo "$out"
    fail "client operations failed"
  }
  echo "$out"
  n=$(sed -n 's/^client errors: //p' <<<"$out")
  ERRORS=$((ERRORS + n))
  LAST_CLIENT_ERRORS=$n
}

IMG=$TMP/img.qed MNT=$TMP/disk.raw MODEL=$TMP/model.raw
qemu-img create -q -f qed "$IMG" 64M

log "injected EIO/ENOSPC on writes, EIO on reads and on a flush"
mount_fg "$TMP/d1.log" --need-check-delay=600000 \
  --debug-fault="io=write,error=EIO,count=3,armed=$ARM/w" \
  --debug-fault="io=write,error=ENOSPC,count=2,armed=$ARM/nospc" \
  --debug-fault="io=read,error=EIO,count=2,armed=$ARM/r" \
  --debug-fault="io=flush,error=EIO,count=1,armed=$ARM/f" \
  --debug-fault="io=any,error=EIO,count=always,armed=$ARM/all" \
  "$IMG" "$MNT"
client "$MNT" "$MODEL" w:0:1 w:1:1 w:5:1 w:100:1 s \
  arm:w W:2:2:EIO W:3:2:EIO W:5:2:EIO w:3:3 disarm:w r:0 r:5 r:3 \
  arm:nospc W:200:4:ENOSPC W:201:4:ENOSPC w:200:5 disarm:nospc r:200 \
  arm:r R:0:EIO R:100:EIO r:0 r:100 disarm:r \
  w:300:6 arm:f S:EIO s disarm:f \
  w:301:7 w:2:8 s verify
[ "$LAST_CLIENT_ERRORS" = 8 ] || fail "expected 8 client errors, saw $LAST_CLIENT_ERRORS"
log "every image-file operation fails for a while (in-place and allocating writes, reads)"
allocated=(0 1 2 3 5 100 200 300 301)
ops=(arm:all) i=0
for b in $(seq 0 8 400); do ops+=("W:$b:11:EIO" "R:${allocated[i++ % 9]}:EIO"); done
ops+=(S:EIO disarm:all) i=0
for b in $(seq 0 8 400); do ops+=("w:$b:12" "r:${allocated[i++ % 9]}"); done
client "$MNT" "$MODEL" "${ops[@]}" s verify >"$TMP/all.out"
tail -n 3 "$TMP/all.out"
[ "$LAST_CLIENT_ERRORS" = 103 ] || fail "expected 103 client errors, saw $LAST_CLIENT_ERRORS"
unmount_fg "$MNT" "$TMP/d1.log"
qemu_check_clean "$IMG"
qemu-img compare -q -f qed -F raw "$IMG" "$MODEL" || fail "image differs from the model"

log "remount without faults: every acknowledged write is there"
mount_fg "$TMP/d2.log" "$IMG" "$MNT"
client "$MNT" "$MODEL" verify
unmount_fg "$MNT" "$TMP/d2.log"
qemu_check_clean "$IMG"

log "a failed L2 entry write (its cluster is compacted away at unmount, nothing else changes)"
mount_fg "$TMP/d3.log" --need-check-delay=600000 \
  --debug-fault="event=l2_update,error=EIO,armed=$ARM/l2" "$IMG" "$MNT"
client "$MNT" "$MODEL" arm:l2 W:500:9:EIO disarm:l2 w:500:10 w:501:10 s r:100 verify
unmount_fg "$MNT" "$TMP/d3.log"
rc=0
out=$(qemu-img check -f qed "$IMG" 2>&1) || rc=$?
[ "$rc" = 0 ] || fail "expected a clean image after unmount (qemu-img check exit 0), got exit $rc: $out"
qemu-img compare -q -f qed -F raw "$IMG" "$MODEL" || fail "image differs from the model"

log "real ENOSPC: the image on a 24 MiB tmpfs, a 64 MiB device"
SMALL=$TMP/small
mkdir "$SMALL"
mount -t tmpfs -o size=24m tmpfs "$SMALL" || skip "cannot mount a tmpfs"
OTHER_MOUNTS+=("$SMALL")
IMG2=$SMALL/img.qed MNT2=$TMP/disk2.raw MODEL2=$TMP/model2.raw
qemu-img create -q -f qed "$IMG2" 64M
dd if=/dev/zero of="$SMALL/filler" bs=1M count=4 status=none
mount_fg "$TMP/d4.log" --need-check-delay=600000 "$IMG2" "$MNT2"
client "$MNT2" "$MODEL2" w:0:1 w:1:1 w:2:1 s fill:3:2:ENOSPC r:0 r:1 r:2 w:1:3 s r:1
NOSPC=$((NOSPC + LAST_CLIENT_ERRORS))
rm "$SMALL/filler"
client "$MNT2" "$MODEL2" w:1000:4 w:1001:4 s verify
unmount_fg "$MNT2" "$TMP/d4.log"
qemu_check_clean "$IMG2"
qemu-img compare -q -f qed -F raw "$IMG2" "$MODEL2" || fail "image differs from the model"
mount_fg "$TMP/d5.log" "$IMG2" "$MNT2"
client "$MNT2" "$MODEL2" verify
unmount_fg "$MNT2" "$TMP/d5.log"
qemu_check_clean "$IMG2"

log "real ENOSPC with four writers allocating at once"
rm -f "$IMG2" "$MODEL2"
qemu-img create -q -f qed "$IMG2" 128M  # each writer's 500 blocks exceed the free space
dd if=/dev/zero of="$SMALL/filler" bs=1M count=4 status=none
mount_fg "$TMP/d6.log" --need-check-delay=600000 "$IMG2" "$MNT2"
client "$MNT2" "$MODEL2" w:0:1 s
pids=()
for i in 0 1 2 3; do
  python3 "$CLIENT" "$MNT2" "$MODEL2" "$ARM" "fill:$((1 + i * 500)):$((20 + i)):ENOSPC" \
    >"$TMP/fill$i.out" 2>&1 &
  pids+=($!)
done
for i in 0 1 2 3; do
  wait "${pids[i]}" || fail "writer $i: $(cat "$TMP/fill$i.out")"
  grep '^fill' "$TMP/fill$i.out"
  ERRORS=$((ERRORS + 1)) NOSPC=$((NOSPC + 1))
done
rm "$SMALL/filler"
client "$MNT2" "$MODEL2" w:2040:5 s verify
unmount_fg "$MNT2" "$TMP/d6.log"
qemu_check_clean "$IMG2"
qemu-img compare -q -f qed -F raw "$IMG2" "$MODEL2" || fail "image differs from the model"

[ "$FAULTS" -eq $((ERRORS - NOSPC)) ] ||
  fail "$FAULTS faults injected but $((ERRORS - NOSPC)) injected errors seen by the client"
echo "COUNTS: fault: $FAULTS faults injected, $ERRORS client errors seen ($NOSPC real ENOSPC), 0 failed"
echo PASS
