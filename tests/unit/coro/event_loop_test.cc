// coro::EventLoop: posting, turn-by-turn driving, Current(), Run/Stop, RunSync and destruction.
#include "qedfuse/coro/event_loop.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "coro_test_util.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::coro {
namespace {

using testing::Counted;
using testing::Trace;

TEST(EventLoopTest, CurrentFollowsConstructionAndDestruction) {
  EXPECT_EQ(EventLoop::CurrentOrNull(), nullptr);
  {
    EventLoop outer;
    EXPECT_EQ(&EventLoop::Current(), &outer);
    {
      EventLoop inner;
      EXPECT_EQ(&EventLoop::Current(), &inner);
    }
    EXPECT_EQ(&EventLoop::Current(), &outer);
  }
  EXPECT_EQ(EventLoop::CurrentOrNull(), nullptr);
}

TEST(EventLoopTest, CurrentIsPerThread) {
  EventLoop loop;
  EventLoop* seen = &loop;
  std::thread t([&] { seen = EventLoop::CurrentOrNull(); });
  t.join();
  EXPECT_EQ(seen, nullptr);
}

TEST(EventLoopTest, PostedFunctionsRunInOrderOneTurnEach) {
  EventLoop loop;
  Trace trace;
  loop.Post([&] { trace.push_back("a"); });
  loop.Post([&] {
    trace.push_back("b");
    loop.Post([&] { trace.push_back("d"); });  // queued behind c
  });
  loop.Post([&] { trace.push_back("c"); });
  EXPECT_TRUE(trace.empty());  // posting never runs anything inline
  EXPECT_EQ(loop.RunOne(), 1u);
  EXPECT_EQ(trace, Trace({"a"}));
  EXPECT_EQ(loop.RunUntilIdle(), 3u);
  EXPECT_EQ(trace, Trace({"a", "b", "c", "d"}));
  EXPECT_EQ(loop.RunUntilIdle(), 0u);
  EXPECT_EQ(loop.RunOne(), 0u);  // nothing ready, no outstanding work: does not block
}

TEST(EventLoopTest, PostFromAnotherThread) {
  EventLoop loop;
  std::atomic<bool> ran_on_loop_thread{false};
  const std::thread::id loop_thread = std::this_thread::get_id();
  loop.AddWork();
  std::thread t([&] {
    loop.Post([&] { ran_on_loop_thread = std::this_thread::get_id() == loop_thread; });
    loop.RemoveWork();
  });
  // RunOne blocks until the other thread's post arrives: the announced work keeps it waiting.
  EXPECT_EQ(loop.RunOne(), 1u);
  t.join();
  EXPECT_TRUE(ran_on_loop_thread);
}

TEST(EventLoopTest, RunReturnsWhenNoWorkIsLeftAndStopEndsIt) {
  EventLoop loop;
  int n = 0;
  loop.Post([&] { ++n; });
  loop.Post([&] { ++n; });
  loop.Run();
  EXPECT_EQ(n, 2);

  loop.AddWork();  // would keep Run() going forever
  loop.Post([&] {
    ++n;
    loop.Stop();
  });
  loop.Run();
  EXPECT_EQ(n, 3);
  loop.RemoveWork();
  loop.Post([&] { ++n; });
  loop.Run();  // usable again after Stop()
  EXPECT_EQ(n, 4);
}

Task<int> YieldTwice(EventLoop* loop, Trace* trace) {
  trace->push_back("start");
  co_await loop->Yield();
  trace->push_back("middle");
  co_await loop->Yield();
  trace->push_back("end");
  co_return 9;
}

TEST(EventLoopTest, YieldResumesFromALaterTurn) {
  EventLoop loop;
  Trace trace;
  Task<int> t = YieldTwice(&loop, &trace);
  loop.Post([&] { trace.push_back("posted"); });
  EXPECT_EQ(trace, Trace({"start"}));
  EXPECT_EQ(loop.RunOne(), 1u);
  EXPECT_EQ(trace, Trace({"start", "middle"}));  // FIFO: the yield was queued first
  EXPECT_EQ(loop.RunOne(), 1u);
  EXPECT_EQ(trace, Trace({"start", "middle", "posted"}));
  EXPECT_EQ(loop.RunSync(std::move(t)), 9);
  EXPECT_EQ(trace, Trace({"start", "middle", "posted", "end"}));
}

TEST(EventLoopTest, RunSyncReturnsAtOnceForAFinishedTask) {
  EventLoop loop;
  EXPECT_EQ(loop.RunSync([]() -> Task<int> { co_return 3; }()), 3);
}

Task<void> WaitForever(std::coroutine_handle<>* out) {
  struct Park {
    std::coroutine_handle<>* out;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) const noexcept { *out = h; }
    void await_resume() const noexcept {}
  };
  co_await Park{out};
}

TEST(EventLoopDeathTest, RunSyncAbortsOnALostWakeUp) {
  EXPECT_DEATH(
      {
        EventLoop loop;
        std::coroutine_handle<> h;
        loop.RunSync(WaitForever(&h));
      },
      "ran dry");
}

Task<void> HoldUntilResumed(Counted c, EventLoop* loop) {
  (void)c;
  co_await loop->Yield();
  co_await loop->Yield();
}

TEST(EventLoopTest, DestructorRunsReadyHandlers) {
  Counted::Reset();
  bool ran = false;
  {
    EventLoop loop;
    Spawn(HoldUntilResumed(Counted{}, &loop));
    loop.Post([&] { ran = true; });
    EXPECT_EQ(Counted::live, 1);
  }
  // The destructor resumed the spawned root until it finished (so its frame was freed).
  EXPECT_TRUE(ran);
  EXPECT_EQ(Counted::live, 0);
}

TEST(EventLoopTest, DestructorWaitsForWorkAnnouncedByAnotherThread) {
  std::atomic<bool> ran{false};
  std::thread poster;
  {
    EventLoop loop;
    loop.AddWork();
    poster = std::thread([&ran, l = &loop] {
      // Give the loop's owner time to reach its destructor first.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      l->Post([&ran] { ran = true; });
      l->RemoveWork();
    });
  }
  // The loop outlived the other thread's use of it, and ran what it posted.
  EXPECT_TRUE(ran);
  poster.join();
}

}  // namespace
}  // namespace qedfuse::coro
