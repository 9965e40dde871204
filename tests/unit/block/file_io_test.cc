// FileIo backends on real files: reads served on the loop thread (CachedReader: from the page
// cache, or from a tmpfs when there is no swap), reads it cannot serve there (not cached, partly
// cached, past the end), for both the io_uring and the thread-pool backend.
#include "block/file/file_io.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "qedfuse/block/io_buffer.h"
#include "support/temp_dir.h"
#include "support/test_loop.h"

namespace qedfuse::block {
namespace {

using test::TempDir;
using test::TestLoop;

constexpr std::size_t kFileSize = 1 << 20;

enum class Backend { kThreads, kIoUring };
enum class Place { kTempDir, kTmpfs };

// True if |dir| is on a file system known to take RWF_NOWAIT reads.
bool NowaitFileSystem(const std::string& dir) {
  struct statfs st;
  if (::statfs(dir.c_str(), &st) != 0) return false;
  switch (static_cast<unsigned long>(st.f_type)) {
    case EXT4_SUPER_MAGIC:  // also ext2 and ext3
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC:
      return true;
    default:
      return false;
  }
}

// Whether reads under |dir| are known to run inline: file systems with RWF_NOWAIT reads, and
// tmpfs when there is no swap (its pages cannot leave memory). nullopt for others, where the
// test checks data only.
std::optional<bool> KnownInlineReads(const std::string& dir) {
  if (NowaitFileSystem(dir)) return true;
  struct statfs st;
  if (::statfs(dir.c_str(), &st) == 0 && st.f_type == TMPFS_MAGIC) return !SwapConfigured();
  return std::nullopt;
}

using Param = std::tuple<Backend, Place>;

class FileIoTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    if (std::get<0>(GetParam()) == Backend::kIoUring && !UringUsable()) {
      GTEST_SKIP() << "io_uring is not usable here";
    }
    if (std::get<1>(GetParam()) == Place::kTmpfs) {
      struct statfs st;
      if (::statfs("/dev/shm", &st) != 0 || st.f_type != TMPFS_MAGIC) {
        GTEST_SKIP() << "/dev/shm is not a tmpfs here";
      }
      ::setenv("TMPDIR", "/dev/shm", 1);
      dir_.emplace();
      ::unsetenv("TMPDIR");
    } else {
      dir_.emplace();
    }
    path_ = dir_->File("f");
    pattern_.resize(kFileSize);
    for (std::size_t i = 0; i < kFileSize; ++i) {
      pattern_[i] = static_cast<uint8_t>((i * 131) ^ (i >> 12));
    }
    int fd = ::open(path_.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, pattern_.data(), kFileSize, 0), ssize_t(kFileSize));
    ASSERT_EQ(::fsync(fd), 0);
    ::close(fd);
  }

  void TearDown() override {
    io_.reset();
    if (fd_ >= 0) ::close(fd_);
  }

  FileIo& Open(bool direct = false) {
    fd_ = ::open(path_.c_str(), O_RDWR | (direct ? O_DIRECT : 0));
    EXPECT_GE(fd_, 0) << std::strerror(errno);
    if (std::get<0>(GetParam()) == Backend::kIoUring) {
      absl::StatusOr<std::unique_ptr<FileIo>> io = MakeUringFileIo(fd_);
      EXPECT_TRUE(io.ok()) << io.status();
      io_ = *std::move(io);
    } else {
      io_ = MakeThreadPoolFileIo(fd_);
    }
    return *io_;
  }

  // Drops the file's pages in [offset, offset + len) from the page cache.
  void Evict(uint64_t offset, uint64_t len) {
    ASSERT_EQ(::fdatasync(fd_), 0);
    ASSERT_EQ(::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(len),
                              POSIX_FADV_DONTNEED),
              0);
  }

  // Reads [offset, offset + len) through the backend and checks the bytes against the pattern;
  // returns the count read.
  std::size_t ReadAndCheck(uint64_t offset, std::size_t len) {
    IoBuffer buf(len);
    std::memset(buf.data(), 0xee, len);
    Result<std::size_t> n = loop_.Run(io_->ReadAt(offset, IoVector(buf)));
    EXPECT_TRUE(n.has_value());
    if (!n.has_value()) return 0;
    std::size_t expect = offset >= kFileSize ? 0 : std::min<std::size_t>(len, kFileSize - offset);
    EXPECT_EQ(*n, expect);
    EXPECT_EQ(0, std::memcmp(buf.data(), pattern_.data() + offset, std::min(*n, expect)))
        << "offset " << offset << " len " << len;
    return *n;
  }

  bool tmpfs() const { return std::get<1>(GetParam()) == Place::kTmpfs; }

  TestLoop loop_;
  std::optional<TempDir> dir_;
  std::string path_;
  std::vector<uint8_t> pattern_;
  int fd_ = -1;
  std::unique_ptr<FileIo> io_;
};

TEST_P(FileIoTest, CachedReadsRunInlineWhereTheFileSystemAllowsIt) {
  FileIo& io = Open();
  std::optional<bool> known = KnownInlineReads(dir_->path());
  if (known.has_value()) {
    EXPECT_EQ(io.reads_cache_inline(), *known);
  }
}

