// Backing chains (docs/qed-format.md §3, §6.2, §7.2, §7.3): raw and QED backing files, chains of
// depth 3, relative names resolved against the image's directory (never the current directory),
// reads past the backing file's end, copy-on-write of partial clusters, zero clusters hiding the
// backing data (and zero-filled when written: the spec, not QEMU bug Q3), NEED_CHECK never set.
#include <unistd.h>

#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "support/qemu_tools.h"
#include "unit/qed/qed_test_util.h"

namespace qedfuse::qedtest {
namespace {

// Changes the current directory for the lifetime of the object.
class ScopedChdir {
 public:
  explicit ScopedChdir(const std::string& dir) {
    char buf[4096];
    old_ = ::getcwd(buf, sizeof buf) ? buf : "/";
    EXPECT_EQ(::chdir(dir.c_str()), 0);
  }
  ~ScopedChdir() { (void)::chdir(old_.c_str()); }

 private:
  std::string old_;
};

class QedBacking : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveQemu()) GTEST_SKIP() << "qemu-img/qemu-io not installed";
    ASSERT_EQ(::mkdir((dir_ / "img").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((dir_ / "elsewhere").c_str(), 0755), 0);
  }
  void Sh(const std::string& cmd) {
    CmdResult r = Shell(cmd);
    ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.out;
    ASSERT_EQ(r.out.find("failed"), std::string::npos) << cmd << "\n" << r.out;
  }
  // qemu-io read-only pattern checks; every `read -P` must verify.
  void QemuVerify(const std::string& img, const std::string& cmds) {
    CmdResult r = Shell("qemu-io -r -f qed " + cmds + " " + Quote(img));
    EXPECT_EQ(r.exit_code, 0) << r.out;
    EXPECT_EQ(r.out.find("verification failed"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("error"), std::string::npos) << r.out;
  }
  uint64_t Features(const std::string& img) { return GetU64(ReadFileBytes(img), 16); }

  // A raw base of |size| bytes filled with |pat|, and a decoy of the same name in elsewhere/
  // (which becomes the current directory) filled with 0x77, so that resolving a relative
  // backing name against the CWD instead of the image's directory shows up as wrong data.
  void MakeRawBase(const std::string& name, uint64_t size, uint8_t pat) {
    Sh(absl::StrFormat("qemu-img create -q -f raw %s %d", Quote(dir_ / ("img/" + name)), size));
    Sh(absl::StrFormat("qemu-io -f raw -c 'write -P 0x%02x 0 %d' %s", pat, size,
                       Quote(dir_ / ("img/" + name))));
    Sh(absl::StrFormat("qemu-img create -q -f raw %s %d", Quote(dir_ / ("elsewhere/" + name)),
                       size));
    Sh(absl::StrFormat("qemu-io -f raw -c 'write -P 0x77 0 %d' %s", size,
                       Quote(dir_ / ("elsewhere/" + name))));
  }

  TempDir dir_;
  coro::EventLoop loop_;
};

// Raw backing, relative name; partial writes copy the rest of the cluster from the backing file;
// reads past the backing file's end are zeros; NEED_CHECK is never set.
TEST_F(QedBacking, RawBackingCowAndEof) {
  const uint64_t base_size = (1 << 20) + 512;  // not a cluster multiple
  MakeRawBase("base.raw", base_size, 0x55);
  const std::string top = dir_ / "img/top.qed";
  Sh("qemu-img create -q -f qed -b base.raw -F raw " + Quote(top) + " 4M");
  EXPECT_EQ(Features(top), 5u);
  const uint64_t base_hash = HashFile(dir_ / "img/base.raw");
  ScopedChdir cd(dir_ / "elsewhere");

  block::OpenReport rep;
  auto bb = OpenSync(loop_, top, false, &rep);
  ASSERT_TRUE(bb.ok()) << bb.status();
  ASSERT_EQ(rep.chain.size(), 2u);
  EXPECT_EQ(rep.chain[1].path, dir_ / "img/base.raw");

  // Reads before any write: backing data, then zeros past its end.
  auto r = ReadSync(loop_, **bb, (1 << 20) - 512, 8192);
  ASSERT_TRUE(r) << r.error().message();
  Bytes want(8192, 0);
  std::fill(want.begin(), want.begin() + 1024, 0x55);
  EXPECT_EQ(*r, want);

  // Partial write in the middle of cluster 0: head and tail come from the backing file.
  ASSERT_TRUE(WriteSync(loop_, **bb, 4096, Bytes(4096, 0xaa)));
  // Partial write in the cluster that holds the backing EOF: the COW tail is part backing data,
  // part zeros.
  ASSERT_TRUE(WriteSync(loop_, **bb, (1 << 20) + 8192, Bytes(512, 0xbb)));
  // Unaligned write across two clusters.
  ASSERT_TRUE(WriteSync(loop_, **bb, 3 * 65536 - 100, Bytes(300, 0xcc)));
  // NEED_CHECK is set while allocations may have left clusters unlinked, also with a backing
  // file; a clean close clears it.
  EXPECT_EQ(Features(top) & 2, 2u);
  ASSERT_TRUE(CloseSync(loop_, *bb).ok());
  EXPECT_EQ(Features(top), 5u);
  EXPECT_EQ(HashFile(dir_ / "img/base.raw"), base_hash) << "backing file was modified";

  QemuVerify(top,
             "-c 'read -P 0x55 0 4k' -c 'read -P 0xaa 4k 4k' -c 'read -P 0x55 8k 56k' "
             "-c 'read -P 0x55 1M 512' -c 'read -P 0 1049088 7680' -c 'read -P 0xbb 1056768 512' "
             "-c 'read -P 0 1057280 7680' -c 'read -P 0x55 131072 65436' "
             "-c 'read -P 0xcc 196508 300' -c 'read -P 0x55 196808 65336' -c 'read -P 0 2M 2M'");
  CmdResult chk = QemuImgCheck(top);
  EXPECT_EQ(chk.exit_code, 0) << chk.out;
}

// QED backing (probed, no raw bit) with its own data, zero clusters and unallocated holes.
TEST_F(QedBacking, QedBackingReadsThrough) {
  const std::string base = dir_ / "img/base.qed", top = dir_ / "img/top.qed";
  Sh("qemu-img create -q -f qed -o cluster_size=4096 " + Quote(base) + " 8M");
  Sh("qemu-io -f qed -c 'write -P 0x21 0 1M' -c 'write -z 64k 64k' -c 'write -P 0x22 6M 8k' " +
     Quote(base));
  Sh("qemu-img create -q -f qed -b base.qed -F qed " + Quote(top) + " 4M");  // smaller than base
  Sh("qemu-io -f qed -c 'write -P 0x31 512k 4k' -c 'write -z 256k 64k' " + Quote(top));
  ScopedChdir cd(dir_ / "elsewhere");
  auto bb = OpenSync(loop_, top, true);
  ASSERT_TRUE(bb.ok()) << bb.status();
  EXPECT_EQ((*bb)->length(), 4u << 20);
  auto all = ReadAll(loop_, **bb);
  ASSERT_TRUE(all) << all.error().message();
  ASSERT_TRUE(CloseSync(loop_, *bb).ok());
  auto want = QemuConvertToRaw(top, dir_ / "elsewhere/want.raw");
  ASSERT_TRUE(want);
  ASSERT_EQ(all->size(), want->size());
  EXPECT_EQ(FirstDiff(all->data(), want->data(), all->size()), -1);
  // Spot checks of the semantics themselves.
  EXPECT_EQ((*all)[0], 0x21);
  EXPECT_EQ((*all)[65536 + 5], 0);       // zero cluster in the base hides nothing below: zeros
  EXPECT_EQ((*all)[256 * 1024 + 5], 0);  // zero cluster in top hides base 0x21
  EXPECT_EQ((*all)[512 * 1024], 0x31);
}

// A chain of depth 3 with relative names in a subdirectory, opened from another directory.
// Our reads equal qemu-img convert; our partial writes COW through the whole chain and QEMU
// sees exactly the model.
TEST_F(QedBacking, DepthThreeChain) {
  MakeRawBase("base.raw", 3 << 20, 0x11);
  const std::string mid = dir_ / "img/mid.qed", top = dir_ / "img/top.qed";
  Sh("qemu-img create -q -f qed -o cluster_size=4096,table_size=2 -b base.raw -F raw " +
     Quote(mid) + " 4M");
  Sh("qemu-io -f qed -c 'write -P 0x22 100000 300000' -c 'write -z 1M 256k' " + Quote(mid));
  Sh("qemu-img create -q -f qed -b mid.qed -F qed " + Quote(top) + " 4M");
  Sh("qemu-io -f qed -c 'write -P 0x33 200000 5000' " + Quote(top));
  auto model = QemuConvertToRaw(top, dir_ / "model.raw");
  ASSERT_TRUE(model);
  const uint64_t mid_hash = HashFile(mid), base_hash = HashFile(dir_ / "img/base.raw");
  absl::Status mst;
  std::vector<test::MapExtent> map = test::QemuImgMapJson(top, &mst, "qed");
  ASSERT_TRUE(mst.ok()) << mst;

  ScopedChdir cd(dir_ / "elsewhere");
  block::OpenReport rep;
  auto bb = OpenSync(loop_, top, false, &rep);
  ASSERT_TRUE(bb.ok()) << bb.status();
  ASSERT_EQ(rep.chain.size(), 3u);
  auto all = ReadAll(loop_, **bb);
  ASSERT_TRUE(all);
  ASSERT_EQ(FirstDiff(all->data(), model->data(), model->size()), -1);
  // Block status through the chain agrees with qemu-img map (depth, present, data, zero).
  for (const test::MapExtent& e : map) {
    SCOPED_TRACE(absl::StrCat("extent ", e.start, "+", e.length));
    auto st = loop_.RunSync((*bb)->GetStatus(e.start, e.length));
    ASSERT_TRUE(st) << st.error().message();
    EXPECT_LE(st->length, e.length);
    EXPECT_EQ(st->depth, e.depth);
    EXPECT_EQ(st->present, e.present);
    EXPECT_EQ(st->data, e.data);
    EXPECT_EQ(st->zero, e.zero);
  }

  std::mt19937_64 rng(TestSeed(0xdee3));
  for (int i = 0; i < 40; ++i) {
    uint64_t off = rng() % (4 << 20);
    uint64_t len = std::min<uint64_t>(1 + rng() % 20000, (4 << 20) - off);
    Bytes d = Pattern(len, static_cast<uint8_t>(rng()));
    if (rng() % 4 == 0) {
      bool unmap = rng() % 2;
      ASSERT_TRUE(ZeroSync(loop_, **bb, off, len, unmap));
      std::fill(d.begin(), d.end(), 0);
    } else {
      ASSERT_TRUE(WriteSync(loop_, **bb, off, d));
    }
    std::copy(d.begin(), d.end(), model->begin() + static_cast<long>(off));
  }
  all = ReadAll(loop_, **bb);
  ASSERT_TRUE(all);
  int64_t diff = FirstDiff(all->data(), model->data(), model->size());
  EXPECT_EQ(diff, -1) << "first difference at " << diff;
  ASSERT_TRUE(CloseSync(loop_, *bb).ok());
  EXPECT_EQ(Features(top) & 2, 0u) << "NEED_CHECK left set by a clean close";
  EXPECT_EQ(HashFile(mid), mid_hash) << "backing image was modified";
  EXPECT_EQ(HashFile(dir_ / "img/base.raw"), base_hash);

  WriteFileBytes(dir_ / "model.raw", *model);
  CmdResult cmp = QemuCompare(top, dir_ / "model.raw");
  EXPECT_EQ(cmp.exit_code, 0) << cmp.out;
  CmdResult chk = QemuImgCheck(top);
  EXPECT_EQ(chk.exit_code, 0) << chk.out;
}

// Writing into a zero cluster zero-fills the untouched parts of the new cluster, even with a
// backing file (the spec; QEMU copies backing data there, bug Q3). Zero clusters hide backing
// data, with and without kMayUnmap.
TEST_F(QedBacking, ZeroClusterHidesBackingAndWriteZeroFills) {
  MakeRawBase("base.raw", 1 << 20, 0x55);
  const std::string top = dir_ / "img/top.qed";
  Sh("qemu-img create -q -f qed -b base.raw -F raw " + Quote(top) + " 1M");
  ScopedChdir cd(dir_ / "elsewhere");
  auto bb = OpenSync(loop_, top, false);
  ASSERT_TRUE(bb.ok()) << bb.status();
  ASSERT_TRUE(ZeroSync(loop_, **bb, 64 << 10, 64 << 10, false));
  ASSERT_TRUE(ZeroSync(loop_, **bb, 256 << 10, 128 << 10, true));
  ASSERT_TRUE(WriteSync(loop_, **bb, 68 << 10, Bytes(4096, 0xee)));
  ASSERT_TRUE(WriteSync(loop_, **bb, (320 << 10) + 1000, Bytes(100, 0xef)));
  Bytes model(1 << 20, 0x55);
  std::fill(model.begin() + (64 << 10), model.begin() + (128 << 10), 0);
  std::fill(model.begin() + (256 << 10), model.begin() + (384 << 10), 0);
  std::fill(model.begin() + (68 << 10), model.begin() + (72 << 10), 0xee);
  std::fill(model.begin() + (320 << 10) + 1000, model.begin() + (320 << 10) + 1100, 0xef);
  auto all = ReadAll(loop_, **bb);
  ASSERT_TRUE(all);
  int64_t d = FirstDiff(all->data(), model.data(), model.size());
  EXPECT_EQ(d, -1) << "first difference at " << d << " (0x55 there would be QEMU bug Q3)";
  ASSERT_TRUE(CloseSync(loop_, *bb).ok());
  WriteFileBytes(dir_ / "model.raw", model);
  CmdResult cmp = QemuCompare(top, dir_ / "model.raw");
  EXPECT_EQ(cmp.exit_code, 0) << cmp.out;
  QemuVerify(top,
             "-c 'read -P 0 64k 4k' -c 'read -P 0xee 68k 4k' -c 'read -P 0 72k 56k' "
             "-c 'read -P 0x55 128k 128k'");
  // Whole zeroed clusters that were never written stay zero clusters (no data at depth 0).
  CmdResult map = Shell("qemu-img map --output=json -f qed " + Quote(top));
  EXPECT_NE(map.out.find("\"start\": 262144, \"length\": 65536, \"depth\": 0, \"present\": true, "
                         "\"zero\": true, \"data\": false"),
            std::string::npos)
      << map.out;
  EXPECT_EQ(QemuImgCheck(top).exit_code, 0);
}

// An absolute backing name works from anywhere; a backing file larger than the image is fine; a
// missing backing file is refused naming it.
TEST_F(QedBacking, AbsoluteNameAndSizes) {
  MakeRawBase("big.raw", 8 << 20, 0x42);
  const std::string top = dir_ / "img/top.qed";
  Sh("qemu-img create -q -f qed -b " + Quote(dir_ / "img/big.raw") + " -F raw " + Quote(top) +
     " 2M");
  ScopedChdir cd("/");
  auto bb = OpenSync(loop_, top, true);
  ASSERT_TRUE(bb.ok()) << bb.status();
  EXPECT_EQ((*bb)->length(), 2u << 20);
  auto r = ReadSync(loop_, **bb, (2 << 20) - 4096, 8192);  // clamped at the image end
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, Bytes(4096, 0x42));
  ASSERT_TRUE(CloseSync(loop_, *bb).ok());

