// NEED_CHECK: set (and flushed) before the first allocation of an image without backing file,
// cleared by the need-check coroutine after the quiet delay (1 ms here), cleared by Close(),
// never used with a backing file, untouched by read-only opens, and repaired at a dirty
// read-write open.
#include <fcntl.h>
#include <unistd.h>

#include "qed_driver_test_util.h"
#include "qedfuse/block/open.h"
#include "qemu_tools.h"

namespace qedfuse::qedunit {
namespace {

constexpr uint64_t kK = 1024;
constexpr uint64_t kM = 1024 * 1024;
constexpr uint64_t kNeedCheck = qed::kFeatureNeedCheck;

class QedNeedCheckTest : public ::testing::Test {
 protected:
  void Create(uint64_t size = 16 * kM) {
    img_.state = test::MemFileState::FromBytes(NewImageBytes(size));
  }
  absl::Status Open(bool read_only = false,
                    std::chrono::milliseconds delay = std::chrono::milliseconds(1),
                    int io_yields = 0) {
    block::OpenOptions o = DefaultOptions(read_only);
    o.need_check_delay = delay;
    test::MemFile::Options mo;
    mo.io_yields = io_yields;
    return OpenMem(loop_, img_, o, mo);
  }
  void TearDown() override {
    if (img_.drv) {
      EXPECT_TRUE(CloseMem(loop_, img_).ok());
    }
  }
  // Makes a dirty image whose L2 entry for guest cluster 1 points past the end of the file.
  void MakeDirtyWithBadEntry() {
    Create();
    ASSERT_TRUE(Open().ok());
    ASSERT_TRUE(WriteAt(loop_, *img_.drv, 0, Fill(128 * kK, 0x61)));
    ASSERT_TRUE(CloseMem(loop_, img_).ok());
    Bytes& b = img_.state->current;
    const uint64_t l2 = EntryAt(*img_.state, 0x10000, 0);
    PutU64(b, l2 + 8, 0x40000000);
    PutU64(b, 16, kNeedCheck);
    img_.state->MarkDurable();
  }

