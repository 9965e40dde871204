// coro::CoTimer: a re-armable one-shot timer that one long-lived coroutine waits on.
//
// Made for QED's need-check loop:
//   for (;;) {
//     if (co_await timer.Wait() == TimerEvent::kClosed) break;
//     ... the timer fired: do the deferred work ...
//   }
// Arm(d) (re)starts the countdown, Disarm() stops it, Close() ends the wait for good. Wait()
// returns only when an armed deadline has really passed (kFired, after which the timer is
// disarmed) or the timer was closed (kClosed); Arm/Disarm while waiting just move the deadline.
// An expiry already queued when Disarm()/Arm() is called does not fire.
//
// A disarmed timer holds no pending asio operation, so it does not keep the loop busy. At most
// one Wait() at a time; a timer must not be destroyed while a Wait() is in progress (Close() it
// and let the waiter return). Construct it on the thread of the loop it belongs to.
#pragma once

#include <chrono>
#include <memory>

#include "qedfuse/coro/task.h"

namespace qedfuse::coro {

enum class TimerEvent { kFired, kClosed };

class CoTimer {
 public:
  using Clock = std::chrono::steady_clock;

  CoTimer();
  ~CoTimer();
  CoTimer(const CoTimer&) = delete;
  CoTimer& operator=(const CoTimer&) = delete;

  void Arm(Clock::duration delay);
  void Disarm();
  void Close();

  bool armed() const noexcept { return armed_; }
  bool closed() const noexcept { return closed_; }

  Task<TimerEvent> Wait();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  bool armed_ = false;
  bool closed_ = false;
  Clock::time_point deadline_{};
};

}  // namespace qedfuse::coro
