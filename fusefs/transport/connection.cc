// Connection: INIT, the requests every filesystem answers the same way, and the choice of
// transport (see connection.h).
#include "fusefs/transport/connection.h"

#include <cerrno>
#include <variant>

#include "absl/strings/str_cat.h"
#include "fusefs/protocol/debug_format.h"
#include "qedfuse/base/log.h"
#ifdef QEDFUSE_HAVE_IO_URING
#include "fusefs/transport/uring.h"
#endif

namespace qedfuse::fusefs::transport {

using protocol::IoUringMode;

#ifndef QEDFUSE_HAVE_IO_URING
// Built without liburing: the ring is never created.
class UringChannel {
 public:
  unsigned queues() const { return 0; }
  unsigned per_queue() const { return 0; }
  uint64_t requests() const { return 0; }
  void Close() {}
};
#endif

Connection::Connection(coro::EventLoop& loop, int dev_fd, ConnectionConfig config)
    : loop_(loop),
      dev_fd_(dev_fd),
      config_(std::move(config)),
      dev_(loop, dev_fd, config_.session.max_write) {}

Connection::~Connection() { Close(); }

absl::Status Connection::Start(Handler handler) {
  handler_ = std::move(handler);
  if (config_.session.io_uring != IoUringMode::kOff) {
#ifdef QEDFUSE_HAVE_IO_URING
    auto ring =
        UringChannel::Create(loop_, dev_fd_, PossibleCpuCount(), config_.ring_entries_per_queue);
    if (ring.ok()) {
      ring_ = std::move(*ring);
    } else {
      ring_unavailable_ = std::string(ring.status().message());
    }
#else
    ring_unavailable_ = "this build has no io_uring support (liburing)";
#endif
  }
  config_.session.io_uring_available = ring_ != nullptr;
  return dev_.Start(
      [this](std::span<std::byte> message, Slot* slot) {
        ++dev_requests_;
        protocol::RequestBytes bytes;
        const char* why = nullptr;
        if (!protocol::SplitMessage(message, ctx_, &bytes, &why)) {
          // Without a trustworthy header there is nobody to answer.
          Log(LogLevel::kError, absl::StrCat("dropping a malformed FUSE message of ",
                                             message.size(), " bytes: ", why));
          slot->Release();
          return;
        }
        OnMessage(bytes, slot);
      },
      [this](const std::string& why) { Closed(why); });
}

void Connection::OnMessage(const protocol::RequestBytes& bytes, Slot* slot) {
  protocol::Decoded d = protocol::Decode(bytes, ctx_);
  if (LogDebugEnabled()) Log(LogLevel::kDebug, protocol::FormatRequest(d));
  if (d.error != 0 && d.error != ENOSYS) {
    Log(LogLevel::kWarning,
        absl::StrCat("malformed ", protocol::OpcodeName(d.header.opcode), " request: ", d.problem));
  }
  const int error = d.error;
  Request req(std::move(d), slot);
  if (req.decoded().no_reply) return req.Drop();
  if (error != 0) return req.ReplyError(error);
  const uint32_t op = req.opcode();
  if (op == FUSE_INIT) return HandleInit(std::move(req));
  if (!initialized_) return req.ReplyError(EIO);
  if (op == FUSE_DESTROY) return req.ReplyOk();
  if (!config_.policy.Allows(req.decoded())) return req.ReplyError(EACCES);
  handler_(std::move(req));
}

void Connection::HandleInit(Request req) {
  if (initialized_) return req.ReplyError(EIO);
  protocol::InitOutcome o = protocol::NegotiateInit(req.Get<protocol::InitArgs>(), config_.session);
  if (o.error != 0) {
    std::string why = o.message;
    if (config_.session.io_uring == IoUringMode::kOn && !ring_unavailable_.empty()) {
      absl::StrAppend(&why, " (", ring_unavailable_, ")");
    }
    Log(LogLevel::kError, "FUSE INIT refused: " + why);
    req.ReplyError(o.error);
    return Closed(why);
  }
  if (o.other_major) {  // answered with our major; the kernel asks again
    Log(LogLevel::kInfo, o.message);
    return req.ReplyStruct(o.out);
  }
  negotiated_ = o.negotiated;
  ctx_ = negotiated_.decode_context();
  initialized_ = true;
  Log(LogLevel::kDebug, absl::StrCat("FUSE protocol 7.", negotiated_.minor, ", flags ",
                                     protocol::InitFlagNames(negotiated_.flags)));
  if (config_.session.io_uring == IoUringMode::kAuto && ring_ != nullptr &&
      (negotiated_.offered & abi::kOverIoUring) == 0) {
    Log(LogLevel::kDebug, "the kernel does not offer FUSE over io_uring");
  } else if (config_.session.io_uring == IoUringMode::kAuto && ring_ == nullptr &&
             (negotiated_.offered & abi::kOverIoUring) != 0) {
    Log(LogLevel::kWarning, "not using FUSE over io_uring: " + ring_unavailable_);
  }
  req.ReplyStruct(o.out);  // the kernel processes it before writev() returns
  if (negotiated_.io_uring) {
    StartRing();
  } else if (ring_ != nullptr) {
    ring_->Close();
    ring_.reset();
  }
  if (closed_) return;
  Log(LogLevel::kInfo, "transport: " + TransportDescription());
  if (on_ready_) on_ready_();
}

void Connection::StartRing() {
#ifdef QEDFUSE_HAVE_IO_URING
  absl::Status st = ring_->Start(
      negotiated_.max_payload(),
      [this](const protocol::RequestBytes& bytes, Slot* slot) { OnMessage(bytes, slot); },
      [this](const std::string& why, bool closed) {
        if (closed) return Closed(why);
        // Registration failed: the kernel turned io_uring off and serves /dev/fuse.
        if (config_.session.io_uring == IoUringMode::kOn) {
          return Closed("io_uring=on, but " + why);
        }
        Log(LogLevel::kWarning, why + "; serving over /dev/fuse");
      });
  if (st.ok()) return;
  // The kernel waits for the ring after agreeing to it: make it give up, then carry on over
  // /dev/fuse (or stop, if io_uring was demanded).
  ring_->Abandon();
  ring_->Close();
  ring_.reset();
  if (config_.session.io_uring == IoUringMode::kOn) {
    return Closed("io_uring=on, but " + std::string(st.message()));
  }
  Log(LogLevel::kWarning, std::string(st.message()) + "; serving over /dev/fuse");
#endif
}

bool Connection::io_uring_active() const noexcept { return ring_ != nullptr; }

uint64_t Connection::ring_requests() const noexcept {
  return ring_ != nullptr ? ring_->requests() : 0;
}

std::string Connection::RingQueueCounts() const {
  std::string s;
#ifdef QEDFUSE_HAVE_IO_URING
  if (ring_ == nullptr) return s;
  std::vector<uint64_t> counts = ring_->requests_per_queue();
  for (std::size_t q = 0; q < counts.size(); ++q) {
    absl::StrAppend(&s, q == 0 ? "" : ", ", "queue ", q, ": ", counts[q]);
  }
#endif
  return s;
}

std::string Connection::TransportDescription() const {
  if (ring_ == nullptr) return "/dev/fuse";
  return absl::StrCat("io_uring, ", ring_->queues(), " queues x ", ring_->per_queue(), " entries");
}

void Connection::StopReading() { dev_.Stop(); }

void Connection::Closed(const std::string& why) {
  if (closed_) return;
  closed_ = true;
  dev_.Stop();
  if (on_closed_) on_closed_(why);
}

void Connection::Close() {
  closed_ = true;
  dev_.Stop();
  if (ring_ != nullptr) ring_->Close();
}

}  // namespace qedfuse::fusefs::transport
