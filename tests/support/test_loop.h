// Event-loop helpers for tests: run a task to completion, or drive the loop step by step.
//
//   TestLoop loop;                                   // becomes the thread's current loop
//   auto r = loop.Run(backend->Flush());             // blocks (driving the loop) until done
//   coro::Task<Result<void>> t = backend->Write(...);  // eager: runs to its first suspension
//   loop.Step();                                      // one handler
//   loop.Idle();                                      // everything ready now
//   ASSERT_TRUE(t.done());
#pragma once

#include <cstddef>
#include <utility>

#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::test {

class TestLoop {
 public:
  coro::EventLoop& loop() { return loop_; }

  template <typename T>
  T Run(coro::Task<T> task) {
    return loop_.RunSync(std::move(task));
  }
  std::size_t Step() { return loop_.RunOne(); }
  std::size_t Idle() { return loop_.RunUntilIdle(); }
  // Runs until every outstanding task and pool job has finished.
  void Drain() { loop_.Run(); }

 private:
  coro::EventLoop loop_;
};

// Runs |task| to completion on the calling thread's current loop.
template <typename T>
T RunSync(coro::Task<T> task) {
  return coro::EventLoop::Current().RunSync(std::move(task));
}

}  // namespace qedfuse::test
