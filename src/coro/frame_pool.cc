// Size-class free lists for coroutine frames (see frame_pool.h).
//
// Under AddressSanitizer a cached frame is poisoned while it sits on a free list, so a use of a
// frame after its coroutine was destroyed is still reported even though the memory is recycled.
#include "qedfuse/coro/frame_pool.h"

#include <sanitizer/asan_interface.h>

#include <new>

namespace qedfuse::coro {
namespace {

constexpr std::size_t kClasses = FramePool::kMaxPooledSize / FramePool::kClassSize;

struct FreeNode {
  FreeNode* next;
};

constexpr std::size_t ClassOf(std::size_t size) {
  return (size + FramePool::kClassSize - 1) / FramePool::kClassSize - 1;
}
constexpr std::size_t BlockSize(std::size_t cls) { return (cls + 1) * FramePool::kClassSize; }

struct ThreadCache {
  FreeNode* heads[kClasses] = {};
  std::size_t counts[kClasses] = {};
  FramePool::Stats stats;

  FreeNode* Pop(std::size_t c) {
    FreeNode* n = heads[c];
    if (n == nullptr) return nullptr;
    ASAN_UNPOISON_MEMORY_REGION(n, BlockSize(c));
    heads[c] = n->next;
    --counts[c];
    return n;
  }

  void Push(std::size_t c, void* p) {
    auto* n = static_cast<FreeNode*>(p);
    n->next = heads[c];
    heads[c] = n;
    ++counts[c];
    ASAN_POISON_MEMORY_REGION(n, BlockSize(c));
  }

  ~ThreadCache() {
    for (std::size_t c = 0; c < kClasses; ++c) {
      while (FreeNode* n = Pop(c)) ::operator delete(n);
    }
  }
};

thread_local ThreadCache cache;

}  // namespace

void* FramePool::Allocate(std::size_t size) {
  if (size == 0 || size > kMaxPooledSize) {
    ++cache.stats.fresh_allocations;
    return ::operator new(size);
  }
  const std::size_t c = ClassOf(size);
  if (FreeNode* n = cache.Pop(c)) {
    ++cache.stats.reused;
    return n;
  }
  ++cache.stats.fresh_allocations;
  return ::operator new(BlockSize(c));
}

void FramePool::Free(void* p, std::size_t size) noexcept {
  if (size == 0 || size > kMaxPooledSize) {
    ::operator delete(p);
    return;
  }
  const std::size_t c = ClassOf(size);
  if (cache.counts[c] >= kMaxCachedPerClass) {
    ::operator delete(p);
    return;
  }
  cache.Push(c, p);
}

FramePool::Stats FramePool::ThreadStats() noexcept { return cache.stats; }

}  // namespace qedfuse::coro
