// Project error category and the single errno mapping used at the FUSE edge.
#include "qedfuse/base/errors.h"

#include <cstddef>
#include <cstring>
#include <iterator>
#include <string>

namespace qedfuse {
namespace {

// What each project code means: its message and the one errno the FUSE edge replies with.
struct ErrcInfo {
  Errc code;
  const char* message;
  int err;
};

constexpr ErrcInfo kErrcs[] = {
    {Errc::kOk, "success", 0},
    {Errc::kCorruptImage, "image is corrupt", EIO},
    {Errc::kUnsupportedFeature, "unsupported image feature", ENOTSUP},
    {Errc::kReadOnly, "image is read-only", EROFS},
    {Errc::kOutOfRange, "request outside the device", EINVAL},
    {Errc::kNoSpace, "image cannot grow", ENOSPC},
    {Errc::kClosed, "device is closed", EIO},
    {Errc::kNotSupported, "operation not supported", EOPNOTSUPP},
    {Errc::kInjected, "injected fault", EIO},
};

// The row of the code |value|, or nullptr when no Errc has that value.
constexpr const ErrcInfo* FindErrc(int value) {
  for (const ErrcInfo& e : kErrcs) {
    if (static_cast<int>(e.code) == value) return &e;
  }
  return nullptr;
}

constexpr bool ListsEveryErrc() {
  for (int v = 0; v <= static_cast<int>(Errc::kInjected); ++v) {
    if (FindErrc(v) == nullptr) return false;
  }
  return std::size(kErrcs) == static_cast<std::size_t>(Errc::kInjected) + 1;
}
static_assert(ListsEveryErrc(), "kErrcs must list every Errc once (kInjected is the last)");

class QedfuseCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "qedfuse"; }
  std::string message(int value) const override {
    if (const ErrcInfo* e = FindErrc(value)) return e->message;
    return "unknown qedfuse error " + std::to_string(value);
  }
};

}  // namespace

const std::error_category& qedfuse_category() noexcept {
  static const QedfuseCategory category;
  return category;
}

int ToErrno(const std::error_code& ec) noexcept {
  if (!ec) return 0;
  if (ec.category() == qedfuse_category()) {
    const ErrcInfo* e = FindErrc(ec.value());
    return e != nullptr ? e->err : EIO;
  }
  if (ec.category() == std::generic_category() || ec.category() == std::system_category()) {
    return ec.value() > 0 ? ec.value() : EIO;
  }
  return EIO;
}

absl::StatusCode StatusCodeForErrno(int err) noexcept {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::StatusCode::kNotFound;
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::StatusCode::kPermissionDenied;
    case ENOTSUP:
      return absl::StatusCode::kUnimplemented;
    case EINVAL:
    case EISDIR:
      return absl::StatusCode::kInvalidArgument;
    case ENOSPC:
    case EDQUOT:
      return absl::StatusCode::kResourceExhausted;
    default:
      return absl::StatusCode::kInternal;
  }
}

absl::Status ToStatus(const std::error_code& ec, std::string_view context) {
  if (!ec) return absl::OkStatus();
  return absl::Status(StatusCodeForErrno(ToErrno(ec)), std::string(context) + ": " + ec.message());
}

absl::Status ErrnoStatus(int err, std::string_view subject) {
  const char* what = nullptr;
  switch (err) {
    case ENOENT:
      what = "no such file";
      break;
    case EACCES:
      what = "permission denied";
      break;
    case EPERM:
      what = "operation not permitted";
      break;
    case EISDIR:
      what = "is a directory";
      break;
    case ENOTDIR:
      what = "a path component is not a directory";
      break;
    case EROFS:
      what = "read-only file system";
      break;
    default:
      what = std::strerror(err);
      break;
  }
  return absl::Status(StatusCodeForErrno(err), std::string(subject) + ": " + what);
}

}  // namespace qedfuse
