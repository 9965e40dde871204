// qed::Table and qed::TableIo: L1/L2 tables in memory and their transfer to and from the image
// file (QEMU's qed-table.c).
//
// A Table keeps the on-disk little-endian bytes in a 4 KiB-aligned IoBuffer, so a whole table or
// a few sectors of it can be written straight from memory (also with O_DIRECT) and Get()/Set()
// are plain loads and stores on little-endian hosts. TableIo writes entry updates in granules of
// max(512, child request_alignment, child memory_alignment) bytes: QEMU writes 512-byte sectors;
// we never write less than the child accepts. The Child splits transfers at the node's
// max_transfer, so callers may pass whole tables or multi-cluster runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "block/qed/qed_format.h"
#include "qedfuse/base/endian.h"
#include "qedfuse/base/result.h"
#include "qedfuse/block/child.h"
#include "qedfuse/block/debug_event.h"
#include "qedfuse/block/io_buffer.h"
#include "qedfuse/block/io_vector.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::qed {

// One L1 or L2 table: |nelems| u64 entries, stored little-endian.
class Table {
 public:
  Table() = default;
  // A zero-filled table (every entry 0 = unallocated).
  explicit Table(uint64_t nelems) : buf_(nelems * 8, /*zero=*/true), nelems_(nelems) {}
  Table(Table&&) noexcept = default;
  Table& operator=(Table&&) noexcept = default;

  uint64_t size() const noexcept { return nelems_; }
  uint64_t bytes() const noexcept { return nelems_ * 8; }
  uint64_t Get(uint64_t i) const { return LoadLE64(buf_.data() + i * 8); }
  void Set(uint64_t i, uint64_t v) { StoreLE64(buf_.data() + i * 8, v); }

  block::IoBuffer& buffer() noexcept { return buf_; }
  const block::IoBuffer& buffer() const noexcept { return buf_; }

  std::vector<uint64_t> ToVector() const;
  void FromVector(const std::vector<uint64_t>& v);  // precondition: v.size() == size()

 private:
  block::IoBuffer buf_;
  uint64_t nelems_ = 0;
};

class TableIo {
 public:
  TableIo(block::Child& file, const Geometry& geo);

  // Smallest unit of a partial table write: max(512, child request/memory alignment), capped at
  // the table size.
  uint64_t granule() const noexcept { return granule_; }

  // Reads the whole table at |offset| into |table| (which must have table_nelems entries).
  // The I/O carries |event|.
  coro::Task<Result<void>> Read(uint64_t offset, Table& table, block::DebugEvent event);
  // Writes the whole table.
  coro::Task<Result<void>> Write(uint64_t offset, const Table& table, block::DebugEvent event);
  // Writes the granules of the table that hold entries [first, first + n).
  coro::Task<Result<void>> WriteEntries(uint64_t offset, const Table& table, uint64_t first,
                                        uint64_t n, block::DebugEvent event);

 private:
  block::Child& file_;
  uint64_t table_bytes_;
  uint64_t granule_;
};

}  // namespace qedfuse::qed
