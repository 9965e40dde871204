#!/bin/bash
# Backing file names from images made by someone else, through the real mount, as root and as an
# unprivileged user: an absolute name, a `../` escape and a symlink escape are followed by
# default (with a warning and the chain printed at mount), refused by --backing=confined and
# ignored by --backing=none (which reads zeros); a FIFO, a character device, a missing file and a
# loop are refused at once with a message naming the image and the stored name (nothing hangs),
# control characters in that name shown as \xHH escapes.
# A backing file in another image format (qcow2) is refused, never read as raw bytes; such an
# image itself is refused too, unless --format=raw asks for its bytes. qedimg takes the same option. Then the lock
# bytes on a backing file, both ways: qedfuse holds an overlay -> qemu-io cannot write its QED
# backing file; qemu-io holds an overlay -> qedfuse may mount the backing file read-only but not
# read-write.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img qemu-io setpriv timeout

QEDIMG=${QEDIMG:-$(dirname "$QEDFUSE")/../src/tools/qedimg}
chmod 755 "$TMP"
mkdir -m 755 "$TMP/img" "$TMP/outside" "$TMP/mnt"
chmod 777 "$TMP/mnt"
head -c 1M /dev/zero | tr '\0' '\136' >"$TMP/outside/secret.raw"  # 0x5e
head -c 1M /dev/zero | tr '\0' '\102' >"$TMP/img/base.raw"        # 0x42
chmod 644 "$TMP/outside/secret.raw" "$TMP/img/base.raw"
ln -s ../outside/secret.raw "$TMP/img/link.raw"
ln -s base.raw "$TMP/img/inner.raw"
mkfifo -m 644 "$TMP/img/fifo.raw"

# mk NAME STORED [FMT]: an overlay img/NAME.qed naming STORED (not opened while creating).
mk() {
  qemu-img create -q -f qed -u -b "$2" -F "${3:-raw}" "$TMP/img/$1.qed" 1M
  chmod 666 "$TMP/img/$1.qed"
}
mk abs "$TMP/outside/secret.raw"
mk dotdot ../outside/secret.raw
mk link link.raw
mk inner inner.raw
mk fifo fifo.raw
mk chr /dev/zero
mk missing nothere.raw
mk esc "$(printf 'b\033[31m\007red.raw')"  # terminal escapes in a (missing) backing name
mk loop-a loop-b.qed qed
mk loop-b loop-a.qed qed
qemu-img create -q -f qcow2 "$TMP/img/base.qcow2" 1M
chmod 644 "$TMP/img/base.qcow2"
mk q2 base.qcow2 qcow2  # QEMU records no raw bit for -F qcow2: the format is probed at open

as_user() {
  local who=$1
  shift
  if [ "$who" = root ]; then "$@"; else setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; fi
}

# first_byte MNT WHO: the first byte of the mounted disk, in hex.
first_byte() { as_user "$2" dd if="$1" bs=512 count=1 status=none | od -An -tx1 -N1 | tr -d ' '; }

# mount_ok WHO NAME WANT_BYTE [OPTIONS...]: mounts img/NAME.qed, checks the first byte, unmounts.
mount_ok() {
  local who=$1 name=$2 want=$3 mnt=$TMP/mnt/$1-$2.raw
  shift 3
  FUSE_MOUNTS+=("$mnt")
  as_user "$who" timeout 20 "$QEDFUSE" "$@" "$TMP/img/$name.qed" "$mnt" 2>"$TMP/err" ||
    fail "$who: mount of $name ($*) failed: $(cat "$TMP/err")"
  [ "$(first_byte "$mnt" "$who")" = "$want" ] || fail "$who: $name ($*) reads $(first_byte "$mnt" "$who"), want $want"
  unmount_image "$mnt"
}

# mount_refused WHO NAME TEXT [OPTIONS...]: the mount fails at once (no hang) and its message
# names the image and holds TEXT.
mount_refused() {
  local who=$1 name=$2 want=$3 mnt=$TMP/mnt/$1-$2.raw rc=0
  shift 3
  FUSE_MOUNTS+=("$mnt")
  as_user "$who" timeout 20 "$QEDFUSE" "$@" "$TMP/img/$name.qed" "$mnt" 2>"$TMP/err" || rc=$?
  [ "$rc" != 0 ] || fail "$who: mount of $name ($*) succeeded"
  [ "$rc" != 124 ] || fail "$who: mount of $name ($*) hung"
  grep -qF "$name.qed" "$TMP/err" || fail "$who: message does not name the image: $(cat "$TMP/err")"
  grep -qF -- "$want" "$TMP/err" || fail "$who: expected '$want' in: $(cat "$TMP/err")"
  ! is_mounted "$mnt" || fail "$who: $mnt mounted"
}

for who in root nobody; do
  log "$who: default (follow): escaping names work, with a warning and the chain at mount"
  for name in abs dotdot link; do
    mount_ok "$who" "$name" 5e
    grep -q "outside the image's directory" "$TMP/err" || fail "$who: no warning for $name"
    grep -q "backing chain: .*$name.qed (qed) -> .*\(secret\|link\).raw (raw)" "$TMP/err" ||
      fail "$who: chain not printed for $name: $(cat "$TMP/err")"
  done
  mount_ok "$who" inner 42

  log "$who: FIFO, character device, missing file and loop are refused at once"
  for policy in follow confined; do
    mount_refused "$who" fifo "is a FIFO" --backing=$policy
    mount_refused "$who" missing "nothere.raw" --backing=$policy
    mount_refused "$who" loop-a "backing file loop" --backing=$policy
  done
  mount_refused "$who" chr "is a character device"
  mount_refused "$who" esc 'b\x1b[31m\x07red.raw'  # shown escaped, never sent to the terminal
  ! grep -q "$(printf '[\033\007]')" "$TMP/err" || fail "$who: raw control bytes in: $(cat -v "$TMP/err")"

  log "$who: --backing=confined / -o backing=confined"
  mount_refused "$who" abs "is an absolute name" --backing=confined
  mount_refused "$who" dotdot "leads outside the image's directory" --backing=confined
  mount_refused "$who" link "leads outside the image's directory" -o backing=confined
  mount_ok "$who" inner 42 --backing=confined

  log "$who: --backing=none reads zeros and opens nothing"
  for name in abs fifo chr missing; do mount_ok "$who" "$name" 00 --backing=none; done
  mount_ok "$who" loop-a 00 -o backing=none
