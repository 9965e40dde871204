// Early-return helpers for Result<T> inside coroutines and ordinary functions.
//
//   QEDFUSE_CO_TRY(co_await file_->Flush());            // co_returns the error unchanged
//   QEDFUSE_CO_ASSIGN(auto hdr, co_await ReadHeader());  // declares |hdr| from the value
//   QEDFUSE_TRY(ParseThing(...));                        // plain-function variants
#pragma once

#include "qedfuse/base/result.h"

#define QEDFUSE_CONCAT_INNER(a, b) a##b
#define QEDFUSE_CONCAT(a, b) QEDFUSE_CONCAT_INNER(a, b)

#define QEDFUSE_CO_TRY(expr)                                        \
  do {                                                              \
    auto qedfuse_try_result_ = (expr);                              \
    if (!qedfuse_try_result_) {                                     \
      co_return ::qedfuse::Unexpected(qedfuse_try_result_.error()); \
    }                                                               \
  } while (0)

#define QEDFUSE_CO_ASSIGN_IMPL(tmp, lhs, expr)            \
  auto tmp = (expr);                                      \
  if (!tmp) co_return ::qedfuse::Unexpected(tmp.error()); \
  lhs = std::move(*tmp)

#define QEDFUSE_CO_ASSIGN(lhs, expr) \
  QEDFUSE_CO_ASSIGN_IMPL(QEDFUSE_CONCAT(qedfuse_assign_, __LINE__), lhs, expr)

#define QEDFUSE_TRY(expr)                                        \
  do {                                                           \
    auto qedfuse_try_result_ = (expr);                           \
    if (!qedfuse_try_result_) {                                  \
      return ::qedfuse::Unexpected(qedfuse_try_result_.error()); \
    }                                                            \
  } while (0)

#define QEDFUSE_ASSIGN_IMPL(tmp, lhs, expr)            \
  auto tmp = (expr);                                   \
  if (!tmp) return ::qedfuse::Unexpected(tmp.error()); \
  lhs = std::move(*tmp)

#define QEDFUSE_ASSIGN(lhs, expr) \
  QEDFUSE_ASSIGN_IMPL(QEDFUSE_CONCAT(qedfuse_assign_, __LINE__), lhs, expr)

// Status variants for the control path (absl::Status / absl::StatusOr).
#define QEDFUSE_CO_RETURN_IF_ERROR(expr)                  \
  do {                                                    \
    ::absl::Status qedfuse_status_ = (expr);              \
    if (!qedfuse_status_.ok()) co_return qedfuse_status_; \
  } while (0)
