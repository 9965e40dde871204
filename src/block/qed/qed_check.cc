// Consistency check and repair (docs/qed-format.md §11.1), with QEMU's counting rules and correct
// cluster arithmetic (quirk Q4, §11.2: bytes are divided by cluster_size, not cluster_size - 1).
//
// Every cluster a table refers to is marked in a "used" bitmap over the rounded-down file. A
// cluster marked twice is a duplicate reference, which cannot be repaired (neither owner can be
// trusted). An entry that fails the offset predicates of docs/qed-format.md §4.5 is a fixable
// corruption: repair sets it to 0, which only forgets data that was never reachable anyway.
// Whatever is not marked at the end is leaked space; leaks are harmless and, like QEMU, are only
// counted (unless the leak fixing is asked for, which compacts the file: qed_compact.h).
#include "block/qed/qed_check.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <map>
#include <memory>
#include <new>

#include "absl/strings/str_format.h"
#include "block/qed/qed_compact.h"
#include "block/qed/qed_used_clusters.h"
#include "qedfuse/base/align.h"
#include "qedfuse/base/endian.h"
#include "qedfuse/base/macros.h"
#include "qedfuse/block/io_buffer.h"
#include "qedfuse/block/io_vector.h"

namespace qedfuse::qed {
namespace {

// Why a data-cluster entry fails the cluster predicate.
std::string ClusterProblem(const Geometry& g, uint64_t off, uint64_t file_size) {
  if (off & (g.cluster_size - 1)) {
    return absl::StrFormat("is not a multiple of the cluster size %u", g.cluster_size);
  }
  if (off < g.header_bytes) return "points into the header";
  return absl::StrFormat("points past end of file (0x%x)", file_size);
}

// Why an L1 entry fails the table predicate.
std::string TableProblem(const Geometry& g, uint64_t off, uint64_t file_size) {
  if (off & (g.cluster_size - 1)) {
    return absl::StrFormat("is not a multiple of the cluster size %u", g.cluster_size);
  }
  if (off < g.header_bytes) return "points into the header";
  return absl::StrFormat("runs past end of file (0x%x)", file_size);
}

class Reporter {
 public:
  Reporter(CheckReport& r, std::size_t limit) : r_(r), limit_(limit) {}
  void Add(std::string line) {
    if (r_.messages.size() < limit_) {
      r_.messages.push_back(std::move(line));
    } else {
      ++suppressed_;
    }
  }
  void Finish() {
    if (suppressed_) {
      r_.messages.push_back(absl::StrFormat("... and %u more findings not listed", suppressed_));
    }
  }

