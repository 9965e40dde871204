// coro::CoTimer: firing, re-arming, disarming, closing, and expiries that race with Disarm/Arm.
//
// No assertion depends on how long anything took: sleeps only make sure a deadline has passed,
// and deadlines that must not pass too early are long enough for the step before them.
// RunSync() blocks in RunOne() while an armed timer is pending, so it waits for expiries.
#include "qedfuse/coro/co_timer.h"

#include <gtest/gtest.h>

#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <optional>
#include <thread>

#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::coro {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;

void SleepPast(milliseconds d) { std::this_thread::sleep_for(d + milliseconds(5)); }

TEST(CoTimerTest, FiresOnceTheArmedDeadlinePasses) {
  EventLoop loop;
  CoTimer timer;
  EXPECT_FALSE(timer.armed());
  Task<TimerEvent> wait = timer.Wait();
  EXPECT_FALSE(wait.done());
  timer.Arm(milliseconds(1));
  EXPECT_TRUE(timer.armed());
  EXPECT_EQ(loop.RunSync(std::move(wait)), TimerEvent::kFired);
  EXPECT_FALSE(timer.armed());  // firing disarms
  timer.Close();
}

TEST(CoTimerTest, ArmedBeforeWaitingAndAlreadyExpiredFiresWithoutSuspending) {
  EventLoop loop;
  CoTimer timer;
  timer.Arm(milliseconds(1));
  SleepPast(milliseconds(1));
  Task<TimerEvent> wait = timer.Wait();
  ASSERT_TRUE(wait.done());
  EXPECT_EQ(wait.Get(), TimerEvent::kFired);
}

TEST(CoTimerTest, DisarmedTimerDoesNotKeepTheLoopBusy) {
  EventLoop loop;
  CoTimer timer;
  Task<TimerEvent> wait = timer.Wait();
  // The waiter is parked without an asio operation: RunOne returns instead of blocking forever.
  EXPECT_EQ(loop.RunOne(), 0u);
  EXPECT_FALSE(wait.done());
  timer.Close();
  EXPECT_EQ(loop.RunSync(std::move(wait)), TimerEvent::kClosed);
}

TEST(CoTimerTest, ReArmPostponesTheDeadline) {
  EventLoop loop;
  CoTimer timer;
  Task<TimerEvent> wait = timer.Wait();
  timer.Arm(milliseconds(100));
  loop.RunUntilIdle();  // the waiter is now waiting on the 100 ms deadline
  timer.Arm(hours(1));  // postpone before it expires
  SleepPast(milliseconds(100));
  loop.RunUntilIdle();  // the cancelled wait completes; the waiter waits again
  EXPECT_FALSE(wait.done());
  EXPECT_TRUE(timer.armed());
  timer.Arm(milliseconds(0));  // bring it forward again
  EXPECT_EQ(loop.RunSync(std::move(wait)), TimerEvent::kFired);
}

TEST(CoTimerTest, DisarmPreventsFiring) {
  EventLoop loop;
  CoTimer timer;
  Task<TimerEvent> wait = timer.Wait();
  timer.Arm(milliseconds(100));
  loop.RunUntilIdle();
  timer.Disarm();
  EXPECT_FALSE(timer.armed());
  SleepPast(milliseconds(100));
  loop.RunUntilIdle();
  EXPECT_FALSE(wait.done());
  EXPECT_EQ(loop.RunOne(), 0u);  // nothing pending: the disarmed timer is idle
  // Arm again after a disarm: it fires normally.
  timer.Arm(milliseconds(1));
  EXPECT_EQ(loop.RunSync(std::move(wait)), TimerEvent::kFired);
}

TEST(CoTimerTest, CloseEndsTheWaitWithClosed) {
  EventLoop loop;
  CoTimer timer;
  Task<TimerEvent> wait = timer.Wait();
  timer.Arm(hours(1));
  loop.RunUntilIdle();
  timer.Close();
  EXPECT_TRUE(timer.closed());
  EXPECT_FALSE(timer.armed());
  EXPECT_EQ(loop.RunSync(std::move(wait)), TimerEvent::kClosed);
  // Closed for good: arming is ignored, waiting returns at once.
  timer.Arm(milliseconds(0));
  EXPECT_FALSE(timer.armed());
  Task<TimerEvent> again = timer.Wait();
  ASSERT_TRUE(again.done());
  EXPECT_EQ(again.Get(), TimerEvent::kClosed);
}