  coro::EventLoop loop_;
  MemImage img_;
};

TEST_F(QedNeedCheckTest, SetAndFlushedBeforeTheFirstAllocationsData) {
  Create();
  ASSERT_TRUE(Open(false, std::chrono::hours(1)).ok());
  img_.state->log.clear();
  ASSERT_TRUE(WriteAt(loop_, *img_.drv, 0, Fill(4 * kK, 1)));
  const auto& log = img_.state->log;
  // Expected order: header write (sector 0), flush, then the data cluster, then the L2 table.
  std::size_t hdr = log.size(), flush = log.size(), data = log.size();
  for (std::size_t i = 0; i < log.size(); ++i) {
    if (log[i].kind == test::MemIoRecord::kWrite && log[i].offset == 0 && hdr == log.size())
      hdr = i;
    if (log[i].kind == test::MemIoRecord::kFlush && hdr < i && flush == log.size()) flush = i;
    if (log[i].kind == test::MemIoRecord::kWrite && log[i].offset == 0x50000) data = i;
  }
  ASSERT_LT(hdr, log.size());
  EXPECT_LT(hdr, flush);
  EXPECT_LT(flush, data);
  ASSERT_LT(data, log.size());
  EXPECT_EQ(log[hdr].len, 512u);  // a read-modify-write of sector 0, as QEMU does
  EXPECT_NE(DurableFeatures(*img_.state) & kNeedCheck, 0u);
  EXPECT_EQ(img_.drv->stats().need_check_sets, 1u);
  // Only the first allocation sets it; in-place writes never touch the header.
  ASSERT_TRUE(WriteAt(loop_, *img_.drv, 128 * kK, Fill(4 * kK, 2)));
  ASSERT_TRUE(WriteAt(loop_, *img_.drv, 0, Fill(4 * kK, 3)));
  EXPECT_EQ(img_.drv->stats().need_check_sets, 1u);
}

TEST_F(QedNeedCheckTest, ClearedAfterTheQuietDelay) {
  Create();
  ASSERT_TRUE(Open().ok());
  ASSERT_TRUE(WriteAt(loop_, *img_.drv, 0, Fill(4 * kK, 1)));
  EXPECT_NE(HeaderFeatures(*img_.state) & kNeedCheck, 0u);
  // The timer (1 ms) is the only thing left: the loop blocks until it fires.
  while (img_.drv->stats().need_check_clears == 0) ASSERT_GT(loop_.RunOne(), 0u);
  loop_.RunUntilIdle();  // the final flush
  EXPECT_EQ(HeaderFeatures(*img_.state) & kNeedCheck, 0u);
  EXPECT_EQ(DurableFeatures(*img_.state) & kNeedCheck, 0u);
  EXPECT_EQ(img_.drv->header().features & kNeedCheck, 0u);
  // The next allocation sets it again.
  ASSERT_TRUE(WriteAt(loop_, *img_.drv, 1 * kM, Fill(4 * kK, 1)));
  EXPECT_NE(DurableFeatures(*img_.state) & kNeedCheck, 0u);
  EXPECT_EQ(img_.drv->stats().need_check_sets, 2u);
}

TEST_F(QedNeedCheckTest, NotClearedWhileAnAllocationIsInFlight) {
  Create();
  ASSERT_TRUE(Open(false, std::chrono::milliseconds(1), /*io_yields=*/20).ok());
  ASSERT_TRUE(WriteAt(loop_, *img_.drv, 0, Fill(4 * kK, 1)));  // arms the timer
  Bytes data = Fill(64 * kK, 2);
  coro::Task<Result<void>> t = img_.drv->Write(256 * kK, block::IoVector(data.data(), data.size()));
  // The new allocating write disarmed the timer: the flag stays set until it completes.
  while (!t.done()) {
    ASSERT_NE(HeaderFeatures(*img_.state) & kNeedCheck, 0u);
    ASSERT_GT(loop_.RunOne(), 0u);
  }
  ASSERT_TRUE(t.Get());
}

TEST_F(QedNeedCheckTest, CloseWaitsForATimerClearInProgress) {
  Create();
  ASSERT_TRUE(Open(false, std::chrono::milliseconds(1), /*io_yields=*/5).ok());
  ASSERT_TRUE(WriteAt(loop_, *img_.drv, 0, Fill(4 * kK, 1)));
  // Step until the need-check coroutine is suspended in its flush (I/O in flight, no request).
  while (img_.file->in_flight() == 0) ASSERT_GT(loop_.RunOne(), 0u);
  absl::Status st = CloseMem(loop_, img_);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(DurableFeatures(*img_.state) & kNeedCheck, 0u);
}

TEST_F(QedNeedCheckTest, ClearedByClose) {
  Create();
  ASSERT_TRUE(Open(false, std::chrono::hours(1)).ok());
  ASSERT_TRUE(WriteAt(loop_, *img_.drv, 0, Fill(4 * kK, 1)));
  EXPECT_NE(DurableFeatures(*img_.state) & kNeedCheck, 0u);
  ASSERT_TRUE(CloseMem(loop_, img_).ok());
  EXPECT_EQ(DurableFeatures(*img_.state) & kNeedCheck, 0u);
  EXPECT_TRUE(img_.state->pending.empty());  // everything flushed
}

TEST_F(QedNeedCheckTest, CrashAfterAllocationLeavesTheFlagSetAndReopenRepairs) {
  Create();
  ASSERT_TRUE(Open(false, std::chrono::hours(1)).ok());
  ASSERT_TRUE(WriteAt(loop_, *img_.drv, 0, Fill(4 * kK, 1)));
  ASSERT_TRUE(WriteAt(loop_, *img_.drv, 3 * kM, Fill(4 * kK, 1)));
  // Power loss: the driver object is abandoned (closed without touching the state), and only
  // what was flushed survives.
  auto saved = img_.state->durable;
  ASSERT_TRUE(CloseMem(loop_, img_).ok());
  img_.state = test::MemFileState::FromBytes(saved);
  EXPECT_NE(HeaderFeatures(*img_.state) & kNeedCheck, 0u);
  ASSERT_TRUE(Open().ok());
  EXPECT_TRUE(img_.report.was_dirty);
  EXPECT_TRUE(img_.report.repaired);
  EXPECT_EQ(DurableFeatures(*img_.state) & kNeedCheck, 0u);
  auto c = loop_.RunSync(img_.drv->Check(false));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->corruptions, 0u);
}

TEST_F(QedNeedCheckTest, ReadOnlyOpenOfDirtyImageChangesNothing) {
  MakeDirtyWithBadEntry();
  const Bytes before = img_.state->current;
  img_.state->writes = 0;
  ASSERT_TRUE(Open(/*read_only=*/true).ok());
  EXPECT_TRUE(img_.report.was_dirty);
  EXPECT_FALSE(img_.report.repaired);
  auto good = ReadAt(loop_, *img_.drv, 0, 64 * kK);  // data stays readable for recovery
  ASSERT_TRUE(good);
  EXPECT_TRUE(AllEqual(*good, 0x61));
  EXPECT_FALSE(ReadAt(loop_, *img_.drv, 64 * kK, 4 * kK));  // the bad entry: EIO
  ASSERT_TRUE(CloseMem(loop_, img_).ok());
  EXPECT_EQ(img_.state->current, before);
  EXPECT_EQ(img_.state->writes, 0u);
}

TEST_F(QedNeedCheckTest, DirtyReadWriteOpenRepairsAndClears) {
  MakeDirtyWithBadEntry();
  ASSERT_TRUE(Open().ok());
  EXPECT_TRUE(img_.report.was_dirty);
  EXPECT_TRUE(img_.report.repaired);
  EXPECT_NE(img_.report.repair_summary.find("fixed 1 corruption"), std::string::npos)
      << img_.report.repair_summary;
  const uint64_t l2 = EntryAt(*img_.state, 0x10000, 0);
  EXPECT_EQ(EntryAt(*img_.state, l2, 1), 0u);  // the invalid entry was cleared
  EXPECT_EQ(DurableFeatures(*img_.state) & kNeedCheck, 0u);
  auto r = ReadAt(loop_, *img_.drv, 64 * kK, 64 * kK);  // now unallocated: zeros
  ASSERT_TRUE(r);
  EXPECT_TRUE(AllEqual(*r, 0));
}

TEST_F(QedNeedCheckTest, ForCheckOpenLeavesTheFlagToTheChecker) {
  MakeDirtyWithBadEntry();
  block::OpenOptions o = DefaultOptions();
  o.for_check = true;
  ASSERT_TRUE(OpenMem(loop_, img_, o).ok());
  EXPECT_FALSE(img_.report.repaired);
  EXPECT_NE(DurableFeatures(*img_.state) & kNeedCheck, 0u);
  auto c = loop_.RunSync(img_.drv->Check(true));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->corruptions_fixed, 1u);
  EXPECT_EQ(c->corruptions, 0u);
  EXPECT_EQ(DurableFeatures(*img_.state) & kNeedCheck, 0u);
}

