// Concurrent allocation in existing L2 tables: a run holds the allocation slot only to reserve
// its clusters, data writes of many runs overlap, and the L2 committer writes the entries of a
// whole batch of runs together. Waves of concurrent, byte-disjoint writes and zero writes (that
// often share clusters and L2 granules, across several tables) are checked against a byte model:
//  - without faults every byte matches the model and the image checks clean (no leaks);
//  - with writes failed in the middle of batches (FaultInjectionDriver) an acknowledged write is
//    fully there, a failed one left each byte old or new, and the image has no corruption;
//  - with the device dying at an arbitrary I/O, crash images (durable part plus random subsets
//    of the unflushed writes) reopen, repair and check clean, and every byte is old or new. With
//    a backing file whose bytes differ from zeros, an entry that reached the disk before its
//    data would read as zeros, which is neither: the data -> flush -> L2 order is checked too.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "block/graph/open_driver.h"
#include "qed_driver_test_util.h"
#include "qedfuse/block/debug/fault_injection_driver.h"

namespace qedfuse::qedunit {
namespace {

constexpr uint64_t kCs = 4096;
constexpr uint64_t kTableCover = 4u << 20;  // cs 4 KiB, table_size 2: 1024 entries per table
constexpr uint64_t kSize = 12u << 20;       // three L2 tables

uint8_t BackingByte(uint64_t pos) { return static_cast<uint8_t>(0x80 | ((pos / 512) % 97)); }

struct Op {
  uint64_t off = 0;
  uint64_t len = 0;
  bool zero = false;
  Bytes data;
  bool done = false;
  bool ok = false;
};

coro::Task<void> RunOp(block::BlockDriver* d, Op* op) {
  Result<void> r;
  if (op->zero) {
    r = co_await d->WriteZeroes(op->off, op->len, block::ZeroFlags::kNone);
  } else {
    r = co_await d->Write(op->off, block::IoVector(op->data.data(), op->data.size()));
  }
  op->ok = static_cast<bool>(r);
  op->done = true;
}

// Byte-disjoint ops clustered around a few spots, so that they share clusters and granules.
std::vector<Op> MakeWave(std::mt19937_64& rng, int n, int wave) {
  std::vector<Op> ops;
  std::vector<uint64_t> spots;
  for (int i = 0; i < 4; ++i) spots.push_back(rng() % (kSize / kCs - 16) * kCs);
  for (int tries = 0; static_cast<int>(ops.size()) < n && tries < n * 20; ++tries) {
    Op op;
    const uint64_t spot = spots[rng() % spots.size()];
    op.off = spot + (rng() % 64) * 512;
    op.len = (1 + rng() % 20) * 512;
    if (rng() % 8 == 0) op.len = (1 + rng() % 3) * kCs;  // whole clusters
    op.len = std::min(op.len, kSize - op.off);
    bool clash = false;
    for (const Op& o : ops) clash = clash || (op.off < o.off + o.len && o.off < op.off + op.len);
    if (clash) continue;
    op.zero = rng() % 6 == 0;
    if (!op.zero) {
      op.data.resize(op.len);
      for (uint64_t i = 0; i < op.len; ++i) {
        op.data[i] = std::byte(static_cast<uint8_t>(1 + (wave * 31 + ops.size() * 7 + i) % 127));
      }
    }
    ops.push_back(std::move(op));
  }
  return ops;
}

// What |op| writes at byte |pos|.
std::byte NewByte(const Op& op, uint64_t pos) {
  return op.zero ? std::byte{0} : op.data[pos - op.off];
}

class QedAllocBatchTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    backing_ = GetParam();
    qed::CreateOptions co;
    co.path = dir_.File("img.qed");
    co.size = kSize;
    co.cluster_size = kCs;
    co.table_size = 2;
    if (backing_) {
      Bytes b(kSize / 2 + 1536);
      for (uint64_t i = 0; i < b.size(); ++i) b[i] = std::byte{BackingByte(i)};
      std::ofstream(dir_.File("base.raw"), std::ios::binary)
          .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
      co.backing_file = "base.raw";
      co.backing_format = "raw";
    }
    ASSERT_TRUE(qed::CreateImage(co).ok());
    state_ = test::MemFileState::FromBytes(ReadPath(co.path));
    model_.assign(kSize, std::byte{0});
    if (backing_) {
      for (uint64_t i = 0; i < kSize / 2 + 1536; ++i) model_[i] = std::byte{BackingByte(i)};
    }
  }

