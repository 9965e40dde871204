// QedDriver on a MemFile (and on real files for backing chains and the QEMU oracle): reads,
// writes, copy-on-write padding, zero writes, block status, resize, read-only, alignment,
// corrupt entries, and interop with qemu-io / qemu-img.
#include <fcntl.h>
#include <unistd.h>

#include <random>

#include "absl/strings/str_format.h"
#include "qed_driver_test_util.h"
#include "qedfuse/block/debug/fault_injection_driver.h"
#include "qedfuse/block/open.h"
#include "qemu_tools.h"

namespace qedfuse::qedunit {
namespace {

constexpr uint64_t kK = 1024;
constexpr uint64_t kM = 1024 * 1024;

class QedDriverTest : public ::testing::Test {
 protected:
  void Open(uint64_t size, uint32_t cs = 65536, uint32_t ts = 4, bool read_only = false,
            test::MemFile::Options mo = {}) {
    img_.state = test::MemFileState::FromBytes(NewImageBytes(size, cs, ts));
    absl::Status st = OpenMem(loop_, img_, DefaultOptions(read_only), mo);
    ASSERT_TRUE(st.ok()) << st;
  }
  void Reopen(bool read_only = false) {
    ASSERT_TRUE(CloseMem(loop_, img_).ok());
    absl::Status st = OpenMem(loop_, img_, DefaultOptions(read_only));
    ASSERT_TRUE(st.ok()) << st;
  }
  void TearDown() override {
    if (img_.drv) {
      EXPECT_TRUE(CloseMem(loop_, img_).ok());
    }
  }
  qed::QedDriver& d() { return *img_.drv; }
  uint64_t FileLen() const { return img_.state->size(); }

