// Randomised differential tests of the QED driver against an in-memory raw model
// (see qed_diff_engine.h for the op mix and the concurrency rule).
//
//  * Real files (OpenImage read-write on a temp file), several geometries, with no backing file,
//    a raw backing file and a QED backing file; a close/reopen in the middle; afterwards
//    `qemu-img check` must be clean and `qemu-img compare` must equal the model.
//  * Concurrent allocating writes into one L2 table and across tables get distinct clusters.
// The seed is printed; set QEDFUSE_SEED to replay a failure.
#include <cstring>
#include <random>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "block/graph/open_driver.h"
#include "block/qed/qed_create.h"
#include "block/qed/qed_driver.h"
#include "gtest/gtest.h"
#include "support/mem_file.h"
#include "unit/qed/qed_diff_engine.h"
#include "unit/qed/qed_test_util.h"

namespace qedfuse::qedtest {
namespace {

enum class Backing { kNone, kRaw, kQed };

struct FileCase {
  uint32_t cs;
  uint32_t ts;
  uint64_t size;
  Backing backing;
  int ops;
};

void PrintTo(const FileCase& c, std::ostream* os) {
  *os << "cs=" << c.cs << " ts=" << c.ts << " size=" << c.size
      << " backing=" << static_cast<int>(c.backing);
}

std::string FileCaseName(const ::testing::TestParamInfo<FileCase>& info) {
  const FileCase& c = info.param;
  const char* b = c.backing == Backing::kNone  ? "nobacking"
                  : c.backing == Backing::kRaw ? "rawbacking"
                                               : "qedbacking";
  return absl::StrCat("cs", c.cs >> 10, "k_ts", c.ts, "_", c.size >> 20, "M_", b);
}

class DiffRealFile : public ::testing::TestWithParam<FileCase> {
 protected:
  coro::EventLoop loop_;
  TempDir dir_;
};

TEST_P(DiffRealFile, RandomOpsMatchModelAndQemu) {
  QEDTEST_REQUIRE_QEMU();
  const FileCase c = GetParam();
  std::mt19937_64 rng(TestSeed(0xd1ff));
  const std::string img = dir_ / "d.qed";
  Bytes model(c.size, 0);
  std::string bopt;
  if (c.backing != Backing::kNone) {
    // The backing file is shorter than the image: the tail reads as zeros.
    const uint64_t bsize = c.size / 2 + 3 * 512;
    const std::string bname = c.backing == Backing::kRaw ? "base.raw" : "base.qed";
    const std::string bpath = dir_ / bname;
    const char* fmt = c.backing == Backing::kRaw ? "raw" : "qed";
    ASSERT_EQ(Shell(absl::StrFormat("qemu-img create -q -f %s %s %d", fmt, Quote(bpath), bsize))
                  .exit_code,
              0);
    std::string cmds;
    for (int i = 0; i < 12; ++i) {
      uint64_t off = rng() % bsize, len = std::min<uint64_t>(1 + rng() % 300000, bsize - off);
      cmds += absl::StrFormat(" -c 'write -P 0x%02x %d %d'", 1 + rng() % 254, off, len);
    }
    cmds += absl::StrFormat(" -c 'write -z %d %d'", 0, 65536);
    CmdResult r = Shell(absl::StrFormat("qemu-io -f %s %s %s", fmt, cmds, Quote(bpath)));
    ASSERT_EQ(r.exit_code, 0) << r.out;
    auto braw = QemuConvertToRaw(bpath, dir_ / "base.expect", fmt);
    ASSERT_TRUE(braw);
    std::copy(braw->begin(), braw->end(), model.begin());
    bopt = absl::StrFormat(",backing_file=%s,backing_fmt=%s", bname, fmt);
  }
  CmdResult r =
      Shell(absl::StrFormat("qemu-img create -q -f qed -o cluster_size=%d,table_size=%d%s %s %d",
                            c.cs, c.ts, bopt, Quote(img), c.size));
  ASSERT_EQ(r.exit_code, 0) << r.out;

  DiffParams p;
  p.cluster_size = c.cs;
  p.ops = Scaled(c.ops / 2, 4, 50);
  p.max_in_flight = 48;
  p.max_len = std::min<uint64_t>(4 * c.cs, 512 * 1024);
  DiffStats stats;
  for (int half = 0; half < 2; ++half) {
    auto bb = OpenSync(loop_, img, false);
    ASSERT_TRUE(bb.ok()) << bb.status();
    ASSERT_TRUE(RunDifferential(loop_, **bb, model, rng, p, &stats));
    ASSERT_TRUE(VerifyWhole(loop_, **bb, model));
    absl::Status st = CloseSync(loop_, *bb);
    ASSERT_TRUE(st.ok()) << st;
    EXPECT_EQ(GetU64(ReadFileBytes(img), 16) & 2, 0u) << "NEED_CHECK left set by a clean close";
    EXPECT_EQ(GetU64(ReadFileBytes(img), 16) & 2, 0u) << "NEED_CHECK left set after close";
    CmdResult chk = QemuImgCheck(img);
    ASSERT_EQ(chk.exit_code, 0) << chk.out;
    WriteFileBytes(dir_ / "model.raw", model);
    CmdResult cmp = QemuCompare(img, dir_ / "model.raw");
    ASSERT_EQ(cmp.exit_code, 0) << cmp.out;
  }
  std::printf("[ stats    ] %s\n", stats.ToString().c_str());
  RecordProperty("ops", std::to_string(stats.total()));
}

const FileCase kFileCases[] = {
    {4096, 2, 8 << 20, Backing::kNone, 1200},   {4096, 16, 6 << 20, Backing::kRaw, 1000},
    {65536, 4, 16 << 20, Backing::kNone, 1200}, {65536, 2, 16 << 20, Backing::kQed, 1000},
    {65536, 8, 12 << 20, Backing::kRaw, 800},   {1 << 20, 2, 24 << 20, Backing::kNone, 300},
    {4096, 4, 10 << 20, Backing::kQed, 1000},
};
INSTANTIATE_TEST_SUITE_P(Geometries, DiffRealFile, ::testing::ValuesIn(kFileCases), FileCaseName);

// ---- MemFile: fast, many iterations ----

struct MemCase {
  uint32_t cs;
  uint32_t ts;
  uint64_t size;
  Backing backing;
  int rounds;     // each round: a differential run, a check, sometimes close + reopen
  int io_yields;  // MemFile latency in loop turns (interleavings)
};

void PrintTo(const MemCase& c, std::ostream* os) {
  *os << "cs=" << c.cs << " ts=" << c.ts << " size=" << c.size
      << " backing=" << static_cast<int>(c.backing) << " yields=" << c.io_yields;
}

std::string MemCaseName(const ::testing::TestParamInfo<MemCase>& info) {
  const MemCase& c = info.param;
  const char* b = c.backing == Backing::kNone  ? "nobacking"
                  : c.backing == Backing::kRaw ? "rawbacking"
                                               : "qedbacking";
  return absl::StrCat("cs", c.cs >> 10, "k_ts", c.ts, "_", b, "_y", c.io_yields);
}

class DiffMemFile : public ::testing::TestWithParam<MemCase> {
 protected:
  struct Node {
    std::unique_ptr<block::BlockBackend> bb;
    qed::QedDriver* qed = nullptr;
  };
  Node Open(std::shared_ptr<test::MemFileState> state, int io_yields) {
    test::MemFile::Options mo;
    mo.io_yields = io_yields;
    block::OpenOptions opts;
    opts.path = img_;  // the image is in memory; the path resolves the backing name
    opts.need_check_delay = std::chrono::milliseconds(1);
    block::ChainContext chain;
    chain.open_backing = &block::OpenDriver;  // the backing file is a real file
    auto d = loop_.RunSync(qed::QedDriver::Open(
        std::make_unique<test::MemFile>(std::move(state), mo), opts, chain, nullptr));
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) return {};
    Node n;
    n.qed = d->get();
    n.bb = std::make_unique<block::BlockBackend>(std::move(*d));
    return n;
  }

