// Unit tests of the qedfuse command line: both option spellings, the argument order mount.fuse3
// uses, fstab-only options, and errors.
#include "fusefs/mount_options.h"

#include <gtest/gtest.h>

#include <vector>

namespace qedfuse::fusefs {
namespace {

absl::StatusOr<MountOptions> Parse(std::vector<const char*> args) {
  args.insert(args.begin(), "qedfuse");
  return ParseCommandLine(static_cast<int>(args.size()), args.data());
}

TEST(MountOptions, PositionalsAndDefaults) {
  auto o = Parse({"img.qed", "disk.raw"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->image, "img.qed");
  EXPECT_EQ(o->mountpoint, "disk.raw");
  EXPECT_EQ(o->format, "qed");
  EXPECT_FALSE(o->read_only);
  EXPECT_FALSE(o->foreground);
  EXPECT_EQ(o->cache, block::CacheMode::kWriteback);
  EXPECT_TRUE(o->EffectiveWritebackCache());
}

TEST(MountOptions, MountFuseOrderWithFstabOptions) {
  // What mount.fuse3 runs for "img mnt fuse.qedfuse defaults,noauto,user,_netdev 0 0".
  auto o = Parse(
      {"img.qed", "mnt", "-o", "rw,noauto,user,_netdev,defaults,x-systemd.automount,dev,suid"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_FALSE(o->read_only);
  EXPECT_EQ(o->fuse_options, (std::vector<std::string>{"dev", "suid"}));
}

TEST(MountOptions, FuseStyleOptions) {
  auto o = Parse({"-o", "ro,allow_other,cache=none,aio=threads,need_check_delay=10", "a", "b",
                  "-onosuid,format=raw"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->read_only);
  EXPECT_TRUE(o->allow_other);
  EXPECT_EQ(o->cache, block::CacheMode::kNone);
  EXPECT_FALSE(o->EffectiveWritebackCache());
  EXPECT_EQ(o->aio, block::AioMode::kThreads);
  EXPECT_EQ(o->need_check_delay, std::chrono::milliseconds(10));
  EXPECT_EQ(o->format, "raw");
  EXPECT_EQ(o->fuse_options, (std::vector<std::string>{"nosuid"}));
}

TEST(MountOptions, LongOptions) {
  auto o = Parse(
      {"--read-only", "--cache=none", "--writeback-cache=on", "--aio", "io_uring", "-d", "a", "b"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->read_only);
  EXPECT_TRUE(o->EffectiveWritebackCache());  // explicit setting wins over the cache default
  EXPECT_EQ(o->aio, block::AioMode::kIoUring);
  EXPECT_TRUE(o->debug);
  EXPECT_TRUE(o->foreground);  // -d implies -f
}

TEST(MountOptions, IoUring) {
  using protocol::IoUringMode;
  auto dflt = Parse({"a", "b"});
  ASSERT_TRUE(dflt.ok()) << dflt.status();
  EXPECT_EQ(dflt->io_uring, IoUringMode::kAuto);
  auto on = Parse({"--io-uring=on", "a", "b"});
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_EQ(on->io_uring, IoUringMode::kOn);
  auto off = Parse({"a", "b", "--io-uring", "off"});
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(off->io_uring, IoUringMode::kOff);
  auto o = Parse({"a", "b", "-o", "io_uring=off,io_uring=on"});  // the last one wins
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->io_uring, IoUringMode::kOn);
  EXPECT_EQ(Parse({"--io-uring=maybe", "a", "b"}).status().message(),
            "invalid io_uring mode 'maybe' (use auto, on or off)");
  EXPECT_EQ(Parse({"a", "b", "-o", "io_uring=yes"}).status().message(),
            "invalid io_uring mode 'yes' (use auto, on or off)");
  // A mount-time setting: a remount reports it as unchanged.
  auto re = Parse({"a", "b", "-o", "remount,ro,io_uring=off"});
  ASSERT_TRUE(re.ok()) << re.status();
  EXPECT_EQ(re->mount_time_settings, (std::vector<std::string>{"io_uring=off"}));
}

TEST(MountOptions, WritebackCacheOff) {
  auto o = Parse({"a", "b", "-o", "writeback_cache=off"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_FALSE(o->EffectiveWritebackCache());
}

TEST(MountOptions, EscapedCommaInOptionValue) {
  auto o = Parse({"a", "b", "-o", "fsname=x\\,y"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->fuse_options, (std::vector<std::string>{"fsname=x,y"}));
}

TEST(MountOptions, OwnerAndMode) {
  auto d = Parse({"a", "b"});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->uid.has_value());
  EXPECT_FALSE(d->gid.has_value());
  EXPECT_EQ(d->FileMode(false), 0600u);  // private to the mounting user by default
  EXPECT_EQ(d->FileMode(true), 0400u);
  auto o = Parse({"a", "b", "-o", "uid=65534,gid=100,umask=022,allow_root,default_permissions"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->uid, 65534u);
  EXPECT_EQ(o->gid, 100u);
  EXPECT_EQ(o->FileMode(false), 0644u);
  EXPECT_EQ(o->FileMode(true), 0444u);
  EXPECT_TRUE(o->allow_root);
  EXPECT_FALSE(o->allow_other);
  EXPECT_TRUE(o->fuse_options.empty());  // default_permissions is always on, not passed twice
  auto z = Parse({"a", "b", "-o", "umask=0"});
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_EQ(z->FileMode(false), 0666u);
}

TEST(MountOptions, OwnerAndModeErrors) {
  EXPECT_EQ(Parse({"a", "b", "-o", "uid=alice"}).status().message(),
            "invalid uid 'alice' (a number expected)");
  EXPECT_FALSE(Parse({"a", "b", "-o", "uid="}).ok());
  EXPECT_FALSE(Parse({"a", "b", "-o", "uid=-1"}).ok());
  EXPECT_FALSE(Parse({"a", "b", "-o", "gid=4294967295"}).ok());
  EXPECT_FALSE(Parse({"a", "b", "-o", "gid=4294967296"}).ok());
  EXPECT_EQ(Parse({"a", "b", "-o", "umask=0800"}).status().message(),
            "invalid umask '0800' (an octal number up to 0777)");
  EXPECT_FALSE(Parse({"a", "b", "-o", "umask=1777"}).ok());
  EXPECT_FALSE(Parse({"a", "b", "-o", "umask"}).ok());
  EXPECT_EQ(Parse({"a", "b", "-o", "allow_other,allow_root"}).status().message(),
            "allow_other and allow_root cannot be combined");
}

TEST(MountOptions, Errors) {
  EXPECT_EQ(Parse({}).status().message(), "missing IMAGE and MOUNTPOINT arguments");
  EXPECT_EQ(Parse({"a"}).status().message(), "missing MOUNTPOINT argument");
  EXPECT_EQ(Parse({"a", "b", "c"}).status().message(), "unexpected argument 'c'");
  EXPECT_EQ(Parse({"a", "b", "-o", "bogus"}).status().message(), "unknown mount option 'bogus'");
  EXPECT_EQ(Parse({"--bogus", "a", "b"}).status().message(), "unknown option '--bogus'");
  EXPECT_FALSE(Parse({"--cache=sometimes", "a", "b"}).ok());
  EXPECT_FALSE(Parse({"--aio=magic", "a", "b"}).ok());
  EXPECT_FALSE(Parse({"--format=qcow2", "a", "b"}).ok());
  EXPECT_FALSE(Parse({"a", "b", "-o"}).ok());
  EXPECT_FALSE(Parse({"a", "b", "-o", "need_check_delay=-1"}).ok());
}

TEST(MountOptions, PollLimit) {
  auto o = Parse({"a", "b"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->poll_limit, MountOptions::kDefaultPollLimit);
  o = Parse({"--poll-us=0", "a", "b"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->poll_limit, std::chrono::microseconds(0));
  o = Parse({"a", "b", "-o", "poll_us=10000"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->poll_limit, std::chrono::microseconds(10000));
  for (const char* bad : {"-1", "10001", "5us", "1e3"}) {
    const std::string arg = std::string("--poll-us=") + bad;
    auto r = Parse({arg.c_str(), "a", "b"});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().message(), std::string("invalid polling time '") + bad +
                                        "' (microseconds from 0 to 10000 expected)");
  }
}

TEST(MountOptions, LogFileAndAutoUnmount) {
  auto o = Parse({"--log-file=/var/log/q.log", "a", "b", "-o", "auto_unmount"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->log_file, "/var/log/q.log");
  EXPECT_TRUE(o->auto_unmount);
  EXPECT_TRUE(o->fuse_options.empty());  // the watcher does it, not libfuse
  auto f = Parse({"a", "b", "-o", "log_file=/tmp/x\\,y.log"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->log_file, "/tmp/x,y.log");
  auto spaced = Parse({"--log-file", "l", "a", "b"});
  ASSERT_TRUE(spaced.ok()) << spaced.status();
  EXPECT_EQ(spaced->log_file, "l");
  EXPECT_FALSE(Parse({"--log-file=", "a", "b"}).ok());
  EXPECT_FALSE(Parse({"a", "b", "-o", "log_file="}).ok());
}

TEST(MountOptions, RemountAsMountFuse3RunsIt) {
  // `mount -o remount,ro MNT` of a fuse.qedfuse mount, as mount.fuse3 hands it on.
  auto o = Parse({"/img.qed", "/mnt.raw", "-o",
                  "ro,nosuid,nodev,relatime,remount,user_id=0,group_id=0,default_permissions"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->remount);
  EXPECT_TRUE(o->read_only);
  EXPECT_EQ(o->mount_flags,
            (std::vector<std::string>{"ro", "nosuid", "nodev", "relatime", "default_permissions"}));
  EXPECT_EQ(o->existing_mount_options, (std::vector<std::string>{"user_id=0", "group_id=0"}));
  EXPECT_TRUE(o->mount_time_settings.empty());
  auto rw = Parse({"a", "b", "-o", "remount,rw,cache=none", "--aio=threads"});
  ASSERT_TRUE(rw.ok()) << rw.status();
  EXPECT_FALSE(rw->read_only);
  EXPECT_EQ(rw->mount_time_settings, (std::vector<std::string>{"cache=none", "--aio"}));
  // The kernel's own FUSE options are no mount options of ours.
  EXPECT_EQ(Parse({"a", "b", "-o", "user_id=0"}).status().message(),
            "unknown mount option 'user_id=0' (the kernel sets it; it is accepted only with "
            "remount)");
}

TEST(MountOptions, HelpAndVersionNeedNoPositionals) {
  auto h = Parse({"--help"});
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->show_help);
  auto v = Parse({"-V"});
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->show_version);
}

}  // namespace
}  // namespace qedfuse::fusefs