  coro::EventLoop loop_;
  MemImage img_;
};

TEST_F(QedDriverTest, FreshImageReadsZeros) {
  Open(4 * kM);
  EXPECT_EQ(d().length(), 4 * kM);
  EXPECT_EQ(d().format_name(), "qed");
  auto r = ReadAt(loop_, d(), 0, 4 * kM);
  ASSERT_TRUE(r);
  EXPECT_TRUE(AllEqual(*r, 0));
}

// The layout QEMU produces for a first 64 KiB write on a fresh default image (docs/qed-format.md
// §7.2): data at 0x50000, L2 at 0x60000, L1[0] = 0x60000, L2[0] = 0x50000, file 0xA0000.
TEST_F(QedDriverTest, FirstWriteLayoutMatchesQemu) {
  Open(1024 * kM);
  ASSERT_TRUE(WriteAt(loop_, d(), 0, Fill(64 * kK, 0xab)));
  EXPECT_EQ(FileLen(), 0xA0000u);
  EXPECT_EQ(EntryAt(*img_.state, 0x10000, 0), 0x60000u);
  EXPECT_EQ(EntryAt(*img_.state, 0x60000, 0), 0x50000u);
  auto r = ReadAt(loop_, d(), 0, 64 * kK);
  ASSERT_TRUE(r);
  EXPECT_TRUE(AllEqual(*r, 0xab));
}

TEST_F(QedDriverTest, WriteInSecondL2TableMatchesQemu) {
  Open(4096 * kM);
  ASSERT_TRUE(WriteAt(loop_, d(), 2048 * kM + 64 * kK, Fill(64 * kK, 0x11)));
  EXPECT_EQ(EntryAt(*img_.state, 0x10000, 1), 0x60000u);
  EXPECT_EQ(EntryAt(*img_.state, 0x60000, 1), 0x50000u);
  EXPECT_EQ(EntryAt(*img_.state, 0x10000, 0), 0u);
}

TEST_F(QedDriverTest, PartialWriteZeroFillsTheRestOfTheCluster) {
  Open(4 * kM);
  ASSERT_TRUE(WriteAt(loop_, d(), 8 * kK, Fill(4 * kK, 0x5a)));
  auto r = ReadAt(loop_, d(), 0, 64 * kK);
  ASSERT_TRUE(r);
  for (uint64_t i = 0; i < 64 * kK; ++i) {
    const uint8_t want = (i >= 8 * kK && i < 12 * kK) ? 0x5a : 0;
    ASSERT_EQ(static_cast<uint8_t>((*r)[i]), want) << i;
  }
  EXPECT_EQ(FileLen() % 65536, 0u);
}

TEST_F(QedDriverTest, WriteAcrossL2TablesAndReadBack) {
  // 4 KiB clusters, 2-cluster tables: each L2 table covers 4 MiB.
  Open(16 * kM, 4096, 2);
  std::vector<std::byte> data(40 * kK);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = std::byte(static_cast<uint8_t>(i * 7));
  const uint64_t off = 4 * kM - 20 * kK - 512;
  ASSERT_TRUE(WriteAt(loop_, d(), off, data));
  auto r = ReadAt(loop_, d(), off, data.size());
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, data);
  EXPECT_NE(EntryAt(*img_.state, 4096, 0), 0u);
  EXPECT_NE(EntryAt(*img_.state, 4096, 1), 0u);
  EXPECT_EQ(d().stats().l2_tables_allocated, 2u);
  Reopen();
  auto r2 = ReadAt(loop_, d(), off - 512, data.size() + 1024);
  ASSERT_TRUE(r2);
  EXPECT_TRUE(std::equal(data.begin(), data.end(), r2->begin() + 512));
}

TEST_F(QedDriverTest, InPlaceOverwriteAllocatesNothing) {
  Open(4 * kM);
  ASSERT_TRUE(WriteAt(loop_, d(), 0, Fill(128 * kK, 1)));
  const uint64_t len = FileLen();
  const uint64_t runs = d().stats().allocating_runs;
  ASSERT_TRUE(WriteAt(loop_, d(), 4 * kK, Fill(100 * kK, 2)));
  EXPECT_EQ(FileLen(), len);
  EXPECT_EQ(d().stats().allocating_runs, runs);
  auto r = ReadAt(loop_, d(), 0, 128 * kK);
  ASSERT_TRUE(r);
  for (uint64_t i = 0; i < 128 * kK; ++i) {
    ASSERT_EQ(static_cast<uint8_t>((*r)[i]), (i >= 4 * kK && i < 104 * kK) ? 2 : 1) << i;
  }
}

TEST_F(QedDriverTest, WholeClusterZeroWriteSetsZeroEntries) {
  Open(4 * kM);
  ASSERT_TRUE(ZeroAt(loop_, d(), 64 * kK, 128 * kK));
  const uint64_t l2 = EntryAt(*img_.state, 0x10000, 0);
  ASSERT_NE(l2, 0u);
  EXPECT_EQ(EntryAt(*img_.state, l2, 1), 1u);
  EXPECT_EQ(EntryAt(*img_.state, l2, 2), 1u);
  EXPECT_EQ(EntryAt(*img_.state, l2, 3), 0u);
  EXPECT_EQ(d().stats().clusters_allocated, 0u);  // only the L2 table was allocated
  auto st = loop_.RunSync(d().GetStatus(64 * kK, 1 * kM));
  ASSERT_TRUE(st);
  EXPECT_EQ(st->length, 128 * kK);
  EXPECT_TRUE(st->zero);
  EXPECT_TRUE(st->present);
  EXPECT_FALSE(st->data);
  EXPECT_EQ(st->depth, 0);
}

// A whole allocated cluster becomes a zero cluster and its clusters are freed (the partial one
// is zeroed in place); the file keeps its size until close compacts it.
TEST_F(QedDriverTest, ZeroWriteOnAllocatedClusterFreesWholeClusters) {
  Open(4 * kM);
  ASSERT_TRUE(WriteAt(loop_, d(), 0, Fill(128 * kK, 0x77)));
  const uint64_t l2 = EntryAt(*img_.state, 0x10000, 0);
  const uint64_t e1 = EntryAt(*img_.state, l2, 1);
  const uint64_t len = FileLen();
  ASSERT_TRUE(ZeroAt(loop_, d(), 0, 64 * kK + 4 * kK, /*unmap=*/true));
  EXPECT_EQ(EntryAt(*img_.state, l2, 0), 1u);  // whole cluster: zero entry
  EXPECT_EQ(EntryAt(*img_.state, l2, 1), e1);  // partial: zeroed in place
  EXPECT_EQ(d().stats().clusters_freed, 1u);
  EXPECT_EQ(FileLen(), len);
  auto r = ReadAt(loop_, d(), 0, 128 * kK);
  ASSERT_TRUE(r);
  for (uint64_t i = 0; i < 128 * kK; ++i) {
    ASSERT_EQ(static_cast<uint8_t>((*r)[i]), i < 68 * kK ? 0 : 0x77) << i;
  }
}

// `write -z 200k 128k` on 64 KiB clusters: unaligned head and tail, one whole cluster between.
TEST_F(QedDriverTest, UnalignedZeroWriteWithoutBacking) {
  Open(4 * kM);
  ASSERT_TRUE(WriteAt(loop_, d(), 320 * kK, Fill(64 * kK, 0x33)));  // cluster 5 allocated
  ASSERT_TRUE(ZeroAt(loop_, d(), 200 * kK, 128 * kK));
  const uint64_t l2 = EntryAt(*img_.state, 0x10000, 0);
  EXPECT_EQ(EntryAt(*img_.state, l2, 3), 0u);  // unallocated head: already reads as zeros
  EXPECT_EQ(EntryAt(*img_.state, l2, 4), 1u);  // whole cluster: zero entry
  EXPECT_GT(EntryAt(*img_.state, l2, 5), 1u);  // allocated tail: zeroed in place
  auto r = ReadAt(loop_, d(), 192 * kK, 192 * kK);
  ASSERT_TRUE(r);
  for (uint64_t i = 0; i < 192 * kK; ++i) {
    const uint64_t pos = 192 * kK + i;
    ASSERT_EQ(static_cast<uint8_t>((*r)[i]), pos >= 328 * kK ? 0x33 : 0) << pos;
  }
}

TEST_F(QedDriverTest, WriteIntoZeroClusterZeroFillsTheRest) {
  Open(4 * kM);
  ASSERT_TRUE(WriteAt(loop_, d(), 64 * kK, Fill(64 * kK, 0x99)));
  ASSERT_TRUE(ZeroAt(loop_, d(), 128 * kK, 64 * kK));
  ASSERT_TRUE(WriteAt(loop_, d(), 132 * kK, Fill(4 * kK, 0xee)));
  auto r = ReadAt(loop_, d(), 128 * kK, 64 * kK);
  ASSERT_TRUE(r);
  for (uint64_t i = 0; i < 64 * kK; ++i) {
    ASSERT_EQ(static_cast<uint8_t>((*r)[i]), (i >= 4 * kK && i < 8 * kK) ? 0xee : 0) << i;
  }
}

TEST_F(QedDriverTest, StatusOfDataZeroAndUnallocatedRuns) {
  Open(4 * kM);
  ASSERT_TRUE(WriteAt(loop_, d(), 0, Fill(128 * kK, 1)));
  ASSERT_TRUE(ZeroAt(loop_, d(), 128 * kK, 64 * kK));
  auto a = loop_.RunSync(d().GetStatus(4 * kK, 4 * kM - 4 * kK));
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->data);
  EXPECT_FALSE(a->zero);
  EXPECT_EQ(a->length, 124 * kK);
  ASSERT_TRUE(a->offset.has_value());
  EXPECT_EQ(*a->offset, 0x50000u + 4 * kK);
  auto z = loop_.RunSync(d().GetStatus(128 * kK, 4 * kM - 128 * kK));
  ASSERT_TRUE(z);
  EXPECT_TRUE(z->zero && z->present && !z->data);
  auto u = loop_.RunSync(d().GetStatus(192 * kK, 4 * kM - 192 * kK));
  ASSERT_TRUE(u);
  EXPECT_FALSE(u->present);
  EXPECT_TRUE(u->zero);
  EXPECT_EQ(u->length, 4 * kM - 192 * kK);
  auto m = loop_.RunSync(d().Map(192 * kK, 64 * kK));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->kind, qed::ClusterKind::kUnallocatedL2);
}

