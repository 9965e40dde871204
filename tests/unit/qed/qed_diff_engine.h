// Randomised differential engine: drives a BlockBackend with random reads, writes, zero writes
// (with and without kMayUnmap) and flushes, many in flight at once, and checks every read against
// an in-memory raw model.
//
// Determinism under concurrency: an op is only started when its byte range is disjoint from every
// op still in flight (flushes have no range); an overlapping op waits until its predecessors
// complete. Writes are applied to the model when they are issued, which is exact because no
// overlapping op can observe the range until they complete. So every read has exactly one
// correct answer, whatever the interleaving.
#pragma once

#include <cinttypes>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "qedfuse/block/block_backend.h"
#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/task.h"
#include "unit/qed/qed_test_util.h"

namespace qedfuse::qedtest {

struct DiffParams {
  int ops = 1000;          // operations to issue
  int max_in_flight = 32;  // window of concurrent ops
  uint32_t cluster_size = 65536;
  double p_read = 0.35, p_write = 0.40, p_zero = 0.15;  // rest: flush
  uint64_t max_len = 256 * 1024;
};

struct DiffStats {
  uint64_t reads = 0, writes = 0, zeroes = 0, zeroes_unmap = 0, flushes = 0;
  uint64_t bytes_read = 0, bytes_written = 0;
  int max_in_flight_seen = 0;
  uint64_t total() const { return reads + writes + zeroes + zeroes_unmap + flushes; }
  void Add(const DiffStats& o) {
    reads += o.reads;
    writes += o.writes;
    zeroes += o.zeroes;
    zeroes_unmap += o.zeroes_unmap;
    flushes += o.flushes;
    bytes_read += o.bytes_read;
    bytes_written += o.bytes_written;
    max_in_flight_seen = std::max(max_in_flight_seen, o.max_in_flight_seen);
  }
  std::string ToString() const {
    char b[256];
    std::snprintf(b, sizeof b,
                  "%" PRIu64 " ops: %" PRIu64 " reads, %" PRIu64 " writes, %" PRIu64
                  " zero writes, %" PRIu64 " zero writes with unmap, %" PRIu64
                  " flushes; max %d in flight",
                  total(), reads, writes, zeroes, zeroes_unmap, flushes, max_in_flight_seen);
    return b;
  }
};

namespace diff_detail {

enum class OpKind { kRead, kWrite, kZero, kZeroUnmap, kFlush };

struct Slot {
  OpKind kind;
  uint64_t off = 0;
  uint64_t len = 0;
  uint64_t seq = 0;
  Bytes buf;
  bool done = false;
  std::error_code err;
  std::size_t got = 0;
};

inline coro::Task<void> RunOp(block::BlockBackend* bb, std::shared_ptr<Slot> s) {
  switch (s->kind) {
    case OpKind::kRead: {
      Result<std::size_t> r = co_await bb->Read(s->off, block::IoVector(s->buf.data(), s->len));
      if (r) {
        s->got = *r;
      } else {
        s->err = r.error();
      }
      break;
    }
    case OpKind::kWrite: {
      Result<void> r = co_await bb->Write(s->off, block::IoVector(s->buf.data(), s->len));
      if (!r) s->err = r.error();
      break;
    }
    case OpKind::kZero:
    case OpKind::kZeroUnmap: {
      block::ZeroFlags f =
          s->kind == OpKind::kZeroUnmap ? block::ZeroFlags::kMayUnmap : block::ZeroFlags::kNone;
      Result<void> r = co_await bb->WriteZeroes(s->off, s->len, f);
      if (!r) s->err = r.error();
      break;
    }
    case OpKind::kFlush: {
      Result<void> r = co_await bb->Flush();
      if (!r) s->err = r.error();
      break;
    }
  }
  s->done = true;
}

inline const char* KindName(OpKind k) {
  switch (k) {
    case OpKind::kRead:
      return "read";
    case OpKind::kWrite:
      return "write";
    case OpKind::kZero:
      return "zero";
    case OpKind::kZeroUnmap:
      return "zero+unmap";
    case OpKind::kFlush:
      return "flush";
  }
  return "?";
}

}  // namespace diff_detail

// Runs |p.ops| random operations on |bb| and checks them against |model| (the expected content
// of the whole device, updated as writes are issued). Returns false (with gtest failures
// recorded) on the first mismatch or error.
inline bool RunDifferential(coro::EventLoop& loop, block::BlockBackend& bb, Bytes& model,
                            std::mt19937_64& rng, const DiffParams& p, DiffStats* stats) {
  using diff_detail::OpKind;
  using diff_detail::Slot;
  const uint64_t size = model.size();
  if (bb.length() != size) {
    ADD_FAILURE() << "device length " << bb.length() << " != model " << size;
    return false;
  }
  std::vector<std::shared_ptr<Slot>> in_flight;
  bool ok = true;
  uint64_t seq = 0;

  auto check_done = [&](const Slot& s) {
    if (s.err) {
      ADD_FAILURE() << "op #" << s.seq << " " << diff_detail::KindName(s.kind) << " " << s.off
                    << "+" << s.len << " failed: " << s.err.message();
      ok = false;
      return;
    }
    if (s.kind != OpKind::kRead) return;
    uint64_t want_len = std::min<uint64_t>(s.len, size - s.off);
    if (s.got != want_len) {
      ADD_FAILURE() << "op #" << s.seq << " read " << s.off << "+" << s.len << " returned " << s.got
                    << " bytes";
      ok = false;
      return;
    }
    int64_t d = FirstDiff(s.buf.data(), model.data() + s.off, want_len);
    if (d >= 0) {
      ADD_FAILURE() << "op #" << s.seq << " read " << s.off << "+" << s.len
                    << " mismatch at guest offset " << s.off + d << ": got 0x" << std::hex
                    << int{s.buf[d]} << " want 0x" << int{model[s.off + d]} << std::dec;
      ok = false;
    }
  };
  auto reap = [&] {
    for (std::size_t i = 0; i < in_flight.size();) {
      if (in_flight[i]->done) {
        check_done(*in_flight[i]);
        in_flight[i] = in_flight.back();
        in_flight.pop_back();
      } else {
        ++i;
      }
    }
  };
  auto step = [&] {
    if (loop.RunOne() == 0) {
      ADD_FAILURE() << "event loop ran dry with " << in_flight.size() << " ops in flight";
      ok = false;
    }
    reap();
  };
  auto overlaps = [&](uint64_t off, uint64_t len) {
    for (const auto& s : in_flight) {
      if (s->kind == OpKind::kFlush || s->done) continue;
      if (off < s->off + s->len && s->off < off + len) return true;
    }
    return false;
  };

  const uint64_t cs = p.cluster_size;
  for (int i = 0; i < p.ops && ok; ++i) {
    auto s = std::make_shared<Slot>();
    s->seq = seq++;
    double x = std::uniform_real_distribution<double>(0, 1)(rng);
    if (x < p.p_read) {
      s->kind = OpKind::kRead;
    } else if (x < p.p_read + p.p_write) {
      s->kind = OpKind::kWrite;
    } else if (x < p.p_read + p.p_write + p.p_zero) {
      s->kind = rng() % 2 ? OpKind::kZeroUnmap : OpKind::kZero;
    } else {
      s->kind = OpKind::kFlush;
    }
    if (s->kind != OpKind::kFlush) {
      // Offsets: half in a hot quarter of the disk (re-writes, COW, in-place), half anywhere.
      uint64_t span = rng() % 2 ? std::max<uint64_t>(size / 4, 1) : size;
      uint64_t off = rng() % span;
      uint64_t len;
      switch (rng() % 5) {
        case 0:  // tiny, unaligned
          len = 1 + rng() % 600;
          break;
        case 1:  // sector multiple, sector aligned
          off &= ~uint64_t{511};
          len = 512 * (1 + rng() % 16);
          break;
        case 2:  // whole clusters
          off &= ~uint64_t{cs - 1};
          len = cs * (1 + rng() % 3);
          break;
        case 3:  // straddles a cluster boundary
          off = (off & ~uint64_t{cs - 1}) + cs - 1 - rng() % std::min<uint64_t>(cs, 4096);
          len = 2 + rng() % 8192;
          break;
        default:
          len = 1 + rng() % p.max_len;
          break;
      }
      if (off >= size) off = size - 1;
      len = std::max<uint64_t>(1, std::min(len, size - off));
      // Reads may run past the end (the backend clamps); writes may not.
      if (s->kind == OpKind::kRead && rng() % 16 == 0) len += 1 + rng() % 4096;
      s->off = off;
      s->len = len;
    }
    // Wait for room, and for overlapping predecessors to complete.
    while (ok && (static_cast<int>(in_flight.size()) >= p.max_in_flight ||
                  (s->kind != OpKind::kFlush && overlaps(s->off, s->len)))) {
      step();
    }
    if (!ok) break;
    switch (s->kind) {
      case OpKind::kRead:
        s->buf.assign(s->len, 0xdb);
        ++stats->reads;
        stats->bytes_read += s->len;
        break;
      case OpKind::kWrite:
        s->buf = Pattern(s->len, static_cast<uint8_t>(rng()));
        if (rng() % 8 == 0) std::fill(s->buf.begin(), s->buf.end(), 0);  // zeros as data
        std::copy(s->buf.begin(), s->buf.end(), model.begin() + static_cast<long>(s->off));
        ++stats->writes;
        stats->bytes_written += s->len;
        break;
      case OpKind::kZero:
      case OpKind::kZeroUnmap:
        std::fill(model.begin() + static_cast<long>(s->off),
                  model.begin() + static_cast<long>(s->off + s->len), 0);
        if (s->kind == OpKind::kZero) {
          ++stats->zeroes;
        } else {
          ++stats->zeroes_unmap;
        }
        break;
      case OpKind::kFlush:
        ++stats->flushes;
        break;
    }
    in_flight.push_back(s);
    coro::Spawn(diff_detail::RunOp(&bb, s));
    stats->max_in_flight_seen =
        std::max(stats->max_in_flight_seen, static_cast<int>(in_flight.size()));
    reap();
  }
  // Drain (even after a failure, so that no coroutine outlives the backend).
  while (!in_flight.empty()) {
    if (loop.RunOne() == 0) {
      ADD_FAILURE() << "event loop ran dry while draining";
      std::abort();  // suspended coroutines cannot be cleaned up safely
    }
    reap();
  }
  return ok;
}

// Reads the whole device and compares it with |model|.
inline bool VerifyWhole(coro::EventLoop& loop, block::BlockBackend& bb, const Bytes& model) {
  auto all = ReadAll(loop, bb);
  if (!all) {
    ADD_FAILURE() << "full read failed: " << all.error().message();
    return false;
  }
  if (all->size() != model.size()) {
    ADD_FAILURE() << "full read returned " << all->size() << " bytes, want " << model.size();
    return false;
  }
  int64_t d = FirstDiff(all->data(), model.data(), model.size());
  if (d >= 0) {
    ADD_FAILURE() << "device differs from model at " << d << ": 0x" << std::hex << int{(*all)[d]}
                  << " vs 0x" << int{model[d]};
    return false;
  }
  return true;
}

}  // namespace qedfuse::qedtest
