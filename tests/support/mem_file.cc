// MemFile: in-memory protocol node with a durable/volatile crash model (see mem_file.h).
#include "support/mem_file.h"

#include <algorithm>
#include <cerrno>
#include <random>

#include "qedfuse/coro/event_loop.h"

namespace qedfuse::test {
namespace {

void ApplyWrite(std::vector<std::byte>& img, uint64_t offset, const std::byte* data, uint64_t len) {
  if (offset + len > img.size()) img.resize(offset + len);
  std::copy_n(data, len, img.begin() + static_cast<std::ptrdiff_t>(offset));
}

void ApplyZero(std::vector<std::byte>& img, uint64_t offset, uint64_t len) {
  if (offset + len > img.size()) img.resize(offset + len);
  std::fill_n(img.begin() + static_cast<std::ptrdiff_t>(offset), len, std::byte{0});
}

void ApplyPending(std::vector<std::byte>& img, const MemFileState::Pending& p) {
  switch (p.kind) {
    case MemIoRecord::kWrite:
      ApplyWrite(img, p.offset, p.data.data(), p.data.size());
      break;
    case MemIoRecord::kZero:
      ApplyZero(img, p.offset, p.len);
      break;
    case MemIoRecord::kTruncate:
      img.resize(p.len);
      break;
    default:
      break;
  }
}

}  // namespace

std::shared_ptr<MemFileState> MemFileState::Create(uint64_t size) {
  return FromBytes(std::vector<std::byte>(size));
}

std::shared_ptr<MemFileState> MemFileState::FromBytes(std::vector<std::byte> bytes) {
  auto s = std::make_shared<MemFileState>();
  s->durable = bytes;
  s->current = std::move(bytes);
  return s;
}

std::vector<std::byte> MemFileState::CrashImage(uint64_t seed) const {
  std::mt19937_64 rng(seed);
  std::vector<const Pending*> kept;
  for (const Pending& p : pending) {
    if (rng() & 1) kept.push_back(&p);
  }
  std::shuffle(kept.begin(), kept.end(), rng);
  std::vector<std::byte> img = durable;
  for (const Pending* p : kept) ApplyPending(img, *p);
  return img;
}

void MemFileState::Crash(uint64_t seed) {
  durable = CrashImage(seed);
  current = durable;
  pending.clear();
}

void MemFileState::CrashDropAll() {
  current = durable;
  pending.clear();
}

void MemFileState::MarkDurable() {
  durable = current;
  pending.clear();
}

MemFile::MemFile(std::shared_ptr<MemFileState> state) : MemFile(std::move(state), Options()) {}

MemFile::MemFile(std::shared_ptr<MemFileState> state, Options options)
    : state_(std::move(state)), options_(options) {}

block::BlockLimits MemFile::limits() const {
  block::BlockLimits l;
  l.request_alignment = options_.request_alignment;
  l.memory_alignment = options_.memory_alignment;
  l.max_transfer = options_.max_transfer;
  return l;
}

Result<void> MemFile::CheckAlignment(uint64_t offset, const block::IoVector* iov,
                                     uint64_t len) const {
  uint64_t a = options_.request_alignment;
  if (offset % a != 0) return Unexpected(ErrnoCode(EINVAL));
  // A request may end unaligned only at the end of the file.
  if (len % a != 0 && offset + len != state_->size()) return Unexpected(ErrnoCode(EINVAL));
  if (len > options_.max_transfer) return Unexpected(ErrnoCode(EINVAL));
  if (iov != nullptr && options_.memory_alignment > 1) {
    for (const iovec& v : iov->segments()) {
      if (reinterpret_cast<uintptr_t>(v.iov_base) % options_.memory_alignment != 0) {
        return Unexpected(ErrnoCode(EINVAL));
      }
    }
  }
  return Ok();
}

coro::Task<void> MemFile::Latency() {
  for (int i = 0; i < options_.io_yields; ++i) {
    co_await coro::EventLoop::Current().Yield();
  }
}

coro::Task<Result<void>> MemFile::Read(uint64_t offset, block::IoVector iov) {
  state_->log.push_back({MemIoRecord::kRead, offset, iov.size()});
  ++state_->reads;
  Result<void> ok = CheckAlignment(offset, &iov, iov.size());
  if (!ok) co_return ok;
  // Copy at issue time: a concurrent write that completes later is not seen.
  std::vector<std::byte> data(iov.size());
  const std::vector<std::byte>& img = state_->current;
  if (offset < img.size()) {
    uint64_t n = std::min<uint64_t>(iov.size(), img.size() - offset);
    std::copy_n(img.begin() + static_cast<std::ptrdiff_t>(offset), n, data.begin());
  }
  ++in_flight_;
  max_in_flight_ = std::max(max_in_flight_, in_flight_);
  co_await Latency();
  --in_flight_;
  iov.CopyFrom(0, data.data(), data.size());
  co_return Ok();
}

coro::Task<Result<void>> MemFile::Write(uint64_t offset, block::IoVector iov) {
  state_->log.push_back({MemIoRecord::kWrite, offset, iov.size()});
  ++state_->writes;
  if (options_.read_only) co_return Unexpected(Errc::kReadOnly);
  Result<void> ok = CheckAlignment(offset, &iov, iov.size());
  if (!ok) co_return ok;
  if (!options_.grow_on_write && offset + iov.size() > state_->size()) {
    co_return Unexpected(ErrnoCode(ENOSPC));
  }
  std::vector<std::byte> data(iov.size());
  iov.CopyTo(0, data.data(), data.size());
  ++in_flight_;
  max_in_flight_ = std::max(max_in_flight_, in_flight_);
  co_await Latency();
  --in_flight_;
  ApplyWrite(state_->current, offset, data.data(), data.size());
  state_->bytes_written += data.size();
  state_->pending.push_back({MemIoRecord::kWrite, offset, std::move(data), 0});
  co_return Ok();
}

coro::Task<Result<void>> MemFile::WriteZeroes(uint64_t offset, uint64_t len,
                                              block::ZeroFlags /*flags*/) {
  state_->log.push_back({MemIoRecord::kZero, offset, len});
  ++state_->zeroes;
  if (options_.read_only) co_return Unexpected(Errc::kReadOnly);
  Result<void> ok = CheckAlignment(offset, nullptr, std::min(len, options_.max_transfer));
  if (!ok) co_return ok;
  ++in_flight_;
  max_in_flight_ = std::max(max_in_flight_, in_flight_);
  co_await Latency();
  --in_flight_;
  ApplyZero(state_->current, offset, len);
  state_->pending.push_back({MemIoRecord::kZero, offset, {}, len});
  co_return Ok();
}

coro::Task<Result<void>> MemFile::Flush() {
  state_->log.push_back({MemIoRecord::kFlush, 0, 0});
  ++in_flight_;
  max_in_flight_ = std::max(max_in_flight_, in_flight_);
  // Only what completed before the flush started is guaranteed durable.
  std::size_t covered = state_->pending.size();
  co_await Latency();
  --in_flight_;
  ++state_->flushes;
  for (std::size_t i = 0; i < covered && i < state_->pending.size(); ++i) {
    ApplyPending(state_->durable, state_->pending[i]);
  }
  state_->pending.erase(state_->pending.begin(),
                        state_->pending.begin() +
                            static_cast<std::ptrdiff_t>(std::min(covered, state_->pending.size())));
  co_return Ok();
}

coro::Task<Result<void>> MemFile::Truncate(uint64_t new_length) {
  state_->log.push_back({MemIoRecord::kTruncate, new_length, 0});
  if (options_.read_only) co_return Unexpected(Errc::kReadOnly);
  state_->current.resize(new_length);
  state_->pending.push_back({MemIoRecord::kTruncate, 0, {}, new_length});
  co_return Ok();
}

coro::Task<absl::Status> MemFile::Close() {
  if (!options_.read_only) {
    Result<void> r = co_await Flush();
    if (!r) co_return ToStatus(r.error(), "memfile flush");
  }
  co_return absl::OkStatus();
}

std::vector<std::byte> Snapshot(const MemFileState& state) { return state.current; }

}  // namespace qedfuse::test
