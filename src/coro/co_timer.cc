// CoTimer over asio::steady_timer (see co_timer.h).
//
// The asio timer is only a wake-up source: the authoritative state is armed_/deadline_/closed_.
// Every wake re-checks that state, so a completion that raced with Arm/Disarm (already queued
// with success) cannot fire a disarmed or moved timer.
//
// A disarmed timer keeps no asio operation pending: the waiter parks its handle and Arm/Close
// post it. So an idle timer is not outstanding work, and Run()/RunOne()/RunSync() can still
// notice that nothing else is left to do.
#include "qedfuse/coro/co_timer.h"

#include <boost/asio/steady_timer.hpp>
#include <cassert>
#include <coroutine>
#include <utility>

#include "qedfuse/coro/asio_await.h"
#include "qedfuse/coro/event_loop.h"

namespace qedfuse::coro {

struct CoTimer::Impl {
  explicit Impl(EventLoop& l) : loop(&l), timer(l.context()) {}

  // Resumes a parked waiter from a later loop turn.
  void Unpark() {
    if (parked) loop->Post(std::exchange(parked, {}));
  }

  struct ParkAwaiter {
    Impl* impl;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept { impl->parked = h; }
    void await_resume() const noexcept {}
  };

  EventLoop* loop;
  boost::asio::steady_timer timer;
  std::coroutine_handle<> parked;  // the waiter, while the timer is disarmed
  bool waiting = false;            // a Wait() is in progress
};

CoTimer::CoTimer() : impl_(std::make_unique<Impl>(EventLoop::Current())) {}

CoTimer::~CoTimer() {
  // A waiter would be left suspended forever (or resumed into a destroyed timer).
  assert(!impl_->waiting && "CoTimer destroyed while a Wait() is in progress; Close() it first");
}

void CoTimer::Arm(Clock::duration delay) {
  if (closed_) return;
  const Clock::time_point now = Clock::now();
  if (delay <= Clock::duration::zero()) {
    deadline_ = now;
  } else if (delay >= Clock::time_point::max() - now) {
    deadline_ = Clock::time_point::max();  // saturate instead of overflowing
  } else {
    deadline_ = now + delay;
  }
  armed_ = true;
  impl_->timer.expires_at(deadline_);  // cancels a pending wait; Wait() re-waits
  impl_->Unpark();
}

void CoTimer::Disarm() {
  if (!armed_) return;
  armed_ = false;
  impl_->timer.cancel();  // the waiter wakes, sees the timer disarmed and parks
}

void CoTimer::Close() {
  closed_ = true;
  armed_ = false;
  impl_->timer.cancel();
  impl_->Unpark();
}

Task<TimerEvent> CoTimer::Wait() {
  assert(!impl_->waiting && "only one coroutine may wait on a CoTimer");
  impl_->waiting = true;
  TimerEvent event = TimerEvent::kClosed;
  for (;;) {
    if (closed_) {
      event = TimerEvent::kClosed;
      break;
    }
    if (!armed_) {
      co_await Impl::ParkAwaiter{impl_.get()};
      continue;
    }
    if (Clock::now() >= deadline_) {
      armed_ = false;
      event = TimerEvent::kFired;
      break;
    }
    boost::system::error_code ec = co_await impl_->timer.async_wait(use_task);
    (void)ec;  // expiry or cancellation: the loop re-reads the state either way
  }
  impl_->waiting = false;
  co_return event;
}

}  // namespace qedfuse::coro
