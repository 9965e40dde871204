// coro::FramePool: size classes, recycling, and zero fresh allocations in steady state.
#include "qedfuse/coro/frame_pool.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
#include <vector>

#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::coro {
namespace {

TEST(FramePoolTest, FreedFrameIsReusedWithinItsSizeClass) {
  void* a = FramePool::Allocate(100);  // class 65..128
  FramePool::Free(a, 100);
  const FramePool::Stats before = FramePool::ThreadStats();
  void* b = FramePool::Allocate(128);  // same class
  const FramePool::Stats after = FramePool::ThreadStats();
  EXPECT_EQ(b, a);
  EXPECT_EQ(after.reused, before.reused + 1);
  EXPECT_EQ(after.fresh_allocations, before.fresh_allocations);
  FramePool::Free(b, 128);
}

TEST(FramePoolTest, OtherSizeClassesDoNotShareFrames) {
  void* a = FramePool::Allocate(64);
  FramePool::Free(a, 64);
  void* b = FramePool::Allocate(65);  // next class up: must not get the 64-byte block
  EXPECT_NE(b, a);
  // The block really has room for the requested size.
  auto* bytes = static_cast<unsigned char*>(b);
  for (int i = 0; i < 65; ++i) bytes[i] = static_cast<unsigned char>(i);
  void* c = FramePool::Allocate(1);  // the 64-byte block is still cached for its own class
  EXPECT_EQ(c, a);
  FramePool::Free(c, 1);
  FramePool::Free(b, 65);
}

TEST(FramePoolTest, LargeFramesBypassThePool) {
  const FramePool::Stats before = FramePool::ThreadStats();
  void* a = FramePool::Allocate(FramePool::kMaxPooledSize + 1);
  FramePool::Free(a, FramePool::kMaxPooledSize + 1);
  void* b = FramePool::Allocate(FramePool::kMaxPooledSize + 1);
  FramePool::Free(b, FramePool::kMaxPooledSize + 1);
  const FramePool::Stats after = FramePool::ThreadStats();
  EXPECT_EQ(after.fresh_allocations, before.fresh_allocations + 2);
  EXPECT_EQ(after.reused, before.reused);
}

TEST(FramePoolTest, FramesAreAlignedForAnyFundamentalType) {
  std::vector<void*> frames;
  for (std::size_t size : {1u, 63u, 64u, 200u, 4096u}) {
    void* p = FramePool::Allocate(size);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % alignof(std::max_align_t), 0u) << size;
    FramePool::Free(p, size);
  }
}

TEST(FramePoolTest, StatsArePerThread) {
  FramePool::Stats other{};
  std::thread t([&] {
    void* p = FramePool::Allocate(64);
    FramePool::Free(p, 64);
    p = FramePool::Allocate(64);
    FramePool::Free(p, 64);
    other = FramePool::ThreadStats();
  });
  t.join();
  EXPECT_EQ(other.fresh_allocations, 1u);
  EXPECT_EQ(other.reused, 1u);
}

Task<int> Child(EventLoop* loop, int v) {
  co_await loop->Yield();
  co_return v * 2;
}

Task<void> Root(EventLoop* loop, int v, int* sum) {
  int r = co_await Child(loop, v);
  *sum += r;
}

TEST(FramePoolTest, SteadySpawnAndAwaitMakeNoFreshAllocations) {
  EventLoop loop;
  int sum = 0;
  auto round = [&] {
    for (int i = 0; i < 64; ++i) Spawn(Root(&loop, i, &sum));
    loop.RunUntilIdle();
  };
  round();  // warm-up: fills the free lists (frames and the loop's handler memory)
  round();
  const FramePool::Stats before = FramePool::ThreadStats();
  for (int i = 0; i < 100; ++i) round();
  const FramePool::Stats after = FramePool::ThreadStats();
  EXPECT_EQ(after.fresh_allocations, before.fresh_allocations);
  EXPECT_EQ(after.reused - before.reused, 100u * 64u * 2u);  // one root and one child each
  EXPECT_EQ(sum, 102 * (63 * 64));                           // every root really ran
}

}  // namespace
}  // namespace qedfuse::coro
