// BlockBackend: alignment, splitting, EOF handling and draining in front of the driver graph.
//
// Requests are cut into pieces the driver accepts:
//  - a partial block at the head or tail (relative to request_alignment) goes through an
//    aligned bounce buffer; for writes that is a read-modify-write of the whole block;
//  - the aligned middle is split at max_transfer and passed through directly when the caller's
//    buffers satisfy memory_alignment, through a bounce buffer otherwise;
//  - a device whose length is not a multiple of the alignment gets an unaligned request that
//    ends exactly at length() (drivers accept that; there is nothing beyond to pad with).
// Any request that does RMW is serialising in the RequestTracker, so it neither overtakes nor is
// overtaken by an overlapping request: concurrent unaligned writes to one block never lose bytes.
#include "qedfuse/block/block_backend.h"

#include <algorithm>
#include <optional>

#include "block/request_tracker.h"
#include "qedfuse/base/align.h"
#include "qedfuse/base/macros.h"
#include "qedfuse/block/io_buffer.h"
#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/gate.h"

namespace qedfuse::block {
namespace {

// True if |iov| can go to the driver as is. With a memory alignment (O_DIRECT) every segment
// must start on it, and its length must be a multiple of the request alignment, as Linux checks.
bool MemoryAligned(const IoVector& iov, const BlockLimits& lim) {
  if (lim.memory_alignment <= 1) return true;
  uint64_t len_align = std::max(lim.memory_alignment, lim.request_alignment);
  for (const iovec& v : iov.segments()) {
    if (reinterpret_cast<uintptr_t>(v.iov_base) % lim.memory_alignment != 0) return false;
    if (v.iov_len % len_align != 0) return false;
  }
  return true;
}

struct Geometry {
  uint64_t align;
  uint64_t max_chunk;  // a multiple of align
  uint64_t length;
};

Geometry GeometryOf(const BlockDriver& d) {
  BlockLimits lim = d.limits();
  Geometry g;
  g.align = std::max<uint64_t>(lim.request_alignment, 1);
  g.max_chunk = std::max(AlignDown(std::max<uint64_t>(lim.max_transfer, 1), g.align), g.align);
  g.length = d.length();
  return g;
}

}  // namespace

struct BlockBackend::Impl {
  explicit Impl(std::unique_ptr<BlockDriver> r) : root(std::move(r)) {}

  // Reads [pos, pos + n) (one aligned piece, or a piece ending at length()) into |dst| at
  // |dst_off|, bouncing when the caller's memory is not suitably aligned.
  coro::Task<Result<void>> ReadPiece(uint64_t pos, uint64_t n, IoVector dst, std::size_t dst_off) {
    IoVector target = dst.Slice(dst_off, n);
    if (MemoryAligned(target, root->limits())) {
      co_return co_await root->Read(pos, target);
    }
    IoBuffer bounce(n);
    QEDFUSE_CO_TRY(co_await root->Read(pos, IoVector(bounce)));
    target.CopyFrom(0, bounce.data(), n);
    co_return Ok();
  }

  // Tracks the write [offset, end) against overlapping requests (serialising when it needs a
  // read-modify-write) and waits for older conflicting ones. A grow may complete while it waits;
  // it changes whether the tail is partial (a tail that ended at the old length now needs a
  // read-modify-write), so the request is tracked again with the new length. On return |g| is
  // the current geometry and |req| holds the range until the caller finishes.
  coro::Task<Result<void>> TrackWrite(uint64_t offset, uint64_t end, Geometry& g,
                                      std::optional<RequestTracker::Request>& req) {
    for (;;) {
      const bool rmw = offset % g.align != 0 || (end % g.align != 0 && end != g.length);
      const uint64_t track_begin = rmw ? AlignDown(offset, g.align) : offset;
      const uint64_t track_end = rmw ? std::min(AlignUp(end, g.align), g.length) : end;
      req.emplace(tracker, track_begin, track_end, rmw);
      co_await req->WaitForConflicts();
      const uint64_t before = g.length;
      g = GeometryOf(*root);
      if (end > g.length) co_return Unexpected(Errc::kOutOfRange);
      if (g.length == before) co_return Ok();
      req.reset();
    }
  }

