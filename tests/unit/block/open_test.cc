// OpenImage/OpenDriver at the raw level: format probing and forcing, report contents, clear
// errors (missing file, directory, unknown format, permission), chain loop and depth limits.
#include "qedfuse/block/open.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "block/file/file_io.h"
#include "block/graph/open_driver.h"
#include "support/temp_dir.h"
#include "support/test_loop.h"

namespace qedfuse::block {
namespace {

using test::TempDir;
using test::TestLoop;

void MakeFile(const std::string& path, uint64_t size, const std::string& head = "") {
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
  if (!head.empty()) {
    ASSERT_EQ(::pwrite(fd, head.data(), head.size(), 0), ssize_t(head.size()));
  }
  ::close(fd);
}

class OpenTest : public ::testing::Test {
 protected:
  absl::StatusOr<std::unique_ptr<BlockBackend>> Open(const OpenOptions& o,
                                                     OpenReport* report = nullptr) {
    return loop_.Run(OpenImage(o, report));
  }
  TestLoop loop_;
  TempDir dir_;
};

TEST_F(OpenTest, UnknownContentOpensAsRaw) {
  std::string path = dir_.File("disk.img");
  MakeFile(path, 1 << 20, "hello, not an image format");
  OpenOptions o;
  o.path = path;
  OpenReport report;
  absl::StatusOr<std::unique_ptr<BlockBackend>> bb = Open(o, &report);
  ASSERT_TRUE(bb.ok()) << bb.status();
  EXPECT_EQ(report.format, "raw");
  EXPECT_EQ(report.aio, UringUsable() ? "io_uring" : "threads");
  ASSERT_EQ(report.chain.size(), 1u);
  EXPECT_EQ(report.chain[0].path, path);
  EXPECT_EQ((*bb)->length(), 1u << 20);
  EXPECT_EQ((*bb)->driver().format_name(), "raw");

  std::vector<std::byte> buf(5);
  Result<std::size_t> n = loop_.Run((*bb)->Read(0, IoVector(buf.data(), buf.size())));
  ASSERT_TRUE(n);
  EXPECT_EQ(0, std::memcmp(buf.data(), "hello", 5));
  std::vector<std::byte> w(3, std::byte{'X'});
  ASSERT_TRUE(loop_.Run((*bb)->Write(1, IoVector(w.data(), w.size()))));
  EXPECT_TRUE(loop_.Run((*bb)->Close()).ok());
}

TEST_F(OpenTest, ThreadsBackendOnRequest) {
  std::string path = dir_.File("disk.img");
  MakeFile(path, 65536);
  OpenOptions o;
  o.path = path;
  o.aio = AioMode::kThreads;
  OpenReport report;
  absl::StatusOr<std::unique_ptr<BlockBackend>> bb = Open(o, &report);
  ASSERT_TRUE(bb.ok()) << bb.status();
  EXPECT_EQ(report.aio, "threads");
  EXPECT_TRUE(loop_.Run((*bb)->Close()).ok());
}

TEST_F(OpenTest, QedMagicIsNotMistakenForRawUnlessForced) {
  std::string path = dir_.File("fake.qed");
  std::string head("QED\0", 4);
  head.resize(64, '\0');
  MakeFile(path, 65536, head);
  OpenOptions o;
  o.path = path;
  o.format = "raw";
  OpenReport report;
  absl::StatusOr<std::unique_ptr<BlockBackend>> bb = Open(o, &report);
  ASSERT_TRUE(bb.ok()) << bb.status();
  EXPECT_EQ(report.format, "raw");
  EXPECT_TRUE(loop_.Run((*bb)->Close()).ok());

  // Probed, the magic selects QED, which must refuse this broken header (or be unavailable):
  // either way it is not opened as raw.
  o.format = "";
  bb = Open(o, &report);
  EXPECT_FALSE(bb.ok());
}

TEST_F(OpenTest, ReadOnlyBackend) {
  std::string path = dir_.File("disk.img");
  MakeFile(path, 65536);
  OpenOptions o;
  o.path = path;
  o.read_only = true;
  absl::StatusOr<std::unique_ptr<BlockBackend>> bb = Open(o);
  ASSERT_TRUE(bb.ok()) << bb.status();
  EXPECT_TRUE((*bb)->read_only());
  std::vector<std::byte> w(3);
  Result<void> r = loop_.Run((*bb)->Write(0, IoVector(w.data(), w.size())));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(Errc::kReadOnly));
  EXPECT_TRUE(loop_.Run((*bb)->Close()).ok());
}

TEST_F(OpenTest, MissingFile) {
  OpenOptions o;
  o.path = dir_.File("nope.qed");
  absl::StatusOr<std::unique_ptr<BlockBackend>> bb = Open(o);
  ASSERT_FALSE(bb.ok());
  EXPECT_EQ(bb.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(bb.status().message().find("nope.qed: no such file"), absl::string_view::npos)
      << bb.status();
}

TEST_F(OpenTest, DirectoryInsteadOfFile) {
  OpenOptions o;
  o.path = dir_.path();
  absl::StatusOr<std::unique_ptr<BlockBackend>> bb = Open(o);
  ASSERT_FALSE(bb.ok());
  EXPECT_NE(bb.status().message().find("is a directory"), absl::string_view::npos) << bb.status();
}

TEST_F(OpenTest, UnknownFormatName) {
  std::string path = dir_.File("disk.img");
  MakeFile(path, 4096);
  OpenOptions o;
  o.path = path;
  o.format = "vmdk";
  absl::StatusOr<std::unique_ptr<BlockBackend>> bb = Open(o);
  ASSERT_FALSE(bb.ok());
  EXPECT_NE(bb.status().message().find("unknown image format 'vmdk'"), absl::string_view::npos)
      << bb.status();
}

TEST_F(OpenTest, PermissionDenied) {
  std::string path = dir_.File("private.img");
  MakeFile(path, 4096);
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
  // Root ignores mode bits: check as an unprivileged user in a child process.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(3);
    TestLoop loop;
    OpenOptions o;
    o.path = path;
    absl::StatusOr<std::unique_ptr<BlockBackend>> bb = loop.Run(OpenImage(o));
    bool good = !bb.ok() && bb.status().code() == absl::StatusCode::kPermissionDenied &&
                bb.status().message().find("permission denied") != absl::string_view::npos;
    ::_exit(good ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 3) GTEST_SKIP() << "cannot drop privileges";
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(OpenTest, LoopInChainIsRefusedWithTheChain) {
  // Simulates a format driver opening backing files: a.img -> b.img -> a.img.
  std::string a = dir_.File("a.img");
  std::string b = dir_.File("b.img");
  MakeFile(a, 4096);
  MakeFile(b, 4096);
  ChainContext chain;
  OpenOptions o;
  o.path = a;
  absl::StatusOr<std::unique_ptr<BlockDriver>> top = loop_.Run(OpenDriver(o, chain, nullptr));
  ASSERT_TRUE(top.ok()) << top.status();
  OpenOptions ob;
  ob.path = b;
  ob.read_only = true;
  absl::StatusOr<std::unique_ptr<BlockDriver>> mid = loop_.Run(OpenDriver(ob, chain, nullptr));
  ASSERT_TRUE(mid.ok()) << mid.status();
  OpenOptions oa = ob;
  oa.path = dir_.path() + "/./a.img";  // same file, another name
  absl::StatusOr<std::unique_ptr<BlockDriver>> loop_open =
      loop_.Run(OpenDriver(oa, chain, nullptr));
  ASSERT_FALSE(loop_open.ok());
  EXPECT_EQ(loop_open.status().message(),
            "backing file loop: " + a + " -> " + b + " -> " + oa.path);
  EXPECT_TRUE(loop_.Run((*mid)->Close()).ok());
  EXPECT_TRUE(loop_.Run((*top)->Close()).ok());
}

TEST_F(OpenTest, ChainDepthIsLimited) {
  ChainContext chain;
  std::vector<std::unique_ptr<BlockDriver>> opened;
  OpenOptions o;
  o.max_chain_depth = 3;
  o.read_only = true;
  for (int i = 0; i < 4; ++i) {
    o.path = dir_.File("f" + std::to_string(i));
    MakeFile(o.path, 4096);
    absl::StatusOr<std::unique_ptr<BlockDriver>> d = loop_.Run(OpenDriver(o, chain, nullptr));
    if (i < 3) {
      ASSERT_TRUE(d.ok()) << d.status();
      opened.push_back(*std::move(d));
    } else {
      ASSERT_FALSE(d.ok());
      EXPECT_NE(d.status().message().find("longer than 3"), absl::string_view::npos) << d.status();
    }
  }
  for (auto& d : opened) EXPECT_TRUE(loop_.Run(d->Close()).ok());
}

}  // namespace
}  // namespace qedfuse::block

#include "support/qemu_tools.h"

namespace qedfuse::block {
namespace {

using test::QemuImg;

TEST_F(OpenTest, ProbesQedAndReportsTheChain) {
  QEDFUSE_SKIP_WITHOUT_QEMU();
  std::string base = dir_.File("base.raw");
  std::string top = dir_.File("top.qed");
  ASSERT_EQ(QemuImg({"create", "-q", "-f", "raw", base, "1M"}).exit_code, 0);
  test::CommandResult r = QemuImg({"create", "-q", "-f", "qed", "-b", base, "-F", "raw", top});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  OpenOptions o;
  o.path = top;
  OpenReport report;
  absl::StatusOr<std::unique_ptr<BlockBackend>> bb = Open(o, &report);
  ASSERT_TRUE(bb.ok()) << bb.status();
  EXPECT_EQ(report.format, "qed");
  ASSERT_EQ(report.chain.size(), 2u);
  EXPECT_EQ(report.chain[0].path, top);
  EXPECT_NE(report.chain[1].path.find("base.raw"), std::string::npos);
  EXPECT_EQ((*bb)->length(), 1u << 20);
  EXPECT_TRUE(loop_.Run((*bb)->Close()).ok());
}

TEST_F(OpenTest, QedBackingLoopIsRefused) {
  QEDFUSE_SKIP_WITHOUT_QEMU();
  std::string a = dir_.File("a.qed");
  std::string b = dir_.File("b.qed");
  // -u: do not open the (not yet valid) backing file while creating.
  ASSERT_EQ(
      QemuImg({"create", "-q", "-f", "qed", "-u", "-b", "b.qed", "-F", "qed", a, "1M"}).exit_code,
      0);
  ASSERT_EQ(
      QemuImg({"create", "-q", "-f", "qed", "-u", "-b", "a.qed", "-F", "qed", b, "1M"}).exit_code,
      0);
  OpenOptions o;
  o.path = a;
  absl::StatusOr<std::unique_ptr<BlockBackend>> bb = Open(o);
  ASSERT_FALSE(bb.ok());
  EXPECT_NE(bb.status().message().find("backing file loop: "), absl::string_view::npos)
      << bb.status();
  EXPECT_NE(bb.status().message().find("a.qed -> "), absl::string_view::npos) << bb.status();
  EXPECT_NE(bb.status().message().find("b.qed -> "), absl::string_view::npos) << bb.status();
}

}  // namespace
}  // namespace qedfuse::block
