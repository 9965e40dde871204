// Microbenchmarks of the coroutine runtime: what one spawn, await, loop resumption, CoMutex
// hand-off and CoQueue wake-up cost. Run: build/tests/bench/coro_bench
#include <benchmark/benchmark.h>

#include <cstdint>

#include "qedfuse/coro/co_mutex.h"
#include "qedfuse/coro/co_queue.h"
#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/frame_pool.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::coro {
namespace {

// Reports fresh frame allocations per iteration (0 once the frame pool is warm).
class FreshAllocations {
 public:
  FreshAllocations() : start_(FramePool::ThreadStats().fresh_allocations) {}
  void Report(benchmark::State& state) const {
    state.counters["fresh_allocs/iter"] =
        benchmark::Counter(static_cast<double>(FramePool::ThreadStats().fresh_allocations - start_),
                           benchmark::Counter::kAvgIterations);
  }

 private:
  uint64_t start_;
};

Task<void> Empty(int* n) {
  ++*n;
  co_return;
}

// Create a root coroutine that completes synchronously, and free it.
void BM_SpawnSynchronous(benchmark::State& state) {
  int n = 0;
  FreshAllocations fresh;
  for (auto _ : state) Spawn(Empty(&n));
  benchmark::DoNotOptimize(n);
  fresh.Report(state);
}
BENCHMARK(BM_SpawnSynchronous);

Task<int> Child(int v) { co_return v + 1; }

Task<void> AwaitChildren(benchmark::State* state, int* out) {
  int v = 0;
  for (auto _ : *state) {
    v = co_await Child(v);
  }
  *out = v;
}

// co_await of a child that finishes without suspending (a call, a frame and no suspension).
void BM_AwaitSynchronousChild(benchmark::State& state) {
  int out = 0;
  FreshAllocations fresh;
  Spawn(AwaitChildren(&state, &out));
  benchmark::DoNotOptimize(out);
  fresh.Report(state);
}
BENCHMARK(BM_AwaitSynchronousChild);

Task<void> YieldLoop(EventLoop* loop, benchmark::State* state) {
  for (auto _ : *state) {
    co_await loop->Yield();
  }
}

// Suspend, post the handle to the loop, and be resumed by it.
void BM_PostAndResume(benchmark::State& state) {
  EventLoop loop;
  Spawn(YieldLoop(&loop, &state));
  loop.Run();
}
BENCHMARK(BM_PostAndResume);

Task<int> YieldingChild(EventLoop* loop, int v) {
  co_await loop->Yield();
  co_return v + 1;
}

Task<void> AwaitYieldingChildren(EventLoop* loop, benchmark::State* state) {
  int v = 0;
  for (auto _ : *state) {
    v = co_await YieldingChild(loop, v);
  }
  benchmark::DoNotOptimize(v);
}

// co_await of a child that suspends and is resumed through the loop, then resumes its parent.
void BM_AwaitSuspendingChild(benchmark::State& state) {
  EventLoop loop;
  FreshAllocations fresh;
  Spawn(AwaitYieldingChildren(&loop, &state));
  loop.Run();
  fresh.Report(state);
}
BENCHMARK(BM_AwaitSuspendingChild);

Task<void> LockedYielder(EventLoop* loop, CoMutex* m, benchmark::State* state, bool* stop) {
  while (!*stop) {
    CoMutex::Guard g = co_await m->Lock();
    if (*stop) break;  // the other one saw the end of the benchmark while this one waited
    if (!state->KeepRunning()) {
      *stop = true;
      break;
    }
    co_await loop->Yield();
  }
}

// Two coroutines contend for one CoMutex; every acquisition is a FIFO hand-off from the other
// (unlock, post, resume). Includes one Yield per iteration: subtract BM_PostAndResume.
void BM_CoMutexHandOff(benchmark::State& state) {
  EventLoop loop;
  CoMutex m;
  bool stop = false;
  Spawn(LockedYielder(&loop, &m, &state, &stop));
  Spawn(LockedYielder(&loop, &m, &state, &stop));
  loop.Run();
}
BENCHMARK(BM_CoMutexHandOff);

Task<void> QueueWaiter(CoMutex* m, CoQueue* q, bool* stop, int64_t* wakes) {
  CoMutex::Guard g = co_await m->Lock();
  while (!*stop) {
    co_await q->Wait(g);
    ++*wakes;
  }
}

// WakeOne of a waiting coroutine: post, resume, re-lock the mutex, wait again.
void BM_CoQueueWake(benchmark::State& state) {
  EventLoop loop;
  CoMutex m;
  CoQueue q;
  bool stop = false;
  int64_t wakes = 0;
  FreshAllocations fresh;
  Spawn(QueueWaiter(&m, &q, &stop, &wakes));
  for (auto _ : state) {
    q.WakeOne();
    loop.RunOne();
  }
  stop = true;
  q.WakeAll();
  loop.RunUntilIdle();
  if (wakes != static_cast<int64_t>(state.iterations()) + 1) state.SkipWithError("lost wake-up");
  fresh.Report(state);
}
BENCHMARK(BM_CoQueueWake);

}  // namespace
}  // namespace qedfuse::coro

BENCHMARK_MAIN();
