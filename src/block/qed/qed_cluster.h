// Cluster lookup: translating a guest range into runs of one kind (QEMU's qed-cluster.c).
//
// A run starts at the guest offset asked for and covers as many following clusters as have the
// same kind: physically contiguous data (kFound), zero clusters (kZero), unallocated entries of a
// present L2 table (kUnallocatedL2), or a missing L2 table (kUnallocatedL1). A run never crosses
// an L2 table's coverage, so an allocating writer can update it with one table write.
// Entries are validated before use: a table or cluster offset that is misaligned, inside the
// header, past the (cluster-rounded) end of the file, or overlapping the L1 table or the L2 table
// holding it is corrupt and fails the lookup with Errc::kCorruptImage. Nothing is ever read from
// or written to such an offset.
#pragma once

#include <cstdint>

#include "absl/container/flat_hash_set.h"
#include "block/qed/qed_format.h"
#include "block/qed/qed_table.h"
#include "qedfuse/base/result.h"

namespace qedfuse::qed {

enum class ClusterKind { kFound, kZero, kUnallocatedL2, kUnallocatedL1 };

const char* ClusterKindName(ClusterKind k);

struct ClusterRun {
  ClusterKind kind = ClusterKind::kUnallocatedL1;
  uint64_t host_offset = 0;  // kFound: file offset of the run's first byte
  uint64_t len = 0;          // bytes from the queried offset (> 0 for a non-empty query)
};

// The validity rules for table and cluster offsets of one image.
struct EntryValidator {
  const Geometry* geo = nullptr;
  uint64_t file_size = 0;  // rounded down to a cluster
  uint64_t l1_offset = 0;

  // An L1 entry other than 0: the table lies inside the file, past the header, clear of L1.
  bool ValidTable(uint64_t off) const;
  // An L2 entry other than 0 and 1, in the table at |l2_offset|: a cluster inside the file, past
  // the header, clear of the L1 table and of that L2 table.
  bool ValidCluster(uint64_t off, uint64_t l2_offset) const;
};

// Bytes from |pos| to the end of the guest range covered by pos's L2 table.
inline uint64_t BytesToTableEnd(const Geometry& geo, uint64_t pos) {
  uint64_t span = uint64_t{1} << geo.l1_shift;
  return span - (pos & (span - 1));
}

// Scans the L2 table |l2| (at file offset |l2_offset|) for the run starting at guest offset
// |pos|, at most |len| bytes (len > 0), never past the table's coverage. On an invalid first
// entry returns Errc::kCorruptImage; an invalid later entry just ends the run before it.
// |bad_entries| (optional) holds file offsets of entries known to be invalid although they now
// pass the validator (they pointed past the end of the file when the image was opened, and the
// file has grown since).
Result<ClusterRun> ScanL2(const Table& l2, uint64_t l2_offset, const EntryValidator& v,
                          uint64_t pos, uint64_t len,
                          const absl::flat_hash_set<uint64_t>* bad_entries = nullptr);

}  // namespace qedfuse::qed
