// FaultInjectionDriver: rule matching, failures and breakpoints (see the header).
#include "qedfuse/block/debug/fault_injection_driver.h"

#include <algorithm>

namespace qedfuse::block {

struct FaultInjectionDriver::HoldAwaiter {
  FaultInjectionDriver* self;
  std::string tag;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    self->held_.push_back(Held{tag, h, &coro::EventLoop::Current()});
  }
  void await_resume() const noexcept {}
};

FaultInjectionDriver::FaultInjectionDriver(std::unique_ptr<BlockDriver> child)
    : FilterDriver(std::move(child)) {}

FaultInjectionDriver::~FaultInjectionDriver() = default;

int FaultInjectionDriver::AddRule(FaultRule rule) {
  int id = next_id_++;
  rules_.push_back(Rule{id, std::move(rule)});
  return id;
}

void FaultInjectionDriver::RemoveRule(int id) {
  rules_.erase(
      std::remove_if(rules_.begin(), rules_.end(), [id](const Rule& r) { return r.id == id; }),
      rules_.end());
}

void FaultInjectionDriver::ClearRules() { rules_.clear(); }

int FaultInjectionDriver::fired(int id) const {
  for (const Rule& r : rules_) {
    if (r.id == id) return r.fired;
  }
  return 0;
}

bool FaultInjectionDriver::IsSuspended(std::string_view tag) const {
  return std::any_of(held_.begin(), held_.end(), [tag](const Held& h) { return h.tag == tag; });
}

void FaultInjectionDriver::Resume(std::string_view tag) {
  std::vector<Held> keep;
  for (Held& h : held_) {
    if (h.tag == tag) {
      h.loop->Post(h.handle);
    } else {
      keep.push_back(std::move(h));
    }
  }
  held_ = std::move(keep);
}

void FaultInjectionDriver::ResumeAll() {
  for (Held& h : held_) h.loop->Post(h.handle);
  held_.clear();
}

void FaultInjectionDriver::Annotate(DebugEvent event) {
  events_.push_back(event);
  ++event_counts_[static_cast<int>(event)];
  for (Rule& r : rules_) {
    if (!r.spec.event || *r.spec.event != event) continue;
    if (r.skipped < r.spec.skip) {
      ++r.skipped;
      continue;
    }
    ++r.armed;
  }
  FilterDriver::Annotate(event);
}

coro::Task<Result<void>> FaultInjectionDriver::Gate(FaultIo io) {
  if (dead_) {
    ++failed_;
    co_return Unexpected(ErrnoCode(EIO));
  }
  for (Rule& r : rules_) {
    if (r.spec.count >= 0 && r.fired >= r.spec.count) continue;
    if (r.spec.io != FaultIo::kAny && r.spec.io != io) continue;
    if (r.spec.event) {
      if (r.armed == 0) continue;
      --r.armed;
    } else if (r.skipped < r.spec.skip) {
      ++r.skipped;
      continue;
    }
    ++r.fired;
    if (r.spec.fail_everything_after) dead_ = true;
    if (r.spec.suspend) {
      HoldAwaiter hold{this, r.spec.tag};  // copies the tag: |r| may be gone on resume
      co_await hold;
      break;
    }
    ++failed_;
    if (r.spec.error == 0) co_return Unexpected(Errc::kInjected);
    co_return Unexpected(ErrnoCode(r.spec.error));
  }
  ++passed_;
  co_return Ok();
}

coro::Task<Result<void>> FaultInjectionDriver::Read(uint64_t offset, IoVector iov) {
  Result<void> gate = co_await Gate(FaultIo::kRead);
  if (!gate) co_return gate;
  co_return co_await FilterDriver::Read(offset, iov);
}

coro::Task<Result<void>> FaultInjectionDriver::Write(uint64_t offset, IoVector iov) {
  Result<void> gate = co_await Gate(FaultIo::kWrite);
  if (!gate) co_return gate;
  co_return co_await FilterDriver::Write(offset, iov);
}

coro::Task<Result<void>> FaultInjectionDriver::WriteZeroes(uint64_t offset, uint64_t len,
                                                           ZeroFlags flags) {
  Result<void> gate = co_await Gate(FaultIo::kZero);
  if (!gate) co_return gate;
  co_return co_await FilterDriver::WriteZeroes(offset, len, flags);
}

coro::Task<Result<void>> FaultInjectionDriver::Flush() {
  Result<void> gate = co_await Gate(FaultIo::kFlush);
  if (!gate) co_return gate;
  co_return co_await FilterDriver::Flush();
}

coro::Task<Result<void>> FaultInjectionDriver::Truncate(uint64_t new_length) {
  Result<void> gate = co_await Gate(FaultIo::kTruncate);
  if (!gate) co_return gate;
  co_return co_await FilterDriver::Truncate(new_length);
}

coro::Task<absl::Status> FaultInjectionDriver::Close() {
  ResumeAll();
  co_return co_await FilterDriver::Close();
}

}  // namespace qedfuse::block
