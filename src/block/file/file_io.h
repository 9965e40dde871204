// block::FileIo: the I/O backend seam under FileProtocol (QEMU's aio=threads|io_uring).
//
// Two implementations:
//  - ThreadPoolFileIo: preadv/pwritev offloaded to the shared coro::BlockingPool;
//  - UringFileIo: Boost.Asio random_access_file over io_uring (built when liburing is found,
//    QEDFUSE_HAVE_IO_URING), completions delivered on the event loop.
// Both loop on short transfers: ReadAt returns fewer bytes than asked only at end of file, and
// WriteAt writes everything or fails. Calls come from the event-loop thread only; the file
// descriptor belongs to the caller and must outlive the FileIo.
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
};

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
