// QED driver throughput over a page-cached temp file, beside the raw driver: 4 KiB random reads,
// in-place writes and allocating writes at queue depth 1 and 32 (items/s = IOPS), plus the L2
// cache policy (LRU with a byte budget vs QEMU's 50 tables) on random reads over many tables.
// Run: build/tests/bench/qed_bench [--benchmark_filter=...]. Files go to $TMPDIR (or /tmp).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "block/file/file_protocol.h"
#include "block/qed/qed_create.h"
#include "block/qed/qed_driver.h"
#include "qedfuse/block/block_backend.h"
#include "qedfuse/block/io_buffer.h"
#include "qedfuse/block/open.h"
#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/task.h"

namespace qedfuse {
namespace {

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kImageSize = 256u << 20;  // prefilled images for reads and in-place writes

std::string TempPath(const std::string& name) {
  const char* base = std::getenv("TMPDIR");
  std::string dir = std::string(base != nullptr && *base ? base : "/tmp") + "/qedfuse-bench";
  std::filesystem::create_directories(dir);
  return dir + "/" + name;
}

uint64_t NextRandom(uint64_t& s) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

coro::Task<void> Op(block::BlockBackend* bb, uint64_t off, block::IoBuffer* buf, bool write,
                    int* left, bool* failed) {
  if (write) {
    Result<void> r = co_await bb->Write(off, block::IoVector(*buf));
    if (!r) *failed = true;
  } else {
    Result<std::size_t> r = co_await bb->Read(off, block::IoVector(*buf));
    if (!r) *failed = true;
  }
  --*left;
}

// Runs |qd| requests at once per iteration and waits for all of them.
template <typename NextOffset>
void RunBatches(benchmark::State& state, coro::EventLoop& loop,
                std::unique_ptr<block::BlockBackend>* bb, bool write, NextOffset next) {
  const int qd = static_cast<int>(state.range(0));
  std::vector<block::IoBuffer> bufs;
  for (int i = 0; i < qd; ++i) bufs.emplace_back(kBlock, /*zero=*/true);
  bool failed = false;
  for (auto _ : state) {
    int left = qd;
    for (int i = 0; i < qd; ++i) {
      const uint64_t off = next(state);  // may replace *bb (between batches only)
      coro::Spawn(Op(bb->get(), off, &bufs[i], write, &left, &failed));
    }
    while (left > 0) loop.RunOne();
  }
  if (failed) state.SkipWithError("I/O failed");
  state.SetItemsProcessed(state.iterations() * qd);
  state.SetBytesProcessed(state.iterations() * qd * static_cast<int64_t>(kBlock));
}

std::unique_ptr<block::BlockBackend> OpenOrDie(coro::EventLoop& loop, const std::string& path,
                                               const std::string& format) {
  block::OpenOptions o;
  o.path = path;
  o.format = format;
  o.lock = false;
  auto bb = loop.RunSync(block::OpenImage(o));
  if (!bb.ok()) {
    std::fprintf(stderr, "open %s: %s\n", path.c_str(), std::string(bb.status().message()).c_str());
    std::abort();
  }
  return std::move(*bb);
}

void CloseOrDie(coro::EventLoop& loop, std::unique_ptr<block::BlockBackend>& bb) {
  absl::Status st = loop.RunSync(bb->Close());
  if (!st.ok()) std::abort();
  bb.reset();
}

void CreateQed(const std::string& path, uint64_t size, uint32_t cs, uint32_t ts = 4) {
  qed::CreateOptions co;
  co.path = path;
  co.size = size;
  co.cluster_size = cs;
  co.table_size = ts;
  absl::Status st = qed::CreateImage(co);
  if (!st.ok()) {
    std::fprintf(stderr, "create %s: %s\n", path.c_str(), std::string(st.message()).c_str());
    std::abort();
  }
}

// Writes every byte of the device once (1 MiB requests), so reads and writes hit data.
void Prefill(coro::EventLoop& loop, block::BlockBackend& bb) {
  block::IoBuffer buf(1u << 20);
  for (std::size_t i = 0; i < buf.size(); ++i) buf.data()[i] = std::byte(static_cast<uint8_t>(i));
  for (uint64_t off = 0; off < bb.length(); off += buf.size()) {
    if (!loop.RunSync(bb.Write(off, block::IoVector(buf)))) std::abort();
  }
  if (!loop.RunSync(bb.Flush())) std::abort();
}

// The prefilled images are made once per process and reused by every benchmark.
const std::string& PrefilledQed() {
  static const std::string path = [] {
    std::string p = TempPath("prefilled.qed");
    CreateQed(p, kImageSize, 65536);
    coro::EventLoop loop;
    auto bb = OpenOrDie(loop, p, "qed");
    Prefill(loop, *bb);
    CloseOrDie(loop, bb);
    return p;
  }();
  return path;
}

const std::string& PrefilledRaw() {
  static const std::string path = [] {
    std::string p = TempPath("prefilled.raw");
    int fd = ::open(p.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0644);
    if (fd < 0 || ::ftruncate(fd, kImageSize) != 0) std::abort();
    ::close(fd);
    coro::EventLoop loop;
    auto bb = OpenOrDie(loop, p, "raw");
    Prefill(loop, *bb);
    CloseOrDie(loop, bb);
    return p;
  }();
  return path;
}

void RandomIo(benchmark::State& state, const std::string& path, const std::string& format,
              bool write) {
  coro::EventLoop loop;
  auto bb = OpenOrDie(loop, path, format);
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  const uint64_t blocks = bb->length() / kBlock;
  RunBatches(state, loop, &bb, write,
             [&](benchmark::State&) { return (NextRandom(seed) % blocks) * kBlock; });
  CloseOrDie(loop, bb);
}

void BM_RawRandRead4k(benchmark::State& s) { RandomIo(s, PrefilledRaw(), "raw", false); }
void BM_QedRandRead4k(benchmark::State& s) { RandomIo(s, PrefilledQed(), "qed", false); }
void BM_RawRandWrite4k(benchmark::State& s) { RandomIo(s, PrefilledRaw(), "raw", true); }
void BM_QedRandWrite4k(benchmark::State& s) { RandomIo(s, PrefilledQed(), "qed", true); }
BENCHMARK(BM_RawRandRead4k)->Arg(1)->Arg(32)->UseRealTime();
BENCHMARK(BM_QedRandRead4k)->Arg(1)->Arg(32)->UseRealTime();
BENCHMARK(BM_RawRandWrite4k)->Arg(1)->Arg(32)->UseRealTime();
BENCHMARK(BM_QedRandWrite4k)->Arg(1)->Arg(32)->UseRealTime();

// Allocating 4 KiB writes, each to a cluster nobody has written yet (sequential cluster order,
// spread over many L2 tables). The image is recreated (untimed) every 128 MiB of file growth.
void AllocWrites(benchmark::State& state, uint32_t cs) {
  const std::string path = TempPath("alloc.qed");
  const uint64_t size = 8ull << 30;
  coro::EventLoop loop;
  CreateQed(path, size, cs);
  auto bb = OpenOrDie(loop, path, "qed");
  uint64_t next_cluster = 0;
  // Recreated only between batches: a multiple of every queue depth used.
  const uint64_t per_image = (128ull << 20) / cs / 32 * 32;
  RunBatches(state, loop, &bb, true, [&](benchmark::State& st) {
    if (next_cluster == per_image) {
      st.PauseTiming();
      CloseOrDie(loop, bb);
      CreateQed(path, size, cs);
      bb = OpenOrDie(loop, path, "qed");
      next_cluster = 0;
      st.ResumeTiming();
    }
    // Stride of 7 clusters: no two requests of a batch share a cluster.
    return (next_cluster++ * 7 % (size / cs)) * cs;
  });
  CloseOrDie(loop, bb);
  std::filesystem::remove(path);
}
// Whole-cluster writes (4 KiB clusters: no padding) and partial ones (64 KiB clusters: 60 KiB
// of zero padding per write).
void BM_QedAllocWrite4k_cs4k(benchmark::State& s) { AllocWrites(s, 4096); }
void BM_QedAllocWrite4k_cs64k(benchmark::State& s) { AllocWrites(s, 65536); }
BENCHMARK(BM_QedAllocWrite4k_cs4k)->Arg(1)->Arg(32)->UseRealTime();
BENCHMARK(BM_QedAllocWrite4k_cs64k)->Arg(1)->Arg(32)->UseRealTime();

// L2 cache policy: 4 KiB clusters and 4-cluster tables (8 MiB of guest space per L2 table), 2 GiB
// image with one cluster written per table (256 tables), random 4 KiB reads everywhere. Arg 0
// is the driver's default (LRU, 32 MiB budget: every table stays cached); Arg 1 mimics QEMU's
// 50-table cache. Reads of unallocated clusters need no data I/O, so this isolates lookups.
void BM_QedL2CacheRandRead(benchmark::State& state) {
  const std::string path = TempPath("tables.qed");
  const uint64_t size = 2ull << 30;
  const uint64_t span = 8ull << 20;
  coro::EventLoop loop;
  CreateQed(path, size, 4096, 4);
  {
    auto bb = OpenOrDie(loop, path, "qed");
    block::IoBuffer one(kBlock, /*zero=*/true);
    for (uint64_t off = 0; off < size; off += span) {
      if (!loop.RunSync(bb->Write(off, block::IoVector(one)))) std::abort();
    }
    CloseOrDie(loop, bb);
  }
  block::FileProtocolOptions fo;
  fo.path = path;
  auto file = block::FileProtocol::Open(fo);
  if (!file.ok()) std::abort();
  qed::QedTuning tuning;
  if (state.range(1) == 1) {
    tuning.l2_cache_bytes = 50 * 16384;
    tuning.l2_cache_min_entries = 50;
    tuning.l2_cache_max_entries = 50;
  }
  block::OpenOptions o;
  o.path = path;
  o.lock = false;
  block::ChainContext chain;
  chain.names.push_back(path);
  auto drv = loop.RunSync(qed::QedDriver::Open(*std::move(file), o, chain, nullptr, tuning));
  if (!drv.ok()) std::abort();
  qed::QedDriver* qd = drv->get();
  auto bb = std::make_unique<block::BlockBackend>(std::move(*drv));
  uint64_t seed = 0x2545f4914f6cdd1dull;
  const uint64_t blocks = size / kBlock;
  const uint64_t misses_before = qd->l2_cache().stats().misses;
  RunBatches(state, loop, &bb, false,
             [&](benchmark::State&) { return (NextRandom(seed) % blocks) * kBlock; });
  state.counters["l2_miss_ratio"] =
      static_cast<double>(qd->l2_cache().stats().misses - misses_before) /
      static_cast<double>(std::max<int64_t>(1, state.iterations() * state.range(0)));
  state.counters["l2_entries"] = static_cast<double>(qd->l2_cache().capacity());
  CloseOrDie(loop, bb);
  std::filesystem::remove(path);
}
BENCHMARK(BM_QedL2CacheRandRead)
    ->ArgsProduct({{1, 32}, {0, 1}})
    ->ArgNames({"qd", "qemu50"})
    ->UseRealTime();

}  // namespace
}  // namespace qedfuse

BENCHMARK_MAIN();
