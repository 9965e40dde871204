// Project error category and the single errno mapping used at the FUSE edge.
#include "qedfuse/base/errors.h"

#include <cstring>
#include <string>

namespace qedfuse {
namespace {

class QedfuseCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "qedfuse"; }
  std::string message(int value) const override {
    switch (static_cast<Errc>(value)) {
      case Errc::kOk:
        return "success";
      case Errc::kCorruptImage:
        return "image is corrupt";
      case Errc::kUnsupportedFeature:
        return "unsupported image feature";
      case Errc::kReadOnly:
        return "image is read-only";
      case Errc::kOutOfRange:
        return "request outside the device";
      case Errc::kNoSpace:
        return "image cannot grow";
      case Errc::kClosed:
        return "device is closed";
      case Errc::kNotSupported:
        return "operation not supported";
      case Errc::kInjected:
        return "injected fault";
    }
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
    switch (static_cast<Errc>(ec.value())) {
      case Errc::kOk:
        return 0;
      case Errc::kUnsupportedFeature:
        return ENOTSUP;
      case Errc::kReadOnly:
        return EROFS;
      case Errc::kOutOfRange:
        return EINVAL;
      case Errc::kNoSpace:
        return ENOSPC;
      case Errc::kNotSupported:
        return EOPNOTSUPP;
      case Errc::kCorruptImage:
      case Errc::kClosed:
      case Errc::kInjected:
        return EIO;
    }
    return EIO;
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
