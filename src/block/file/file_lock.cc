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

const char* PermNoun(int n) {
  switch (n) {
    case 0:
      return "reading";
    case 1:
      return "writing";
    case 2:
      return "unchanged writing";
    default:
      return "resizing";
  }
}

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

// Either way round the other process holds the image for |n| in a way we cannot coexist with.
absl::Status Conflict(const std::string& path, int n) {
  return absl::UnavailableError(
      absl::StrCat(path, " is locked for ", PermNoun(n), " by another process (qemu or qedfuse?)"));
}

}  // namespace

LockPerms QemuLockPerms(bool read_only, bool is_backing, bool is_raw_format) {
  LockPerms p;
  p.held = kPermConsistentRead;
  if (is_backing) return p;
  if (is_raw_format) {
    if (!read_only) p.held |= kPermWrite;
    return p;
  }
  p.unshared = kPermWrite | kPermResize;
  if (!read_only) p.held |= kPermWrite | kPermResize;
  return p;
}

absl::Status ApplyQemuLocks(int fd, const std::string& path, LockPerms perms) {
  for (int n = 0; n < kPermCount; ++n) {
    short held = (perms.held >> n) & 1 ? F_RDLCK : F_UNLCK;
    short unshared = (perms.unshared >> n) & 1 ? F_RDLCK : F_UNLCK;
    for (auto [byte, type] :
         {std::pair{kPermBase + n, held}, std::pair{kSharedBase + n, unshared}}) {
      int err = LockByte(fd, byte, type);
      if (err == 0) continue;
      if (LockingUnsupported(err)) return absl::OkStatus();
      ReleaseQemuLocks(fd);
      if (err == EAGAIN || err == EACCES) return Conflict(path, n);
      return absl::InternalError(absl::StrCat("cannot lock ", path, ": ", std::strerror(err)));
    }
  }
  for (int n = 0; n < kPermCount; ++n) {
    int err = 0;
    if ((perms.held >> n) & 1) {
      // Someone refuses to share a permission we use.
      bool taken = ByteTaken(fd, kSharedBase + n, &err);
      if (taken) {
        ReleaseQemuLocks(fd);
        return Conflict(path, n);
      }
    }
    if ((perms.unshared >> n) & 1) {
      // Someone uses a permission we refuse to share.
      bool taken = ByteTaken(fd, kPermBase + n, &err);
      if (taken) {
        ReleaseQemuLocks(fd);
        return Conflict(path, n);
      }
    }
    if (err != 0 && !LockingUnsupported(err)) {
      ReleaseQemuLocks(fd);
      return absl::InternalError(
          absl::StrCat("cannot test locks on ", path, ": ", std::strerror(err)));
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