TEST_F(QedDriverTest, TruncateGrowsOnly) {
  Open(4 * kM);
  ASSERT_TRUE(loop_.RunSync(d().Truncate(8 * kM)));
  EXPECT_EQ(d().length(), 8 * kM);
  Bytes hdr(img_.state->current.begin(), img_.state->current.begin() + 64);
  EXPECT_EQ(U64At(hdr, 48), 8 * kM);
  EXPECT_EQ(loop_.RunSync(d().Truncate(4 * kM)).error(), make_error_code(Errc::kNotSupported));
  EXPECT_EQ(loop_.RunSync(d().Truncate(8 * kM + 100)).error(), make_error_code(Errc::kOutOfRange));
  EXPECT_EQ(loop_.RunSync(d().Truncate(d().geometry().max_image_size + 512)).error(),
            make_error_code(Errc::kOutOfRange));
  ASSERT_TRUE(WriteAt(loop_, d(), 8 * kM - 4 * kK, Fill(4 * kK, 3)));
  Reopen();
  EXPECT_EQ(d().length(), 8 * kM);
  auto r = ReadAt(loop_, d(), 8 * kM - 4 * kK, 4 * kK);
  ASSERT_TRUE(r);
  EXPECT_TRUE(AllEqual(*r, 3));
}

TEST_F(QedDriverTest, ReadOnlyOpenRefusesWritesAndChangesNothing) {
  Open(4 * kM, 65536, 4, /*read_only=*/true);
  const Bytes before = img_.state->current;
  EXPECT_EQ(WriteAt(loop_, d(), 0, Fill(512, 1)).error(), make_error_code(Errc::kReadOnly));
  EXPECT_EQ(ZeroAt(loop_, d(), 0, 64 * kK).error(), make_error_code(Errc::kReadOnly));
  ASSERT_TRUE(CloseMem(loop_, img_).ok());
  EXPECT_EQ(img_.state->current, before);
  EXPECT_EQ(img_.state->writes, 0u);
}

TEST_F(QedDriverTest, CorruptL2EntryFailsOnlyThatIoWithEio) {
  Open(4 * kM);
  ASSERT_TRUE(WriteAt(loop_, d(), 0, Fill(128 * kK, 1)));
  ASSERT_TRUE(CloseMem(loop_, img_).ok());
  const uint64_t l2 = EntryAt(*img_.state, 0x10000, 0);
  // Entry 1 points past the end of the file.
  Bytes& cur = img_.state->current;
  PutU64(cur, l2 + 8, 0x10000000);
  img_.state->MarkDurable();
  ASSERT_TRUE(OpenMem(loop_, img_, DefaultOptions()).ok());
  const uint64_t len = FileLen();
  auto bad = ReadAt(loop_, d(), 64 * kK, 4 * kK);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error(), make_error_code(Errc::kCorruptImage));
  EXPECT_EQ(ToErrno(bad.error()), EIO);
  // A request spanning the good and the bad cluster fails too, and so does a write.
  EXPECT_FALSE(ReadAt(loop_, d(), 60 * kK, 8 * kK));
  EXPECT_FALSE(WriteAt(loop_, d(), 64 * kK, Fill(4 * kK, 9)));
  EXPECT_EQ(FileLen(), len);  // nothing was written past EOF or anywhere else for it
  auto good = ReadAt(loop_, d(), 0, 64 * kK);
  ASSERT_TRUE(good);
  EXPECT_TRUE(AllEqual(*good, 1));
}

TEST_F(QedDriverTest, CorruptL1EntryFailsWithEio) {
  Open(4096 * kM);
  Bytes& cur = img_.state->current;
  PutU64(cur, 0x10000 + 8, 0x10000 + 7);  // misaligned L1[1]
  img_.state->MarkDurable();
  Reopen();  // the L1 table is read at open
  auto bad = ReadAt(loop_, d(), 2048 * kM, 4 * kK);
  ASSERT_FALSE(bad);
  EXPECT_EQ(ToErrno(bad.error()), EIO);
  EXPECT_FALSE(loop_.RunSync(d().GetStatus(2048 * kM, 4 * kK)));
  EXPECT_TRUE(ReadAt(loop_, d(), 0, 4 * kK));
}

TEST_F(QedDriverTest, L2EntryPointingIntoTheL1TableIsCorrupt) {
  Open(4 * kM);
  ASSERT_TRUE(WriteAt(loop_, d(), 0, Fill(64 * kK, 1)));
  ASSERT_TRUE(CloseMem(loop_, img_).ok());
  const uint64_t l2 = EntryAt(*img_.state, 0x10000, 0);
  PutU64(img_.state->current, l2 + 8, 0x10000);  // L2[1] -> the L1 table
  img_.state->MarkDurable();
  ASSERT_TRUE(OpenMem(loop_, img_, DefaultOptions()).ok());
  const Bytes l1_before(img_.state->current.begin() + 0x10000,
                        img_.state->current.begin() + 0x20000);
  EXPECT_FALSE(WriteAt(loop_, d(), 64 * kK, Fill(64 * kK, 0xff)));
  const Bytes l1_after(img_.state->current.begin() + 0x10000,
                       img_.state->current.begin() + 0x20000);
  EXPECT_EQ(l1_before, l1_after);
}

// An entry that pointed past the end of the file at open must not become valid when the file
// grows: it would alias the clusters allocated since.
TEST_F(QedDriverTest, EntryPastEofStaysInvalidAfterTheFileGrows) {
  Open(4096 * kM);
  ASSERT_TRUE(WriteAt(loop_, d(), 0, Fill(64 * kK, 1)));  // data 0x50000, L2 0x60000, EOF 0xA0000
  ASSERT_TRUE(CloseMem(loop_, img_).ok());
  ASSERT_EQ(FileLen(), 0xA0000u);
  PutU64(img_.state->current, 0x60000 + 8, 0xA0000);  // L2[1]: the next cluster to be allocated
  PutU64(img_.state->current, 0x10000 + 8, 0xB0000);  // L1[1]: a table past EOF
  img_.state->MarkDurable();
  ASSERT_TRUE(OpenMem(loop_, img_, DefaultOptions()).ok());
  EXPECT_FALSE(ReadAt(loop_, d(), 64 * kK, 4 * kK));
  EXPECT_FALSE(ReadAt(loop_, d(), 2048 * kM, 4 * kK));
  // Grow the file well past both bad offsets.
  ASSERT_TRUE(WriteAt(loop_, d(), 128 * kK, Fill(1 * kM, 2)));
  ASSERT_GT(FileLen(), 0xB0000u + 0x40000u);
  auto r1 = ReadAt(loop_, d(), 64 * kK, 4 * kK);
  ASSERT_FALSE(r1);
  EXPECT_EQ(ToErrno(r1.error()), EIO);
  EXPECT_FALSE(WriteAt(loop_, d(), 64 * kK, Fill(4 * kK, 9)));
  EXPECT_FALSE(ReadAt(loop_, d(), 2048 * kM, 4 * kK));
  EXPECT_FALSE(WriteAt(loop_, d(), 2048 * kM, Fill(4 * kK, 9)));
  auto good = ReadAt(loop_, d(), 128 * kK, 1 * kM);
  ASSERT_TRUE(good);
  EXPECT_TRUE(AllEqual(*good, 2));
  Reopen();  // after a reopen the (now in-file) entries are duplicates: check's business
}

