// Backing files named by untrusted images, under each BackingPolicy: absolute names, `..`
// escapes, symlinks out of and inside the image's directory, FIFOs and character devices (refused
// before they are opened, so nothing hangs), missing files, loops, very long chains (a readable
// error), the chain report with formats, and the ignored backing file (reads as zeros, partial
// writes fill with zeros, the backing file is never opened).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <string>
#include <vector>

#include "block/qed/qed_create.h"
#include "gtest/gtest.h"
#include "qedfuse/block/block_backend.h"
#include "qedfuse/block/open.h"
#include "support/temp_dir.h"
#include "support/test_loop.h"

namespace qedfuse::block {
namespace {

using test::TempDir;
using test::TestLoop;

constexpr uint64_t kM = 1 << 20;

void MakeRaw(const std::string& path, uint64_t size, uint8_t fill) {
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  std::vector<std::byte> buf(size, std::byte{fill});
  ASSERT_EQ(::pwrite(fd, buf.data(), buf.size(), 0), static_cast<ssize_t>(size));
  ::close(fd);
}

// A QED image of |size| bytes whose header names |backing| (stored as given).
void MakeQed(const std::string& path, const std::string& backing, const std::string& fmt = "raw",
             uint64_t size = kM) {
  qed::CreateOptions co;
  co.path = path;
  co.size = size;
  co.backing_file = backing;
  co.backing_format = fmt;
  absl::Status st = qed::CreateImage(co);
  ASSERT_TRUE(st.ok()) << st;
}

class BackingPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::mkdir(dir_.File("img").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(dir_.File("outside").c_str(), 0755), 0);
    MakeRaw(dir_.File("outside/secret.raw"), kM, 0x5e);
    MakeRaw(dir_.File("img/base.raw"), kM, 0x42);
  }
  absl::StatusOr<std::unique_ptr<BlockBackend>> Open(const std::string& path, BackingPolicy p,
                                                     OpenReport* report = nullptr,
                                                     bool read_only = true) {
    OpenOptions o;
    o.path = path;
    o.backing = p;
    o.read_only = read_only;
    o.need_check_delay = std::chrono::milliseconds(1);
    return loop_.Run(OpenImage(o, report));
  }
  // Opens |top| under |p| and expects the first byte to read |want|.
  void ExpectFirstByte(const std::string& top, BackingPolicy p, uint8_t want) {
    auto bb = Open(top, p);
    ASSERT_TRUE(bb.ok()) << bb.status();
    std::byte b{0xee};
    ASSERT_TRUE(loop_.Run((*bb)->Read(0, IoVector(&b, 1))));
    EXPECT_EQ(static_cast<uint8_t>(b), want);
    EXPECT_TRUE(loop_.Run((*bb)->Close()).ok());
  }
  // Opening |top| under kFollow fails with |message|, in which |path| appears once.
  void ExpectNamedOnce(const std::string& top, const std::string& message,
                       const std::string& path) {
    auto bb = Open(top, BackingPolicy::kFollow);
    ASSERT_FALSE(bb.ok());
    const std::string msg(bb.status().message());
    EXPECT_NE(msg.find(message), std::string::npos) << msg;
    EXPECT_EQ(msg.find(path), msg.rfind(path)) << msg;
  }
  // A QED image at |path| naming |stored| (found at |at|), which is then removed.
  void MakeQedOverGone(const std::string& path, const std::string& stored, const std::string& at,
                       const std::string& fmt = "raw") {
    MakeRaw(at, kM, 1);
    MakeQed(path, stored, fmt);
    ASSERT_EQ(::unlink(at.c_str()), 0);
  }
  // Expects the open under |p| to fail with a message holding every string of |parts|.
  void ExpectRefused(const std::string& top, BackingPolicy p,
                     const std::vector<std::string>& parts) {
    auto bb = Open(top, p);
    ASSERT_FALSE(bb.ok()) << "opened under policy " << BackingPolicyName(p);
    for (const std::string& part : parts) {
      EXPECT_NE(bb.status().message().find(part), std::string::npos)
          << "missing '" << part << "' in: " << bb.status().message();
    }
  }