TEST_F(QedNeedCheckTest, UnfixableCorruptionKeepsTheFlagSet) {
  Create();
  ASSERT_TRUE(Open().ok());
  ASSERT_TRUE(WriteAt(loop_, *img_.drv, 0, Fill(128 * kK, 0x61)));
  ASSERT_TRUE(CloseMem(loop_, img_).ok());
  Bytes& b = img_.state->current;
  const uint64_t l2 = EntryAt(*img_.state, 0x10000, 0);
  PutU64(b, l2 + 8, EntryAt(*img_.state, l2, 0));  // two entries share one cluster
  PutU64(b, 16, kNeedCheck);
  img_.state->MarkDurable();
  ASSERT_TRUE(Open().ok());
  EXPECT_TRUE(img_.report.repaired);
  EXPECT_TRUE(img_.drv->suspect());
  ASSERT_TRUE(CloseMem(loop_, img_).ok());
  // Unlike QEMU (which clears it at close anyway), the flag stays: the next open checks again.
  EXPECT_NE(DurableFeatures(*img_.state) & kNeedCheck, 0u);
}

// With a backing file the data flush before every L2 update orders data before metadata, but a
// crash can still leave unlinked clusters: the flag is set all the same, so the next read-write
// open repairs and compacts them, and close clears it.
TEST(QedNeedCheckFileTest, SetWithBackingFileToo) {
  test::TempDir dir;
  const std::string base = dir.File("base.raw");
  {
    int fd = ::open(base.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 1 << 20), 0);
    ::close(fd);
  }
  qed::CreateOptions co;
  co.path = dir.File("ov.qed");
  co.size = 4 << 20;
  co.backing_file = base;
  co.backing_format = "raw";
  ASSERT_TRUE(qed::CreateImage(co).ok());
  coro::EventLoop loop;
  block::OpenOptions o;
  o.path = co.path;
  o.need_check_delay = std::chrono::hours(1);
  auto bb = loop.RunSync(block::OpenImage(o));
  ASSERT_TRUE(bb.ok()) << bb.status();
  Bytes data = Fill(4096, 7);
  ASSERT_TRUE(loop.RunSync((*bb)->Write(8192, block::IoVector(data.data(), data.size()))));
  ASSERT_TRUE(loop.RunSync((*bb)->WriteZeroes(1 << 20, 1 << 20, block::ZeroFlags::kNone)));
  EXPECT_EQ(U64At(ReadPath(co.path), 16), 0x07u);  // while open, after allocations
  auto* d = dynamic_cast<qed::QedDriver*>(&(*bb)->driver());
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->stats().need_check_sets, 1u);
  ASSERT_TRUE(loop.RunSync((*bb)->Close()).ok());
  EXPECT_EQ(U64At(ReadPath(co.path), 16), 0x05u);
}

