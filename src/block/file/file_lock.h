// QEMU-compatible image locking with OFD byte-range locks (file-posix.c's scheme).
//
// QEMU expresses what a user of an image does and tolerates as permission bits, and mirrors
// them as shared (read) OFD locks on single bytes of the image file:
//   byte 100 + n  held     -> "I use permission n"
//   byte 200 + n  held     -> "I do not let others use permission n"
// with n = 0 consistent read, 1 write, 2 write-unchanged, 3 resize. A user conflicts with
// another if it wants permission n while byte 200 + n is held by someone else, or refuses to
// share n while byte 100 + n is held by someone else (probed with F_OFD_GETLK).
//
// What QEMU 7.2 takes (observed in /proc/locks):
//   read-write image        : 100, 101, 103 held; 201, 203 (write, resize) not shared
//   read-only top image     : 100 held;            201, 203 not shared
//   QED backing file        : 100 held;            201, 203 not shared
//   raw backing file        : 100 held;            everything shared
//   read-write raw (format) : 100, 101 held;       everything shared
// (A QED backing file under a live QEMU overlay cannot be opened for writing; a raw one can,
// because the raw format shares what its users share.)
// Taking the same locks makes qemu-img/qemu-io refuse an image we have open, and us refuse one
// they have open. Locks belong to the open file description and vanish when it is closed.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace qedfuse::block {

enum QemuPerm : uint8_t {
  kPermConsistentRead = 1u << 0,
  kPermWrite = 1u << 1,
  kPermWriteUnchanged = 1u << 2,
  kPermResize = 1u << 3,
};

struct LockPerms {
  uint8_t held = 0;      // permissions this user exercises
  uint8_t unshared = 0;  // permissions this user refuses to others
};

// The permissions QEMU takes for an image in the given role.
LockPerms QemuLockPerms(bool read_only, bool is_backing, bool is_raw_format);

// The permissions qemu-img takes while it creates or re-creates (empties) a file: write and
// resize, refusing resize to others. Anyone writing to a QED image, or resizing any image,
// conflicts with them.
inline LockPerms QemuCreateLockPerms() { return LockPerms{kPermWrite | kPermResize, kPermResize}; }

// Takes the lock bytes for |perms| on |fd| (dropping bytes taken earlier that |perms| no longer
// needs), then checks for conflicting users. On conflict every lock byte is released again and
// an error naming |path| is returned. File systems without OFD lock support are accepted
// silently, as QEMU's locking=auto does.
absl::Status ApplyQemuLocks(int fd, const std::string& path, LockPerms perms);

// Releases every lock byte on |fd|.
void ReleaseQemuLocks(int fd);

}  // namespace qedfuse::block
