// libFuzzer target: the input is a whole image file. It goes through the real open path
// (block::OpenImage: stat, format probe, QED open with repair of a dirty image, backing chain)
// read-only and read-write, then reads, block status, check (and repair), writes, zero writes,
// a grow and flushes, then a clean close and a second read-write open. Errors are expected;
// crashes, hangs (EventLoop::RunSync aborts on a lost wake-up), leaks and sanitizer reports are
// not. Two properties are checked explicitly: a read-only session never changes a byte of the
// file, and a read-write open of a clean image that our own session closed never needs a repair
// that fails.
//
// The image file is written to a private temporary directory, so OpenImage stats, probes and
// opens a real file; its protocol node is then swapped (OpenOptions::wrap_image_file) for an
// in-memory test::MemFile over the same bytes, which keeps every exec synchronous, fast and
// deterministic. Backing files resolve next to the image: the directory holds "base.raw" and
// "base.qed" for seeds that name them. Inputs whose backing name contains a '/' are rejected
// (libFuzzer return -1), so a mutated name can never reach a file outside that directory.
//
// Work per input is bounded: a fixed number of requests of at most kMaxIo bytes each, whatever
// the image's virtual size; libFuzzer's -max_len bounds the file (and so the tables) in size.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "block/qed/qed_driver.h"
#include "block/qed/qed_format.h"
#include "fuzz/fuzz_options.h"
#include "qedfuse/base/endian.h"
#include "qedfuse/block/block_backend.h"
#include "qedfuse/block/io_vector.h"
#include "qedfuse/block/open.h"
#include "qedfuse/coro/event_loop.h"
#include "support/mem_file.h"

namespace qedfuse::fuzz {
namespace {

using Bytes = std::vector<std::byte>;

constexpr uint64_t kMaxIo = 64 * 1024;  // longest single request
constexpr int kReads = 12;              // reads per session
constexpr int kWrites = 6;              // write-type operations in the read-write session

std::string g_dir;    // private directory holding the image and the backing files
std::string g_image;  // g_dir + "/img.qed"
int g_report_fd = 2;  // a copy of stderr taken before libFuzzer's -close_fd_mask=2 closes it

[[noreturn]] void Fail(const char* what) {
  dprintf(g_report_fd, "qed_open_fuzz: property violated: %s\n", what);
  std::abort();
}

// True if |state| still holds exactly the |size| bytes at |data|.
bool Unchanged(const test::MemFileState& state, const uint8_t* data, std::size_t size) {
  return state.current.size() == size &&
         (size == 0 || std::memcmp(state.current.data(), data, size) == 0);
}

bool WriteFile(const std::string& path, const void* data, std::size_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  const char* p = static_cast<const char*>(data);
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, p + done, size - done);
    if (n <= 0) {
      ::close(fd);
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return ::close(fd) == 0;
}

// Backing files the seeds refer to by name: a raw file with a byte pattern and a small QED image
// (cluster 4 KiB, table_size 1, 1 MiB, its first cluster allocated and filled with 0x5a).
void MakeBackingFiles() {
  std::vector<uint8_t> raw(256 * 1024);
  for (std::size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<uint8_t>(i * 7 + (i >> 12));
  if (!WriteFile(g_dir + "/base.raw", raw.data(), raw.size())) Fail("cannot write base.raw");

  std::vector<std::byte> q(4 * 4096, std::byte{0});
  qed::Header h;
  h.cluster_size = 4096;
  h.table_size = 1;
  h.header_size = 1;
  h.l1_table_offset = 4096;
  h.image_size = 1 << 20;
  qed::EncodeHeader(h, std::span<std::byte, qed::kHeaderBytes>(q.data(), qed::kHeaderBytes));
  StoreLE64(q.data() + 4096, 2 * 4096);      // L1[0] -> L2 at cluster 2
  StoreLE64(q.data() + 2 * 4096, 3 * 4096);  // L2[0] -> data at cluster 3
  std::fill(q.begin() + 3 * 4096, q.end(), std::byte{0x5a});
  if (!WriteFile(g_dir + "/base.qed", q.data(), q.size())) Fail("cannot write base.qed");
}

// A little program derived from the input's last bytes (so the fuzzer can steer it without
// touching the header or the tables near the start). A short or all-zero tail still gives a
// varied program: every byte is mixed with its index.
class Program {
 public:
  Program(const uint8_t* data, std::size_t size) {
    std::size_t n = std::min<std::size_t>(size, sizeof tail_);
    std::memcpy(tail_, data + size - n, n);
  }
  uint64_t Next() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) {
      v = (v << 8) | static_cast<uint8_t>(tail_[pos_ % sizeof tail_] ^ (0x9d * (pos_ + 1)));
      ++pos_;
    }
    return v;
  }