// A crash after clusters were reserved at EOF (data written, L2 never updated) leaves leaked
// clusters at the end of the file; the dirty read-write open cuts them off so the image checks
// clean, and later allocations start at the new end of the file.
TEST(QedNeedCheckFileTest, DirtyOpenTruncatesTrailingLeaks) {
  test::TempDir dir;
  qed::CreateOptions co;
  co.path = dir.File("img.qed");
  co.size = 16 * kM;
  ASSERT_TRUE(qed::CreateImage(co).ok());
  coro::EventLoop loop;
  block::OpenOptions o;
  o.path = co.path;
  o.need_check_delay = std::chrono::hours(1);
  Bytes data = Fill(64 * kK, 0x33);
  {
    auto bb = loop.RunSync(block::OpenImage(o));
    ASSERT_TRUE(bb.ok()) << bb.status();
    ASSERT_TRUE(loop.RunSync((*bb)->Write(0, block::IoVector(data.data(), data.size()))));
    ASSERT_TRUE(loop.RunSync((*bb)->Close()).ok());
  }
  const uint64_t clean_size = ReadPath(co.path).size();
  {
    // Simulated crash: three leaked clusters past the last used one, NEED_CHECK set.
    int fd = ::open(co.path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(clean_size + 3 * 64 * kK)), 0);
    uint64_t features = 0;
    ASSERT_EQ(::pread(fd, &features, 8, 16), 8);
    features |= kNeedCheck;
    ASSERT_EQ(::pwrite(fd, &features, 8, 16), 8);
    ::close(fd);
  }
  if (test::HaveQemuImg()) {
    test::QemuCheck before = test::QemuImgCheckJson(co.path);
    EXPECT_EQ(before.leaks, 3) << before.output;
  }
  block::OpenReport rep;
  auto bb = loop.RunSync(block::OpenImage(o, &rep));
  ASSERT_TRUE(bb.ok()) << bb.status();
  EXPECT_TRUE(rep.repaired);
  EXPECT_EQ(ReadPath(co.path).size(), clean_size);
  // The next allocation lands at the truncated end, not past the removed clusters.
  ASSERT_TRUE(loop.RunSync((*bb)->Write(1 * kM, block::IoVector(data.data(), data.size()))));
  ASSERT_TRUE(loop.RunSync((*bb)->Close()).ok());
  EXPECT_EQ(ReadPath(co.path).size(), clean_size + 64 * kK);
  if (!test::HaveQemuImg()) GTEST_SKIP() << "qemu-img not installed";
  test::QemuCheck chk = test::QemuImgCheckJson(co.path);
  EXPECT_EQ(chk.exit_code, 0) << chk.output;
  EXPECT_EQ(chk.leaks, 0) << chk.output;
}

}  // namespace
}  // namespace qedfuse::qedunit
