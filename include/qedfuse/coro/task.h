// coro::Task<T>: the one coroutine type of the project.
//
// Eager: calling a coroutine runs its body at once, on the caller's stack, up to its first real
// suspension. If it finishes without suspending, `co_await task` does not suspend at all
// (await_ready() is true), so loops of synchronously completing awaits do not grow the stack at
// any optimisation level or under ASan. If it suspends, the awaiting coroutine is recorded as the
// continuation and resumed (by symmetric transfer) when the task finishes.
//
// Ownership: a Task owns its frame. It must be co_awaited, or handed to coro::Spawn(), before it
// is destroyed; destroying a Task whose coroutine is still suspended is a bug and terminates.
// Exceptions escaping a coroutine terminate (the data path never throws).
// Frames come from FramePool, so steady state does not call malloc per coroutine.
#pragma once

#include <cassert>
#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <utility>

#include "qedfuse/coro/frame_pool.h"

namespace qedfuse::coro {

template <typename T>
class Task;

namespace detail {

class PromiseBase {
 public:
  static void* operator new(std::size_t size) { return FramePool::Allocate(size); }
  static void operator delete(void* p, std::size_t size) noexcept { FramePool::Free(p, size); }

  std::suspend_never initial_suspend() noexcept { return {}; }

  struct FinalAwaiter {
    bool await_ready() noexcept { return false; }
    template <typename P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      PromiseBase& p = h.promise();
      if (p.detached_) {
        h.destroy();  // a spawned root frees itself
        return std::noop_coroutine();
      }
      if (p.continuation_) return p.continuation_;
      return std::noop_coroutine();
    }
    void await_resume() noexcept {}
  };
  FinalAwaiter final_suspend() noexcept { return {}; }

  void unhandled_exception() noexcept {
    std::fputs("qedfuse: exception escaped a coroutine\n", stderr);
    std::terminate();
  }

  void set_continuation(std::coroutine_handle<> c) noexcept { continuation_ = c; }
  void set_detached() noexcept { detached_ = true; }

 private:
  std::coroutine_handle<> continuation_;
  bool detached_ = false;
};

template <typename T>
class Promise : public PromiseBase {
 public:
  Task<T> get_return_object() noexcept;
  template <typename U>
  void return_value(U&& v) {
    value_.emplace(std::forward<U>(v));
  }
  T Take() { return std::move(*value_); }

 private:
  std::optional<T> value_;
};

template <>
class Promise<void> : public PromiseBase {
 public:
  Task<void> get_return_object() noexcept;
  void return_void() noexcept {}
  void Take() noexcept {}
};

}  // namespace detail

template <typename T = void>
class [[nodiscard]] Task {
 public:
  using promise_type = detail::Promise<T>;
  using Handle = std::coroutine_handle<promise_type>;

  Task() noexcept = default;
  explicit Task(Handle h) noexcept : h_(h) {}
  Task(Task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  Task& operator=(Task&& o) noexcept {
    if (this != &o) {
      Reset();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() { Reset(); }

  bool valid() const noexcept { return static_cast<bool>(h_); }
  bool done() const noexcept { return !h_ || h_.done(); }

  // Result of a finished task (tests and loop helpers). Precondition: done().
  T Get() { return h_.promise().Take(); }

  bool await_ready() const noexcept {
    assert(h_ && "co_await on an empty Task");
    return h_.done();
  }
  void await_suspend(std::coroutine_handle<> awaiting) noexcept {
    h_.promise().set_continuation(awaiting);
  }
  T await_resume() { return h_.promise().Take(); }

  // Gives up ownership of the frame: it destroys itself when the coroutine finishes.
  // Used by coro::Spawn.
  void Detach() noexcept {
    if (!h_) return;
    Handle h = std::exchange(h_, {});
    if (h.done()) {
      h.destroy();
    } else {
      h.promise().set_detached();
    }
  }

 private:
  void Reset() noexcept {
    if (!h_) return;
    if (!h_.done()) {
      std::fputs("qedfuse: a Task was destroyed while its coroutine was suspended\n", stderr);
      std::abort();
    }
    h_.destroy();
    h_ = {};
  }

  Handle h_;
};

namespace detail {
template <typename T>
Task<T> Promise<T>::get_return_object() noexcept {
  return Task<T>(std::coroutine_handle<Promise<T>>::from_promise(*this));
}
inline Task<void> Promise<void>::get_return_object() noexcept {
  return Task<void>(std::coroutine_handle<Promise<void>>::from_promise(*this));
}
}  // namespace detail

// Starts |task| as a detached root: it runs on until it finishes, then frees itself.
inline void Spawn(Task<void> task) noexcept { task.Detach(); }

}  // namespace qedfuse::coro
