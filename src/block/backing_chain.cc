// Backing-name resolution under a BackingPolicy, and the backing opener call; see
// backing_chain.h.
#include "block/backing_chain.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "qedfuse/base/log.h"

namespace qedfuse::block {
namespace {

std::string DirName(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string RealPath(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) return "";
  return buf;
}

}  // namespace

absl::StatusOr<std::string> ResolveBacking(const std::string& image_path, const std::string& stored,
                                           BackingPolicy policy, ChainContext& chain) {
  const std::string dir = DirName(image_path);
  auto refuse = [&](const std::string& why) {
    return absl::PermissionDeniedError(absl::StrCat(
        "backing file name '", stored, "' stored in '", image_path, "' ", why,
        " (refused by --backing=confined; --backing=follow opens it, --backing=none ignores it)"));
  };
  if (policy == BackingPolicy::kConfined) {
    if (!stored.empty() && stored.front() == '/') return refuse("is an absolute name");
    const int dfd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
      return absl::NotFoundError(
          absl::StrCat("cannot open the directory of '", image_path, "': ", std::strerror(errno)));
    }
    // The kernel resolves the name beneath the directory: `..` and symlinks may not leave it
    // (EXDEV), and the result is the very file the open then checks (by identity).
    struct open_how how = {};
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    const int fd = static_cast<int>(::syscall(SYS_openat2, dfd, stored.c_str(), &how, sizeof how));
    const int err = errno;
    ::close(dfd);
    if (fd < 0) {
      if (err == EXDEV) return refuse("leads outside the image's directory");
      if (err == ENOENT) {
        return absl::NotFoundError(
            absl::StrCat("backing file '", stored, "' named by '", image_path, "' does not exist"));
      }
      if (err == ELOOP) return refuse("resolves through too many or magic symlinks");
      return absl::PermissionDeniedError(absl::StrCat("backing file '", stored, "' named by '",
                                                      image_path, "': ", std::strerror(err)));
    }
    struct stat st;
    std::string resolved = RealPath(absl::StrCat("/proc/self/fd/", fd));
    const bool have = ::fstat(fd, &st) == 0;
    ::close(fd);
    if (!have || resolved.empty()) {
      return absl::InternalError(absl::StrCat("cannot resolve backing file '", stored, "'"));
    }
    chain.expect_id =
        std::make_pair(static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino));
    return resolved;
  }
  // kFollow: QEMU's rule. A name leading outside the image's directory is worth a word.
  const std::string path = QemuBackingPath(image_path, stored);
  const std::string real_dir = RealPath(dir);
  const std::string real = RealPath(path);
  if (!real.empty() && !real_dir.empty() &&
      real.compare(0, real_dir.size() + 1, real_dir + "/") != 0) {
    Log(LogLevel::kWarning,
        absl::StrCat("image '", image_path, "' names backing file '", stored,
                     "', which is outside the image's directory (", real,
                     "); --backing=confined refuses such names, --backing=none ignores them"));
  }
  // Named as QEMU names it (qemu-img shows the same chain); the warning above gave the real file.
  return path;
}

coro::Task<absl::StatusOr<std::unique_ptr<BlockDriver>>> OpenBacking(const OpenOptions& options,
                                                                     ChainContext& chain,
                                                                     OpenReport* report) {
  if (!chain.open_backing) {
    co_return absl::FailedPreconditionError(absl::StrCat(
        options.NameInMessages(), ": no backing opener was given to open this backing file"));
  }
  co_return co_await chain.open_backing(options, chain, report);
}

}  // namespace qedfuse::block