 private:
  uint8_t tail_[48] = {};
  std::size_t pos_ = 0;
};

// An offset within [0, length) (512-aligned half of the time) and a length that keeps the
// request inside kMaxIo.
struct Range {
  uint64_t off = 0;
  uint64_t len = 0;
};
Range PickRange(Program& prog, uint64_t length) {
  Range r;
  if (length == 0) return r;
  uint64_t a = prog.Next();
  uint64_t b = prog.Next();
  r.off = a % length;
  if (a & 1) r.off &= ~uint64_t{511};
  r.len = 1 + b % kMaxIo;
  if (b & 1) r.len = (r.len + 511) & ~uint64_t{511};
  r.len = std::min(r.len, length - r.off);
  return r;
}

qed::QedDriver* AsQed(block::BlockBackend& bb) {
  return dynamic_cast<qed::QedDriver*>(&bb.driver());
}

// Opens g_image through OpenImage with the protocol node replaced by a MemFile over |state|.
// |io_yields| loop turns of latency per MemFile I/O let concurrent requests interleave.
absl::StatusOr<std::unique_ptr<block::BlockBackend>> Open(
    coro::EventLoop& loop, const std::shared_ptr<test::MemFileState>& state, bool read_only,
    bool for_check, block::OpenReport* report, int io_yields = 0) {
  // OpenImage probes the real file: give it the current bytes.
  if (!WriteFile(g_image, state->current.data(), state->current.size())) Fail("cannot write");
  block::OpenOptions o;
  o.path = g_image;
  o.read_only = read_only;
  o.for_check = for_check;
  o.lock = false;
  o.aio = block::AioMode::kAuto;
  o.need_check_delay = std::chrono::milliseconds(0);
  o.wrap_image_file = [state, read_only, io_yields](std::unique_ptr<block::BlockDriver> real) {
    real.reset();
    test::MemFile::Options mo;
    mo.read_only = read_only;
    mo.io_yields = io_yields;
    return std::unique_ptr<block::BlockDriver>(std::make_unique<test::MemFile>(state, mo));
  };
  return loop.RunSync(block::OpenImage(o, report));
}

void DoReads(coro::EventLoop& loop, block::BlockBackend& bb, Program& prog) {
  const uint64_t length = bb.length();
  Bytes buf(kMaxIo);
  for (int i = 0; i < kReads; ++i) {
    Range r = PickRange(prog, length);
    if (i == 0) r = {0, std::min<uint64_t>(length, kMaxIo)};  // the start, always
    if (r.len == 0) continue;
    Result<std::size_t> got = loop.RunSync(bb.Read(r.off, block::IoVector(buf.data(), r.len)));
    if (got && *got > r.len) Fail("read returned more bytes than asked");
    Result<block::BlockStatus> st = loop.RunSync(bb.GetStatus(r.off, r.len));
    if (st && (st->length == 0 || st->length > r.len)) Fail("block status length out of range");
  }
}

// Runs the consistency check; returns true if it completed and found no corruption and no I/O
// error (leaks are fine).
bool CheckImage(coro::EventLoop& loop, block::BlockBackend& bb, bool repair) {
  qed::QedDriver* q = AsQed(bb);
  if (q == nullptr) return false;
  Result<qed::CheckReport> rep = loop.RunSync(q->Check(repair));
  return rep && rep->corruptions == 0 && rep->check_errors == 0;
}

// A range written (or zeroed) by a completed request, and the byte it must read back as.
struct Expect {
  Range r;
  uint8_t fill = 0;
};

// Up to four writes and zero writes in flight at once, on ranges that do not overlap one
// another. Returns the ranges whose request succeeded.
std::vector<Expect> ConcurrentWrites(coro::EventLoop& loop, block::BlockBackend& bb,
                                     Program& prog) {
  const int n = 2 + static_cast<int>(prog.Next() % 3);
  std::vector<Expect> planned;
  std::vector<Bytes> bufs;
  std::vector<coro::Task<Result<void>>> tasks;
  planned.reserve(n);
  bufs.reserve(n);
  tasks.reserve(n);
  for (int i = 0; i < n; ++i) {
    Range r = PickRange(prog, bb.length());
    r.len = std::min<uint64_t>(r.len, 3 * 4096);
    bool overlaps = r.len == 0;
    for (const Expect& e : planned) {
      overlaps = overlaps || (r.off < e.r.off + e.r.len && e.r.off < r.off + r.len);
    }
    if (overlaps) continue;
    const bool zero = prog.Next() % 3 == 0;
    const uint8_t fill = zero ? 0 : static_cast<uint8_t>(0xc0 + i);
    planned.push_back({r, fill});
    bufs.emplace_back(zero ? 0 : r.len, std::byte{fill});
    if (zero) {
      tasks.push_back(bb.WriteZeroes(r.off, r.len, block::ZeroFlags::kMayUnmap));
    } else {
      tasks.push_back(bb.Write(r.off, block::IoVector(bufs.back().data(), r.len)));
    }
  }
  std::vector<Expect> done;
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    Result<void> r = loop.RunSync(std::move(tasks[i]));
    if (r) done.push_back(planned[i]);
  }
  return done;
}

