// Freeing, reuse and leak compaction of the QED driver: zero writes over whole allocated
// clusters turn them into zero clusters and free them; allocations reuse freed clusters only once
// the freeing entry write is durable and no I/O may still use the old mapping; close (and the
// repair of a dirty image) compacts what is left, moving data clusters and L2 tables, so that the
// image never keeps a leaked cluster. The compaction is crash-tested at every child I/O of close.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "block/qed/qed_driver.h"
#include "gtest/gtest.h"
#include "qedfuse/block/debug/fault_injection_driver.h"
#include "support/mem_file.h"
#include "support/qemu_tools.h"
#include "support/temp_dir.h"
#include "unit/qed/qed_driver_test_util.h"

namespace qedfuse::qedunit {
namespace {

constexpr uint64_t kCs = 4096;
constexpr uint64_t kTs = 2;                       // tables of two clusters
constexpr uint64_t kCover = kCs / 8 * kTs * kCs;  // guest bytes one L2 table maps (4 MiB)
constexpr uint64_t kSize = 4 * kCover;

// MemFile -> FaultInjectionDriver -> QedDriver.
struct Stack {
  std::unique_ptr<qed::QedDriver> drv;
  block::FaultInjectionDriver* fi = nullptr;
};

Stack OpenStack(coro::EventLoop& loop, std::shared_ptr<test::MemFileState> state,
                std::chrono::milliseconds delay = std::chrono::hours(1)) {
  test::MemFile::Options mo;
  mo.io_yields = 1;  // every I/O suspends: a crash image can be taken between any two I/Os
  auto fi = std::make_unique<block::FaultInjectionDriver>(
      std::make_unique<test::MemFile>(std::move(state), mo));
  Stack s;
  s.fi = fi.get();
  block::OpenOptions o = DefaultOptions();
  o.need_check_delay = delay;
  block::ChainContext chain;
  chain.names.push_back(o.path);
  chain.depth = 1;
  auto d = loop.RunSync(qed::QedDriver::Open(std::move(fi), o, chain, nullptr));
  EXPECT_TRUE(d.ok()) << d.status();
  if (d.ok()) s.drv = std::move(*d);
  return s;
}

Bytes Pattern(uint64_t n, uint64_t seed) {
  Bytes b(n);
  for (uint64_t i = 0; i < n; ++i) b[i] = std::byte(static_cast<uint8_t>((i / 512 + seed * 7) | 1));
  return b;
}

class QedFree : public ::testing::Test {
 protected:
  void SetUp() override {
    state_ = test::MemFileState::FromBytes(NewImageBytes(kSize, kCs, kTs));
    model_.assign(kSize, std::byte{0});
  }
  void Write(qed::QedDriver& d, uint64_t off, uint64_t len, uint64_t seed) {
    Bytes b = Pattern(len, seed);
    ASSERT_TRUE(WriteAt(loop_, d, off, b));
    std::copy(b.begin(), b.end(), model_.begin() + off);
  }
  void Zero(qed::QedDriver& d, uint64_t off, uint64_t len) {
    ASSERT_TRUE(ZeroAt(loop_, d, off, len, /*unmap=*/true));
    std::fill_n(model_.begin() + off, len, std::byte{0});
  }
  // Reopens |state| read-write (repairing a dirty image), checks it has neither corruptions nor
  // leaks and holds the model, and closes it.
  void ExpectCleanAndIntact(std::shared_ptr<test::MemFileState> state, const std::string& what) {
    SCOPED_TRACE(what);
    Stack s = OpenStack(loop_, state);
    ASSERT_TRUE(s.drv);
    auto c = loop_.RunSync(s.drv->Check(false));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->corruptions, 0u) << (c->messages.empty() ? "" : c->messages[0]);
    EXPECT_EQ(c->leaks, 0u) << (c->messages.empty() ? "" : c->messages[0]);
    auto all = ReadAt(loop_, *s.drv, 0, kSize);
    ASSERT_TRUE(all);
    EXPECT_TRUE(*all == model_) << "data differs after reopen";
    EXPECT_TRUE(loop_.RunSync(s.drv->Close()).ok());
    EXPECT_EQ(U64At(Bytes(state->current.begin(), state->current.begin() + 64), 16) & 2, 0u);
  }