  // QedDriver -> FaultInjectionDriver -> MemFile over |state|.
  void Open(std::shared_ptr<test::MemFileState> state) {
    test::MemFile::Options mo;
    mo.io_yields = 2;
    auto mem = std::make_unique<test::MemFile>(std::move(state), mo);
    mem_ = mem.get();
    auto fi = std::make_unique<block::FaultInjectionDriver>(std::move(mem));
    fi_ = fi.get();
    block::OpenOptions o = DefaultOptions();
    o.path = dir_.File("img.qed");  // resolves the backing name; the image itself is in memory
    o.need_check_delay = std::chrono::hours(1);
    block::ChainContext chain;
    chain.open_backing = &block::OpenDriver;  // the backing file is a real file
    chain.names.push_back(o.path);
    chain.depth = 1;
    auto d = loop_.RunSync(qed::QedDriver::Open(std::move(fi), o, chain, &report_));
    ASSERT_TRUE(d.ok()) << d.status();
    drv_ = std::move(*d);
  }
  void Close(bool expect_ok = true) {
    absl::Status st = loop_.RunSync(drv_->Close());
    if (expect_ok) {
      EXPECT_TRUE(st.ok()) << st;
    }
    drv_.reset();
  }

  void RunWave(std::vector<Op>& ops) {
    for (Op& op : ops) coro::Spawn(RunOp(drv_.get(), &op));
    for (const Op& op : ops) {
      while (!op.done) ASSERT_GT(loop_.RunOne(), 0u) << "loop ran dry";
    }
  }

  // Acknowledged ops must be in |got| entirely; failed ones left every byte old or new. Then
  // the model follows what happened.
  void CheckWave(const std::vector<Op>& ops, const Bytes& got, const std::string& what,
                 bool acked_must_be_there = true) {
    for (std::size_t k = 0; k < ops.size(); ++k) {
      const Op& op = ops[k];
      for (uint64_t p = op.off; p < op.off + op.len; ++p) {
        const std::byte want = NewByte(op, p);
        if (op.ok && acked_must_be_there) {
          ASSERT_EQ(got[p], want) << what << ": op " << k << " at " << op.off << "+" << op.len
                                  << " byte " << p;
        } else {
          ASSERT_TRUE(got[p] == want || got[p] == model_[p])
              << what << ": op " << k << " at " << op.off << "+" << op.len << " byte " << p
              << " is neither old nor new: " << int(got[p]);
        }
      }
    }
    // Bytes no op touched are unchanged.
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (const Op& op : ops) ranges.emplace_back(op.off, op.off + op.len);
    std::sort(ranges.begin(), ranges.end());
    uint64_t p = 0;
    ranges.emplace_back(kSize, kSize);
    for (const auto& [b, e] : ranges) {
      ASSERT_TRUE(std::equal(got.begin() + p, got.begin() + b, model_.begin() + p))
          << what << ": bytes no op touched changed in [" << p << ", " << b << ")";
      p = std::max(p, e);
    }
  }

  Bytes ReadAll(block::BlockDriver& d) {
    auto r = ReadAt(loop_, d, 0, kSize);
    EXPECT_TRUE(r);
    return r ? *r : Bytes();
  }

  void Populate() {
    // One write per table, so that later waves mostly allocate inside existing tables.
    for (uint64_t t = 0; t < kSize / kTableCover; ++t) {
      Bytes b = Fill(512, uint8_t(0x11 + t));
      ASSERT_TRUE(WriteAt(loop_, *drv_, t * kTableCover + 7 * kCs, b));
      std::copy(b.begin(), b.end(), model_.begin() + t * kTableCover + 7 * kCs);
    }
    ASSERT_TRUE(loop_.RunSync(drv_->Flush()));
  }

  test::TempDir dir_;
  bool backing_ = false;
  coro::EventLoop loop_;
  std::shared_ptr<test::MemFileState> state_;
  std::unique_ptr<qed::QedDriver> drv_;
  test::MemFile* mem_ = nullptr;
  block::FaultInjectionDriver* fi_ = nullptr;
  block::OpenReport report_;
  Bytes model_;
};

