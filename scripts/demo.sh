#!/usr/bin/env bash
# qedfuse demo: from a fresh Debian machine to an ext4 filesystem living inside a QED image.
#
#   sudo scripts/demo.sh        (or scripts/demo.sh as root)
#
# Steps: install the dependencies (scripts/install-deps.sh), build qedfuse and qedimg in build/,
# create a QED image with qedimg, mount it as a raw file with qedfuse, attach a loop device,
# make and mount ext4, write files and record their checksums, unmount everything, mount it all
# again and verify the checksums through the image, then show `qedimg info`, `qedimg map` and
# `qedimg check` (and `qemu-img check` when QEMU's tools are installed).
#
# Whatever happens (an error, Ctrl-C, SIGTERM), the EXIT trap unmounts the filesystem, detaches
# the loop device, unmounts the FUSE file, stops the daemon and removes the temporary directory:
# nothing is left behind.
#
# Environment: QEDFUSE_BIN and QEDIMG_BIN use existing binaries (skipping install and build);
# DEMO_SIZE is the image size (default 1G); JOBS bounds the build's parallelism (default 2).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo --preserve-env=QEDFUSE_BIN,QEDIMG_BIN,DEMO_SIZE,JOBS "$0" "$@"
  fi
  echo "demo.sh: needs root (FUSE mount, loop device, mkfs); run it as root" >&2
  exit 1
fi

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() {  # prints the command, then runs it
  printf '$ %s\n' "$*"
  "$@"
}

tmp=""
loop_dev=""
fs_mounted=""
fuse_mounted=""

is_mounted() { awk -v p="$1" '$5 == p { f = 1 } END { exit !f }' /proc/self/mountinfo; }

# qedfuse daemons serving a file under the demo's directory.
daemon_pids() {
  local p
  [[ -n "$tmp" ]] || return 0
  for p in $(pgrep -x qedfuse || true); do
    if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$tmp/"; then echo "$p"; fi
  done
}

wait_daemons_gone() {  # at most 20 s
  local i
  for ((i = 0; i < 200; i++)); do
    [[ -z "$(daemon_pids)" ]] && return 0
    sleep 0.1
  done
  return 1
}

cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  set +e
  if [[ -n "$fs_mounted" ]] && is_mounted "$fs_mounted"; then
    umount "$fs_mounted" 2>/dev/null || umount -l "$fs_mounted"
  fi
  [[ -n "$loop_dev" ]] && losetup -d "$loop_dev" 2>/dev/null
  if [[ -n "$fuse_mounted" ]] && is_mounted "$fuse_mounted"; then
    fusermount3 -u "$fuse_mounted" 2>/dev/null || umount -l "$fuse_mounted"
  fi
  if ! wait_daemons_gone; then
    for p in $(daemon_pids); do kill -TERM "$p"; done
    sleep 1
    for p in $(daemon_pids); do kill -KILL "$p"; done
  fi
  [[ -n "$tmp" ]] && rm -rf "$tmp"
  if ((rc != 0)); then
    echo "demo.sh: stopped (exit code $rc); everything was cleaned up" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -n "${QEDFUSE_BIN:-}" && -n "${QEDIMG_BIN:-}" ]]; then
  qedfuse=$QEDFUSE_BIN
  qedimg=$QEDIMG_BIN
else
  step "Installing dependencies"
  run "$root/scripts/install-deps.sh"

  step "Building qedfuse and qedimg in build/"
  setup=(meson setup "$root/build" "$root" --buildtype=debugoptimized)
  [[ -f "$root/build/meson-private/coredata.dat" ]] && setup+=(--reconfigure)
  printf '$ %s\n' "${setup[*]}"
  "${setup[@]}" >/dev/null  # the summary is long; errors still go to stderr
  run ninja -C "$root/build" -j "${JOBS:-2}" fusefs/qedfuse src/tools/qedimg
  qedfuse=$root/build/fusefs/qedfuse
  qedimg=$root/build/src/tools/qedimg
fi

tmp=$(mktemp -d /tmp/qedfuse-demo.XXXXXX)
image=$tmp/demo.qed
disk=$tmp/disk.raw
mnt=$tmp/mnt
mkdir "$mnt"
cd "$tmp"

step "Creating a ${DEMO_SIZE:-1G} QED image"
run "$qedimg" create "$image" "${DEMO_SIZE:-1G}"

step "Mounting it as a raw file (returns once the mount is live)"
fuse_mounted=$disk
run "$qedfuse" "$image" "$disk"
run ls -ls "$disk"

step "Attaching a loop device and making an ext4 filesystem"
loop_dev=$(losetup -f --show "$disk")
echo "\$ losetup -f --show $disk"
echo "$loop_dev"
# nodiscard keeps the image sparse (a discard of the whole device would write zero entries).
run mkfs.ext4 -q -E nodiscard -L qedfuse-demo "$loop_dev"
fs_mounted=$mnt
run mount "$loop_dev" "$mnt"

step "Writing files"
run head -c 32M /dev/urandom >"$mnt/random.bin"
seq 1 100000 >"$mnt/numbers.txt"
echo "\$ seq 1 100000 > $mnt/numbers.txt"
run cp "$qedimg" "$mnt/qedimg.copy"
(cd "$mnt" && sha256sum random.bin numbers.txt qedimg.copy) >"$tmp/sums"
run cat "$tmp/sums"
run sync
run df -h "$mnt"

step "Unmounting everything (filesystem, loop device, FUSE file)"
run umount "$mnt"
fs_mounted=""
run losetup -d "$loop_dev"
loop_dev=""
run fusermount3 -u "$disk"
wait_daemons_gone || { echo "demo.sh: the daemon did not exit" >&2; exit 1; }
fuse_mounted=""

step "Mounting again and reading the files back through the image"
fuse_mounted=$disk
run "$qedfuse" --read-only "$image" "$disk"
loop_dev=$(losetup -f --show --read-only "$disk")
echo "\$ losetup -f --show --read-only $disk"
echo "$loop_dev"
run e2fsck -fn "$loop_dev"
fs_mounted=$mnt
run mount -o ro "$loop_dev" "$mnt"
(cd "$mnt" && run sha256sum -c "$tmp/sums")
run umount "$mnt"
fs_mounted=""
run losetup -d "$loop_dev"
loop_dev=""
run fusermount3 -u "$disk"
wait_daemons_gone || { echo "demo.sh: the daemon did not exit" >&2; exit 1; }
fuse_mounted=""

step "The image: info, allocation map, consistency check"
run "$qedimg" info "$image"
echo
run "$qedimg" map "$image" | head -n 25
echo "(first 25 lines; 'qedimg map --output=json' lists every extent)"
echo
run "$qedimg" check "$image"
if command -v qemu-img >/dev/null 2>&1; then
  echo
  run qemu-img check "$image"
fi

step "Done: nothing is left mounted, attached or running"
