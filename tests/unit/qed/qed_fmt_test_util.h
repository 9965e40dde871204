// Helpers for the QED format, create and check tests: a scratch directory, a shell runner for
// the QEMU tools used as oracle, byte patching with pwrite, a synchronous POSIX-file
// BlockDriver, and a loader that reads an image's header and L1 table to run CheckImage on it.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "block/qed/qed_check.h"
#include "block/qed/qed_format.h"
#include "gtest/gtest.h"
#include "qedfuse/base/result.h"
#include "qedfuse/block/block_driver.h"
#include "qedfuse/coro/event_loop.h"

namespace qedfuse::qed::fmt_test {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/qedfmt-test-XXXXXX";
    const char* p = ::mkdtemp(tmpl);
    if (p == nullptr) std::abort();
    path_ = p;
  }
  ~TempDir() {
    const std::string cmd = "rm -rf '" + path_ + "'";
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "cannot remove %s\n", path_.c_str());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

inline CommandResult Shell(const std::string& cmd) {
  CommandResult r;
  FILE* f = ::popen((cmd + " 2>&1").c_str(), "r");
  if (f == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) r.output.append(buf.data(), n);
  const int status = ::pclose(f);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// Runs |cmd| and fails the test unless it exits with 0.
inline std::string MustRun(const std::string& cmd) {
  CommandResult r = Shell(cmd);
  EXPECT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
  return r.output;
}

// An integer value of a top-level "key": N pair in JSON text; 0 when the key is absent (qemu-img
// leaves out zero counts).
inline uint64_t JsonCount(const std::string& json, const std::string& key) {
  const std::string quoted = "\"" + key + "\"";
  std::size_t pos = json.find(quoted);
  if (pos == std::string::npos) return 0;
  pos = json.find(':', pos + quoted.size());
  if (pos == std::string::npos) return 0;
  pos = json.find_first_not_of(" \t\n", pos + 1);
  if (pos == std::string::npos) return 0;
  return std::strtoull(json.c_str() + pos, nullptr, 10);
}

inline bool JsonHas(const std::string& json, const std::string& key) {
  return json.find("\"" + key + "\"") != std::string::npos;
}

inline uint64_t FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_size);
}

inline std::vector<std::byte> ReadBytes(const std::string& path, uint64_t off, size_t n) {
  std::vector<std::byte> out(n);
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return {};
  const ssize_t r = ::pread(fd, out.data(), n, static_cast<off_t>(off));
  ::close(fd);
  out.resize(r < 0 ? 0 : static_cast<size_t>(r));
  return out;
}

inline void WriteBytes(const std::string& path, uint64_t off, const void* data, size_t n) {
  const int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::pwrite(fd, data, n, static_cast<off_t>(off)), static_cast<ssize_t>(n));
  ::close(fd);
}

inline void PatchLe64(const std::string& path, uint64_t off, uint64_t v) {
  std::array<unsigned char, 8> b;
  for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
  WriteBytes(path, off, b.data(), b.size());
}

inline uint64_t ReadLe64(const std::string& path, uint64_t off) {
  std::vector<std::byte> b = ReadBytes(path, off, 8);
  uint64_t v = 0;
  for (int i = static_cast<int>(b.size()) - 1; i >= 0; --i) {
    v = (v << 8) | std::to_integer<uint64_t>(b[i]);
  }
  return v;
}

