// coro::EventLoop: posting, turn-by-turn driving, Current(), Run/Stop, RunSync and destruction.
#include "qedfuse/coro/event_loop.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <thread>
#include <vector>

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

// A poller fed by another thread the way the kernel feeds an io_uring: the producer publishes an
// event in memory, then signals an eventfd only if wake-ups are on.
class ThreadFedPoller final : public EventLoop::Poller {
 public:
  explicit ThreadFedPoller(EventLoop& loop)
      : loop_(loop), fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), event_(loop.context(), fd_) {
    Arm();
  }
  ~ThreadFedPoller() {
    boost::system::error_code ec;
    event_.close(ec);
  }

  // Producer side (any thread).
  void Produce() {
    produced_.fetch_add(1, std::memory_order_seq_cst);
    if (wakeups_.load(std::memory_order_seq_cst)) {
      const uint64_t one = 1;
      EXPECT_EQ(write(fd_, &one, sizeof(one)), static_cast<ssize_t>(sizeof(one)));
    }
  }

  bool Poll() override {
    ++polls;
    return Consume();
  }
  void SetWakeups(bool on) override {
    wakeups_.store(on, std::memory_order_relaxed);
    wakeup_changes.push_back(on);
  }

  uint64_t consumed = 0;
  uint64_t stop_at = UINT64_MAX;
  uint64_t polls = 0;
  uint64_t eventfd_wakes = 0;
  std::vector<bool> wakeup_changes;

 private:
  bool Consume() {
    const uint64_t now = produced_.load(std::memory_order_seq_cst);
    if (now == consumed) return false;
    consumed = now;
    if (consumed >= stop_at) loop_.Stop();
    return true;
  }
  void Arm() {
    event_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                      [this](const boost::system::error_code& ec) {
                        if (ec) return;
                        ++eventfd_wakes;
                        uint64_t n;
                        while (read(fd_, &n, sizeof(n)) > 0) {
                        }
                        Consume();
                        Arm();
                      });
  }

  EventLoop& loop_;
  int fd_;
  boost::asio::posix::stream_descriptor event_;
  std::atomic<uint64_t> produced_{0};
  std::atomic<bool> wakeups_{true};
};

// Events from another thread, with gaps around the polling window so the loop keeps switching
// between polling and sleeping: none may be left pending while the loop sleeps (that would hang
// this test; a watchdog turns a hang into a failure).
TEST(EventLoopPollerTest, EventsFromAnotherThreadAreNeverLost) {
  constexpr uint64_t kEvents = 20000;
  EventLoop loop;
  ThreadFedPoller poller(loop);
  poller.stop_at = kEvents;
  loop.AddPoller(&poller);
  loop.SetPollLimit(std::chrono::microseconds(20));
  std::atomic<bool> done{false};
  std::thread watchdog([&done] {
    for (int i = 0; i < 1200 && !done; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!done) {
      std::fputs("EventsFromAnotherThreadAreNeverLost: the loop slept on a pending event\n",
                 stderr);
      std::abort();
    }
  });
  std::thread producer([&poller] {
    std::mt19937 rng(12345);
    for (uint64_t i = 0; i < kEvents; ++i) {
      poller.Produce();
      // Mostly back to back or within the window, sometimes long enough for the loop to sleep.
      const unsigned r = rng() % 100;
      if (r < 5) {
        std::this_thread::sleep_for(std::chrono::microseconds(100 + rng() % 400));
      } else if (r < 50) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(rng() % 40);
        while (std::chrono::steady_clock::now() < until) {
        }
      }
    }
  });
  loop.Run();
  done = true;
  producer.join();
  watchdog.join();
  EXPECT_EQ(poller.consumed, kEvents);
  EXPECT_GT(poller.polls, 0u);
  // The loop ran with wake-ups off and turned them on to sleep at least once.
  ASSERT_GE(poller.wakeup_changes.size(), 3u);
  EXPECT_TRUE(poller.wakeup_changes.front());  // AddPoller(): on
  EXPECT_FALSE(poller.wakeup_changes[1]);      // Run(): off while running
  EXPECT_TRUE(poller.wakeup_changes.back());   // Run() returned: on again
  loop.RemovePoller(&poller);
}

// A poller that reports work on every Poll() (so the loop never sleeps) and runs a hook.
class CountingPoller final : public EventLoop::Poller {
 public:
  bool Poll() override {
    ++polls;
    if (on_poll) on_poll();
    return true;
  }
  void SetWakeups(bool) override {}
  int polls = 0;
  std::function<void()> on_poll;
};

TEST(EventLoopPollerTest, ZeroLimitNeverPolls) {
  EventLoop loop;
  CountingPoller poller;
  loop.AddPoller(&poller);
  int ran = 0;
  for (int i = 0; i < 10; ++i) loop.Post([&ran] { ++ran; });
  loop.Run();
  EXPECT_EQ(ran, 10);
  EXPECT_EQ(poller.polls, 0);
  loop.RemovePoller(&poller);
}

TEST(EventLoopPollerTest, StopEndsAPollingRun) {
  EventLoop loop;
  loop.SetPollLimit(std::chrono::microseconds(50));
  CountingPoller poller;
  poller.on_poll = [&] {
    if (poller.polls == 5) loop.Stop();
  };
  loop.AddPoller(&poller);
  loop.AddWork();  // outstanding work: without Stop() the loop would go on
  int ran = 0;
  loop.Post([&ran] { ++ran; });
  loop.Run();
  EXPECT_EQ(ran, 1);
  EXPECT_EQ(poller.polls, 5);
  loop.RemoveWork();
  loop.RemovePoller(&poller);
}

TEST(EventLoopPollerTest, APollerCanRemoveItselfFromPoll) {
  EventLoop loop;
  loop.SetPollLimit(std::chrono::microseconds(50));
  CountingPoller poller;
  CountingPoller other;
  poller.on_poll = [&] { loop.RemovePoller(&poller); };
  other.on_poll = [&] {
    if (other.polls == 10) loop.Stop();
  };
  loop.AddPoller(&poller);
  loop.AddPoller(&other);
  loop.AddWork();
  loop.Run();
  EXPECT_EQ(poller.polls, 1);  // polled once, then gone
  EXPECT_EQ(other.polls, 10);  // the other one kept being polled
  loop.RemovePoller(&other);
  loop.RemovePoller(&other);  // removing twice is harmless
  // Without pollers Run() is a plain loop again.
  int ran = 0;
  loop.Post([&] {
    ++ran;
    loop.RemoveWork();
  });
  loop.Run();
  EXPECT_EQ(ran, 1);
}

}  // namespace
}  // namespace qedfuse::coro
