// ThreadPoolFileIo: preadv/pwritev on the shared BlockingPool (aio=threads). Cached data is read
// on the loop thread first (CachedReader).
#include <limits.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "block/file/file_io.h"

namespace qedfuse::block {
namespace {

struct Transfer {
  ssize_t n;
  int err;
};

class ThreadPoolFileIo final : public FileIo {
 public:
  explicit ThreadPoolFileIo(int fd) : fd_(fd), cached_(fd) {}

  std::string_view name() const override { return "threads"; }
  bool reads_cache_inline() const override { return cached_.enabled(); }

  coro::Task<Result<std::size_t>> ReadAt(uint64_t offset, IoVector iov) override {
    std::size_t done = 0;
    if (ssize_t n = cached_.Read(offset, iov); n >= 0) {
      if (n == 0) co_return 0;  // end of file
      done = static_cast<std::size_t>(n);
    }
    while (done < iov.size()) {
      IoVector rest = iov.Slice(done, iov.size() - done);
      Transfer t = co_await FileBlockingPool().Offload(
          Job{fd_, rest.segments(), static_cast<off_t>(offset + done), /*write=*/false});
      if (t.n < 0) co_return Unexpected(ErrnoCode(t.err));
      if (t.n == 0) break;  // end of file
      done += static_cast<std::size_t>(t.n);
    }
    co_return done;
  }

  coro::Task<Result<void>> WriteAt(uint64_t offset, IoVector iov) override {
    std::size_t done = 0;
    while (done < iov.size()) {
      IoVector rest = iov.Slice(done, iov.size() - done);
      Transfer t = co_await FileBlockingPool().Offload(
          Job{fd_, rest.segments(), static_cast<off_t>(offset + done), /*write=*/true});
      if (t.n < 0) co_return Unexpected(ErrnoCode(t.err));
      if (t.n == 0) co_return Unexpected(ErrnoCode(EIO));
      done += static_cast<std::size_t>(t.n);
    }
    co_return Ok();
  }

 private:
  // Runs on a worker: one preadv/pwritev, retried on EINTR. Holds its own copy of the iovecs.
  struct Job {
    int fd;
    IoVector::Segments segs;
    off_t offset;
    bool write;
    Transfer operator()() {
      int cnt = static_cast<int>(std::min<std::size_t>(segs.size(), IOV_MAX));
      for (;;) {
        ssize_t n = write ? ::pwritev(fd, segs.data(), cnt, offset)
                          : ::preadv(fd, segs.data(), cnt, offset);
        if (n < 0 && errno == EINTR) continue;
        return Transfer{n, n < 0 ? errno : 0};
      }
    }
  };

  int fd_;
  CachedReader cached_;
};

}  // namespace

coro::BlockingPool& FileBlockingPool() {
  // Enough workers to keep a few requests in flight on a small machine; they mostly sleep in
  // the kernel.
  static coro::BlockingPool pool(4);
  return pool;
}

std::unique_ptr<FileIo> MakeThreadPoolFileIo(int fd) {
  return std::make_unique<ThreadPoolFileIo>(fd);
}

}  // namespace qedfuse::block
