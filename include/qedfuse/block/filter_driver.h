// block::FilterDriver: a node with exactly one child that passes every call through unchanged
// unless a subclass overrides it (QEMU's filter drivers). The raw format, fault injection, the
// write log and the daemon's --debug-fault hook are filters: each overrides only the calls it
// changes, and inherits the child's limits, length, read-only state, allocation and debug-event
// forwarding.
//
// A filter neither pads nor splits: it receives requests that already satisfy the child's limits
// (its limits() are the child's), so forwarding them as they are keeps the BlockDriver contract.
// The forwarding calls return the child's Task itself (Tasks start eagerly, coro/task.h),
// so a pass-through costs no coroutine frame.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>

#include "qedfuse/block/block_driver.h"

namespace qedfuse::block {

class FilterDriver : public BlockDriver {
 public:
  explicit FilterDriver(std::unique_ptr<BlockDriver> child) : child_(std::move(child)) {}
  FilterDriver(const FilterDriver&) = delete;
  FilterDriver& operator=(const FilterDriver&) = delete;

  BlockDriver& child() noexcept { return *child_; }
  const BlockDriver& child() const noexcept { return *child_; }

  std::string_view format_name() const override { return child_->format_name(); }
  BlockLimits limits() const override { return child_->limits(); }
  uint64_t length() const override { return child_->length(); }
  bool read_only() const override { return child_->read_only(); }

  coro::Task<Result<void>> Read(uint64_t offset, IoVector iov) override {
    return child_->Read(offset, iov);
  }
  coro::Task<Result<void>> Write(uint64_t offset, IoVector iov) override {
    return child_->Write(offset, iov);
  }
  coro::Task<Result<void>> WriteZeroes(uint64_t offset, uint64_t len, ZeroFlags flags) override {
    return child_->WriteZeroes(offset, len, flags);
  }
  coro::Task<Result<void>> Flush() override { return child_->Flush(); }
  coro::Task<Result<BlockStatus>> GetStatus(uint64_t offset, uint64_t len) override {
    return child_->GetStatus(offset, len);
  }
  coro::Task<Result<void>> Truncate(uint64_t new_length) override {
    return child_->Truncate(new_length);
  }
  uint64_t AllocatedBytes() const override { return child_->AllocatedBytes(); }
  void Annotate(DebugEvent event) override { child_->Annotate(event); }
  coro::Task<absl::Status> Close() override { return child_->Close(); }

 private:
  std::unique_ptr<BlockDriver> child_;
};

}  // namespace qedfuse::block
