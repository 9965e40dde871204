// EventLoop over asio::io_context (see event_loop.h).
#include "qedfuse/coro/event_loop.h"

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cassert>
#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace qedfuse::coro {
namespace {
thread_local EventLoop* current_loop = nullptr;
}  // namespace

struct EventLoop::Impl {
  boost::asio::io_context ctx{1};
  // AddWork() calls not yet matched by RemoveWork(). Another thread that announced work still
  // holds a pointer to this loop, so the destructor waits for this to drop to zero.
  std::atomic<std::size_t> external_work{0};
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
  impl_->ctx.run();
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
