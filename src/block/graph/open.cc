// Graph assembly. OpenImage/OpenDriver: file checks, chain loop and depth limits, protocol open,
// format probe (driver_registry.h), locking, then the format's own open. A format driver opens
// its backing file through the opener it finds in the ChainContext (backing_chain.h), which is
// OpenDriver itself: the drivers never call up into this folder.
#include "qedfuse/block/open.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "block/file/file_protocol.h"
#include "block/graph/driver_registry.h"
#include "block/graph/open_driver.h"
#include "qedfuse/block/io_buffer.h"

namespace qedfuse::block {
namespace {

// The chain so far plus |next|, shortened to its first and last few names when long.
std::string ChainText(const ChainContext& chain, const std::string& next) {
  std::vector<std::string> names = chain.names;
  names.push_back(next);
  constexpr std::size_t kEnds = 3;
  if (names.size() <= 2 * kEnds + 1) return absl::StrJoin(names, " -> ");
  std::vector<std::string> head(names.begin(), names.begin() + kEnds);
  std::vector<std::string> tail(names.end() - kEnds, names.end());
  return absl::StrCat(absl::StrJoin(head, " -> "), " -> ... (", names.size() - 2 * kEnds,
                      " more) ... -> ", absl::StrJoin(tail, " -> "), " (", names.size(), " files)");
}

// Why a file of this type cannot be an image, or "" for regular files and block devices.
const char* FileTypeProblem(mode_t mode) {
  if (S_ISREG(mode) || S_ISBLK(mode)) return "";
  if (S_ISDIR(mode)) return "is a directory";
  if (S_ISFIFO(mode)) return "is a FIFO";
  if (S_ISCHR(mode)) return "is a character device";
  if (S_ISSOCK(mode)) return "is a socket";
  return "is not a regular file or block device";
}

absl::Status StatError(const std::string& path, int err) {
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(absl::StrCat(path, ": permission denied"));
    case ENOTDIR:
      return absl::NotFoundError(absl::StrCat(path, ": a path component is not a directory"));
    default:
      return absl::InternalError(absl::StrCat("cannot stat ", path, ": ", std::strerror(err)));
  }
}

}  // namespace

coro::Task<absl::StatusOr<std::unique_ptr<BlockDriver>>> OpenDriver(const OpenOptions& options,
                                                                    ChainContext& chain,
                                                                    OpenReport* report) {
  const std::string& path = options.path;
  if (path.empty()) co_return absl::InvalidArgumentError("no image file name given");
  // How the messages below name the file (a backing file by the name its image stores).
  const std::string& name = options.NameInMessages();
  if (!chain.open_backing) chain.open_backing = &OpenDriver;
  const std::optional<std::pair<uint64_t, uint64_t>> expect_id = std::exchange(chain.expect_id, {});
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) co_return StatError(name, errno);
  // Refused before any open: opening a FIFO would block until a writer comes, a device could
  // have side effects.
  if (const char* why = FileTypeProblem(st.st_mode); *why != '\0') {
    co_return absl::InvalidArgumentError(
        absl::StrCat(name, " ", why,
                     ", not an image file (only regular files and block devices "
                     "are opened)"));
  }
  std::pair<uint64_t, uint64_t> id{st.st_dev, st.st_ino};
  if (expect_id && *expect_id != id) {
    co_return absl::AbortedError(
        absl::StrCat(name, " was replaced by another file while it was being opened"));
  }
  for (const auto& seen : chain.seen) {
    if (seen == id) {
      co_return absl::FailedPreconditionError(
          absl::StrCat("backing file loop: ", ChainText(chain, path)));
    }
  }
  if (static_cast<int>(chain.names.size()) >= options.max_chain_depth) {
    co_return absl::FailedPreconditionError(absl::StrCat(
        "backing chain longer than ", options.max_chain_depth, " files: ", ChainText(chain, path)));
  }
  bool is_backing = chain.depth > 0;

  FileProtocolOptions fo;
  fo.path = path;
  fo.name = name;
  fo.read_only = options.read_only;
  fo.aio = options.aio;
  fo.cache = options.cache;
  fo.expect_id = id;
  absl::StatusOr<std::unique_ptr<FileProtocol>> opened = FileProtocol::Open(fo);
  if (!opened.ok()) co_return opened.status();
  std::unique_ptr<FileProtocol> file = *std::move(opened);

  const FormatInfo* format = nullptr;
  if (options.format.empty()) {
    IoBuffer head(kProbeBytes, /*zero=*/true);
    Result<void> r = co_await file->Read(0, IoVector(head));
    if (!r) co_return ToStatus(r.error(), absl::StrCat("reading ", name));
    format = &ProbeFormat(head.span());
    if (std::string_view foreign = ForeignFormat(head.span()); !foreign.empty()) {
      co_return absl::FailedPreconditionError(absl::StrCat(
          name, ": a ", std::string(foreign), " image; qedfuse reads only qed and raw images",
          is_backing ? " (convert the backing file to qed or raw first)"
                     : " (--format=raw serves the file's bytes as they are)"));
    }
  } else {
    format = FindFormat(options.format);
    if (format == nullptr) {
      co_return absl::InvalidArgumentError(
          absl::StrCat(name, ": unknown image format '", options.format, "'"));
    }
  }
  if (format->open == nullptr) {
    co_return absl::UnimplementedError(absl::StrCat(name, ": the ", std::string(format->name),
                                                    " format is not available in this build"));
  }

  if (options.lock) {
    LockPerms perms = QemuLockPerms(options.read_only, is_backing, !format->has_metadata);
    absl::Status locked = file->SetLocks(perms);
    if (!locked.ok()) co_return locked;
  }

  if (report != nullptr) {
    if (!is_backing) {
      report->format = std::string(format->name);
      report->aio = std::string(file->aio_name());
    }
    report->chain.push_back(ChainLink{path, std::string(format->name), "", false});
  }
  chain.seen.push_back(id);
  chain.names.push_back(path);
  ++chain.depth;
  std::unique_ptr<BlockDriver> node = std::move(file);
  if (!is_backing && options.wrap_image_file) node = options.wrap_image_file(std::move(node));
  co_return co_await format->open(std::move(node), options, chain, report);
}

coro::Task<absl::StatusOr<std::unique_ptr<BlockBackend>>> OpenImage(const OpenOptions& options,
                                                                    OpenReport* report) {
  ChainContext chain;
  absl::StatusOr<std::unique_ptr<BlockDriver>> root = co_await OpenDriver(options, chain, report);
  if (!root.ok()) co_return root.status();
  std::unique_ptr<BlockDriver> top = *std::move(root);
  if (options.wrap_top) top = options.wrap_top(std::move(top));
  co_return std::make_unique<BlockBackend>(std::move(top));
}

}  // namespace qedfuse::block
