// coro::use_task: a completion token that lets a coro::Task co_await any Asio operation.
//
//   boost::system::error_code ec = co_await timer.async_wait(coro::use_task);
//   auto [ec, n] = co_await file.async_read_some_at(off, buf, coro::use_task);
//
// The awaited expression yields nothing for a `void()` signature, the single argument for a
// one-argument signature, and a std::tuple of all arguments otherwise. The operation is started
// when the coroutine suspends; the completion handler resumes it on the thread running the
// io_context. Asio never invokes a handler from inside the initiating call, so resumption is
// never inline with the co_await.
#pragma once

#include <boost/asio/async_result.hpp>
#include <coroutine>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace qedfuse::coro {

struct use_task_t {
  constexpr use_task_t() = default;
};
inline constexpr use_task_t use_task{};

namespace detail {

template <typename... Args>
struct AsioResultOf {
  using type = std::tuple<Args...>;
};
template <typename A>
struct AsioResultOf<A> {
  using type = A;
};
template <>
struct AsioResultOf<> {
  using type = void;
};

template <typename Initiation, typename InitArgs, typename... Args>
class AsioAwaiter {
 public:
  using Stored = std::tuple<Args...>;

  AsioAwaiter(Initiation init, InitArgs args) : init_(std::move(init)), args_(std::move(args)) {}

  bool await_ready() const noexcept { return false; }

  void await_suspend(std::coroutine_handle<> h) {
    std::apply(
        [&](auto&&... a) {
          std::move(init_)(Handler{this, h}, std::forward<decltype(a)>(a)...);
        },
        std::move(args_));
  }

  typename AsioResultOf<Args...>::type await_resume() {
    if constexpr (sizeof...(Args) == 1) {
      return std::get<0>(std::move(*result_));
    } else if constexpr (sizeof...(Args) > 1) {
      return std::move(*result_);
    }
  }

 private:
  struct Handler {
    AsioAwaiter* self;
    std::coroutine_handle<> h;
    template <typename... Ts>
    void operator()(Ts&&... vs) {
      self->result_.emplace(std::forward<Ts>(vs)...);
      h.resume();
    }
  };

  Initiation init_;
  InitArgs args_;
  std::optional<Stored> result_;
};

}  // namespace detail
}  // namespace qedfuse::coro

template <typename R, typename... Args>
class boost::asio::async_result<qedfuse::coro::use_task_t, R(Args...)> {
 public:
  template <typename Initiation, typename... InitArgs>
  static auto initiate(Initiation&& init, qedfuse::coro::use_task_t, InitArgs&&... args) {
    using Tuple = std::tuple<std::decay_t<InitArgs>...>;
    return qedfuse::coro::detail::AsioAwaiter<std::decay_t<Initiation>, Tuple,
                                              std::decay_t<Args>...>(
        std::forward<Initiation>(init), Tuple(std::forward<InitArgs>(args)...));
  }
};
