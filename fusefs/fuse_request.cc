// FuseRequest: exactly-one-reply wrapper around fuse_req_t (see fuse_request.h).
#include "fusefs/fuse_request.h"

#include <linux/fuse.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "qedfuse/base/log.h"

namespace qedfuse::fusefs {

FuseRequest& FuseRequest::operator=(FuseRequest&& o) noexcept {
  if (this != &o) {
    if (pending()) AbandonWithEio("overwritten");
    req_ = std::exchange(o.req_, nullptr);
    op_ = o.op_;
    raw_fd_ = std::exchange(o.raw_fd_, -1);
    unique_ = o.unique_;
  }
  return *this;
}

FuseRequest::~FuseRequest() {
  if (pending()) AbandonWithEio("dropped");
}

void FuseRequest::AbandonWithEio(const char* how) {
  Log(LogLevel::kError, std::string("internal error: ") + op_ + " request " + how +
                            " without a reply; answering EIO");
  if (raw_fd_ >= 0) {
    RawReply(-EIO, nullptr, 0, "error reply");
  } else {
    fuse_reply_err(Take(), EIO);
  }
}

bool FuseRequest::RawUnsupported() {
  if (raw_fd_ < 0) return false;
  Log(LogLevel::kError,
      std::string("internal error: unsupported reply to a raw ") + op_ + " request; answering EIO");
  RawReply(-EIO, nullptr, 0, "error reply");
  return true;
}

void FuseRequest::RawReply(int error, const iovec* body, int count, const char* what) {
  fuse_out_header out{};
  iovec iov[3];
  iov[0] = {&out, sizeof(out)};
  std::size_t len = sizeof(out);
  for (int i = 0; i < count; ++i) {
    iov[i + 1] = body[i];
    len += body[i].iov_len;
  }
  out.len = static_cast<uint32_t>(len);
  out.error = error;
  out.unique = unique_;
  const int fd = std::exchange(raw_fd_, -1);
  ssize_t n;
  do {
    n = ::writev(fd, iov, count + 1);
  } while (n < 0 && errno == EINTR);
  Check(n < 0 ? -errno : 0, what);
}

void FuseRequest::Check(int rc, const char* what) {
  // -ENOENT: the request was interrupted and the kernel forgot it; -ENODEV/-EBADF: the
  // connection is gone (unmounted). Neither concerns the handler.
  if (rc != 0 && LogDebugEnabled()) {
    Log(LogLevel::kDebug, std::string(op_) + ": " + what + " not delivered: " + std::strerror(-rc));
  }
}

void FuseRequest::ReplyError(int err) {
  if (err <= 0) err = EIO;
  if (LogDebugEnabled()) {
    Log(LogLevel::kDebug, std::string(op_) + " -> " + std::strerror(err));
  }
  if (raw_fd_ >= 0) return RawReply(-err, nullptr, 0, "error reply");
  Check(fuse_reply_err(Take(), err), "error reply");
}

void FuseRequest::ReplyOk() {
  if (RawUnsupported()) return;
  Check(fuse_reply_err(Take(), 0), "reply");
}

void FuseRequest::ReplyAttr(const struct stat& attr, double timeout) {
  if (RawUnsupported()) return;
  Check(fuse_reply_attr(Take(), &attr, timeout), "attr reply");
}

void FuseRequest::ReplyOpen(const fuse_file_info& fi) {
  if (RawUnsupported()) return;
  Check(fuse_reply_open(Take(), &fi), "open reply");
}

void FuseRequest::ReplyOpenFlags(uint64_t fh, uint32_t open_flags) {
  if (RawUnsupported()) return;
  // libfuse prepends the reply header; the body is the kernel's fuse_open_out.
  fuse_open_out out{};
  out.fh = fh;
  out.open_flags = open_flags;
  iovec iov{&out, sizeof(out)};
  Check(fuse_reply_iov(Take(), &iov, 1), "open reply");
}

void FuseRequest::ReplyBuf(const void* data, std::size_t size) {
  if (raw_fd_ >= 0) {
    iovec body{const_cast<void*>(data), size};
    return RawReply(0, &body, size > 0 ? 1 : 0, "data reply");
  }
  Check(fuse_reply_buf(Take(), static_cast<const char*>(data), size), "data reply");
}

void FuseRequest::ReplyWrite(std::size_t count) {
  if (raw_fd_ >= 0) {
    fuse_write_out out{};
    out.size = static_cast<uint32_t>(count);
    iovec body{&out, sizeof(out)};
    return RawReply(0, &body, 1, "write reply");
  }
  Check(fuse_reply_write(Take(), count), "write reply");
}

void FuseRequest::ReplyStatfs(const struct statvfs& st) {
  if (RawUnsupported()) return;
  Check(fuse_reply_statfs(Take(), &st), "statfs reply");
}

void FuseRequest::ReplyLseek(uint64_t offset) {
  if (RawUnsupported()) return;
  Check(fuse_reply_lseek(Take(), static_cast<off_t>(offset)), "lseek reply");
}

void FuseRequest::ReplyNone() {
  if (RawUnsupported()) return;
  fuse_reply_none(Take());
}

}  // namespace qedfuse::fusefs
