// CheckImage against `qemu-img check --output=json` on images written by qemu-img/qemu-io and
// corrupted with byte patches (docs/qed-format.md §15.6). Repairs are compared byte for byte with
// `qemu-img check -r all` on a copy, and must leave images that qemu-img accepts.
#include "block/qed/qed_check.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "qed_fmt_test_util.h"

namespace qedfuse::qed {
namespace {

using fmt_test::CheckFile;
using fmt_test::CommandResult;
using fmt_test::FileSize;
using fmt_test::JsonCount;
using fmt_test::JsonHas;
using fmt_test::MustRun;
using fmt_test::PatchLe64;
using fmt_test::ReadLe64;
using fmt_test::Shell;
using fmt_test::TempDir;

std::string Q(const std::string& s) { return "'" + s + "'"; }

int ExpectedExitCode(const CheckReport& r) {
  if (r.check_errors) return 1;
  if (r.corruptions) return 2;
  if (r.leaks) return 3;
  return 0;
}

bool HasMessage(const CheckReport& r, const std::string& needle) {
  for (const std::string& m : r.messages) {
    if (m.find(needle) != std::string::npos) return true;
  }
  return false;
}

std::string AllMessages(const CheckReport& r) {
  std::string s;
  for (const std::string& m : r.messages) s += m + "\n";
  return s;
}

// Layout of a default-geometry image after `write 0 64k` and `write 64k 64k` by qemu-io:
// header 0x0, L1 0x10000, data 0x50000, L2 0x60000-0x9ffff, data 0xa0000; size 0xb0000.
constexpr uint64_t kL1 = 0x10000;
constexpr uint64_t kL2 = 0x60000;
constexpr uint64_t kData0 = 0x50000;
constexpr uint64_t kData1 = 0xa0000;
constexpr uint64_t kFileEnd = 0xb0000;

class QedCheck : public ::testing::Test {
 protected:
  // |create| is "[-o options] size".
  std::string Make(const std::string& name, const std::string& create,
                   const std::vector<std::string>& io_cmds) {
    const std::string path = dir_.File(name);
    const std::size_t sp = create.rfind(' ');
    const std::string opts = sp == std::string::npos ? "" : create.substr(0, sp);
    const std::string size = sp == std::string::npos ? create : create.substr(sp + 1);
    MustRun("qemu-img create -q -f qed " + opts + " " + Q(path) + " " + size);
    if (!io_cmds.empty()) {
      std::string cmd = "qemu-io -f qed";
      for (const std::string& c : io_cmds) cmd += " -c '" + c + "'";
      MustRun(cmd + " " + Q(path));
    }
    return path;
  }

  // The two-cluster image whose layout is given above.
  std::string MakeTwoClusters(const std::string& name) {
    const std::string path =
        Make(name, "64M", {"write -q -P 0xab 0 64k", "write -q -P 0xcd 64k 64k"});
    EXPECT_EQ(ReadLe64(path, kL1), kL2);
    EXPECT_EQ(ReadLe64(path, kL2), kData0);
    EXPECT_EQ(ReadLe64(path, kL2 + 8), kData1);
    EXPECT_EQ(FileSize(path), kFileEnd);
    return path;
  }

  std::string Copy(const std::string& from, const std::string& name) {
    const std::string to = dir_.File(name);
    MustRun("cp " + Q(from) + " " + Q(to));
    return to;
  }

