// Result<T>: the data path's return type, shaped like C++23 std::expected<T, std::error_code>.
//
// A Result holds either a value or an error_code (errno-valued or a qedfuse::Errc). It is
// [[nodiscard]] so that an ignored failure is a compile-time warning. Construct errors with
// Unexpected(ec) / Unexpected(Errc::k...) and success with the value itself or Ok().
#pragma once

#include <cassert>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

#include "qedfuse/base/errors.h"

namespace qedfuse {

struct Unexpected {
  explicit Unexpected(std::error_code e) : error(e) {}
  explicit Unexpected(Errc e) : error(make_error_code(e)) {}
  std::error_code error;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  using value_type = T;
  Result(const T& v) : v_(std::in_place_index<0>, v) {}                            // NOLINT
  Result(T&& v) : v_(std::in_place_index<0>, std::move(v)) {}                      // NOLINT
  Result(Unexpected u) : v_(std::in_place_index<1>, u.error) { assert(u.error); }  // NOLINT
  template <typename U>
  requires(std::is_constructible_v<T, U&&> && !std::is_same_v<std::decay_t<U>, Result> &&
           !std::is_same_v<std::decay_t<U>, Unexpected> && !std::is_same_v<std::decay_t<U>, T>)
      Result(U&& u)
      : v_(std::in_place_index<0>, std::forward<U>(u)) {}  // NOLINT

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  std::error_code error() const { return has_value() ? std::error_code() : std::get<1>(v_); }

 private:
  std::variant<T, std::error_code> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  using value_type = void;
  Result() = default;
  Result(Unexpected u) : ec_(u.error) { assert(u.error); }  // NOLINT
  bool has_value() const noexcept { return !ec_; }
  explicit operator bool() const noexcept { return has_value(); }
  void value() const { assert(has_value()); }
  std::error_code error() const { return ec_; }

 private:
  std::error_code ec_;
};

inline Result<void> Ok() { return {}; }

}  // namespace qedfuse
