// QEMU as the oracle (docs/qed-format.md §15).
//
//  * QEMU writes, we read: images made by qemu-img and written by qemu-io (patterns, unaligned
//    writes, aligned and unaligned `write -z`, writes across L2-table boundaries) must read back
//    through OpenImage (read-only) byte-identical to `qemu-img convert -O raw`.
//  * We write, QEMU verifies: images written through OpenImage (read-write, real temp file) must
//    pass `qemu-img check` with no findings and `qemu-img compare` equal to a raw model of the
//    same writes; our zero writes must show as zero clusters in `qemu-img map`.
// Geometries: cluster sizes 4 KiB, 64 KiB, 1 MiB and table sizes 2, 4, 8, 16. Files stay a few
// MiB (virtual sizes may be large, the images are sparse), below the sizes where QEMU's cluster
// arithmetic reports false leaks (quirk Q4).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "block/qed/qed_create.h"
#include "gtest/gtest.h"
#include "support/qemu_tools.h"
#include "unit/qed/qed_test_util.h"

namespace qedfuse::qedtest {
namespace {

struct Geo {
  uint32_t cs;
  uint32_t ts;
};

void PrintTo(const Geo& g, std::ostream* os) { *os << "cs=" << g.cs << " ts=" << g.ts; }

std::string GeoName(const ::testing::TestParamInfo<Geo>& info) {
  return absl::StrCat("cs", info.param.cs >> 10, "k_ts", info.param.ts);
}

uint64_t Coverage(const Geo& g) { return uint64_t{g.ts} * g.cs / 8 * g.cs; }

// Virtual size: a little more than two L2 tables' worth, so writes cross table boundaries, capped
// so converted raw files stay reasonable even though they are sparse. When one L2 table covers
// more than 4 GiB the disk stays inside the first table at 3 GiB: qemu-img 7.2 `map` and
// `compare` abort (assertion in bdrv_co_block_status) on an unallocated run longer than 4 GiB
// inside one table, even on images QEMU wrote itself.
uint64_t VirtualSize(const Geo& g) {
  if (Coverage(g) > (4ull << 30)) return 3ull << 30;
  return std::min<uint64_t>(2 * Coverage(g) + 16ull * g.cs, 8ull << 30);
}

enum class Kind { kWrite, kZero, kZeroUnmap };
struct Op {
  Kind kind;
  uint64_t off;
  uint64_t len;
  uint8_t pat;
};

// A scripted mix that exercises every lookup state: full and partial clusters, a multi-cluster
// run, aligned and unaligned zero writes, writes into zero clusters, in-place zero writes, and
// writes straddling L2-table boundaries and the end of the disk.
std::vector<Op> ScriptedOps(const Geo& g, uint64_t size) {
  const uint64_t cs = g.cs;
  const uint64_t cov = Coverage(g);
  std::vector<Op> ops = {
      {Kind::kWrite, 0, cs, 0xab},
      {Kind::kWrite, 70000, 5000, 0xcd},
      {Kind::kZero, 4 * cs, 2 * cs, 0},
      {Kind::kZero, 8 * cs + 512, 2 * cs, 0},
      {Kind::kWrite, 4 * cs + cs / 2, 512, 0x44},
      {Kind::kZero, 0, cs / 2, 0},
      {Kind::kWrite, 16 * cs + 1000, 5 * cs, 0x55},
      {Kind::kZeroUnmap, 17 * cs, cs, 0},
      {Kind::kWrite, cov - cs / 2, cs, 0x11},
      {Kind::kWrite, cov + 3 * cs + 100, 3000, 0x22},
      {Kind::kZero, cov + 8 * cs, 4 * cs, 0},
      {Kind::kWrite, 2 * cov - cs, 2 * cs, 0x66},
      {Kind::kWrite, size - cs, cs, 0x33},
      {Kind::kWrite, size - 1536, 1536, 0x77},
  };
  std::vector<Op> out;
  for (const Op& op : ops) {
    if (op.off + op.len <= size) out.push_back(op);
  }
  return out;
}

std::string QemuIoCommands(const std::vector<Op>& ops) {
  std::string s;
  for (const Op& op : ops) {
    switch (op.kind) {
      case Kind::kWrite:
        s += absl::StrFormat(" -c 'write -P 0x%02x %d %d'", op.pat, op.off, op.len);
        break;
      case Kind::kZero:
        s += absl::StrFormat(" -c 'write -z %d %d'", op.off, op.len);
        break;
      case Kind::kZeroUnmap:
        s += absl::StrFormat(" -c 'write -z -u %d %d'", op.off, op.len);
        break;
    }
  }
  return s;
}

// Ranges worth comparing: every op widened by two clusters, plus the start and end of the disk.
std::vector<std::pair<uint64_t, uint64_t>> Windows(const std::vector<Op>& ops, uint64_t size,
                                                   uint64_t cs) {
  std::vector<std::pair<uint64_t, uint64_t>> w;
  auto add = [&](uint64_t a, uint64_t b) {
    a = a > 2 * cs ? a - 2 * cs : 0;
    b = std::min(size, b + 2 * cs);
    w.emplace_back(a, b);
  };
  add(0, std::min<uint64_t>(size, 1 << 20));
  add(size > (1 << 20) ? size - (1 << 20) : 0, size);
  for (const Op& op : ops) add(op.off, op.off + op.len);
  std::sort(w.begin(), w.end());
  std::vector<std::pair<uint64_t, uint64_t>> merged;
  for (auto& r : w) {
    if (!merged.empty() && r.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, r.second);
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

// Compares our read-only view of |img| with `qemu-img convert -O raw` over |windows|.
void ExpectSameAsConvert(coro::EventLoop& loop, const std::string& img, const std::string& raw,
                         const std::vector<std::pair<uint64_t, uint64_t>>& windows) {
  CmdResult c = Shell("qemu-img convert -O raw " + Quote(img) + " " + Quote(raw));
  ASSERT_EQ(c.exit_code, 0) << c.out;
  auto bb = OpenSync(loop, img, /*read_only=*/true);
  ASSERT_TRUE(bb.ok()) << bb.status();
  ASSERT_EQ((*bb)->length(), FileSize(raw));
  int fd = ::open(raw.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  uint64_t compared = 0;
  for (auto [a, b] : windows) {
    for (uint64_t off = a; off < b; off += 4 << 20) {
      std::size_t n = static_cast<std::size_t>(std::min<uint64_t>(4 << 20, b - off));
      Bytes want(n);
      ASSERT_EQ(::pread(fd, want.data(), n, static_cast<off_t>(off)), static_cast<ssize_t>(n));
      auto got = ReadSync(loop, **bb, off, n);
      ASSERT_TRUE(got) << got.error().message() << " at " << off;
      ASSERT_EQ(got->size(), n);
      int64_t d = FirstDiff(got->data(), want.data(), n);
      ASSERT_EQ(d, -1) << "first difference at guest offset " << off + d << ": ours 0x" << std::hex
                       << int{(*got)[d]} << " qemu 0x" << int{want[d]};
      compared += n;
    }
  }
  ::close(fd);
  EXPECT_TRUE(CloseSync(loop, *bb).ok());
  EXPECT_GT(compared, 0u);
}

class QemuWritesWeRead : public ::testing::TestWithParam<Geo> {
 protected:
  coro::EventLoop loop_;
};

TEST_P(QemuWritesWeRead, ByteIdenticalToConvert) {
  QEDTEST_REQUIRE_QEMU();
  const Geo g = GetParam();
  TempDir dir;
  const std::string img = dir / "q.qed";
  const uint64_t size = VirtualSize(g);
  CmdResult r =
      Shell(absl::StrFormat("qemu-img create -q -f qed -o cluster_size=%d,table_size=%d %s %d",
                            g.cs, g.ts, Quote(img), size));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  std::vector<Op> ops = ScriptedOps(g, size);
  r = Shell("qemu-io -f qed" + QemuIoCommands(ops) + " " + Quote(img));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  ASSERT_EQ(r.out.find("error"), std::string::npos) << r.out;
  ExpectSameAsConvert(loop_, img, dir / "q.raw", Windows(ops, size, g.cs));
}

// Our block status (what `qedimg map` and SEEK_DATA/SEEK_HOLE use) agrees with `qemu-img map`:
// data/zero/present flags, depth, and the host offset of data clusters.
TEST_P(QemuWritesWeRead, BlockStatusMatchesQemuMap) {
  QEDTEST_REQUIRE_QEMU();
  const Geo g = GetParam();
  TempDir dir;
  const std::string img = dir / "q.qed";
  const uint64_t size = VirtualSize(g);
  ASSERT_EQ(
      Shell(absl::StrFormat("qemu-img create -q -f qed -o cluster_size=%d,table_size=%d %s %d",
                            g.cs, g.ts, Quote(img), size))
          .exit_code,
      0);
  std::vector<Op> ops = ScriptedOps(g, size);
  ASSERT_EQ(Shell("qemu-io -f qed" + QemuIoCommands(ops) + " " + Quote(img)).exit_code, 0);
  absl::Status mst;
  std::vector<test::MapExtent> map = test::QemuImgMapJson(img, &mst, "qed");
  ASSERT_TRUE(mst.ok()) << mst;
  ASSERT_FALSE(map.empty());
  auto bb = OpenSync(loop_, img, true);
  ASSERT_TRUE(bb.ok()) << bb.status();
  int compared = 0;
  for (const test::MapExtent& e : map) {
    const uint64_t end = e.start + e.length;
    for (uint64_t p : {e.start, (end - 1) & ~uint64_t{511}}) {
      SCOPED_TRACE(absl::StrCat("extent ", e.start, "+", e.length, " at ", p));
      auto st = loop_.RunSync((*bb)->GetStatus(p, end - p));
      ASSERT_TRUE(st) << st.error().message();
      EXPECT_GT(st->length, 0u);
      EXPECT_LE(p + st->length, end) << "our extent runs past qemu's";
      EXPECT_EQ(st->depth, e.depth);
      EXPECT_EQ(st->present, e.present);
      EXPECT_EQ(st->data, e.data);
      EXPECT_EQ(st->zero, e.zero);
      if (e.offset && e.data) {
        ASSERT_TRUE(st->offset.has_value());
        EXPECT_EQ(*st->offset, *e.offset + (p - e.start));
      }
      ++compared;
    }
  }
  EXPECT_TRUE(CloseSync(loop_, *bb).ok());
  EXPECT_GT(compared, 2);
}

// The same, with a random workload written by qemu-io over the whole (small) disk, compared in
// full.
TEST_P(QemuWritesWeRead, RandomQemuWorkloadWholeDisk) {
  QEDTEST_REQUIRE_QEMU();
  const Geo g = GetParam();
  TempDir dir;
  const std::string img = dir / "q.qed";
  const uint64_t size = std::min<uint64_t>(6ull << 20, VirtualSize(g));
  ASSERT_EQ(
      Shell(absl::StrFormat("qemu-img create -q -f qed -o cluster_size=%d,table_size=%d %s %d",
                            g.cs, g.ts, Quote(img), size))
          .exit_code,
      0);
  std::mt19937_64 rng(TestSeed(0x1e7e20));
  std::vector<Op> ops;
  for (int i = 0; i < 40; ++i) {
    uint64_t len = 1 + rng() % (3 * g.cs);
    uint64_t off = rng() % size;
    if (rng() % 2) off &= ~uint64_t{511};
    len = std::min(len, size - off);
    int k = static_cast<int>(rng() % 6);
    Kind kind = k == 0 ? Kind::kZero : (k == 1 ? Kind::kZeroUnmap : Kind::kWrite);
    ops.push_back({kind, off, len, static_cast<uint8_t>(1 + rng() % 255)});
  }
  CmdResult r = Shell("qemu-io -f qed" + QemuIoCommands(ops) + " " + Quote(img));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  ExpectSameAsConvert(loop_, img, dir / "q.raw", {{0, size}});
}

// Applies |ops| (plus random-content writes) through OpenImage RW and mirrors them into a raw
// model file; then QEMU must find the image clean and identical to the model.
void WeWriteQemuVerifies(coro::EventLoop& loop, const Geo& g, bool create_with_qemu) {
  TempDir dir;
  const std::string img = dir / "w.qed";
  const std::string model = dir / "model.raw";
  const uint64_t size = VirtualSize(g);
  if (create_with_qemu) {
    ASSERT_EQ(
        Shell(absl::StrFormat("qemu-img create -q -f qed -o cluster_size=%d,table_size=%d %s %d",
                              g.cs, g.ts, Quote(img), size))
            .exit_code,
        0);
  } else {
    qed::CreateOptions co;
    co.path = img;
    co.size = size;
    co.cluster_size = g.cs;
    co.table_size = g.ts;
    absl::Status st = qed::CreateImage(co);
    ASSERT_TRUE(st.ok()) << st;
  }
  ASSERT_EQ(Shell("truncate -s " + std::to_string(size) + " " + Quote(model)).exit_code, 0);
  int mfd = ::open(model.c_str(), O_WRONLY);
  ASSERT_GE(mfd, 0);

  std::vector<Op> ops = ScriptedOps(g, size);
  std::mt19937_64 rng(TestSeed(0x3a7e));
  // Random writes stay clear of the scripted ones' first 24 clusters (checked with map below).
  const uint64_t rand_base = 24ull * g.cs;
  const uint64_t rand_span = std::min<uint64_t>(size - rand_base, 4ull << 20);
  for (int i = 0; i < 30; ++i) {
    uint64_t off = rand_base + rng() % rand_span;
    uint64_t len = std::min<uint64_t>(1 + rng() % (2 * g.cs), size - off);
    int k = static_cast<int>(rng() % 5);
    ops.push_back({k == 0 ? Kind::kZero : (k == 1 ? Kind::kZeroUnmap : Kind::kWrite), off, len,
                   static_cast<uint8_t>(rng())});
  }

  auto bb = OpenSync(loop, img, /*read_only=*/false);
  ASSERT_TRUE(bb.ok()) << bb.status();
  ASSERT_EQ((*bb)->length(), size);
  const std::size_t scripted = ScriptedOps(g, size).size();
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    Bytes data(op.len, op.pat);
    if (op.kind == Kind::kWrite) {
      // Non-uniform content for half of the random writes (scripted ones stay uniform for the
      // qemu-io pattern checks below).
      if (i >= scripted && (op.pat & 1)) data = Pattern(op.len, op.pat);
      auto w = WriteSync(loop, **bb, op.off, data);
      ASSERT_TRUE(w) << w.error().message() << " write " << op.off << "+" << op.len;
    } else {
      std::fill(data.begin(), data.end(), 0);
      auto w = ZeroSync(loop, **bb, op.off, op.len, op.kind == Kind::kZeroUnmap);
      ASSERT_TRUE(w) << w.error().message() << " zero " << op.off << "+" << op.len;
    }
    ASSERT_EQ(::pwrite(mfd, data.data(), data.size(), static_cast<off_t>(op.off)),
              static_cast<ssize_t>(data.size()));
  }
  ASSERT_TRUE(FlushSync(loop, **bb));
  absl::Status cst = CloseSync(loop, *bb);
  ASSERT_TRUE(cst.ok()) << cst;
  ::close(mfd);

  Bytes hdr = ReadFileBytes(img);
  ASSERT_GE(hdr.size(), 64u);
  EXPECT_EQ(GetU64(hdr, 16) & 2, 0u) << "NEED_CHECK still set after a clean close";
  EXPECT_EQ(hdr.size() % g.cs, 0u) << "file length not a multiple of the cluster size";

  CmdResult chk = QemuImgCheck(img);
  EXPECT_EQ(chk.exit_code, 0) << chk.out;
  EXPECT_NE(chk.out.find("No errors were found"), std::string::npos) << chk.out;
  CmdResult cmp = QemuCompare(img, model);
  EXPECT_EQ(cmp.exit_code, 0) << cmp.out;

  // Aligned zero writes into unallocated space must be zero clusters (no data at depth 0).
  CmdResult map = Shell("qemu-img map --output=json -f qed " + Quote(img));
  ASSERT_EQ(map.exit_code, 0) << map.out;
  // The cluster at 4*cs was zeroed whole and then written at cs/2, so only the cluster at 5*cs
  // keeps a zero entry; look for the extent starting there.
  const std::string zero_at5 = absl::StrFormat("\"start\": %d,", 5 * g.cs);
  std::size_t pos = map.out.find(zero_at5);
  ASSERT_NE(pos, std::string::npos) << map.out;
  std::string line = map.out.substr(pos, map.out.find('}', pos) - pos);
  EXPECT_NE(line.find("\"zero\": true, \"data\": false"), std::string::npos) << line;

  // Spot checks of patterns through qemu-io.
  CmdResult io =
      Shell(absl::StrFormat("qemu-io -r -f qed -c 'read -P 0 0 %d' -c 'read -P 0xab %d %d' %s",
                            g.cs / 2, g.cs / 2, g.cs / 2, Quote(img)));
  EXPECT_EQ(io.exit_code, 0) << io.out;
  EXPECT_EQ(io.out.find("Pattern verification failed"), std::string::npos) << io.out;
}

class WeWriteQemuChecks : public ::testing::TestWithParam<Geo> {};

TEST_P(WeWriteQemuChecks, CleanAndIdenticalOnOurCreatedImage) {
  QEDTEST_REQUIRE_QEMU();
  coro::EventLoop loop;
  WeWriteQemuVerifies(loop, GetParam(), /*create_with_qemu=*/false);
}

TEST_P(WeWriteQemuChecks, CleanAndIdenticalOnQemuCreatedImage) {
  QEDTEST_REQUIRE_QEMU();
  coro::EventLoop loop;
  WeWriteQemuVerifies(loop, GetParam(), /*create_with_qemu=*/true);
}

const Geo kGeos[] = {{4096, 2},  {4096, 4},  {4096, 8},   {4096, 16},   {65536, 2},
                     {65536, 4}, {65536, 8}, {65536, 16}, {1 << 20, 2}, {1 << 20, 4}};

INSTANTIATE_TEST_SUITE_P(Geometries, QemuWritesWeRead, ::testing::ValuesIn(kGeos), GeoName);
INSTANTIATE_TEST_SUITE_P(Geometries, WeWriteQemuChecks, ::testing::ValuesIn(kGeos), GeoName);

// Our creation is byte-identical to qemu-img's for several geometries, with and without a
// backing file.
TEST(QedInterop, CreateMatchesQemuImg) {
  QEDTEST_REQUIRE_QEMU();
  TempDir dir;
  ASSERT_EQ(Shell("qemu-img create -q -f raw " + Quote(dir / "base.raw") + " 1M").exit_code, 0);
  for (const Geo& g : kGeos) {
    for (bool backing : {false, true}) {
      SCOPED_TRACE(absl::StrCat("cs=", g.cs, " ts=", g.ts, " backing=", backing));
      const std::string ref = dir / "ref.qed", ours = dir / "ours.qed";
      std::string opts = absl::StrFormat("cluster_size=%d,table_size=%d", g.cs, g.ts);
      if (backing) opts += ",backing_file=base.raw,backing_fmt=raw";
      CmdResult r = Shell("qemu-img create -q -f qed -o " + opts + " " + Quote(ref) + " 3000000");
      ASSERT_EQ(r.exit_code, 0) << r.out;
      qed::CreateOptions co;
      co.path = ours;
      co.size = 3000000;
      co.cluster_size = g.cs;
      co.table_size = g.ts;
      if (backing) {
        co.backing_file = "base.raw";
        co.backing_format = "raw";
      }
      absl::Status st = qed::CreateImage(co);
      ASSERT_TRUE(st.ok()) << st;
      EXPECT_EQ(Shell("cmp " + Quote(ref) + " " + Quote(ours)).exit_code, 0);
    }
  }
}

// NEED_CHECK interop: an image QEMU left dirty (write + abort) is repaired and cleared by our
// read-write open, left alone by our read-only open; data written before the abort survives.
TEST(QedInterop, QemuCrashedImageOpensDirty) {
  QEDTEST_REQUIRE_QEMU();
  coro::EventLoop loop;
  TempDir dir;
  const std::string img = dir / "c.qed";
  ASSERT_EQ(Shell("qemu-img create -q -f qed " + Quote(img) + " 8M").exit_code, 0);
  CmdResult r = Shell(
      "qemu-io -f qed -c 'write -P 0x5a 0 64k' -c 'write -P 0x6b 1M 4k' -c flush "
      "-c abort " +
      Quote(img));
  Bytes b = ReadFileBytes(img);
  ASSERT_EQ(GetU64(b, 16) & 2, 2u) << "qemu-io abort should leave NEED_CHECK set: " << r.out;

  const uint64_t h0 = HashFile(img);
  {
    block::OpenReport rep;
    auto bb = OpenSync(loop, img, /*read_only=*/true, &rep);
    ASSERT_TRUE(bb.ok()) << bb.status();
    EXPECT_TRUE(rep.was_dirty);
    EXPECT_FALSE(rep.repaired);
    auto d = ReadSync(loop, **bb, 0, 65536);
    ASSERT_TRUE(d);
    EXPECT_EQ(*d, Bytes(65536, 0x5a));
    EXPECT_TRUE(CloseSync(loop, *bb).ok());
  }
  EXPECT_EQ(HashFile(img), h0) << "read-only open changed the file";
  EXPECT_EQ(GetU64(ReadFileBytes(img), 16) & 2, 2u);
  {
    block::OpenReport rep;
    auto bb = OpenSync(loop, img, /*read_only=*/false, &rep);
    ASSERT_TRUE(bb.ok()) << bb.status();
    EXPECT_TRUE(rep.was_dirty);
    EXPECT_TRUE(rep.repaired);
    EXPECT_EQ(GetU64(ReadFileBytes(img), 16) & 2, 0u) << "RW open must check and clear NEED_CHECK";
    auto d = ReadSync(loop, **bb, 1 << 20, 4096);
    ASSERT_TRUE(d);
    EXPECT_EQ(*d, Bytes(4096, 0x6b));
    EXPECT_TRUE(CloseSync(loop, *bb).ok());
  }
  CmdResult chk = QemuImgCheck(img);
  EXPECT_EQ(chk.exit_code, 0) << chk.out;
}

// Growing with qemu-img resize is seen by us; our data stays readable.
TEST(QedInterop, ResizedByQemu) {
  QEDTEST_REQUIRE_QEMU();
  coro::EventLoop loop;
  TempDir dir;
  const std::string img = dir / "r.qed";
  ASSERT_EQ(Shell("qemu-img create -q -f qed " + Quote(img) + " 4M").exit_code, 0);
  {
    auto bb = OpenSync(loop, img, false);
    ASSERT_TRUE(bb.ok()) << bb.status();
    ASSERT_TRUE(WriteSync(loop, **bb, 4096, Bytes(8192, 0x42)));
    ASSERT_TRUE(CloseSync(loop, *bb).ok());
  }
  ASSERT_EQ(Shell("qemu-img resize -q -f qed " + Quote(img) + " 64M").exit_code, 0);
  auto bb = OpenSync(loop, img, false);
  ASSERT_TRUE(bb.ok()) << bb.status();
  EXPECT_EQ((*bb)->length(), 64u << 20);
  ASSERT_TRUE(WriteSync(loop, **bb, (64u << 20) - 512, Bytes(512, 0x43)));
  auto d = ReadSync(loop, **bb, 4096, 8192);
  ASSERT_TRUE(d);
  EXPECT_EQ(*d, Bytes(8192, 0x42));
  ASSERT_TRUE(CloseSync(loop, *bb).ok());
  CmdResult io =
      Shell("qemu-io -r -f qed -c 'read -P 0x43 67108352 512' -c 'read -P 0 8M 1M' " + Quote(img));
  EXPECT_EQ(io.exit_code, 0);
  EXPECT_EQ(io.out.find("verification failed"), std::string::npos) << io.out;
  EXPECT_EQ(QemuImgCheck(img).exit_code, 0);
}

}  // namespace
}  // namespace qedfuse::qedtest
