#!/bin/bash
# Where a detached daemon's messages go: --log-file=PATH (-o log_file=PATH) if given; else syslog
# when a syslog daemon listens on /dev/log; else the standard error the command was started with
# (warned about at mount). Corruption and I/O-error reports of the block layer and the frontend
# reach the same place; errors while the command still runs also reach its standard error. The
# backing chain is named at mount. Syslog present/absent is arranged in a private mount namespace
# (a listener of our own on /dev/log, or none). Without either, a stderr that is a pipe is let go
# (its reader may wait for its end: `out=$(qedfuse ...)` must return).
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img qemu-io python3 unshare

IMG=$TMP/img.qed MNT=$TMP/disk.raw LOG=$TMP/daemon.log
qemu-img create -q -f qed "$IMG" 16M

log "--log-file: a detached daemon logs mount, stop and unmount there"
mount_image --log-file="$LOG" "$IMG" "$MNT"
grep -q "info: mounted $IMG on $MNT (qed, read-write" "$LOG" || fail "no mount line: $(cat "$LOG")"
[ "$(stat -c %a "$LOG")" = 600 ] || fail "the log file is not private"
kill -TERM "$DAEMON_PID"
wait_pid_gone "$DAEMON_PID"
grep -q "received Terminated: unmounting $MNT" "$LOG" || fail "no signal line"
grep -q "info: unmounted $MNT" "$LOG" || fail "no unmount line: $(cat "$LOG")"

log "-o log_file=PATH (the /etc/fstab spelling) appends"
lines=$(wc -l <"$LOG")
mount_image -o "log_file=$LOG" "$IMG" "$MNT"
(($(wc -l <"$LOG") > lines)) || fail "-o log_file did not append"
unmount_image "$MNT"

log "a corruption report of a detached daemon reaches the log file"
CORRUPT=$TMP/corrupt.qed
qemu-img create -q -f qed "$CORRUPT" 16M
qemu-io -f qed -c "write -P 0x55 0 64k" "$CORRUPT" >/dev/null
# Point the first L2 entry far beyond the end of the file.
python3 - "$CORRUPT" <<'EOF'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    l1 = struct.unpack_from("<Q", f.read(64), 40)[0]
    f.seek(l1)
    l2 = struct.unpack("<Q", f.read(8))[0]
    f.seek(l2)
    f.write(struct.pack("<Q", 1 << 40))
EOF
mount_image -r --log-file="$LOG" "$CORRUPT" "$TMP/corrupt.raw"
if dd if="$TMP/corrupt.raw" of=/dev/null bs=4k count=1 2>/dev/null; then
  fail "reading a corrupt cluster succeeded"
fi
wait_for_line "$LOG" "error: $CORRUPT: corrupt image: L2 entry"
grep -q "error: read of .* bytes at offset 0 failed" "$LOG" || fail "no failed-read line"
unmount_image "$TMP/corrupt.raw"

log "an injected I/O error of a detached daemon reaches the log file"
mount_image --log-file="$LOG" --debug-fault="io=read,armed=$TMP/arm" "$IMG" "$MNT"
dd if=/dev/urandom of="$MNT" bs=4k count=1 seek=100 conv=notrunc,fsync status=none
touch "$TMP/arm"
if dd if="$MNT" of=/dev/null bs=4k count=1 skip=100 iflag=direct 2>/dev/null; then
  fail "the injected read error did not reach the client"
fi
rm "$TMP/arm"
wait_for_line "$LOG" "warning: debug-fault: injected EIO into image-file read"
grep -q "error: read of 4096 bytes at offset 409600 failed" "$LOG" || fail "no I/O error line"
unmount_image "$MNT"

log "errors at startup go to the log file and to the command's standard error"
head -c 1M /dev/urandom >"$TMP/random.bin"
rc=0
"$QEDFUSE" --log-file="$LOG" "$TMP/random.bin" "$TMP/new.raw" 2>"$TMP/err" || rc=$?
[ "$rc" = 1 ] || fail "exit code $rc"
grep -q "cannot open image '$TMP/random.bin'" "$TMP/err" || fail "not on stderr: $(cat "$TMP/err")"
grep -q "error: cannot open image '$TMP/random.bin'" "$LOG" || fail "not in the log file"
[ ! -e "$TMP/new.raw" ] || fail "created mountpoint left behind"

log "an unusable --log-file is refused before anything is mounted"
rc=0
"$QEDFUSE" --log-file="$TMP/no/such/dir/log" "$IMG" "$MNT" 2>"$TMP/err" || rc=$?
[ "$rc" = 1 ] || fail "exit code $rc"
grep -q "cannot open log file '$TMP/no/such/dir/log': No such file or directory" "$TMP/err" ||
  fail "unexpected message: $(cat "$TMP/err")"
! is_mounted "$MNT" || fail "mounted anyway"

