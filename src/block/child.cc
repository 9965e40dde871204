// block::Child: padding, splitting, end-of-node handling and request tracking on one edge of the
// graph (see child.h for the rules).
//
// A write or zero-write is cut into pieces:
//  - a partial block at the head or tail goes through ModifyBlock (read the block, patch it,
//    write it back), under a serialising tracker request over the padded range;
//  - the aligned middle goes to the node in pieces of at most max_chunk bytes;
//  - on a pad_past_end node a tail block that reaches past length() is padded with zeros and the
//    node is cut back to the exact end afterwards; the request then serialises against
//    everything beyond its start, so no other request extends the node meanwhile.
// Reads are tracked too (non-serialising), so they wait for an overlapping read-modify-write.
#include "qedfuse/block/child.h"

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <optional>
#include <utility>

#include "block/request_tracker.h"
#include "qedfuse/base/align.h"
#include "qedfuse/base/macros.h"
#include "qedfuse/block/io_buffer.h"

namespace qedfuse::block {
struct Child::Geometry {
  uint64_t align;      // request alignment (>= 1)
  uint64_t max_chunk;  // largest piece, a multiple of align
  uint64_t length;     // the node's length now
  bool pad;            // BlockLimits::pad_past_end
  BlockLimits limits;
};

// The next piece of a request at |pos| (< |end|): a partial block (head, or a tail that may not
// end unaligned because |end| != |limit|) to bounce or read-modify-write whole, or an aligned
// run of at most max_chunk bytes that goes to the node directly.
struct Child::Piece {
  bool partial;
  uint64_t block;  // partial: the block [block, block_end) that holds the piece
  uint64_t block_end;
  uint64_t n;  // bytes of the request in this piece
};

Child::Piece Child::NextPiece(const Geometry& g, uint64_t pos, uint64_t end, uint64_t limit) {
  const uint64_t remain = end - pos;
  if (pos % g.align != 0 || (remain < g.align && end != limit)) {
    const uint64_t block = AlignDown(pos, g.align);
    const uint64_t block_end = std::min(block + g.align, limit);
    return Piece{true, block, block_end, std::min(end, block_end) - pos};
  }
  uint64_t n = std::min(remain, g.max_chunk);
  if (end != limit) n = AlignDown(n, g.align);
  return Piece{false, pos, pos + n, n};
}

Child::Child(std::unique_ptr<BlockDriver> node)
    : owned_(std::move(node)), node_(owned_.get()), tracker_(std::make_unique<RequestTracker>()) {
  assert(node_ != nullptr);
}

Child::Child(BlockDriver& node) : node_(&node), tracker_(std::make_unique<RequestTracker>()) {}

Child::~Child() = default;

std::size_t Child::in_flight() const noexcept { return tracker_->in_flight(); }

void Child::Announce(Event& event) {
  if (event) node_->Annotate(*std::exchange(event, std::nullopt));
}

Child::Geometry Child::GeometryNow() const {
  const BlockLimits lim = node_->limits();
  Geometry g;
  g.align = std::max<uint64_t>(lim.request_alignment, 1);
  g.max_chunk = std::max(AlignDown(std::max<uint64_t>(lim.max_transfer, 1), g.align), g.align);
  g.length = node_->length();
  g.pad = lim.pad_past_end;
  g.limits = lim;
  return g;
}

coro::Task<Result<void>> Child::Read(uint64_t offset, IoVector iov, Event event) {
  if (iov.empty()) co_return Ok();
  const uint64_t end = offset + iov.size();
  RequestTracker::Request req(*tracker_, offset, end, /*serialising=*/false);
  co_await req.WaitForConflicts();
  Announce(event);

  const Geometry g = GeometryNow();  // after the wait: a grow may have completed meanwhile
  const uint64_t data_end = std::min(end, g.length);
  if (data_end <= offset) {
    iov.ZeroAll();
    co_return Ok();
  }
  if (data_end < end) iov.Zero(data_end - offset, end - data_end);
  // A pad_past_end node reads zeros past its end, so its tail block is read whole; any other
  // node gets a tail that ends exactly at its length.
  const uint64_t limit = g.pad ? UINT64_MAX : g.length;
  uint64_t pos = offset;
  while (pos < data_end) {
    const Piece p = NextPiece(g, pos, data_end, limit);
    if (p.partial) {  // read the whole block into a bounce buffer
      IoBuffer bounce(p.block_end - p.block);
      QEDFUSE_CO_TRY(co_await node_->Read(p.block, IoVector(bounce)));
      iov.CopyFrom(pos - offset, bounce.data() + (pos - p.block), p.n);
      pos += p.n;
      continue;
    }
    const uint64_t n = p.n;
    const IoVector target = iov.Slice(pos - offset, n);
    if (MeetsLimits(pos, target, g.limits)) {
      QEDFUSE_CO_TRY(co_await node_->Read(pos, target));
    } else {  // the caller's memory does not suit the node (O_DIRECT): bounce
      IoBuffer bounce(n);
      QEDFUSE_CO_TRY(co_await node_->Read(pos, IoVector(bounce)));
      target.CopyFrom(0, bounce.data(), n);
    }
    pos += n;
  }
  co_return Ok();
}

coro::Task<Result<void>> Child::ModifyBlock(uint64_t block, uint64_t block_end, uint64_t pos,
                                            uint64_t n, IoVector src, std::size_t src_off,
                                            Event& event) {
  IoBuffer bounce(block_end - block);
  QEDFUSE_CO_TRY(co_await node_->Read(block, IoVector(bounce)));
  if (src.empty()) {
    std::fill_n(bounce.data() + (pos - block), n, std::byte{0});
  } else {
    src.CopyTo(src_off, bounce.data() + (pos - block), n);
  }
  Announce(event);
  co_return co_await node_->Write(block, IoVector(bounce));
}

coro::Task<Result<void>> Child::WriteRange(uint64_t offset, uint64_t len, IoVector src, bool zero,
                                           ZeroFlags flags, Event event) {
  if (node_->read_only()) co_return Unexpected(Errc::kReadOnly);
  if (len == 0) co_return Ok();
  const uint64_t end = offset + len;
  assert(end > offset);

  // Track the request, serialising when it needs a read-modify-write. A grow that completes
  // while it waits can change whether the tail is partial (a tail that ended at the old length
  // now has bytes after it), so then the request is tracked again.
  Geometry g;
  uint64_t limit;  // where a tail may end unaligned
  std::optional<RequestTracker::Request> req;
  for (;;) {
    g = GeometryNow();
    limit = g.pad ? UINT64_MAX : std::max(g.length, end);
    const bool rmw = offset % g.align != 0 || (end % g.align != 0 && end != limit);
    uint64_t track_begin = offset;
    uint64_t track_end = end;
    if (rmw) {
      track_begin = AlignDown(offset, g.align);
      track_end = std::min(AlignUp(end, g.align), limit);
      // Padding past the end is cut back afterwards: nothing may extend the node meanwhile.
      if (track_end > g.length) track_end = UINT64_MAX;
    }
    req.emplace(*tracker_, track_begin, track_end, rmw);
    co_await req->WaitForConflicts();
    const Geometry now = GeometryNow();
    if (now.length == g.length || g.pad) {
      g = now;
      break;
    }
    req.reset();
  }
  const uint64_t exact_end = std::max(g.length, end);  // the node's length when done

  // The event goes with the first write to the node (after the read of a read-modify-write).
  uint64_t pos = offset;
  while (pos < end) {
    const Piece p = NextPiece(g, pos, end, limit);
    if (p.partial) {
      QEDFUSE_CO_TRY(co_await ModifyBlock(p.block, p.block_end, pos, p.n, zero ? IoVector() : src,
                                          pos - offset, event));
      pos += p.n;
      continue;
    }
    const uint64_t n = p.n;
    Announce(event);
    if (zero) {
      QEDFUSE_CO_TRY(co_await node_->WriteZeroes(pos, n, flags));
    } else if (const IoVector source = src.Slice(pos - offset, n);
               MeetsLimits(pos, source, g.limits)) {
      QEDFUSE_CO_TRY(co_await node_->Write(pos, source));
    } else {  // the caller's memory does not suit the node (O_DIRECT): bounce
      IoBuffer bounce(n);
      source.CopyTo(0, bounce.data(), n);
      QEDFUSE_CO_TRY(co_await node_->Write(pos, IoVector(bounce)));
    }
    pos += n;
  }
  if (g.pad && node_->length() > exact_end) {
    // The padding extended the node past the requested end: cut it back.
    QEDFUSE_CO_TRY(co_await node_->Truncate(exact_end));
  }
  co_return Ok();
}

coro::Task<Result<void>> Child::Write(uint64_t offset, IoVector iov, Event event) {
  co_return co_await WriteRange(offset, iov.size(), iov, /*zero=*/false, ZeroFlags::kNone, event);
}

coro::Task<Result<void>> Child::WriteZeroes(uint64_t offset, uint64_t len, ZeroFlags flags,
                                            Event event) {
  co_return co_await WriteRange(offset, len, IoVector(), /*zero=*/true, flags, event);
}

coro::Task<Result<void>> Child::Flush(Event event) {
  Announce(event);
  co_return co_await node_->Flush();
}

coro::Task<Result<BlockStatus>> Child::GetStatus(uint64_t offset, uint64_t len) {
  co_return co_await node_->GetStatus(offset, len);
}

coro::Task<Result<void>> Child::Truncate(uint64_t new_length, Event event) {
  if (node_->read_only()) co_return Unexpected(Errc::kReadOnly);
  // Serialise against every request that touches the block of the old or new end (an unaligned
  // tail there was written up to the old length only).
  const Geometry g = GeometryNow();
  const uint64_t from = AlignDown(std::min(g.length, new_length), g.align);
  RequestTracker::Request req(*tracker_, from, UINT64_MAX, /*serialising=*/true);
  co_await req.WaitForConflicts();
  Announce(event);
  co_return co_await node_->Truncate(new_length);
}

coro::Task<absl::Status> Child::Close() {
  assert(tracker_->in_flight() == 0);
  co_return co_await node_->Close();
}

}  // namespace qedfuse::block