  TestLoop loop_;
  TempDir dir_;
};

TEST_F(BackingPolicyTest, RelativeNameInsideTheDirectoryWorksUnderEveryPolicy) {
  const std::string top = dir_.File("img/top.qed");
  MakeQed(top, "base.raw");
  ExpectFirstByte(top, BackingPolicy::kFollow, 0x42);
  ExpectFirstByte(top, BackingPolicy::kConfined, 0x42);
  ExpectFirstByte(top, BackingPolicy::kNone, 0);
  OpenReport rep;
  auto bb = Open(top, BackingPolicy::kConfined, &rep);
  ASSERT_TRUE(bb.ok()) << bb.status();
  EXPECT_TRUE(loop_.Run((*bb)->Close()).ok());
  ASSERT_EQ(rep.chain.size(), 2u);
  EXPECT_EQ(rep.chain[0].backing_name, "base.raw");
  EXPECT_EQ(rep.chain[1].format, "raw");
  EXPECT_EQ(DescribeChain(rep.chain), top + " (qed) -> " + rep.chain[1].path + " (raw)");
}

TEST_F(BackingPolicyTest, AbsoluteNameIsFollowedConfinedRefusedOrIgnored) {
  const std::string top = dir_.File("img/top.qed");
  const std::string secret = dir_.File("outside/secret.raw");
  MakeQed(top, secret);
  ExpectFirstByte(top, BackingPolicy::kFollow, 0x5e);
  ExpectRefused(top, BackingPolicy::kConfined, {top, secret, "absolute"});
  ExpectFirstByte(top, BackingPolicy::kNone, 0);
  OpenReport rep;
  auto bb = Open(top, BackingPolicy::kNone, &rep);
  ASSERT_TRUE(bb.ok());
  EXPECT_TRUE(loop_.Run((*bb)->Close()).ok());
  ASSERT_EQ(rep.chain.size(), 1u);
  EXPECT_TRUE(rep.chain[0].backing_ignored);
  EXPECT_NE(DescribeChain(rep.chain).find("[backing file '" + secret + "' ignored]"),
            std::string::npos);
}

TEST_F(BackingPolicyTest, DotDotEscapeIsRefusedWhenConfined) {
  const std::string top = dir_.File("img/top.qed");
  MakeQed(top, "../outside/secret.raw");
  ExpectFirstByte(top, BackingPolicy::kFollow, 0x5e);
  ExpectRefused(top, BackingPolicy::kConfined,
                {top, "../outside/secret.raw", "outside the image's directory"});
  // `..` that stays inside is fine.
  ASSERT_EQ(::mkdir(dir_.File("img/sub").c_str(), 0755), 0);
  const std::string inner = dir_.File("img/sub/top.qed");
  MakeQed(inner, "../base.raw");
  ExpectRefused(inner, BackingPolicy::kConfined, {"outside"});  // beneath img/sub only
}

TEST_F(BackingPolicyTest, SymlinkEscapeIsRefusedWhenConfined) {
  const std::string top = dir_.File("img/top.qed");
  ASSERT_EQ(::symlink(dir_.File("outside/secret.raw").c_str(), dir_.File("img/link.raw").c_str()),
            0);
  MakeQed(top, "link.raw");
  ExpectFirstByte(top, BackingPolicy::kFollow, 0x5e);
  ExpectRefused(top, BackingPolicy::kConfined, {top, "link.raw", "outside"});
  // A symlink that stays inside the directory is accepted.
  ASSERT_EQ(::symlink("base.raw", dir_.File("img/inner.raw").c_str()), 0);
  MakeQed(top, "inner.raw");
  ExpectFirstByte(top, BackingPolicy::kConfined, 0x42);
}