  coro::EventLoop loop_;
  std::shared_ptr<test::MemFileState> state_;
  Bytes model_;
};

TEST_F(QedFree, ZeroWriteFreesWholeClustersAndReportsAHole) {
  Stack s = OpenStack(loop_, state_);
  ASSERT_TRUE(s.drv);
  Write(*s.drv, 0, 4 * kCs, 1);
  ASSERT_TRUE(loop_.RunSync(s.drv->Close()).ok());
  const uint64_t len = state_->size();

  s = OpenStack(loop_, state_);
  Zero(*s.drv, kCs, 2 * kCs);
  EXPECT_EQ(s.drv->stats().clusters_freed, 2u);
  EXPECT_EQ(s.drv->free_clusters(), 2u);
  auto st = loop_.RunSync(s.drv->GetStatus(kCs, 2 * kCs));
  ASSERT_TRUE(st);
  EXPECT_FALSE(st->data);
  EXPECT_TRUE(st->zero);
  EXPECT_EQ(st->length, 2 * kCs);
  // Freed clusters are leaks on disk until compacted: NEED_CHECK is set and stays set.
  EXPECT_NE(DurableFeatures(*state_) & 2, 0u);
  ASSERT_TRUE(loop_.RunSync(s.drv->Close()).ok());
  // Close moved the last data cluster into the first hole and cut the file.
  EXPECT_EQ(state_->size(), len - 2 * kCs);
  ExpectCleanAndIntact(state_, "after close");
}

TEST_F(QedFree, FreedClustersAreReusedOnlyOnceTheFreeIsDurable) {
  Stack s = OpenStack(loop_, state_);
  ASSERT_TRUE(s.drv);
  Write(*s.drv, 0, 4 * kCs, 1);
  ASSERT_TRUE(loop_.RunSync(s.drv->Flush()));
  Zero(*s.drv, 0, 2 * kCs);
  const uint64_t end = s.drv->file_size();
  // Not flushed yet: a new cluster comes from the end of the file.
  Write(*s.drv, 8 * kCs, kCs, 2);
  EXPECT_EQ(s.drv->stats().clusters_reused, 0u);
  EXPECT_EQ(s.drv->file_size(), end + kCs);
  ASSERT_TRUE(loop_.RunSync(s.drv->Flush()));
  // Durable now: the next two clusters reuse the freed ones (in one run).
  Write(*s.drv, 16 * kCs, 3 * kCs, 3);
  EXPECT_EQ(s.drv->stats().clusters_reused, 2u);
  EXPECT_EQ(s.drv->file_size(), end + 2 * kCs);
  EXPECT_EQ(s.drv->free_clusters(), 0u);
  auto all = ReadAt(loop_, *s.drv, 0, kSize);
  ASSERT_TRUE(all);
  EXPECT_TRUE(*all == model_);
  ASSERT_TRUE(loop_.RunSync(s.drv->Close()).ok());
  ExpectCleanAndIntact(state_, "after close");
}

// A read that looked the old mapping up is still running when the cluster is freed: the
// cluster must not be handed out (and overwritten) before the read is done.
TEST_F(QedFree, FreedClusterWaitsForReadsOfTheOldMapping) {
  Stack s = OpenStack(loop_, state_);
  ASSERT_TRUE(s.drv);
  Write(*s.drv, 0, kCs, 1);
  ASSERT_TRUE(loop_.RunSync(s.drv->Flush()));
  block::FaultRule hold;
  hold.event = block::DebugEvent::kReadData;
  hold.suspend = true;
  hold.tag = "read";
  s.fi->AddRule(hold);
  Bytes got(kCs);
  bool read_done = false;
  coro::Spawn([](qed::QedDriver* d, Bytes* out, bool* done) -> coro::Task<void> {
    Result<void> r = co_await d->Read(0, block::IoVector(out->data(), out->size()));
    EXPECT_TRUE(r);
    *done = true;
  }(s.drv.get(), &got, &read_done));
  while (!s.fi->IsSuspended("read")) ASSERT_NE(loop_.RunOne(), 0u);
  Zero(*s.drv, 0, kCs);
  ASSERT_TRUE(loop_.RunSync(s.drv->Flush()));
  const uint64_t end = s.drv->file_size();
  Write(*s.drv, 8 * kCs, kCs, 2);  // must not take the cluster the read still uses
  EXPECT_EQ(s.drv->stats().clusters_reused, 0u);
  EXPECT_EQ(s.drv->file_size(), end + kCs);
  s.fi->Resume("read");
  while (!read_done) ASSERT_NE(loop_.RunOne(), 0u);
  // The read saw the old data or zeros (it raced the zero write), never the new write's data.
  const Bytes old = Pattern(kCs, 1);
  EXPECT_TRUE(got == old || AllEqual(got, 0));
  // Now the cluster is reusable.
  Write(*s.drv, 12 * kCs, kCs, 3);
  EXPECT_EQ(s.drv->stats().clusters_reused, 1u);
  ASSERT_TRUE(loop_.RunSync(s.drv->Close()).ok());
  ExpectCleanAndIntact(state_, "after close");
}

// header_size 0 (QEMU accepts it): the header still lies in cluster 0, which is therefore never
// a hole that compaction may fill. A data cluster moved there would lose its data twice over: its
// L2 entry would become 0 (unallocated) and the header write at close would overwrite its start.
class QedCompactHeaderSizeZero : public QedFree {
 protected:
  void SetUp() override {
    QedFree::SetUp();
    state_->current[12] = std::byte{0};  // header_size, little-endian u32 at offset 12
    state_->MarkDurable();
    ASSERT_EQ(U64At(Bytes(state_->current.begin(), state_->current.begin() + 16), 8) >> 32, 0u);
  }
  // Data clusters 3..6 (guest clusters 0..3, after the L1 table in clusters 1-2), their table
  // after them; then guest cluster 1 is zeroed, which frees data cluster 4. Cluster 0 is the only
  // other unreferenced cluster, and the lowest one.
  Stack Build() {
    Stack s = OpenStack(loop_, state_);
    EXPECT_TRUE(s.drv);
    Write(*s.drv, 0, 4 * kCs, 1);
    EXPECT_TRUE(loop_.RunSync(s.drv->Flush()));
    Zero(*s.drv, kCs, kCs);
    EXPECT_EQ(s.drv->free_clusters(), 1u);
    return s;
  }
  // Reopens |state|: the header is intact and clean, the data is the model's, and no cluster
  // above cluster 0 is left unreferenced (cluster 0 itself is a leak by QEMU's count, which
  // starts at header_size).
  void ExpectIntact(std::shared_ptr<test::MemFileState> state, const std::string& what) {
    SCOPED_TRACE(what);
    Stack s = OpenStack(loop_, state);
    ASSERT_TRUE(s.drv);
    EXPECT_EQ(s.drv->header().magic, qed::kMagic);
    EXPECT_EQ(s.drv->header().header_size, 0u);
    auto all = ReadAt(loop_, *s.drv, 0, 4 * kCs);
    ASSERT_TRUE(all);
    EXPECT_TRUE(std::equal(all->begin(), all->end(), model_.begin())) << "data differs";
    auto c = loop_.RunSync(s.drv->Check(false));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->corruptions, 0u) << (c->messages.empty() ? "" : c->messages[0]);
    EXPECT_EQ(c->leaks, 1u) << (c->messages.empty() ? "" : c->messages[0]);
    EXPECT_TRUE(loop_.RunSync(s.drv->Close()).ok());
    EXPECT_EQ(HeaderFeatures(*state) & qed::kFeatureNeedCheck, 0u);
  }
};

