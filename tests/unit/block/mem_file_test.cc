// MemFile's crash model: durable vs volatile images, flush coverage, seeded crash subsets,
// reopening shared state, alignment enforcement and latency.
#include "support/mem_file.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "support/test_loop.h"

namespace qedfuse::test {
namespace {

using block::IoVector;

Result<void> WriteByte(TestLoop& loop, MemFile& f, uint64_t off, uint8_t v) {
  std::vector<std::byte> b(1, std::byte{v});
  return loop.Run(f.Write(off, IoVector(b.data(), 1)));
}

TEST(MemFileTest, FlushMakesWritesDurable) {
  TestLoop loop;
  auto state = MemFileState::Create(16);
  MemFile f(state);
  ASSERT_TRUE(WriteByte(loop, f, 0, 1));
  EXPECT_EQ(state->current[0], std::byte{1});
  EXPECT_EQ(state->durable[0], std::byte{0});
  EXPECT_EQ(state->pending.size(), 1u);
  ASSERT_TRUE(loop.Run(f.Flush()));
  EXPECT_EQ(state->durable[0], std::byte{1});
  EXPECT_TRUE(state->pending.empty());
  EXPECT_EQ(state->writes, 1u);
  EXPECT_EQ(state->flushes, 1u);
}

TEST(MemFileTest, CrashDropAllKeepsOnlyFlushedData) {
  TestLoop loop;
  auto state = MemFileState::Create(16);
  MemFile f(state);
  ASSERT_TRUE(WriteByte(loop, f, 0, 1));
  ASSERT_TRUE(loop.Run(f.Flush()));
  ASSERT_TRUE(WriteByte(loop, f, 1, 2));
  ASSERT_TRUE(loop.Run(f.Truncate(32)));
  state->CrashDropAll();
  EXPECT_EQ(state->size(), 16u);
  EXPECT_EQ(state->current[0], std::byte{1});
  EXPECT_EQ(state->current[1], std::byte{0});
  // Reopen the same storage.
  MemFile again(state);
  std::vector<std::byte> b(2);
  ASSERT_TRUE(loop.Run(again.Read(0, IoVector(b.data(), 2))));
  EXPECT_EQ(b[0], std::byte{1});
  EXPECT_EQ(b[1], std::byte{0});
}

TEST(MemFileTest, CrashKeepsASeededSubsetOfUnflushedWrites) {
  TestLoop loop;
  auto state = MemFileState::Create(64);
  MemFile f(state);
  for (int i = 0; i < 32; ++i) ASSERT_TRUE(WriteByte(loop, f, static_cast<uint64_t>(i), 0xff));
  std::vector<std::byte> a = state->CrashImage(1);
  std::vector<std::byte> a2 = state->CrashImage(1);
  EXPECT_EQ(a, a2);  // deterministic for a seed
  std::set<std::vector<std::byte>> distinct;
  int kept_total = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::vector<std::byte> img = state->CrashImage(seed);
    distinct.insert(img);
    for (int i = 0; i < 32; ++i) kept_total += img[static_cast<std::size_t>(i)] == std::byte{0xff};
    for (int i = 32; i < 64; ++i) EXPECT_EQ(img[static_cast<std::size_t>(i)], std::byte{0});
  }
  EXPECT_GT(distinct.size(), 10u);  // different seeds, different survivors
  EXPECT_GT(kept_total, 0);
  EXPECT_LT(kept_total, 20 * 32);
  state->Crash(7);
  EXPECT_EQ(state->current, state->durable);
  EXPECT_TRUE(state->pending.empty());
}

TEST(MemFileTest, CrashReordersOverlappingWrites) {
  TestLoop loop;
  auto state = MemFileState::Create(4);
  MemFile f(state);
  ASSERT_TRUE(WriteByte(loop, f, 0, 1));
  ASSERT_TRUE(WriteByte(loop, f, 0, 2));
  std::set<uint8_t> seen;
  for (uint64_t seed = 0; seed < 64; ++seed) {
    seen.insert(static_cast<uint8_t>(state->CrashImage(seed)[0]));
  }
  // Neither, either, or both in either order: the older value can win.
  EXPECT_EQ(seen, (std::set<uint8_t>{0, 1, 2}));
}

TEST(MemFileTest, FlushCoversOnlyWritesCompletedBeforeIt) {
  TestLoop loop;
  auto state = MemFileState::Create(8);
  MemFile::Options opts;
  opts.io_yields = 2;
  MemFile f(state, opts);
  std::vector<std::byte> b(1, std::byte{9});
  coro::Task<Result<void>> flush = f.Flush();                          // starts first
  coro::Task<Result<void>> write = f.Write(0, IoVector(b.data(), 1));  // completes meanwhile
  ASSERT_TRUE(loop.Run(std::move(flush)));
  ASSERT_TRUE(loop.Run(std::move(write)));
  EXPECT_EQ(state->current[0], std::byte{9});
  EXPECT_EQ(state->durable[0], std::byte{0});
  EXPECT_EQ(state->pending.size(), 1u);
}

TEST(MemFileTest, EnforcesAlignmentAndTransferSize) {
  TestLoop loop;
  auto state = MemFileState::Create(8192);
  MemFile::Options opts;
  opts.request_alignment = 512;
  opts.max_transfer = 1024;
  MemFile f(state, opts);
  std::vector<std::byte> b(2048);
  EXPECT_FALSE(loop.Run(f.Write(1, IoVector(b.data(), 512))));
  EXPECT_FALSE(loop.Run(f.Write(0, IoVector(b.data(), 100))));
  EXPECT_FALSE(loop.Run(f.Write(0, IoVector(b.data(), 2048))));
  EXPECT_TRUE(loop.Run(f.Write(512, IoVector(b.data(), 1024))));
  EXPECT_TRUE(state->pending.size() == 1u);
}

TEST(MemFileTest, WritesPastTheEndGrow) {
  TestLoop loop;
  auto state = MemFileState::Create(0);
  MemFile f(state);
  ASSERT_TRUE(WriteByte(loop, f, 99, 5));
  EXPECT_EQ(f.length(), 100u);
  state->CrashDropAll();
  EXPECT_EQ(f.length(), 0u);
}

TEST(MemFileTest, LatencyKeepsRequestsInFlight) {
  TestLoop loop;
  auto state = MemFileState::Create(4096);
  MemFile::Options opts;
  opts.io_yields = 3;
  MemFile f(state, opts);
  std::vector<std::byte> b(512);
  coro::Task<Result<void>> w1 = f.Write(0, IoVector(b.data(), 512));
  coro::Task<Result<void>> w2 = f.Write(512, IoVector(b.data(), 512));
  EXPECT_EQ(f.in_flight(), 2);
  EXPECT_FALSE(w1.done());
  ASSERT_TRUE(loop.Run(std::move(w1)));
  ASSERT_TRUE(loop.Run(std::move(w2)));
  EXPECT_EQ(f.in_flight(), 0);
  EXPECT_EQ(f.max_in_flight(), 2);
}

}  // namespace
}  // namespace qedfuse::test
