// EventLoop over asio::io_context (see event_loop.h).
#include "qedfuse/coro/event_loop.h"

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cassert>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "qedfuse/base/log.h"

namespace qedfuse::coro {
namespace {
thread_local EventLoop* current_loop = nullptr;
// The longest a polling loop sleeps before it looks at its pollers again.
constexpr std::chrono::milliseconds kLongestSleep{250};
// While spinning, how often the loop also asks the reactor (one non-blocking epoll_wait).
constexpr std::chrono::microseconds kReactorCheck{10};
}  // namespace

struct EventLoop::Impl {
  boost::asio::io_context ctx{1};
  // AddWork() calls not yet matched by RemoveWork(). Another thread that announced work still
  // holds a pointer to this loop, so the destructor waits for this to drop to zero.
  std::atomic<std::size_t> external_work{0};
  std::vector<Poller*> pollers;
  std::chrono::nanoseconds poll_limit{0};
  std::chrono::nanoseconds poll_window{0};  // the current window, at most poll_limit
  bool in_poll = false;                     // inside a Poller::Poll() call
};

EventLoop::EventLoop() : impl_(std::make_unique<Impl>()), previous_(current_loop) {
  current_loop = this;
}

EventLoop::~EventLoop() {
  // 1. Wait for work announced by other threads (a BlockingPool job in flight): they will post
  //    to this loop and touch it until their RemoveWork(), so it must outlive them.
  // 2. Run every handler that is ready, so posted frames are resumed rather than leaked.
  // Coroutines still suspended after that (on a timer, a descriptor, a CoMutex whose holder is
  // gone) belong to a caller that outlived its loop; they are neither resumed nor destroyed.
  for (;;) {
    if (impl_->external_work.load(std::memory_order_acquire) == 0) {
      // Every post made before the last RemoveWork() is visible now; run them (they may
      // announce new work, hence the loop).
      if (RunUntilIdle() == 0) break;
      continue;
    }
    RunUntilIdle();
    impl_->ctx.restart();
    impl_->ctx.run_one_for(std::chrono::milliseconds(10));
  }
  assert(current_loop == this && "EventLoops must be destroyed in reverse order of creation");
  current_loop = previous_;
}

EventLoop& EventLoop::Current() {
  if (current_loop == nullptr) {
    std::fputs("qedfuse: no EventLoop on this thread\n", stderr);
    std::abort();
  }
  return *current_loop;
}

EventLoop* EventLoop::CurrentOrNull() noexcept { return current_loop; }

boost::asio::io_context& EventLoop::context() noexcept { return impl_->ctx; }

void EventLoop::Post(std::coroutine_handle<> h) {
  boost::asio::post(impl_->ctx, [h] { h.resume(); });
}

void EventLoop::Post(std::function<void()> fn) { boost::asio::post(impl_->ctx, std::move(fn)); }

void EventLoop::Run() {
  if (impl_->ctx.stopped()) impl_->ctx.restart();
  if (impl_->poll_limit.count() == 0) {
    impl_->ctx.run();
    return;
  }
  RunPolling();
}

void EventLoop::AddPoller(Poller* poller) {
  assert(!impl_->in_poll && poller != nullptr && "pollers are added outside Poll()");
  impl_->pollers.push_back(poller);
  poller->SetWakeups(true);
}

void EventLoop::RemovePoller(Poller* poller) {
  auto it = std::find(impl_->pollers.begin(), impl_->pollers.end(), poller);
  if (it == impl_->pollers.end()) return;
  // From inside Poll() the slot is cleared and the list compacted afterwards.
  if (impl_->in_poll) {
    *it = nullptr;
  } else {
    impl_->pollers.erase(it);
  }
}

void EventLoop::SetPollLimit(std::chrono::nanoseconds limit) {
  impl_->poll_limit = std::max(limit, std::chrono::nanoseconds(0));
  impl_->poll_window = std::min(impl_->poll_window, impl_->poll_limit);
}

bool EventLoop::PollOnce() {
  bool found = false;
  std::vector<Poller*>& pollers = impl_->pollers;
  impl_->in_poll = true;
  // A poller may remove itself (or another) from inside Poll(): that clears its slot.
  for (std::size_t i = 0; i < pollers.size(); ++i) {
    if (pollers[i] != nullptr) found |= pollers[i]->Poll();
  }
  impl_->in_poll = false;
  std::erase(pollers, nullptr);
  return found;
}

void EventLoop::RunPolling() {
  using Clock = std::chrono::steady_clock;
  Impl& m = *impl_;
  // Wake-ups stay off while the loop runs or polls, and are on only while it blocks.
  for (Poller* p : m.pollers) p->SetWakeups(false);
  for (;;) {
    if (m.pollers.empty()) {  // none yet, or none any more: plain turns
      if (m.ctx.run_one() == 0) break;
      continue;
    }
    // Every ready handler first (this also asks the reactor, without waiting, for descriptors
    // and timers that became ready).
    m.ctx.poll();
    if (m.ctx.stopped()) break;
    if (PollOnce()) continue;
    // Spin. The reactor (other descriptors, timers, posts from other threads such as the thread
    // pool's completions) is asked again every kReactorCheck, so what it delivers waits at most
    // that long while the loop spins for its pollers.
    bool found = false;
    const Clock::time_point start = Clock::now();
    Clock::time_point next_reactor_check = start + kReactorCheck;
    for (Clock::time_point now = start; now - start < m.poll_window; now = Clock::now()) {
      if ((found = PollOnce())) break;
      if (now >= next_reactor_check) {
        if ((found = m.ctx.poll() > 0)) break;
        next_reactor_check = now + kReactorCheck;
      }
    }
    if (found) continue;
    // Nothing within the window: block. Wake-ups go on first, then one more look, so an event
    // that came in between is not left waiting for the next one.
    for (Poller* p : m.pollers) p->SetWakeups(true);
    // The producer (the kernel) publishes an event, then reads whether wake-ups are on; we turn
    // them on, then look for events. Without a full fence between our store and our load both
    // sides can miss each other (store buffering), and the loop would sleep on a pending event.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!PollOnce()) {
      const Clock::time_point blocked = Clock::now();
      // The sleep is bounded: a poller whose wake-up went missing (a kernel or poller bug) then
      // costs latency, is logged, and the loop goes on, instead of hanging its clients.
      const std::size_t ran = m.ctx.run_one_for(kLongestSleep);
      const auto slept = Clock::now() - blocked;
      if (ran == 0 && !m.ctx.stopped() && PollOnce()) {
        Log(LogLevel::kWarning, "an event was pending while the event loop slept (missed wake-up)");
      }
      // Adapt: an event that came soon after giving up means a longer window would have
      // caught it without sleeping; a long sleep means polling only burns CPU.
      if (slept <= m.poll_limit) {
        m.poll_window =
            std::min(m.poll_limit, std::max(m.poll_window * 2, std::chrono::nanoseconds(1000)));
      } else {
        m.poll_window /= 2;
        if (m.poll_window < std::chrono::nanoseconds(1000)) m.poll_window = {};
      }
      if (m.ctx.stopped()) break;  // Stop(), or out of work
    }
    for (Poller* p : m.pollers) p->SetWakeups(false);
  }
  for (Poller* p : m.pollers) p->SetWakeups(true);
}