TEST_F(QedCompactHeaderSizeZero, CloseKeepsDataOutOfCluster0) {
  Stack s = Build();
  ASSERT_TRUE(s.drv);
  ASSERT_TRUE(loop_.RunSync(s.drv->Close()).ok());
  EXPECT_GE(s.drv->stats().data_relocated, 1u);
  ExpectIntact(state_, "after close");
}

TEST_F(QedCompactHeaderSizeZero, DirtyOpenRepairKeepsDataOutOfCluster0) {
  Stack s = Build();
  ASSERT_TRUE(s.drv);
  // The image as a crash would leave it now: NEED_CHECK set, the freed cluster leaked.
  auto dirty = test::MemFileState::FromBytes(state_->current);
  ASSERT_NE(HeaderFeatures(*dirty) & qed::kFeatureNeedCheck, 0u);
  ASSERT_TRUE(loop_.RunSync(s.drv->Close()).ok());
  ExpectIntact(dirty, "after the repair at a dirty open");
}

// Layouts where close has to move L2 tables: |freed| holes at the start of the file, below the
// data of table 0, a second table's data and the second table at the end of the file. With one
// or two holes no two-cluster window exists below the last table: compaction moves the data
// below it and parks and returns the table; with more, the table goes straight into a window.
class QedCompact : public QedFree, public ::testing::WithParamInterface<int> {
 protected:
  // Builds the layout and returns the driver, open, with the clusters freed (nothing flushed
  // after the frees, so close does all the work).
  Stack Build() {
    Stack s = OpenStack(loop_, state_);
    EXPECT_TRUE(s.drv);
    Write(*s.drv, 0, 6 * kCs, 1);           // data 0..5, then table 0
    Write(*s.drv, kCover + kCs, kCs, 2);    // data, then table 1 at the end of the file
    Write(*s.drv, 2 * kCover, 2 * kCs, 3);  // data, then table 2 at the end of the file
    EXPECT_TRUE(loop_.RunSync(s.drv->Flush()));
    Zero(*s.drv, 0, static_cast<uint64_t>(GetParam()) * kCs);
    return s;
  }
};

