#!/usr/bin/env bash
# End to end test of the FUSE codec and both transports on a real mount, without the block
# layer: tests/fusefs/codec_server serves one in-memory file over /dev/fuse (--io-uring=off) and
# over FUSE over io_uring (--io-uring=on), as root and as an unprivileged user, with and without
# the kernel write-back cache. Each run checks the transport the server reports, then runs fio
# verify=crc32c (libaio, O_DIRECT and buffered, iodepth 32, one job pinned to each CPU so that
# every kernel queue is used), dd, stat, truncate (grow; shrink refused), fallocate (grow, punch
# hole, unsupported modes), SEEK_DATA/SEEK_HOLE, and an unmount after which the server must exit
# cleanly and report how many requests each transport (and each io_uring queue) carried.
#
# FUSE over io_uring needs Linux >= 6.14 with CONFIG_FUSE_IO_URING; the runs that use it are
# skipped with the reason when the kernel lacks it. When /sys/module/fuse/parameters/enable_uring
# is N and we are root, it is turned on for the test and restored at exit.
set -euo pipefail

SERVER=${CODEC_SERVER:?CODEC_SERVER must point at the codec_server binary}
SERVER=$(realpath "$SERVER")
# lib.sh: skip/fail/log, $TMP, and the cleanup of FUSE_MOUNTS and KILL_PIDS at exit.
QEDFUSE=$SERVER
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_fuse
require_tools fio setpriv /usr/bin/python3 fallocate truncate
chmod 755 "$TMP"

URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_RESTORE=
# Put the kernel's io_uring switch back before lib.sh's cleanup (which keeps the exit status).
trap 'rc=$?; [ -n "$URING_RESTORE" ] && echo "$URING_RESTORE" >"$URING_PARAM"; (exit $rc); cleanup' EXIT

uring_ok=1
uring_why=
if [ ! -e "$URING_PARAM" ]; then
  uring_ok=0
  uring_why="this kernel has no FUSE over io_uring ($URING_PARAM is missing; needs Linux >= 6.14 with CONFIG_FUSE_IO_URING)"
elif [ "$(cat "$URING_PARAM")" != Y ]; then
  URING_RESTORE=N
  echo Y >"$URING_PARAM" || { uring_ok=0; uring_why="cannot turn on $URING_PARAM"; }
fi
NOBODY=65534

# as USER CMD...: runs CMD as root or as the unprivileged user.
as() {
  local who=$1
  shift
  if [ "$who" = root ]; then
    "$@"
  else
    setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups -- "$@"
  fi
}

# held_elsewhere PATH: true if PATH is a mount point in another process's mount namespace.
held_elsewhere() {
  local own f
  own=$(readlink /proc/self/ns/mnt)
  for f in /proc/[0-9]*/mountinfo; do
    [ "$(readlink "${f%/mountinfo}/ns/mnt" 2>/dev/null)" != "$own" ] || continue
    awk -v p="$1" '$5 == p { found = 1 } END { exit !found }' "$f" 2>/dev/null && return 0
  done
  return 1
}

# seek PATH data|hole OFFSET: SEEK_DATA/SEEK_HOLE as $who; prints the offset or the errno name.
cat >"$TMP/seek.py" <<'PY'
import errno, os, sys
path, whence, off = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(path, os.O_RDONLY)
try:
    print(os.lseek(fd, off, os.SEEK_DATA if whence == "data" else os.SEEK_HOLE))
except OSError as e:
    print(errno.errorcode[e.errno])
PY
chmod 644 "$TMP/seek.py"
seek() { as "$who" /usr/bin/python3 "$TMP/seek.py" "$@"; }

M=$((1 << 20))
ncpu=$(nproc)

