// test::MemFile: an in-memory protocol node with a crash model (LevelDB's FaultInjectionTestEnv
// idea applied to a block device).
//
// The bytes live in a MemFileState shared through std::shared_ptr, so a test can "reopen" the
// same storage with a new MemFile after closing (or crashing) the previous one. The state keeps
//  - current: what reads see now (every acknowledged write applied);
//  - durable: the image as of the last completed Flush();
//  - pending: writes, zeroings and truncations acknowledged since that Flush, in order.
// Crash(seed) models a power loss: the durable image plus a subset of the pending operations
// (each kept or dropped, and the kept ones reordered, by an RNG seeded with |seed|) becomes both
// the new durable and current image. CrashDropAll() keeps only the durable image.
//
// Options make the node behave like awkward hardware: request/memory alignment that is enforced
// (misaligned requests fail with EINVAL, so tests prove the layer above aligns), a small
// max_transfer (enforced the same way), and `io_yields` loop turns of latency per I/O so tests
// can build deterministic interleavings. A read copies its bytes when issued; a write applies
// when it completes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "qedfuse/block/block_driver.h"

namespace qedfuse::test {

struct MemIoRecord {
  enum Kind { kRead, kWrite, kZero, kFlush, kTruncate } kind;
  uint64_t offset = 0;
  uint64_t len = 0;
};

struct MemFileState {
  struct Pending {
    MemIoRecord::Kind kind;
    uint64_t offset;
    std::vector<std::byte> data;  // kWrite: the bytes; kZero: empty
    uint64_t len;                 // kZero: byte count; kTruncate: the new size
  };

  std::vector<std::byte> current;
  std::vector<std::byte> durable;
  std::vector<Pending> pending;

  // Counters and the log of every operation, for assertions.
  uint64_t reads = 0;
  uint64_t writes = 0;
  uint64_t zeroes = 0;
  uint64_t flushes = 0;
  uint64_t bytes_written = 0;
  std::vector<MemIoRecord> log;

  // A fresh state of |size| zero bytes, all durable.
  static std::shared_ptr<MemFileState> Create(uint64_t size);
  // A state holding |bytes|, all durable.
  static std::shared_ptr<MemFileState> FromBytes(std::vector<std::byte> bytes);

  uint64_t size() const { return current.size(); }
  // The image a crash would leave: durable plus a seeded subset/reordering of |pending|.
  std::vector<std::byte> CrashImage(uint64_t seed) const;
  // Applies CrashImage(seed): it becomes durable and current, pending is cleared.
  void Crash(uint64_t seed);
  // A crash that loses every unflushed operation.
  void CrashDropAll();
  // Marks everything durable (as a completed flush does).
  void MarkDurable();
};

class MemFile final : public block::BlockDriver {
 public:
  struct Options {
    uint32_t request_alignment = 1;
    uint32_t memory_alignment = 1;
    uint64_t max_transfer = 16u << 20;
    bool read_only = false;
    // Loop turns each read/write/zero/flush stays suspended before completing (0: completes
    // without suspending).
    int io_yields = 0;
    // Accepts writes past the end (growing the file) as a host file does.
    bool grow_on_write = true;
  };

  explicit MemFile(std::shared_ptr<MemFileState> state);
  MemFile(std::shared_ptr<MemFileState> state, Options options);

  MemFileState& state() { return *state_; }
  const std::shared_ptr<MemFileState>& shared_state() const { return state_; }
  // Number of operations issued but not yet completed.
  int in_flight() const { return in_flight_; }
  // Largest number of operations that were in flight at the same time.
  int max_in_flight() const { return max_in_flight_; }

  std::string_view format_name() const override { return "memfile"; }
  block::BlockLimits limits() const override;
  uint64_t length() const override { return state_->size(); }
  bool read_only() const override { return options_.read_only; }

  coro::Task<Result<void>> Read(uint64_t offset, block::IoVector iov) override;
  coro::Task<Result<void>> Write(uint64_t offset, block::IoVector iov) override;
  coro::Task<Result<void>> WriteZeroes(uint64_t offset, uint64_t len,
                                       block::ZeroFlags flags) override;
  coro::Task<Result<void>> Flush() override;
  coro::Task<Result<void>> Truncate(uint64_t new_length) override;
  uint64_t AllocatedBytes() const override { return state_->size(); }
  coro::Task<absl::Status> Close() override;

 private:
  Result<void> CheckAlignment(uint64_t offset, const block::IoVector* iov, uint64_t len) const;
  coro::Task<void> Latency();

  std::shared_ptr<MemFileState> state_;
  Options options_;
  int in_flight_ = 0;
  int max_in_flight_ = 0;
};

// Copies of the whole current image, for comparisons.
std::vector<std::byte> Snapshot(const MemFileState& state);

}  // namespace qedfuse::test
