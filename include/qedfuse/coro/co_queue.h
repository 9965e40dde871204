// coro::CoQueue: a FIFO of coroutines waiting for a condition guarded by a CoMutex
// (QEMU's CoQueue; a condition variable for coroutines).
//
//   while (!condition) co_await queue.Wait(guard);  // drops |guard| while waiting, re-takes it
//
// WakeOne()/WakeAll() post the waiters' resumptions to the loop in FIFO order; a woken waiter
// then re-acquires the mutex (FIFO behind earlier lockers) before Wait() returns, so the caller
// must re-check its condition. A wake with nobody waiting is not remembered: callers change
// state under the mutex first, then wake, and waiters check state before waiting, so no wake-up
// is lost.
#pragma once

#include <cassert>
#include <coroutine>
#include <cstddef>

#include "qedfuse/coro/co_mutex.h"
#include "qedfuse/coro/task.h"
#include "qedfuse/coro/waiter_list.h"

namespace qedfuse::coro {

class CoQueue {
 public:
  CoQueue() = default;
  CoQueue(const CoQueue&) = delete;
  CoQueue& operator=(const CoQueue&) = delete;

  // Waits until woken. |guard| must own a mutex; it is released while waiting and owns the same
  // mutex again when this returns.
  Task<void> Wait(CoMutex::Guard& guard) {
    CoMutex* m = guard.mutex();
    assert(m != nullptr && "CoQueue::Wait needs a guard that owns a mutex");
    co_await WaitAwaiter{this, &guard};
    guard = co_await m->Lock();
  }

  // Wakes the longest waiter. Returns false if nobody was waiting.
  bool WakeOne() noexcept { return waiters_.WakeOne(); }

  // Wakes every waiter, in FIFO order. Returns how many were woken.
  std::size_t WakeAll() noexcept { return waiters_.WakeAll(); }

  bool empty() const noexcept { return waiters_.empty(); }
  std::size_t size() const noexcept { return waiters_.size(); }

 private:
  struct WaitAwaiter {
    CoQueue* q;
    CoMutex::Guard* guard;
    WaiterList::Waiter node = {};

    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      q->waiters_.Push(&node, h);
      guard->Release();  // a waiter handed the mutex is resumed by a post, never inline
    }
    void await_resume() const noexcept {}
  };

  WaiterList waiters_;
};

}  // namespace qedfuse::coro
