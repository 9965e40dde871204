// libFuzzer target: the input is a program of guest operations run against a fresh, valid QED
// image in memory (test::MemFile with a few loop turns of latency per I/O, so requests in flight
// interleave). Up to four requests on non-overlapping ranges run at once: writes, zero writes
// (with and without unmap), reads, block status and flushes; between batches come grows and
// consistency checks. A byte-array model of the guest disk is the oracle:
//  - every read returns the model's bytes, and block status never claims zeros over non-zero
//    model bytes;
//  - a check of the open image finds no corruption;
//  - after a clean close, NEED_CHECK is clear, a check finds neither corruption nor leak, and a
//    read-only reopen reads back the whole model.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "block/qed/qed_driver.h"
#include "block/qed/qed_format.h"
#include "fuzz/fuzz_options.h"
#include "qedfuse/block/block_backend.h"
#include "qedfuse/block/io_vector.h"
#include "qedfuse/coro/event_loop.h"
#include "support/mem_file.h"

namespace qedfuse::fuzz {
namespace {

using Bytes = std::vector<std::byte>;

constexpr uint64_t kMaxOpLen = 3 * 65536;

// memcmp, not a byte loop: the harness is instrumented too, and per-byte comparisons would
// dominate the run time.
bool SameBytes(const std::byte* a, const std::byte* b, std::size_t n) {
  return n == 0 || std::memcmp(a, b, n) == 0;
}

bool AllZero(const std::byte* p, std::size_t n) {
  static const std::byte kZeros[4096] = {};
  for (std::size_t done = 0; done < n;) {
    const std::size_t k = std::min(n - done, sizeof kZeros);
    if (std::memcmp(p + done, kZeros, k) != 0) return false;
    done += k;
  }
  return true;
}

[[noreturn]] void Fail(const char* what, uint64_t off = 0) {
  std::fprintf(stderr, "qed_ops_fuzz: property violated at offset %llu: %s\n",
               static_cast<unsigned long long>(off), what);
  std::abort();
}

// A new image: the header cluster and an empty L1 table.
Bytes NewImage(uint32_t cs, uint32_t ts, uint64_t size) {
  Bytes b(uint64_t{cs} * (1 + ts), std::byte{0});
  qed::Header h;
  h.cluster_size = cs;
  h.table_size = ts;
  h.header_size = 1;
  h.l1_table_offset = cs;
  h.image_size = size;
  qed::EncodeHeader(h, std::span<std::byte, qed::kHeaderBytes>(b.data(), qed::kHeaderBytes));
  return b;
}

std::unique_ptr<qed::QedDriver> Open(coro::EventLoop& loop,
                                     const std::shared_ptr<test::MemFileState>& state,
                                     bool read_only, int io_yields) {
  test::MemFile::Options mo;
  mo.read_only = read_only;
  mo.io_yields = io_yields;
  block::OpenOptions o;
  o.path = "/nonexistent/ops.qed";
  o.format = "qed";
  o.read_only = read_only;
  o.lock = false;
  o.need_check_delay = std::chrono::milliseconds(1);
  block::ChainContext chain;
  chain.names.push_back(o.path);
  chain.depth = 1;
  block::OpenReport report;
  qed::QedTuning tuning;
  tuning.l2_cache_min_entries = 2;  // a small cache: evictions while requests are in flight
  tuning.l2_cache_max_entries = 4;
  tuning.l2_cache_bytes = 1;
  auto d = loop.RunSync(
      qed::QedDriver::Open(std::make_unique<test::MemFile>(state, mo), o, chain, &report, tuning));
  if (!d.ok()) Fail("a valid image does not open");
  return *std::move(d);
}

struct Op {
  enum Kind { kWrite, kZero, kZeroUnmap, kRead, kStatus, kFlush } kind;
  uint64_t off = 0;
  uint64_t len = 0;
  uint8_t fill = 0;
};

class Runner {
 public:
  Runner(coro::EventLoop& loop, block::BlockBackend& bb, Bytes& model)
      : loop_(loop), bb_(bb), model_(model) {}

