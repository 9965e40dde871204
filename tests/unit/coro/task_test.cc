// coro::Task: eager start, synchronous completion, results, continuations, Spawn, stack safety.
#include "qedfuse/coro/task.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "coro_test_util.h"
#include "qedfuse/coro/event_loop.h"

namespace qedfuse::coro {
namespace {

using testing::Counted;
using testing::Trace;

static_assert(!std::is_copy_constructible_v<Task<int>>);
static_assert(!std::is_copy_assignable_v<Task<int>>);
static_assert(std::is_nothrow_move_constructible_v<Task<int>>);
static_assert(std::is_nothrow_move_assignable_v<Task<int>>);

Task<int> Constant(int v, Trace* trace) {
  trace->push_back("body");
  co_return v;
}

TEST(TaskTest, StartsEagerlyAndCompletesSynchronously) {
  Trace trace;
  Task<int> t = Constant(7, &trace);
  // The body already ran, to completion, inside the call.
  EXPECT_EQ(trace, Trace({"body"}));
  EXPECT_TRUE(t.valid());
  EXPECT_TRUE(t.done());
  EXPECT_EQ(t.Get(), 7);
}

Task<void> YieldThenMark(EventLoop* loop, Trace* trace) {
  trace->push_back("before");
  co_await loop->Yield();
  trace->push_back("after");
}

TEST(TaskTest, RunsUpToItsFirstSuspension) {
  EventLoop loop;
  Trace trace;
  Task<void> t = YieldThenMark(&loop, &trace);
  EXPECT_EQ(trace, Trace({"before"}));
  EXPECT_FALSE(t.done());
  EXPECT_EQ(loop.RunOne(), 1u);
  EXPECT_EQ(trace, Trace({"before", "after"}));
  EXPECT_TRUE(t.done());
}

Task<std::unique_ptr<int>> MakeUnique(int v) { co_return std::make_unique<int>(v); }

Task<int> AwaitMoveOnly(Trace* trace) {
  std::unique_ptr<int> p = co_await MakeUnique(41);
  trace->push_back("got");
  co_return *p + 1;
}

TEST(TaskTest, MoveOnlyResultsAreMovedOut) {
  Trace trace;
  Task<int> t = AwaitMoveOnly(&trace);
  ASSERT_TRUE(t.done());
  EXPECT_EQ(t.Get(), 42);

  Task<std::unique_ptr<int>> u = MakeUnique(5);
  Task<std::unique_ptr<int>> moved = std::move(u);
  EXPECT_FALSE(u.valid());  // NOLINT(bugprone-use-after-move): checking the moved-from state
  ASSERT_TRUE(moved.done());
  std::unique_ptr<int> p = moved.Get();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(*p, 5);
}

TEST(TaskTest, MoveAssignmentDestroysTheFinishedFrame) {
  Counted::Reset();
  {
    Task<int> a = []() -> Task<int> { co_return 1; }();
    Task<void> b = [](Counted) -> Task<void> { co_return; }(Counted{});
    EXPECT_EQ(Counted::live, 1);  // the copy in b's frame
    b = Task<void>();
    EXPECT_EQ(Counted::live, 0);  // assigning over b freed its frame
    EXPECT_TRUE(a.done());
  }
  EXPECT_EQ(Counted::live, 0);
}

Task<std::string> Leaf(EventLoop* loop, std::string s, Trace* trace) {
  trace->push_back("leaf " + s + " start");
  co_await loop->Yield();
  trace->push_back("leaf " + s + " end");
  co_return s + "!";
}

Task<std::string> Parent(EventLoop* loop, Trace* trace) {
  trace->push_back("parent start");
  std::string a = co_await Leaf(loop, "a", trace);
  trace->push_back("parent got " + a);
  std::string b = co_await Leaf(loop, "b", trace);
  co_return a + b;
}

TEST(TaskTest, SuspendedChildResumesItsAwaiter) {
  EventLoop loop;
  Trace trace;
  Task<std::string> t = Parent(&loop, &trace);
  EXPECT_EQ(trace, Trace({"parent start", "leaf a start"}));
  EXPECT_FALSE(t.done());
  // The child's completion transfers straight into the parent, which runs on to the next leaf.
  EXPECT_EQ(loop.RunOne(), 1u);
  EXPECT_EQ(trace,
            Trace({"parent start", "leaf a start", "leaf a end", "parent got a!", "leaf b start"}));
  EXPECT_EQ(loop.RunOne(), 1u);
  ASSERT_TRUE(t.done());
  EXPECT_EQ(t.Get(), "a!b!");
  EXPECT_EQ(loop.RunUntilIdle(), 0u);
}

Task<void> HoldCounted(Counted c, EventLoop* loop, int yields) {
  (void)c;
  for (int i = 0; i < yields; ++i) co_await loop->Yield();
}

TEST(TaskTest, SpawnFreesASynchronouslyFinishedFrame) {
  EventLoop loop;
  Counted::Reset();
  Spawn(HoldCounted(Counted{}, &loop, 0));
  EXPECT_EQ(Counted::live, 0);
  EXPECT_GE(Counted::constructed, 2);  // the argument and the frame's copy
}

TEST(TaskTest, SpawnFreesTheFrameWhenTheCoroutineFinishes) {
  EventLoop loop;
  Counted::Reset();
  Spawn(HoldCounted(Counted{}, &loop, 3));
  EXPECT_EQ(Counted::live, 1);  // the frame's copy: the root is suspended, alive
  EXPECT_EQ(loop.RunOne(), 1u);
  EXPECT_EQ(loop.RunOne(), 1u);
  EXPECT_EQ(Counted::live, 1);
  EXPECT_EQ(loop.RunOne(), 1u);  // last resumption runs to the end and frees the frame
  EXPECT_EQ(Counted::live, 0);
  EXPECT_EQ(loop.RunUntilIdle(), 0u);
}

Task<void> AwaitCountedChild(EventLoop* loop) {
  co_await HoldCounted(Counted{}, loop, 1);
  co_await HoldCounted(Counted{}, loop, 0);
}

TEST(TaskTest, AwaitedFramesAreFreedAfterTheAwait) {
  EventLoop loop;
  Counted::Reset();
  Spawn(AwaitCountedChild(&loop));
  EXPECT_EQ(Counted::live, 2);  // the temporary argument and the child's copy
  loop.RunUntilIdle();
  EXPECT_EQ(Counted::live, 0);
}

Task<int> Increment(int v) { co_return v + 1; }

Task<int> LongChain(int n) {
  int v = 0;
  for (int i = 0; i < n; ++i) {
    v = co_await Increment(v);
  }
  co_return v;
}

TEST(TaskTest, MillionSynchronousAwaitsDoNotGrowTheStack) {
  // Each child completes before its co_await, so the parent never suspends: no recursion, at any
  // optimisation level or under ASan.
  Task<int> t = LongChain(1'000'000);
  ASSERT_TRUE(t.done());
  EXPECT_EQ(t.Get(), 1'000'000);
}

Task<int> YieldingIncrement(EventLoop* loop, int v) {
  co_await loop->Yield();
  co_return v + 1;
}

Task<int> LongAsyncChain(EventLoop* loop, int n) {
  int v = 0;
  for (int i = 0; i < n; ++i) {
    v = co_await YieldingIncrement(loop, v);
  }
  co_return v;
}

TEST(TaskTest, ManyAsynchronousAwaitsDoNotGrowTheStack) {
  EventLoop loop;
  EXPECT_EQ(loop.RunSync(LongAsyncChain(&loop, 100'000)), 100'000);
}

Task<int> Nested(int depth) {
  if (depth == 0) co_return 0;
  int v = co_await Nested(depth - 1);
  co_return v + 1;
}

TEST(TaskTest, NestedSynchronousCompletion) {
  Task<int> t = Nested(100);
  ASSERT_TRUE(t.done());
  EXPECT_EQ(t.Get(), 100);
}

Task<void> NeverResumed(EventLoop* loop) { co_await loop->Yield(); }

TEST(TaskDeathTest, DestroyingASuspendedTaskAborts) {
  EXPECT_DEATH(
      {
        EventLoop loop;
        Task<void> t = NeverResumed(&loop);
        (void)t;
      },
      "destroyed while its coroutine was suspended");
}

Task<int> Throws() {
  throw 1;
  co_return 0;
}

TEST(TaskDeathTest, ExceptionsTerminate) {
  EXPECT_DEATH({ Task<int> t = Throws(); }, "exception escaped a coroutine");
}

}  // namespace
}  // namespace qedfuse::coro
