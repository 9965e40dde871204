// OFD byte-range locks in QEMU's layout (see file_lock.h).
#include "block/file/file_lock.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace qedfuse::block {
namespace {

constexpr off_t kPermBase = 100;
constexpr off_t kSharedBase = 200;
constexpr int kPermCount = 4;

// Permission |n| in words: what it lets a user do ("does not let others ..."), and what a user
// holding it is doing ("another process ... is ...").
struct PermText {
  const char* verb;
  const char* doing;
};
constexpr PermText kPermText[kPermCount] = {
    {"read it", "reading it"},
    {"write to it", "writing to it"},
    {"write to it", "writing to it"},  // write-unchanged
    {"resize it", "resizing it"},
};

// Sets (F_RDLCK) or clears (F_UNLCK) one byte. Returns 0 or an errno value.
int LockByte(int fd, off_t byte, short type) {
  struct flock fl = {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  if (::fcntl(fd, F_OFD_SETLK, &fl) == 0) return 0;
  return errno;
}

// True if another open file description holds a lock on |byte|; errno value in |err| on failure.
bool ByteTaken(int fd, off_t byte, int* err) {
  struct flock fl = {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  if (::fcntl(fd, F_OFD_GETLK, &fl) != 0) {
    *err = errno;
    return false;
  }
  *err = 0;
  return fl.l_type != F_UNLCK;
}

bool LockingUnsupported(int err) {
  return err == EINVAL || err == ENOLCK || err == EOPNOTSUPP || err == ENOSYS;
}

// The other process refuses to share permission |n|, which this open needs (it holds byte
// 200 + n), or uses |n|, which this open refuses to share (it holds byte 100 + n). OFD locks do
// not name their owner.
absl::Status Conflict(const std::string& path, int n, bool they_refuse, bool read_only) {
  std::string msg =
      they_refuse
          ? absl::StrCat(path, " is locked: another process (QEMU, qemu-img or qedfuse) uses it ",
                         "and does not let others ", kPermText[n].verb)
          : absl::StrCat(path, " is locked: another process (QEMU, qemu-img or qedfuse) is ",
                         kPermText[n].doing, ", which this open does not allow");
  if (read_only) {
    absl::StrAppend(&msg, "; qedimg's -U (--force-share) reads it without taking locks");
  } else if (they_refuse && n != 0) {
    // Checked after "someone writes": the other process only reads, so a read-only open works.
    absl::StrAppend(&msg, "; it can be opened read-only");
  }
  return absl::UnavailableError(msg);
}

}  // namespace

LockPerms QemuLockPerms(bool read_only, bool is_backing, bool is_raw_format) {
  LockPerms p;
  p.held = kPermConsistentRead;
  if (is_raw_format) {
    // The raw format passes its users' sharing through: a raw file (also as a backing file)
    // lets others write to it and resize it.
    if (!read_only && !is_backing) p.held |= kPermWrite;
    return p;
  }
  // A format with metadata never lets others change its file under it, whatever its role: a
  // QED backing file gets the same locks as a read-only QED image.
  p.unshared = kPermWrite | kPermResize;
  if (!read_only && !is_backing) p.held |= kPermWrite | kPermResize;
  return p;
}

absl::Status ApplyQemuLocks(int fd, const std::string& path, LockPerms perms) {
  const bool read_only = (perms.held & (kPermWrite | kPermResize)) == 0;
  for (int n = 0; n < kPermCount; ++n) {
    short held = (perms.held >> n) & 1 ? F_RDLCK : F_UNLCK;
    short unshared = (perms.unshared >> n) & 1 ? F_RDLCK : F_UNLCK;
    for (auto [byte, type] :
         {std::pair{kPermBase + n, held}, std::pair{kSharedBase + n, unshared}}) {
      int err = LockByte(fd, byte, type);
      if (err == 0) continue;
      if (LockingUnsupported(err)) return absl::OkStatus();
      ReleaseQemuLocks(fd);
      if (err == EAGAIN || err == EACCES) return Conflict(path, n, /*they_refuse=*/true, read_only);
      return absl::InternalError(absl::StrCat("cannot lock ", path, ": ", std::strerror(err)));
    }
  }
  // Two passes: first whether someone uses a permission we refuse to share (the more specific
  // finding: another process writes), then whether someone refuses one we use.
  for (const bool they_refuse : {false, true}) {
    for (int n = 0; n < kPermCount; ++n) {
      const uint8_t mine = they_refuse ? perms.held : perms.unshared;
      if (((mine >> n) & 1) == 0) continue;
      int err = 0;
      const bool taken = ByteTaken(fd, (they_refuse ? kSharedBase : kPermBase) + n, &err);
      if (taken) {
        ReleaseQemuLocks(fd);
        return Conflict(path, n, they_refuse, read_only);
      }
      if (err != 0 && !LockingUnsupported(err)) {
        ReleaseQemuLocks(fd);
        return absl::InternalError(
            absl::StrCat("cannot test locks on ", path, ": ", std::strerror(err)));
      }
    }
  }
  return absl::OkStatus();
}

void ReleaseQemuLocks(int fd) {
  for (int n = 0; n < kPermCount; ++n) {
    (void)LockByte(fd, kPermBase + n, F_UNLCK);
    (void)LockByte(fd, kSharedBase + n, F_UNLCK);
  }
}

}  // namespace qedfuse::block
