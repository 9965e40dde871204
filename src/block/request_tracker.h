// block::RequestTracker: in-flight request ranges and QEMU-style "serialising requests".
//
// Every request registers its byte range [begin, end) before it touches the driver. A request
// that does read-modify-write (padding an unaligned head or tail) is *serialising*: it must not
// run concurrently with any overlapping request, or a concurrent write into the padded bytes
// could be overwritten by the stale copy the RMW read earlier. The rule, checked at Begin():
//
//   a request waits while an OLDER overlapping request is in flight and either of the two is
//   serialising.
//
// Waiting only on older requests makes the wait-for graph acyclic (no deadlock), gives FIFO order
// between conflicting requests, and leaves aligned non-overlapping (or non-serialising
// overlapping) requests fully concurrent. Single event-loop thread; wake-ups are posted.
#pragma once

#include <cassert>
#include <coroutine>
#include <cstdint>

#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::block {

class RequestTracker {
 public:
  class Request;

 private:
  struct Waiter {
    Request* on;
    std::coroutine_handle<> handle;
    coro::EventLoop* loop = nullptr;
    Waiter* next = nullptr;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      handle = h;
      loop = &coro::EventLoop::Current();
      next = on->waiters_;
      on->waiters_ = this;
    }
    void await_resume() const noexcept {}
  };

 public:
  // One tracked request; unregisters itself (waking its waiters) when destroyed.
  class Request {
   public:
    Request(RequestTracker& t, uint64_t begin, uint64_t end, bool serialising) noexcept
        : tracker_(&t), begin_(begin), end_(end), serialising_(serialising) {
      prev_ = t.tail_;
      if (t.tail_ != nullptr) {
        t.tail_->next_ = this;
      } else {
        t.head_ = this;
      }
      t.tail_ = this;
      ++t.count_;
    }
    Request(const Request&) = delete;
    Request& operator=(const Request&) = delete;
    ~Request() {
      RequestTracker& t = *tracker_;
      if (prev_ != nullptr) {
        prev_->next_ = next_;
      } else {
        t.head_ = next_;
      }
      if (next_ != nullptr) {
        next_->prev_ = prev_;
      } else {
        t.tail_ = prev_;
      }
      --t.count_;
      for (Waiter* w = waiters_; w != nullptr;) {
        Waiter* n = w->next;  // |w| lives in a frame that may run as soon as it is posted
        w->loop->Post(w->handle);
        w = n;
      }
    }

    // Waits until no older overlapping request conflicts with this one.
    coro::Task<void> WaitForConflicts() {
      for (;;) {
        Request* blocker = FindOlderConflict();
        if (blocker == nullptr) co_return;
        ++tracker_->waits_;
        Waiter w{blocker};
        co_await w;
      }
    }

    uint64_t begin() const noexcept { return begin_; }
    uint64_t end() const noexcept { return end_; }
    bool serialising() const noexcept { return serialising_; }

   private:
    friend class RequestTracker;
    Request* FindOlderConflict() const noexcept {
      for (Request* r = tracker_->head_; r != nullptr && r != this; r = r->next_) {
        if (!(serialising_ || r->serialising_)) continue;
        if (r->begin_ < end_ && begin_ < r->end_) return r;
      }
      return nullptr;
    }

    RequestTracker* tracker_;
    uint64_t begin_;
    uint64_t end_;
    bool serialising_;
    Request* prev_ = nullptr;
    Request* next_ = nullptr;
    Waiter* waiters_ = nullptr;
  };

  RequestTracker() = default;
  RequestTracker(const RequestTracker&) = delete;
  RequestTracker& operator=(const RequestTracker&) = delete;
  ~RequestTracker() { assert(head_ == nullptr); }

  std::size_t in_flight() const noexcept { return count_; }
  // How many times a request had to wait for a conflicting one (tests and statistics).
  uint64_t waits() const noexcept { return waits_; }

 private:
  Request* head_ = nullptr;
  Request* tail_ = nullptr;
  std::size_t count_ = 0;
  uint64_t waits_ = 0;
};

}  // namespace qedfuse::block
