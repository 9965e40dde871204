#!/bin/bash
# Bad usage: each case prints a clear message, exits non-zero and leaves nothing mounted (and
# no mountpoint file it created, and no daemon).
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img setpriv python3

chmod 755 "$TMP"
IMG=$TMP/img.qed MNT=$TMP/disk.raw
qemu-img create -q -f qed "$IMG" 16M

# expect_failure PATTERN ARGS...: qedfuse ARGS must fail with PATTERN on stderr.
expect_failure() {
  local pattern=$1 rc=0
  shift
  "$QEDFUSE" "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
  [ "$rc" -ne 0 ] || fail "qedfuse $* succeeded"
  grep -qE -- "$pattern" "$TMP/err" || fail "qedfuse $*: expected /$pattern/, got: $(cat "$TMP/err")"
  ! grep -qF "$TMP/" /proc/self/mountinfo || fail "qedfuse $* left a mount behind"
  [ -z "$(daemon_pids "$TMP/")" ] || fail "qedfuse $* left a daemon behind"
  echo "ok: $* -> $(head -n1 "$TMP/err")"
}

log "command-line errors print the usage"
expect_failure "missing IMAGE and MOUNTPOINT" 
grep -q "^Usage: qedfuse" "$TMP/err" || fail "no usage line"
expect_failure "missing MOUNTPOINT" "$IMG"
expect_failure "unexpected argument" "$IMG" "$MNT" extra
expect_failure "unknown option '--frobnicate'" --frobnicate "$IMG" "$MNT"
expect_failure "unknown mount option 'frobnicate'" "$IMG" "$MNT" -o frobnicate
expect_failure "invalid cache mode" --cache=sometimes "$IMG" "$MNT"
grep -q "^Usage: qedfuse" "$TMP/err" || fail "no usage line"
[ ! -e "$MNT" ] || fail "mountpoint created for a command-line error"

log "path errors"
expect_failure "cannot open image '$TMP/missing.qed': No such file or directory" \
  "$TMP/missing.qed" "$MNT"
[ ! -e "$MNT" ] || fail "mountpoint created although the image is missing"
mkdir "$TMP/dir"
expect_failure "mountpoint '$TMP/dir' is a directory" "$IMG" "$TMP/dir"
expect_failure "image '$TMP/dir' is a directory" "$TMP/dir" "$MNT"
expect_failure "cannot create mountpoint '$TMP/nodir/disk.raw': No such file or directory" \
  "$IMG" "$TMP/nodir/disk.raw"

log "not a QED image (and the created mountpoint is removed again)"
head -c 1M /dev/urandom >"$TMP/random.bin"
expect_failure "cannot open image '$TMP/random.bin'.*(QED|qed)" "$TMP/random.bin" "$MNT"
[ ! -e "$MNT" ] || fail "created mountpoint left behind"

log "unsupported QED feature bit"
cp "$IMG" "$TMP/feature.qed"
printf '\x08' | dd of="$TMP/feature.qed" bs=1 seek=16 conv=notrunc status=none
expect_failure "cannot open image '$TMP/feature.qed'.*(feature|unsupported)" \
  "$TMP/feature.qed" "$MNT"

log "no permission (unprivileged user, image mode 0600)"
chmod 600 "$IMG"
touch "$MNT"
chmod 666 "$MNT"
rc=0
setpriv --reuid=65534 --regid=65534 --clear-groups "$QEDFUSE" "$IMG" "$MNT" 2>"$TMP/err" || rc=$?
[ "$rc" -ne 0 ] || fail "unprivileged open of a 0600 image succeeded"
grep -qi "permission denied" "$TMP/err" || fail "expected Permission denied, got: $(cat "$TMP/err")"
! grep -qF "$TMP/" /proc/self/mountinfo || fail "left a mount behind"
[ -e "$MNT" ] || fail "a pre-existing mountpoint was removed"
chmod 644 "$IMG"

log "image already mounted (locked)"
mount_image "$IMG" "$MNT"
rc=0
"$QEDFUSE" "$IMG" "$TMP/second.raw" 2>"$TMP/err" || rc=$?
[ "$rc" -ne 0 ] || fail "second mount of the same image succeeded"
grep -qiE "lock" "$TMP/err" || fail "expected a lock message, got: $(cat "$TMP/err")"
echo "ok: second mount -> $(head -n1 "$TMP/err")"
! is_mounted "$TMP/second.raw" || fail "second mount exists"
[ ! -e "$TMP/second.raw" ] || fail "second mountpoint file left behind"
unmount_image "$MNT"

log "--help and --version succeed"
"$QEDFUSE" --help | grep -q "^Usage: qedfuse" || fail "--help"
"$QEDFUSE" --version | grep -q "^qedfuse " || fail "--version"
echo PASS
