// --debug-fault: parses the rules (fault_hook.h) and wraps the top image's file in a
// FaultInjectionDriver behind a small filter that arms rules by file existence, releases the
// operations a delay= rule holds (one timer per rule), and reports what was injected (each fault
// as a warning, up to a limit, and a total when the image is closed).
#include "fusefs/fault_hook.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fusefs/debug_hooks.h"
#include "qedfuse/base/enum_names.h"
#include "qedfuse/base/log.h"
#include "qedfuse/block/filter_driver.h"
#include "qedfuse/coro/co_timer.h"
#include "qedfuse/coro/gate.h"

namespace qedfuse::fusefs {
namespace {

using block::FaultIo;
using block::FaultRule;
using std::string_view;

absl::Status Bad(string_view rule, string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid --debug-fault rule '", std::string(rule), "': ", std::string(problem)));
}

constexpr EnumName<int> kErrnos[] = {
    {EIO, "EIO"}, {ENOSPC, "ENOSPC"}, {EDQUOT, "EDQUOT"}, {EROFS, "EROFS"}, {EFBIG, "EFBIG"},
};

string_view ErrnoNameOf(int err) { return NameOf(kErrnos, err, "injected"); }

constexpr EnumName<FaultIo> kIos[] = {
    {FaultIo::kAny, "any"},     {FaultIo::kRead, "read"}, {FaultIo::kWrite, "write"},
    {FaultIo::kFlush, "flush"}, {FaultIo::kZero, "zero"}, {FaultIo::kTruncate, "truncate"},
};

string_view IoNameOf(FaultIo io) { return NameOf(kIos, io, "?"); }

// |value| looked up in |names| into |*out|; an unknown one is an error naming the |what| and the
// |choices|.
template <typename E, std::size_t N, typename Out>
absl::Status SetNamed(string_view rule, const EnumName<E> (&names)[N], string_view what,
                      string_view value, string_view choices, Out* out) {
  std::optional<E> v = ValueOf(names, value);
  if (!v) {
    return Bad(rule, absl::StrCat("unknown ", std::string(what), " '", std::string(value), "' (",
                                  std::string(choices), ")"));
  }
  *out = *v;
  return absl::OkStatus();
}

// The keys of a rule, in the order the message about an unknown key lists them.
constexpr string_view kRuleKeys[] = {"io",    "event", "error", "skip",
                                     "count", "armed", "die",   "delay"};

bool ParseCount(string_view v, int* out) {
  int n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size() || n < 0) return false;
  *out = n;
  return true;
}

// How many injected faults are logged one by one; the total is always logged at close.
constexpr uint64_t kMaxLoggedFaults = 100;

// Filter over the FaultInjectionDriver: installs and removes armed= rules as their files come
// and go, and logs every fault the driver injected during a call (its decision is made before
// the call's first suspension, so comparing counters around the call start is exact).
// A FilterDriver over its FaultInjectionDriver: the calls it does not override pass through.
class FaultHookDriver final : public block::FilterDriver {
 public:
  FaultHookDriver(std::unique_ptr<block::BlockDriver> child, std::vector<ParsedFaultRule> rules)
      : FaultHookDriver(std::make_unique<block::FaultInjectionDriver>(std::move(child)),
                        std::move(rules)) {}

  std::string_view format_name() const override { return "debug-fault"; }

  void Annotate(block::DebugEvent event) override {
    Refresh();
    fi_->Annotate(event);
  }

  coro::Task<Result<void>> Read(uint64_t offset, block::IoVector iov) override {
    return Hooked(FaultIo::kRead, [&] { return fi_->Read(offset, iov); });
  }

  coro::Task<Result<void>> Write(uint64_t offset, block::IoVector iov) override {
    return Hooked(FaultIo::kWrite, [&] { return fi_->Write(offset, iov); });
  }

  coro::Task<Result<void>> WriteZeroes(uint64_t offset, uint64_t len,
                                       block::ZeroFlags flags) override {
    return Hooked(FaultIo::kZero, [&] { return fi_->WriteZeroes(offset, len, flags); });
  }

  coro::Task<Result<void>> Flush() override {
    return Hooked(FaultIo::kFlush, [&] { return fi_->Flush(); });
  }

  coro::Task<Result<void>> Truncate(uint64_t new_length) override {
    return Hooked(FaultIo::kTruncate, [&] { return fi_->Truncate(new_length); });
  }