  // Runs |ops| concurrently, then applies the writes to the model.
  void Batch(const std::vector<Op>& ops) {
    std::vector<Bytes> bufs(ops.size());
    std::vector<coro::Task<Result<void>>> writes;
    std::vector<coro::Task<Result<std::size_t>>> reads;
    std::vector<coro::Task<Result<block::BlockStatus>>> statuses;
    std::vector<std::size_t> write_idx, read_idx, status_idx;
    for (std::size_t i = 0; i < ops.size(); ++i) {
      const Op& op = ops[i];
      switch (op.kind) {
        case Op::kWrite:
          bufs[i].assign(op.len, std::byte{op.fill});
          writes.push_back(bb_.Write(op.off, block::IoVector(bufs[i].data(), op.len)));
          write_idx.push_back(i);
          break;
        case Op::kZero:
        case Op::kZeroUnmap:
          writes.push_back(bb_.WriteZeroes(
              op.off, op.len,
              op.kind == Op::kZeroUnmap ? block::ZeroFlags::kMayUnmap : block::ZeroFlags::kNone));
          write_idx.push_back(i);
          break;
        case Op::kFlush:
          writes.push_back(bb_.Flush());
          write_idx.push_back(i);
          break;
        case Op::kRead:
          bufs[i].assign(op.len, std::byte{0xee});
          reads.push_back(bb_.Read(op.off, block::IoVector(bufs[i].data(), op.len)));
          read_idx.push_back(i);
          break;
        case Op::kStatus:
          statuses.push_back(bb_.GetStatus(op.off, op.len));
          status_idx.push_back(i);
          break;
      }
    }
    for (std::size_t k = 0; k < writes.size(); ++k) {
      Result<void> r = loop_.RunSync(std::move(writes[k]));
      if (!r) Fail("a request on a valid image failed", ops[write_idx[k]].off);
    }
    for (std::size_t k = 0; k < reads.size(); ++k) {
      const Op& op = ops[read_idx[k]];
      Result<std::size_t> r = loop_.RunSync(std::move(reads[k]));
      if (!r || *r != op.len) Fail("a read on a valid image failed", op.off);
      // The range was not written by this batch (ranges do not overlap): the model is current.
      if (!SameBytes(bufs[read_idx[k]].data(), model_.data() + op.off, op.len)) {
        Fail("a read returned bytes the model does not hold", op.off);
      }
    }
    for (std::size_t k = 0; k < statuses.size(); ++k) {
      const Op& op = ops[status_idx[k]];
      Result<block::BlockStatus> st = loop_.RunSync(std::move(statuses[k]));
      if (!st || st->length == 0 || st->length > op.len) Fail("bad block status", op.off);
      if (st->zero && !AllZero(model_.data() + op.off, st->length)) {
        Fail("block status reports zeros over data", op.off);
      }
    }
    for (const Op& op : ops) {
      if (op.kind == Op::kWrite) {
        std::fill_n(model_.begin() + op.off, op.len, std::byte{op.fill});
      } else if (op.kind == Op::kZero || op.kind == Op::kZeroUnmap) {
        std::fill_n(model_.begin() + op.off, op.len, std::byte{0});
      }
    }
  }

  // Reads the whole device and compares it with the model.
  void VerifyAll(const char* what) {
    Bytes buf;
    for (uint64_t off = 0; off < model_.size(); off += 1 << 20) {
      const uint64_t len = std::min<uint64_t>(1 << 20, model_.size() - off);
      buf.assign(len, std::byte{0xee});
      Result<std::size_t> r = loop_.RunSync(bb_.Read(off, block::IoVector(buf.data(), len)));
      if (!r || *r != len) Fail(what, off);
      if (!SameBytes(buf.data(), model_.data() + off, len)) Fail(what, off);
    }
  }

