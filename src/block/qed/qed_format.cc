// QED header codec, geometry and open-time validation (docs/qed-format.md §2.2, §4, §5.1).
//
// Everything here is pure arithmetic on values already in memory: the driver, the checker and
// the creation code read the bytes and hand them in. All sizes that can grow with the geometry
// are computed in 64 bits with explicit overflow guards, so a hostile header can only produce an
// error message, never a wrapped value. Validation follows QEMU's order so that an image QEMU
// rejects for reason X is rejected here for the same reason first.
#include "block/qed/qed_format.h"

#include <bit>
#include <limits>

#include "absl/strings/str_format.h"
#include "qedfuse/base/endian.h"

namespace qedfuse::qed {
namespace {

bool ClusterSizeValid(uint32_t cs) {
  return cs >= kMinClusterSize && cs <= kMaxClusterSize && std::has_single_bit(cs);
}

bool TableSizeValid(uint32_t ts) {
  return ts >= kMinTableSize && ts <= kMaxTableSize && std::has_single_bit(ts);
}

absl::Status ClusterSizeError(uint32_t cs) {
  return absl::InvalidArgumentError(
      absl::StrFormat("invalid cluster size %u: must be a power of two between %u and %u", cs,
                      kMinClusterSize, kMaxClusterSize));
}

absl::Status TableSizeError(uint32_t ts) {
  return absl::InvalidArgumentError(
      absl::StrFormat("invalid table size %u: must be a power of two between %u and %u", ts,
                      kMinTableSize, kMaxTableSize));
}

absl::Status OverflowGeometryError(uint32_t cs, uint32_t ts) {
  const int exponent = 3 * std::countr_zero(cs) + 2 * std::countr_zero(ts) - 6;
  return absl::UnimplementedError(absl::StrFormat(
      "unsupported geometry: cluster size %u with table size %u gives a maximum image size of "
      "2^%d bytes, which overflows 64 bits (QEMU computes it as 0)",
      cs, ts, exponent));
}

bool HeaderSizeOverflows(uint32_t header_size, uint32_t cs) {
  return header_size > std::numeric_limits<uint32_t>::max() / cs;
}

absl::Status HeaderSizeError(uint32_t header_size, uint32_t cs) {
  return absl::InvalidArgumentError(
      absl::StrFormat("header_size %u overflows: %u clusters of %u bytes exceed 4 GiB", header_size,
                      header_size, cs));
}

// Why |off| fails the table predicate; empty if it passes.
std::string TableOffsetProblem(const Geometry& g, uint64_t off, uint64_t file_size) {
  file_size &= ~uint64_t{g.cluster_size - 1};
  if (off & (g.cluster_size - 1)) {
    return absl::StrFormat("not a multiple of the cluster size %u", g.cluster_size);
  }
  if (off < g.header_bytes) {
    return absl::StrFormat("inside the %u header cluster(s)", g.header_size);
  }
  const uint64_t span = g.table_bytes - g.cluster_size;
  if (off > std::numeric_limits<uint64_t>::max() - span || off + span >= file_size) {
    return absl::StrFormat("the %u-cluster table does not end before the end of the file (0x%x)",
                           g.table_size, file_size);
  }
  return {};
}

}  // namespace

Header DecodeHeader(std::span<const std::byte, kHeaderBytes> bytes) {
  const std::byte* p = bytes.data();
  Header h;
  h.magic = LoadLE32(p + 0);
  h.cluster_size = LoadLE32(p + 4);
  h.table_size = LoadLE32(p + 8);
  h.header_size = LoadLE32(p + 12);
  h.features = LoadLE64(p + 16);
  h.compat_features = LoadLE64(p + 24);
  h.autoclear_features = LoadLE64(p + 32);
  h.l1_table_offset = LoadLE64(p + 40);
  h.image_size = LoadLE64(p + 48);
  h.backing_filename_offset = LoadLE32(p + 56);
  h.backing_filename_size = LoadLE32(p + 60);
  return h;
}

void EncodeHeader(const Header& h, std::span<std::byte, kHeaderBytes> out) {
  std::byte* p = out.data();
  StoreLE32(p + 0, h.magic);
  StoreLE32(p + 4, h.cluster_size);
  StoreLE32(p + 8, h.table_size);
  StoreLE32(p + 12, h.header_size);
  StoreLE64(p + 16, h.features);
  StoreLE64(p + 24, h.compat_features);
  StoreLE64(p + 32, h.autoclear_features);
  StoreLE64(p + 40, h.l1_table_offset);
  StoreLE64(p + 48, h.image_size);
  StoreLE32(p + 56, h.backing_filename_offset);
  StoreLE32(p + 60, h.backing_filename_size);
}

bool Geometry::ValidClusterOffset(uint64_t off, uint64_t file_size) const {
  file_size &= ~uint64_t{cluster_size - 1};
  if (off & (cluster_size - 1)) return false;
  return off >= header_bytes && off < file_size;
}

bool Geometry::ValidTableOffset(uint64_t off, uint64_t file_size) const {
  // The last cluster of the table is (table_size - 1) clusters after the first. Unlike QEMU
  // (quirk Q1) the guard only rejects a real wrap-around, so single-cluster tables are valid.
  const uint64_t span = table_bytes - cluster_size;
  if (off > std::numeric_limits<uint64_t>::max() - span) return false;
  return ValidClusterOffset(off, file_size) && ValidClusterOffset(off + span, file_size);
}

std::optional<uint64_t> MaxImageSize(uint32_t cluster_size, uint32_t table_size) {
  // table_nelems^2 * cluster_size = 2^(3*log2(cs) + 2*log2(ts) - 6).
  const int exponent = 3 * std::countr_zero(cluster_size) + 2 * std::countr_zero(table_size) - 6;
  if (exponent >= 64) return std::nullopt;
  return uint64_t{1} << exponent;
}

absl::StatusOr<Geometry> MakeGeometry(uint32_t cluster_size, uint32_t table_size,
                                      uint32_t header_size) {
  if (!ClusterSizeValid(cluster_size)) return ClusterSizeError(cluster_size);
  if (!TableSizeValid(table_size)) return TableSizeError(table_size);
  const std::optional<uint64_t> max = MaxImageSize(cluster_size, table_size);
  if (!max) return OverflowGeometryError(cluster_size, table_size);
  if (HeaderSizeOverflows(header_size, cluster_size)) {
    return HeaderSizeError(header_size, cluster_size);
  }
  Geometry g;
  g.cluster_size = cluster_size;
  g.table_size = table_size;
  g.header_size = header_size;
  g.cluster_bits = static_cast<uint32_t>(std::countr_zero(cluster_size));
  g.table_bytes = uint64_t{table_size} * cluster_size;
  g.table_nelems = g.table_bytes / sizeof(uint64_t);
  g.l2_shift = g.cluster_bits;
  g.l2_mask = g.table_nelems - 1;
  g.l1_shift = g.l2_shift + static_cast<uint32_t>(std::countr_zero(g.table_nelems));
  g.header_bytes = uint64_t{header_size} * cluster_size;
  g.max_image_size = *max;
  return g;
}

absl::StatusOr<Geometry> ValidateHeader(const Header& h, uint64_t file_size) {
  if (h.magic != kMagic) {
    return absl::InvalidArgumentError(
        absl::StrFormat("not a QED image (bad magic 0x%08x, expected 0x%08x)", h.magic, kMagic));
  }
  if (h.features & ~kKnownFeatures) {
    return absl::UnimplementedError(
        absl::StrFormat("unsupported QED features 0x%x", h.features & ~kKnownFeatures));
  }
  if (!ClusterSizeValid(h.cluster_size)) return ClusterSizeError(h.cluster_size);
  if (file_size < kHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("file size %u is smaller than the %u-byte QED header (truncated file)",
                        file_size, kHeaderBytes));
  }
  if (!TableSizeValid(h.table_size)) return TableSizeError(h.table_size);
  const std::optional<uint64_t> max = MaxImageSize(h.cluster_size, h.table_size);
  if (!max) return OverflowGeometryError(h.cluster_size, h.table_size);
  if (h.image_size % 512 != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("image size %u is not a multiple of 512", h.image_size));
  }
  if (h.image_size > *max) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "image size %u exceeds the maximum %u for this geometry (cluster size %u, table size %u)",
        h.image_size, *max, h.cluster_size, h.table_size));
  }

  // The L1 check needs the header size in bytes; 64-bit arithmetic keeps it exact even for a
  // header_size that the later step rejects.
  Geometry probe;
  probe.cluster_size = h.cluster_size;
  probe.table_size = h.table_size;
  probe.header_size = h.header_size;
  probe.table_bytes = uint64_t{h.table_size} * h.cluster_size;
  probe.header_bytes = uint64_t{h.header_size} * h.cluster_size;
  if (const std::string why = TableOffsetProblem(probe, h.l1_table_offset, file_size);
      !why.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "L1 table offset 0x%x is invalid (misaligned, inside the header, or past the end of the "
        "file): %s",
        h.l1_table_offset, why));
  }
  if (HeaderSizeOverflows(h.header_size, h.cluster_size)) {
    return HeaderSizeError(h.header_size, h.cluster_size);
  }
  if (h.features & kFeatureBackingFile) {
    const uint64_t end = uint64_t{h.backing_filename_offset} + h.backing_filename_size;
    if (end > probe.header_bytes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "backing file name (offset %u, size %u) lies outside the header clusters (%u bytes)",
          h.backing_filename_offset, h.backing_filename_size, probe.header_bytes));
    }
    if (h.backing_filename_size >= kPathMax) {
      return absl::InvalidArgumentError(
          absl::StrFormat("backing file name too long (%u bytes, the limit is %u)",
                          h.backing_filename_size, kPathMax - 1));
    }
  }
  return MakeGeometry(h.cluster_size, h.table_size, h.header_size);
}

absl::StatusOr<std::string> BackingFileName(const Header& h,
                                            std::span<const std::byte> file_prefix) {
  if (!h.has_backing()) return std::string();
  const uint64_t off = h.backing_filename_offset;
  const uint64_t size = h.backing_filename_size;
  if (off + size > uint64_t{h.header_size} * h.cluster_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "backing file name (offset %u, size %u) lies outside the header clusters (%u bytes)", off,
        size, uint64_t{h.header_size} * h.cluster_size));
  }
  if (size >= kPathMax) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "backing file name too long (%u bytes, the limit is %u)", size, kPathMax - 1));
  }
  if (off + size > file_prefix.size()) {
    return absl::OutOfRangeError(
        absl::StrFormat("backing file name (offset %u, size %u) is beyond the %u bytes read", off,
                        size, file_prefix.size()));
  }
  return std::string(reinterpret_cast<const char*>(file_prefix.data() + off), size);
}

}  // namespace qedfuse::qed
