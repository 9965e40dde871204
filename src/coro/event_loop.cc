// EventLoop over asio::io_context (see event_loop.h).
#include "qedfuse/coro/event_loop.h"

#include <cstdio>
#include <cstdlib>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

namespace qedfuse::coro {
namespace {
thread_local EventLoop* current_loop = nullptr;
}  // namespace

struct EventLoop::Impl {
  boost::asio::io_context ctx{1};
};

EventLoop::EventLoop() : impl_(std::make_unique<Impl>()), previous_(current_loop) {
  current_loop = this;
}

EventLoop::~EventLoop() {
  // Run handlers already queued so that posted frames are not leaked mid-flight; anything still
  // suspended after that belongs to a caller that outlived its loop.
  impl_->ctx.restart();
  impl_->ctx.poll();
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

// Asio's own outstanding-work count is thread-safe; it keeps run()/run_one() waiting.
void EventLoop::AddWork() noexcept { impl_->ctx.get_executor().on_work_started(); }

void EventLoop::RemoveWork() noexcept { impl_->ctx.get_executor().on_work_finished(); }

void EventLoop::DeadlockAbort() {
  std::fputs("qedfuse: RunSync: the loop ran dry while the task was still suspended\n", stderr);
  std::abort();
}

}  // namespace qedfuse::coro
