// block::FileIo: the I/O backend seam under FileProtocol (QEMU's aio=threads|io_uring).
//
// Two implementations:
//  - ThreadPoolFileIo: preadv/pwritev offloaded to the shared coro::BlockingPool;
//  - UringFileIo: Boost.Asio random_access_file over io_uring (built when liburing is found,
//    QEDFUSE_HAVE_IO_URING), completions delivered on the event loop.
// Both loop on short transfers: ReadAt returns fewer bytes than asked only at end of file, and
// WriteAt writes everything or fails. Calls come from the event-loop thread only; the file
// descriptor belongs to the caller and must outlive the FileIo.
//
// Both first read what the page cache already holds on the loop thread itself (CachedReader):
// a cached read needs no hand-off at all, and the rest goes to the backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "qedfuse/base/result.h"
#include "qedfuse/block/io_vector.h"
#include "qedfuse/coro/blocking_pool.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::block {

class FileIo {
 public:
  virtual ~FileIo() = default;

  // "io_uring" or "threads".
  virtual std::string_view name() const = 0;
  // Reads up to iov.size() bytes at |offset|; returns the count (short only at end of file).
  virtual coro::Task<Result<std::size_t>> ReadAt(uint64_t offset, IoVector iov) = 0;
  // Writes all of |iov| at |offset| (extending the file if it ends beyond its end).
  virtual coro::Task<Result<void>> WriteAt(uint64_t offset, IoVector iov) = 0;
  // True if cached data is read inline on the loop thread (see CachedReader).
  virtual bool reads_cache_inline() const = 0;
};

// Reads from the page cache without blocking: preadv2(RWF_NOWAIT) on the calling thread, which
// copies cached data or answers EAGAIN at once instead of waiting for the device.
// The io_uring read it replaces also completed inline, in io_uring_enter, but behind Asio's
// submission and completion machinery; what that cost is measured in
// scripts/bench/profiling.md, item 9.
//
// Off for O_DIRECT descriptors (a direct read waits for the device even with RWF_NOWAIT). tmpfs
// refuses RWF_NOWAIT (EOPNOTSUPP), and io_uring then punts every buffered read to its io-wq
// workers, slower than the thread pool; but where the kernel has no swap space a tmpfs (or
// ramfs) page is always in memory, so plain reads run inline there (profiling.md, item 9). Other
// file systems without RWF_NOWAIT read through the backend.
class CachedReader {
 public:
  enum class Mode {
    kOff,     // every read goes to the backend
    kNowait,  // preadv2(RWF_NOWAIT): the page cache's data, or EAGAIN at once
    kMemory,  // a memory file system without swap: a plain read never waits for a device
  };

  explicit CachedReader(int fd);

  // How reads of |fd| can run inline, |swap| telling whether the kernel has swap space.
  static Mode Probe(int fd, bool swap);

  Mode mode() const { return mode_; }
  bool enabled() const { return mode_ != Mode::kOff; }
  // The bytes read at |offset|: all of |iov|, fewer when only its start is cached or the file
  // ends, 0 at end of file; -1 when nothing could be read without blocking (the caller reads
  // the usual way).
  ssize_t Read(uint64_t offset, const IoVector& iov);

 private:
  int fd_;
  Mode mode_;
};

// True if |fd| was opened with O_DIRECT.
bool IsDirect(int fd);

// True unless /proc/meminfo says SwapTotal is 0. Without swap a tmpfs page can never leave memory,
// so a read of a tmpfs file is a memory copy that cannot wait for a device.
bool SwapConfigured();

// The process-wide pool for blocking file system calls (fdatasync, fallocate, ftruncate and the
// threads backend's preadv/pwritev).
coro::BlockingPool& FileBlockingPool();

std::unique_ptr<FileIo> MakeThreadPoolFileIo(int fd);

// True if io_uring works in this process (it can be compiled in yet refused by the kernel or a
// container's seccomp policy). Probed once, then cached.
bool UringUsable();

// An io_uring backend bound to the calling thread's event loop. Fails if io_uring support was not
// compiled in or cannot be initialised.
absl::StatusOr<std::unique_ptr<FileIo>> MakeUringFileIo(int fd);

}  // namespace qedfuse::block
