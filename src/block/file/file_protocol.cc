// FileProtocol: host file access, O_DIRECT alignment handling, holes and zeroing.
#include "block/file/file_protocol.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "qedfuse/base/align.h"
#include "qedfuse/base/macros.h"
#include "qedfuse/block/io_buffer.h"

namespace qedfuse::block {
namespace {

bool PowerOfTwo(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

absl::Status OpenError(const std::string& path, int err, bool direct) {
  if (err == EROFS) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, " is on a read-only file system (open it read-only)"));
  }
  if (err == EINVAL && direct) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the file system does not support O_DIRECT (cache=none)"));
  }
  return ErrnoStatus(err, path);
}

// Logical block size of the block device behind |st|, or 0 if unknown.
uint32_t DeviceBlockSize(const struct stat& st) {
  dev_t dev = S_ISBLK(st.st_mode) ? st.st_rdev : st.st_dev;
  std::string node = absl::StrCat("/dev/block/", major(dev), ":", minor(dev));
  int fd = ::open(node.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return 0;
  int size = 0;
  int rc = ::ioctl(fd, BLKSSZGET, &size);
  ::close(fd);
  return rc == 0 && size > 0 ? static_cast<uint32_t>(size) : 0;
}

// Alignment O_DIRECT needs on |fd|: statx's STATX_DIOALIGN when the kernel reports it, else the
// device's logical block size, else 512; then verified by reading (reads of an unsupported size
// fail with EINVAL), as QEMU's raw_probe_alignment does.
void ProbeDirectAlignment(int fd, const struct stat& st, uint64_t size, BlockLimits* lim) {
  uint32_t offset_align = 0;
  uint32_t mem_align = 0;
  struct statx stx = {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
      (stx.stx_mask & STATX_DIOALIGN) != 0) {
    mem_align = stx.stx_dio_mem_align;
    offset_align = stx.stx_dio_offset_align;
  }
  if (!PowerOfTwo(offset_align)) offset_align = DeviceBlockSize(st);
  if (!PowerOfTwo(offset_align)) offset_align = 512;
  if (!PowerOfTwo(mem_align)) mem_align = offset_align;

  if (size >= IoBuffer::kAlignment) {
    IoBuffer buf(IoBuffer::kAlignment);
    for (uint32_t a = offset_align; a <= IoBuffer::kAlignment; a *= 2) {
      ssize_t n = ::pread(fd, buf.data(), a, 0);
      if (n >= 0 || errno != EINVAL) {
        offset_align = a;
        break;
      }
    }
  }
  lim->request_alignment = offset_align;
  lim->pad_past_end = true;  // O_DIRECT cannot write a tail that ends unaligned at the end
  lim->memory_alignment = std::min<uint32_t>(mem_align, IoBuffer::kAlignment);
}

struct SysResult {
  int rc;
  int err;
};

struct FdatasyncJob {
  int fd;
  SysResult operator()() const {
    int rc = ::fdatasync(fd);
    return {rc, rc != 0 ? errno : 0};
  }
};

struct FallocateJob {
  int fd;
  int mode;
  off_t offset;
  off_t len;
  SysResult operator()() const {
    int rc;
    do {
      rc = ::fallocate(fd, mode, offset, len);
    } while (rc != 0 && errno == EINTR);
    return {rc, rc != 0 ? errno : 0};
  }
};

// fallocate errors that mean "not for this file or range": fall back to another way of zeroing.
bool FallocateUnsupported(int err) {
  return err == EOPNOTSUPP || err == ENOTSUP || err == EINVAL || err == ENOSYS;
}

struct FtruncateJob {
  int fd;
  off_t len;
  SysResult operator()() const {
    int rc;
    do {
      rc = ::ftruncate(fd, len);
    } while (rc != 0 && errno == EINTR);
    return {rc, rc != 0 ? errno : 0};
  }
};

// lseek(SEEK_DATA/SEEK_HOLE) may block on the file system (extent maps): it runs in the pool.
struct LseekJob {
  int fd;
  off_t offset;
  int whence;
  off_t* result;  // trivially destructible captures only (see Offload in blocking_pool.h)
  SysResult operator()() const {
    *result = ::lseek(fd, offset, whence);
    return {*result < 0 ? -1 : 0, *result < 0 ? errno : 0};
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<FileProtocol>> FileProtocol::Open(
    const FileProtocolOptions& options) {
  bool direct = options.cache == CacheMode::kNone;
  const std::string& name = options.name.empty() ? options.path : options.name;
  int flags = O_CLOEXEC | O_NONBLOCK | O_NOCTTY | (options.read_only ? O_RDONLY : O_RDWR);
  if (options.create && !options.read_only) flags |= O_CREAT;
  if (direct) flags |= O_DIRECT;
  int fd = ::open(options.path.c_str(), flags, 0644);
  if (fd < 0) return OpenError(name, errno, direct);

  std::unique_ptr<FileProtocol> f(new FileProtocol());
  f->path_ = options.path;
  f->name_ = name;
  f->fd_ = fd;
  f->read_only_ = options.read_only;
  f->direct_ = direct;

  struct stat st;
  if (::fstat(fd, &st) != 0) return OpenError(name, errno, direct);
  if (S_ISDIR(st.st_mode)) return OpenError(name, EISDIR, direct);
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " is neither a regular file nor a block device"));
  }
  if (options.expect_id && (static_cast<uint64_t>(st.st_dev) != options.expect_id->first ||
                            static_cast<uint64_t>(st.st_ino) != options.expect_id->second)) {
    return absl::AbortedError(
        absl::StrCat(name, " was replaced by another file while it was being opened"));
  }
  // Regular files and block devices never block on open or I/O the way O_NONBLOCK is about;
  // clear it so that nothing later depends on it.
  if (::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) {
    return OpenError(name, errno, direct);
  }
  off_t end = ::lseek(fd, 0, SEEK_END);
  if (end < 0) return OpenError(name, errno, direct);
  f->size_ = static_cast<uint64_t>(end);
  if (direct) {
    ProbeDirectAlignment(fd, st, f->size_, &f->limits_);
    if (PowerOfTwo(options.min_direct_alignment)) {
      f->limits_.request_alignment =
          std::max(f->limits_.request_alignment, options.min_direct_alignment);
    }
  }

  switch (options.aio) {
    case AioMode::kThreads:
      f->io_ = MakeThreadPoolFileIo(fd);
      break;
    case AioMode::kIoUring: {
      absl::StatusOr<std::unique_ptr<FileIo>> io = MakeUringFileIo(fd);
      if (!io.ok()) {
        return absl::Status(io.status().code(),
                            absl::StrCat(name, ": aio=io_uring: ", io.status().message()));
      }
      f->io_ = *std::move(io);
      break;
    }
    case AioMode::kAuto: {
      absl::StatusOr<std::unique_ptr<FileIo>> io = MakeUringFileIo(fd);
      f->io_ = io.ok() ? *std::move(io) : MakeThreadPoolFileIo(fd);
      break;
    }
  }
  return f;
}

