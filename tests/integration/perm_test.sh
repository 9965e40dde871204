#!/bin/bash
# Who may use the mounted disk. It belongs to the mounting user (never to the owner of a file
# mounted over), mode 0600 (0400 read-only); uid=, gid= and umask= change that; chmod, chown and
# touch work as on a regular file, as far as the kernel allows the caller, for the mount's
# lifetime; allow_other opens the mount to other users as far as the mode allows; allow_root
# only to root and the mounting user, whatever the mode. Root mounts, and mounts by an
# unprivileged user through fusermount3; the others are user 65534 and user 65533.
QEDFUSE_TEST_USER_MOUNTS=1
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img python3 dd stat touch
enable_user_mounts

IMG=$TMP/user/img.qed MNT=$TMP/user/root.raw  # a mountpoint file is created by whoever mounts
as_user qemu-img create -q -f qed "$IMG" 1M
checks=0

expect_error() {  # MESSAGE DESCRIPTION CMD...: CMD fails with MESSAGE
  local msg=$1 what=$2 out
  shift 2
  if out=$("$@" 2>&1 </dev/null); then fail "$what succeeded"; fi
  grep -q "$msg" <<<"$out" || fail "$what: unexpected error: $out"
  checks=$((checks + 1))
}
denied() { expect_error "Permission denied" "$@"; }
refused() { expect_error "Operation not permitted" "$@"; }
works() {  # DESCRIPTION CMD...
  local what=$1 out
  shift
  out=$("$@" 2>&1 </dev/null) || fail "$what failed: $out"
  checks=$((checks + 1))
}
attrs() {  # [RUNNER...] -- shows mode, owner and group of MNT as the runner sees them
  "$@" stat -c '%a %u %g' "$MNT"
}
expect_attrs() {  # WANT RUNNER...
  local want=$1 got
  shift
  got=$(attrs "$@") || fail "stat ${*:-as root} failed"
  [ "$got" = "$want" ] || fail "attributes $got, expected $want"
  checks=$((checks + 1))
}
read_as() { local id=$1; shift; as_uid "$id" dd if="$MNT" of=/dev/null bs=4k count=1 status=none; }
write_as() {
  local id=$1
  as_uid "$id" dd if=/dev/zero of="$MNT" bs=4k count=1 seek=1 conv=notrunc status=none
}

log "root mounts: 0600 root:root; other users cannot open it, even with allow_other"
mount_image "$IMG" "$MNT"
expect_attrs "600 0 0"
denied "user reads a root mount without allow_other" read_as $USER_ID
unmount_image "$MNT"
mount_image -o allow_other "$IMG" "$MNT"
expect_attrs "600 0 0"
expect_attrs "600 0 0" as_user
denied "user reads (allow_other, 0600)" read_as $USER_ID
denied "user writes (allow_other, 0600)" write_as $USER_ID
refused "user chmods root's disk" as_user chmod 666 "$MNT"
refused "user chowns root's disk" as_user chown $USER_ID "$MNT"

log "allow_other + chmod 0666: everyone can; chmod back: nobody but root"
works "root chmod 0666" chmod 666 "$MNT"
expect_attrs "666 0 0" as_user
works "user reads (0666)" read_as $USER_ID
works "user writes (0666)" write_as $USER_ID
works "other reads (0666)" read_as $OTHER_ID
works "user touches (write permission, current time)" as_user touch "$MNT"
refused "user sets an explicit time on root's disk" as_user touch -d 2001-01-01 "$MNT"
works "root chmod 0600" chmod 600 "$MNT"
denied "user reads after chmod 0600" read_as $USER_ID
works "root chown to the user" chown $USER_ID:$USER_ID "$MNT"
expect_attrs "600 $USER_ID $USER_ID" as_user
works "user reads as the new owner" read_as $USER_ID
works "user chmods as owner" as_user chmod 640 "$MNT"
refused "user gives the disk away" as_user chown $OTHER_ID "$MNT"
works "user sets an explicit time as owner" as_user touch -d 2001-01-01 "$MNT"
[ "$(stat -c %Y "$MNT")" = "$(date -d 2001-01-01 +%s)" ] || fail "mtime not set"
works "root chowns to another user" chown $OTHER_ID "$MNT"
expect_attrs "640 $OTHER_ID $USER_ID"
works "user reads through the group" read_as $USER_ID
denied "user writes through the group (0640)" write_as $USER_ID
works "other reads as owner" read_as $OTHER_ID
unmount_image "$MNT"
log "chmod and chown last for the mount's lifetime only (remounted without the write-back cache)"
mount_image -o allow_other --writeback-cache=off --aio=threads "$IMG" "$MNT"
expect_attrs "600 0 0"
denied "user reads (no write-back cache)" read_as $USER_ID
works "root chmod 0606 (no write-back cache)" chmod 606 "$MNT"
works "user writes (no write-back cache)" write_as $USER_ID
unmount_image "$MNT"

