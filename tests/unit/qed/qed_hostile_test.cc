// Hostile images: a table of malformed QED files built byte by byte. Each one is either refused
// at open with a message that names the problem, or opens and fails only the I/O that touches the
// bad metadata with EIO while every other read still works. Never a crash (the ASan build runs
// this too), and a read-only open never changes a byte of the file.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "unit/qed/qed_test_util.h"

namespace qedfuse::qedtest {
namespace {

// Builds a QED file in memory with full control over every field (no validation).
//
// The base image (cs 4 KiB, ts 2: 1024 entries, 4 MiB per L2 table, 8 MiB disk):
//   0x0000 header   0x1000-0x2fff L1   0x3000 data A (0x11)   0x4000 data B (0x22)
//   0x5000-0x6fff L2 #0 (entries 0 -> A, 1 -> B, 2 -> zero cluster)
//   0x7000 data C (0x33)   0x8000-0x9fff L2 #1 (entry 0 -> C)   file size 0xa000
// Guest view: [0,4K) 0x11, [4K,8K) 0x22, [8K,12K) zeros, [4M,4M+4K) 0x33, everything else zeros.
struct Image {
  uint32_t magic = 0x00444551;
  uint32_t cs = 4096;
  uint32_t ts = 2;
  uint32_t hs = 1;
  uint64_t features = 0;
  uint64_t compat = 0;
  uint64_t autoclear = 0;
  uint64_t l1 = 4096;
  uint64_t size = 8 << 20;
  uint32_t bfo = 0;
  uint32_t bfs = 0;
  Bytes file;
  uint64_t l2a = 0, l2b = 0, data_a = 0, data_b = 0, data_c = 0;