TEST_F(QedDriverTest, StrictAlignmentAndSmallTransfersOfTheChild) {
  test::MemFile::Options mo;
  mo.request_alignment = 4096;
  mo.memory_alignment = 4096;
  mo.max_transfer = 64 * kK;
  Open(64 * kM, 65536, 4, false, mo);
  EXPECT_EQ(d().limits().request_alignment, 4096u);
  // Header writes (NEED_CHECK), whole L2 tables (256 KiB) and entry updates all obey the child.
  // The caller's buffers honour memory_alignment too (BlockBackend sees to that normally).
  block::IoBuffer data(200 * kK);
  for (std::size_t i = 0; i < data.size(); ++i) {
    data.data()[i] = std::byte(static_cast<uint8_t>(i >> 4));
  }
  auto w = loop_.RunSync(d().Write(36 * kK, block::IoVector(data)));
  ASSERT_TRUE(w) << w.error().message();
  block::IoBuffer small(4 * kK, /*zero=*/true);
  ASSERT_TRUE(loop_.RunSync(d().Write(40 * kM, block::IoVector(small))));
  ASSERT_TRUE(ZeroAt(loop_, d(), 20 * kM, 1 * kM));
  ASSERT_TRUE(loop_.RunSync(d().Truncate(128 * kM)));
  ASSERT_TRUE(CloseMem(loop_, img_).ok());
  test::MemFile::Options mo2 = mo;
  ASSERT_TRUE(OpenMem(loop_, img_, DefaultOptions(), mo2).ok());
  block::IoBuffer back(200 * kK);
  ASSERT_TRUE(loop_.RunSync(d().Read(36 * kK, block::IoVector(back))));
  EXPECT_EQ(std::memcmp(back.data(), data.data(), data.size()), 0);
  auto c = loop_.RunSync(d().Check(false));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->corruptions, 0u);
  EXPECT_EQ(c->leaks, 0u);
}

TEST_F(QedDriverTest, UnknownAutoclearBitsAreClearedOnReadWriteOpenOnly) {
  Bytes b = NewImageBytes(4 * kM);
  PutU64(b, 32, 0x3);
  img_.state = test::MemFileState::FromBytes(b);
  ASSERT_TRUE(OpenMem(loop_, img_, DefaultOptions(/*read_only=*/true)).ok());
  ASSERT_TRUE(CloseMem(loop_, img_).ok());
  EXPECT_EQ(U64At(Bytes(img_.state->current.begin(), img_.state->current.begin() + 64), 32), 3u);
  ASSERT_TRUE(OpenMem(loop_, img_, DefaultOptions()).ok());
  Bytes hdr(img_.state->durable.begin(), img_.state->durable.begin() + 64);
  EXPECT_EQ(U64At(hdr, 32), 0u);  // cleared and flushed at open
}

TEST_F(QedDriverTest, CheckOfOpenImageIsClean) {
  Open(64 * kM, 4096, 2);
  std::mt19937_64 rng(42);
  for (int i = 0; i < 100; ++i) {
    const uint64_t off = (rng() % (64 * kM / 512 - 64)) * 512;
    const uint64_t len = (1 + rng() % 48) * 512;
    if (i % 4 == 0) {
      ASSERT_TRUE(ZeroAt(loop_, d(), off, len));
    } else {
      ASSERT_TRUE(WriteAt(loop_, d(), off, Fill(len, static_cast<uint8_t>(i))));
    }
  }
  auto c = loop_.RunSync(d().Check(true));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->corruptions, 0u);
  EXPECT_EQ(c->leaks, 0u);
  EXPECT_EQ(c->check_errors, 0u);
  EXPECT_EQ(HeaderFeatures(*img_.state) & qed::kFeatureNeedCheck, 0u);
}

// ---- metadata write failures with concurrent requests ----

coro::Task<void> TrackedWrite(qed::QedDriver* d, uint64_t off, Bytes data, bool* done, bool* ok) {
  Result<void> r = co_await d->Write(off, block::IoVector(data.data(), data.size()));
  *ok = static_cast<bool>(r);
  *done = true;
}

// QedDriver -> |outer| (holds I/O) -> |inner| (fails I/O) -> MemFile; both filters see the
// driver's debug events.
struct FaultStack {
  std::shared_ptr<test::MemFileState> state;
  std::unique_ptr<qed::QedDriver> drv;
  block::FaultInjectionDriver* outer = nullptr;
  block::FaultInjectionDriver* inner = nullptr;
};

void OpenFaultStack(coro::EventLoop& loop, FaultStack& s, qed::QedTuning tuning = {}) {
  test::MemFile::Options mo;
  mo.io_yields = 1;
  auto inner =
      std::make_unique<block::FaultInjectionDriver>(std::make_unique<test::MemFile>(s.state, mo));
  s.inner = inner.get();
  auto outer = std::make_unique<block::FaultInjectionDriver>(std::move(inner));
  s.outer = outer.get();
  block::ChainContext chain;
  block::OpenOptions o = DefaultOptions();
  o.need_check_delay = std::chrono::hours(1);
  chain.names.push_back(o.path);
  chain.depth = 1;
  auto d = loop.RunSync(qed::QedDriver::Open(std::move(outer), o, chain, nullptr, tuning));
  ASSERT_TRUE(d.ok()) << d.status();
  s.drv = std::move(*d);
}