 private:
  coro::EventLoop& loop_;
  block::BlockBackend& bb_;
  Bytes& model_;
};

}  // namespace
}  // namespace qedfuse::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  using namespace qedfuse;
  using namespace qedfuse::fuzz;
  FuzzedDataProvider in(data, size);

  const uint32_t cs = 4096u << in.ConsumeIntegralInRange<int>(0, 2);  // 4, 8 or 16 KiB
  const uint32_t ts = 1u << in.ConsumeIntegralInRange<int>(0, 2);     // 1, 2 or 4
  const int io_yields = in.ConsumeIntegralInRange<int>(0, 3);
  // Up to 2 MiB, a multiple of 512 that is often not a multiple of the cluster size.
  const uint64_t size0 = 512 * in.ConsumeIntegralInRange<uint64_t>(1, 4096);

  auto state = test::MemFileState::FromBytes(NewImage(cs, ts, size0));
  Bytes model(size0, std::byte{0});
  coro::EventLoop loop;
  {
    auto drv = Open(loop, state, /*read_only=*/false, io_yields);
    block::BlockBackend bb(std::move(drv));
    auto* q = dynamic_cast<qed::QedDriver*>(&bb.driver());
    Runner run(loop, bb, model);
    uint8_t fill = 1;
    for (int step = 0; step < 24 && in.remaining_bytes() > 0; ++step) {
      const int what = in.ConsumeIntegralInRange<int>(0, 15);
      if (what == 14) {
        // Grow by up to 512 KiB; the new range reads as zeros.
        const uint64_t grow = 512 * in.ConsumeIntegralInRange<uint64_t>(0, 1024);
        Result<void> r = loop.RunSync(bb.Truncate(model.size() + grow));
        if (!r) Fail("a grow failed");
        model.resize(model.size() + grow, std::byte{0});
        continue;
      }
      if (what == 15) {
        Result<qed::CheckReport> rep = loop.RunSync(q->Check(/*repair=*/false));
        if (!rep || rep->corruptions != 0 || rep->check_errors != 0) {
          Fail("the check of an open image found corruption");
        }
        continue;
      }
      // A batch of 1-4 requests on non-overlapping ranges.
      const int n = 1 + what % 4;
      std::vector<Op> ops;
      for (int i = 0; i < n && in.remaining_bytes() > 0; ++i) {
        Op op;
        op.kind = static_cast<Op::Kind>(in.ConsumeIntegralInRange<int>(0, 5));
        op.off = in.ConsumeIntegralInRange<uint64_t>(0, model.size() - 1);
        if (in.ConsumeBool()) op.off &= ~uint64_t{cs - 1};
        op.len = in.ConsumeIntegralInRange<uint64_t>(1, kMaxOpLen);
        if (in.ConsumeBool()) op.len = (op.len + cs - 1) & ~uint64_t{cs - 1};
        op.len = std::min(op.len, model.size() - op.off);
        op.fill = fill++;
        if (fill == 0) fill = 1;
        bool overlaps = false;
        for (const Op& o : ops) {
          overlaps = overlaps || (op.off < o.off + o.len && o.off < op.off + op.len);
        }
        if (!overlaps) ops.push_back(op);
      }
      run.Batch(ops);
    }
    run.VerifyAll("the image does not read back as the model");
    absl::Status st = loop.RunSync(bb.Close());
    if (!st.ok()) Fail("close failed");
  }

  // Reopened: clean flag, clean check, same contents.
  {
    Bytes head(state->current.begin(), state->current.begin() + qed::kHeaderBytes);
    const qed::Header h =
        qed::DecodeHeader(std::span<const std::byte, qed::kHeaderBytes>(head.data(), 64));
    if (h.need_check()) Fail("NEED_CHECK is still set after a clean close");
    if (h.image_size != model.size()) Fail("the header does not hold the grown size");
    auto drv = Open(loop, state, /*read_only=*/true, 0);
    block::BlockBackend bb(std::move(drv));
    auto* q = dynamic_cast<qed::QedDriver*>(&bb.driver());
    Result<qed::CheckReport> rep = loop.RunSync(q->Check(/*repair=*/false));
    if (!rep || rep->corruptions != 0 || rep->check_errors != 0 || rep->leaks != 0) {
      Fail("the check after a clean close is not clean");
    }
    Runner run(loop, bb, model);
    run.VerifyAll("the reopened image does not read back as the model");
    absl::Status st = loop.RunSync(bb.Close());
    if (!st.ok()) Fail("read-only close failed");
  }
  return 0;
}
