// Concurrent allocating writes: distinct clusters, nothing lost, and a strict FIFO hand-off of
// the allocation slot. The MemFile child suspends for a few loop turns on every I/O, so requests
// really overlap; the tests drive the loop one handler at a time (EventLoop::RunOne).
//
// Interleaving of FifoHandOffBeatsANewcomer (A, B, C allocate distinct clusters):
//   turn   A                      B                        C
//   0      owns slot, writes      queued (alloc_waiters_)
//   k      finishes: hands the    woken (posted), owner
//          slot to B
//   k      -                      -                        arrives: slot taken -> queued
//   ...                           allocates, finishes      woken, allocates
// so the clusters are allocated (and the requests complete) in the order A, B, C.
#include <algorithm>
#include <set>

#include "qed_driver_test_util.h"

namespace qedfuse::qedunit {
namespace {

constexpr uint64_t kK = 1024;
constexpr uint64_t kM = 1024 * 1024;

coro::Task<void> TrackedWrite(qed::QedDriver* d, uint64_t off, Bytes data, int id,
                              std::vector<int>* order, bool* ok) {
  Result<void> r = co_await d->Write(off, block::IoVector(data.data(), data.size()));
  *ok = static_cast<bool>(r);
  order->push_back(id);
}

class QedAllocRaceTest : public ::testing::Test {
 protected:
  void Open(uint64_t size, uint32_t cs, uint32_t ts, int io_yields) {
    img_.state = test::MemFileState::FromBytes(NewImageBytes(size, cs, ts));
    test::MemFile::Options mo;
    mo.io_yields = io_yields;
    absl::Status st = OpenMem(loop_, img_, DefaultOptions(), mo);
    ASSERT_TRUE(st.ok()) << st;
  }
  void TearDown() override {
    if (img_.drv) {
      EXPECT_TRUE(CloseMem(loop_, img_).ok());
    }
  }
  // Steps the loop until |n| tracked writes have finished.
  void RunUntil(const std::vector<int>& order, std::size_t n) {
    while (order.size() < n) ASSERT_GT(loop_.RunOne(), 0u);
  }
  uint64_t L2Entry(uint64_t guest) {
    const qed::Geometry& g = img_.drv->geometry();
    const uint64_t l2 = EntryAt(*img_.state, img_.drv->header().l1_table_offset, g.l1_index(guest));
    return l2 == 0 ? 0 : EntryAt(*img_.state, l2, g.l2_index(guest));
  }
  void ExpectClean() {
    auto c = loop_.RunSync(img_.drv->Check(false));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->corruptions, 0u);
    EXPECT_EQ(c->leaks, 0u);
  }

