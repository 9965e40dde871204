// FuseMount: libfuse for mount/unmount only (see fuse_mount.h).
#include "fusefs/transport/fuse_mount.h"

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include "absl/strings/str_cat.h"

namespace qedfuse::fusefs::transport {

FuseMount::~FuseMount() {
  Unmount();
  if (se_ != nullptr) fuse_session_destroy(se_);
}

absl::Status FuseMount::Mount(const std::string& mountpoint, const std::string& options) {
  std::string arg0 = "qedfuse", arg1 = "-o", opts = options;
  char* argv[] = {arg0.data(), arg1.data(), opts.data(), nullptr};
  fuse_args args = FUSE_ARGS_INIT(opts.empty() ? 1 : 3, argv);
  static const fuse_lowlevel_ops kNoOps{};  // requests never reach libfuse
  se_ = fuse_session_new(&args, &kNoOps, sizeof(kNoOps), nullptr);
  fuse_opt_free_args(&args);
  if (se_ == nullptr) {
    return absl::InvalidArgumentError(
        "could not create the FUSE session (mount options: " + options + ")");
  }
  if (fuse_session_mount(se_, mountpoint.c_str()) != 0) {
    return absl::UnavailableError(
        absl::StrCat("could not mount on ", mountpoint,
                     " (is /dev/fuse available and are you allowed to mount?)"));
  }
  mounted_ = true;
  return absl::OkStatus();
}

int FuseMount::fd() const { return mounted_ ? fuse_session_fd(se_) : -1; }

void FuseMount::Unmount() {
  if (!mounted_) return;
  mounted_ = false;
  fuse_session_unmount(se_);
}

}  // namespace qedfuse::fusefs::transport
