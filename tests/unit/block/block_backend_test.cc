// BlockBackend over MemFile: EOF clamping, refusal rules, splitting, alignment padding with
// read-modify-write, memory-alignment bounces, concurrent unaligned writes, close semantics.
#include "qedfuse/block/block_backend.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

#include "support/mem_file.h"
#include "support/test_loop.h"

namespace qedfuse::block {
namespace {

using test::MemFile;
using test::MemFileState;
using test::MemIoRecord;
using test::TestLoop;

std::vector<std::byte> Pattern(std::size_t n, uint8_t seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = std::byte(static_cast<uint8_t>(seed + i * 7));
  return v;
}

std::vector<std::byte> Fill(std::size_t n, uint8_t value) {
  return std::vector<std::byte>(n, std::byte{value});
}

class BlockBackendTest : public ::testing::Test {
 protected:
  // A device of |size| bytes backed by MemFile with |opts|; keeps the shared state.
  void Make(uint64_t size, MemFile::Options opts = {}) {
    state_ = MemFileState::Create(size);
    auto file = std::make_unique<MemFile>(state_, opts);
    mem_ = file.get();
    backend_ = std::make_unique<BlockBackend>(std::move(file));
  }
  void TearDown() override {
    if (backend_) {
      EXPECT_TRUE(loop_.Run(backend_->Close()).ok());
    }
  }

  Result<std::size_t> ReadAt(uint64_t off, std::vector<std::byte>& buf) {
    return loop_.Run(backend_->Read(off, IoVector(buf.data(), buf.size())));
  }
  Result<void> WriteAt(uint64_t off, std::vector<std::byte> buf) {
    return loop_.Run(backend_->Write(off, IoVector(buf.data(), buf.size())));
  }
  std::vector<std::byte> Bytes(uint64_t off, std::size_t n) {
    return std::vector<std::byte>(state_->current.begin() + static_cast<std::ptrdiff_t>(off),
                                  state_->current.begin() + static_cast<std::ptrdiff_t>(off + n));
  }

  TestLoop loop_;
  std::shared_ptr<MemFileState> state_;
  MemFile* mem_ = nullptr;
  std::unique_ptr<BlockBackend> backend_;
};

TEST_F(BlockBackendTest, ReadIsClampedAtTheEnd) {
  Make(4096);
  std::vector<std::byte> data = Pattern(4096, 3);
  ASSERT_TRUE(WriteAt(0, data));
  std::vector<std::byte> buf(1000, std::byte{0xee});
  Result<std::size_t> n = ReadAt(3596, buf);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 500u);
  EXPECT_EQ(0, std::memcmp(buf.data(), data.data() + 3596, 500));
  EXPECT_EQ(buf[500], std::byte{0xee});  // untouched past the end

  n = ReadAt(4096, buf);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 0u);
  n = ReadAt(1u << 30, buf);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 0u);
}