  // Runs our check (no repair) and qemu-img's on |path|; every count and the exit code agree.
  CheckReport CheckLikeQemu(const std::string& path) {
    CheckOptions opt;
    CheckReport ours = CheckFile(path, opt);
    const CommandResult q = Shell("qemu-img check -f qed --output=json " + Q(path));
    EXPECT_TRUE(JsonHas(q.output, "total-clusters")) << q.output;
    EXPECT_EQ(ours.total_clusters, JsonCount(q.output, "total-clusters")) << q.output;
    EXPECT_EQ(ours.allocated_clusters, JsonCount(q.output, "allocated-clusters")) << q.output;
    EXPECT_EQ(ours.fragmented_clusters, JsonCount(q.output, "fragmented-clusters")) << q.output;
    EXPECT_EQ(ours.corruptions, JsonCount(q.output, "corruptions")) << q.output;
    EXPECT_EQ(ours.leaks, JsonCount(q.output, "leaks")) << q.output;
    EXPECT_EQ(ours.check_errors, JsonCount(q.output, "check-errors")) << q.output;
    EXPECT_EQ(ours.corruptions_fixed, 0u);
    EXPECT_EQ(q.exit_code, ExpectedExitCode(ours)) << q.output;
    return ours;
  }

  CheckReport Repair(const std::string& path, bool truncate = false) {
    CheckOptions opt;
    opt.repair = true;
    opt.fix_leaks = truncate;
    return CheckFile(path, opt);
  }

  // Repairs |path| with ours and a copy with `qemu-img check -r all`; the files must be equal.
  CheckReport RepairLikeQemu(const std::string& path) {
    const std::string theirs = Copy(path, "qemu-repaired.qed");
    Shell("qemu-img check -q -f qed -r all " + Q(theirs));
    CheckReport r = Repair(path);
    const CommandResult cmp = Shell("cmp " + Q(theirs) + " " + Q(path));
    EXPECT_EQ(cmp.exit_code, 0) << "repair differs from qemu-img's: " << cmp.output;
    return r;
  }

