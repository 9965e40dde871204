// block::Child: the one edge between a node and the node below it (QEMU's BdrvChild with the
// request handling of block/io.c). Every path from one node to another goes through a Child:
// BlockBackend to the root of the graph, a format driver to its image file and to its backing
// file. The Child owns the node below (or, for in-place checks, borrows it).
//
// Callers may pass any offset, length and memory; the Child turns a request into calls that
// keep the BlockDriver contract (block_driver.h):
//  - padding: a partial block at the head or tail (relative to the node's request_alignment) is
//    read-modify-written through an aligned bounce buffer; such a request is *serialising* in
//    the Child's RequestTracker, so it neither overtakes nor is overtaken by an overlapping
//    request (concurrent unaligned writes into one block never lose each other's bytes). Only
//    read-modify-write serialises;
//  - splitting: pieces are at most max_transfer long (rounded down to the alignment);
//  - the end of the node: bytes past length() read as zeros without reaching the node. A write
//    may end past length() and grow the node (protocol nodes do; format nodes refuse). A tail
//    that ends exactly at (or beyond) length() is passed unaligned, since nothing lies beyond
//    to pad with, except on nodes with BlockLimits::pad_past_end (a host file under O_DIRECT),
//    where the tail block is padded past the end and the node is cut back to the exact end;
//    such a write serialises against everything past its start, so that no concurrent write
//    grows the node between the padding and the cut-back, and no other write ever cuts back;
//  - debug events: the event a call carries is announced to the node (BlockDriver::Annotate)
//    right before the call's first I/O of its kind (a write's first write, after the read of a
//    read-modify-write), so fault injection sees it on exactly that call.
//  - memory: a piece whose buffers do not meet the node's memory_alignment (O_DIRECT) goes
//    through an aligned bounce buffer.
// Everything runs on the event-loop thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "qedfuse/base/result.h"
#include "qedfuse/block/block_driver.h"
#include "qedfuse/block/debug_event.h"
#include "qedfuse/block/io_vector.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::block {

class RequestTracker;

class Child {
 public:
  // What a call is for, announced to the node before its first I/O (none: nothing announced).
  using Event = std::optional<DebugEvent>;

  explicit Child(std::unique_ptr<BlockDriver> node);
  // An edge to a node owned elsewhere (a check or test that works on a node in place).
  explicit Child(BlockDriver& node);
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  BlockDriver& node() noexcept { return *node_; }
  const BlockDriver& node() const noexcept { return *node_; }
  uint64_t length() const { return node_->length(); }
  bool read_only() const { return node_->read_only(); }
  BlockLimits limits() const { return node_->limits(); }
  uint64_t AllocatedBytes() const { return node_->AllocatedBytes(); }
  // Requests registered in the tracker right now (tests).
  std::size_t in_flight() const noexcept;

  // Reads all of |iov| at |offset|; bytes past length() read as zeros.
  coro::Task<Result<void>> Read(uint64_t offset, IoVector iov, Event event = std::nullopt);
  // Writes all of |iov| at |offset|. Errc::kReadOnly on a read-only node.
  coro::Task<Result<void>> Write(uint64_t offset, IoVector iov, Event event = std::nullopt);
  // Makes [offset, offset + len) read as zeros (the node's WriteZeroes for the aligned middle).
  coro::Task<Result<void>> WriteZeroes(uint64_t offset, uint64_t len, ZeroFlags flags,
                                       Event event = std::nullopt);
  coro::Task<Result<void>> Flush(Event event = std::nullopt);
  // The node's answer, unchanged (callers bound the range).
  coro::Task<Result<BlockStatus>> GetStatus(uint64_t offset, uint64_t len);
  // Serialised against every request that touches the old or new end.
  coro::Task<Result<void>> Truncate(uint64_t new_length, Event event = std::nullopt);
  // Closes the node (the caller has drained its own requests first).
  coro::Task<absl::Status> Close();

 private:
  struct Geometry;
  struct Piece;
  struct Tracking;
  Geometry GeometryNow() const;
  // What a write of [offset, end) needs from the tracker on a node of geometry |g|.
  static Tracking TrackingFor(const Geometry& g, uint64_t offset, uint64_t end);
  static Piece NextPiece(const Geometry& g, uint64_t pos, uint64_t end, uint64_t limit);
  // Announces |event| to the node, once: the next I/O is the one it is about.
  void Announce(Event& event);
  coro::Task<Result<void>> ModifyBlock(uint64_t block, uint64_t block_end, uint64_t pos, uint64_t n,
                                       IoVector src, std::size_t src_off, Event& event);
  // The common body of Write (|zero| false) and WriteZeroes (|zero| true).
  coro::Task<Result<void>> WriteRange(uint64_t offset, uint64_t len, IoVector src, bool zero,
                                      ZeroFlags flags, Event event);

  std::unique_ptr<BlockDriver> owned_;  // null for a borrowed node
  BlockDriver* node_;
  std::unique_ptr<RequestTracker> tracker_;
};

}  // namespace qedfuse::block
