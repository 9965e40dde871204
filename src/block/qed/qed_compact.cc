// Leak compaction (see qed_compact.h for the crash-safety argument and the choice of moves).
//
// Each round looks at the image as it is on disk: the free clusters below the last used one
// (holes), and the units (data clusters, L2 tables, the fixed L1 table) near the end of the file,
// found by scanning L1 and the L2 tables. It plans a batch of moves from the end of the file into
// the lowest holes, carries the batch out (copy, flush, repoint, flush), and starts over until no
// hole is left below the last used cluster.
#include "block/qed/qed_compact.h"

#include <algorithm>
#include <cassert>
#include <map>
#include <optional>
#include <set>

#include "block/qed/qed_table.h"
#include "qedfuse/base/align.h"
#include "qedfuse/base/macros.h"
#include "qedfuse/block/debug_event.h"
#include "qedfuse/block/io_buffer.h"

namespace qedfuse::qed {
namespace {

using block::DebugEvent;
using block::IoBuffer;
using block::IoVector;

struct Unit {
  enum Kind { kData, kTable, kFixed } kind = kData;
  uint64_t start = 0;   // first cluster
  uint64_t n = 1;       // clusters
  uint64_t l2_off = 0;  // kData: file offset of the table holding its entry
  uint64_t index = 0;   // kData: entry index in that table; kTable: L1 index
};
using Units = std::map<uint64_t, Unit>;  // by first cluster

struct Move {
  Unit unit;
  uint64_t dst = 0;  // first cluster of the new place
};

class Compactor {
 public:
  Compactor(block::Child& file, const Header& h, const Geometry& geo, std::vector<uint64_t>& l1,
            UsedClusters& used)
      : file_(file), h_(h), geo_(geo), l1_(l1), used_(used) {}

  coro::Task<Result<CompactReport>> Run() {
    // Cluster 0 holds the header whatever header_size says (QEMU accepts header_size 0), so it
    // is never a hole: a data cluster moved there would have its L2 entry set to 0, which reads
    // as unallocated, and its first bytes overwritten by the next header write.
    const uint64_t first =
        std::min<uint64_t>(std::max<uint64_t>(geo_.header_size, 1), used_.size());
    // Every round moves at least one unit lower (or parks a table to do so next round), so the
    // number of rounds is bounded by the clusters involved; the cap only guards against a bug.
    const uint64_t max_rounds = 4 * (used_.size() + geo_.table_size) + 16;
    // A hole is free only if the entry change that freed it is durable: the bitmap was built
    // from what the file holds now, which may include unflushed entry writes (a zero write's
    // freeing entry, still pending, must not have its old cluster overwritten).
    QEDFUSE_CO_TRY(co_await file_.Flush(DebugEvent::kFlush));
    for (uint64_t round = 0; round < max_rounds; ++round) {
      const uint64_t end = std::max(used_.end(), first);
      std::vector<uint64_t> holes = Holes(first, end);
      if (holes.empty()) break;
      // Once compact, the file ends at |target|; units above it move (a table may straddle it).
      const uint64_t target = end - holes.size();
      const uint64_t lo = std::max(first, target > geo_.table_size ? target - geo_.table_size : 0);
      Units units;
      QEDFUSE_CO_TRY(co_await ScanUnits(lo, units));
      std::vector<Move> plan = Plan(units, holes, lo, end);
      if (plan.empty()) {
        Units all;
        QEDFUSE_CO_TRY(co_await ScanUnits(first, all));
        plan = Consolidate(all, holes, first, end);
      }
      if (plan.empty()) break;  // only the fixed L1 table is left above the holes
      QEDFUSE_CO_TRY(co_await Execute(plan));
    }
    const uint64_t end = std::max(used_.end(), first);
    const uint64_t keep = end << geo_.cluster_bits;
    if (file_.length() > keep) QEDFUSE_CO_TRY(co_await file_.Truncate(keep));
    report_.end_clusters = end;
    report_.leaks_left = Holes(first, end).size();
    co_return report_;
  }

 private:
  // Free clusters in [first, end), ascending.
  std::vector<uint64_t> Holes(uint64_t first, uint64_t end) const {
    std::vector<uint64_t> holes;
    used_.ForEachUnmarkedRun(first, [&](uint64_t c, uint64_t n) {
      for (uint64_t k = c; k < c + n && k < end; ++k) holes.push_back(k);
    });
    return holes;
  }