  coro::EventLoop loop_;
  MemImage img_;
};

TEST_F(QedAllocRaceTest, WritersInOneNewL2TableGetDistinctClusters) {
  Open(64 * kM, 65536, 4, 2);
  constexpr int kN = 32;
  std::vector<int> order;
  bool ok[kN] = {};
  for (int i = 0; i < kN; ++i) {
    coro::Spawn(TrackedWrite(img_.drv.get(), uint64_t(i) * 64 * kK + 512 * (i % 8),
                             Fill(4 * kK, uint8_t(i + 1)), i, &order, &ok[i]));
  }
  RunUntil(order, kN);
  std::set<uint64_t> hosts;
  for (int i = 0; i < kN; ++i) {
    EXPECT_TRUE(ok[i]) << i;
    const uint64_t e = L2Entry(uint64_t(i) * 64 * kK);
    EXPECT_GT(e, 1u);
    hosts.insert(e);
    auto r = ReadAt(loop_, *img_.drv, uint64_t(i) * 64 * kK, 64 * kK);
    ASSERT_TRUE(r);
    for (uint64_t b = 0; b < 64 * kK; ++b) {
      const bool in = b >= 512 * uint64_t(i % 8) && b < 512 * uint64_t(i % 8) + 4 * kK;
      ASSERT_EQ(static_cast<uint8_t>((*r)[b]), in ? i + 1 : 0) << i << " " << b;
    }
  }
  EXPECT_EQ(hosts.size(), std::size_t{kN});
  EXPECT_EQ(img_.drv->stats().l2_tables_allocated, 1u);  // one table, not one per racer
  EXPECT_EQ(img_.drv->stats().alloc_waits, uint64_t{kN - 1});
  ExpectClean();
}

// Writers of different sectors of the same few clusters, across several L2 tables: the first
// allocates, the later ones wake up, see the cluster allocated, and write in place.
TEST_F(QedAllocRaceTest, OverlappingClustersAcrossTablesLoseNothing) {
  Open(32 * kM, 4096, 2, 3);  // 4 MiB per L2 table
  struct W {
    uint64_t off;
    uint8_t v;
  };
  std::vector<W> ws;
  for (int t = 0; t < 6; ++t) {      // six L2 tables
    for (int c = 0; c < 3; ++c) {    // three clusters in each
      for (int s = 0; s < 8; ++s) {  // every 512-byte sector of the cluster by its own writer
        ws.push_back({uint64_t(t) * 4 * kM + uint64_t(c) * 4096 * 5 + uint64_t(s) * 512,
                      uint8_t(1 + (t * 24 + c * 8 + s) % 250)});
      }
    }
  }
  // Interleave the submission order so neighbours do not arrive together.
  std::vector<std::size_t> idx(ws.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = (i * 37) % idx.size();
  std::vector<int> order;
  bool oks[6 * 3 * 8] = {};
  for (std::size_t k = 0; k < idx.size(); ++k) {
    const W& w = ws[idx[k]];
    coro::Spawn(TrackedWrite(img_.drv.get(), w.off, Fill(512, w.v), int(k), &order, &oks[k]));
  }
  RunUntil(order, ws.size());
  for (std::size_t k = 0; k < ws.size(); ++k) EXPECT_TRUE(oks[k]) << k;
  for (const W& w : ws) {
    auto r = ReadAt(loop_, *img_.drv, w.off, 512);
    ASSERT_TRUE(r);
    EXPECT_TRUE(AllEqual(*r, w.v)) << w.off;
  }
  EXPECT_EQ(img_.drv->stats().l2_tables_allocated, 6u);
  EXPECT_EQ(img_.drv->stats().clusters_allocated, 18u);
  ExpectClean();
}

TEST_F(QedAllocRaceTest, WaitersResumeInFifoOrder) {
  Open(64 * kM, 65536, 4, 2);
  ASSERT_TRUE(WriteAt(loop_, *img_.drv, 0, Fill(512, 1)));  // the L2 table exists
  constexpr int kN = 12;
  std::vector<int> order;
  bool ok[kN] = {};
  // Submitted in this order, to clusters in scrambled guest order.
  for (int i = 0; i < kN; ++i) {
    const uint64_t cluster = 1 + (uint64_t(i) * 7) % kN;
    coro::Spawn(TrackedWrite(img_.drv.get(), cluster * 64 * kK, Fill(4 * kK, uint8_t(i)), i, &order,
                             &ok[i]));
  }
  RunUntil(order, kN);
  std::vector<int> want(kN);
  for (int i = 0; i < kN; ++i) want[i] = i;
  EXPECT_EQ(order, want);
  // Host clusters were handed out in submission order too.
  uint64_t prev = 0;
  for (int i = 0; i < kN; ++i) {
    const uint64_t e = L2Entry((1 + (uint64_t(i) * 7) % kN) * 64 * kK);
    EXPECT_GT(e, prev) << i;
    prev = e;
    EXPECT_TRUE(ok[i]);
  }
}

TEST_F(QedAllocRaceTest, FifoHandOffBeatsANewcomer) {
  Open(64 * kM, 65536, 4, 2);
  ASSERT_TRUE(WriteAt(loop_, *img_.drv, 0, Fill(512, 1)));
  std::vector<int> order;
  bool ok[3] = {};
  coro::Spawn(TrackedWrite(img_.drv.get(), 1 * 64 * kK, Fill(4 * kK, 0xa), 0, &order, &ok[0]));
  coro::Spawn(TrackedWrite(img_.drv.get(), 2 * 64 * kK, Fill(4 * kK, 0xb), 1, &order, &ok[1]));
  // Step until A has finished: B has just been handed the slot but has not run yet.
  RunUntil(order, 1);
  ASSERT_EQ(order[0], 0);
  coro::Spawn(TrackedWrite(img_.drv.get(), 3 * 64 * kK, Fill(4 * kK, 0xc), 2, &order, &ok[2]));
  RunUntil(order, 3);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
  EXPECT_LT(L2Entry(2 * 64 * kK), L2Entry(3 * 64 * kK));
  EXPECT_TRUE(ok[0] && ok[1] && ok[2]);
}

TEST_F(QedAllocRaceTest, ReadsAndInPlaceWritesRunConcurrentlyWithAllocation) {
  Open(64 * kM, 65536, 4, 4);
  ASSERT_TRUE(WriteAt(loop_, *img_.drv, 0, Fill(64 * kK, 1)));
  std::vector<int> order;
  bool ok[4] = {};
  // An allocating write holds the slot while an in-place write and reads proceed.
  coro::Spawn(TrackedWrite(img_.drv.get(), 10 * 64 * kK, Fill(64 * kK, 2), 0, &order, &ok[0]));
  coro::Spawn(TrackedWrite(img_.drv.get(), 4 * kK, Fill(4 * kK, 3), 1, &order, &ok[1]));
  RunUntil(order, 1);
  EXPECT_EQ(order[0], 1);  // the in-place write did not wait for the allocation
  RunUntil(order, 2);
  EXPECT_GE(img_.file->max_in_flight(), 2);
  auto r = ReadAt(loop_, *img_.drv, 0, 64 * kK);
  ASSERT_TRUE(r);
  EXPECT_EQ(static_cast<uint8_t>((*r)[4 * kK]), 3);
  EXPECT_TRUE(ok[0] && ok[1]);
}

}  // namespace
}  // namespace qedfuse::qedunit
