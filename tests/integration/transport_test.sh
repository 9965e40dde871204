#!/bin/bash
# The FUSE transport qedfuse picks, and what it says about it:
#   - kernel switch on: --io-uring=on (also as -o io_uring=on) serves the mount over io_uring with
#     one queue per possible CPU, and the data requests of a dd really go over the ring;
#     --io-uring=off and the default auto (the ring was measured slower on 1 MiB sequential
#     transfers and buffered dd, see scripts/bench/profiling.md) serve it over /dev/fuse;
#   - -d logs every request and reply from our own codec, over both transports;
#   - kernel switch off: auto stays on /dev/fuse, on refuses to mount with a message that names
#     the switch, and leaves nothing mounted.
# The kernel's switch (/sys/module/fuse/parameters/enable_uring) is restored at exit; the test
# is skipped when the kernel has no FUSE over io_uring.
QEDFUSE_TEST_TRANSPORT=${QEDFUSE_TEST_TRANSPORT:-uring}
[ "$QEDFUSE_TEST_TRANSPORT" = uring ] || { echo "SKIP: io_uring pass only"; exit 77; }
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img dd cmp

IMG=$TMP/img.qed MNT=$TMP/disk.raw
qemu-img create -q -f qed "$IMG" 64M
head -c 8M /dev/urandom >"$TMP/data"
cpus=$(($(cut -d- -f2 /sys/devices/system/cpu/possible) + 1))
[ "$(cat "$URING_PARAM")" = Y ] || fail "lib.sh did not turn on $URING_PARAM"

# check_mount NAME EXPECTED-TRANSPORT ARGS...: mounts with ARGS, copies data through the mount
# (O_DIRECT, so that every byte is a request), unmounts, and checks the transport lines.
check_mount() {
  local name=$1 want=$2
  shift 2
  local logf=$TMP/$name.log
  log "$name: $* -> $want"
  mount_image --log-file="$logf" "$@" "$IMG" "$MNT"
  dd if="$TMP/data" of="$MNT" bs=256k oflag=direct conv=notrunc status=none
  dd if="$MNT" bs=256k count=32 iflag=direct status=none | cmp - "$TMP/data" ||
    fail "$name: data read back differs"
  unmount_image "$MNT"
  grep -qF "transport: $want" "$logf" || { cat "$logf"; fail "$name: no 'transport: $want' line"; }
  local line ring
  line=$(grep "requests over io_uring" "$logf" | tail -n1)
  [ -n "$line" ] || { cat "$logf"; fail "$name: no request counts at unmount"; }
  ring=$(sed -E 's/.*: ([0-9]+) requests over io_uring.*/\1/' <<<"$line")
  if [[ $want == io_uring* ]]; then
    ((ring >= 64)) || fail "$name: only $ring requests over io_uring: $line"
  else
    ((ring == 0)) || fail "$name: $ring requests over io_uring on /dev/fuse: $line"
  fi
}

check_mount on "io_uring, $cpus queues x 32 entries" --io-uring=on
check_mount on-o "io_uring, $cpus queues x 32 entries" -o io_uring=on
check_mount off "/dev/fuse" --io-uring=off
check_mount auto "/dev/fuse" --io-uring=auto

log "-d logs requests and replies from the codec, over both transports"
for mode in on off; do
  "$QEDFUSE" -d --io-uring=$mode "$IMG" "$MNT" 2>"$TMP/debug-$mode.log" &
  pid=$!
  KILL_PIDS+=("$pid")
  FUSE_MOUNTS+=("$MNT")
  for _ in $(seq 100); do is_mounted "$MNT" && break; sleep 0.1; done
  is_mounted "$MNT" || { cat "$TMP/debug-$mode.log"; fail "-d mount ($mode) did not come up"; }
  # Wait for the size to be published (the daemon says it is mounted), then write.
  wait_for_line "$TMP/debug-$mode.log" "mounted $IMG on"
  dd if="$TMP/data" of="$MNT" bs=4k count=1 oflag=direct conv=notrunc status=none
  fusermount3 -u "$MNT"
  wait "$pid" || fail "-d daemon ($mode) exited with $?"
  grep -qE "request [0-9]+ WRITE node 1 uid 0 pid [0-9]+: .*size 4096" \
    "$TMP/debug-$mode.log" || { cat "$TMP/debug-$mode.log"; fail "-d ($mode): no WRITE request line"; }
  grep -qE "reply [0-9]+ WRITE: " "$TMP/debug-$mode.log" ||
    fail "-d ($mode): no WRITE reply line"
  grep -qE "request [0-9]+ INIT " "$TMP/debug-$mode.log" || fail "-d ($mode): no INIT line"
done
grep -qF "transport: io_uring" "$TMP/debug-on.log" || fail "-d on: not over io_uring"
grep -qF "transport: /dev/fuse" "$TMP/debug-off.log" || fail "-d off: not over /dev/fuse"

log "kernel switch off: auto stays on /dev/fuse, on refuses clearly and leaves nothing mounted"
[ -n "$URING_RESTORE" ] || URING_RESTORE=Y  # it was on before this test: put it back at exit
echo N >"$URING_PARAM"
check_mount auto-switch-off "/dev/fuse" --io-uring=auto
if "$QEDFUSE" --io-uring=on "$IMG" "$MNT" 2>"$TMP/refused.log"; then
  fail "--io-uring=on mounted with the kernel switch off"
fi
cat "$TMP/refused.log"
grep -q "io_uring=on" "$TMP/refused.log" || fail "the refusal does not name io_uring=on"
grep -qF "$URING_PARAM" "$TMP/refused.log" || fail "the refusal does not name the switch"
! is_mounted "$MNT" || fail "a refused mount was left mounted"
[ -z "$(daemon_pids "$MNT")" ] || fail "a refused mount left its daemon running"
qemu_check_clean "$IMG"
echo Y >"$URING_PARAM"
echo PASS