  coro::Task<absl::Status> Close() override {
    for (Slot& s : rules_) {
      if (s.timer) s.timer->Close();
    }
    co_await releasers_.Close();
    absl::Status s = co_await fi_->Close();  // lets anything still held through
    Log(LogLevel::kInfo, absl::StrCat("debug-fault: ", fi_->failed_io(), " faults injected, ",
                                      fi_->passed_io(), " image-file operations passed"));
    co_return s;
  }

 private:
  FaultHookDriver(std::unique_ptr<block::FaultInjectionDriver> fi,
                  std::vector<ParsedFaultRule> rules)
      : FilterDriver(std::move(fi)), fi_(static_cast<block::FaultInjectionDriver*>(&child())) {
    for (ParsedFaultRule& r : rules) {
      if (r.delay.count() > 0) r.rule.tag = absl::StrCat("delay-", rules_.size());
      rules_.push_back(Slot{std::move(r)});
    }
    Refresh();
  }

  struct Slot {
    ParsedFaultRule spec;
    int id = 0;    // in fi_, 0 while not installed
    int seen = 0;  // fired(id) already reported
    // delay= rules: lets the operations held at spec.rule.tag through when it fires; created
    // with the first hold (on the loop thread), waited on by one Releaser.
    std::unique_ptr<coro::CoTimer> timer;
  };

  // One call of kind |io| into fi_, begun by |start|: the armed= rules are refreshed before it;
  // the faults it injected are logged and the delays of the operations it held are started
  // before it first suspends, so comparing the counters around its start is exact. Tasks start
  // eagerly, so |start| has run, and is not used again, by the time this first suspends: it may
  // capture the caller's arguments by reference.
  template <typename Start>
  coro::Task<Result<void>> Hooked(FaultIo io, Start start) {
    Refresh();
    Snapshot before = Take();
    coro::Task<Result<void>> t = start();
    Report(before, io);
    ReleaseHeldLater();
    co_return co_await t;
  }

  // Starts the delay of every delay= rule that has just begun holding an operation.
  void ReleaseHeldLater() {
    for (Slot& s : rules_) {
      if (s.spec.delay.count() == 0 || !fi_->IsSuspended(s.spec.rule.tag)) continue;
      if (!s.timer) {
        auto holder = releasers_.TryEnter();
        if (!holder) continue;  // closing: Close() lets everything through
        s.timer = std::make_unique<coro::CoTimer>();
        coro::Spawn(Releaser(&s, *std::move(holder)));
      }
      if (!s.timer->armed()) s.timer->Arm(s.spec.delay);
    }
  }

  // Holds |holder| (a place in releasers_) until the timer is closed.
  coro::Task<void> Releaser(Slot* s, coro::Gate::Holder holder) {
    for (;;) {
      coro::TimerEvent ev = co_await s->timer->Wait();
      if (ev == coro::TimerEvent::kClosed) break;
      fi_->Resume(s->spec.rule.tag);
    }
    holder.Leave();
  }
  struct Snapshot {
    uint64_t failed;
  };

  void Refresh() {
    for (Slot& s : rules_) {
      bool want = s.spec.armed_path.empty() || access(s.spec.armed_path.c_str(), F_OK) == 0;
      if (want && s.id == 0) {
        s.id = fi_->AddRule(s.spec.rule);
        s.seen = 0;
        if (!s.spec.armed_path.empty()) {
          Log(LogLevel::kDebug, absl::StrCat("debug-fault: armed '", s.spec.text, "'"));
        }
      } else if (!want && s.id != 0) {
        fi_->RemoveRule(s.id);
        s.id = 0;
        Log(LogLevel::kDebug, absl::StrCat("debug-fault: disarmed '", s.spec.text, "'"));
      }
    }
  }

  Snapshot Take() const { return Snapshot{fi_->failed_io()}; }

  void Report(const Snapshot& before, FaultIo io) {
    if (fi_->failed_io() == before.failed) return;
    ++logged_;
    if (logged_ > kMaxLoggedFaults) {
      if (logged_ == kMaxLoggedFaults + 1) {
        Log(LogLevel::kWarning, "debug-fault: further injected faults are not logged");
      }
      return;
    }
    std::string which = "after 'die'";
    int err = EIO;
    for (Slot& s : rules_) {
      if (s.id == 0 || s.spec.delay.count() > 0) continue;  // delay rules fail nothing
      int fired = fi_->fired(s.id);
      if (fired != s.seen) {
        s.seen = fired;
        which = absl::StrCat("rule '", s.spec.text, "'");
        err = s.spec.rule.error;
        break;
      }
    }
    Log(LogLevel::kWarning,
        absl::StrCat("debug-fault: injected ", std::string(ErrnoNameOf(err)), " into image-file ",
                     std::string(IoNameOf(io)), " (", which, ")"));
  }

