// QEMU-compatible image locking, checked against the real qemu-img/qemu-io: the bytes we take
// match QEMU's, QEMU refuses an image we hold, and we refuse an image QEMU holds.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "block/file/file_lock.h"
#include "block/file/file_protocol.h"
#include "qedfuse/block/open.h"
#include "support/qemu_tools.h"
#include "support/temp_dir.h"
#include "support/test_loop.h"

namespace qedfuse::block {
namespace {

using test::BackgroundProcess;
using test::FileHasLockOnByte;
using test::QemuImg;
using test::QemuIo;
using test::TempDir;
using test::TestLoop;

class LockingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    QEDFUSE_SKIP_WITHOUT_QEMU();
    image_ = dir_.File("img.qed");
    test::CommandResult r = QemuImg({"create", "-q", "-f", "qed", image_, "4M"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  // Opens the image as a protocol node with the locks QEMU takes for |perms|.
  absl::StatusOr<std::unique_ptr<FileProtocol>> OpenLocked(bool read_only, LockPerms perms) {
    FileProtocolOptions o;
    o.path = image_;
    o.read_only = read_only;
    absl::StatusOr<std::unique_ptr<FileProtocol>> f = FileProtocol::Open(o);
    if (!f.ok()) return f.status();
    absl::Status s = (*f)->SetLocks(perms);
    if (!s.ok()) {
      EXPECT_TRUE(loop_.Run((*f)->Close()).ok());
      return s;
    }
    return f;
  }

  // OpenImage of |path| (probed format, QEMU's locks).
  absl::StatusOr<std::unique_ptr<BlockBackend>> OpenPath(const std::string& path,
                                                         bool read_only = false) {
    OpenOptions o;
    o.path = path;
    o.read_only = read_only;
    return loop_.Run(OpenImage(o));
  }

  // Waits until a started qemu-io has taken its locks (it needs a moment to open the image).
  bool WaitForLock(uint64_t byte) {
    for (int i = 0; i < 500; ++i) {
      if (FileHasLockOnByte(image_, byte)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  TestLoop loop_;
  TempDir dir_;
  std::string image_;
};

TEST_F(LockingTest, ReadWriteOpenTakesQemusBytes) {
  auto f = OpenLocked(false, QemuLockPerms(false, false, false));
  ASSERT_TRUE(f.ok()) << f.status();
  for (uint64_t b : {100, 101, 103, 201, 203}) EXPECT_TRUE(FileHasLockOnByte(image_, b)) << b;
  for (uint64_t b : {102, 200, 202}) EXPECT_FALSE(FileHasLockOnByte(image_, b)) << b;
  EXPECT_TRUE(loop_.Run((*f)->Close()).ok());
  EXPECT_FALSE(FileHasLockOnByte(image_, 101));  // released with the descriptor
}

TEST_F(LockingTest, ReadOnlyAndBackingOpensTakeQemusBytes) {
  auto ro = OpenLocked(true, QemuLockPerms(true, false, false));
  ASSERT_TRUE(ro.ok()) << ro.status();
  for (uint64_t b : {100, 201, 203}) EXPECT_TRUE(FileHasLockOnByte(image_, b)) << b;
  for (uint64_t b : {101, 103}) EXPECT_FALSE(FileHasLockOnByte(image_, b)) << b;
  EXPECT_TRUE(loop_.Run((*ro)->Close()).ok());

  // A QED backing file: QEMU takes what it takes for a read-only QED image.
  auto backing = OpenLocked(true, QemuLockPerms(true, true, false));
  ASSERT_TRUE(backing.ok()) << backing.status();
  for (uint64_t b : {100, 201, 203}) EXPECT_TRUE(FileHasLockOnByte(image_, b)) << b;
  for (uint64_t b : {101, 103}) EXPECT_FALSE(FileHasLockOnByte(image_, b)) << b;
  EXPECT_TRUE(loop_.Run((*backing)->Close()).ok());

  // A raw backing file shares everything.
  auto raw = OpenLocked(true, QemuLockPerms(true, true, true));
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_TRUE(FileHasLockOnByte(image_, 100));
  for (uint64_t b : {101, 103, 201, 203}) EXPECT_FALSE(FileHasLockOnByte(image_, b)) << b;
  EXPECT_TRUE(loop_.Run((*raw)->Close()).ok());
}

// Backing files, both directions, against what QEMU 7.2 does (a live overlay keeps a QED backing
// file from being written and resized; a raw backing file stays writable, as QEMU leaves it).
class BackingLockingTest : public LockingTest {
 protected:
  void SetUp() override {
    LockingTest::SetUp();
    if (IsSkipped()) return;
    base_qed_ = dir_.File("base.qed");
    base_raw_ = dir_.File("base.raw");
    ASSERT_EQ(QemuImg({"create", "-q", "-f", "qed", base_qed_, "4M"}).exit_code, 0);
    ASSERT_EQ(QemuImg({"create", "-q", "-f", "raw", base_raw_, "4M"}).exit_code, 0);
    ov_qed_ = dir_.File("ov-qed.qed");
    ov_raw_ = dir_.File("ov-raw.qed");
    ASSERT_EQ(
        QemuImg({"create", "-q", "-f", "qed", "-b", "base.qed", "-F", "qed", ov_qed_}).exit_code,
        0);
    ASSERT_EQ(
        QemuImg({"create", "-q", "-f", "qed", "-b", "base.raw", "-F", "raw", ov_raw_}).exit_code,
        0);
  }
  std::string base_qed_, base_raw_, ov_qed_, ov_raw_;
};

TEST_F(BackingLockingTest, QemuRefusesToWriteABackingFileOfOurOverlay) {
  for (bool read_only : {false, true}) {
    SCOPED_TRACE(read_only ? "overlay read-only" : "overlay read-write");
    absl::StatusOr<std::unique_ptr<BlockBackend>> bb = OpenPath(ov_qed_, read_only);
    ASSERT_TRUE(bb.ok()) << bb.status();
    for (uint64_t b : {100, 201, 203}) EXPECT_TRUE(FileHasLockOnByte(base_qed_, b)) << b;
    test::CommandResult w = QemuIo({"-f", "qed", "-c", "write 0 4k", base_qed_});
    EXPECT_NE(w.exit_code, 0) << w.out;
    EXPECT_NE((w.out + w.err).find("Failed to get \"write\" lock"), std::string::npos)
        << w.out << w.err;
    test::CommandResult r = QemuIo({"-r", "-f", "qed", "-c", "read 0 4k", base_qed_});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(loop_.Run((*bb)->Close()).ok());
  }
  // A raw backing file: QEMU lets it be written under its own overlays, and so do we.
  absl::StatusOr<std::unique_ptr<BlockBackend>> bb = OpenPath(ov_raw_);
  ASSERT_TRUE(bb.ok()) << bb.status();
  test::CommandResult w = QemuIo({"-f", "raw", "-c", "write 0 4k", base_raw_});
  EXPECT_EQ(w.exit_code, 0) << w.err;
  EXPECT_TRUE(loop_.Run((*bb)->Close()).ok());
}

TEST_F(BackingLockingTest, WhatWeMayDoWithTheBackingFileOfAQemuOverlay) {
  BackgroundProcess qemu({"qemu-io", "-f", "qed", "-c", "sleep 5000", ov_qed_});
  ASSERT_TRUE(qemu.started());
  image_ = base_qed_;
  ASSERT_TRUE(WaitForLock(203)) << "qemu-io did not lock the backing file";
  // Not for writing (QEMU does not share it) ...
  absl::StatusOr<std::unique_ptr<BlockBackend>> rw = OpenPath(base_qed_);
  ASSERT_FALSE(rw.ok());
  EXPECT_EQ(rw.status().message(),
            base_qed_ +
                " is locked: another process (QEMU, qemu-img or qedfuse) uses it and does "
                "not let others write to it; it can be opened read-only");
  // ... but read-only, and as the backing file of another overlay of ours.
  absl::StatusOr<std::unique_ptr<BlockBackend>> ro = OpenPath(base_qed_, /*read_only=*/true);
  ASSERT_TRUE(ro.ok()) << ro.status();
  EXPECT_TRUE(loop_.Run((*ro)->Close()).ok());
  const std::string ov2 = dir_.File("ov2.qed");
  ASSERT_EQ(QemuImg({"create", "-q", "-f", "qed", "-b", "base.qed", "-F", "qed", ov2}).exit_code,
            0);
  absl::StatusOr<std::unique_ptr<BlockBackend>> other = OpenPath(ov2);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_TRUE(loop_.Run((*other)->Close()).ok());
}

TEST_F(LockingTest, QemuRefusesAnImageWeHoldReadWrite) {
  auto f = OpenLocked(false, QemuLockPerms(false, false, false));
  ASSERT_TRUE(f.ok()) << f.status();
  test::CommandResult w = QemuIo({"-c", "write 0 4k", image_});
  EXPECT_NE(w.exit_code, 0);
  EXPECT_NE((w.out + w.err).find("lock"), std::string::npos) << w.out << w.err;
  test::CommandResult info = QemuImg({"info", image_});
  EXPECT_NE(info.exit_code, 0);
  EXPECT_NE(info.err.find("lock"), std::string::npos) << info.err;
  // With --force-share QEMU may still look.
  test::CommandResult shared = QemuImg({"info", "-U", image_});
  EXPECT_EQ(shared.exit_code, 0) << shared.err;
  EXPECT_TRUE(loop_.Run((*f)->Close()).ok());
  // Released: QEMU can write again.
  test::CommandResult after = QemuIo({"-c", "write 0 4k", image_});
  EXPECT_EQ(after.exit_code, 0) << after.err;
}

TEST_F(LockingTest, WeRefuseAnImageQemuHoldsReadWrite) {
  BackgroundProcess qemu({"qemu-io", "-c", "sleep 5000", image_});
  ASSERT_TRUE(qemu.started());
  ASSERT_TRUE(WaitForLock(203)) << "qemu-io did not lock the image";

  auto rw = OpenLocked(false, QemuLockPerms(false, false, false));
  ASSERT_FALSE(rw.ok());
  EXPECT_EQ(rw.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(rw.status().message(),
            image_ +
                " is locked: another process (QEMU, qemu-img or qedfuse) is writing to it, "
                "which this open does not allow");

  // A read-only top-level open does not let others write, so it is refused as well; qedimg's
  // force-share is the way to look at it.
  auto ro = OpenLocked(true, QemuLockPerms(true, false, false));
  ASSERT_FALSE(ro.ok());
  EXPECT_EQ(ro.status().message(),
            image_ +
                " is locked: another process (QEMU, qemu-img or qedfuse) is writing to it, "
                "which this open does not allow; qedimg's -U "
                "(--force-share) reads it without taking locks");

  // Our failed attempts left no lock bytes behind: once qemu-io is gone, opening works.
  qemu.Stop();
  auto again = OpenLocked(false, QemuLockPerms(false, false, false));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(loop_.Run((*again)->Close()).ok());
}

TEST_F(LockingTest, ReadOnlyQemuBlocksOurWriterButNotOurReader) {
  BackgroundProcess qemu({"qemu-io", "-r", "-c", "sleep 5000", image_});
  ASSERT_TRUE(qemu.started());
  ASSERT_TRUE(WaitForLock(201));
  auto rw = OpenLocked(false, QemuLockPerms(false, false, false));
  ASSERT_FALSE(rw.ok());
  // The holder only reads: what stops us is that it does not share writing.
  EXPECT_EQ(rw.status().message(),
            image_ +
                " is locked: another process (QEMU, qemu-img or qedfuse) uses it and does "
                "not let others write to it; it can be opened read-only");
  auto ro = OpenLocked(true, QemuLockPerms(true, false, false));
  ASSERT_TRUE(ro.ok()) << ro.status();
  EXPECT_TRUE(loop_.Run((*ro)->Close()).ok());
}

TEST_F(LockingTest, TwoOfOurWritersConflict) {
  auto first = OpenLocked(false, QemuLockPerms(false, false, false));
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = OpenLocked(false, QemuLockPerms(false, false, false));
  ASSERT_FALSE(second.ok());
  // The second attempt must not have dropped the first one's locks.
  EXPECT_TRUE(FileHasLockOnByte(image_, 101));
  EXPECT_TRUE(loop_.Run((*first)->Close()).ok());
}

TEST_F(LockingTest, OpenImageRefusesAnImageQemuHolds) {
  std::string raw = dir_.File("disk.raw");
  ASSERT_EQ(QemuImg({"create", "-q", "-f", "raw", raw, "1M"}).exit_code, 0);
  BackgroundProcess qemu({"qemu-io", "-r", "-f", "raw", "-c", "sleep 5000", raw});
  ASSERT_TRUE(qemu.started());
  image_ = raw;
  ASSERT_TRUE(WaitForLock(100));
  // qemu-io -r on raw shares everything (only byte 100): QEMU would open it read-write too.
  OpenOptions o;
  o.path = raw;
  absl::StatusOr<std::unique_ptr<BlockBackend>> bb = loop_.Run(OpenImage(o));
  ASSERT_TRUE(bb.ok()) << bb.status();
  EXPECT_TRUE(FileHasLockOnByte(raw, 101));
  EXPECT_TRUE(loop_.Run((*bb)->Close()).ok());
}

TEST_F(LockingTest, LockingCanBeDisabled) {
  BackgroundProcess qemu({"qemu-io", "-c", "sleep 5000", image_});
  ASSERT_TRUE(qemu.started());
  ASSERT_TRUE(WaitForLock(203));
  OpenOptions o;
  o.path = image_;
  o.format = "raw";
  o.read_only = true;
  o.lock = false;
  absl::StatusOr<std::unique_ptr<BlockBackend>> bb = loop_.Run(OpenImage(o));
  ASSERT_TRUE(bb.ok()) << bb.status();
  EXPECT_TRUE(loop_.Run((*bb)->Close()).ok());
}

}  // namespace
}  // namespace qedfuse::block

namespace qedfuse::block {
namespace {

// The whole open path (OpenImage on a QED image) takes the same locks.
class OpenImageLockingTest : public LockingTest {};

TEST_F(OpenImageLockingTest, QemuRefusesAnImageWeHaveOpen) {
  OpenOptions o;
  o.path = image_;
  OpenReport report;
  absl::StatusOr<std::unique_ptr<BlockBackend>> bb = loop_.Run(OpenImage(o, &report));
  ASSERT_TRUE(bb.ok()) << bb.status();
  EXPECT_EQ(report.format, "qed");
  test::CommandResult w = QemuIo({"-c", "write 0 4k", image_});
  EXPECT_NE(w.exit_code, 0);
  EXPECT_NE((w.out + w.err).find("lock"), std::string::npos) << w.out << w.err;
  EXPECT_TRUE(loop_.Run((*bb)->Close()).ok());
  test::CommandResult after = QemuIo({"-c", "write 0 4k", image_});
  EXPECT_EQ(after.exit_code, 0) << after.err;
}

TEST_F(OpenImageLockingTest, WeRefuseAnImageQemuHasOpen) {
  BackgroundProcess qemu({"qemu-io", "-c", "sleep 5000", image_});
  ASSERT_TRUE(qemu.started());
  ASSERT_TRUE(WaitForLock(203));
  absl::StatusOr<std::unique_ptr<BlockBackend>> bb = OpenPath(image_);
  ASSERT_FALSE(bb.ok());
  EXPECT_EQ(bb.status().message(),
            image_ +
                " is locked: another process (QEMU, qemu-img or qedfuse) is writing to it, "
                "which this open does not allow");
}

}  // namespace
}  // namespace qedfuse::block
