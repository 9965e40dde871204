// fusefs::transport::DevFuseChannel: requests read from /dev/fuse, replies written with writev().
//
// The channel watches a non-blocking dup of the session's descriptor on the event loop
// (stream_descriptor::async_wait) and, when it is readable, reads requests until EAGAIN (at most
// kMaxPerTurn per loop turn, then continues from a later turn so that completions are not
// starved). Each request is read into its own receive buffer (a DevFuseSlot), which becomes the
// request's slot: the buffer goes with the request until its reply, and the next request is
// read into another one. Buffers are recycled (at most kMaxFree idle ones are kept).
//
// Buffer layout: a 4 KiB-aligned region; the message is read at offset
// 4096 - sizeof(fuse_in_header) - sizeof(fuse_write_in), so a WRITE's payload starts exactly at
// offset 4096 (aligned for O_DIRECT image files, never copied), and a READ's reply area is that
// same aligned offset (the READ message itself ends there). Only the pages a request touches
// become resident.
//
// This channel serves every request on kernels without FUSE over io_uring, and beside the ring
// it still carries INIT, FORGET, INTERRUPT and anything queued before the ring was ready.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "fusefs/protocol/codec.h"
#include "fusefs/transport/request.h"
#include "qedfuse/coro/event_loop.h"

namespace qedfuse::fusefs::transport {

class DevFuseChannel {
 public:
  // Called for each message read; the slot is handed over with it.
  using OnMessage = std::function<void(std::span<std::byte> message, Slot* slot)>;
  // Called once when reading stops for good because of the kernel (unmount) or an error.
  using OnClosed = std::function<void(const std::string& why)>;

  static constexpr std::size_t kAlign = 4096;
  static constexpr std::size_t kWriteHeader = sizeof(fuse_in_header) + sizeof(fuse_write_in);
  static constexpr std::size_t kMessageOffset = kAlign - kWriteHeader;
  static constexpr int kMaxPerTurn = 64;
  static constexpr std::size_t kMaxFree = 32;

  // |fd| is the session's /dev/fuse descriptor (not owned; replies are written to it).
  // |max_write| bounds WRITE payloads and READ replies (the INIT max_write we will offer).
  DevFuseChannel(coro::EventLoop& loop, int fd, std::size_t max_write);
  ~DevFuseChannel();
  DevFuseChannel(const DevFuseChannel&) = delete;
  DevFuseChannel& operator=(const DevFuseChannel&) = delete;

  // Starts reading. Fails if the descriptor cannot be watched.
  absl::Status Start(OnMessage on_message, OnClosed on_closed);
  // Stops reading (replies can still be sent). Idempotent.
  void Stop();

  // Receive buffers allocated now (idle or in use).
  std::size_t buffers() const noexcept { return buffers_; }

 private:
  class BufferSlot;
  friend class BufferSlot;

  void Arm();
  void OnReadable();
  void PostRead();  // OnReadable() from a later loop turn
  BufferSlot* GetSlot();
  void PutSlot(BufferSlot* slot) noexcept;
  void Closed(const std::string& why);
  // writev() of a reply; 0 or -errno.
  int Write(const fuse_out_header& out, std::span<const std::byte> a, std::span<const std::byte> b);

  coro::EventLoop& loop_;
  const int fd_;
  const std::size_t region_bytes_;
  struct Watch;
  std::unique_ptr<Watch> watch_;
  OnMessage on_message_;
  OnClosed on_closed_;
  bool reading_ = false;
  BufferSlot* spare_ = nullptr;  // the buffer of the next read
  std::vector<BufferSlot*> free_;
  std::size_t buffers_ = 0;
  std::shared_ptr<char> alive_ = std::make_shared<char>();  // for posted callbacks
};

}  // namespace qedfuse::fusefs::transport
