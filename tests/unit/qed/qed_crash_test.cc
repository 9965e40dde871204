// Crash safety and I/O-error handling of the QED driver (docs/qed-format.md §8, §10).
//
// Stack under test: BlockBackend -> QedDriver -> PowerCut (below) -> test::MemFile (crash model:
// durable image as of the last flush plus pending, unflushed operations).
//
// Power cuts: a scripted workload (in-place, allocating, COW, zero-cluster, new-L2-table,
// L1-update, unaligned and concurrent writes, flushes, and the final close that clears
// NEED_CHECK) is first run to completion to count its child I/Os (T). Then, for every N in
// [0, T), it is re-run with the power cut at child I/O N: from then on nothing reaches the
// "disk" and every request fails. At that moment several crash images are taken: the durable
// image alone, durable plus every completed write, and durable plus random subsets (in random
// order) of the unflushed operations. For each crash image:
//   * a check without repair finds corruptions only if NEED_CHECK is set;
//   * a read-write reopen (which repairs a dirty image) succeeds and the check then reports
//     neither corruptions nor leaks (the repair compacts clusters left unlinked or freed);
//   * every write acknowledged by a completed flush reads back intact, bytes never written read
//     as the old contents (zeros or backing data), and any other byte holds either its last
//     flushed value or a value some later write put there;
//   * a clean close leaves NEED_CHECK clear.
// I/O errors: the same workload with exactly one child I/O failing with EIO (every index N, and
// every occurrence of every debug event): the request that hit it fails, the driver keeps
// serving reads and writes, and after close + reopen the image is consistent with every
// successful write intact.
#include <malloc.h>

#include <algorithm>
#include <array>
#include <cinttypes>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "block/graph/open_driver.h"
#include "block/qed/qed_check.h"
#include "block/qed/qed_create.h"
#include "block/qed/qed_driver.h"
#include "block/qed/qed_format.h"
#include "gtest/gtest.h"
#include "qedfuse/base/macros.h"
#include "qedfuse/block/block_backend.h"
#include "qedfuse/block/debug/fault_injection_driver.h"
#include "qedfuse/block/debug_event.h"
#include "support/mem_file.h"
#include "unit/qed/qed_test_util.h"

namespace qedfuse::qedtest {
namespace {

using block::BlockDriver;
using block::DebugEvent;
using block::IoVector;
using test::MemFile;
using test::MemFileState;

constexpr auto kNoTimer = std::chrono::hours(1);  // the need-check timer never fires mid-run

std::vector<std::byte> ToStdBytes(const Bytes& b) {
  std::vector<std::byte> out(b.size());
  std::memcpy(out.data(), b.data(), b.size());
  return out;
}

// A pass-through node that counts child I/Os, labels each with the debug event announced
// before it, and can (a) cut the power at I/O N: that I/O and every later one fail, and so does
// any I/O still in flight when it completes; (b) fail exactly one I/O with EIO, chosen by index
// or by the k-th occurrence of a debug event, and keep serving.
class PowerCut final : public BlockDriver {
 public:
  explicit PowerCut(std::unique_ptr<BlockDriver> child) : child_(std::move(child)) {}

  int64_t cut_at = -1;  // index of the first I/O lost to the power cut
  std::function<void()> on_cut;
  int64_t fail_at = -1;                  // index of the one I/O that fails with EIO
  std::optional<DebugEvent> fail_event;  // or: the I/O after this event...
  int fail_event_skip = 0;               // ...skipping this many earlier occurrences
  bool armed = true;                     // counting for fail_at happens only while armed

  uint64_t ops() const { return ops_; }
  uint64_t armed_ops() const { return armed_ops_; }
  bool cut() const { return cut_; }
  bool failed() const { return failed_; }
  const std::vector<std::string>& labels() const { return labels_; }
  std::string failed_label() const { return failed_label_; }

  std::string_view format_name() const override { return "powercut"; }
  block::BlockLimits limits() const override { return child_->limits(); }
  uint64_t length() const override { return child_->length(); }
  bool read_only() const override { return child_->read_only(); }
  uint64_t AllocatedBytes() const override { return child_->AllocatedBytes(); }
  void Annotate(DebugEvent e) override {
    event_ = e;
    child_->Annotate(e);
  }

  coro::Task<Result<void>> Read(uint64_t offset, IoVector iov) override {
    QEDFUSE_CO_TRY(Begin("read"));
    Result<void> r = co_await child_->Read(offset, iov);
    co_return End(r);
  }
  coro::Task<Result<void>> Write(uint64_t offset, IoVector iov) override {
    QEDFUSE_CO_TRY(Begin("write"));
    Result<void> r = co_await child_->Write(offset, iov);
    co_return End(r);
  }
  coro::Task<Result<void>> WriteZeroes(uint64_t offset, uint64_t len,
                                       block::ZeroFlags flags) override {
    QEDFUSE_CO_TRY(Begin("zero"));
    Result<void> r = co_await child_->WriteZeroes(offset, len, flags);
    co_return End(r);
  }
  coro::Task<Result<void>> Flush() override {
    QEDFUSE_CO_TRY(Begin("flush"));
    Result<void> r = co_await child_->Flush();
    co_return End(r);
  }
  coro::Task<Result<void>> Truncate(uint64_t n) override {
    QEDFUSE_CO_TRY(Begin("truncate"));
    Result<void> r = co_await child_->Truncate(n);
    co_return End(r);
  }
  coro::Task<absl::Status> Close() override { return child_->Close(); }