  ASSERT_EQ(::unlink((dir_ / "img/big.raw").c_str()), 0);
  auto bad = OpenSync(loop_, top, true);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("big.raw"), std::string::npos) << bad.status();
}

// Allocating writes into a backed image from many coroutines at once: every partial cluster is
// COWed correctly and nothing is lost.
TEST_F(QedBacking, ConcurrentCowWrites) {
  MakeRawBase("base.raw", 2 << 20, 0x66);
  const std::string top = dir_ / "img/top.qed";
  Sh("qemu-img create -q -f qed -o cluster_size=4096 -b base.raw -F raw " + Quote(top) + " 2M");
  auto bb = OpenSync(loop_, top, false);
  ASSERT_TRUE(bb.ok()) << bb.status();
  Bytes model(2 << 20, 0x66);
  std::vector<coro::Task<Result<void>>> tasks;
  std::vector<Bytes> bufs(64);
  for (int i = 0; i < 64; ++i) {
    // Each write covers the middle 1000 bytes of its own cluster: head and tail are COW.
    uint64_t off = uint64_t(i) * 3 * 4096 + 1500;
    bufs[i] = Bytes(1000, static_cast<uint8_t>(i + 1));
    std::copy(bufs[i].begin(), bufs[i].end(), model.begin() + static_cast<long>(off));
    tasks.push_back((*bb)->Write(off, block::IoVector(bufs[i].data(), bufs[i].size())));
  }
  for (auto& t : tasks) {
    auto res = loop_.RunSync(std::move(t));
    EXPECT_TRUE(res) << res.error().message();
  }
  auto all = ReadAll(loop_, **bb);
  ASSERT_TRUE(all);
  EXPECT_EQ(FirstDiff(all->data(), model.data(), model.size()), -1);
  ASSERT_TRUE(CloseSync(loop_, *bb).ok());
  WriteFileBytes(dir_ / "model.raw", model);
  EXPECT_EQ(QemuCompare(top, dir_ / "model.raw").exit_code, 0);
  EXPECT_EQ(QemuImgCheck(top).exit_code, 0);
}

}  // namespace
}  // namespace qedfuse::qedtest
