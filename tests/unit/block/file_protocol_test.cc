// FileProtocol on real files, for both I/O backends and both cache modes: data round trips,
// growth past the end, zeroing and holes, status, truncation, O_DIRECT alignment handling,
// read-only opens and open errors.
#include "block/file/file_protocol.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "qedfuse/base/align.h"
#include "qedfuse/block/child.h"
#include "qedfuse/block/filter_driver.h"
#include "qedfuse/coro/join.h"
#include "support/temp_dir.h"
#include "support/test_loop.h"

namespace qedfuse::block {
namespace {

using test::TempDir;
using test::TestLoop;

std::vector<std::byte> Pattern(std::size_t n, uint8_t seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = std::byte(static_cast<uint8_t>(seed + i * 13));
  return v;
}

void MakeFile(const std::string& path, uint64_t size, const std::vector<std::byte>& head = {}) {
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
  if (!head.empty()) {
    ASSERT_EQ(::pwrite(fd, head.data(), head.size(), 0), ssize_t(head.size()));
  }
  ::close(fd);
}

std::vector<std::byte> FileBytes(const std::string& path, uint64_t off, std::size_t n) {
  std::vector<std::byte> out(n);
  int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0);
  ssize_t got = ::pread(fd, out.data(), n, static_cast<off_t>(off));
  EXPECT_EQ(got, ssize_t(n));
  ::close(fd);
  return out;
}

uint64_t FileSize(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0);
  return static_cast<uint64_t>(st.st_size);
}

// A filter that parks the writes at one offset until Release(), so that a test can let other
// requests run while a write of a read-modify-write is in flight.
class WriteHold final : public FilterDriver {
 public:
  WriteHold(std::unique_ptr<BlockDriver> file, uint64_t offset)
      : FilterDriver(std::move(file)), offset_(offset) {
    hold_.Add();
  }
  coro::Task<Result<void>> Write(uint64_t offset, IoVector iov) override {
    if (offset == offset_ && hold_.pending() != 0) {
      ++parked_;
      co_await hold_.Wait();
    }
    co_return co_await child().Write(offset, iov);
  }
  void Release() { hold_.Done(); }
  int parked() const { return parked_; }

 private:
  uint64_t offset_;
  coro::Join hold_;
  int parked_ = 0;
};

// Backend, cache mode, and a forced O_DIRECT alignment (0: the device's own).
using Param = std::tuple<AioMode, CacheMode, uint32_t>;

class FileProtocolTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    if (std::get<0>(GetParam()) == AioMode::kIoUring && !UringUsable()) {
      GTEST_SKIP() << "io_uring is not usable here";
    }
    path_ = dir_.File("img");
  }

  std::unique_ptr<FileProtocol> Open(bool read_only = false) {
    FileProtocolOptions o;
    o.path = path_;
    o.read_only = read_only;
    o.aio = std::get<0>(GetParam());
    o.cache = std::get<1>(GetParam());
    o.min_direct_alignment = std::get<2>(GetParam());
    absl::StatusOr<std::unique_ptr<FileProtocol>> f = FileProtocol::Open(o);
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? *std::move(f) : nullptr;
  }

  void Close(std::unique_ptr<FileProtocol>& f) { EXPECT_TRUE(loop_.Run(f->Close()).ok()); }

  bool direct() const { return std::get<1>(GetParam()) == CacheMode::kNone; }

  TestLoop loop_;
  TempDir dir_;
  std::string path_;
};

TEST_P(FileProtocolTest, ReportsBackendAndAlignment) {
  MakeFile(path_, 1 << 20, Pattern(65536, 1));  // allocated: the kernel checks DIO over holes less
  auto f = Open();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->aio_name(), std::get<0>(GetParam()) == AioMode::kIoUring ? "io_uring" : "threads");
  EXPECT_EQ(f->length(), 1u << 20);
  EXPECT_EQ(f->direct(), direct());
  if (direct()) {
    uint32_t a = f->limits().request_alignment;
    EXPECT_GE(a, 512u);
    EXPECT_EQ(a & (a - 1), 0u);
    EXPECT_GE(a, std::get<2>(GetParam()));
    // O_DIRECT is in effect: an aligned read works, a byte-offset one is refused by the kernel.
    IoBuffer buf(a);
    EXPECT_EQ(::pread(f->fd(), buf.data(), a, a), ssize_t(a));
    errno = 0;
    EXPECT_EQ(::pread(f->fd(), buf.data(), a, 1), -1);
    EXPECT_EQ(errno, EINVAL);
  } else {
    EXPECT_EQ(f->limits().request_alignment, 1u);
  }
  Close(f);
}

