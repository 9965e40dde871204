// qed::ScanL2 and qed::EntryValidator on hand-made tables: run kinds, run limits, and the
// rejection of entries that would make I/O touch the header, the tables or the space past EOF.
#include "block/qed/qed_cluster.h"

#include "gtest/gtest.h"

namespace qedfuse::qed {
namespace {

// 4 KiB clusters, 2-cluster tables: 1024 entries per table, 4 MiB per L2 table.
// Layout: header [0, 4K), L1 [4K, 12K), L2 [12K, 20K), data from 20K; file 1 MiB.
class QedClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto g = MakeGeometry(4096, 2, 1);
    ASSERT_TRUE(g.ok()) << g.status();
    geo_ = *g;
    v_.geo = &geo_;
    v_.file_size = 1 << 20;
    v_.l1_offset = kL1;
    l2_ = Table(geo_.table_nelems);
  }
  static constexpr uint64_t kCs = 4096;
  static constexpr uint64_t kL1 = 4096;
  static constexpr uint64_t kL2 = 12288;
  static constexpr uint64_t kData = 20480;
  Geometry geo_;
  EntryValidator v_;
  Table l2_;
};

TEST_F(QedClusterTest, ContiguousDataClustersFormOneRun) {
  for (int i = 0; i < 4; ++i) l2_.Set(i, kData + i * kCs);
  auto r = ScanL2(l2_, kL2, v_, 100 * 512 / 100, 10 * kCs);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->kind, ClusterKind::kFound);
  EXPECT_EQ(r->host_offset, kData + 512);
  EXPECT_EQ(r->len, 4 * kCs - 512);  // ends where entry 4 (unallocated) starts
}

TEST_F(QedClusterTest, NonContiguousDataEndsTheRun) {
  l2_.Set(0, kData);
  l2_.Set(1, kData + 2 * kCs);  // allocated, but not adjacent on the host
  auto r = ScanL2(l2_, kL2, v_, 0, 8 * kCs);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->kind, ClusterKind::kFound);
  EXPECT_EQ(r->len, kCs);
  auto r2 = ScanL2(l2_, kL2, v_, kCs, 8 * kCs);
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->host_offset, kData + 2 * kCs);
  EXPECT_EQ(r2->len, kCs);
}

TEST_F(QedClusterTest, ZeroAndUnallocatedRuns) {
  l2_.Set(2, kZeroClusterEntry);
  l2_.Set(3, kZeroClusterEntry);
  auto u = ScanL2(l2_, kL2, v_, 0, 16 * kCs);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->kind, ClusterKind::kUnallocatedL2);
  EXPECT_EQ(u->len, 2 * kCs);
  auto z = ScanL2(l2_, kL2, v_, 2 * kCs + 4000, 16 * kCs);
  ASSERT_TRUE(z);
  EXPECT_EQ(z->kind, ClusterKind::kZero);
  EXPECT_EQ(z->len, 2 * kCs - 4000);
}

TEST_F(QedClusterTest, RunIsLimitedByTheRequestLength) {
  auto r = ScanL2(l2_, kL2, v_, 512, 1024);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->kind, ClusterKind::kUnallocatedL2);
  EXPECT_EQ(r->len, 1024u);
}

TEST_F(QedClusterTest, RunNeverCrossesTheTableCoverage) {
  const uint64_t coverage = geo_.table_nelems * kCs;  // 4 MiB
  auto r = ScanL2(l2_, kL2, v_, coverage - kCs, 3 * kCs);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->len, kCs);
  EXPECT_EQ(BytesToTableEnd(geo_, coverage - 1), 1u);
  EXPECT_EQ(BytesToTableEnd(geo_, coverage), coverage);
}

TEST_F(QedClusterTest, InvalidFirstEntryIsCorruption) {
  const uint64_t bad[] = {
      kData + 1,           // misaligned
      0,                   // (placeholder: 0 is unallocated, replaced below)
      v_.file_size,        // at EOF
      v_.file_size + kCs,  // past EOF
      kL1,                 // the L1 table
      kL1 + kCs,           // inside the L1 table
      kL2,                 // the table holding the entry
      kL2 + kCs,           // inside it
  };
  for (uint64_t e : bad) {
    if (e == 0) continue;
    l2_.Set(5, e);
    auto r = ScanL2(l2_, kL2, v_, 5 * kCs, kCs);
    ASSERT_FALSE(r) << std::hex << e;
    EXPECT_EQ(r.error(), make_error_code(Errc::kCorruptImage));
  }
}

TEST_F(QedClusterTest, HeaderClusterIsInvalidEvenWithHeaderSizeZero) {
  auto g = MakeGeometry(4096, 2, 0);
  ASSERT_TRUE(g.ok()) << g.status();
  Geometry g0 = *g;
  EntryValidator v = v_;
  v.geo = &g0;
  EXPECT_FALSE(v.ValidCluster(0, kL2));
  EXPECT_FALSE(v.ValidTable(0));
  EXPECT_TRUE(v.ValidCluster(kData, kL2));
}

TEST_F(QedClusterTest, InvalidLaterEntryEndsTheRunBeforeIt) {
  l2_.Set(0, kData);
  l2_.Set(1, kData + kCs);
  l2_.Set(2, kData + 2 * kCs + 7);  // misaligned: not part of the run, reported on its own
  auto r = ScanL2(l2_, kL2, v_, 0, 8 * kCs);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->len, 2 * kCs);
  EXPECT_FALSE(ScanL2(l2_, kL2, v_, 2 * kCs, kCs));
}

TEST_F(QedClusterTest, KnownBadEntriesAreCorruptEvenIfTheyLookValid) {
  l2_.Set(0, kData);
  l2_.Set(1, kData + kCs);
  absl::flat_hash_set<uint64_t> bad = {kL2 + 1 * 8};  // entry 1 was past EOF at open
  auto r = ScanL2(l2_, kL2, v_, 0, 4 * kCs, &bad);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->len, kCs);
  EXPECT_FALSE(ScanL2(l2_, kL2, v_, kCs, kCs, &bad));
  EXPECT_TRUE(ScanL2(l2_, kL2, v_, kCs, kCs));
}

TEST_F(QedClusterTest, TableValidity) {
  EXPECT_TRUE(v_.ValidTable(kL2));
  EXPECT_FALSE(v_.ValidTable(kL1));                 // overlaps L1
  EXPECT_FALSE(v_.ValidTable(kL1 + kCs));           // overlaps L1
  EXPECT_FALSE(v_.ValidTable(kCs * 3 + 1));         // misaligned
  EXPECT_FALSE(v_.ValidTable(v_.file_size - kCs));  // second cluster past EOF
  EXPECT_TRUE(v_.ValidTable(v_.file_size - 2 * kCs));
  EXPECT_FALSE(v_.ValidTable(~uint64_t{0} - kCs + 1));  // wraps around
}

}  // namespace
}  // namespace qedfuse::qed