  // Every unit that has a cluster at or above |lo|.
  coro::Task<Result<void>> ScanUnits(uint64_t lo, Units& out) {
    const uint64_t ts = geo_.table_size;
    const uint64_t bits = geo_.cluster_bits;
    const uint64_t l1c = h_.l1_table_offset >> bits;
    if (l1c + ts > lo) out[l1c] = Unit{Unit::kFixed, l1c, ts, 0, 0};
    Table table(geo_.table_nelems);
    for (uint64_t i = 0; i < l1_.size(); ++i) {
      const uint64_t off = l1_[i];
      if (off == 0) continue;
      const uint64_t t = off >> bits;
      if (t + ts > lo) out[t] = Unit{Unit::kTable, t, ts, 0, i};
      QEDFUSE_CO_TRY(co_await file_.Read(off, IoVector(table.buffer()), DebugEvent::kL2Load));
      for (uint64_t j = 0; j < table.size(); ++j) {
        const uint64_t e = table.Get(j);
        if (e <= kZeroClusterEntry || (e >> bits) < lo) continue;
        out[e >> bits] = Unit{Unit::kData, e >> bits, 1, off, j};
      }
    }
    co_return Ok();
  }

  static const Unit* Find(const Units& units, uint64_t c) {
    auto it = units.upper_bound(c);
    if (it == units.begin()) return nullptr;
    --it;
    return c < it->second.start + it->second.n ? &it->second : nullptr;
  }

  // Moves from the end of the file into the lowest holes, as long as each unit fits lower.
  std::vector<Move> Plan(const Units& units, const std::vector<uint64_t>& holes, uint64_t lo,
                         uint64_t end) const {
    std::vector<Move> plan;
    std::vector<bool> taken(holes.size(), false);
    std::set<uint64_t> tables_moving;     // file offsets
    std::set<uint64_t> tables_repointed;  // tables that get entry updates in this batch
    std::size_t low = 0;
    for (uint64_t c = end; c-- > lo;) {
      while (low < holes.size() && taken[low]) ++low;
      if (low == holes.size() || holes[low] >= c) break;  // nothing lower left to fill
      if (!used_.IsMarked(c)) continue;
      const Unit* u = Find(units, c);
      if (u == nullptr || u->kind == Unit::kFixed) break;
      if (u->kind == Unit::kData) {
        // Entries are repointed in place: a table copied in this same batch would miss them.
        if (!tables_moving.contains(u->l2_off)) {
          taken[low] = true;
          plan.push_back(Move{*u, holes[low]});
          tables_repointed.insert(u->l2_off);
        }
      } else {
        const uint64_t off = l1_[u->index];
        if (tables_repointed.contains(off)) break;
        std::optional<std::size_t> w = Window(holes, taken, low, u->start);
        if (!w) break;
        for (std::size_t k = 0; k < u->n; ++k) taken[*w + k] = true;
        plan.push_back(Move{*u, holes[*w]});
        tables_moving.insert(off);
      }
      c = u->start;  // continue below the unit
    }
    return plan;
  }

  // The lowest run of table_size adjacent untaken holes that ends at or below |limit|.
  std::optional<std::size_t> Window(const std::vector<uint64_t>& holes,
                                    const std::vector<bool>& taken, std::size_t from,
                                    uint64_t limit) const {
    const uint64_t ts = geo_.table_size;
    std::size_t run = 0;
    for (std::size_t i = from; i < holes.size() && holes[i] < limit; ++i) {
      const bool joins = run > 0 && holes[i] == holes[i - 1] + 1 && !taken[i - 1];
      run = taken[i] ? 0 : (joins ? run + 1 : 1);
      if (run == ts) return i + 1 - ts;
    }
    return std::nullopt;
  }