TEST_P(FileProtocolTest, WriteReadFlushRoundTrip) {
  MakeFile(path_, 1 << 20);
  auto f = Open();
  ASSERT_TRUE(f);
  IoBuffer data(256 * 1024);
  std::vector<std::byte> pat = Pattern(data.size(), 1);
  std::memcpy(data.data(), pat.data(), pat.size());
  ASSERT_TRUE(loop_.Run(f->Write(65536, IoVector(data))));
  ASSERT_TRUE(loop_.Run(f->Flush()));
  EXPECT_EQ(FileBytes(path_, 65536, pat.size()), pat);
  IoBuffer back(data.size());
  ASSERT_TRUE(loop_.Run(f->Read(65536, IoVector(back))));
  EXPECT_EQ(0, std::memcmp(back.data(), pat.data(), pat.size()));
  Close(f);
}

TEST_P(FileProtocolTest, ScatterGatherVectors) {
  MakeFile(path_, 1 << 20);
  auto f = Open();
  ASSERT_TRUE(f);
  IoBuffer a(4096), b(8192), c(4096);
  std::memset(a.data(), 0xa1, a.size());
  std::memset(b.data(), 0xb2, b.size());
  std::memset(c.data(), 0xc3, c.size());
  IoVector iov;
  iov.Append(a.data(), a.size());
  iov.Append(b.data(), b.size());
  iov.Append(c.data(), c.size());
  ASSERT_TRUE(loop_.Run(f->Write(8192, iov)));
  std::vector<std::byte> on_disk = FileBytes(path_, 8192, 16384);
  EXPECT_EQ(on_disk[0], std::byte{0xa1});
  EXPECT_EQ(on_disk[4096], std::byte{0xb2});
  EXPECT_EQ(on_disk[12287], std::byte{0xb2});
  EXPECT_EQ(on_disk[12288], std::byte{0xc3});
  Close(f);
}

TEST_P(FileProtocolTest, ManyConcurrentRequests) {
  MakeFile(path_, 4 << 20);
  auto f = Open();
  ASSERT_TRUE(f);
  std::vector<IoBuffer> bufs;
  for (int i = 0; i < 32; ++i) {
    bufs.emplace_back(65536);
    std::memset(bufs.back().data(), i + 1, 65536);
  }
  std::vector<coro::Task<Result<void>>> tasks;
  for (int i = 0; i < 32; ++i) {
    tasks.push_back(f->Write(static_cast<uint64_t>(i) * 131072, IoVector(bufs[i])));
  }
  for (auto& t : tasks) ASSERT_TRUE(loop_.Run(std::move(t)));
  for (int i = 0; i < 32; ++i) {
    std::vector<std::byte> got = FileBytes(path_, static_cast<uint64_t>(i) * 131072, 65536);
    EXPECT_EQ(got, std::vector<std::byte>(65536, std::byte(static_cast<uint8_t>(i + 1))));
  }
  Close(f);
}

TEST_P(FileProtocolTest, WritesPastTheEndGrowTheFile) {
  MakeFile(path_, 4096);
  auto f = Open();
  ASSERT_TRUE(f);
  IoBuffer data(8192);
  std::memset(data.data(), 0x77, data.size());
  ASSERT_TRUE(loop_.Run(f->Write(16384, IoVector(data))));
  EXPECT_EQ(f->length(), 16384u + 8192u);
  EXPECT_EQ(FileSize(path_), 16384u + 8192u);
  // The gap reads back as zeros; reads past the end return zeros too.
  IoBuffer back(8192);
  std::memset(back.data(), 0xff, back.size());
  ASSERT_TRUE(loop_.Run(f->Read(24576, IoVector(back))));
  EXPECT_EQ(back.data()[0], std::byte{0});
  EXPECT_EQ(back.data()[8191], std::byte{0});
  Close(f);
}

