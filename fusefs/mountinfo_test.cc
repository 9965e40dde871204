// Unit tests of the mount table helpers: mountinfo parsing (escapes, optional fields, stacked
// mounts), option lookup and the parent-only path resolution.
#include "fusefs/mountinfo.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <string>

namespace qedfuse::fusefs {
namespace {

constexpr char kTable[] =
    "26 1 0:23 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "44 26 0:39 / /srv/my\\040disk.raw rw,nosuid,nodev,relatime shared:7 master:2 - "
    "fuse.qedfuse /srv/a\\134b.qed rw,user_id=0,group_id=0,default_permissions\n"
    "garbage line\n"
    "45 44 0:40 / /srv/my\\040disk.raw ro,nosuid,nodev,relatime - fuse.qedfuse /srv/other.qed "
    "ro,user_id=1000,group_id=1000\n"
    "46 26 0:41 / /run rw - tmpfs tmpfs\n";

TEST(MountInfo, ParsesFieldsAndEscapes) {
  std::vector<MountEntry> t = ParseMountInfo(kTable);
  ASSERT_EQ(t.size(), 4u);  // the malformed line is skipped
  EXPECT_EQ(t[1].id, 44);
  EXPECT_EQ(t[1].parent_id, 26);
  EXPECT_EQ(t[1].mount_point, "/srv/my disk.raw");
  EXPECT_EQ(t[1].mount_options, "rw,nosuid,nodev,relatime");
  EXPECT_EQ(t[1].fstype, "fuse.qedfuse");
  EXPECT_EQ(t[1].source, "/srv/a\\b.qed");
  EXPECT_EQ(t[1].super_options, "rw,user_id=0,group_id=0,default_permissions");
  EXPECT_EQ(t[3].super_options, "");  // no super options field
}

TEST(MountInfo, TopMountOfAStack) {
  std::vector<MountEntry> t = ParseMountInfo(kTable);
  std::optional<MountEntry> top = TopMountAt(t, "/srv/my disk.raw");
  ASSERT_TRUE(top.has_value());
  EXPECT_EQ(top->id, 45);
  EXPECT_EQ(top->source, "/srv/other.qed");
  EXPECT_FALSE(TopMountAt(t, "/srv/my").has_value());
  EXPECT_FALSE(TopMountAt(t, "/srv/my disk.raw/").has_value());
}

TEST(MountInfo, HasMountOption) {
  EXPECT_TRUE(HasMountOption("ro,nosuid,nodev", "ro"));
  EXPECT_TRUE(HasMountOption("ro,nosuid,nodev", "nodev"));
  EXPECT_FALSE(HasMountOption("rw,nosuid", "ro"));
  EXPECT_FALSE(HasMountOption("user_id=0", "user_id"));
  EXPECT_FALSE(HasMountOption("", "ro"));
}

TEST(MountInfo, ResolveParentLeavesTheLastComponentAlone) {
  char tmpl[] = "/tmp/mountinfo_test.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  char real[PATH_MAX];
  ASSERT_NE(realpath(tmpl, real), nullptr);
  const std::string dir = real;
  ASSERT_EQ(symlink("/nonexistent/target", (dir + "/dangling").c_str()), 0);
  int err = 0;
  // The link is not followed (a dead mount there would not be touched either).
  EXPECT_EQ(ResolveParent(dir + "/./dangling", &err), dir + "/dangling");
  EXPECT_EQ(ResolveParent(dir + "/new.raw", &err), dir + "/new.raw");
  EXPECT_EQ(ResolveParent("/", &err), "/");
  EXPECT_EQ(ResolveParent(dir + "/missing/x.raw", &err), "");
  EXPECT_EQ(err, ENOENT);
  char cwd[PATH_MAX];
  ASSERT_NE(getcwd(cwd, sizeof(cwd)), nullptr);
  ASSERT_EQ(chdir(dir.c_str()), 0);
  EXPECT_EQ(ResolveParent("rel.raw", &err), dir + "/rel.raw");
  ASSERT_EQ(chdir(cwd), 0);
  unlink((dir + "/dangling").c_str());
  rmdir(dir.c_str());
}

}  // namespace
}  // namespace qedfuse::fusefs