// A new L2 entry must not be visible to other requests before it is on disk: a write to the
// same cluster that overlaps a failing L2 update must not be acknowledged into a cluster the
// rollback then unlinks.
TEST(QedMetadataFailureTest, FailedL2UpdateLosesNoAcknowledgedWrite) {
  coro::EventLoop loop;
  FaultStack s;
  s.state = test::MemFileState::FromBytes(NewImageBytes(16 * kM));
  OpenFaultStack(loop, s);
  ASSERT_TRUE(WriteAt(loop, *s.drv, 0, Fill(4 * kK, 1)));  // the L2 table exists from now on
  s.outer->AddRule({.event = block::DebugEvent::kL2Update, .suspend = true, .tag = "l2"});
  s.inner->AddRule({.event = block::DebugEvent::kL2Update, .error = EIO});
  bool a_done = false, a_ok = false, b_done = false, b_ok = false;
  coro::Spawn(TrackedWrite(s.drv.get(), 64 * kK, Fill(4 * kK, 0xa), &a_done, &a_ok));
  while (!s.outer->IsSuspended("l2")) ASSERT_GT(loop.RunOne(), 0u);
  // While A's L2 update is held, B writes into the cluster A is linking.
  coro::Spawn(TrackedWrite(s.drv.get(), 64 * kK + 8 * kK, Fill(4 * kK, 0xb), &b_done, &b_ok));
  for (int i = 0; i < 200 && !b_done; ++i) loop.RunOne();
  s.outer->Resume("l2");  // A's L2 update now fails with EIO
  while (!a_done || !b_done) ASSERT_GT(loop.RunOne(), 0u);
  EXPECT_FALSE(a_ok);
  ASSERT_TRUE(b_ok);
  // B was acknowledged: its data must be readable.
  auto r = ReadAt(loop, *s.drv, 64 * kK + 8 * kK, 4 * kK);
  ASSERT_TRUE(r);
  EXPECT_TRUE(AllEqual(*r, 0xb));
  auto c = loop.RunSync(s.drv->Check(false));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->corruptions, 0u);
  ASSERT_TRUE(loop.RunSync(s.drv->Close()).ok());
}

// A data write into new clusters that fails (ENOSPC of a full host file system) links nothing:
// its clusters are handed to the next allocation instead of leaking, and the errno reaches the
// caller unchanged.
TEST(QedMetadataFailureTest, FailedDataWriteGivesItsClustersBack) {
  coro::EventLoop loop;
  FaultStack s;
  s.state = test::MemFileState::FromBytes(NewImageBytes(16 * kM));
  OpenFaultStack(loop, s);
  ASSERT_TRUE(WriteAt(loop, *s.drv, 0, Fill(4 * kK, 1)));
  const uint64_t size = s.state->size();
  s.inner->AddRule({.event = block::DebugEvent::kWriteData, .error = ENOSPC});
  Result<void> failed = WriteAt(loop, *s.drv, 64 * kK, Fill(128 * kK, 2));
  ASSERT_FALSE(failed);
  EXPECT_EQ(ToErrno(failed.error()), ENOSPC);
  ASSERT_TRUE(WriteAt(loop, *s.drv, 256 * kK, Fill(4 * kK, 3)));
  EXPECT_EQ(s.state->size(), size + 64 * kK);  // the failed run's first cluster was reused
  auto c = loop.RunSync(s.drv->Check(false));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->corruptions, 0u);
  EXPECT_EQ(c->leaks, 0u);
  auto r = ReadAt(loop, *s.drv, 64 * kK, 128 * kK);
  ASSERT_TRUE(r);
  EXPECT_TRUE(AllEqual(*r, 0));
  ASSERT_TRUE(loop.RunSync(s.drv->Close()).ok());
  EXPECT_EQ(s.state->size(), size + 64 * kK);
}

// Two concurrent runs in one table whose data writes both fail, the earlier reservation first:
// the earlier range cannot go back while the later one is still reserved, but it does once the
// later one has, so nothing leaks.
TEST(QedMetadataFailureTest, ConcurrentFailedDataWritesGiveAllClustersBack) {
  coro::EventLoop loop;
  FaultStack s;
  s.state = test::MemFileState::FromBytes(NewImageBytes(16 * kM));
  OpenFaultStack(loop, s);
  ASSERT_TRUE(WriteAt(loop, *s.drv, 0, Fill(4 * kK, 1)));
  const uint64_t size = s.state->size();
  s.outer->AddRule(
      {.event = block::DebugEvent::kWriteData, .count = 2, .suspend = true, .tag = "data"});
  s.inner->AddRule({.event = block::DebugEvent::kWriteData, .error = ENOSPC, .count = 2});
  bool a_done = false, a_ok = true, b_done = false, b_ok = true;
  coro::Spawn(TrackedWrite(s.drv.get(), 64 * kK, Fill(4 * kK, 0xa), &a_done, &a_ok));
  while (s.outer->suspended_count() < 1) ASSERT_GT(loop.RunOne(), 0u);
  coro::Spawn(TrackedWrite(s.drv.get(), 128 * kK, Fill(4 * kK, 0xb), &b_done, &b_ok));
  while (s.outer->suspended_count() < 2) ASSERT_GT(loop.RunOne(), 0u);
  s.outer->Resume("data");  // A fails first, then B
  while (!a_done || !b_done) ASSERT_GT(loop.RunOne(), 0u);
  EXPECT_FALSE(a_ok);
  EXPECT_FALSE(b_ok);
  ASSERT_TRUE(WriteAt(loop, *s.drv, 192 * kK, Fill(4 * kK, 3)));
  EXPECT_EQ(s.state->size(), size + 64 * kK);  // allocated where A's run was
  auto c = loop.RunSync(s.drv->Check(false));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->corruptions, 0u);
  EXPECT_EQ(c->leaks, 0u);
  ASSERT_TRUE(loop.RunSync(s.drv->Close()).ok());
}

// A new L2 table whose write fails is not linked by L1, so the table and the data clusters
// written before it are given back; the data bytes already past the allocated area are cut off
// at close, which leaves no leaked cluster.
TEST(QedMetadataFailureTest, FailedNewL2TableWriteGivesBackTableAndData) {
  coro::EventLoop loop;
  FaultStack s;
  s.state = test::MemFileState::FromBytes(NewImageBytes(8 * kM * kK));  // two L2 tables
  OpenFaultStack(loop, s);
  ASSERT_TRUE(WriteAt(loop, *s.drv, 0, Fill(4 * kK, 1)));
  const uint64_t size = s.state->size();
  const uint64_t second_table = 2 * kM * kK;  // first guest byte mapped by L1 entry 1
  s.inner->AddRule({.event = block::DebugEvent::kL2AllocWrite, .error = EIO});
  ASSERT_FALSE(WriteAt(loop, *s.drv, second_table, Fill(4 * kK, 2)));
  EXPECT_EQ(s.state->size(), size + 64 * kK);  // the data cluster reached the file
  auto c = loop.RunSync(s.drv->Check(false));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->corruptions, 0u);
  EXPECT_EQ(c->leaks, 0u);
  auto r = ReadAt(loop, *s.drv, second_table, 4 * kK);
  ASSERT_TRUE(r);
  EXPECT_TRUE(AllEqual(*r, 0));
  ASSERT_TRUE(loop.RunSync(s.drv->Close()).ok());
  EXPECT_EQ(s.state->size(), size);  // trimmed back at close

  // Reopened: clean, and the next allocation uses the space again.
  FaultStack again;
  again.state = s.state;
  OpenFaultStack(loop, again);
  ASSERT_TRUE(WriteAt(loop, *again.drv, second_table, Fill(4 * kK, 3)));
  auto c2 = loop.RunSync(again.drv->Check(false));
  ASSERT_TRUE(c2);
  EXPECT_EQ(c2->corruptions, 0u);
  EXPECT_EQ(c2->leaks, 0u);
  ASSERT_TRUE(loop.RunSync(again.drv->Close()).ok());
}

