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

#include "qedfuse/coro/event_loop.h"

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
  ~CoMutex() { assert(!locked_ && head_ == nullptr); }

  class LockAwaiter {
   public:
    explicit LockAwaiter(CoMutex* m) noexcept : m_(m) {}
    bool await_ready() noexcept {
      if (m_->locked_) return false;
      m_->locked_ = true;
      return true;
    }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      handle_ = h;
      loop_ = &EventLoop::Current();
      if (m_->tail_ != nullptr) {
        m_->tail_->next_ = this;
      } else {
        m_->head_ = this;
      }
      m_->tail_ = this;
      ++m_->waiters_;
    }
    [[nodiscard]] Guard await_resume() noexcept { return Guard(m_); }

   private:
    friend class CoMutex;
    CoMutex* m_;
    LockAwaiter* next_ = nullptr;
    std::coroutine_handle<> handle_;
    EventLoop* loop_ = nullptr;
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
  std::size_t waiters() const noexcept { return waiters_; }

 private:
  void Unlock() noexcept {
    assert(locked_);
    if (head_ == nullptr) {
      locked_ = false;
      return;
    }
    // Hand-off: the mutex stays locked and now belongs to the first waiter.
    LockAwaiter* w = head_;
    head_ = w->next_;
    if (head_ == nullptr) tail_ = nullptr;
    --waiters_;
    w->loop_->Post(w->handle_);
  }

  bool locked_ = false;
  LockAwaiter* head_ = nullptr;
  LockAwaiter* tail_ = nullptr;
  std::size_t waiters_ = 0;
};

}  // namespace qedfuse::coro
