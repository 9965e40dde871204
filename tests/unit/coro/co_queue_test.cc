// coro::CoQueue: FIFO wake order, WakeOne/WakeAll results, posted wake-ups, re-locking, and the
// check-then-wait pattern never losing a wake-up.
#include "qedfuse/coro/co_queue.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "coro_test_util.h"
#include "qedfuse/coro/co_mutex.h"
#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::coro {
namespace {

using testing::Trace;

Task<void> WaitOnce(CoMutex* m, CoQueue* q, std::string name, Trace* trace) {
  CoMutex::Guard g = co_await m->Lock();
  trace->push_back(name + " waits");
  co_await q->Wait(g);
  EXPECT_TRUE(g.owns(*m));  // Wait() returns with the mutex re-taken
  EXPECT_TRUE(m->locked());
  trace->push_back(name + " woke");
}

TEST(CoQueueTest, WaitReleasesTheMutex) {
  EventLoop loop;
  CoMutex m;
  CoQueue q;
  Trace trace;
  Task<void> a = WaitOnce(&m, &q, "a", &trace);
  EXPECT_FALSE(a.done());
  EXPECT_FALSE(m.locked());  // released while waiting
  EXPECT_EQ(q.size(), 1u);
  EXPECT_FALSE(q.empty());
  EXPECT_TRUE(q.WakeOne());
  EXPECT_TRUE(q.empty());
  loop.RunUntilIdle();
  EXPECT_TRUE(a.done());
  EXPECT_FALSE(m.locked());
  EXPECT_EQ(trace, Trace({"a waits", "a woke"}));
}

TEST(CoQueueTest, WakeOneAndWakeAllReportWhomTheyWoke) {
  EventLoop loop;
  CoMutex m;
  CoQueue q;
  Trace trace;
  EXPECT_FALSE(q.WakeOne());  // nobody waiting
  EXPECT_EQ(q.WakeAll(), 0u);
  Task<void> a = WaitOnce(&m, &q, "a", &trace);
  Task<void> b = WaitOnce(&m, &q, "b", &trace);
  Task<void> c = WaitOnce(&m, &q, "c", &trace);
  EXPECT_EQ(q.size(), 3u);
  EXPECT_TRUE(q.WakeOne());
  EXPECT_EQ(q.WakeAll(), 2u);
  EXPECT_EQ(q.size(), 0u);
  EXPECT_FALSE(q.WakeOne());
  loop.RunUntilIdle();
  EXPECT_TRUE(a.done() && b.done() && c.done());
}

TEST(CoQueueTest, WakeAllResumesWaitersInFifoOrder) {
  EventLoop loop;
  CoMutex m;
  CoQueue q;
  Trace trace;
  Task<void> a = WaitOnce(&m, &q, "a", &trace);
  Task<void> b = WaitOnce(&m, &q, "b", &trace);
  Task<void> c = WaitOnce(&m, &q, "c", &trace);
  EXPECT_EQ(q.WakeAll(), 3u);
  loop.RunUntilIdle();
  EXPECT_EQ(trace, Trace({"a waits", "b waits", "c waits", "a woke", "b woke", "c woke"}));
}

TEST(CoQueueTest, WakeOneResumesTheLongestWaiter) {
  EventLoop loop;
  CoMutex m;
  CoQueue q;
  Trace trace;
  Task<void> a = WaitOnce(&m, &q, "a", &trace);
  Task<void> b = WaitOnce(&m, &q, "b", &trace);
  EXPECT_TRUE(q.WakeOne());
  loop.RunUntilIdle();
  EXPECT_TRUE(a.done());
  EXPECT_FALSE(b.done());
  EXPECT_TRUE(q.WakeOne());
  loop.RunUntilIdle();
  EXPECT_TRUE(b.done());
  EXPECT_EQ(trace, Trace({"a waits", "b waits", "a woke", "b woke"}));
}

Task<void> WakeUnderLock(CoMutex* m, CoQueue* q, Trace* trace) {
  CoMutex::Guard g = co_await m->Lock();
  trace->push_back("waker wakes");
  bool woke = q->WakeOne();
  EXPECT_TRUE(woke);
  EXPECT_EQ(m->waiters(), 0u);  // the woken waiter has not even run far enough to re-lock
  trace->push_back("waker continues");
  g.Release();
  trace->push_back("waker released");
}

//  waiter              waker
//  Lock, Wait
//                      Lock, WakeOne (posts the waiter), keeps running, Release
//  resumes, re-locks
TEST(CoQueueTest, WakeUpIsPostedAndTheWakerKeepsRunning) {
  EventLoop loop;
  CoMutex m;
  CoQueue q;
  Trace trace;
  Task<void> waiter = WaitOnce(&m, &q, "waiter", &trace);
  Task<void> waker = WakeUnderLock(&m, &q, &trace);
  EXPECT_TRUE(waker.done());  // ran to its end without yielding to the woken waiter
  EXPECT_FALSE(waiter.done());
  EXPECT_EQ(trace, Trace({"waiter waits", "waker wakes", "waker continues", "waker released"}));
  EXPECT_EQ(loop.RunOne(), 1u);
  EXPECT_TRUE(waiter.done());
  EXPECT_EQ(trace.back(), "waiter woke");
}

TEST(CoQueueTest, WakeWithTheMutexFreeIsStillPosted) {
  EventLoop loop;
  CoMutex m;
  CoQueue q;
  Trace trace;
  Task<void> waiter = WaitOnce(&m, &q, "waiter", &trace);
  EXPECT_TRUE(q.WakeOne());
  // Resumed inline, the waiter could re-lock the free mutex and finish inside WakeOne().
  EXPECT_FALSE(waiter.done());
  EXPECT_EQ(trace, Trace({"waiter waits"}));
  EXPECT_EQ(loop.RunOne(), 1u);
  EXPECT_TRUE(waiter.done());
  EXPECT_EQ(trace, Trace({"waiter waits", "waiter woke"}));
}

Task<void> HoldAcrossYield(EventLoop* loop, CoMutex* m, std::string name, Trace* trace) {
  CoMutex::Guard g = co_await m->Lock();
  trace->push_back(name + " locked");
  co_await loop->Yield();
  trace->push_back(name + " unlocks");
}

TEST(CoQueueTest, WokenWaiterReLocksBehindEarlierLockers) {
  EventLoop loop;
  CoMutex m;
  CoQueue q;
  Trace trace;
  Task<void> waiter = WaitOnce(&m, &q, "waiter", &trace);
  CoMutex::Guard g = m.TryLock();
  ASSERT_TRUE(g.owns_lock());
  Task<void> locker = HoldAcrossYield(&loop, &m, "locker", &trace);  // queued on the mutex
  EXPECT_TRUE(q.WakeOne());
  g.Release();  // hand-off to locker (queued before the waiter re-locks)
  loop.RunUntilIdle();
  EXPECT_EQ(trace, Trace({"waiter waits", "locker locked", "locker unlocks", "waiter woke"}));
  EXPECT_TRUE(waiter.done() && locker.done());
}

struct Channel {
  CoMutex m;
  CoQueue not_empty;
  std::vector<int> items;
};

Task<void> Consume(EventLoop* loop, Channel* ch, int count, std::vector<int>* got) {
  for (int i = 0; i < count; ++i) {
    CoMutex::Guard g = co_await ch->m.Lock();
    while (ch->items.empty()) {
      co_await ch->not_empty.Wait(g);
    }
    got->push_back(ch->items.front());
    ch->items.erase(ch->items.begin());
    g.Release();
    co_await loop->Yield();
  }
}

Task<void> Produce(EventLoop* loop, Channel* ch, int first, int count, int yields_between) {
  for (int i = 0; i < count; ++i) {
    for (int y = 0; y < yields_between; ++y) co_await loop->Yield();
    CoMutex::Guard g = co_await ch->m.Lock();
    ch->items.push_back(first + i);
    ch->not_empty.WakeOne();  // may find nobody waiting: the consumer checks before waiting
  }
}

// Every interleaving of producers and consumers, whether a consumer checks before or after the
// item arrives, must deliver every item: RunSync aborts if a consumer is left waiting.
TEST(CoQueueTest, CheckThenWaitNeverLosesAWakeUp) {
  for (int producer_yields = 0; producer_yields < 4; ++producer_yields) {
    for (int consumers_first = 0; consumers_first < 2; ++consumers_first) {
      EventLoop loop;
      Channel ch;
      std::vector<int> got_a;
      std::vector<int> got_b;
      std::vector<Task<void>> tasks;
      if (!consumers_first) {
        tasks.push_back(Produce(&loop, &ch, 0, 10, producer_yields));
        tasks.push_back(Produce(&loop, &ch, 100, 10, producer_yields + 1));
      }
      tasks.push_back(Consume(&loop, &ch, 10, &got_a));
      tasks.push_back(Consume(&loop, &ch, 10, &got_b));
      if (consumers_first) {
        tasks.push_back(Produce(&loop, &ch, 0, 10, producer_yields));
        tasks.push_back(Produce(&loop, &ch, 100, 10, producer_yields + 1));
      }
      for (Task<void>& t : tasks) loop.RunSync(std::move(t));
      EXPECT_EQ(got_a.size() + got_b.size(), 20u);
      EXPECT_TRUE(ch.items.empty());
      EXPECT_TRUE(ch.not_empty.empty());
    }
  }
}

}  // namespace
}  // namespace qedfuse::coro
