// BlockBackend: the range checks and the draining in front of the graph's root Child.
//
// The checks are the user-facing device semantics: a read stops at the end (short count), a
// write or truncate never shrinks or passes the end; a grow is Truncate's job. Everything below
// (read-only refusal, alignment, splitting, tracking) is the Child's.
#include "qedfuse/block/block_backend.h"

#include <algorithm>
#include <optional>

#include "qedfuse/base/macros.h"
#include "qedfuse/block/child.h"
#include "qedfuse/coro/gate.h"
#include "qedfuse/coro/join.h"

namespace qedfuse::block {

struct BlockBackend::Impl {
  explicit Impl(std::unique_ptr<BlockDriver> r) : root(std::move(r)) {}

  Child root;
  coro::Gate gate;
  bool close_started = false;
  absl::Status close_status;
  coro::Join closing;  // 1 while the first Close() runs; later calls wait on it
};

BlockBackend::BlockBackend(std::unique_ptr<BlockDriver> root)
    : impl_(std::make_unique<Impl>(std::move(root))) {}

BlockBackend::~BlockBackend() = default;

uint64_t BlockBackend::length() const { return impl_->root.length(); }
bool BlockBackend::read_only() const { return impl_->root.read_only(); }
BlockDriver& BlockBackend::driver() noexcept { return impl_->root.node(); }

coro::Task<Result<std::size_t>> BlockBackend::Read(uint64_t offset, IoVector iov) {
  Impl& s = *impl_;
  std::optional<coro::Gate::Holder> hold = s.gate.TryEnter();
  if (!hold) co_return Unexpected(Errc::kClosed);
  const uint64_t length = s.root.length();
  if (offset >= length || iov.empty()) co_return std::size_t{0};
  const uint64_t len = std::min<uint64_t>(iov.size(), length - offset);
  QEDFUSE_CO_TRY(co_await s.root.Read(offset, iov.Slice(0, len)));
  co_return static_cast<std::size_t>(len);
}

coro::Task<Result<void>> BlockBackend::Write(uint64_t offset, IoVector iov) {
  Impl& s = *impl_;
  std::optional<coro::Gate::Holder> hold = s.gate.TryEnter();
  if (!hold) co_return Unexpected(Errc::kClosed);
  const uint64_t length = s.root.length();  // never shrinks, so the check holds when it runs
  if (offset > length || iov.size() > length - offset) co_return Unexpected(Errc::kOutOfRange);
  co_return co_await s.root.Write(offset, iov);
}

coro::Task<Result<void>> BlockBackend::WriteZeroes(uint64_t offset, uint64_t len, ZeroFlags flags) {
  Impl& s = *impl_;
  std::optional<coro::Gate::Holder> hold = s.gate.TryEnter();
  if (!hold) co_return Unexpected(Errc::kClosed);
  const uint64_t length = s.root.length();
  if (offset >= length || len == 0) {
    if (s.root.read_only()) co_return Unexpected(Errc::kReadOnly);
    co_return Ok();
  }
  co_return co_await s.root.WriteZeroes(offset, std::min(len, length - offset), flags);
}

coro::Task<Result<void>> BlockBackend::Flush() {
  Impl& s = *impl_;
  std::optional<coro::Gate::Holder> hold = s.gate.TryEnter();
  if (!hold) co_return Unexpected(Errc::kClosed);
  co_return co_await s.root.Flush();
}

coro::Task<Result<BlockStatus>> BlockBackend::GetStatus(uint64_t offset, uint64_t len) {
  Impl& s = *impl_;
  std::optional<coro::Gate::Holder> hold = s.gate.TryEnter();
  if (!hold) co_return Unexpected(Errc::kClosed);
  const uint64_t length = s.root.length();
  if (offset >= length || len == 0) co_return Unexpected(Errc::kOutOfRange);
  len = std::min(len, length - offset);
  QEDFUSE_CO_ASSIGN(BlockStatus st, co_await s.root.GetStatus(offset, len));
  if (st.length == 0 || st.length > len) st.length = len;
  co_return st;
}

coro::Task<Result<void>> BlockBackend::Truncate(uint64_t new_length) {
  Impl& s = *impl_;
  std::optional<coro::Gate::Holder> hold = s.gate.TryEnter();
  if (!hold) co_return Unexpected(Errc::kClosed);
  if (s.root.read_only()) co_return Unexpected(Errc::kReadOnly);
  const uint64_t old_length = s.root.length();
  if (new_length < old_length) co_return Unexpected(Errc::kNotSupported);
  if (new_length == old_length) co_return Ok();
  co_return co_await s.root.Truncate(new_length);
}

coro::Task<absl::Status> BlockBackend::Close() {
  Impl& s = *impl_;
  if (s.close_started) {
    // A concurrent Close: wait for the first one to finish and report its outcome.
    co_await s.closing.Wait();
    co_return s.close_status;
  }
  s.close_started = true;
  s.closing.Add();
  co_await s.gate.Close();
  s.close_status = co_await s.root.Close();
  s.closing.Done();
  co_return s.close_status;
}

}  // namespace qedfuse::block
