// coro::Gate: counts in-flight work and lets a closer wait for all of it (Seastar's gate).
//
//   auto holder = gate.TryEnter();     // empty optional once Close() has started
//   if (!holder) return EIO;
//   ...                                 // work; the holder leaves the gate when destroyed
//   co_await gate.Close();              // elsewhere: refuses new entries, waits for holders
#pragma once

#include <cassert>
#include <coroutine>
#include <cstddef>
#include <memory>
#include <optional>
#include <utility>

#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::coro {

class Gate {
 public:
  class Holder {
   public:
    explicit Holder(Gate* g) noexcept : g_(g) {}
    void Leave() noexcept { g_.reset(); }

   private:
    struct Leaver {
      void operator()(Gate* g) const noexcept { g->Leave(); }
    };
    std::unique_ptr<Gate, Leaver> g_;  // move-only; leaves the gate when reset or destroyed
  };

  Gate() = default;
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;
  ~Gate() { assert(count_ == 0); }

  std::optional<Holder> TryEnter() noexcept {
    if (closing_) return std::nullopt;
    ++count_;
    return Holder(this);
  }

  // Refuses new entries and returns once every holder has left. Only one closer may wait.
  Task<void> Close() {
    closing_ = true;
    if (count_ > 0) co_await CloseAwaiter{this};
  }

  bool closing() const noexcept { return closing_; }
  std::size_t count() const noexcept { return count_; }

 private:
  struct CloseAwaiter {
    Gate* g;
    bool await_ready() const noexcept { return g->count_ == 0; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      assert(!g->closer_);
      g->closer_ = h;
      g->closer_loop_ = &EventLoop::Current();
    }
    void await_resume() const noexcept {}
  };

  void Leave() noexcept {
    assert(count_ > 0);
    if (--count_ == 0 && closer_) {
      closer_loop_->Post(std::exchange(closer_, {}));
    }
  }

  std::size_t count_ = 0;
  bool closing_ = false;
  std::coroutine_handle<> closer_;
  EventLoop* closer_loop_ = nullptr;
};

}  // namespace qedfuse::coro