TEST(CoTimerTest, CloseWhileParkedEndsTheWait) {
  EventLoop loop;
  CoTimer timer;
  Task<TimerEvent> wait = timer.Wait();
  timer.Close();
  EXPECT_FALSE(wait.done());  // resumption is posted
  EXPECT_EQ(loop.RunSync(std::move(wait)), TimerEvent::kClosed);
}

Task<void> NeedCheckLoop(CoTimer* timer, int* fired) {
  for (;;) {
    TimerEvent e = co_await timer->Wait();
    if (e == TimerEvent::kClosed) break;
    ++*fired;
  }
}

TEST(CoTimerTest, LongLivedWaiterSeesEachExpiryOnce) {
  EventLoop loop;
  CoTimer timer;
  int fired = 0;
  Task<void> waiter = NeedCheckLoop(&timer, &fired);
  for (int i = 1; i <= 3; ++i) {
    timer.Arm(milliseconds(1));
    timer.Arm(milliseconds(1));  // re-arming twice still fires once
    while (fired < i) ASSERT_NE(loop.RunOne(), 0u);
    EXPECT_FALSE(timer.armed());
  }
  loop.RunUntilIdle();
  EXPECT_EQ(fired, 3);
  timer.Close();
  loop.RunSync(std::move(waiter));
  EXPECT_EQ(fired, 3);
}

// An asio timer whose deadline is earlier than the CoTimer's runs |action| in the same loop turn
// in which the CoTimer's expiry is collected: the reactor hands over expired timers in deadline
// order, so the CoTimer's wait completion (with success) is already queued behind |action|.
template <typename F>
void RaceWithQueuedExpiry(EventLoop& loop, CoTimer& timer, F action) {
  timer.Arm(milliseconds(200));
  loop.RunUntilIdle();  // the CoTimer's waiter is waiting on its asio timer
  boost::asio::steady_timer first(loop.context());
  first.expires_after(milliseconds(0));
  bool acted = false;
  first.async_wait([&](boost::system::error_code ec) {
    EXPECT_FALSE(ec);
    action();
    acted = true;
  });
  SleepPast(milliseconds(200));  // both deadlines have passed; neither is collected yet
  loop.RunUntilIdle();
  EXPECT_TRUE(acted);
}

TEST(CoTimerTest, QueuedExpiryDoesNotFireAfterDisarm) {
  EventLoop loop;
  CoTimer timer;
  Task<TimerEvent> wait = timer.Wait();
  RaceWithQueuedExpiry(loop, timer, [&] { timer.Disarm(); });
  EXPECT_FALSE(wait.done());
  EXPECT_FALSE(timer.armed());
  timer.Close();
  EXPECT_EQ(loop.RunSync(std::move(wait)), TimerEvent::kClosed);
}

TEST(CoTimerTest, QueuedExpiryDoesNotFireAfterReArm) {
  EventLoop loop;
  CoTimer timer;
  Task<TimerEvent> wait = timer.Wait();
  RaceWithQueuedExpiry(loop, timer, [&] { timer.Arm(hours(1)); });
  EXPECT_FALSE(wait.done());
  EXPECT_TRUE(timer.armed());
  timer.Close();
  EXPECT_EQ(loop.RunSync(std::move(wait)), TimerEvent::kClosed);
}

TEST(CoTimerTest, HugeDelaysSaturate) {
  EventLoop loop;
  CoTimer timer;
  Task<TimerEvent> wait = timer.Wait();
  timer.Arm(CoTimer::Clock::duration::max());  // must not overflow the deadline (UBSan)
  loop.RunUntilIdle();
  EXPECT_FALSE(wait.done());
  EXPECT_TRUE(timer.armed());
  timer.Arm(milliseconds(-5));  // a deadline in the past fires at once
  EXPECT_EQ(loop.RunSync(std::move(wait)), TimerEvent::kFired);
  timer.Close();
}

}  // namespace
}  // namespace qedfuse::coro
