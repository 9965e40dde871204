// Unit tests of --debug-fault: the rule parser (every key, defaults, and each kind of malformed
// rule refused with a message naming the problem) and the installed hook over an in-memory file
// (errno passed through, skip/count, armed=PATH arming by file existence, chaining over an
// existing wrap_image_file hook).
#include "fusefs/fault_hook.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "fusefs/debug_hooks.h"
#include "fusefs/mount_options.h"
#include "qedfuse/coro/event_loop.h"
#include "support/mem_file.h"

namespace qedfuse::fusefs {
namespace {

using block::DebugEvent;
using block::FaultIo;

TEST(ParseFaultRule, Defaults) {
  auto r = ParseFaultRule("io=write");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rule.io, FaultIo::kWrite);
  EXPECT_FALSE(r->rule.event.has_value());
  EXPECT_EQ(r->rule.error, EIO);
  EXPECT_EQ(r->rule.count, 1);
  EXPECT_EQ(r->rule.skip, 0);
  EXPECT_FALSE(r->rule.fail_everything_after);
  EXPECT_TRUE(r->armed_path.empty());
  EXPECT_EQ(r->text, "io=write");
}

TEST(ParseFaultRule, EveryKey) {
  auto r =
      ParseFaultRule("io=flush,event=l2_update,error=ENOSPC,skip=200,count=5,armed=/tmp/x,die");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rule.io, FaultIo::kFlush);
  EXPECT_EQ(r->rule.event, DebugEvent::kL2Update);
  EXPECT_EQ(r->rule.error, ENOSPC);
  EXPECT_EQ(r->rule.skip, 200);
  EXPECT_EQ(r->rule.count, 5);
  EXPECT_EQ(r->armed_path, "/tmp/x");
  EXPECT_TRUE(r->rule.fail_everything_after);
}

TEST(ParseFaultRule, NamesAndAlways) {
  for (auto [name, err] : std::vector<std::pair<const char*, int>>{{"EIO", EIO},
                                                                   {"ENOSPC", ENOSPC},
                                                                   {"EDQUOT", EDQUOT},
                                                                   {"EROFS", EROFS},
                                                                   {"EFBIG", EFBIG}}) {
    auto r = ParseFaultRule(std::string("error=") + name + ",count=always");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->rule.error, err);
    EXPECT_EQ(r->rule.count, -1);
    EXPECT_EQ(r->rule.io, FaultIo::kAny);
  }
  for (int e = 0; e < block::kDebugEventCount; ++e) {
    auto ev = static_cast<DebugEvent>(e);
    auto r = ParseFaultRule("event=" + std::string(block::DebugEventName(ev)));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->rule.event, ev);
  }
  for (const char* io : {"any", "read", "write", "flush", "zero", "truncate"}) {
    EXPECT_TRUE(ParseFaultRule(std::string("io=") + io).ok()) << io;
  }
}

void ExpectRefused(const std::string& rule, const std::string& problem) {
  auto r = ParseFaultRule(rule);
  ASSERT_FALSE(r.ok()) << rule;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  std::string msg(r.status().message());
  EXPECT_NE(msg.find("'" + rule + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find(problem), std::string::npos) << msg;
}

TEST(ParseFaultRule, MalformedRulesNameTheProblem) {
  ExpectRefused("", "empty rule");
  ExpectRefused("io=write,", "stray comma");
  ExpectRefused(",io=write", "stray comma");
  ExpectRefused("io=writ", "unknown io kind 'writ'");
  ExpectRefused("io=", "'io' needs a value");
  ExpectRefused("io", "'io' needs a value");
  ExpectRefused("event=l3_update", "unknown event 'l3_update'");
  ExpectRefused("error=EAGAIN", "unknown error 'EAGAIN'");
  ExpectRefused("error=eio", "unknown error 'eio'");
  ExpectRefused("skip=-1", "invalid skip '-1'");
  ExpectRefused("skip=3x", "invalid skip '3x'");
  ExpectRefused("count=0", "invalid count '0'");
  ExpectRefused("count=never", "invalid count 'never'");
  ExpectRefused("count=99999999999", "invalid count");
  ExpectRefused("io=read,io=write", "'io' given twice");
  ExpectRefused("die=1", "'die' takes no value");
  ExpectRefused("armed=", "'armed' needs a value");
  ExpectRefused("speed=fast", "unknown key 'speed'");
  ExpectRefused("delay=0", "invalid delay '0'");
  ExpectRefused("delay=soon", "invalid delay 'soon'");
  ExpectRefused("delay=10,error=EIO", "excludes error and die");
  ExpectRefused("delay=10,die", "excludes error and die");
}

TEST(ParseFaultRule, Delay) {
  auto r = ParseFaultRule("io=read,delay=250,count=always");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->delay, std::chrono::milliseconds(250));
  EXPECT_TRUE(r->rule.suspend);
  EXPECT_EQ(r->rule.count, -1);
  auto plain = ParseFaultRule("io=read");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->delay.count(), 0);
  EXPECT_FALSE(plain->rule.suspend);
}

