// qed::L2Cache: the bounded, write-through cache of L2 tables (QEMU's qed-l2-cache.c).
//
// Invariants:
//  - Write-through: whoever changes a cached table writes the changed granules to the file
//    before dropping its reference, so an unreferenced entry always equals the disk (a failed
//    write is rolled back in memory by the writer). Eviction therefore never writes anything.
//  - Entries are keyed by the table's file offset. A new table enters the cache only once it is
//    on disk (the allocating writer inserts it before linking it from L1, while holding a
//    reference, so a concurrent lookup finds the same copy).
//  - An L2Ref pins its entry: eviction skips referenced entries, so a request may hold a table
//    across lookup, allocation and update. An entry erased while referenced stays alive until
//    its last L2Ref goes away.
//  - Two lookups that miss on the same table may both read it; Insert() keeps the first copy and
//    returns it to the second, whose copy is dropped.
// Policy: LRU (a hit moves the entry to the front), bounded by an entry count chosen by the
// driver from a byte budget. QEMU uses FIFO with 50 entries; LRU keeps a hot table resident
// under a sweep, and the byte budget lets small-table geometries cache their whole map
// (measured in tests/bench/qed_bench.cc). Not thread-safe: the event-loop thread owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "block/qed/qed_table.h"

namespace qedfuse::qed {

struct CachedL2 {
  uint64_t offset = 0;  // file offset of the table
  Table table;
};

// A counted reference to a cached table. Move-only; empty when default-constructed.
class L2Ref {
 public:
  L2Ref() = default;
  explicit L2Ref(std::shared_ptr<CachedL2> e) : e_(std::move(e)) {}
  L2Ref(L2Ref&&) noexcept = default;
  L2Ref& operator=(L2Ref&&) noexcept = default;
  L2Ref(const L2Ref&) = delete;
  L2Ref& operator=(const L2Ref&) = delete;

  explicit operator bool() const noexcept { return e_ != nullptr; }
  uint64_t offset() const { return e_->offset; }
  Table& table() const { return e_->table; }
  void Reset() noexcept { e_.reset(); }
  // Identity check for tests.
  const CachedL2* get() const noexcept { return e_.get(); }

 private:
  std::shared_ptr<CachedL2> e_;
};

class L2Cache {
 public:
  explicit L2Cache(std::size_t capacity);
  L2Cache(const L2Cache&) = delete;
  L2Cache& operator=(const L2Cache&) = delete;

  // Entry count for a table size: |budget_bytes| / table_bytes, clamped to [min, max].
  static std::size_t CapacityFor(uint64_t table_bytes, uint64_t budget_bytes,
                                 std::size_t min_entries, std::size_t max_entries);

  // A reference to the table at |offset|, or an empty ref on a miss. A hit becomes most recent.
  L2Ref Find(uint64_t offset);
  // Inserts |table| for |offset| and returns a reference to the cached copy. If the offset is
  // already cached, the existing entry wins and |table| is dropped. Evicts least recently used
  // unreferenced entries while over capacity (the cache may stay over capacity while everything
  // is referenced).
  L2Ref Insert(uint64_t offset, Table table);
  // Forgets the table at |offset| (outstanding refs keep their copy alive).
  void Erase(uint64_t offset);
  // Forgets everything (after a repair rewrote tables on disk).
  void Clear();

  std::size_t size() const noexcept { return map_.size(); }
  std::size_t capacity() const noexcept { return capacity_; }

  struct Stats {
    uint64_t hits = 0;
    uint64_t misses = 0;
    uint64_t evictions = 0;
  };
  const Stats& stats() const noexcept { return stats_; }

 private:
  using List = std::list<std::shared_ptr<CachedL2>>;
  void Evict();

  std::size_t capacity_;
  List lru_;  // front = most recently used
  absl::flat_hash_map<uint64_t, List::iterator> map_;
  Stats stats_;
};

}  // namespace qedfuse::qed
