// block::BlockDriver: one node of the driver graph (a format such as QED or raw, or a protocol
// such as a host file), in the spirit of QEMU's BlockDriver.
//
// Contract for every data-path method:
//  - called on the event-loop thread only; results are delivered on it too;
//  - ranges are aligned to limits().request_alignment (a tail may end unaligned exactly at
//    length(), unless pad_past_end) and at most max_transfer long; reads and format nodes stay
//    inside length(), writes to a protocol node may grow it. block::Child (child.h), the one
//    way from one node to another, sees to all of that: a driver never pads or splits;
//  - a call either transfers everything or fails; errors are errno-valued or qedfuse::Errc;
//  - the memory behind an IoVector must stay valid until the call completes.
// Concurrency: many calls may be in flight at once; a driver serialises what it must itself.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "qedfuse/base/result.h"
#include "qedfuse/block/debug_event.h"
#include "qedfuse/block/io_vector.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::block {

struct BlockLimits {
  uint32_t request_alignment = 1;  // offsets and lengths must be multiples of this
  uint32_t memory_alignment = 1;   // buffer addresses must be multiples of this (O_DIRECT)
  uint64_t max_transfer = 16u << 20;
  // The node reads zeros past length() and accepts aligned writes past it (growing), but not a
  // tail that ends unaligned at length() (a host file under O_DIRECT): a Child pads such a tail
  // past the end and cuts the node back afterwards.
  bool pad_past_end = false;
};

// True if a request at |offset| with |iov| meets |lim|: offset and length on request_alignment,
// and with a memory_alignment (O_DIRECT) every segment's address on it and its length on the
// larger of the two alignments, as Linux checks.
inline bool MeetsLimits(uint64_t offset, const IoVector& iov, const BlockLimits& lim) {
  const uint64_t ra = std::max<uint64_t>(lim.request_alignment, 1);
  if (offset % ra != 0 || iov.size() % ra != 0) return false;
  if (lim.memory_alignment <= 1) return true;
  const uint64_t len_align = std::max<uint64_t>(lim.memory_alignment, ra);
  for (const iovec& v : iov.segments()) {
    if (reinterpret_cast<uintptr_t>(v.iov_base) % lim.memory_alignment != 0) return false;
    if (v.iov_len % len_align != 0) return false;
  }
  return true;
}

enum class ZeroFlags : uint32_t {
  kNone = 0,
  kMayUnmap = 1u << 0,  // the range may be deallocated if it still reads back as zeros
};

// The state of the extent that starts at a queried offset, as `qemu-img map` reports it.
struct BlockStatus {
  uint64_t length = 0;             // bytes from the queried offset with this same state (> 0)
  bool data = false;               // bytes are stored by the layer at |depth|
  bool zero = false;               // bytes read back as zeros
  bool present = false;            // some layer of the chain defines the bytes (not past every end)
  int depth = 0;                   // 0 = this node, 1 = its backing file, ...
  std::optional<uint64_t> offset;  // host offset in that layer's file, when data is stored
};

class BlockDriver {
 public:
  virtual ~BlockDriver() = default;

  virtual std::string_view format_name() const = 0;
  virtual BlockLimits limits() const = 0;
  virtual uint64_t length() const = 0;
  virtual bool read_only() const = 0;

  virtual coro::Task<Result<void>> Read(uint64_t offset, IoVector iov) = 0;
  virtual coro::Task<Result<void>> Write(uint64_t offset, IoVector iov) = 0;
  // Makes [offset, offset+len) read back as zeros. Default: writes zero buffers.
  virtual coro::Task<Result<void>> WriteZeroes(uint64_t offset, uint64_t len, ZeroFlags flags);
  // Everything written before the call is durable when it returns (data and metadata).
  virtual coro::Task<Result<void>> Flush() = 0;
  // Status of the extent starting at |offset|, looking at most |len| bytes ahead.
  // Default: everything is data at depth 0.
  virtual coro::Task<Result<BlockStatus>> GetStatus(uint64_t offset, uint64_t len);
  // Changes length(). Default: Errc::kNotSupported.
  virtual coro::Task<Result<void>> Truncate(uint64_t new_length);
  // Bytes of host storage this node uses (st_blocks of its file); formats forward to their file.
  virtual uint64_t AllocatedBytes() const { return 0; }
  // Announces what the caller's next I/O on this node is for (see debug_event.h). Ordinary
  // drivers ignore it; FaultInjectionDriver arms its rules on it. Never fails, never suspends.
  virtual void Annotate(DebugEvent /*event*/) {}

  // Control path: drains nothing (BlockBackend does that), then leaves the node clean on disk
  // (flushed; QED also clears NEED_CHECK) and releases its resources. Called once.
  virtual coro::Task<absl::Status> Close() = 0;
};

}  // namespace qedfuse::block
