// coro::CoMutex: a FIFO coroutine mutex for one event-loop thread (QEMU's CoMutex).
//
//   CoMutex::Guard lock = co_await table_lock_.Lock();
//   ... metadata work ...
//   lock.Release();            // or let the guard go out of scope
//
// Unlock hands the mutex directly to the longest waiter (it never becomes free in between, so no
// newcomer can overtake a waiter) and *posts* the waiter's resumption to the loop. Functions that
// need the lock take `const CoMutex::Guard&` as proof and can assert held.owns(mutex).
#pragma once

#include <cassert>
#include <coroutine>
#include <cstddef>
#include <memory>

#include "qedfuse/coro/waiter_list.h"

namespace qedfuse::coro {

class CoMutex {
 public:
  class Guard {
   public:
    Guard() noexcept = default;
    explicit Guard(CoMutex* m) noexcept : m_(m) {}

    bool owns(const CoMutex& m) const noexcept { return m_.get() == &m; }
    bool owns_lock() const noexcept { return m_ != nullptr; }
    CoMutex* mutex() const noexcept { return m_.get(); }
    void Release() noexcept { m_.reset(); }

   private:
    struct Unlocker {
      void operator()(CoMutex* m) const noexcept { m->Unlock(); }
    };
    std::unique_ptr<CoMutex, Unlocker> m_;  // move-only; unlocks when reset or destroyed
  };

  CoMutex() = default;
  CoMutex(const CoMutex&) = delete;
  CoMutex& operator=(const CoMutex&) = delete;
  ~CoMutex() { assert(!locked_ && waiters_.empty()); }

  class LockAwaiter {
   public:
    explicit LockAwaiter(CoMutex* m) noexcept : m_(m) {}
    bool await_ready() noexcept {
      if (m_->locked_) return false;
      m_->locked_ = true;
      return true;
    }
    void await_suspend(std::coroutine_handle<> h) noexcept { m_->waiters_.Push(&node_, h); }
    [[nodiscard]] Guard await_resume() noexcept { return Guard(m_); }

   private:
    CoMutex* m_;
    WaiterList::Waiter node_;
  };

  // Awaitable yielding a Guard once the mutex is held by the caller.
  [[nodiscard]] LockAwaiter Lock() noexcept { return LockAwaiter(this); }

  // Non-blocking attempt: an owning Guard on success, an empty one otherwise.
  Guard TryLock() noexcept {
    if (locked_) return Guard();
    locked_ = true;
    return Guard(this);
  }

  bool locked() const noexcept { return locked_; }
  std::size_t waiters() const noexcept { return waiters_.size(); }

 private:
  void Unlock() noexcept {
    assert(locked_);
    // Hand-off: with a waiter the mutex stays locked and now belongs to the first waiter.
    if (!waiters_.WakeOne()) locked_ = false;
  }

  bool locked_ = false;
  WaiterList waiters_;
};

}  // namespace qedfuse::coro