TEST_P(QedCompact, CloseLeavesNoLeak) {
  Stack s = Build();
  ASSERT_TRUE(s.drv);
  const uint64_t before = state_->size();
  const qed::QedDriver::Stats& stats = s.drv->stats();
  ASSERT_TRUE(loop_.RunSync(s.drv->Close()).ok());
  // The last table always moves (it ends the file and sits above the holes).
  EXPECT_GE(stats.tables_relocated, 1u);
  EXPECT_GE(stats.data_relocated + stats.tables_relocated * kTs, static_cast<uint64_t>(GetParam()));
  EXPECT_EQ(state_->size(), before - GetParam() * kCs);
  ExpectCleanAndIntact(state_, "after close");
  if (test::HaveQemuImg()) {
    test::TempDir dir;
    const std::string path = dir.File("c.qed");
    FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fwrite(state_->current.data(), 1, state_->current.size(), f),
              state_->current.size());
    std::fclose(f);
    test::QemuCheck chk = test::QemuImgCheckJson(path);
    EXPECT_EQ(chk.exit_code, 0) << chk.output;
    EXPECT_EQ(chk.leaks, 0) << chk.output;
  }
}

// Random crash subsets taken at each cut (fewer under the sanitizers, which run far slower).
#ifdef QEDFUSE_TEST_SANITIZED
constexpr uint64_t kRandomSubsets = 2;
#else
constexpr uint64_t kRandomSubsets = 8;
#endif

