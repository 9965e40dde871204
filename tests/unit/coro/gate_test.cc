// coro::Gate: holders, Close() waiting for every holder, refusing new entries.
#include "qedfuse/coro/gate.h"

#include <gtest/gtest.h>

#include <optional>
#include <utility>

#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::coro {
namespace {

TEST(GateTest, HoldersAreCounted) {
  Gate gate;
  EXPECT_EQ(gate.count(), 0u);
  {
    std::optional<Gate::Holder> a = gate.TryEnter();
    ASSERT_TRUE(a.has_value());
    std::optional<Gate::Holder> b = gate.TryEnter();
    ASSERT_TRUE(b.has_value());
    EXPECT_EQ(gate.count(), 2u);
    Gate::Holder moved = std::move(*a);
    EXPECT_EQ(gate.count(), 2u);  // moving transfers, it does not leave
    b->Leave();
    EXPECT_EQ(gate.count(), 1u);
    b->Leave();  // idempotent
    EXPECT_EQ(gate.count(), 1u);
  }
  EXPECT_EQ(gate.count(), 0u);
}

TEST(GateTest, CloseWithoutHoldersCompletesSynchronously) {
  Gate gate;
  Task<void> close = gate.Close();
  EXPECT_TRUE(close.done());
  EXPECT_TRUE(gate.closing());
  EXPECT_FALSE(gate.TryEnter().has_value());
}

Task<void> CloseAndMark(Gate* gate, bool* closed) {
  co_await gate->Close();
  *closed = true;
}

TEST(GateTest, CloseWaitsForEveryHolderAndRefusesNewcomers) {
  EventLoop loop;
  Gate gate;
  std::optional<Gate::Holder> a = gate.TryEnter();
  std::optional<Gate::Holder> b = gate.TryEnter();
  ASSERT_TRUE(a && b);

  bool closed = false;
  Task<void> closer = CloseAndMark(&gate, &closed);
  EXPECT_FALSE(closed);
  EXPECT_TRUE(gate.closing());
  EXPECT_FALSE(gate.TryEnter().has_value());  // refused while closing
  EXPECT_EQ(gate.count(), 2u);

  a.reset();
  loop.RunUntilIdle();
  EXPECT_FALSE(closed);  // b still inside
  EXPECT_FALSE(gate.TryEnter().has_value());

  b.reset();
  EXPECT_FALSE(closed);  // the closer's resumption is posted
  loop.RunUntilIdle();
  EXPECT_TRUE(closed);
  EXPECT_TRUE(closer.done());
  EXPECT_EQ(gate.count(), 0u);
  EXPECT_FALSE(gate.TryEnter().has_value());  // closed for good
}

Task<void> Request(EventLoop* loop, Gate* gate, int yields, int* finished) {
  std::optional<Gate::Holder> h = gate->TryEnter();
  if (!h) co_return;
  for (int i = 0; i < yields; ++i) co_await loop->Yield();
  ++*finished;
}

TEST(GateTest, CloseDrainsInFlightCoroutines) {
  EventLoop loop;
  Gate gate;
  int finished = 0;
  for (int i = 0; i < 5; ++i) Spawn(Request(&loop, &gate, i + 1, &finished));
  EXPECT_EQ(gate.count(), 5u);
  bool closed = false;
  Task<void> closer = CloseAndMark(&gate, &closed);
  Spawn(Request(&loop, &gate, 1, &finished));  // refused: does not count
  loop.RunSync(std::move(closer));
  EXPECT_TRUE(closed);
  EXPECT_EQ(finished, 5);  // every request admitted before Close() finished before it returned
}

}  // namespace
}  // namespace qedfuse::coro