TEST_P(FileProtocolTest, UnalignedRequestsAreHandled) {
  // Under O_DIRECT these go through bounce buffers and read-modify-write; otherwise directly.
  std::vector<std::byte> base = Pattern(65536, 3);
  MakeFile(path_, 65536, base);
  auto f = Open();
  ASSERT_TRUE(f);
  Child c(*f);  // the edge that pads requests to the file's alignment
  std::vector<std::byte> patch(1000, std::byte{0xee});
  ASSERT_TRUE(loop_.Run(c.Write(4000, IoVector(patch.data(), patch.size()))));
  // A 512-byte table-sector write inside a larger logical block.
  std::vector<std::byte> sector(512, std::byte{0x5c});
  ASSERT_TRUE(loop_.Run(c.Write(8704, IoVector(sector.data(), sector.size()))));
  std::vector<std::byte> expect = base;
  std::memcpy(expect.data() + 4000, patch.data(), patch.size());
  std::memcpy(expect.data() + 8704, sector.data(), sector.size());
  ASSERT_TRUE(loop_.Run(f->Flush()));
  EXPECT_EQ(FileBytes(path_, 0, 65536), expect);
  std::vector<std::byte> back(777);
  ASSERT_TRUE(loop_.Run(c.Read(3999, IoVector(back.data(), back.size()))));
  EXPECT_EQ(0, std::memcmp(back.data(), expect.data() + 3999, back.size()));
  EXPECT_EQ(f->length(), 65536u);
  Close(f);
}

TEST_P(FileProtocolTest, UnalignedWritePastTheEndKeepsExactSize) {
  MakeFile(path_, 1000, Pattern(1000, 9));
  auto f = Open();
  ASSERT_TRUE(f);
  Child c(*f);  // the edge that pads requests to the file's alignment
  std::vector<std::byte> tail(300, std::byte{0x42});
  ASSERT_TRUE(loop_.Run(c.Write(900, IoVector(tail.data(), tail.size()))));
  EXPECT_EQ(f->length(), 1200u);
  EXPECT_EQ(FileSize(path_), 1200u);
  std::vector<std::byte> expect = Pattern(1000, 9);
  expect.resize(1200);
  std::memcpy(expect.data() + 900, tail.data(), tail.size());
  EXPECT_EQ(FileBytes(path_, 0, 1200), expect);
  Close(f);
}

TEST_P(FileProtocolTest, ConcurrentUnalignedWritesToOneBlock) {
  MakeFile(path_, 65536);
  auto f = Open();
  ASSERT_TRUE(f);
  Child c(*f);  // the edge that pads requests to the file's alignment
  std::vector<std::vector<std::byte>> bufs;
  std::vector<coro::Task<Result<void>>> tasks;
  for (int i = 0; i < 8; ++i) bufs.emplace_back(512, std::byte(static_cast<uint8_t>(0x10 + i)));
  for (int i = 0; i < 8; ++i) {
    tasks.push_back(c.Write(static_cast<uint64_t>(i) * 512, IoVector(bufs[i].data(), 512)));
  }
  for (auto& t : tasks) ASSERT_TRUE(loop_.Run(std::move(t)));
  std::vector<std::byte> got = FileBytes(path_, 0, 4096);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(got[static_cast<std::size_t>(i) * 512], std::byte(static_cast<uint8_t>(0x10 + i)));
    EXPECT_EQ(got[static_cast<std::size_t>(i) * 512 + 511],
              std::byte(static_cast<uint8_t>(0x10 + i)));
  }
  Close(f);
}

