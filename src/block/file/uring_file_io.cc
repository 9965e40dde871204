// UringFileIo: Asio's random_access_file over io_uring (aio=io_uring).
//
// Asio runs io_uring as a service of the loop's io_context; completions are reaped by the
// reactor and resume the awaiting coroutine on the loop thread. The descriptor is dup'ed because
// random_access_file closes what it owns.
//
// Buffered writes (a descriptor without O_DIRECT) go to the thread pool instead: a file system
// that cannot do them without blocking (ext4) makes io_uring punt each one to its io-wq workers,
// and io-wq runs buffered writes to one inode strictly one after another (the measurements are
// in scripts/bench/profiling.md, item 1).
//
// Buffered reads are first tried from the page cache on the loop thread (CachedReader); what is
// not cached comes through io_uring. On a file system without non-blocking reads (tmpfs),
// io_uring would punt every buffered read to io-wq as well, so they go to the pool there.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "block/file/file_io.h"
#include "qedfuse/coro/event_loop.h"

#ifdef QEDFUSE_HAVE_IO_URING
#include <liburing.h>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/random_access_file.hpp>

#include "qedfuse/coro/asio_await.h"
#endif

namespace qedfuse::block {

#ifdef QEDFUSE_HAVE_IO_URING
namespace {

namespace asio = boost::asio;

std::error_code ToStd(const boost::system::error_code& ec) {
  if (ec.category() == boost::system::system_category() ||
      ec.category() == boost::system::generic_category()) {
    return ErrnoCode(ec.value());
  }
  return ErrnoCode(EIO);
}

class UringFileIo final : public FileIo {
 public:
  UringFileIo(int fd, asio::random_access_file file, std::unique_ptr<FileIo> pool)
      : cached_(fd), file_(std::move(file)), pool_(std::move(pool)) {}

  std::string_view name() const override { return "io_uring"; }
  bool reads_cache_inline() const override { return cached_.enabled(); }

  coro::Task<Result<std::size_t>> ReadAt(uint64_t offset, IoVector iov) override {
    std::size_t done = 0;
    if (cached_.enabled()) {
      ssize_t n = cached_.Read(offset, iov);
      if (n == 0) co_return 0;  // end of file
      if (n > 0) done = static_cast<std::size_t>(n);
    } else if (pool_) {
      co_return co_await pool_->ReadAt(offset, std::move(iov));  // buffered, no RWF_NOWAIT
    }
    while (done < iov.size()) {
      std::vector<asio::mutable_buffer> bufs = Buffers(iov.Slice(done, iov.size() - done));
      auto [ec, n] = co_await file_.async_read_some_at(offset + done, bufs, coro::use_task);
      if (ec == asio::error::eof) break;
      if (ec == asio::error::interrupted) continue;
      if (ec) co_return Unexpected(ToStd(ec));
      if (n == 0) break;
      done += n;
    }
    co_return done;
  }

  coro::Task<Result<void>> WriteAt(uint64_t offset, IoVector iov) override {
    if (pool_) co_return co_await pool_->WriteAt(offset, std::move(iov));
    std::size_t done = 0;
    while (done < iov.size()) {
      std::vector<asio::mutable_buffer> bufs = Buffers(iov.Slice(done, iov.size() - done));
      auto [ec, n] = co_await file_.async_write_some_at(offset + done, bufs, coro::use_task);
      if (ec == asio::error::interrupted) continue;
      if (ec) co_return Unexpected(ToStd(ec));
      if (n == 0) co_return Unexpected(ErrnoCode(EIO));
      done += n;
    }
    co_return Ok();
  }

 private:
  static std::vector<asio::mutable_buffer> Buffers(const IoVector& iov) {
    std::vector<asio::mutable_buffer> out;
    out.reserve(iov.segments().size());
    for (const iovec& v : iov.segments()) out.emplace_back(v.iov_base, v.iov_len);
    return out;
  }

  CachedReader cached_;
  asio::random_access_file file_;
  std::unique_ptr<FileIo> pool_;  // set when the descriptor is not O_DIRECT
};

}  // namespace

bool UringUsable() {
  static const bool usable = [] {
    // First the kernel (io_uring_setup can be refused by seccomp or sysctl), then Asio's own
    // service, which sets up a much larger ring and may fail where a tiny one succeeds.
    io_uring ring;
    if (io_uring_queue_init(4, &ring, 0) != 0) return false;
    io_uring_queue_exit(&ring);
    try {
      asio::io_context ctx;
      asio::random_access_file probe(ctx);
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }();
  return usable;
}

absl::StatusOr<std::unique_ptr<FileIo>> MakeUringFileIo(int fd) {
  if (!UringUsable()) return absl::UnavailableError("io_uring is not available on this system");
  // Close-on-exec: a program the daemon starts (fusermount3, which stays around with
  // -o auto_unmount) would otherwise keep the image open, and with it the image's locks.
  int dup_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) return absl::InternalError(absl::StrCat("dup: ", std::strerror(errno)));
  try {
    asio::random_access_file file(coro::EventLoop::Current().context(), dup_fd);
    std::unique_ptr<FileIo> pool;
    if (!IsDirect(fd)) pool = MakeThreadPoolFileIo(fd);
    return std::make_unique<UringFileIo>(fd, std::move(file), std::move(pool));
  } catch (const std::exception& e) {
    ::close(dup_fd);
    return absl::UnavailableError(absl::StrCat("io_uring: ", e.what()));
  }
}

#else  // !QEDFUSE_HAVE_IO_URING

bool UringUsable() { return false; }

absl::StatusOr<std::unique_ptr<FileIo>> MakeUringFileIo(int /*fd*/) {
  return absl::UnimplementedError("built without io_uring support (liburing not found)");
}

#endif

}  // namespace qedfuse::block
