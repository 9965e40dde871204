// fusefs::transport::UringChannel: FUSE over io_uring (kernel protocol 7.42, Linux >= 6.14).
//
// How the kernel does it (fs/fuse/dev_uring.c): the daemon answers INIT with
// FUSE_OVER_IO_URING, then registers ring entries with IORING_OP_URING_CMD on /dev/fuse
// (FUSE_IO_URING_CMD_REGISTER, 128-byte SQEs). There is one kernel queue per possible CPU; a
// request goes to the queue of the CPU its caller runs on. An entry is two buffers, a 288-byte
// header (abi::UringReqHeader) and a payload buffer of at least max(8 KiB, max_write,
// max_pages * page size). The registering command completes when the kernel has put a request
// into the entry; the reply goes into the same buffers and FUSE_IO_URING_CMD_COMMIT_AND_FETCH
// both delivers it and re-arms the entry. Until every queue has an entry the kernel holds new
// requests back (REGISTER before the INIT reply has been processed fails with EAGAIN); after
// that, every request but FORGET and INTERRUPT comes through the ring. At unmount or abort the
// kernel completes the commands it holds with ENOTCONN; a commit after that fails with ENOTCONN.
//
// Here: one liburing ring (IORING_SETUP_SQE128, with deferred task work so that the kernel's
// copies into our entries run when we reap, not whenever a request arrives) with an eventfd that
// the event loop watches;
// completions are reaped when it fires. Replies given while the completions are handled go out
// in one io_uring_enter right after them; those given later in a loop turn (by handlers that
// waited for I/O) in one io_uring_enter at the end of the turn. Per-queue state lives in
// its own UringQueue object (entries and their buffers), so that queues could later be spread
// over several loops, each with its own ring; today one loop serves them all.
//
// Polling: the channel is an EventLoop::Poller. Deferred task work pending (IORING_SQ_TASKRUN,
// with IORING_SETUP_TASKRUN_FLAG) or completions in the queue both show in the ring's shared
// memory, so while the loop busy-polls (--poll-us) a new request is seen without a system call,
// and the eventfd is switched off (IORING_CQ_EVENTFD_DISABLED) until the loop goes to sleep.
// That leaves the GETEVENTS enter, the image read and the commit per request at iodepth 1.
//
// An entry is the Slot of the request in it: the request owns the entry, its WRITE data stays in
// the payload buffer and its READ reply is composed there (ReplyArea()), until the commit.
//
// Teardown (Close(), after the mount is gone): wait briefly for the kernel to give back every
// entry it holds, then close the ring. Buffers the kernel may still write into are never freed:
// if an entry did not come back in time its buffers are left mapped until the process exits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fusefs/protocol/codec.h"
#include "fusefs/transport/request.h"
#include "qedfuse/coro/event_loop.h"

struct io_uring_sqe;

namespace qedfuse::fusefs::transport {

// The number of kernel queues: the possible CPUs (/sys/devices/system/cpu/possible).
unsigned PossibleCpuCount();

class UringChannel final : public coro::EventLoop::Poller {
 public:
  using OnMessage = std::function<void(const protocol::RequestBytes& bytes, Slot* slot)>;
  // Reading stopped for good: |closed| is true when the kernel ended the connection (unmount),
  // false when registration failed (the kernel then keeps using /dev/fuse).
  using OnStopped = std::function<void(const std::string& why, bool closed)>;

  // Creates the ring, sized for |queues| x |per_queue| entries. An error says why io_uring with
  // 128-byte SQEs is not available here (old kernel, io_uring disabled, seccomp, ...).
  static absl::StatusOr<std::unique_ptr<UringChannel>> Create(coro::EventLoop& loop, int dev_fd,
                                                              unsigned queues, unsigned per_queue);
  ~UringChannel();
  UringChannel(const UringChannel&) = delete;
  UringChannel& operator=(const UringChannel&) = delete;

  // Allocates every entry (payload buffers of |payload_bytes|) and registers them. Call after the
  // INIT reply (with FUSE_OVER_IO_URING) has been written.
  absl::Status Start(std::size_t payload_bytes, OnMessage on_message, OnStopped on_stopped);
  // Tears the ring down (see above). Precondition: no Request holds an entry. Idempotent.
  void Close();

  unsigned queues() const noexcept;
  unsigned per_queue() const noexcept { return per_queue_; }
  uint64_t requests() const noexcept { return requests_; }
  // Requests received on each kernel queue.
  std::vector<uint64_t> requests_per_queue() const;
  // Submits an invalid REGISTER: the kernel then gives up io_uring for this connection and
  // serves it over /dev/fuse (used when the entries cannot be set up after io_uring was agreed).
  void Abandon();

  // coro::EventLoop::Poller: new requests show in the ring's memory (deferred task work pending,
  // or completions posted), so the loop can poll for them without a system call.
  bool Poll() override;
  void SetWakeups(bool on) override;

 private:
  struct Ring;
  class Entry;
  class Queue;
  friend class Entry;

  UringChannel(coro::EventLoop& loop, int dev_fd, unsigned per_queue);
  void Commit(Entry* e);
  void Register(Entry* e);
  ::io_uring_sqe* NextSqe();
  void ScheduleSubmit();
  void Submit();
  void Arm();
  void Reap();
  void ReapRing();
  bool TaskWorkPending() const;
  void Complete(Entry* e, int res);
  void Stopped(const std::string& why, bool closed);

  coro::EventLoop& loop_;
  const int dev_fd_;
  const unsigned per_queue_;
  std::unique_ptr<Ring> ring_;
  std::vector<std::unique_ptr<Queue>> queues_;
  std::size_t payload_bytes_ = 0;
  OnMessage on_message_;
  OnStopped on_stopped_;
  bool running_ = false;
  bool closed_ = false;
  bool submit_pending_ = false;
  bool reaping_ = false;
  bool reap_posted_ = false;  // a ReapRing() for left-over task work is posted
  unsigned in_kernel_ = 0;    // entries with a command the kernel holds
  unsigned retries_ = 0;
  uint64_t requests_ = 0;
  std::vector<uint64_t> final_counts_;                      // requests per queue, kept by Close()
  std::shared_ptr<char> alive_ = std::make_shared<char>();  // for posted callbacks
};

}  // namespace qedfuse::fusefs::transport
