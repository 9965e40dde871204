// qedimg convert: copies an image (raw or QED, with its backing chain flattened) into a new raw
// or QED image.
//
// The copy is sparse: the source's block status skips ranges that read as zeros without reading
// them, and the data that is read is scanned per granule (a cluster for a QED target, 4 KiB for
// a raw target) so that all-zero granules are not written either. A new QED image reads zeros
// wherever nothing was written (no backing file) and a new raw file is created at full length
// with ftruncate, so skipped ranges stay unallocated: holes in raw, unallocated clusters in QED.
//
// Speed comes from large requests (2 MiB chunks) with several in flight on the event loop.
// Reads run out of order; writes to a QED target are issued in chunk order (as qemu-img does by
// default), which keeps the new image's clusters in guest order.
#include <fcntl.h>
#include <getopt.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "block/qed/qed_create.h"
#include "qedfuse/block/io_buffer.h"
#include "qedfuse/block/io_vector.h"
#include "qedfuse/block/open.h"
#include "qedfuse/coro/co_mutex.h"
#include "qedfuse/coro/co_queue.h"
#include "qedfuse/coro/event_loop.h"
#include "tools/commands.h"
#include "tools/tool_util.h"

namespace qedfuse::tools {
namespace {

constexpr uint64_t kChunkBytes = 2u << 20;
constexpr int kWorkers = 8;
constexpr uint64_t kRawGranule = 4096;

struct ConvertArgs {
  block::BackingPolicy backing = block::BackingPolicy::kFollow;
  std::string src;
  std::string dst;
  std::string src_format;
  std::string dst_format = "raw";
  std::vector<std::string> option_lists;
  bool progress = false;
  bool quiet = false;
};

struct Copier {
  block::BlockBackend* src = nullptr;
  block::BlockBackend* dst = nullptr;
  uint64_t length = 0;
  uint64_t chunk = kChunkBytes;
  uint64_t granule = kRawGranule;
  bool in_order = false;

  uint64_t next_chunk = 0;  // next chunk index to claim
  // In-order writes: every chunk below this index is written or known to be zero.
  uint64_t next_write = 0;
  coro::CoMutex order_lock;
  coro::CoQueue order_queue;

  bool failed = false;
  std::string error;
  uint64_t done = 0;
  Progress* progress = nullptr;