FileProtocol::~FileProtocol() {
  io_.reset();
  if (fd_ >= 0) ::close(fd_);
}

absl::Status FileProtocol::SetLocks(LockPerms perms) { return ApplyQemuLocks(fd_, name_, perms); }

// Requests arrive through a Child (block_driver.h), aligned to the limits this node reports:
// offsets, lengths and, under O_DIRECT, memory. Only the end of the file is special.
coro::Task<Result<void>> FileProtocol::Read(uint64_t offset, IoVector iov) {
  if (iov.empty()) co_return Ok();
  assert(!direct_ || MeetsLimits(offset, iov, limits_));
  std::size_t got = 0;
  if (offset < size_) {
    QEDFUSE_CO_ASSIGN(got, co_await io_->ReadAt(offset, iov));
  }
  if (got < iov.size()) iov.Zero(got, iov.size() - got);  // beyond the end of the file
  co_return Ok();
}

coro::Task<Result<void>> FileProtocol::Write(uint64_t offset, IoVector iov) {
  if (read_only_) co_return Unexpected(Errc::kReadOnly);
  if (iov.empty()) co_return Ok();
  assert(!direct_ || MeetsLimits(offset, iov, limits_));
  QEDFUSE_CO_TRY(co_await io_->WriteAt(offset, iov));
  size_ = std::max(size_, offset + iov.size());
  co_return Ok();
}

