// Helpers shared by the QED oracle, differential, crash, hostile and backing tests: temp dirs,
// shell commands (the QEMU tools are the oracle), file bytes and hashes, seeds, an in-memory raw
// model, and small synchronous wrappers around BlockBackend for straight-line test code.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "block/qed/qed_driver.h"
#include "gtest/gtest.h"
#include "qedfuse/base/result.h"
#include "qedfuse/block/block_backend.h"
#include "qedfuse/block/io_vector.h"
#include "qedfuse/block/open.h"
#include "qedfuse/coro/event_loop.h"

namespace qedfuse::qedtest {

using Bytes = std::vector<uint8_t>;

// True in the sanitizer build (meson adds the definition); iteration counts are scaled down.
inline constexpr bool kSanitized =
#ifdef QEDFUSE_TEST_SANITIZED
    true;
#else
    false;
#endif

// |n| in the normal build, a fraction of it (at least |min|) under sanitizers.
inline int Scaled(int n, int div = 6, int min = 1) {
  if (!kSanitized) return n;
  return std::max(min, n / div);
}

struct CmdResult {
  int exit_code = -1;
  std::string out;  // stdout and stderr together
};

// Runs |cmd| through /bin/sh and collects its output.
inline CmdResult Shell(const std::string& cmd) {
  CmdResult r;
  std::string full = cmd + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = ::pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

inline std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

inline bool HaveQemu() {
  static const bool have = Shell("qemu-img --version && qemu-io --version").exit_code == 0;
  return have;
}

#define QEDTEST_REQUIRE_QEMU()                                                             \
  do {                                                                                     \
    if (!::qedfuse::qedtest::HaveQemu()) GTEST_SKIP() << "qemu-img/qemu-io not installed"; \
  } while (0)

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/qedtest-XXXXXX";
    std::vector<char> b(tmpl.begin(), tmpl.end());
    b.push_back('\0');
    if (::mkdtemp(b.data()) == nullptr) std::abort();
    path_ = b.data();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline Bytes ReadFileBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

inline void WriteFileBytes(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// Overwrites bytes at |off| in an existing file (no truncation).
inline void PatchFile(const std::string& path, uint64_t off, const void* p, std::size_t n) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::pwrite(fd, p, n, static_cast<off_t>(off)), static_cast<ssize_t>(n));
  ::close(fd);
}
inline void PatchU64(const std::string& path, uint64_t off, uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  PatchFile(path, off, b, 8);
}
inline void PatchU32(const std::string& path, uint64_t off, uint32_t v) {
  uint8_t b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  PatchFile(path, off, b, 4);
}
inline uint64_t GetU64(const Bytes& b, uint64_t off) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b.at(off + i);
  return v;
}
inline uint32_t GetU32(const Bytes& b, uint64_t off) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | b.at(off + i);
  return v;
}

inline uint64_t FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_size);
}

inline uint64_t Hash(const uint8_t* p, std::size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}
// Hash of a file's length and contents. Sparse-aware: only data extents are read (with their
// offsets mixed in), so huge sparse files are cheap.
inline uint64_t HashFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return 0;
  const off_t size = ::lseek(fd, 0, SEEK_END);
  uint64_t h = static_cast<uint64_t>(size) * 0x9e3779b97f4a7c15ull;
  off_t pos = 0;
  Bytes buf(1 << 20);
  while (pos < size) {
    off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) break;
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) hole = size;
    for (off_t o = data; o < hole;) {
      ssize_t n = ::pread(fd, buf.data(), std::min<off_t>(hole - o, buf.size()), o);
      if (n <= 0) break;
      // Zero runs hash the same whether stored or sparse: skip all-zero chunks.
      bool zero = std::all_of(buf.begin(), buf.begin() + n, [](uint8_t c) { return c == 0; });
      if (!zero)
        h = (h * 31) ^ Hash(buf.data(), static_cast<std::size_t>(n)) ^ static_cast<uint64_t>(o);
      o += n;
    }
    pos = hole;
  }
  ::close(fd);
  return h;
}