  void Fail(std::string message) {
    if (!failed) error = std::move(message);
    failed = true;
  }
};

bool AllZero(const std::byte* p, std::size_t n) {
  // Word-at-a-time scan; buffers are 4 KiB aligned and granules are multiples of 8 bytes,
  // except possibly the last, handled bytewise.
  std::size_t i = 0;
  for (; i + sizeof(uint64_t) <= n; i += sizeof(uint64_t)) {
    uint64_t w;
    std::memcpy(&w, p + i, sizeof w);
    if (w != 0) return false;
  }
  for (; i < n; ++i) {
    if (p[i] != std::byte{0}) return false;
  }
  return true;
}

// Reads chunk |idx| into |buf| (zero-filling ranges the source reports as zeros) and returns
// the granule-aligned runs, relative to the chunk start, that hold non-zero bytes.
struct ChunkData {
  std::vector<std::pair<uint64_t, uint64_t>> runs;  // to write, relative to the chunk
  uint64_t zero_end = 0;  // when the whole chunk reads as zeros: where that zero run ends
};

coro::Task<ChunkData> ReadChunk(Copier* s, uint64_t off, uint64_t len, block::IoBuffer* buf) {
  ChunkData out;
  std::vector<std::pair<uint64_t, uint64_t>>& runs = out.runs;
  bool any_data = false;
  uint64_t pos = off;
  while (pos < off + len && !s->failed) {
    // The first query looks to the end of the image, so that one call can reveal a long zero
    // run (an unallocated L2 range, a hole) that the caller then skips in one step.
    uint64_t want = pos == off ? s->length - pos : off + len - pos;
    auto st = co_await s->src->GetStatus(pos, want);
    if (!st) {
      s->Fail(absl::StrFormat("error while reading block status at offset %llu: %s",
                              static_cast<unsigned long long>(pos), st.error().message()));
      co_return out;
    }
    uint64_t n = std::min<uint64_t>(std::max<uint64_t>(st->length, 1), off + len - pos);
    std::byte* dst = buf->data() + (pos - off);
    if (st->zero) {
      if (pos == off && n == len) {  // the whole chunk reads as zeros
        out.zero_end = off + std::min(st->length, want);
        co_return out;
      }
      std::memset(dst, 0, n);
    } else {
      auto r = co_await s->src->Read(pos, block::IoVector(dst, n));
      if (!r) {
        s->Fail(absl::StrFormat("error while reading at byte %llu: %s",
                                static_cast<unsigned long long>(pos), r.error().message()));
        co_return out;
      }
      if (*r < n) std::memset(dst + *r, 0, n - *r);
      any_data = true;
    }
    pos += n;
  }
  if (!any_data) co_return out;
  for (uint64_t g = 0; g < len; g += s->granule) {
    uint64_t n = std::min(s->granule, len - g);
    if (AllZero(buf->data() + g, n)) continue;
    if (!runs.empty() && runs.back().first + runs.back().second == g) {
      runs.back().second += n;
    } else {
      runs.emplace_back(g, n);
    }
  }
  co_return out;
}

coro::Task<void> CopyWorker(Copier* s) {
  block::IoBuffer buf(s->chunk);
  while (!s->failed) {
    uint64_t idx = s->next_chunk++;
    uint64_t off = idx * s->chunk;
    if (off >= s->length) break;
    uint64_t len = std::min(s->chunk, s->length - off);
    ChunkData chunk = co_await ReadChunk(s, off, len, &buf);
    // Chunks wholly inside a zero run that reaches past this one need no work: skip them by
    // moving the shared cursor (chunks other workers already claimed are zero too).
    uint64_t skip_to = idx + 1;
    if (chunk.zero_end > off + len) {
      skip_to = chunk.zero_end / s->chunk;
      if (skip_to > s->next_chunk) {
        s->done += (skip_to - s->next_chunk) * s->chunk;
        s->next_chunk = skip_to;
      }
    }
    if (s->in_order) {
      // Writes are issued in chunk order: wait until every earlier chunk has been written or
      // was found to be zero.
      coro::CoMutex::Guard g = co_await s->order_lock.Lock();
      while (s->next_write < idx && !s->failed) co_await s->order_queue.Wait(g);
    }
    for (const auto& [rel, n] : chunk.runs) {
      if (s->failed) break;
      auto w = co_await s->dst->Write(off + rel, block::IoVector(buf.data() + rel, n));
      if (!w) {
        s->Fail(absl::StrFormat("error while writing at byte %llu: %s",
                                static_cast<unsigned long long>(off + rel), w.error().message()));
      }
    }
    if (s->in_order) {
      coro::CoMutex::Guard g = co_await s->order_lock.Lock();
      s->next_write = std::max({s->next_write, idx + 1, skip_to});
      s->order_queue.WakeAll();
    }
    s->done += len;
    if (s->progress != nullptr) s->progress->Update(s->done, s->length);
  }
  if (s->in_order) {
    // Let writers waiting for a chunk this worker will never write see the failure.
    coro::CoMutex::Guard g = co_await s->order_lock.Lock();
    s->order_queue.WakeAll();
  }
}

// Creates the raw target at full length (all holes).
absl::Status CreateRaw(const std::string& path, uint64_t length) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::Status(absl::ErrnoToStatusCode(errno),
                        absl::StrFormat("Could not create '%s': %s", path, std::strerror(errno)));
  }
  int rc = ::ftruncate(fd, static_cast<off_t>(length));
  int err = errno;
  ::close(fd);
  if (rc != 0) {
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrFormat("Could not resize '%s': %s", path, std::strerror(err)));
  }
  return absl::OkStatus();
}

