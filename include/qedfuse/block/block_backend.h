// block::BlockBackend: the user-facing handle on an open image (QEMU's BlockBackend).
//
// A Gate plus one Child (child.h) to the root of the driver graph. The backend checks the range
// of a request against length() (reads are clamped at the end, a short read; writes past it are
// refused with Errc::kOutOfRange; the device grows only through Truncate) and counts requests in
// flight; the Child does the padding, splitting and tracking. Close() refuses new requests,
// waits for the rest, then closes the graph.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "qedfuse/base/result.h"
#include "qedfuse/block/block_driver.h"
#include "qedfuse/block/io_vector.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::block {

class BlockBackend {
 public:
  explicit BlockBackend(std::unique_ptr<BlockDriver> root);
  ~BlockBackend();
  BlockBackend(const BlockBackend&) = delete;
  BlockBackend& operator=(const BlockBackend&) = delete;

  uint64_t length() const;
  bool read_only() const;
  BlockDriver& driver() noexcept;

  // Reads up to iov.size() bytes at |offset|; returns the count (short only at the end).
  coro::Task<Result<std::size_t>> Read(uint64_t offset, IoVector iov);
  // Writes all of |iov| at |offset|. Refused with kOutOfRange if it would pass length(),
  // kReadOnly on a read-only backend.
  coro::Task<Result<void>> Write(uint64_t offset, IoVector iov);
  coro::Task<Result<void>> WriteZeroes(uint64_t offset, uint64_t len, ZeroFlags flags);
  coro::Task<Result<void>> Flush();
  coro::Task<Result<BlockStatus>> GetStatus(uint64_t offset, uint64_t len);
  // Grow only: a smaller length is refused with kNotSupported.
  coro::Task<Result<void>> Truncate(uint64_t new_length);

  // Refuses new requests, waits for those in flight, closes the graph. Idempotent.
  coro::Task<absl::Status> Close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qedfuse::block
