// coro::BlockingPool: results, resumption on the loop thread, outstanding work, lifetimes.
#include "qedfuse/coro/blocking_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::coro {
namespace {

struct Threads {
  std::thread::id job;
  std::thread::id resumed;
};

Task<int> OffloadSquare(BlockingPool* pool, int v, Threads* threads) {
  int r = co_await pool->Offload([v, threads] {
    threads->job = std::this_thread::get_id();
    return v * v;
  });
  threads->resumed = std::this_thread::get_id();
  co_return r;
}

TEST(BlockingPoolTest, ReturnsTheValueAndResumesOnTheLoopThread) {
  EventLoop loop;
  BlockingPool pool(2);
  EXPECT_EQ(pool.threads(), 2u);
  Threads threads;
  Task<int> t = OffloadSquare(&pool, 12, &threads);
  EXPECT_FALSE(t.done());                      // never completes inline
  EXPECT_EQ(loop.RunSync(std::move(t)), 144);  // RunSync waits: the job counts as loop work
  EXPECT_NE(threads.job, std::this_thread::get_id());
  EXPECT_EQ(threads.resumed, std::this_thread::get_id());
}

Task<std::string> OffloadVoidAndMoveOnly(BlockingPool* pool) {
  bool ran = false;
  co_await pool->Offload([&ran] { ran = true; });
  std::unique_ptr<std::string> s =
      co_await pool->Offload([] { return std::make_unique<std::string>("moved"); });
  co_return ran ? *s : std::string("job did not run");
}

TEST(BlockingPoolTest, VoidAndMoveOnlyResults) {
  EventLoop loop;
  BlockingPool pool(1);
  EXPECT_EQ(loop.RunSync(OffloadVoidAndMoveOnly(&pool)), "moved");
}

TEST(BlockingPoolTest, ZeroThreadsMeansOne) {
  BlockingPool pool(0);
  EXPECT_EQ(pool.threads(), 1u);
}

Task<void> OffloadMany(BlockingPool* pool, int n, std::atomic<int>* jobs, int* resumed) {
  for (int i = 0; i < n; ++i) {
    co_await pool->Offload([jobs] { jobs->fetch_add(1); });
    ++*resumed;
  }
}

TEST(BlockingPoolTest, ManyConcurrentOffloads) {
  EventLoop loop;
  BlockingPool pool(2);
  std::atomic<int> jobs{0};
  int resumed = 0;
  for (int i = 0; i < 8; ++i) Spawn(OffloadMany(&pool, 50, &jobs, &resumed));
  loop.Run();  // returns only once no job is outstanding
  EXPECT_EQ(jobs.load(), 400);
  EXPECT_EQ(resumed, 400);
}

Task<void> OffloadSlow(BlockingPool* pool, std::atomic<bool>* started, bool* resumed) {
  co_await pool->Offload([started] {
    started->store(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  });
  *resumed = true;
}

TEST(BlockingPoolTest, DestroyingThePoolFinishesSubmittedJobs) {
  EventLoop loop;
  std::atomic<bool> started{false};
  bool resumed = false;
  {
    BlockingPool pool(1);
    Spawn(OffloadSlow(&pool, &started, &resumed));
    Spawn(OffloadSlow(&pool, &started, &resumed));  // queued behind the first
  }
  // Both jobs ran before the pool was gone; the loop resumes their coroutines.
  EXPECT_TRUE(started.load());
  EXPECT_FALSE(resumed);
  loop.RunUntilIdle();
  EXPECT_TRUE(resumed);
}

TEST(BlockingPoolTest, LoopDestroyedWhileAJobIsInFlightWaitsForIt) {
  std::atomic<bool> started{false};
  bool resumed = false;
  BlockingPool pool(1);
  {
    EventLoop loop;
    Spawn(OffloadSlow(&pool, &started, &resumed));
    while (!started.load()) std::this_thread::yield();
    // The loop goes away while the job sleeps: its destructor must wait for the job's post
    // (and resume the coroutine) instead of leaving the worker to touch a destroyed loop.
  }
  EXPECT_TRUE(resumed);
}

}  // namespace
}  // namespace qedfuse::coro