// A read-modify-write inside the file (a 64-byte header update under O_DIRECT) runs while an
// aligned write past the end grows the file: the growth stays (the read-modify-write pads
// nothing past the end, so it has nothing to cut back).
TEST_P(FileProtocolTest, ReadModifyWriteInsideNeverCutsBackConcurrentGrowth) {
  std::vector<std::byte> base = Pattern(65536, 7);
  MakeFile(path_, 65536, base);
  std::unique_ptr<FileProtocol> file = Open();
  ASSERT_TRUE(file);
  FileProtocol* f = file.get();
  auto hold = std::make_unique<WriteHold>(std::move(file), /*offset=*/0);
  WriteHold* h = hold.get();
  Child c(std::move(hold));
  std::vector<std::byte> header(64, std::byte{0xab});
  coro::Task<Result<void>> update = c.Write(0, IoVector(header.data(), header.size()));
  while (h->parked() == 0) ASSERT_NE(loop_.Step(), 0u);  // its write of block 0 is in flight
  IoBuffer grow(65536);
  std::memset(grow.data(), 0x5e, grow.size());
  ASSERT_TRUE(loop_.Run(c.Write(65536, IoVector(grow))));
  EXPECT_EQ(f->length(), 131072u);
  h->Release();
  ASSERT_TRUE(loop_.Run(std::move(update)));
  EXPECT_EQ(f->length(), 131072u);
  EXPECT_EQ(FileSize(path_), 131072u);
  std::vector<std::byte> expect = base;
  std::memcpy(expect.data(), header.data(), header.size());
  expect.resize(131072, std::byte{0x5e});
  EXPECT_TRUE(FileBytes(path_, 0, 131072) == expect);
  EXPECT_TRUE(loop_.Run(c.Close()).ok());
}

// A tail padded past the end (cut back afterwards) and a later aligned write past the end: the
// later write waits until the cut-back is done, so it neither loses its bytes to the cut-back nor
// has the padding's zeros written over them.
TEST_P(FileProtocolTest, TailPaddedPastTheEndOrdersConcurrentGrowth) {
  MakeFile(path_, 1000, Pattern(1000, 9));
  std::unique_ptr<FileProtocol> file = Open();
  ASSERT_TRUE(file);
  FileProtocol* f = file.get();
  const uint64_t a = f->limits().request_alignment;
  // Parks the write of the padded tail block (under O_DIRECT), or the write itself.
  auto hold =
      std::make_unique<WriteHold>(std::move(file), direct() ? AlignDown(uint64_t{1199}, a) : 900);
  WriteHold* h = hold.get();
  Child c(std::move(hold));
  std::vector<std::byte> tail(300, std::byte{0x42});
  coro::Task<Result<void>> first = c.Write(900, IoVector(tail.data(), tail.size()));
  while (h->parked() == 0) ASSERT_NE(loop_.Step(), 0u);
  const uint64_t later_at = std::max<uint64_t>(a, 4096) * 4;
  IoBuffer later(4096);
  std::memset(later.data(), 0x6d, later.size());
  coro::Task<Result<void>> second = c.Write(later_at, IoVector(later));
  loop_.Idle();
  // Under O_DIRECT the padded tail block reaches past the end: the later write must wait.
  if (direct()) {
    EXPECT_FALSE(second.done());
  }
  h->Release();
  ASSERT_TRUE(loop_.Run(std::move(first)));
  ASSERT_TRUE(loop_.Run(std::move(second)));
  EXPECT_EQ(f->length(), later_at + 4096);
  EXPECT_EQ(FileSize(path_), later_at + 4096);
  std::vector<std::byte> expect = Pattern(1000, 9);
  expect.resize(1200);
  std::memcpy(expect.data() + 900, tail.data(), tail.size());
  expect.resize(later_at);
  expect.resize(later_at + 4096, std::byte{0x6d});
  EXPECT_TRUE(FileBytes(path_, 0, later_at + 4096) == expect);
  EXPECT_TRUE(loop_.Run(c.Close()).ok());
}

