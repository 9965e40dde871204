#!/usr/bin/env bash
# Runs scripts/demo.sh with the freshly built binaries, once to the end and once interrupted
# with SIGINT in the middle, and checks that it verified its files and left no mount, loop
# device, daemon or temporary directory behind.
# Usage: demo_test.sh SOURCE-ROOT (QEDFUSE and QEDIMG in the environment)
set -euo pipefail
src=${1:?usage: demo_test.sh SOURCE-ROOT}
: "${QEDFUSE:?}" "${QEDIMG:?}"
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root"; exit 77; }
[ -c /dev/fuse ] || { echo "SKIP: /dev/fuse is missing"; exit 77; }
for t in fusermount3 losetup mkfs.ext4 e2fsck; do
  command -v "$t" >/dev/null || { echo "SKIP: $t is not installed"; exit 77; }
done

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

before=$(ls -d /tmp/qedfuse-demo.* 2>/dev/null || true)
log=$(mktemp /tmp/demo-test-log.XXXXXX)
trap 'rm -f "$log"' EXIT

leftovers() {
  local d
  for d in $(ls -d /tmp/qedfuse-demo.* 2>/dev/null || true); do
    grep -qxF "$d" <<<"$before" && continue
    echo "directory $d"
  done
  grep -F /tmp/qedfuse-demo. /proc/self/mountinfo | sed 's/^/mount /' || true
  losetup -a | grep -F /tmp/qedfuse-demo. | sed 's/^/loop /' || true
  pgrep -af 'qedfuse .*/tmp/qedfuse-demo\.' | sed 's/^/process /' || true
}

export QEDFUSE_BIN=$QEDFUSE QEDIMG_BIN=$QEDIMG DEMO_SIZE=256M
"$src/scripts/demo.sh" >"$log" 2>&1 || { cat "$log"; fail "demo.sh exited with $?"; }
for want in "random.bin: OK" "numbers.txt: OK" "qedimg.copy: OK" "No errors were found on the image." \
  "file format: qed"; do
  grep -qF "$want" "$log" || { cat "$log"; fail "demo output lacks '$want'"; }
done
left=$(leftovers)
[ -z "$left" ] || fail "demo.sh left behind: $left"

# Interrupted while everything is mounted: the trap must still clean up.
# Job control on: a background job of a non-interactive shell would otherwise ignore SIGINT.
set -m
"$src/scripts/demo.sh" >"$log" 2>&1 &
pid=$!
set +m
for ((i = 0; i < 300; i++)); do
  grep -qF "==> Writing files" "$log" && break
  sleep 0.1
done
kill -INT "$pid"
rc=0
wait "$pid" || rc=$?
[ "$rc" = 130 ] || { cat "$log"; fail "interrupted demo exited with $rc, expected 130"; }
left=$(leftovers)
[ -z "$left" ] || fail "interrupted demo.sh left behind: $left"
echo PASS
