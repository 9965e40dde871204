// Run detection over one L2 table (see qed_cluster.h).
#include "block/qed/qed_cluster.h"

#include <algorithm>

#include "qedfuse/base/enum_names.h"

namespace qedfuse::qed {

const char* ClusterKindName(ClusterKind k) {
  static constexpr EnumName<ClusterKind> kNames[] = {
      {ClusterKind::kFound, "data"},
      {ClusterKind::kZero, "zero"},
      {ClusterKind::kUnallocatedL2, "unallocated"},
      {ClusterKind::kUnallocatedL1, "unallocated-l2"},
  };
  return NameOf(kNames, k, "?");
}

namespace {
// True if [a, a+alen) and [b, b+blen) overlap.
bool Overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return a < b + blen && b < a + alen;
}
}  // namespace

// Cluster 0 always holds the header, whatever header_size says (QEMU accepts header_size 0), so
// no table or data cluster may start there.
bool EntryValidator::ValidTable(uint64_t off) const {
  return off >= geo->cluster_size && geo->ValidTableOffset(off, file_size) &&
         !Overlaps(off, geo->table_bytes, l1_offset, geo->table_bytes);
}

bool EntryValidator::ValidCluster(uint64_t off, uint64_t l2_offset) const {
  return off >= geo->cluster_size && geo->ValidClusterOffset(off, file_size) &&
         !Overlaps(off, geo->cluster_size, l1_offset, geo->table_bytes) &&
         !Overlaps(off, geo->cluster_size, l2_offset, geo->table_bytes);
}

Result<ClusterRun> ScanL2(const Table& l2, uint64_t l2_offset, const EntryValidator& v,
                          uint64_t pos, uint64_t len,
                          const absl::flat_hash_set<uint64_t>* bad_entries) {
  const Geometry& geo = *v.geo;
  len = std::min(len, BytesToTableEnd(geo, pos));
  const uint64_t in_cluster = geo.in_cluster(pos);
  // Clusters touched by [pos, pos + len).
  const uint64_t nclusters = (in_cluster + len + geo.cluster_size - 1) >> geo.cluster_bits;
  const uint64_t first = geo.l2_index(pos);

  auto kind_of = [&](uint64_t e) {
    if (e == 0) return ClusterKind::kUnallocatedL2;
    if (e == kZeroClusterEntry) return ClusterKind::kZero;
    return ClusterKind::kFound;
  };

  auto valid = [&](uint64_t index, uint64_t e) {
    return v.ValidCluster(e, l2_offset) &&
           (bad_entries == nullptr || !bad_entries->contains(l2_offset + index * 8));
  };

  const uint64_t e0 = l2.Get(first);
  const ClusterKind kind = kind_of(e0);
  if (kind == ClusterKind::kFound && !valid(first, e0)) return Unexpected(Errc::kCorruptImage);
  uint64_t n = 1;
  for (; n < nclusters; ++n) {
    uint64_t e = l2.Get(first + n);
    if (kind_of(e) != kind) break;
    if (kind == ClusterKind::kFound && (e != e0 + n * geo.cluster_size || !valid(first + n, e))) {
      break;
    }
  }
  ClusterRun run;
  run.kind = kind;
  run.len = std::min(len, n * geo.cluster_size - in_cluster);
  if (kind == ClusterKind::kFound) run.host_offset = e0 + in_cluster;
  return run;
}

}  // namespace qedfuse::qed
