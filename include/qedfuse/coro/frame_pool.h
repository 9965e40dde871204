// Per-thread recycling allocator for coroutine frames.
//
// Frames are grouped into 64-byte size classes up to kMaxPooledSize; freed frames go onto a
// per-thread free list of their class and are handed out again, so a steady request stream does
// not call malloc per coroutine. Larger frames use ::operator new directly. Frames must be freed
// on the thread that allocated them (true here: one event-loop thread owns all coroutines).
#pragma once

#include <cstddef>
#include <cstdint>

namespace qedfuse::coro {

class FramePool {
 public:
  static constexpr std::size_t kClassSize = 64;
  static constexpr std::size_t kMaxPooledSize = 4096;
  static constexpr std::size_t kMaxCachedPerClass = 1024;

  static void* Allocate(std::size_t size);
  static void Free(void* p, std::size_t size) noexcept;

  struct Stats {
    uint64_t fresh_allocations = 0;  // frames that came from ::operator new
    uint64_t reused = 0;             // frames served from a free list
  };
  // Counters of the calling thread; for tests and benchmarks.
  static Stats ThreadStats() noexcept;
};

}  // namespace qedfuse::coro