bool SameFile(const std::string& a, const std::string& b) {
  struct stat sa {};
  struct stat sb {};
  if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

coro::Task<int> RunConvert(ConvertArgs args, qed::CreateOptions create) {
  block::OpenOptions so;
  so.path = args.src;
  so.format = args.src_format;
  so.read_only = true;
  so.backing = args.backing;
  block::OpenReport sreport;
  auto sopened = co_await block::OpenImage(so, &sreport);
  if (!sopened.ok()) {
    Error(absl::StrFormat("Could not open '%s': %s", args.src, sopened.status().message()));
    co_return kExitFailure;
  }
  std::unique_ptr<block::BlockBackend> src = std::move(*sopened);
  uint64_t length = src->length();

  absl::Status created;
  if (args.dst_format == "qed") {
    create.path = args.dst;
    create.size = length;
    created = qed::CreateImage(create);
  } else {
    created = CreateRaw(args.dst, length);
  }
  if (!created.ok()) {
    Error(absl::StrFormat("%s: %s", args.dst, created.message()));
    absl::Status c = co_await src->Close();
    (void)c;
    co_return kExitFailure;
  }
  block::OpenOptions dopts;
  dopts.path = args.dst;
  dopts.format = args.dst_format;
  dopts.read_only = false;
  auto dopened = co_await block::OpenImage(dopts, nullptr);
  if (!dopened.ok()) {
    Error(absl::StrFormat("Could not open '%s': %s", args.dst, dopened.status().message()));
    absl::Status c = co_await src->Close();
    (void)c;
    co_return kExitFailure;
  }
  std::unique_ptr<block::BlockBackend> dst = std::move(*dopened);

  Progress progress(args.progress);
  Copier s;
  s.src = src.get();
  s.dst = dst.get();
  s.length = std::min(length, dst->length());
  s.in_order = args.dst_format == "qed";
  s.granule = args.dst_format == "qed" ? create.cluster_size : kRawGranule;
  s.chunk = std::max<uint64_t>(kChunkBytes, s.granule);
  s.progress = &progress;
  progress.Update(0, s.length);
  {
    std::vector<coro::Task<void>> workers;
    for (int i = 0; i < kWorkers; ++i) workers.push_back(CopyWorker(&s));
    for (auto& w : workers) co_await w;
  }
  if (!s.failed) {
    auto f = co_await dst->Flush();
    if (!f) s.Fail(absl::StrFormat("error while flushing '%s': %s", args.dst, f.error().message()));
  }
  progress.Finish();
  absl::Status dclosed = co_await dst->Close();
  absl::Status sclosed = co_await src->Close();
  if (s.failed) {
    Error(s.error);
    co_return kExitFailure;
  }
  if (!dclosed.ok()) {
    Error(dclosed);
    co_return kExitFailure;
  }
  if (!sclosed.ok()) Error(sclosed);
  co_return kExitOk;
}

}  // namespace

int ConvertCommand(int argc, char** argv) {
  ConvertArgs args;
  args.progress = false;
  enum { kOptBacking = 256 };
  static const option kLong[] = {{"help", no_argument, nullptr, 'h'},
                                 {"backing", required_argument, nullptr, kOptBacking},
                                 {"quiet", no_argument, nullptr, 'q'},
                                 {"progress", no_argument, nullptr, 'p'},
                                 {nullptr, 0, nullptr, 0}};
  optind = 0;
  int c;
  bool progress_flag = false;
  while ((c = getopt_long(argc, argv, "+hf:O:o:pq", kLong, nullptr)) != -1) {
    switch (c) {
      case 'h':
        PrintUsage("convert", false);
        return kExitOk;
      case 'f':
        args.src_format = optarg;
        break;
      case 'O':
        args.dst_format = optarg;
        break;
      case 'o':
        args.option_lists.emplace_back(optarg);
        break;
      case 'p':
        progress_flag = true;
        break;
      case 'q':
        args.quiet = true;
        break;
      case kOptBacking:
        if (!ParseBackingOption(optarg, &args.backing)) return kExitFailure;
        break;
      default:
        PrintUsage("convert", true);
        return kExitFailure;
    }
  }
  if (!CheckOperandCount("convert", argc - optind, 2,
                         "Expecting a source and a destination file name",
                         "Too many arguments (convert takes one source)")) {
    return kExitFailure;
  }
  args.src = argv[optind];
  args.dst = argv[optind + 1];
  if (!CheckFormatName(args.src_format) || !CheckFormatName(args.dst_format)) return kExitFailure;
  qed::CreateOptions create;
  if (args.dst_format == "raw" && !args.option_lists.empty()) {
    Error("-o options apply to a QED target only (-O qed)");
    return kExitFailure;
  }
  if (!ParseCreateOptions(args.dst, args.option_lists, &create, nullptr)) return kExitFailure;
  if (!create.backing_file.empty()) {
    Error("convert writes a standalone image: backing_file is not supported here");
    return kExitFailure;
  }
  if (SameFile(args.src, args.dst)) {
    Error("Source and destination are the same file: '" + args.dst + "'");
    return kExitFailure;
  }
  args.progress = (progress_flag || StdoutIsTty()) && !args.quiet;
  coro::EventLoop loop;
  return loop.RunSync(RunConvert(std::move(args), std::move(create)));
}

}  // namespace qedfuse::tools
