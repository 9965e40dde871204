// Header codec, geometry, offset predicates and open-time validation of qed_format.h.
#include "block/qed/qed_format.h"

#include <array>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "qed_fmt_test_util.h"

namespace qedfuse::qed {
namespace {

using fmt_test::MustRun;
using fmt_test::ReadBytes;
using fmt_test::TempDir;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;
constexpr uint64_t kTiB = 1024 * kGiB;
constexpr uint64_t kPiB = 1024 * kTiB;

Header DefaultHeader() {
  Header h;
  h.cluster_size = 65536;
  h.table_size = 4;
  h.header_size = 1;
  h.l1_table_offset = 65536;
  h.image_size = kGiB;
  return h;
}
constexpr uint64_t kDefaultFileSize = 5 * 65536;  // header cluster + 4-cluster L1

Geometry MustGeometry(uint32_t cs, uint32_t ts, uint32_t hs = 1) {
  absl::StatusOr<Geometry> g = MakeGeometry(cs, ts, hs);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? *g : Geometry{};
}

TEST(QedFormat, EncodeDecode_RoundTripsEveryField) {
  Header h;
  h.magic = kMagic;
  h.cluster_size = 0x01020304;
  h.table_size = 0x05060708;
  h.header_size = 0x090a0b0c;
  h.features = 0x1112131415161718;
  h.compat_features = 0x2122232425262728;
  h.autoclear_features = 0x3132333435363738;
  h.l1_table_offset = 0x4142434445464748;
  h.image_size = 0x5152535455565758;
  h.backing_filename_offset = 0x61626364;
  h.backing_filename_size = 0x71727374;
  std::array<std::byte, kHeaderBytes> bytes;
  EncodeHeader(h, bytes);
  // Little-endian: the lowest byte of each field comes first.
  EXPECT_EQ(bytes[4], std::byte{0x04});
  EXPECT_EQ(bytes[7], std::byte{0x01});
  EXPECT_EQ(bytes[16], std::byte{0x18});
  EXPECT_EQ(bytes[23], std::byte{0x11});
  EXPECT_EQ(bytes[56], std::byte{0x64});
  EXPECT_EQ(bytes[63], std::byte{0x71});
  const Header d = DecodeHeader(bytes);
  EXPECT_EQ(d.magic, h.magic);
  EXPECT_EQ(d.cluster_size, h.cluster_size);
  EXPECT_EQ(d.table_size, h.table_size);
  EXPECT_EQ(d.header_size, h.header_size);
  EXPECT_EQ(d.features, h.features);
  EXPECT_EQ(d.compat_features, h.compat_features);
  EXPECT_EQ(d.autoclear_features, h.autoclear_features);
  EXPECT_EQ(d.l1_table_offset, h.l1_table_offset);
  EXPECT_EQ(d.image_size, h.image_size);
  EXPECT_EQ(d.backing_filename_offset, h.backing_filename_offset);
  EXPECT_EQ(d.backing_filename_size, h.backing_filename_size);
}

TEST(QedFormat, Encode_MatchesQemuImgHeaderBytes) {
  TempDir dir;
  const std::string path = dir.File("ref.qed");
  MustRun("qemu-img create -q -f qed '" + path + "' 1G");
  std::vector<std::byte> ref = ReadBytes(path, 0, kHeaderBytes);
  ASSERT_EQ(ref.size(), kHeaderBytes);
  std::array<std::byte, kHeaderBytes> ours;
  EncodeHeader(DefaultHeader(), ours);
  EXPECT_TRUE(std::equal(ours.begin(), ours.end(), ref.begin()));
  const Header d = DecodeHeader(std::span<const std::byte, kHeaderBytes>(ref.data(), kHeaderBytes));
  EXPECT_EQ(d.magic, 0x00444551u);
  EXPECT_EQ(d.image_size, kGiB);
  EXPECT_EQ(d.l1_table_offset, 65536u);
}

struct MaxSizeCase {
  uint32_t cs;
  uint32_t ts;
  uint64_t nelems;
  uint64_t l2_bytes;
  uint64_t max;
};

TEST(QedGeometry, MaxSizes_MatchSpecTable) {
  const MaxSizeCase cases[] = {
      {4096, 4, 2048, 8 * kMiB, 16 * kGiB},         {4096, 16, 8192, 32 * kMiB, 256 * kGiB},
      {65536, 4, 32768, 2 * kGiB, 64 * kTiB},       {65536, 16, 131072, 8 * kGiB, kPiB},
      {1 << 20, 4, 524288, 512 * kGiB, 256 * kPiB},
  };
  for (const MaxSizeCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.cs << "/" << c.ts);
    const Geometry g = MustGeometry(c.cs, c.ts);
    EXPECT_EQ(g.table_nelems, c.nelems);
    EXPECT_EQ(g.table_nelems * c.cs, c.l2_bytes);
    EXPECT_EQ(g.max_image_size, c.max);
    EXPECT_EQ(MaxImageSize(c.cs, c.ts), c.max);
  }
}

TEST(QedGeometry, DefaultGeometry_ShiftsAndTranslation) {
  const Geometry g = MustGeometry(65536, 4);
  EXPECT_EQ(g.cluster_bits, 16u);
  EXPECT_EQ(g.l2_shift, 16u);
  EXPECT_EQ(g.l2_mask, 32767u);
  EXPECT_EQ(g.l1_shift, 31u);
  EXPECT_EQ(g.table_bytes, 4u * 65536);
  EXPECT_EQ(g.header_bytes, 65536u);
  // Spec example: a write at 2 GiB + 64 KiB uses L1[1], L2[1].
  const uint64_t pos = 2 * kGiB + 64 * kKiB + 100;
  EXPECT_EQ(g.l1_index(pos), 1u);
  EXPECT_EQ(g.l2_index(pos), 1u);
  EXPECT_EQ(g.in_cluster(pos), 100u);
  EXPECT_EQ(g.cluster_start(pos), 2 * kGiB + 64 * kKiB);
  EXPECT_EQ(g.bytes_to_clusters(0), 0u);
  EXPECT_EQ(g.bytes_to_clusters(1), 1u);
  EXPECT_EQ(g.bytes_to_clusters(65536), 1u);
  EXPECT_EQ(g.bytes_to_clusters(65537), 2u);
  // QEMU divides by cs - 1 (quirk Q4); we must not: 65535 clusters of 64 KiB are 65535 clusters.
  EXPECT_EQ(g.bytes_to_clusters(65535ull * 65536), 65535u);
}

TEST(QedGeometry, OverflowingGeometries_Refused) {
  const std::pair<uint32_t, uint32_t> refused[] = {{4u << 20, 4},  {4u << 20, 16}, {8u << 20, 2},
                                                   {16u << 20, 1}, {64u << 20, 1}, {2u << 20, 16}};
  for (auto [cs, ts] : refused) {
    SCOPED_TRACE(::testing::Message() << cs << "/" << ts);
    absl::StatusOr<Geometry> g = MakeGeometry(cs, ts, 1);
    ASSERT_FALSE(g.ok());
    EXPECT_NE(g.status().message().find("overflows 64 bits"), std::string::npos)
        << g.status().message();
    EXPECT_FALSE(MaxImageSize(cs, ts).has_value());
  }
  // The largest geometries that still fit.
  EXPECT_EQ(MaxImageSize(2u << 20, 8), uint64_t{1} << 63);
  EXPECT_EQ(MaxImageSize(4u << 20, 2), uint64_t{1} << 62);
  EXPECT_EQ(MaxImageSize(8u << 20, 1), uint64_t{1} << 63);
  EXPECT_TRUE(MakeGeometry(2u << 20, 8, 1).ok());
}

TEST(QedGeometry, InvalidSizes_Refused) {
  EXPECT_FALSE(MakeGeometry(3000, 4, 1).ok());
  EXPECT_FALSE(MakeGeometry(2048, 4, 1).ok());
  EXPECT_FALSE(MakeGeometry(128u << 20, 1, 1).ok());
  EXPECT_FALSE(MakeGeometry(65536, 0, 1).ok());
  EXPECT_FALSE(MakeGeometry(65536, 3, 1).ok());
  EXPECT_FALSE(MakeGeometry(65536, 32, 1).ok());
  EXPECT_FALSE(MakeGeometry(65536, 4, 65536).ok());  // header_size overflow
  // Table size 1 is fine for reading (QEMU's Q1 refusal is not copied).
  EXPECT_TRUE(MakeGeometry(65536, 1, 1).ok());
  EXPECT_TRUE(MakeGeometry(65536, 4, 65535).ok());
}

TEST(QedGeometry, ClusterPredicate) {
  const Geometry g = MustGeometry(65536, 4);
  const uint64_t fs = 10 * 65536;
  EXPECT_TRUE(g.ValidClusterOffset(65536, fs));
  EXPECT_TRUE(g.ValidClusterOffset(9 * 65536, fs));
  EXPECT_FALSE(g.ValidClusterOffset(0, fs));            // header
  EXPECT_FALSE(g.ValidClusterOffset(65536 + 512, fs));  // misaligned
  EXPECT_FALSE(g.ValidClusterOffset(10 * 65536, fs));   // at EOF
  EXPECT_FALSE(g.ValidClusterOffset(~uint64_t{0} << 16, fs));
  // A partial trailing cluster does not count: the size is rounded down.
  EXPECT_FALSE(g.ValidClusterOffset(10 * 65536, fs + 4096));
  EXPECT_TRUE(g.ValidClusterOffset(10 * 65536, fs + 65536));
  // header_size 0 (QEMU accepts it): cluster 0 is a regular cluster.
  const Geometry g0 = MustGeometry(65536, 4, 0);
  EXPECT_TRUE(g0.ValidClusterOffset(0, fs));
}

TEST(QedGeometry, TablePredicate) {
  const Geometry g = MustGeometry(65536, 4);
  const uint64_t fs = 10 * 65536;
  EXPECT_TRUE(g.ValidTableOffset(65536, fs));
  EXPECT_TRUE(g.ValidTableOffset(6 * 65536, fs));   // clusters 6..9: last one inside
  EXPECT_FALSE(g.ValidTableOffset(7 * 65536, fs));  // clusters 7..10: runs past EOF
  EXPECT_FALSE(g.ValidTableOffset(0, fs));
  EXPECT_FALSE(g.ValidTableOffset(65536 + 4096, fs));
  // Offsets whose end wraps around 2^64 are refused, not wrapped into range.
  EXPECT_FALSE(g.ValidTableOffset(~uint64_t{0} - 65535, ~uint64_t{0}));
  EXPECT_FALSE(g.ValidTableOffset(~uint64_t{0} - 2 * 65536 + 1, ~uint64_t{0}));
  // Single-cluster tables: the last cluster of the file is a valid table (unlike QEMU, Q1).
  const Geometry g1 = MustGeometry(65536, 1);
  EXPECT_TRUE(g1.ValidTableOffset(9 * 65536, fs));
  EXPECT_FALSE(g1.ValidTableOffset(10 * 65536, fs));
}

struct BadHeaderCase {
  const char* name;
  std::function<void(Header&)> mutate;
  uint64_t file_size;
  std::vector<std::string> expect;  // substrings of the message
};

TEST(QedValidate, MalformedHeaders_RefusedWithMessageNamingTheProblem) {
  const uint64_t fs = kDefaultFileSize;
  const std::vector<BadHeaderCase> cases = {
      {"bad magic",
       [](Header& h) { h.magic = 0x12345678; },
       fs,
       {"not a QED image", "bad magic 0x12345678"}},
      {"zero magic (all-zero file)",
       [](Header& h) {
         h = Header{};
         h.magic = 0;
       },
       fs,
       {"not a QED image", "0x00000000"}},
      {"qcow2 magic", [](Header& h) { h.magic = 0xfb494651; }, fs, {"bad magic 0xfb494651"}},
      {"unknown feature 0x8",
       [](Header& h) { h.features = 0x8; },
       fs,
       {"unsupported QED features 0x8"}},
      {"unknown high features",
       [](Header& h) { h.features = 0xf0 | kFeatureBackingFile; },
       fs,
       {"unsupported QED features 0xf0"}},
      {"cluster size not a power of two",
       [](Header& h) { h.cluster_size = 3000; },
       fs,
       {"invalid cluster size 3000: must be a power of two between 4096 and 67108864"}},
      {"cluster size too small",
       [](Header& h) { h.cluster_size = 2048; },
       fs,
       {"invalid cluster size 2048"}},
      {"cluster size too large",
       [](Header& h) { h.cluster_size = 128u << 20; },
       fs,
       {"invalid cluster size 134217728"}},
      {"cluster size 0", [](Header& h) { h.cluster_size = 0; }, fs, {"invalid cluster size 0"}},
      {"truncated file smaller than header",
       [](Header&) {},
       32,
       {"file size 32 is smaller than the 64-byte QED header"}},
      {"empty file", [](Header&) {}, 0, {"file size 0"}},
      {"table size 0", [](Header& h) { h.table_size = 0; }, fs, {"invalid table size 0"}},
      {"table size 32",
       [](Header& h) { h.table_size = 32; },
       fs,
       {"invalid table size 32: must be a power of two between 1 and 16"}},
      {"table size 3", [](Header& h) { h.table_size = 3; }, fs, {"invalid table size 3"}},
      {"Q2 geometry 4M/4",
       [](Header& h) {
         h.cluster_size = 4u << 20;
         h.l1_table_offset = 4u << 20;
         h.image_size = 0;
       },
       5ull * (4u << 20),
       {"cluster size 4194304 with table size 4", "overflows 64 bits"}},
      {"Q2 geometry 2M/16",
       [](Header& h) {
         h.cluster_size = 2u << 20;
         h.table_size = 16;
         h.l1_table_offset = 2u << 20;
       },
       17ull * (2u << 20),
       {"overflows 64 bits"}},
      {"image size not a multiple of 512",
       [](Header& h) { h.image_size = 1000; },
       fs,
       {"image size 1000 is not a multiple of 512"}},
      {"image size too large",
       [](Header& h) { h.image_size = 64 * kTiB + 512; },
       fs,
       {"image size 70368744178176 exceeds the maximum 70368744177664"}},
      {"image size too large for 4K/4",
       [](Header& h) {
         h.cluster_size = 4096;
         h.l1_table_offset = 4096;
         h.image_size = 16 * kGiB + 4096;
       },
       5 * 4096,
       {"exceeds the maximum 17179869184"}},
      {"L1 offset misaligned",
       [](Header& h) { h.l1_table_offset = 0x10200; },
       fs,
       {"L1 table offset 0x10200 is invalid", "not a multiple of the cluster size"}},
      {"L1 offset inside header",
       [](Header& h) { h.l1_table_offset = 0; },
       fs,
       {"L1 table offset 0x0 is invalid", "inside the 1 header cluster"}},
      {"L1 offset past EOF",
       [](Header& h) { h.l1_table_offset = 0x20000; },
       fs,
       {"L1 table offset 0x20000 is invalid", "past the end of the file", "(0x50000)"}},
      {"L1 table cut by EOF",
       [](Header&) {},
       fs - 65536,
       {"L1 table offset 0x10000 is invalid", "does not end before the end of the file"}},
      {"L1 offset wraps 2^64",
       [](Header& h) { h.l1_table_offset = 0xffffffffffff0000; },
       fs,
       {"L1 table offset 0xffffffffffff0000 is invalid"}},
      {"header_size overflows",
       [](Header& h) {
         h.header_size = 65536;
         h.l1_table_offset = 4 * kGiB;
       },
       4 * kGiB + 4 * 65536,
       {"header_size 65536 overflows"}},
      {"backing name past header cluster",
       [](Header& h) {
         h.features = kFeatureBackingFile;
         h.backing_filename_offset = 64;
         h.backing_filename_size = 65536;
       },
       fs,
       {"backing file name (offset 64, size 65536) lies outside the header clusters"}},
      {"backing name offset wraps 32 bits",
       [](Header& h) {
         h.features = kFeatureBackingFile;
         h.backing_filename_offset = 0xffffffff;
         h.backing_filename_size = 2;
       },
       fs,
       {"backing file name (offset 4294967295, size 2) lies outside"}},
      {"backing name too long",
       [](Header& h) {
         h.features = kFeatureBackingFile | kFeatureBackingFormatNoProbe;
         h.backing_filename_offset = 64;
         h.backing_filename_size = 4096;
       },
       fs,
       {"backing file name too long", "4096 bytes"}},
      // Order: the first failing step in QEMU's order is the one reported.
      {"magic before features",
       [](Header& h) {
         h.magic = 1;
         h.features = 0x8;
       },
       fs,
       {"bad magic"}},
      {"features before cluster size",
       [](Header& h) {
         h.features = 0x10;
         h.cluster_size = 1;
       },
       fs,
       {"unsupported QED features 0x10"}},
      {"cluster size before file length",
       [](Header& h) { h.cluster_size = 1; },
       10,
       {"invalid cluster size 1"}},
      {"table size before image size",
       [](Header& h) {
         h.table_size = 5;
         h.image_size = 1;
       },
       fs,
       {"invalid table size 5"}},
      {"image size before L1 offset",
       [](Header& h) {
         h.image_size = 513;
         h.l1_table_offset = 1;
       },
       fs,
       {"image size 513"}},
  };
  ASSERT_GE(cases.size(), 20u);
  for (const BadHeaderCase& c : cases) {
    SCOPED_TRACE(c.name);
    Header h = DefaultHeader();
    c.mutate(h);
    absl::StatusOr<Geometry> g = ValidateHeader(h, c.file_size);
    ASSERT_FALSE(g.ok());
    for (const std::string& want : c.expect) {
      EXPECT_NE(g.status().message().find(want), std::string::npos)
          << "message: " << g.status().message() << "\nwanted: " << want;
    }
  }
}

TEST(QedValidate, UnknownFeatures_AreUnimplementedNotCorrupt) {
  Header h = DefaultHeader();
  h.features = 0x8;
  EXPECT_EQ(ValidateHeader(h, kDefaultFileSize).status().code(), absl::StatusCode::kUnimplemented);
}

TEST(QedValidate, AcceptedHeaders) {
  const uint64_t fs = kDefaultFileSize;
  std::vector<std::pair<const char*, std::function<void(Header&)>>> ok = {
      {"default", [](Header&) {}},
      {"unknown compat bits", [](Header& h) { h.compat_features = 0xff; }},
      {"unknown autoclear bits", [](Header& h) { h.autoclear_features = 0x3; }},
      {"need check", [](Header& h) { h.features = kFeatureNeedCheck; }},
      {"image size 0", [](Header& h) { h.image_size = 0; }},
      {"image size exactly the maximum", [](Header& h) { h.image_size = 64 * kTiB; }},
      {"image size 512, not a cluster multiple", [](Header& h) { h.image_size = 512; }},
      {"backing flag with empty name",
       [](Header& h) {
         h.features = kFeatureBackingFile;
         h.backing_filename_offset = 64;
       }},
      {"backing name filling the header cluster",
       [](Header& h) {
         h.features = kFeatureBackingFile;
         h.backing_filename_offset = 64;
         h.backing_filename_size = 4095;
       }},
      {"bad backing bounds ignored without the flag",
       [](Header& h) {
         h.backing_filename_offset = 0xffffffff;
         h.backing_filename_size = 0xffffffff;
       }},
      {"header_size 0 with L1 at offset 0",
       [](Header& h) {
         h.header_size = 0;
         h.l1_table_offset = 0;
       }},
      {"table size 1 (QEMU cannot open it, we can)", [](Header& h) { h.table_size = 1; }},
      {"L1 after a larger header",
       [](Header& h) {
         h.header_size = 2;
         h.l1_table_offset = 0x20000;
       }},
      {"Q2-adjacent geometry 8M/1 with size 2^63",
       [](Header& h) {
         h.cluster_size = 8u << 20;
         h.table_size = 1;
         h.l1_table_offset = 8u << 20;
         h.image_size = uint64_t{1} << 63;
       }},
  };
  for (auto& [name, mutate] : ok) {
    SCOPED_TRACE(name);
    Header h = DefaultHeader();
    mutate(h);
    const uint64_t size =
        std::max<uint64_t>(fs, h.l1_table_offset + h.table_size * uint64_t{h.cluster_size});
    absl::StatusOr<Geometry> g = ValidateHeader(h, size);
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_EQ(g->cluster_size, h.cluster_size);
    EXPECT_EQ(g->table_size, h.table_size);
  }
}

TEST(QedValidate, RealQemuImages_Validate) {
  TempDir dir;
  const std::string opts[] = {"", "-o cluster_size=4096", "-o table_size=16",
                              "-o cluster_size=1M,table_size=2"};
  for (const std::string& o : opts) {
    SCOPED_TRACE(o);
    const std::string path = dir.File("img.qed");
    MustRun("qemu-img create -q -f qed " + o + " '" + path + "' 1G");
    absl::StatusOr<fmt_test::LoadedImage> img = fmt_test::LoadImage(path);
    ASSERT_TRUE(img.ok()) << img.status();
    EXPECT_EQ(img->header.image_size, kGiB);
    EXPECT_EQ(img->file_size, (1 + img->geo.table_size) * uint64_t{img->geo.cluster_size});
  }
}

TEST(QedBackingName, ReadsNameFromQemuImage) {
  TempDir dir;
  MustRun("qemu-img create -q -f raw '" + dir.File("base.raw") + "' 1M");
  MustRun("cd '" + dir.path() + "' && qemu-img create -q -f qed -b base.raw -F raw ov.qed 4M");
  std::vector<std::byte> prefix = ReadBytes(dir.File("ov.qed"), 0, 65536);
  ASSERT_EQ(prefix.size(), 65536u);
  const Header h =
      DecodeHeader(std::span<const std::byte, kHeaderBytes>(prefix.data(), kHeaderBytes));
  EXPECT_EQ(h.features, kFeatureBackingFile | kFeatureBackingFormatNoProbe);
  absl::StatusOr<std::string> name = BackingFileName(h, prefix);
  ASSERT_TRUE(name.ok()) << name.status();
  EXPECT_EQ(*name, "base.raw");
}

TEST(QedBackingName, NoFlagOrEmpty_GivesEmptyName) {
  std::vector<std::byte> prefix(128, std::byte{'x'});
  Header h = DefaultHeader();
  h.backing_filename_offset = 64;
  h.backing_filename_size = 5;
  EXPECT_EQ(*BackingFileName(h, prefix), "");  // flag clear
  h.features = kFeatureBackingFile;
  EXPECT_EQ(*BackingFileName(h, prefix), "xxxxx");
  h.backing_filename_size = 0;
  EXPECT_EQ(*BackingFileName(h, prefix), "");
}

TEST(QedBackingName, Errors) {
  std::vector<std::byte> prefix(100);
  Header h = DefaultHeader();
  h.features = kFeatureBackingFile;
  h.backing_filename_offset = 64;
  h.backing_filename_size = 65536;
  EXPECT_NE(BackingFileName(h, prefix).status().message().find("outside the header clusters"),
            std::string::npos);
  h.backing_filename_size = 5000;
  EXPECT_NE(BackingFileName(h, prefix).status().message().find("too long"), std::string::npos);
  h.backing_filename_size = 50;  // fits the header cluster, but only 100 bytes were read
  EXPECT_NE(BackingFileName(h, prefix).status().message().find("beyond the 100 bytes read"),
            std::string::npos);
}

}  // namespace
}  // namespace qedfuse::qed