log "the backing chain is named at mount"
qemu-img create -q -f qed "$TMP/base.qed" 16M
qemu-img create -q -f qed -b "$TMP/base.qed" -F qed "$TMP/top.qed" 16M
mount_image --log-file="$LOG" "$TMP/top.qed" "$TMP/top.raw"
grep -qF "backing chain: $TMP/top.qed (qed) -> $TMP/base.qed (qed)" "$LOG" || fail "no backing chain: $(tail -n3 "$LOG")"
unmount_image "$TMP/top.raw"

log "foreground: messages on standard error"
"$QEDFUSE" -f "$TMP/top.qed" "$TMP/top.raw" 2>"$TMP/fg.err" &
fg=$!
KILL_PIDS+=("$fg")
FUSE_MOUNTS+=("$TMP/top.raw")
wait_for_line "$TMP/fg.err" "backing chain: $TMP/top.qed (qed) -> $TMP/base.qed (qed)"
kill -INT "$fg"
wait "$fg" || fail "foreground daemon exit code $?"
grep -q "^qedfuse: unmounted $TMP/top.raw" "$TMP/fg.err" || fail "no unmount line on stderr"

# In a private mount namespace: our own listener on /dev/log (a tmpfs over /dev holding the few
# device nodes qedfuse needs), or nothing there at all.
in_namespace() {  # SYSLOG(yes, no, or pipe: none and the output captured) SCRIPT
  unshare -m --propagation private env QEDFUSE="$QEDFUSE" TMP="$TMP" IMG="$IMG" SYSLOG="$1" \
    bash -euo pipefail -c "$2"
}
NS_SETUP='
  mkdir -p "$TMP/dev"
  mount -t tmpfs tmpfs "$TMP/dev"
  for n in null zero fuse urandom; do touch "$TMP/dev/$n"; mount --bind "/dev/$n" "$TMP/dev/$n"; done
  mount --move "$TMP/dev" /dev
  if [ "$SYSLOG" = yes ]; then
    python3 -c "
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(\"/dev/log\")
open(sys.argv[1], \"w\").close()
with open(sys.argv[1], \"ab\", buffering=0) as out:
    while True:
        out.write(s.recv(65536) + b\"\\n\")
" "$TMP/syslog.out" </dev/null >/dev/null 2>&1 &
    listener=$!
    for ((i = 0; i < 100; i++)); do [ -S /dev/log ] && break; sleep 0.1; done
  fi
  mnt=$TMP/ns.raw
  if [ "$SYSLOG" = pipe ]; then
    # Captured through a pipe: the command must return, and its reader see the end, at once.
    timeout 30 bash -c "out=\$(\"\$QEDFUSE\" \"\$IMG\" $mnt 2>&1); echo \"\$out\"" >"$TMP/ns.err"
  else
    "$QEDFUSE" "$IMG" "$mnt" 2>"$TMP/ns.err"
  fi
  grep -q " $mnt " /proc/self/mountinfo
  pid=$(pgrep -f -- "$mnt")
  fusermount3 -u "$mnt"
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  sleep 0.2
  if [ "$SYSLOG" = yes ]; then kill "$listener"; fi
'

# expect_lines FILE REGEX...: FILE has a line matching each REGEX.
expect_lines() {
  local file=$1 re
  shift
  for re in "$@"; do
    grep -q -- "$re" "$file" || fail "no line /$re/ in $file: $(cat "$file")"
  done
}

log "with syslog: the detached daemon logs there, and the command stays quiet"
in_namespace yes "$NS_SETUP"
expect_lines "$TMP/syslog.out" "qedfuse\[[0-9]*\]: mounted $IMG on $TMP/ns.raw" \
  "qedfuse\[[0-9]*\]: unmounted $TMP/ns.raw"
[ ! -s "$TMP/ns.err" ] || fail "messages on stderr although syslog is there: $(cat "$TMP/ns.err")"

log "without syslog and --log-file: warned at mount, later messages on the inherited stderr"
in_namespace no "$NS_SETUP"
expect_lines "$TMP/ns.err" "no syslog daemon listens on /dev/log and no --log-file was given" \
  "^qedfuse: unmounted $TMP/ns.raw"
qemu_check_clean "$IMG"

log "without syslog and --log-file, stderr a pipe: the daemon lets go of it (and says so)"
in_namespace pipe "$NS_SETUP"
expect_lines "$TMP/ns.err" "this standard error is a pipe the daemon must not keep open"
qemu_check_clean "$IMG"

log "unprivileged user: --log-file"
prepare_user_image
U=$TMP/user
mount_user_image --log-file="$U/log"
pid=$DAEMON_PID
[ "$(stat -c '%U %a' "$U/log")" = "nobody 600" ] || fail "log file owner/mode: $(stat -c '%U %a' "$U/log")"
as_user fusermount3 -u "$USER_MNT"
wait_pid_gone "$pid"
grep -q "info: mounted $USER_IMG on $USER_MNT" "$U/log" || fail "no mount line"
grep -q "info: unmounted $USER_MNT" "$U/log" || fail "no unmount line"
echo PASS