  TempDir dir_;
};

TEST_F(QedCheck, CleanImagesWrittenByQemu_SameCountsAsQemu) {
  struct Case {
    const char* name;
    std::string create;
    std::vector<std::string> io;
  };
  const std::vector<Case> cases = {
      {"spec mix",
       "64M",
       {"write -q -P 0xab 0 64k", "write -q -P 0xcd 70000 5000", "write -q -z 1M 128k",
        "write -q -z 3M 4k", "write -q -P 0x11 32M 1M"}},
      {"4K clusters, 16-cluster tables, several L2 tables",
       "-o cluster_size=4096,table_size=16 1G",
       {"write -q 0 4k", "write -q 40M 8k", "write -q 100M 64k", "write -q 200M 4k",
        "write -q -z 300M 8k"}},
      {"reverse order writes",
       "16M",
       {"write -q 192k 64k", "write -q 128k 64k", "write -q 64k 64k", "write -q 0 64k"}},
      {"two L2 tables", "4G", {"write -q 0 64k", "write -q 2G 64k", "write -q 2G 128k"}},
      {"1M clusters, 2-cluster tables",
       "-o cluster_size=1M,table_size=2 1G",
       {"write -q 0 3M", "write -q 500M 1M", "write -q -z 600M 2M"}},
      {"empty", "1G", {}},
      {"odd size", "1000", {"write -q 0 1k"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = Make("clean.qed", c.create, c.io);
    const CheckReport r = CheckLikeQemu(path);
    EXPECT_EQ(r.corruptions, 0u);
    EXPECT_EQ(r.leaks, 0u);
    EXPECT_TRUE(r.messages.empty()) << AllMessages(r);
  }
}

TEST_F(QedCheck, ReverseOrderWrites_CountFragments) {
  const std::string path =
      Make("frag.qed", "16M", {"write -q 192k 64k", "write -q 128k 64k", "write -q 0 64k"});
  const CheckReport r = CheckLikeQemu(path);
  EXPECT_EQ(r.allocated_clusters, 3u);
  EXPECT_EQ(r.fragmented_clusters, 2u);
}

TEST_F(QedCheck, NeedCheckLeftByCrash_IsClean) {
  const std::string path = Make("crash.qed", "64M", {});
  // qemu-io dies by SIGABRT after the write, leaving NEED_CHECK set on disk.
  const CommandResult crash = Shell("qemu-io -f qed -c 'write -q 0 64k' -c abort " + Q(path));
  EXPECT_NE(crash.exit_code, 0);
  ASSERT_EQ(ReadLe64(path, 16) & kFeatureNeedCheck, kFeatureNeedCheck);
  const CheckReport r = CheckLikeQemu(path);
  EXPECT_EQ(r.allocated_clusters, 1u);
}

TEST_F(QedCheck, L2EntryPastEof_FixableThenLeak) {
  const std::string path = MakeTwoClusters("l2eof.qed");
  PatchLe64(path, kL2, 0x10000000);
  const CheckReport r = CheckLikeQemu(path);
  EXPECT_EQ(r.corruptions, 1u);
  EXPECT_EQ(r.leaks, 1u);  // the cluster the entry used to point at
  EXPECT_TRUE(HasMessage(r,
                         "L2 table at 0x60000 entry 0: cluster offset 0x10000000 points past "
                         "end of file (0xb0000)"))
      << AllMessages(r);
  EXPECT_TRUE(HasMessage(r, "leaked clusters at 0x50000 (1 cluster(s)")) << AllMessages(r);

  const CheckReport fixed = RepairLikeQemu(path);
  EXPECT_EQ(fixed.corruptions, 0u);
  EXPECT_EQ(fixed.corruptions_fixed, 1u);
  EXPECT_EQ(fixed.leaks, 1u);
  EXPECT_EQ(fixed.leaks_fixed, 0u);
  EXPECT_EQ(ReadLe64(path, kL2), 0u);
  EXPECT_EQ(ReadLe64(path, kL2 + 8), kData1);
  const CheckReport again = CheckLikeQemu(path);  // qemu-img: exit 3, only the leak
  EXPECT_EQ(again.corruptions, 0u);
  EXPECT_EQ(again.leaks, 1u);
  EXPECT_EQ(again.allocated_clusters, 1u);
}

TEST_F(QedCheck, L2EntryMisaligned_Fixable) {
  const std::string path = MakeTwoClusters("l2mis.qed");
  PatchLe64(path, kL2 + 8, kData1 + 0x200);
  const CheckReport r = CheckLikeQemu(path);
  EXPECT_EQ(r.corruptions, 1u);
  EXPECT_TRUE(HasMessage(r,
                         "entry 1: cluster offset 0xa0200 is not a multiple of the cluster "
                         "size 65536"))
      << AllMessages(r);
  const CheckReport fixed = RepairLikeQemu(path);
  EXPECT_EQ(fixed.corruptions_fixed, 1u);
  EXPECT_EQ(ReadLe64(path, kL2 + 8), 0u);
  CheckLikeQemu(path);
  EXPECT_EQ(Shell("qemu-img check -q -f qed " + Q(path)).exit_code, 3);
}

TEST_F(QedCheck, DuplicateL2Entries_Unfixable) {
  const std::string path = MakeTwoClusters("dup.qed");
  PatchLe64(path, kL2 + 8, kData0);
  const CheckReport r = CheckLikeQemu(path);
  EXPECT_EQ(r.corruptions, 1u);
  EXPECT_EQ(r.leaks, 1u);
  EXPECT_TRUE(HasMessage(r, "entry 1: cluster 0x50000 is already in use (duplicate reference)"))
      << AllMessages(r);
  const std::string before = Copy(path, "before.qed");
  const CheckReport after = RepairLikeQemu(path);
  EXPECT_EQ(after.corruptions, 1u);
  EXPECT_EQ(after.corruptions_fixed, 0u);
  EXPECT_EQ(Shell("cmp " + Q(before) + " " + Q(path)).exit_code, 0) << "nothing to write";
  EXPECT_EQ(Shell("qemu-img check -q -f qed " + Q(path)).exit_code, 2);
}

TEST_F(QedCheck, L2EntryPointingIntoL1Table_IsDuplicate) {
  const std::string path = MakeTwoClusters("intol1.qed");
  PatchLe64(path, kL2 + 16, kL1 + 0x10000);
  const CheckReport r = CheckLikeQemu(path);
  EXPECT_EQ(r.corruptions, 1u);
  EXPECT_EQ(r.allocated_clusters, 3u);
}

TEST_F(QedCheck, L1EntryPastEof_FixableAndEverythingBelowLeaks) {
  const std::string path = MakeTwoClusters("l1eof.qed");
  PatchLe64(path, kL1, 0x10000000);
  const CheckReport r = CheckLikeQemu(path);
  EXPECT_EQ(r.corruptions, 1u);
  EXPECT_EQ(r.leaks, 6u);  // 4 L2 table clusters and 2 data clusters
  EXPECT_EQ(r.allocated_clusters, 0u);
  EXPECT_TRUE(HasMessage(r, "L1 entry 0: L2 table offset 0x10000000 runs past end of file"))
      << AllMessages(r);
  const CheckReport fixed = RepairLikeQemu(path);
  EXPECT_EQ(fixed.corruptions_fixed, 1u);
  EXPECT_EQ(ReadLe64(path, kL1), 0u);
  const CheckReport again = CheckLikeQemu(path);
  EXPECT_EQ(again.leaks, 6u);
}

TEST_F(QedCheck, L1EntryCutByEof_AndMisaligned_Fixable) {
  const std::string path = MakeTwoClusters("l1cut.qed");
  PatchLe64(path, kL1 + 8, 0x80000);  // clusters 8..11, file ends at 11
  PatchLe64(path, kL1 + 16, 0x60008);
  PatchLe64(path, kL1 + 24, 1);  // 1 is never valid in L1
  const CheckReport r = CheckLikeQemu(path);
  EXPECT_EQ(r.corruptions, 3u);
  RepairLikeQemu(path);
  const CheckReport again = CheckLikeQemu(path);
  EXPECT_EQ(again.corruptions, 0u);
  EXPECT_EQ(again.allocated_clusters, 2u);
}

TEST_F(QedCheck, DuplicateL2Table_CountsEveryOverlappingCluster) {
  const std::string path = MakeTwoClusters("duptable.qed");
  PatchLe64(path, kL1 + 8, kL2);
  const CheckReport r = CheckLikeQemu(path);
  EXPECT_EQ(r.corruptions, 4u);
  EXPECT_TRUE(HasMessage(r, "L1 entry 1: L2 table at 0x60000 overlaps 4 cluster(s) already in use"))
      << AllMessages(r);
  EXPECT_EQ(r.allocated_clusters, 2u) << "the duplicate table is skipped";
}

TEST_F(QedCheck, TrailingGarbageCluster_OneLeakNotRepaired) {
  const std::string path = MakeTwoClusters("tail.qed");
  const std::string original = Copy(path, "orig.qed");
  MustRun("truncate -s +64K " + Q(path));
  const CheckReport r = CheckLikeQemu(path);
  EXPECT_EQ(r.leaks, 1u);
  EXPECT_TRUE(HasMessage(r, "leaked clusters at 0xb0000 (1 cluster(s), 65536 bytes)"))
      << AllMessages(r);
  const CheckReport fixed = RepairLikeQemu(path);
  EXPECT_EQ(fixed.leaks, 1u);
  EXPECT_EQ(fixed.leaks_fixed, 0u);
  EXPECT_EQ(FileSize(path), kFileEnd + 0x10000);
  EXPECT_EQ(Shell("qemu-img check -q -f qed " + Q(path)).exit_code, 3);
}

TEST_F(QedCheck, TrailingLeakTruncation_OptIn) {
  const std::string path = MakeTwoClusters("trunc.qed");
  const std::string original = Copy(path, "orig.qed");
  MustRun("truncate -s +192K " + Q(path));
  const CheckReport fixed = Repair(path, /*truncate=*/true);
  EXPECT_EQ(fixed.leaks, 0u);
  EXPECT_EQ(fixed.leaks_fixed, 3u);
  EXPECT_EQ(fixed.file_size, kFileEnd);
  EXPECT_EQ(FileSize(path), kFileEnd);
  EXPECT_EQ(Shell("cmp " + Q(original) + " " + Q(path)).exit_code, 0);
  EXPECT_EQ(Shell("qemu-img check -q -f qed " + Q(path)).exit_code, 0);
}

TEST_F(QedCheck, TrailingLeakTruncation_KeepsInnerLeaks) {
  const std::string path = MakeTwoClusters("inner.qed");
  PatchLe64(path, kL2 + 8, 0);  // cluster 0xa0000 (the last one) leaks
  MustRun("truncate -s +64K " + Q(path));
  const CheckReport fixed = Repair(path, /*truncate=*/true);
  EXPECT_EQ(fixed.leaks_fixed, 2u);
  EXPECT_EQ(FileSize(path), kData1);
  CheckLikeQemu(path);
  EXPECT_EQ(Shell("qemu-img check -q -f qed " + Q(path)).exit_code, 0);
}

TEST_F(QedCheck, PartialTrailingCluster_IsNotALeak) {
  const std::string path = MakeTwoClusters("partial.qed");
  MustRun("truncate -s +1000 " + Q(path));
  const CheckReport r = CheckLikeQemu(path);
  EXPECT_EQ(r.leaks, 0u);
}

TEST_F(QedCheck, ReadError_CountedAndLeaksNotCounted) {
  const std::string path = MakeTwoClusters("eio.qed");
  MustRun("truncate -s +64K " + Q(path));
  absl::StatusOr<fmt_test::LoadedImage> img = fmt_test::LoadImage(path);
  ASSERT_TRUE(img.ok());
  fmt_test::PosixFileDriver file(path, /*read_only=*/true);
  file.fail_read_offsets.insert(kL2);
  coro::EventLoop loop;
  block::Child child(file);  // checked in place
  Result<CheckReport> r =
      loop.RunSync(CheckImage(child, img->header, img->geo, img->l1, img->file_size, {}));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->check_errors, 1u);
  EXPECT_EQ(r->leaks, 0u);
  EXPECT_TRUE(HasMessage(*r, "cannot read L2 table at 0x60000")) << AllMessages(*r);
}

TEST_F(QedCheck, WriteBackError_CountedAsCheckError) {
  const std::string path = MakeTwoClusters("ewrite.qed");
  PatchLe64(path, kL2, 0x10000000);
  absl::StatusOr<fmt_test::LoadedImage> img = fmt_test::LoadImage(path);
  ASSERT_TRUE(img.ok());
  fmt_test::PosixFileDriver file(path);
  file.fail_write_offsets.insert(kL2);
  CheckOptions opt;
  opt.repair = true;
  coro::EventLoop loop;
  block::Child child(file);  // checked in place
  Result<CheckReport> r =
      loop.RunSync(CheckImage(child, img->header, img->geo, img->l1, img->file_size, opt));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->check_errors, 1u);
  EXPECT_EQ(r->leaks, 0u);
  EXPECT_TRUE(HasMessage(*r, "cannot write repaired L2 table at 0x60000")) << AllMessages(*r);
}

TEST_F(QedCheck, SmallMaxTransfer_TablesSplitSameResult) {
  const std::string path = MakeTwoClusters("split.qed");
  PatchLe64(path, kL2 + 8 * 20000, 0x10000000);  // an entry in the table's third cluster
  const CheckReport expect = CheckLikeQemu(path);
  absl::StatusOr<fmt_test::LoadedImage> img = fmt_test::LoadImage(path);
  ASSERT_TRUE(img.ok());
  block::BlockLimits lim;
  lim.request_alignment = 4096;
  lim.max_transfer = 65536;
  fmt_test::PosixFileDriver file(path, false, lim);
  CheckOptions opt;
  opt.repair = true;
  coro::EventLoop loop;
  block::Child child(file);  // checked in place
  Result<CheckReport> r =
      loop.RunSync(CheckImage(child, img->header, img->geo, img->l1, img->file_size, opt));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(file.max_request, 65536u);
  EXPECT_EQ(file.reads, 4u);
  EXPECT_EQ(file.writes, 4u);  // the L2 table, in four pieces
  EXPECT_EQ(r->corruptions_fixed, expect.corruptions);
  EXPECT_EQ(r->allocated_clusters, expect.allocated_clusters);
  EXPECT_EQ(ReadLe64(path, kL2 + 8 * 20000), 0u);
  EXPECT_EQ(Shell("qemu-img check -q -f qed " + Q(path)).exit_code, 0);
}

TEST_F(QedCheck, SmallClustersBigFile_NoFalseLeaks) {
  // Quirk Q4: QEMU divides by cs - 1 and reports leaks on this consistent image; we must not.
  const std::string path = Make("q4.qed", "-o cluster_size=4096 1G", {"write -q 0 40M"});
  const CheckReport r = CheckFile(path, {});
  const CommandResult q = Shell("qemu-img check -f qed --output=json " + Q(path));
  EXPECT_EQ(r.leaks, 0u) << AllMessages(r);
  EXPECT_EQ(r.corruptions, 0u);
  EXPECT_EQ(r.allocated_clusters, 10240u);
  EXPECT_EQ(r.allocated_clusters, JsonCount(q.output, "allocated-clusters"));
  EXPECT_EQ(r.fragmented_clusters, JsonCount(q.output, "fragmented-clusters"));
  // Every cluster is accounted for: header, L1, 5 L2 tables of 4 clusters, data.
  EXPECT_EQ(FileSize(path) / 4096, 1u + 4u + 5u * 4u + 10240u);
  std::printf("qemu-img reports %llu leaks on this image (quirk Q4)\n",
              static_cast<unsigned long long>(JsonCount(q.output, "leaks")));
}

TEST_F(QedCheck, HugeSparseFile_ExactLeakCountCheaply) {
  const std::string path = Make("huge.qed", "-o cluster_size=4096 1G", {"write -q 0 4k"});
  MustRun("truncate -s 1T " + Q(path));
  const CheckReport r = CheckFile(path, {});
  // 2^28 clusters: header, L1 (4), L2 (4) and one data cluster are used.
  EXPECT_EQ(r.leaks, (uint64_t{1} << 28) - 10);
  EXPECT_EQ(r.messages.size(), 1u) << AllMessages(r);
  EXPECT_TRUE(HasMessage(r, "leaked clusters at 0xa000")) << AllMessages(r);
}

TEST_F(QedCheck, Messages_AreCapped) {
  const std::string path = MakeTwoClusters("many.qed");
  for (uint64_t i = 2; i < 12; ++i) PatchLe64(path, kL2 + 8 * i, 0x10000000 + i * 0x10000);
  CheckOptions opt;
  opt.max_messages = 3;
  const CheckReport r = CheckFile(path, opt);
  EXPECT_EQ(r.corruptions, 10u);
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages.back(), "... and 7 more findings not listed");
}

TEST_F(QedCheck, WrongL1Size_IsAnError) {
  const std::string path = MakeTwoClusters("l1size.qed");
  absl::StatusOr<fmt_test::LoadedImage> img = fmt_test::LoadImage(path);
  ASSERT_TRUE(img.ok());
  img->l1.pop_back();
  fmt_test::PosixFileDriver file(path, true);
  coro::EventLoop loop;
  block::Child child(file);  // checked in place
  Result<CheckReport> r =
      loop.RunSync(CheckImage(child, img->header, img->geo, img->l1, img->file_size, {}));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), ErrnoCode(EINVAL));
}

}  // namespace
}  // namespace qedfuse::qed