done

log "a qcow2 file is never served as raw bytes: as a probed backing file or as the image"
mount_refused root q2 \
  "backing file 'base.qcow2' ($TMP/img/base.qcow2): a qcow2 image; qedfuse reads only qed and raw"
mount_refused nobody q2 "a qcow2 image"
cp "$TMP/img/base.qcow2" "$TMP/img/direct.qed"  # the name does not matter, the bytes do
mount_refused root direct "not a QED image"
before=$(md5sum <"$TMP/img/direct.qed")
mnt=$TMP/mnt/direct-raw.raw
mount_image --format=raw "$TMP/img/direct.qed" "$mnt"
[ "$(head -c 4 "$mnt" | od -An -tx1 | tr -d ' ')" = 514649fb ] || fail "--format=raw: not the file's bytes"
unmount_image "$mnt"
[ "$(md5sum <"$TMP/img/direct.qed")" = "$before" ] || fail "--format=raw changed the file"

log "qedimg --backing"
expect_fail() {
  local rc=0
  timeout 20 "$@" >"$TMP/out" 2>&1 || rc=$?
  [ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "$* exited with $rc: $(cat "$TMP/out")"
}
# Plain info opens no backing file (as qemu-img): it shows the stored name of any of them.
timeout 20 "$QEDIMG" info "$TMP/img/fifo.qed" >"$TMP/out" 2>&1 || fail "info fifo: $(cat "$TMP/out")"
grep -q "^backing file: fifo" "$TMP/out" || fail "qedimg info fifo: $(cat "$TMP/out")"
expect_fail "$QEDIMG" info --backing-chain "$TMP/img/fifo.qed"
grep -q "is a FIFO" "$TMP/out" || fail "qedimg info --backing-chain fifo: $(cat "$TMP/out")"
expect_fail "$QEDIMG" info --backing-chain --backing=confined "$TMP/img/abs.qed"
grep -q "absolute" "$TMP/out" || fail "qedimg info --backing=confined: $(cat "$TMP/out")"
"$QEDIMG" info --backing-chain --backing=none "$TMP/img/abs.qed" >"$TMP/out" 2>&1 ||
  fail "info none: $(cat "$TMP/out")"
grep -q "secret.raw" "$TMP/out" || fail "info --backing=none does not show the stored name"
"$QEDIMG" map --backing=none --output=json "$TMP/img/abs.qed" >"$TMP/out" || fail "map none"
! grep -q '"data": true' "$TMP/out" || fail "map --backing=none shows data: $(cat "$TMP/out")"
"$QEDIMG" convert --backing=none -O raw "$TMP/img/abs.qed" "$TMP/abs.raw" || fail "convert none"
cmp -n $((1 << 20)) /dev/zero "$TMP/abs.raw" || fail "convert --backing=none copied backing data"
"$QEDIMG" check --backing=confined "$TMP/img/inner.qed" >/dev/null || fail "check confined"

log "locks: qedfuse holds an overlay of a QED backing file"
qemu-img create -q -f qed "$TMP/img/base.qed" 1M
qemu-img create -q -f qed -b base.qed -F qed "$TMP/img/ov.qed"
mount_image "$TMP/img/ov.qed" "$TMP/mnt/ov.raw"
rc=0
qemu-io -f qed -c 'write 0 4k' "$TMP/img/base.qed" >"$TMP/out" 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "qemu-io wrote the backing file of a mounted overlay"
grep -q 'Failed to get "write" lock' "$TMP/out" || fail "qemu-io: $(cat "$TMP/out")"
qemu-io -r -f qed -c 'read 0 4k' "$TMP/img/base.qed" >/dev/null || fail "qemu-io -r refused"
unmount_image "$TMP/mnt/ov.raw"

log "locks: qemu-io holds an overlay of a QED backing file"
qemu-io -f qed -c 'sleep 60000' "$TMP/img/ov.qed" >/dev/null 2>&1 &
QPID=$!
KILL_PIDS+=("$QPID")
for _ in $(seq 100); do grep -q ":$(stat -c %i "$TMP/img/base.qed") " /proc/locks && break; sleep 0.05; done
rc=0
timeout 20 "$QEDFUSE" "$TMP/img/base.qed" "$TMP/mnt/base.raw" 2>"$TMP/err" || rc=$?
FUSE_MOUNTS+=("$TMP/mnt/base.raw")
[ "$rc" != 0 ] || fail "qedfuse mounted read-write the backing file of a QEMU overlay"
grep -q "does not let others write to it; it can be opened read-only" "$TMP/err" ||
  fail "lock message: $(cat "$TMP/err")"
mount_image -r "$TMP/img/base.qed" "$TMP/mnt/base.raw"
unmount_image "$TMP/mnt/base.raw"
kill "$QPID" 2>/dev/null || true
wait "$QPID" 2>/dev/null || true
echo PASS
