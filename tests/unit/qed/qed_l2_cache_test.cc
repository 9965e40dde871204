// qed::L2Cache: hits, misses, LRU eviction, pinning by L2Ref, racing inserts, erase.
#include "block/qed/qed_l2_cache.h"

#include "gtest/gtest.h"

namespace qedfuse::qed {
namespace {

Table Tagged(uint64_t tag) {
  Table t(8);
  t.Set(0, tag);
  return t;
}

TEST(QedL2Cache, MissThenHitReturnsTheSameTable) {
  L2Cache c(4);
  EXPECT_FALSE(c.Find(0x10000));
  L2Ref a = c.Insert(0x10000, Tagged(7));
  ASSERT_TRUE(a);
  L2Ref b = c.Find(0x10000);
  ASSERT_TRUE(b);
  EXPECT_EQ(a.get(), b.get());
  EXPECT_EQ(b.table().Get(0), 7u);
  EXPECT_EQ(c.stats().misses, 1u);
  EXPECT_EQ(c.stats().hits, 1u);
}

TEST(QedL2Cache, WritesThroughTheRefAreSeenByLaterLookups) {
  L2Cache c(4);
  {
    L2Ref a = c.Insert(0x10000, Tagged(1));
    a.table().Set(3, 0x50000);
  }
  EXPECT_EQ(c.Find(0x10000).table().Get(3), 0x50000u);
}

TEST(QedL2Cache, EvictsLeastRecentlyUsedUnreferencedEntry) {
  L2Cache c(3);
  c.Insert(1 << 16, Tagged(1)).Reset();
  c.Insert(2 << 16, Tagged(2)).Reset();
  c.Insert(3 << 16, Tagged(3)).Reset();
  EXPECT_TRUE(c.Find(1 << 16));  // 1 becomes most recent; 2 is now the oldest
  c.Insert(4 << 16, Tagged(4)).Reset();
  EXPECT_EQ(c.size(), 3u);
  EXPECT_FALSE(c.Find(2 << 16));
  EXPECT_TRUE(c.Find(1 << 16));
  EXPECT_TRUE(c.Find(3 << 16));
  EXPECT_TRUE(c.Find(4 << 16));
  EXPECT_EQ(c.stats().evictions, 1u);
}

TEST(QedL2Cache, ReferencedEntriesAreNeverEvicted) {
  L2Cache c(2);
  L2Ref pinned1 = c.Insert(1 << 16, Tagged(1));
  L2Ref pinned2 = c.Insert(2 << 16, Tagged(2));
  L2Ref third = c.Insert(3 << 16, Tagged(3));
  // Everything is referenced: the cache grows past its capacity rather than drop a pinned table.
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(pinned1.table().Get(0), 1u);
  pinned1.Reset();
  third.Reset();
  c.Insert(4 << 16, Tagged(4)).Reset();
  // Over capacity: unreferenced entries go, oldest first; the pinned one stays.
  EXPECT_EQ(c.size(), 2u);
  EXPECT_TRUE(c.Find(2 << 16));
  EXPECT_TRUE(c.Find(4 << 16));
  EXPECT_FALSE(c.Find(1 << 16));
  EXPECT_FALSE(c.Find(3 << 16));
}

TEST(QedL2Cache, SecondInsertOfTheSameOffsetKeepsTheFirstCopy) {
  L2Cache c(4);
  L2Ref first = c.Insert(0x20000, Tagged(1));
  L2Ref second = c.Insert(0x20000, Tagged(2));  // a racing load of the same table
  EXPECT_EQ(first.get(), second.get());
  EXPECT_EQ(second.table().Get(0), 1u);
  EXPECT_EQ(c.size(), 1u);
}

TEST(QedL2Cache, EraseKeepsOutstandingRefsValid) {
  L2Cache c(4);
  L2Ref a = c.Insert(0x30000, Tagged(9));
  c.Erase(0x30000);
  EXPECT_FALSE(c.Find(0x30000));
  EXPECT_EQ(a.table().Get(0), 9u);  // still alive through the ref
  L2Ref b = c.Insert(0x30000, Tagged(10));
  EXPECT_NE(a.get(), b.get());
}

TEST(QedL2Cache, ClearForgetsEverything) {
  L2Cache c(4);
  c.Insert(1 << 16, Tagged(1)).Reset();
  c.Insert(2 << 16, Tagged(2)).Reset();
  c.Clear();
  EXPECT_EQ(c.size(), 0u);
  EXPECT_FALSE(c.Find(1 << 16));
}

TEST(QedL2Cache, CapacityFromByteBudget) {
  // Default geometry: 256 KiB tables, 32 MiB budget -> 128 tables.
  EXPECT_EQ(L2Cache::CapacityFor(256 << 10, 32 << 20, 8, 4096), 128u);
  // Huge tables: never fewer than the minimum.
  EXPECT_EQ(L2Cache::CapacityFor(64 << 20, 32 << 20, 8, 4096), 8u);
  // Tiny tables: capped.
  EXPECT_EQ(L2Cache::CapacityFor(4096, 32 << 20, 8, 4096), 4096u);
}

TEST(QedTable, LittleEndianEntries) {
  Table t(4);
  t.Set(1, 0x0102030405060708ull);
  const auto* p = reinterpret_cast<const uint8_t*>(t.buffer().data());
  EXPECT_EQ(p[8], 0x08);
  EXPECT_EQ(p[15], 0x01);
  EXPECT_EQ(t.Get(1), 0x0102030405060708ull);
  std::vector<uint64_t> v = t.ToVector();
  EXPECT_EQ(v[1], 0x0102030405060708ull);
  v[2] = 5;
  t.FromVector(v);
  EXPECT_EQ(t.Get(2), 5u);
}

}  // namespace
}  // namespace qedfuse::qed
