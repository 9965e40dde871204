// block::Child: padding, splitting, end-of-node handling and request tracking on one edge of the
// graph (see child.h for the rules).
//
// A write or zero-write is cut into pieces:
//  - a partial block at the head or tail goes through ModifyBlock (read the block, patch it,
//    write it back), under a serialising tracker request over the padded range;
//  - the aligned middle goes to the node in pieces of at most max_chunk bytes;
//  - on a pad_past_end node a tail block that reaches past length() is padded with zeros and the
//    node is cut back to the exact end afterwards; the request then serialises against
//    everything beyond its start, so no other request extends the node meanwhile. Only such a
//    request ever cuts back: any other may run while concurrent writes grow the node, so the
//    length it saw is no bound on the node's length when it is done;
//  - what a write registers is decided from the geometry, and decided again after its wait: a
//    size change that completed meanwhile may call for more (TrackingFor), and then the write is
//    registered again.
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

// How a write is registered in the tracker: its range, whether it serialises (a read-modify-write
// does), and whether it pads past the end of a pad_past_end node and cuts the node back after.
struct Child::Tracking {
  uint64_t begin;
  uint64_t end;
  bool serialising;
  bool cut_back;
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

Child::Tracking Child::TrackingFor(const Geometry& g, uint64_t offset, uint64_t end) {
  const uint64_t limit = g.pad ? UINT64_MAX : std::max(g.length, end);
  const bool rmw = offset % g.align != 0 || (end % g.align != 0 && end != limit);
  if (!rmw) return Tracking{offset, end, /*serialising=*/false, /*cut_back=*/false};
  Tracking t{AlignDown(offset, g.align), std::min(AlignUp(end, g.align), limit),
             /*serialising=*/true, /*cut_back=*/false};
  // The padded block reaches past the end only on a pad_past_end node; the node then grows to
  // the block's end and is cut back to max(length, end) afterwards.
  t.cut_back = g.pad && AlignUp(end, g.align) > std::max(g.length, end);
  // A read-modify-write that grows the node (or is cut back) owns everything past its start:
  // no other request may change the length meanwhile.
  if (t.end > g.length) t.end = UINT64_MAX;
  return t;
}

coro::Task<Result<void>> Child::WriteRange(uint64_t offset, uint64_t len, IoVector src, bool zero,
                                           ZeroFlags flags, Event event) {
  if (node_->read_only()) co_return Unexpected(Errc::kReadOnly);
  if (len == 0) co_return Ok();
  const uint64_t end = offset + len;
  assert(end > offset);

  // Track the request as the geometry requires, then look again after the wait: a size change
  // that completed meanwhile can change what the request needs (a tail that ended at the old
  // length now has bytes after it and needs a read-modify-write; a shorter node puts the padding
  // past the end). If the request held is not enough, it is tracked again.
  Geometry g = GeometryNow();
  Tracking need = TrackingFor(g, offset, end);
  std::optional<RequestTracker::Request> req;
  for (;;) {
    req.emplace(*tracker_, need.begin, need.end, need.serialising);
    co_await req->WaitForConflicts();
    g = GeometryNow();
    need = TrackingFor(g, offset, end);
    if (req->begin() <= need.begin && need.end <= req->end() &&
        (req->serialising() || !need.serialising)) {
      break;
    }
    req.reset();
  }
  const uint64_t limit = g.pad ? UINT64_MAX : std::max(g.length, end);  // where a tail may end
  // A request that cuts back holds everything past its start, serialising: nothing else changes
  // the length until it is done.
  assert(!need.cut_back || (req->serialising() && req->end() == UINT64_MAX));

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
  if (need.cut_back) {
    // Only this request's padding lies past max(length, end) (nothing else ran beyond its
    // start): cut it off. A request that padded nothing never truncates, since concurrent
    // writes may have grown the node past the length it saw.
    assert(node_->length() == AlignUp(end, g.align));
    QEDFUSE_CO_TRY(co_await node_->Truncate(std::max(g.length, end)));
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
  // tail there was written up to the old length only) or anything past it. The old end is
  // looked at again after the wait: if another size change moved it below the range held, the
  // request is registered again from there.
  std::optional<RequestTracker::Request> req;
  for (;;) {
    const Geometry g = GeometryNow();
    const uint64_t from = AlignDown(std::min(g.length, new_length), g.align);
    if (req && req->begin() <= from) break;
    req.emplace(*tracker_, from, UINT64_MAX, /*serialising=*/true);
    co_await req->WaitForConflicts();
  }
  Announce(event);
  co_return co_await node_->Truncate(new_length);
}

coro::Task<absl::Status> Child::Close() {
  assert(tracker_->in_flight() == 0);
  co_return co_await node_->Close();
}

}  // namespace qedfuse::block
