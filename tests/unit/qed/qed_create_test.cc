// CreateImage against `qemu-img create -f qed`: byte-identical files (cmp), the same holes,
// `qemu-img check` clean on ours, backing files and default sizes, and refusals.
#include "block/qed/qed_create.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "block/file/file_lock.h"
#include "gtest/gtest.h"
#include "qed_fmt_test_util.h"

namespace qedfuse::qed {
namespace {

using fmt_test::CommandResult;
using fmt_test::FileSize;
using fmt_test::MustRun;
using fmt_test::ReadBytes;
using fmt_test::Shell;
using fmt_test::TempDir;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kGiB = 1024 * kMiB;
constexpr uint64_t kTiB = 1024 * kGiB;

uint64_t Blocks(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blocks) : ~uint64_t{0};
}

std::string Q(const std::string& s) { return "'" + s + "'"; }

// Creates |ours| with |opt| and |ref| with qemu-img (|qemu_args| go before the file name), then
// asserts they are byte-identical, equally sparse, and that qemu-img checks ours clean.
void ExpectSameAsQemu(const TempDir& dir, const CreateOptions& opt, const std::string& qemu_args,
                      const std::string& qemu_size) {
  const std::string ref = dir.File("ref.qed");
  MustRun("cd " + Q(dir.path()) + " && qemu-img create -q -f qed " + qemu_args + " ref.qed " +
          qemu_size);
  absl::Status st = CreateImage(opt);
  ASSERT_TRUE(st.ok()) << st;
  const CommandResult cmp = Shell("cmp " + Q(ref) + " " + Q(opt.path));
  EXPECT_EQ(cmp.exit_code, 0) << cmp.output;
  EXPECT_EQ(FileSize(ref), FileSize(opt.path));
  EXPECT_EQ(Blocks(ref), Blocks(opt.path)) << "cluster 0 after the header must stay a hole";
  const CommandResult check = Shell("qemu-img check -f qed " + Q(opt.path));
  EXPECT_EQ(check.exit_code, 0) << check.output;
}

struct GeometryCase {
  std::string qemu_opts;
  uint32_t cs;
  uint32_t ts;
  std::string qemu_size;
  uint64_t size;
};

TEST(QedCreate, ByteIdenticalToQemuImg_ForGeometriesAndSizes) {
  const GeometryCase cases[] = {
      {"", 65536, 4, "1G", kGiB},
      {"-o cluster_size=4096", 4096, 4, "1G", kGiB},
      {"-o table_size=16", 65536, 16, "1G", kGiB},
      {"-o cluster_size=1M,table_size=2", 1 << 20, 2, "1G", kGiB},
      {"-o table_size=2", 65536, 2, "1G", kGiB},
      {"", 65536, 4, "1000", 1000},  // rounded up to 1024
      {"", 65536, 4, "64T", 64 * kTiB},
      {"", 65536, 4, "0", 0},
      {"-o cluster_size=4096,table_size=16", 4096, 16, "256G", 256 * kGiB},
      {"-o cluster_size=2M,table_size=8", 2 << 20, 8, "1G", kGiB},
      {"-o cluster_size=8192,table_size=8", 8192, 8, "513", 513},
  };
  TempDir dir;
  for (const GeometryCase& c : cases) {
    SCOPED_TRACE(c.qemu_opts + " " + c.qemu_size);
    CreateOptions opt;
    opt.path = dir.File("ours.qed");
    opt.size = c.size;
    opt.cluster_size = c.cs;
    opt.table_size = c.ts;
    ExpectSameAsQemu(dir, opt, c.qemu_opts, c.qemu_size);
  }
  // The rounding is visible in the header: 1000 -> 1024.
  CreateOptions opt;
  opt.path = dir.File("small.qed");
  opt.size = 1000;
  ASSERT_TRUE(CreateImage(opt).ok());
  EXPECT_EQ(fmt_test::ReadLe64(opt.path, 48), 1024u);
}

TEST(QedCreate, TruncatesAnExistingFile) {
  TempDir dir;
  const std::string path = dir.File("old.qed");
  MustRun("head -c 5000000 /dev/urandom > " + Q(path));
  CreateOptions opt;
  opt.path = path;
  opt.size = kGiB;
  ASSERT_TRUE(CreateImage(opt).ok());
  EXPECT_EQ(FileSize(path), 5u * 65536);
  MustRun("qemu-img create -q -f qed " + Q(dir.File("ref.qed")) + " 1G");
  EXPECT_EQ(Shell("cmp " + Q(path) + " " + Q(dir.File("ref.qed"))).exit_code, 0);
}

TEST(QedCreate, RefusesAFileAnotherProcessUses_LeavesItAlone) {
  TempDir dir;
  const std::string path = dir.File("busy.qed");
  MustRun("qemu-img create -q -f qed " + Q(path) + " 1G");
  const std::vector<std::byte> before = ReadBytes(path, 0, 4096);
  // A holder with QEMU's locks of a read-write image; its own open file description stands for
  // the other process (OFD locks of two descriptions conflict like those of two processes).
  int holder = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(holder, 0);
  ASSERT_TRUE(block::ApplyQemuLocks(holder, path, block::QemuLockPerms(false, false, false)).ok());
  CreateOptions opt;
  opt.path = path;
  opt.size = kMiB;
  absl::Status st = CreateImage(opt);
  ::close(holder);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_EQ(FileSize(path), 5u * 65536) << "a busy image must not be emptied";
  EXPECT_EQ(ReadBytes(path, 0, 4096), before);
}

TEST(QedCreate, RefusesFilesThatAreNotRegular) {
  CreateOptions opt;
  opt.path = "/dev/null";
  opt.size = kMiB;
  absl::Status st = CreateImage(opt);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("not a regular file"), std::string::npos) << st;
}

