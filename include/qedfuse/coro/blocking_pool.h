// coro::BlockingPool: worker threads for system calls that have no asynchronous form
// (fdatasync, fallocate, preadv/pwritev in the thread-pool I/O backend).
//
//   ssize_t n = co_await pool.Offload([fd, iov, cnt, off] { return ::preadv(fd, iov, cnt, off); });
//
// The function runs on a worker; the awaiting coroutine is resumed on its own event loop with
// the function's result. While a job is outstanding the loop counts it as work, so Run()/RunOne()
// wait for it, and so does the loop's destructor. The function must not touch block-layer state
// (that belongs to the loop thread). Destroying the pool finishes the jobs already submitted,
// so coroutines awaiting them are still resumed (by their loop) afterwards.
#pragma once

#include <coroutine>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "qedfuse/coro/event_loop.h"

namespace qedfuse::coro {

class BlockingPool {
 public:
  // An intrusive job: lives in its submitter (an Offload awaiter in a coroutine frame), so a
  // hand-off allocates nothing. |run| is called once on a worker; the node is not touched by the
  // pool after |run| starts.
  struct Job {
    Job* next = nullptr;
    void (*run)(Job*) = nullptr;
  };

  explicit BlockingPool(std::size_t threads);
  ~BlockingPool();  // joins the workers after finishing queued jobs
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  // Runs |job| on a worker thread. Thread-safe.
  void Submit(std::function<void()> job);
  // Runs |job->run(job)| on a worker thread; |job| must stay valid until then. Thread-safe.
  void SubmitJob(Job* job);

  template <typename F>
  class OffloadAwaiter : private Job {
   public:
    using R = std::invoke_result_t<F&>;
    OffloadAwaiter(BlockingPool* pool, F f) : pool_(pool), f_(std::move(f)) {}
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
      handle_ = h;
      loop_ = &EventLoop::Current();
      loop_->AddWork();
      run = &OffloadAwaiter::Run;
      pool_->SubmitJob(this);
    }
    R await_resume() {
      if constexpr (!std::is_void_v<R>) return std::move(*result_);
    }

   private:
    static void Run(Job* job) {
      auto* self = static_cast<OffloadAwaiter*>(job);
      if constexpr (std::is_void_v<R>) {
        self->f_();
      } else {
        self->result_.emplace(self->f_());
      }
      // Once posted, the coroutine may resume and destroy this awaiter at any moment; only the
      // loop is touched afterwards, and RemoveWork() is the last touch (the loop's destructor
      // waits for it).
      EventLoop* loop = self->loop_;
      loop->Post(self->handle_);
      loop->RemoveWork();
    }

    struct Empty {};
    BlockingPool* pool_;
    F f_;
    std::coroutine_handle<> handle_;
    EventLoop* loop_ = nullptr;
    std::optional<std::conditional_t<std::is_void_v<R>, Empty, R>> result_;
  };

  template <typename F>
  OffloadAwaiter<std::decay_t<F>> Offload(F&& f) {
    return OffloadAwaiter<std::decay_t<F>>(this, std::forward<F>(f));
  }

  std::size_t threads() const noexcept { return threads_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::size_t threads_;
};

}  // namespace qedfuse::coro
