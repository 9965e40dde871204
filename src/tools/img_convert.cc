// qedimg convert: copies an image (raw or QED, with its backing chain flattened) into a raw or
// QED target: a new file, an existing file (emptied first, as qemu-img re-creates it), a block
// device, or with -n an existing image written into as it is.
//
// What the target holds before the copy decides what becomes of the source's zero ranges. A
// target qedimg has just made reads as zeros: a new QED image, or a raw file cut to length 0 and
// extended (ftruncate's result is checked: a file that refuses to shrink, such as a mounted
// qedfuse disk, is an error, not a file assumed empty). Zero ranges are then skipped and stay
// unallocated: holes in raw, unallocated clusters in QED. Any other target (a block device, an
// existing image with -n) still holds its old bytes, so every zero range is written as zeros with
// WriteZeroes (holes punched or ranges zeroed where the file or device can, zeros written where
// it cannot), unless the user vouches for the target with --target-is-zero.
//
// The copy is sparse on the source side too: the source's block status skips ranges that read as
// zeros without reading them, and the data that is read is scanned per granule (a cluster for a
// QED target, 4 KiB for a raw target) so that all-zero granules count as zero ranges.
//
// Speed comes from large requests (2 MiB chunks) with several in flight on the event loop.
// Reads run out of order; writes to a QED target are issued in chunk order (as qemu-img does by
// default), which keeps the new image's clusters in guest order.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
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

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "qedfuse/block/image_create.h"
#include "qedfuse/block/io_buffer.h"
#include "qedfuse/block/io_vector.h"
#include "qedfuse/block/open.h"
#include "qedfuse/coro/co_mutex.h"
#include "qedfuse/coro/co_queue.h"
#include "qedfuse/coro/event_loop.h"
#include "src/tools/commands.h"
#include "src/tools/tool_util.h"

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
  bool skip_create = false;     // -n: write into the existing target as it is
  bool target_is_zero = false;  // --target-is-zero: the user says the -n target reads as zeros
  bool force_share = false;     // -U: open the source without locks
};

