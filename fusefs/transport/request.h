// fusefs::transport::Request: one decoded FUSE request, owned until it is answered.
//
// A Request holds the decoded header and arguments and the Slot the request arrived in: a
// /dev/fuse receive buffer or an io_uring ring entry. The arguments point into that slot (names,
// WRITE data), so the slot stays with the request until the reply: a WRITE's payload is owned by
// its request from the moment it is decoded, before anything can suspend, and is never copied.
// The slot also offers a reply area (ReplyArea()) where a data reply (READ) can be composed in
// place: on io_uring it is the entry's payload buffer, which the kernel copies from, so such a
// reply costs no copy in the daemon on either transport.
//
// Exactly one reply: Request is move-only, each Reply*() consumes it, and a request destroyed
// without an answer is answered EIO and logged (requests that take no answer, FORGET and
// INTERRUPT, are released silently). Replies are sent from the event loop thread; sending never
// blocks. A reply the kernel no longer wants (the request was interrupted, or the connection is
// gone) is not an error for the handler.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <variant>

#include "fusefs/protocol/codec.h"

namespace qedfuse::fusefs::transport {

// Where a request lives, implemented by each transport.
class Slot {
 public:
  // The area a data reply may be composed in: 4 KiB-aligned, at least the negotiated maximum
  // payload. It may overlap the request's own payload (names, WRITE data): read those first.
  virtual std::span<std::byte> ReplyArea() = 0;
  // Sends |reply| to the request |unique| and gives the slot back to its transport.
  virtual void Send(uint64_t unique, const protocol::Reply& reply) = 0;
  // Gives the slot back without an answer.
  virtual void Release() = 0;

 protected:
  ~Slot() = default;
};

class Request {
 public:
  Request() noexcept = default;
  Request(protocol::Decoded decoded, Slot* slot) noexcept
      : decoded_(std::move(decoded)), slot_(slot) {}
  Request(Request&& o) noexcept
      : decoded_(std::move(o.decoded_)), slot_(std::exchange(o.slot_, nullptr)) {}
  Request& operator=(Request&& o) noexcept;
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;
  ~Request();

  bool pending() const noexcept { return slot_ != nullptr; }
  const fuse_in_header& header() const noexcept { return decoded_.header; }
  uint32_t opcode() const noexcept { return decoded_.header.opcode; }
  uint64_t unique() const noexcept { return decoded_.header.unique; }
  uint64_t nodeid() const noexcept { return decoded_.header.nodeid; }
  const protocol::Decoded& decoded() const noexcept { return decoded_; }
  const protocol::Args& args() const noexcept { return decoded_.args; }
  template <typename T>
  const T& Get() const {
    return std::get<T>(decoded_.args);
  }

  // See Slot::ReplyArea(). Precondition: pending().
  std::span<std::byte> ReplyArea() const { return slot_->ReplyArea(); }

  void Reply(const protocol::Reply& reply);
  void ReplyError(int err) { Reply(protocol::Reply::Error(err)); }
  void ReplyOk() { Reply(protocol::Reply::Ok()); }
  template <typename T>
  void ReplyStruct(const T& value) {
    Reply(protocol::Reply::Struct(value));
  }
  void ReplyData(std::span<const std::byte> data) { Reply(protocol::Reply::Data(data)); }
  // For requests that take no answer (FORGET, INTERRUPT, NOTIFY_REPLY).
  void Drop();

 private:
  void Abandon(const char* how);

  protocol::Decoded decoded_;
  Slot* slot_ = nullptr;
};

}  // namespace qedfuse::fusefs::transport
