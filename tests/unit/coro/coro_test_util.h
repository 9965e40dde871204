// Small helpers for the coroutine runtime tests.
#pragma once

#include <string>
#include <vector>

namespace qedfuse::coro::testing {

// Counts live instances; passing one by value into a coroutine tells whether its frame is alive.
struct Counted {
  static inline int live = 0;
  static inline int constructed = 0;
  Counted() {
    ++live;
    ++constructed;
  }
  Counted(const Counted&) {
    ++live;
    ++constructed;
  }
  Counted(Counted&&) noexcept {
    ++live;
    ++constructed;
  }
  Counted& operator=(const Counted&) = default;
  Counted& operator=(Counted&&) = default;
  ~Counted() { --live; }
  static void Reset() {
    live = 0;
    constructed = 0;
  }
};

// The order in which coroutines reached their checkpoints.
using Trace = std::vector<std::string>;

}  // namespace qedfuse::coro::testing
