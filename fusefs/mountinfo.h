// fusefs mount table helpers: reading /proc/self/mountinfo, and unmounting a path the way its
// owner is allowed to.
//
// qedfuse consults the mount table before it mounts (a file that is already a mount point is
// refused, so mounts never stack, and a dead FUSE mount left by a killed daemon is named as such),
// to remount (the current mount flags are the starting point of the new ones), and to unmount:
// root calls umount2(2); anybody else goes through the setuid fusermount3(1), as libfuse does.
// A non-lazy unmount fails with EBUSY while the mount is in use (open files, mappings, a loop
// device); a lazy one (MNT_DETACH, fusermount3 -z) always succeeds and is only for mounts whose
// daemon is gone.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qedfuse::fusefs {

// One line of /proc/PID/mountinfo (see proc(5)), with the octal escapes of the path fields
// (\040 for a space, ...) decoded.
struct MountEntry {
  int id = 0;
  int parent_id = 0;
  std::string mount_point;    // field 5
  std::string mount_options;  // field 6: per-mount flags (rw, nosuid, relatime, ...)
  std::string fstype;         // after the " - " separator, e.g. "fuse.qedfuse"
  std::string source;
  std::string super_options;  // rw/ro and the filesystem's own options
};

// Parses the text of a mountinfo file; malformed lines are skipped.
std::vector<MountEntry> ParseMountInfo(std::string_view text);
// Reads /proc/self/mountinfo; empty if it cannot be read.
std::vector<MountEntry> ReadMountInfo();

// The mount that is visible at |path| (an absolute path without symlinks or "." / ".."), i.e. the
// last one mounted there, if any.
std::optional<MountEntry> TopMountAt(const std::vector<MountEntry>& table, std::string_view path);

// Whether |option| appears in the comma-separated |list|.
bool HasMountOption(std::string_view list, std::string_view option);

// The absolute, symlink-free path of the directory holding |path|, joined with the last
// component of |path| as it is (which is not resolved, so a dead mount there is never touched).
// Empty if the directory cannot be resolved; |error| then holds errno.
std::string ResolveParent(const std::string& path, int* error);

// Whether the filesystem mounted on |path| has lost its daemon (statfs(2) fails with ENOTCONN;
// it always asks the daemon, never a cache). A daemon that does not answer within 2 s counts as
// alive. Uses alarm(2): only for a process without other threads.
bool MountIsDead(const std::string& path);

// How to remove a dead mount on |path|, for messages.
std::string StaleMountFix(const std::string& path);

struct UnmountResult {
  int error = 0;        // 0: unmounted; EBUSY: in use; otherwise the reason
  std::string message;  // what went wrong, fit to follow "cannot unmount PATH: "
};

// Unmounts the mount on |path|. Blocks (it may run fusermount3, and a non-lazy unmount waits for
// the filesystem), so a FUSE daemon must call it off the thread that serves its requests.
UnmountResult UnmountPath(const std::string& path, bool lazy);

// "/dev/loop3, /dev/loop7": the loop devices whose backing file is |path|; empty if none.
std::string LoopDevicesBackedBy(const std::string& path);

}  // namespace qedfuse::fusefs