# run_case MODE USER WRITEBACK
run_case() {
  local mode=$1 who=$2 wb=$3
  local name="$mode-$who-wb$wb"
  local dir=$TMP/$name
  mkdir -p "$dir"
  [ "$who" = root ] || chown $NOBODY:$NOBODY "$dir"
  local mnt=$dir/disk srv_log=$dir/server.log
  local args=(--io-uring="$mode" --size=64M)
  [ "$wb" = on ] || args+=(--no-writeback-cache)
  log "$name: mounting"
  FUSE_MOUNTS+=("$mnt")
  (cd "$dir" && as "$who" "$SERVER" "${args[@]}" "$mnt" 2>"$srv_log") &
  local pid=$!
  KILL_PIDS+=("$pid")
  local i
  for ((i = 0; i < 100; i++)); do
    grep -q "ready on" "$srv_log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$srv_log"; fail "$name: server exited before ready"; }
    sleep 0.1
  done
  grep -q "ready on" "$srv_log" || { cat "$srv_log"; fail "$name: server not ready"; }
  if [ "$mode" = on ]; then
    grep -q "transport: io_uring, [0-9]* queues x 32 entries" "$srv_log" ||
      { cat "$srv_log"; fail "$name: not served over io_uring"; }
  else
    grep -q "transport: /dev/fuse" "$srv_log" || { cat "$srv_log"; fail "$name: wrong transport"; }
  fi

  [ "$(as "$who" stat -c %s "$mnt")" = $((64 * M)) ] || fail "$name: size"
  [ "$(as "$who" stat -c %U "$mnt")" = "$([ "$who" = root ] && echo root || echo nobody)" ] ||
    fail "$name: owner"

  log "$name: fio verify (direct and buffered)"
  local direct
  for direct in 1 0; do
    (cd "$dir" && as "$who" fio --name=verify --filename="$mnt" --ioengine=libaio \
      --direct=$direct --iodepth=32 --rw=randwrite --bsrange=4k-64k --size=8M \
      --offset_increment=8M --numjobs="$ncpu" --cpus_allowed=0-$((ncpu - 1)) \
      --cpus_allowed_policy=split --verify=crc32c --do_verify=1 --verify_fatal=1 \
      --group_reporting --output="$dir/fio-$direct.txt") ||
      { cat "$dir/fio-$direct.txt"; fail "$name: fio verify direct=$direct"; }
    grep -q "err= 0" "$dir/fio-$direct.txt" || fail "$name: fio reported errors"
  done

  log "$name: dd"
  head -c $((3 * M)) /dev/urandom >"$dir/src"
  chmod 644 "$dir/src"
  as "$who" dd if="$dir/src" of="$mnt" bs=1M seek=20 conv=notrunc,fsync status=none
  as "$who" dd if="$mnt" of="$dir/back" bs=1M skip=20 count=3 iflag=direct status=none
  cmp "$dir/src" "$dir/back" || fail "$name: dd data differs"

  log "$name: truncate, fallocate, SEEK_DATA/SEEK_HOLE"
  as "$who" truncate -s 80M "$mnt"
  [ "$(as "$who" stat -c %s "$mnt")" = $((80 * M)) ] || fail "$name: truncate did not grow"
  if as "$who" truncate -s 10M "$mnt" 2>"$dir/err"; then fail "$name: shrink succeeded"; fi
  grep -q "Operation not permitted" "$dir/err" || { cat "$dir/err"; fail "$name: shrink error"; }
  as "$who" fallocate -o $((80 * M)) -l $M "$mnt"
  [ "$(as "$who" stat -c %s "$mnt")" = $((81 * M)) ] || fail "$name: fallocate did not grow"
  if as "$who" fallocate --collapse-range -o 0 -l $M "$mnt" 2>"$dir/err"; then
    fail "$name: collapse-range succeeded"
  fi
  grep -q "not supported" "$dir/err" || { cat "$dir/err"; fail "$name: collapse error"; }
  # 40M..64M is untouched (zeros) apart from one block written at 44M.
  as "$who" dd if="$dir/src" of="$mnt" bs=4k count=1 seek=$((44 * 256)) conv=notrunc,fsync \
    status=none
  [ "$(seek "$mnt" data $((40 * M)))" = $((44 * M)) ] || fail "$name: SEEK_DATA"
  [ "$(seek "$mnt" hole $((44 * M)))" = $((44 * M + 4096)) ] || fail "$name: SEEK_HOLE"
  as "$who" fallocate -p -o $((44 * M)) -l 4096 "$mnt"
  [ "$(seek "$mnt" data $((40 * M)))" = ENXIO ] || fail "$name: SEEK_DATA after punch"
  [ "$(seek "$mnt" data $((90 * M)))" = ENXIO ] || fail "$name: SEEK_DATA past the end"
  as "$who" dd if="$mnt" of="$dir/punched" bs=4k skip=$((44 * 256)) count=1 iflag=direct \
    status=none
  cmp -n 4096 /dev/zero "$dir/punched" || fail "$name: punched block is not zero"

  log "$name: unmount"
  as "$who" fusermount3 -u "$mnt"
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null && held_elsewhere "$mnt"; then
    # A mount namespace created meanwhile (another test's unshare -m) holds a copy of the mount,
    # so the kernel keeps the connection and the server rightly keeps serving it. End it.
    echo "note: $mnt is still mounted in another mount namespace; stopping the server"
    local p
    for p in $(pgrep -f -- "$mnt"); do
      [ "$(readlink "/proc/$p/exe")" = "$SERVER" ] && kill -TERM "$p"
    done
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  if kill -0 "$pid" 2>/dev/null; then
    cat "$srv_log"
    fail "$name: server still running after unmount"
  fi
  wait "$pid" || { cat "$srv_log"; fail "$name: server exit status $?"; }
  KILL_PIDS=("${KILL_PIDS[@]/#$pid/}")  # reaped: its number may go to someone else now
  grep "served" "$srv_log"
  if [ "$mode" = on ]; then
    local counts
    counts=$(grep -o "served [0-9]* requests over io_uring ([^)]*)" "$srv_log") ||
      fail "$name: no io_uring counts"
    [[ $counts =~ served\ ([0-9]+) ]] && ((BASH_REMATCH[1] > 1000)) ||
      fail "$name: few requests over io_uring: $counts"
    # fio ran one job on each CPU: every queue carried requests.
    if grep -Eq "queue [0-9]+: 0([,)]|$)" <<<"$counts"; then fail "$name: an idle queue: $counts"; fi
  fi
  if grep -Eq "malformed|internal error" "$srv_log"; then
    cat "$srv_log"
    fail "$name: the server logged a protocol problem"
  fi
  echo "COUNTS: codec_transport $name: $(grep -o 'served .*' "$srv_log")"
}

for who in root nobody; do
  for wb in on off; do
    run_case off "$who" "$wb"
    if ((uring_ok)); then
      run_case on "$who" "$wb"
    else
      echo "SKIP-PART: io_uring runs: $uring_why"
    fi
  done
done
# io_uring=on on a kernel that does not offer it must fail with the reason.
if [ -e "$URING_PARAM" ] && [ -n "$URING_RESTORE" ]; then
  echo N >"$URING_PARAM"
  log "io_uring=on with the kernel switch off"
  mnt=$TMP/refused
  FUSE_MOUNTS+=("$mnt")
  if timeout 20 "$SERVER" --io-uring=on "$mnt" 2>"$TMP/refused.log"; then
    fail "io_uring=on succeeded without kernel support"
  fi
  grep -q "enable_uring" "$TMP/refused.log" || { cat "$TMP/refused.log"; fail "no reason given"; }
  echo Y >"$URING_PARAM"
fi
echo "PASS"