TEST_P(FileIoTest, ReadsCachedUncachedAndPartlyCachedData) {
  Open();
  ASSERT_EQ(ReadAndCheck(0, kFileSize), kFileSize);  // all cached after the writes
  ASSERT_EQ(ReadAndCheck(12345, 4096), 4096u);
  // The second half leaves the page cache: a read across the boundary gets its start from the
  // cache and the rest from the backend; a read of the second half only from the backend.
  Evict(kFileSize / 2, kFileSize / 2);
  EXPECT_EQ(ReadAndCheck(kFileSize / 2 - 8192, 65536), 65536u);
  Evict(kFileSize / 2, kFileSize / 2);
  EXPECT_EQ(ReadAndCheck(kFileSize / 2 + 4096, 4096), 4096u);
  Evict(0, kFileSize);
  EXPECT_EQ(ReadAndCheck(0, kFileSize), kFileSize);
}

TEST_P(FileIoTest, ReadsStopAtTheEndOfTheFile) {
  Open();
  EXPECT_EQ(ReadAndCheck(kFileSize - 1000, 8192), 1000u);
  EXPECT_EQ(ReadAndCheck(kFileSize, 4096), 0u);
  EXPECT_EQ(ReadAndCheck(kFileSize + 65536, 4096), 0u);
  Evict(0, kFileSize);
  EXPECT_EQ(ReadAndCheck(kFileSize - 1000, 8192), 1000u);
}

TEST_P(FileIoTest, ScatteredBuffersAndWrittenDataReadBack) {
  FileIo& io = Open();
  IoBuffer update(8192);
  std::memset(update.data(), 0x5a, update.size());
  ASSERT_TRUE(loop_.Run(io.WriteAt(20480, IoVector(update))).has_value());
  std::memset(pattern_.data() + 20480, 0x5a, 8192);
  IoBuffer a(1000), b(5000), c(3000);
  IoVector iov;
  iov.Append(a.data(), a.size());
  iov.Append(b.data(), b.size());
  iov.Append(c.data(), c.size());
  Result<std::size_t> n = loop_.Run(io.ReadAt(19000, iov));
  ASSERT_TRUE(n.has_value());
  ASSERT_EQ(*n, 9000u);
  EXPECT_EQ(0, std::memcmp(a.data(), pattern_.data() + 19000, 1000));
  EXPECT_EQ(0, std::memcmp(b.data(), pattern_.data() + 20000, 5000));
  EXPECT_EQ(0, std::memcmp(c.data(), pattern_.data() + 25000, 3000));
}

INSTANTIATE_TEST_SUITE_P(Backends, FileIoTest,
                         ::testing::Combine(::testing::Values(Backend::kThreads, Backend::kIoUring),
                                            ::testing::Values(Place::kTempDir, Place::kTmpfs)),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           std::string name =
                               std::get<0>(info.param) == Backend::kIoUring ? "IoUring" : "Threads";
                           name += std::get<1>(info.param) == Place::kTmpfs ? "Tmpfs" : "TempDir";
                           return name;
                         });

// The classification behind reads_cache_inline(): a tmpfs file reads inline only without swap.
TEST(CachedReaderTest, TmpfsReadsInlineOnlyWithoutSwap) {
  struct statfs st;
  if (::statfs("/dev/shm", &st) != 0 || st.f_type != TMPFS_MAGIC) {
    GTEST_SKIP() << "/dev/shm is not a tmpfs here";
  }
  ::setenv("TMPDIR", "/dev/shm", 1);
  TempDir dir;
  ::unsetenv("TMPDIR");
  std::string path = dir.File("f");
  int fd = ::open(path.c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "data", 4, 0), 4);
  EXPECT_EQ(CachedReader::Probe(fd, /*swap=*/false), CachedReader::Mode::kMemory);
  EXPECT_EQ(CachedReader::Probe(fd, /*swap=*/true), CachedReader::Mode::kOff);
  ::close(fd);
  TempDir disk;
  if (NowaitFileSystem(disk.path())) {
    fd = ::open(disk.File("f").c_str(), O_CREAT | O_RDWR, 0644);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(CachedReader::Probe(fd, /*swap=*/true), CachedReader::Mode::kNowait);
    ::close(fd);
  }
}

// A direct read waits for the device even with RWF_NOWAIT, so O_DIRECT descriptors always go
// through the backend.
TEST(FileIoDirectTest, DirectDescriptorsNeverReadInline) {
  TestLoop loop;
  TempDir dir;
  std::string path = dir.File("f");
  int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_DIRECT, 0644);
  if (fd < 0 && errno == EINVAL) GTEST_SKIP() << "no O_DIRECT under " << dir.path();
  ASSERT_GE(fd, 0) << std::strerror(errno);
  EXPECT_FALSE(MakeThreadPoolFileIo(fd)->reads_cache_inline());
  if (UringUsable()) {
    absl::StatusOr<std::unique_ptr<FileIo>> io = MakeUringFileIo(fd);
    ASSERT_TRUE(io.ok()) << io.status();
    EXPECT_FALSE((*io)->reads_cache_inline());
  }
  ::close(fd);
}

}  // namespace
}  // namespace qedfuse::block
