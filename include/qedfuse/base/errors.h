// Error vocabulary of the project.
//
// The data path reports failures as std::error_code values that are either plain errno values
// (std::generic_category) or one of the project's own codes below (qedfuse_category). Every code
// converts to exactly one errno through ToErrno(), which is what the FUSE frontend replies with.
// The control path (open, create, check, command-line tools) uses absl::Status with a message.
#pragma once

#include <cerrno>
#include <string>
#include <string_view>
#include <system_error>

#include "absl/status/status.h"

namespace qedfuse {

// A new code goes last, and in errors.cc's table (which asserts it lists every code).
enum class Errc {
  kOk = 0,
  kCorruptImage = 1,        // a table entry or header field is invalid -> EIO
  kUnsupportedFeature = 2,  // unknown incompatible feature, unsupported geometry -> ENOTSUP
  kReadOnly = 3,            // write on a read-only image -> EROFS
  kOutOfRange = 4,          // request outside the device -> EINVAL
  kNoSpace = 5,             // image cannot grow further -> ENOSPC
  kClosed = 6,              // the device is closing or closed -> EIO
  kNotSupported = 7,        // operation not implemented by this driver -> EOPNOTSUPP
  kInjected = 8,            // fault injected by a test driver (carries no errno) -> EIO
};

const std::error_category& qedfuse_category() noexcept;

inline std::error_code make_error_code(Errc e) noexcept {
  return {static_cast<int>(e), qedfuse_category()};
}

// An errno value as an error_code (generic category).
inline std::error_code ErrnoCode(int err) noexcept { return {err, std::generic_category()}; }

// Maps any error code to the errno the kernel should see. Never returns 0 for an error.
int ToErrno(const std::error_code& ec) noexcept;

// Turns a data-path error into a control-path status with |context| prepended.
absl::Status ToStatus(const std::error_code& ec, std::string_view context);

// The status code for an errno value: the one errno -> absl::StatusCode mapping of the project
// (ToStatus and ErrnoStatus use it).
absl::StatusCode StatusCodeForErrno(int err) noexcept;

// A control-path status "SUBJECT: what went wrong" for a failed system call on SUBJECT (usually
// a file name): common errnos get a short lower-case description ("no such file", "permission
// denied", "is a directory", ...), the others strerror's text.
absl::Status ErrnoStatus(int err, std::string_view subject);

}  // namespace qedfuse

template <>
struct std::is_error_code_enum<qedfuse::Errc> : std::true_type {};