TEST_F(BlockBackendTest, WritePastTheEndIsRefused) {
  Make(4096);
  Result<void> r = WriteAt(4000, Fill(97, 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(Errc::kOutOfRange));
  r = WriteAt(UINT64_MAX - 10, Fill(20, 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(Errc::kOutOfRange));
  EXPECT_EQ(state_->writes, 0u);
  EXPECT_TRUE(WriteAt(4000, Fill(96, 1)));  // exactly up to the end is fine
}

TEST_F(BlockBackendTest, WriteOnReadOnlyIsRefused) {
  MemFile::Options opts;
  opts.read_only = true;
  Make(4096, opts);
  EXPECT_TRUE(backend_->read_only());
  Result<void> r = WriteAt(0, Fill(512, 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(Errc::kReadOnly));
  r = loop_.Run(backend_->WriteZeroes(0, 512, ZeroFlags::kNone));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(Errc::kReadOnly));
  r = loop_.Run(backend_->Truncate(8192));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(Errc::kReadOnly));
}

TEST_F(BlockBackendTest, LargeRequestsAreSplitAtMaxTransfer) {
  MemFile::Options opts;
  opts.request_alignment = 512;
  opts.max_transfer = 4096;
  Make(64 * 1024, opts);
  std::vector<std::byte> data = Pattern(20000, 9);
  ASSERT_TRUE(WriteAt(1000, data));  // MemFile rejects anything larger than 4096 or misaligned
  EXPECT_EQ(Bytes(1000, data.size()), data);
  for (const MemIoRecord& rec : state_->log) {
    EXPECT_LE(rec.len, 4096u);
    EXPECT_EQ(rec.offset % 512, 0u);
  }
  std::vector<std::byte> back(20000);
  ASSERT_TRUE(ReadAt(1000, back));
  EXPECT_EQ(back, data);
}

TEST_F(BlockBackendTest, UnalignedWritePreservesNeighbours) {
  MemFile::Options opts;
  opts.request_alignment = 4096;
  Make(16384, opts);
  std::vector<std::byte> base = Pattern(16384, 1);
  ASSERT_TRUE(WriteAt(0, base));
  std::vector<std::byte> patch = Fill(5000, 0xab);
  ASSERT_TRUE(WriteAt(3000, patch));
  std::vector<std::byte> expect = base;
  std::memcpy(expect.data() + 3000, patch.data(), patch.size());
  EXPECT_EQ(state_->current, expect);

  // A write inside one block.
  ASSERT_TRUE(WriteAt(9000, Fill(10, 0xcd)));
  std::memset(expect.data() + 9000, 0xcd, 10);
  EXPECT_EQ(state_->current, expect);

  std::vector<std::byte> back(7);
  ASSERT_TRUE(ReadAt(8999, back));
  EXPECT_EQ(0, std::memcmp(back.data(), expect.data() + 8999, 7));
}

TEST_F(BlockBackendTest, UnalignedDeviceLengthEndsWithAnExactRequest) {
  MemFile::Options opts;
  opts.request_alignment = 512;
  Make(1000, opts);  // MemFile allows an unaligned request only if it ends at the end
  std::vector<std::byte> data = Pattern(300, 5);
  ASSERT_TRUE(WriteAt(700, data));
  EXPECT_EQ(Bytes(700, 300), data);
  std::vector<std::byte> back(600);
  Result<std::size_t> n = ReadAt(400, back);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 600u);
  EXPECT_EQ(0, std::memcmp(back.data() + 300, data.data(), 300));
}

TEST_F(BlockBackendTest, MisalignedMemoryIsBounced) {
  MemFile::Options opts;
  opts.request_alignment = 512;
  opts.memory_alignment = 512;
  Make(8192, opts);
  std::vector<std::byte> storage(4096 + 1);
  std::vector<std::byte> data = Pattern(4096, 77);
  std::memcpy(storage.data() + 1, data.data(), data.size());  // odd address
  ASSERT_TRUE(loop_.Run(backend_->Write(1024, IoVector(storage.data() + 1, 4096))));
  EXPECT_EQ(Bytes(1024, 4096), data);
  std::vector<std::byte> back(4096 + 3);
  ASSERT_TRUE(loop_.Run(backend_->Read(1024, IoVector(back.data() + 3, 4096))));
  EXPECT_EQ(0, std::memcmp(back.data() + 3, data.data(), 4096));
}

TEST_F(BlockBackendTest, WriteZeroesPadsUnalignedEdges) {
  MemFile::Options opts;
  opts.request_alignment = 4096;
  Make(32768, opts);
  std::vector<std::byte> base = Pattern(32768, 4);
  ASSERT_TRUE(WriteAt(0, base));
  ASSERT_TRUE(loop_.Run(backend_->WriteZeroes(100, 20000, ZeroFlags::kMayUnmap)));
  std::vector<std::byte> expect = base;
  std::memset(expect.data() + 100, 0, 20000);
  EXPECT_EQ(state_->current, expect);
  // Past the end is clamped.
  ASSERT_TRUE(loop_.Run(backend_->WriteZeroes(30000, 1u << 20, ZeroFlags::kNone)));
  std::memset(expect.data() + 30000, 0, 32768 - 30000);
  EXPECT_EQ(state_->current, expect);
  EXPECT_EQ(state_->size(), 32768u);
}

TEST_F(BlockBackendTest, GetStatusIsClamped) {
  Make(8192);
  Result<BlockStatus> st = loop_.Run(backend_->GetStatus(4096, 1u << 20));
  ASSERT_TRUE(st);
  EXPECT_EQ(st->length, 4096u);
  EXPECT_TRUE(st->data);
  Result<BlockStatus> bad = loop_.Run(backend_->GetStatus(8192, 1));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error(), make_error_code(Errc::kOutOfRange));
}