 private:
  CheckReport& r_;
  std::size_t limit_;
  uint64_t suppressed_ = 0;
};

}  // namespace

coro::Task<Result<CheckReport>> CheckImage(block::Child& file, const Header& h, const Geometry& geo,
                                           std::vector<uint64_t>& l1, uint64_t file_size,
                                           const CheckOptions& options) {
  if (l1.size() != geo.table_nelems || geo.cluster_size == 0) {
    co_return Unexpected(ErrnoCode(EINVAL));
  }
  file_size &= ~uint64_t{geo.cluster_size - 1};
  const uint64_t nclusters = file_size >> geo.cluster_bits;
  const uint64_t cs = geo.cluster_size;

  CheckReport report;
  report.total_clusters = geo.bytes_to_clusters(h.image_size);
  report.file_size = file_size;
  Reporter out(report, options.max_messages);

  block::IoBuffer table;
  try {
    table = block::IoBuffer(geo.table_bytes);
  } catch (const std::bad_alloc&) {
    co_return Unexpected(ErrnoCode(ENOMEM));
  }

  UsedClusters used(nclusters);
  used.CountFrom(geo.header_size);
  used.Mark(h.l1_table_offset >> geo.cluster_bits, geo.table_size);

  uint64_t l1_fixed = 0;
  bool wrote = false;
  for (uint64_t i = 0; i < l1.size(); ++i) {
    const uint64_t l2_off = l1[i];
    if (l2_off == 0) continue;
    if (!geo.ValidTableOffset(l2_off, file_size)) {
      out.Add(absl::StrFormat("L1 entry %u: L2 table offset 0x%x %s%s", i, l2_off,
                              TableProblem(geo, l2_off, file_size),
                              options.repair ? " (repaired: set to 0)" : ""));
      if (options.repair) {
        l1[i] = 0;
        ++report.corruptions_fixed;
        ++l1_fixed;
      } else {
        ++report.corruptions;
      }
      continue;
    }
    if (const uint64_t dups = used.Mark(l2_off >> geo.cluster_bits, geo.table_size)) {
      // QEMU counts one corruption per cluster already in use, and does not look inside.
      report.corruptions += dups;
      out.Add(absl::StrFormat(
          "L1 entry %u: L2 table at 0x%x overlaps %u cluster(s) already in use; table skipped", i,
          l2_off, dups));
      continue;
    }
    Result<void> rd = co_await file.Read(l2_off, block::IoVector(table));
    if (!rd) {
      ++report.check_errors;
      out.Add(absl::StrFormat("L1 entry %u: cannot read L2 table at 0x%x: %s", i, l2_off,
                              rd.error().message()));
      continue;
    }

    uint64_t l2_fixed = 0;
    uint64_t last = 0;
    for (uint64_t j = 0; j < geo.table_nelems; ++j) {
      std::byte* slot = table.data() + j * sizeof(uint64_t);
      const uint64_t off = LoadLE64(slot);
      if (off == 0 || off == kZeroClusterEntry) continue;
      ++report.allocated_clusters;
      if (last != 0 && last + cs != off) ++report.fragmented_clusters;
      last = off;
      if (!geo.ValidClusterOffset(off, file_size)) {
        out.Add(absl::StrFormat("L2 table at 0x%x entry %u: cluster offset 0x%x %s%s", l2_off, j,
                                off, ClusterProblem(geo, off, file_size),
                                options.repair ? " (repaired: set to 0)" : ""));
        if (options.repair) {
          StoreLE64(slot, 0);
          ++report.corruptions_fixed;
          ++l2_fixed;
        } else {
          ++report.corruptions;
        }
        continue;
      }
      if (used.Mark(off >> geo.cluster_bits, 1)) {
        ++report.corruptions;
        out.Add(absl::StrFormat(
            "L2 table at 0x%x entry %u: cluster 0x%x is already in use (duplicate reference)",
            l2_off, j, off));
      }
    }
    if (l2_fixed > 0 && options.repair) {
      Result<void> wr = co_await file.Write(l2_off, block::IoVector(table));
      if (!wr) {
        ++report.check_errors;
        out.Add(absl::StrFormat("cannot write repaired L2 table at 0x%x: %s", l2_off,
                                wr.error().message()));
        continue;
      }
      wrote = true;
    }
  }

  if (l1_fixed > 0 && options.repair) {
    block::IoBuffer l1_buf;
    try {
      l1_buf = block::IoBuffer(geo.table_bytes);
    } catch (const std::bad_alloc&) {
      co_return Unexpected(ErrnoCode(ENOMEM));
    }
    for (uint64_t i = 0; i < l1.size(); ++i) StoreLE64(l1_buf.data() + i * sizeof(uint64_t), l1[i]);
    Result<void> wr = co_await file.Write(h.l1_table_offset, block::IoVector(l1_buf));
    if (!wr) {
      ++report.check_errors;
      out.Add(absl::StrFormat("cannot write repaired L1 table at 0x%x: %s", h.l1_table_offset,
                              wr.error().message()));
    } else {
      wrote = true;
    }
  }
  if (wrote) {
    Result<void> fl = co_await file.Flush();
    if (!fl) {
      ++report.check_errors;
      out.Add(absl::StrFormat("cannot flush the repaired tables: %s", fl.error().message()));
    }
  }

  // Leaks are meaningful only if every table was read (and written) successfully.
  if (report.check_errors == 0) {
    const uint64_t first = std::min<uint64_t>(geo.header_size, nclusters);
    report.leaks = (nclusters - first) - used.count();
    used.ForEachUnmarkedRun(first, [&](uint64_t c, uint64_t n) {
      out.Add(absl::StrFormat("leaked clusters at 0x%x (%u cluster(s), %u bytes)",
                              c << geo.cluster_bits, n, n << geo.cluster_bits));
    });

    if (options.repair && options.fix_leaks && report.corruptions == 0 && report.leaks > 0) {
      Result<CompactReport> c = co_await CompactLeaks(file, h, geo, l1, used);
      if (!c) {
        ++report.check_errors;
        out.Add(absl::StrFormat("cannot fix the leaked clusters: %s", c.error().message()));
      } else {
        report.leaks_fixed = report.leaks - c->leaks_left;
        report.data_relocated = c->data_moved;
        report.tables_relocated = c->tables_moved;
        report.leaks = c->leaks_left;
        report.file_size = c->end_clusters << geo.cluster_bits;
        out.Add(absl::StrFormat(
            "fixed %u leaked cluster(s): moved %u data cluster(s) and %u L2 table(s); file size "
            "now 0x%x",
            report.leaks_fixed, c->data_moved, c->tables_moved, report.file_size));
      }
    }
  }
  out.Finish();
  co_return report;
}

}  // namespace qedfuse::qed