TEST_P(FileProtocolTest, WriteZeroesPunchesHolesAndExtends) {
  MakeFile(path_, 0);
  auto f = Open();
  ASSERT_TRUE(f);
  IoBuffer data(1 << 20);
  std::memset(data.data(), 0x33, data.size());
  ASSERT_TRUE(loop_.Run(f->Write(0, IoVector(data))));
  ASSERT_TRUE(loop_.Run(f->Flush()));
  uint64_t before = f->AllocatedBytes();
  EXPECT_GE(before, 1u << 20);

  ASSERT_TRUE(loop_.Run(f->WriteZeroes(262144, 524288, ZeroFlags::kMayUnmap)));
  EXPECT_LE(f->AllocatedBytes(), before - 524288);
  EXPECT_EQ(FileBytes(path_, 262144, 524288), std::vector<std::byte>(524288));
  EXPECT_EQ(FileBytes(path_, 262143, 1)[0], std::byte{0x33});
  EXPECT_EQ(FileBytes(path_, 786432, 1)[0], std::byte{0x33});

  Result<BlockStatus> st = loop_.Run(f->GetStatus(262144, 1 << 20));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->zero);
  EXPECT_FALSE(st->data);
  EXPECT_TRUE(st->present);
  EXPECT_EQ(st->length, 524288u);

  // Zeroing beyond the end grows the file.
  ASSERT_TRUE(loop_.Run(f->WriteZeroes(1 << 20, 65536, ZeroFlags::kNone)));
  EXPECT_EQ(f->length(), (1u << 20) + 65536);
  EXPECT_EQ(FileSize(path_), (1u << 20) + 65536);
  Close(f);
}

TEST_P(FileProtocolTest, StatusFollowsDataAndHoles) {
  MakeFile(path_, 1 << 20);  // sparse
  auto f = Open();
  ASSERT_TRUE(f);
  IoBuffer data(65536);
  std::memset(data.data(), 1, data.size());
  ASSERT_TRUE(loop_.Run(f->Write(131072, IoVector(data))));
  ASSERT_TRUE(loop_.Run(f->Flush()));

  Result<BlockStatus> st = loop_.Run(f->GetStatus(0, 1 << 20));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->zero);
  EXPECT_FALSE(st->data);
  EXPECT_EQ(st->length, 131072u);

  st = loop_.Run(f->GetStatus(131072, 1 << 20));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->data);
  EXPECT_FALSE(st->zero);
  EXPECT_TRUE(st->present);
  EXPECT_EQ(st->length, 65536u);
  ASSERT_TRUE(st->offset.has_value());
  EXPECT_EQ(*st->offset, 131072u);

  st = loop_.Run(f->GetStatus(196608, 1 << 20));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->zero);
  EXPECT_EQ(st->length, (1u << 20) - 196608);
  Close(f);
}

// SEEK_DATA/SEEK_HOLE run in the blocking pool, never on the loop thread: the status request
// suspends instead of completing inline.
TEST_P(FileProtocolTest, StatusLookupIsOffloaded) {
  MakeFile(path_, 1 << 20);
  auto f = Open();
  ASSERT_TRUE(f);
  coro::Task<Result<BlockStatus>> t = f->GetStatus(0, 1 << 20);
  EXPECT_FALSE(t.done());
  Result<BlockStatus> st = loop_.Run(std::move(t));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->zero);
  Close(f);
}

TEST_P(FileProtocolTest, TruncateChangesTheSize) {
  MakeFile(path_, 65536);
  auto f = Open();
  ASSERT_TRUE(f);
  ASSERT_TRUE(loop_.Run(f->Truncate(1 << 20)));
  EXPECT_EQ(f->length(), 1u << 20);
  EXPECT_EQ(FileSize(path_), 1u << 20);
  ASSERT_TRUE(loop_.Run(f->Truncate(4096)));
  EXPECT_EQ(FileSize(path_), 4096u);
  Close(f);
}

