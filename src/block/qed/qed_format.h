// QED on-disk format: the 64-byte header, its little-endian codec, validation, and the geometry
// (shifts and masks) derived from it. Pure functions, no I/O. See docs/qed-format.md §2.2, §4.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qedfuse::qed {

inline constexpr uint32_t kMagic = 0x00444551;  // "QED\0" little-endian
inline constexpr std::size_t kHeaderBytes = 64;
inline constexpr uint64_t kFeatureBackingFile = 0x01;
inline constexpr uint64_t kFeatureNeedCheck = 0x02;
inline constexpr uint64_t kFeatureBackingFormatNoProbe = 0x04;
inline constexpr uint64_t kKnownFeatures = 0x07;
inline constexpr uint64_t kKnownCompatFeatures = 0;
inline constexpr uint64_t kKnownAutoclearFeatures = 0;
inline constexpr uint32_t kMinClusterSize = 4096;
inline constexpr uint32_t kMaxClusterSize = 64u << 20;
inline constexpr uint32_t kDefaultClusterSize = 65536;
inline constexpr uint32_t kMinTableSize = 1;
inline constexpr uint32_t kMaxTableSize = 16;
inline constexpr uint32_t kDefaultTableSize = 4;
inline constexpr uint64_t kZeroClusterEntry = 1;  // L2 entry value: reads as zeros
inline constexpr std::size_t kPathMax = 4096;

struct Header {
  uint32_t magic = kMagic;
  uint32_t cluster_size = kDefaultClusterSize;
  uint32_t table_size = kDefaultTableSize;
  uint32_t header_size = 1;
  uint64_t features = 0;
  uint64_t compat_features = 0;
  uint64_t autoclear_features = 0;
  uint64_t l1_table_offset = 0;
  uint64_t image_size = 0;
  uint32_t backing_filename_offset = 0;
  uint32_t backing_filename_size = 0;

  bool has_backing() const { return (features & kFeatureBackingFile) && backing_filename_size; }
  bool need_check() const { return features & kFeatureNeedCheck; }
};

// Little-endian codec of the 64 header bytes. Decode does no validation.
Header DecodeHeader(std::span<const std::byte, kHeaderBytes> bytes);
void EncodeHeader(const Header& h, std::span<std::byte, kHeaderBytes> out);

// Geometry derived from a header.
struct Geometry {
  uint32_t cluster_size = 0;
  uint32_t table_size = 0;      // clusters per table
  uint32_t header_size = 0;     // clusters
  uint32_t cluster_bits = 0;    // log2(cluster_size)
  uint64_t table_nelems = 0;    // entries per table
  uint32_t l2_shift = 0;        // = cluster_bits
  uint64_t l2_mask = 0;         // table_nelems - 1
  uint32_t l1_shift = 0;        // l2_shift + log2(table_nelems)
  uint64_t table_bytes = 0;     // table_size * cluster_size
  uint64_t header_bytes = 0;    // header_size * cluster_size
  uint64_t max_image_size = 0;  // table_nelems^2 * cluster_size (correct arithmetic)

  uint64_t l1_index(uint64_t pos) const { return pos >> l1_shift; }
  uint64_t l2_index(uint64_t pos) const { return (pos >> l2_shift) & l2_mask; }
  uint64_t in_cluster(uint64_t pos) const { return pos & (cluster_size - 1); }
  uint64_t cluster_start(uint64_t pos) const { return pos & ~uint64_t{cluster_size - 1}; }
  // Number of clusters needed to hold |bytes| (rounded up; correct arithmetic, see quirk Q4).
  uint64_t bytes_to_clusters(uint64_t bytes) const {
    return (bytes >> cluster_bits) + ((bytes & (cluster_size - 1)) != 0);
  }
  // Cluster predicate of docs/qed-format.md §4.5 against |file_size| (rounded down to a cluster).
  bool ValidClusterOffset(uint64_t off, uint64_t file_size) const;
  // Table predicate: the whole table lies inside the file, after the header.
  bool ValidTableOffset(uint64_t off, uint64_t file_size) const;
};

// Checks cluster_size and table_size ranges, powers of two, and that the maximum image size does
// not overflow (QEMU quirk Q2 geometries are refused). Message names the problem.
absl::StatusOr<Geometry> MakeGeometry(uint32_t cluster_size, uint32_t table_size,
                                      uint32_t header_size);

// Full open-time validation, in QEMU's order (docs/qed-format.md §5.1): magic, unknown features,
// cluster size, file length, table size, image size, L1 offset, header_size overflow, backing name
// bounds. |file_size| is the raw file length. Returns the geometry on success; the error message
// names the offending field and value. Unlike QEMU, table_size 1 is accepted (quirk Q1).
absl::StatusOr<Geometry> ValidateHeader(const Header& h, uint64_t file_size);

// The exact maximum image size for a geometry, or nullopt when it does not fit in 64 bits (the
// geometries QEMU miscomputes as 0, quirk Q2). Precondition: sizes are powers of two in range.
std::optional<uint64_t> MaxImageSize(uint32_t cluster_size, uint32_t table_size);

// The backing file name stored in the header clusters. |file_prefix| holds the first bytes of
// the image file (at least up to the end of the name). Returns "" when the image has no backing
// file (feature bit clear or size 0). Errors: the name lies outside the header clusters, is too
// long (>= PATH_MAX), or is not contained in |file_prefix|. Pure: no I/O.
absl::StatusOr<std::string> BackingFileName(const Header& h,
                                            std::span<const std::byte> file_prefix);

}  // namespace qedfuse::qed
