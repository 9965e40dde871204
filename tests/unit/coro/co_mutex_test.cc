// coro::CoMutex: uncontended locking, FIFO hand-off to waiters, posted wake-ups, TryLock.
#include "qedfuse/coro/co_mutex.h"

#include <gtest/gtest.h>

#include <string>

#include "coro_test_util.h"
#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::coro {
namespace {

using testing::Trace;

Task<void> LockAndRecord(CoMutex* m, std::string name, Trace* trace) {
  CoMutex::Guard g = co_await m->Lock();
  EXPECT_TRUE(g.owns(*m));
  trace->push_back(name);
}

TEST(CoMutexTest, UncontendedLockCompletesSynchronously) {
  CoMutex m;
  Trace trace;
  Task<void> t = LockAndRecord(&m, "a", &trace);
  EXPECT_TRUE(t.done());  // no EventLoop needed: nothing suspended
  EXPECT_EQ(trace, Trace({"a"}));
  EXPECT_FALSE(m.locked());
}

TEST(CoMutexTest, GuardReleaseAndMove) {
  CoMutex m;
  CoMutex::Guard g = m.TryLock();
  ASSERT_TRUE(g.owns_lock());
  EXPECT_TRUE(m.locked());
  EXPECT_FALSE(m.TryLock().owns_lock());
  CoMutex::Guard h = std::move(g);
  EXPECT_FALSE(g.owns_lock());  // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(h.owns(m));
  EXPECT_TRUE(m.locked());
  h.Release();
  EXPECT_FALSE(m.locked());
  h.Release();  // idempotent
  EXPECT_FALSE(m.locked());
}

//  main          A (waiter)    B (waiter)    C (waiter)
//  TryLock
//                Lock: waits
//                              Lock: waits
//                                            Lock: waits
//  Release -> hand-off to A (posted); TryLock fails: A owns it already
//  RunOne        runs, unlocks -> hand-off to B
//  RunOne                      runs, unlocks -> hand-off to C
//  RunOne                                    runs, unlocks -> free
TEST(CoMutexTest, WaitersGetTheLockInFifoOrderByHandOff) {
  EventLoop loop;
  CoMutex m;
  Trace trace;
  CoMutex::Guard held = m.TryLock();
  ASSERT_TRUE(held.owns_lock());
  Task<void> a = LockAndRecord(&m, "A", &trace);
  Task<void> b = LockAndRecord(&m, "B", &trace);
  Task<void> c = LockAndRecord(&m, "C", &trace);
  EXPECT_EQ(m.waiters(), 3u);
  EXPECT_TRUE(trace.empty());

  held.Release();
  // Handed to A, not freed: no newcomer can overtake, and A has not run yet (posted).
  EXPECT_TRUE(m.locked());
  EXPECT_EQ(m.waiters(), 2u);
  EXPECT_FALSE(m.TryLock().owns_lock());
  EXPECT_TRUE(trace.empty());

  EXPECT_EQ(loop.RunOne(), 1u);
  EXPECT_EQ(trace, Trace({"A"}));
  EXPECT_TRUE(a.done());
  EXPECT_TRUE(m.locked());  // now handed to B
  EXPECT_FALSE(m.TryLock().owns_lock());

  EXPECT_EQ(loop.RunOne(), 1u);
  EXPECT_EQ(trace, Trace({"A", "B"}));
  EXPECT_EQ(loop.RunOne(), 1u);
  EXPECT_EQ(trace, Trace({"A", "B", "C"}));
  EXPECT_TRUE(b.done());
  EXPECT_TRUE(c.done());
  EXPECT_FALSE(m.locked());
  EXPECT_EQ(m.waiters(), 0u);
  EXPECT_EQ(loop.RunUntilIdle(), 0u);
}

Task<void> LockYieldRecord(EventLoop* loop, CoMutex* m, std::string name, Trace* trace) {
  CoMutex::Guard g = co_await m->Lock();
  trace->push_back(name + "+");
  co_await loop->Yield();  // hold the lock across a suspension
  trace->push_back(name + "-");
}

TEST(CoMutexTest, NewcomerQueuesBehindAWaiterBeingHandedTheLock) {
  EventLoop loop;
  CoMutex m;
  Trace trace;
  Task<void> a = LockYieldRecord(&loop, &m, "A", &trace);  // gets it at once
  Task<void> b = LockYieldRecord(&loop, &m, "B", &trace);  // waits
  EXPECT_EQ(trace, Trace({"A+"}));
  EXPECT_EQ(loop.RunOne(), 1u);  // A resumes from its yield, releases: hand-off to B posted
  EXPECT_EQ(trace, Trace({"A+", "A-"}));
  // B's resumption is queued but has not run: the lock is B's, and a newcomer must wait.
  EXPECT_TRUE(m.locked());
  EXPECT_FALSE(m.TryLock().owns_lock());
  Task<void> c = LockYieldRecord(&loop, &m, "C", &trace);
  EXPECT_EQ(m.waiters(), 1u);
  loop.RunUntilIdle();
  EXPECT_EQ(trace, Trace({"A+", "A-", "B+", "B-", "C+", "C-"}));
  EXPECT_TRUE(a.done() && b.done() && c.done());
  EXPECT_FALSE(m.locked());
}

Task<void> Worker(EventLoop* loop, CoMutex* m, int id, int* inside, int* max_inside,
                  std::vector<int>* order) {
  for (int round = 0; round < 3; ++round) {
    CoMutex::Guard g = co_await m->Lock();
    ++*inside;
    if (*inside > *max_inside) *max_inside = *inside;
    order->push_back(id);
    co_await loop->Yield();
    --*inside;
  }
}

TEST(CoMutexTest, MutualExclusionAndRoundRobinUnderContention) {
  EventLoop loop;
  CoMutex m;
  int inside = 0;
  int max_inside = 0;
  std::vector<int> order;
  for (int id = 0; id < 4; ++id) Spawn(Worker(&loop, &m, id, &inside, &max_inside, &order));
  loop.RunUntilIdle();
  EXPECT_EQ(max_inside, 1);
  EXPECT_FALSE(m.locked());
  // FIFO hand-off: each worker re-queues behind the others, so they take turns.
  EXPECT_EQ(order, std::vector<int>({0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3}));
}

}  // namespace
}  // namespace qedfuse::coro
