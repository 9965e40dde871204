// Size-class free lists for coroutine frames (see frame_pool.h).
#include "qedfuse/coro/frame_pool.h"

#include <new>

namespace qedfuse::coro {
namespace {

constexpr std::size_t kClasses = FramePool::kMaxPooledSize / FramePool::kClassSize;

struct FreeNode {
  FreeNode* next;
};

struct ThreadCache {
  FreeNode* heads[kClasses] = {};
  std::size_t counts[kClasses] = {};
  FramePool::Stats stats;

  ~ThreadCache() {
    for (std::size_t c = 0; c < kClasses; ++c) {
      while (heads[c] != nullptr) {
        FreeNode* n = heads[c];
        heads[c] = n->next;
        ::operator delete(n);
      }
    }
  }
};

thread_local ThreadCache cache;

std::size_t ClassOf(std::size_t size) { return (size + FramePool::kClassSize - 1) / FramePool::kClassSize - 1; }

}  // namespace

void* FramePool::Allocate(std::size_t size) {
  if (size == 0 || size > kMaxPooledSize) {
    ++cache.stats.fresh_allocations;
    return ::operator new(size);
  }
  std::size_t c = ClassOf(size);
  if (FreeNode* n = cache.heads[c]) {
    cache.heads[c] = n->next;
    --cache.counts[c];
    ++cache.stats.reused;
    return n;
  }
  ++cache.stats.fresh_allocations;
  return ::operator new((c + 1) * kClassSize);
}

void FramePool::Free(void* p, std::size_t size) noexcept {
  if (size == 0 || size > kMaxPooledSize) {
    ::operator delete(p);
    return;
  }
  std::size_t c = ClassOf(size);
  if (cache.counts[c] >= kMaxCachedPerClass) {
    ::operator delete(p);
    return;
  }
  auto* n = static_cast<FreeNode*>(p);
  n->next = cache.heads[c];
  cache.heads[c] = n;
  ++cache.counts[c];
}

FramePool::Stats FramePool::ThreadStats() noexcept { return cache.stats; }

}  // namespace qedfuse::coro