TEST_F(BlockBackendTest, TruncateGrowsOnly) {
  Make(8192);
  Result<void> r = loop_.Run(backend_->Truncate(4096));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(Errc::kNotSupported));
  ASSERT_TRUE(loop_.Run(backend_->Truncate(8192)));
  ASSERT_TRUE(loop_.Run(backend_->Truncate(12288)));
  EXPECT_EQ(backend_->length(), 12288u);
  EXPECT_TRUE(WriteAt(8192, Fill(4096, 1)));
}

// Two unaligned writes into the same 4 KiB block, issued together against a slow device.
// Without serialisation both would read the old block, and the second write-back would undo the
// first:
//   A: read block (old) ............ write block (old + A)
//   B:      read block (old) ................. write block (old + B)   <- A's bytes lost
// The backend makes B wait until A's read-modify-write is done.
TEST_F(BlockBackendTest, ConcurrentUnalignedWritesLoseNothing) {
  MemFile::Options opts;
  opts.request_alignment = 4096;
  opts.io_yields = 3;
  Make(8192, opts);
  std::vector<std::byte> a = Fill(100, 0xaa);
  std::vector<std::byte> b = Fill(100, 0xbb);
  coro::Task<Result<void>> ta = backend_->Write(10, IoVector(a.data(), a.size()));
  coro::Task<Result<void>> tb = backend_->Write(2000, IoVector(b.data(), b.size()));
  EXPECT_FALSE(ta.done());
  EXPECT_FALSE(tb.done());
  EXPECT_EQ(mem_->in_flight(), 1);  // B waits for A instead of reading the block
  ASSERT_TRUE(loop_.Run(std::move(ta)));
  ASSERT_TRUE(loop_.Run(std::move(tb)));
  EXPECT_EQ(Bytes(10, 100), a);
  EXPECT_EQ(Bytes(2000, 100), b);
  EXPECT_EQ(mem_->max_in_flight(), 1);
}

// Many overlapping unaligned writes in one burst; the final image must equal applying them in
// issue order (conflicting requests run FIFO).
TEST_F(BlockBackendTest, OverlappingUnalignedWritesApplyInOrder) {
  MemFile::Options opts;
  opts.request_alignment = 512;
  opts.io_yields = 2;
  Make(16384, opts);
  std::vector<std::vector<std::byte>> bufs;
  std::vector<uint64_t> offs;
  std::vector<std::byte> expect(16384);
  for (int i = 0; i < 40; ++i) {
    uint64_t off = static_cast<uint64_t>((i * 977) % 15000);
    std::size_t len = static_cast<std::size_t>(1 + (i * 331) % 1300);
    bufs.push_back(Fill(len, static_cast<uint8_t>(i + 1)));
    offs.push_back(off);
    std::memset(expect.data() + off, i + 1, len);
  }
  std::vector<coro::Task<Result<void>>> tasks;
  for (std::size_t i = 0; i < bufs.size(); ++i) {
    tasks.push_back(backend_->Write(offs[i], IoVector(bufs[i].data(), bufs[i].size())));
  }
  for (auto& t : tasks) ASSERT_TRUE(loop_.Run(std::move(t)));
  EXPECT_EQ(state_->current, expect);
}

// Aligned writes to different blocks are not serialised: they are all in flight together.
TEST_F(BlockBackendTest, AlignedNonOverlappingWritesRunConcurrently) {
  MemFile::Options opts;
  opts.request_alignment = 512;
  opts.io_yields = 2;
  Make(16384, opts);
  std::vector<std::vector<std::byte>> bufs;
  std::vector<coro::Task<Result<void>>> tasks;
  for (int i = 0; i < 4; ++i) bufs.push_back(Fill(4096, static_cast<uint8_t>(i + 1)));
  for (int i = 0; i < 4; ++i) {
    tasks.push_back(
        backend_->Write(static_cast<uint64_t>(i) * 4096, IoVector(bufs[i].data(), 4096)));
  }
  EXPECT_EQ(mem_->in_flight(), 4);
  for (auto& t : tasks) ASSERT_TRUE(loop_.Run(std::move(t)));
}