// Every completed write reads back.
void VerifyExpected(coro::EventLoop& loop, block::BlockBackend& bb,
                    const std::vector<Expect>& expect, const char* what) {
  Bytes buf;
  for (const Expect& e : expect) {
    buf.assign(e.r.len, std::byte{0xee});
    Result<std::size_t> got = loop.RunSync(bb.Read(e.r.off, block::IoVector(buf.data(), e.r.len)));
    if (!got || *got != e.r.len) Fail(what);
    for (std::byte b : buf) {
      if (b != std::byte{e.fill}) Fail(what);
    }
  }
}

void DoWrites(coro::EventLoop& loop, block::BlockBackend& bb, Program& prog) {
  Bytes buf(kMaxIo);
  for (int i = 0; i < kWrites; ++i) {
    const uint64_t op = prog.Next() % 8;
    Range r = PickRange(prog, bb.length());
    if (r.len == 0) continue;
    switch (op) {
      case 0:
      case 1:
      case 2: {
        std::fill_n(buf.begin(), r.len, std::byte(static_cast<uint8_t>(0xa0 + i)));
        Result<void> w = loop.RunSync(bb.Write(r.off, block::IoVector(buf.data(), r.len)));
        (void)w;
        break;
      }
      case 3:
      case 4: {
        const auto flags = op == 4 ? block::ZeroFlags::kMayUnmap : block::ZeroFlags::kNone;
        Result<void> z = loop.RunSync(bb.WriteZeroes(r.off, r.len, flags));
        (void)z;
        break;
      }
      case 5: {
        Result<void> f = loop.RunSync(bb.Flush());
        (void)f;
        break;
      }
      case 6: {
        // A grow by up to 1 MiB (header only; the new range reads as zeros or backing data).
        uint64_t grow = (prog.Next() % 2048) * 512;
        Result<void> t = loop.RunSync(bb.Truncate(bb.length() + grow));
        (void)t;
        break;
      }
      default: {
        Result<std::size_t> rd = loop.RunSync(bb.Read(r.off, block::IoVector(buf.data(), r.len)));
        (void)rd;
        break;
      }
    }
  }
}