TEST(ParseFaultRule, CommandLineRefusesMalformedRules) {
  const char* good[] = {
      "qedfuse", "--debug-fault=io=write,count=2", "--debug-fault", "event=flush", "img", "mnt"};
  auto o = ParseCommandLine(6, good);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->debug_faults, (std::vector<std::string>{"io=write,count=2", "event=flush"}));
  const char* bad[] = {"qedfuse", "--debug-fault=io=sideways", "img", "mnt"};
  auto b = ParseCommandLine(4, bad);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("unknown io kind 'sideways'"), std::string::npos)
      << b.status();
}

TEST(InstallFaults, RefusesTheFirstBadRule) {
  block::OpenOptions oo;
  absl::Status s = InstallFaults({"io=write", "io=sideways"}, &oo);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("sideways"), std::string::npos);
  EXPECT_FALSE(oo.wrap_image_file);
}

// The image-file node over |state| once InstallFaults(|rules|) has run on |oo| (which may hold
// an earlier hook); nullptr, after a test failure, when the rules are refused or install nothing.
std::unique_ptr<block::BlockDriver> HookedFile(const std::vector<std::string>& rules,
                                               const std::shared_ptr<test::MemFileState>& state,
                                               block::OpenOptions oo = {}) {
  absl::Status s = InstallFaults(rules, &oo);
  EXPECT_TRUE(s.ok()) << s;
  if (!s.ok()) return nullptr;
  EXPECT_TRUE(oo.wrap_image_file) << "no hook installed";
  if (!oo.wrap_image_file) return nullptr;
  return oo.wrap_image_file(std::make_unique<test::MemFile>(state));
}

// Runs |n| one-block writes through |node| and returns the errno of each (0 = success).
std::vector<int> Writes(coro::EventLoop& loop, block::BlockDriver& node, int n) {
  std::vector<int> out;
  std::vector<std::byte> buf(512, std::byte{0x5a});
  for (int i = 0; i < n; ++i) {
    Result<void> r = loop.RunSync(node.Write(512 * i, block::IoVector(buf.data(), buf.size())));
    out.push_back(r ? 0 : ToErrno(r.error()));
  }
  return out;
}

TEST(InstallFaults, SkipCountAndErrno) {
  coro::EventLoop loop;
  auto state = test::MemFileState::Create(1 << 20);
  auto node = HookedFile({"io=write,error=ENOSPC,skip=2,count=3"}, state);
  ASSERT_NE(node, nullptr);
  EXPECT_EQ(Writes(loop, *node, 7), (std::vector<int>{0, 0, ENOSPC, ENOSPC, ENOSPC, 0, 0}));
  EXPECT_EQ(state->writes, 4u);  // failed writes never reach the file
  // Reads and flushes are not matched by an io=write rule.
  std::vector<std::byte> buf(512);
  EXPECT_TRUE(loop.RunSync(node->Read(0, block::IoVector(buf.data(), buf.size()))));
  EXPECT_TRUE(loop.RunSync(node->Flush()));
  EXPECT_TRUE(loop.RunSync(node->Close()).ok());
}

TEST(InstallFaults, EventRuleAndDie) {
  coro::EventLoop loop;
  auto state = test::MemFileState::Create(1 << 20);
  auto node = HookedFile({"event=l2_update,die"}, state);
  ASSERT_NE(node, nullptr);
  EXPECT_EQ(Writes(loop, *node, 2), (std::vector<int>{0, 0}));
  node->Annotate(DebugEvent::kL2Update);
  EXPECT_EQ(Writes(loop, *node, 2), (std::vector<int>{EIO, EIO}));  // died at the L2 update
  EXPECT_FALSE(loop.RunSync(node->Flush()));
  (void)loop.RunSync(node->Close());
}