  coro::Task<Result<void>> WritePiece(uint64_t pos, uint64_t n, IoVector src, std::size_t src_off) {
    IoVector source = src.Slice(src_off, n);
    if (MemoryAligned(source, root->limits())) {
      co_return co_await root->Write(pos, source);
    }
    IoBuffer bounce(n);
    source.CopyTo(0, bounce.data(), n);
    co_return co_await root->Write(pos, IoVector(bounce));
  }

  // Read-modify-write of the block [block, block_end) that contains part of the request. If
  // |src| is empty the bytes [pos, pos + n) become zeros, else they come from |src| at |src_off|.
  coro::Task<Result<void>> ModifyBlock(uint64_t block, uint64_t block_end, uint64_t pos, uint64_t n,
                                       IoVector src, std::size_t src_off) {
    uint64_t size = block_end - block;
    IoBuffer bounce(size);
    QEDFUSE_CO_TRY(co_await root->Read(block, IoVector(bounce)));
    if (src.empty()) {
      std::fill_n(bounce.data() + (pos - block), n, std::byte{0});
    } else {
      src.CopyTo(src_off, bounce.data() + (pos - block), n);
    }
    co_return co_await root->Write(block, IoVector(bounce));
  }

  std::unique_ptr<BlockDriver> root;
  coro::Gate gate;
  RequestTracker tracker;
  bool close_started = false;
  bool close_done = false;
  absl::Status close_status;
};

BlockBackend::BlockBackend(std::unique_ptr<BlockDriver> root)
    : impl_(std::make_unique<Impl>(std::move(root))) {}

BlockBackend::~BlockBackend() = default;

uint64_t BlockBackend::length() const { return impl_->root->length(); }
bool BlockBackend::read_only() const { return impl_->root->read_only(); }
BlockDriver& BlockBackend::driver() noexcept { return *impl_->root; }

coro::Task<Result<std::size_t>> BlockBackend::Read(uint64_t offset, IoVector iov) {
  Impl& s = *impl_;
  std::optional<coro::Gate::Holder> hold = s.gate.TryEnter();
  if (!hold) co_return Unexpected(Errc::kClosed);
  Geometry g = GeometryOf(*s.root);
  if (offset >= g.length || iov.empty()) co_return std::size_t{0};
  uint64_t len = std::min<uint64_t>(iov.size(), g.length - offset);
  uint64_t end = offset + len;

  RequestTracker::Request req(s.tracker, offset, end, /*serialising=*/false);
  co_await req.WaitForConflicts();
  g = GeometryOf(*s.root);  // a grow may have completed meanwhile; never shrinks

  uint64_t pos = offset;
  while (pos < end) {
    uint64_t remain = end - pos;
    if (pos % g.align != 0 || (remain < g.align && end != g.length)) {
      // Partial block at the head or tail: read the whole block into a bounce buffer.
      uint64_t block = AlignDown(pos, g.align);
      uint64_t block_end = std::min(block + g.align, g.length);
      uint64_t n = std::min(end, block_end) - pos;
      IoBuffer bounce(block_end - block);
      QEDFUSE_CO_TRY(co_await s.root->Read(block, IoVector(bounce)));
      iov.CopyFrom(pos - offset, bounce.data() + (pos - block), n);
      pos += n;
      continue;
    }
    uint64_t n = std::min(remain, g.max_chunk);
    if (end != g.length) n = AlignDown(n, g.align);
    QEDFUSE_CO_TRY(co_await s.ReadPiece(pos, n, iov, pos - offset));
    pos += n;
  }
  co_return static_cast<std::size_t>(len);
}

coro::Task<Result<void>> BlockBackend::Write(uint64_t offset, IoVector iov) {
  Impl& s = *impl_;
  std::optional<coro::Gate::Holder> hold = s.gate.TryEnter();
  if (!hold) co_return Unexpected(Errc::kClosed);
  if (s.root->read_only()) co_return Unexpected(Errc::kReadOnly);
  Geometry g = GeometryOf(*s.root);
  uint64_t len = iov.size();
  if (offset > g.length || len > g.length - offset) co_return Unexpected(Errc::kOutOfRange);
  if (len == 0) co_return Ok();
  const uint64_t end = offset + len;

  std::optional<RequestTracker::Request> req;
  QEDFUSE_CO_TRY(co_await s.TrackWrite(offset, end, g, req));

  uint64_t pos = offset;
  while (pos < end) {
    uint64_t remain = end - pos;
    if (pos % g.align != 0 || (remain < g.align && end != g.length)) {
      uint64_t block = AlignDown(pos, g.align);
      uint64_t block_end = std::min(block + g.align, g.length);
      uint64_t n = std::min(end, block_end) - pos;
      QEDFUSE_CO_TRY(co_await s.ModifyBlock(block, block_end, pos, n, iov, pos - offset));
      pos += n;
      continue;
    }
    uint64_t n = std::min(remain, g.max_chunk);
    if (end != g.length) n = AlignDown(n, g.align);
    QEDFUSE_CO_TRY(co_await s.WritePiece(pos, n, iov, pos - offset));
    pos += n;
  }
  co_return Ok();
}

coro::Task<Result<void>> BlockBackend::WriteZeroes(uint64_t offset, uint64_t len, ZeroFlags flags) {
  Impl& s = *impl_;
  std::optional<coro::Gate::Holder> hold = s.gate.TryEnter();
  if (!hold) co_return Unexpected(Errc::kClosed);
  if (s.root->read_only()) co_return Unexpected(Errc::kReadOnly);
  Geometry g = GeometryOf(*s.root);
  if (offset >= g.length || len == 0) co_return Ok();
  len = std::min(len, g.length - offset);
  const uint64_t end = offset + len;

  std::optional<RequestTracker::Request> req;
  QEDFUSE_CO_TRY(co_await s.TrackWrite(offset, end, g, req));

  uint64_t pos = offset;
  while (pos < end) {
    uint64_t remain = end - pos;
    if (pos % g.align != 0 || (remain < g.align && end != g.length)) {
      uint64_t block = AlignDown(pos, g.align);
      uint64_t block_end = std::min(block + g.align, g.length);
      uint64_t n = std::min(end, block_end) - pos;
      QEDFUSE_CO_TRY(co_await s.ModifyBlock(block, block_end, pos, n, IoVector(), 0));
      pos += n;
      continue;
    }
    uint64_t n = std::min(remain, g.max_chunk);
    if (end != g.length) n = AlignDown(n, g.align);
    QEDFUSE_CO_TRY(co_await s.root->WriteZeroes(pos, n, flags));
    pos += n;
  }
  co_return Ok();
}

coro::Task<Result<void>> BlockBackend::Flush() {
  Impl& s = *impl_;
  std::optional<coro::Gate::Holder> hold = s.gate.TryEnter();
  if (!hold) co_return Unexpected(Errc::kClosed);
  co_return co_await s.root->Flush();
}

coro::Task<Result<BlockStatus>> BlockBackend::GetStatus(uint64_t offset, uint64_t len) {
  Impl& s = *impl_;
  std::optional<coro::Gate::Holder> hold = s.gate.TryEnter();
  if (!hold) co_return Unexpected(Errc::kClosed);
  uint64_t length = s.root->length();
  if (offset >= length || len == 0) co_return Unexpected(Errc::kOutOfRange);
  len = std::min(len, length - offset);
  QEDFUSE_CO_ASSIGN(BlockStatus st, co_await s.root->GetStatus(offset, len));
  if (st.length == 0 || st.length > len) st.length = len;
  co_return st;
}

coro::Task<Result<void>> BlockBackend::Truncate(uint64_t new_length) {
  Impl& s = *impl_;
  std::optional<coro::Gate::Holder> hold = s.gate.TryEnter();
  if (!hold) co_return Unexpected(Errc::kClosed);
  if (s.root->read_only()) co_return Unexpected(Errc::kReadOnly);
  uint64_t old_length = s.root->length();
  if (new_length < old_length) co_return Unexpected(Errc::kNotSupported);
  if (new_length == old_length) co_return Ok();
  // Serialise against requests that touch the old end (an unaligned tail there is written up to
  // the old length only).
  uint64_t from = old_length > 0 ? old_length - 1 : 0;
  RequestTracker::Request req(s.tracker, from, UINT64_MAX, /*serialising=*/true);
  co_await req.WaitForConflicts();
  co_return co_await s.root->Truncate(new_length);
}

coro::Task<absl::Status> BlockBackend::Close() {
  Impl& s = *impl_;
  if (s.close_started) {
    // A concurrent Close: wait for the first one to finish and report its outcome.
    while (!s.close_done) co_await coro::EventLoop::Current().Yield();
    co_return s.close_status;
  }
  s.close_started = true;
  co_await s.gate.Close();
  s.close_status = co_await s.root->Close();
  s.close_done = true;
  co_return s.close_status;
}

}  // namespace qedfuse::block