TEST_F(BackingPolicyTest, FifoAndCharacterDeviceAreRefusedBeforeOpening) {
  const std::string fifo = dir_.File("img/fifo.raw");
  const std::string top = dir_.File("img/top.qed");
  const std::string dev = dir_.File("img/dev.qed");
  // Images are created naming regular files, which are then replaced.
  MakeRaw(fifo, kM, 1);
  MakeQed(top, "fifo.raw");
  ASSERT_EQ(::unlink(fifo.c_str()), 0);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  qed::CreateOptions co;  // creating an image over a FIFO backing file is refused too
  co.path = dir_.File("img/new.qed");
  co.backing_file = "fifo.raw";
  absl::Status created = qed::CreateImage(co);
  EXPECT_FALSE(created.ok());
  EXPECT_NE(created.message().find("neither a regular file nor a block device"), std::string::npos)
      << created;
  MakeRaw(dir_.File("img/null"), kM, 1);
  MakeQed(dev, "null");
  ASSERT_EQ(::unlink(dir_.File("img/null").c_str()), 0);
  ASSERT_EQ(::symlink("/dev/null", dir_.File("img/null").c_str()), 0);
  for (BackingPolicy p : {BackingPolicy::kFollow, BackingPolicy::kConfined}) {
    ExpectRefused(top, p, {top, "fifo.raw", "is a FIFO"});  // returns: nothing blocked
  }
  ExpectRefused(dev, BackingPolicy::kFollow, {dev, "null", "is a character device"});
  ExpectRefused(dev, BackingPolicy::kConfined, {dev, "null", "outside"});
  // A FIFO as the image itself is refused the same way.
  auto bb = Open(fifo, BackingPolicy::kFollow);
  ASSERT_FALSE(bb.ok());
  EXPECT_NE(bb.status().message().find("is a FIFO"), std::string::npos) << bb.status();
  // Ignored: never opened, so the FIFO does no harm.
  ExpectFirstByte(top, BackingPolicy::kNone, 0);
}

TEST_F(BackingPolicyTest, MissingBackingFileNamesImageAndStoredName) {
  const std::string top = dir_.File("img/top.qed");
  const std::string at = dir_.File("img/nothere.raw");
  MakeQedOverGone(top, "nothere.raw", at);
  ExpectRefused(top, BackingPolicy::kFollow, {top, "nothere.raw", "no such file"});
  ExpectRefused(top, BackingPolicy::kConfined, {top, "nothere.raw", "does not exist"});
  ExpectFirstByte(top, BackingPolicy::kNone, 0);
  // The file is named once: the stored name, then the path it was looked for at.
  ExpectNamedOnce(
      top, "qed image '" + top + "': backing file 'nothere.raw' (" + at + "): no such file", at);
}

TEST_F(BackingPolicyTest, BadQedBackingFileIsNamedAsTheBackingFile) {
  // The backing file opens but is not a valid QED image: the QED driver's own message names it
  // as the parent stored it, once.
  const std::string top = dir_.File("img/top.qed");
  const std::string base = dir_.File("img/base.qed");
  MakeQed(base, "", "");
  MakeQed(top, "base.qed", "qed");
  ASSERT_EQ(::truncate(base.c_str(), 10), 0);
  ExpectNamedOnce(top, "backing file 'base.qed' (" + base + "): file size 10 is smaller than the",
                  base);
}

TEST_F(BackingPolicyTest, UnopenableBackingFileIsNamedOnce) {
  const std::string top = dir_.File("img/top.qed");
  const std::string at = dir_.File("img/dir.raw");
  MakeQedOverGone(top, "dir.raw", at);
  ASSERT_EQ(::mkdir(at.c_str(), 0755), 0);
  ExpectNamedOnce(top,
                  "qed image '" + top + "': backing file 'dir.raw' (" + at +
                      ") is a directory, not an image file",
                  at);
  // Two levels: the error names each file of the chain below the top once, as its parent
  // stored it.
  const std::string gone = dir_.File("img/gone.raw");
  const std::string mid = dir_.File("img/mid.qed");
  const std::string two = dir_.File("img/two.qed");
  MakeQedOverGone(mid, "gone.raw", gone);
  MakeQed(two, "mid.qed", "qed");
  ExpectNamedOnce(
      two,
      "backing file 'mid.qed' (" + mid + "): backing file 'gone.raw' (" + gone + "): no such file",
      gone);
}

