// FuseRequest: exactly-one-reply wrapper around fuse_req_t (see fuse_request.h).
#include "fusefs/fuse_request.h"

#include <linux/fuse.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "fusefs/log.h"

namespace qedfuse::fusefs {

FuseRequest& FuseRequest::operator=(FuseRequest&& o) noexcept {
  if (this != &o) {
    if (req_ != nullptr) {
      Log(LogLevel::kError, std::string("internal error: ") + op_ +
                                " request overwritten without a reply; answering EIO");
      fuse_reply_err(Take(), EIO);
    }
    req_ = std::exchange(o.req_, nullptr);
    op_ = o.op_;
  }
  return *this;
}

FuseRequest::~FuseRequest() {
  if (req_ == nullptr) return;
  Log(LogLevel::kError,
      std::string("internal error: ") + op_ + " request dropped without a reply; answering EIO");
  fuse_reply_err(Take(), EIO);
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
  Check(fuse_reply_err(Take(), err), "error reply");
}

void FuseRequest::ReplyOk() { Check(fuse_reply_err(Take(), 0), "reply"); }

void FuseRequest::ReplyAttr(const struct stat& attr, double timeout) {
  Check(fuse_reply_attr(Take(), &attr, timeout), "attr reply");
}

void FuseRequest::ReplyOpen(const fuse_file_info& fi) {
  Check(fuse_reply_open(Take(), &fi), "open reply");
}

void FuseRequest::ReplyOpenFlags(uint64_t fh, uint32_t open_flags) {
  // libfuse prepends the reply header; the body is the kernel's fuse_open_out.
  fuse_open_out out{};
  out.fh = fh;
  out.open_flags = open_flags;
  iovec iov{&out, sizeof(out)};
  Check(fuse_reply_iov(Take(), &iov, 1), "open reply");
}

void FuseRequest::ReplyBuf(const void* data, std::size_t size) {
  Check(fuse_reply_buf(Take(), static_cast<const char*>(data), size), "data reply");
}

void FuseRequest::ReplyWrite(std::size_t count) {
  Check(fuse_reply_write(Take(), count), "write reply");
}

void FuseRequest::ReplyStatfs(const struct statvfs& st) {
  Check(fuse_reply_statfs(Take(), &st), "statfs reply");
}

void FuseRequest::ReplyLseek(uint64_t offset) {
  Check(fuse_reply_lseek(Take(), static_cast<off_t>(offset)), "lseek reply");
}

void FuseRequest::ReplyNone() { fuse_reply_none(Take()); }

}  // namespace qedfuse::fusefs