void EventLoop::Stop() { impl_->ctx.stop(); }

std::size_t EventLoop::RunUntilIdle() {
  if (impl_->ctx.stopped()) impl_->ctx.restart();
  std::size_t total = 0;
  for (;;) {
    std::size_t n = impl_->ctx.poll();
    total += n;
    if (n == 0) break;
    impl_->ctx.restart();
  }
  return total;
}

std::size_t EventLoop::RunOne() {
  if (impl_->ctx.stopped()) impl_->ctx.restart();
  return impl_->ctx.run_one();
}

// Asio's own outstanding-work count is thread-safe; it keeps run()/run_one() waiting. The
// external counter is touched last, so once the destructor sees it at zero the other thread no
// longer uses the loop.
void EventLoop::AddWork() noexcept {
  impl_->external_work.fetch_add(1, std::memory_order_relaxed);
  impl_->ctx.get_executor().on_work_started();
}

void EventLoop::RemoveWork() noexcept {
  Impl* impl = impl_.get();
  impl->ctx.get_executor().on_work_finished();
  impl->external_work.fetch_sub(1, std::memory_order_release);
}

void EventLoop::DeadlockAbort() {
  std::fputs("qedfuse: RunSync: the loop ran dry while the task was still suspended\n", stderr);
  std::abort();
}

}  // namespace qedfuse::coro