  static Image Base(uint32_t header_clusters = 1) {
    Image im;
    im.hs = header_clusters;
    im.l1 = uint64_t{im.hs} * im.cs;
    im.file.assign(im.cs * (im.hs + im.ts), 0);
    im.data_a = im.AppendClusters(1, 0x11);
    im.data_b = im.AppendClusters(1, 0x22);
    im.l2a = im.AppendClusters(im.ts, 0);
    im.data_c = im.AppendClusters(1, 0x33);
    im.l2b = im.AppendClusters(im.ts, 0);
    im.SetL1(0, im.l2a);
    im.SetL1(1, im.l2b);
    im.SetEntry(im.l2a, 0, im.data_a);
    im.SetEntry(im.l2a, 1, im.data_b);
    im.SetEntry(im.l2a, 2, 1);
    im.SetEntry(im.l2b, 0, im.data_c);
    return im;
  }
  uint64_t AppendClusters(uint32_t n, uint8_t fill) {
    uint64_t off = file.size();
    file.resize(off + uint64_t{n} * cs, fill);
    return off;
  }
  void Put64(uint64_t off, uint64_t v) {
    if (file.size() < off + 8) file.resize(off + 8, 0);
    for (int i = 0; i < 8; ++i) file[off + i] = static_cast<uint8_t>(v >> (8 * i));
  }
  void Put32(uint64_t off, uint32_t v) {
    for (int i = 0; i < 4; ++i) file[off + i] = static_cast<uint8_t>(v >> (8 * i));
  }
  void SetL1(uint64_t i, uint64_t v) { Put64(l1 + 8 * i, v); }
  void SetEntry(uint64_t table, uint64_t i, uint64_t v) { Put64(table + 8 * i, v); }
  void SetBacking(const std::string& name, bool raw) {
    features |= 1 | (raw ? 4 : 0);
    bfo = 64;
    bfs = static_cast<uint32_t>(name.size());
    std::copy(name.begin(), name.end(), file.begin() + 64);
  }
  Bytes Encode() const {
    Image c = *this;
    c.Put32(0, magic);
    c.Put32(4, cs);
    c.Put32(8, ts);
    c.Put32(12, hs);
    c.Put64(16, features);
    c.Put64(24, compat);
    c.Put64(32, autoclear);
    c.Put64(40, l1);
    c.Put64(48, size);
    c.Put32(56, bfo);
    c.Put32(60, bfs);
    return c.file;
  }
};

bool ContainsIgnoreCase(std::string hay, std::string needle) {
  auto lower = [](std::string& s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  };
  lower(hay);
  lower(needle);
  return hay.find(needle) != std::string::npos;
}

// Expected outcome of one read on an image that opens.
struct ReadExpect {
  uint64_t off;
  uint32_t len;
  int fill;  // expected byte value, or -1 for "fails with EIO"
};

struct Case {
  std::string name;
  std::function<void(Image&)> mutate;
  std::string refused;                           // non-empty: open must fail with this substring
  std::vector<ReadExpect> reads;                 // when it opens
  uint32_t header_clusters = 1;                  // of the base image
  std::function<void(const std::string&)> post;  // edits the written file (sparse, truncate)
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

const std::vector<ReadExpect> kGoodReads = {
    {0, 4096, 0x11}, {4096, 4096, 0x22}, {8192, 4096, 0}, {4 << 20, 4096, 0x33}, {6 << 20, 512, 0}};

std::vector<Case> Cases() {
  std::vector<Case> c;
  auto refuse = [&](std::string name, std::function<void(Image&)> m, std::string msg,
                    uint32_t hs = 1, std::function<void(const std::string&)> post = nullptr) {
    c.push_back({std::move(name), std::move(m), std::move(msg), {}, hs, std::move(post)});
  };
  auto eio = [&](std::string name, std::function<void(Image&)> m, std::vector<ReadExpect> reads,
                 uint32_t hs = 1) {
    c.push_back({std::move(name), std::move(m), "", std::move(reads), hs, nullptr});
  };
  refuse(
      "bad_magic", [](Image& im) { im.magic = 0x00444552; }, "magic");
  refuse(
      "zero_magic_qcow2ish", [](Image& im) { im.magic = 0xfb494651; }, "magic");
  refuse(
      "cluster_size_zero", [](Image& im) { im.cs = 0; }, "cluster size");
  refuse(
      "cluster_size_2k", [](Image& im) { im.cs = 2048; }, "cluster size");
  refuse(
      "cluster_size_not_pow2", [](Image& im) { im.cs = 12288; }, "cluster size");
  refuse(
      "cluster_size_128m", [](Image& im) { im.cs = 128u << 20; }, "cluster size");
  refuse(
      "table_size_zero", [](Image& im) { im.ts = 0; }, "table size");
  refuse(
      "table_size_3", [](Image& im) { im.ts = 3; }, "table size");
  refuse(
      "table_size_32", [](Image& im) { im.ts = 32; }, "table size");
  refuse(
      "geometry_overflows",
      [](Image& im) {
        im.cs = 16u << 20;
        im.ts = 4;
        im.size = 0x1000000;
      },
      "overflow");
  // 0x100000 header clusters of 4 KiB are 4 GiB, more than a u32 byte count can hold; the L1
  // table sits right after them in a sparse file so that only the header_size rule can fire.
  refuse(
      "header_size_overflow",
      [](Image& im) {
        im.hs = 0x100000;
        im.l1 = uint64_t{0x100000} * 4096;
      },
      "header_size", 1,
      [](const std::string& p) { ASSERT_EQ(::truncate(p.c_str(), (4ll << 30) + 8192), 0); });
  refuse(
      "image_size_unaligned", [](Image& im) { im.size = (8 << 20) + 100; }, "512");
  refuse(
      "image_size_too_large", [](Image& im) { im.size = (16ull << 30) + 512; }, "maximum");
  refuse(
      "image_size_huge", [](Image& im) { im.size = ~uint64_t{511}; }, "maximum");
  refuse(
      "l1_past_eof", [](Image& im) { im.l1 = im.file.size(); }, "L1");
  refuse(
      "l1_runs_past_eof", [](Image& im) { im.l1 = im.file.size() - im.cs; }, "L1");
  refuse(
      "l1_misaligned", [](Image& im) { im.l1 = 4096 + 8; }, "L1");
  refuse(
      "l1_in_header", [](Image& im) { im.l1 = 0; }, "L1");
  refuse(
      "l1_offset_wraps", [](Image& im) { im.l1 = ~uint64_t{4095}; }, "L1");
  refuse(
      "unknown_feature", [](Image& im) { im.features = 0x08; }, "feature");
  refuse(
      "unknown_feature_high", [](Image& im) { im.features = 1ull << 63; }, "feature");
  refuse(
      "backing_name_out_of_bounds",
      [](Image& im) {
        im.features = 1;
        im.bfo = 4000;
        im.bfs = 200;
      },
      "backing file name");
  refuse(
      "backing_name_offset_wraps",
      [](Image& im) {
        im.features = 1;
        im.bfo = 0xffffff00u;
        im.bfs = 0x200;
      },
      "backing file name");
  refuse(
      "truncated_to_header", [](Image& im) { im.file.resize(64); }, "L1");
  refuse(
      "truncated_to_40_bytes", [](Image&) {}, "smaller than the 64-byte", 1,
      [](const std::string& p) { ASSERT_EQ(::truncate(p.c_str(), 40), 0); });
  refuse(
      "truncated_inside_l1", [](Image&) {}, "L1", 1,
      [](const std::string& p) { ASSERT_EQ(::truncate(p.c_str(), 4096 + 2048), 0); });
  refuse(
      "backing_name_too_long",
      [](Image& im) {
        im.features = 1;
        im.bfo = 64;
        im.bfs = 5000;
      },
      "too long", 2);
  refuse(
      "missing_backing_file", [](Image& im) { im.SetBacking("does-not-exist.raw", true); },
      "does-not-exist.raw");

  eio("l1_entry_is_one", [](Image& im) { im.SetL1(1, 1); },
      {{0, 4096, 0x11}, {4 << 20, 4096, -1}, {(4 << 20) + 8192, 512, -1}, {4096, 4096, 0x22}});
  eio("l1_entry_misaligned", [](Image& im) { im.SetL1(1, im.l2b + 512); },
      {{0, 4096, 0x11}, {4 << 20, 4096, -1}});
  eio("l1_entry_past_eof", [](Image& im) { im.SetL1(1, 0x100000); },
      {{0, 4096, 0x11}, {4 << 20, 4096, -1}});
  eio("l1_entry_table_runs_past_eof", [](Image& im) { im.SetL1(1, im.file.size() - im.cs); },
      {{0, 4096, 0x11}, {4 << 20, 4096, -1}});
  // With two header clusters, cluster 1 is header: tables and data may not live there.
  eio(
      "l1_entry_in_header", [](Image& im) { im.SetL1(1, 4096); },
      {{0, 4096, 0x11}, {4 << 20, 4096, -1}}, 2);
  eio(
      "l2_entry_in_header", [](Image& im) { im.SetEntry(im.l2a, 1, 4096); },
      {{0, 4096, 0x11}, {4096, 4096, -1}, {4 << 20, 4096, 0x33}}, 2);
  eio("l2_entry_misaligned", [](Image& im) { im.SetEntry(im.l2a, 1, im.data_b + 8); },
      {{0, 4096, 0x11}, {4096, 4096, -1}, {5000, 10, -1}, {8192, 4096, 0}, {4 << 20, 4096, 0x33}});
  eio("l2_entry_past_eof", [](Image& im) { im.SetEntry(im.l2a, 1, 0x40000000); },
      {{0, 4096, 0x11}, {4096, 4096, -1}, {4 << 20, 4096, 0x33}});
  eio("l2_entry_huge", [](Image& im) { im.SetEntry(im.l2a, 1, ~uint64_t{4095}); },
      {{0, 4096, 0x11}, {4096, 4096, -1}, {4 << 20, 4096, 0x33}});
  // Spanning read: a request over a good and a bad cluster fails as a whole.
  eio("l2_entry_bad_in_spanning_read", [](Image& im) { im.SetEntry(im.l2a, 1, 0x12345); },
      {{0, 8192, -1}, {0, 4096, 0x11}});
  eio(
      "compat_unknown_bits_open", [](Image& im) { im.compat = 0xf0; }, kGoodReads);
  eio(
      "autoclear_unknown_bits_open", [](Image& im) { im.autoclear = 0x3; }, kGoodReads);
  eio(
      "trailing_partial_cluster", [](Image& im) { im.file.resize(im.file.size() + 1000, 0xee); },
      kGoodReads);
  eio("image_size_zero", [](Image& im) { im.size = 0; }, {});
  eio("image_size_not_cluster_multiple", [](Image& im) { im.size = (4 << 20) + 1536; },
      {{0, 4096, 0x11}, {4 << 20, 1536, 0x33}});
  return c;
}

class HostileImages : public ::testing::TestWithParam<Case> {
 protected:
  coro::EventLoop loop_;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) { return info.param.name; }

void CheckReads(coro::EventLoop& loop, block::BlockBackend& bb, const std::vector<ReadExpect>& rs) {
  for (const ReadExpect& r : rs) {
    SCOPED_TRACE(absl::StrCat("read ", r.off, "+", r.len));
    auto got = ReadSync(loop, bb, r.off, r.len);
    if (r.fill < 0) {
      ASSERT_FALSE(got) << "read of corrupt metadata succeeded";
      EXPECT_EQ(ToErrno(got.error()), EIO) << got.error().message();
    } else {
      ASSERT_TRUE(got) << got.error().message();
      EXPECT_EQ(*got, Bytes(r.len, static_cast<uint8_t>(r.fill)));
    }
  }
}

TEST_P(HostileImages, RefusedOrFailsOnlyAffectedIo) {
  const Case& tc = GetParam();
  TempDir dir;
  const std::string img = dir / "h.qed";
  Image im = Image::Base(tc.header_clusters);
  tc.mutate(im);
  WriteFileBytes(img, im.Encode());
  if (tc.post) tc.post(img);
  const uint64_t before = HashFile(img);

  // Read-only.
  {
    auto bb = OpenSync(loop_, img, /*read_only=*/true, nullptr, "qed");
    if (!tc.refused.empty()) {
      ASSERT_FALSE(bb.ok()) << "hostile image was accepted";
      EXPECT_TRUE(ContainsIgnoreCase(std::string(bb.status().message()), tc.refused))
          << "message does not name the problem (" << tc.refused << "): " << bb.status();
    } else {
      ASSERT_TRUE(bb.ok()) << bb.status();
      CheckReads(loop_, **bb, tc.reads);
      EXPECT_TRUE(CloseSync(loop_, *bb).ok());
    }
  }
  EXPECT_EQ(HashFile(img), before) << "read-only open changed the file";

  // Read-write.
  auto bb = OpenSync(loop_, img, /*read_only=*/false, nullptr, "qed");
  if (!tc.refused.empty()) {
    ASSERT_FALSE(bb.ok()) << "hostile image was accepted read-write";
    EXPECT_TRUE(ContainsIgnoreCase(std::string(bb.status().message()), tc.refused)) << bb.status();
    EXPECT_EQ(HashFile(img), before) << "refused read-write open changed the file";
    return;
  }
  ASSERT_TRUE(bb.ok()) << bb.status();
  CheckReads(loop_, **bb, tc.reads);
  // Writes that hit bad metadata fail with EIO rather than writing somewhere.
  for (const ReadExpect& r : tc.reads) {
    if (r.fill >= 0) continue;
    auto w = WriteSync(loop_, **bb, r.off, Bytes(r.len, 0x99));
    ASSERT_FALSE(w) << "write through corrupt metadata succeeded at " << r.off;
    EXPECT_EQ(ToErrno(w.error()), EIO);
  }
  // A failed write may have changed healthy clusters it also covered, so only the failures are
  // re-checked.
  for (const ReadExpect& r : tc.reads) {
    if (r.fill < 0) CheckReads(loop_, **bb, {r});
  }
  // The driver keeps serving: a write to healthy space (guest cluster 3, an allocating write
  // into L2 #0) works and reads back. (It grows the file, which can make an entry that pointed
  // just past the old end look valid; QEMU behaves the same, so nothing is asserted about the
  // bad entries after this point.)
  if ((*bb)->length() >= 4 * 4096) {
    ASSERT_TRUE(WriteSync(loop_, **bb, 3 * 4096, Bytes(4096, 0x5c)));
    CheckReads(loop_, **bb, {{3 * 4096, 4096, 0x5c}});
  }
  EXPECT_TRUE(CloseSync(loop_, *bb).ok());
}

INSTANTIATE_TEST_SUITE_P(Table, HostileImages, ::testing::ValuesIn(Cases()), CaseName);

class HostileMisc : public ::testing::Test {
 protected:
  coro::EventLoop loop_;
  TempDir dir_;
};

// The base image is valid: QEMU agrees with our reading of it (guards the builder itself).
TEST_F(HostileMisc, BaseImageIsValidForQemu) {
  QEDTEST_REQUIRE_QEMU();
  const std::string img = dir_ / "base.qed";
  WriteFileBytes(img, Image::Base().Encode());
  CmdResult chk = QemuImgCheck(img);
  EXPECT_EQ(chk.exit_code, 0) << chk.out;
  CmdResult io = Shell(
      "qemu-io -r -f qed -c 'read -P 0x11 0 4k' -c 'read -P 0x22 4k 4k' "
      "-c 'read -P 0 8k 4k' -c 'read -P 0x33 4M 4k' " +
      Quote(img));
  EXPECT_EQ(io.out.find("verification failed"), std::string::npos) << io.out;
  auto bb = OpenSync(loop_, img, true);
  ASSERT_TRUE(bb.ok()) << bb.status();
  CheckReads(loop_, **bb, kGoodReads);
  EXPECT_TRUE(CloseSync(loop_, *bb).ok());
}

// Unknown compat bits stay in the header across a read-write session.
TEST_F(HostileMisc, CompatBitsKept) {
  const std::string img = dir_ / "c.qed";
  Image im = Image::Base();
  im.compat = 0x30;
  WriteFileBytes(img, im.Encode());
  auto bb = OpenSync(loop_, img, false);
  ASSERT_TRUE(bb.ok()) << bb.status();
  ASSERT_TRUE(WriteSync(loop_, **bb, 5 << 20, Bytes(4096, 1)));
  ASSERT_TRUE(CloseSync(loop_, *bb).ok());
  EXPECT_EQ(GetU64(ReadFileBytes(img), 24), 0x30u);
}

// Unknown autoclear bits: a read-write open clears them (on disk, before any other work); a
// read-only open keeps them.
TEST_F(HostileMisc, AutoclearBitsClearedOnlyReadWrite) {
  const std::string img = dir_ / "a.qed";
  Image im = Image::Base();
  im.autoclear = 0x3;
  WriteFileBytes(img, im.Encode());
  {
    auto bb = OpenSync(loop_, img, true);
    ASSERT_TRUE(bb.ok()) << bb.status();
    EXPECT_EQ(GetU64(ReadFileBytes(img), 32), 0x3u);
    EXPECT_TRUE(CloseSync(loop_, *bb).ok());
  }
  EXPECT_EQ(GetU64(ReadFileBytes(img), 32), 0x3u);
  auto bb = OpenSync(loop_, img, false);
  ASSERT_TRUE(bb.ok()) << bb.status();
  EXPECT_EQ(GetU64(ReadFileBytes(img), 32), 0u) << "RW open must clear unknown autoclear bits";
  EXPECT_TRUE(CloseSync(loop_, *bb).ok());
  EXPECT_EQ(GetU64(ReadFileBytes(img), 32), 0u);
}

// header_size 0 with the L1 table at offset 0 (QEMU accepts it): L1 entries 0-7 are the header
// fields. Entries 3-5 (compat and autoclear features, L1 offset) are 0, so a write under them
// would link a new L2 table from inside the header, and the header write at close would unlink it
// again: acknowledged data gone after the reopen. Such an image opens read-only (and reads), but a
// read-write open is refused with a message naming the problem, without changing the file.
TEST_F(HostileMisc, L1TableOverlappingTheHeaderOpensReadOnlyOnly) {
  const std::string img = dir_ / "l1-at-0.qed";
  Image im = Image::Base(/*header_clusters=*/0);
  im.size = 32 << 20;  // L1 indices 0-7 (4 MiB each) are all in use
  WriteFileBytes(img, im.Encode());
  const uint64_t before = HashFile(img);
  {
    auto bb = OpenSync(loop_, img, /*read_only=*/true, nullptr, "qed");
    ASSERT_TRUE(bb.ok()) << bb.status();
    CheckReads(loop_, **bb, {{20 << 20, 4096, 0}});  // L1 entry 5: the L1 offset field, 0
    EXPECT_TRUE(CloseSync(loop_, *bb).ok());
  }
  auto bb = OpenSync(loop_, img, /*read_only=*/false, nullptr, "qed");
  ASSERT_FALSE(bb.ok()) << "an image whose L1 table overlaps the header was opened read-write";
  EXPECT_TRUE(ContainsIgnoreCase(std::string(bb.status().message()), "overlaps the 64-byte header"))
      << bb.status();
  EXPECT_EQ(HashFile(img), before) << "refused read-write open changed the file";
}

// Backing loops are refused: a self-loop and a.qed -> b.qed -> a.qed, both read-only and RW.
TEST_F(HostileMisc, BackingLoopsRefused) {
  const std::string a = dir_ / "a.qed", b = dir_ / "b.qed", s = dir_ / "self.qed";
  Image ia = Image::Base();
  ia.SetBacking("b.qed", false);
  Image ib = Image::Base();
  ib.SetBacking("a.qed", false);
  Image is = Image::Base();
  is.SetBacking("self.qed", false);
  WriteFileBytes(a, ia.Encode());
  WriteFileBytes(b, ib.Encode());
  WriteFileBytes(s, is.Encode());
  // A symlink to itself through another name is the same file: still a loop.
  Image il = Image::Base();
  il.SetBacking("link.qed", false);
  WriteFileBytes(dir_ / "viaLink.qed", il.Encode());
  ASSERT_EQ(::symlink("viaLink.qed", (dir_ / "link.qed").c_str()), 0);
  for (const std::string& img : {a, s, dir_ / "viaLink.qed"}) {
    for (bool ro : {true, false}) {
      SCOPED_TRACE(img + (ro ? " ro" : " rw"));
      uint64_t h = HashFile(img);
      auto bb = OpenSync(loop_, img, ro);
      ASSERT_FALSE(bb.ok()) << "backing loop accepted";
      EXPECT_TRUE(ContainsIgnoreCase(std::string(bb.status().message()), "loop")) << bb.status();
      EXPECT_EQ(HashFile(img), h);
    }
  }
}

// A dirty image (NEED_CHECK) with a corrupt L2 entry: read-only opens serve it as is (the bad
// cluster fails with EIO, the file is untouched); a read-write open repairs the entry (it then
// reads as zeros) and clears the flag; QEMU then finds only the leak the repair leaves behind.
TEST_F(HostileMisc, DirtyCorruptImageRepairedOnRwOpen) {
  const std::string img = dir_ / "d.qed";
  Image im = Image::Base();
  im.features = 2;
  im.SetEntry(im.l2a, 1, 0x40000000);
  WriteFileBytes(img, im.Encode());
  const uint64_t h = HashFile(img);
  {
    block::OpenReport rep;
    auto bb = OpenSync(loop_, img, true, &rep);
    ASSERT_TRUE(bb.ok()) << bb.status();
    EXPECT_TRUE(rep.was_dirty);
    CheckReads(loop_, **bb, {{0, 4096, 0x11}, {4096, 4096, -1}});
    EXPECT_TRUE(CloseSync(loop_, *bb).ok());
  }
  EXPECT_EQ(HashFile(img), h);
  {
    block::OpenReport rep;
    auto bb = OpenSync(loop_, img, false, &rep);
    ASSERT_TRUE(bb.ok()) << bb.status();
    EXPECT_TRUE(rep.repaired);
    EXPECT_FALSE(rep.repair_summary.empty());
    CheckReads(loop_, **bb, {{0, 4096, 0x11}, {4096, 4096, 0}, {4 << 20, 4096, 0x33}});
    EXPECT_EQ(GetU64(ReadFileBytes(img), 16) & 2, 0u);
    EXPECT_TRUE(CloseSync(loop_, *bb).ok());
  }
  if (HaveQemu()) {
    CmdResult chk = QemuImgCheck(img);
    // Data B's cluster, unreferenced after the repair, was compacted away.
    EXPECT_EQ(chk.exit_code, 0) << chk.out;
  }
}

// Two L2 entries sharing one cluster, and an L2 entry aliasing the L1 table: lookups cannot see
// these without a full scan. Whatever the driver does, it must not crash, a read-only open must
// not write, and our checker (via a dirty RW open) and QEMU's must both flag the image.
TEST_F(HostileMisc, SharedAndAliasedClusters) {
  const std::string shared = dir_ / "shared.qed", alias = dir_ / "alias.qed";
  Image is = Image::Base();
  is.SetEntry(is.l2a, 3, is.data_a);  // guest cluster 3 shares data A
  WriteFileBytes(shared, is.Encode());
  Image ia = Image::Base();
  ia.SetEntry(ia.l2a, 3, ia.l1);  // guest cluster 3 aliases the L1 table
  WriteFileBytes(alias, ia.Encode());
  for (const std::string& img : {shared, alias}) {
    SCOPED_TRACE(img);
    const uint64_t h = HashFile(img);
    auto bb = OpenSync(loop_, img, true);
    ASSERT_TRUE(bb.ok()) << bb.status();
    CheckReads(loop_, **bb, kGoodReads);
    auto r = ReadSync(loop_, **bb, 3 * 4096, 4096);
    if (!r) {
      EXPECT_EQ(ToErrno(r.error()), EIO);
    }
    EXPECT_TRUE(CloseSync(loop_, *bb).ok());
    EXPECT_EQ(HashFile(img), h);
    if (HaveQemu()) {
      CmdResult chk = QemuImgCheck(img);
      EXPECT_EQ(chk.exit_code, 2) << chk.out;
    }
  }
  // The L1 alias must never be written through: a write to guest cluster 3 either fails with
  // EIO or leaves the L1 table (and so every other cluster) intact.
  auto bb = OpenSync(loop_, alias, false);
  ASSERT_TRUE(bb.ok()) << bb.status();
  auto w = WriteSync(loop_, **bb, 3 * 4096, Bytes(4096, 0xff));
  if (!w) {
    EXPECT_EQ(ToErrno(w.error()), EIO);
  }
  CheckReads(loop_, **bb, kGoodReads);
  EXPECT_TRUE(CloseSync(loop_, *bb).ok());
}

// Files that are not images at all, or cut short at awkward places.
TEST_F(HostileMisc, TruncationsNeverCrash) {
  const Bytes full = Image::Base().Encode();
  for (std::size_t len : {std::size_t{0}, std::size_t{3}, std::size_t{63}, std::size_t{64},
                          std::size_t{4096}, std::size_t{4096 * 3 - 1}, std::size_t{4096 * 3},
                          std::size_t{0x5000}, std::size_t{0x6000}, std::size_t{0x9000}}) {
    SCOPED_TRACE(len);
    const std::string img = dir_ / "t.qed";
    WriteFileBytes(img, Bytes(full.begin(), full.begin() + static_cast<long>(len)));
    const uint64_t h = HashFile(img);
    auto bb = OpenSync(loop_, img, true, nullptr, "qed");
    if (bb.ok()) {
      // Whatever opens must read without crashing; tables past EOF fail with EIO.
      for (uint64_t off : {0ull, 4096ull, 8192ull, 4ull << 20}) {
        auto r = ReadSync(loop_, **bb, off, 4096);
        if (!r) {
          EXPECT_EQ(ToErrno(r.error()), EIO) << off;
        }
      }
      EXPECT_TRUE(CloseSync(loop_, *bb).ok());
    } else {
      EXPECT_FALSE(bb.status().message().empty());
    }
    EXPECT_EQ(HashFile(img), h);
  }
}

// Random byte flips in metadata never crash the driver, and a read-only open never writes.
TEST_F(HostileMisc, RandomMetadataCorruptionNeverCrashes) {
  std::mt19937_64 rng(TestSeed(0x4057));
  const Bytes base = Image::Base().Encode();
  const int iters = Scaled(300, 5, 30);
  int opened = 0;
  for (int i = 0; i < iters; ++i) {
    Bytes b = base;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      // Header, L1 entries and L2 entries are where it hurts.
      static const uint64_t kSpots[] = {0, 4096, 0x5000, 0x8000};
      uint64_t at = kSpots[rng() % 4] + rng() % 64;
      b[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
    }
    const std::string img = dir_ / "r.qed";
    WriteFileBytes(img, b);
    const uint64_t h = HashFile(img);
    auto bb = OpenSync(loop_, img, true, nullptr, "qed");
    if (bb.ok()) {
      ++opened;
      uint64_t len = (*bb)->length();
      for (uint64_t off : {0ull, 4096ull, 8192ull, 4ull << 20, 6ull << 20}) {
        if (off >= len) continue;
        auto r = ReadSync(loop_, **bb, off, 4096);
        if (!r) {
          EXPECT_EQ(ToErrno(r.error()), EIO) << r.error().message();
        }
      }
      EXPECT_TRUE(CloseSync(loop_, *bb).ok());
    }
    ASSERT_EQ(HashFile(img), h) << "iteration " << i;
  }
  std::printf("[ info     ] %d of %d corrupted images opened read-only\n", opened, iters);
}

}  // namespace
}  // namespace qedfuse::qedtest
