// libFuzzer target over the pure QED parsers: the 64-byte header codec, open-time validation,
// the geometry, the backing file name, and the table-entry validation and run scan of one L2
// table. The input is the start of an image file (header first); its last 16 bytes also serve as
// a file size and a guest position. Besides "no crash, no sanitizer report" it checks the
// invariants the driver relies on:
//  - EncodeHeader(DecodeHeader(b)) == b (the codec is lossless);
//  - an accepted header has a power-of-two geometry whose maximum image size holds the image,
//    an L1 table that passes the table predicate and a backing name inside the header clusters;
//  - an offset accepted by the entry validator is cluster-aligned, past the header and inside
//    the file, and clear of the L1 table;
//  - a run found by ScanL2 is non-empty, stays inside the request and its table's coverage.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "block/qed/qed_cluster.h"
#include "block/qed/qed_format.h"
#include "block/qed/qed_table.h"
#include "fuzz/fuzz_options.h"
#include "qedfuse/base/endian.h"

namespace {

using namespace qedfuse::qed;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "qed_header_fuzz: property violated: %s\n", what);
  std::abort();
}

uint64_t Tail64(const uint8_t* data, std::size_t size, std::size_t from_end) {
  uint64_t v = 0;
  for (std::size_t i = 0; i < 8; ++i) {
    std::size_t k = from_end + i;
    uint8_t b = k < size ? data[size - 1 - k] : 0;
    v = (v << 8) | b;
  }
  return v;
}

void CheckEntries(const Geometry& geo, const Header& h, uint64_t file_size,
                  std::span<const std::byte> bytes, uint64_t pos_seed) {
  EntryValidator v;
  v.geo = &geo;
  v.file_size = file_size & ~uint64_t{geo.cluster_size - 1};
  v.l1_offset = h.l1_table_offset;

  // Every 8-byte word of the input as an L1 entry and as an L2 entry.
  for (std::size_t off = 0; off + 8 <= bytes.size() && off < 4096; off += 8) {
    const uint64_t e = qedfuse::LoadLE64(bytes.data() + off);
    if (v.ValidTable(e)) {
      if (e % geo.cluster_size != 0 || e < geo.header_bytes || e < geo.cluster_size) {
        Fail("ValidTable accepted a misaligned or header offset");
      }
      if (e + geo.table_bytes > v.file_size) Fail("ValidTable accepted a table past EOF");
      if (e < h.l1_table_offset + geo.table_bytes && h.l1_table_offset < e + geo.table_bytes) {
        Fail("ValidTable accepted a table overlapping L1");
      }
    }
    if (v.ValidCluster(e, h.l1_table_offset + geo.table_bytes)) {
      if (e % geo.cluster_size != 0 || e < geo.header_bytes || e < geo.cluster_size) {
        Fail("ValidCluster accepted a misaligned or header offset");
      }
      if (e >= v.file_size) Fail("ValidCluster accepted a cluster past EOF");
    }
  }

  // ScanL2 over an L2 table made of the input's bytes (bounded: large tables are skipped).
  if (geo.table_nelems > 8192) return;
  Table l2(geo.table_nelems);
  std::memcpy(l2.buffer().data(), bytes.data(), std::min<uint64_t>(bytes.size(), l2.bytes()));
  const uint64_t l2_offset = (pos_seed >> 32) % 64 * geo.cluster_size;
  const uint64_t span = uint64_t{1} << geo.l1_shift;
  const uint64_t pos = pos_seed % (span * 4);
  const uint64_t len = 1 + (pos_seed >> 40) % (uint64_t{4} * geo.cluster_size);
  qedfuse::Result<ClusterRun> run = ScanL2(l2, l2_offset, v, pos, len);
  if (run) {
    if (run->len == 0 || run->len > len) Fail("ScanL2 run length out of range");
    if (run->len > BytesToTableEnd(geo, pos)) Fail("ScanL2 run crosses its table's coverage");
    if (run->kind == ClusterKind::kFound) {
      const uint64_t host = run->host_offset - geo.in_cluster(pos);
      if (!v.ValidCluster(host, l2_offset)) Fail("ScanL2 returned an invalid cluster");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  std::vector<std::byte> bytes(std::max<std::size_t>(size, kHeaderBytes), std::byte{0});
  if (size > 0) std::memcpy(bytes.data(), data, size);
  std::span<const std::byte, kHeaderBytes> head(bytes.data(), kHeaderBytes);

  const Header h = DecodeHeader(head);
  std::byte again[kHeaderBytes];
  EncodeHeader(h, again);
  if (std::memcmp(again, bytes.data(), kHeaderBytes) != 0) Fail("header codec is not lossless");

  const uint64_t seed = Tail64(data, size, 0);
  const uint64_t big_size = Tail64(data, size, 8);
  for (uint64_t file_size : {uint64_t{size}, big_size}) {
    absl::StatusOr<Geometry> geo = ValidateHeader(h, file_size);
    if (!geo.ok()) {
      if (geo.status().message().empty()) Fail("a refusal without a message");
      continue;
    }
    const Geometry& g = *geo;
    if (!std::has_single_bit(g.cluster_size) || !std::has_single_bit(g.table_size)) {
      Fail("accepted a geometry that is not a power of two");
    }
    if (g.cluster_size < kMinClusterSize || g.cluster_size > kMaxClusterSize ||
        g.table_size < kMinTableSize || g.table_size > kMaxTableSize) {
      Fail("accepted an out-of-range geometry");
    }
    if (h.image_size > g.max_image_size || h.image_size % 512 != 0) {
      Fail("accepted an image size the geometry cannot hold");
    }
    if (g.table_nelems != g.table_bytes / 8 ||
        (uint64_t{1} << g.l1_shift) * g.table_nelems != g.max_image_size) {
      Fail("inconsistent geometry");
    }
    if (!g.ValidTableOffset(h.l1_table_offset, file_size)) Fail("accepted an invalid L1 offset");
    if (h.image_size > 0) {
      const uint64_t last = h.image_size - 1;
      if (g.l1_index(last) >= g.table_nelems) Fail("image end maps past the L1 table");
    }
    if (MakeGeometry(h.cluster_size, h.table_size, h.header_size).status() != absl::OkStatus()) {
      Fail("MakeGeometry refuses what ValidateHeader accepts");
    }

    absl::StatusOr<std::string> name = BackingFileName(h, std::span(bytes.data(), size));
    if (name.ok()) {
      if (name->size() >= kPathMax) Fail("backing name too long");
      if (!name->empty() && uint64_t{h.backing_filename_offset} + name->size() > g.header_bytes) {
        Fail("backing name outside the header clusters");
      }
    }
    CheckEntries(g, h, file_size, std::span<const std::byte>(bytes.data(), size), seed);
  }

  // The geometry constructor on its own, with the fields taken from the input.
  absl::StatusOr<Geometry> g2 =
      MakeGeometry(h.cluster_size, h.table_size, static_cast<uint32_t>(seed));
  if (g2.ok() && g2->header_bytes != uint64_t{g2->header_size} * g2->cluster_size) {
    Fail("header_bytes mismatch");
  }
  return 0;
}