class QedCreateBacking : public ::testing::Test {
 protected:
  void SetUp() override {
    MustRun("qemu-img create -q -f raw " + Q(dir_.File("base.raw")) + " 1M");
    MustRun("qemu-io -f raw -c 'write -q -P 0x55 0 1M' " + Q(dir_.File("base.raw")));
  }
  TempDir dir_;
};

TEST_F(QedCreateBacking, RawWithSize_ByteIdentical) {
  CreateOptions opt;
  opt.path = dir_.File("ours.qed");
  opt.size = 4 * kMiB;
  opt.backing_file = "base.raw";
  opt.backing_format = "raw";
  ExpectSameAsQemu(dir_, opt, "-b base.raw -F raw", "4M");
  // features = 05, name at 0x40.
  EXPECT_EQ(fmt_test::ReadLe64(opt.path, 16), 5u);
  std::vector<std::byte> name = ReadBytes(opt.path, 64, 8);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(name.data()), name.size()), "base.raw");
  // QEMU reads the backing data through our image.
  const CommandResult r =
      Shell("qemu-io -r -f qed -c 'read -q -P 0x55 0 1M' -c 'read -q -P 0 1M 3M' " + Q(opt.path));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("fail"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("Pattern verification failed"), std::string::npos) << r.output;
}

TEST_F(QedCreateBacking, RawWithoutSize_TakesBackingSize) {
  CreateOptions opt;
  opt.path = dir_.File("ours.qed");
  opt.backing_file = "base.raw";
  opt.backing_format = "raw";
  ExpectSameAsQemu(dir_, opt, "-b base.raw -F raw", "");
  EXPECT_EQ(fmt_test::ReadLe64(opt.path, 48), kMiB);
}

TEST_F(QedCreateBacking, RawOddSizeWithoutSize_RoundsUpTo512) {
  MustRun("head -c 1000 /dev/zero > " + Q(dir_.File("odd.raw")));
  CreateOptions opt;
  opt.path = dir_.File("ours.qed");
  opt.backing_file = "odd.raw";
  opt.backing_format = "raw";
  ExpectSameAsQemu(dir_, opt, "-b odd.raw -F raw", "");
  EXPECT_EQ(fmt_test::ReadLe64(opt.path, 48), 1024u);
}

TEST_F(QedCreateBacking, QedBackingWithoutSize_TakesItsVirtualSize) {
  MustRun("qemu-img create -q -f qed " + Q(dir_.File("base.qed")) + " 3M");
  CreateOptions opt;
  opt.path = dir_.File("ours.qed");
  opt.backing_file = "base.qed";
  opt.backing_format = "qed";
  ExpectSameAsQemu(dir_, opt, "-b base.qed -F qed", "");
  EXPECT_EQ(fmt_test::ReadLe64(opt.path, 48), 3 * kMiB);
  EXPECT_EQ(fmt_test::ReadLe64(opt.path, 16), 1u);  // probe: no NO_PROBE bit
  // An empty format probes the backing file and finds the same size and bytes.
  opt.backing_format = "";
  ASSERT_TRUE(CreateImage(opt).ok());
  EXPECT_EQ(Shell("cmp " + Q(dir_.File("ref.qed")) + " " + Q(opt.path)).exit_code, 0);
}

TEST_F(QedCreateBacking, Qcow2BackingWithoutSize) {
  MustRun("qemu-img create -q -f qcow2 " + Q(dir_.File("base.qcow2")) + " 5M");
  CreateOptions opt;
  opt.path = dir_.File("ours.qed");
  opt.backing_file = "base.qcow2";
  opt.backing_format = "qcow2";
  ExpectSameAsQemu(dir_, opt, "-b base.qcow2 -F qcow2", "");
  EXPECT_EQ(fmt_test::ReadLe64(opt.path, 48), 5 * kMiB);
}

