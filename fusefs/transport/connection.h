// fusefs::transport::Connection: one FUSE connection, served with our own codec over /dev/fuse
// and, when the kernel and the configuration allow it, FUSE over io_uring.
//
// The Connection owns both channels and everything that is the same for every filesystem:
//   - INIT: negotiated here (protocol::NegotiateInit); with io_uring agreed, the ring entries
//     are registered right after the INIT reply, and the transport in use is logged
//     ("transport: io_uring, 2 queues x 32 entries" or "transport: /dev/fuse");
//   - requests the filesystem never sees: FORGET/BATCH_FORGET (a single inode: nothing to
//     forget), INTERRUPT (every request completes promptly; ignored), DESTROY (answered),
//     malformed ones (EINVAL/EIO), unknown opcodes (ENOSYS), requests before INIT (EIO), and
//     requests the access policy refuses (EACCES);
//   - the -d log: one line per request and per reply, from the decoded fields.
// Every other request goes to the handler as a Request, whichever channel it came from. The
// /dev/fuse channel keeps running beside the ring: FORGET and INTERRUPT always come that way,
// and so may a request queued before the ring was ready.
//
// io_uring modes: kOff never tries. kAuto creates the ring before INIT (so that the INIT answer
// only asks for what can be done) and uses it when the kernel offers FUSE_OVER_IO_URING; any
// failure falls back to /dev/fuse with a warning. kOn fails INIT (and so the mount) with a
// message when the kernel does not offer it or the ring cannot be created, and ends the
// connection if registration fails. The kernel's global switch is never touched.
//
// Lifecycle: Start() after mounting; StopReading() when shutting down (no new requests from
// /dev/fuse); after the mount is gone, Close() once no Request is held any more.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "fusefs/protocol/session.h"
#include "fusefs/transport/dev_fuse.h"
#include "fusefs/transport/request.h"
#include "qedfuse/coro/event_loop.h"

namespace qedfuse::fusefs::transport {

class UringChannel;

struct ConnectionConfig {
  protocol::SessionConfig session;
  protocol::AccessPolicy policy = protocol::AccessPolicy::Anyone();
  // Ring entries per kernel queue: the requests one thread can have in flight at once (all of
  // a thread's requests land in the queue of its CPU).
  unsigned ring_entries_per_queue = 32;
};

class Connection {
 public:
  using Handler = std::function<void(Request)>;

  // |dev_fd|: the mounted session's /dev/fuse descriptor (not owned).
  Connection(coro::EventLoop& loop, int dev_fd, ConnectionConfig config);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Called once, after the INIT answer (and the ring registration): the mount is usable.
  void SetOnReady(std::function<void()> fn) { on_ready_ = std::move(fn); }
  // Called once when the connection ends: the mount was removed, a channel failed, or INIT was
  // refused. |why| is fit for the log.
  void SetOnClosed(std::function<void(const std::string& why)> fn) { on_closed_ = std::move(fn); }

  // Starts reading requests; |handler| gets every request the Connection does not answer itself.
  absl::Status Start(Handler handler);
  void StopReading();
  // Tears the channels down. Precondition: no Request is held. Idempotent.
  void Close();

  bool initialized() const noexcept { return initialized_; }
  const protocol::Negotiated& negotiated() const noexcept { return negotiated_; }
  bool io_uring_active() const noexcept;
  // "io_uring, 2 queues x 32 entries" or "/dev/fuse".
  std::string TransportDescription() const;
  // Requests received over each channel so far.
  uint64_t dev_requests() const noexcept { return dev_requests_; }
  uint64_t ring_requests() const noexcept;
  // "queue 0: 812, queue 1: 790" (empty without a ring).
  std::string RingQueueCounts() const;

 private:
  void OnMessage(const protocol::RequestBytes& bytes, Slot* slot);
  void HandleInit(Request req);
  void StartRing();
  void Closed(const std::string& why);

  coro::EventLoop& loop_;
  const int dev_fd_;
  ConnectionConfig config_;
  Handler handler_;
  std::function<void()> on_ready_;
  std::function<void(const std::string&)> on_closed_;
  DevFuseChannel dev_;
  std::unique_ptr<UringChannel> ring_;
  std::string ring_unavailable_;  // why no ring could be created (kAuto logs it at INIT)
  protocol::Negotiated negotiated_;
  protocol::DecodeContext ctx_;
  bool initialized_ = false;
  bool closed_ = false;
  uint64_t dev_requests_ = 0;
};

}  // namespace qedfuse::fusefs::transport
