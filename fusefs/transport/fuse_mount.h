// fusefs::transport::FuseMount: mounting and unmounting through libfuse, and nothing else.
//
// libfuse stays for what it does well and what users configure through it: the mount(2) call
// or the set-uid fusermount3 helper for unprivileged users, -o option parsing (allow_other,
// allow_root, fsname=, subtype=, ...) and the mount.fuse3 /dev/fd/N convention. The session it
// creates has no operations and never reads a request: the descriptor is served by
// transport::Connection.
#pragma once

#include <string>

#include "absl/status/status.h"

struct fuse_session;

namespace qedfuse::fusefs::transport {

class FuseMount {
 public:
  FuseMount() = default;
  ~FuseMount();
  FuseMount(const FuseMount&) = delete;
  FuseMount& operator=(const FuseMount&) = delete;

  // Mounts on |mountpoint| with the comma-separated mount options |options| (as after -o).
  // On failure nothing is left mounted.
  absl::Status Mount(const std::string& mountpoint, const std::string& options);
  // The /dev/fuse descriptor of the mount (-1 if not mounted).
  int fd() const;
  bool mounted() const noexcept { return mounted_; }
  // Unmounts (and closes the descriptor). Idempotent.
  void Unmount();

 private:
  struct fuse_session* se_ = nullptr;
  bool mounted_ = false;
};

}  // namespace qedfuse::fusefs::transport
