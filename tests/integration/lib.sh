# Shared helpers for the qedfuse integration tests (sourced by every *_test.sh).
#
# Each test runs in its own temporary directory; an EXIT trap detaches loop devices, unmounts
# everything the test mounted (lazily if the daemon is dead), kills daemons it started and
# removes the directory, whatever way the script ends. Tests skip (exit 77) when they cannot run:
# not root, no /dev/fuse, or a tool missing.
set -euo pipefail

QEDFUSE=${QEDFUSE:?QEDFUSE must point at the qedfuse binary}

skip() {
  echo "SKIP: $*"
  exit 77
}

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

log() { echo "--- $*"; }

require_fuse() {
  [ "$(id -u)" = 0 ] || skip "needs root (mounts, loop devices)"
  [ -c /dev/fuse ] || skip "/dev/fuse is missing"
  command -v fusermount3 >/dev/null || skip "fusermount3 is not installed"
}

require_tools() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null || skip "$t is not installed"
  done
}

# A test that sets QEDFUSE_TEST_USER_MOUNTS=1 before sourcing this file runs in its own private
# mount namespace (re-executed here, as root), where unprivileged users can mount through the
# setuid fusermount3 even if this host's /dev/fuse is root-only (distributions make it 0666),
# and may pass allow_other/allow_root (user_allow_other): see enable_user_mounts. Nothing of
# that is visible outside the namespace, and its mounts vanish with it.
if [[ ${QEDFUSE_TEST_USER_MOUNTS:-} == 1 && -z ${QEDFUSE_TEST_IN_NS:-} && $(id -u) == 0 ]] &&
  command -v unshare >/dev/null; then
  exec env QEDFUSE_TEST_IN_NS=1 unshare --mount --propagation private "$BASH" "$0" "$@"
fi

TMP=$(mktemp -d /tmp/qedfuse-it.XXXXXX)
FUSE_MOUNTS=()
OTHER_MOUNTS=()
LOOPS=()
KILL_PIDS=()
REMOVE_FILES=()  # outside $TMP, removed at exit

is_mounted() {  # PATH: true if PATH is a mount point (works for files)
  awk -v p="$1" '$5 == p { found = 1 } END { exit !found }' /proc/self/mountinfo
}