TEST_P(QedAllocBatchTest, ConcurrentAllocatingWritesMatchTheModel) {
  Open(state_);
  std::mt19937_64 rng(7);
  for (int w = 0; w < 12; ++w) {
    if (w == 3) Populate();  // the first waves also create tables
    std::vector<Op> ops = MakeWave(rng, 24, w);
    RunWave(ops);
    for (std::size_t k = 0; k < ops.size(); ++k) ASSERT_TRUE(ops[k].ok) << "wave " << w << " " << k;
    Bytes got = ReadAll(*drv_);
    CheckWave(ops, got, absl::StrCat("wave ", w));
    model_ = got;
  }
  const qed::QedDriver::Stats& s = drv_->stats();
  EXPECT_GT(s.l2_commit_runs, s.l2_commit_batches);  // some batches served several runs
  EXPECT_GT(s.conflict_waits, 0u);                   // runs in the same cluster waited
  EXPECT_GE(mem_->max_in_flight(), 4);
  auto c = loop_.RunSync(drv_->Check(false));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->corruptions, 0u);
  // Clusters freed by zero writes and not reused yet are the only leaks; close compacts them.
  EXPECT_EQ(c->leaks, drv_->free_clusters());
  Close();
  Open(state_);
  EXPECT_TRUE(ReadAll(*drv_) == model_);
  c = loop_.RunSync(drv_->Check(false));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->corruptions, 0u);
  EXPECT_EQ(c->leaks, 0u);
  Close();
}

TEST_P(QedAllocBatchTest, WriteFailuresInTheMiddleOfBatches) {
  Open(state_);
  Populate();
  std::mt19937_64 rng(11);
  int failed = 0;
  for (int w = 0; w < 16; ++w) {
    std::vector<Op> ops = MakeWave(rng, 20, w);
    block::FaultRule data;
    data.io = block::FaultIo::kWrite;
    data.skip = static_cast<int>(rng() % 12);
    fi_->AddRule(data);
    block::FaultRule l2;
    l2.event = block::DebugEvent::kL2Update;
    l2.io = block::FaultIo::kWrite;
    l2.skip = static_cast<int>(rng() % 3);
    fi_->AddRule(l2);
    RunWave(ops);
    fi_->ClearRules();
    for (const Op& op : ops) failed += op.ok ? 0 : 1;
    Bytes got = ReadAll(*drv_);
    CheckWave(ops, got, absl::StrCat("wave ", w));
    model_ = got;
  }
  EXPECT_GT(failed, 0);
  auto c = loop_.RunSync(drv_->Check(false));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->corruptions, 0u);
  Close();
  Open(state_);
  EXPECT_TRUE(ReadAll(*drv_) == model_);
  Close();
}

TEST_P(QedAllocBatchTest, DeviceDiesInTheMiddleOfBatches) {
  Open(state_);
  Populate();
  Close();
  constexpr int kTrials = 16;
  const Bytes base = state_->current;
  const Bytes base_model = model_;
  std::mt19937_64 rng(13);
  int images = 0;
  std::size_t pending = 0;
  for (int trial = 0; trial < kTrials; ++trial) {
    state_ = test::MemFileState::FromBytes(base);
    model_ = base_model;
    Open(state_);
    std::vector<Op> ops = MakeWave(rng, 16, trial);
    block::FaultRule die;
    die.io = block::FaultIo::kAny;
    die.skip = static_cast<int>(rng() % 60);
    die.fail_everything_after = true;
    fi_->AddRule(die);
    RunWave(ops);
    // The power is cut now (closing would make the MemFile durable).
    std::vector<std::pair<std::string, Bytes>> crash;
    crash.emplace_back("durable only", state_->durable);
    for (uint64_t seed = 1; seed <= 3; ++seed) {
      crash.emplace_back(absl::StrCat("subset ", seed), state_->CrashImage(seed * 101 + trial));
    }
    pending += state_->pending.size();
    Close(/*expect_ok=*/false);
    for (auto& [name, bytes] : crash) {
      const std::string what = absl::StrCat("trial ", trial, ", ", name);
      auto st = test::MemFileState::FromBytes(bytes);
      Open(st);  // read-write: a dirty image is repaired first
      auto c = loop_.RunSync(drv_->Check(false));
      ASSERT_TRUE(c) << what;
      EXPECT_EQ(c->corruptions, 0u) << what;
      Bytes got = ReadAll(*drv_);
      // Nothing was flushed after the wave started: any op may be missing, in whole or in part.
      CheckWave(ops, got, what, /*acked_must_be_there=*/false);
      Close();
      ++images;
    }
  }
  EXPECT_EQ(images, kTrials * 4);
  EXPECT_GT(pending, 0u);  // the crash images did drop unflushed writes
}

INSTANTIATE_TEST_SUITE_P(Backing, QedAllocBatchTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? "raw_backing" : "no_backing";
                         });

}  // namespace
}  // namespace qedfuse::qedunit