// Forwards to a MemFile; the first read after a kL2Load event copies its data at issue time and
// then stays suspended until released: a slow L2 table read.
class SlowL2LoadFile final : public block::BlockDriver {
 public:
  explicit SlowL2LoadFile(std::unique_ptr<block::BlockDriver> child) : child_(std::move(child)) {}
  bool armed = false;    // hold the next L2 load
  bool holding = false;  // a read is held
  bool release = false;
  std::string_view format_name() const override { return "slow-l2"; }
  block::BlockLimits limits() const override { return child_->limits(); }
  uint64_t length() const override { return child_->length(); }
  bool read_only() const override { return child_->read_only(); }
  void Annotate(block::DebugEvent e) override {
    if (armed && e == block::DebugEvent::kL2Load) {
      armed = false;
      hold_next_ = true;
    }
  }
  coro::Task<Result<void>> Read(uint64_t offset, block::IoVector iov) override {
    const bool hold = hold_next_;
    hold_next_ = false;
    Result<void> r = co_await child_->Read(offset, iov);
    if (hold) {
      holding = true;
      while (!release) co_await coro::EventLoop::Current().Yield();
      holding = false;
    }
    co_return r;
  }
  coro::Task<Result<void>> Write(uint64_t offset, block::IoVector iov) override {
    co_return co_await child_->Write(offset, iov);
  }
  coro::Task<Result<void>> WriteZeroes(uint64_t offset, uint64_t len,
                                       block::ZeroFlags flags) override {
    co_return co_await child_->WriteZeroes(offset, len, flags);
  }
  coro::Task<Result<void>> Flush() override { co_return co_await child_->Flush(); }
  coro::Task<Result<block::BlockStatus>> GetStatus(uint64_t offset, uint64_t len) override {
    co_return co_await child_->GetStatus(offset, len);
  }
  coro::Task<Result<void>> Truncate(uint64_t n) override { co_return co_await child_->Truncate(n); }
  coro::Task<absl::Status> Close() override { co_return co_await child_->Close(); }

 private:
  std::unique_ptr<block::BlockDriver> child_;
  bool hold_next_ = false;
};

coro::Task<void> TrackedRead(qed::QedDriver* d, uint64_t off, std::size_t n, bool* done) {
  Bytes b(n);
  Result<void> r = co_await d->Read(off, block::IoVector(b.data(), b.size()));
  EXPECT_TRUE(r);
  *done = true;
}

// With a one-table cache: X misses table T and reads it slowly; meanwhile Y loads T, allocates
// into it, and T is evicted by a lookup in another table. X's copy predates Y's entry and must
// not enter the cache.
TEST(QedL2CacheRaceTest, SlowL2LoadDoesNotInsertAStaleTable) {
  coro::EventLoop loop;
  auto state = test::MemFileState::FromBytes(NewImageBytes(64 * kM, 4096, 2));
  {
    MemImage img;
    img.state = state;
    ASSERT_TRUE(OpenMem(loop, img, DefaultOptions()).ok());
    ASSERT_TRUE(WriteAt(loop, *img.drv, 0, Fill(4 * kK, 1)));        // table T (L1 index 0)
    ASSERT_TRUE(WriteAt(loop, *img.drv, 32 * kM, Fill(4 * kK, 2)));  // table U (L1 index 1)
    ASSERT_TRUE(CloseMem(loop, img).ok());
  }
  test::MemFile::Options mo;
  mo.io_yields = 1;
  auto slow = std::make_unique<SlowL2LoadFile>(std::make_unique<test::MemFile>(state, mo));
  SlowL2LoadFile* hook = slow.get();
  block::ChainContext chain;
  block::OpenOptions o = DefaultOptions();
  chain.names.push_back(o.path);
  chain.depth = 1;
  qed::QedTuning tuning;
  tuning.l2_cache_bytes = 1;
  tuning.l2_cache_min_entries = 1;
  tuning.l2_cache_max_entries = 1;
  auto d = loop.RunSync(qed::QedDriver::Open(std::move(slow), o, chain, nullptr, tuning));
  ASSERT_TRUE(d.ok()) << d.status();
  qed::QedDriver* drv = d->get();
  hook->armed = true;
  bool x_done = false;
  coro::Spawn(TrackedRead(drv, 0, 4 * kK, &x_done));
  while (!hook->holding) ASSERT_GT(loop.RunOne(), 0u);
  ASSERT_TRUE(WriteAt(loop, *drv, 64 * kK, Fill(4 * kK, 0x77)));  // Y: allocates into T
  ASSERT_TRUE(ReadAt(loop, *drv, 32 * kM, 4 * kK));               // evicts T
  hook->release = true;
  while (!x_done) ASSERT_GT(loop.RunOne(), 0u);
  auto r = ReadAt(loop, *drv, 64 * kK, 4 * kK);
  ASSERT_TRUE(r);
  EXPECT_TRUE(AllEqual(*r, 0x77));
  ASSERT_TRUE(loop.RunSync(drv->Close()).ok());
}

coro::Task<void> TrackedClose(qed::QedDriver* d, absl::Status* out, bool* done) {
  *out = co_await d->Close();
  *done = true;
}

