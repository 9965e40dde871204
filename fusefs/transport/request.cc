// Request: exactly one reply per FUSE request (see request.h).
#include "fusefs/transport/request.h"

#include <cassert>
#include <string>

#include "absl/strings/str_cat.h"
#include "fusefs/protocol/debug_format.h"
#include "qedfuse/base/log.h"

namespace qedfuse::fusefs::transport {

Request& Request::operator=(Request&& o) noexcept {
  if (this != &o) {
    if (pending()) Abandon("overwritten");
    decoded_ = std::move(o.decoded_);
    slot_ = std::exchange(o.slot_, nullptr);
  }
  return *this;
}

Request::~Request() {
  if (pending()) Abandon("dropped");
}

void Request::Abandon(const char* how) {
  if (decoded_.no_reply) return Drop();
  Log(LogLevel::kError, absl::StrCat("internal error: ", protocol::OpcodeName(opcode()),
                                     " request ", how, " without a reply; answering EIO"));
  Reply(protocol::Reply::Error(EIO));
}

void Request::Reply(const protocol::Reply& reply) {
  assert(slot_ != nullptr && "a request was answered twice");
  Slot* slot = std::exchange(slot_, nullptr);
  if (decoded_.no_reply) {
    // The kernel would not match an answer to anything: never send one.
    Log(LogLevel::kError, absl::StrCat("internal error: answer to ", protocol::OpcodeName(opcode()),
                                       ", which takes none"));
    slot->Release();
    return;
  }
  if (LogDebugEnabled()) Log(LogLevel::kDebug, protocol::FormatReply(unique(), opcode(), reply));
  slot->Send(unique(), reply);
}

void Request::Drop() {
  if (slot_ != nullptr) std::exchange(slot_, nullptr)->Release();
}

}  // namespace qedfuse::fusefs::transport
