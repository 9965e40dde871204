// block::FileProtocol: the protocol driver over a host file (QEMU's file-posix).
//
// Owns the file descriptor and a FileIo backend (io_uring or thread pool). The file's size is
// the node's length() and grows with writes past the end. Guarantees on top of BlockDriver:
//  - with CacheMode::kNone (O_DIRECT) the limits carry the alignment the file needs
//    (request_alignment, memory_alignment, pad_past_end), probed at open; the Child above pads
//    and bounces requests to meet them, so this node only does the system calls;
//  - reads beyond the end of the file return zeros; writes beyond it grow the file;
//  - Flush() is fdatasync, durable on return;
//  - WriteZeroes punches holes (kMayUnmap, inside the file) or zeroes ranges with fallocate,
//    falling back to writing zeros;
//  - GetStatus() reports data and holes from SEEK_DATA/SEEK_HOLE.
// Locking (QEMU-compatible OFD locks, file_lock.h) is applied by the opener once the role of the
// file in the graph is known (SetLocks).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "block/file/file_io.h"
#include "block/file/file_lock.h"
#include "qedfuse/block/block_driver.h"
#include "qedfuse/block/options.h"

namespace qedfuse::block {

struct FileProtocolOptions {
  std::string path;
  std::string name;  // how error messages name the file; "" names it by |path|
  bool read_only = false;
  AioMode aio = AioMode::kAuto;
  CacheMode cache = CacheMode::kWriteback;
  bool create = false;  // create the file if missing (tests and tools)
  // With kNone: use at least this request alignment (a power of two). Tests use it to model a
  // 4 KiB-sector disk on a 512-byte one.
  uint32_t min_direct_alignment = 0;
  // The (st_dev, st_ino) the caller found at |path| (stat before open): the opened file must be
  // that one, or the open fails (the path changed in between).
  std::optional<std::pair<uint64_t, uint64_t>> expect_id;
};

class FileProtocol final : public BlockDriver {
 public:
  // Opens the file. Control path; call on the event-loop thread (the io_uring backend binds to
  // its loop). Errors name the file: missing, permission denied, a directory, no O_DIRECT.
  // The open uses O_NONBLOCK and O_NOCTTY (a FIFO or a terminal put there meanwhile cannot
  // block or become the controlling terminal), checks the file type and identity on the
  // descriptor, then clears O_NONBLOCK.
  static absl::StatusOr<std::unique_ptr<FileProtocol>> Open(const FileProtocolOptions& options);
  ~FileProtocol() override;

  // Takes (or changes) the QEMU-compatible lock bytes; fails if another process conflicts.
  absl::Status SetLocks(LockPerms perms);

  const std::string& path() const noexcept { return path_; }
  int fd() const noexcept { return fd_; }
  // "io_uring" or "threads".
  std::string_view aio_name() const { return io_->name(); }
  bool direct() const noexcept { return direct_; }

  std::string_view format_name() const override { return "file"; }
  BlockLimits limits() const override { return limits_; }
  uint64_t length() const override { return size_; }
  bool read_only() const override { return read_only_; }

  coro::Task<Result<void>> Read(uint64_t offset, IoVector iov) override;
  coro::Task<Result<void>> Write(uint64_t offset, IoVector iov) override;
  coro::Task<Result<void>> WriteZeroes(uint64_t offset, uint64_t len, ZeroFlags flags) override;
  coro::Task<Result<void>> Flush() override;
  coro::Task<Result<BlockStatus>> GetStatus(uint64_t offset, uint64_t len) override;
  coro::Task<Result<void>> Truncate(uint64_t new_length) override;
  uint64_t AllocatedBytes() const override;
  coro::Task<absl::Status> Close() override;

 private:
  FileProtocol() = default;

  coro::Task<Result<void>> TruncateTo(uint64_t length);

  std::string path_;
  std::string name_;  // how error messages name the file (FileProtocolOptions::name)
  int fd_ = -1;
  bool read_only_ = false;
  bool direct_ = false;
  bool closed_ = false;
  uint64_t size_ = 0;
  BlockLimits limits_;
  std::unique_ptr<FileIo> io_;
};

}  // namespace qedfuse::block