// The power is cut at every child I/O of close (compaction included): every crash image reopens
// (the repair compacts again), checks clean and holds all data, which was flushed before close.
TEST_P(QedCompact, PowerCutAtEveryIoOfClose) {
  uint64_t total = 0;
  {
    Stack s = Build();
    ASSERT_TRUE(s.drv);
    ASSERT_TRUE(loop_.RunSync(s.drv->Flush()));
    const uint64_t writes = state_->writes + state_->reads + state_->flushes + state_->zeroes;
    ASSERT_TRUE(loop_.RunSync(s.drv->Close()).ok());
    total = state_->writes + state_->reads + state_->flushes + state_->zeroes - writes;
  }
  ASSERT_GT(total, 4u);
  const Bytes model = model_;
  // (+2: truncations are not counted above; a cut past the last I/O is a clean close)
  for (uint64_t cut = 0; cut < total + 2; ++cut) {
    SetUp();
    Stack s = Build();
    ASSERT_TRUE(s.drv);
    ASSERT_TRUE(loop_.RunSync(s.drv->Flush()));
    ASSERT_TRUE(model_ == model);
    block::FaultRule die;
    die.io = block::FaultIo::kAny;
    die.skip = static_cast<int>(cut);
    die.fail_everything_after = true;
    s.fi->AddRule(die);
    // Crash images are taken the moment the device dies (the file's own close would flush it).
    std::vector<std::pair<std::string, std::vector<std::byte>>> images;
    bool closed = false;
    coro::Spawn([](qed::QedDriver* d, bool* done) -> coro::Task<void> {
      absl::Status st = co_await d->Close();
      (void)st;  // fails unless the cut falls after the last I/O
      *done = true;
    }(s.drv.get(), &closed));
    while (!closed) {
      ASSERT_NE(loop_.RunOne(), 0u);
      if (s.fi->dead() && images.empty()) {
        images.emplace_back("durable only", state_->durable);
        for (uint64_t seed = 1; seed <= kRandomSubsets; ++seed) {
          images.emplace_back(absl::StrCat("random subset ", seed),
                              state_->CrashImage(seed * 31 + cut));
        }
      }
    }
    if (images.empty()) images.emplace_back("clean close", state_->current);
    for (auto& [what, bytes] : images) {
      ExpectCleanAndIntact(test::MemFileState::FromBytes(bytes),
                           absl::StrCat("cut at I/O ", cut, " of close, ", what));
      if (HasFatalFailure()) return;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Holes, QedCompact, ::testing::Values(1, 2, 3, 5),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return absl::StrCat(i.param, "_holes");
                         });

// A cluster handed out again may still hold another guest offset's bytes (here a failed punch
// left them on disk). Without a backing file an allocation writes its entries without a flush
// after the data, so a reused cluster must have its new data made durable before the entry that
// points at it: otherwise a crash can keep the entry and lose the data, and the new offset reads
// the old offset's bytes.
TEST_F(QedFree, ReusedClusterDataIsDurableBeforeItsEntry) {
  Stack s = OpenStack(loop_, state_);
  ASSERT_TRUE(s.drv);
  Write(*s.drv, 0, kCs, 1);
  ASSERT_TRUE(loop_.RunSync(s.drv->Flush()));
  const int punch = s.fi->AddRule({.io = block::FaultIo::kZero, .error = EIO});
  EXPECT_FALSE(
      ZeroAt(loop_, *s.drv, 0, kCs, /*unmap=*/true));  // the entry is zero, the punch fails
  EXPECT_EQ(s.fi->fired(punch), 1);
  EXPECT_EQ(s.drv->free_clusters(), 1u);
  ASSERT_TRUE(loop_.RunSync(s.drv->Flush()));  // the free is durable: the cluster is reusable
  const Bytes fresh = Pattern(kCs, 2);
  ASSERT_TRUE(WriteAt(loop_, *s.drv, 8 * kCs, fresh));
  ASSERT_EQ(s.drv->stats().clusters_reused, 1u);

  const Bytes zeros(kCs, std::byte{0});
  for (uint64_t seed = 0; seed < 64; ++seed) {
    SCOPED_TRACE(absl::StrCat("crash seed ", seed));
    auto crashed = test::MemFileState::FromBytes(state_->CrashImage(seed));
    Stack c = OpenStack(loop_, crashed);
    ASSERT_TRUE(c.drv);
    auto got = ReadAt(loop_, *c.drv, 8 * kCs, kCs);
    ASSERT_TRUE(got);
    EXPECT_TRUE(*got == fresh || *got == zeros) << "the reused cluster shows its old bytes";
    EXPECT_TRUE(loop_.RunSync(c.drv->Close()).ok());
  }
  ASSERT_TRUE(loop_.RunSync(s.drv->Close()).ok());
}

}  // namespace
}  // namespace qedfuse::qedunit