TEST_P(FileProtocolTest, ReadOnlyNeverWrites) {
  std::vector<std::byte> base = Pattern(8192, 5);
  MakeFile(path_, 8192, base);
  auto f = Open(/*read_only=*/true);
  ASSERT_TRUE(f);
  EXPECT_TRUE(f->read_only());
  EXPECT_EQ(::fcntl(f->fd(), F_GETFL) & O_ACCMODE, O_RDONLY);
  IoBuffer data(4096, /*zero=*/true);
  Result<void> r = loop_.Run(f->Write(0, IoVector(data)));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(Errc::kReadOnly));
  r = loop_.Run(f->WriteZeroes(0, 4096, ZeroFlags::kMayUnmap));
  ASSERT_FALSE(r);
  r = loop_.Run(f->Truncate(0));
  ASSERT_FALSE(r);
  EXPECT_EQ(FileBytes(path_, 0, 8192), base);
  Close(f);
}

INSTANTIATE_TEST_SUITE_P(Backends, FileProtocolTest,
                         ::testing::Values(Param{AioMode::kThreads, CacheMode::kWriteback, 0},
                                           Param{AioMode::kThreads, CacheMode::kNone, 0},
                                           Param{AioMode::kThreads, CacheMode::kNone, 4096},
                                           Param{AioMode::kIoUring, CacheMode::kWriteback, 0},
                                           Param{AioMode::kIoUring, CacheMode::kNone, 0},
                                           Param{AioMode::kIoUring, CacheMode::kNone, 4096}),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           std::string name =
                               std::get<0>(info.param) == AioMode::kIoUring ? "IoUring" : "Threads";
                           name +=
                               std::get<1>(info.param) == CacheMode::kNone ? "Direct" : "Cached";
                           if (std::get<2>(info.param) != 0)
                             name += std::to_string(std::get<2>(info.param));
                           return name;
                         });

TEST(FileProtocolOpenTest, AutoPicksIoUringWhenUsable) {
  TestLoop loop;
  TempDir dir;
  MakeFile(dir.File("img"), 4096);
  FileProtocolOptions o;
  o.path = dir.File("img");
  absl::StatusOr<std::unique_ptr<FileProtocol>> f = FileProtocol::Open(o);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->aio_name(), UringUsable() ? "io_uring" : "threads");
  EXPECT_TRUE(loop.Run((*f)->Close()).ok());
}

TEST(FileProtocolOpenTest, ErrorsNameTheFile) {
  TestLoop loop;
  TempDir dir;
  FileProtocolOptions o;
  o.path = dir.File("missing.img");
  absl::StatusOr<std::unique_ptr<FileProtocol>> f = FileProtocol::Open(o);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(f.status().message().find("missing.img"), absl::string_view::npos);

  o.path = dir.path();
  o.read_only = true;
  f = FileProtocol::Open(o);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("is a directory"), absl::string_view::npos) << f.status();
  o.read_only = false;
  f = FileProtocol::Open(o);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("is a directory"), absl::string_view::npos) << f.status();
}

TEST(FileProtocolOpenTest, PermissionDenied) {
  if (::geteuid() == 0) {
    // Root bypasses mode bits; drop to nobody in a child to see the unprivileged error.
    TempDir dir;
    std::string path = dir.File("private.img");
    MakeFile(path, 4096);
    ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
    ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
      TestLoop loop;
      FileProtocolOptions o;
      o.path = path;
      absl::StatusOr<std::unique_ptr<FileProtocol>> f = FileProtocol::Open(o);
      bool good =
          !f.ok() && f.status().code() == absl::StatusCode::kPermissionDenied &&
          f.status().message().find("private.img: permission denied") != absl::string_view::npos;
      ::_exit(good ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    if (WEXITSTATUS(status) == 3) GTEST_SKIP() << "cannot drop privileges";
    EXPECT_EQ(WEXITSTATUS(status), 0);
    return;
  }
  TestLoop loop;
  TempDir dir;
  std::string path = dir.File("private.img");
  MakeFile(path, 4096);
  ASSERT_EQ(::chmod(path.c_str(), 0), 0);
  FileProtocolOptions o;
  o.path = path;
  absl::StatusOr<std::unique_ptr<FileProtocol>> f = FileProtocol::Open(o);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace qedfuse::block
