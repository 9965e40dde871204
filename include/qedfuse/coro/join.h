// coro::Join: waits until a number of started jobs have finished (a count-down latch).
//
//   coro::Join join;
//   for (Job& j : jobs) { join.Add(); coro::Spawn(Run(j, join)); }  // each Run calls join.Done()
//   co_await join.Wait();                                           // all have called Done()
//
// Any number of coroutines may wait; when the count reaches zero every waiter is posted to the
// loop (never resumed inline), in FIFO order. Wait() on a zero count returns at once. The count
// may go up again after it reached zero (a new round). Single event-loop thread.
#pragma once

#include <cassert>
#include <coroutine>
#include <cstddef>

#include "qedfuse/coro/waiter_list.h"

namespace qedfuse::coro {

class Join {
  struct Awaiter;

 public:
  Join() = default;
  Join(const Join&) = delete;
  Join& operator=(const Join&) = delete;
  ~Join() { assert(waiters_.empty() && "a Join destroyed with waiters"); }

  void Add(std::size_t n = 1) noexcept { count_ += n; }
  // One job finished; at zero, wakes every waiter.
  void Done() noexcept {
    assert(count_ > 0);
    if (--count_ == 0) waiters_.WakeAll();
  }
  std::size_t pending() const noexcept { return count_; }

  // Completes once the count is zero.
  Awaiter Wait() noexcept { return Awaiter{this}; }

 private:
  struct Awaiter {
    Join* join;
    WaiterList::Waiter node = {};
    bool await_ready() const noexcept { return join->count_ == 0; }
    void await_suspend(std::coroutine_handle<> h) noexcept { join->waiters_.Push(&node, h); }
    void await_resume() const noexcept {}
  };

  std::size_t count_ = 0;
  WaiterList waiters_;
};

}  // namespace qedfuse::coro