TEST_F(QedCreateBacking, RelativeNameResolvedAgainstImageDirectory) {
  MustRun("mkdir " + Q(dir_.File("sub")) + " && qemu-img create -q -f raw " +
          Q(dir_.File("sub/base.raw")) + " 2M");
  // The process's directory has no base.raw; the image's directory does (2M, not 1M).
  const CommandResult ref =
      Shell("cd / && qemu-img create -q -f qed -b base.raw -F raw " + Q(dir_.File("sub/ref.qed")));
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  CreateOptions opt;
  opt.path = dir_.File("sub/ours.qed");
  opt.backing_file = "base.raw";
  opt.backing_format = "raw";
  ASSERT_TRUE(CreateImage(opt).ok());
  EXPECT_EQ(fmt_test::ReadLe64(opt.path, 48), 2 * kMiB);
  EXPECT_EQ(Shell("cmp " + Q(dir_.File("sub/ref.qed")) + " " + Q(opt.path)).exit_code, 0);
}

TEST_F(QedCreateBacking, AbsoluteName) {
  CreateOptions opt;
  opt.path = dir_.File("ours.qed");
  opt.backing_file = dir_.File("base.raw");
  opt.backing_format = "raw";
  ExpectSameAsQemu(dir_, opt, "-b " + Q(dir_.File("base.raw")) + " -F raw", "");
}

TEST_F(QedCreateBacking, MissingBackingFile_Refused) {
  CreateOptions opt;
  opt.path = dir_.File("ours.qed");
  opt.size = kMiB;
  opt.backing_file = "nothere.raw";
  opt.backing_format = "raw";
  absl::Status st = CreateImage(opt);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(st.message().find("cannot open backing file"), std::string::npos) << st;
  EXPECT_NE(st.message().find("nothere.raw"), std::string::npos) << st;
  EXPECT_EQ(Shell("test -e " + Q(opt.path)).exit_code, 1) << "nothing may be created";
}

struct RefusalCase {
  const char* name;
  CreateOptions opt;
  std::string expect;
};

TEST(QedCreate, Refusals_NameTheProblemAndLeaveExistingFileAlone) {
  TempDir dir;
  const std::string path = dir.File("keep.qed");
  auto make = [&](uint64_t size, uint32_t cs, uint32_t ts, std::string backing = "",
                  std::string fmt = "") {
    CreateOptions o;
    o.path = path;
    o.size = size;
    o.cluster_size = cs;
    o.table_size = ts;
    o.backing_file = std::move(backing);
    o.backing_format = std::move(fmt);
    return o;
  };
  CreateOptions no_size = make(0, 65536, 4);
  no_size.size.reset();
  const std::vector<RefusalCase> cases = {
      {"table size 1 (Q1)", make(kGiB, 65536, 1), "table size 1 is not supported"},
      {"Q2 geometry", make(0, 4 << 20, 4), "overflows 64 bits"},
      {"cluster size", make(kGiB, 3000, 4), "invalid cluster size 3000"},
      {"table size", make(kGiB, 65536, 3), "invalid table size 3"},
      {"too large", make(64 * kTiB + 512, 65536, 4),
       "image size 70368744178176 exceeds the maximum 70368744177664"},
      {"too large after rounding", make(16 * kGiB + 1, 4096, 4), "exceeds the maximum"},
      {"name does not fit the header cluster", make(kMiB, 4096, 4, std::string(4033, 'a'), "raw"),
       "does not fit in the header cluster"},
      {"name too long", make(kMiB, 65536, 4, std::string(4096, 'a'), "raw"),
       "backing file name too long"},
      {"format without file", make(kMiB, 65536, 4, "", "raw"), "without a backing file"},
      {"no size and no backing file", no_size, "size is required"},
  };
  for (const RefusalCase& c : cases) {
    SCOPED_TRACE(c.name);
    MustRun("echo precious > " + Q(path));
    absl::Status st = CreateImage(c.opt);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find(c.expect), std::string::npos) << st;
    EXPECT_EQ(FileSize(path), 9u) << "a refused create must not touch the file";
  }
}

TEST(QedCreate, LongestNameThatFits_QemuOpensIt) {
  TempDir dir;
  // 64 + 4032 = 4096: exactly one 4 KiB header cluster.
  const std::string name(4032, 'b');
  const std::string raw = dir.path() + "/" + name.substr(0, 200);
  MustRun("qemu-img create -q -f raw " + Q(raw) + " 1M");
  CreateOptions opt;
  opt.path = dir.File("ours.qed");
  opt.size = kMiB;
  opt.cluster_size = 4096;
  // Make the long name resolve to the real file via many "./" components.
  std::string longname = name.substr(0, 200);
  while (longname.size() + 2 <= 4032) longname = "./" + longname;
  ASSERT_EQ(longname.size(), 4032u);
  opt.backing_file = longname;
  opt.backing_format = "raw";
  absl::Status st = CreateImage(opt);
  ASSERT_TRUE(st.ok()) << st;
  const CommandResult r = Shell("qemu-io -r -f qed -c 'read -q -P 0 0 64k' " + Q(opt.path));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("failed"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace qedfuse::qed