// An aligned write overlapping an in-flight RMW waits for it, and an RMW issued after an
// in-flight aligned write waits for that write.
TEST_F(BlockBackendTest, AlignedAndUnalignedWritesToOneBlockAreOrdered) {
  MemFile::Options opts;
  opts.request_alignment = 4096;
  opts.io_yields = 2;
  Make(8192, opts);
  std::vector<std::byte> full = Fill(4096, 0x11);
  std::vector<std::byte> part = Fill(16, 0x22);
  coro::Task<Result<void>> t1 = backend_->Write(0, IoVector(full.data(), full.size()));
  coro::Task<Result<void>> t2 = backend_->Write(100, IoVector(part.data(), part.size()));
  coro::Task<Result<void>> t3 = backend_->Write(0, IoVector(full.data(), full.size()));
  ASSERT_TRUE(loop_.Run(std::move(t1)));
  ASSERT_TRUE(loop_.Run(std::move(t2)));
  ASSERT_TRUE(loop_.Run(std::move(t3)));
  EXPECT_EQ(Bytes(0, 4096), full);  // t3 came last and covers t2
}

TEST_F(BlockBackendTest, CloseRefusesNewRequestsAndIsIdempotent) {
  MemFile::Options opts;
  opts.io_yields = 2;
  Make(8192, opts);
  std::vector<std::byte> data = Fill(4096, 0x5a);
  coro::Task<Result<void>> w = backend_->Write(0, IoVector(data.data(), data.size()));
  coro::Task<absl::Status> close = backend_->Close();
  EXPECT_FALSE(close.done());  // waits for the write
  Result<void> late = WriteAt(4096, Fill(10, 1));
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error(), make_error_code(Errc::kClosed));
  ASSERT_TRUE(loop_.Run(std::move(w)));
  EXPECT_TRUE(loop_.Run(std::move(close)).ok());
  EXPECT_EQ(Bytes(0, 4096), data);
  EXPECT_EQ(state_->durable, state_->current);  // closing flushed
  EXPECT_TRUE(loop_.Run(backend_->Close()).ok());
  std::vector<std::byte> buf(10);
  Result<std::size_t> r = ReadAt(0, buf);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(Errc::kClosed));
  ASSERT_FALSE(loop_.Run(backend_->Flush()));
}

coro::Task<void> TrackWrite(BlockBackend* b, uint64_t off, std::vector<std::byte> data,
                            Result<void>* out, bool* done) {
  *out = co_await b->Write(off, IoVector(data.data(), data.size()));
  *done = true;
}

coro::Task<void> TrackGrow(BlockBackend* b, uint64_t len, Result<void>* out, bool* done) {
  *out = co_await b->Truncate(len);
  *done = true;
}

coro::Task<void> TrackZero(BlockBackend* b, uint64_t off, uint64_t len, Result<void>* out,
                           bool* done) {
  *out = co_await b->WriteZeroes(off, len, ZeroFlags::kNone);
  *done = true;
}

// A write whose unaligned tail ended at the device end waits behind a grow: after the grow the
// tail is partial and must be read-modify-written (the child refuses an unaligned tail that is
// not at its end).
TEST_F(BlockBackendTest, WriteAndZeroesWaitingBehindAGrowUseTheNewLength) {
  MemFile::Options opts;
  opts.request_alignment = 4096;
  opts.io_yields = 2;
  Make(6000, opts);
  Result<void> w1 = Ok(), grow = Ok(), w2 = Ok(), z = Ok();
  bool w1_done = false, grow_done = false, w2_done = false, z_done = false;
  coro::Spawn(TrackWrite(backend_.get(), 4096, Fill(1904, 0x11), &w1, &w1_done));
  coro::Spawn(TrackGrow(backend_.get(), 16384, &grow, &grow_done));
  coro::Spawn(TrackWrite(backend_.get(), 4096, Fill(1904, 0xee), &w2, &w2_done));
  coro::Spawn(TrackZero(backend_.get(), 5000, 1000, &z, &z_done));
  while (!w1_done || !grow_done || !w2_done || !z_done) ASSERT_GT(loop_.Step(), 0u);
  EXPECT_TRUE(w1);
  EXPECT_TRUE(grow);
  EXPECT_TRUE(w2);
  EXPECT_TRUE(z);
  ASSERT_EQ(state_->current.size(), 16384u);
  EXPECT_EQ(Bytes(4096, 904), Fill(904, 0xee));
  EXPECT_EQ(Bytes(5000, 1000), Fill(1000, 0));
  EXPECT_EQ(Bytes(6000, 10384), Fill(10384, 0));
}

}  // namespace
}  // namespace qedfuse::block