struct Copier {
  block::BlockBackend* src = nullptr;
  block::BlockBackend* dst = nullptr;
  uint64_t length = 0;
  uint64_t chunk = kChunkBytes;
  uint64_t granule = kRawGranule;
  bool in_order = false;
  // The target reads as zeros already: zero ranges need no write.
  bool target_zero = false;

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

// A stretch of the target to write: data from the chunk buffer, or zeros.
struct Piece {
  uint64_t offset = 0;  // in the image
  uint64_t length = 0;
  bool zero = false;
};

// What ReadChunk found in one chunk.
struct ChunkData {
  // Data and zero pieces covering the chunk in order, when it holds any data.
  std::vector<Piece> pieces;
  // When the whole chunk reads as zeros: where that zero run ends (past the chunk if the run goes
  // on); 0 otherwise.
  uint64_t zero_end = 0;
};

// Reads chunk [off, off+len) into |buf| (zero-filling ranges the source reports as zeros) and
// splits it into granule-aligned data and zero pieces.
coro::Task<ChunkData> ReadChunk(Copier* s, uint64_t off, uint64_t len, block::IoBuffer* buf) {
  ChunkData out;
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
  if (s->failed) co_return out;
  if (!any_data) {  // zero runs of several layers: the chunk is zeros all the same
    out.zero_end = off + len;
    co_return out;
  }
  for (uint64_t g = 0; g < len; g += s->granule) {
    uint64_t n = std::min(s->granule, len - g);
    bool zero = AllZero(buf->data() + g, n);
    if (!out.pieces.empty() && out.pieces.back().zero == zero) {
      out.pieces.back().length += n;
    } else {
      out.pieces.push_back(Piece{off + g, n, zero});
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
    if (s->failed) break;
    uint64_t skip_to = idx + 1;
    if (chunk.zero_end != 0) {
      chunk.pieces.push_back(Piece{off, len, true});
      // Chunks wholly inside a zero run that reaches past this one are done here in one step:
      // move the shared cursor past them (chunks other workers already claimed are zero too,
      // and those workers handle them).
      if (chunk.zero_end > off + len) {
        skip_to = chunk.zero_end / s->chunk;
        if (skip_to > s->next_chunk) {
          uint64_t from = s->next_chunk * s->chunk;
          uint64_t to = skip_to * s->chunk;
          chunk.pieces.push_back(Piece{from, to - from, true});
          s->done += to - from;
          s->next_chunk = skip_to;
        }
      }
    }
    if (s->in_order) {
      // Writes are issued in chunk order: wait until every earlier chunk has been written or
      // was found to be zero.
      coro::CoMutex::Guard g = co_await s->order_lock.Lock();
      while (s->next_write < idx && !s->failed) co_await s->order_queue.Wait(g);
    }
    for (const Piece& p : chunk.pieces) {
      if (s->failed) break;
      Result<void> w = Ok();
      if (!p.zero) {
        w = co_await s->dst->Write(p.offset,
                                   block::IoVector(buf.data() + (p.offset - off), p.length));
      } else if (!s->target_zero) {
        w = co_await s->dst->WriteZeroes(p.offset, p.length, block::ZeroFlags::kMayUnmap);
      }
      if (!w) {
        s->Fail(absl::StrFormat("error while writing at byte %llu: %s",
                                static_cast<unsigned long long>(p.offset), w.error().message()));
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

absl::Status ErrnoError(int err, const std::string& what) {
  return absl::Status(absl::ErrnoToStatusCode(err),
                      absl::StrFormat("%s: %s", what, std::strerror(err)));
}

// Prepares a raw target for a convert without -n, as qemu-img re-creates it: a block device is
// used as it is, if it is big enough; a file is created, or emptied and extended to |length|.
// Returns true when the target now reads as zeros (a file), false when it holds old data (a
// device). Never trusts O_TRUNC: a file that ignores it would keep its old bytes.
absl::StatusOr<bool> PrepareRawTarget(const std::string& path, uint64_t length) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(errno, "Could not create '" + path + "'");
  absl::Cleanup close_fd = [fd] { ::close(fd); };
  // Like qemu-img, refuse to destroy a file another process uses (the locks go with the fd).
  absl::Status locked = block::LockForCreate(fd, path);
  if (!locked.ok()) return locked;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoError(errno, "Could not stat '" + path + "'");
  if (S_ISBLK(st.st_mode)) {
    uint64_t size = 0;
    if (::ioctl(fd, BLKGETSIZE64, &size) != 0) {
      return ErrnoError(errno, "Could not get the size of '" + path + "'");
    }
    if (size < length) {
      return absl::OutOfRangeError(absl::StrFormat(
          "Cannot grow device files: the device holds %u bytes, the image needs %u", size, length));
    }
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("'%s' is neither a regular file nor a block device", path));
  }
  if (::ftruncate(fd, 0) != 0) {
    int err = errno;
    absl::Status status = ErrnoError(err, "Could not resize file");
    if (err != EPERM) return status;
    // A mounted qedfuse disk (like a block device) refuses to shrink.
    return absl::Status(status.code(),
                        absl::StrCat(status.message(),
                                     "\nThe file refuses to be emptied (a mounted qedfuse disk "
                                     "never shrinks).\nUse -n to convert into it as it is; zero "
                                     "ranges are then written as zeros."));
  }
  if (::fstat(fd, &st) != 0) return ErrnoError(errno, "Could not stat '" + path + "'");
  if (st.st_size != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "'%s' still holds %u bytes after being truncated to 0; use -n to convert into it as it is",
        path, static_cast<uint64_t>(st.st_size)));
  }
  if (::ftruncate(fd, static_cast<off_t>(length)) != 0) {
    return ErrnoError(errno, "Could not resize file");
  }
  return true;
}

bool SameFile(const std::string& a, const std::string& b) {
  struct stat sa {};
  struct stat sb {};
  if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
  if (S_ISBLK(sa.st_mode) && S_ISBLK(sb.st_mode)) return sa.st_rdev == sb.st_rdev;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

// Opens (and, without -n, first creates) the target. On failure prints the error and returns
// null. |*target_zero| tells whether it reads as zeros.
coro::Task<std::unique_ptr<block::BlockBackend>> OpenTarget(const ConvertArgs& args,
                                                            qed::CreateOptions create,
                                                            uint64_t length, bool* target_zero) {
  *target_zero = args.target_is_zero;
  if (!args.skip_create) {
    absl::Status made;
    if (args.dst_format == "qed") {
      create.path = args.dst;
      create.size = length;
      made = qed::CreateImage(create);
      *target_zero = true;  // a new QED image without a backing file
    } else {
      absl::StatusOr<bool> prepared = PrepareRawTarget(args.dst, length);
      made = prepared.status();
      if (prepared.ok()) *target_zero = *prepared;
    }
    if (!made.ok()) {
      Error(absl::StrFormat("%s: error while converting %s: %s", args.dst, args.dst_format,
                            made.message()));
      HintOnLockConflict(made, OpenPurpose::kWrite);
      co_return nullptr;
    }
  }
  block::OpenOptions opts;
  opts.path = args.dst;
  opts.format = args.dst_format;  // never probed: a raw target may hold any bytes
  opts.read_only = false;
  std::unique_ptr<block::BlockBackend> dst = co_await OpenImageOrReport(opts, OpenPurpose::kWrite);
  if (!dst) co_return nullptr;
  if (dst->length() < length) {
    Error(absl::StrFormat(
        "output file is smaller than input file: '%s' holds %u bytes, '%s' needs %u", args.dst,
        dst->length(), args.src, length));
    absl::Status closed = co_await dst->Close();
    if (!closed.ok()) Error(closed);
    co_return nullptr;
  }
  co_return dst;
}

coro::Task<int> RunConvert(ConvertArgs args, qed::CreateOptions create) {
  const ReadImageArgs source{args.backing, args.src, args.src_format, args.force_share};
  std::unique_ptr<block::BlockBackend> src =
      co_await OpenImageOrReport(ReadOnlyOpenOptions(source), OpenPurpose::kRead);
  if (!src) co_return kExitFailure;
  uint64_t length = src->length();

  bool target_zero = false;
  std::unique_ptr<block::BlockBackend> dst =
      co_await OpenTarget(args, create, length, &target_zero);
  if (dst == nullptr) {
    absl::Status c = co_await src->Close();
    (void)c;
    co_return kExitFailure;
  }

  Progress progress(args.progress);
  Copier s;
  s.src = src.get();
  s.dst = dst.get();
  s.length = length;
  s.target_zero = target_zero;
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
  bool progress_flag = false;
  auto option_list = [&args](const char* argument) {
    args.option_lists.emplace_back(argument);
    return true;
  };
  const CommandOption options[] = {BackingOption(&args.backing),
                                   FlagOption("quiet", 'q', &args.quiet),
                                   FlagOption("progress", 'p', &progress_flag),
                                   FlagOption("force-share", 'U', &args.force_share),
                                   FlagOption("target-is-zero", 0, &args.target_is_zero),
                                   TextOption(nullptr, 'f', &args.src_format),
                                   TextOption(nullptr, 'O', &args.dst_format),
                                   {nullptr, 'o', true, option_list},
                                   FlagOption(nullptr, 'n', &args.skip_create)};
  if (auto rc = ParseCommandOptions("convert", argc, argv, options)) return *rc;
  if (!CheckOperandCount("convert", argc - optind, 2,
                         "Expecting a source and a destination file name",
                         "Too many arguments (convert takes one source)")) {
    return kExitFailure;
  }
  args.src = argv[optind];
  args.dst = argv[optind + 1];
  if (!CheckFormatName(args.src_format) || !CheckFormatName(args.dst_format)) return kExitFailure;
  if (args.target_is_zero && !args.skip_create) {
    Error("--target-is-zero requires use of -n flag");
    return kExitFailure;
  }
  if (args.skip_create && !args.option_lists.empty()) {
    Error("-o has no effect when skipping image creation");
    return kExitFailure;
  }
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
