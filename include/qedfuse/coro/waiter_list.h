// coro::WaiterList: the FIFO of suspended coroutines behind CoMutex, CoQueue and Join.
//
//   struct Awaiter { WaiterList::Waiter node; ...
//     void await_suspend(std::coroutine_handle<> h) noexcept { list.Push(&node, h); } };
//   list.WakeOne();  // elsewhere: the oldest waiter is unlinked and its resumption posted
//
// A Waiter lives in the frame of the coroutine it stands for (inside its awaiter), so the list
// never allocates. Waking *posts* the resumption to the loop the waiter suspended on, never
// resumes it inline, and touches the node no more once posted. Single event-loop thread.
#pragma once

#include <coroutine>
#include <cstddef>

#include "qedfuse/coro/event_loop.h"

namespace qedfuse::coro {

class WaiterList {
 public:
  struct Waiter {
    Waiter* next = nullptr;
    std::coroutine_handle<> handle;
    EventLoop* loop = nullptr;
  };

  WaiterList() = default;
  WaiterList(const WaiterList&) = delete;
  WaiterList& operator=(const WaiterList&) = delete;

  // Appends |w| for the coroutine |h|, which is suspending on the current loop.
  void Push(Waiter* w, std::coroutine_handle<> h) noexcept {
    w->next = nullptr;
    w->handle = h;
    w->loop = &EventLoop::Current();
    if (tail_ != nullptr) {
      tail_->next = w;
    } else {
      head_ = w;
    }
    tail_ = w;
    ++size_;
  }

  // Unlinks the longest waiter and posts its resumption. Returns false if nobody was waiting.
  bool WakeOne() noexcept {
    Waiter* w = head_;
    if (w == nullptr) return false;
    head_ = w->next;
    if (head_ == nullptr) tail_ = nullptr;
    --size_;
    w->loop->Post(w->handle);  // |w| lives in a frame that may run as soon as it is posted
    return true;
  }

  // Wakes every waiter, in FIFO order. Returns how many were woken.
  std::size_t WakeAll() noexcept {
    std::size_t n = 0;
    while (WakeOne()) ++n;
    return n;
  }

  bool empty() const noexcept { return head_ == nullptr; }
  std::size_t size() const noexcept { return size_; }

 private:
  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace qedfuse::coro