// A BlockDriver over a host file with plain synchronous pread/pwrite: every call completes
// before returning, which the eager Task turns into an immediate result. Reads in
// |fail_read_offsets| fail with EIO, to exercise check_errors.
class PosixFileDriver final : public block::BlockDriver {
 public:
  explicit PosixFileDriver(const std::string& path, bool read_only = false,
                           block::BlockLimits limits = {})
      : limits_(limits), read_only_(read_only) {
    fd_ = ::open(path.c_str(), read_only ? O_RDONLY : O_RDWR);
  }
  ~PosixFileDriver() override {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  std::set<uint64_t> fail_read_offsets;
  std::set<uint64_t> fail_write_offsets;
  uint64_t reads = 0;
  uint64_t writes = 0;
  uint64_t max_request = 0;
  uint64_t flushes = 0;

  std::string_view format_name() const override { return "test-file"; }
  block::BlockLimits limits() const override { return limits_; }
  uint64_t length() const override {
    struct stat st;
    return ::fstat(fd_, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  }
  bool read_only() const override { return read_only_; }

  coro::Task<Result<void>> Read(uint64_t offset, block::IoVector iov) override {
    ++reads;
    max_request = std::max<uint64_t>(max_request, iov.size());
    if (fail_read_offsets.count(offset)) co_return Unexpected(ErrnoCode(EIO));
    const ssize_t r = ::preadv(fd_, iov.iov(), iov.iovcnt(), static_cast<off_t>(offset));
    if (r < 0) co_return Unexpected(ErrnoCode(errno));
    if (static_cast<size_t>(r) < iov.size()) iov.Zero(r, iov.size() - r);
    co_return Ok();
  }
  coro::Task<Result<void>> Write(uint64_t offset, block::IoVector iov) override {
    ++writes;
    max_request = std::max<uint64_t>(max_request, iov.size());
    if (read_only_) co_return Unexpected(Errc::kReadOnly);
    if (fail_write_offsets.count(offset)) co_return Unexpected(ErrnoCode(EIO));
    const ssize_t r = ::pwritev(fd_, iov.iov(), iov.iovcnt(), static_cast<off_t>(offset));
    if (r < 0) co_return Unexpected(ErrnoCode(errno));
    if (static_cast<size_t>(r) != iov.size()) co_return Unexpected(ErrnoCode(EIO));
    co_return Ok();
  }
  coro::Task<Result<void>> Flush() override {
    ++flushes;
    if (::fdatasync(fd_) != 0) co_return Unexpected(ErrnoCode(errno));
    co_return Ok();
  }
  coro::Task<Result<void>> Truncate(uint64_t new_length) override {
    if (::ftruncate(fd_, static_cast<off_t>(new_length)) != 0) {
      co_return Unexpected(ErrnoCode(errno));
    }
    co_return Ok();
  }
  coro::Task<absl::Status> Close() override { co_return absl::OkStatus(); }

 private:
  int fd_ = -1;
  block::BlockLimits limits_;
  bool read_only_;
};

struct LoadedImage {
  Header header;
  Geometry geo;
  std::vector<uint64_t> l1;
  uint64_t file_size = 0;  // rounded down to a cluster
};

// Reads and validates the header, then reads the L1 table (host order).
inline absl::StatusOr<LoadedImage> LoadImage(const std::string& path) {
  std::vector<std::byte> hb = ReadBytes(path, 0, kHeaderBytes);
  if (hb.size() != kHeaderBytes) return absl::InvalidArgumentError("short header");
  LoadedImage img;
  img.header = DecodeHeader(std::span<const std::byte, kHeaderBytes>(hb.data(), kHeaderBytes));
  const uint64_t raw_size = FileSize(path);
  absl::StatusOr<Geometry> geo = ValidateHeader(img.header, raw_size);
  if (!geo.ok()) return geo.status();
  img.geo = *geo;
  img.file_size = raw_size & ~uint64_t{img.geo.cluster_size - 1};
  std::vector<std::byte> l1b = ReadBytes(path, img.header.l1_table_offset, img.geo.table_bytes);
  if (l1b.size() != img.geo.table_bytes) return absl::InvalidArgumentError("short L1 table");
  img.l1.resize(img.geo.table_nelems);
  for (size_t i = 0; i < img.l1.size(); ++i) {
    uint64_t v = 0;
    for (int k = 7; k >= 0; --k) v = (v << 8) | std::to_integer<uint64_t>(l1b[i * 8 + k]);
    img.l1[i] = v;
  }
  return img;
}

// Runs CheckImage on the image at |path| through a PosixFileDriver.
inline CheckReport CheckFile(const std::string& path, const CheckOptions& options,
                             block::BlockLimits limits = {}) {
  absl::StatusOr<LoadedImage> img = LoadImage(path);
  EXPECT_TRUE(img.ok()) << img.status();
  if (!img.ok()) return {};
  PosixFileDriver file(path, !options.repair, limits);
  EXPECT_TRUE(file.ok());
  coro::EventLoop loop;
  block::Child child(file);  // checked in place
  Result<CheckReport> r =
      loop.RunSync(CheckImage(child, img->header, img->geo, img->l1, img->file_size, options));
  EXPECT_TRUE(r.has_value()) << r.error().message();
  if (!r) return {};
  return std::move(*r);
}

}  // namespace qedfuse::qed::fmt_test