coro::Task<Result<void>> FileProtocol::WriteZeroes(uint64_t offset, uint64_t len, ZeroFlags flags) {
  if (read_only_) co_return Unexpected(Errc::kReadOnly);
  if (len == 0) co_return Ok();
  uint64_t end = offset + len;
  bool punch = (static_cast<uint32_t>(flags) & static_cast<uint32_t>(ZeroFlags::kMayUnmap)) != 0 &&
               end <= size_;
  SysResult r{};
  {
    int mode = punch ? (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) : FALLOC_FL_ZERO_RANGE;
    r = co_await FileBlockingPool().Offload(
        FallocateJob{fd_, mode, static_cast<off_t>(offset), static_cast<off_t>(len)});
    if (punch && r.rc != 0 && FallocateUnsupported(r.err)) {
      // No hole punching (a block device without discard, some file systems): zeroing the range
      // in place still beats writing zero buffers (a block device does it in the kernel).
      r = co_await FileBlockingPool().Offload(FallocateJob{
          fd_, FALLOC_FL_ZERO_RANGE, static_cast<off_t>(offset), static_cast<off_t>(len)});
    }
    if (r.rc == 0) {
      size_ = std::max(size_, end);
      co_return Ok();
    }
  }
  if (!FallocateUnsupported(r.err)) co_return Unexpected(ErrnoCode(r.err));
  // No fallocate support for this mode: write zero buffers.
  co_return co_await BlockDriver::WriteZeroes(offset, len, flags);
}

coro::Task<Result<void>> FileProtocol::Flush() {
  if (read_only_) co_return Ok();
  SysResult r = co_await FileBlockingPool().Offload(FdatasyncJob{fd_});
  if (r.rc != 0) co_return Unexpected(ErrnoCode(r.err));
  co_return Ok();
}

coro::Task<Result<BlockStatus>> FileProtocol::GetStatus(uint64_t offset, uint64_t len) {
  BlockStatus st;
  st.present = offset < size_;
  if (offset >= size_) {
    st.length = len;
    st.zero = true;
    co_return st;
  }
  len = std::min(len, size_ - offset);
  st.length = len;
  off_t data = -1;
  SysResult dr = co_await FileBlockingPool().Offload(
      LseekJob{fd_, static_cast<off_t>(offset), SEEK_DATA, &data});
  if (data < 0 && dr.err == ENXIO) {
    st.zero = true;  // a hole up to the end of the file
    co_return st;
  }
  if (data < 0) {
    st.data = true;  // no hole support: all data
    st.offset = offset;
    co_return st;
  }
  if (static_cast<uint64_t>(data) > offset) {
    st.zero = true;
    st.length = std::min<uint64_t>(static_cast<uint64_t>(data) - offset, len);
    co_return st;
  }
  off_t hole = -1;
  SysResult hr = co_await FileBlockingPool().Offload(
      LseekJob{fd_, static_cast<off_t>(offset), SEEK_HOLE, &hole});
  (void)hr;  // on failure |hole| stays negative: the run is data up to |len|
  st.data = true;
  st.offset = offset;
  if (hole > 0 && static_cast<uint64_t>(hole) > offset) {
    st.length = std::min<uint64_t>(static_cast<uint64_t>(hole) - offset, len);
  }
  co_return st;
}

coro::Task<Result<void>> FileProtocol::TruncateTo(uint64_t length) {
  SysResult r = co_await FileBlockingPool().Offload(FtruncateJob{fd_, static_cast<off_t>(length)});
  if (r.rc != 0) co_return Unexpected(ErrnoCode(r.err));
  co_return Ok();
}

coro::Task<Result<void>> FileProtocol::Truncate(uint64_t new_length) {
  if (read_only_) co_return Unexpected(Errc::kReadOnly);
  QEDFUSE_CO_TRY(co_await TruncateTo(new_length));
  size_ = new_length;
  co_return Ok();
}

uint64_t FileProtocol::AllocatedBytes() const {
  struct stat st;
  if (::fstat(fd_, &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

coro::Task<absl::Status> FileProtocol::Close() {
  if (closed_) co_return absl::OkStatus();
  closed_ = true;
  absl::Status status;
  if (!read_only_) {
    SysResult r = co_await FileBlockingPool().Offload(FdatasyncJob{fd_});
    if (r.rc != 0) {
      status = absl::DataLossError(absl::StrCat("flushing ", name_, ": ", std::strerror(r.err)));
    }
  }
  io_.reset();
  if (::close(std::exchange(fd_, -1)) != 0 && status.ok()) {
    status = absl::DataLossError(absl::StrCat("closing ", name_, ": ", std::strerror(errno)));
  }
  co_return status;
}

}  // namespace qedfuse::block
