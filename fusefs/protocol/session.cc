// INIT negotiation and the allow_root policy (see session.h).
#include "fusefs/protocol/session.h"

#include <algorithm>
#include <cerrno>
#include <variant>

#include "absl/strings/str_cat.h"
#include "qedfuse/base/enum_names.h"

namespace qedfuse::fusefs::protocol {
namespace {

constexpr std::size_t kPage = 4096;
constexpr uint32_t kMinReadBuffer = 8192;  // FUSE_MIN_READ_BUFFER

struct FlagName {
  uint64_t bit;
  const char* name;
};
constexpr FlagName kFlagNames[] = {
    {FUSE_ASYNC_READ, "ASYNC_READ"},
    {FUSE_POSIX_LOCKS, "POSIX_LOCKS"},
    {FUSE_ATOMIC_O_TRUNC, "ATOMIC_O_TRUNC"},
    {FUSE_EXPORT_SUPPORT, "EXPORT_SUPPORT"},
    {FUSE_BIG_WRITES, "BIG_WRITES"},
    {FUSE_DONT_MASK, "DONT_MASK"},
    {FUSE_SPLICE_WRITE, "SPLICE_WRITE"},
    {FUSE_SPLICE_MOVE, "SPLICE_MOVE"},
    {FUSE_SPLICE_READ, "SPLICE_READ"},
    {FUSE_FLOCK_LOCKS, "FLOCK_LOCKS"},
    {FUSE_HAS_IOCTL_DIR, "HAS_IOCTL_DIR"},
    {FUSE_AUTO_INVAL_DATA, "AUTO_INVAL_DATA"},
    {FUSE_DO_READDIRPLUS, "DO_READDIRPLUS"},
    {FUSE_READDIRPLUS_AUTO, "READDIRPLUS_AUTO"},
    {FUSE_ASYNC_DIO, "ASYNC_DIO"},
    {FUSE_WRITEBACK_CACHE, "WRITEBACK_CACHE"},
    {FUSE_NO_OPEN_SUPPORT, "NO_OPEN_SUPPORT"},
    {FUSE_PARALLEL_DIROPS, "PARALLEL_DIROPS"},
    {FUSE_HANDLE_KILLPRIV, "HANDLE_KILLPRIV"},
    {FUSE_POSIX_ACL, "POSIX_ACL"},
    {FUSE_ABORT_ERROR, "ABORT_ERROR"},
    {FUSE_MAX_PAGES, "MAX_PAGES"},
    {FUSE_CACHE_SYMLINKS, "CACHE_SYMLINKS"},
    {FUSE_NO_OPENDIR_SUPPORT, "NO_OPENDIR_SUPPORT"},
    {FUSE_EXPLICIT_INVAL_DATA, "EXPLICIT_INVAL_DATA"},
    {FUSE_MAP_ALIGNMENT, "MAP_ALIGNMENT"},
    {FUSE_SUBMOUNTS, "SUBMOUNTS"},
    {FUSE_HANDLE_KILLPRIV_V2, "HANDLE_KILLPRIV_V2"},
    {FUSE_SETXATTR_EXT, "SETXATTR_EXT"},
    {abi::kInitExt, "INIT_EXT"},
    {uint64_t{1} << 32, "SECURITY_CTX"},
    {uint64_t{1} << 33, "HAS_INODE_DAX"},
    {uint64_t{1} << 34, "CREATE_SUPP_GROUP"},
    {uint64_t{1} << 35, "HAS_EXPIRE_ONLY"},
    {abi::kDirectIoAllowMmap, "DIRECT_IO_ALLOW_MMAP"},
    {uint64_t{1} << 37, "PASSTHROUGH"},
    {uint64_t{1} << 38, "NO_EXPORT_SUPPORT"},
    {uint64_t{1} << 39, "HAS_RESEND"},
    {uint64_t{1} << 40, "ALLOW_IDMAP"},
    {abi::kOverIoUring, "OVER_IO_URING"},
    {uint64_t{1} << 42, "REQUEST_TIMEOUT"},
};

}  // namespace

namespace {
constexpr EnumName<IoUringMode> kIoUringModeNames[] = {
    {IoUringMode::kAuto, "auto"}, {IoUringMode::kOn, "on"}, {IoUringMode::kOff, "off"}};
}  // namespace

const char* IoUringModeName(IoUringMode m) { return NameOf(kIoUringModeNames, m, "?"); }

bool ParseIoUringMode(std::string_view s, IoUringMode* out) {
  std::optional<IoUringMode> m = ValueOf(kIoUringModeNames, s);
  if (m) *out = *m;
  return m.has_value();
}

std::size_t Negotiated::max_payload() const {
  return std::max<std::size_t>({kMinReadBuffer, max_write, std::size_t{max_pages} * kPage});
}

InitOutcome NegotiateInit(const InitArgs& in, const SessionConfig& config) {
  InitOutcome r;
  fuse_init_out& out = r.out;
  out.major = abi::kMajor;
  out.minor = abi::kMinor;
  if (in.major > abi::kMajor) {
    // The protocol asks us to answer with our major only; the kernel then retries (no Linux
    // kernel has ever sent another major).
    r.message = absl::StrCat("kernel offers FUSE protocol ", in.major, ".", in.minor,
                             "; answering with major ", abi::kMajor);
    r.other_major = true;
    return r;
  }
  if (in.major < abi::kMajor || in.minor < abi::kMinMinor) {
    r.error = EPROTO;
    r.message =
        absl::StrCat("the kernel's FUSE protocol ", in.major, ".", in.minor, " is too old (",
                     abi::kMajor, ".", abi::kMinMinor, " or newer needed)");
    return r;
  }
  Negotiated& n = r.negotiated;
  n.minor = std::min(in.minor, abi::kMinor);
  n.offered = in.flags;
  n.max_readahead = in.max_readahead;
  n.max_write = std::max<uint32_t>(config.max_write, 4096);
  n.max_pages = static_cast<uint16_t>((n.max_write + kPage - 1) / kPage);

  uint64_t want = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES | FUSE_ASYNC_DIO |
                  FUSE_EXPLICIT_INVAL_DATA | abi::kInitExt;
  if (config.atomic_o_trunc) want |= FUSE_ATOMIC_O_TRUNC;
  if (config.writeback_cache) want |= FUSE_WRITEBACK_CACHE;
  const bool uring_offered = (in.flags & abi::kOverIoUring) != 0;
  if (config.io_uring != IoUringMode::kOff && config.io_uring_available) {
    want |= abi::kOverIoUring;
  }
  if (config.io_uring == IoUringMode::kOn && !(uring_offered && config.io_uring_available)) {
    r.error = EPROTO;
    r.message = uring_offered
                    ? "io_uring=on, but no io_uring with 128-byte SQEs could be set up here"
                    : "io_uring=on, but the kernel does not offer FUSE over io_uring (it needs "
                      "Linux 6.14 or newer with CONFIG_FUSE_IO_URING, and "
                      "/sys/module/fuse/parameters/enable_uring set to Y)";
    return r;
  }
  n.flags = want & in.flags;
  n.writeback_cache = (n.flags & FUSE_WRITEBACK_CACHE) != 0;
  n.io_uring = (n.flags & abi::kOverIoUring) != 0;

  out.minor = n.minor;
  out.max_readahead = n.max_readahead;
  out.flags = static_cast<uint32_t>(n.flags);
  if ((n.flags & abi::kInitExt) != 0) out.flags2 = static_cast<uint32_t>(n.flags >> 32);
  out.max_background = config.max_background;
  out.congestion_threshold = config.congestion_threshold;
  out.max_write = n.max_write;
  out.time_gran = 1;
  out.max_pages = n.max_pages;
  return r;
}

std::string InitFlagNames(uint64_t flags) {
  std::string s;
  for (const FlagName& f : kFlagNames) {
    if ((flags & f.bit) == 0) continue;
    if (!s.empty()) s += '|';
    s += f.name;
    flags &= ~f.bit;
  }
  if (flags != 0) absl::StrAppend(&s, s.empty() ? "" : "|", "0x", absl::Hex(flags));
  return s.empty() ? "0" : s;
}

bool AccessPolicy::Allows(const Decoded& request) const {
  if (!restrict_ || request.no_reply) return true;
  const fuse_in_header& h = request.header;
  if (h.uid == owner_ || h.uid == 0) return true;
  switch (h.opcode) {
    // Operations on a file that is already open (its opener passed the check).
    case FUSE_INIT:
    case FUSE_READ:
    case FUSE_WRITE:
    case FUSE_FLUSH:
    case FUSE_FSYNC:
    case FUSE_RELEASE:
    case FUSE_READDIR:
    case FUSE_READDIRPLUS:
    case FUSE_FSYNCDIR:
    case FUSE_RELEASEDIR:
    case FUSE_FALLOCATE:
    case FUSE_LSEEK:
    case FUSE_IOCTL:
    case FUSE_POLL:
    case FUSE_GETLK:
    case FUSE_SETLK:
    case FUSE_SETLKW:
    case FUSE_COPY_FILE_RANGE:
    case abi::kOpCopyFileRange64:
      return true;
    case FUSE_GETATTR: {  // fstat()
      auto* a = std::get_if<GetattrArgs>(&request.args);
      return a != nullptr && (a->getattr_flags & FUSE_GETATTR_FH) != 0;
    }
    case FUSE_SETATTR: {  // ftruncate(), futimens(), fchmod()
      auto* a = std::get_if<SetattrArgs>(&request.args);
      return a != nullptr && (a->in.valid & FATTR_FH) != 0;
    }
    default:
      return false;
  }
}

}  // namespace qedfuse::fusefs::protocol
