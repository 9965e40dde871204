// fusefs::FuseRequest: owns one in-flight FUSE request (a libfuse fuse_req_t, or a READ/WRITE
// the frontend parsed itself) until it is answered.
//
// Every request must get exactly one reply. FuseRequest is move-only, each Reply*() consumes it,
// and a request destroyed without a reply is answered with EIO and logged, so a handler that
// forgets a path cannot leave a process hanging in the kernel. Replies are sent from the event
// loop thread and written to /dev/fuse synchronously (that write never blocks).
// A failed reply (the request was interrupted, or the connection is gone) is not an error for
// the handler: the kernel no longer waits for it.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace qedfuse::fusefs {

class FuseRequest {
 public:
  FuseRequest() noexcept = default;
  // |op| names the operation in log messages; it must be a string literal.
  FuseRequest(fuse_req_t req, const char* op) noexcept : req_(req), op_(op) {}
  // A READ or WRITE received and answered without libfuse (see FuseFrontend::OnReadable):
  // replies are written to |fd| for the kernel's request id |unique|. Such a request supports
  // ReplyError, ReplyBuf and ReplyWrite only.
  static FuseRequest Raw(int fd, uint64_t unique, const char* op) noexcept {
    FuseRequest r;
    r.raw_fd_ = fd;
    r.unique_ = unique;
    r.op_ = op;
    return r;
  }
  FuseRequest(FuseRequest&& o) noexcept
      : req_(std::exchange(o.req_, nullptr)),
        op_(o.op_),
        raw_fd_(std::exchange(o.raw_fd_, -1)),
        unique_(o.unique_) {}
  FuseRequest& operator=(FuseRequest&& o) noexcept;
  FuseRequest(const FuseRequest&) = delete;
  FuseRequest& operator=(const FuseRequest&) = delete;
  ~FuseRequest();

  bool pending() const noexcept { return req_ != nullptr || raw_fd_ >= 0; }
  const char* op() const noexcept { return op_; }

  // Errno reply; |err| > 0. ReplyOk() is the success reply of operations without data.
  void ReplyError(int err);
  void ReplyOk();
  void ReplyAttr(const struct stat& attr, double timeout);
  void ReplyOpen(const fuse_file_info& fi);
  // An OPEN reply with raw FOPEN_* flags (<linux/fuse.h>), for flags that libfuse 3.14's
  // fuse_file_info cannot express (FOPEN_PARALLEL_DIRECT_WRITES).
  void ReplyOpenFlags(uint64_t fh, uint32_t open_flags);
  void ReplyBuf(const void* data, std::size_t size);
  void ReplyWrite(std::size_t count);
  void ReplyStatfs(const struct statvfs& st);
  void ReplyLseek(uint64_t offset);
  void ReplyNone();  // forget: no reply is sent to the kernel

 private:
  fuse_req_t Take() noexcept { return std::exchange(req_, nullptr); }
  void Check(int rc, const char* what);
  // Raw requests: sends the reply header with |error| (<= 0) and the body in |iov|.
  void RawReply(int error, const iovec* body, int count, const char* what);
  // For replies raw requests do not support: answers EIO and returns true.
  bool RawUnsupported();
  // Answers a request that is being dropped or overwritten with EIO.
  void AbandonWithEio(const char* how);

  fuse_req_t req_ = nullptr;
  const char* op_ = "?";
  int raw_fd_ = -1;  // >= 0: a raw request still waiting for its reply
  uint64_t unique_ = 0;
};

}  // namespace qedfuse::fusefs
