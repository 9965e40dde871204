// block::RawDriver: the raw format, a passthrough over a protocol node (QEMU's raw-format).
//
// Guest offset == file offset; the length is the file's. It exists as the control case for
// tests and benchmarks and to serve raw backing files. All data-path calls forward to the child
// unchanged, so the child's limits apply.
#pragma once

#include <memory>

#include "qedfuse/block/block_driver.h"

namespace qedfuse::block {

class RawDriver final : public BlockDriver {
 public:
  explicit RawDriver(std::unique_ptr<BlockDriver> file) : file_(std::move(file)) {}

  std::string_view format_name() const override { return "raw"; }
  BlockLimits limits() const override { return file_->limits(); }
  uint64_t length() const override { return file_->length(); }
  bool read_only() const override { return file_->read_only(); }

  coro::Task<Result<void>> Read(uint64_t offset, IoVector iov) override;
  coro::Task<Result<void>> Write(uint64_t offset, IoVector iov) override;
  coro::Task<Result<void>> WriteZeroes(uint64_t offset, uint64_t len, ZeroFlags flags) override;
  coro::Task<Result<void>> Flush() override;
  coro::Task<Result<BlockStatus>> GetStatus(uint64_t offset, uint64_t len) override;
  coro::Task<Result<void>> Truncate(uint64_t new_length) override;
  uint64_t AllocatedBytes() const override { return file_->AllocatedBytes(); }
  void Annotate(DebugEvent event) override { file_->Annotate(event); }
  coro::Task<absl::Status> Close() override;

  BlockDriver& file() noexcept { return *file_; }

 private:
  std::unique_ptr<BlockDriver> file_;
};

}  // namespace qedfuse::block