  block::FaultInjectionDriver* fi_;  // the child
  std::vector<Slot> rules_;          // never resized after construction: Releasers point into it
  coro::Gate releasers_;
  uint64_t logged_ = 0;
};

}  // namespace

absl::StatusOr<ParsedFaultRule> ParseFaultRule(string_view text) {
  ParsedFaultRule out;
  out.text = std::string(text);
  if (text.empty()) return Bad(text, "empty rule");
  std::vector<string_view> seen;  // the keys given so far, each at most once
  auto given = [&seen](string_view key) {
    return std::find(seen.begin(), seen.end(), key) != seen.end();
  };
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == string_view::npos) comma = text.size();
    string_view item = text.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) return Bad(text, "empty item (stray comma)");
    string_view key = item, value;
    bool has_value = false;
    if (size_t eq = item.find('='); eq != string_view::npos) {
      key = item.substr(0, eq);
      value = item.substr(eq + 1);
      has_value = true;
    }
    if (std::find(std::begin(kRuleKeys), std::end(kRuleKeys), key) == std::end(kRuleKeys)) {
      return Bad(text, absl::StrCat("unknown key '", std::string(key),
                                    "' (use io, event, error, skip, count, armed, die or delay)"));
    }
    if (given(key)) return Bad(text, absl::StrCat("'", std::string(key), "' given twice"));
    seen.push_back(key);
    if (key != "die" && (!has_value || value.empty())) {
      return Bad(text, absl::StrCat("'", std::string(key), "' needs a value"));
    }
    absl::Status st;
    if (key == "io") {
      st = SetNamed(text, kIos, "io kind", value, "use any, read, write, flush, zero or truncate",
                    &out.rule.io);
    } else if (key == "event") {
      st = SetNamed(text, block::kDebugEventNames, "event", value,
                    "see DEBUGGING OPTIONS in qedfuse(1)", &out.rule.event);
    } else if (key == "error") {
      st = SetNamed(text, kErrnos, "error", value, "use EIO, ENOSPC, EDQUOT, EROFS or EFBIG",
                    &out.rule.error);
    } else if (key == "skip") {
      if (!ParseCount(value, &out.rule.skip)) {
        return Bad(text, absl::StrCat("invalid skip '", std::string(value),
                                      "' (a non-negative number expected)"));
      }
    } else if (key == "count") {
      if (value == "always") {
        out.rule.count = -1;
      } else if (!ParseCount(value, &out.rule.count) || out.rule.count == 0) {
        return Bad(text, absl::StrCat("invalid count '", std::string(value),
                                      "' (a positive number or 'always' expected)"));
      }
    } else if (key == "armed") {
      out.armed_path = std::string(value);
    } else if (key == "die") {
      if (has_value) return Bad(text, "'die' takes no value");
      out.rule.fail_everything_after = true;
    } else if (key == "delay") {
      int ms = 0;
      if (!ParseCount(value, &ms) || ms == 0) {
        return Bad(text, absl::StrCat("invalid delay '", std::string(value),
                                      "' (a positive number of milliseconds expected)"));
      }
      out.delay = std::chrono::milliseconds(ms);
      out.rule.suspend = true;
    }
    if (!st.ok()) return st;
    if (comma == text.size()) break;
  }
  if (given("delay") && (given("error") || given("die"))) {
    return Bad(text, "'delay' holds operations instead of failing them: it excludes error and die");
  }
  return out;
}

absl::Status InstallFaults(const std::vector<std::string>& rules, block::OpenOptions* oo) {
  std::vector<ParsedFaultRule> parsed;
  for (const std::string& r : rules) {
    absl::StatusOr<ParsedFaultRule> p = ParseFaultRule(r);
    if (!p.ok()) return p.status();
    parsed.push_back(*std::move(p));
  }
  if (parsed.empty()) return absl::OkStatus();
  // Faults go above any wrapper already installed (the write log records only what reaches the
  // file, so a failed write never appears in it).
  block::OpenOptions::WrapFn below = oo->wrap_image_file;
  oo->wrap_image_file = [parsed, below](std::unique_ptr<block::BlockDriver> node) {
    if (below) node = below(std::move(node));
    return std::unique_ptr<block::BlockDriver>(
        std::make_unique<FaultHookDriver>(std::move(node), parsed));
  };
  for (const ParsedFaultRule& p : parsed) {
    Log(LogLevel::kDebug, absl::StrCat("debug-fault: rule '", p.text, "'"));
  }
  return absl::OkStatus();
}

}  // namespace qedfuse::fusefs