  // The last unit is a table with no free window below it: make room (see qed_compact.h).
  std::vector<Move> Consolidate(const Units& units, const std::vector<uint64_t>& holes,
                                uint64_t first, uint64_t end) {
    const Unit* top = Find(units, end - 1);
    if (top == nullptr || top->kind != Unit::kTable) return {};
    const Unit* lowest = top;
    for (uint64_t c = top->start; c-- > first;) {
      if (!used_.IsMarked(c)) {
        // Park the lowest table of the chain past the end; next round it comes back over the
        // free cluster and its own old place.
        used_.Grow(end + lowest->n);
        return {Move{*lowest, end}};
      }
      const Unit* u = Find(units, c);
      if (u == nullptr || u->kind == Unit::kFixed) return {};
      if (u->kind == Unit::kData) return {Move{*u, holes.front()}};
      lowest = u;
      c = u->start;
    }
    return {};
  }

  coro::Task<Result<void>> Execute(const std::vector<Move>& plan) {
    const uint64_t cs = geo_.cluster_size;
    const uint64_t bits = geo_.cluster_bits;
    // 1. Copies.
    const uint64_t chunk = std::max<uint64_t>(cs, AlignDown(8u << 20, cs));
    IoBuffer buf(std::min<uint64_t>(chunk, geo_.table_bytes));
    for (const Move& m : plan) {
      assert(m.dst + m.unit.n <= m.unit.start || m.dst >= m.unit.start + m.unit.n);
      assert(m.dst >= std::max<uint64_t>(geo_.header_size, 1));  // never into the header
      const uint64_t bytes = m.unit.n * cs;
      for (uint64_t done = 0; done < bytes;) {
        const uint64_t n = std::min<uint64_t>(buf.size(), bytes - done);
        QEDFUSE_CO_TRY(co_await file_.Read((m.unit.start << bits) + done, IoVector(buf.data(), n)));
        QEDFUSE_CO_TRY(co_await file_.Write((m.dst << bits) + done, IoVector(buf.data(), n),
                                            DebugEvent::kRelocate));
        done += n;
      }
    }
    // 2. The copies are durable before anything points at them.
    QEDFUSE_CO_TRY(co_await file_.Flush(DebugEvent::kFlush));
    // 3. Repoint: L2 entries of moved data clusters, L1 entries of moved tables.
    std::map<uint64_t, std::vector<const Move*>> by_table;
    bool l1_changed = false;
    for (const Move& m : plan) {
      if (m.unit.kind == Unit::kData) {
        by_table[m.unit.l2_off].push_back(&m);
      } else {
        l1_[m.unit.index] = m.dst << bits;
        l1_changed = true;
      }
    }
    Table table(geo_.table_nelems);
    for (const auto& [off, moves] : by_table) {
      QEDFUSE_CO_TRY(co_await file_.Read(off, IoVector(table.buffer())));
      for (const Move* m : moves) {
        assert(table.Get(m->unit.index) == m->unit.start << bits);
        table.Set(m->unit.index, m->dst << bits);
      }
      QEDFUSE_CO_TRY(co_await file_.Write(off, IoVector(table.buffer()), DebugEvent::kL2Update));
    }
    if (l1_changed) {
      Table l1(geo_.table_nelems);
      l1.FromVector(l1_);
      QEDFUSE_CO_TRY(
          co_await file_.Write(h_.l1_table_offset, IoVector(l1.buffer()), DebugEvent::kL1Update));
    }
    // 4. The old places are unreferenced on disk before they are reused or cut off.
    QEDFUSE_CO_TRY(co_await file_.Flush(DebugEvent::kFlush));
    for (const Move& m : plan) {
      used_.Unmark(m.unit.start, m.unit.n);
      used_.Grow(m.dst + m.unit.n);
      const uint64_t dups = used_.Mark(m.dst, m.unit.n);
      assert(dups == 0);
      (void)dups;
      if (m.unit.kind == Unit::kData) {
        ++report_.data_moved;
      } else {
        ++report_.tables_moved;
      }
    }
    co_return Ok();
  }

  block::Child& file_;
  const Header& h_;
  const Geometry& geo_;
  std::vector<uint64_t>& l1_;
  UsedClusters& used_;
  CompactReport report_;
};

}  // namespace

coro::Task<Result<CompactReport>> CompactLeaks(block::Child& file, const Header& h,
                                               const Geometry& geo, std::vector<uint64_t>& l1,
                                               UsedClusters& used) {
  Compactor c(file, h, geo, l1, used);
  co_return co_await c.Run();
}

}  // namespace qedfuse::qed
