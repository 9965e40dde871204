// qedfuse IMAGE MOUNTPOINT -o remount,... (see remount.h).
#include "fusefs/remount.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fusefs/mountinfo.h"
#include "qedfuse/base/log.h"

namespace qedfuse::fusefs {
namespace {

struct FlagName {
  const char* name;
  unsigned long set;    // MS_ flag the option sets
  unsigned long clear;  // MS_ flags it clears
};
constexpr FlagName kMountFlags[] = {
    {"nosuid", MS_NOSUID, 0},
    {"suid", 0, MS_NOSUID},
    {"nodev", MS_NODEV, 0},
    {"dev", 0, MS_NODEV},
    {"noexec", MS_NOEXEC, 0},
    {"exec", 0, MS_NOEXEC},
    {"sync", MS_SYNCHRONOUS, 0},
    {"async", 0, MS_SYNCHRONOUS},
    {"dirsync", MS_DIRSYNC, 0},
    {"noatime", MS_NOATIME, MS_RELATIME | MS_STRICTATIME},
    {"atime", 0, MS_NOATIME},
    {"relatime", MS_RELATIME, MS_NOATIME | MS_STRICTATIME},
    {"norelatime", 0, MS_RELATIME},
    {"strictatime", MS_STRICTATIME, MS_NOATIME | MS_RELATIME},
    {"nostrictatime", 0, MS_STRICTATIME},
    {"nodiratime", MS_NODIRATIME, 0},
    {"diratime", 0, MS_NODIRATIME},
    {"lazytime", MS_LAZYTIME, 0},
    {"nolazytime", 0, MS_LAZYTIME},
};

// Applies every flag of the comma-separated |list| to |flags|.
void ApplyFlags(std::string_view list, unsigned long* flags) {
  for (const FlagName& f : kMountFlags) {
    if (HasMountOption(list, f.name)) *flags = (*flags & ~f.clear) | f.set;
  }
}

// Whether someone (the daemon serving it) holds IMAGE open for writing: QEMU's lock protocol
// (see qedfuse(1), FILES) keeps byte 101 locked while the write permission is held.
bool ImageOpenForWriting(const std::string& image) {
  int fd = open(image.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return false;
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 101;
  fl.l_len = 1;
  const bool held = fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
  close(fd);
  return held;
}

// Pushes what the kernel caches for the mounted file to the daemon and makes it flush the image.
void SyncMountedFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return;
  if (fsync(fd) != 0) Log(LogLevel::kWarning, "fsync " + path + ": " + std::strerror(errno));
  close(fd);
}

}  // namespace

int Remount(const MountOptions& o) {
  int err = 0;
  std::string mp = ResolveParent(o.mountpoint, &err);
  if (mp.empty()) {
    Log(LogLevel::kError,
        absl::StrCat("cannot remount '", o.mountpoint, "': ", std::strerror(err)));
    return 1;
  }
  std::optional<MountEntry> top = TopMountAt(ReadMountInfo(), mp);
  if (!top) {
    Log(LogLevel::kError, absl::StrCat("cannot remount ", mp,
                                       ": nothing is mounted there (mount it with "
                                       "qedfuse IMAGE ",
                                       mp, ")"));
    return 1;
  }
  if (top->fstype != "fuse.qedfuse") {
    Log(LogLevel::kError,
        absl::StrCat("cannot remount ", mp, ": it is not a qedfuse mount (", top->fstype, ")"));
    return 1;
  }
  std::vector<std::string> unchanged = o.mount_time_settings;
  if (o.allow_other && !HasMountOption(top->super_options, "allow_other")) {
    unchanged.emplace_back("allow_other");
  }
  if (!unchanged.empty()) {
    Log(LogLevel::kWarning,
        absl::StrCat("a remount changes only ro/rw and mount flags (nosuid, noexec, ...); "
                     "these take effect only when mounting and stay as they are: ",
                     absl::StrJoin(unchanged, ", ")));
  }
  const bool was_ro =
      HasMountOption(top->mount_options, "ro") || HasMountOption(top->super_options, "ro");
  bool want_ro = was_ro;
  for (const std::string& f : o.mount_flags) {
    if (f == "ro") want_ro = true;
    if (f == "rw") want_ro = false;
  }
  unsigned long flags = MS_REMOUNT;
  ApplyFlags(top->mount_options, &flags);
  ApplyFlags(top->super_options, &flags);
  for (const std::string& f : o.mount_flags) ApplyFlags(f, &flags);
  if (want_ro) flags |= MS_RDONLY;

  if (was_ro && !want_ro) {
    char image[PATH_MAX];
    if (realpath(o.image.c_str(), image) == nullptr || image == mp) {
      Log(LogLevel::kError,
          absl::StrCat("cannot remount ", mp, " read-write: cannot check how the daemon opened '",
                       o.image, "'; unmount it and mount it again without ro"));
      return 1;
    }
    if (!ImageOpenForWriting(image)) {
      Log(LogLevel::kError,
          absl::StrCat("cannot remount ", mp, " read-write: the image ", image,
                       " was opened read-only when it was mounted; unmount it and mount it "
                       "again without ro"));
      return 1;
    }
  }
  if (want_ro && !was_ro) SyncMountedFile(mp);
  if (mount(top->source.c_str(), mp.c_str(), nullptr, flags, nullptr) != 0) {
    const int e = errno;
    if (e == EPERM) {
      Log(LogLevel::kError,
          absl::StrCat("cannot remount ", mp,
                       ": only root may remount (fusermount3 cannot); unmount it with "
                       "`fusermount3 -u ",
                       mp, "` and mount it again with the options you want"));
    } else if (e == EBUSY && want_ro) {
      std::string loops = LoopDevicesBackedBy(mp);
      Log(LogLevel::kError,
          absl::StrCat("cannot remount ", mp, " read-only: it is open for writing (",
                       loops.empty() ? "by a process" : "by loop device " + loops,
                       "); close it first"));
    } else {
      Log(LogLevel::kError, absl::StrCat("cannot remount ", mp, ": ", std::strerror(e)));
    }
    return 1;
  }
  return 0;
}

}  // namespace qedfuse::fusefs