TEST_F(QedDriverTest, ConcurrentCloseWaitsForTheFirst) {
  test::MemFile::Options mo;
  mo.io_yields = 2;
  Open(16 * kM, 65536, 4, false, mo);
  ASSERT_TRUE(WriteAt(loop_, d(), 0, Fill(4 * kK, 1)));  // Close has a flush and a header write
  absl::Status a = absl::UnknownError("unset"), b = absl::UnknownError("unset");
  bool a_done = false, b_done = false;
  coro::Spawn(TrackedClose(&d(), &a, &a_done));
  coro::Spawn(TrackedClose(&d(), &b, &b_done));
  while (!a_done || !b_done) ASSERT_GT(loop_.RunOne(), 0u);
  EXPECT_TRUE(a.ok()) << a;
  EXPECT_TRUE(b.ok()) << b;
  EXPECT_EQ(DurableFeatures(*img_.state) & qed::kFeatureNeedCheck, 0u);
  img_.drv.reset();
}

// ---- real files: backing chains and the QEMU oracle ----

Bytes ReadBackend(coro::EventLoop& loop, block::BlockBackend& bb, uint64_t off, uint64_t len) {
  Bytes b(len);
  auto r = loop.RunSync(bb.Read(off, block::IoVector(b.data(), b.size())));
  EXPECT_TRUE(r);
  return b;
}

void WriteRawFile(const std::string& path, uint64_t size, uint8_t v) {
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  Bytes b = Fill(size, v);
  ASSERT_EQ(::pwrite(fd, b.data(), b.size(), 0), static_cast<ssize_t>(b.size()));
  ::close(fd);
}

class QedFileTest : public ::testing::Test {
 protected:
  absl::StatusOr<std::unique_ptr<block::BlockBackend>> OpenImg(const std::string& path,
                                                               bool read_only = false,
                                                               block::OpenReport* rep = nullptr) {
    block::OpenOptions o;
    o.path = path;
    o.read_only = read_only;
    o.need_check_delay = std::chrono::milliseconds(1);
    return loop_.RunSync(block::OpenImage(o, rep));
  }
  void CloseImg(std::unique_ptr<block::BlockBackend>& bb) {
    absl::Status st = loop_.RunSync(bb->Close());
    EXPECT_TRUE(st.ok()) << st;
    bb.reset();
  }
  coro::EventLoop loop_;
  test::TempDir dir_;
};

TEST_F(QedFileTest, BackingFileCopyOnWriteAndZeroClusters) {
  const std::string base = dir_.File("base.raw");
  const std::string ov = dir_.File("ov.qed");
  WriteRawFile(base, 1 * kM, 0x55);
  qed::CreateOptions co;
  co.path = ov;
  co.size = 4 * kM;
  co.backing_file = "base.raw";  // relative to the image's directory
  co.backing_format = "raw";
  ASSERT_TRUE(qed::CreateImage(co).ok());

  auto bb = OpenImg(ov);
  ASSERT_TRUE(bb.ok()) << bb.status();
  auto* drv = dynamic_cast<qed::QedDriver*>(&(*bb)->driver());
  ASSERT_NE(drv, nullptr);
  EXPECT_EQ(drv->backing_filename(), "base.raw");
  EXPECT_EQ(drv->backing_path(), base);
  ASSERT_NE(drv->backing(), nullptr);

  EXPECT_TRUE(AllEqual(ReadBackend(loop_, **bb, 0, 1 * kM), 0x55));
  EXPECT_TRUE(AllEqual(ReadBackend(loop_, **bb, 1 * kM, 3 * kM), 0));
  // Partial write: the rest of the cluster comes from the backing file.
  Bytes w = Fill(4 * kK, 0xa1);
  ASSERT_TRUE(loop_.RunSync((*bb)->Write(4 * kK, block::IoVector(w.data(), w.size()))));
  // Whole zero cluster hides the backing data; a partial write into it zero-fills (not Q3).
  ASSERT_TRUE(loop_.RunSync((*bb)->WriteZeroes(64 * kK, 64 * kK, block::ZeroFlags::kNone)));
  ASSERT_TRUE(loop_.RunSync((*bb)->Write(68 * kK, block::IoVector(w.data(), w.size()))));
  // Partial zero write over backing data: an allocating write of zeros.
  ASSERT_TRUE(loop_.RunSync((*bb)->WriteZeroes(130 * kK, 2 * kK, block::ZeroFlags::kNone)));
  // Status: unallocated in the backing range reports the backing file at depth 1.
  auto st = loop_.RunSync((*bb)->GetStatus(512 * kK, 3 * kM));
  ASSERT_TRUE(st);
  EXPECT_EQ(st->depth, 1);
  EXPECT_TRUE(st->present);
  EXPECT_EQ(st->length, 512 * kK);
  auto past = loop_.RunSync((*bb)->GetStatus(2 * kM, 1 * kM));
  ASSERT_TRUE(past);
  EXPECT_FALSE(past->present);
  EXPECT_TRUE(past->zero);
  // Allocations set NEED_CHECK with a backing file too (a crash must be repaired at the next
  // open); close clears it.
  EXPECT_NE(drv->header().features & qed::kFeatureNeedCheck, 0u);
  EXPECT_EQ(drv->stats().need_check_sets, 1u);
  CloseImg(*bb);

  Bytes model = Fill(4 * kM, 0);
  std::fill(model.begin(), model.begin() + 1 * kM, std::byte{0x55});
  std::fill(model.begin() + 4 * kK, model.begin() + 8 * kK, std::byte{0xa1});
  std::fill(model.begin() + 64 * kK, model.begin() + 128 * kK, std::byte{0});
  std::fill(model.begin() + 68 * kK, model.begin() + 72 * kK, std::byte{0xa1});
  std::fill(model.begin() + 130 * kK, model.begin() + 132 * kK, std::byte{0});
  const std::string model_path = dir_.File("model.raw");
  {
    int fd = ::open(model_path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, model.data(), model.size(), 0), static_cast<ssize_t>(model.size()));
    ::close(fd);
  }
  Bytes hdr = ReadPath(ov);
  EXPECT_EQ(U64At(hdr, 16), 0x05u);  // NEED_CHECK never used with a backing file
  if (!test::HaveQemuImg()) GTEST_SKIP() << "qemu-img not installed";
  test::QemuCheck chk = test::QemuImgCheckJson(ov);
  EXPECT_EQ(chk.exit_code, 0) << chk.output;
  test::CommandResult cmp = test::QemuImg({"compare", "-f", "qed", "-F", "raw", ov, model_path});
  EXPECT_EQ(cmp.exit_code, 0) << cmp.out << cmp.err;
}