  coro::EventLoop loop_;
  TempDir dir_;
  std::string img_;
};

TEST_P(DiffMemFile, RandomOpsMatchModel) {
  const MemCase c = GetParam();
  std::mt19937_64 rng(TestSeed(0x3e3f11e));
  img_ = dir_ / "m.qed";
  qed::CreateOptions co;
  co.path = img_;
  co.size = c.size;
  co.cluster_size = c.cs;
  co.table_size = c.ts;
  Bytes model(c.size, 0);
  if (c.backing == Backing::kRaw) {
    // Random content, shorter than the image.
    Bytes b(c.size / 2 + 512);
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    WriteFileBytes(dir_ / "base.raw", b);
    std::copy(b.begin(), b.end(), model.begin());
    co.backing_file = "base.raw";
    co.backing_format = "raw";
  } else if (c.backing == Backing::kQed) {
    // A QED backing file written through our own driver (no QEMU needed).
    qed::CreateOptions bo;
    bo.path = dir_ / "base.qed";
    bo.size = c.size / 2 + 3 * 512;
    bo.cluster_size = 4096;
    ASSERT_TRUE(qed::CreateImage(bo).ok());
    auto bb = OpenSync(loop_, bo.path, false);
    ASSERT_TRUE(bb.ok()) << bb.status();
    for (int i = 0; i < 20; ++i) {
      uint64_t off = rng() % *bo.size;
      uint64_t len = std::min<uint64_t>(1 + rng() % 100000, *bo.size - off);
      Bytes d = Pattern(len, static_cast<uint8_t>(rng()));
      ASSERT_TRUE(WriteSync(loop_, **bb, off, d));
      std::copy(d.begin(), d.end(), model.begin() + static_cast<long>(off));
    }
    ASSERT_TRUE(ZeroSync(loop_, **bb, 0, 8192));
    std::fill(model.begin(), model.begin() + 8192, 0);
    ASSERT_TRUE(CloseSync(loop_, *bb).ok());
    co.backing_file = "base.qed";
    co.backing_format = "qed";
  }
  ASSERT_TRUE(qed::CreateImage(co).ok());
  auto state = test::MemFileState::FromBytes([&] {
    Bytes f = ReadFileBytes(img_);
    std::vector<std::byte> v(f.size());
    std::memcpy(v.data(), f.data(), f.size());
    return v;
  }());

  DiffParams p;
  p.cluster_size = c.cs;
  p.ops = Scaled(1000, 8, 100);
  p.max_in_flight = 64;
  p.max_len = std::min<uint64_t>(3 * c.cs, 256 * 1024);
  DiffStats stats;
  Node n = Open(state, c.io_yields);
  ASSERT_TRUE(n.bb);
  const int rounds = Scaled(c.rounds, 4, 1);
  for (int round = 0; round < rounds; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    ASSERT_TRUE(RunDifferential(loop_, *n.bb, model, rng, p, &stats));
    auto chk = loop_.RunSync(n.qed->Check(false));
    ASSERT_TRUE(chk) << chk.error().message();
    ASSERT_EQ(chk->corruptions, 0u) << (chk->messages.empty() ? "" : chk->messages[0]);
    // The only leaks of a live image are the clusters freed by zero writes and not reused yet
    // (close compacts them away).
    ASSERT_EQ(chk->leaks, n.qed->free_clusters()) << "clusters leaked without any crash";
    if (round % 2 == 1) {  // persistence across close/reopen
      ASSERT_TRUE(loop_.RunSync(n.bb->Close()).ok());
      ASSERT_EQ(static_cast<uint8_t>(state->current[16]) & 2, 0);
      n = Open(state, c.io_yields);
      ASSERT_TRUE(n.bb);
      ASSERT_TRUE(VerifyWhole(loop_, *n.bb, model));
    }
  }
  ASSERT_TRUE(VerifyWhole(loop_, *n.bb, model));
  ASSERT_TRUE(loop_.RunSync(n.bb->Close()).ok());
  std::printf("[ stats    ] %s\n", stats.ToString().c_str());
  RecordProperty("ops", std::to_string(stats.total()));

  // QEMU's view of the final image (written out next to its backing file).
  if (HaveQemu()) {
    Bytes f(state->current.size());
    std::memcpy(f.data(), state->current.data(), f.size());
    WriteFileBytes(img_, f);
    WriteFileBytes(dir_ / "model.raw", model);
    CmdResult chk = QemuImgCheck(img_);
    EXPECT_EQ(chk.exit_code, 0) << chk.out;
    CmdResult cmp = QemuCompare(img_, dir_ / "model.raw");
    EXPECT_EQ(cmp.exit_code, 0) << cmp.out;
  }
}

const MemCase kMemCases[] = {
    {4096, 2, 6 << 20, Backing::kNone, 6, 1},   {4096, 4, 6 << 20, Backing::kRaw, 6, 2},
    {65536, 4, 12 << 20, Backing::kNone, 6, 0}, {65536, 2, 12 << 20, Backing::kQed, 6, 1},
    {4096, 16, 6 << 20, Backing::kQed, 4, 3},   {65536, 8, 8 << 20, Backing::kRaw, 4, 1},
};
INSTANTIATE_TEST_SUITE_P(Geometries, DiffMemFile, ::testing::ValuesIn(kMemCases), MemCaseName);

// Many concurrent allocating writes into one L2 table and across L2 tables: each gets its own
// cluster, nothing is lost, and QEMU finds no duplicate references.
TEST(QedConcurrency, AllocatingWritesGetDistinctClusters) {
  QEDTEST_REQUIRE_QEMU();
  coro::EventLoop loop;
  TempDir dir;
  const std::string img = dir / "c.qed";
  // 4 KiB clusters, table_size 2: one L2 table covers 4 MiB; the image spans 4 tables.
  ASSERT_EQ(
      Shell("qemu-img create -q -f qed -o cluster_size=4096,table_size=2 " + Quote(img) + " 16M")
          .exit_code,
      0);
  auto bb = OpenSync(loop, img, false);
  ASSERT_TRUE(bb.ok()) << bb.status();
  Bytes model(16 << 20, 0);
  std::vector<coro::Task<Result<void>>> tasks;
  std::vector<Bytes> bufs;
  const int n = 256;
  bufs.reserve(n);
  std::mt19937_64 rng(TestSeed(0xa110c));
  std::vector<uint64_t> offs;
  for (int i = 0; i < n; ++i) {
    // First half: adjacent clusters in table 0 (and some partial ones); second half: spread over
    // all four tables, so several requests need the same missing L2 table at once.
    uint64_t off = i < n / 2 ? uint64_t(i) * 4096 + (i % 3 == 0 ? 512 * (i % 7) : 0)
                             : (uint64_t(i % 4) << 22) + (uint64_t(i) * 7 % 1000) * 4096;
    offs.push_back(off);
  }
  std::set<uint64_t> seen;
  for (int i = 0; i < n; ++i) {
    uint64_t off = offs[i];
    if (!seen.insert(off / 4096).second) continue;  // distinct clusters only, so order is moot
    bufs.push_back(Pattern(4096 - off % 4096, static_cast<uint8_t>(i)));
    std::copy(bufs.back().begin(), bufs.back().end(), model.begin() + static_cast<long>(off));
    tasks.push_back((*bb)->Write(off, block::IoVector(bufs.back().data(), bufs.back().size())));
  }
  int failures = 0;
  for (auto& t : tasks) {
    auto res = loop.RunSync(std::move(t));
    if (!res) ++failures;
  }
  EXPECT_EQ(failures, 0);
  EXPECT_TRUE(VerifyWhole(loop, **bb, model));
  ASSERT_TRUE(CloseSync(loop, *bb).ok());
  CmdResult chk = Shell("qemu-img check --output=json -f qed " + Quote(img));
  EXPECT_EQ(chk.exit_code, 0) << chk.out;
  EXPECT_EQ(chk.out.find("corruptions"), std::string::npos) << chk.out;
  EXPECT_NE(chk.out.find(absl::StrCat("\"allocated-clusters\": ", seen.size())), std::string::npos)
      << chk.out;
  WriteFileBytes(dir / "model.raw", model);
  EXPECT_EQ(QemuCompare(img, dir / "model.raw").exit_code, 0);
  // Every allocated L2 entry points at a distinct cluster (QEMU would call a shared one a
  // corruption, but check it directly too).
  Bytes f = ReadFileBytes(img);
  std::set<uint64_t> clusters;
  uint64_t entries = 0;
  for (uint64_t i = 0; i < 1024; ++i) {
    uint64_t l2 = GetU64(f, 4096 + 8 * i);
    if (l2 == 0) continue;
    for (uint64_t j = 0; j < 1024; ++j) {
      uint64_t e = GetU64(f, l2 + 8 * j);
      if (e > 1) {
        ++entries;
        EXPECT_TRUE(clusters.insert(e).second) << "cluster " << e << " referenced twice";
      }
    }
  }
  EXPECT_EQ(entries, seen.size());
}

}  // namespace
}  // namespace qedfuse::qedtest