// The seed for a randomised test: $QEDFUSE_SEED if set, else |fallback| mixed with the test name.
// Printed so that a failure can be replayed.
inline uint64_t TestSeed(uint64_t fallback) {
  uint64_t seed = fallback;
  if (const char* s = std::getenv("QEDFUSE_SEED"); s && *s) {
    seed = std::strtoull(s, nullptr, 0);
  } else if (const auto* info = ::testing::UnitTest::GetInstance()->current_test_info()) {
    std::string n = std::string(info->test_suite_name()) + "." + info->name();
    seed ^= Hash(reinterpret_cast<const uint8_t*>(n.data()), n.size());
  }
  std::printf("[ seed     ] QEDFUSE_SEED=%llu\n", static_cast<unsigned long long>(seed));
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return seed;
}

// Index of the first differing byte, or -1.
inline int64_t FirstDiff(const uint8_t* a, const uint8_t* b, std::size_t n) {
  if (std::memcmp(a, b, n) == 0) return -1;
  for (std::size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return static_cast<int64_t>(i);
  }
  return -1;
}

// ---- synchronous helpers around BlockBackend (drive the loop until the task completes) ----

inline absl::StatusOr<std::unique_ptr<block::BlockBackend>> OpenSync(
    coro::EventLoop& loop, const std::string& path, bool read_only,
    block::OpenReport* report = nullptr, std::string format = "") {
  block::OpenOptions o;
  o.path = path;
  o.read_only = read_only;
  o.format = std::move(format);
  o.need_check_delay = std::chrono::milliseconds(1);
  return loop.RunSync(block::OpenImage(o, report));
}

inline absl::Status CloseSync(coro::EventLoop& loop, std::unique_ptr<block::BlockBackend>& bb) {
  if (!bb) return absl::OkStatus();
  absl::Status st = loop.RunSync(bb->Close());
  bb.reset();
  return st;
}

inline Result<Bytes> ReadSync(coro::EventLoop& loop, block::BlockBackend& bb, uint64_t off,
                              std::size_t len) {
  Bytes b(len);
  Result<std::size_t> r = loop.RunSync(bb.Read(off, block::IoVector(b.data(), b.size())));
  if (!r) return Unexpected(r.error());
  b.resize(*r);
  return b;
}

inline Result<void> WriteSync(coro::EventLoop& loop, block::BlockBackend& bb, uint64_t off,
                              Bytes data) {
  return loop.RunSync(bb.Write(off, block::IoVector(data.data(), data.size())));
}

inline Result<void> ZeroSync(coro::EventLoop& loop, block::BlockBackend& bb, uint64_t off,
                             uint64_t len, bool may_unmap = false) {
  return loop.RunSync(
      bb.WriteZeroes(off, len, may_unmap ? block::ZeroFlags::kMayUnmap : block::ZeroFlags::kNone));
}

inline Result<void> FlushSync(coro::EventLoop& loop, block::BlockBackend& bb) {
  return loop.RunSync(bb.Flush());
}

// Reads the whole device.
inline Result<Bytes> ReadAll(coro::EventLoop& loop, block::BlockBackend& bb) {
  Bytes out;
  const uint64_t len = bb.length();
  const uint64_t step = 4u << 20;
  for (uint64_t off = 0; off < len; off += step) {
    auto r = ReadSync(loop, bb, off, static_cast<std::size_t>(std::min(step, len - off)));
    if (!r) return Unexpected(r.error());
    out.insert(out.end(), r->begin(), r->end());
  }
  return out;
}

inline Bytes Pattern(std::size_t n, uint8_t seed) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 31 + (i >> 9));
  return b;
}

// ---- QEMU oracle ----

inline CmdResult QemuImgCheck(const std::string& img) {
  return Shell("qemu-img check -f qed " + Quote(img));
}

// `qemu-img compare` of a QED image against a raw file; exit 0 = identical.
inline CmdResult QemuCompare(const std::string& img, const std::string& raw) {
  return Shell("qemu-img compare -f qed -F raw " + Quote(img) + " " + Quote(raw));
}

inline Result<Bytes> QemuConvertToRaw(const std::string& img, const std::string& out_raw,
                                      const std::string& fmt = "qed") {
  CmdResult r =
      Shell("qemu-img convert -f " + fmt + " -O raw " + Quote(img) + " " + Quote(out_raw));
  if (r.exit_code != 0) {
    ADD_FAILURE() << "qemu-img convert failed: " << r.out;
    return Unexpected(Errc::kInjected);
  }
  return ReadFileBytes(out_raw);
}

}  // namespace qedfuse::qedtest
