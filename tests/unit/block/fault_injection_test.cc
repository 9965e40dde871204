// FaultInjectionDriver: I/O rules, event-armed rules, skip/count, breakpoints, and the
// "device died" mode, over MemFile.
#include <gtest/gtest.h>

#include <vector>

#include "qedfuse/block/debug/fault_injection_driver.h"
#include "support/mem_file.h"
#include "support/test_loop.h"

namespace qedfuse::block {
namespace {

using test::MemFile;
using test::MemFileState;
using test::TestLoop;

class FaultInjectionTest : public ::testing::Test {
 protected:
  FaultInjectionTest()
      : state_(MemFileState::Create(65536)),
        fi_(std::make_unique<MemFile>(state_)),
        buf_(512, std::byte{0x42}) {}

  Result<void> W(uint64_t off = 0) { return loop_.Run(fi_.Write(off, IoVector(buf_.data(), 512))); }
  Result<void> R(uint64_t off = 0) { return loop_.Run(fi_.Read(off, IoVector(buf_.data(), 512))); }

  TestLoop loop_;
  std::shared_ptr<MemFileState> state_;
  FaultInjectionDriver fi_;
  std::vector<std::byte> buf_;
};

TEST_F(FaultInjectionTest, PassesThroughWithoutRules) {
  ASSERT_TRUE(W(512));
  EXPECT_EQ(state_->current[512], std::byte{0x42});
  ASSERT_TRUE(R(512));
  ASSERT_TRUE(loop_.Run(fi_.Flush()));
  EXPECT_EQ(fi_.passed_io(), 3u);
  EXPECT_EQ(fi_.failed_io(), 0u);
  EXPECT_EQ(fi_.length(), 65536u);
}

TEST_F(FaultInjectionTest, IoRuleFailsOnceWithTheErrno) {
  int id = fi_.AddRule({.io = FaultIo::kWrite, .error = ENOSPC});
  ASSERT_TRUE(R());  // reads are not matched
  Result<void> r = W();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), ErrnoCode(ENOSPC));
  EXPECT_EQ(state_->writes, 0u);  // the child never saw it
  EXPECT_TRUE(W());               // once only
  EXPECT_EQ(fi_.fired(id), 1);
}

TEST_F(FaultInjectionTest, SkipAndCount) {
  fi_.AddRule({.io = FaultIo::kWrite, .error = 0, .count = 2, .skip = 3});
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(W());
  Result<void> r = W();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(Errc::kInjected));
  EXPECT_FALSE(W());
  EXPECT_TRUE(W());
  EXPECT_EQ(state_->writes, 4u);
}

TEST_F(FaultInjectionTest, EventRuleFailsTheNextIoAfterTheEvent) {
  fi_.AddRule({.event = DebugEvent::kL2Update, .error = EIO});
  EXPECT_TRUE(W());  // not armed yet
  fi_.Annotate(DebugEvent::kL1Update);
  EXPECT_TRUE(W());  // other event
  fi_.Annotate(DebugEvent::kL2Update);
  Result<void> r = W(4096);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), ErrnoCode(EIO));
  fi_.Annotate(DebugEvent::kL2Update);
  EXPECT_TRUE(W());  // fired its single time already
  EXPECT_EQ(fi_.event_count(DebugEvent::kL2Update), 2u);
  ASSERT_EQ(fi_.events().size(), 3u);
  EXPECT_EQ(fi_.events()[0], DebugEvent::kL1Update);
}

TEST_F(FaultInjectionTest, EventRuleSkipsAnnouncements) {
  fi_.AddRule({.event = DebugEvent::kWriteData, .io = FaultIo::kWrite, .skip = 2});
  for (int i = 0; i < 2; ++i) {
    fi_.Annotate(DebugEvent::kWriteData);
    EXPECT_TRUE(W());
  }
  fi_.Annotate(DebugEvent::kWriteData);
  EXPECT_TRUE(R());  // armed, but only writes match
  EXPECT_FALSE(W());
}

TEST_F(FaultInjectionTest, BreakpointHoldsTheIoUntilResumed) {
  fi_.AddRule({.event = DebugEvent::kL2Update, .suspend = true, .tag = "l2"});
  fi_.Annotate(DebugEvent::kL2Update);
  coro::Task<Result<void>> w = fi_.Write(1024, IoVector(buf_.data(), 512));
  loop_.Idle();
  EXPECT_FALSE(w.done());
  EXPECT_TRUE(fi_.IsSuspended("l2"));
  EXPECT_FALSE(fi_.IsSuspended("other"));
  EXPECT_EQ(state_->writes, 0u);
  // Other I/O is not held.
  std::vector<std::byte> other(512);
  ASSERT_TRUE(loop_.Run(fi_.Read(0, IoVector(other.data(), other.size()))));
  fi_.Resume("l2");
  ASSERT_TRUE(loop_.Run(std::move(w)));
  EXPECT_EQ(state_->current[1024], std::byte{0x42});
  EXPECT_EQ(fi_.suspended_count(), 0u);
}

TEST_F(FaultInjectionTest, DeviceDiesAfterTheFatalRule) {
  fi_.AddRule({.io = FaultIo::kFlush, .fail_everything_after = true});
  ASSERT_TRUE(W());
  EXPECT_FALSE(loop_.Run(fi_.Flush()));
  EXPECT_TRUE(fi_.dead());
  EXPECT_FALSE(W());
  EXPECT_FALSE(R());
  // Model the power loss in the child: nothing was flushed.
  state_->CrashDropAll();
  EXPECT_EQ(state_->current[0], std::byte{0});
}

TEST_F(FaultInjectionTest, AnnotationsReachTheChild) {
  // A nested injector sees events announced to the outer one.
  auto inner = std::make_unique<FaultInjectionDriver>(std::make_unique<MemFile>(state_));
  FaultInjectionDriver* inner_ptr = inner.get();
  FaultInjectionDriver outer(std::move(inner));
  outer.Annotate(DebugEvent::kHeaderUpdate);
  EXPECT_EQ(inner_ptr->event_count(DebugEvent::kHeaderUpdate), 1u);
  EXPECT_TRUE(loop_.Run(outer.Close()).ok());
}

}  // namespace
}  // namespace qedfuse::block