TEST_F(BackingPolicyTest, LoopIsRefusedUnderBothFollowingPolicies) {
  const std::string a = dir_.File("img/a.qed");
  const std::string b = dir_.File("img/b.qed");
  MakeQed(b, "base.raw");
  MakeQed(a, "b.qed", "qed");
  MakeQed(b, "a.qed", "qed");
  ExpectRefused(a, BackingPolicy::kFollow, {"backing file loop"});
  ExpectRefused(a, BackingPolicy::kConfined, {"backing file loop"});
}

TEST_F(BackingPolicyTest, LongChainErrorIsShortAndCounts) {
  // 66 images, each backed by the next: one more than the default limit of 64 backing files.
  const int n = 66;
  for (int i = n - 1; i >= 0; --i) {
    const std::string name = dir_.File("img/c" + std::to_string(i) + ".qed");
    if (i + 1 < n) {
      MakeQed(name, "c" + std::to_string(i + 1) + ".qed", "qed");
    } else {
      MakeQed(name, "base.raw");
    }
  }
  auto bb = Open(dir_.File("img/c0.qed"), BackingPolicy::kFollow);
  ASSERT_FALSE(bb.ok());
  const std::string msg(bb.status().message());
  EXPECT_NE(msg.find("backing chain longer than 64 files"), std::string::npos) << msg;
  EXPECT_NE(msg.find("c0.qed"), std::string::npos) << msg;
  EXPECT_NE(msg.find("c64.qed"), std::string::npos) << msg;
  EXPECT_NE(msg.find("more) ..."), std::string::npos) << msg;
  EXPECT_NE(msg.find("(65 files)"), std::string::npos) << msg;
  EXPECT_LT(msg.size(), 1200u) << msg;
}

TEST_F(BackingPolicyTest, IgnoredBackingFilePartialWriteFillsWithZeros) {
  const std::string top = dir_.File("img/top.qed");
  MakeQed(top, "base.raw");
  {
    auto bb = Open(top, BackingPolicy::kNone, nullptr, /*read_only=*/false);
    ASSERT_TRUE(bb.ok()) << bb.status();
    std::vector<std::byte> w(512, std::byte{0x77});
    ASSERT_TRUE(loop_.Run((*bb)->Write(4096, IoVector(w.data(), w.size()))));
    EXPECT_TRUE(loop_.Run((*bb)->Close()).ok());
  }
  // Followed again: the written cluster holds zeros around the write, not the backing bytes.
  auto bb = Open(top, BackingPolicy::kFollow);
  ASSERT_TRUE(bb.ok()) << bb.status();
  std::vector<std::byte> r(65536);
  ASSERT_TRUE(loop_.Run((*bb)->Read(0, IoVector(r.data(), r.size()))));
  for (std::size_t i = 0; i < r.size(); ++i) {
    const uint8_t want = i >= 4096 && i < 4608 ? 0x77 : 0;
    ASSERT_EQ(static_cast<uint8_t>(r[i]), want) << i;
  }
  std::byte b{};
  ASSERT_TRUE(loop_.Run((*bb)->Read(65536, IoVector(&b, 1))));
  EXPECT_EQ(static_cast<uint8_t>(b), 0x42);  // unwritten clusters read the backing file again
  EXPECT_TRUE(loop_.Run((*bb)->Close()).ok());
}

TEST(BackingPolicyNames, ParseAndPrint) {
  for (BackingPolicy p : {BackingPolicy::kFollow, BackingPolicy::kConfined, BackingPolicy::kNone}) {
    EXPECT_EQ(ParseBackingPolicy(BackingPolicyName(p)), p);
  }
  EXPECT_EQ(ParseBackingPolicy("null"), BackingPolicy::kNone);
  EXPECT_FALSE(ParseBackingPolicy("yes").has_value());
}

}  // namespace
}  // namespace qedfuse::block
