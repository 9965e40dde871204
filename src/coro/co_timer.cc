// CoTimer over asio::steady_timer (see co_timer.h).
//
// The asio timer is only a wake-up source: the authoritative state is armed_/deadline_/closed_.
// Every wake re-checks that state, so a completion that raced with Arm/Disarm (already queued
// with success) cannot fire a disarmed or moved timer.
#include "qedfuse/coro/co_timer.h"

#include <boost/asio/steady_timer.hpp>

#include "qedfuse/coro/asio_await.h"
#include "qedfuse/coro/event_loop.h"

namespace qedfuse::coro {

struct CoTimer::Impl {
  explicit Impl(boost::asio::io_context& ctx) : timer(ctx) {}
  boost::asio::steady_timer timer;
};

CoTimer::CoTimer() : impl_(std::make_unique<Impl>(EventLoop::Current().context())) {
  impl_->timer.expires_at(Clock::time_point::max());
}

CoTimer::~CoTimer() = default;

void CoTimer::Arm(Clock::duration delay) {
  if (closed_) return;
  armed_ = true;
  deadline_ = Clock::now() + delay;
  impl_->timer.expires_at(deadline_);  // cancels a pending wait; Wait() re-waits
}

void CoTimer::Disarm() {
  if (!armed_) return;
  armed_ = false;
  impl_->timer.expires_at(Clock::time_point::max());
}

void CoTimer::Close() {
  closed_ = true;
  armed_ = false;
  impl_->timer.cancel();
}

Task<TimerEvent> CoTimer::Wait() {
  for (;;) {
    if (closed_) co_return TimerEvent::kClosed;
    if (armed_ && Clock::now() >= deadline_) {
      armed_ = false;
      impl_->timer.expires_at(Clock::time_point::max());
      co_return TimerEvent::kFired;
    }
    if (!armed_) impl_->timer.expires_at(Clock::time_point::max());
    boost::system::error_code ec = co_await impl_->timer.async_wait(use_task);
    (void)ec;  // cancellation or expiry: the loop re-reads the state either way
  }
}

}  // namespace qedfuse::coro
