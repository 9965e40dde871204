// DevFuseChannel: the /dev/fuse reader and writer (see dev_fuse.h).
#include "fusefs/transport/dev_fuse.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cassert>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "qedfuse/base/log.h"
#include "qedfuse/block/io_buffer.h"

namespace qedfuse::fusefs::transport {
namespace {

// Like IoBuffer's cache: no recycling under ASan, which should see every allocation and free.
constexpr bool kRecycle = block::io_buffer_internal::kRecycle;

std::size_t RoundUp(std::size_t n, std::size_t a) { return (n + a - 1) / a * a; }

}  // namespace

// One receive buffer, and the slot of the request read into it.
class DevFuseChannel::BufferSlot final : public Slot {
 public:
  BufferSlot(DevFuseChannel* channel, std::byte* region) : channel_(channel), region_(region) {}
  ~BufferSlot() { std::free(region_); }

  std::byte* message() const noexcept { return region_ + kMessageOffset; }
  std::size_t capacity() const noexcept { return channel_->region_bytes_ - kMessageOffset; }

  std::span<std::byte> ReplyArea() override {
    return {region_ + kAlign, channel_->region_bytes_ - 2 * kAlign};
  }
  void Send(uint64_t unique, const protocol::Reply& reply) override {
    fuse_out_header out = protocol::MakeOutHeader(unique, reply);
    int rc = reply.error() != 0 ? channel_->Write(out, {}, {})
                                : channel_->Write(out, reply.inline_bytes(), reply.data());
    // ENOENT: the request was interrupted and forgotten; ENODEV/EBADF: the connection is gone.
    if (rc != 0 && LogDebugEnabled()) {
      Log(LogLevel::kDebug, absl::StrCat("reply ", unique, " not delivered: ", strerror(-rc)));
    }
    channel_->PutSlot(this);
  }
  void Release() override { channel_->PutSlot(this); }

 private:
  DevFuseChannel* channel_;
  std::byte* region_;
};

struct DevFuseChannel::Watch {
  explicit Watch(boost::asio::io_context& ctx) : fd(ctx) {}
  boost::asio::posix::stream_descriptor fd;  // a non-blocking dup of fd_
};

DevFuseChannel::DevFuseChannel(coro::EventLoop& loop, int fd, std::size_t max_write)
    : loop_(loop),
      fd_(fd),
      // Reply area: at least FUSE_MIN_READ_BUFFER, and a whole number of pages.
      region_bytes_(kAlign + RoundUp(std::max<std::size_t>(max_write, 8192), kAlign) + kAlign),
      watch_(std::make_unique<Watch>(loop.context())) {}

DevFuseChannel::~DevFuseChannel() {
  Stop();
  delete spare_;
  for (BufferSlot* s : free_) delete s;
}

absl::Status DevFuseChannel::Start(OnMessage on_message, OnClosed on_closed) {
  on_message_ = std::move(on_message);
  on_closed_ = std::move(on_closed);
  // Watch a dup, so that Asio and the session each close their own descriptor. Non-blocking, so
  // that a request withdrawn between readiness and read() (interrupted) cannot block the loop.
  int dup = fcntl(fd_, F_DUPFD_CLOEXEC, 3);
  if (dup < 0 || fcntl(dup, F_SETFL, fcntl(dup, F_GETFL) | O_NONBLOCK) < 0) {
    int err = errno;
    if (dup >= 0) close(dup);
    return absl::InternalError(absl::StrCat("cannot watch the FUSE device: ", strerror(err)));
  }
  boost::system::error_code ec;
  watch_->fd.assign(dup, ec);
  if (ec) {
    close(dup);
    return absl::InternalError("cannot watch the FUSE device: " + ec.message());
  }
  reading_ = true;
  // Drain first: the kernel queued INIT at mount time, before the descriptor was watched.
  PostRead();
  return absl::OkStatus();
}

void DevFuseChannel::Stop() {
  reading_ = false;
  boost::system::error_code ec;
  watch_->fd.close(ec);  // our dup only; replies still go out through fd_
}

void DevFuseChannel::Arm() {
  watch_->fd.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                        [this](const boost::system::error_code& ec) {
                          if (ec == boost::asio::error::operation_aborted || !reading_) return;
                          if (ec) return Closed("FUSE device error: " + ec.message());
                          OnReadable();
                        });
}

void DevFuseChannel::OnReadable() {
  if (!reading_) return;
  const int fd = watch_->fd.native_handle();
  for (int i = 0; i < kMaxPerTurn; ++i) {
    if (spare_ == nullptr) spare_ = GetSlot();
    ssize_t n = ::read(fd, spare_->message(), spare_->capacity());
    if (n < 0) {
      const int err = errno;
      // ENOENT: the request was interrupted and withdrawn before we read it.
      if (err == EINTR || err == ENOENT) continue;
      if (err == EAGAIN) return Arm();  // the reactor is edge-triggered: wait once drained
      // ENODEV: the mount is gone (fusermount3 -u, umount, abort).
      return Closed(err == ENODEV
                        ? std::string("the mount was removed")
                        : absl::StrCat("reading the FUSE device failed: ", strerror(err)));
    }
    if (n == 0) return Closed("the FUSE device reported end of file");
    BufferSlot* slot = std::exchange(spare_, nullptr);
    on_message_(std::span<std::byte>(slot->message(), static_cast<std::size_t>(n)), slot);
    if (!reading_) return;
  }
  PostRead();
}

void DevFuseChannel::PostRead() {
  loop_.Post([this, alive = std::weak_ptr<char>(alive_)] {
    if (!alive.expired()) OnReadable();
  });
}

void DevFuseChannel::Closed(const std::string& why) {
  if (!reading_) return;
  Stop();
  if (on_closed_) on_closed_(why);
}

DevFuseChannel::BufferSlot* DevFuseChannel::GetSlot() {
  if (!free_.empty()) {
    BufferSlot* s = free_.back();
    free_.pop_back();
    return s;
  }
  auto* region = static_cast<std::byte*>(std::aligned_alloc(kAlign, region_bytes_));
  if (region == nullptr) throw std::bad_alloc();
  ++buffers_;
  return new BufferSlot(this, region);
}

void DevFuseChannel::PutSlot(BufferSlot* slot) noexcept {
  if (kRecycle && free_.size() < kMaxFree) {
    try {
      free_.push_back(slot);
      return;
    } catch (...) {  // no room to remember it: free it instead
    }
  }
  --buffers_;
  delete slot;
}

int DevFuseChannel::Write(const fuse_out_header& out, std::span<const std::byte> a,
                          std::span<const std::byte> b) {
  iovec iov[3];
  int count = 0;
  iov[count++] = {const_cast<fuse_out_header*>(&out), sizeof(out)};
  if (!a.empty()) iov[count++] = {const_cast<std::byte*>(a.data()), a.size()};
  if (!b.empty()) iov[count++] = {const_cast<std::byte*>(b.data()), b.size()};
  ssize_t n;
  do {
    n = ::writev(fd_, iov, count);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : 0;
}

}  // namespace qedfuse::fusefs::transport
