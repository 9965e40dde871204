// block::FaultInjectionDriver: a filter node that fails or holds its child's I/O on command
// (QEMU's blkdebug). Tests put it between a format driver and its protocol node:
//
//   auto fi = std::make_unique<FaultInjectionDriver>(std::make_unique<test::MemFile>(state));
//   FaultInjectionDriver* hook = fi.get();
//   hook->AddRule({.event = DebugEvent::kL2Update, .error = EIO});   // EIO once, on the next
//   ... open QED over std::move(fi) ...                              // I/O after kL2Update
//
// Rules:
//  - With |event| set, the rule is armed each time the format driver announces that event
//    through BlockDriver::Annotate() (after |skip| announcements have passed); an armed rule
//    fires on the next child I/O of kind |io|. Without |event| it fires on child I/O of kind |io|
//    directly, after |skip| matching I/Os have passed.
//  - Firing either fails the I/O (with errno |error|, or Errc::kInjected if |error| is 0; the
//    child is not called) or, with |suspend|, holds it at a breakpoint until Resume(|tag|), then
//    lets it through.
//  - A rule fires |count| times (-1: forever). With |fail_everything_after|, once it has fired
//    every later child I/O fails too: the "device died here" point of a crash test.
// Everything runs on the event-loop thread.
#pragma once

#include <cerrno>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qedfuse/block/debug_event.h"
#include "qedfuse/block/filter_driver.h"
#include "qedfuse/coro/event_loop.h"

namespace qedfuse::block {

enum class FaultIo : uint8_t { kAny, kRead, kWrite, kFlush, kZero, kTruncate };

struct FaultRule {
  std::optional<DebugEvent> event;  // unset: match child I/O directly
  FaultIo io = FaultIo::kAny;
  int error = EIO;       // errno of the failure; 0 means Errc::kInjected
  int count = 1;         // times the rule fires; -1 = every time
  int skip = 0;          // matching events (or I/Os) to let pass first
  bool suspend = false;  // hold the I/O until Resume(tag) instead of failing it
  std::string tag;
  bool fail_everything_after = false;
};

class FaultInjectionDriver final : public FilterDriver {
 public:
  explicit FaultInjectionDriver(std::unique_ptr<BlockDriver> child);
  ~FaultInjectionDriver() override;

  // Returns the rule's id.
  int AddRule(FaultRule rule);
  void RemoveRule(int id);
  void ClearRules();
  // How many times rule |id| has fired.
  int fired(int id) const;

  // Breakpoints: is an I/O held at |tag|; how many are held; let every I/O held at |tag| go.
  bool IsSuspended(std::string_view tag) const;
  std::size_t suspended_count() const { return held_.size(); }
  void Resume(std::string_view tag);
  void ResumeAll();

  // Announced events, in order, and how often each was announced.
  const std::vector<DebugEvent>& events() const { return events_; }
  uint64_t event_count(DebugEvent e) const { return event_counts_[static_cast<int>(e)]; }
  // True once a fail_everything_after rule has fired.
  bool dead() const { return dead_; }
  // Child I/O calls that reached the child, and that were failed here.
  uint64_t passed_io() const { return passed_; }
  uint64_t failed_io() const { return failed_; }

  // FilterDriver: every call that moves data (not GetStatus) passes the rules first; Annotate
  // arms them; Close lets held I/O go before closing the child.
  std::string_view format_name() const override { return "fault-injection"; }
  coro::Task<Result<void>> Read(uint64_t offset, IoVector iov) override;
  coro::Task<Result<void>> Write(uint64_t offset, IoVector iov) override;
  coro::Task<Result<void>> WriteZeroes(uint64_t offset, uint64_t len, ZeroFlags flags) override;
  coro::Task<Result<void>> Flush() override;
  coro::Task<Result<void>> Truncate(uint64_t new_length) override;
  void Annotate(DebugEvent event) override;
  coro::Task<absl::Status> Close() override;

 private:
  struct Rule {
    int id;
    FaultRule spec;
    int skipped = 0;
    int armed = 0;  // event rules: announcements waiting for an I/O
    int fired = 0;
  };
  struct Held {
    std::string tag;
    std::coroutine_handle<> handle;
    coro::EventLoop* loop;
  };
  struct HoldAwaiter;

  // Decides the fate of one child I/O: Ok() to pass (after a breakpoint, if any), or an error.
  coro::Task<Result<void>> Gate(FaultIo io);

  std::vector<Rule> rules_;
  int next_id_ = 1;
  std::vector<Held> held_;
  std::vector<DebugEvent> events_;
  uint64_t event_counts_[kDebugEventCount] = {};
  bool dead_ = false;
  uint64_t passed_ = 0;
  uint64_t failed_ = 0;
};

}  // namespace qedfuse::block