 private:
  Result<void> Begin(const char* kind) {
    const uint64_t idx = ops_++;
    std::string label =
        event_ ? absl::StrCat(std::string(block::DebugEventName(*event_)), "/", kind) : kind;
    const std::optional<DebugEvent> ev = std::exchange(event_, std::nullopt);
    labels_.push_back(label);
    if (cut_) return Unexpected(Errc::kInjected);
    if (cut_at >= 0 && static_cast<int64_t>(idx) == cut_at) {
      cut_ = true;
      if (on_cut) on_cut();
      return Unexpected(Errc::kInjected);
    }
    if (!armed || failed_) return Ok();
    const uint64_t aidx = armed_ops_++;
    bool fail = fail_at >= 0 && static_cast<int64_t>(aidx) == fail_at;
    if (fail_event && ev == fail_event) {
      if (fail_event_skip-- == 0) fail = true;
    }
    if (fail) {
      failed_ = true;
      failed_label_ = label;
      return Unexpected(ErrnoCode(EIO));
    }
    return Ok();
  }
  Result<void> End(const Result<void>& r) {
    if (cut_) return Unexpected(Errc::kInjected);  // completed after the power was gone
    return r;
  }

  std::unique_ptr<BlockDriver> child_;
  std::optional<DebugEvent> event_;
  uint64_t ops_ = 0, armed_ops_ = 0;
  bool cut_ = false, failed_ = false;
  std::vector<std::string> labels_;
  std::string failed_label_;
};

// ---- the workload and its model ----

enum class OpKind { kWrite, kZero, kZeroUnmap, kRead, kFlush };

struct ScriptOp {
  OpKind kind;
  uint64_t off = 0;
  uint64_t len = 0;
};

// Expected byte of write op |id| at guest offset |b|: differs between ops and between sectors.
uint8_t Fill(int id, uint64_t b) {
  return static_cast<uint8_t>((id * 67 + (b >> 9) * 29) % 255 + 1);
}

struct OpRecord {
  int id = 0;  // 1-based, unique per op in the run
  ScriptOp op;
  uint64_t issue_seq = 0;
  uint64_t done_seq = 0;
  bool done = false;
  bool ok = false;
  Bytes buf;  // write payload / read result
};

struct RunLog {
  std::vector<std::shared_ptr<OpRecord>> ops;  // in issue order
  uint64_t seq = 0;
  bool close_ok = false;
  uint64_t close_issue_seq = 0;
};

coro::Task<void> ExecOp(block::BlockBackend* bb, std::shared_ptr<OpRecord> r, RunLog* run) {
  Result<void> res;
  switch (r->op.kind) {
    case OpKind::kWrite:
      res = co_await bb->Write(r->op.off, IoVector(r->buf.data(), r->buf.size()));
      break;
    case OpKind::kZero:
      res = co_await bb->WriteZeroes(r->op.off, r->op.len, block::ZeroFlags::kNone);
      break;
    case OpKind::kZeroUnmap:
      res = co_await bb->WriteZeroes(r->op.off, r->op.len, block::ZeroFlags::kMayUnmap);
      break;
    case OpKind::kRead: {
      Result<std::size_t> n = co_await bb->Read(r->op.off, IoVector(r->buf.data(), r->buf.size()));
      if (!n) res = Unexpected(n.error());
      break;
    }
    case OpKind::kFlush:
      res = co_await bb->Flush();
      break;
  }
  r->ok = res.has_value();
  r->done = true;
  r->done_seq = ++run->seq;
}

// Allowed values of every byte, given which ops are "stable" (their effect must be visible
// unless a later op covered the byte) and which are "uncertain" (may or may not have landed).
// |initial| is the device content before the ops. Returns "" or a description of the first
// violation.
std::string VerifyAllowed(const Bytes& got, uint64_t base, const Bytes& initial,
                          const std::vector<const OpRecord*>& ops,
                          const std::function<bool(const OpRecord&)>& stable) {
  const uint64_t end = base + got.size();
  std::vector<uint64_t> cuts = {base, end};
  for (const OpRecord* o : ops) {
    if (o->op.kind == OpKind::kRead || o->op.kind == OpKind::kFlush) continue;
    for (uint64_t c : {o->op.off, o->op.off + o->op.len}) {
      if (c > base && c < end) cuts.push_back(c);
    }
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  auto value = [&](const OpRecord* o, uint64_t b) -> uint8_t {
    if (o == nullptr) return initial[b];
    return o->op.kind == OpKind::kWrite ? Fill(o->id, b) : 0;
  };
  for (std::size_t i = 0; i + 1 < cuts.size(); ++i) {
    const uint64_t a = cuts[i], z = cuts[i + 1];
    const OpRecord* last_stable = nullptr;
    std::vector<const OpRecord*> extra;
    for (const OpRecord* o : ops) {
      if (o->op.kind == OpKind::kRead || o->op.kind == OpKind::kFlush) continue;
      if (o->op.off > a || o->op.off + o->op.len < z) continue;  // does not cover [a, z)
      if (stable(*o)) {
        last_stable = o;
        extra.clear();
      } else {
        extra.push_back(o);
      }
    }
    if (last_stable == nullptr && extra.empty()) {
      // Never written: must still hold the initial contents (the common, fast case).
      if (std::memcmp(got.data() + (a - base), initial.data() + a, z - a) == 0) continue;
    }
    for (uint64_t b = a; b < z; ++b) {
      const uint8_t v = got[b - base];
      if (v == value(last_stable, b)) continue;
      bool ok = false;
      for (const OpRecord* o : extra) ok = ok || v == value(o, b);
      if (!ok) {
        std::string why = absl::StrCat("byte at guest offset ", b, " is ", int{v}, "; expected ",
                                       int{value(last_stable, b)});
        if (last_stable)
          absl::StrAppend(&why, " (from op #", last_stable->id, ")");
        else
          absl::StrAppend(&why, " (initial contents)");
        for (const OpRecord* o : extra) {
          absl::StrAppend(&why, " or ", int{value(o, b)}, " (unflushed op #", o->id, ")");
        }
        return why;
      }
    }
  }
  return "";
}

// Groups of ops: the ops of one group run concurrently (disjoint ranges); a group starts when
// the previous one has completed. Offsets are in units of the cluster size |cs| and of the L2
// coverage |cov|, so every geometry hits the same cases.
std::vector<std::vector<ScriptOp>> Workload(uint64_t cs, uint64_t cov, uint64_t size) {
  auto W = [](uint64_t off, uint64_t len) { return ScriptOp{OpKind::kWrite, off, len}; };
  auto Z = [](uint64_t off, uint64_t len) { return ScriptOp{OpKind::kZero, off, len}; };
  auto ZU = [](uint64_t off, uint64_t len) { return ScriptOp{OpKind::kZeroUnmap, off, len}; };
  auto R = [](uint64_t off, uint64_t len) { return ScriptOp{OpKind::kRead, off, len}; };
  const ScriptOp F{OpKind::kFlush};
  // The start of the second L2 table when the disk has one, else a high region of the first.
  const uint64_t hi = cov + 9 * cs <= size ? cov : size - 16 * cs;
  std::vector<std::vector<ScriptOp>> g = {
      // in place (cluster 0 is allocated by the setup), allocating with COW head and tail over
      // two clusters, and an allocation that needs a new L2 table and an L1 update
      {W(cs / 2, 1000), W(10 * cs + 300, cs), W(hi + 5 * cs, 2 * cs), R(3 * cs, cs)},
      {F},
      // into a zero cluster (zero-filled allocation), zero entries for unallocated clusters,
      // in-place zeroing with unmap, an L2 update of the table created above
      {W(8 * cs + 100, 50), Z(20 * cs, 2 * cs), ZU(0, cs), W(hi + 7 * cs, cs)},
      // a multi-cluster run, and an unaligned write in the same new table
      {W(30 * cs, 4 * cs), W(hi + 2 * cs + 7, 3000), R(8 * cs, cs)},
      {F},
      // overlapping earlier writes: partial rewrite of an allocated cluster, zeroing of allocated
      // clusters in the second table, unaligned zeroing across a cluster boundary, a write
      // racing a flush
      {W(11 * cs + 100, cs), Z(hi + 5 * cs, cs), Z(31 * cs + 500, cs), F, W(50 * cs, 3 * 512)},
      // unflushed tail: allocations (reusing the clusters freed above, whose frees the flush
      // made durable), overwrites and frees of two clusters of a multi-cluster run that only the
      // final close (which compacts the freed clusters away) makes durable
      {W(12 * cs, 2 * cs), W(hi + 5 * cs + 512, 512), ZU(60 * cs, cs), W(2 * cs - 100, 200),
       Z(30 * cs, 2 * cs)},
  };
  return g;
}

struct Geometry {
  uint32_t cs;
  uint32_t ts;
  uint64_t size;
  enum { kNone, kRaw, kQed } backing;
};

std::string GeoName(const ::testing::TestParamInfo<Geometry>& info) {
  const Geometry& g = info.param;
  const char* b = g.backing == Geometry::kNone  ? "nobacking"
                  : g.backing == Geometry::kRaw ? "rawbacking"
                                                : "qedbacking";
  return absl::StrCat("cs", g.cs >> 10, "k_ts", g.ts, "_", b);
}
void PrintTo(const Geometry& g, std::ostream* os) {
  *os << "cs=" << g.cs << " ts=" << g.ts << " backing=" << static_cast<int>(g.backing);
}

// QedDriver -> PowerCut -> FaultInjectionDriver -> MemFile; both filters are inert until told.
struct Opened {
  std::unique_ptr<block::BlockBackend> bb;
  qed::QedDriver* qed = nullptr;
  PowerCut* cut = nullptr;
  block::FaultInjectionDriver* fi = nullptr;
  MemFile* mem = nullptr;
};

class QedCrash : public ::testing::TestWithParam<Geometry> {
 protected:
  void SetUp() override {
    // Crash states copy multi-MiB images all the time; keep freed memory in the heap instead of
    // returning it to the kernel (page faults dominated the run time). No effect under ASan.
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    const Geometry& g = GetParam();
    cs_ = g.cs;
    cov_ = uint64_t{g.ts} * g.cs / 8 * g.cs;
    img_path_ = dir_ / "img.qed";
    qed::CreateOptions co;
    co.path = img_path_;
    co.size = g.size;
    co.cluster_size = g.cs;
    co.table_size = g.ts;
    if (g.backing != Geometry::kNone) {
      ASSERT_TRUE(HaveQemu()) << "backing files are made with qemu-img";
      const bool raw = g.backing == Geometry::kRaw;
      const std::string bname = raw ? "base.raw" : "base.qed";
      const char* fmt = raw ? "raw" : "qed";
      // Shorter than the image: its tail reads as zeros.
      CmdResult r = Shell(absl::StrCat("qemu-img create -q -f ", fmt, " ", Quote(dir_ / bname), " ",
                                       g.size / 2 + 1536));
      ASSERT_EQ(r.exit_code, 0) << r.out;
      r = Shell(absl::StrCat("qemu-io -f ", fmt, " -c 'write -P 0x5a 0 ", g.size / 2,
                             "' -c 'write -P 0xa5 1000 5000' ", Quote(dir_ / bname)));
      ASSERT_EQ(r.exit_code, 0) << r.out;
      co.backing_file = bname;
      co.backing_format = fmt;
    }
    absl::Status st = qed::CreateImage(co);
    ASSERT_TRUE(st.ok()) << st;

    // Setup (not crash-tested): some allocated data, a zero cluster, all flushed and closed.
    auto state = MemFileState::FromBytes(ToStdBytes(ReadFileBytes(img_path_)));
    Opened o = Open(state, false);
    ASSERT_TRUE(o.bb);
    ASSERT_TRUE(WriteSync(loop_, *o.bb, 0, Pattern(3 * cs_, 0x3c)));
    ASSERT_TRUE(ZeroSync(loop_, *o.bb, 8 * cs_, cs_));
    ASSERT_TRUE(WriteSync(loop_, *o.bb, 45 * cs_ + 100, Pattern(200, 0x4d)));
    auto all = ReadAll(loop_, *o.bb);
    ASSERT_TRUE(all);
    initial_ = *all;
    ASSERT_TRUE(loop_.RunSync(o.bb->Close()).ok());
    initial_file_ = state->current;
  }

  // Opens a QedDriver (through PowerCut) over |state|. Empty bb on failure (message recorded).
  Opened Open(std::shared_ptr<MemFileState> state, bool read_only, block::OpenReport* rep = nullptr,
              absl::Status* status = nullptr) {
    Opened o;
    MemFile::Options mo;
    mo.io_yields = 1;  // every I/O suspends: concurrent requests really interleave
    mo.read_only = read_only;
    auto mem = std::make_unique<MemFile>(std::move(state), mo);
    o.mem = mem.get();
    auto fi = std::make_unique<block::FaultInjectionDriver>(std::move(mem));
    o.fi = fi.get();
    auto cut = std::make_unique<PowerCut>(std::move(fi));
    o.cut = cut.get();
    block::OpenOptions opts;
    opts.path = img_path_;  // resolves the backing name; the image itself is in memory
    opts.read_only = read_only;
    opts.need_check_delay = kNoTimer;
    block::ChainContext chain;
    chain.open_backing = &block::OpenDriver;  // the backing file is a real file
    auto d = loop_.RunSync(qed::QedDriver::Open(std::move(cut), opts, chain, rep));
    if (!d.ok()) {
      if (status)
        *status = d.status();
      else
        ADD_FAILURE() << "open failed: " << d.status();
      return {};
    }
    o.qed = d->get();
    o.bb = std::make_unique<block::BlockBackend>(std::move(*d));
    return o;
  }

  // Runs the workload on |o| (then closes it). Returns the record of every op.
  std::unique_ptr<RunLog> RunWorkload(Opened& o, int first_id = 1) {
    auto run = std::make_unique<RunLog>();
    int id = first_id;
    for (const auto& group : Workload(cs_, cov_, GetParam().size)) {
      std::vector<std::shared_ptr<OpRecord>> live;
      for (const ScriptOp& op : group) {
        auto r = std::make_shared<OpRecord>();
        r->id = id++;
        r->op = op;
        if (op.kind == OpKind::kWrite) {
          r->buf.resize(op.len);
          for (uint64_t i = 0; i < op.len; ++i) r->buf[i] = Fill(r->id, op.off + i);
        } else if (op.kind == OpKind::kRead) {
          r->buf.assign(op.len, 0xee);
        }
        r->issue_seq = ++run->seq;
        run->ops.push_back(r);
        live.push_back(r);
        coro::Spawn(ExecOp(o.bb.get(), r, run.get()));
      }
      for (auto& r : live) {
        while (!r->done) {
          if (loop_.RunOne() == 0) {
            ADD_FAILURE() << "loop ran dry";
            std::abort();
          }
        }
      }
    }
    return run;
  }

  // Reads that succeeded during the run saw every completed write before them.
  void CheckRunReads(const RunLog& run) {
    for (std::size_t i = 0; i < run.ops.size(); ++i) {
      const OpRecord& r = *run.ops[i];
      if (r.op.kind != OpKind::kRead || !r.ok) continue;
      std::vector<const OpRecord*> before;
      for (std::size_t j = 0; j < i; ++j) {
        if (run.ops[j]->done_seq < r.issue_seq) before.push_back(run.ops[j].get());
      }
      std::string why =
          VerifyAllowed(r.buf, r.op.off, initial_, before, [](const OpRecord& o) { return o.ok; });
      EXPECT_EQ(why, "") << "read #" << r.id << " during the run";
    }
  }

  // Reopens |image| read-write, checks, verifies the data against |ops| / |stable|, closes.
  // Returns false on a failure (already recorded).
  bool CheckImageAfter(std::vector<std::byte> image, const std::vector<const OpRecord*>& ops,
                       const std::function<bool(const OpRecord&)>& stable,
                       const std::string& what) {
    SCOPED_TRACE(what);
    if (image.size() < 64) {
      ADD_FAILURE() << "crash image lost its header";
      return false;
    }
    auto state = MemFileState::FromBytes(std::move(image));
    // 1. Need-check logic: corruption on disk only ever with NEED_CHECK set.
    {
      const std::vector<std::byte>& img = state->current;
      auto u64 = [&img](uint64_t off) {
        uint64_t v = 0;
        for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(img.at(off + i));
        return v;
      };
      std::array<std::byte, 64> hb;
      std::memcpy(hb.data(), img.data(), 64);
      qed::Header h = qed::DecodeHeader(hb);
      auto geo = qed::ValidateHeader(h, img.size());
      if (!geo.ok()) {
        ADD_FAILURE() << "crash image header invalid: " << geo.status();
        return false;
      }
      std::vector<uint64_t> l1(geo->table_nelems);
      for (uint64_t i = 0; i < l1.size(); ++i) l1[i] = u64(h.l1_table_offset + 8 * i);
      MemFile::Options ro;
      ro.read_only = true;
      MemFile mem(state, ro);
      qed::CheckOptions copt;   // no repair: look at the image exactly as the crash left it
      block::Child child(mem);  // checked in place
      auto rep =
          loop_.RunSync(qed::CheckImage(child, h, *geo, l1, img.size() & ~uint64_t{cs_ - 1}, copt));
      if (!rep) {
        ADD_FAILURE() << "check failed: " << rep.error().message();
        return false;
      }
      if (rep->corruptions > 0) {
        ++stats_.corrupt_before_repair;
        if (!h.need_check()) {
          ADD_FAILURE() << rep->corruptions << " corruption(s) on disk without NEED_CHECK: "
                        << (rep->messages.empty() ? "" : rep->messages[0]);
          return false;
        }
      }
      if (h.need_check()) ++stats_.dirty_images;
    }
    // 2. Read-write reopen repairs; then no corruption, data as expected, clean close.
    block::OpenReport rep;
    absl::Status st;
    Opened o = Open(state, false, &rep, &st);
    if (!o.bb) {
      ADD_FAILURE() << "reopen after crash failed: " << st;
      return false;
    }
    if (rep.repaired) ++stats_.repaired;
    auto chk = loop_.RunSync(o.qed->Check(false));
    bool ok = true;
    if (!chk) {
      ADD_FAILURE() << "check after reopen failed: " << chk.error().message();
      ok = false;
    } else {
      EXPECT_EQ(chk->corruptions, 0u) << (chk->messages.empty() ? "" : chk->messages[0]);
      EXPECT_EQ(chk->check_errors, 0u);
      // The repair compacted every leak: clusters reserved and never linked, and clusters freed
      // by zero writes (qemu-img check would exit 3 otherwise).
      EXPECT_EQ(chk->leaks, 0u) << (chk->messages.empty() ? "" : chk->messages[0]);
      ok = chk->corruptions == 0 && chk->check_errors == 0 && chk->leaks == 0;
      stats_.leaks += chk->leaks;
    }
    auto all = ReadAll(loop_, *o.bb);
    if (!all) {
      ADD_FAILURE() << "read after reopen failed: " << all.error().message();
      ok = false;
    } else {
      std::string why = VerifyAllowed(*all, 0, initial_, ops, stable);
      if (!why.empty()) {
        ADD_FAILURE() << why;
        ok = false;
      }
    }
    absl::Status cst = loop_.RunSync(o.bb->Close());
    EXPECT_TRUE(cst.ok()) << cst;
    EXPECT_EQ(static_cast<uint8_t>(state->current[16]) & 2, 0) << "NEED_CHECK left set";
    ++stats_.states;
    return ok && cst.ok();
  }

  struct Stats {
    uint64_t states = 0, dirty_images = 0, corrupt_before_repair = 0, repaired = 0, leaks = 0;
  };

  TempDir dir_;
  coro::EventLoop loop_;
  std::string img_path_;
  uint64_t cs_ = 0, cov_ = 0;
  Bytes initial_;
  std::vector<std::byte> initial_file_;
  Stats stats_;
};

std::vector<const OpRecord*> Ptrs(const RunLog& run) {
  std::vector<const OpRecord*> v;
  for (const auto& r : run.ops) v.push_back(r.get());
  return v;
}

TEST_P(QedCrash, PowerCutAtEveryChildIo) {
  const uint64_t seed = TestSeed(0xc4a54);
  // Reference run: counts the child I/Os and labels them.
  uint64_t total = 0, open_ops = 0;
  std::vector<std::string> labels;
  {
    auto state = MemFileState::FromBytes(initial_file_);
    Opened o = Open(state, false);
    ASSERT_TRUE(o.bb);
    open_ops = o.cut->ops();
    auto run = RunWorkload(o);
    for (const auto& r : run->ops) ASSERT_TRUE(r->ok) << "op #" << r->id << " failed";
    CheckRunReads(*run);
    ASSERT_TRUE(loop_.RunSync(o.bb->Close()).ok());
    total = o.cut->ops();
    labels = o.cut->labels();
    ASSERT_GT(total, open_ops);
    // Everything is durable after close.
    auto v = Ptrs(*run);
    ASSERT_TRUE(CheckImageAfter(
        state->durable, v, [](const OpRecord&) { return true; }, "reference run"));
  }

  const int kRandomImages = kSanitized ? 1 : 2;
  std::map<std::string, int> per_label;
  std::mt19937_64 rng(seed);
  for (uint64_t n = open_ops; n < total; ++n) {
    SCOPED_TRACE(absl::StrCat("power cut at child I/O #", n, " (", labels[n], ")"));
    auto state = MemFileState::FromBytes(initial_file_);
    std::vector<std::pair<std::string, std::vector<std::byte>>> images;
    Opened o = Open(state, false);
    ASSERT_TRUE(o.bb);
    ASSERT_EQ(o.cut->ops(), open_ops);
    o.cut->cut_at = static_cast<int64_t>(n);
    o.cut->on_cut = [&] {
      images.emplace_back("durable only", state->durable);
      if (!kSanitized) images.emplace_back("every completed write", state->current);
      for (int k = 0; k < kRandomImages; ++k) {
        uint64_t s = rng();
        images.emplace_back(absl::StrCat("random subset, seed ", s), state->CrashImage(s));
      }
    };
    auto run = RunWorkload(o);
    absl::Status cst = loop_.RunSync(o.bb->Close());
    ASSERT_TRUE(o.cut->cut()) << "the workload did not reach I/O #" << n;
    ASSERT_FALSE(cst.ok()) << "close reported success after the power was cut";
    CheckRunReads(*run);
    // Stable = completed before a flush that completed (before the cut).
    uint64_t last_flush_issue = 0;
    for (const auto& r : run->ops) {
      if (r->op.kind == OpKind::kFlush && r->ok)
        last_flush_issue = std::max(last_flush_issue, r->issue_seq);
    }
    auto stable = [last_flush_issue](const OpRecord& r) {
      return r.ok && r.done_seq < last_flush_issue;
    };
    auto v = Ptrs(*run);
    for (auto& [what, img] : images) {
      if (!CheckImageAfter(std::move(img), v, stable, what)) {
        FAIL() << "crash state failed (QEDFUSE_SEED=" << seed << ")";
      }
      ++per_label[labels[n]];
    }
  }
  std::string summary;
  for (auto& [l, c] : per_label) absl::StrAppend(&summary, " ", l, "=", c);
  std::printf("[ crash    ] %" PRIu64 " child I/Os (%" PRIu64 " in open), %" PRIu64
              " crash states checked (%" PRIu64 " dirty, %" PRIu64
              " with corruption before repair, %" PRIu64 " repaired at open, %" PRIu64
              " leaked clusters)\n[ crash    ] states per step:%s\n",
              total, open_ops, stats_.states, stats_.dirty_images, stats_.corrupt_before_repair,
              stats_.repaired, stats_.leaks, summary.c_str());
  RecordProperty("crash_states", std::to_string(stats_.states));
}

// Exactly one child I/O fails with EIO: by index (every N), then by debug event (every
// occurrence of every event). The failing request reports the error, the driver keeps serving,
// and after close + reopen the image is consistent and every successful write is intact.
TEST_P(QedCrash, InjectedEioAtEveryStep) {
  // Reference run for the counts.
  uint64_t armed_total = 0;
  std::map<DebugEvent, int> event_counts;
  {
    auto state = MemFileState::FromBytes(initial_file_);
    Opened o = Open(state, false);
    ASSERT_TRUE(o.bb);
    const uint64_t open_ops = o.cut->ops();
    auto run = RunWorkload(o);
    const uint64_t end_ops = o.cut->ops();
    armed_total = o.cut->armed_ops();
    ASSERT_TRUE(loop_.RunSync(o.bb->Close()).ok());
    for (uint64_t i = open_ops; i < end_ops; ++i) {
      const std::string& l = o.cut->labels()[i];
      for (int e = 0; e < block::kDebugEventCount; ++e) {
        const std::string name(block::DebugEventName(static_cast<DebugEvent>(e)));
        if (l.rfind(name + "/", 0) == 0) ++event_counts[static_cast<DebugEvent>(e)];
      }
    }
  }
  struct Fault {
    int64_t index = -1;
    std::optional<DebugEvent> event;
    int skip = 0;
    bool in_close = false;
  };
  std::vector<Fault> faults;
  for (uint64_t n = 0; n < armed_total; ++n) faults.push_back({static_cast<int64_t>(n)});
  // Every occurrence of every event is already among the indices above; selecting by event
  // (first and last occurrence) exercises the rule the way fault-injection tests state it.
  for (auto [e, c] : event_counts) {
    faults.push_back({-1, e, 0});
    if (c > 1 && !kSanitized) faults.push_back({-1, e, c - 1});
  }
  for (int n = 0; n < 6; ++n) faults.push_back({n, std::nullopt, 0, true});  // faults in Close
  uint64_t checked = 0, request_errors = 0;
  std::map<std::string, int> failed_labels;
  for (const Fault& f : faults) {
    std::string what = f.event ? absl::StrCat("EIO at occurrence ", f.skip, " of ",
                                              std::string(block::DebugEventName(*f.event)))
                               : absl::StrCat("EIO at child I/O #", f.index,
                                              f.in_close ? " of close" : " of the workload");
    SCOPED_TRACE(what);
    auto state = MemFileState::FromBytes(initial_file_);
    Opened o = Open(state, false);
    ASSERT_TRUE(o.bb);
    o.cut->fail_at = f.index;
    o.cut->fail_event = f.event;
    o.cut->fail_event_skip = f.skip;
    o.cut->armed = !f.in_close;
    auto run = RunWorkload(o);
    o.cut->armed = f.in_close;
    const bool failed_in_run = o.cut->failed();
    int errors = 0;
    for (const auto& r : run->ops) errors += r->ok ? 0 : 1;
    if (failed_in_run) {
      EXPECT_GE(errors, 1) << "an injected EIO (" << o.cut->failed_label()
                           << ") was swallowed: no request failed";
      request_errors += errors;
      ++failed_labels[o.cut->failed_label()];
    } else {
      EXPECT_EQ(errors, 0);
    }
    CheckRunReads(*run);
    // The driver keeps serving: a full read and a new write + flush work (unless the fault is
    // reserved for close).
    std::vector<const OpRecord*> v = Ptrs(*run);
    auto ok_stable = [](const OpRecord& r) { return r.ok; };
    if (!f.in_close) {
      auto all = ReadAll(loop_, *o.bb);
      ASSERT_TRUE(all) << "driver stopped serving reads: " << all.error().message();
      EXPECT_EQ(VerifyAllowed(*all, 0, initial_, v, ok_stable), "");
      auto extra = std::make_shared<OpRecord>();
      extra->id = 200;
      extra->op = {OpKind::kWrite, 40 * cs_ + 1, 2 * cs_};
      extra->buf.resize(extra->op.len);
      for (uint64_t i = 0; i < extra->op.len; ++i) extra->buf[i] = Fill(200, extra->op.off + i);
      auto w = WriteSync(loop_, *o.bb, extra->op.off, extra->buf);
      EXPECT_TRUE(w) << "driver stopped serving writes: " << w.error().message();
      EXPECT_TRUE(FlushSync(loop_, *o.bb));
      extra->ok = w.has_value();
      run->ops.push_back(extra);
      v = Ptrs(*run);
    }
    absl::Status cst = loop_.RunSync(o.bb->Close());
    if (f.in_close && o.cut->failed()) {
      ++failed_labels[absl::StrCat("close:", o.cut->failed_label())];
      EXPECT_FALSE(cst.ok()) << "close swallowed an injected EIO (" << o.cut->failed_label() << ")";
    } else if (!o.cut->failed() || !f.in_close) {
      EXPECT_TRUE(cst.ok()) << cst;
    }
    // No power loss: whatever the file holds now is what a reopen sees.
    ASSERT_TRUE(CheckImageAfter(state->current, v, ok_stable, what));
    ++checked;
  }
  std::string summary;
  for (auto& [l, c] : failed_labels) absl::StrAppend(&summary, " ", l, "=", c);
  std::printf("[ eio      ] %" PRIu64 " fault runs checked, %" PRIu64
              " requests failed as expected\n[ eio      ] faults per step:%s\n",
              checked, request_errors, summary.c_str());
}

// The shared FaultInjectionDriver states faults the way blkdebug does: "after the k-th
// announcement of event E, the device dies" (fail_everything_after). For every occurrence of
// every event in the workload (close included), the run goes on against a dead device; then the
// crash images (durable alone, durable plus random subsets of what was pending) must reopen
// consistent with every flushed write intact.
TEST_P(QedCrash, DeviceDiesAfterEveryDebugEvent) {
  const uint64_t seed = TestSeed(0xdead);
  std::mt19937_64 rng(seed);
  uint64_t base[block::kDebugEventCount], end[block::kDebugEventCount];
  {
    auto state = MemFileState::FromBytes(initial_file_);
    Opened o = Open(state, false);
    ASSERT_TRUE(o.bb);
    for (int e = 0; e < block::kDebugEventCount; ++e) {
      base[e] = o.fi->event_count(static_cast<DebugEvent>(e));
    }
    auto run = RunWorkload(o);
    ASSERT_TRUE(loop_.RunSync(o.bb->Close()).ok());
    for (int e = 0; e < block::kDebugEventCount; ++e) {
      end[e] = o.fi->event_count(static_cast<DebugEvent>(e));
    }
  }
  const int kRandomImages = kSanitized ? 1 : 2;
  uint64_t states_before = stats_.states;
  std::map<std::string, int> per_event;
  for (int e = 0; e < block::kDebugEventCount; ++e) {
    const DebugEvent ev = static_cast<DebugEvent>(e);
    for (uint64_t k = 0; k < end[e] - base[e]; ++k) {
      const std::string name(block::DebugEventName(ev));
      SCOPED_TRACE(absl::StrCat("device dies after occurrence ", k, " of ", name));
      auto state = MemFileState::FromBytes(initial_file_);
      Opened o = Open(state, false);
      ASSERT_TRUE(o.bb);
      block::FaultRule rule;
      rule.event = ev;
      rule.error = EIO;
      rule.skip = static_cast<int>(k);
      rule.fail_everything_after = true;
      o.fi->AddRule(rule);
      auto run = RunWorkload(o);
      absl::Status cst = loop_.RunSync(o.bb->Close());
      ASSERT_TRUE(o.fi->dead()) << "the rule never fired";
      EXPECT_FALSE(cst.ok()) << "close succeeded on a dead device";
      CheckRunReads(*run);
      uint64_t last_flush_issue = 0;
      for (const auto& r : run->ops) {
        if (r->op.kind == OpKind::kFlush && r->ok) {
          last_flush_issue = std::max(last_flush_issue, r->issue_seq);
        }
      }
      auto stable = [last_flush_issue](const OpRecord& r) {
        return r.ok && r.done_seq < last_flush_issue;
      };
      auto v = Ptrs(*run);
      std::vector<std::pair<std::string, std::vector<std::byte>>> images;
      images.emplace_back("durable only", state->durable);
      for (int i = 0; i < kRandomImages; ++i) {
        uint64_t s = rng();
        images.emplace_back(absl::StrCat("random subset, seed ", s), state->CrashImage(s));
      }
      for (auto& [what, img] : images) {
        ASSERT_TRUE(CheckImageAfter(std::move(img), v, stable, what)) << "QEDFUSE_SEED=" << seed;
        ++per_event[name];
      }
    }
  }
  std::string summary;
  for (auto& [l, c] : per_event) absl::StrAppend(&summary, " ", l, "=", c);
  std::printf("[ died     ] %" PRIu64
              " crash states checked after a device death at a debug "
              "event\n[ died     ] states per event:%s\n",
              stats_.states - states_before, summary.c_str());
  RecordProperty("crash_states", std::to_string(stats_.states - states_before));
}

const Geometry kGeometries[] = {
    {4096, 2, (4 << 20) + (128 << 10), Geometry::kNone},
    {65536, 4, 4 << 20, Geometry::kNone},
    {4096, 2, (4 << 20) + (128 << 10), Geometry::kRaw},
    {65536, 2, 4 << 20, Geometry::kQed},
};
// The sanitizer build runs the two backed geometries (one of each cluster size), which cover the
// code paths of the other two.
INSTANTIATE_TEST_SUITE_P(Geometries, QedCrash,
                         ::testing::ValuesIn(kSanitized ? std::begin(kGeometries) + 2
                                                        : std::begin(kGeometries),
                                             std::end(kGeometries)),
                         GeoName);

}  // namespace
}  // namespace qedfuse::qedtest
