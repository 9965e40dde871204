// fusefs::Remount: `qedfuse IMAGE MOUNTPOINT -o remount,ro|rw[,flags]`, which is what mount(8)
// runs, through mount.fuse3, for `mount -o remount,ro MOUNTPOINT` of a fuse.qedfuse mount:
//   mount.fuse3 IMAGE MOUNTPOINT -o ro,nosuid,nodev,relatime,remount,user_id=0,... -t fuse.qedfuse
//   -> /bin/sh -c 'qedfuse IMAGE MOUNTPOINT -o ro,nosuid,nodev,relatime,remount,user_id=0,...'
// (IMAGE is the mount's source, the options its current ones merged with the new ones).
//
// It switches the live mount with mount(2) MS_REMOUNT, the kernel's own read-only switch: going
// read-only, the mounted file is fsync'd first (the kernel cache is written back and the daemon
// flushes the image), and the kernel refuses (EBUSY) while anything has the file open for
// writing; read-only, every write fails with EROFS. The daemon is not involved and keeps the image
// open as it was mounted, so going back to read-write needs an image it opened read-write (seen
// in the image's lock bytes). Flags (nosuid, noexec, atime, ...) start from the mount's current
// ones. Settings of the daemon (cache=, aio=, ...) cannot change and are reported as unchanged.
// Only root can remount: fusermount3 has no remount.
#pragma once

#include "fusefs/mount_options.h"

namespace qedfuse::fusefs {

// Returns the exit code (0: remounted); failures are logged with their reason.
int Remount(const MountOptions& o);

}  // namespace qedfuse::fusefs