cleanup() {
  local rc=$? x
  set +e
  for x in "${OTHER_MOUNTS[@]}"; do is_mounted "$x" && umount -l "$x"; done
  for x in "${LOOPS[@]}"; do
    # Only devices still backed by our files: one a test detached itself may belong to another
    # process by now (losetup -f hands out the lowest free number).
    [[ $(losetup -n -O BACK-FILE "$x" 2>/dev/null) == "$TMP"/* ]] && losetup -d "$x" 2>/dev/null
  done
  for x in "${FUSE_MOUNTS[@]}"; do
    while is_mounted "$x"; do fusermount3 -u -z "$x" 2>/dev/null || umount -l "$x" || break; done
  done
  for x in "${KILL_PIDS[@]}"; do kill -9 "$x" 2>/dev/null; done
  for x in $(daemon_pids "$TMP/"); do kill -9 "$x" 2>/dev/null; done
  for x in "${REMOVE_FILES[@]}"; do rm -f "$x"; done
  rm -rf "$TMP"
  [ -n "$TRANSPORT_DIR" ] && rm -rf "$TRANSPORT_DIR"
  # The kernel's io_uring switch goes back to what it was (QEDFUSE_TEST_TRANSPORT=uring).
  [ -n "$URING_RESTORE" ] && echo "$URING_RESTORE" >"$URING_PARAM"
  exit "$rc"
}
trap cleanup EXIT
# Set up by the QEDFUSE_TEST_TRANSPORT block at the end of this file.
URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_RESTORE=
TRANSPORT_DIR=


# PIDs of qedfuse processes whose command line mentions TEXT.
daemon_pids() {
  local p
  for p in $(pgrep -x qedfuse || true); do
    if { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "$1"; then echo "$p"; fi
  done
}

# Waits (at most 60 s) for process PID to exit.
wait_pid_gone() {
  local i
  for ((i = 0; i < 600; i++)); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  fail "process $1 did not exit"
}

# The unprivileged users of the permission tests (no passwd entry needed): USER_ID owns and
# mounts images, OTHER_ID is a third party.
USER_ID=65534
OTHER_ID=65533
as_uid() {  # UID CMD...: runs CMD as UID (same gid), without supplementary groups
  local id=$1
  shift
  # A system PATH: root's may lead through directories that other users cannot enter.
  setpriv --reuid="$id" --regid="$id" --clear-groups env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"
}
as_user() { as_uid "$USER_ID" "$@"; }

# enable_user_mounts: in the namespace QEDFUSE_TEST_USER_MOUNTS=1 set up, gives users a
# world-usable /dev/fuse and an /etc/fuse.conf with user_allow_other (bind mounts of files in
# $TMP), and makes $TMP/user, writable by USER_ID. Skips the test outside such a namespace.
enable_user_mounts() {
  require_tools setpriv unshare
  [ -n "${QEDFUSE_TEST_IN_NS:-}" ] || skip "cannot create a private mount namespace"
  chmod 711 "$TMP"
  mkdir -m 777 "$TMP/user"
  if [ "$(stat -c %a /dev/fuse)" != 666 ]; then
    mknod -m 666 "$TMP/fuse" c "$((0x$(stat -c %t /dev/fuse)))" "$((0x$(stat -c %T /dev/fuse)))"
    mount --bind "$TMP/fuse" /dev/fuse
  fi
  { cat /etc/fuse.conf 2>/dev/null || true; echo user_allow_other; } >"$TMP/fuse.conf"
  chmod 644 "$TMP/fuse.conf"
  if [ -e /etc/fuse.conf ]; then
    mount --bind "$TMP/fuse.conf" /etc/fuse.conf
  else
    skip "/etc/fuse.conf is missing (fuse3 is not fully installed)"
  fi
}

# Waits (at most 60 s) until PATH is no longer a mount point.
wait_unmounted() {
  local i
  for ((i = 0; i < 600; i++)); do
    is_mounted "$1" || return 0
    sleep 0.1
  done
  fail "$1 is still mounted"
}

# Waits (at most 60 s) until FILE has at least COUNT (default 1) lines matching the fixed string
# TEXT.
wait_for_line() {
  local file=$1 text=$2 count=${3:-1} i
  for ((i = 0; i < 600; i++)); do
    (($(grep -cF -- "$text" "$file" 2>/dev/null) + 0 >= count)) && return 0
    sleep 0.1
  done
  fail "no line '$text' in $file: $(cat "$file" 2>/dev/null)"
}

# The lifecycle tests' unprivileged user (USER_ID), in $TMP/user (owned by it): see
# require_user_mounts. AS_USER is the as_user prefix for commands that exec their arguments.
TEST_UID=$USER_ID
AS_USER=(setpriv --reuid="$TEST_UID" --regid="$TEST_UID" --clear-groups)

# Prepares unprivileged FUSE mounts (fusermount3): makes $TMP/user, and gives /dev/fuse the mode
# udev gives it on a normal system (0666) where nothing did (containers without udev).
require_user_mounts() {
  require_tools setpriv
  [ -u "$(command -v fusermount3)" ] || skip "fusermount3 is not setuid root"
  chmod 755 "$TMP"
  mkdir -p "$TMP/user"
  chown "$TEST_UID:$TEST_UID" "$TMP/user"
  if ! as_user test -r /dev/fuse -a -w /dev/fuse; then
    chmod 0666 /dev/fuse
    echo "note: /dev/fuse was not usable by unprivileged users; set it to udev's mode 0666"
  fi
}

# Unprivileged setup most tests share: USER_IMG (a 16 MiB QED image the test user owns) and
# USER_MNT (its mountpoint, unmounted at exit), in $TMP/user.
prepare_user_image() {
  require_user_mounts
  USER_IMG=$TMP/user/img.qed USER_MNT=$TMP/user/disk.raw
  as_user qemu-img create -q -f qed "$USER_IMG" 16M
  FUSE_MOUNTS+=("$USER_MNT")
}

# mount_user_image [ARGS...]: the test user mounts USER_IMG on USER_MNT; sets DAEMON_PID.
mount_user_image() {
  as_user "$QEDFUSE" "$@" "$USER_IMG" "$USER_MNT"
  DAEMON_PID=$(daemon_pids "$USER_MNT" | head -n1)
  [ -n "$DAEMON_PID" ] || fail "no qedfuse daemon for $USER_MNT"
}

# expect_refused PATTERN COMMAND...: COMMAND must fail with the fixed string PATTERN on stderr
# (kept in $TMP/err).
expect_refused() {
  local pattern=$1 rc=0
  shift
  "$@" 2>"$TMP/err" || rc=$?
  [ "$rc" -ne 0 ] || fail "$* succeeded"
  grep -qF -- "$pattern" "$TMP/err" || fail "$*: expected '$pattern', got: $(cat "$TMP/err")"
  echo "ok: $(head -n1 "$TMP/err")"
}

# mount_image [ARGS...] IMAGE MOUNTPOINT: mounts (the command returns when the mount is live) and
# records the mount for cleanup; sets DAEMON_PID. user_mount: the same, but USER_ID mounts
# (through fusermount3).
mount_image() { mount_as "" "$@"; }
user_mount() { mount_as as_user "$@"; }
mount_as() {  # RUNNER ARGS...: RUNNER is empty (root) or a command prefix such as as_user
  local runner=$1
  shift
  local mnt=${*: -1}
  FUSE_MOUNTS+=("$mnt")
  $runner "$QEDFUSE" "$@"
  is_mounted "$mnt" || fail "qedfuse returned but $mnt is not mounted"
  DAEMON_PID=$(daemon_pids "$mnt" | head -n1)
  [ -n "$DAEMON_PID" ] || fail "no qedfuse daemon for $mnt"
}

# unmount_image MOUNTPOINT: unmounts with fusermount3 -u and waits for its daemon to finish
# closing the image. user_unmount: the same for a mount of USER_ID.
unmount_image() { unmount_as "" "$1"; }
user_unmount() { unmount_as as_user "$1"; }
unmount_as() {  # RUNNER MOUNTPOINT
  local pid
  pid=$(daemon_pids "$2" | head -n1)
  $1 fusermount3 -u "$2"
  if [ -n "$pid" ]; then wait_pid_gone "$pid"; fi
  ! is_mounted "$2" || fail "$2 still mounted"
}

# Byte 16 is the low byte of the QED feature bits; bit 1 (0x02) is NEED_CHECK.
need_check_set() {
  local b
  b=$(xxd -s 16 -l 1 -p "$1")
  (((0x$b & 2) != 0))
}

qemu_check_clean() {
  local out
  if ! out=$(qemu-img check -f qed "$1" 2>&1); then
    echo "$out" >&2
    fail "qemu-img check reports problems in $1"
  fi
}

# After a crash, clusters allocated but not yet linked into L2 are leaked: that wastes space and
# is what QEMU's own QED driver leaves too (qemu-img check exit code 3). Corruption (2) is not.
qemu_check_no_corruption() {
  local rc=0 out
  out=$(qemu-img check -f qed "$1" 2>&1) || rc=$?
  case $rc in
    0) ;;
    3) echo "note: $(grep -m1 'leaked' <<<"$out")" ;;
    *)
      echo "$out" >&2
      fail "qemu-img check exit code $rc for $1"
      ;;
  esac
}

# QEDFUSE_TEST_TRANSPORT=dev|uring: every qedfuse the test starts (through mount_image, user_mount
# or "$QEDFUSE" directly) serves its mount over /dev/fuse (--io-uring=off) or FUSE over io_uring
# (--io-uring=on: a mount that cannot use it fails). $QEDFUSE becomes a wrapper named qedfuse that
# adds the option (not to a remount, for which it is not a setting) and execs the real binary,
# so process names and `dirname "$QEDFUSE"` in PATH (mount.fuse3) keep working. For uring the
# kernel's switch is turned on for the test's duration and restored at exit; the test is skipped
# (exit 77) when the kernel has no FUSE over io_uring. Unset: qedfuse's default (auto).
QEDIMG=${QEDIMG:-$(dirname "$QEDFUSE")/../src/tools/qedimg}
case ${QEDFUSE_TEST_TRANSPORT:-} in
  '') ;;
  dev | uring)
    transport_flag=--io-uring=off
    if [[ $QEDFUSE_TEST_TRANSPORT == uring ]]; then
      transport_flag=--io-uring=on
      [ -e "$URING_PARAM" ] ||
        skip "this kernel has no FUSE over io_uring ($URING_PARAM is missing; needs Linux >= 6.14 with CONFIG_FUSE_IO_URING)"
      [ "$(id -u)" = 0 ] || skip "needs root to turn on $URING_PARAM"
      if [ "$(cat "$URING_PARAM")" != Y ]; then
        echo Y >"$URING_PARAM" || skip "cannot turn on $URING_PARAM"
        URING_RESTORE=N
      fi
    fi
    TRANSPORT_DIR=$(mktemp -d /tmp/qedfuse-transport.XXXXXX)
    chmod 755 "$TRANSPORT_DIR"
    real_qedfuse=$(realpath "$QEDFUSE")
    cat >"$TRANSPORT_DIR/qedfuse" <<WRAPPER
#!/usr/bin/env bash
for a in "\$@"; do
  [[ \$a == *remount* ]] && exec "$real_qedfuse" "\$@"
done
exec "$real_qedfuse" $transport_flag "\$@"
WRAPPER
    chmod 755 "$TRANSPORT_DIR/qedfuse"
    QEDFUSE=$TRANSPORT_DIR/qedfuse
    echo "transport: ${QEDFUSE_TEST_TRANSPORT} ($transport_flag)"
    ;;
  *) fail "QEDFUSE_TEST_TRANSPORT must be dev or uring, not '$QEDFUSE_TEST_TRANSPORT'" ;;
esac