TEST_F(QedFileTest, BackingFileNameResolvedAgainstImageDirectory) {
  ASSERT_EQ(::mkdir(dir_.File("d1").c_str(), 0755), 0);
  WriteRawFile(dir_.File("d1/base.raw"), 64 * kK, 0x42);
  qed::CreateOptions co;
  co.path = dir_.File("d1/ov.qed");
  co.size = 1 * kM;
  co.backing_file = "base.raw";
  co.backing_format = "raw";
  ASSERT_TRUE(qed::CreateImage(co).ok());
  block::OpenReport rep;
  auto bb = OpenImg(co.path, /*read_only=*/true, &rep);
  ASSERT_TRUE(bb.ok()) << bb.status();
  EXPECT_TRUE(AllEqual(ReadBackend(loop_, **bb, 0, 64 * kK), 0x42));
  ASSERT_EQ(rep.chain.size(), 2u);
  EXPECT_EQ(rep.chain[1].path, dir_.File("d1/base.raw"));
  CloseImg(*bb);
}

TEST_F(QedFileTest, MissingBackingFileFailsTheOpenWithItsName) {
  qed::CreateOptions co;
  co.path = dir_.File("ov.qed");
  co.size = 1 * kM;
  co.backing_file = "nope.raw";
  co.backing_format = "raw";
  WriteRawFile(dir_.File("nope.raw"), 4096, 1);
  ASSERT_TRUE(qed::CreateImage(co).ok());
  ASSERT_EQ(::unlink(dir_.File("nope.raw").c_str()), 0);
  auto bb = OpenImg(co.path);
  ASSERT_FALSE(bb.ok());
  EXPECT_NE(std::string(bb.status().message()).find("nope.raw"), std::string::npos) << bb.status();
}

// qemu-io writes (write -P, write -z), we read: identical to `qemu-img convert -O raw`.
TEST_F(QedFileTest, QemuWrittenImageReadsLikeQemuConvert) {
  if (!test::HaveQemuImg() || !test::HaveQemuIo()) GTEST_SKIP() << "QEMU tools not installed";
  const std::string img = dir_.File("q.qed");
  ASSERT_EQ(test::QemuImg({"create", "-q", "-f", "qed", img, "64M"}).exit_code, 0);
  test::CommandResult w =
      test::QemuIo({"-f", "qed", "-c", "write -P 0xab 0 64k", "-c", "write -P 0xcd 70000 5000",
                    "-c", "write -z 1M 128k", "-c", "write -z 3M 4k", "-c", "write -P 0x11 32M 1M",
                    "-c", "write -z 200k 128k", "-c", "write -P 0x22 63M 1M", img});
  ASSERT_EQ(w.exit_code, 0) << w.out << w.err;
  const std::string raw = dir_.File("q.raw");
  ASSERT_TRUE(test::QemuImgConvertToRaw(img, raw, "qed").ok());
  const Bytes expect = ReadPath(raw);
  auto bb = OpenImg(img, /*read_only=*/true);
  ASSERT_TRUE(bb.ok()) << bb.status();
  const Bytes got = ReadBackend(loop_, **bb, 0, 64 * kM);
  EXPECT_TRUE(got == expect);
  CloseImg(*bb);
}

// We write (data, zeros, punches), QEMU verifies: check clean, compare identical to a raw model.
TEST_F(QedFileTest, OurWritesPassQemuCheckAndCompare) {
  if (!test::HaveQemuImg()) GTEST_SKIP() << "qemu-img not installed";
  const std::string img = dir_.File("w.qed");
  const uint64_t size = 48 * kM;
  qed::CreateOptions co;
  co.path = img;
  co.size = size;
  co.cluster_size = 4096;
  co.table_size = 2;  // 4 MiB per L2 table: many tables
  ASSERT_TRUE(qed::CreateImage(co).ok());
  Bytes model(size);
  auto bb = OpenImg(img);
  ASSERT_TRUE(bb.ok()) << bb.status();
  // The sequence the interop suite spot-checks: data, then zero its first half.
  Bytes ab = Fill(4096, 0xab);
  ASSERT_TRUE(loop_.RunSync((*bb)->Write(0, block::IoVector(ab.data(), ab.size()))));
  ASSERT_TRUE(loop_.RunSync((*bb)->WriteZeroes(0, 2048, block::ZeroFlags::kNone)));
  std::fill(model.begin() + 2048, model.begin() + 4096, std::byte{0xab});
  std::mt19937_64 rng(7);
  for (int i = 0; i < 300; ++i) {
    const uint64_t off = rng() % (size - 64 * kK);
    const uint64_t len = 1 + rng() % (24 * kK);
    const int kind = static_cast<int>(rng() % 4);
    if (kind == 0) {
      ASSERT_TRUE(loop_.RunSync((*bb)->WriteZeroes(off, len, block::ZeroFlags::kMayUnmap)));
      std::fill(model.begin() + off, model.begin() + off + len, std::byte{0});
    } else {
      Bytes data(len);
      for (auto& x : data) x = std::byte(static_cast<uint8_t>(rng()));
      ASSERT_TRUE(loop_.RunSync((*bb)->Write(off, block::IoVector(data.data(), data.size()))));
      std::copy(data.begin(), data.end(), model.begin() + off);
    }
  }
  const Bytes got = ReadBackend(loop_, **bb, 0, size);
  EXPECT_TRUE(got == model);
  CloseImg(*bb);
  const std::string model_path = dir_.File("model.raw");
  {
    int fd = ::open(model_path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, model.data(), model.size(), 0), static_cast<ssize_t>(model.size()));
    ::close(fd);
  }
  EXPECT_EQ(U64At(ReadPath(img), 16), 0u);
  test::QemuCheck chk = test::QemuImgCheckJson(img);
  EXPECT_EQ(chk.exit_code, 0) << chk.output;
  EXPECT_EQ(chk.corruptions, 0);
  EXPECT_EQ(chk.leaks, 0);
  test::CommandResult cmp = test::QemuImg({"compare", "-f", "qed", "-F", "raw", img, model_path});
  EXPECT_EQ(cmp.exit_code, 0) << cmp.out << cmp.err;
  if (test::HaveQemuIo()) {
    test::CommandResult io =
        test::QemuIo({"-r", "-f", "qed", "-c", "read -P 0 0 2k", "-c", "read -P 0xab 2k 2k", img});
    EXPECT_EQ(io.exit_code, 0) << io.out << io.err;
    EXPECT_EQ(io.out.find("verification failed"), std::string::npos) << io.out;
  }
}

}  // namespace
}  // namespace qedfuse::qedunit