TEST(InstallFaults, ArmedByFileExistence) {
  char dir_template[] = "/tmp/fault_hook_test.XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  std::string arm = std::string(dir_template) + "/arm";
  coro::EventLoop loop;
  auto state = test::MemFileState::Create(1 << 20);
  auto node = HookedFile({"io=write,skip=1,count=1,armed=" + arm}, state);
  ASSERT_NE(node, nullptr);
  EXPECT_EQ(Writes(loop, *node, 3), (std::vector<int>{0, 0, 0}));  // not armed yet
  std::FILE* f = std::fopen(arm.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  // skip counts from the arming: one write passes, one fails, then count is used up.
  EXPECT_EQ(Writes(loop, *node, 3), (std::vector<int>{0, EIO, 0}));
  ASSERT_EQ(unlink(arm.c_str()), 0);
  EXPECT_EQ(Writes(loop, *node, 2), (std::vector<int>{0, 0}));
  // Re-arming starts skip and count afresh.
  f = std::fopen(arm.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  EXPECT_EQ(Writes(loop, *node, 3), (std::vector<int>{0, EIO, 0}));
  EXPECT_TRUE(loop.RunSync(node->Close()).ok());
  unlink(arm.c_str());
  rmdir(dir_template);
}

TEST(InstallFaults, DelayHoldsThenLetsThrough) {
  coro::EventLoop loop;
  auto state = test::MemFileState::Create(1 << 20);
  auto node = HookedFile({"io=write,delay=20,count=2"}, state);
  ASSERT_NE(node, nullptr);
  std::vector<std::byte> buf(512, std::byte{0x5a});
  // Held: the write has not reached the file when the call returns its (suspended) task.
  coro::Task<Result<void>> held = node->Write(0, block::IoVector(buf.data(), buf.size()));
  EXPECT_FALSE(held.done());
  EXPECT_EQ(state->writes, 0u);
  // Then it goes through and succeeds; nothing was failed.
  Result<void> r = loop.RunSync(std::move(held));
  EXPECT_TRUE(r);
  EXPECT_EQ(state->writes, 1u);
  EXPECT_EQ(Writes(loop, *node, 3), (std::vector<int>{0, 0, 0}));  // count=2: one more held
  EXPECT_EQ(state->writes, 4u);
  // A write held when the node is closed is let through by the close.
  auto slow = HookedFile({"io=write,delay=600000"}, state);
  ASSERT_NE(slow, nullptr);
  coro::Task<Result<void>> stuck = slow->Write(0, block::IoVector(buf.data(), buf.size()));
  EXPECT_FALSE(stuck.done());
  EXPECT_TRUE(loop.RunSync(slow->Close()).ok());
  EXPECT_TRUE(loop.RunSync(std::move(stuck)));
  EXPECT_EQ(state->writes, 5u);
  EXPECT_TRUE(loop.RunSync(node->Close()).ok());
}

// A hook installed before (the write log) stays below the fault filter.
class CountingDriver final : public block::BlockDriver {
 public:
  CountingDriver(std::unique_ptr<block::BlockDriver> child, int* writes)
      : child_(std::move(child)), writes_(writes) {}
  std::string_view format_name() const override { return "counting"; }
  block::BlockLimits limits() const override { return child_->limits(); }
  uint64_t length() const override { return child_->length(); }
  bool read_only() const override { return false; }
  coro::Task<Result<void>> Read(uint64_t offset, block::IoVector iov) override {
    co_return co_await child_->Read(offset, iov);
  }
  coro::Task<Result<void>> Write(uint64_t offset, block::IoVector iov) override {
    ++*writes_;
    co_return co_await child_->Write(offset, iov);
  }
  coro::Task<Result<void>> Flush() override { co_return co_await child_->Flush(); }
  coro::Task<absl::Status> Close() override { co_return co_await child_->Close(); }

 private:
  std::unique_ptr<block::BlockDriver> child_;
  int* writes_;
};

TEST(InstallFaults, ChainsOverAnEarlierHook) {
  coro::EventLoop loop;
  auto state = test::MemFileState::Create(1 << 20);
  int logged = 0;
  block::OpenOptions oo;
  oo.wrap_image_file = [&logged](std::unique_ptr<block::BlockDriver> n) {
    return std::unique_ptr<block::BlockDriver>(
        std::make_unique<CountingDriver>(std::move(n), &logged));
  };
  auto node = HookedFile({"io=write,count=2"}, state, oo);
  ASSERT_NE(node, nullptr);
  EXPECT_EQ(Writes(loop, *node, 4), (std::vector<int>{EIO, EIO, 0, 0}));
  EXPECT_EQ(logged, 2);  // the failed writes never reached the lower hook
  EXPECT_TRUE(loop.RunSync(node->Close()).ok());
}

}  // namespace
}  // namespace qedfuse::fusefs