void CloseBackend(coro::EventLoop& loop, std::unique_ptr<block::BlockBackend>& bb) {
  absl::Status st = loop.RunSync(bb->Close());
  (void)st;
  bb.reset();
}

}  // namespace
}  // namespace qedfuse::fuzz

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  using namespace qedfuse::fuzz;
  // The driver reports corrupt entries on stderr; runs use -close_fd_mask=2 to keep that quiet.
  g_report_fd = ::fcntl(2, F_DUPFD_CLOEXEC, 3);
  if (g_report_fd < 0) g_report_fd = 2;
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/qed_open_fuzz.XXXXXX";
  std::vector<char> t(tmpl.begin(), tmpl.end());
  t.push_back('\0');
  if (::mkdtemp(t.data()) == nullptr) Fail("mkdtemp failed");
  g_dir = t.data();
  g_image = g_dir + "/img.qed";
  MakeBackingFiles();
  std::atexit([] {
    ::unlink(g_image.c_str());
    ::unlink((g_dir + "/base.raw").c_str());
    ::unlink((g_dir + "/base.qed").c_str());
    ::rmdir(g_dir.c_str());
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  using namespace qedfuse;
  using namespace qedfuse::fuzz;

  // Keep mutated backing names inside the private directory.
  if (size >= qed::kHeaderBytes) {
    const auto* bytes = reinterpret_cast<const std::byte*>(data);
    qed::Header h = qed::DecodeHeader(std::span<const std::byte, qed::kHeaderBytes>(bytes, 64));
    absl::StatusOr<std::string> name = qed::BackingFileName(h, std::span(bytes, size));
    if (name.ok() && name->find('/') != std::string::npos) return -1;
  }

  const auto* first = reinterpret_cast<const std::byte*>(data);
  std::shared_ptr<test::MemFileState> state =
      test::MemFileState::FromBytes(Bytes(first, first + size));
  Program prog(data, size);
  coro::EventLoop loop;

  // 1. Read-only: reads, status, check without repair. Not a byte may change.
  bool consistent = false;  // the check found no corruption: data must then read back
  {
    auto bb = Open(loop, state, /*read_only=*/true, /*for_check=*/false, nullptr);
    if (!bb.ok()) {
      if (!Unchanged(*state, data, size)) Fail("a failed read-only open changed the file");
      return 0;  // an image we refuse read-only is refused read-write too (same validation)
    }
    DoReads(loop, **bb, prog);
    consistent = CheckImage(loop, **bb, /*repair=*/false);
    CloseBackend(loop, *bb);
    if (!Unchanged(*state, data, size)) Fail("a read-only session changed the file");
  }

  // 2. Opened for checking (qedimg check's open), then read-write with repair of a dirty image:
  // reads, writes, concurrent writes, check and repair, close.
  {
    auto bb = Open(loop, state, /*read_only=*/true, /*for_check=*/true, nullptr);
    if (bb.ok()) {
      CheckImage(loop, **bb, /*repair=*/false);
      CloseBackend(loop, *bb);
    }
  }
  const int io_yields = static_cast<int>(prog.Next() % 3);
  bool closed_clean = false;
  std::vector<Expect> expect;
  {
    block::OpenReport report;
    auto bb = Open(loop, state, /*read_only=*/false, /*for_check=*/false, &report, io_yields);
    if (!bb.ok()) return 0;
    DoReads(loop, **bb, prog);
    DoWrites(loop, **bb, prog);
    expect = ConcurrentWrites(loop, **bb, prog);
    if (consistent) {
      VerifyExpected(loop, **bb, expect, "a completed write does not read back");
      if (!CheckImage(loop, **bb, /*repair=*/false)) {
        Fail("writes to a consistent image left it corrupt");
      }
    }
    CheckImage(loop, **bb, /*repair=*/true);
    DoReads(loop, **bb, prog);
    qed::QedDriver* q = AsQed(**bb);
    const bool suspect = q != nullptr && q->suspect();
    absl::Status st = loop.RunSync((*bb)->Close());
    bb->reset();
    closed_clean = st.ok() && !suspect;
  }

  // 3. Reopen read-write. After a clean close the image must open without repair, and on a
  // consistent image the writes must have persisted.
  {
    block::OpenReport report;
    auto bb = Open(loop, state, /*read_only=*/false, /*for_check=*/false, &report);
    if (!bb.ok()) {
      if (consistent && closed_clean) Fail("a consistent image closed cleanly does not reopen");
      return 0;
    }
    if (closed_clean && report.repaired) Fail("an image closed cleanly needed a repair");
    if (consistent && closed_clean) {
      VerifyExpected(loop, **bb, expect, "a write did not persist across close and reopen");
    }
    DoReads(loop, **bb, prog);
    CloseBackend(loop, *bb);
  }
  return 0;
}