log "uid=, gid=, umask="
mount_image -o allow_other,uid=$USER_ID,gid=$OTHER_ID "$IMG" "$MNT"
expect_attrs "600 $USER_ID $OTHER_ID" as_user
works "user reads (uid=)" read_as $USER_ID
works "user writes (uid=)" write_as $USER_ID
denied "other reads (gid=, 0600)" read_as $OTHER_ID
unmount_image "$MNT"
mount_image -o allow_other,gid=$USER_ID,umask=027 "$IMG" "$MNT"
expect_attrs "640 0 $USER_ID" as_user
works "user reads through the group (umask=027)" read_as $USER_ID
denied "user writes through the group (umask=027)" write_as $USER_ID
denied "other reads (umask=027)" read_as $OTHER_ID
unmount_image "$MNT"
mount_image -o allow_other,umask=0 "$IMG" "$MNT"
expect_attrs "666 0 0" as_user
works "other writes (umask=0)" write_as $OTHER_ID
unmount_image "$MNT"
mount_image -o ro,allow_other "$IMG" "$MNT"
expect_attrs "400 0 0"
unmount_image "$MNT"
mount_image -o ro,allow_other,umask=022 "$IMG" "$MNT"
expect_attrs "444 0 0" as_user
works "user reads a read-only 0444 disk" read_as $USER_ID
unmount_image "$MNT"

log "allow_root: root and the mounting user only, whatever the mode"
mount_image -o allow_root,umask=0 "$IMG" "$MNT"
# First, while the kernel has no attributes cached (it may answer stat from its cache for up
# to a second after anyone's access).
denied "user stats (allow_root)" as_user stat "$MNT"
expect_attrs "666 0 0"
denied "user reads (allow_root)" read_as $USER_ID
denied "user truncates (allow_root)" as_user python3 -c 'import os, sys; os.truncate(sys.argv[1], 1 << 20)' "$MNT"
works "root reads (allow_root)" read_as 0
unmount_image "$MNT"

log "a user mounts an image of theirs: 0600, theirs; root is kept out without allow_other"
MNT=$TMP/user/user.raw
user_mount "$IMG" "$MNT"
expect_attrs "600 $USER_ID $USER_ID" as_user
works "user reads their mount" read_as $USER_ID
works "user writes their mount" write_as $USER_ID
denied "root reads a user's mount without allow_other" read_as 0
user_unmount "$MNT"
user_mount -o allow_root,umask=0 "$IMG" "$MNT"
denied "other stats (allow_root)" as_uid $OTHER_ID stat "$MNT"
works "user reads (allow_root, mounter)" read_as $USER_ID
works "root reads (allow_root)" read_as 0
denied "other reads (allow_root, 0666)" read_as $OTHER_ID
user_unmount "$MNT"
user_mount -o allow_other "$IMG" "$MNT"
denied "other reads a user's 0600 disk (allow_other)" read_as $OTHER_ID
works "user opens it to others" as_user chmod 644 "$MNT"
works "other reads (0644)" read_as $OTHER_ID
denied "other writes (0644)" write_as $OTHER_ID
user_unmount "$MNT"
log "a user's mount with umask=0277 or uid= of someone else still mounts (write-back cache on)"
user_mount -o umask=0277 "$IMG" "$MNT"
expect_attrs "400 $USER_ID $USER_ID" as_user
denied "user writes their 0400 disk" write_as $USER_ID
user_unmount "$MNT"
user_mount -o allow_other,uid=$OTHER_ID "$IMG" "$MNT"
expect_attrs "600 $OTHER_ID $USER_ID" as_user
works "other reads (uid=other)" read_as $OTHER_ID
denied "the mounting user reads a disk they gave away" read_as $USER_ID
user_unmount "$MNT"

log "mounting over another user's file does not give them the disk"
rm -f "$TMP/user/theirs.raw"
as_user sh -c "umask 0; : > $TMP/user/theirs.raw"
mount_image -o allow_other "$IMG" "$TMP/user/theirs.raw"
MNT=$TMP/user/theirs.raw expect_attrs "600 0 0" as_user
MNT=$TMP/user/theirs.raw denied "the mountpoint's owner reads" read_as $USER_ID
MNT=$TMP/user/theirs.raw refused "the mountpoint's owner chmods" as_user chmod 666 "$TMP/user/theirs.raw"
unmount_image "$TMP/user/theirs.raw"
[ "$(stat -c '%a %u' "$TMP/user/theirs.raw")" = "666 $USER_ID" ] || fail "the file mounted over changed"
qemu_check_clean "$IMG"
echo "COUNTS: perm: $checks checks, 0 failed"
echo PASS
